"""Activation references (level 0) against float64 / mpmath ground truth, and every opt level
against the same truth: gelu (erf and tanh forms) and silu of negative x, where the textbook
formulas cancel (1 + erf, 1 + tanh) or multiply x into an already subnormal factor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import ember
import ember.nn.functional as F

LEVELS = [0, 1, 2, 3]

# Negative tails where 1 + erf(x / sqrt 2) and 1 + tanh(u) cancel, plus ordinary values.
NEGATIVE_TAIL = np.array([-3.4, -11.0, -5.0, -8.25, -13.5, -1.0, 0.5, 2.0], np.float32)


def run(fn, x: np.ndarray, level: int) -> np.ndarray:
    return np.asarray(ember.compile(fn, x, opt_level=level)(x))


def ulp_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Error in ulps of the result's type (subnormal steps below the smallest normal)."""
    dtype = actual.dtype
    spacing = np.spacing(np.abs(expected).astype(dtype)).astype(np.float64)
    spacing = np.maximum(spacing, float(np.finfo(dtype).smallest_subnormal))
    return float((np.abs(actual.astype(np.float64) - expected) / spacing).max())


def gelu_float64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.array([v / 2 * math.erfc(-v / math.sqrt(2)) for v in x])


def mp_gelu(values: np.ndarray, approximate: str) -> np.ndarray:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    out = []
    for value in values.astype(np.float64):
        v = mpmath.mpf(float(value))
        if approximate == "tanh":
            inner = mpmath.sqrt(2 / mpmath.pi) * (v + mpmath.mpf(0.044715) * v**3)
            out.append(float(v / (1 + mpmath.exp(-2 * inner))))
        else:
            out.append(float(v / 2 * mpmath.erfc(-v / mpmath.sqrt(2))))
    return np.array(out)


@pytest.mark.parametrize("level", LEVELS)
def test_gelu_of_negative_float32_keeps_relative_accuracy(level: int) -> None:
    actual = run(F.gelu, NEGATIVE_TAIL, level)
    expected = gelu_float64(NEGATIVE_TAIL)
    assert actual.dtype == np.float32
    assert np.all(actual[expected != 0] != 0)  # gelu(-11) = -2.1e-27, not -0.0
    assert ulp_error(actual, expected) <= 6  # vecmath's f32 gelu bound


@pytest.mark.parametrize("level", LEVELS)
def test_gelu_tanh_of_negative_float32_keeps_relative_accuracy(level: int) -> None:
    # PyTorch's float64 formula itself cancels here (-0.0 at -8.25), so mpmath is the truth.
    actual = run(lambda a: F.gelu(a, approximate="tanh"), NEGATIVE_TAIL, level)
    assert ulp_error(actual, mp_gelu(NEGATIVE_TAIL, "tanh")) <= 4


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("level", LEVELS)
def test_gelu_of_negative_float64_within_a_few_ulps(level: int, approximate: str) -> None:
    x = np.concatenate([np.linspace(-36.0, -0.5, 143), [-3.5, -20.5, 1.5, 9.0]])
    if approximate == "tanh":
        x = x[x > -20.5]  # |gelu_tanh| is normal down to about -21
    actual = run(lambda a: F.gelu(a, approximate=approximate), x, level)
    assert ulp_error(actual, mp_gelu(x, approximate)) <= 6


def test_gelu_reference_rounds_subnormal_results_once() -> None:
    # erfc(|x| / sqrt 2) is itself subnormal below about -37.7 (exp(2u) below about -21.2 for
    # the tanh form): the factor must not be rounded before x multiplies it.
    for approximate, x in [("none", np.array([-37.55, -38.0, -38.5, -38.6])),
                           ("tanh", np.array([-21.2, -21.3, -21.45, -21.6]))]:
        actual = run(lambda a, ap=approximate: F.gelu(a, approximate=ap), x, 0)
        assert ulp_error(actual, mp_gelu(x, approximate)) <= 2


def mp_silu(x: np.ndarray) -> np.ndarray:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    return np.array([float(mpmath.mpf(float(v)) / (1 + mpmath.exp(-mpmath.mpf(float(v)))))
                     for v in x])


@pytest.mark.parametrize("level", LEVELS)
def test_silu_of_negative_x_keeps_relative_accuracy(level: int) -> None:
    for x in [np.array([-80.0, -60.0, -17.0, -3.0, 2.0], np.float32),
              np.array([-700.0, -350.0, -20.0, 3.0])]:
        assert ulp_error(run(F.silu, x, level), mp_silu(x)) <= 4


def test_silu_reference_rounds_subnormal_results_once() -> None:
    # exp(x) is subnormal where x exp(x) is not yet (f32 below -87.3, f64 below -708.4).
    for x in [np.array([-90.0, -100.0, -95.5], np.float32), np.array([-705.0, -730.0, -740.0])]:
        assert ulp_error(run(F.silu, x, 0), mp_silu(x)) <= 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", LEVELS)
def test_gelu_and_silu_special_values_are_the_documented_ones(level: int, dtype: type) -> None:
    # -inf * 0 = nan at -inf (numpy, PyTorch); +inf at +inf (PyTorch's f32 gelu gives nan).
    x = np.array([-np.inf, np.inf, np.nan, -0.0, 0.0, -1e30, 1e30], dtype)
    expected = np.array([np.nan, np.inf, np.nan, -0.0, 0.0, -0.0, 1e30], dtype)
    for fn in [F.gelu, lambda a: F.gelu(a, approximate="tanh"), F.silu]:
        actual = run(fn, x, level)
        np.testing.assert_array_equal(actual, expected)
        np.testing.assert_array_equal(np.signbit(actual[3:]), np.signbit(expected[3:]))
