"""Compile-time constants and dead-node cleanup shared by `fold-batchnorm` and `layout`.

Both passes replace weights with new constants computed at compile time (folded or packed),
which leaves the old weight nodes (and, for `linear` layers, their `transpose`) without users.
`constant_array` evaluates a value computed only from constants; `drop_newly_dead` removes the
nodes a rewrite left unused, but keeps dead code that was already there, so that cleaning up
stays the job of `dce`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import OPS
from ember.pipeline import is_pure

CONSTANT_LIMIT = 1 << 24  # elements: larger compile-time arrays are not worth evaluating


def constant_array(graph: Graph, value: Value) -> np.ndarray | None:
    """The array of `value` when it is computed from constants alone, else None."""
    node = graph.producer(value)
    if node is None or node.body is not None or not is_pure(node):
        return None
    if value.type.layout or value.type.size > CONSTANT_LIMIT:
        return None
    if node.op == "const":
        return node.attrs["value"].data  # type: ignore[union-attr]
    arrays = [constant_array(graph, operand) for operand in node.inputs]
    if any(array is None for array in arrays):
        return None
    opdef = OPS[node.op]
    with np.errstate(all="ignore"):
        results = opdef.evaluate(tuple(arrays), node.attrs)  # type: ignore[arg-type]
    return np.asarray(results[node.outputs.index(value)])


def live_nodes(nodes: Iterable[Node], outputs: Iterable[Value], roots: set[Node]) -> set[Node]:
    """Nodes that an output, an impure node or a node of `roots` depends on."""
    needed = set(outputs)
    live: set[Node] = set()
    for node in reversed(list(nodes)):
        if node in roots or not is_pure(node) or any(v in needed for v in node.outputs):
            live.add(node)
            needed.update(node.inputs)
    return live


def drop_newly_dead(before: Graph, nodes: list[Node], outputs: tuple[Value, ...]) -> Graph:
    """`before` rebuilt from `nodes`, without the nodes the rewrite left unused."""
    already_dead = set(before.nodes) - live_nodes(before.nodes, before.outputs, set())
    live = live_nodes(nodes, outputs, already_dead & set(nodes))
    kept = tuple(node for node in nodes if node in live)
    return before.replace(nodes=kept, outputs=outputs)


def single_user(graph: Graph, value: Value) -> Node | None:
    """The only node that reads `value`, when `value` is not also a graph output."""
    users = graph.users.get(value, [])
    if len(users) != 1 or value in graph.outputs:
        return None
    return users[0]
