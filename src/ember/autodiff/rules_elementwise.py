"""Gradient rules of the elementwise ops: PyTorch's formulas (derivatives.yaml), written with
graph ops. Each returns cotangents of the output's (broadcast) shape; the engine sums them to
the operands' shapes. Piecewise-constant ops (sign, floor, ceil, round) have zero gradient;
boolean-valued ones are not differentiable.
"""

from __future__ import annotations

import math

from ember.autodiff.engine import NOT_DIFFERENTIABLE, attrs_of, scalar
from ember.ir.graph import GraphBuilder, Node, Value
from ember.ir.ops import set_rule

Cotangents = tuple[Value | None, ...]


def _unary(fn):
    """A rule from `fn(b, x, y, g, attrs) -> gx` for a one-input op."""

    def rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
        (g,) = gys
        return (fn(b, node.inputs[0], node.output, g, attrs_of(node)),)

    rule.__name__ = f"grad_{fn.__name__}"
    return rule


def _c(b: GraphBuilder, value: float, like: Value) -> Value:
    return scalar(b, value, like.dtype)


def _zero_where(b: GraphBuilder, cond: Value, g: Value) -> Value:
    """g where `cond` is false, 0 where it is true."""
    return b.where(cond, _c(b, 0.0, g), g)


def _neg(b, x, y, g, a):
    return b.neg(g)


def _abs(b, x, y, g, a):
    return b.mul(g, b.sign(x))


def _zero(b, x, y, g, a):
    return None


def _exp(b, x, y, g, a):
    return b.mul(g, y)


def _log(b, x, y, g, a):
    return b.div(g, x)


def _sqrt(b, x, y, g, a):
    return b.div(g, b.mul(_c(b, 2.0, y), y))


def _rsqrt(b, x, y, g, a):
    return b.mul(b.mul(_c(b, -0.5, g), g), b.mul(b.mul(y, y), y))


def _reciprocal(b, x, y, g, a):
    return b.mul(b.neg(g), b.mul(y, y))


def _sin(b, x, y, g, a):
    return b.mul(g, b.cos(x))


def _cos(b, x, y, g, a):
    return b.mul(g, b.neg(b.sin(x)))


def _tanh(b, x, y, g, a):
    return b.mul(g, b.sub(_c(b, 1.0, y), b.mul(y, y)))


def _sigmoid(b, x, y, g, a):
    return b.mul(b.mul(g, b.sub(_c(b, 1.0, y), y)), y)


def _relu(b, x, y, g, a):
    # threshold_backward: 0 where the result is <= 0 (a NaN input passes its gradient).
    return _zero_where(b, b.le(y, _c(b, 0.0, y)), g)


def _leaky_relu(b, x, y, g, a):
    return b.where(b.gt(x, _c(b, 0.0, x)), g, b.mul(g, _c(b, a["alpha"], g)))


def _silu(b, x, y, g, a):
    s = b.sigmoid(x)
    one = _c(b, 1.0, x)
    return b.mul(g, b.mul(s, b.add(one, b.mul(x, b.sub(one, s)))))


def _erf(b, x, y, g, a):
    return b.mul(g, b.mul(_c(b, 2.0 / math.sqrt(math.pi), x), b.exp(b.neg(b.mul(x, x)))))


def _gelu(b, x, y, g, a):
    if a["approximate"] == "tanh":
        beta, kappa = math.sqrt(2.0 / math.pi), 0.044715
        x_sq = b.mul(x, x)
        inner = b.mul(_c(b, beta, x), b.add(x, b.mul(_c(b, kappa, x), b.mul(x_sq, x))))
        tanh_inner = b.tanh(inner)
        right = b.add(_c(b, 1.0, x), tanh_inner)
        left_derivative = b.mul(_c(b, 0.5, x), right)
        right_derivative = b.sub(_c(b, 1.0, x), b.mul(tanh_inner, tanh_inner))
        inner_derivative = b.mul(_c(b, beta, x),
                                 b.add(_c(b, 1.0, x), b.mul(_c(b, 3.0 * kappa, x), x_sq)))
        left = b.mul(_c(b, 0.5, x), x)
        return b.mul(g, b.add(left_derivative,
                              b.mul(b.mul(left, right_derivative), inner_derivative)))
    cdf = b.mul(_c(b, 0.5, x),
                b.add(_c(b, 1.0, x), b.erf(b.mul(x, _c(b, math.sqrt(0.5), x)))))
    pdf = b.mul(_c(b, 1.0 / math.sqrt(2.0 * math.pi), x),
                b.exp(b.mul(_c(b, -0.5, x), b.mul(x, x))))
    return b.mul(g, b.add(cdf, b.mul(x, pdf)))


def _clip(b, x, y, g, a):
    keep = None
    if a.get("min") is not None:
        keep = b.ge(x, _c(b, a["min"], x))
    if a.get("max") is not None:
        high = b.le(x, _c(b, a["max"], x))
        keep = high if keep is None else b.logical_and(keep, high)
    return g if keep is None else b.where(keep, g, _c(b, 0.0, g))


def _cast(b, x, y, g, a):
    return b.cast(g, dtype=x.dtype) if x.dtype.is_float and y.dtype.is_float else None


for _name, _fn in [
    ("neg", _neg), ("abs", _abs), ("sign", _zero), ("floor", _zero), ("ceil", _zero),
    ("round", _zero), ("exp", _exp), ("log", _log), ("sqrt", _sqrt), ("rsqrt", _rsqrt),
    ("reciprocal", _reciprocal), ("sin", _sin), ("cos", _cos), ("tanh", _tanh),
    ("sigmoid", _sigmoid), ("relu", _relu), ("leaky_relu", _leaky_relu), ("silu", _silu),
    ("erf", _erf), ("gelu", _gelu), ("clip", _clip), ("cast", _cast),
]:
    set_rule(_name, grad=_unary(_fn))


# -- binary ops -----------------------------------------------------------------------------


def _add(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    return g, g


def _sub(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    return g, b.neg(g)


def _mul(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    x, y = node.inputs
    return b.mul(g, y), b.mul(g, x)


def _div(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    x, y = node.inputs
    if not x.dtype.is_float:
        return None, None
    return b.div(g, y), b.div(b.mul(b.neg(g), x), b.mul(y, y))


def _pow(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    x, e = node.inputs
    if not x.dtype.is_float:
        return None, None
    zero, one = _c(b, 0.0, x), _c(b, 1.0, x)
    # pow_backward_self: 0 where the exponent is 0; pow_backward_exponent: 0 where x == 0
    # and the exponent is >= 0 (so 0 ** 0 and 0 ** 2 give no log(0)).
    gx = _zero_where(b, b.eq(e, zero), b.mul(b.mul(g, e), b.pow(x, b.sub(e, one))))
    at_zero = b.logical_and(b.eq(x, zero), b.ge(e, zero))
    ge = b.mul(g, _zero_where(b, at_zero, b.mul(node.output, b.log(x))))
    return gx, ge


def _extreme(larger: bool):
    def rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
        # Ties split the gradient in halves (PyTorch's maximum / minimum).
        (g,) = gys
        x, y = node.inputs
        if not x.dtype.is_float:
            return None, None
        half = b.where(b.eq(x, y), b.mul(g, _c(b, 0.5, g)), g)
        x_loses, y_loses = (b.lt(x, y), b.gt(x, y)) if larger else (b.gt(x, y), b.lt(x, y))
        return _zero_where(b, x_loses, half), _zero_where(b, y_loses, half)

    rule.__name__ = "grad_maximum" if larger else "grad_minimum"
    return rule


def _where(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    cond = node.inputs[0]
    zero = _c(b, 0.0, g)
    return None, b.where(cond, g, zero), b.where(cond, zero, g)


set_rule("add", grad=_add)
set_rule("sub", grad=_sub)
set_rule("mul", grad=_mul)
set_rule("div", grad=_div)
set_rule("pow", grad=_pow)
set_rule("maximum", grad=_extreme(True))
set_rule("minimum", grad=_extreme(False))
set_rule("where", grad=_where)
for _name in ("eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor",
              "logical_not"):
    set_rule(_name, grad=NOT_DIFFERENTIABLE)
