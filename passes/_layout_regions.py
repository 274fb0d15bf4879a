"""The region builder of the `layout` pass: one walk over the nodes that moves convolutions and
the channel-wise ops around them into a blocked layout, converting only at region boundaries.

A value computed in the blocked layout gets its NCHW form (a `layout_convert` back, defining the
original Value, so later readers need no renaming) only when something outside a region reads it.
"""

from __future__ import annotations

import numpy as np
from ember.passes._layout_folding import constant_array, drop_newly_dead

from ember.ir.attrs import AttrValue, Const
from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import get_op
from ember.ops.layout import block_size, pack_channels, pack_conv_weight, to_blocked

# Elementwise ops that keep padded channels finite (f(0) is finite), so they run blocked as they
# are: the layout carries from operand to result through their type rules.
CHANNELWISE_UNARY = frozenset({"relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "clip",
                               "neg", "abs"})
CHANNELWISE_BINARY = frozenset({"add", "sub", "mul", "div", "maximum", "minimum"})
BLOCKED_POOLS = {"max_pool2d": "max_pool2d_nchwc", "avg_pool2d": "avg_pool2d_nchwc"}


class RegionBuilder:
    """Rewrites one graph; `rewrite()` returns the new graph, or the input when nothing moved."""

    def __init__(self, graph: Graph, layout: str) -> None:
        self.graph = graph
        self.layout = layout
        self.nodes: list[Node] = []
        self.blocked: dict[Value, Value] = {}  # NCHW value -> its blocked form
        self.replaced: set[Value] = set()  # values whose defining node now computes blocked
        self.converted_back: set[Value] = set()

    def rewrite(self) -> Graph:
        for node in self.graph.nodes:
            if not self.visit_blocked(node):
                self.convert_back(node.inputs)
                self.nodes.append(node)
        if not self.replaced:
            return self.graph
        self.convert_back(self.graph.outputs)
        return drop_newly_dead(self.graph, self.nodes, self.graph.outputs)

    # -----------------------------------------------------------------------------------------
    # Emitting nodes.

    def emit(self, op: str, inputs: tuple[Value, ...], attrs: dict[str, AttrValue],
             loc: str = "", outputs: tuple[Value, ...] | None = None) -> Value:
        opdef = get_op(op)
        full = opdef.make_attrs(attrs)
        if outputs is None:
            types = opdef.infer_types(tuple(v.type for v in inputs), full)
            outputs = tuple(Value(t) for t in types)
        self.nodes.append(Node(op, inputs, outputs, full, None, loc))
        return outputs[0]

    def const(self, array: np.ndarray) -> Value:
        return self.emit("const", (), {"value": Const(array)})

    def convert_back(self, values: tuple[Value, ...]) -> None:
        # blocked value read outside a region -> layout_convert back, defining the original Value
        for value in values:
            if value in self.replaced and value not in self.converted_back:
                self.converted_back.add(value)
                attrs = {"layout": "", "channels": value.shape[1]}
                self.emit("layout_convert", (self.blocked[value],), attrs, outputs=(value,))

    def to_blocked(self, value: Value) -> Value:
        # NCHW value entering a region -> layout_convert, once per value
        if value not in self.blocked:
            attrs = {"layout": self.layout, "channels": value.shape[1]}
            self.blocked[value] = self.emit("layout_convert", (value,), attrs)
        return self.blocked[value]

    def record(self, node: Node, blocked: Value) -> bool:
        self.blocked[node.output] = blocked
        self.replaced.add(node.output)
        return True

    # -----------------------------------------------------------------------------------------
    # Rules: each returns True when it moved the node into a region.

    def visit_blocked(self, node: Node) -> bool:
        if node.body is not None or len(node.outputs) != 1:
            return False
        if node.op == "conv2d":
            return self.visit_conv(node)
        if not any(v in self.replaced for v in node.inputs):
            return False
        if node.op in CHANNELWISE_UNARY:
            return self.visit_unary(node)
        if node.op in CHANNELWISE_BINARY:
            return self.visit_binary(node)
        if node.op in BLOCKED_POOLS:
            return self.visit_pool(node)
        if node.op == "concat":
            return self.visit_concat(node)
        return False

    def visit_conv(self, node: Node) -> bool:
        # conv2d(x, w, b) -> conv2d_nchwc(layout_convert(x), packed w, packed b)
        source, weight_value = node.inputs[0], node.inputs[1]
        if node.attrs["groups"] != 1 or source.type.layout or not source.type.dtype.is_float:
            return False
        weight = constant_array(self.graph, weight_value)
        bias = constant_array(self.graph, node.inputs[2]) if len(node.inputs) == 3 else None
        if weight is None or (len(node.inputs) == 3 and bias is None):
            return False
        in_block = block_size(self.layout, weight.shape[1])
        out_block = block_size(self.layout, weight.shape[0])
        packed = pack_conv_weight(weight, in_block, out_block)
        inputs = [self.to_blocked(source), self.const(packed)]
        if bias is not None:
            inputs.append(self.const(pack_channels(bias, out_block)))
        attrs = {k: node.attrs[k] for k in ("stride", "padding", "dilation")}
        return self.record(node, self.emit("conv2d_nchwc", tuple(inputs), attrs, node.loc))

    def visit_unary(self, node: Node) -> bool:
        # relu(blocked) -> relu(blocked): the type rule carries the layout
        attrs = get_op(node.op).own_attrs(node.attrs)
        source = self.blocked[node.inputs[0]]
        return self.record(node, self.emit(node.op, (source,), attrs, node.loc))

    def visit_binary(self, node: Node) -> bool:
        # add(blocked, per-channel const) -> add(blocked, packed const)
        # add(blocked, x) -> add(blocked, layout_convert(x))
        if node.output.type.ndim != 4 or node.output.type.layout:
            return False
        if node.op == "div" and node.inputs[0] not in self.replaced:
            return False  # a blocked divisor would divide by its zero padding
        operands = []
        for index, value in enumerate(node.inputs):
            operand = self.blocked_operand(node, value, pad_value=float(node.op == "div" and index))
            if operand is None:
                return False
            operands.append(operand)
        return self.record(node, self.emit(node.op, tuple(operands), {}, node.loc))

    def blocked_operand(self, node: Node, value: Value, pad_value: float) -> Value | None:
        if value in self.replaced:
            return self.blocked[value] if value.shape == node.output.shape else None
        array = constant_array(self.graph, value)
        if array is None:
            return self.to_blocked(value) if value.shape == node.output.shape else None
        if array.size == 1:
            return value
        if array.ndim > 4:
            return None
        channels = node.output.shape[1]
        padded = array.reshape((1,) * (4 - array.ndim) + array.shape)
        shape = (padded.shape[0], channels, *padded.shape[2:])
        full = np.broadcast_to(padded, shape)  # raises for a non-broadcastable shape: never here
        return self.const(to_blocked(np.ascontiguousarray(full), self.layout, pad_value))

    def visit_concat(self, node: Node) -> bool:
        # concat(blocked, x, ...) on channels -> concat(blocked, layout_convert(x), ...) on the
        # last axis: nhwc only (a channel block of nchw<b>c would need every part whole)
        out = node.output.type
        if self.layout != "nhwc" or out.ndim != 4 or out.layout or node.attrs["axis"] % 4 != 1:
            return False
        if any(v.type.ndim != 4 or v.type.layout for v in node.inputs if v not in self.replaced):
            return False
        operands = tuple(self.blocked[v] if v in self.replaced else self.to_blocked(v)
                         for v in node.inputs)
        return self.record(node, self.emit("concat", operands, {"axis": 3}, node.loc))

    def visit_pool(self, node: Node) -> bool:
        # max_pool2d(blocked) -> max_pool2d_nchwc(blocked)
        attrs = get_op(node.op).own_attrs(node.attrs)
        source = self.blocked[node.inputs[0]]
        return self.record(node, self.emit(BLOCKED_POOLS[node.op], (source,), attrs, node.loc))
