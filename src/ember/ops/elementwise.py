"""Elementwise ops: unary math, binary arithmetic with numpy broadcasting, comparisons, logic.

Binary ops take operands of one dtype (the tracer inserts `cast` where Python and numpy code
would promote), and broadcast their shapes as numpy does.

Edge values, the same at every opt level (tests/numerics/test_edge_values.py,
test_int_division.py):

- `maximum`/`minimum` (and the `max`/`min` reductions) are IEEE 754-2019 maximum/minimum:
  NaN from either side propagates, and -0.0 < +0.0;
- `clip` and `relu` keep x unless it is strictly outside the bounds, as numpy's clip and
  PyTorch's clamp and relu: relu(-0.0) = -0.0, NaN propagates, a NaN bound gives NaN;
- `silu`, `gelu` of -inf are NaN (-inf * 0), as numpy and PyTorch compute them;
- `sign(-0.0)` is +0.0 (numpy, PyTorch); float `pow` is C's pow for every exponent:
  pow(-0.0, 0.5) = +0.0 and pow(-inf, 0.5) = +inf. numpy and PyTorch take sqrt for a
  scalar exponent 0.5 (-0.0 and nan there), and so does tracing: `x ** 0.5` and
  `np.power(x, 0.5)` on a float tensor trace to `sqrt`, not `pow`;
- integer `div` truncates toward zero (C, ONNX; not numpy's floor `//`); a zero divisor raises
  ExecutionError naming the node; INT_MIN / -1 wraps to INT_MIN, as numpy gives; unsigned
  types divide, compare and take min/max as unsigned.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ember.errors import ShapeError
from ember.ir.ops import Attr, OpDef, broadcast_shapes, register_op
from ember.ir.types import DType, TensorType

# ---------------------------------------------------------------------------------------------
# Type rules.

FLOAT = "float"
NUMERIC = "numeric"
ANY = "any"
BOOL = "bool"


def _check_dtype(dtype: DType, kind: str) -> None:
    allowed = {
        FLOAT: dtype.is_float,
        NUMERIC: dtype is not DType.BOOL,
        ANY: True,
        BOOL: dtype is DType.BOOL,
    }[kind]
    if not allowed:
        wanted = {FLOAT: "a float dtype (f16, bf16, f32, f64)", NUMERIC: "a numeric dtype",
                  BOOL: "bool"}[kind]
        raise ShapeError(f"dtype {dtype} is not supported here (expected {wanted})")


def result_layout(shape: tuple[int, ...], *operands: TensorType) -> str:
    """The layout an elementwise result carries: the one layout its operands agree on.

    An operand without a layout (a constant already packed to the physical shape, a scalar)
    fits any layout; it must then have the result's rank or a single element, so that it
    broadcasts over the physical dimensions it was packed for.
    """
    layouts = sorted({t.layout for t in operands if t.layout})
    if len(layouts) > 1:
        raise ShapeError(f"operand layouts differ ({' vs '.join(layouts)}); convert one first")
    if not layouts:
        return ""
    for operand in operands:
        if not operand.layout and operand.ndim != len(shape) and operand.size != 1:
            raise ShapeError(f"operand {operand} without a layout cannot broadcast against "
                             f"{{{layouts[0]}}} values (needs rank {len(shape)} or one element)")
    return layouts[0]


def unary_rule(kind: str) -> Callable[..., TensorType]:
    def infer(x: TensorType, **attrs: object) -> TensorType:
        _check_dtype(x.dtype, kind)
        return x

    return infer


def binary_rule(kind: str, result: DType | None = None) -> Callable[..., TensorType]:
    """Same-dtype operands, broadcast shapes; output dtype `result` or the operands' dtype."""

    def infer(a: TensorType, b: TensorType) -> TensorType:
        if a.dtype is not b.dtype:
            raise ShapeError(f"operand dtypes differ ({a.dtype} vs {b.dtype}); cast one first")
        _check_dtype(a.dtype, kind)
        shape = broadcast_shapes(a.shape, b.shape)
        return TensorType(result or a.dtype, shape, result_layout(shape, a, b))

    return infer


def infer_where(cond: TensorType, a: TensorType, b: TensorType) -> TensorType:
    if cond.dtype is not DType.BOOL:
        raise ShapeError(f"condition must be bool, got {cond.dtype}")
    if a.dtype is not b.dtype:
        raise ShapeError(f"branch dtypes differ ({a.dtype} vs {b.dtype}); cast one first")
    shape = broadcast_shapes(cond.shape, a.shape, b.shape)
    return TensorType(a.dtype, shape, result_layout(shape, cond, a, b))


def infer_cast(x: TensorType, *, dtype: str) -> TensorType:
    return x.with_dtype(DType(dtype))


def infer_gelu(x: TensorType, *, approximate: str) -> TensorType:
    if approximate not in ("none", "tanh"):
        raise ShapeError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    _check_dtype(x.dtype, FLOAT)
    return x


def infer_clip(x: TensorType, *, min: float | None = None, max: float | None = None) -> TensorType:
    _check_dtype(x.dtype, NUMERIC)
    return x


# ---------------------------------------------------------------------------------------------
# numpy references. Each returns an array of the input's dtype.


def _erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf  # optional: fast and exact

        return erf(x).astype(x.dtype)
    except ImportError:
        exact = np.frompyfunc(math.erf, 1, 1)(np.asarray(x, dtype=np.float64))
        return np.asarray(exact, dtype=np.float64).astype(x.dtype)


# Results of f32 inputs are computed in float64 and rounded once. gelu and silu of x < 0 are
# x times a factor that becomes subnormal well before the result does (x/2 erfc(|x|/sqrt 2),
# x exp(x)): the factor is taken as h * h with h normal and x multiplied in first, so the
# result is rounded once, as compiled code does.

_erfc = np.frompyfunc(math.erfc, 1, 1)

# sqrt(1/2) and 2 sqrt(2/pi), each as a double and the double of its remainder.
_SQRT_HALF = (0.7071067811865476, -4.833646656726457e-17)
_GELU_TANH_SCALE = (1.5957691216057308, -9.96930880911092e-17)
_GELU_TANH_CUBIC = 0.044715


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a as high + low, each with at most 26 significant bits (Veltkamp; |a| < 1e300)."""
    c = 134217729.0 * a
    high = c - (c - a)
    return high, a - high


def _two_product(a: np.ndarray | float, b: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """a * b as high + low exactly (Dekker; float64, |a|, |b| < 1e150)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    high = a * b
    (a_high, a_low), (b_high, b_low) = _split(a), _split(b)
    return high, ((a_high * b_high - high) + a_high * b_low + a_low * b_high) + a_low * b_low


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, so no overflow for either sign.
    x64 = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x64))
    return np.where(x64 >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def _silu(x: np.ndarray) -> np.ndarray:
    # x e / (1 + e), e = exp(x), for x < 0 (e = h * h where it is subnormal); silu(-inf) = nan.
    x64 = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x64))
    with np.errstate(invalid="ignore"):
        h = np.exp(-np.abs(x64) / 2)
        scaled = np.where(x64 < -700, x64 * h * h, x64 * e)
        return np.where(x64 < 0, scaled / (1 + e), x64 / (1 + e)).astype(x.dtype)


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    """x/2 erfc(-x/sqrt 2) in float64: x/2 (2 - erfc(a)) for x >= 0 and x/2 erfc(a) for x < 0,
    a = |x|/sqrt 2, so 1 + erf never cancels. a is carried as high + low (one rounding of a
    would cost about 2 a^2 ulp of erfc(a)); past a = 26, where erfc(a) is subnormal, erfc is
    exp(-a^2) times its asymptotic series. gelu(-inf) = nan, gelu(inf) = inf."""
    x = np.asarray(x, np.float64)
    xc = np.clip(x, -40.0, 40.0)  # |gelu(x)| < 1e-340 below -40, factor 2 above 40
    magnitude = np.abs(xc)
    a, a_low = _two_product(magnitude, _SQRT_HALF[0])
    a_low = a_low + magnitude * _SQRT_HALF[1]
    # erfc(a + a_low) = erfc(a) - a_low 2/sqrt(pi) exp(-a^2) to first order.
    tail = (np.asarray(_erfc(a), np.float64).reshape(a.shape)
            - a_low * (2 / math.sqrt(math.pi)) * np.exp(-a * a))
    deep = a > 26.0
    with np.errstate(invalid="ignore", divide="ignore"):
        # erfc(a) = exp(-a^2) / (a sqrt(pi)) sum_n (-1)^n (2n-1)!! / (2a^2)^n, exp(-a^2) = h * h.
        far = np.where(deep, a, 27.0)
        inverse = 1 / (2 * far * far)
        series, term = np.ones_like(far), np.ones_like(far)
        for n in range(1, 10):
            term = -term * (2 * n - 1) * inverse
            series = series + term
        square, square_low = _two_product(xc, xc)  # a^2 = (square + square_low) / 2
        h = np.exp(-square / 4)
        deep_result = xc / 2 * series / (far * math.sqrt(math.pi)) * (1 - square_low / 2) * h * h
        result = np.where(x < 0, np.where(deep, deep_result, x / 2 * tail), x / 2 * (2 - tail))
    return np.where(x == -np.inf, np.nan, result)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    """x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), in float64 (1 + tanh(u) cancels for
    x < 0). 2u is carried as high + low (error-free products and sums), as one rounding would
    cost about |2u| ulp of exp(2u); for 2u < 0 exp(2u) = h * h, x multiplied in first.
    gelu_tanh(-inf) = -inf * 0 = nan, gelu_tanh(inf) = inf."""
    x = np.asarray(x, np.float64)
    xc = np.clip(x, -30.0, 30.0)  # exp(2u) at -30 is far below the subnormals
    square, square_low = _two_product(xc, xc)
    term, term_low = _two_product(_GELU_TANH_CUBIC, square)
    term_low = term_low + _GELU_TANH_CUBIC * square_low
    factor = 1 + term  # 1 + term as factor + factor_low (two-sum)
    term_part = factor - 1
    factor_low = (1 - (factor - term_part)) + (term - term_part) + term_low
    linear, linear_low = _two_product(_GELU_TANH_SCALE[0], xc)
    linear_low = linear_low + _GELU_TANH_SCALE[1] * xc
    v, v_low = _two_product(linear, factor)
    v_low = v_low + linear * factor_low + linear_low * factor
    with np.errstate(invalid="ignore", over="ignore"):
        # exp(-|v + v_low|) = e (1 -+ v_low); h * h = e where e is subnormal.
        e = np.exp(-np.abs(v))
        h = np.exp(-np.abs(v) / 2)
        sign_low = np.where(v < 0, v_low, -v_low)
        e_low = e * sign_low
        scaled = np.where(v < -700, x * (1 + v_low) * h * h, x * (e + e_low))
        return np.where(v < 0, scaled, x) / (1 + (e + e_low))


def _gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    exact = _gelu_tanh(x) if approximate == "tanh" else _gelu_erf(x)
    return exact.astype(x.dtype)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return np.divide(a, b)
    # Integer division truncates toward zero (C and ONNX semantics, not Python's floor).
    if np.any(b == 0):
        raise ZeroDivisionError("integer division by zero")
    with np.errstate(over="ignore"):  # INT_MIN // -1 wraps to INT_MIN (two's complement)
        quotient = np.floor_divide(a, b)
    inexact = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return (quotient + inexact).astype(np.result_type(a, b))


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "i" and np.any(b < 0):
        raise ValueError("integer power with a negative exponent")
    if a.dtype.kind == "f":
        # C's (IEEE) pow for every exponent, as compiled code: given an exponent 0.5 that it
        # broadcasts (a stride of 0), numpy takes sqrt instead (pow(-0.0, 0.5) = -0.0,
        # pow(-inf, 0.5) = nan), so the exponent is spelled out element by element.
        shape = np.broadcast_shapes(a.shape, b.shape)
        spelled = np.array(np.broadcast_to(b, shape).reshape(-1))
        return np.power(np.broadcast_to(a, shape).reshape(-1), spelled).reshape(shape)
    return np.power(a, b)


def _extreme(a: np.ndarray, b: np.ndarray, larger: bool) -> np.ndarray:
    """IEEE 754-2019 maximum / minimum: nan from either side propagates, and -0.0 < +0.0
    (numpy's and PyTorch's choice between two zeros depends on the argument order and on the
    code path; LLVM's llvm.maximum/minimum, which compiled code uses, order them)."""
    result = np.maximum(a, b) if larger else np.minimum(a, b)
    if a.dtype.kind != "f":
        return result
    negative = (np.signbit(a) & np.signbit(b)) if larger else (np.signbit(a) | np.signbit(b))
    zero = a.dtype.type(0)
    return np.where((a == 0) & (b == 0), np.where(negative, -zero, zero), result)


def _maximum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _extreme(a, b, larger=True)


def _minimum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _extreme(a, b, larger=False)


def _clip(x: np.ndarray, min: float | None = None, max: float | None = None) -> np.ndarray:
    # x < low ? low : x, then x > high ? high : x, as numpy's clip and PyTorch's clamp: x is
    # kept unless strictly outside (clip(-0.0, 0.0) = -0.0), nan in x or a bound gives nan.
    result = x
    if min is not None:
        low = x.dtype.type(min)
        result = np.where(result < low, low, result) if low == low else np.full_like(x, low)
    if max is not None:
        high = x.dtype.type(max)
        result = np.where(result > high, high, result) if high == high else np.full_like(x, high)
    return np.array(result, dtype=x.dtype)


def _rsqrt(x: np.ndarray) -> np.ndarray:
    return (1 / np.sqrt(x)).astype(x.dtype)


def _relu(x: np.ndarray) -> np.ndarray:
    # x < 0 ? 0 : x, PyTorch's relu (clamp_min): relu(-0.0) = -0.0, relu(nan) = nan.
    zero = x.dtype.type(0)
    return np.where(x < zero, zero, x)


def _leaky_relu(x: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    # NOTE: `alpha` stays a Python float: cast to an integer dtype it would become 0. Integer
    # inputs scale in float64 and truncate toward zero, as a cast does.
    return np.where(x >= 0, x, x * alpha).astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# The rows.

_UNARY: list[tuple[str, str, Callable[..., np.ndarray]]] = [
    ("neg", NUMERIC, np.negative),
    ("abs", NUMERIC, np.abs),
    ("sign", NUMERIC, np.sign),
    ("exp", FLOAT, np.exp),
    ("log", FLOAT, np.log),
    ("sqrt", FLOAT, np.sqrt),
    ("rsqrt", FLOAT, _rsqrt),
    ("reciprocal", FLOAT, np.reciprocal),
    ("sin", FLOAT, np.sin),
    ("cos", FLOAT, np.cos),
    ("floor", FLOAT, np.floor),
    ("ceil", FLOAT, np.ceil),
    ("round", FLOAT, np.round),  # half to even, as numpy and ONNX
    ("tanh", FLOAT, np.tanh),
    ("sigmoid", FLOAT, _sigmoid),
    ("relu", NUMERIC, _relu),
    ("silu", FLOAT, _silu),
    ("erf", FLOAT, _erf),
    ("logical_not", BOOL, np.logical_not),
]

_BINARY: list[tuple[str, str, DType | None, Callable[..., np.ndarray]]] = [
    ("add", NUMERIC, None, np.add),
    ("sub", NUMERIC, None, np.subtract),
    ("mul", NUMERIC, None, np.multiply),
    ("div", NUMERIC, None, _div),
    ("pow", NUMERIC, None, _pow),
    ("maximum", NUMERIC, None, _maximum),
    ("minimum", NUMERIC, None, _minimum),
    ("eq", ANY, DType.BOOL, np.equal),
    ("ne", ANY, DType.BOOL, np.not_equal),
    ("lt", NUMERIC, DType.BOOL, np.less),
    ("le", NUMERIC, DType.BOOL, np.less_equal),
    ("gt", NUMERIC, DType.BOOL, np.greater),
    ("ge", NUMERIC, DType.BOOL, np.greater_equal),
    ("logical_and", BOOL, DType.BOOL, np.logical_and),
    ("logical_or", BOOL, DType.BOOL, np.logical_or),
    ("logical_xor", BOOL, DType.BOOL, np.logical_xor),
]

for _name, _kind, _fn in _UNARY:
    register_op(OpDef(_name, infer=unary_rule(_kind), reference=_fn, elementwise=True))

for _name, _kind, _result, _fn in _BINARY:
    register_op(OpDef(_name, infer=binary_rule(_kind, _result), reference=_fn, arity=(2, 2),
                      elementwise=True))

register_op(OpDef("leaky_relu", infer=unary_rule(NUMERIC), reference=_leaky_relu,
                  attrs={"alpha": Attr("float", 0.01)}, elementwise=True))
register_op(OpDef("gelu", infer=infer_gelu, reference=_gelu,
                  attrs={"approximate": Attr("str", "none")}, elementwise=True))
register_op(OpDef("clip", infer=infer_clip, reference=_clip,
                  attrs={"min": Attr("float", None), "max": Attr("float", None)},
                  elementwise=True))
register_op(OpDef("cast", infer=infer_cast, reference=lambda x, dtype: x.astype(DType(dtype).numpy),
                  attrs={"dtype": Attr("dtype")}, elementwise=True))
register_op(OpDef("where", infer=infer_where, reference=np.where, arity=(3, 3), elementwise=True))
