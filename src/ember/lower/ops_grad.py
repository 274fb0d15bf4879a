"""The backward ops of pooling and gather as loop nests (see `ember.ops.grad` for their meaning).

The outermost loop of every rule writes disjoint outputs, so the schedule may run it on
threads:

- `avg_pool2d_grad` and `adaptive_avg_pool2d_grad` gather: each element of dx sums the
  shares (cotangent over divisor, computed once per window) of the windows that contain it,
  found per axis from its position (a closed form, at most a few windows each), so every dx
  element is one store and no two threads meet.
- `max_pool2d_grad` scatters within one image plane: a plane is one outer iteration (zeroed,
  then each window's cotangent added at its chosen tap). Gathering instead would recompute
  each window's argmax once per element of dx it covers.
- `scatter_add` zeroes its output, checks the indices (an index out of range raises
  ExecutionError, as gather does), then adds gy's rows at the indices; the loop around the
  indices is never the outer one (repeated indices add to the same row), the loop over the
  dimensions before `axis` is, even of one iteration, so that it stays serial.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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
    Load,
    Local,
    Loop,
    Select,
    Stmt,
    Store,
    Unary,
    add,
    imm,
    index_imm,
    mul,
)
from ember.lower.ops_linalg import (
    accumulate,
    div,
    let,
    loop,
    outer_loop,
    sub,
    window_columns,
    window_rows,
)
from ember.lower.ops_shape import index_check, load_index
from ember.lower.rules import LowerContext, lowers
from ember.lower.schedule import MIN_VECTOR_EXTENT
from ember.ops.grad import adaptive_bounds

I64 = DType.I64
UNROLL_WINDOWS = 4  # up to this many windows per axis cover an element: unrolled, else a loop


def scatter_loop(ctx: LowerContext, extent: int, body: Callable[[Expr], Sequence[Stmt]]
                 ) -> list[Stmt]:
    """A loop of read-modify-writes at computed indices, where two iterations may update one
    element: LLVM cannot vectorize it, so it is marked "unroll" (as `ops_reduce` marks its
    select chains) rather than left for the schedule to ask for vectorization in vain."""
    if extent <= 0:
        return []
    var = ctx.names.fresh("i")
    return [Loop(var, int(extent), tuple(body(var)), "unroll")]


def _zero(ctx: LowerContext, buffer: Buffer, start: Expr, count: int) -> list[Stmt]:
    return loop(ctx, count, lambda i: [Store(buffer, add(start, i), imm(0, buffer.dtype))])


# ---------------------------------------------------------------------------------------------
# max_pool2d_grad: per plane, each window's cotangent to the tap PyTorch's max pooling picks.


def _empty_windows(size: int, out: int, kernel: int, stride: int, pad: int, dilation: int
                   ) -> bool:
    """Whether some window along this axis has no tap inside the input (odd dilations)."""
    return any(all(not 0 <= o * stride - pad + k * dilation < size for k in range(kernel))
               for o in range(out))


def _scan_tap(statements: list[Stmt], ctx: LowerContext, value: Expr, best: Expr,
              infinity: Expr) -> tuple[Expr, Expr]:
    """One step of PyTorch's max-pool scan over a window's taps in row-major order: whether
    the tap is taken (not <= the best so far: a greater value, a NaN, or the window's first
    tap against the unset NaN), and the value to keep as the best (+inf for a NaN, so that
    no later tap replaces it but another NaN)."""
    take = let(statements, ctx, Unary("not", Binary("le", value, best)), "take")
    return take, Select(Binary("ne", value, value), infinity, value)


@lowers("max_pool2d_grad")
def lower_max_pool2d_grad(node: Node, ctx: LowerContext) -> list[Stmt]:
    """Loop order: plane (parallel; its dx zeroed first), oh, then the forward's tap loops
    (`window_rows`, `window_columns`: kh, kw, and ow innermost over the static range of output
    columns whose tap lies inside the input, so no padding test), which keep each window's
    best value and position in a row of scratch (one row per plane, so threads never share
    one): a tap is taken when greater than the best, or NaN, or the window's first inside the
    input. The taps of one window are met in row-major order, which is PyTorch's scan. Each
    window's cotangent is then added at its position (overlapping windows may pick the same
    one, hence a serial loop for that)."""
    x_buffer, gy_buffer = ctx.inputs
    dx = ctx.outputs[0]
    dtype = dx.dtype
    batch, channels, height, width = ctx.input_types[0].shape
    out_h, out_w = ctx.input_types[1].shape[2:]
    kernel, stride = node.attrs["kernel"], node.attrs["stride"]
    padding, dilation = node.attrs["padding"], node.attrs["dilation"]
    planes = batch * channels
    if (tuple(stride) == tuple(kernel) and not any(padding) and tuple(dilation) == (1, 1)
            and out_h * kernel[0] <= height and out_w * kernel[1] <= width):
        return _tiled_max_pool2d_grad(ctx, planes, (height, width), (out_h, out_w),
                                      tuple(kernel))
    may_be_empty = (_empty_windows(height, out_h, kernel[0], stride[0], padding[0], dilation[0])
                    or _empty_windows(width, out_w, kernel[1], stride[1], padding[1],
                                      dilation[1]))
    # Positions within a plane, in i32 where they fit: twice the vector lanes of i64.
    position_type = DType.I32 if height * width < 2**31 else I64
    best = ctx.scratch(dtype, planes * out_w, "best")
    chosen = ctx.scratch(position_type, planes * out_w, "arg")
    unset = imm(float("nan"), dtype)
    infinity = imm(float("inf"), dtype)

    def plane(p: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        x_plane = let(statements, ctx, mul(p, index_imm(height * width)), "x")
        g_plane = let(statements, ctx, mul(p, index_imm(out_h * out_w)), "g")
        row = let(statements, ctx, mul(p, index_imm(out_w)), "r")
        statements += _zero(ctx, dx, x_plane, height * width)

        def output_row(oh: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            local += loop(ctx, out_w, lambda ow: [Store(best, add(row, ow), unset),
                                                  Store(chosen, add(row, ow),
                                                        imm(-1, position_type))])

            def kernel_row(kh: Expr, ih: Expr) -> list[Stmt]:
                rows: list[Stmt] = []
                x_row = let(rows, ctx, mul(ih, index_imm(width)), "xr")

                def column(kw: Expr):
                    def pixel(ow: Expr, iw: Expr) -> list[Stmt]:
                        taps: list[Stmt] = []
                        slot = let(taps, ctx, add(row, ow), "s")
                        position = let(taps, ctx, add(x_row, iw), "q")
                        value = let(taps, ctx, Load(x_buffer, add(x_plane, position)), "v")
                        so_far = let(taps, ctx, Load(best, slot), "b")
                        flag, kept = _scan_tap(taps, ctx, value, so_far, infinity)
                        stored = position if position_type is I64 else Cast(position,
                                                                              position_type)
                        return [*taps, Store(best, slot, Select(flag, kept, so_far)),
                                Store(chosen, slot, Select(flag, stored, Load(chosen, slot)))]

                    return [], pixel

                return rows + window_columns(
                    ctx, kernel=kernel[1], stride=stride[1], pad=padding[1], dilation=dilation[1],
                    size=width, out=out_w, body=column)

            local += window_rows(ctx, oh, kernel=kernel[0], stride=stride[0], pad=padding[0],
                                 dilation=dilation[0], size=height, out=out_h, body=kernel_row)
            g_row = let(local, ctx, add(g_plane, mul(oh, index_imm(out_w))), "gr")

            def scatter(ow: Expr) -> list[Stmt]:
                inner: list[Stmt] = []
                loaded = Load(chosen, add(row, ow))
                at = let(inner, ctx, loaded if position_type is I64 else Cast(loaded, I64), "a")
                update = accumulate(dx, add(x_plane, at), Load(gy_buffer, add(g_row, ow)))
                if may_be_empty:
                    return [*inner, If(Binary("ge", at, index_imm(0)), (update,))]
                return [*inner, update]

            return local + scatter_loop(ctx, out_w, scatter)

        return statements + loop(ctx, out_h, output_row)

    return outer_loop(ctx, planes, plane)


def _tiled_max_pool2d_grad(ctx: LowerContext, planes: int, size: tuple[int, int],
                           out: tuple[int, int], kernel: tuple[int, int]) -> list[Stmt]:
    """Windows that tile the input (stride = kernel, no padding, no dilation: 2x2 pools):
    every dx element is in one window at most, so each window writes its own taps once, its
    cotangent at the chosen tap and zero at the others, with no zeroing pass and no scatter.
    The choice is the general rule's scan (row-major taps; a tap is taken when not <= the best
    so far, so the first tap and NaN win; a NaN is kept as +inf), done in registers. The loop
    over a row's windows reads and writes x and dx at the kernel's stride, which the loop
    vectorizer handles as interleaved accesses. Rows and columns past the last whole window
    are zero."""
    x_buffer, gy_buffer = ctx.inputs
    dx = ctx.outputs[0]
    dtype, (height, width), (out_h, out_w), (kh, kw) = dx.dtype, size, out, kernel
    unset, infinity = imm(float("nan"), dtype), imm(float("inf"), dtype)
    zero = imm(0, dtype)

    def plane(p: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        x_plane = let(statements, ctx, mul(p, index_imm(height * width)), "x")
        g_plane = let(statements, ctx, mul(p, index_imm(out_h * out_w)), "g")

        def output_row(oh: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            top = let(local, ctx, add(x_plane, mul(oh, index_imm(kh * width))), "xt")
            g_row = let(local, ctx, add(g_plane, mul(oh, index_imm(out_w))), "gr")

            def window(ow: Expr) -> list[Stmt]:
                body: list[Stmt] = []
                left = let(body, ctx, add(top, mul(ow, index_imm(kw))), "xl")
                best: Expr = unset
                chosen: Expr = imm(-1, DType.I32)
                taps = [add(left, index_imm(a * width + b)) for a in range(kh) for b in range(kw)]
                for number, tap in enumerate(taps):
                    value = let(body, ctx, Load(x_buffer, tap), "v")
                    take, kept = _scan_tap(body, ctx, value, best, infinity)
                    best = let(body, ctx, Select(take, kept, best), "b")
                    chosen = let(body, ctx, Select(take, imm(number, DType.I32), chosen), "c")
                gradient = let(body, ctx, Load(gy_buffer, add(g_row, ow)), "gv")
                for number, tap in enumerate(taps):
                    hit = Binary("eq", chosen, imm(number, DType.I32))
                    body.append(Store(dx, tap, Select(hit, gradient, zero)))
                return body

            local += loop(ctx, out_w, window)
            if width > out_w * kw:  # columns past the last window
                for a in range(kh):
                    start = add(top, index_imm(a * width + out_w * kw))
                    local += _zero(ctx, dx, start, width - out_w * kw)
            return local

        statements += loop(ctx, out_h, output_row)
        if height > out_h * kh:  # rows past the last window
            statements += _zero(ctx, dx, add(x_plane, index_imm(out_h * kh * width)),
                                (height - out_h * kh) * width)
        return statements

    return outer_loop(ctx, planes, plane)


# ---------------------------------------------------------------------------------------------
# The average pools' gradients: each dx element gathers from the windows that cover it.


class _Axis:
    """One spatial axis of an average pool's backward: which windows cover input position i
    (a run [first, last] of window indices) and each window's divisor, as loop IR, plus the
    static counts of covering windows (the most, and the fewest over all positions)."""

    def __init__(self, first: Callable[[Expr], Expr], last: Callable[[Expr], Expr],
                 divisor: Callable[[Expr], Expr], counts: Sequence[int]) -> None:
        self.first, self.last, self.divisor = first, last, divisor
        self.most, self.fewest = max(counts, default=0), min(counts, default=0)


def _avg_axis(size: int, out: int, kernel: int, stride: int, pad_lo: int, pad_hi: int,
              count_include_pad: bool) -> _Axis:
    """Window o spans [o * stride - pad_lo, + kernel): it covers i for o in
    [ceil((i + pad_lo - kernel + 1) / stride), floor((i + pad_lo) / stride)], within [0, out);
    its divisor is the forward's (clipped to the padded input, or to the input)."""

    def first(i: Expr) -> Expr:
        reach = Binary("max", add(i, index_imm(pad_lo - kernel + 1)), index_imm(0))
        return div(add(reach, index_imm(stride - 1)), stride)

    def last(i: Expr) -> Expr:
        return Binary("min", div(add(i, index_imm(pad_lo)), stride), index_imm(out - 1))

    def divisor(o: Expr) -> Expr:
        start = add(mul(o, index_imm(stride)), index_imm(-pad_lo))
        end = Binary("min", add(start, index_imm(kernel)), index_imm(size + pad_hi))
        if count_include_pad:
            return sub(end, start)
        return sub(Binary("min", end, index_imm(size)), Binary("max", start, index_imm(0)))

    def covering(i: int) -> int:
        low = -(-max(i + pad_lo - kernel + 1, 0) // stride)
        return max(0, min((i + pad_lo) // stride, out - 1) - low + 1)

    return _Axis(first, last, divisor, [covering(i) for i in range(size)])


def _adaptive_axis(size: int, out: int) -> _Axis:
    """Window o spans [floor(o * size / out), ceil((o + 1) * size / out)): it covers i for o in
    [floor(i * out / size), floor(((i + 1) * out - 1) / size)], within [0, out)."""
    bounds = adaptive_bounds(size, out)

    def first(i: Expr) -> Expr:
        return div(mul(i, index_imm(out)), size)

    def last(i: Expr) -> Expr:
        end = div(add(mul(i, index_imm(out)), index_imm(out - 1)), size)
        return Binary("min", end, index_imm(out - 1))

    def divisor(o: Expr) -> Expr:
        start = div(mul(o, index_imm(size)), out)
        return sub(div(add(mul(o, index_imm(size)), index_imm(size + out - 1)), out), start)

    counts = [sum(lo <= i < hi for lo, hi in bounds) for i in range(size)]
    return _Axis(first, last, divisor, counts)


def _windows(ctx: LowerContext, axis: _Axis, first: Expr, last: Expr,
             body: Callable[[Expr], Sequence[Stmt]]) -> list[Stmt]:
    """body(o) for each window o in [first, last]: unrolled (tested only past the fewest
    covering windows) when few windows cover an element, else a loop that tests each."""

    def window(a: Expr, tested: bool) -> list[Stmt]:
        statements: list[Stmt] = []
        o = let(statements, ctx, add(first, a), "o")
        inner = list(body(o))
        if not tested:
            return statements + inner
        return [*statements, If(Binary("le", o, last), tuple(inner))]

    if axis.most > UNROLL_WINDOWS:
        return loop(ctx, axis.most, lambda a: window(a, True))
    return [s for a in range(axis.most) for s in window(index_imm(a), a >= axis.fewest)]


def _gather_windows(ctx: LowerContext, gy_buffer: Buffer, dx: Buffer, rows: _Axis,
                    cols: _Axis, planes: int, in_hw: tuple[int, int],
                    out_hw: tuple[int, int]) -> list[Stmt]:
    """dx[p, i, j] = sum over the windows (oh, ow) covering (i, j) of gy[p, oh, ow] divided by
    the window's divisor. Loop order: plane (parallel); first each window's share, gy over its
    divisor, into scratch (one division per window, not one per element and window); then i,
    j (contiguous stores), and the covering windows' shares summed in a register."""
    dtype = dx.dtype
    height, width = in_hw
    out_h, out_w = out_hw
    shares = ctx.scratch(dtype, planes * out_h * out_w, "share")

    def plane(p: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        g_plane = let(statements, ctx, mul(p, index_imm(out_h * out_w)), "g")
        x_plane = let(statements, ctx, mul(p, index_imm(height * width)), "x")

        def share_row(oh: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            g_row = let(local, ctx, add(g_plane, mul(oh, index_imm(out_w))), "gr")
            high = let(local, ctx, rows.divisor(oh), "dh")

            def share(ow: Expr) -> list[Stmt]:
                count = Cast(mul(high, cols.divisor(ow)), dtype)
                value = Binary("div", Load(gy_buffer, add(g_row, ow)), count)
                return [Store(shares, add(g_row, ow), value)]

            return local + loop(ctx, out_w, share)

        statements += loop(ctx, out_h, share_row)

        def input_row(i: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            top = let(local, ctx, rows.first(i), "oh")
            bottom = let(local, ctx, rows.last(i), "oh")
            x_row = let(local, ctx, add(x_plane, mul(i, index_imm(width))), "xr")

            def input_pixel(j: Expr) -> list[Stmt]:
                inner: list[Stmt] = []
                left = let(inner, ctx, cols.first(j), "ow")
                right = let(inner, ctx, cols.last(j), "ow")
                total = ctx.names.fresh("acc", dtype)
                inner.append(Local(total, imm(0, dtype)))

                def window_row(oh: Expr) -> list[Stmt]:
                    row: list[Stmt] = []
                    g_row = let(row, ctx, add(g_plane, mul(oh, index_imm(out_w))), "gr")

                    def window(ow: Expr) -> list[Stmt]:
                        value = Load(shares, add(g_row, ow))
                        return [Assign(total, Binary("add", total, value))]

                    return row + _windows(ctx, cols, left, right, window)

                inner += _windows(ctx, rows, top, bottom, window_row)
                return [*inner, Store(dx, add(x_row, j), total)]

            return local + loop(ctx, width, input_pixel)

        return statements + loop(ctx, height, input_row)

    return outer_loop(ctx, planes, plane)


@lowers("avg_pool2d_grad")
def lower_avg_pool2d_grad(node: Node, ctx: LowerContext) -> list[Stmt]:
    """Each dx element from the windows that cover it (see `_gather_windows`)."""
    batch, channels, height, width = ctx.output_types[0].shape
    out_h, out_w = ctx.input_types[0].shape[2:]
    kernel, stride, padding = node.attrs["kernel"], node.attrs["stride"], node.attrs["padding"]
    include = bool(node.attrs["count_include_pad"])
    rows = _avg_axis(height, out_h, kernel[0], stride[0], padding[0], padding[2], include)
    cols = _avg_axis(width, out_w, kernel[1], stride[1], padding[1], padding[3], include)
    return _gather_windows(ctx, ctx.inputs[0], ctx.outputs[0], rows, cols, batch * channels,
                           (height, width), (out_h, out_w))


@lowers("adaptive_avg_pool2d_grad")
def lower_adaptive_avg_pool2d_grad(node: Node, ctx: LowerContext) -> list[Stmt]:
    """Each dx element from the adaptive windows that cover it (see `_gather_windows`)."""
    batch, channels, height, width = ctx.output_types[0].shape
    out_h, out_w = ctx.input_types[0].shape[2:]
    return _gather_windows(ctx, ctx.inputs[0], ctx.outputs[0], _adaptive_axis(height, out_h),
                           _adaptive_axis(width, out_w), batch * channels, (height, width),
                           (out_h, out_w))


# ---------------------------------------------------------------------------------------------
# scatter_add: gather's backward.


@lowers("scatter_add")
def lower_scatter_add(node: Node, ctx: LowerContext) -> list[Stmt]:
    """Zero the output; check every index (one outside [-size, size) raises ExecutionError);
    then loops [outer, index, inner]: each index adds one contiguous row of `inner` elements of
    gy to the output row it names (negative ones wrap; clamped so that even a call that raises
    never writes outside the output)."""
    index_type = ctx.input_types[1]
    gy_buffer, indices = ctx.inputs
    out = ctx.outputs[0]
    out_shape = ctx.output_types[0].shape
    axis = normalize_axis(int(node.attrs["axis"]), len(out_shape))  # type: ignore[arg-type]
    size = out_shape[axis]
    outer = math.prod(out_shape[:axis])
    inner = math.prod(out_shape[axis + 1 :])
    count = index_type.size
    statements: list[Stmt] = list(outer_loop(ctx, out.size, lambda i: [
        Store(out, i, imm(0, out.dtype))]))
    if count == 0:
        return statements
    statements += index_check(ctx, indices, count, size, axis)
    if size == 0 or inner == 0 or outer == 0:
        return statements

    def row(r: Expr) -> list[Stmt]:
        def index_row(k: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            raw = let(local, ctx, load_index(indices, k), "t")
            wrapped = let(local, ctx, Select(Binary("lt", raw, index_imm(0)),
                                             add(raw, index_imm(size)), raw), "t")
            inside = Binary("and", Binary("ge", wrapped, index_imm(0)),
                            Binary("lt", wrapped, index_imm(size)))
            safe = let(local, ctx, Select(inside, wrapped, index_imm(0)), "t")
            target = let(local, ctx, mul(add(mul(r, index_imm(size)), safe), index_imm(inner)),
                         "o")
            source = let(local, ctx, mul(add(mul(r, index_imm(count)), k), index_imm(inner)),
                         "s")
            return local + loop(ctx, inner, lambda q: [
                accumulate(out, add(target, q), Load(gy_buffer, add(source, q)))])

        if inner >= MIN_VECTOR_EXTENT:  # the row loop inside vectorizes
            return loop(ctx, count, index_row)
        return scatter_loop(ctx, count, index_row)

    return [*statements, *outer_loop(ctx, outer, row)]
