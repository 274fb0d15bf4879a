"""Reverse-mode autodiff on the graph IR: forward graph in, joint forward-backward graph out.

    joint = grad_graph(graph, wrt=(0, 2))     # outputs: graph's outputs, then d out[0] / d inputs

The backward graph is built from the gradient rule of each op's registry row (`OpDef.grad`), a
vector-Jacobian product written with graph ops, so the result is an ordinary graph that every
pass, the interpreter and every backend handle. A rule has the signature

    rule(b: GraphBuilder, node: Node, gys: tuple[Value | None, ...]) -> tuple[Value | None, ...]

with one cotangent per output of `node` (None: nothing flows back through that output) and one
per input in return (None: no gradient, or a zero one). Rules may return a cotangent of the
*broadcast* shape of an elementwise op; the engine sums it to the operand's shape in one place
(`sum_to`), so no rule deals with broadcasting. Only floating-point values carry cotangents.

An op whose outputs are booleans or integers (comparisons, argmax, integer casts) is marked
`NOT_DIFFERENTIABLE`: nothing flows through it, and nothing needs to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ember.errors import EmberError
from ember.ir.graph import Graph, GraphBuilder, Node, Value
from ember.ir.ops import get_op
from ember.ir.types import DType, TensorType


class GradientError(EmberError):
    """A gradient was asked of something that has none (an op without a rule, integer inputs)."""


def not_differentiable(b: GraphBuilder, node: Node, gys: tuple[Value | None, ...]
                       ) -> tuple[Value | None, ...]:
    """The rule of ops with boolean or integer results: no gradient flows to any input."""
    return (None,) * len(node.inputs)


NOT_DIFFERENTIABLE: Callable[..., tuple[Value | None, ...]] = not_differentiable


def attrs_of(node: Node) -> dict[str, object]:
    """The op's own attributes of a node (without memory-plan annotations)."""
    return get_op(node.op).own_attrs(node.attrs)


def scalar(b: GraphBuilder, value: float, dtype: DType) -> Value:
    """A 0-d constant of `dtype`."""
    return b.const(np.array(value, dtype=dtype.numpy))


def zeros(b: GraphBuilder, type_: TensorType) -> Value:
    """Zeros of `type_`, as a broadcast scalar (no large constant is stored)."""
    zero = scalar(b, 0.0, type_.dtype)
    return zero if type_.ndim == 0 else b.broadcast_to(zero, shape=type_.shape)


def sum_to(b: GraphBuilder, value: Value, shape: tuple[int, ...]) -> Value:
    """`value` summed over the axes numpy broadcasting added to reach its shape from `shape`:
    the one place where broadcasting is undone."""
    if value.shape == shape:
        return value
    lead = value.ndim - len(shape)
    if lead < 0:
        raise GradientError(f"internal error: cotangent {value.type} is smaller than its "
                            f"operand's shape {list(shape)}")
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and value.shape[lead + i] != 1)
    if axes:
        value = b.sum(value, axes=axes, keepdims=False)
    return value if value.shape == shape else b.reshape(value, shape=shape)


def _is_float(value: Value) -> bool:
    return value.dtype.is_float


def _needed(graph: Graph, wrt: Sequence[Value], target: Value) -> set[Node]:
    """Nodes on some path from a `wrt` value to `target`: the only ones worth differentiating."""
    reaches = set(wrt)
    forward: set[Node] = set()
    for node in graph.nodes:
        if any(v in reaches for v in node.inputs):
            forward.add(node)
            reaches.update(node.outputs)
    leads = {target}
    needed: set[Node] = set()
    for node in reversed(graph.nodes):
        if node in forward and any(v in leads for v in node.outputs):
            needed.add(node)
            leads.update(node.inputs)
    return needed


def backward(b: GraphBuilder, graph: Graph, target: Value, seed: Value, wrt: Sequence[Value]
             ) -> list[Value]:
    """Append to `b` (which already holds `graph`'s nodes) the nodes computing the cotangent
    of every `wrt` value for the cotangent `seed` of `target`; zeros where none flows."""
    cotangents: dict[Value, Value] = {target: seed}
    needed = _needed(graph, wrt, target)
    for node in reversed(graph.nodes):
        if node not in needed:
            continue
        gys = tuple(cotangents.get(v) for v in node.outputs)
        if all(g is None for g in gys):
            continue
        opdef = get_op(node.op)
        if opdef.grad is None:
            raise GradientError(f"{node.op}: no gradient rule (the gradient flows through it "
                                f"at {node.loc or 'an unknown line'}; inputs "
                                f"{', '.join(str(v.type) for v in node.inputs)})")
        b.loc = node.loc
        gxs = opdef.grad(b, node, gys)
        if len(gxs) != len(node.inputs):
            raise GradientError(f"internal error: the gradient rule of {node.op} returned "
                                f"{len(gxs)} cotangents for {len(node.inputs)} inputs")
        for value, gx in zip(node.inputs, gxs, strict=True):
            if gx is None or not _is_float(value):
                continue
            gx = sum_to(b, gx, value.shape)
            if gx.dtype is not value.dtype:
                gx = b.cast(gx, dtype=value.dtype)
            previous = cotangents.get(value)
            cotangents[value] = gx if previous is None else b.add(previous, gx)
    b.loc = ""
    return [cotangents.get(v) or zeros(b, v.type) for v in wrt]


def check_loss(graph: Graph, index: int = 0) -> Value:
    """The output differentiated: a float scalar (one element)."""
    if not graph.outputs:
        raise GradientError("the function returns nothing to differentiate")
    loss = graph.outputs[index]
    if not _is_float(loss) or int(np.prod(loss.shape)) != 1:
        raise GradientError(f"grad needs a function returning one floating-point value (a "
                            f"loss); output {index} is {loss.type}: reduce it, e.g. with "
                            ".sum() or .mean()")
    return loss


def grad_graph(graph: Graph, wrt: Sequence[int], extra_outputs: bool = True,
               name: str | None = None) -> Graph:
    """The joint graph: `graph`'s outputs (when `extra_outputs`; else only the loss), then the
    gradient of output 0 (a scalar) with respect to each input index in `wrt`."""
    loss = check_loss(graph)
    values = []
    for index in wrt:
        if not -len(graph.inputs) <= index < len(graph.inputs):
            raise GradientError(f"argnums {index} is out of range for {len(graph.inputs)} "
                                "inputs")
        value = graph.inputs[index]
        if not _is_float(value):
            raise GradientError(f"cannot differentiate with respect to input {index} "
                                f"({value.hint or 'unnamed'}: {value.type}): only floating-point "
                                "inputs have gradients")
        values.append(value)
    b = GraphBuilder(name or graph.name)
    b.inputs = list(graph.inputs)
    b.nodes = list(graph.nodes)
    seed = b.reshape(scalar(b, 1.0, loss.dtype), shape=loss.shape) if loss.ndim else \
        scalar(b, 1.0, loss.dtype)
    grads = backward(b, graph, loss, seed, values)
    outputs = list(graph.outputs) if extra_outputs else [loss]
    return b.build([*outputs, *grads])
