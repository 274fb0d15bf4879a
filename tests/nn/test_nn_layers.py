"""Every `ember.nn` layer against the PyTorch layer with the same weights and arguments."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import nn

torch = pytest.importorskip("torch")

RTOL = 1e-5
# The reference interpreter and the default compile (opt_level=3: every pass, scheduled kernels).
LEVELS = ({"opt_level": 0}, {})


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max(|expected|), the norm the layer tests bound."""
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-12)
    return float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0)) / scale


def state_as_numpy(layer: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: value.detach().numpy().copy() for name, value in layer.state_dict().items()}


def check_layer(ember_layer: nn.Module, torch_layer: torch.nn.Module, x: np.ndarray,
                training: bool = False) -> np.ndarray:
    """Copy torch's weights into the ember layer, run both on `x` and compare them."""
    ember_layer.load_state_dict(state_as_numpy(torch_layer))
    ember_layer.train(training)
    torch_layer.train(training)
    with torch.no_grad():
        expected = torch_layer(torch.from_numpy(x)).numpy()
    for level in LEVELS:
        actual = ember.compile(ember_layer, x, **level)(x)
        assert actual.shape == expected.shape, level
        assert actual.dtype == expected.dtype, level
        assert relative_error(actual, expected) <= RTOL, level
    return actual


def image(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- Linear, Conv2d --------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 6), (6,)])
def test_linear_matches_torch(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    check_layer(nn.Linear(6, 4, bias=bias), torch.nn.Linear(6, 4, bias=bias), image(*shape))


CONV_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=4, padding="same"),  # even kernel: the extra padding goes at the end
    dict(kernel_size=(2, 3), padding="same", dilation=(2, 1)),
    dict(kernel_size=3, padding="valid"),
    dict(kernel_size=3, dilation=2, padding=2),
    dict(kernel_size=3, groups=2, padding=1),
    dict(kernel_size=3, groups=4, bias=False),  # depthwise
    dict(kernel_size=1, bias=False),
    dict(kernel_size=(1, 3), stride=(1, 3), padding=(0, 1), dilation=1),
]


@pytest.mark.parametrize("kwargs", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv2d_matches_torch(kwargs: dict) -> None:
    torch.manual_seed(1)
    check_layer(nn.Conv2d(4, 8, **kwargs), torch.nn.Conv2d(4, 8, **kwargs), image(2, 4, 9, 8))


# -- normalization ---------------------------------------------------------------------------


def random_batch_norm(channels: int, affine: bool = True) -> torch.nn.BatchNorm2d:
    """A torch BatchNorm2d with non-trivial weights and running statistics."""
    layer = torch.nn.BatchNorm2d(channels, eps=1e-3, affine=affine)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        layer.running_mean.copy_(torch.randn(channels, generator=generator))
        layer.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
        layer.num_batches_tracked.fill_(7)
        if affine:
            layer.weight.copy_(torch.randn(channels, generator=generator))
            layer.bias.copy_(torch.randn(channels, generator=generator))
    return layer


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_eval_uses_running_statistics(affine: bool) -> None:
    check_layer(nn.BatchNorm2d(3, eps=1e-3, affine=affine), random_batch_norm(3, affine),
                image(4, 3, 5, 5))


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_training_uses_batch_statistics(affine: bool) -> None:
    x = image(4, 3, 5, 5) * 3 + 1
    check_layer(nn.BatchNorm2d(3, eps=1e-3, affine=affine), random_batch_norm(3, affine), x,
                training=True)


def test_batch_norm_without_running_stats_normalizes_by_batch_in_eval() -> None:
    torch_layer = torch.nn.BatchNorm2d(3, track_running_stats=False)
    check_layer(nn.BatchNorm2d(3, track_running_stats=False), torch_layer, image(2, 3, 4, 4))


LAYER_NORM_CASES = [
    (dict(normalized_shape=6), (4, 6)),
    (dict(normalized_shape=[6]), (2, 3, 6)),
    (dict(normalized_shape=(3, 6)), (2, 3, 6)),
    (dict(normalized_shape=6, elementwise_affine=False), (2, 3, 6)),
    (dict(normalized_shape=(3, 6), bias=False), (2, 3, 6)),
    (dict(normalized_shape=6, eps=1e-2), (4, 6)),
]


@pytest.mark.parametrize(("kwargs", "shape"), LAYER_NORM_CASES,
                         ids=[str(c[0]) for c in LAYER_NORM_CASES])
def test_layer_norm_matches_torch(kwargs: dict, shape: tuple[int, ...]) -> None:
    torch_layer = torch.nn.LayerNorm(**kwargs)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in torch_layer.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    check_layer(nn.LayerNorm(**kwargs), torch_layer, image(*shape) * 2 + 0.5)


# -- Embedding -------------------------------------------------------------------------------


@pytest.mark.parametrize("index_shape", [(5,), (2, 3), ()])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_embedding_matches_torch(index_shape: tuple[int, ...], dtype: type) -> None:
    torch.manual_seed(4)
    indices = np.random.default_rng(4).integers(0, 10, size=index_shape).astype(dtype)
    check_layer(nn.Embedding(10, 4), torch.nn.Embedding(10, 4), indices)


def test_embedding_padding_idx_row_is_zero_at_init() -> None:
    layer = nn.Embedding(6, 3, padding_idx=2)
    assert np.all(layer.weight.data[2] == 0)
    assert np.all(layer.weight.data[[0, 1, 3, 4, 5]] != 0)


# -- pooling ---------------------------------------------------------------------------------

MAX_POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=2, dilation=2),
    dict(kernel_size=3, stride=3, ceil_mode=True),
]


@pytest.mark.parametrize("kwargs", MAX_POOL_CASES, ids=[str(c) for c in MAX_POOL_CASES])
def test_max_pool2d_matches_torch(kwargs: dict) -> None:
    check_layer(nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs), image(2, 3, 7, 8))


AVG_POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=2, divisor_override=3),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=5),
]


@pytest.mark.parametrize("kwargs", AVG_POOL_CASES, ids=[str(c) for c in AVG_POOL_CASES])
def test_avg_pool2d_matches_torch(kwargs: dict) -> None:
    check_layer(nn.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs), image(2, 3, 7, 8))


@pytest.mark.parametrize("output_size", [1, 3, (2, 3), (5, 3), (3, None), (None, 2), (7, 8),
                                         (4, 6)])
def test_adaptive_avg_pool2d_matches_torch(output_size: object) -> None:
    check_layer(nn.AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size),
                image(2, 3, 7, 8))


# -- shape and activation layers -------------------------------------------------------------

ELEMENTWISE_LAYERS = [
    ("ReLU", {}), ("LeakyReLU", {}), ("LeakyReLU", {"negative_slope": 0.2}),
    ("GELU", {}), ("GELU", {"approximate": "tanh"}), ("SiLU", {}), ("Sigmoid", {}),
    ("Tanh", {}), ("Identity", {}), ("Flatten", {}), ("Flatten", {"start_dim": 0}),
    ("Flatten", {"start_dim": 1, "end_dim": 2}), ("Dropout", {"p": 0.3}),
    ("Softmax", {"dim": 1}), ("Softmax", {"dim": -1}), ("LogSoftmax", {"dim": 1}),
    ("LogSoftmax", {"dim": -2}),
]


@pytest.mark.parametrize(("name", "kwargs"), ELEMENTWISE_LAYERS,
                         ids=[f"{n}{k}" for n, k in ELEMENTWISE_LAYERS])
def test_parameterless_layer_matches_torch(name: str, kwargs: dict) -> None:
    x = image(2, 3, 4, 5) * 4
    check_layer(getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs), x)


@pytest.mark.parametrize("rank", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
def test_softmax_without_dim_follows_torch_legacy_rule(name: str, rank: int) -> None:
    """dim=None means dim 0 for ranks 0, 1 and 3, dim 1 otherwise."""
    x = image(*(3, 4, 5, 2)[:rank], seed=rank)
    with pytest.warns(UserWarning):  # torch warns about the implicit dimension
        expected = getattr(torch.nn, name)()(torch.from_numpy(x)).numpy()
    for level in LEVELS:
        actual = ember.compile(getattr(nn, name)(), x, **level)(x)
        assert actual.shape == expected.shape, level
        assert relative_error(actual, expected) <= RTOL, level


def test_sequential_cnn_matches_torch() -> None:
    def build(lib):
        return lib.Sequential(
            lib.Conv2d(3, 6, 3, padding=1), lib.BatchNorm2d(6), lib.ReLU(),
            lib.MaxPool2d(2), lib.Conv2d(6, 4, 3, stride=2, groups=2, bias=False),
            lib.GELU(approximate="tanh"), lib.AdaptiveAvgPool2d((2, 1)), lib.Flatten(),
            lib.Dropout(0.5), lib.Linear(8, 5), lib.LayerNorm(5), lib.SiLU(),
            lib.Sequential(lib.Linear(5, 3), lib.Identity()), lib.LogSoftmax(dim=1),
        )

    torch.manual_seed(5)
    torch_model = build(torch.nn)
    with torch.no_grad():
        torch_model[1].running_mean.uniform_(-1, 1)
        torch_model[1].running_var.uniform_(0.5, 2)
    check_layer(build(nn), torch_model, image(2, 3, 10, 10))


def test_sequential_from_ordered_dict_matches_torch() -> None:
    from collections import OrderedDict

    def build(lib):
        return lib.Sequential(OrderedDict(fc=lib.Linear(4, 6), act=lib.Tanh(),
                                          out=lib.Linear(6, 2)))

    torch.manual_seed(6)
    check_layer(build(nn), build(torch.nn), image(3, 4))


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same"])
def test_conv2d_padding_modes_match_torch(padding_mode: str, padding: object) -> None:
    torch.manual_seed(7)
    kwargs = dict(kernel_size=3, padding=padding, padding_mode=padding_mode)
    check_layer(nn.Conv2d(2, 3, **kwargs), torch.nn.Conv2d(2, 3, **kwargs), image(1, 2, 6, 5))


@pytest.mark.parametrize(("name", "args"), [
    ("Conv2d", (3, 4, 3)), ("MaxPool2d", (2,)), ("AvgPool2d", (3, 1, 1)),
    ("AdaptiveAvgPool2d", ((2, 3),)),
])
def test_spatial_layers_accept_unbatched_chw_input(name: str, args: tuple) -> None:
    torch.manual_seed(8)
    check_layer(getattr(nn, name)(*args), getattr(torch.nn, name)(*args), image(3, 7, 6))


def test_float64_layers_match_torch() -> None:
    torch.manual_seed(9)
    torch_model = torch.nn.Sequential(torch.nn.Linear(4, 3, dtype=torch.float64),
                                      torch.nn.LayerNorm(3, dtype=torch.float64))
    model = nn.Sequential(nn.Linear(4, 3, dtype=np.float64), nn.LayerNorm(3, dtype=np.float64))
    assert model[0].weight.dtype == np.float64
    check_layer(model, torch_model, image(2, 4).astype(np.float64))


def test_embedding_from_pretrained_matches_torch() -> None:
    table = image(5, 3, seed=10)
    indices = np.array([[4, 0], [2, 2]], dtype=np.int64)
    layer = nn.Embedding.from_pretrained(table)
    expected = torch.nn.Embedding.from_pretrained(torch.from_numpy(table))(
        torch.from_numpy(indices)).detach().numpy()
    for level in LEVELS:
        np.testing.assert_array_equal(ember.compile(layer, indices, **level)(indices), expected)
    assert not layer.weight.requires_grad


def test_max_pool2d_padding_over_half_the_kernel_is_rejected_like_torch() -> None:
    kwargs = dict(kernel_size=3, dilation=2, padding=2)
    x = image(1, 2, 9, 9)
    with pytest.raises(RuntimeError, match="half of kernel size"):
        torch.nn.MaxPool2d(**kwargs)(torch.from_numpy(x))
    with pytest.raises(ember.TraceError, match="must be at most half the kernel"):
        ember.trace(nn.MaxPool2d(**kwargs), x)


# -- each layer followed by elementwise work, at every level ---------------------------------
# Levels 2-3 fuse the elementwise tail into the producing kernel (a GEMM or conv epilogue);
# these cases check that the fused tail is applied, whatever the layer's own options.

EPILOGUE_LAYERS = [
    ("Linear", (6, 4), {"bias": True}, (5, 6)),
    ("Linear", (6, 4), {"bias": False}, (5, 6)),
    ("Linear", (6, 4), {"bias": False}, (2, 3, 6)),
    ("Conv2d", (4, 8, 3), {"padding": 1, "bias": False}, (2, 4, 7, 6)),
    ("Conv2d", (4, 8, 3), {"padding": 1, "bias": True}, (2, 4, 7, 6)),
    ("Conv2d", (4, 8, 1), {"bias": False}, (2, 4, 5, 5)),
    ("Conv2d", (4, 8, 3), {"stride": 2, "groups": 2, "bias": False}, (2, 4, 9, 8)),
    ("Conv2d", (4, 4, 3), {"padding": 1, "groups": 4, "bias": False}, (2, 4, 6, 6)),
]
TAILS = {
    "relu": (lambda lib: lib.ReLU()),
    "gelu": (lambda lib: lib.GELU()),
    "sigmoid": (lambda lib: lib.Sigmoid()),
}


@pytest.mark.parametrize("tail", sorted(TAILS))
@pytest.mark.parametrize(("name", "args", "kwargs", "shape"), EPILOGUE_LAYERS,
                         ids=[f"{n}{a}{k}" for n, a, k, _ in EPILOGUE_LAYERS])
def test_layer_then_activation_matches_torch_at_every_level(name: str, args: tuple, kwargs: dict,
                                                            shape: tuple, tail: str) -> None:
    torch.manual_seed(11)
    torch_model = torch.nn.Sequential(getattr(torch.nn, name)(*args, **kwargs), TAILS[tail](torch.nn))
    model = nn.Sequential(getattr(nn, name)(*args, **kwargs), TAILS[tail](nn))
    model.load_state_dict(state_as_numpy(torch_model))
    x = image(*shape, seed=11)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    for level in (0, 1, 2, 3):
        actual = ember.compile(model, x, opt_level=level)(x)
        assert relative_error(actual, expected) <= RTOL, f"opt_level={level}"


@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_plus_scalar_matches_torch_at_every_level(bias: bool) -> None:
    """A scalar added after a convolution (no layer in between) reaches every output."""
    from ember.nn import functional as F

    weight = image(8, 4, 3, 3, seed=12)
    b = image(8, seed=13) if bias else None
    x = image(2, 4, 6, 7, seed=14)

    def fn(x):
        return F.conv2d(x, weight, b, padding=1) + 1.0

    with torch.no_grad():
        expected = (torch.nn.functional.conv2d(
            torch.from_numpy(x), torch.from_numpy(weight),
            None if b is None else torch.from_numpy(b), padding=1) + 1.0).numpy()
    for level in (0, 1, 2, 3):
        actual = ember.compile(fn, x, opt_level=level)(x)
        assert relative_error(actual, expected) <= RTOL, f"opt_level={level}"
