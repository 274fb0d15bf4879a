"""The gradient rules of the pools and of gather: one backward op each (`ember.ops.grad`).

Each rule copies the forward node's own attributes onto its backward op, which recomputes
what it needs from them: max pooling's backward reads x again to find each window's chosen
tap (rather than the forward saving indices), the average pools take x's shape as
`input_shape`, and gather's backward scatters into an axis of the data's size. Integer
indices receive no gradient. The linear backward ops get rules too (second derivatives).
"""

from __future__ import annotations

from ember.ir.graph import GraphBuilder, Node, Value
from ember.ir.ops import get_op, set_rule

Cotangents = tuple[Value | None, ...]


def _own(node: Node) -> dict:
    """The forward op's own attributes (without plan annotations such as buffer offsets)."""
    return get_op(node.op).own_attrs(node.attrs)


def max_pool2d_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (gy,) = gys
    if gy is None:
        return (None,)
    return (b.op("max_pool2d_grad", node.inputs[0], gy, **_own(node)),)  # type: ignore[return-value]


def avg_pool2d_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (gy,) = gys
    if gy is None:
        return (None,)
    x = node.inputs[0]
    return (b.op("avg_pool2d_grad", gy, input_shape=x.type.shape,  # type: ignore[return-value]
                 **_own(node)),)


def adaptive_avg_pool2d_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (gy,) = gys
    if gy is None:
        return (None,)
    x = node.inputs[0]
    return (b.op("adaptive_avg_pool2d_grad", gy,  # type: ignore[return-value]
                 input_shape=x.type.shape),)


def gather_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (gy,) = gys
    if gy is None:
        return (None, None)
    data, indices = node.inputs
    axis = int(_own(node)["axis"]) % data.type.ndim
    data_grad = b.op("scatter_add", gy, indices, axis=axis, size=data.type.shape[axis])
    return (data_grad, None)  # type: ignore[return-value]


# The backward ops of the average pools and of gather are linear in gy: their own gradient
# (a second derivative) is the forward op again. max_pool2d_grad has none (its x is only the
# choice of taps); the engine names it if a gradient must flow through it.


def avg_pool2d_grad_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (gz,) = gys
    if gz is None:
        return (None,)
    attrs = {k: v for k, v in _own(node).items() if k != "input_shape"}
    return (b.op("avg_pool2d", gz, **attrs),)  # type: ignore[return-value]


def adaptive_avg_pool2d_grad_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (gz,) = gys
    if gz is None:
        return (None,)
    output_size = node.inputs[0].type.shape[2:]
    return (b.op("adaptive_avg_pool2d", gz, output_size=output_size),)  # type: ignore[return-value]


def scatter_add_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (gz,) = gys
    if gz is None:
        return (None, None)
    axis = int(_own(node)["axis"]) % node.outputs[0].type.ndim
    return (b.op("gather", gz, node.inputs[1], axis=axis), None)  # type: ignore[return-value]


set_rule("max_pool2d", grad=max_pool2d_rule)
set_rule("avg_pool2d", grad=avg_pool2d_rule)
set_rule("adaptive_avg_pool2d", grad=adaptive_avg_pool2d_rule)
set_rule("gather", grad=gather_rule)
set_rule("avg_pool2d_grad", grad=avg_pool2d_grad_rule)
set_rule("adaptive_avg_pool2d_grad", grad=adaptive_avg_pool2d_grad_rule)
set_rule("scatter_add", grad=scatter_add_rule)
