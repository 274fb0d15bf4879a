"""The activations, normalizations, convolutions, resampling and attention of
`ember.nn.functional` (and their `ember.nn` modules) against `torch.nn.functional`.

Each case is compiled at opt levels 0 and 3 and compared with PyTorch on the same inputs, in
float32 and, where it matters, float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

LEVELS = (0, 3)
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}


def randn(*shape: int, seed: int = 0, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def torch_run(fn: Callable, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
    with torch.no_grad():
        out = fn(*(torch.from_numpy(np.asarray(x)) for x in inputs))
    return tuple(o.numpy() for o in (out if isinstance(out, tuple) else (out,)))


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Elementwise |a - e| <= rtol (|e| + 1); NaN where PyTorch has NaN, infinities equal."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite & ~np.isnan(expected)],
                                  expected[~finite & ~np.isnan(expected)])
    a, e = actual[finite].astype(np.float64), expected[finite].astype(np.float64)
    error = np.abs(a - e) / (np.abs(e) + 1.0)
    assert error.max(initial=0.0) <= rtol, float(error.max(initial=0.0))


def compare(ember_fn: Callable, torch_fn: Callable, *inputs: np.ndarray,
            rtol: float | None = None) -> None:
    """ember.compile at every level against PyTorch; each output compared elementwise."""
    expected = torch_run(torch_fn, *inputs)
    rtol = TOLERANCE[inputs[0].dtype.type] if rtol is None else rtol
    for level in LEVELS:
        out = ember.compile(ember_fn, *inputs, opt_level=level)(*inputs)
        outs = out if isinstance(out, tuple) else (out,)
        assert len(outs) == len(expected)
        for a, e in zip(outs, expected, strict=True):
            assert_close(a, e, rtol)


# -- activations -------------------------------------------------------------------------------

EDGES = [0.0, -0.0, 1e-8, -1e-8, 1e-4, -1e-4, 0.5, -0.5, 3.0, -3.0, 2.9999, 6.0, 7.0, 19.99, 20.0,
         20.01, 40.0, -40.0, 88.0, 89.0, -88.0, -104.0, 200.0, -200.0, 1e30, -1e30, np.inf,
         -np.inf, np.nan]


def edge_input(dtype: type) -> np.ndarray:
    values = np.asarray([*EDGES, 710.0, -750.0], dtype=dtype)
    return np.concatenate([values, randn(37, seed=1, dtype=dtype) * 4]).reshape(4, 17)


ACTIVATIONS = [
    ("softplus", {}), ("softplus", {"beta": 2.0, "threshold": 5.0}), ("softplus", {"beta": 0.5}),
    ("elu", {}), ("elu", {"alpha": 0.3}), ("selu", {}), ("celu", {}), ("celu", {"alpha": 2.5}),
    ("relu6", {}), ("hardtanh", {}), ("hardtanh", {"min_val": -0.25, "max_val": 2.0}),
    ("hardswish", {}), ("hardsigmoid", {}), ("mish", {}), ("logsigmoid", {}), ("softsign", {}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_on_edge_values(dtype: type) -> None:
    """All activations in one graph on large |x|, +-0.0, +-inf, NaN and random values; -0.0
    keeps its sign where PyTorch keeps it."""
    x = edge_input(dtype)

    def run(module: object, xs: object) -> tuple:
        return tuple(getattr(module, name)(xs, **kwargs) for name, kwargs in ACTIVATIONS)

    compare(lambda t: run(F, t), lambda t: run(TF, t), x)
    signs = torch_run(lambda t: run(TF, t), x)
    for name_kwargs, out, expected in zip(ACTIVATIONS, ember.compile(lambda t: run(F, t), x)(x),
                                          signs, strict=True):
        zeros = expected == 0
        np.testing.assert_array_equal(np.signbit(out[zeros]), np.signbit(expected[zeros]),
                                      err_msg=str(name_kwargs))


def test_expm1_branch_is_accurate_near_zero() -> None:
    """elu's exp(x) - 1 for tiny negative x keeps full relative precision (not exp(x) - 1)."""
    x = -np.logspace(-30, 0, 64).astype(np.float32).reshape(8, 8)
    expected = torch_run(TF.elu, x)[0]
    out = ember.compile(F.elu, x)(x)
    np.testing.assert_allclose(out, expected, rtol=3e-7, atol=0)


ACTIVATION_MODULES = [
    (lambda: enn.Softplus(2.0, 3.0), lambda: torch.nn.Softplus(2.0, 3.0)),
    (lambda: enn.ELU(0.5), lambda: torch.nn.ELU(0.5)),
    (enn.SELU, torch.nn.SELU), (lambda: enn.CELU(1.5), lambda: torch.nn.CELU(1.5)),
    (enn.ReLU6, torch.nn.ReLU6),
    (lambda: enn.Hardtanh(-2, 0.5), lambda: torch.nn.Hardtanh(-2, 0.5)),
    (enn.Hardswish, torch.nn.Hardswish), (enn.Hardsigmoid, torch.nn.Hardsigmoid),
    (enn.Mish, torch.nn.Mish), (enn.LogSigmoid, torch.nn.LogSigmoid),
    (enn.Softsign, torch.nn.Softsign),
]


def test_activation_modules() -> None:
    x = randn(3, 5, 7, seed=2) * 5
    ours = [make() for make, _ in ACTIVATION_MODULES]
    theirs = [make() for _, make in ACTIVATION_MODULES]
    compare(lambda t: tuple(m(t) for m in ours), lambda t: tuple(m(t) for m in theirs), x)


# -- normalization -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize(dtype: type) -> None:
    x = randn(3, 5, 4, seed=3, dtype=dtype)
    x[1, :, 2] = 0.0  # a zero vector: the norm is clamped at eps
    cases = [{}, {"p": 1.0}, {"p": 3.0, "dim": -1}, {"p": float("inf"), "dim": 0},
             {"dim": 2, "eps": 0.5}, {"p": 0.5}]

    def run(module: object, t: object) -> tuple:
        return tuple(module.normalize(t, **kwargs) for kwargs in cases)

    compare(lambda t: run(F, t), lambda t: run(TF, t), x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_and_instance_norm(dtype: type) -> None:
    x = randn(2, 6, 5, 3, seed=4, dtype=dtype) * 3 + 1
    x1 = randn(3, 4, 7, seed=5, dtype=dtype)
    w, b = randn(6, seed=6, dtype=dtype), randn(6, seed=7, dtype=dtype)

    def run(module: object, t: object, t1: object, wt: object, bt: object) -> tuple:
        return (module.group_norm(t, 3, wt, bt), module.group_norm(t, 1),
                module.group_norm(t, 6, eps=0.1), module.group_norm(t1, 2),
                module.instance_norm(t, weight=wt, bias=bt), module.instance_norm(t1, eps=1e-3))

    compare(lambda *a: run(F, *a), lambda *a: run(TF, *a), x, x1, w, b)


def test_norms_of_extreme_values() -> None:
    """Values whose squares overflow or underflow float32: Ember's results are those of
    PyTorch in float64 (PyTorch's own float32 norms overflow to 0 or NaN here)."""
    x = np.array([[1e20, 2e20, 1.0, -3e19], [1e-30, 3e-30, 0.0, -2e-30],
                  [1e38, 1e38, 1.0, -1e38], [0.0, 0.0, 0.0, 0.0]], np.float32)
    x4 = x.reshape(1, 4, 2, 2)

    def run(module: object, t: object, t4: object) -> tuple:
        return (module.normalize(t, dim=1), module.normalize(t, p=3.0, dim=1),
                module.normalize(t, p=1.0, dim=1), module.group_norm(t4, 2),
                module.instance_norm(t4))

    wide = torch_run(lambda *a: run(TF, *a), x.astype(np.float64), x4.astype(np.float64))
    for level in LEVELS:
        outs = ember.compile(lambda *a: run(F, *a), x, x4, opt_level=level)(x, x4)
        for a, e in zip(outs, wide, strict=True):
            assert_close(a, e.astype(np.float32), 2e-6)


def test_instance_norm_with_running_statistics() -> None:
    x = randn(2, 3, 4, 5, seed=8)
    mean, var = randn(3, seed=9), np.abs(randn(3, seed=10)) + 0.5
    compare(lambda t, m, v: F.instance_norm(t, m, v, use_input_stats=False),
            lambda t, m, v: TF.instance_norm(t, m, v, use_input_stats=False), x, mean, var)


def test_norm_modules() -> None:
    x = randn(2, 6, 4, 5, seed=11)
    group, instance = enn.GroupNorm(3, 6), enn.InstanceNorm2d(6, affine=True)
    tgroup, tinstance = torch.nn.GroupNorm(3, 6), torch.nn.InstanceNorm2d(6, affine=True)
    rng = np.random.default_rng(12)
    for ours, theirs in ((group, tgroup), (instance, tinstance)):
        for name in ("weight", "bias"):
            value = rng.standard_normal(6).astype(np.float32)
            getattr(ours, name).data[...] = value
            getattr(theirs, name).data = torch.from_numpy(value.copy())
    compare(lambda t: (group(t), instance(t), enn.InstanceNorm2d(6)(t), instance(t[0])),
            lambda t: (tgroup(t), tinstance(t), torch.nn.InstanceNorm2d(6)(t), tinstance(t[0])),
            x)


# -- convolutions ------------------------------------------------------------------------------

CONV1D = [
    {}, {"stride": 2}, {"padding": 2}, {"dilation": 3, "padding": 1}, {"padding": "same"},
    {"groups": 2, "stride": 3, "padding": 1},
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv1d(dtype: type) -> None:
    x = randn(2, 4, 13, seed=13, dtype=dtype)
    w, w_grouped = randn(6, 4, 3, seed=14, dtype=dtype), randn(6, 2, 3, seed=15, dtype=dtype)
    b = randn(6, seed=16, dtype=dtype)

    def run(module: object, t: object, wt: object, wg: object, bt: object) -> tuple:
        outs = tuple(module.conv1d(t, wg if k.get("groups") else wt, bt, **k) for k in CONV1D)
        return (*outs, module.conv1d(t[0], wt))

    compare(lambda *a: run(F, *a), lambda *a: run(TF, *a), x, w, w_grouped, b)


CONV_TRANSPOSE = [
    {}, {"stride": 2}, {"stride": (2, 3), "padding": (1, 2)},
    {"stride": 2, "padding": 1, "output_padding": 1},
    {"stride": (3, 2), "output_padding": (2, 1)}, {"dilation": 2, "padding": 2},
    {"dilation": (2, 1), "output_padding": (1, 0)},  # output_padding below the dilation
    {"groups": 3, "stride": 2, "padding": 1}, {"padding": 3},  # a padding that crops
    {"groups": 3, "dilation": 2, "stride": 3, "padding": (0, 4), "output_padding": 1},
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_transpose2d(dtype: type) -> None:
    x = randn(2, 6, 5, 4, seed=17, dtype=dtype)
    w = randn(6, 2, 3, 4, seed=18, dtype=dtype)  # [C_in, C_out / groups, kH, kW]
    b = randn(2, seed=19, dtype=dtype)
    b3 = randn(6, seed=20, dtype=dtype)

    def run(module: object, t: object, wt: object, bt: object, bt3: object) -> tuple:
        outs = tuple(module.conv_transpose2d(t, wt, bt3 if k.get("groups") else bt, **k)
                     for k in CONV_TRANSPOSE)
        return (*outs, module.conv_transpose2d(t[1], wt, stride=2))

    compare(lambda *a: run(F, *a), lambda *a: run(TF, *a), x, w, b, b3)


def test_conv_modules() -> None:
    x, x1 = randn(2, 4, 6, 5, seed=21), randn(2, 4, 11, seed=22)
    ours = enn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1, groups=2)
    theirs = torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1,
                                      groups=2)
    ours1, theirs1 = enn.Conv1d(4, 3, 5, stride=2, padding=2), torch.nn.Conv1d(4, 3, 5, 2, 2)
    assert ours.weight.data.shape == tuple(theirs.weight.shape) == (4, 3, 3, 2)
    for mine, torch_layer in ((ours, theirs), (ours1, theirs1)):
        torch_layer.weight.data = torch.from_numpy(np.asarray(mine.weight.data).copy())
        torch_layer.bias.data = torch.from_numpy(np.asarray(mine.bias.data).copy())
    size = (11, 9)  # output_padding 0 for the rows, 1 for the columns (not the layer's 1, 1)
    compare(lambda t, t1: (ours(t), ours1(t1), ours(t, output_size=size)),
            lambda t, t1: (theirs(t), theirs1(t1), theirs(t, output_size=size)), x, x1)


# -- rearrangement and resampling --------------------------------------------------------------


def test_pixel_shuffle() -> None:
    x, y = randn(2, 18, 3, 5, seed=23), randn(3, 4, 6, 9, seed=24)
    compare(lambda t, u: (F.pixel_shuffle(t, 3), F.pixel_unshuffle(u, 3),
                          F.pixel_shuffle(t[0], 1), enn.PixelShuffle(3)(t),
                          enn.PixelUnshuffle(3)(u), F.pixel_shuffle(F.pixel_unshuffle(u, 3), 3)),
            lambda t, u: (TF.pixel_shuffle(t, 3), TF.pixel_unshuffle(u, 3),
                          TF.pixel_shuffle(t[0], 1), torch.nn.PixelShuffle(3)(t),
                          torch.nn.PixelUnshuffle(3)(u), TF.pixel_shuffle(TF.pixel_unshuffle(u, 3),
                                                                          3)),
            x, y)


INTERPOLATE = [
    {"scale_factor": 2}, {"scale_factor": 3.5}, {"scale_factor": 0.5}, {"size": (7, 3)},
    {"size": 5}, {"scale_factor": (1.7, 0.8)}, {"scale_factor": 2.3},
    {"scale_factor": 1.3, "recompute_scale_factor": True}, {"scale_factor": (1.1, 2.1)},
]
MODES = [("nearest", None), ("nearest-exact", None), ("bilinear", False), ("bilinear", True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_interpolate(dtype: type) -> None:
    x = randn(2, 3, 5, 6, seed=25, dtype=dtype)
    x1 = randn(1, 2, 1, 4, seed=26, dtype=dtype)  # one row: align_corners with a unit extent
    x2 = randn(1, 2, 12, 5, seed=27, dtype=dtype)  # sizes that stay while the scale is not 1

    def run(module: object, t: object, t1: object, t2: object) -> tuple:
        outs = []
        for mode, align in MODES:
            outs += [module.interpolate(t, mode=mode, align_corners=align, **k)
                     for k in INTERPOLATE]
            outs.append(module.interpolate(t1, size=(3, 1), mode=mode, align_corners=align))
            outs += [module.interpolate(t2, scale_factor=f, mode=mode, align_corners=align)
                     for f in ((1.05, 2.19), (0.95, 1.0))]
        return tuple(outs)

    compare(lambda *a: run(F, *a), lambda *a: run(TF, *a), x, x1, x2)


def test_upsample_module() -> None:
    x = randn(2, 3, 4, 5, seed=27)
    compare(lambda t: (enn.Upsample(scale_factor=2)(t), enn.Upsample((3, 7), mode="bilinear")(t),
                       enn.Upsample(scale_factor=1.5, mode="bilinear", align_corners=True)(t)),
            lambda t: (torch.nn.Upsample(scale_factor=2)(t),
                       torch.nn.Upsample((3, 7), mode="bilinear")(t),
                       torch.nn.Upsample(scale_factor=1.5, mode="bilinear",
                                         align_corners=True)(t)), x)


# -- attention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scaled_dot_product_attention(dtype: type) -> None:
    q, k = randn(2, 3, 5, 8, seed=28, dtype=dtype), randn(2, 3, 7, 8, seed=29, dtype=dtype)
    v = randn(2, 3, 7, 4, seed=30, dtype=dtype)
    float_mask = randn(5, 7, seed=31, dtype=dtype)
    bool_mask = np.random.default_rng(32).random((2, 1, 5, 7)) < 0.7
    bool_mask[0, 0, 1] = False  # a query with every key masked out: zeros in PyTorch
    float_mask[3] = -np.inf
    float_mask[1, 2:4] = -np.inf
    square_k, square_v = k[:, :, :5], v[:, :, :5]

    def run(module: object, qt: object, kt: object, vt: object, fm: object, bm: object,
            sk: object, sv: object) -> tuple:
        sdpa = module.scaled_dot_product_attention
        return (sdpa(qt, kt, vt), sdpa(qt, kt, vt, scale=0.3), sdpa(qt, kt, vt, attn_mask=fm),
                sdpa(qt, kt, vt, attn_mask=bm), sdpa(qt, sk, sv, is_causal=True),
                sdpa(qt, kt, vt, is_causal=True), sdpa(qt[0, 0], kt[0, 0], vt[0, 0]))

    compare(lambda *a: run(F, *a), lambda *a: run(TF, *a), q, k, v, float_mask, bool_mask,
            square_k, square_v)


# -- gradients ---------------------------------------------------------------------------------


def assert_grads_match_torch(loss: Callable[..., object], arrays: tuple[np.ndarray, ...],
                             count: int, rtol: float, atol: float) -> None:
    """`loss(module, *arrays)` differentiated in its first `count` arguments by ember.grad
    (module = ember.nn.functional) and by torch.autograd (torch.nn.functional)."""
    grads = ember.grad(lambda *a: loss(F, *a), argnums=tuple(range(count)))(*arrays)
    tensors = [torch.from_numpy(a.copy()).requires_grad_(i < count)
               for i, a in enumerate(arrays)]
    loss(TF, *tensors).backward()
    for ours, tensor in zip(grads, tensors[:count], strict=True):
        np.testing.assert_allclose(ours, tensor.grad.numpy(), rtol=rtol, atol=atol)

def test_gradients_against_torch_autograd() -> None:
    """ember.grad of conv_transpose2d, group_norm and bilinear interpolate against autograd."""
    x = randn(2, 4, 5, 3, seed=33, dtype=np.float64)
    w = randn(4, 3, 3, 2, seed=34, dtype=np.float64)
    gw = randn(6, seed=35, dtype=np.float64)
    probe = randn(2, 6, 7, 10, seed=36, dtype=np.float64)

    def loss(module: object, t: object, wt: object, g: object, p: object) -> object:
        y = module.conv_transpose2d(t, wt, stride=(2, 3), padding=1, output_padding=(1, 0),
                                    groups=2)
        y = module.group_norm(y, 3, g)
        y = module.interpolate(y, size=(7, 10), mode="bilinear", align_corners=False)
        return (y * y * p).sum()

    assert_grads_match_torch(loss, (x, w, gw, probe), 3, rtol=1e-9, atol=1e-11)


def test_attention_gradients_against_torch_autograd() -> None:
    """Through a boolean mask with a fully masked query (whose zeros have no gradient) and
    through is_causal."""
    rng = np.random.default_rng(38)
    q, k, v = (rng.standard_normal(s) for s in ((2, 4, 3), (2, 5, 3), (2, 5, 2)))
    mask = rng.random((4, 5)) < 0.6
    mask[1] = False

    def loss(module: object, qt: object, kt: object, vt: object, m: object) -> object:
        sdpa = module.scaled_dot_product_attention
        return ((sdpa(qt, kt, vt, attn_mask=m) ** 2).sum()
                + (sdpa(qt, kt, vt, is_causal=True) ** 2).sum())

    assert_grads_match_torch(loss, (q, k, v, mask), 3, rtol=1e-10, atol=1e-12)


GRAD_ACTIVATIONS = ["softplus", "mish", "elu", "selu", "celu", "logsigmoid", "hardswish",
                    "hardsigmoid", "relu6", "hardtanh", "softsign"]


def test_activation_gradients_against_torch_autograd() -> None:
    """Finite gradients where exp overflows or underflows in the unused branch, and PyTorch's
    choice at the kinks (0 at the bounds of hardtanh and relu6, hardswish's 0 at -3)."""
    x = np.array([-1e30, -200.0, -30.0, -5.0, -3.0, -1.0, -1e-6, 0.0, 1e-6, 0.5, 1.0, 3.0, 6.0,
                  19.0, 21.0, 50.0, 200.0, 1e30], dtype=np.float64)
    for name in GRAD_ACTIVATIONS:
        ours = ember.grad(lambda t, n=name: getattr(F, n)(t).sum())(x)
        tensor = torch.from_numpy(x.copy()).requires_grad_(True)
        getattr(TF, name)(tensor).sum().backward()
        np.testing.assert_allclose(ours, tensor.grad.numpy(), rtol=1e-12, atol=1e-8,
                                   err_msg=name)


# -- errors ------------------------------------------------------------------------------------

ERRORS = [
    (lambda t: F.interpolate(t, scale_factor=2, mode="area"), "area"),
    (lambda t: F.interpolate(t, scale_factor=2, align_corners=True), "align_corners"),
    (lambda t: F.interpolate(t[0, 0], scale_factor=2), "3-D, 4-D or 5-D"),
    (lambda t: F.interpolate(t), "exactly one"),
    (lambda t: F.scaled_dot_product_attention(t, t, t, dropout_p=0.1), "dropout_p"),
    (lambda t: F.group_norm(t, 4), "num_groups=4"),
    (lambda t: F.pixel_shuffle(t, 2), "upscale_factor"),
    (lambda t: F.conv_transpose2d(t, np.ones((3, 1, 2, 2), np.float32), stride=2,
                                  output_padding=2), "output_padding"),
    (lambda t: F.conv_transpose2d(t, np.ones((2, 1, 2, 2), np.float32)), "groups=1"),
    (lambda t: F.conv_transpose2d(t, np.ones((3, 1, 2, 2), np.float32), stride=0), "positive"),
    (lambda t: F.instance_norm(t, np.zeros(3, np.float32), np.ones(3, np.float32)), "running"),
]


@pytest.mark.parametrize(("fn", "words"), ERRORS, ids=[w for _, w in ERRORS])
def test_clear_errors(fn: Callable, words: str) -> None:
    x = randn(1, 3, 4, 4, seed=37)
    with pytest.raises(ember.EmberError, match=words):
        ember.trace(fn, x)
