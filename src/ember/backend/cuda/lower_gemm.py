"""matmul and matmul_nt for CUDA targets: a thread per 4x4 tile or element, the chain in its store.

    for (b...) for (i < M) for (j < N) {          // one grid: b..., i, j (j fastest)
      acc = 0; for (k < K) acc += A[b, i, k] * B[b, k, j];
      C[b, i, j] = epilogue(acc);                 // bias, activation, residual: no second pass
    }

The general rule (`ember.lower.ops_linalg`) accumulates a whole row of C per top-level
iteration, which on a GPU is one thread per row. Here every element of C is its own iteration,
so the schedule flattens batch, rows and columns onto the grid; neighbouring threads take
neighbouring columns, so their reads of B (and writes of C) coalesce and they share A's
element. From 32 rows and columns on (multiples of TILE), each thread computes a TILE x TILE
tile of C in registers instead (`_tiled`). Shared-memory tiling and tensor cores are later
work (docs/cuda.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
    substitute_expr,
)
from ember.lower.rules import LowerContext, target_rule

TILE = 4  # C's tile per thread: TILE x TILE elements
MIN_TILED = 32  # rows and columns (multiples of TILE) from which C is computed in tiles


@target_rule("cuda", "matmul", "matmul_nt")
def lower_matmul(node, ctx: LowerContext, epilogue: Epilogue | None = None
                 ) -> list[Stmt] | None:
    """C = A @ B (numpy's rules: 1-D operands promoted, batch dimensions broadcast) or, for
    matmul_nt, A @ B.T with B [N, K]; one loop iteration per tile or element of C."""
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

    shape = Gemm(batch, rows, columns, depth, strides, b_step)
    if (rows % TILE == 0 and columns % TILE == 0 and min(rows, columns) >= MIN_TILED
            and depth > 0):
        return _tiled(ctx, shape, epilogue)

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
    return [*body, *_store(ctx, c_index, total, i, j, epilogue)]


def _store(ctx: LowerContext, c_index: Expr, total: Var, row: Expr, column: Expr,
           epilogue: Epilogue | None) -> list[Stmt]:
    """C[c_index] = chain(total): the chain's operands read at the element's row (within the
    matrix), column or flat index, each element with variables of its own."""
    c_buffer = ctx.outputs[0]
    if epilogue is None:
        return [Store(c_buffer, c_index, total)]
    acc = ctx.names.fresh("acc", total.dtype)
    statements: list[Stmt] = [Let(acc, total)]
    mapping: dict[Var, Expr] = {epilogue.acc: acc}
    where = {"row": row, "col": column, "scalar": index_imm(0), "full": c_index}
    for operand, variable in zip(epilogue.operands, epilogue.variables, strict=True):
        mapping[variable] = ctx.names.fresh("e", variable.dtype)
        statements.append(Let(mapping[variable], Load(operand.buffer, where[operand.pattern])))
    return [*statements, Store(c_buffer, c_index, substitute_expr(epilogue.expr, mapping))]


@dataclass(frozen=True)
class Gemm:
    """The sizes of C[batch..., rows, columns] = A @ B over `depth`, and the operands' layout."""

    batch: tuple[int, ...]
    rows: int
    columns: int
    depth: int
    strides: tuple[list[int], list[int], list[int]]  # batch strides of A, B, C (elements)
    b_step: tuple[Expr, Expr]  # B's index steps per column and per k


def _tiled(ctx: LowerContext, gemm: Gemm, epilogue: Epilogue | None) -> list[Stmt]:
    """C in TILE x TILE tiles, one top-level iteration (one thread) per tile: per k, TILE
    elements of A and TILE of B feed TILE * TILE accumulators, a quarter of the loads per
    multiply-add of one element per thread. Tiles are numbered with the column block fastest,
    so neighbouring threads read neighbouring parts of B's rows."""
    a_buffer, b_buffer = ctx.inputs
    dtype = ctx.output_types[0].dtype
    tiles = (gemm.rows // TILE, gemm.columns // TILE)
    count = math.prod(gemm.batch) * tiles[0] * tiles[1]
    flat = ctx.names.fresh("t")
    lets: list[Stmt] = []
    digits: list[Expr] = []
    rest: Expr = flat
    for extent in reversed((*gemm.batch, *tiles)):  # column block, row block, batch...
        var = ctx.names.fresh("n")
        lets.append(Let(var, Binary("urem", rest, index_imm(extent))))
        digits.insert(0, var)
        rest = Binary("udiv", rest, index_imm(extent))
    *batch_index, row_block, column_block = digits
    a_base, b_base, c_base = (linear_index(batch_index, s) for s in gemm.strides)
    rows, columns = [], []
    for offset in range(TILE):
        rows.append(ctx.names.fresh("r"))
        columns.append(ctx.names.fresh("c"))
        lets.append(Let(rows[-1], add(mul(row_block, index_imm(TILE)), index_imm(offset))))
        lets.append(Let(columns[-1], add(mul(column_block, index_imm(TILE)),
                                         index_imm(offset))))
    totals = [[ctx.names.fresh("acc", dtype) for _ in range(TILE)] for _ in range(TILE)]
    k = ctx.names.fresh("k")
    step: list[Stmt] = []
    a_values = [ctx.names.fresh("x", dtype) for _ in range(TILE)]
    b_values = [ctx.names.fresh("y", dtype) for _ in range(TILE)]
    for offset in range(TILE):
        a_index = add(add(a_base, mul(rows[offset], index_imm(gemm.depth))), k)
        b_index = add(b_base, add(mul(k, gemm.b_step[1]), mul(columns[offset], gemm.b_step[0])))
        step += [Let(a_values[offset], Load(a_buffer, a_index)),
                 Let(b_values[offset], Load(b_buffer, b_index))]
    step += [Assign(totals[i][j], Binary("add", totals[i][j], Binary(
        "mul", a_values[i], b_values[j]))) for i in range(TILE) for j in range(TILE)]
    body: list[Stmt] = [*lets, *(Local(t, imm(0, dtype)) for row in totals for t in row),
                        Loop(k, gemm.depth, tuple(step))]
    for i in range(TILE):
        for j in range(TILE):
            c_index = add(c_base, add(mul(rows[i], index_imm(gemm.columns)), columns[j]))
            body += _store(ctx, c_index, totals[i][j], rows[i], columns[j], epilogue)
    return [Loop(flat, count, tuple(body))]
