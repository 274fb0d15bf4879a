"""The rewrite rules of `simplify`: one named function per rule, each `(node, producers) ->
Rewrite | None`, listed in `RULES`.

Every rule here is exact: for every input, the rewritten graph computes the same bits as the
original (the few that instead pick a fused op, which is at least as accurate, say so). That
rules out several tempting identities, on purpose:

- `x * 0 -> 0`: wrong for floats, since inf * 0 and nan * 0 are nan.
- `x + 0.0 -> x`: wrong for x = -0.0 (-0.0 + 0.0 is +0.0, and 1/x tells them apart); only
  `x + (-0.0)` and `x - (+0.0)` are folded for floats.
- `x - x -> 0`: nan - nan and inf - inf are nan.
- `exp(log(x)) -> x`: log is nan for x < 0; `log(exp(x))` overflows for large x.
- `x / c -> x * (1/c)`: only when every element of c is a power of two, so 1/c is exact and
  both sides round the same real number once.

A rule never changes what a user sees: the driver drops any match whose replacement values do
not have exactly the old types (broadcasting must not change a shape, nor a layout vanish).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ember.passes._rewrite import Producers, Rewrite, constant_of, make_const, make_node

from ember.errors import ShapeError
from ember.ir.graph import Node, Value
from ember.ir.ops import OPS, normalize_axes
from ember.ir.types import DType

Rule = Callable[[Node, Producers], "Rewrite | None"]

# cast a -> b keeps every value of a exactly (so a following cast sees the same value).
_LOSSLESS_CASTS = {
    (DType.F32, DType.F64), (DType.I32, DType.I64), (DType.I32, DType.F64),
    (DType.BOOL, DType.I32), (DType.BOOL, DType.I64), (DType.BOOL, DType.F32),
    (DType.BOOL, DType.F64),
}


def _producer(value: Value, producers: Producers, op: str) -> Node | None:
    """The node that defines `value` if it is an `op` node."""
    node = producers.get(value)
    return node if node is not None and node.op == op else None


def _is_filled(value: Value, producers: Producers, fill: float, negative_zero: bool = False
               ) -> bool:
    """True when `value` is a constant whose every element equals `fill` (for a float zero,
    also with the given sign)."""
    array = constant_of(value, producers)
    if array is None or array.size == 0 or not np.all(array == fill):
        return False
    if fill == 0 and array.dtype.kind == "f":
        return bool(np.all(np.signbit(array) == negative_zero))
    return True


def _other_operand(node: Node, producers: Producers, fill: float, negative_zero: bool = False,
                   commutes: bool = True) -> Value | None:
    """For a binary node with one operand a constant filled with `fill`, the other operand."""
    left, right = node.inputs
    if _is_filled(right, producers, fill, negative_zero):
        return left
    if commutes and _is_filled(left, producers, fill, negative_zero):
        return right
    return None


# ---------------------------------------------------------------------------------------------
# Arithmetic identities.


def mul_by_one(node: Node, producers: Producers) -> Rewrite | None:
    # mul(x, 1) -> x ; mul(1, x) -> x   (x * 1 is x for every x, inf and nan included)
    if node.op != "mul":
        return None
    other = _other_operand(node, producers, 1)
    return None if other is None else Rewrite.to(other)


def add_zero(node: Node, producers: Producers) -> Rewrite | None:
    # add(x, 0) -> x for ints; add(x, -0.0) -> x for floats (x + +0.0 turns -0.0 into +0.0)
    if node.op != "add":
        return None
    negative_zero = node.output.dtype.is_float
    other = _other_operand(node, producers, 0, negative_zero)
    return None if other is None else Rewrite.to(other)


def sub_zero(node: Node, producers: Producers) -> Rewrite | None:
    # sub(x, 0) -> x   (for floats only +0.0: x - (-0.0) is x + 0.0)
    if node.op != "sub":
        return None
    other = _other_operand(node, producers, 0, negative_zero=False, commutes=False)
    return None if other is None else Rewrite.to(other)


def div_by_one(node: Node, producers: Producers) -> Rewrite | None:
    # div(x, 1) -> x
    if node.op != "div":
        return None
    other = _other_operand(node, producers, 1, commutes=False)
    return None if other is None else Rewrite.to(other)


def div_by_power_of_two(node: Node, producers: Producers) -> Rewrite | None:
    # div(x, c) -> mul(x, 1/c)   when c is a float constant of powers of two (1/c exact)
    if node.op != "div" or not node.output.dtype.is_float:
        return None
    divisor = constant_of(node.inputs[1], producers)
    if divisor is None or divisor.size == 0 or not np.all(np.isfinite(divisor)):
        return None
    mantissa, _ = np.frexp(divisor)
    with np.errstate(all="ignore"):
        reciprocal = (1 / divisor).astype(divisor.dtype)
    if not np.all(np.abs(mantissa) == 0.5) or not np.all(np.isfinite(reciprocal)):
        return None
    if not np.all(reciprocal.astype(np.float64) * divisor == 1):  # 1/c rounded: not exact
        return None
    constant = make_const(reciprocal, loc=node.loc)
    product = make_node("mul", (node.inputs[0], constant.output), node.loc)
    return Rewrite((constant, product), product.outputs)


def neg_of_neg(node: Node, producers: Producers) -> Rewrite | None:
    # neg(neg(x)) -> x   (exact: negation only flips the sign bit; ints wrap both ways)
    inner = _producer(node.inputs[0], producers, "neg") if node.op == "neg" else None
    return None if inner is None else Rewrite.to(inner.inputs[0])


def drop_broadcast_operand(node: Node, producers: Producers) -> Rewrite | None:
    # add(broadcast_to(c, s), y) -> add(c, y)   when the op's own broadcasting gives type s
    opdef = OPS.get(node.op)
    if opdef is None or not opdef.elementwise or len(node.inputs) < 2:
        return None
    inputs = list(node.inputs)
    for index, value in enumerate(inputs):
        broadcast = _producer(value, producers, "broadcast_to")
        if broadcast is None:
            continue
        operands = (*inputs[:index], broadcast.inputs[0], *inputs[index + 1:])
        try:
            candidate = make_node(node.op, operands, node.loc, **opdef.own_attrs(node.attrs))
        except ShapeError:  # e.g. an operand without a layout that cannot meet a blocked one
            continue
        if candidate.output.type == node.output.type:
            return Rewrite.with_node(candidate)
    return None


# ---------------------------------------------------------------------------------------------
# Shape and cast identities.


def transpose_identity(node: Node, producers: Producers) -> Rewrite | None:
    # transpose(x, [0, 1, ..., n-1]) -> x
    if node.op != "transpose" or tuple(node.attrs["perm"]) != tuple(range(len(node.attrs["perm"]))):
        return None
    return Rewrite.to(node.inputs[0])


def transpose_of_transpose(node: Node, producers: Producers) -> Rewrite | None:
    # transpose(transpose(x, p), q) -> transpose(x, [p[i] for i in q])   (or x if identity)
    inner = _producer(node.inputs[0], producers, "transpose") if node.op == "transpose" else None
    if inner is None:
        return None
    first, second = inner.attrs["perm"], node.attrs["perm"]
    perm = tuple(first[axis] for axis in second)  # type: ignore[index, union-attr]
    if perm == tuple(range(len(perm))):
        return Rewrite.to(inner.inputs[0])
    return Rewrite.with_node(make_node("transpose", inner.inputs, node.loc, perm=perm))


def reshape_same_shape(node: Node, producers: Producers) -> Rewrite | None:
    # reshape(x : f32[a,b], [a, b]) -> x
    if node.op != "reshape" or node.output.type != node.inputs[0].type:
        return None
    return Rewrite.to(node.inputs[0])


def reshape_of_reshape(node: Node, producers: Producers) -> Rewrite | None:
    # reshape(reshape(x, s), t) -> reshape(x, t)   (row-major order is kept by both)
    inner = _producer(node.inputs[0], producers, "reshape") if node.op == "reshape" else None
    if inner is None:
        return None
    return Rewrite.with_node(make_node("reshape", inner.inputs, node.loc,
                                       shape=node.attrs["shape"]))


def cast_same_dtype(node: Node, producers: Producers) -> Rewrite | None:
    # cast(x : f32, f32) -> x
    if node.op != "cast" or node.output.type != node.inputs[0].type:
        return None
    return Rewrite.to(node.inputs[0])


def cast_of_lossless_cast(node: Node, producers: Producers) -> Rewrite | None:
    # cast(cast(x : f32, f64), t) -> cast(x, t)   when the inner cast keeps every value of x
    inner = _producer(node.inputs[0], producers, "cast") if node.op == "cast" else None
    if inner is None or (inner.inputs[0].dtype, inner.output.dtype) not in _LOSSLESS_CASTS:
        return None
    return Rewrite.with_node(make_node("cast", inner.inputs, node.loc, dtype=node.attrs["dtype"]))


def squeeze_of_expand_dims(node: Node, producers: Producers) -> Rewrite | None:
    # squeeze(expand_dims(x, a), a) -> x ; expand_dims(squeeze(x, a), a) -> x
    pairs = {"squeeze": "expand_dims", "expand_dims": "squeeze"}
    if node.op not in pairs:
        return None
    inner = _producer(node.inputs[0], producers, pairs[node.op])
    if inner is None:
        return None
    return Rewrite.to(inner.inputs[0]) if _own_axes(node) == _own_axes(inner) else None


def _own_axes(node: Node) -> tuple[int, ...]:
    """The axes of a squeeze (in its input's rank) or expand_dims (in its output's rank)."""
    value = node.inputs[0] if node.op == "squeeze" else node.outputs[0]
    return normalize_axes(node.attrs["axes"], value.type.ndim)  # type: ignore[arg-type]


def dropout_inference(node: Node, producers: Producers) -> Rewrite | None:
    # dropout(x, training=false) -> x ; dropout(x, p=0) -> x   (its reference is a copy of x)
    if node.op != "dropout" or (node.attrs["training"] and node.attrs["p"] != 0):
        return None
    return Rewrite.to(node.inputs[0])
