"""matmul, conv2d and the NCHW pools as loop nests.

Every rule here keeps the innermost loop on a contiguous run of the output (a row of C, a row
of output pixels), so LLVM vectorizes it, and accumulates in that row: an output row of a few
hundred elements stays in L1 while the reduction loops around it stream the inputs once.

Sliding windows never test padding per element. The shapes are static, so for each kernel
column `kw` the output columns `ow` whose input column `iw = ow * stride - pad + kw * dilation`
falls inside the input form one contiguous range known at compile time: `window_columns`
unrolls `kw` and gives each its own loop over exactly that range. Kernel rows are checked once
per output row and kernel row (`window_rows`), and only when the padding can be reached.
`ops_layout` reuses both helpers for the blocked-layout ops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ember.ir.ops import broadcast_shapes
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
    sum_start,
)
from ember.lower.rules import LowerContext, lowers

I64 = DType.I64
UNROLL_KERNEL_COLUMNS = 32  # wider kernels loop over kw and test each column instead

Body = Callable[[Expr], Sequence[Stmt]]


# ---------------------------------------------------------------------------------------------
# Small builders shared with ops_layout.


def let(statements: list[Stmt], ctx: LowerContext, value: Expr, prefix: str = "t") -> Expr:
    """Bind `value` to a fresh Let appended to `statements` (constants and vars stay as is)."""
    if isinstance(value, (Var, Imm)):
        return value
    var = ctx.names.fresh(prefix, value.dtype)
    statements.append(Let(var, value))
    return var


def loop(ctx: LowerContext, extent: int, body: Body) -> list[Stmt]:
    """`for (i = 0; i < extent; i++) body(i)`; a single iteration is inlined with i = 0."""
    if extent <= 0:
        return []
    if extent == 1:
        return list(body(index_imm(0)))
    var = ctx.names.fresh("i")
    return [Loop(var, int(extent), tuple(body(var)))]


def outer_loop(ctx: LowerContext, extent: int, body: Body) -> list[Stmt]:
    """The outermost loop of a rule: a real loop even of one iteration.

    The schedule runs top-level loops in parallel, so only a loop whose iterations write
    disjoint outputs may be at the top: inlining a single iteration here would lift a
    reduction loop (k, c, kh, kw) there and make threads race on the same outputs.
    """
    if extent <= 0:
        return []
    var = ctx.names.fresh("i")
    return [Loop(var, int(extent), tuple(body(var)))]


def sub(a: Expr, b: Expr) -> Expr:
    if isinstance(b, Imm) and b.value == 0:
        return a
    if isinstance(a, Imm) and isinstance(b, Imm):
        return Imm(a.value - b.value, a.dtype)
    return Binary("sub", a, b)


def div(a: Expr, b: int) -> Expr:
    """a / b for a non-negative index."""
    if b == 1:
        return a
    if isinstance(a, Imm):
        return index_imm(int(a.value) // b)
    return Binary("div", a, index_imm(b))


def rem(a: Expr, b: int) -> Expr:
    """a % b for a non-negative index."""
    if b == 1:
        return index_imm(0)
    if isinstance(a, Imm):
        return index_imm(int(a.value) % b)
    return Binary("rem", a, index_imm(b))


def split(statements: list[Stmt], ctx: LowerContext, index: Expr, outer: int, inner: int
          ) -> tuple[Expr, Expr]:
    """(index / inner, index % inner) of a merged loop over outer x inner, as Lets."""
    if outer == 1:
        return index_imm(0), index
    return let(statements, ctx, div(index, inner), "n"), let(statements, ctx, rem(index, inner))


def fill_range(ctx: LowerContext, buffer: Buffer, base: Expr, start: int, stop: int,
               value: Expr) -> list[Stmt]:
    """buffer[base + start : base + stop] = value, front to back (nothing for an empty range)."""
    return loop(ctx, stop - start, lambda i: [Store(buffer, add(base, add(i, index_imm(start))),
                                                    value)])


def both(a: Expr | None, b: Expr | None) -> Expr | None:
    if a is None:
        return b
    return a if b is None else Binary("and", a, b)


def accumulate(buffer: Buffer, index: Expr, value: Expr, op: str = "add") -> Store:
    """buffer[index] = buffer[index] <op> value."""
    return Store(buffer, index, Binary(op, Load(buffer, index), value))


def lowest(dtype: DType) -> Imm:
    """The identity of max: -inf, or the smallest integer."""
    if dtype.is_float:
        return imm(float("-inf"), dtype)
    return imm(dtype.int_range[0], dtype)


# ---------------------------------------------------------------------------------------------
# Sliding windows.


def window_rows(ctx: LowerContext, out_row: Expr, *, kernel: int, stride: int, pad: int,
                dilation: int, size: int, out: int,
                body: Callable[[Expr, Expr], Sequence[Stmt]],
                padded: Callable[[Expr], Sequence[Stmt]] | None = None) -> list[Stmt]:
    """For each kernel row kh: ih = out_row * stride - pad + kh * dilation, and body(kh, ih)
    when 0 <= ih < size. The test is emitted only for the sides the padding can reach.
    `padded(kh)`, when given, is emitted for the kernel rows that lie in the padding."""

    def row(kh: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        start = add(mul(out_row, index_imm(stride)), index_imm(-pad))
        ih = let(statements, ctx, add(start, mul(kh, index_imm(dilation))), "ih")
        below = Binary("ge", ih, index_imm(0)) if pad > 0 else None
        last = (out - 1) * stride - pad + (kernel - 1) * dilation
        above = Binary("lt", ih, index_imm(size)) if last >= size else None
        check = both(below, above)
        inner = list(body(kh, ih))
        if check is None:
            return statements + inner
        orelse = tuple(padded(kh)) if padded is not None else ()
        return [*statements, If(check, tuple(inner), orelse)]

    return loop(ctx, kernel, row)


ColumnBody = Callable[[Expr], tuple[Sequence[Stmt], Callable[[Expr, Expr], Sequence[Stmt]]]]
# padded(kw) -> (hoisted statements, guard or None, pixel(ow) -> statements)
PaddedBody = Callable[[Expr], tuple[Sequence[Stmt], Expr | None,
                                    Callable[[Expr], Sequence[Stmt]]]]


def window_columns(ctx: LowerContext, *, kernel: int, stride: int, pad: int, dilation: int,
                   size: int, out: int, body: ColumnBody,
                   padded: PaddedBody | None = None) -> list[Stmt]:
    """Loops over every (kw, ow) whose input column iw = ow * stride - pad + kw * dilation lies
    in [0, size). `body(kw)` returns the statements hoisted out of the ow loop (weight loads)
    and a function `(ow, iw) -> statements` for its body.

    `padded(kw)`, when given, covers the (kw, ow) whose input column is padding: its hoisted
    statements, then its pixel function over those ow, all under its guard (when not None).

    Kernels up to UNROLL_KERNEL_COLUMNS wide are unrolled over kw, each column with a loop over
    its own static range of ow: no test inside. Wider ones loop over kw and test each column.
    """
    statements: list[Stmt] = []
    if kernel > UNROLL_KERNEL_COLUMNS:
        def column(kw: Expr) -> list[Stmt]:
            hoisted, inner = body(kw)
            outside: tuple = ((), None, None) if padded is None else padded(kw)
            pad_hoisted, guard, pad_pixel = outside

            def pixel(ow: Expr) -> list[Stmt]:
                local: list[Stmt] = []
                iw = let(local, ctx, add(add(mul(ow, index_imm(stride)), index_imm(-pad)),
                                         mul(kw, index_imm(dilation))), "iw")
                check = both(Binary("ge", iw, index_imm(0)), Binary("lt", iw, index_imm(size)))
                orelse = () if pad_pixel is None else guarded(guard, pad_pixel(ow))
                return [*local, If(check, tuple(inner(ow, iw)), orelse)]

            return [*hoisted, *pad_hoisted, *loop(ctx, out, pixel)]

        return loop(ctx, kernel, column)
    for kw in range(kernel):
        offset = kw * dilation - pad
        first = min(out, max(0, -(offset // stride)))  # smallest ow with ow * stride + offset >= 0
        end = min(out, (size - 1 - offset) // stride + 1) if size - 1 - offset >= 0 else 0
        end = max(end, first)
        if padded is not None and (first > 0 or end < out):
            pad_hoisted, guard, pad_pixel = padded(index_imm(kw))
            outside = [*loop(ctx, first, pad_pixel),
                       *loop(ctx, out - end, lambda j, end=end, pad_pixel=pad_pixel:
                             pad_pixel(add(j, index_imm(end))))]
            statements += [*pad_hoisted, *guarded(guard, outside)]
        if end == first:
            continue
        hoisted, inner = body(index_imm(kw))

        def pixel(j: Expr, first: int = first, offset: int = offset, inner=inner) -> list[Stmt]:
            ow = add(j, index_imm(first))
            iw = add(mul(j, index_imm(stride)), index_imm(first * stride + offset))
            return list(inner(ow, iw))

        statements += [*hoisted, *loop(ctx, end - first, pixel)]
    return statements


def guarded(guard: Expr | None, statements: Sequence[Stmt]) -> tuple[Stmt, ...]:
    """`statements`, under `if (guard)` when there is a guard."""
    if guard is None:
        return tuple(statements)
    return (If(guard, tuple(statements)),) if statements else ()


# ---------------------------------------------------------------------------------------------
# matmul.


@lowers("matmul")
def lower_matmul(node, ctx: LowerContext) -> list[Stmt]:
    """C = A @ B with numpy's rules (1-D operands promoted, batch dimensions broadcast).

    Loop order: batch..., i, then k, then j innermost. Row i of C is zeroed, then for each k
    the scalar A[i, k] is hoisted and row k of B is added into row i of C: the j loop reads B
    and writes C contiguously and vectorizes, and C's row stays in L1 over the k loop. A
    product with a single column (matrix-vector) is a dot product per row instead, summed in
    a register (a vectorized reduction).
    """
    a_type, b_type = ctx.input_types
    a_buffer, b_buffer = ctx.inputs
    c_buffer = ctx.outputs[0]
    dtype = ctx.output_types[0].dtype
    a_shape = (1, *a_type.shape) if a_type.ndim == 1 else a_type.shape
    b_shape = (*b_type.shape, 1) if b_type.ndim == 1 else b_type.shape
    rows, depth = a_shape[-2:]
    columns = b_shape[-1]
    batch = broadcast_shapes(a_shape[:-2], b_shape[:-2])
    a_strides = [s * rows * depth for s in broadcast_strides(a_shape[:-2], batch)]
    b_strides = [s * depth * columns for s in broadcast_strides(b_shape[:-2], batch)]
    c_strides = [s * rows * columns for s in strides_of(batch)]

    def matrix(batch_index: list[Var]) -> list[Stmt]:
        statements: list[Stmt] = []
        a_base = let(statements, ctx, linear_index(batch_index, a_strides), "a")
        b_base = let(statements, ctx, linear_index(batch_index, b_strides), "b")
        c_base = let(statements, ctx, linear_index(batch_index, c_strides), "c")

        def row(i: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            a_row = let(local, ctx, add(a_base, mul(i, index_imm(depth))), "a")
            c_row = let(local, ctx, add(c_base, mul(i, index_imm(columns))), "c")
            if columns == 1:
                total = ctx.names.fresh("acc", dtype)
                local.append(Local(total, imm(0, dtype)))
                local += loop(ctx, depth, lambda k: [Assign(total, Binary("add", total, Binary(
                    "mul", Load(a_buffer, add(a_row, k)), Load(b_buffer, add(b_base, k)))))])
                local.append(Store(c_buffer, c_row, total))
                return local
            local += loop(ctx, columns, lambda j: [Store(c_buffer, add(c_row, j), imm(0, dtype))])

            def step(k: Expr) -> list[Stmt]:
                inner: list[Stmt] = []
                a_value = let(inner, ctx, Load(a_buffer, add(a_row, k)), "x")
                b_row = let(inner, ctx, add(b_base, mul(k, index_imm(columns))), "b")
                inner += loop(ctx, columns, lambda j: [accumulate(c_buffer, add(c_row, j), Binary(
                    "mul", a_value, Load(b_buffer, add(b_row, j))))])
                return inner

            return local + loop(ctx, depth, step)

        if batch:
            return statements + loop(ctx, rows, row)
        return statements + outer_loop(ctx, rows, row)  # rows of C: disjoint writes

    return list(loop_nest(ctx.names, batch, matrix))


@lowers("matmul_nt")
def lower_matmul_nt(node, ctx: LowerContext) -> list[Stmt]:
    """C = A @ B.T for A [M, K], B [N, K]: one dot product per element, both operands read
    contiguously along k (a vectorized reduction), rows of C in parallel."""
    a_type, b_type = ctx.input_types
    a_buffer, b_buffer = ctx.inputs
    c_buffer = ctx.outputs[0]
    dtype = ctx.output_types[0].dtype
    rows, depth = a_type.shape
    columns = b_type.shape[0]

    def row(i: Expr) -> list[Stmt]:
        local: list[Stmt] = []
        a_row = let(local, ctx, mul(i, index_imm(depth)), "a")
        c_row = let(local, ctx, mul(i, index_imm(columns)), "c")

        def column(j: Expr) -> list[Stmt]:
            inner: list[Stmt] = []
            b_row = let(inner, ctx, mul(j, index_imm(depth)), "b")
            total = ctx.names.fresh("acc", dtype)
            inner.append(Local(total, imm(0, dtype)))
            inner += loop(ctx, depth, lambda k: [Assign(total, Binary("add", total, Binary(
                "mul", Load(a_buffer, add(a_row, k)), Load(b_buffer, add(b_row, k)))))])
            inner.append(Store(c_buffer, add(c_row, j), total))
            return inner

        return local + loop(ctx, columns, column)

    return list(outer_loop(ctx, rows, row))


# ---------------------------------------------------------------------------------------------
# conv2d.


@lowers("conv2d")
def lower_conv2d(node, ctx: LowerContext) -> list[Stmt]:
    """Direct convolution, NCHW input, OIHW weight, with groups.

    Loop order: (n, o) as one loop (parallel over images and output channels), oh, then
    c (input channels of o's group), kh, kw (unrolled), ow innermost. The output row
    out[n, o, oh, :] is set to the bias, then each (c, kh, kw) adds weight * an input row into
    it: the weight is one hoisted scalar, the row update vectorizes (contiguous stores, input
    read at stride `stride_w`), and the padding costs one test per (oh, kh) plus a static ow
    range per kw.
    """
    x_type, w_type = ctx.input_types[:2]
    x_buffer, w_buffer = ctx.inputs[:2]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    out = ctx.outputs[0]
    dtype = x_type.dtype
    attrs = node.attrs
    stride, padding, dilation = attrs["stride"], attrs["padding"], attrs["dilation"]
    groups = attrs["groups"]
    _, channels, height, width = x_type.shape
    out_channels, group_channels, kernel_h, kernel_w = w_type.shape
    batch, _, out_h, out_w = ctx.output_types[0].shape
    per_group = out_channels // groups
    # A tap that reads the zero padding adds weight * 0: nothing, unless the weight is inf or
    # NaN (0 * inf is NaN). Constant finite weights skip those taps; any other weight tests
    # each tap's weight * 0 and adds it (NaN) to the outputs it reaches only when it is NaN.
    weights = ctx.constant_data(1)
    finite = weights is not None and bool(np.isfinite(weights).all())

    def padding_tap(w_index: Expr, row: Expr):
        hoisted: list[Stmt] = []
        poison = let(hoisted, ctx, Binary("mul", Load(w_buffer, w_index), imm(0, dtype)), "z")
        return hoisted, Binary("ne", poison, imm(0, dtype)), lambda ow: [
            accumulate(out, add(row, ow), poison)]

    def image_channel(no: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        n, o = split(statements, ctx, no, batch, out_channels)
        group = div(o, per_group) if groups > 1 else index_imm(0)
        x_base = let(statements, ctx, add(mul(n, index_imm(channels * height * width)),
                                          mul(group, index_imm(group_channels * height * width))),
                     "x")
        start = sum_start(Load(bias, o) if bias is not None else None, dtype)
        initial = let(statements, ctx, start, "bias")

        def output_row(oh: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            row = let(local, ctx, mul(add(mul(no, index_imm(out_h)), oh), index_imm(out_w)), "r")
            local += loop(ctx, out_w, lambda ow: [Store(out, add(row, ow), initial)])

            def channel(c: Expr) -> list[Stmt]:
                inner: list[Stmt] = []
                x_channel = let(inner, ctx, add(x_base, mul(c, index_imm(height * width))), "xc")
                w_channel = let(inner, ctx, mul(add(mul(o, index_imm(group_channels)), c),
                                                index_imm(kernel_h * kernel_w)), "wc")

                def kernel_row(kh: Expr, ih: Expr) -> list[Stmt]:
                    rows: list[Stmt] = []
                    x_row = let(rows, ctx, add(x_channel, mul(ih, index_imm(width))), "xr")
                    w_row = let(rows, ctx, add(w_channel, mul(kh, index_imm(kernel_w))), "wr")

                    def column(kw: Expr):
                        hoisted: list[Stmt] = []
                        weight = let(hoisted, ctx, Load(w_buffer, add(w_row, kw)), "w")
                        return hoisted, lambda ow, iw: [accumulate(out, add(row, ow), Binary(
                            "mul", weight, Load(x_buffer, add(x_row, iw))))]

                    return rows + window_columns(
                        ctx, kernel=kernel_w, stride=stride[1], pad=padding[1],
                        dilation=dilation[1], size=width, out=out_w, body=column,
                        padded=None if finite else lambda kw: padding_tap(
                            add(w_row, kw), row))

                def padded_row(kh: Expr) -> list[Stmt]:
                    taps: list[Stmt] = []
                    w_row = let(taps, ctx, add(w_channel, mul(kh, index_imm(kernel_w))), "wr")

                    def tap(kw: Expr) -> list[Stmt]:
                        hoisted, guard, pixel = padding_tap(add(w_row, kw), row)
                        return [*hoisted, *guarded(guard, loop(ctx, out_w, pixel))]

                    return taps + loop(ctx, kernel_w, tap)

                return inner + window_rows(
                    ctx, oh, kernel=kernel_h, stride=stride[0], pad=padding[0],
                    dilation=dilation[0], size=height, out=out_h, body=kernel_row,
                    padded=None if finite else padded_row)

            return local + loop(ctx, group_channels, channel)

        return statements + loop(ctx, out_h, output_row)

    return outer_loop(ctx, batch * out_channels, image_channel)


# ---------------------------------------------------------------------------------------------
# Pooling: NCHW is the blocked form with blocks of one channel.


def pool_loops(ctx: LowerContext, x_buffer: Buffer, out: Buffer, *, planes: int, block_size: int,
               in_hw: tuple[int, int], out_hw: tuple[int, int], kernel: Sequence[int],
               stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
               kind: str, count_include_pad: bool = True) -> list[Stmt]:
    """Max or average pooling over `planes` images of [H, W, block] (block innermost).

    Loop order: plane (parallel), oh, kh, kw (unrolled), ow, then the channel block innermost
    (for a block of one, ow is innermost). The output row is initialized (-inf or 0), each
    kernel tap folds an input row into it (max, or add) over the static ow range the tap
    reaches, and average pooling then divides each element by its window's size (PyTorch's
    divisor: windows clipped to the padded input, or to the input without count_include_pad).
    """
    dtype = out.dtype
    height, width = in_hw
    out_h, out_w = out_hw
    op = "max" if kind == "max" else "add"
    initial = lowest(dtype) if kind == "max" else imm(0, dtype)

    def plane(p: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        x_plane = let(statements, ctx, mul(p, index_imm(height * width * block_size)), "x")

        def output_row(oh: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            row = let(local, ctx, mul(add(mul(p, index_imm(out_h)), oh),
                                      index_imm(out_w * block_size)), "r")
            local += loop(ctx, out_w * block_size, lambda j: [Store(out, add(row, j), initial)])

            def kernel_row(kh: Expr, ih: Expr) -> list[Stmt]:
                rows: list[Stmt] = []
                x_row = let(rows, ctx, add(x_plane, mul(ih, index_imm(width * block_size))), "xr")

                def column(kw: Expr):
                    def pixel(ow: Expr, iw: Expr) -> list[Stmt]:
                        o_pixel = add(row, mul(ow, index_imm(block_size)))
                        i_pixel = add(x_row, mul(iw, index_imm(block_size)))
                        return loop(ctx, block_size, lambda q: [accumulate(
                            out, add(o_pixel, q), Load(x_buffer, add(i_pixel, q)), op)])

                    return [], pixel

                return rows + window_columns(
                    ctx, kernel=kernel[1], stride=stride[1], pad=padding[1], dilation=dilation[1],
                    size=width, out=out_w, body=column)

            local += window_rows(ctx, oh, kernel=kernel[0], stride=stride[0], pad=padding[0],
                                 dilation=dilation[0], size=height, out=out_h, body=kernel_row)
            if kind == "avg":
                rows_divisor = let(local, ctx, _avg_divisor(oh, height, kernel[0], stride[0],
                                                            padding[0], padding[2],
                                                            count_include_pad), "dh")

                def scale(ow: Expr) -> list[Stmt]:
                    inner: list[Stmt] = []
                    count = mul(rows_divisor, _avg_divisor(ow, width, kernel[1], stride[1],
                                                           padding[1], padding[3],
                                                           count_include_pad))
                    divisor = let(inner, ctx, Cast(count, dtype), "d")
                    pixel = add(row, mul(ow, index_imm(block_size)))
                    return inner + loop(ctx, block_size, lambda q: [
                        accumulate(out, add(pixel, q), divisor, "div")])

                local += loop(ctx, out_w, scale)
            return local

        return statements + loop(ctx, out_h, output_row)

    return outer_loop(ctx, planes, plane)


def _avg_divisor(position: Expr, size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int,
                 count_include_pad: bool) -> Expr:
    """Window extent along one axis at output `position`: the reference's `_avg_divisors`."""
    start = add(mul(position, index_imm(stride)), index_imm(-pad_lo))
    end = Binary("min", add(start, index_imm(kernel)), index_imm(size + pad_hi))
    if count_include_pad:
        return sub(end, start)
    return sub(Binary("min", end, index_imm(size)), Binary("max", start, index_imm(0)))


@lowers("max_pool2d")
def lower_max_pool2d(node, ctx: LowerContext) -> list[Stmt]:
    """Max pooling, padding reading as -inf (see pool_loops for the loop order)."""
    batch, channels, height, width = ctx.input_types[0].shape
    attrs = node.attrs
    return pool_loops(ctx, ctx.inputs[0], ctx.outputs[0], planes=batch * channels, block_size=1,
                      in_hw=(height, width), out_hw=ctx.output_types[0].shape[2:],
                      kernel=attrs["kernel"], stride=attrs["stride"], padding=attrs["padding"],
                      dilation=attrs["dilation"], kind="max")


@lowers("avg_pool2d")
def lower_avg_pool2d(node, ctx: LowerContext) -> list[Stmt]:
    """Average pooling with ceil_mode and count_include_pad (see pool_loops)."""
    batch, channels, height, width = ctx.input_types[0].shape
    attrs = node.attrs
    return pool_loops(ctx, ctx.inputs[0], ctx.outputs[0], planes=batch * channels, block_size=1,
                      in_hw=(height, width), out_hw=ctx.output_types[0].shape[2:],
                      kernel=attrs["kernel"], stride=attrs["stride"], padding=attrs["padding"],
                      dilation=(1, 1), kind="avg",
                      count_include_pad=attrs["count_include_pad"])


@lowers("adaptive_avg_pool2d")
def lower_adaptive_avg_pool2d(node, ctx: LowerContext) -> list[Stmt]:
    """Adaptive average pooling: output (i, j) averages rows [floor(i*H/OH), ceil((i+1)*H/OH))
    and the matching columns.

    Loop order: plane (n, c), oh, ow, then the window's rows and columns, summed in a
    register. Where the output size divides the input size (global pooling, 14 -> 7) every
    window has the same static extent and the column loop is a plain vectorized reduction;
    otherwise the loops run to the widest window and test each row and column.
    """
    x_buffer, out = ctx.inputs[0], ctx.outputs[0]
    dtype = out.dtype
    batch, channels, height, width = ctx.input_types[0].shape
    out_h, out_w = node.attrs["output_size"]
    rows_of = _adaptive_axis(height, out_h)
    columns_of = _adaptive_axis(width, out_w)
    widest_rows = max(-(-((i + 1) * height) // out_h) - (i * height) // out_h for i in range(out_h))
    widest_columns = max(-(-((j + 1) * width) // out_w) - (j * width) // out_w
                         for j in range(out_w))

    def plane(p: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        x_plane = let(statements, ctx, mul(p, index_imm(height * width)), "x")

        def output_row(oh: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            top, row_count = rows_of(local, ctx, oh)

            def output_pixel(ow: Expr) -> list[Stmt]:
                inner: list[Stmt] = []
                left, column_count = columns_of(inner, ctx, ow)
                total = ctx.names.fresh("acc", dtype)
                inner.append(Local(total, imm(0, dtype)))

                def window_row(r: Expr) -> list[Stmt]:
                    rows: list[Stmt] = []
                    x_row = let(rows, ctx, add(x_plane, mul(add(top, r), index_imm(width))), "xr")
                    x_start = let(rows, ctx, add(x_row, left), "xs")

                    def window_column(s: Expr) -> list[Stmt]:
                        update: Stmt = Assign(total, Binary("add", total,
                                                            Load(x_buffer, add(x_start, s))))
                        if isinstance(column_count, Imm):
                            return [update]
                        return [If(Binary("lt", s, column_count), (update,))]

                    rows += loop(ctx, widest_columns, window_column)
                    if isinstance(row_count, Imm):
                        return rows
                    return [If(Binary("lt", r, row_count), tuple(rows))]

                inner += loop(ctx, widest_rows, window_row)
                count = Cast(mul(row_count, column_count), dtype)
                index = add(mul(add(mul(p, index_imm(out_h)), oh), index_imm(out_w)), ow)
                inner.append(Store(out, index, Binary("div", total, count)))
                return inner

            return local + loop(ctx, out_w, output_pixel)

        return statements + loop(ctx, out_h, output_row)

    return outer_loop(ctx, batch * channels, plane)


def _adaptive_axis(size: int, out: int):
    """(start, count) of output position i's window along one axis, as loop IR."""

    def window(statements: list[Stmt], ctx: LowerContext, i: Expr) -> tuple[Expr, Expr]:
        if size % out == 0:
            extent = index_imm(size // out)
            return let(statements, ctx, mul(i, extent), "ws"), extent
        start = let(statements, ctx, div(mul(i, index_imm(size)), out), "ws")
        end = div(add(mul(i, index_imm(size)), index_imm(size + out - 1)), out)
        return start, let(statements, ctx, sub(end, start), "wn")

    return window
