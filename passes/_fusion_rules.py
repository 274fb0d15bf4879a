"""Fusion rules shared by the planner and the rewriter of the `fuse` pass: which ops fuse in
which role, which groups may merge, which constants move into regions, and which values leave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import OPS
from ember.pipeline import is_pure

REDUCTION_OPS = frozenset({"sum", "mean", "max", "min", "prod", "softmax", "log_softmax",
                           "layer_norm"})
ANCHOR_KINDS = {"matmul": "matmul", "matmul_nt": "matmul", "conv2d": "conv",
                "conv2d_nchwc": "conv"}
BROADCAST_OPS = frozenset({"broadcast_to"})  # elementwise in all but name
SMALL_CONSTANT = 64  # constants of at most this many elements are copied into regions


@dataclass
class Group:
    """Nodes (indices into `graph.nodes`, ascending) that become one fused node."""

    members: list[int]
    kind: str  # elementwise | reduction | matmul | conv
    anchor: int | None = None  # the matmul/conv node, first in the body
    reduced_shape: tuple[int, ...] | None = None  # input shape shared by every reduction


def role(node: Node) -> str | None:
    """"elementwise", "reduction" or "anchor" for a node fusion may use; None otherwise."""
    if node.body is not None or node.op == "const" or not is_pure(node):
        return None
    if node.op in ANCHOR_KINDS:
        return "anchor"
    if node.op in REDUCTION_OPS:
        return "reduction"
    opdef = OPS.get(node.op)
    if node.op in BROADCAST_OPS or (opdef is not None and opdef.elementwise):
        return "elementwise"
    return None


def is_small_constant(node: Node | None) -> bool:
    """An unnamed `const` small enough to copy into every region that reads it (named
    constants are the model's parameters and stay where `Graph.constants()` finds them)."""
    if node is None or node.op != "const" or node.attrs.get("name"):
        return False
    return node.output.type.size <= SMALL_CONSTANT


def new_group(index: int, node: Node) -> Group:
    kind = role(node)
    if kind == "anchor":
        return Group([index], ANCHOR_KINDS[node.op], anchor=index)
    if kind == "reduction":
        return Group([index], "reduction", reduced_shape=node.inputs[0].type.shape)
    return Group([index], "elementwise")


def unfusible_reason(node: Node) -> str:
    if node.body is not None:
        return "already a fused node (regions never nest)"
    if not is_pure(node):
        return f"{node.op} is impure (it must run exactly as written)"
    return f"{node.op} has no fusion rule"


def kind_conflict(graph: Graph, index: int, first: Group, second: Group) -> str | None:
    """Why two groups' kinds do not mix; `first` holds the new node `index`."""
    node = graph.nodes[index]
    if first.anchor is not None and second.anchor is not None:
        return "a fused node holds one matmul/conv anchor"
    if first.anchor is not None:
        return f"the {first.kind} group takes no prologue"
    if second.anchor is not None:
        anchor_shape = graph.nodes[second.anchor].outputs[0].type.shape
        if len(first.members) > 1:
            return f"the {second.kind} group takes only single elementwise epilogue nodes"
        if role(node) != "elementwise":
            return f"a {second.kind} group takes only an elementwise epilogue"
        if node.outputs[0].type.shape != anchor_shape:
            return f"the epilogue changes the {second.kind} output shape {list(anchor_shape)}"
        return None
    shapes = {s for s in (first.reduced_shape, second.reduced_shape) if s is not None}
    if len(shapes) > 1:
        return "its reductions read inputs of different shapes"
    return None


def escaping_values(graph: Graph, members: Sequence[int]) -> list[Value]:
    """Values the group computes that a node outside it, or the graph's return, reads."""
    inside = {graph.nodes[i] for i in members}
    outputs = set(graph.outputs)
    return [v for i in members for v in graph.nodes[i].outputs
            if v in outputs or any(u not in inside for u in graph.users.get(v, []))]
