"""`ember.nn.functional` in traced plain functions against `torch.nn.functional`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import ember
import ember.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RTOL = 1e-5


def run_traced(fn: Callable, *inputs: np.ndarray) -> np.ndarray:
    """Trace `fn` on the inputs and run the graph with the reference interpreter."""
    graph = ember.trace(fn, *inputs)
    (result,) = ember.interpret(graph, *inputs)
    return result


def torch_run(fn: Callable, *inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return fn(*(torch.from_numpy(np.asarray(x)) for x in inputs)).numpy()


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-12)
    error = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0)) / scale
    assert error <= rtol, error


def compare(ember_fn: Callable, torch_fn: Callable, *inputs: np.ndarray) -> None:
    """The reference interpreter and the default compile (level 3), both against PyTorch."""
    expected = torch_run(torch_fn, *inputs)
    assert_close(run_traced(ember_fn, *inputs), expected)
    assert_close(ember.compile(ember_fn, *inputs)(*inputs), expected)


def randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- activations -----------------------------------------------------------------------------

ACTIVATIONS = [
    ("relu", {}), ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("sigmoid", {}),
    ("tanh", {}), ("silu", {}), ("leaky_relu", {}), ("leaky_relu", {"negative_slope": 0.3}),
    ("softmax", {"dim": -1}), ("softmax", {"dim": 0}), ("log_softmax", {"dim": 1}),
    ("log_softmax", {"dim": -3}),
]


@pytest.mark.parametrize(("name", "kwargs"), ACTIVATIONS, ids=[f"{n}{k}" for n, k in ACTIVATIONS])
def test_activation_matches_torch(name: str, kwargs: dict) -> None:
    x = randn(3, 4, 5) * 5
    compare(lambda t: getattr(F, name)(t, **kwargs), lambda t: getattr(TF, name)(t, **kwargs), x)


def test_softmax_dtype_argument_casts_first() -> None:
    x = randn(2, 5)
    compare(lambda t: F.softmax(t, 1, dtype=np.float64),
            lambda t: TF.softmax(t, 1, dtype=torch.float64), x)


def test_softmax_rejects_out_of_range_dim() -> None:
    with pytest.raises(ember.TraceError, match=r"softmax: dim 2 is out of range .*\[3, 4\]"):
        ember.trace(lambda t: F.softmax(t, dim=2), randn(3, 4))


# -- linear and convolution ------------------------------------------------------------------


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_torch(with_bias: bool) -> None:
    x, w, b = randn(2, 3, 5), randn(4, 5, seed=1), randn(4, seed=2)
    if with_bias:
        compare(F.linear, TF.linear, x, w, b)
    else:
        compare(lambda a, c: F.linear(a, c), lambda a, c: TF.linear(a, c), x, w)


CONV_CASES = [
    dict(stride=1, padding=0),
    dict(stride=2, padding=1),
    dict(stride=(1, 2), padding=(2, 1), dilation=(1, 2)),
    dict(padding="same"),
    dict(padding="same", dilation=2),
    dict(padding="valid", stride=2),
    dict(groups=2, padding=1),
]


@pytest.mark.parametrize("kwargs", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv2d_matches_torch(kwargs: dict) -> None:
    groups = kwargs.get("groups", 1)
    x, w, b = randn(2, 4, 7, 6), randn(6, 4 // groups, 3, 2, seed=1), randn(6, seed=2)
    compare(lambda *a: F.conv2d(*a, **kwargs), lambda *a: TF.conv2d(*a, **kwargs), x, w, b)


def test_conv2d_with_numpy_weight_leaves_the_array_unchanged() -> None:
    x, w = randn(1, 2, 5, 5), randn(3, 2, 3, 3, seed=1)
    saved = w.copy()
    expected = torch_run(lambda a: TF.conv2d(a, torch.from_numpy(w), padding=1), x)
    assert_close(run_traced(lambda a: F.conv2d(a, w, padding=1), x), expected)
    np.testing.assert_array_equal(w, saved)


# -- pooling ---------------------------------------------------------------------------------

POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True),
]


@pytest.mark.parametrize("kwargs", POOL_CASES, ids=[str(c) for c in POOL_CASES])
def test_max_pool2d_matches_torch(kwargs: dict) -> None:
    compare(lambda t: F.max_pool2d(t, **kwargs), lambda t: TF.max_pool2d(t, **kwargs),
            randn(2, 3, 8, 7))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kwargs", POOL_CASES, ids=[str(c) for c in POOL_CASES])
def test_avg_pool2d_matches_torch(kwargs: dict, count_include_pad: bool) -> None:
    kwargs = dict(kwargs, count_include_pad=count_include_pad)
    compare(lambda t: F.avg_pool2d(t, **kwargs), lambda t: TF.avg_pool2d(t, **kwargs),
            randn(2, 3, 8, 7))


@pytest.mark.parametrize("output_size", [1, (3, 2), (5, 4), (None, 3), 8])
def test_adaptive_avg_pool2d_matches_torch(output_size: object) -> None:
    compare(lambda t: F.adaptive_avg_pool2d(t, output_size),
            lambda t: TF.adaptive_avg_pool2d(t, output_size), randn(2, 3, 8, 7))


# -- normalization ---------------------------------------------------------------------------


@pytest.mark.parametrize("normalized_shape", [(6,), (4, 6)])
def test_layer_norm_matches_torch(normalized_shape: tuple[int, ...]) -> None:
    x = randn(3, 4, 6) * 3 + 1
    w, b = randn(*normalized_shape, seed=1), randn(*normalized_shape, seed=2)
    compare(lambda a, c, d: F.layer_norm(a, normalized_shape, c, d, eps=1e-3),
            lambda a, c, d: TF.layer_norm(a, normalized_shape, c, d, eps=1e-3), x, w, b)
    compare(lambda a: F.layer_norm(a, normalized_shape),
            lambda a: TF.layer_norm(a, normalized_shape), x)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (2, 3, 4, 5)])
def test_batch_norm_matches_torch(shape: tuple[int, ...], training: bool) -> None:
    x = randn(*shape) * 2 + 0.5
    mean, var = randn(3, seed=1), np.abs(randn(3, seed=2)) + 0.5
    w, b = randn(3, seed=3), randn(3, seed=4)
    compare(lambda a, m, v, c, d: F.batch_norm(a, m, v, c, d, training=training, eps=1e-3),
            lambda a, m, v, c, d: TF.batch_norm(a, m.clone(), v.clone(), c, d, training=training,
                                                eps=1e-3),
            x, mean, var, w, b)


def test_batch_norm_training_needs_no_running_statistics() -> None:
    x = randn(4, 3, 2, 2)
    compare(lambda a: F.batch_norm(a, None, None, training=True),
            lambda a: TF.batch_norm(a, None, None, training=True), x)


# -- other layers ----------------------------------------------------------------------------


def test_dropout_not_training_is_identity() -> None:
    x = randn(3, 4)
    compare(lambda t: F.dropout(t, 0.5, training=False),
            lambda t: TF.dropout(t, 0.5, training=False), x)


@pytest.mark.parametrize("index_shape", [(4,), (2, 3)])
def test_embedding_matches_torch(index_shape: tuple[int, ...]) -> None:
    indices = np.random.default_rng(3).integers(0, 6, size=index_shape)
    table = randn(6, 3, seed=1)
    compare(F.embedding, TF.embedding, indices, table)


PAD_CASES = [
    ((1, 2), "constant", 0.0), ((1, 0, 2, 1), "constant", -1.5),
    ((1, 1, 1, 1, 1, 0), "constant", 3.0), ((-1, 2, 0, -1), "constant", 0.0),
    ((2, 1), "reflect", None), ((1, 2, 2, 0), "reflect", None), ((2, 3), "replicate", None),
    ((1, 1, 0, 2), "replicate", None), ((1, 2, 2, 1), "circular", None),
]


@pytest.mark.parametrize(("pads", "mode", "value"), PAD_CASES, ids=[str(c) for c in PAD_CASES])
def test_pad_matches_torch(pads: tuple[int, ...], mode: str, value: float | None) -> None:
    # PyTorch pads the last dimension only of a 2-D or 3-D input in the non-constant modes.
    x = randn(2, 3, 4, 5) if mode == "constant" or len(pads) > 2 else randn(3, 4, 5)
    compare(lambda t: F.pad(t, pads, mode, value), lambda t: TF.pad(t, pads, mode, value), x)


def test_one_hot_matches_torch() -> None:
    indices = np.array([[0, 3], [2, 1]], dtype=np.int64)
    actual = run_traced(lambda t: F.one_hot(t, 5), indices)
    expected = TF.one_hot(torch.from_numpy(indices), 5).numpy()
    np.testing.assert_array_equal(actual, expected)
    assert actual.dtype == expected.dtype


def test_one_hot_needs_num_classes() -> None:
    with pytest.raises(ember.TraceError, match="one_hot: num_classes must be given"):
        ember.trace(lambda t: F.one_hot(t), np.array([1, 2]))


# -- losses ----------------------------------------------------------------------------------


def logits_and_targets(shape: tuple[int, ...] = (5, 4), seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape).astype(np.float32) * 2
    targets = rng.integers(0, shape[1], size=(shape[0], *shape[2:]))
    return logits, targets


LOSS_OPTIONS = [
    {}, {"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.2},
    {"label_smoothing": 0.1, "reduction": "none"}, {"ignore_index": 1},
    {"ignore_index": 2, "label_smoothing": 0.3}, {"weight": True},
    {"weight": True, "reduction": "sum"}, {"weight": True, "label_smoothing": 0.2},
    {"weight": True, "ignore_index": 0, "label_smoothing": 0.1, "reduction": "mean"},
]


def with_weight(kwargs: dict, lib: object) -> dict:
    """Replace weight=True by a fixed class-weight vector of the library's array type."""
    if not kwargs.get("weight"):
        return kwargs
    weight = np.array([0.5, 2.0, 1.0, 1.5], dtype=np.float32)
    return dict(kwargs, weight=torch.from_numpy(weight) if lib is torch else weight)


@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2, 3)])
@pytest.mark.parametrize("kwargs", LOSS_OPTIONS, ids=[str(k) for k in LOSS_OPTIONS])
def test_cross_entropy_with_class_indices_matches_torch(kwargs: dict, shape: tuple) -> None:
    logits, targets = logits_and_targets(shape)
    compare(lambda a, t: F.cross_entropy(a, t, **with_weight(kwargs, ember)),
            lambda a, t: TF.cross_entropy(a, t, **with_weight(kwargs, torch)), logits, targets)


@pytest.mark.parametrize("kwargs", [{}, {"reduction": "sum"}, {"reduction": "none"},
                                    {"label_smoothing": 0.25}, {"weight": True},
                                    {"weight": True, "label_smoothing": 0.1}])
def test_cross_entropy_with_probability_targets_matches_torch(kwargs: dict) -> None:
    logits, _ = logits_and_targets((5, 4))
    probabilities = np.random.default_rng(1).dirichlet(np.ones(4), size=5).astype(np.float32)
    compare(lambda a, t: F.cross_entropy(a, t, **with_weight(kwargs, ember)),
            lambda a, t: TF.cross_entropy(a, t, **with_weight(kwargs, torch)), logits,
            probabilities)


def test_cross_entropy_unbatched_input_matches_torch() -> None:
    logits = randn(4)
    target = np.array(2, dtype=np.int64)
    compare(F.cross_entropy, TF.cross_entropy, logits, target)
    compare(lambda a, t: F.cross_entropy(a, t, reduction="none"),
            lambda a, t: TF.cross_entropy(a, t, reduction="none"), logits, target)


def test_cross_entropy_weight_is_the_third_positional_argument() -> None:
    """PyTorch's order: (input, target, weight, size_average, ignore_index, reduce, reduction)."""
    logits, targets = logits_and_targets()
    weight = np.array([1.0, 3.0, 0.5, 2.0], dtype=np.float32)
    compare(lambda a, t: F.cross_entropy(a, t, weight, None, -100, None, "sum"),
            lambda a, t: TF.cross_entropy(a, t, torch.from_numpy(weight), None, -100, None, "sum"),
            logits, targets)


@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2)])
@pytest.mark.parametrize("kwargs", [o for o in LOSS_OPTIONS if "label_smoothing" not in o],
                         ids=str)
def test_nll_loss_matches_torch(kwargs: dict, shape: tuple) -> None:
    logits, targets = logits_and_targets(shape)
    logp = torch.log_softmax(torch.from_numpy(logits), 1).numpy()
    compare(lambda a, t: F.nll_loss(a, t, **with_weight(kwargs, ember)),
            lambda a, t: TF.nll_loss(a, t, **with_weight(kwargs, torch)), logp, targets)


def test_nll_loss_legacy_size_average_and_reduce() -> None:
    logits, targets = logits_and_targets()
    for size_average, reduce in [(False, None), (None, False), (True, True)]:
        with pytest.warns(UserWarning):
            expected = TF.nll_loss(torch.from_numpy(logits), torch.from_numpy(targets),
                                   size_average=size_average, reduce=reduce).numpy()
        actual = run_traced(lambda a, t, s=size_average, r=reduce: F.nll_loss(
            a, t, size_average=s, reduce=r), logits, targets)
        assert_close(actual, expected)


@pytest.mark.parametrize("kwargs", [{}, {"reduction": "sum"}, {"reduction": "none"},
                                    {"weight": True}, {"weight": True, "reduction": "sum"}])
def test_mse_loss_matches_torch(kwargs: dict) -> None:
    x, y = randn(3, 4), randn(3, 4, seed=1)
    weight = np.abs(randn(3, 4, seed=2))
    ember_kwargs = dict(kwargs, weight=weight) if kwargs.get("weight") else kwargs
    torch_kwargs = dict(kwargs, weight=torch.from_numpy(weight)) if kwargs.get("weight") else kwargs
    compare(lambda a, b: F.mse_loss(a, b, **ember_kwargs),
            lambda a, b: TF.mse_loss(a, b, **torch_kwargs), x, y)


def test_loss_rejects_unknown_reduction() -> None:
    with pytest.raises(ember.TraceError, match="reduction must be 'mean', 'sum' or 'none'"):
        ember.trace(lambda a, b: F.mse_loss(a, b, reduction="avg"), randn(2), randn(2))


def test_nll_loss_rejects_mismatched_target_with_shapes() -> None:
    with pytest.raises(ember.TraceError, match=r"nll_loss: target i64\[4\] does not fit input "
                                               r"f32\[5,4\]"):
        ember.trace(F.nll_loss, randn(5, 4), np.zeros(4, dtype=np.int64))


# -- batch_norm training statistics of huge values ---------------------------------------------


def torch_batch_norm_training(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PyTorch's training-mode batch_norm in float64 (its statistics accumulate in double)."""
    return TF.batch_norm(torch.from_numpy(x.astype(np.float64)), None, None,
                         torch.from_numpy(w.astype(np.float64)),
                         torch.from_numpy(b.astype(np.float64)), training=True).numpy()


def long_double_batch_norm_training(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Training-mode batch_norm in x87 long double numpy, whose exponent range holds the
    squares of any double (PyTorch's float64 statistics overflow for f64 values above 1e154
    and do not give exactly 0 for a channel of equal values near 1e38)."""
    if np.finfo(np.longdouble).maxexp <= 1024:
        pytest.skip("numpy's long double is double here")
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    wide = x.astype(np.longdouble)
    centered = wide - wide.mean(axis=axes, keepdims=True)
    var = (centered * centered).mean(axis=axes, keepdims=True)
    return (centered / np.sqrt(var + 1e-5) * w.reshape(shape) + b.reshape(shape)).astype(np.float64)


HUGE_BATCHES = {
    "f32_tiny_and_huge": np.array([[1.1e-40], [-3.2e38]], np.float32),
    "f32_near_max": np.array([[3e38, 1.0], [3.3e38, -2.0], [-3.1e38, 4.0]], np.float32),
    "f32_equal_huge": np.array([[2.5e38, 1e20], [2.5e38, 1e20]], np.float32),
    "f32_mixed_channels": np.array([[[1e30, -1e30], [0.5, 0.25]], [[3e29, 7e30], [-1.0, 2.0]]],
                                   np.float32),
    "f64_huge": np.array([[1e300, -3.5e292], [-1.7e308, 1e292], [5e307, 0.0]]),
    "f64_equal_huge": np.array([[-3.56e292], [-3.56e292]]),
}


@pytest.mark.parametrize("name", sorted(HUGE_BATCHES))
@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_batch_norm_training_of_huge_values_does_not_overflow(level: int, name: str) -> None:
    x = HUGE_BATCHES[name]
    channels = x.shape[1]
    w = np.linspace(1.0, 2.0, channels).astype(x.dtype)
    b = np.linspace(0.5, -0.5, channels).astype(x.dtype)
    fn = lambda a: F.batch_norm(a, None, None, w, b, training=True)  # noqa: E731
    actual = ember.compile(fn, x, opt_level=level)(x)
    expected = long_double_batch_norm_training(x, w, b)
    if name == "f32_tiny_and_huge":  # the fuzzer's case, also against PyTorch
        np.testing.assert_allclose(expected, torch_batch_norm_training(x, w, b), rtol=1e-6)
    assert actual.dtype == x.dtype
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_batch_norm_training_of_ordinary_values_stays_accurate(level: int, dtype: type) -> None:
    x = (randn(6, 3, 4, 5) * np.array([1e-3, 1.0, 1e4], np.float32)[:, None, None]).astype(dtype)
    w, b = randn(3, seed=1).astype(dtype), randn(3, seed=2).astype(dtype)
    fn = lambda a: F.batch_norm(a, None, None, w, b, training=True)  # noqa: E731
    actual = ember.compile(fn, x, opt_level=level)(x)
    expected = torch_batch_norm_training(x, w, b)
    np.testing.assert_allclose(actual, expected, rtol=2e-5 if dtype is np.float32 else 1e-12,
                               atol=2e-5 if dtype is np.float32 else 1e-12)
