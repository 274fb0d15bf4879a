"""The CPU's matmul rule: calls of the blocked, packed GEMM of `ember.backend.cpu.gemm`.

A target rule (`ember.lower.rules.target_rule`) of the CPU backend, used at opt_level 3 for
matmuls big enough to pay for packing; the general loop lowering of `ops_linalg` covers the
rest (1-D operands, tiny or skinny products). Batch dimensions become a loop of GEMM calls at
broadcast offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from math import prod

from llvmlite import ir

from ember.backend.cpu import gemm
from ember.ir.graph import Node
from ember.lower.epilogue import Epilogue
from ember.lower.loops import (
    Binary,
    ExternCall,
    Loop,
    Pointer,
    Stmt,
    add,
    index_imm,
    mul,
    strides_of,
)
from ember.lower.rules import LowerContext, target_rule

MIN_FLOPS = 2 * 32 * 32 * 32  # below this the general loops are as fast
MIN_COLUMNS = 4  # narrower outputs waste most of a one-vector-wide micro-tile


@target_rule("cpu", "matmul_nt")
def gemm_matmul_nt(node: Node, ctx: LowerContext, epilogue: Epilogue | None = None
                   ) -> Sequence[Stmt] | None:
    """C = A @ B.T (B given as [N, K]): one GEMM whose B panels are packed from B's rows."""
    return gemm_matmul(node, ctx, epilogue, transposed=True)


@target_rule("cpu", "matmul")
def gemm_matmul(node: Node, ctx: LowerContext, epilogue: Epilogue | None = None,
                transposed: bool = False) -> Sequence[Stmt] | None:
    """C[b] = A[b] @ B[b] for every batch index b, each a GEMM call (None when not worth it).
    `epilogue`: an elementwise chain applied to each output vector before its store;
    `transposed`: B is given as its transpose (matmul_nt, matrices only)."""
    a_type, b_type = ctx.input_types
    out_type = ctx.output_types[0]
    if a_type.ndim < 2 or b_type.ndim < 2 or a_type.dtype.value not in ("f32", "f64"):
        return None
    m, k = a_type.shape[-2:]
    n = b_type.shape[-2] if transposed else b_type.shape[-1]
    batch = out_type.shape[:-2]
    rows_operand = epilogue is not None and any(o.pattern == "row" for o in epilogue.operands)
    if b_type.ndim == 2 and batch and not rows_operand:
        # One B for every batch: the batches' rows of A and C (contiguous) stack into one GEMM
        # (B packed once, M large enough to split across threads).
        m, batch = m * prod(batch), ()
    if 2 * m * n * k < MIN_FLOPS or n < MIN_COLUMNS:
        return None
    dtype = a_type.dtype.value
    target = ctx.target
    lanes = target.lanes(a_type.dtype.itemsize)
    blocking = gemm.blocking_for(m, n, k, dtype, lanes, target)
    symbol = f"ember_gemm_{dtype}_{m}x{n}x{k}" + (f"_ep{epilogue.tag}" if epilogue else "")
    # Each thread's packing slice starts 64-byte aligned (the packed panels need it).
    aligned_bytes = -(-gemm.gemm_scratch_bytes(m, n, k, dtype=dtype, lanes=lanes,
                                               blocking=blocking) // 64) * 64
    per_chunk = aligned_bytes // a_type.dtype.itemsize
    rows = gemm.rows_per_thread(m, target.cores, blocking.mr)
    chunks = -(-m // rows)
    scratch = ctx.scratch(a_type.dtype, per_chunk * chunks, "pack")

    weights = ctx.constant_data(1) if b_type.ndim == 2 else None
    if weights is not None and transposed:
        weights = weights.T
    b_buffer = ctx.inputs[1]
    if weights is not None:  # packed once, here, instead of on every call
        b_buffer = ctx.constant(gemm.pack_b_constant(weights, m, lanes=lanes,
                                                     blocking=blocking), "bpack")
        symbol += "_pb"
    elif transposed:
        symbol += "_bt"

    def emit(module):
        options = {"dtype": dtype, "b_packed": weights is not None, "lanes": lanes,
                   "blocking": blocking}
        if transposed and weights is None:
            options["b_packer"] = gemm.pack_b_transposed
        if epilogue is None:
            return gemm.emit_gemm(module, symbol, m, n, k, **options)
        element = ir.FloatType() if dtype == "f32" else ir.DoubleType()
        return gemm.emit_gemm(module, symbol, m, n, k,
                              epilogue=lambda b, v, row, col: emit_epilogue(
                                  epilogue, b, v, row, col, gemm.ARGUMENT_COUNT),
                              extra_args=epilogue_types(epilogue, element), **options)

    chunk = ctx.names.fresh("c")
    begin = mul(chunk, index_imm(rows))
    end = Binary("min", add(begin, index_imm(rows)), index_imm(m))
    own_scratch = Pointer(scratch, mul(chunk, index_imm(per_chunk)))
    calls = []
    for index in product(*(range(d) for d in batch)):
        offsets = [_batch_offset(index, t.shape, batch) for t in (a_type, b_type, out_type)]
        pointers = [Pointer(buffer, index_imm(offset)) for buffer, offset in
                    zip((ctx.inputs[0], b_buffer, ctx.outputs[0]), offsets, strict=True)]
        extra = epilogue.pointers(index_imm(offsets[2])) if epilogue is not None else ()
        calls.append(ExternCall(symbol, emit, (*pointers, begin, end, own_scratch, *extra)))
    # Row blocks of C on the thread pool; each block packs into its own scratch slice.
    kind = "parallel" if chunks > 1 else "serial"
    return [Loop(chunk, chunks, tuple(calls), kind)]


def _batch_offset(index: tuple[int, ...], shape: tuple[int, ...], batch: tuple[int, ...]) -> int:
    """Element offset of the matrix at batch `index` in an operand (broadcast dims read 0;
    no batch at all when the batches were stacked into one GEMM)."""
    if not batch:
        return 0
    own = shape[:-2]
    strides = strides_of(shape)[: len(own)]
    skip = len(batch) - len(own)
    return sum(
        (0 if dim == 1 else i) * stride
        for i, dim, stride in zip(index[skip:], own, strides, strict=True)
    )


def epilogue_types(epilogue: Epilogue, element: ir.Type) -> list[ir.Type]:
    """The GEMM function's extra parameters: one pointer per operand of the chain."""
    return [element.as_pointer() for _ in epilogue.operands]


def emit_epilogue(epilogue: Epilogue, builder: ir.IRBuilder, vector: ir.Value, row: ir.Value,
                  col: ir.Value, first_argument: int) -> ir.Value:
    """The chain applied to one output vector (row `row`, columns from `col`); its operands
    are the GEMM function's arguments from `first_argument` on."""
    from ember.backend.llvm.codegen import VectorExprEmitter

    lanes = vector.type.count
    arguments = builder.function.args[first_argument:]
    leaves: dict[object, ir.Value] = {epilogue.acc: vector}
    mask = None
    for variable, operand, pointer in zip(epilogue.variables, epilogue.operands, arguments,
                                          strict=False):
        if operand.pattern in ("row", "scalar"):
            index = row if operand.pattern == "row" else ir.Constant(row.type, 0)
            scalar = builder.load(builder.gep(pointer, [index], inbounds=True))
            leaves[variable] = gemm.splat(builder, scalar, lanes)
            continue
        if mask is None:
            mask = gemm.column_mask(builder, col, epilogue.n, lanes)
        start = col if operand.pattern == "col" else builder.add(
            builder.mul(row, ir.Constant(row.type, epilogue.n)), col)
        leaves[variable] = gemm.masked_load(builder, builder.gep(pointer, [start]), mask,
                                            vector.type)
    return VectorExprEmitter(builder, lanes, leaves).expr(epilogue.expr)
