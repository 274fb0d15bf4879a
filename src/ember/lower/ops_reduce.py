"""Reductions (sum, mean, prod, max, min) and index reductions (argmax, argmin) as loop nests.

The input's dimensions are first reduced to a canonical list: extent-1 dimensions dropped and
neighbours of the same kind (kept or reduced) merged, so `sum(x[B, M, N], axes=(1, 2))` is one
kept and one reduced loop. Then one of two loop orders:

- the last dimension is reduced: the kept dimensions outermost, a `Local` accumulator per
  output element, the reduced dimensions inside. The innermost loop reads contiguously and
  accumulates in a register (`acc = acc + x` carries `reassoc`, so LLVM vectorizes it);
- the last dimension is kept: rows are accumulated into the output buffer, so the innermost
  loop walks the input and the output contiguously (and vectorizes with no reduction at all).
  When no other kept dimension is outside the reduced loops, the last one is cut into blocks
  of BLOCK elements (WIDE_BLOCK over many rows) and the block loop is outermost: a block of
  the output stays in cache for the whole reduction, and the top-level loop is one whose
  iterations write disjoint outputs (the schedule may run top-level loops in parallel).

Float sums accumulate in the input dtype (reassociated: not bit-exact, see the op tests'
tolerance); max and min propagate NaN as numpy does and order -0.0 below +0.0 (IEEE 754-2019
maximum/minimum, as the reference: numpy returns whichever zero comes first); an empty
reduction gives the identity (sum 0, prod 1, mean 0/0 = nan).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ember.ir.graph import Node
from ember.ir.ops import normalize_axes, normalize_axis
from ember.ir.types import DType
from ember.lower.loops import (
    Assign,
    Binary,
    Buffer,
    Cast,
    Expr,
    Imm,
    Let,
    Load,
    Local,
    Loop,
    Select,
    Stmt,
    Store,
    Var,
    add,
    imm,
    index_imm,
    mul,
    strides_of,
)
from ember.lower.rules import LowerContext, lowers

I64 = DType.I64
BLOCK = 64  # output elements per block when rows are accumulated into the output
# Over many rows, a block of 64 reads 256 bytes of every row, a new page each time when rows
# are 4 KiB or more apart: [4096, 1024].sum(0) ran at 6.7 GB/s. Blocks of 1024 read whole
# pages: 2.79 -> 0.62 ms at one thread (Zen 4; numpy 0.72). Over few rows the small block
# wins (its accumulators stay in registers): [16, 64, 56, 56].sum(0) 0.73 vs 1.36 ms.
WIDE_BLOCK, WIDE_ROWS = 1024, 256

Combine = Callable[[Expr, Expr], Expr]


# ---------------------------------------------------------------------------------------------
# Canonical dimensions.


@dataclass(frozen=True)
class ReduceDim:
    """One loop of a reduction: its extent, whether it is reduced, and its input stride."""

    extent: int
    reduced: bool
    stride: int


def reduce_dims(shape: Sequence[int], axes: Sequence[int]) -> list[ReduceDim]:
    """Dimensions of `shape` without extent-1 ones, same-kind neighbours merged (row-major
    neighbours are contiguous in the input, and kept neighbours in the output too)."""
    strides = strides_of(shape)
    dims: list[ReduceDim] = []
    for axis, (extent, stride) in enumerate(zip(shape, strides, strict=True)):
        if extent == 1:
            continue
        reduced = axis in axes
        if dims and dims[-1].reduced == reduced:
            dims[-1] = ReduceDim(dims[-1].extent * extent, reduced, stride)
        else:
            dims.append(ReduceDim(int(extent), reduced, int(stride)))
    return dims


def _pieces(extent: int, block: int) -> list[tuple[int, int, int]]:
    """`extent` as (blocks, block size, start): the full blocks, then the remainder."""
    full, rest = divmod(extent, block)
    pieces = [(full, block, 0)] if full else []
    if rest:
        pieces.append((1, rest, full * block))
    return pieces


def _nest(loops: Sequence[tuple[Var, int]], body: Sequence[Stmt]) -> tuple[Stmt, ...]:
    statements = tuple(body)
    for var, extent in reversed(loops):
        statements = (Loop(var, extent, statements),)
    return statements


def _innermost_kind(loop: Loop, kind: str) -> Loop:
    if len(loop.body) == 1 and isinstance(loop.body[0], Loop):
        return replace(loop, body=(_innermost_kind(loop.body[0], kind),))
    return replace(loop, kind=kind)


def _dot(indices: Sequence[Expr], strides: Sequence[int], offset: Expr | None = None) -> Expr:
    total: Expr = offset if offset is not None else index_imm(0)
    for index, stride in zip(indices, strides, strict=True):
        total = add(total, mul(index, index_imm(stride)))
    return total


# ---------------------------------------------------------------------------------------------
# The reduction nest.


def reduce_statements(ctx: LowerContext, source: Buffer, target: Buffer, shape: Sequence[int],
                      axes: Sequence[int], identity: Expr, combine: Combine,
                      finish: Callable[[Expr], Expr] | None = None,
                      select_recurrence: bool = False) -> tuple[Stmt, ...]:
    """`target[kept] = finish(combine(...combine(identity, x0)..., xn))` over the reduced axes.

    Loop order: see the module docstring. `finish` (mean's division) is applied once per output
    element, after its last `combine`. `select_recurrence` says that a register accumulator
    of `combine` is a compare-and-select chain LLVM cannot vectorize (a NaN-propagating float
    max or min): such a loop is marked "unroll" instead of asking for vectorization.
    """
    out_size = math.prod(d for i, d in enumerate(shape) if i not in axes)
    if out_size == 0:
        return ()
    dims = reduce_dims(shape, axes)
    if not any(d.reduced for d in dims):  # nothing (or only extent-1 axes) to reduce
        # A group of one element: the element itself (finish is the identity then).
        index = ctx.names.fresh("i")
        return (Loop(index, out_size, (Store(target, index, Load(source, index)),)),)
    kept = [d for d in dims if not d.reduced]
    out_strides = strides_of([d.extent for d in kept])
    if dims[-1].reduced:
        kind = "unroll" if select_recurrence else "serial"
        return _reduce_inner(ctx, source, target, dims, out_strides, identity, combine, finish,
                             kind)
    return _reduce_rows(ctx, source, target, dims, out_strides, identity, combine, finish)


def _reduce_inner(ctx: LowerContext, source: Buffer, target: Buffer, dims: list[ReduceDim],
                  out_strides: Sequence[int], identity: Expr, combine: Combine,
                  finish: Callable[[Expr], Expr] | None, kind: str) -> tuple[Stmt, ...]:
    """Kept dimensions outermost, a register accumulator, reduced dimensions inside (the
    innermost one of loop kind `kind`)."""
    kept = [d for d in dims if not d.reduced]
    reduced = [d for d in dims if d.reduced]
    kept_vars = [ctx.names.fresh("i") for _ in kept]
    reduced_vars = [ctx.names.fresh("r") for _ in reduced]
    acc = ctx.names.fresh("acc", identity.dtype)
    base = ctx.names.fresh("base")
    source_index = _dot(reduced_vars, [d.stride for d in reduced], base)
    inner = _nest(list(zip(reduced_vars, [d.extent for d in reduced], strict=True)),
                  [Assign(acc, combine(acc, Load(source, source_index)))])
    if kind != "serial":
        inner = _innermost_kind(inner[0], kind),
    result: Expr = finish(acc) if finish is not None else acc
    body = [Let(base, _dot(kept_vars, [d.stride for d in kept])),
            Local(acc, identity), *inner,
            Store(target, _dot(kept_vars, out_strides), result)]
    return _nest(list(zip(kept_vars, [d.extent for d in kept], strict=True)), body)


def _reduce_rows(ctx: LowerContext, source: Buffer, target: Buffer, dims: list[ReduceDim],
                 out_strides: Sequence[int], identity: Expr, combine: Combine,
                 finish: Callable[[Expr], Expr] | None) -> tuple[Stmt, ...]:
    """The last dimension kept: accumulate whole rows into the output (blocked when no other
    kept dimension is outside the reduced loops).

        for (outer kept | block)  { out[row] = identity; for (reduced) out[row] op= x[row]; }
    """
    kept = [d for d in dims if not d.reduced]
    outer = kept[:-1]
    reduced = [d for d in dims if d.reduced]
    outer_vars = [ctx.names.fresh("i") for _ in outer]
    reduced_vars = [ctx.names.fresh("r") for _ in reduced]
    # One set of names serves every piece: each piece is a separate nest.
    source_outer = ctx.names.fresh("sbase")
    source_row = ctx.names.fresh("row")
    target_row = ctx.names.fresh("obase")
    statements: list[Stmt] = []
    rows = math.prod(d.extent for d in reduced)
    pieces = [(1, kept[-1].extent, 0)] if outer else _pieces(
        kept[-1].extent, WIDE_BLOCK if rows >= WIDE_ROWS else BLOCK)
    for count, size, start in pieces:
        block = None if outer else ctx.names.fresh("b")
        # The position of the block's first element along the last dimension.
        first = index_imm(start) if block is None else add(index_imm(start),
                                                           mul(block, index_imm(size)))

        def row(size: int, make: Callable[[Expr], Stmt]) -> Loop:
            lane = ctx.names.fresh("j")
            return Loop(lane, size, (make(lane),))

        def initialize(lane: Expr) -> Stmt:
            return Store(target, add(target_row, lane), identity)

        def accumulate(lane: Expr) -> Stmt:
            out_index = add(target_row, lane)
            total = combine(Load(target, out_index), Load(source, add(source_row, lane)))
            return Store(target, out_index, total)

        def finalize(lane: Expr) -> Stmt:
            out_index = add(target_row, lane)
            return Store(target, out_index, finish(Load(target, out_index)))  # type: ignore[misc]

        reduced_loops = list(zip(reduced_vars, [d.extent for d in reduced], strict=True))
        body: list[Stmt] = [
            Let(source_outer, _dot(outer_vars, [d.stride for d in outer], first)),
            Let(target_row, _dot(outer_vars, out_strides[:-1], first)),
            row(size, initialize),
            *_nest(reduced_loops, [
                Let(source_row, _dot(reduced_vars, [d.stride for d in reduced], source_outer)),
                row(size, accumulate)]),
        ]
        if finish is not None:
            body.append(row(size, finalize))
        loops = list(zip(outer_vars, [d.extent for d in outer], strict=True))
        if block is not None:
            loops = [(block, count)]  # emitted even for one block: see the module docstring
        statements += _nest(loops, body)
    return tuple(statements)


# ---------------------------------------------------------------------------------------------
# Rules.


def _lowest(dtype: DType) -> Imm:
    if dtype.is_float:
        return imm(-math.inf, dtype)
    if dtype is DType.BOOL:
        return imm(False, dtype)
    return imm(dtype.int_range[0], dtype)


def _highest(dtype: DType) -> Imm:
    if dtype.is_float:
        return imm(math.inf, dtype)
    if dtype is DType.BOOL:
        return imm(True, dtype)
    return imm(dtype.int_range[1], dtype)


def _axes(node: Node, ndim: int) -> tuple[int, ...]:
    """The reduced axes, normalized (a scalar has none: axis 0 of a scalar reduces nothing)."""
    return normalize_axes(tuple(node.attrs["axes"]), ndim) if ndim else ()  # type: ignore[arg-type]


@lowers("sum", "mean", "prod", "max", "min")
def lower_reduce(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """One reduction nest (loop order in the module docstring); mean divides each total by the
    group size once, after its last addition."""
    (x_type,) = ctx.input_types
    if x_type.dtype.is_narrow_float and node.op in ("sum", "mean", "prod"):
        return _reduce_narrow(node, ctx)
    dtype = x_type.dtype
    axes = _axes(node, x_type.ndim)
    finish = None
    if node.op in ("sum", "mean"):
        identity: Expr = imm(0, dtype)

        def combine(a: Expr, b: Expr) -> Expr:
            return Binary("add", a, b)

        if node.op == "mean":
            count = imm(math.prod(x_type.shape[a] for a in axes), dtype)

            def finish(total: Expr) -> Expr:
                return Binary("div", total, count)
    elif node.op == "prod":
        identity = imm(1, dtype)

        def combine(a: Expr, b: Expr) -> Expr:
            return Binary("mul", a, b)
    else:
        op = node.op
        identity = _lowest(dtype) if op == "max" else _highest(dtype)

        def combine(a: Expr, b: Expr) -> Expr:
            return Binary(op, a, b)  # NaN-propagating on floats

    select_recurrence = node.op in ("max", "min") and dtype.is_float
    return reduce_statements(ctx, ctx.inputs[0], ctx.outputs[0], x_type.shape, axes, identity,
                             combine, finish, select_recurrence)


def _reduce_narrow(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """sum, mean or prod of f16 or bf16: accumulated in an f32 scratch row and rounded once
    at the end, as numpy sums float16 (in float, pairwise) rather than rounding every step."""
    (x_type,) = ctx.input_types
    dtype, wide_type = x_type.dtype, DType.F32
    axes = _axes(node, x_type.ndim)
    op = "mul" if node.op == "prod" else "add"
    identity = imm(1 if node.op == "prod" else 0, wide_type)
    finish = None
    if node.op == "mean":
        count = imm(math.prod(x_type.shape[a] for a in axes), wide_type)

        def finish(total: Expr) -> Expr:
            return Binary("div", total, count)

    def combine(a: Expr, b: Expr) -> Expr:
        return Binary(op, a, Cast(b, wide_type) if b.dtype is dtype else b)

    target = ctx.outputs[0]
    wide = ctx.scratch(wide_type, target.size, "wide")
    statements = reduce_statements(ctx, ctx.inputs[0], wide, x_type.shape, axes, identity,
                                   combine, finish)
    index = ctx.names.fresh("i")
    rounded = Store(target, index, Cast(Load(wide, index), dtype))
    return (*statements, Loop(index, math.prod(ctx.output_types[0].shape), (rounded,)))


def _better(op: str, value: Expr, best: Expr) -> Expr:
    """True when `value` replaces `best` (strictly better, so ties keep the first index; a NaN
    counts as the extreme, so the first NaN wins, as in numpy)."""
    better = Binary("gt" if op == "argmax" else "lt", value, best)
    if not value.dtype.is_float:
        return better
    is_nan = Binary("ne", value, value)
    best_is_number = Binary("eq", best, best)
    return Binary("or", better, Binary("and", is_nan, best_is_number))


@lowers("argmax", "argmin")
def lower_arg(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """First index of the extreme along one axis, as i64.

    The input is seen as [outer, A, inner]. With inner == 1 the axis is contiguous: per outer
    index, a register pair (best value, its index) scans the row. Otherwise whole rows of
    `inner` elements are compared at once: the best values live in scratch and the indices in
    the output, so the innermost loop is contiguous (and free of loop-carried state).
    """
    (x_type,) = ctx.input_types
    source, target = ctx.inputs[0], ctx.outputs[0]
    if x_type.ndim == 0:
        return (Store(target, index_imm(0), index_imm(0)),)
    axis = normalize_axis(int(node.attrs["axis"]), x_type.ndim)  # type: ignore[arg-type]
    outer = math.prod(x_type.shape[:axis])
    extent = x_type.shape[axis]
    inner = math.prod(x_type.shape[axis + 1 :])
    if outer * inner == 0:
        return ()
    names = ctx.names
    o = names.fresh("i")
    base = names.fresh("base")
    statements: list[Stmt] = [Let(base, mul(o, index_imm(extent * inner)))]
    a = names.fresh("r")
    position = add(a, index_imm(1))  # the scan starts at the second element
    if inner == 1:
        best = names.fresh("best", x_type.dtype)
        at = names.fresh("at")
        value = names.fresh("v", x_type.dtype)
        take = names.fresh("take", DType.BOOL)
        scan = (Let(value, Load(source, add(base, position))),
                Let(take, _better(node.op, value, best)),
                Assign(best, Select(take, value, best)),
                Assign(at, Select(take, position, at)))
        statements += [Local(best, Load(source, base)), Local(at, index_imm(0)),
                       Loop(a, extent - 1, scan, "unroll"),  # a select chain: no vectors
                       Store(target, o, at)]
        return (Loop(o, outer, tuple(statements)),)
    scratch = ctx.scratch(x_type.dtype, outer * inner, "best")
    out_base = names.fresh("obase")
    statements.append(Let(out_base, mul(o, index_imm(inner))))
    first = names.fresh("j")
    statements.append(Loop(first, inner, (
        Store(scratch, add(out_base, first), Load(source, add(base, first))),
        Store(target, add(out_base, first), index_imm(0)))))
    lane = names.fresh("j")
    value = names.fresh("v", x_type.dtype)
    best_value = names.fresh("best", x_type.dtype)
    take = names.fresh("take", DType.BOOL)
    row = names.fresh("row")
    slot = add(out_base, lane)
    compare = (Let(value, Load(source, add(row, lane))),
               Let(best_value, Load(scratch, slot)),
               Let(take, _better(node.op, value, best_value)),
               Store(scratch, slot, Select(take, value, best_value)),
               Store(target, slot, Select(take, position, Load(target, slot))))
    statements.append(Loop(a, extent - 1, (
        Let(row, add(base, mul(position, index_imm(inner)))),
        Loop(lane, inner, compare))))
    return (Loop(o, outer, tuple(statements)),)
