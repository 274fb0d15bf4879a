"""Rules of `simplify` that recognise a hand-written activation and use the registry's op.

These are not bit-exact the way the identities in `_simplify_rules` are: they replace a chain
of ops by one op whose reference computes the same formula at least as accurately (softmax and
log_softmax accumulate in float64; `log_softmax` stays finite where `log(softmax(x))` gives
-inf after softmax underflows to 0).
"""

from __future__ import annotations

import math

import numpy as np
from ember.passes._rewrite import Producers, Rewrite, constant_of, make_node

from ember.ir.graph import Node, Value
from ember.ir.ops import normalize_axes


def _producer(value: Value, producers: Producers, op: str) -> Node | None:
    node = producers.get(value)
    return node if node is not None and node.op == op else None


def _single_axis(node: Node) -> int | None:
    """The one reduced axis of a keepdims reduction, non-negative, or None."""
    if not node.attrs["keepdims"]:
        return None
    axes = normalize_axes(node.attrs["axes"], node.inputs[0].type.ndim)  # type: ignore[arg-type]
    return axes[0] if len(axes) == 1 else None


def _is_constant(value: Value, producers: Producers, number: float) -> bool:
    """True when `value` is a constant whose elements all equal `number` in its dtype."""
    array = constant_of(value, producers)
    return array is not None and array.size > 0 and bool(np.all(array == array.dtype.type(number)))


def log_of_softmax(node: Node, producers: Producers) -> Rewrite | None:
    # log(softmax(x, a)) -> log_softmax(x, a)
    inner = _producer(node.inputs[0], producers, "softmax") if node.op == "log" else None
    if inner is None:
        return None
    return Rewrite.with_node(make_node("log_softmax", inner.inputs, node.loc,
                                       axis=inner.attrs["axis"]))


def softmax_by_hand(node: Node, producers: Producers) -> Rewrite | None:
    # div(exp(x - max(x, a, keepdims)), sum(exp(...), a, keepdims)) -> softmax(x, a)
    if node.op != "div" or not node.output.dtype.is_float:
        return None
    numerator, denominator = node.inputs
    exp = _producer(numerator, producers, "exp")
    total = _producer(denominator, producers, "sum")
    if exp is None or total is None or total.inputs[0] is not numerator:
        return None
    shifted = _producer(exp.inputs[0], producers, "sub")
    if shifted is None:
        return None
    peak = _producer(shifted.inputs[1], producers, "max")
    if peak is None or peak.inputs[0] is not shifted.inputs[0]:
        return None
    axis = _single_axis(peak)
    if axis is None or axis != _single_axis(total):
        return None
    return Rewrite.with_node(make_node("softmax", peak.inputs, node.loc, axis=axis))


def silu_by_hand(node: Node, producers: Producers) -> Rewrite | None:
    # mul(x, sigmoid(x)) -> silu(x) ; mul(sigmoid(x), x) -> silu(x)
    if node.op != "mul":
        return None
    for value, other in (node.inputs, reversed(node.inputs)):
        sigmoid = _producer(other, producers, "sigmoid")
        if sigmoid is not None and sigmoid.inputs[0] is value:
            return Rewrite.with_node(make_node("silu", (value,), node.loc))
    return None


def _factors(value: Value, producers: Producers, depth: int) -> list[Value]:
    """The operands of a tree of `mul` nodes, `depth` levels deep."""
    product = _producer(value, producers, "mul") if depth else None
    if product is None:
        return [value]
    return [f for operand in product.inputs for f in _factors(operand, producers, depth - 1)]


def _erf_argument(value: Value, producers: Producers) -> Value | None:
    """x when `value` is `1 + erf(x / sqrt(2))` (or with `x * (1/sqrt(2))`), in either order."""
    plus = _producer(value, producers, "add")
    if plus is None:
        return None
    for one, other in (plus.inputs, reversed(plus.inputs)):
        erf = _producer(other, producers, "erf")
        if erf is None or not _is_constant(one, producers, 1):
            continue
        scaled = producers.get(erf.inputs[0])
        if scaled is not None and scaled.op == "div" and _is_constant(
                scaled.inputs[1], producers, math.sqrt(2)):
            return scaled.inputs[0]
        if scaled is not None and scaled.op == "mul" and _is_constant(
                scaled.inputs[1], producers, math.sqrt(0.5)):
            return scaled.inputs[0]
    return None


def gelu_by_hand(node: Node, producers: Producers) -> Rewrite | None:
    # mul(mul(0.5, x), add(1, erf(div(x, sqrt(2))))) -> gelu(x)   (any order of the factors)
    if node.op != "mul" or not node.output.dtype.is_float:
        return None
    factors = [f for operand in node.inputs for f in _factors(operand, producers, 1)]
    if len(factors) != 3:
        return None
    for half in [f for f in factors if _is_constant(f, producers, 0.5)][:1]:
        rest = list(factors)
        rest.remove(half)
        for candidate, bracket in (rest, reversed(rest)):
            if _erf_argument(bracket, producers) is candidate:
                return Rewrite.with_node(make_node("gelu", (candidate,), node.loc))
    return None
