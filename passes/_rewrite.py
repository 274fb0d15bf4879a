"""Shared machinery for local rewrites: `rewrite_nodes(graph, fn)` and small node builders.

A rewrite callback looks at one node (its inputs already renamed to earlier replacements) and
returns `None` to keep it, or a `Rewrite`: the new nodes to put in its place and the values that
stand for its outputs from then on. The callback may look up the producer of any earlier value
through `Producers`, which sees the graph being built, so patterns that span several nodes
match rewritten operands too.

    def neg_of_neg(node, producers):  # neg(neg(x)) -> x
        inner = producers.get(node.inputs[0])
        if node.op == "neg" and inner is not None and inner.op == "neg":
            return Rewrite.to(inner.inputs[0])
        return None

    rewritten = rewrite_nodes(graph, neg_of_neg)   # `graph` itself when nothing matched
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ember.ir.attrs import AttrValue, Const
from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import get_op

Producers = dict[Value, Node]


@dataclass(frozen=True)
class Rewrite:
    """New nodes that replace one node, and the values that replace its outputs, in order."""

    nodes: tuple[Node, ...]
    values: tuple[Value, ...]

    @staticmethod
    def to(*values: Value) -> Rewrite:
        """Replace the node's outputs by values that already exist."""
        return Rewrite((), values)

    @staticmethod
    def with_node(node: Node) -> Rewrite:
        """Replace the node by `node`, whose outputs take the place of the old ones."""
        return Rewrite((node,), node.outputs)


RewriteFn = Callable[[Node, Producers], "Rewrite | None"]


def rewrite_nodes(graph: Graph, fn: RewriteFn, *, regions: bool = True) -> Graph:
    """Apply `fn` to every node in order (and, with `regions`, inside region bodies first).

    Returns the same graph object when `fn` matched nothing; never mutates `graph`.
    """
    rename: dict[Value, Value] = {}
    producers: Producers = {}
    kept: list[Node] = []
    changed = False
    for original in graph.nodes:
        node = original.with_inputs_renamed(rename)
        if regions and node.body is not None:
            body = rewrite_nodes(node.body, fn)
            node = node if body is node.body else node.replace(body=body)
        changed = changed or node is not original
        result = fn(node, producers)
        if result is None:
            kept.append(node)
            producers.update((value, node) for value in node.outputs)
            continue
        changed = True
        kept.extend(result.nodes)
        producers.update((value, new) for new in result.nodes for value in new.outputs)
        rename.update(zip(node.outputs, result.values, strict=True))
    if not changed:
        return graph
    outputs = tuple(rename.get(value, value) for value in graph.outputs)
    return graph.replace(nodes=tuple(kept), outputs=outputs)


def make_node(op: str, inputs: Sequence[Value], loc: str = "", **attrs: AttrValue | None) -> Node:
    """A new node with canonical attributes and inferred result types (fresh output values)."""
    opdef = get_op(op)
    full_attrs = opdef.make_attrs(attrs)
    types = opdef.infer_types(tuple(value.type for value in inputs), full_attrs)
    return Node(op, tuple(inputs), tuple(Value(t) for t in types), full_attrs, None, loc)


def make_const(array: np.ndarray, name: str = "", loc: str = "", hint: str = "", *,
               copy: bool = True) -> Node:
    """A `const` node holding `array` (copied unless `copy=False`: an array made by the pass
    itself, which nothing else writes), optionally named."""
    node = make_node("const", (), loc, value=Const(array, copy=copy), name=name or None)
    if not hint:
        return node
    return node.replace(outputs=(Value(node.output.type, hint),))


def constant_of(value: Value, producers: Producers) -> np.ndarray | None:
    """The array of `value` when a `const` node with loaded data defines it, else None."""
    node = producers.get(value)
    if node is None or node.op != "const":
        return None
    const = node.attrs.get("value")
    return const.data if isinstance(const, Const) else None


def same_types(old: Sequence[Value], new: Sequence[Value]) -> bool:
    """True when the replacement values have exactly the old values' types (shape, dtype,
    layout): a rewrite must never change what a user of the value sees."""
    return len(old) == len(new) and all(a.type == b.type for a, b in zip(old, new, strict=True))
