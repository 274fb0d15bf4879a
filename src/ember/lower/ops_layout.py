"""The blocked-layout ops as loop nests: layout_convert, conv2d_nchwc and the blocked pools.

A blocked value [N, C/b, H, W, b] (nchw<b>c) or [N, H, W, C] (nhwc, one block of all C
channels: the same memory as [N, 1, H, W, C]) keeps a channel block contiguous, so these rules
put the loop over the block innermost: it is contiguous in the input, the output and, for the
convolution, the packed weight. The sliding-window helpers of `ops_linalg` handle the padding.
"""

from __future__ import annotations

import numpy as np

from ember.ir.types import TensorType
from ember.lower.loops import (
    Binary,
    Expr,
    Load,
    Stmt,
    Store,
    add,
    imm,
    index_imm,
    mul,
    sum_start,
)
from ember.lower.ops_linalg import (
    accumulate,
    div,
    let,
    loop,
    outer_loop,
    pool_loops,
    rem,
    split,
    window_columns,
    window_rows,
)
from ember.lower.rules import LowerContext, lowers
from ember.ops.layout import block_size, logical_shape


def _blocks(type_: TensorType) -> tuple[int, int, int, int, int]:
    """(batch, blocks, height, width, block) of a blocked value (nhwc: a single block)."""
    batch, padded, height, width = logical_shape(type_)
    block = block_size(type_.layout, padded)
    return batch, padded // block, height, width, block


@lowers("layout_convert")
def lower_layout_convert(node, ctx: LowerContext) -> list[Stmt]:
    """NCHW -> blocked (zero-padding the last block) or blocked -> NCHW (cropping).

    To a blocked layout, loop order: n, channel block, pixel, channel within the block
    innermost (contiguous stores; the loads step by H*W). The full blocks copy; a partial last
    block copies its channels and stores zeros in the rest. From a blocked layout: n, channel,
    pixel innermost (contiguous stores; the loads step by the block).
    """
    x_buffer, out = ctx.inputs[0], ctx.outputs[0]
    dtype = out.dtype
    if node.attrs["layout"]:
        batch, channels, height, width = ctx.input_types[0].shape
        _, blocks, _, _, size = _blocks(ctx.output_types[0])
        pixels = height * width
        full, rest = divmod(channels, size)

        def copy(n: Expr, cb: Expr, width_: int, zero: bool = False, first: int = 0):
            def pixel(hw: Expr) -> list[Stmt]:
                target = add(mul(add(mul(add(mul(n, index_imm(blocks)), cb), index_imm(pixels)),
                                     hw), index_imm(size)), index_imm(first))

                def channel(q: Expr) -> list[Stmt]:
                    if zero:
                        return [Store(out, add(target, q), imm(0, dtype))]
                    c = add(add(mul(cb, index_imm(size)), index_imm(first)), q)
                    source = add(mul(add(mul(n, index_imm(channels)), c), index_imm(pixels)), hw)
                    return [Store(out, add(target, q), Load(x_buffer, source))]

                return loop(ctx, width_, channel)

            return loop(ctx, pixels, pixel)

        def image(n: Expr) -> list[Stmt]:
            statements = loop(ctx, full, lambda cb: copy(n, cb, size))
            if rest:
                last = index_imm(full)
                statements += copy(n, last, rest)
                statements += copy(n, last, size - rest, zero=True, first=rest)
            return statements

        return outer_loop(ctx, batch, image)

    batch, blocks, height, width, size = _blocks(ctx.input_types[0])
    channels = node.attrs["channels"]
    pixels = height * width

    def plane(nc: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        n, c = split(statements, ctx, nc, batch, channels)
        source = let(statements, ctx, add(
            mul(add(mul(n, index_imm(blocks)), div(c, size)), index_imm(pixels * size)),
            rem(c, size)), "s")
        target = let(statements, ctx, mul(nc, index_imm(pixels)), "r")
        return statements + loop(ctx, pixels, lambda hw: [Store(
            out, add(target, hw), Load(x_buffer, add(source, mul(hw, index_imm(size)))))])

    return outer_loop(ctx, batch * channels, plane)


@lowers("conv2d_nchwc")
def lower_conv2d_nchwc(node, ctx: LowerContext) -> list[Stmt]:
    """Convolution of a blocked input with a packed weight [O/ob, I/ib, KH, KW, ib, ob].

    Loop order: (n, output block) as one loop (parallel), oh, input block, kh, kw (unrolled,
    each over its static ow range), ow, input channel i of the block, then the output channel
    q of the block innermost: out[.., ow, q] += x[.., iw, i] * w[.., i, q]. The q loop is
    contiguous in both the weight and the output, one vector FMA per input channel at a block
    of 16 f32; the weights of one (kh, kw) tap (ib x ob) stay in L1 across the row.
    """
    x_type, w_type = ctx.input_types[:2]
    x_buffer, w_buffer = ctx.inputs[:2]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    out = ctx.outputs[0]
    dtype = out.dtype
    stride, padding, dilation = (node.attrs[k] for k in ("stride", "padding", "dilation"))
    batch, in_blocks, height, width, in_size = _blocks(x_type)
    out_blocks, _, kernel_h, kernel_w, _, out_size = w_type.shape
    _, _, out_h, out_w, _ = _blocks(ctx.output_types[0])
    tap = in_size * out_size  # weights of one kernel position and one pair of blocks
    # A tap that reads the zero padding adds weight * 0: nothing unless a weight is inf or NaN
    # (0 * inf is NaN), so those taps run only for weights not known to be finite.
    weights = ctx.constant_data(1)
    finite = weights is not None and bool(np.isfinite(weights).all())

    def padding_tap(w_row: Expr, kw: Expr, row: Expr):
        """out[.., ow, q] += sum over i of w[.., i, q] * 0, for a tap in the padding."""
        hoisted: list[Stmt] = []
        w_tap = let(hoisted, ctx, add(w_row, mul(kw, index_imm(tap))), "wt")

        def pixel(ow: Expr) -> list[Stmt]:
            o_pixel = add(row, mul(ow, index_imm(out_size)))
            return loop(ctx, in_size, lambda i: loop(ctx, out_size, lambda q: [accumulate(
                out, add(o_pixel, q), Binary("mul", Load(
                    w_buffer, add(add(w_tap, mul(i, index_imm(out_size))), q)), imm(0, dtype)))]))

        return hoisted, None, pixel

    def image_block(nb: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        n, ob = split(statements, ctx, nb, batch, out_blocks)

        def output_row(oh: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            row = let(local, ctx, mul(add(mul(nb, index_imm(out_h)), oh),
                                      index_imm(out_w * out_size)), "r")

            if bias is None:
                local += loop(ctx, out_w * out_size,
                              lambda j: [Store(out, add(row, j), imm(0, dtype))])
            else:  # ow, then q: the bias block is read contiguously
                local += loop(ctx, out_w, lambda ow: loop(ctx, out_size, lambda q: [Store(
                    out, add(add(row, mul(ow, index_imm(out_size))), q),
                    sum_start(Load(bias, add(mul(ob, index_imm(out_size)), q)), dtype))]))

            def input_block(ib: Expr) -> list[Stmt]:
                inner: list[Stmt] = []
                x_block = let(inner, ctx, mul(add(mul(n, index_imm(in_blocks)), ib),
                                              index_imm(height * width * in_size)), "xb")
                w_block = let(inner, ctx, mul(add(mul(ob, index_imm(in_blocks)), ib),
                                              index_imm(kernel_h * kernel_w * tap)), "wb")

                def kernel_row(kh: Expr, ih: Expr) -> list[Stmt]:
                    rows: list[Stmt] = []
                    x_row = let(rows, ctx, add(x_block, mul(ih, index_imm(width * in_size))),
                                "xr")
                    w_row = let(rows, ctx, add(w_block, mul(kh, index_imm(kernel_w * tap))),
                                "wr")

                    def column(kw: Expr):
                        hoisted: list[Stmt] = []
                        w_tap = let(hoisted, ctx, add(w_row, mul(kw, index_imm(tap))), "wt")

                        def pixel(ow: Expr, iw: Expr) -> list[Stmt]:
                            here: list[Stmt] = []
                            o_pixel = let(here, ctx, add(row, mul(ow, index_imm(out_size))), "op")
                            x_pixel = let(here, ctx, add(x_row, mul(iw, index_imm(in_size))), "xp")

                            def input_channel(i: Expr) -> list[Stmt]:
                                channel: list[Stmt] = []
                                value = let(channel, ctx, Load(x_buffer, add(x_pixel, i)), "x")
                                w_line = let(channel, ctx, add(w_tap, mul(i, index_imm(out_size))),
                                             "wl")
                                return channel + loop(ctx, out_size, lambda q: [accumulate(
                                    out, add(o_pixel, q),
                                    Binary("mul", value, Load(w_buffer, add(w_line, q))))])

                            return here + loop(ctx, in_size, input_channel)

                        return hoisted, pixel

                    return rows + window_columns(
                        ctx, kernel=kernel_w, stride=stride[1], pad=padding[1],
                        dilation=dilation[1], size=width, out=out_w, body=column,
                        padded=None if finite else lambda kw: padding_tap(w_row, kw, row))

                def padded_row(kh: Expr) -> list[Stmt]:
                    taps: list[Stmt] = []
                    w_row = let(taps, ctx, add(w_block, mul(kh, index_imm(kernel_w * tap))),
                                "wr")

                    def tap_row(kw: Expr) -> list[Stmt]:
                        hoisted, _, pixel = padding_tap(w_row, kw, row)
                        return [*hoisted, *loop(ctx, out_w, pixel)]

                    return taps + loop(ctx, kernel_w, tap_row)

                return inner + window_rows(
                    ctx, oh, kernel=kernel_h, stride=stride[0], pad=padding[0],
                    dilation=dilation[0], size=height, out=out_h, body=kernel_row,
                    padded=None if finite else padded_row)

            return local + loop(ctx, in_blocks, input_block)

        return statements + loop(ctx, out_h, output_row)

    return outer_loop(ctx, batch * out_blocks, image_block)


def _lower_blocked_pool(node, ctx: LowerContext, kind: str) -> list[Stmt]:
    batch, blocks, height, width, size = _blocks(ctx.input_types[0])
    _, _, out_h, out_w, _ = _blocks(ctx.output_types[0])
    attrs = node.attrs
    return pool_loops(ctx, ctx.inputs[0], ctx.outputs[0], planes=batch * blocks, block_size=size,
                      in_hw=(height, width), out_hw=(out_h, out_w), kernel=attrs["kernel"],
                      stride=attrs["stride"], padding=attrs["padding"],
                      dilation=attrs.get("dilation", (1, 1)), kind=kind,
                      count_include_pad=attrs.get("count_include_pad", True))


@lowers("max_pool2d_nchwc")
def lower_max_pool2d_nchwc(node, ctx: LowerContext) -> list[Stmt]:
    """Max pooling of a blocked value: pool_loops with the channel block innermost."""
    return _lower_blocked_pool(node, ctx, "max")


@lowers("avg_pool2d_nchwc")
def lower_avg_pool2d_nchwc(node, ctx: LowerContext) -> list[Stmt]:
    """Average pooling of a blocked value: pool_loops with the channel block innermost."""
    return _lower_blocked_pool(node, ctx, "avg")
