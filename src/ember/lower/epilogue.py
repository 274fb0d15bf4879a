"""Elementwise work after a GEMM, done in the GEMM's store (opt_level 3).

A fused region `matmul|conv2d -> elementwise chain` (bias, activation, residual add: what the
`fuse` pass groups) would otherwise write the GEMM's output and then read it back in a second
loop. Here the chain becomes the GEMM's epilogue: each output vector goes through the chain
in registers just before its one store.

    spec = epilogue_for(body, anchor, ctx)     # None when the chain does not fit
    ... the target's GEMM rule: spec.pointers(offset) among the call's arguments, and the
        backend emits spec.expr on each output vector before its store

Operands of the chain other than the GEMM's output must be, in the GEMM's [M, N] view of the
output: one value per column (a matmul bias), one per row (a conv bias per channel), a
scalar, or a full array of the output's shape (a residual), of the output's float dtype.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ember.ir.graph import Graph, Node, Value
from ember.lower.loops import Buffer, Expr, Imm, Pointer, Var, index_imm
from ember.lower.rules import LowerContext, target_rule_for


@dataclass(frozen=True)
class Operand:
    buffer: Buffer
    pattern: str  # "row", "col", "scalar" or "full"


@dataclass(frozen=True)
class Epilogue:
    """The chain as one expression of `acc` (the GEMM's value) and the operand variables."""

    expr: Expr
    acc: Var
    operands: tuple[Operand, ...]
    variables: tuple[Var, ...]
    n: int  # columns of the GEMM's output, for masks and full-array rows

    @property
    def tag(self) -> str:
        """Short digest for symbol names: two epilogues with one tag emit the same code."""
        text = repr((self.expr, [o.pattern for o in self.operands], self.n))
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    def pointers(self, full_offset: Expr) -> tuple[Pointer, ...]:
        """The call's extra arguments: full arrays start at the GEMM's output offset."""
        return tuple(Pointer(o.buffer, full_offset if o.pattern == "full" else index_imm(0))
                     for o in self.operands)


def epilogue_for(body: Graph, anchor: Node, ctx: LowerContext, columns: int,
                 patterns: dict[tuple[int, ...], str]) -> Epilogue | None:
    """The elementwise chain after `anchor` in a fused region, or None when it is not one.

    `patterns` maps an operand's shape (left-padded to the output's rank) to its pattern, as
    the anchor's lowering views its output ([M, N] per GEMM call)."""
    from ember.lower.ops_elementwise import _node_expr
    from ember.lower.rules import scalar_rule_for

    nodes = [n for n in body.nodes if n.op != "const"]
    if not nodes or nodes[0] is not anchor or len(nodes) < 2 or len(body.outputs) != 1:
        return None
    out_type = anchor.outputs[0].type
    dtype = out_type.dtype
    acc = ctx.names.fresh("acc", dtype)
    values: dict[Value, Expr] = {anchor.outputs[0]: acc}
    where = dict(zip(body.inputs, ctx.inputs, strict=True))
    operands: list[Operand] = []
    variables: list[Var] = []

    def pattern_of(shape: tuple[int, ...]) -> str | None:
        """How an operand of `shape` is read in the GEMM's [M, N] view, or None."""
        shape = (1,) * (len(out_type.shape) - len(shape)) + shape
        return ("full" if shape == out_type.shape else
                "scalar" if all(d == 1 for d in shape) else patterns.get(shape))

    def operand(buffer: Buffer, pattern: str) -> Var:
        variable = ctx.names.fresh("e", dtype)
        operands.append(Operand(buffer, pattern))
        variables.append(variable)
        return variable

    for node in body.nodes:
        if node.op == "const":
            data = node.attrs["value"].data  # type: ignore[union-attr]
            if data is None:
                return None
            if data.size == 1:
                values[node.outputs[0]] = Imm(data.reshape(-1)[0].item(),
                                              node.outputs[0].type.dtype)
                continue
            # A constant of the region (a per-channel scale): an operand read from its buffer.
            pattern = pattern_of(data.shape)
            if pattern is None or node.outputs[0].type.dtype != dtype:
                return None
            values[node.outputs[0]] = operand(ctx.constant(np.ascontiguousarray(data), "epi"),
                                              pattern)
    for node in nodes[1:]:
        if (scalar_rule_for(node.op) is None or len(node.outputs) != 1
                or node.outputs[0].type.dtype != dtype or node.outputs[0].type.shape
                != out_type.shape or node.op == "dropout"):
            return None
        operand_exprs = []
        for value in node.inputs:
            if value in values:
                operand_exprs.append(values[value])
                continue
            if value not in where or value.type.dtype != dtype:
                return None
            pattern = pattern_of(value.type.shape)
            if pattern is None:
                return None
            values[value] = operand(where[value], pattern)
            operand_exprs.append(values[value])
        values[node.outputs[0]] = _node_expr(node, operand_exprs, ctx)
    # The last step is the region's only output; values used twice (y * tanh(y)) are
    # computed once (the vector emitter shares equal subexpressions).
    if body.outputs[0] is not nodes[-1].outputs[0]:
        return None
    return Epilogue(values[body.outputs[0]], acc, tuple(operands), tuple(variables), columns)


def lower_gemm_region(body: Graph, ctx: LowerContext) -> list | None:
    """A fused `matmul|conv2d -> elementwise chain` region as one GEMM of the target's
    backend with the chain in its epilogue, or None (the region is then lowered node by
    node)."""
    nodes = [n for n in body.nodes if n.op != "const"]
    if (not nodes or nodes[0].op not in ("matmul", "matmul_nt", "conv2d", "conv2d_nchwc")
            or len(nodes) < 2):
        return None
    anchor = nodes[0]
    if any(v.type.dtype.is_narrow_float for v in (*anchor.inputs, *anchor.outputs)):
        return None  # f16 / bf16: computed in f32 node by node (program._lower_widened)
    lowering = target_rule_for(ctx.target, anchor.op)
    if lowering is None:
        return None
    where = dict(zip(body.inputs, ctx.inputs, strict=True))
    if any(v not in where for v in anchor.inputs):
        return None
    shape = anchor.outputs[0].type.shape
    rank = len(shape)
    if anchor.op in ("matmul", "matmul_nt"):
        if rank < 2:
            return None
        columns = shape[-1]
        patterns = {(1,) * (rank - 1) + (shape[-1],): "col",
                    (1,) * (rank - 2) + (shape[-2], 1): "row"}
    elif anchor.op == "conv2d_nchwc":
        if anchor.outputs[0].type.layout != "nhwc":
            return None
        columns = shape[3]  # [N, OH, OW, O]: one GEMM row per pixel, channels across
        patterns = {(1, 1, 1, shape[3]): "col"}
    else:
        columns = shape[2] * shape[3]
        patterns = {(1, shape[1], 1, 1): "row", (1, 1, shape[2], shape[3]): "col"}
    epilogue = epilogue_for(body, anchor, ctx, columns, patterns)
    if epilogue is None:
        return None
    inner = ctx.inner(anchor, [where[v] for v in anchor.inputs], [ctx.outputs[0]])
    statements = lowering(anchor, inner, epilogue)
    if statements is None:
        return None
    ctx.status = inner.status
    return list(statements)
