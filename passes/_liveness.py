"""Liveness and arena packing for `plan-memory` (an analysis module; it defines no pass).

Time is the node index. A value is live from the node that defines it to the last node that
reads it, both inclusive, so a node's inputs and outputs are live at the same time, as a kernel
reading its inputs while writing its output needs:

    %0 = exp(%x)        t=0   %0 live [0, 2]
    %1 = relu(%x)       t=1   %1 live [1, 2]
    %2 = add(%0, %1)    t=2   %2 live [2, ...]

Only the arena values get storage here: results of nodes other than `const` that are not graph
outputs (graph inputs belong to the caller, constants are read-only weights, graph outputs are
handed to the caller). A `Slot` is one piece of storage: a value, plus the values that reuse its
bytes in place. Slots are packed with the "greedy by size" heuristic of TFLite and TVM: largest
first, each into the tightest gap left by the slots it overlaps in time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import OPS, VIEW_OPS


@dataclass(frozen=True)
class Interval:
    """Node indices `[start, end]`, both inclusive, during which a value must be kept."""

    start: int
    end: int

    def overlaps(self, other: Interval) -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass(eq=False)
class Slot:
    """One piece of arena storage: the values that share it, one after another in time."""

    values: list[Value]
    size: int  # bytes, rounded up to the alignment
    interval: Interval
    offset: int = field(default=0)


def align(size: int, alignment: int) -> int:
    """`size` rounded up to a multiple of `alignment`."""
    return -(-size // alignment) * alignment


def arena_values(graph: Graph) -> list[Value]:
    """Values that live in the arena, in definition order (see the module docstring)."""
    outputs = set(graph.outputs)
    return [
        value
        for node in graph.nodes
        if node.op != "const"
        for value in node.outputs
        if value not in outputs
    ]


def ancestors(graph: Graph, values: Iterable[Value]) -> set[Node]:
    """The nodes `values` depend on, their own producers included (a train step's forward
    part: the ancestors of its loss)."""
    producers = graph.producers
    found: set[Node] = set()
    stack = list(values)
    while stack:
        node = producers.get(stack.pop())
        if node is None or node in found:
            continue
        found.add(node)
        stack.extend(node.inputs)
    return found


def live_intervals(graph: Graph) -> dict[Value, Interval]:
    """The live interval of every arena value. A value nobody reads lives at its node only."""
    defined = {value: index for index, node in enumerate(graph.nodes) for value in node.outputs}
    last_use = dict(defined)
    for index, node in enumerate(graph.nodes):
        for value in node.inputs:
            if value in last_use:
                last_use[value] = index
    return {value: Interval(defined[value], last_use[value]) for value in arena_values(graph)}


def is_elementwise(node: Node) -> bool:
    """True when each output element depends only on the same-index input elements."""
    if node.body is not None:
        return node.attrs.get("kind") == "elementwise" and all(
            inner.op == "const" or is_elementwise(inner) for inner in node.body.nodes
        )
    opdef = OPS.get(node.op)
    return opdef is not None and opdef.elementwise


def inplace_input(node: Node, index: int, intervals: dict[Value, Interval]) -> int | None:
    """The input position whose storage the node's single output may overwrite, or None.

    The input must be an arena value that dies at this node, with the output's element count,
    byte size and layout (so element i of the output is written exactly where element i of
    the input was read, after it was read).
    """
    if len(node.outputs) != 1 or node.output not in intervals or not is_elementwise(node):
        return None
    output = node.output.type
    for position, value in enumerate(node.inputs):
        interval = intervals.get(value)
        if interval is None or interval.end != index:
            continue
        if (value.type.size, value.type.nbytes, value.type.layout) == (
            output.size, output.nbytes, output.layout
        ):
            return position
    return None


def view_input(node: Node, index: int, intervals: dict[Value, Interval]) -> int | None:
    """0 when the node is a reshape whose input dies here, in the arena, with the output's byte
    size and the plain layout: the output is the same bytes, so it takes over the storage and
    the reshape costs no copy (the lowering emits none); None otherwise."""
    if node.op not in VIEW_OPS or len(node.outputs) != 1 or node.output not in intervals:
        return None
    value = node.inputs[0]
    interval = intervals.get(value)
    if interval is None or interval.end != index:
        return None
    source, output = value.type, node.output.type
    if source.nbytes != output.nbytes or source.layout or output.layout:
        return None
    return 0


def build_slots(graph: Graph, alignment: int, inplace: bool
                ) -> tuple[list[Slot], dict[Value, Slot], dict[Node, int]]:
    """Storage slots, the slot of each arena value, and the in-place input of each node."""
    intervals = live_intervals(graph)
    slot_of: dict[Value, Slot] = {}
    reuses: dict[Node, int] = {}
    for index, node in enumerate(graph.nodes):
        position = inplace_input(node, index, intervals) if inplace else None
        if position is None and inplace:
            position = view_input(node, index, intervals)
        if position is not None:
            slot = slot_of[node.inputs[position]]  # before -> after: the output takes it over
            slot.values.append(node.output)
            slot.interval = Interval(slot.interval.start, intervals[node.output].end)
            slot_of[node.output] = slot
            reuses[node] = position
            continue
        for value in node.outputs:
            if value in intervals:
                size = align(value.type.nbytes, alignment)
                slot_of[value] = Slot([value], size, intervals[value])
    slots = list(dict.fromkeys(slot_of.values()))
    return slots, slot_of, reuses


def pack(slots: Sequence[Slot], alignment: int) -> int:
    """Give every slot an aligned offset (greedy by size, best fit); return the arena size.

    The slots a new one overlaps in time are found through the node indices they are live at,
    so the work follows the overlaps, not the square of the slot count."""
    placed_at: dict[int, list[Slot]] = {}  # node index -> placed slots live there
    order = sorted(slots, key=lambda s: (-s.size, s.interval.start, s.interval.end))
    for slot in order:
        steps = range(slot.interval.start, slot.interval.end + 1)
        overlapping = dict.fromkeys(s for step in steps for s in placed_at.get(step, ()))
        busy = sorted((s.offset, s.offset + s.size) for s in overlapping if s.size > 0)
        slot.offset = _best_gap(busy, slot.size, alignment)
        for step in steps:
            placed_at.setdefault(step, []).append(slot)
    return max((s.offset + s.size for s in slots), default=0)


def _best_gap(busy: Iterable[tuple[int, int]], size: int, alignment: int) -> int:
    """The start of the smallest free gap between busy byte ranges that fits `size`, or the
    first free byte above them all."""
    best: tuple[int, int] | None = None  # (gap size, offset)
    cursor = 0
    for start, end in busy:
        gap = start - cursor
        if gap >= size and (best is None or gap < best[0]):
            best = (gap, cursor)
        cursor = max(cursor, align(end, alignment))
    return cursor if best is None else best[1]


def peak_live_bytes(slots: Sequence[Slot], steps: int) -> int:
    """The largest total size of slots live at one node: no packing can use less."""
    totals = [0] * max(steps, 1)
    for slot in slots:
        for step in range(slot.interval.start, slot.interval.end + 1):
            totals[step] += slot.size
    return max(totals)
