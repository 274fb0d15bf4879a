"""Narrow and unsigned element types (i8, i16, u8, u16, u32, u64, f16, bf16) against numpy.

Every check runs at opt level 0 (the reference interpreter) and 3 (LLVM native code) and
compares with numpy computed independently: integer arithmetic wraps around as numpy's does,
unsigned division, comparison and min/max read the full unsigned range (values above 2^31 and
2^63), f16 results are numpy's float16 and bf16 results are ml_dtypes' bfloat16 of the f32
result, both rounded to nearest-even. The text IR of every type prints and parses back.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest

import ember
from ember.errors import EmberError
from ember.frontend import tracer
from ember.interpreter import interpret
from ember.ir.types import DType

BF16 = np.dtype(ml_dtypes.bfloat16)
INTS = [np.int8, np.int16, np.uint8, np.uint16, np.uint32, np.uint64]
FLOATS = [np.float16, BF16]
LEVELS = [0, 3]


def run(fn: Callable[..., object], *arrays: np.ndarray, level: int) -> np.ndarray:
    return np.asarray(ember.compile(fn, *arrays, opt_level=level)(*arrays))


def integers(dtype: type, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values over the whole range of `dtype`, its extremes included."""
    info = np.iinfo(dtype)
    values = np.random.default_rng(seed).integers(info.min, info.max, size=shape, dtype=dtype,
                                                  endpoint=True)
    flat = values.reshape(-1)
    flat[:4] = [info.min, info.max, 0, 1]
    return values


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    """Equal dtype, shape and bits (NaNs equal)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want)
        return
    np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))
    zeros = want.astype(np.float64) == 0
    assert np.array_equal(np.signbit(got.astype(np.float64))[zeros],
                          np.signbit(want.astype(np.float64))[zeros])


# -- integers ---------------------------------------------------------------------------------


def _int_div(x: object, y: object) -> object:
    """The `div` op itself: integer division truncating toward zero (ONNX's Div)."""
    return tracer.emit("div", x, y)


_INT_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "lt": lambda a, b: a < b,
    "ge": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", INTS, ids=lambda t: np.dtype(t).name)
def test_integer_arithmetic_wraps_as_numpy(dtype: type, level: int) -> None:
    a, b = integers(dtype, (3, 33), 1), integers(dtype, (3, 33), 2)
    for name, fn in _INT_BINARY.items():
        with np.errstate(over="ignore"):
            want = fn(a, b)
        assert_same(run(fn, a, b, level=level), want), name


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", INTS, ids=lambda t: np.dtype(t).name)
def test_integer_division_truncates_and_unsigned_reads_the_full_range(dtype: type,
                                                                      level: int) -> None:
    a, b = integers(dtype, (2, 40), 3), integers(dtype, (2, 40), 4)
    b[b == 0] = 3
    if np.dtype(dtype).kind == "i":
        b[b == -1] = 7  # (INT_MIN / -1 is covered by test_int_division)
    quotient = (np.sign(a.astype(object) * b.astype(object))
                * (np.abs(a.astype(object)) // np.abs(b.astype(object))))  # exact, toward zero
    assert_same(run(_int_div, a, b, level=level), quotient.astype(dtype))


@pytest.mark.parametrize("level", LEVELS)
def test_unsigned_division_by_values_above_2_to_the_31_and_63(level: int) -> None:
    a32 = np.array([4294967295, 3000000000, 2147483648, 7], np.uint32)
    b32 = np.array([2147483649, 3000000000, 4294967295, 3], np.uint32)
    assert_same(run(_int_div, a32, b32, level=level),
                np.array([1, 1, 0, 2], np.uint32))
    a64 = np.array([2**64 - 1, 2**63 + 5, 2**63, 10], np.uint64)
    b64 = np.array([2**63 + 1, 2**63, 2**64 - 1, 2**63], np.uint64)
    assert_same(run(_int_div, a64, b64, level=level),
                np.array([1, 1, 0, 0], np.uint64))
    assert_same(run(lambda x, y: x > y, a64, b64, level=level), a64 > b64)
    assert_same(run(np.maximum, a64, b64, level=level), np.maximum(a64, b64))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", INTS, ids=lambda t: np.dtype(t).name)
def test_integer_unary_and_reductions(dtype: type, level: int) -> None:
    a = integers(dtype, (4, 17), 5)
    with np.errstate(over="ignore"):
        assert_same(run(lambda x: abs(x), a, level=level), np.abs(a))
        assert_same(run(lambda x: -x, a, level=level), np.negative(a))
    assert_same(run(lambda x: x.max(axis=1), a, level=level), a.max(axis=1))
    assert_same(run(lambda x: x.min(axis=0), a, level=level), a.min(axis=0))
    assert_same(run(lambda x: x.argmax(axis=1), a, level=level), a.argmax(axis=1))
    assert_same(run(lambda x: x.sum(axis=1), a, level=level), a.sum(axis=1, dtype=dtype))
    # numpy's cumsum of a narrow integer runs in i64 (u64 for unsigned types)
    assert_same(run(lambda x: np.cumsum(x, axis=1), a, level=level), np.cumsum(a, axis=1))


def test_promotion_follows_numpy_for_mixed_integers() -> None:
    from ember.frontend.tracer import promote

    pairs = [(np.uint8, np.int8), (np.uint16, np.int16), (np.uint32, np.int32),
             (np.uint8, np.int32), (np.uint64, np.int64), (np.uint8, np.uint32),
             (np.int8, np.int16)]
    for left, right in pairs:
        want = np.promote_types(left, right)
        assert promote(DType.from_numpy(left), DType.from_numpy(right)).numpy == want


def test_a_python_integer_out_of_range_is_refused() -> None:
    a = np.arange(4, dtype=np.uint8)
    with pytest.raises(EmberError, match="300 is out of range for u8"):
        ember.trace(lambda x: x + 300, a)


# -- casts ------------------------------------------------------------------------------------

_CAST_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
               np.uint64, np.float16, BF16, np.float32, np.float64, np.bool_]


def _cast_source(dtype: np.dtype) -> np.ndarray:
    """Values of `dtype` that every target of _CAST_TYPES holds after numpy's cast without
    leaving its range (out-of-range float -> int is left to the machine by numpy)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return integers(dtype, (64,), 7)
    if dtype == np.bool_:
        return np.array([True, False, True], np.bool_)
    values = [0.0, -0.0, 1.5, -2.5, 2.5, 0.1, 100.7, 127.9, 255.5, -128.0, 1e-3]
    return np.array(values, np.float64).astype(dtype)


def _numpy_cast(x: np.ndarray, target: np.dtype) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if np.dtype(target) == BF16 and x.dtype.kind in "iu":
            return x.astype(np.float32).astype(BF16)  # ml_dtypes rounds integers via f32
        return x.astype(target)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("source", _CAST_TYPES, ids=lambda t: np.dtype(t).name)
def test_casts_between_all_types(source: type, level: int) -> None:
    x = _cast_source(source)
    for target in _CAST_TYPES:
        target = np.dtype(target)
        if x.dtype.kind == "f" or x.dtype == BF16:
            if target.kind == "u":
                x = np.abs(x)  # negative float -> unsigned is out of range
            if target.kind in "iu":
                low, high = np.iinfo(target).min, np.iinfo(target).max
                x = x[(x.astype(np.float64) >= low) & (x.astype(np.float64) <= high)]
        if x.dtype.kind in "iu" and target == np.float16:
            x = x[np.abs(x.astype(np.float64)) < 65504]
        got = run(lambda t, target=target: t.astype(target), x, level=level)
        assert_same(got, _numpy_cast(x, target))


@pytest.mark.parametrize("level", LEVELS)
def test_float_to_narrow_integer_out_of_range_wraps_as_numpy(level: int) -> None:
    """numpy leaves float -> int out of range to the machine (and warns); x86 converts to a
    32-bit (u32: 64-bit) integer and keeps the low bits, and so does Ember, for values that
    conversion holds. (Beyond it, and for NaN, the result is unspecified, as in numpy.)"""
    x = np.array([300.0, -300.0, 70000.5, -1.0, -129.9, 65536.0, 1e9, -2.5], np.float32)
    for target in (np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.uint64):
        got = run(lambda t, target=target: t.astype(target), x, level=level)
        assert_same(got, _numpy_cast(x, np.dtype(target)))


@pytest.mark.parametrize("level", LEVELS)
def test_float_casts_keep_nan_inf_and_signed_zero(level: int) -> None:
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 65504.0, 65520.0, 1e-8, 3e38,
                         -3.4e38], np.float32)
    for source in (np.float32, np.float64):
        x = specials.astype(source)
        for target in (np.float16, BF16, np.float32, np.float64):
            got = run(lambda t, target=target: t.astype(target), x, level=level)
            want = _numpy_cast(x, target)
            assert_same(got, want)
    to_bool = run(lambda t: t.astype(np.bool_), specials, level=level)
    assert_same(to_bool, specials.astype(np.bool_))


@pytest.mark.parametrize("level", LEVELS)
def test_f64_to_narrow_floats_rounds_once(level: int) -> None:
    """Values just above a midpoint of f16 / bf16 that f32 rounds down onto it: rounding
    through f32 (twice) would go to even, numpy and ml_dtypes round up."""
    f16_mid = 1.0 + 2.0**-11 + 2.0**-40
    bf16_mid = 1.0 + 2.0**-8 + 2.0**-40
    x = np.array([f16_mid, -f16_mid, bf16_mid, -bf16_mid, 2.0**-24 * 0.5000001], np.float64)
    for target in (np.float16, BF16):
        got = run(lambda t, target=target: t.astype(target), x, level=level)
        assert_same(got, x.astype(target))


@pytest.mark.parametrize("level", LEVELS)
def test_unsigned_to_float_reads_values_above_2_to_the_63(level: int) -> None:
    x = np.array([2**64 - 1, 2**63, 2**63 - 1, 12345, 0], np.uint64)
    for target in (np.float32, np.float64):
        got = run(lambda t, target=target: t.astype(target), x, level=level)
        assert_same(got, x.astype(target))
    y = np.array([1.8e19, 9.3e18, 2.0**63, 5.0], np.float64)
    assert_same(run(lambda t: t.astype(np.uint64), y, level=level), y.astype(np.uint64))


# -- f16 and bf16 -----------------------------------------------------------------------------


def _floats(dtype: np.dtype, shape: tuple[int, ...], seed: int, scale: float = 4.0
            ) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _rounded(dtype: np.dtype, value: np.ndarray) -> np.ndarray:
    """numpy's float16 op, or ml_dtypes' bfloat16 of the f32 result: the reference."""
    return np.asarray(value).astype(dtype)


_FLOAT_CHAINS: dict[str, Callable[..., object]] = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "chain": lambda a, b: (a * b + 1.0) / (a - b),
    "maximum": np.maximum,
    "lt": lambda a, b: a * b < a + b,
}


def _reference_chain(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The chain in the type itself, one rounding per op (bf16: f32 op, then rounded)."""
    dtype = a.dtype

    def r(v: np.ndarray) -> np.ndarray:
        return v.astype(np.float32).astype(dtype)

    x, y = a.astype(np.float32), b.astype(np.float32)
    one = np.float32(1.0)
    results = {
        "add": lambda: r(x + y),
        "mul": lambda: r(x * y),
        "div": lambda: r(x / y),
        "chain": lambda: r(r(r(x * y).astype(np.float32) + one).astype(np.float32)
                           / r(x - y).astype(np.float32)),
        "maximum": lambda: r(np.maximum(x, y)),
        "lt": lambda: r(x * y).astype(np.float32) < r(x + y).astype(np.float32),
    }
    return results[name]()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda t: np.dtype(t).name)
def test_narrow_float_elementwise_rounds_every_result(dtype: np.dtype, level: int) -> None:
    dtype = np.dtype(dtype)
    a, b = _floats(dtype, (5, 29), 11), _floats(dtype, (5, 29), 12)
    for name, fn in _FLOAT_CHAINS.items():
        with np.errstate(all="ignore"):
            want = _reference_chain(name, a, b)
            if dtype == np.float16:  # numpy's own float16 arithmetic agrees
                assert_same(np.asarray(fn(a, b)), want)
            assert_same(run(fn, a, b, level=level), want)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda t: np.dtype(t).name)
def test_narrow_float_math_is_the_rounded_f32_result(dtype: np.dtype, level: int) -> None:
    dtype = np.dtype(dtype)
    a = _floats(dtype, (3, 40), 13, scale=2.0)
    x = a.astype(np.float64)
    for fn, exact in [(np.exp, np.exp), (np.tanh, np.tanh), (np.sqrt, np.sqrt),
                      (np.floor, np.floor), (np.abs, np.abs)]:
        with np.errstate(all="ignore"):
            want = exact(x).astype(np.float32).astype(dtype)
            got = run(fn, a, level=level)
        # f32 math is within an ulp of f32, so the narrow rounding can differ only where the
        # exact value sits that close to a midpoint: compare in units of the narrow type.
        with np.errstate(invalid="ignore"):  # (the spacing of NaN)
            ulps = np.abs(got.astype(np.float64) - want.astype(np.float64)) / np.spacing(
                np.abs(want.astype(np.float32)).astype(dtype)).astype(np.float64)
        assert got.dtype == dtype
        assert np.nanmax(ulps, initial=0.0) <= 1.0, fn.__name__
        assert np.array_equal(np.isnan(got.astype(np.float64)), np.isnan(want.astype(np.float64)))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda t: np.dtype(t).name)
def test_narrow_float_sums_and_matmul_accumulate_in_f32(dtype: np.dtype, level: int) -> None:
    """Computed in f32 and rounded once: within one ulp of the exact (float64) result, not
    the drift of a sum rounded at every step (1000 terms of 1.0 + noise)."""
    dtype = np.dtype(dtype)
    a = (1.0 + _floats(np.float64, (3, 1000), 14, scale=0.01)).astype(dtype)
    b = _floats(dtype, (64, 48), 15, scale=1.0)
    c = _floats(dtype, (48, 40), 16, scale=1.0)
    cases = [(lambda x: x.sum(axis=1), (a,), a.astype(np.float64).sum(axis=1)),
             (lambda x: x.mean(axis=1), (a,), a.astype(np.float64).mean(axis=1)),
             (lambda x, y: x @ y, (b, c), b.astype(np.float64) @ c.astype(np.float64))]
    for fn, args, exact in cases:
        got = run(fn, *args, level=level)
        assert got.dtype == dtype
        spacing = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
        error = np.abs(got.astype(np.float64) - exact)
        # (f32 accumulation adds ~n * 2^-24 relative: far below the narrow type's ulp.)
        assert np.max(error / spacing) <= 1.0


@pytest.mark.parametrize("level", LEVELS)
def test_f16_reduction_max_and_argmax(level: int) -> None:
    a = _floats(np.float16, (6, 31), 17)
    a[2, 5] = np.nan
    assert_same(run(lambda x: x.max(axis=1), a, level=level), a.max(axis=1))
    assert_same(run(lambda x: x.argmin(axis=0), a, level=level), a.argmin(axis=0))


def test_f16_softmax_is_refused_clearly() -> None:
    a = _floats(np.float16, (2, 8), 18)
    with pytest.raises(EmberError, match="softmax of f16 is not supported yet"):
        ember.compile(lambda x: ember.nn.functional.softmax(x, dim=-1), a)


# -- the text IR ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [*INTS, *FLOATS], ids=lambda t: np.dtype(t).name)
def test_every_type_prints_and_parses_back(dtype: type) -> None:
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        data = integers(dtype, (2, 3), 19)
    else:
        data = np.array([[0.1, -0.0, np.inf], [np.nan, 65504.0, 1e-7]]).astype(dtype)
    graph = ember.trace(lambda x: x * data, data)
    text = str(graph)
    name = DType.from_numpy(dtype).value
    assert f"%x: {name}[2,3]" in text and f"dense<{name}[2,3]: " in text
    again = ember.parse(text)
    assert str(again) == text
    with np.errstate(all="ignore"):
        want = (data * data if dtype.kind in "iu"
                else (data.astype(np.float32) * data.astype(np.float32)).astype(dtype))
    assert_same(interpret(again, data)[0], want)
