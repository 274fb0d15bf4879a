"""Scheduled matmul: calls of the blocked, packed GEMM of `ember.backend.llvm.gemm`.

Used at opt_level 3 for matmuls big enough to pay for packing; the general loop lowering of
`ops_linalg` covers the rest (1-D operands, tiny or skinny products). Batch dimensions become a
loop of GEMM calls at broadcast offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

from ember.ir.graph import Node
from ember.lower.loops import ExternCall, Pointer, Stmt, index_imm, strides_of
from ember.lower.rules import LowerContext, lowers

MIN_FLOPS = 2 * 32 * 32 * 32  # below this the general loops are as fast
MIN_COLUMNS = 16  # one vector: narrower outputs waste most of each micro-tile


@lowers("matmul", scheduled=True)
def gemm_matmul(node: Node, ctx: LowerContext) -> Sequence[Stmt] | None:
    """C[b] = A[b] @ B[b] for every batch index b, each a GEMM call (None when not worth it)."""
    a_type, b_type = ctx.input_types
    out_type = ctx.output_types[0]
    if a_type.ndim < 2 or b_type.ndim < 2 or a_type.dtype.value not in ("f32", "f64"):
        return None
    m, k = a_type.shape[-2:]
    n = b_type.shape[-1]
    if 2 * m * n * k < MIN_FLOPS or n < MIN_COLUMNS:
        return None
    from ember.backend.llvm import gemm

    dtype = a_type.dtype.value
    symbol = f"ember_gemm_{dtype}_{m}x{n}x{k}"
    scratch_bytes = gemm.gemm_scratch_bytes(m, n, k, dtype=dtype)
    scratch = ctx.scratch(a_type.dtype, scratch_bytes // a_type.dtype.itemsize + 16, "pack")

    def emit(module):
        return gemm.emit_gemm(module, symbol, m, n, k, dtype=dtype)

    batch = out_type.shape[:-2]
    calls = []
    for index in product(*(range(d) for d in batch)):
        offsets = [_batch_offset(index, t.shape, batch) for t in (a_type, b_type, out_type)]
        pointers = [Pointer(buffer, index_imm(offset)) for buffer, offset in
                    zip((*ctx.inputs, ctx.outputs[0]), offsets, strict=True)]
        calls.append(ExternCall(symbol, emit, (*pointers, index_imm(0), index_imm(m),
                                               Pointer(scratch, index_imm(0)))))
    return calls


def _batch_offset(index: tuple[int, ...], shape: tuple[int, ...], batch: tuple[int, ...]) -> int:
    """Element offset of the matrix at batch `index` in an operand (broadcast dims read 0)."""
    own = shape[:-2]
    strides = strides_of(shape)[: len(own)]
    skip = len(batch) - len(own)
    return sum(
        (0 if dim == 1 else i) * stride
        for i, dim, stride in zip(index[skip:], own, strides, strict=True)
    )
