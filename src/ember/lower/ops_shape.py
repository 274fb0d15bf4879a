"""Shape ops as copies: reshape, flatten, squeeze, expand_dims, broadcast_to, transpose, concat,
split, slice, pad, gather.

Almost every shape op is one strided copy: for each output index, read the input at
`offset + sum(index_d * stride_d)`. `copy_nest` builds that loop nest once for all of them:

- it drops dimensions of extent 1 and merges neighbours that stay contiguous in both the source
  and the target, so a reshape is one flat loop, a concat piece two loops, a transpose of
  [B, M, N] three;
- the target is walked in row-major order, so the innermost loop stores contiguously (and
  vectorizes);
- when the innermost source stride is not 1 but another dimension reads contiguously (a
  transpose), that dimension and the innermost one are tiled TILE x TILE, so both the rows
  read and the rows written stay in cache.

`pad` splits the innermost dimension into before / interior / after loops, and `gather` checks
its indices in a first loop (raising ExecutionError for one out of range) before copying rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ember.ir.graph import Node
from ember.ir.ops import normalize_axis
from ember.ir.types import DType
from ember.lower.loops import (
    Assign,
    Binary,
    Buffer,
    Cast,
    Expr,
    If,
    Imm,
    Let,
    Load,
    Local,
    Loop,
    Select,
    Stmt,
    Store,
    Unary,
    Var,
    add,
    imm,
    index_imm,
    mul,
    strides_of,
)
from ember.lower.rules import LowerContext, lowers

I64 = DType.I64
TILE = 16  # edge of a transpose tile, in elements (see benchmarks/NOTES.md)
MIN_TILED_EXTENT = 2 * TILE  # below this a dimension is not worth tiling


# ---------------------------------------------------------------------------------------------
# The strided copy.


@dataclass(frozen=True)
class _Dim:
    """One loop of a copy: its extent and the element strides it moves in source and target."""

    extent: int
    source: int
    target: int


def _merge(dims: Sequence[_Dim]) -> list[_Dim]:
    """Drop extent-1 dimensions; fuse neighbours that are contiguous in source and target."""
    merged: list[_Dim] = []
    for dim in dims:
        if dim.extent == 1:
            continue
        if merged:
            last = merged[-1]
            if (last.source == dim.source * dim.extent
                    and last.target == dim.target * dim.extent):
                merged[-1] = _Dim(last.extent * dim.extent, dim.source, dim.target)
                continue
        merged.append(dim)
    return merged


def copy_nest(ctx: LowerContext, shape: Sequence[int], source: Buffer,
              source_strides: Sequence[int], source_offset: int, target: Buffer,
              target_strides: Sequence[int] | None = None, target_offset: int = 0
              ) -> tuple[Stmt, ...]:
    """`target[target_offset + t . i] = source[source_offset + s . i]` for every index i of
    `shape` (t: row-major strides of `shape` unless given).

    Loop order: the target's, outermost first, so stores are contiguous innermost; a
    transpose-like copy is tiled (see the module docstring).
    """
    if math.prod(shape) == 0:
        return ()
    if target_strides is None:
        target_strides = strides_of(shape)
    dims = _merge([_Dim(int(e), int(s), int(t))
                   for e, s, t in zip(shape, source_strides, target_strides, strict=True)])
    tiled = _tile_pair(dims)
    if tiled is not None:
        return _tiled_nest(ctx, dims, tiled, source, source_offset, target, target_offset)
    indices = [ctx.names.fresh("i") for _ in dims]
    source_index = _affine(source_offset, indices, [d.source for d in dims])
    target_index = _affine(target_offset, indices, [d.target for d in dims])
    body: tuple[Stmt, ...] = (Store(target, target_index, Load(source, source_index)),)
    for index, dim in zip(reversed(indices), reversed(dims), strict=True):
        body = (Loop(index, dim.extent, body),)
    return body


def _affine(offset: int, indices: Sequence[Expr], strides: Sequence[int]) -> Expr:
    """offset + sum(index_d * stride_d), skipping zero strides."""
    total: Expr = index_imm(offset)
    for index, stride in zip(indices, strides, strict=True):
        if stride:
            total = add(total, mul(index, index_imm(stride)))
    return total


def _tile_pair(dims: Sequence[_Dim]) -> tuple[int, int] | None:
    """(outer, inner) positions to tile: the innermost dimension, when it reads with a stride,
    and the dimension that reads contiguously; None when the copy is not transpose-like."""
    if len(dims) < 2:
        return None
    inner = len(dims) - 1
    if dims[inner].source in (0, 1) or dims[inner].extent < MIN_TILED_EXTENT:
        return None
    for position, dim in enumerate(dims[:inner]):
        if dim.source == 1 and dim.extent >= MIN_TILED_EXTENT:
            return position, inner
    return None


def _pieces(extent: int) -> list[tuple[int, int, int]]:
    """A tiled dimension as (tiles, tile size, start): full tiles, then the remainder."""
    full, rest = divmod(extent, TILE)
    pieces = [(full, TILE, 0)] if full else []
    if rest:
        pieces.append((1, rest, full * TILE))
    return pieces


def _tiled_nest(ctx: LowerContext, dims: Sequence[_Dim], pair: tuple[int, int],
                source: Buffer, source_offset: int, target: Buffer, target_offset: int
                ) -> tuple[Stmt, ...]:
    """The untiled dimensions outermost (in target order), then tile loops of the pair, then
    the TILE x TILE block: the contiguous-read dimension outside, the innermost target
    dimension inside. One such nest per combination of full tiles and remainders."""
    outer_position, inner_position = pair
    others = [d for p, d in enumerate(dims) if p not in pair]
    other_indices = [ctx.names.fresh("i") for _ in others]
    statements: list[Stmt] = []
    for outer_piece in _pieces(dims[outer_position].extent):
        for inner_piece in _pieces(dims[inner_position].extent):
            loops: list[tuple[Var, int]] = []
            pieces = (outer_piece, inner_piece)
            tiles = [_counter(ctx, loops, "b", count) for count, _, _ in pieces]
            lanes = [_counter(ctx, loops, "j", size) for _, size, _ in pieces]
            positions = [add(add(index_imm(start), mul(tile, index_imm(size))), lane)
                         for (_, size, start), tile, lane in zip(pieces, tiles, lanes,
                                                                 strict=True)]
            indices = other_indices + positions
            ordered = [*others, dims[outer_position], dims[inner_position]]
            source_index = _affine(source_offset, indices, [d.source for d in ordered])
            target_index = _affine(target_offset, indices, [d.target for d in ordered])
            body: tuple[Stmt, ...] = (Store(target, target_index, Load(source, source_index)),)
            for var, extent in reversed(loops):
                body = (Loop(var, extent, body),)
            statements += body
    nest: tuple[Stmt, ...] = tuple(statements)
    for index, dim in zip(reversed(other_indices), reversed(others), strict=True):
        nest = (Loop(index, dim.extent, nest),)
    return nest


def _counter(ctx: LowerContext, loops: list[tuple[Var, int]], prefix: str, extent: int
             ) -> Expr:
    """A loop counter appended to `loops`, or the constant 0 for a single iteration."""
    if extent == 1:
        return index_imm(0)
    var = ctx.names.fresh(prefix)
    loops.append((var, extent))
    return var


def _flat_copy(ctx: LowerContext, source: Buffer, target: Buffer) -> tuple[Stmt, ...]:
    return copy_nest(ctx, (target.size,), source, (1,), 0, target)


# ---------------------------------------------------------------------------------------------
# Rules.


@lowers("reshape", "flatten", "squeeze", "expand_dims")
def lower_reshape(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """A row-major reinterpretation: one contiguous loop copying every element."""
    return _flat_copy(ctx, ctx.inputs[0], ctx.outputs[0])


@lowers("broadcast_to")
def lower_broadcast_to(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """Loops over the output in row-major order reading the input with zero strides on the
    broadcast dimensions (so a broadcast innermost dimension stores one value along a row)."""
    in_type, out_type = ctx.input_types[0], ctx.output_types[0]
    offset = out_type.ndim - in_type.ndim
    own = strides_of(in_type.shape)
    strides = [0] * out_type.ndim
    for axis, dim in enumerate(in_type.shape):
        strides[offset + axis] = own[axis] if dim != 1 else 0
    return copy_nest(ctx, out_type.shape, ctx.inputs[0], strides, 0, ctx.outputs[0])


@lowers("transpose")
def lower_transpose(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """Loops in output order reading the permuted input; large 2-D planes are tiled
    TILE x TILE so that both the strided reads and the contiguous writes stay in cache."""
    perm = tuple(int(p) for p in node.attrs["perm"])  # type: ignore[union-attr]
    own = strides_of(ctx.input_types[0].shape)
    strides = [own[p] for p in perm]
    return copy_nest(ctx, ctx.output_types[0].shape, ctx.inputs[0], strides, 0, ctx.outputs[0])


@lowers("concat")
def lower_concat(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """One copy per input, in input order, writing at its offset along the axis: as
    [outer, piece * inner] rows, each row one contiguous read and one contiguous write."""
    out_type = ctx.output_types[0]
    axis = normalize_axis(int(node.attrs["axis"]), out_type.ndim)  # type: ignore[arg-type]
    out_strides = strides_of(out_type.shape)
    statements: list[Stmt] = []
    start = 0
    for buffer, in_type in zip(ctx.inputs, ctx.input_types, strict=True):
        statements += copy_nest(ctx, in_type.shape, buffer, strides_of(in_type.shape), 0,
                                ctx.outputs[0], out_strides, start * out_strides[axis])
        start += in_type.shape[axis]
    return tuple(statements)


@lowers("split")
def lower_split(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """One copy per output, reading the input from its offset along the axis (the mirror of
    concat: contiguous rows of [outer, piece * inner])."""
    in_type = ctx.input_types[0]
    axis = normalize_axis(int(node.attrs["axis"]), in_type.ndim)  # type: ignore[arg-type]
    in_strides = strides_of(in_type.shape)
    statements: list[Stmt] = []
    start = 0
    for buffer, out_type in zip(ctx.outputs, ctx.output_types, strict=True):
        statements += copy_nest(ctx, out_type.shape, ctx.inputs[0], in_strides,
                                start * in_strides[axis], buffer)
        start += out_type.shape[axis]
    return tuple(statements)


@lowers("slice")
def lower_slice(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """Output order; dimension d reads input index start_d + i * step_d (Python `range`
    semantics, resolved by the tracer: steps may be negative, the selection may be empty)."""
    in_type = ctx.input_types[0]
    starts = [int(s) for s in node.attrs["starts"]]  # type: ignore[union-attr]
    steps = [int(s) for s in node.attrs["steps"]]  # type: ignore[union-attr]
    own = strides_of(in_type.shape)
    strides = [step * stride for step, stride in zip(steps, own, strict=True)]
    shape = ctx.output_types[0].shape
    # NOTE: an empty dimension selects nothing: its start need not lie inside the input.
    offset = 0 if math.prod(shape) == 0 else sum(
        start * stride for start, stride in zip(starts, own, strict=True))
    return copy_nest(ctx, shape, ctx.inputs[0], strides, offset, ctx.outputs[0])


@lowers("pad")
def lower_pad(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """Loops over the output. The outer dimensions compute their source index (constant mode:
    whether they are inside the input); the innermost dimension is three loops, before /
    interior / after, so the interior is a contiguous copy and the borders a fill (constant)
    or reads at a reflected / clamped index."""
    in_type, out_type = ctx.input_types[0], ctx.output_types[0]
    source, target = ctx.inputs[0], ctx.outputs[0]
    mode = str(node.attrs.get("mode", "constant"))
    pads = [int(p) for p in node.attrs["pads"]]  # type: ignore[union-attr]
    ndim = in_type.ndim
    befores, afters = pads[:ndim], pads[ndim:]
    if out_type.size == 0:
        return ()
    fill = _pad_value(node, ctx, in_type.dtype) if mode == "constant" else None
    if ndim == 0:
        return (Store(target, index_imm(0), Load(source, index_imm(0))),)
    in_strides, out_strides = strides_of(in_type.shape), strides_of(out_type.shape)
    outer = [ctx.names.fresh("i") for _ in range(ndim - 1)]
    row_source: Expr = index_imm(0)
    inside: Expr | None = None
    lets: list[Stmt] = []
    for axis, index in enumerate(outer):
        shifted = Binary("sub", index, index_imm(befores[axis]))
        size = in_type.shape[axis]
        if mode == "constant":
            if befores[axis] or afters[axis]:
                within = Binary("and", Binary("ge", shifted, index_imm(0)),
                                Binary("lt", shifted, index_imm(size)))
                inside = within if inside is None else Binary("and", inside, within)
            position = shifted if befores[axis] else index
        else:
            position = _source_position(index, befores[axis], size, mode)
            if befores[axis] or afters[axis]:
                var = ctx.names.fresh("s")
                lets.append(Let(var, position))
                position = var
        row_source = add(row_source, mul(position, index_imm(in_strides[axis])))
    row_var = ctx.names.fresh("r")
    lets.append(Let(row_var, row_source))
    row_target = _affine(0, outer, out_strides[:-1])
    target_var = ctx.names.fresh("w")
    lets.append(Let(target_var, row_target))

    last = ndim - 1
    size, before, after = in_type.shape[last], befores[last], afters[last]

    def segment(extent: int, start: int, value_of: object) -> tuple[Stmt, ...]:
        if extent == 0:
            return ()
        lane = ctx.names.fresh("i")
        value = value_of(lane)  # type: ignore[operator]
        where = add(target_var, add(index_imm(start), lane))
        return (Loop(lane, extent, (Store(target, where, value),)),)

    def read(position: Expr) -> Expr:
        return Load(source, add(row_var, position))

    row: list[Stmt] = []
    if fill is not None:
        row += segment(before, 0, lambda lane: fill)
        row += segment(size, before, lambda lane: read(lane))
        row += segment(after, before + size, lambda lane: fill)
    else:
        row += segment(before, 0, lambda lane: read(_source_position(
            lane, before, size, mode)))
        row += segment(size, before, lambda lane: read(lane))
        row += segment(after, before + size, lambda lane: read(_source_position(
            add(lane, index_imm(before + size)), before, size, mode)))
    body: tuple[Stmt, ...] = (*lets, *row)
    if inside is not None and fill is not None:
        blank = segment(out_type.shape[last], 0, lambda lane: fill)
        body = (*lets, If(inside, tuple(row), blank))
    for index, extent in zip(reversed(outer), reversed(out_type.shape[:-1]), strict=True):
        body = (Loop(index, extent, body),)
    return body


def _pad_value(node: Node, ctx: LowerContext, dtype: DType) -> Imm:
    """The constant of constant padding in the input's dtype (as numpy's dtype.type(value))."""
    value = float(node.attrs.get("value", 0.0))  # type: ignore[arg-type]
    if not dtype.is_float and dtype is not DType.BOOL and not math.isfinite(value):
        raise ctx.fail(f"pad value {value} has no {dtype} representation")
    return imm(value, dtype)


def _source_position(index: Expr, before: int, size: int, mode: str) -> Expr:
    """Input index read by output index `index` of a reflect- or edge-padded dimension."""
    shifted = Binary("sub", index, index_imm(before)) if before else index
    if mode == "edge":
        return Binary("max", Binary("min", shifted, index_imm(size - 1)), index_imm(0))
    # reflect (padding < size: one reflection at most): |j|, then mirrored at size - 1
    folded = Unary("abs", shifted)
    return Select(Binary("gt", folded, index_imm(size - 1)),
                  Binary("sub", index_imm(2 * (size - 1)), folded), folded)


@lowers("gather")
def lower_gather(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """A check loop over the indices (any outside [-size, size) raises ExecutionError), then
    loops [outer, index, inner]: each index picks one contiguous row of `inner` elements,
    copied by the innermost loop. Negative indices wrap as in numpy; the row index is clamped
    so that even a call that raises never reads outside the data."""
    data_type, index_type = ctx.input_types
    data, indices = ctx.inputs
    target = ctx.outputs[0]
    axis = normalize_axis(int(node.attrs.get("axis", 0)), data_type.ndim)  # type: ignore[arg-type]
    size = data_type.shape[axis]
    outer = math.prod(data_type.shape[:axis])
    inner = math.prod(data_type.shape[axis + 1 :])
    count = index_type.size
    statements = index_check(ctx, indices, count, size, axis)
    if target.size == 0 or size == 0:
        return tuple(statements)
    position, lane = ctx.names.fresh("i"), ctx.names.fresh("i")
    row: Expr = ctx.names.fresh("i") if outer > 1 else index_imm(0)
    value, safe = ctx.names.fresh("t"), ctx.names.fresh("t")
    wrapped = ctx.names.fresh("t")
    wrap = Select(Binary("lt", value, index_imm(0)), add(value, index_imm(size)), value)
    clamped = Select(Binary("and", Binary("ge", wrapped, index_imm(0)),
                            Binary("lt", wrapped, index_imm(size))), wrapped, index_imm(0))
    source_row = add(mul(row, index_imm(size)), safe)
    target_row = add(mul(row, index_imm(count)), position)
    copy = Store(target, add(mul(target_row, index_imm(inner)), lane),
                 Load(data, add(mul(source_row, index_imm(inner)), lane)))
    if inner == 1:  # one element per index: no row loop
        copy = Store(target, target_row, Load(data, source_row))
    body: tuple[Stmt, ...] = (Let(value, load_index(indices, position)), Let(wrapped, wrap),
                              Let(safe, clamped),
                              copy if inner == 1 else Loop(lane, inner, (copy,)))
    nest: tuple[Stmt, ...] = (Loop(position, count, body),)
    if outer > 1:
        nest = (Loop(row, outer, nest),)
    return (*statements, *nest)


def index_check(ctx: LowerContext, indices: Buffer, count: int, size: int, axis: int
                ) -> list[Stmt]:
    """A loop over `count` indices that raises ExecutionError when any lies outside
    [-size, size) (gather and its backward, scatter_add); nothing for no indices."""
    if not count:
        return []
    bad = ctx.names.fresh("bad", DType.BOOL)
    position = ctx.names.fresh("k")
    value = load_index(indices, position)
    outside = Binary("or", Binary("lt", value, index_imm(-size)),
                     Binary("ge", value, index_imm(size)))
    return [
        Local(bad, imm(False, DType.BOOL)),
        Loop(position, count, (Assign(bad, Binary("or", bad, outside)),)),
        ctx.raise_if(bad, f"index out of range [-{size}, {size}) for axis {axis} of size {size}"),
    ]


def load_index(indices: Buffer, position: Expr) -> Expr:
    """indices[position] as an i64."""
    loaded = Load(indices, position)
    return loaded if indices.dtype is I64 else Cast(loaded, I64)
