"""Building the fused graph from a `FusionPlan`: one `fused` region node per group.

A region's parameters are the values its members read from outside (in order of first use); a
small constant read by the group is copied into the region instead (and the outer copy is
dropped when nothing else reads it). The fused node's results are the members' values that
something outside reads (see `escaping_values`), in member order. Groups and the remaining
nodes are then placed in a topological order that keeps the original order wherever it can
(ties broken by each unit's first node), so the result is deterministic.
"""

from __future__ import annotations

import networkx

from ember.ir.attrs import Attrs
from ember.ir.graph import Graph, Node, Value

from ._fusion_rules import Group, escaping_values, is_small_constant


def build_fused_graph(graph: Graph, groups: list[Group]) -> Graph:
    """`graph` with every group replaced by a fused node; `graph` itself when there is none."""
    if not groups:
        return graph
    unit_of = {i: i for i in range(len(graph.nodes))}  # node index -> its unit's first index
    for group in groups:
        for member in group.members:
            unit_of[member] = group.members[0]
    by_unit = {group.members[0]: group for group in groups}
    copied = _copied_constants(graph, groups)
    rename: dict[Value, Value] = {}
    nodes: list[Node] = []
    for unit in _unit_order(graph, unit_of, copied):
        if unit in by_unit:
            nodes.append(_fused_node(graph, by_unit[unit], rename))
        else:
            nodes.append(graph.nodes[unit].with_inputs_renamed(rename))
    outputs = tuple(rename.get(v, v) for v in graph.outputs)
    return graph.replace(nodes=tuple(nodes), outputs=outputs)


def _copied_constants(graph: Graph, groups: list[Group]) -> set[int]:
    """Indices of outer constants that every reader copies into its region (so they go)."""
    inside = {graph.nodes[m] for group in groups for m in group.members}
    anchors = {graph.nodes[g.anchor] for g in groups if g.anchor is not None}
    index = {node: i for i, node in enumerate(graph.nodes)}
    gone = set()
    for node in graph.nodes:
        if not is_small_constant(node) or node.output in graph.outputs:
            continue
        readers = graph.users.get(node.output, [])
        if readers and all(r in inside and r not in anchors for r in readers):
            gone.add(index[node])  # before -> after: const outside -> const inside each region
    return gone


def _unit_order(graph: Graph, unit_of: dict[int, int], dropped: set[int]) -> list[int]:
    """Units (groups and single nodes) in a topological order closest to the original one."""
    index = {node: i for i, node in enumerate(graph.nodes)}
    order = networkx.DiGraph()
    order.add_nodes_from(sorted(set(unit_of.values()) - dropped))
    for i, node in enumerate(graph.nodes):
        for value in node.inputs:
            producer = graph.producer(value)
            if producer is None or index[producer] in dropped:
                continue
            if unit_of[index[producer]] != unit_of[i]:
                order.add_edge(unit_of[index[producer]], unit_of[i])
    return list(networkx.lexicographical_topological_sort(order))


def _fused_node(graph: Graph, group: Group, rename: dict[Value, Value]) -> Node:
    """The region node for one group; adds `outer value -> fused result` entries to `rename`."""
    members = [graph.nodes[i] for i in group.members]
    defined = {v for node in members for v in node.outputs}
    params: dict[Value, Value] = {}  # outer value -> region parameter
    local: dict[Value, Value] = {}  # outer constant -> its copy inside the region
    body: list[Node] = []
    for node in members:
        is_anchor = group.anchor is not None and node is graph.nodes[group.anchor]
        for value in node.inputs:
            if value in defined or value in params or value in local:
                continue
            producer = graph.producer(value)
            if is_small_constant(producer) and not is_anchor:
                local[value] = Value(value.type, value.hint)
                body.append(producer.replace(outputs=(local[value],)))  # type: ignore[union-attr]
            else:
                params[value] = Value(value.type, value.hint)
        body.append(node.with_inputs_renamed({**params, **local}))
    yields = tuple(escaping_values(graph, group.members))
    results = tuple(Value(v.type, v.hint) for v in yields)
    rename.update(zip(yields, results, strict=True))
    region = Graph("region", tuple(params.values()), tuple(body), yields)
    inputs = tuple(rename.get(v, v) for v in params)
    return Node("fused", inputs, results, Attrs(kind=group.kind), region, members[0].loc)
