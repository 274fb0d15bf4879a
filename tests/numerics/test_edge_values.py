"""Edge values at every opt level: signed zeros, NaN, ±inf, subnormals and huge arguments.

Each test compiles one traced function at levels 0 (the reference interpreter) to 3 and
compares the results bit for bit where the semantics are exact (the sign of a zero, NaN), and
in ulps against float64 numpy where they are not. The references are written here, from the
documented semantics, or are PyTorch's float32 results where PyTorch is consistent:

- maximum/minimum and the max/min reductions: IEEE 754-2019 maximum/minimum, NaN from either
  side propagates and -0.0 < +0.0 (numpy and PyTorch pick between two zeros by argument order
  and code path, so neither can serve here);
- clip and relu keep x unless it is strictly outside the bounds (numpy's clip, PyTorch's
  clamp and relu): relu(-0.0) = -0.0;
- silu, gelu and gelu_tanh of -inf are nan (-inf * 0), as in numpy and PyTorch;
- sin and cos are accurate for every finite argument (docs/vecmath.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
from ember.nn import functional as F

LEVELS = (0, 1, 2, 3)
TINY = np.float32(1e-40)  # a float32 subnormal
SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, TINY, -TINY, 3e38, -3e38],
                    dtype=np.float32)


def run_levels(fn, *arrays: np.ndarray) -> dict[int, np.ndarray]:
    return {level: np.asarray(ember.compile(fn, *arrays, opt_level=level)(*arrays))
            for level in LEVELS}


def assert_bitwise(got: np.ndarray, expected: np.ndarray, label: str) -> None:
    """Equal values, equal signs of zero, NaN where NaN is expected."""
    got, expected = np.asarray(got), np.asarray(expected).astype(got.dtype)
    assert got.shape == expected.shape, label
    same = (got == expected) & (np.signbit(got) == np.signbit(expected))
    same |= np.isnan(got) & np.isnan(expected)
    bad = np.flatnonzero(~same)
    assert bad.size == 0, (f"{label}: at {bad[:5]} got {got.ravel()[bad[:5]]!r}, "
                           f"expected {expected.ravel()[bad[:5]]!r}")


def ieee_extreme(a: float, b: float, larger: bool) -> float:
    """IEEE 754-2019 maximum (larger) or minimum of two floats, written out."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a == b == 0.0:
        negative = (math.copysign(1, a) < 0 and math.copysign(1, b) < 0) if larger else (
            math.copysign(1, a) < 0 or math.copysign(1, b) < 0)
        return -0.0 if negative else 0.0
    return max(a, b) if larger else min(a, b)


def all_pairs() -> tuple[np.ndarray, np.ndarray]:
    a, b = np.meshgrid(SPECIALS, SPECIALS)
    return a.ravel().copy(), b.ravel().copy()


@pytest.mark.parametrize("larger", [True, False], ids=["maximum", "minimum"])
def test_maximum_minimum_order_signed_zeros_and_propagate_nan_at_every_level(larger) -> None:
    a, b = all_pairs()
    expected = np.array([ieee_extreme(float(x), float(y), larger) for x, y in zip(a, b)],
                        dtype=np.float32)
    ufunc = np.maximum if larger else np.minimum
    for level, got in run_levels(lambda x, y: ufunc(x, y), a, b).items():
        assert_bitwise(got, expected, f"{ufunc.__name__} level {level}")
    # inside a fused chain too (x2 keeps the sign of a zero)
    with np.errstate(over="ignore"):
        doubled = expected * np.float32(2)
    for level, got in run_levels(lambda x, y: ufunc(x, y) * 2.0, a, b).items():
        assert_bitwise(got, doubled, f"{ufunc.__name__} * 2 level {level}")


@pytest.mark.parametrize("larger", [True, False], ids=["max", "min"])
def test_max_min_reductions_order_signed_zeros_at_every_level(larger) -> None:
    rows = np.array([[-0.0, 0.0, -0.0, -0.0], [0.0, -0.0, 0.0, 0.0], [-0.0, -0.0, -0.0, -0.0],
                     [0.0, 0.0, 0.0, 0.0], [-0.0, np.nan, 0.0, 1.0], [-1.0, -0.0, -2.0, 0.0]],
                    dtype=np.float32)
    # rows along the last axis (register accumulator) and the transpose (rows into the output)
    for x, axis in ((rows, 1), (np.ascontiguousarray(rows.T), 0)):
        lines = x if axis == 1 else x.T
        expected = []
        for line in lines:
            value = float(line[0])
            for item in line[1:]:
                value = ieee_extreme(value, float(item), larger)
            expected.append(value)
        method = "max" if larger else "min"
        for level, got in run_levels(lambda t, axis=axis: getattr(t, method)(axis=axis),
                                     x).items():
            assert_bitwise(got, np.array(expected, dtype=np.float32),
                           f"{method}(axis={axis}) level {level}")


def test_max_pool2d_orders_signed_zeros_at_every_level() -> None:
    """A window of zeros pools to +0.0 when it holds one, -0.0 when all are -0.0."""
    windows = [[-0.0, 0.0, -0.0, -0.0], [-0.0, -0.0, -0.0, -0.0], [0.0, -0.0, np.nan, 1.0],
               [-1.0, -0.0, -2.0, -3.0]]
    x = np.zeros((1, 1, 2, 2 * len(windows)), dtype=np.float32)
    for k, window in enumerate(windows):
        x[0, 0, :, 2 * k : 2 * k + 2] = np.float32(window).reshape(2, 2)
    expected = []
    for window in windows:
        value = window[0]
        for item in window[1:]:
            value = ieee_extreme(value, item, larger=True)
        expected.append(value)
    for level, got in run_levels(lambda t: F.max_pool2d(t, 2), x).items():
        assert_bitwise(got.ravel(), np.float32(expected), f"max_pool2d level {level}")


def test_relu_keeps_negative_zero_and_nan_as_pytorch_at_every_level() -> None:
    torch = pytest.importorskip("torch")
    x = np.concatenate([SPECIALS, -np.zeros(37, np.float32)])
    expected = torch.relu(torch.from_numpy(x)).numpy()
    for level, got in run_levels(lambda t: F.relu(t), x).items():
        assert_bitwise(got, expected, f"relu level {level}")


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-0.0, 1.0), (-1.0, 0.0), (-1.0, -0.0),
                                           (None, 0.0), (0.0, None), (-3.0, 3.0)])
def test_clip_keeps_values_on_the_bounds_as_pytorch_clamp_at_every_level(low, high) -> None:
    torch = pytest.importorskip("torch")
    x = np.concatenate([SPECIALS, np.float32([0.5, -0.5, 2.0, -2.0])])
    expected = torch.clamp(torch.from_numpy(x), min=low, max=high).numpy()
    for level, got in run_levels(lambda t: t.clip(low, high), x).items():
        assert_bitwise(got, expected, f"clip({low}, {high}) level {level}")


def test_clip_with_a_nan_bound_gives_nan_at_every_level() -> None:
    x = np.float32([0.0, -1.0, 5.0])
    for level, got in run_levels(lambda t: t.clip(float("nan"), 1.0), x).items():
        assert np.isnan(got).all(), (level, got)


def test_sign_of_negative_zero_is_positive_zero_as_numpy_and_pytorch_at_every_level() -> None:
    torch = pytest.importorskip("torch")
    expected = np.sign(SPECIALS)
    assert_bitwise(torch.sign(torch.from_numpy(SPECIALS)).numpy()[~np.isnan(SPECIALS)],
                   expected[~np.isnan(SPECIALS)], "numpy and PyTorch agree")
    for level, got in run_levels(lambda t: np.sign(t), SPECIALS).items():
        assert_bitwise(got, expected, f"sign level {level}")


@pytest.mark.parametrize("exponent", [0.5, 2.0, 3.0, -1.0, 0.25])
def test_pow_with_a_constant_exponent_is_c_pow_at_every_level(exponent) -> None:
    """The pow op is C's pow: pow(-0.0, 0.5) = +0.0 and pow(-inf, 0.5) = +inf (math.pow;
    PyTorch's pow with a tensor exponent). The exponent is a constant array here; a Python
    scalar 0.5 traces to sqrt instead (the test after the next)."""
    x = np.concatenate([SPECIALS, np.float32([4.0, 0.5, -2.0])])
    odd = exponent == int(exponent) and int(exponent) % 2 == 1
    expected = []
    for value in x.tolist():
        if value == 0 and exponent < 0:  # C: pow(±0, y < 0) = ±inf for odd y, else +inf
            expected.append(math.copysign(math.inf, value) if odd else math.inf)
            continue
        try:
            expected.append(math.pow(value, exponent))
        except ValueError:  # a negative base with a non-integer exponent
            expected.append(math.nan)
        except OverflowError:
            expected.append(math.copysign(math.inf, value) if odd else math.inf)
    with np.errstate(over="ignore"):
        expected = np.array(expected).astype(np.float32)
    exponents = np.full(x.shape, exponent, dtype=np.float32)
    for level, got in run_levels(lambda t: t**exponents, x).items():
        finite = np.isfinite(expected) & (expected != 0)
        assert_bitwise(got[~finite], expected[~finite], f"x ** {exponent} level {level}")
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-6)


def silu64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        return x / (1.0 + np.exp(-x))


def gelu64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    erfc = np.array([math.erfc(-v / math.sqrt(2.0)) if not math.isnan(v) else math.nan
                     for v in x])
    with np.errstate(invalid="ignore"):
        return 0.5 * x * erfc


def gelu_tanh64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        return x / (1.0 + np.exp(-2.0 * inner))


@pytest.mark.parametrize(("name", "fn", "reference"), [
    ("silu", lambda t: F.silu(t), silu64),
    ("gelu", lambda t: F.gelu(t), gelu64),
    ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh"), gelu_tanh64),
])
def test_silu_gelu_at_infinities_nan_zeros_and_subnormals_at_every_level(name, fn,
                                                                         reference) -> None:
    """-inf gives nan (the float64 formulas, numpy and PyTorch agree), +inf gives +inf."""
    x = np.concatenate([SPECIALS, np.float32([-30.0, -100.0, 30.0, 100.0])])
    expected = reference(x)
    assert np.isnan(expected[x == -np.inf]).all() and (expected[x == np.inf] == np.inf).all()
    special = ~np.isfinite(expected) | (x == 0)
    for level, got in run_levels(fn, x).items():
        assert_bitwise(got[special], expected[special], f"{name} level {level}")
        # subnormal results: within 64 subnormal steps (docs/vecmath.md); the reference's own
        # float32 exp(-100) is a subnormal too
        np.testing.assert_allclose(got[~special], expected[~special], rtol=1e-6,
                                   atol=64 * np.finfo(np.float32).smallest_subnormal,
                                   err_msg=f"{name} level {level}")
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    at_minus_inf = torch.tensor([-math.inf])
    theirs = {"silu": functional.silu, "gelu": functional.gelu,
              "gelu_tanh": lambda t: functional.gelu(t, approximate="tanh")}[name](at_minus_inf)
    assert torch.isnan(theirs).all()  # the semantics chosen here are PyTorch's


def huge_float32() -> np.ndarray:
    rng = np.random.default_rng(9)
    magnitudes = 2.0 ** rng.uniform(0, 127, 3000)
    edges = [1e30, -1e30, 1e20, 1e16, 3.4e38, -3.4e38, 2.0**30, 16367173 * 2.0**72]
    return np.concatenate([magnitudes * rng.choice([-1, 1], 3000), edges]).astype(np.float32)


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_of_huge_float32_arguments_match_float64_numpy_at_every_level(name) -> None:
    """cos(1e30) is cos(1e30) at every level, within 2 ulp of float64 numpy (not cos(1))."""
    x = huge_float32()
    ufunc = getattr(np, name)
    expected = ufunc(x.astype(np.float64))
    spacing = np.spacing(np.abs(expected.astype(np.float32))).astype(np.float64)
    for level, got in run_levels(lambda t: ufunc(t), x).items():
        errors = np.abs(got.astype(np.float64) - expected) / spacing
        worst = int(np.argmax(errors))
        assert errors[worst] <= 2, (f"{name} level {level}: {errors[worst]:.1f} ulp at "
                                    f"{x[worst]!r}: got {got[worst]!r}, expected "
                                    f"{expected[worst]!r}")


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_of_huge_float64_arguments_match_mpmath_at_every_level(name) -> None:
    """Compiled levels within 2 ulp of mpmath; level 0 computes with float64 numpy, which is
    8 ulp off at the argument closest to a multiple of pi/2, 6381956970095103 * 2**797
    (docs/vecmath.md), and is held to that."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 1200  # covers the reduction of any double
    rng = np.random.default_rng(10)
    x = 2.0 ** rng.uniform(0, 1023, 3000) * rng.choice([-1, 1], 3000)
    x = np.concatenate([x, [1e300, -1.7e308, 6381956970095103 * 2.0**797]])
    ufunc = getattr(np, name)
    function = getattr(mpmath, name)
    exact = np.array([float(function(mpmath.mpf(float(v)))) for v in x])
    for level, got in run_levels(lambda t: ufunc(t), x).items():
        errors = np.abs(got - exact) / np.spacing(np.abs(exact))
        worst = int(np.argmax(errors))
        assert errors[worst] <= (8 if level == 0 else 2), (name, level, x[worst], got[worst],
                                                           exact[worst])


@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_power_one_half_is_sqrt_as_numpy_and_pytorch_at_every_level(level: int,
                                                                     dtype: type) -> None:
    """`x ** 0.5` and np.power(x, 0.5) take sqrt, as numpy and PyTorch do (-0.0 stays -0.0,
    -inf gives nan), where C's pow would give +0.0 and +inf."""
    torch = pytest.importorskip("torch")
    x = np.array([-np.inf, -4.0, -0.0, 0.0, 1e-45, 2.0, np.inf, np.nan], dtype=dtype)
    with np.errstate(invalid="ignore"):
        want = x ** 0.5
    # PyTorch agrees to rounding (on AVX-512 hosts its float64 pow is a 1-ulp polynomial, not
    # sqrt: 2 ** 0.5 one ulp low); numpy's sqrt is the exact reference for Ember below.
    np.testing.assert_allclose(torch.from_numpy(x).pow(0.5).numpy(), want,
                               rtol=2 * np.finfo(dtype).eps, atol=0)
    for fn in (lambda t: t ** 0.5, lambda t: np.power(t, 0.5)):
        got = ember.compile(fn, x, opt_level=level)(x)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("level", [0, 1, 3])
@pytest.mark.parametrize("rank", [2, 4])
def test_batch_norm_with_an_underflowing_scale_keeps_infinities(level: int, rank: int) -> None:
    """weight / sqrt(var + eps) below float32's range (a subnormal weight over a huge
    variance): an infinite input still gives the formula's infinity (float64 numpy), not
    inf * 0 = NaN; finite inputs give the bias, and ordinary channels are unchanged. PyTorch
    agrees on 2-D inputs; its 4-D CPU kernel folds the scale to float32 and gives NaN."""
    shape = (2, 3) if rank == 2 else (2, 3, 2, 2)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x[0, 1] = np.inf
    x[1, 1] = -np.inf
    mean = np.array([0.5, 1.0, -1.0], np.float32)
    var = np.array([2.0, 3e38, 0.5], np.float32)
    weight = np.array([1.5, -1e-40, 0.0], np.float32)
    bias = np.array([0.25, 1.0, -2.0], np.float32)
    view = (1, 3) + (1,) * (rank - 2)
    wide = [a.astype(np.float64).reshape(view) for a in (mean, var, weight, bias)]
    with np.errstate(invalid="ignore"):
        want = ((x - wide[0]) / np.sqrt(wide[1] + 1e-5) * wide[2] + wide[3]).astype(np.float32)
    assert np.isneginf(want[0, 1]).all() and np.isposinf(want[1, 1]).all()
    fn = lambda a: F.batch_norm(a, mean, var, weight, bias, eps=1e-5)  # noqa: E731
    got = ember.compile(fn, x, opt_level=level)(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
