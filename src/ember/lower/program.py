"""Graph -> Program: one kernel per node, and where each value lives.

    program = lower_graph(graph)
    print(program)        # every kernel as C-like loop IR, then the call sequence

Values live in one of four places (`Slot.kind`): the caller's input and output arrays, the
model's constants, or the arena at a byte offset (from `plan-memory`'s `offset`/`offsets`
attributes, or laid out one after another when the graph was not planned). A fused region
that is not purely elementwise lowers node by node inside one kernel, its inner values in
kernel scratch memory at the end of the arena.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.errors import LoweringError
from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import OPS, VIEW_OPS
from ember.ir.types import DType
from ember.lower.aligned import ALIGNMENT, aligned_empty, is_aligned
from ember.lower.loops import Buffer, Kernel, Names, Stmt, format_kernel
from ember.lower.ops_elementwise import is_elementwise_region, region_statements
from ember.lower.rules import LowerContext, lowering_for, scheduled_lowering_for
from ember.target import Target


@dataclass(frozen=True)
class Slot:
    """Where a value's bytes are: ("input"|"output"|"const", index) or ("arena", byte offset)."""

    kind: str
    index: int


@dataclass
class Call:
    kernel: Kernel
    slots: list[Slot]  # one per kernel buffer
    node: Node | None = None  # the graph node the kernel computes


@dataclass
class Program:
    """The lowered graph: kernels in call order, constants, and the arena size."""

    name: str
    graph: Graph
    calls: list[Call] = field(default_factory=list)
    constants: list[np.ndarray] = field(default_factory=list)
    arena_bytes: int = 0
    # outputs not written in place by a kernel (graph inputs, constants, repeated outputs)
    output_copies: list[tuple[int, Slot]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # status code k - 1 -> run-time message
    target: Target = field(default_factory=Target.host)  # what the kernels were lowered for

    def __str__(self) -> str:
        parts = [format_kernel(call.kernel) for call in self.calls]
        sequence = [f"  {c.kernel.name}({', '.join(f'{s.kind}[{s.index}]' for s in c.slots)})"
                    for c in self.calls]
        parts.append(f"program @{self.name} (arena {self.arena_bytes} bytes):\n" +
                     "\n".join(sequence))
        return "\n\n".join(parts)


def _aligned(data: np.ndarray) -> np.ndarray:
    """`data` when it is C-contiguous and aligned (the packers make their arrays so), else an
    aligned copy: packed GEMM panels are read with aligned vector loads. A kernel's constants
    are made by its rule, which keeps no other use of them."""
    if is_aligned(data):
        return data
    copy = aligned_empty(data.size, data.dtype).reshape(data.shape)
    copy[...] = data
    return copy


def _align(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


class _Layout:
    """Decides the slot of every value of the graph."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.slots: dict[Value, Slot] = {}
        self.constants: list[np.ndarray] = []
        self.arena = 0
        planned = any("offset" in n.attrs or "offsets" in n.attrs for n in graph.nodes)
        for index, value in enumerate(graph.inputs):
            self.slots[value] = Slot("input", index)
        for node in graph.nodes:
            self._place_node(node, planned)

    def _place_node(self, node: Node, planned: bool) -> None:
        if node.op == "const":
            data = node.attrs["value"].data  # type: ignore[union-attr]
            if data is None:
                raise LoweringError(str(node), "constant data is not loaded")
            self.slots[node.outputs[0]] = Slot("const", len(self.constants))
            self.constants.append(np.ascontiguousarray(data))
            return
        offsets = self._offsets(node) if planned else [None] * len(node.outputs)
        for value, offset in zip(node.outputs, offsets, strict=True):
            self.slots[value] = self._place_value(value, offset)

    def _offsets(self, node: Node) -> list[int | None]:
        if "offsets" in node.attrs:
            return [int(o) for o in node.attrs["offsets"]]  # type: ignore[union-attr]
        return [int(node.attrs["offset"]) if "offset" in node.attrs else  # type: ignore[arg-type]
                -1 if node.attrs.get("buffer") == -1 else None]

    def _place_value(self, value: Value, offset: int | None) -> Slot:
        outputs = [i for i, v in enumerate(self.graph.outputs) if v is value]
        if outputs and offset in (None, -1) and not self._output_taken(outputs[0]):
            return Slot("output", outputs[0])
        if offset is None or offset == -1:
            offset = self.arena
            self.arena += _align(value.type.nbytes)
        self.arena = max(self.arena, _align(offset + value.type.nbytes))
        return Slot("arena", offset)

    def _output_taken(self, index: int) -> bool:
        return any(s == Slot("output", index) for s in self.slots.values())


def lower_graph(graph: Graph, options: dict[str, Any] | None = None,
                target: Target | None = None) -> Program:
    """Lower every node of an optimized graph to a kernel and lay out its buffers.

    `target` (default: the host) chooses the backend's rules at opt_level 3 and gives them
    their parameters (vector width, cores)."""
    target = target if target is not None else Target.host()
    layout = _Layout(graph)
    program = Program(graph.name, graph, constants=layout.constants, target=target)
    scratch_end = layout.arena
    for number, node in enumerate(graph.nodes):
        if node.op == "const":
            continue
        if (node.op in VIEW_OPS and node.attrs.get("inplace") == 0
                and layout.slots[node.inputs[0]] == layout.slots[node.outputs[0]]):
            continue  # the same bytes under another shape: nothing to run
        known = {i: layout.constants[layout.slots[v].index] for i, v in enumerate(node.inputs)
                 if layout.slots[v].kind == "const"}
        kernel, scratch, made = _lower_node(node, f"k{number}_{node.op}", options or {},
                                            program.errors, target, known)
        slots = [layout.slots[v] for v in node.inputs] + [layout.slots[v] for v in node.outputs]
        offset = layout.arena
        for buffer in scratch:
            slots.append(Slot("arena", offset))
            offset += _align(buffer.size * buffer.dtype.itemsize)
        for data in made:  # compile-time constants of the kernel (packed weights)
            slots.append(Slot("const", len(layout.constants)))
            layout.constants.append(_aligned(data))
        if len(kernel.buffers) > len(slots):  # the status word, last
            slots.append(Slot("status", 0))
        scratch_end = max(scratch_end, offset)
        program.calls.append(Call(kernel, slots, node))
    program.arena_bytes = scratch_end
    for index, value in enumerate(graph.outputs):
        slot = layout.slots[value]
        if slot != Slot("output", index):
            program.output_copies.append((index, slot))
    return program


def _lower_node(node: Node, name: str, options: dict[str, Any], errors: list[str],
                target: Target, known: dict[int, np.ndarray] | None = None
                ) -> tuple[Kernel, list[Buffer], list[np.ndarray]]:
    """The kernel of one node, its scratch buffers, and the constants it made (packed weights),
    whose buffers follow the scratch ones."""
    inputs = [Buffer(f"in{i}", v.type.dtype, v.type.size) for i, v in enumerate(node.inputs)]
    outputs = [Buffer(f"out{i}", v.type.dtype, v.type.size) for i, v in enumerate(node.outputs)]
    ctx = LowerContext(node, inputs, outputs, Names(), [], options, errors,
                       known={inputs[i]: data for i, data in (known or {}).items()},
                       target=target)
    body = _lower_into(node, ctx)
    status = (ctx.status,) if ctx.status is not None else ()
    made = [buffer for buffer, _ in ctx.made_constants]
    buffers = (*inputs, *outputs, *ctx.scratch_buffers, *made, *status)
    source = str(node.replace(body=None)) if node.body is not None else str(node)
    attrs: dict[str, object] = {}
    if "inplace" in node.attrs:
        attrs["may_alias"] = (f"in{node.attrs['inplace']}", "out0")
    kernel = Kernel(name, buffers, body, source.split("\n")[0], attrs)
    return kernel, ctx.scratch_buffers, [data for _, data in ctx.made_constants]


def _lower_into(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    try:
        if node.body is not None:
            return _lower_region(node.body, ctx)
        if _needs_widening(node):
            return _lower_widened(node, ctx)
        fast = (scheduled_lowering_for(ctx.target, node.op)
                if ctx.options.get("opt_level", 3) >= 3 else None)
        statements = fast(node, ctx) if fast is not None else None
        if statements is not None:
            return tuple(statements)
        rule = lowering_for(node.op)
        if rule is None:
            raise ctx.fail(f"no lowering for op {node.op!r}")
        return tuple(rule(node, ctx))
    except LoweringError:
        raise
    except Exception as err:  # a rule's bug: keep the node in the message
        raise ctx.fail(f"{type(err).__name__}: {err}") from err


def _needs_widening(node: Node) -> bool:
    """Whether `node` reads or writes f16 or bf16 and is not elementwise: such an op (a
    matmul, a softmax, a norm) is lowered in f32 on widened copies (see `_lower_widened`)."""
    opdef = OPS.get(node.op)
    if node.op == "const" or opdef is None or opdef.elementwise:
        return False  # the scalar rules round every f16 / bf16 result, as numpy does
    return any(v.type.dtype.is_narrow_float for v in (*node.inputs, *node.outputs))


def _lower_widened(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """`node` computed in f32: its f16 and bf16 inputs are copied (exactly) into f32 scratch,
    the op's own lowering runs on f32 buffers, and each f16 or bf16 result is rounded once
    when it is copied out. Accumulations (a dot product, a softmax's sum) then happen in f32,
    as numpy's float16 sums do, instead of rounding every step."""
    from ember.lower.loops import Cast, Load, Store, loop_nest

    def widen(value: Value) -> Value:
        narrow = value.type.dtype.is_narrow_float
        return Value(value.type.with_dtype(DType.F32), value.hint) if narrow else value

    def copy(source: Buffer, target: Buffer) -> tuple[Stmt, ...]:
        return loop_nest(ctx.names, (source.size,), lambda i: [
            Store(target, i[0], Cast(Load(source, i[0]), target.dtype))])

    wide_node = node.replace(inputs=tuple(widen(v) for v in node.inputs),
                             outputs=tuple(widen(v) for v in node.outputs))
    statements: list[Stmt] = []
    inputs = []
    for buffer in ctx.inputs:
        if buffer.dtype.is_narrow_float:
            wide = ctx.scratch(DType.F32, buffer.size, "wide")
            if (data := ctx.known.get(buffer)) is not None:
                ctx.known[wide] = np.asarray(data).astype(np.float32)
            statements += copy(buffer, wide)
            buffer = wide
        inputs.append(buffer)
    outputs = [ctx.scratch(DType.F32, b.size, "wide") if b.dtype.is_narrow_float else b
               for b in ctx.outputs]
    inner = ctx.inner(wide_node, inputs, outputs)
    statements += _lower_into(wide_node, inner)
    ctx.status = inner.status
    for wide, buffer in zip(outputs, ctx.outputs, strict=True):
        if wide is not buffer:
            statements += copy(wide, buffer)
    return tuple(statements)


def _lower_region(body: Graph, ctx: LowerContext) -> tuple[Stmt, ...]:
    """A fused region: one loop nest when elementwise with yields of one shape, else its nodes
    one after another (`y = exp(x); return y, y + w` writes y, then reads it for the sum)."""
    if is_elementwise_region(body) and len({v.type.shape for v in body.outputs}) == 1:
        return region_statements(body, ctx.inputs, ctx.outputs, ctx)
    if ctx.options.get("opt_level", 3) >= 3:  # a GEMM with its elementwise chain in the store
        from ember.lower.epilogue import lower_gemm_region

        statements = lower_gemm_region(body, ctx)
        if statements is not None:
            return tuple(statements)
    where: dict[Value, Buffer] = dict(zip(body.inputs, ctx.inputs, strict=True))
    for value, buffer in zip(body.outputs, ctx.outputs, strict=True):
        where.setdefault(value, buffer)
    statements: list[Stmt] = []
    for node in body.nodes:
        if node.op == "const":
            statements += _inline_constant(node, where, ctx)
            continue
        outs = [where.get(v) or ctx.scratch(v.type.dtype, v.type.size) for v in node.outputs]
        for value, buffer in zip(node.outputs, outs, strict=True):
            where[value] = buffer
        inner = ctx.inner(node, [where[v] for v in node.inputs], outs)
        statements += _lower_into(node, inner)
        ctx.status = inner.status
    for value, buffer in zip(body.outputs, ctx.outputs, strict=True):
        if where[value] is not buffer:  # a yield that is a parameter or yielded twice
            statements += _copy(where[value], buffer, ctx)
    return tuple(statements)


def _inline_constant(node: Node, where: dict[Value, Buffer], ctx: LowerContext) -> list[Stmt]:
    from ember.lower.loops import Store, imm, index_imm

    data = node.attrs["value"].data  # type: ignore[union-attr]
    value = node.outputs[0]
    buffer = ctx.scratch(value.type.dtype, value.type.size, "c")
    where[value] = buffer
    flat = np.asarray(data).reshape(-1)
    return [Store(buffer, index_imm(i), imm(flat[i].item(), value.type.dtype))
            for i in range(flat.size)]


def _copy(source: Buffer, target: Buffer, ctx: LowerContext) -> list[Stmt]:
    from ember.lower.loops import Load, Store, loop_nest

    return list(loop_nest(ctx.names, (source.size,),
                          lambda i: [Store(target, i[0], Load(source, i[0]))]))


def check_lowerable(graph: Graph) -> list[str]:
    """Ops of the graph that have no lowering (empty when all lower)."""
    missing = []
    for node in graph.nodes:
        if node.body is not None:
            missing += check_lowerable(node.body)
        elif node.op != "const" and lowering_for(node.op) is None and node.op in OPS:
            missing.append(node.op)
    return sorted(set(missing))
