"""rematerialize: recompute cheap elementwise values in the backward pass instead of keeping them.

A train step's graph computes a loss (its first output, the boundary) and then gradients and
updates from it. Every forward value that the backward part reads is kept from the moment it is
computed until its last backward read: the activations that dominate a train step's memory.
When such a value is an elementwise function of values the backward part keeps anyway, keeping
it is redundant: a copy of its node placed right before its first backward reader recomputes it,
and fusion folds that copy into the reader's kernel, so it is never stored.

    graph @step(%c: f32[32,16,32,32], ...) -> (f32[], ...) {
      %d = sub(%c, %mean)            // forward
      %xhat = mul(%d, %inv)          // forward: kept for dgamma, beside %c
      ...
      %loss = ...
      %dgamma = sum(mul(%g, %xhat))  // backward
    }
    // after: the backward reads its own %xhat' = mul(sub(%c, %mean), %inv); only %c and the
    // per-channel %mean and %inv stay live across the loss

Batch normalization in training mode keeps its centred input, the normalized input, its output
and the ReLU after it, all the size of the convolution's output; recomputed from that output and
per-channel statistics, only the convolution's output is kept (a two-stage BatchNorm CNN at
batch 32: 16.9 MiB kept across the loss -> 3.8 MiB, the step's arena 28.9 -> 13.9 MiB, its
time unchanged).

A value of at least MIN_BYTES that a backward node after the loss reads is recomputed when
its node is elementwise (no region, deterministic: dropout hashes its key) and the inputs its
copy needs beyond what is available anyway (values kept for other readers, graph inputs,
constants, values returned to the caller) total at most a quarter of its bytes (per-channel
statistics, scalars). Unkept elementwise values and views (reshape, expand_dims) on the way
are recomputed too, up to CHAIN_DEPTH of them. Rounds repeat until nothing changes. Backward
nodes placed before the loss (BatchNorm's running-statistics updates) read forward values
while they are live anyway and are left alone. The graph's first output is the boundary. The
pass runs on train steps (`ember.train_step`'s pipeline), after CSE, which would merge a copy
with its original, and before `fuse{phases=true}`, which keeps the copies out of the forward
kernels.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import ClassVar

from ember.passes._liveness import ancestors

from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import OPS
from ember.pipeline import Pass

EXTRA_INPUT_SHARE = 4  # a copy may keep new inputs of at most 1/4 of the value's bytes
CHAIN_DEPTH = 6  # unkept elementwise values a copy may recompute on its way to kept ones
MIN_BYTES = 1024  # smaller values (per-channel statistics) cost less kept than recomputed
VIEWS = frozenset({"reshape", "expand_dims", "squeeze", "flatten"})  # free on a copy's way


@dataclass(frozen=True)
class Rematerialize(Pass):
    """Recompute elementwise forward values in the backward pass of a train step."""

    name: ClassVar[str] = "rematerialize"

    def run(self, graph: Graph) -> Graph:
        graph, copies = _rematerialize(graph)
        return _schedule(graph, copies) if copies else graph


def recomputed(graph: Graph) -> list[Node]:
    """The forward nodes whose results `rematerialize` would recompute in the backward pass
    of `graph` (what `ember.train_step`'s report lists), in graph order."""
    _, copies = _rematerialize(graph)
    producers = graph.producers
    return [producers[value] for value in copies]


def _rematerialize(graph: Graph) -> tuple[Graph, dict[Value, Node]]:
    """The graph with its backward part reading copies (not yet placed), and the copies by
    the forward value each replaces."""
    copies: dict[Value, Node] = {}  # forward value -> its copy in the backward part
    if not graph.outputs or graph.outputs[0] in graph.inputs:
        return graph, copies
    forward = ancestors(graph, graph.outputs[:1])
    while True:
        chosen = _candidates(graph, forward, copies)
        if not chosen:
            return graph, copies
        for node in chosen:  # in forward order, so a chain's copies read each other
            renamed = node.with_inputs_renamed({v: c.output for v, c in copies.items()})
            copies[node.output] = renamed.replace(outputs=(Value(node.output.type,
                                                                 node.output.hint),))
        graph = _rewire(graph, forward, copies)


def _after_loss(graph: Graph) -> set[Node]:
    """The nodes placed after the one that computes the loss (graph output 0)."""
    loss = graph.producers[graph.outputs[0]]
    index = graph.nodes.index(loss)
    return set(graph.nodes[index + 1:])


def _kept(graph: Graph, forward: set[Node]) -> set[Value]:
    """Forward values that backward nodes after the loss read (the graph's inputs and
    constants aside). A backward node placed before the loss (a BatchNorm running-statistics
    update) reads its forward values while they are live anyway."""
    producers = graph.producers
    late = _after_loss(graph)
    returned = set(graph.outputs)  # the caller's arrays, outside the arena
    kept: set[Value] = set()
    for node in graph.nodes:
        if node in forward or node not in late:
            continue
        for value in node.inputs:
            producer = producers.get(value)
            if (producer is not None and producer in forward and producer.op != "const"
                    and value not in returned):
                kept.add(value)
    return kept


def _candidates(graph: Graph, forward: set[Node], copies: dict[Value, Node]) -> list[Node]:
    """The forward nodes this round copies into the backward part, in graph order: those
    whose kept result is cheap to recompute, with the chains of unkept elementwise values
    their copies need."""
    producers = graph.producers
    kept = _kept(graph, forward)
    available = kept | set(graph.outputs)  # what a copy may read at no cost
    chosen: dict[Node, None] = {}
    for node in graph.nodes:
        if node not in forward or not _recomputable(node) or node.output not in kept:
            continue
        if node.output.type.nbytes < MIN_BYTES:
            continue
        chain: dict[Node, None] = {}
        extra = _extra_bytes(node, producers, forward, available, copies, chain, CHAIN_DEPTH)
        if extra * EXTRA_INPUT_SHARE <= node.output.type.nbytes:
            chosen.update(chain)
            chosen[node] = None
    order = {node: index for index, node in enumerate(graph.nodes)}
    return sorted(chosen, key=order.__getitem__)


def _recomputable(node: Node, views: bool = False) -> bool:
    """An elementwise node (or, on the way to kept values, a view of one value)."""
    if len(node.outputs) != 1 or node.body is not None or node.op not in OPS:
        return False
    return OPS[node.op].elementwise or (views and node.op in VIEWS)


def _extra_bytes(node: Node, producers: dict[Value, Node], forward: set[Node],
                 available: set[Value], copies: dict[Value, Node], chain: dict[Node, None],
                 depth: int) -> int:
    """Bytes a copy of `node` would newly keep across the loss: its inputs that are neither
    available anyway (kept, or returned to the caller) nor recomputable themselves (up to
    `depth` more elementwise steps, which join `chain`)."""
    extra = 0
    for value in dict.fromkeys(node.inputs):
        producer = producers.get(value)
        if producer is None or producer.op == "const" or value in available or value in copies:
            continue
        if depth > 0 and producer in forward and _recomputable(producer, views=True):
            inner: dict[Node, None] = {}
            below = _extra_bytes(producer, producers, forward, available, copies, inner,
                                 depth - 1)
            if below < value.type.nbytes:
                chain.update(inner)
                chain[producer] = None
                extra += below
                continue
        extra += value.type.nbytes
    return extra


def _rewire(graph: Graph, forward: set[Node], copies: dict[Value, Node]) -> Graph:
    """Backward nodes after the loss (and copies) read the copies instead of the forward
    values."""
    rename = {value: copy.output for value, copy in copies.items()}
    late = _after_loss(graph)
    nodes = tuple(node.with_inputs_renamed(rename) if node in late and node not in forward
                  else node for node in graph.nodes)
    for value, copy in list(copies.items()):
        copies[value] = copy.with_inputs_renamed(rename)
    return graph.replace(nodes=nodes)


def _schedule(graph: Graph, copies: dict[Value, Node]) -> Graph:
    """The graph with the copies in it, each just before the first node that reads it: a
    topological order that keeps every other node's relative order."""
    nodes = list(graph.nodes)
    extra = list(copies.values())
    order = {node: 2 * index for index, node in enumerate(nodes)}
    readers: dict[Value, list[Node]] = {}
    for node in nodes + extra:
        for value in node.inputs:
            readers.setdefault(value, []).append(node)
    # A copy's rank: just below its earliest reader's; copies read by copies go lower still.
    pending = {copy: None for copy in extra}
    while pending:
        for copy in list(pending):
            ranks = [order.get(reader) for reader in readers.get(copy.output, ())]
            if any(rank is None for rank in ranks):
                continue
            order[copy] = min(ranks, default=2 * len(nodes)) - 1
            del pending[copy]
    producers = {value: node for node in nodes + extra for value in node.outputs}
    waiting = {node: sum(1 for v in dict.fromkeys(node.inputs) if v in producers)
               for node in nodes + extra}
    position = {node: index for index, node in enumerate(nodes + extra)}  # ties, in order
    ready = [(order[node], position[node], node) for node, count in waiting.items()
             if count == 0]
    heapq.heapify(ready)
    placed: list[Node] = []
    while ready:
        _, _, node = heapq.heappop(ready)
        placed.append(node)
        for value in node.outputs:
            for reader in dict.fromkeys(readers.get(value, ())):
                waiting[reader] -= 1
                if waiting[reader] == 0:
                    heapq.heappush(ready, (order[reader], position[reader], reader))
    assert len(placed) == len(nodes) + len(extra), "rematerialize: the graph has a cycle"
    return graph.replace(nodes=tuple(placed))
