"""conv2d, matmul, layer_norm and softmax at their edges, at every opt level, against PyTorch.

Each test compiles at opt levels 0 (the reference interpreter), 1, 2 and 3 and checks every
result against PyTorch (float64 where PyTorch's float32 kernels are themselves wrong, with the
reason next to the test) or float64 numpy: GEMM epilogues without a bias, inf and NaN weights
reaching the zero padding, rows of huge values through layer_norm, matmul near the float32
range, and softmax or reductions over an axis of size 0. docs/numerics.md states the rules.
"""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import nn
from ember.errors import EmberError
from ember.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

LEVELS = [0, 1, 2, 3]
F32_MAX = float(np.finfo(np.float32).max)


def floats(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def t(array: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(array))


def close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-5,
          atol: float = 1e-5) -> None:
    """Equal shapes and dtypes; NaN where expected is NaN, inf of the same sign where it is
    inf, and close elsewhere."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def gemm_calls(executable) -> list[str]:
    text = str(executable.native.program)
    return [line.strip() for line in text.splitlines() if "ember_gemm_" in line]


# -- 1. a conv2d without bias keeps the elementwise chain of its GEMM ----------------------------

# (input shape, Conv2d arguments): the implicit GEMM (stride 1, several images and one image),
# the im2col GEMM (stride 2) and the 1x1 convolution that reads the image as is.
GEMM_CONVS = [
    ((2, 8, 12, 12), dict(kernel_size=3, stride=1, padding=1)),
    ((1, 8, 20, 20), dict(kernel_size=3, stride=1, padding=1)),
    ((2, 8, 24, 24), dict(kernel_size=3, stride=2, padding=1)),
    ((2, 32, 8, 8), dict(kernel_size=1)),
]
GEMM_IDS = ["implicit", "implicit-1-image", "im2col-stride2", "1x1"]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("shape", "kwargs"), GEMM_CONVS, ids=GEMM_IDS)
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d_keeps_relu_epilogue_with_and_without_bias(shape, kwargs, bias, level) -> None:
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(torch.nn.Conv2d(shape[1], 16, bias=bias, **kwargs),
                                      torch.nn.ReLU())
    model = nn.Sequential(nn.Conv2d(shape[1], 16, bias=bias, **kwargs), nn.ReLU())
    model.load_state_dict({k: v.detach().numpy().copy()
                           for k, v in torch_model.state_dict().items()})
    model.eval()
    x = floats(*shape, seed=1)
    executable = ember.compile(model, x, opt_level=level)
    if level == 3:  # the chain runs in the GEMM's store: the path this test guards
        calls = gemm_calls(executable)
        assert calls and all("_ep" in c for c in calls), calls
    with torch.no_grad():
        expected = torch_model(t(x)).numpy()
    actual = executable(x)
    assert actual.min() >= 0.0
    close(actual, expected)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("shape", "kwargs"), GEMM_CONVS, ids=GEMM_IDS)
def test_conv2d_without_bias_keeps_scalar_add_epilogue(shape, kwargs, level) -> None:
    kernel = kwargs["kernel_size"]
    w = floats(16, shape[1], kernel, kernel, seed=2)
    args = dict(stride=kwargs.get("stride", 1), padding=kwargs.get("padding", 0))
    x = floats(*shape, seed=3)
    executable = ember.compile(lambda a: F.conv2d(a, w, **args) + 1.0, x, opt_level=level)
    expected = TF.conv2d(t(x), t(w), **args).numpy() + np.float32(1.0)
    close(executable(x), expected)


# -- 5. an inf or NaN weight reaches the outputs whose window reads zero padding ------------------
#
# Zero padding is an input of zeros, and 0 * inf and 0 * NaN are NaN, so every output whose
# window puts a non-finite weight on the padding is NaN. PyTorch agrees (its native kernels, its
# float64 kernels, and any kernel on an explicitly padded input) except for its oneDNN float32
# kernel with several images, which skips padded taps; the reference here is therefore PyTorch's
# convolution of the explicitly zero-padded input.

# (input shape, weight shape, F.conv2d arguments): direct loops (small, grouped, depthwise,
# kernels wider than the unrolled columns, dilated), and each GEMM path at level 3.
NONFINITE_CONVS = [
    ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding=1)),
    ((2, 4, 6, 7), (4, 2, 3, 3), dict(padding=1, groups=2)),
    ((1, 4, 6, 6), (4, 1, 3, 3), dict(padding=2, groups=4)),
    ((1, 1, 3, 40), (2, 1, 1, 35), dict(padding=(0, 17))),
    ((1, 2, 7, 9), (3, 2, 3, 2), dict(padding=(2, 1), dilation=2, stride=(1, 2))),
    ((2, 8, 12, 12), (16, 8, 3, 3), dict(padding=1)),
    ((1, 8, 12, 12), (16, 8, 3, 3), dict(padding=1)),
    ((2, 8, 24, 24), (16, 8, 3, 3), dict(padding=1, stride=2)),
]
NONFINITE_IDS = ["direct", "groups2", "depthwise-pad2", "wide-kernel", "dilated-strided",
                 "implicit-gemm", "implicit-gemm-1-image", "im2col-gemm"]


def padded_reference(x: np.ndarray, w: np.ndarray, padding, **kwargs) -> np.ndarray:
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    padded = TF.pad(t(x).double(), (pw, pw, ph, ph))
    return TF.conv2d(padded, t(w).double(), **kwargs).float().numpy()


def nonfinite_weight(shape: tuple[int, ...], bad: float, seed: int = 4) -> np.ndarray:
    w = floats(*shape, seed=seed)
    w[0, 0, 0, 0] = bad  # a corner tap: reaches the padding on two sides
    w[-1, -1, -1, -1] = -bad  # the opposite corner of another output channel
    return w


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), NONFINITE_CONVS, ids=NONFINITE_IDS)
def test_conv2d_nonfinite_constant_weight_reaches_zero_padded_outputs(
        x_shape, w_shape, kwargs, bad, level) -> None:
    x, w = floats(*x_shape, seed=5), nonfinite_weight(w_shape, bad)
    expected = padded_reference(x, w, **kwargs)
    assert np.isnan(expected).any()  # the case reaches the padding
    actual = ember.compile(lambda a: F.conv2d(a, w, **kwargs), x, opt_level=level)(x)
    close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), NONFINITE_CONVS, ids=NONFINITE_IDS)
def test_conv2d_nonfinite_runtime_weight_reaches_zero_padded_outputs(
        x_shape, w_shape, kwargs, level) -> None:
    x, finite = floats(*x_shape, seed=5), floats(*w_shape, seed=6)
    executable = ember.compile(lambda a, b: F.conv2d(a, b, **kwargs), x, finite, opt_level=level)
    for w in (nonfinite_weight(w_shape, np.nan), nonfinite_weight(w_shape, np.inf), finite):
        close(executable(x, w), padded_reference(x, w, **kwargs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_conv2d_nonfinite_weight_reaches_padding_in_the_blocked_layout(bad) -> None:
    pipeline = "simplify,fold-constants,cse,dce,layout,fuse,dce,plan-memory"
    for x_shape, w_shape, kwargs in [((2, 8, 12, 12), (16, 8, 3, 3), dict(padding=1)),
                                     ((1, 3, 7, 7), (5, 3, 3, 3), dict(padding=2, stride=2))]:
        x, w = floats(*x_shape, seed=7), nonfinite_weight(w_shape, bad)
        executable = ember.compile(lambda a: F.conv2d(a, w, **kwargs), x, passes=pipeline)
        assert any(n.op == "conv2d_nchwc" for n in executable.graph.nodes)
        close(executable(x), padded_reference(x, w, **kwargs), rtol=1e-4, atol=1e-4)


# -- 6. layer_norm of huge rows, matmul near the float32 range ---------------------------------


def torch_layer_norm64(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    shape = w.shape
    return TF.layer_norm(t(x).double(), shape, t(w).double(), t(b).double()).numpy().astype(
        x.dtype)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("scale", [1.0, 1e18, 2e19, 1e30, 1e37])
@pytest.mark.parametrize("size", [33, 768])
def test_layer_norm_of_huge_rows_matches_float64_torch(scale, size, level) -> None:
    """PyTorch's float32 layer_norm returns 0 (or NaN) from |x| of about 1.8e19 on (its
    variance overflows); the normalized values are of order one, and every level returns them,
    as PyTorch does in float64."""
    x = floats(4, size, seed=8, scale=scale)
    w, b = floats(size, seed=9), floats(size, seed=10)
    actual = ember.compile(lambda a: F.layer_norm(a, (size,), w, b), x, opt_level=level)(x)
    close(actual, torch_layer_norm64(x, w, b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("level", LEVELS)
def test_layer_norm_of_rows_near_float32_max_and_of_nonfinite_rows(level) -> None:
    x = floats(6, 40, seed=11)
    x[0] = np.linspace(-F32_MAX, F32_MAX, 40, dtype=np.float32)  # the row sum overflows
    x[1, :20] = F32_MAX  # mean and squares overflow, the row is not constant
    x[2, 3] = np.inf
    x[3, 5] = np.nan
    x[4, 7] = -np.inf
    w, b = floats(40, seed=12), floats(40, seed=13)
    expected = torch_layer_norm64(x, w, b)
    assert np.isnan(expected[2:5]).all() and np.isfinite(expected[[0, 1, 5]]).all()
    actual = ember.compile(lambda a: F.layer_norm(a, (40,), w, b), x, opt_level=level)(x)
    close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("scale", [1.0, 1e160, 1e300])
def test_layer_norm_float64_of_huge_rows_matches_long_double(scale, level) -> None:
    """PyTorch's float64 layer_norm returns 0 from |x| of about 1e154 on (its variance
    overflows), so the reference is numpy's x87 long double (exponents to 1e4932)."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((3, 50)) * scale
    w, b = rng.standard_normal(50), rng.standard_normal(50)
    actual = ember.compile(lambda a: F.layer_norm(a, (50,), w, b), x, opt_level=level)(x)
    wide = x.astype(np.longdouble)
    deviation = wide - wide.mean(axis=1, keepdims=True)
    variance = (deviation**2).mean(axis=1, keepdims=True)
    expected = (deviation / np.sqrt(variance + 1e-5) * w + b).astype(np.float64)
    close(actual, expected, rtol=1e-10, atol=1e-10)


def matmul_error_bound(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The float32 dot product error bound: k * eps * sum |a_ik * b_kj| (float64)."""
    k = a.shape[-1]
    return k * float(np.finfo(np.float32).eps) * (np.abs(a.astype(np.float64)) @ np.abs(b))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("shape", [(64, 64, 64), (4, 8, 4), (3, 96, 40)])
def test_matmul_large_entries_within_float32_range_agree_with_float64(shape, level) -> None:
    """Entries of 1e18 x 1e18: products of 1e36, every partial sum below the float32 max."""
    m, k, n = shape
    a, b = floats(m, k, seed=15, scale=1e18), floats(k, n, seed=16, scale=1e18)
    assert (np.abs(a.astype(np.float64)) @ np.abs(b)).max() < F32_MAX
    actual = ember.compile(lambda x, y: x @ y, a, b, opt_level=level)(a, b)
    expected = (t(a).double() @ t(b).double()).numpy()
    assert np.isfinite(actual).all()
    assert (np.abs(actual - expected) <= matmul_error_bound(a, b)).all()


@pytest.mark.parametrize("level", LEVELS)
def test_matmul_beyond_float32_range_is_never_finite_and_wrong(level) -> None:
    """The documented bound: where sum_k |a_ik * b_kj| passes the float32 max, level 0 returns
    the float64 product rounded to float32, and levels 1-3 (like PyTorch's float32 matmul)
    either return that too or inf or NaN: never a different finite value."""
    a, b = floats(64, 64, seed=17, scale=1e20), floats(64, 64, seed=18, scale=1e18)
    a[::2] *= np.float32(1e-3)  # every other row of the output stays within the range
    actual = ember.compile(lambda x, y: x @ y, a, b, opt_level=level)(a, b)
    exact = (t(a).double() @ t(b).double()).numpy()
    beyond = (np.abs(a.astype(np.float64)) @ np.abs(b)) > F32_MAX
    assert beyond.any() and (~beyond).any()
    with np.errstate(over="ignore"):
        rounded = exact.astype(np.float32)
    if level == 0:
        np.testing.assert_array_equal(actual, rounded)
        return
    within = np.isfinite(actual) & np.isfinite(rounded)
    assert (np.abs(actual - exact)[within] <= matmul_error_bound(a, b)[within]).all()
    assert np.isfinite(actual[~beyond]).all()


# -- 11. softmax and reductions over an axis of size 0 -----------------------------------------


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize(("shape", "dim"), [((3, 0), 1), ((3, 0), -1), ((0, 4), 0),
                                            ((2, 0, 3), 1)])
def test_softmax_over_zero_size_axis_returns_empty(op, shape, dim, level) -> None:
    x = np.zeros(shape, np.float32)
    expected = getattr(torch, op)(t(x), dim=dim).numpy()
    actual = ember.compile(lambda a: getattr(F, op)(a, dim=dim), x, opt_level=level)(x)
    close(actual, expected)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("shape", "normalized"), [((0, 4), (4,)), ((3, 0), (0,))])
def test_layer_norm_of_empty_input_returns_empty(shape, normalized, level) -> None:
    x = np.zeros(shape, np.float32)
    expected = TF.layer_norm(t(x), normalized).numpy()
    actual = ember.compile(lambda a: F.layer_norm(a, normalized), x, opt_level=level)(x)
    close(actual, expected)


REDUCTIONS_WITHOUT_IDENTITY = {
    "max": (lambda a: a.max(axis=1), lambda x: torch.amax(x, dim=1)),
    "min": (lambda a: a.min(axis=1), lambda x: torch.amin(x, dim=1)),
    "argmax": (lambda a: a.argmax(axis=1), lambda x: torch.argmax(x, dim=1)),
    "argmin": (lambda a: a.argmin(axis=1), lambda x: torch.argmin(x, dim=1)),
    "max-whole": (lambda a: a.max(), lambda x: torch.amax(x)),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("op", sorted(REDUCTIONS_WITHOUT_IDENTITY))
def test_reduction_without_identity_over_zero_size_axis_raises_at_trace_time(op, level) -> None:
    """PyTorch and numpy raise; Ember raises while tracing, naming the op, the input type and
    the line of the call."""
    fn, torch_fn = REDUCTIONS_WITHOUT_IDENTITY[op]
    x = np.zeros((3, 0), np.float32)
    with pytest.raises((IndexError, RuntimeError)):
        torch_fn(t(x))
    with pytest.raises(EmberError) as info:
        ember.compile(fn, x, opt_level=level)
    message = str(info.value)
    assert op.split("-")[0] in message and "f32[3,0]" in message and "test_conv_norm_edges.py:" in message


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("op", ["sum", "mean", "prod"])
def test_reduction_with_identity_over_zero_size_axis_matches_torch(op, level) -> None:
    x = np.zeros((3, 0), np.float32)
    expected = getattr(torch, op)(t(x), dim=1).numpy()
    actual = ember.compile(lambda a: getattr(a, op)(axis=1), x, opt_level=level)(x)
    close(actual, expected)


# -- conv and norm layers at every level ---------------------------------------------------------

CONV_LAYERS = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, stride=2, padding=1, bias=False),
    dict(kernel_size=(3, 2), padding=(1, 0), dilation=(2, 1)),
    dict(kernel_size=3, groups=4, padding=1, bias=False),
    dict(kernel_size=1),
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kwargs", CONV_LAYERS, ids=[str(c) for c in CONV_LAYERS])
def test_conv_relu_layers_match_torch_at_every_level(kwargs, level) -> None:
    torch.manual_seed(19)
    torch_model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, **kwargs), torch.nn.ReLU())
    model = nn.Sequential(nn.Conv2d(8, 16, **kwargs), nn.ReLU())
    model.load_state_dict({k: v.detach().numpy().copy()
                           for k, v in torch_model.state_dict().items()})
    model.eval()
    x = floats(2, 8, 16, 16, seed=20)
    with torch.no_grad():
        expected = torch_model(t(x)).numpy()
    close(ember.compile(model, x, opt_level=level)(x), expected)


@pytest.mark.parametrize("level", LEVELS)
def test_batch_norm_and_layer_norm_layers_match_torch_at_every_level(level) -> None:
    torch.manual_seed(21)
    torch_bn = torch.nn.BatchNorm2d(8, eps=1e-3)
    torch_ln = torch.nn.LayerNorm((8, 6, 6))
    with torch.no_grad():
        torch_bn.running_mean.normal_()
        torch_bn.running_var.uniform_(0.5, 2.0)
        for layer in (torch_bn, torch_ln):
            for param in layer.parameters():
                param.normal_()
    torch_model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch_bn,
                                      torch.nn.ReLU(), torch_ln).eval()
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, eps=1e-3), nn.ReLU(),
                          nn.LayerNorm((8, 6, 6)))
    model.load_state_dict({k: v.detach().numpy().copy()
                           for k, v in torch_model.state_dict().items()})
    model.eval()
    x = floats(2, 8, 6, 6, seed=22)
    with torch.no_grad():
        expected = torch_model(t(x)).numpy()
    close(ember.compile(model, x, opt_level=level)(x), expected, rtol=1e-4, atol=1e-4)


# -- 7. layer_norm of rows of equal huge values, and eps = 0 -----------------------------------


def long_double_layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray,
                           eps: float) -> np.ndarray:
    """Layer norm over the last axis in x87 long double of the row x / max |x| (exact: each
    value is one division), with eps / max |x|^2, which long double holds without underflow."""
    wide = x.astype(np.longdouble)
    peak = np.abs(wide).max(axis=-1, keepdims=True)
    wide = wide / peak
    deviation = wide - wide.mean(axis=-1, keepdims=True)
    variance = (deviation**2).mean(axis=-1, keepdims=True)
    scaled_eps = np.longdouble(eps) / peak / peak
    return (deviation / np.sqrt(variance + scaled_eps) * w + b).astype(x.dtype)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("size", [1, 5, 8])
@pytest.mark.parametrize("dtype, values", [
    (np.float32, [3e38, -F32_MAX, 1.5 * 2.0**126, 1e20, -2e19]),
    (np.float64, [-3.56e292, float(np.finfo(np.float64).max), 1.5 * 2.0**1022, 1e200, 1e101]),
])
def test_layer_norm_of_rows_of_equal_huge_values_returns_bias(dtype, values, size,
                                                              level) -> None:
    """x - mean = 0 in a row of equal values, so the result is the bias. Rescaled rows (whose
    squares overflow) are divided by max |x| (1 / max |x| is subnormal above 2^126 in f32,
    2^1022 in f64) and eps / max |x|^2 underflows, which the variance floor absorbs."""
    x = np.repeat(np.array(values, dtype=dtype)[:, None], size, axis=1)
    w = (np.arange(size) + 1.0).astype(dtype)
    b = (np.arange(size) * 0.25 - 0.5).astype(dtype)
    expected = long_double_layer_norm(x, w, b, 1e-5)
    np.testing.assert_array_equal(expected, np.broadcast_to(b, x.shape))
    actual = ember.compile(lambda a: F.layer_norm(a, (size,), w, b), x, opt_level=level)(x)
    close(actual, expected, rtol=0, atol=0)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype, peak", [(np.float32, 3e38), (np.float64, 1.7e308)])
def test_layer_norm_of_rows_beyond_subnormal_reciprocal_matches_long_double(dtype, peak,
                                                                            level) -> None:
    """Rows of peaks whose reciprocal is subnormal, not constant: dividing by the peak keeps
    full precision, as long double does."""
    rng = np.random.default_rng(23)
    x = (rng.uniform(-1.0, 1.0, (4, 37)) * peak).astype(dtype)
    x[:, 0] = peak
    x[1, 1:] = dtype(peak)  # one differing value among equal huge ones
    x[1, 5] = dtype(-peak / 3)
    w, b = rng.standard_normal(37).astype(dtype), rng.standard_normal(37).astype(dtype)
    expected = long_double_layer_norm(x, w, b, 1e-5)
    actual = ember.compile(lambda a: F.layer_norm(a, (37,), w, b), x, opt_level=level)(x)
    tol = 1e-4 if dtype is np.float32 else 1e-10
    close(actual, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("scale", [1.0, 1e30])
def test_layer_norm_with_zero_eps_of_constant_row_is_nan_like_torch(scale, level) -> None:
    """With eps = 0 a constant row is 0 / 0: NaN, as in PyTorch (float64, which does not
    overflow at these sizes); the variance floor is min(eps, smallest normal) and leaves it."""
    x = floats(3, 16, seed=24, scale=scale)
    x[1] = x[1, 0]
    w, b = floats(16, seed=25), floats(16, seed=26)
    expected = TF.layer_norm(t(x).double() / scale, (16,), t(w).double(), t(b).double(),
                             eps=0.0).numpy().astype(np.float32)
    assert np.isnan(expected[1]).all() and np.isfinite(expected[[0, 2]]).all()
    actual = ember.compile(lambda a: F.layer_norm(a, (16,), w, b, eps=0.0), x,
                           opt_level=level)(x)
    close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("groups", [1, 2, 4])  # dense, grouped, depthwise
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("constant", [True, False])  # weights folded in, or run-time inputs
def test_outputs_in_the_padding_with_a_bias_of_minus_zero_are_plus_zero(
        level: int, groups: int, constant: bool) -> None:
    """A window wholly in the zero padding sums weight * +0.0 products: +0.0, and then a bias
    of -0.0 leaves +0.0 (PyTorch's answer; 1 / y tells the signs apart); inside the image the
    bias and the products as usual."""
    x = floats(1, 4, 3, 3, seed=3)
    w = floats(4, 4 // groups, 2, 2, seed=4)
    bias = np.array([-0.0, -0.0, 1.5, -0.0], np.float32)

    def expected(x, w):
        return (1.0 / TF.conv2d(t(x), t(w), t(bias), padding=3, groups=groups)).numpy()

    if constant:
        exe = ember.compile(lambda a: 1.0 / F.conv2d(a, w, bias, padding=3, groups=groups), x,
                            opt_level=level)
        got = exe(x)
    else:
        exe = ember.compile(lambda a, b: 1.0 / F.conv2d(a, b, bias, padding=3, groups=groups),
                            x, w, opt_level=level)
        got = exe(x, w)
    close(got, expected(x, w), rtol=1e-5, atol=0)
    assert np.isposinf(got[0, 0, 0, 0])  # a corner output: all padding
