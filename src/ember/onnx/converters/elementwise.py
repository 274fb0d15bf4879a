"""Converters of elementwise ONNX operators: activations, math, arithmetic, logic, Where, Cast,
BitShift, and QuantizeLinear / DequantizeLinear (exact decompositions)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce

import numpy as np

from ember.frontend import tracer
from ember.frontend.tensor import Tensor
from ember.ir.types import DType
from ember.onnx.converters.base import NodeContext, Outputs, converter, onnx_dtype

# -- one-to-one unary ops -------------------------------------------------------------------------

# ONNX op -> (Ember op, the ONNX operator versions it implements)
_UNARY: dict[str, tuple[str, tuple[int, ...]]] = {
    "Relu": ("relu", (1, 6, 13, 14)),
    "Sigmoid": ("sigmoid", (1, 6, 13)),
    "Tanh": ("tanh", (1, 6, 13)),
    "Exp": ("exp", (1, 6, 13)),
    "Log": ("log", (1, 6, 13)),
    "Sqrt": ("sqrt", (1, 6, 13)),
    "Reciprocal": ("reciprocal", (1, 6, 13)),
    "Neg": ("neg", (1, 6, 13)),
    "Abs": ("abs", (1, 6, 13)),
    "Sign": ("sign", (9, 13)),
    "Floor": ("floor", (1, 6, 13)),
    "Ceil": ("ceil", (1, 6, 13)),
    "Round": ("round", (11, 22)),
    "Sin": ("sin", (7, 22)),
    "Cos": ("cos", (7, 22)),
    "Erf": ("erf", (9, 13)),
    "Not": ("logical_not", (1,)),
}


def _unary(op: str) -> Callable[[NodeContext], Outputs]:
    def convert(node: NodeContext) -> Outputs:
        return [node.emit(op, node.tensor(0))]

    convert.__doc__ = f"`{op}`."
    return convert


for _onnx_name, (_ember_name, _versions) in _UNARY.items():
    converter(_onnx_name, versions=_versions)(_unary(_ember_name))


def _scalar(node: NodeContext, x: Tensor, value: float) -> Tensor:
    return node.const(value, like=x)


@converter("Identity", versions=(1, 13, 14, 16, 19, 21, 23, 24, 25))
def identity(node: NodeContext) -> Outputs:
    """The input itself (a known value stays known)."""
    known = node.known(0)
    return [known if known is not None else node.tensor(0)]


@converter("LeakyRelu", versions=(1, 6, 16))
def leaky_relu(node: NodeContext) -> Outputs:
    """`leaky_relu` with ONNX's default alpha 0.01."""
    return [node.emit("leaky_relu", node.tensor(0), alpha=float(node.attr("alpha", 0.01)))]


def _elu(node: NodeContext, x: Tensor, alpha: float) -> Tensor:
    # alpha * (exp(x) - 1) below zero; exp of min(x, 0) cannot overflow.
    zero = _scalar(node, x, 0.0)
    negative = _scalar(node, x, alpha) * (node.emit("minimum", x, zero).exp() - 1.0)
    return tracer.emit("where", x > zero, x, negative)


@converter("Elu", versions=(1, 6, 22))
def elu(node: NodeContext) -> Outputs:
    """where(x > 0, x, alpha * (exp(x) - 1))."""
    return [_elu(node, node.tensor(0), float(node.attr("alpha", 1.0)))]


@converter("Selu", versions=(1, 6, 22))
def selu(node: NodeContext) -> Outputs:
    """gamma * elu(x, alpha) with ONNX's default constants."""
    x = node.tensor(0)
    alpha = float(node.attr("alpha", 1.67326319217681884765625))
    gamma = float(node.attr("gamma", 1.05070102214813232421875))
    return [_elu(node, x, alpha) * _scalar(node, x, gamma)]


@converter("Celu", versions=(12, 28))
def celu(node: NodeContext) -> Outputs:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    x = node.tensor(0)
    alpha = float(node.attr("alpha", 1.0))
    return [_elu(node, x / _scalar(node, x, alpha), 1.0) * _scalar(node, x, alpha)]


@converter("HardSigmoid", versions=(1, 6, 22))
def hard_sigmoid(node: NodeContext) -> Outputs:
    """clip(alpha * x + beta, 0, 1)."""
    x = node.tensor(0)
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return [(x * _scalar(node, x, alpha) + _scalar(node, x, beta)).clip(0.0, 1.0)]


@converter("HardSwish", versions=(14, 22))
def hard_swish(node: NodeContext) -> Outputs:
    """x * clip(x / 6 + 1 / 2, 0, 1)."""
    x = node.tensor(0)
    return [x * (x * _scalar(node, x, 1 / 6) + _scalar(node, x, 0.5)).clip(0.0, 1.0)]


def _softplus(node: NodeContext, x: Tensor) -> Tensor:
    # log(1 + exp(x)) = max(x, 0) + log(1 + exp(-|x|)): no overflow for large x.
    zero = _scalar(node, x, 0.0)
    return node.emit("maximum", x, zero) + ((-x.abs()).exp() + 1.0).log()


@converter("Softplus", versions=(1, 22))
def softplus(node: NodeContext) -> Outputs:
    """log(1 + exp(x)), computed without overflow."""
    return [_softplus(node, node.tensor(0))]


@converter("Softsign", versions=(1, 22))
def softsign(node: NodeContext) -> Outputs:
    """x / (1 + |x|)."""
    x = node.tensor(0)
    return [node.emit("div", x, x.abs() + 1.0)]


@converter("Mish", versions=(18, 22))
def mish(node: NodeContext) -> Outputs:
    """x * tanh(softplus(x))."""
    x = node.tensor(0)
    return [x * _softplus(node, x).tanh()]


@converter("Gelu", versions=(20,))
def gelu(node: NodeContext) -> Outputs:
    """`gelu`, exact or with the tanh approximation."""
    return [node.emit("gelu", node.tensor(0), approximate=node.attr("approximate", "none"))]


@converter("ThresholdedRelu", versions=(10, 22))
def thresholded_relu(node: NodeContext) -> Outputs:
    """where(x > alpha, x, 0)."""
    x = node.tensor(0)
    alpha = _scalar(node, x, float(node.attr("alpha", 1.0)))
    return [tracer.emit("where", x > alpha, x, _scalar(node, x, 0.0))]


@converter("PRelu", versions=(1, 6, 7, 9, 16))
def prelu(node: NodeContext) -> Outputs:
    """where(x < 0, slope * x, x), the slope broadcast to x (per channel before opset 7)."""
    x, slope = node.tensor(0), node.tensor(1)
    if node.opset < 7 and slope.ndim == 1 and x.ndim > 2 and slope.size == x.shape[1] > 1:
        slope = slope.reshape(-1, *([1] * (x.ndim - 2)))
    return [tracer.emit("where", x < _scalar(node, x, 0.0), x * slope, x)]


@converter("Tan", versions=(7, 22))
def tan(node: NodeContext) -> Outputs:
    """sin(x) / cos(x)."""
    x = node.tensor(0)
    return [node.emit("div", node.emit("sin", x), node.emit("cos", x))]


def _half_exp(node: NodeContext, x: Tensor) -> Tensor:
    """exp(x) / 2 as exp(x - ln 2): finite wherever the result is (exp(x) alone overflows
    first)."""
    return (x - node.const(math.log(2.0), like=x)).exp()


@converter("Cosh", versions=(9, 22))
def cosh(node: NodeContext) -> Outputs:
    """exp(|x|) / 2 + exp(-|x|) / 2, without overflow before the result's."""
    magnitude = node.tensor(0).abs()
    return [_half_exp(node, magnitude) + (-magnitude).exp() * node.const(0.5, like=magnitude)]


@converter("Sinh", versions=(9, 22))
def sinh(node: NodeContext) -> Outputs:
    """sign(x) (exp(|x|) / 2 - exp(-|x|) / 2); below |x| = 0.5, where that difference
    cancels, the Taylor series to x^9 (its remainder under 3e-11 relative)."""
    x = node.tensor(0)
    magnitude = x.abs()
    large = node.emit("sign", x) * (_half_exp(node, magnitude)
                                    - (-magnitude).exp() * node.const(0.5, like=x))
    square = x * x
    series = node.const(1.0 / 362880.0, like=x)
    for factorial in (5040.0, 120.0, 6.0, 1.0):  # Horner: 1 + x²/6 + x⁴/120 + ...
        series = series * square + node.const(1.0 / factorial, like=x)
    small = x * series
    return [tracer.emit("where", magnitude < node.const(0.5, like=x), small, large)]


@converter("IsNaN", versions=(9, 13, 20))
def is_nan(node: NodeContext) -> Outputs:
    """x != x."""
    x = node.tensor(0)
    return [node.emit("ne", x, x)]


@converter("IsInf", versions=(10, 20))
def is_inf(node: NodeContext) -> Outputs:
    """|x| == inf, restricted to one sign by detect_positive / detect_negative."""
    x = node.tensor(0)
    positive = node.emit("eq", x, _scalar(node, x, math.inf))
    negative = node.emit("eq", x, _scalar(node, x, -math.inf))
    parts = [p for p, on in ((positive, node.attr("detect_positive", 1)),
                             (negative, node.attr("detect_negative", 1))) if on]
    if not parts:
        return [node.full(x.shape, False, bool)]
    return [reduce(lambda a, b: node.emit("logical_or", a, b), parts)]


# -- binary and variadic ops --------------------------------------------------------------------

_BINARY: dict[str, tuple[str, tuple[int, ...]]] = {
    "Add": ("add", (1, 6, 7, 13, 14)),
    "Sub": ("sub", (1, 6, 7, 13, 14)),
    "Mul": ("mul", (1, 6, 7, 13, 14)),
    "Div": ("div", (1, 6, 7, 13, 14)),
    "Equal": ("eq", (1, 7, 11, 13, 19)),
    "Less": ("lt", (1, 7, 9, 13)),
    "LessOrEqual": ("le", (12, 16)),
    "Greater": ("gt", (1, 7, 9, 13)),
    "GreaterOrEqual": ("ge", (12, 16)),
    "And": ("logical_and", (1, 7)),
    "Or": ("logical_or", (1, 7)),
    "Xor": ("logical_xor", (1, 7)),
}


def _legacy_broadcast(node: NodeContext, a: Tensor, b: Tensor) -> Tensor:
    """Opsets before 7: with `broadcast=1` and `axis`, b lines up with a from that axis."""
    axis = node.attr("axis")
    if node.opset >= 7 or not node.attr("broadcast", 0) or axis is None:
        return b
    axis %= max(a.ndim, 1)
    trailing = a.ndim - axis - b.ndim
    return b.reshape(*b.shape, *([1] * trailing)) if trailing > 0 else b


def binary_operands(node: NodeContext, first: int = 0, second: int = 1) -> tuple[Tensor, Tensor]:
    a, b = node.tensor(first), node.tensor(second)
    b = _legacy_broadcast(node, a, b)
    if a.dtype_ is not b.dtype_:  # ONNX requires equal types; promote rather than fail
        return tracer.binary_operands(a, b)
    return a, b


def _binary(op: str) -> Callable[[NodeContext], Outputs]:
    def convert(node: NodeContext) -> Outputs:
        a, b = binary_operands(node)
        return [node.emit(op, a, b)]

    convert.__doc__ = f"`{op}` with numpy broadcasting."
    return convert


for _onnx_name, (_ember_name, _versions) in _BINARY.items():
    converter(_onnx_name, versions=_versions)(_binary(_ember_name))


@converter("Pow", versions=(1, 7, 12, 13, 15))
def power(node: NodeContext) -> Outputs:
    """`pow`; the exponent is cast to the base's dtype, which is the result's dtype."""
    base, exponent = node.tensor(0), node.tensor(1)
    exponent = _legacy_broadcast(node, base, exponent)
    return [node.emit("pow", base, exponent.astype(base.dtype_))]


@converter("Mod", versions=(10, 13, 28))
def mod(node: NodeContext) -> Outputs:
    """Remainder with the dividend's sign (`fmod` 1, C's fmod) or the divisor's (`fmod` 0,
    Python's %): exact integer arithmetic, and for floats the exact `fmod` op."""
    fmod = bool(node.attr("fmod", 0))
    a_known, b_known = node.known(0), node.known(1)
    if a_known is not None and b_known is not None:
        if a_known.dtype.kind in "iu" and not np.all(b_known):
            raise node.error("integer division by zero")
        with np.errstate(all="ignore"):
            return [(np.fmod if fmod else np.mod)(a_known, b_known)]
    a, b = binary_operands(node)
    # floats: exact (a - trunc(a / b) * b rounds twice); integers: div truncates toward zero,
    # which is C's fmod
    remainder = (node.emit("fmod", a, b) if a.dtype_.is_float
                 else a - node.emit("div", a, b) * b)
    if fmod:
        return [remainder]
    # Python's %: a nonzero remainder takes the divisor's sign (a float zero takes b's sign,
    # as np.mod gives).
    zero = node.const(0, like=remainder)
    flip = node.emit("logical_and", node.emit("ne", remainder, zero),
                     node.emit("ne", remainder < zero, b < zero))
    result = tracer.emit("where", flip, remainder + b, remainder)
    if a.dtype_.is_float:
        signed_zero = tracer.emit("where", b < zero, node.const(-0.0, like=remainder), zero)
        result = tracer.emit("where", node.emit("eq", remainder, zero), signed_zero, result)
    return [result]


def _variadic(op: str, average: bool = False) -> Callable[[NodeContext], Outputs]:
    def convert(node: NodeContext) -> Outputs:
        tensors = [node.tensor(i) for i in range(node.input_count) if node.has(i)]
        result = reduce(lambda a, b: node.emit(op, *tracer.binary_operands(a, b)), tensors)
        if average:
            result = result / _scalar(node, result, float(len(tensors)))
        return [result]

    convert.__doc__ = f"`{op}` folded over any number of inputs" + (", divided by their count."
                                                                     if average else ".")
    return convert


converter("Sum", versions=(1, 6, 8, 13))(_variadic("add"))
converter("Max", versions=(1, 6, 8, 12, 13))(_variadic("maximum"))
converter("Min", versions=(1, 6, 8, 12, 13))(_variadic("minimum"))
converter("Mean", versions=(1, 6, 8, 13))(_variadic("add", average=True))


@converter("BitShift", versions=(11, 28))
def bit_shift(node: NodeContext) -> Outputs:
    """Exact integer arithmetic by powers of two: x << n is x * 2^n (wrapping), and x >> n is
    x / 2^n, floored for signed x (an arithmetic shift). A count outside [0, width) shifts
    every bit out, as opset 28 defines it: 0, or -1 for a negative x shifted right."""
    direction = node.attr("direction")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    if direction not in ("LEFT", "RIGHT"):
        raise node.error(f"direction must be LEFT or RIGHT, got {direction!r}")
    x, count = binary_operands(node)
    dtype = x.dtype_
    if not dtype.is_int:
        raise node.error(f"BitShift takes integer tensors, got {dtype}")
    width = dtype.bits
    # 2^k for k < width; 2^(width-1) of a signed type wraps to its minimum, and multiplying by
    # it still shifts left exactly (two's complement).
    powers = node.const(np.left_shift(np.ones(width, dtype.numpy),
                                      np.arange(width, dtype=dtype.numpy)))
    zero = node.const(0, like=x)
    # A signed x >> (width - 1) is its sign: only counts below width - 1 divide.
    limit = width - 1 if direction == "RIGHT" and dtype.is_signed else width
    valid = count < node.const(limit, like=count)
    if dtype.is_signed:
        valid = node.emit("logical_and", count >= node.const(0, like=count), valid)
    index = node.emit("where", valid, count, node.const(0, like=count)).astype(np.int64)
    power = powers.take(index)
    if direction == "LEFT":
        return [node.emit("where", valid, x * power, zero)]
    quotient = node.emit("div", x, power)  # toward zero
    if not dtype.is_signed:
        return [node.emit("where", valid, quotient, zero)]
    # floor: one less where a negative x did not divide exactly
    inexact = node.emit("logical_and", x < zero, node.emit("ne", quotient * power, x))
    floored = node.emit("where", inexact, quotient - node.const(1, like=x), quotient)
    sign = node.emit("where", x < zero, node.const(-1, like=x), zero)
    return [node.emit("where", valid, floored, sign)]


@converter("Where", versions=(9, 16))
def where(node: NodeContext) -> Outputs:
    """`where(condition, x, y)`."""
    x, y = binary_operands(node, 1, 2)
    return [node.emit("where", node.tensor(0), x, y)]


@converter("Cast", versions=(6, 9, 13, 19, 21, 23, 24, 25, 28))
def cast(node: NodeContext) -> Outputs:
    """`cast` to the `to` element type (a known value is cast at import time)."""
    dtype = onnx_dtype(int(node.attr("to")), node.label)
    known = node.known(0)
    if known is not None:
        return [known.astype(dtype.numpy)]
    x = node.tensor(0)
    return [x if x.dtype_ is dtype else node.emit("cast", x, dtype=dtype.value)]


@converter("CastLike", versions=(15, 19, 21, 23, 24, 25))
def cast_like(node: NodeContext) -> Outputs:
    """`cast` to the dtype of the second input."""
    x, target = node.tensor(0), node.tensor(1)
    return [x if x.dtype_ is target.dtype_ else node.emit("cast", x, dtype=target.dtype_.value)]


def _clip_bound(node: NodeContext, index: int) -> float | Tensor | None:
    if not node.has(index):
        return None
    known = node.known(index)
    return float(known) if known is not None else node.tensor(index)


@converter("Clip", versions=(1, 6, 11, 12, 13))
def clip(node: NodeContext) -> Outputs:
    """`clip` with attribute bounds (before opset 11) or input bounds, constant or traced."""
    x = node.tensor(0)
    if node.opset < 11:
        low, high = node.attr("min"), node.attr("max")
    else:
        low, high = _clip_bound(node, 1), _clip_bound(node, 2)
    if isinstance(low, Tensor):
        x, low = node.emit("maximum", x, low.astype(x.dtype_)), None
    if isinstance(high, Tensor):
        x, high = node.emit("minimum", x, high.astype(x.dtype_)), None
    if low is None and high is None:
        return [x]
    if x.dtype_ is DType.F32:  # bounds of an f32 clip are f32 values
        low = None if low is None else float(np.float32(low))
        high = None if high is None else float(np.float32(high))
    return [node.emit("clip", x, min=low, max=high)]


# -- quantization ---------------------------------------------------------------------------------

# The integer types QuantizeLinear produces and DequantizeLinear reads, with their ranges.
_QUANT_TYPES = (DType.U8, DType.I8, DType.U16, DType.I16)


def _quant_parameter(node: NodeContext, index: int, x: Tensor) -> Tensor:
    """A scale or zero point of input `index`, broadcastable against `x`: per tensor (one
    element), per axis (a vector along `axis`) or blocked (`block_size` along `axis`, as
    ONNX's reference repeats it)."""
    value = node.tensor(index)
    if value.size == 1:
        return value.reshape(())
    axis = int(node.attr("axis", 1))
    if not -x.ndim <= axis < x.ndim:
        raise node.error(f"axis {axis} is out of range for an input of rank {x.ndim}")
    axis %= x.ndim
    block = int(node.attr("block_size", 0) or 0)
    if not block:
        if value.ndim != 1 or value.shape[0] != x.shape[axis]:
            raise node.error(f"a per-axis parameter has shape {list(value.shape)}, expected "
                             f"[{x.shape[axis]}] (the size of axis {axis})")
        return value.reshape(*[x.shape[axis] if d == axis else 1 for d in range(x.ndim)])
    if block < 0 or value.ndim != x.ndim:
        raise node.error(f"blocked parameters need block_size > 0 and rank {x.ndim}, got "
                         f"block_size {block} and shape {list(value.shape)}")
    repeated = value.repeat(block, axis=axis)
    if repeated.shape[axis] < x.shape[axis]:
        raise node.error(f"{value.shape[axis]} blocks of {block} do not cover axis {axis} of "
                         f"size {x.shape[axis]}")
    index_ = tuple(slice(0, x.shape[axis]) if d == axis else slice(None) for d in range(x.ndim))
    repeated = repeated[index_]
    if tuple(repeated.shape) != tuple(x.shape):
        raise node.error(f"blocked parameter shape {list(value.shape)} does not match the "
                         f"input {list(x.shape)} outside axis {axis}")
    return repeated


@converter("QuantizeLinear", versions=(10, 13, 19, 21, 23, 24, 25, 28))
def quantize_linear(node: NodeContext) -> Outputs:
    """saturate(round(x / scale) + zero_point): the quotient in x's type, rounded half to even,
    then the zero point added and the result clipped to the output type's range in a float
    wide enough to hold every step exactly (ONNX's reference adds in int32)."""
    x = node.tensor(0)
    if node.attr("precision", 0):
        raise node.error("the precision attribute is not supported")
    if node.has(2):
        dtype = node.tensor(2).dtype_
    else:
        output = node.attr("output_dtype", 0)
        dtype = onnx_dtype(int(output), node.label) if output else DType.U8
    if dtype not in _QUANT_TYPES:
        raise node.error(f"quantizing to {dtype} is not supported (only int8, uint8, int16, "
                         "uint16)")
    if not x.dtype_.is_float:
        raise node.error(f"the input must be a float tensor, got {x.dtype_}")
    scale = _quant_parameter(node, 1, x).astype(x.dtype_)
    wide = DType.F64 if x.dtype_ is DType.F64 else DType.F32
    rounded = node.emit("round", x / scale).astype(wide)
    if node.has(2):
        rounded = rounded + _quant_parameter(node, 2, x).astype(wide)
    low, high = dtype.int_range
    return [node.emit("clip", rounded, min=float(low), max=float(high)).astype(dtype)]


@converter("DequantizeLinear", versions=(10, 13, 19, 21, 23, 24, 25, 28))
def dequantize_linear(node: NodeContext) -> Outputs:
    """(x - zero_point) * scale in f32 (f64 for 32-bit zero points, as numpy promotes ONNX's
    reference), cast to the scale's type or `output_dtype`."""
    x = node.tensor(0)
    if not x.dtype_.is_int:
        raise node.error(f"dequantizing {x.dtype_} is not supported (integer inputs only)")
    scale = _quant_parameter(node, 1, x)
    output = node.attr("output_dtype", 0)
    dtype = onnx_dtype(int(output), node.label) if output else scale.dtype_
    wide = DType.F32
    shifted = x.astype(DType.F32.numpy)
    if node.has(2):
        zero = _quant_parameter(node, 2, x)
        if zero.dtype_.itemsize >= 4:
            wide = DType.F64
        shifted = shifted.astype(wide.numpy) - zero.astype(wide.numpy)
    result = shifted * scale.astype(wide.numpy)
    return [result.astype(dtype.numpy)]
