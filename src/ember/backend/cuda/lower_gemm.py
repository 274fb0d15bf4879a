"""matmul and matmul_nt for CUDA targets: one thread per output element, the chain in its store.

    for (b...) for (i < M) for (j < N) {          // one grid: b..., i, j (j fastest)
      acc = 0; for (k < K) acc += A[b, i, k] * B[b, k, j];
      C[b, i, j] = epilogue(acc);                 // bias, activation, residual: no second pass
    }

The general rule (`ember.lower.ops_linalg`) accumulates a whole row of C per top-level
iteration, which on a GPU is one thread per row. Here every element of C is its own iteration,
so the schedule flattens batch, rows and columns onto the grid; neighbouring threads take
neighbouring columns, so their reads of B (and writes of C) coalesce and they share A's
element. Shared-memory tiling and tensor cores are later work (docs/cuda.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from ember.ir.ops import broadcast_shapes
from ember.lower.epilogue import Epilogue
from ember.lower.loops import (
    Assign,
    Binary,
    Expr,
    Let,
    Load,
    Local,
    Loop,
    Stmt,
    Store,
    Var,
    add,
    broadcast_strides,
    imm,
    index_imm,
    linear_index,
    loop_nest,
    mul,
    strides_of,
)
from ember.lower.rules import LowerContext, target_rule


@target_rule("cuda", "matmul", "matmul_nt")
def lower_matmul(node, ctx: LowerContext, epilogue: Epilogue | None = None
                 ) -> list[Stmt] | None:
    """C = A @ B (numpy's rules: 1-D operands promoted, batch dimensions broadcast) or, for
    matmul_nt, A @ B.T with B [N, K]; one loop iteration per element of C."""
    a_type, b_type = ctx.input_types
    transposed = node.op == "matmul_nt"
    a_shape = (1, *a_type.shape) if a_type.ndim == 1 else a_type.shape
    if transposed:
        b_shape = b_type.shape
        columns, depth = b_shape[-2], b_shape[-1]
        batch: tuple[int, ...] = ()
    else:
        b_shape = (*b_type.shape, 1) if b_type.ndim == 1 else b_type.shape
        depth, columns = b_shape[-2:]
        batch = broadcast_shapes(a_shape[:-2], b_shape[:-2])
    rows = a_shape[-2]
    strides = (
        [s * rows * depth for s in broadcast_strides(a_shape[:-2], batch)],
        [s * depth * columns for s in broadcast_strides(b_shape[:-2], batch)],
        [s * rows * columns for s in strides_of(batch)],
    )
    # B[k, j] of matmul at k * N + j; B[j, k] of matmul_nt at j * K + k
    b_step = (index_imm(depth), index_imm(1)) if transposed else (index_imm(1),
                                                                  index_imm(columns))

    def matrix(batch_index: list[Var]) -> list[Stmt]:
        # (no Lets: at the top level, outside every loop, they would be scalars the launches
        # of the kernel share)
        bases = [linear_index(batch_index, stride) for stride in strides]
        i, j = ctx.names.fresh("i"), ctx.names.fresh("i")
        element = _element(ctx, bases, i, j, depth, columns, b_step, epilogue)
        return [Loop(i, rows, (Loop(j, columns, tuple(element)),))]

    return list(loop_nest(ctx.names, batch, matrix))


def _element(ctx: LowerContext, bases: Sequence[Expr], i: Var, j: Var, depth: int,
             columns: int, b_step: tuple[Expr, Expr], epilogue: Epilogue | None
             ) -> list[Stmt]:
    """acc = sum over k of A[i, k] * B[k, j] (B[j, k] for matmul_nt); C[i, j] = chain(acc)."""
    a_buffer, b_buffer = ctx.inputs
    c_buffer = ctx.outputs[0]
    dtype = ctx.output_types[0].dtype
    a_base, b_base, c_base = bases
    total = ctx.names.fresh("acc", dtype)
    k = ctx.names.fresh("k")
    a_index = add(add(a_base, mul(i, index_imm(depth))), k)
    b_index = add(b_base, add(mul(k, b_step[1]), mul(j, b_step[0])))
    product = Binary("mul", Load(a_buffer, a_index), Load(b_buffer, b_index))
    body: list[Stmt] = [Local(total, imm(0, dtype))]
    if depth > 0:
        body.append(Loop(k, depth, (Assign(total, Binary("add", total, product)),)))
    c_index = add(c_base, add(mul(i, index_imm(columns)), j))
    if epilogue is None:
        return [*body, Store(c_buffer, c_index, total)]
    body.append(Let(epilogue.acc, total))
    where = {"row": i, "col": j, "scalar": index_imm(0), "full": c_index}
    for operand, variable in zip(epilogue.operands, epilogue.variables, strict=True):
        body.append(Let(variable, Load(operand.buffer, where[operand.pattern])))
    return [*body, Store(c_buffer, c_index, epilogue.expr)]
