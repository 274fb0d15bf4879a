"""plan-memory: place every intermediate value at an offset in one arena.

    graph @f(%x: f32[64]) -> (f32[64]) {
      %0 = exp(%x) : f32[64]
      %1 = relu(%0) : f32[64]
      %2 = neg(%1) : f32[64]
      return %2
    }
    // after plan-memory
    graph @f(%x: f32[64]) -> (f32[64]) {
      %0 = exp(%x) {buffer = 0, offset = 0} : f32[64]
      %1 = relu(%0) {buffer = 0, inplace = 0, offset = 0} : f32[64]
      %2 = neg(%1) {buffer = -1} : f32[64]
      return %2
    }

The annotations, which a runtime reads to allocate one arena per call:
- `buffer = 0, offset = N`: the value lives in the arena at byte `offset` (a multiple of the
  alignment). Two values overlap in bytes only if they are never live at the same node.
- `buffer = -1`: the value is a graph output. It is written straight into its own result
  array, which the caller receives; it is never in the arena, so nothing overwrites it.
  (A graph output that is a graph input or a constant has no node to annotate: the runtime
  copies it.)
- `inplace = K`: the result overwrites input K, which dies at this node (elementwise ops and
  `fused` regions of kind "elementwise" only, same element count, byte size and layout).
- A node with several results carries `offsets = [...]` instead of `buffer`/`offset`: one
  arena offset per result, -1 for a result that is a graph output.

Graph inputs (the caller's) and constants (read-only weights) get no annotations. Region bodies
are not planned: their values live in registers or kernel scratch. Liveness and packing live in
`passes/_liveness.py`; `memory_report(graph)` summarizes a plan for `exe.report()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.passes._liveness import (
    Slot,
    align,
    arena_values,
    build_slots,
    live_intervals,
    pack,
    peak_live_bytes,
)

from ember.ir.graph import Graph, Node, Value
from ember.pipeline import Pass

PLAN_ATTRS = ("buffer", "offset", "inplace", "offsets")
OUTPUT_BUFFER = -1  # `buffer` of a graph output: the caller's result array, not the arena


@dataclass(frozen=True)
class PlanMemory(Pass):
    """Assign arena offsets to intermediates (liveness, greedy-by-size packing, in-place reuse)."""

    name: ClassVar[str] = "plan-memory"
    alignment: int = 64  # bytes; every arena offset is a multiple of it
    inplace: bool = True  # let elementwise results overwrite an input that dies there

    def run(self, graph: Graph) -> Graph:
        if self.alignment <= 0:
            raise ValueError(f"plan-memory: alignment must be positive, got {self.alignment}")
        slots, slot_of, reuses = build_slots(graph, self.alignment, self.inplace)
        pack(slots, self.alignment)
        outputs = set(graph.outputs)
        nodes = tuple(
            _annotate(node, slot_of, outputs, reuses.get(node)) for node in graph.nodes
        )
        if all(new is old for new, old in zip(nodes, graph.nodes, strict=True)):
            return graph
        return graph.replace(nodes=nodes)


def _annotate(node: Node, slot_of: dict[Value, Slot], outputs: set[Value],
              inplace: int | None) -> Node:
    """The node with its plan attributes replaced; the node itself if they are unchanged."""
    attrs = node.attrs.without(*PLAN_ATTRS)
    if node.op == "const":
        pass  # weights are read-only and never in the arena
    elif len(node.outputs) == 1 and node.output in outputs:
        attrs = attrs.replace(buffer=OUTPUT_BUFFER)
    elif len(node.outputs) == 1:
        attrs = attrs.replace(buffer=0, offset=slot_of[node.output].offset)
    elif node.outputs:
        offsets = tuple(
            OUTPUT_BUFFER if value in outputs else slot_of[value].offset for value in node.outputs
        )
        attrs = attrs.replace(offsets=offsets)
    if inplace is not None:
        attrs = attrs.replace(inplace=inplace)
    return node if attrs == node.attrs else node.replace(attrs=attrs)


# ---------------------------------------------------------------------------------------------
# The report `exe.report()` prints.


@dataclass(frozen=True)
class MemoryReport:
    """What a memory plan costs, in bytes (sizes rounded up to the alignment)."""

    arena_bytes: int  # the arena the plan needs
    naive_bytes: int  # one buffer per intermediate, no reuse
    lower_bound_bytes: int  # the most bytes live at one node: no plan can do better
    output_bytes: int  # graph outputs, handed to the caller outside the arena
    inplace_count: int  # nodes that overwrite an input
    intermediates: int  # values in the arena

    def __str__(self) -> str:
        ratio = self.arena_bytes / self.naive_bytes if self.naive_bytes else 1.0
        return (
            f"memory: arena {_format_bytes(self.arena_bytes)} for {self.intermediates} "
            f"intermediates ({ratio:.0%} of naive {_format_bytes(self.naive_bytes)}; "
            f"lower bound {_format_bytes(self.lower_bound_bytes)}), "
            f"{self.inplace_count} in place, outputs {_format_bytes(self.output_bytes)}"
        )


def memory_report(graph: Graph, alignment: int = 64) -> MemoryReport:
    """Summarize the memory plan of `graph`, planning it first if it carries no plan.

    The lower bound counts values that share storage in place (`inplace` attributes) once.
    """
    if not is_planned(graph):
        graph = PlanMemory(alignment=alignment).run(graph)
    inplace_count = sum(1 for node in graph.nodes if "inplace" in node.attrs)
    slots, _, _ = build_slots(graph, alignment, inplace=inplace_count > 0)
    offsets = value_offsets(graph)
    values = arena_values(graph)
    sizes = {value: align(value.type.nbytes, alignment) for value in values}
    return MemoryReport(
        arena_bytes=max((offsets[v] + sizes[v] for v in values), default=0),
        naive_bytes=sum(sizes.values()),
        lower_bound_bytes=peak_live_bytes(slots, len(graph.nodes)),
        output_bytes=sum(v.type.nbytes for v in dict.fromkeys(graph.outputs)),
        inplace_count=inplace_count,
        intermediates=len(values),
    )


def kept_across(graph: Graph, boundary: Value) -> list[Value]:
    """Arena values defined before the node that computes `boundary` and read after it,
    largest first. In a train step whose boundary is the loss these are the activations
    kept for the backward pass (what PyTorch's autograd saves), and, conservatively, any
    other value the schedule happens to compute early and keep across the loss."""
    index = next((i for i, node in enumerate(graph.nodes) if boundary in node.outputs), None)
    if index is None:
        return []
    kept = [value for value, interval in live_intervals(graph).items()
            if interval.start < index < interval.end]
    return sorted(kept, key=lambda value: -value.type.nbytes)


def is_planned(graph: Graph) -> bool:
    """True when some node carries a memory plan annotation."""
    return any(key in node.attrs for node in graph.nodes for key in ("buffer", "offsets"))


def value_offsets(graph: Graph) -> dict[Value, int]:
    """The arena offset of every planned value (-1 for graph outputs), from the annotations."""
    found: dict[Value, int] = {}
    for node in graph.nodes:
        if "offsets" in node.attrs:
            found.update(zip(node.outputs, node.attrs["offsets"], strict=True))  # type: ignore[arg-type]
        elif node.attrs.get("buffer") == 0:
            found[node.output] = int(node.attrs["offset"])  # type: ignore[arg-type]
        elif node.attrs.get("buffer") == OUTPUT_BUFFER:
            found[node.output] = OUTPUT_BUFFER
    return found


def _format_bytes(count: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count} B"
