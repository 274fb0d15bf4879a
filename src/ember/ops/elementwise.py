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
  pow(-0.0, 0.5) = +0.0 and pow(-inf, 0.5) = +inf (numpy and PyTorch take sqrt for a
  scalar exponent 0.5 and give -0.0 and nan there);
- integer `div` truncates toward zero (C, ONNX; not numpy's floor `//`); a zero divisor raises
  ExecutionError naming the node; INT_MIN / -1 wraps to INT_MIN, as numpy gives.
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
        wanted = {FLOAT: "a float dtype (f32, f64)", NUMERIC: "a numeric dtype",
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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, so no overflow for either sign.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def _gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        return (0.5 * x * (1 + np.tanh(inner))).astype(x.dtype)
    return (0.5 * x * (1 + _erf(x / np.sqrt(x.dtype.type(2))))).astype(x.dtype)


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


def _silu(x: np.ndarray) -> np.ndarray:
    return (x * _sigmoid(x)).astype(x.dtype)


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
