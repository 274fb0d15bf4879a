"""Loop nests of the resampling ops: `resize` from its tap tables, `grid_sample` from its grid.

resize: one pass per resized axis (`ember.ops.resample.resize_plan`), each from the previous
pass's result (a scratch buffer) into the next, the last into the output. A pass is loops
[outer, o, inner] around the axis; at each output position o the tap indices and weights are
loaded once from constant tables, and the innermost loop (contiguous in memory) sums the taps:

    for r < outer:  for o < out:
      const int64_t k0 = index[o * 2]; const float w0 = weight[o * 2]; ...
      for j < inner:  out[(r * out + o) * inner + j] = w0 * x[(r * in + k0) * inner + j] + ...

grid_sample: loops [n, p] over the batch and the output positions; at each the coordinates of
the grid are unnormalized and moved in (rounded for nearest), the taps of each spatial axis and
their weights computed, and the loop over channels sums the tap products (taps outside the
input read zeros, and never outside the buffer: every index is clamped first).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ember.ir.graph import Node
from ember.ir.types import DType
from ember.lower.loops import (
    Binary,
    Buffer,
    Cast,
    Expr,
    Imm,
    Load,
    Select,
    Stmt,
    Store,
    Unary,
    add,
    imm,
    index_imm,
    mul,
)
from ember.lower.ops_linalg import let, loop, outer_loop
from ember.lower.rules import LowerContext, lowers
from ember.ops.resample import AxisTaps, grid_borders, resize_plan

I64 = DType.I64


# ---------------------------------------------------------------------------------------------
# resize


@lowers("resize")
def lower_resize(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """One pass per resized axis (see the module docstring); a copy when none is resized."""
    in_type, out_type = ctx.input_types[0], ctx.output_types[0]
    target = ctx.outputs[0]
    if out_type.size == 0:
        return ()
    attrs = node.attrs
    plan = resize_plan(in_type.shape, dict(attrs))
    if not plan:
        return tuple(loop(ctx, out_type.size, lambda i: [
            Store(target, i, Load(ctx.inputs[0], i))]))
    extrapolation = float(attrs["extrapolation"])  # type: ignore[arg-type]
    shape = list(in_type.shape)
    source = ctx.inputs[0]
    statements: list[Stmt] = []
    for position, taps in enumerate(plan):
        out_shape = [*shape]
        out_shape[taps.axis] = taps.index.shape[0]
        last = position == len(plan) - 1
        result = target if last else ctx.scratch(out_type.dtype, math.prod(out_shape), "resized")
        statements += _axis_pass(ctx, source, result, shape, taps, extrapolation)
        source, shape = result, out_shape
    return tuple(statements)


def _axis_pass(ctx: LowerContext, source: Buffer, target: Buffer, shape: Sequence[int],
               taps: AxisTaps, extrapolation: float) -> list[Stmt]:
    """target[r, o, j] = sum_t weight[o, t] * source[r, index[o, t], j] (or the extrapolation
    value where the table marks o outside)."""
    axis, dtype = taps.axis, target.dtype
    outer, size, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    out_size, count = taps.index.shape
    index_table = ctx.constant(np.ascontiguousarray(taps.index, dtype=np.int64), "taps")
    weight_table = None
    if not taps.gather_only:
        weight_table = ctx.constant(np.ascontiguousarray(taps.weight, dtype=dtype.numpy), "w")
    outside_table = ctx.constant(taps.outside.copy(), "outside") if taps.outside.any() else None

    def row(r: Expr) -> list[Stmt]:
        def position(o: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            rows, weights = [], []
            for t in range(count):
                entry = add(mul(o, index_imm(count)), index_imm(t))
                source_row = add(mul(r, index_imm(size)), Load(index_table, entry))
                rows.append(let(local, ctx, mul(source_row, index_imm(inner)), "k"))
                if weight_table is not None:
                    weights.append(let(local, ctx, Load(weight_table, entry), "w"))
            base = let(local, ctx, mul(add(mul(r, index_imm(out_size)), o), index_imm(inner)), "o")
            masked = (let(local, ctx, Load(outside_table, o), "e")
                      if outside_table is not None else None)

            def element(j: Expr) -> list[Stmt]:
                loads = [Load(source, add(k, j)) for k in rows]
                value: Expr = loads[0]
                if weights:
                    value = Binary("mul", weights[0], loads[0])
                    for w, load in zip(weights[1:], loads[1:], strict=True):
                        value = Binary("add", value, Binary("mul", w, load))
                if masked is not None:
                    value = Select(masked, imm(extrapolation, dtype), value)
                return [Store(target, add(base, j), value)]

            return local + loop(ctx, inner, element)

        return loop(ctx, out_size, position)

    return outer_loop(ctx, outer, row)


# ---------------------------------------------------------------------------------------------
# grid_sample


def _fimm(value: float, dtype: DType) -> Imm:
    return imm(value, dtype)


def _select_clamp(u: Expr, low: float, high: float) -> Expr:
    """u clamped into [low, high] with selects (a NaN becomes low, so any cast is safe)."""
    dtype = u.dtype
    above_low = Select(Binary("gt", u, _fimm(low, dtype)), u, _fimm(low, dtype))
    return Select(Binary("lt", above_low, _fimm(high, dtype)), above_low, _fimm(high, dtype))


def _reflect(statements: list[Stmt], ctx: LowerContext, u: Expr, low: float, high: float
             ) -> Expr:
    """u mirrored at low and high until it lies between them (`ember.ops.resample.reflect`)."""
    dtype = u.dtype
    span = high - low
    if span <= 0:
        return _fimm(low, dtype)
    below = let(statements, ctx, Binary("lt", u, _fimm(low, dtype)), "b")
    above = let(statements, ctx, Binary("gt", u, _fimm(high, dtype)), "a")
    distance = Select(below, Binary("sub", _fimm(low, dtype), u),
                      Select(above, Binary("sub", u, _fimm(high, dtype)), _fimm(0.0, dtype)))
    distance = let(statements, ctx, distance, "d")
    flips = let(statements, ctx, Unary("floor", Binary("div", distance, _fimm(span, dtype))),
                "f")
    rest = let(statements, ctx, Binary("sub", distance, Binary("mul", flips, _fimm(span, dtype))),
               "r")
    half = Binary("mul", flips, _fimm(0.5, dtype))
    even = let(statements, ctx, Binary("eq", Unary("floor", half), half), "v")
    from_low = Binary("add", _fimm(low, dtype), rest)
    from_high = Binary("sub", _fimm(high, dtype), rest)
    moved = Select(below, Select(even, from_low, from_high), Select(even, from_high, from_low))
    return let(statements, ctx, Select(Binary("or", below, above), moved, u), "m")


def _move_in(statements: list[Stmt], ctx: LowerContext, u: Expr, size: int, attrs: dict,
             tap: bool) -> Expr:
    """`ember.ops.resample.move_in` in loop IR."""
    padding = attrs["padding"]
    if padding == "zeros":
        return u
    low, high = grid_borders(size, bool(attrs["align_corners"]))
    clip = tap or attrs["convention"] == "torch"
    if padding == "border":
        if clip:
            return let(statements, ctx, _select_clamp(u, 0.0, size - 1.0), "c")
        outside = Binary("or", Binary("lt", u, _fimm(low, u.dtype)),
                         Binary("gt", u, _fimm(high, u.dtype)))
        return let(statements, ctx, Select(outside, _select_clamp(u, 0.0, size - 1.0), u), "c")
    reflected = _reflect(statements, ctx, u, low, high)
    if clip:
        return let(statements, ctx, _select_clamp(reflected, 0.0, size - 1.0), "c")
    return reflected


def _unnormalize(g: Expr, size: int, align_corners: bool) -> Expr:
    dtype = g.dtype
    one, half = _fimm(1.0, dtype), _fimm(0.5, dtype)
    if align_corners:  # (g + 1) / 2 * (size - 1)
        return Binary("mul", Binary("div", Binary("add", g, one), _fimm(2.0, dtype)),
                      _fimm(size - 1.0, dtype))
    # ((g + 1) * size - 1) / 2
    scaled = Binary("sub", Binary("mul", Binary("add", g, one), _fimm(float(size), dtype)), one)
    return Binary("mul", scaled, half)


def _coordinate(statements: list[Stmt], ctx: LowerContext, g: Expr, size: int, attrs: dict,
                dtype: DType) -> Expr:
    """`ember.ops.resample.grid_coordinate` in loop IR. The ONNX convention unnormalizes in
    float64 and rounds to the data's dtype once, as ONNX's reference does; the torch one
    computes in the data's dtype, as PyTorch does."""
    onnx = attrs["convention"] == "onnx"
    if onnx and dtype is not DType.F64:
        u: Expr = Cast(_unnormalize(Cast(g, DType.F64), size, bool(attrs["align_corners"])),
                       dtype)
    else:
        u = _unnormalize(g, size, bool(attrs["align_corners"]))
    u = let(statements, ctx, u, "u")
    nearest = attrs["mode"] == "nearest"
    if onnx:
        if nearest:
            u = let(statements, ctx, Unary("round", u), "u")
        return _move_in(statements, ctx, u, size, attrs, tap=False)
    if attrs["mode"] == "cubic":
        return u
    moved = _move_in(statements, ctx, u, size, attrs, tap=False)
    return let(statements, ctx, Unary("round", moved), "u") if nearest else moved


def _cubic_weights(t: Expr) -> list[Expr]:
    """Keys' kernel (A = -0.75) at distances t + 1, t, 1 - t, 2 - t, as ONNX writes it."""
    dtype = t.dtype
    a = -0.75

    def near(x: Expr) -> Expr:  # ((a + 2) x - (a + 3)) x x + 1
        inner = Binary("sub", Binary("mul", _fimm(a + 2, dtype), x), _fimm(a + 3, dtype))
        return Binary("add", Binary("mul", Binary("mul", inner, x), x), _fimm(1.0, dtype))

    def far(x: Expr) -> Expr:  # ((a x - 5a) x + 8a) x - 4a
        first = Binary("sub", Binary("mul", _fimm(a, dtype), x), _fimm(5 * a, dtype))
        second = Binary("add", Binary("mul", first, x), _fimm(8 * a, dtype))
        return Binary("sub", Binary("mul", second, x), _fimm(4 * a, dtype))

    one, two = _fimm(1.0, dtype), _fimm(2.0, dtype)
    return [far(Binary("add", t, one)), near(t), near(Binary("sub", one, t)),
            far(Binary("sub", two, t))]


def _axis_taps(statements: list[Stmt], ctx: LowerContext, u: Expr, size: int, attrs: dict
               ) -> list[tuple[Expr, Expr, Expr]]:
    """(index, inside, weight) of each tap of one axis: the index clamped into the input,
    `inside` false where zeros padding reads a zero."""
    dtype = u.dtype
    mode = attrs["mode"]
    if mode == "nearest":
        positions, weights = [u], [_fimm(1.0, dtype)]
    else:
        base = let(statements, ctx, Unary("floor", u), "fl")
        t = let(statements, ctx, Binary("sub", u, base), "t")
        if mode == "linear":
            positions = [base, Binary("add", base, _fimm(1.0, dtype))]
            weights = [Binary("sub", _fimm(1.0, dtype), t), t]
        else:
            positions = [Binary("add", base, _fimm(k - 1.0, dtype)) for k in range(4)]
            weights = _cubic_weights(t)
    taps = []
    for position, weight in zip(positions, weights, strict=True):
        moved = _move_in(statements, ctx, let(statements, ctx, position, "q"), size, attrs,
                         tap=True)
        inside: Expr = imm(True, DType.BOOL)
        if attrs["padding"] == "zeros":
            inside = let(statements, ctx, Binary("and", Binary("ge", moved, _fimm(0.0, dtype)),
                                                 Binary("le", moved, _fimm(size - 1.0, dtype))),
                         "in")
        index = let(statements, ctx, Cast(_select_clamp(moved, 0.0, size - 1.0), I64), "ix")
        taps.append((index, inside, let(statements, ctx, weight, "wt")))
    return taps


@lowers("grid_sample")
def lower_grid_sample(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """Loops [n, p, c] (see the module docstring)."""
    x_type, grid_type = ctx.input_types
    out = ctx.outputs[0]
    if ctx.output_types[0].size == 0:
        return ()
    x, grid = ctx.inputs
    attrs = dict(node.attrs)
    dtype = x_type.dtype
    batch, channels, *dims = x_type.shape
    rank = len(dims)
    points = math.prod(grid_type.shape[1:-1])
    plane = math.prod(dims)
    strides = [math.prod(dims[axis + 1:]) for axis in range(rank)]

    def sample(n: Expr) -> list[Stmt]:
        def point(p: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            cell = mul(add(mul(n, index_imm(points)), p), index_imm(rank))
            per_axis = []
            for axis, size in enumerate(dims):
                g = Load(grid, add(cell, index_imm(rank - 1 - axis)))
                u = _coordinate(local, ctx, g, size, attrs, dtype)
                per_axis.append(_axis_taps(local, ctx, u, size, attrs))
            combos = []
            for combo in itertools.product(*per_axis):
                flat: Expr = index_imm(0)
                inside: Expr = imm(True, DType.BOOL)
                for axis, (index, ok, _) in enumerate(combo):
                    flat = add(flat, mul(index, index_imm(strides[axis])))
                    if not (isinstance(ok, Imm) and ok.value is True):
                        inside = ok if isinstance(inside, Imm) else Binary("and", inside, ok)
                combos.append((let(local, ctx, flat, "at"), inside, [w for _, _, w in combo]))
            target = let(local, ctx, add(mul(n, index_imm(channels * points)), p), "y")

            def channel(c: Expr) -> list[Stmt]:
                base = mul(add(mul(n, index_imm(channels)), c), index_imm(plane))
                return [Store(out, add(target, mul(c, index_imm(points))),
                              _interpolate(x, base, combos, [len(t) for t in per_axis]))]

            return local + loop(ctx, channels, channel)

        return loop(ctx, points, point)

    return tuple(outer_loop(ctx, batch, sample))


def _interpolate(x: Buffer, base: Expr, combos: list, counts: list[int]) -> Expr:
    """The weighted sum of the taps, innermost axis first (the order ONNX's reference sums):
    sum over the first axis's taps of w * (sum over the next axis's taps of ...)."""
    dtype = x.dtype

    def value(flat: Expr, inside: Expr) -> Expr:
        load = Load(x, add(base, flat))
        if isinstance(inside, Imm):
            return load
        return Select(inside, load, _fimm(0.0, dtype))

    def level(depth: int, prefix: tuple[int, ...]) -> Expr:
        total: Expr | None = None
        for k in range(counts[depth]):
            key = (*prefix, k)
            if depth == len(counts) - 1:
                flat, inside, weights = combos[_flat_position(key, counts)]
                term: Expr = value(flat, inside)
                weight = weights[depth]
            else:
                term = level(depth + 1, key)
                weight = combos[_flat_position((*key, *(0,) * (len(counts) - depth - 1)),
                                               counts)][2][depth]
            product = Binary("mul", weight, term)
            total = product if total is None else Binary("add", total, product)
        assert total is not None
        return total

    return level(0, ())


def _flat_position(key: tuple[int, ...], counts: list[int]) -> int:
    """The position of a tap combination in itertools.product order."""
    position = 0
    for k, count in zip(key, counts, strict=True):
        position = position * count + k
    return position


__all__ = ["lower_grid_sample", "lower_resize"]
