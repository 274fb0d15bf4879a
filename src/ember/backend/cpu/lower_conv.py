"""The CPU's conv2d rule: an implicit GEMM per image through the generated GEMM (opt_level 3).

For groups == 1 the OIHW weight already is a row-major [O, C*KH*KW] matrix A, and the NCHW
output of image n is a row-major [O, OH*OW] matrix. The input of image n becomes the
[C*KH*KW, OH*OW] matrix B (im2col, zero where a window reads padding), and one GEMM call
(M = O, N = OH*OW, K = C*KH*KW) computes the image's output; the bias is added per output
channel in the GEMM's epilogue, just before the final store. A 1x1 convolution of stride 1
without padding needs no im2col: the input image already is B. Other convolutions of stride 1
or 2 (dilation 1) never form B either: `conv_pack.image_packer` writes the GEMM's packed panels
of B straight from the image; im2col is left for other strides, dilations and images so narrow
that one vector of output pixels spans more than `conv_pack.MAX_RUNS` rows.

Parallelism: with several images, the top-level parallel loop runs over chunks of images, each
chunk with its own im2col and packing scratch. Whole images keep every GEMM call at full M and
N (no partial row blocks, the packed B panels are reused by all O rows) and the im2col of an
image is done by the thread that consumes it, while it is still in cache. A single image has
nothing to split that way, so its im2col runs once and the GEMM rows (output channels) are
split across threads, as `ops_gemm` does for matmul.

Depthwise convolutions go to `lower_depthwise`; other grouped convolutions and convolutions too
small to pay for packing return None: the direct loop nest of `ops_linalg` lowers them.
"""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from ember.backend.cpu import conv_pack, gemm
from ember.backend.cpu.lower_depthwise import depthwise_conv2d
from ember.backend.cpu.lower_gemm import emit_epilogue, epilogue_types
from ember.ir.graph import Node
from ember.lower.epilogue import Epilogue
from ember.lower.loops import (
    Binary,
    Buffer,
    Expr,
    ExternCall,
    If,
    Load,
    Loop,
    Pointer,
    Stmt,
    Store,
    add,
    imm,
    index_imm,
    mul,
)
from ember.lower.ops_linalg import both, fill_range, let, loop
from ember.lower.rules import LowerContext, target_rule

MIN_FLOPS = 2 * 32 * 32 * 32  # per image: below this the direct loops are as fast
MIN_COLUMNS = 16  # output pixels per image: fewer waste most of each micro-tile


@target_rule("cpu", "conv2d")
def gemm_conv2d(node: Node, ctx: LowerContext, epilogue: Epilogue | None = None
                ) -> Sequence[Stmt] | None:
    """out[n] = W[O, C*KH*KW] @ im2col(x[n]) (+ bias per row) for every image n.

    Loop order: chunk of images (parallel), image, then the im2col of the image (input channel,
    kernel row, kernel column unrolled, output row, output column innermost: contiguous stores
    into B, and contiguous loads at stride 1), then one GEMM call. For one image: the im2col
    (input channel outermost, disjoint rows of B), then the GEMM over row blocks (parallel).
    Returns None for groups > 1, non-float dtypes and convolutions too small to pay for it.
    `epilogue`: an elementwise chain applied to each output vector (after the bias) before
    its store.
    """
    x_type, w_type = ctx.input_types[:2]
    out_type = ctx.output_types[0]
    dtype = x_type.dtype
    if node.attrs["groups"] != 1:
        return depthwise_conv2d(node, ctx, epilogue)
    if dtype.value not in ("f32", "f64"):
        return None
    batch, channels, height, width = x_type.shape
    out_channels, _, kernel_h, kernel_w = w_type.shape
    _, _, out_h, out_w = out_type.shape
    m, n, k = out_channels, out_h * out_w, channels * kernel_h * kernel_w
    if 2 * m * n * k < MIN_FLOPS or n < MIN_COLUMNS:
        return None

    stride, padding, dilation = node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"]
    direct = (kernel_h, kernel_w) == (1, 1) and tuple(stride) == (1, 1) and not any(padding)
    x_buffer, w_buffer = ctx.inputs[:2]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    out = ctx.outputs[0]
    target = ctx.target
    cpus = target.cores

    name = dtype.value
    element = ir.FloatType() if name == "f32" else ir.DoubleType()
    lanes = target.lanes(dtype.itemsize)
    image = conv_pack.ImageGeometry(channels, height, width, kernel_h, kernel_w, out_h, out_w,
                                    padding[0], padding[1], stride[0])
    implicit = (not direct and stride[0] == stride[1] and tuple(dilation) == (1, 1)
                and conv_pack.supports(image, lanes))
    blocking = (conv_pack.conv_blocking(m, n, k, kernel_h * kernel_w, name, lanes,
                                        dtype.itemsize, target)
                if implicit else gemm.blocking_for(m, n, k, name, lanes, target))
    weights = ctx.constant_data(1)
    if weights is not None:  # packed once, here, instead of on every call
        packed = gemm.pack_a_constant(weights.reshape(m, k), n, lanes=lanes, blocking=blocking)
        a_matrix = Pointer(ctx.constant(packed, "wpack"), index_imm(0))
    else:
        a_matrix = Pointer(w_buffer, index_imm(0))
    symbol = (f"ember_gemm_{name}_{m}x{n}x{k}" + ("_rowbias" if bias is not None else "")
              + ("_pa" if weights is not None else "") + (f"_img{image.tag}" if implicit else "")
              + (f"_ep{epilogue.tag}" if epilogue is not None else ""))
    chain_start = gemm.ARGUMENT_COUNT + (1 if bias is not None else 0)

    def finish(builder, vector, row, col):
        if bias is not None:
            vector = _row_bias(builder, vector, row, col)
        return (emit_epilogue(epilogue, builder, vector, row, col, chain_start) if epilogue
                else vector)

    def emit(module):
        options = {"dtype": name, "blocking": blocking, "a_packed": weights is not None,
                   "lanes": lanes,
                   "b_packer": conv_pack.image_packer(image) if implicit else None}
        extra_args = ([element.as_pointer()] if bias is not None else []) + (
            epilogue_types(epilogue, element) if epilogue is not None else [])
        if bias is None and epilogue is None:
            return gemm.emit_gemm(module, symbol, m, n, k, **options)
        return gemm.emit_gemm(module, symbol, m, n, k, epilogue=finish, extra_args=extra_args,
                              **options)

    pack_bytes = gemm.gemm_scratch_bytes(m, n, k, dtype=name, lanes=lanes, blocking=blocking)
    pack_elements = -(-pack_bytes // 64) * 64 // dtype.itemsize
    column_elements = -(-(k * n * dtype.itemsize) // 64) * 64 // dtype.itemsize
    extra = (Pointer(bias, index_imm(0)),) if bias is not None else ()
    geometry = _Geometry(channels, height, width, kernel_h, kernel_w, out_h, out_w,
                         tuple(stride), tuple(padding), tuple(dilation))

    def call(b_matrix: Pointer, image: Expr, begin: Expr, end: Expr, pack: Pointer) -> ExternCall:
        c_matrix = Pointer(out, mul(image, index_imm(m * n)))
        chain = epilogue.pointers(mul(image, index_imm(m * n))) if epilogue is not None else ()
        return ExternCall(symbol, emit, (a_matrix, b_matrix, c_matrix, begin, end, pack, *extra,
                                         *chain))

    if batch == 1:
        statements: list[Stmt] = []
        if direct or implicit:
            b_matrix = Pointer(x_buffer, index_imm(0))
        else:
            columns = ctx.scratch(dtype, k * n, "im2col")
            statements += _im2col(ctx, x_buffer, index_imm(0), columns, index_imm(0), geometry,
                                  outermost=True)
            b_matrix = Pointer(columns, index_imm(0))
        rows = gemm.rows_per_thread(m, cpus, blocking.mr)
        chunks = -(-m // rows)
        pack = ctx.scratch(dtype, pack_elements * chunks, "pack")
        chunk = ctx.names.fresh("c")
        begin = mul(chunk, index_imm(rows))
        end = Binary("min", add(begin, index_imm(rows)), index_imm(m))
        own_pack = Pointer(pack, mul(chunk, index_imm(pack_elements)))
        kind = "parallel" if chunks > 1 else "serial"
        statements.append(Loop(chunk, chunks, (call(b_matrix, index_imm(0), begin, end,
                                                     own_pack),), kind))
        return statements

    chunks = min(batch, cpus)
    per_chunk = -(-batch // chunks)
    chunks = -(-batch // per_chunk)
    pack = ctx.scratch(dtype, pack_elements * chunks, "pack")
    columns = None if direct or implicit else ctx.scratch(dtype, column_elements * chunks,
                                                          "im2col")
    chunk = ctx.names.fresh("c")

    def image_statements(image: Expr) -> list[Stmt]:
        body: list[Stmt] = []
        own_pack = Pointer(pack, mul(chunk, index_imm(pack_elements)))
        if columns is None:
            b_matrix = Pointer(x_buffer, mul(image, index_imm(channels * height * width)))
        else:
            column_base = let(body, ctx, mul(chunk, index_imm(column_elements)), "col")
            x_base = let(body, ctx, mul(image, index_imm(channels * height * width)), "x")
            body += _im2col(ctx, x_buffer, x_base, columns, column_base, geometry)
            b_matrix = Pointer(columns, column_base)
        body.append(call(b_matrix, image, index_imm(0), index_imm(m), own_pack))
        return body

    def member(j: Expr) -> list[Stmt]:
        body: list[Stmt] = []
        image = let(body, ctx, add(mul(chunk, index_imm(per_chunk)), j), "n")
        inner = image_statements(image)
        if chunks * per_chunk == batch:
            return body + inner
        return [*body, If(Binary("lt", image, index_imm(batch)), tuple(inner))]

    kind = "parallel" if chunks > 1 else "serial"
    return [Loop(chunk, chunks, tuple(loop(ctx, per_chunk, member)), kind)]


class _Geometry:
    """Static sizes of one convolution (input, kernel, output, stride, padding, dilation)."""

    def __init__(self, channels: int, height: int, width: int, kernel_h: int, kernel_w: int,
                 out_h: int, out_w: int, stride: tuple[int, ...], padding: tuple[int, ...],
                 dilation: tuple[int, ...]) -> None:
        self.channels, self.height, self.width = channels, height, width
        self.kernel_h, self.kernel_w, self.out_h, self.out_w = kernel_h, kernel_w, out_h, out_w
        self.stride, self.padding, self.dilation = stride, padding, dilation


def _im2col(ctx: LowerContext, x_buffer: Buffer, x_base: Expr, columns: Buffer,
            column_base: Expr, g: _Geometry, outermost: bool = False) -> list[Stmt]:
    """B[(c*KH + kh)*KW + kw, oh*OW + ow] = x[c, ih, iw], zero where (ih, iw) is padding.

    Loop order: c, kh, kw (unrolled: each has its static range of valid output columns), oh,
    ow innermost, so every row of B is written front to back. A kernel row that reaches the
    padding is tested once per output row; columns are never tested (three static ranges:
    zeros, copy, zeros).
    """
    dtype = columns.dtype
    zero = imm(0, dtype)
    stride_h, stride_w = g.stride
    dilation_h, dilation_w = g.dilation
    pad_top, pad_left = g.padding[0], g.padding[1]
    plane = g.height * g.width
    pixels = g.out_h * g.out_w
    last_ih = (g.out_h - 1) * stride_h - pad_top + (g.kernel_h - 1) * dilation_h

    def fill(base: Expr, start: int, stop: int) -> list[Stmt]:
        return fill_range(ctx, columns, base, start, stop, zero)

    def channel(c: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        x_channel = let(statements, ctx, add(x_base, mul(c, index_imm(plane))), "xc")

        def kernel_row(kh: Expr) -> list[Stmt]:
            rows: list[Stmt] = []
            for kw in range(g.kernel_w):
                offset = kw * dilation_w - pad_left  # iw = ow * stride_w + offset
                low = min(max(0, -(offset // stride_w)), g.out_w)
                high = min(g.out_w, max(low, (g.width - 1 - offset) // stride_w + 1))
                row_index = add(mul(add(mul(c, index_imm(g.kernel_h)), kh),
                                    index_imm(g.kernel_w)), index_imm(kw))
                b_row = let(rows, ctx, add(column_base, mul(row_index, index_imm(pixels))), "br")

                def output_row(oh: Expr, b_row: Expr = b_row, offset: int = offset,
                               low: int = low, high: int = high) -> list[Stmt]:
                    local: list[Stmt] = []
                    ih = let(local, ctx, add(add(mul(oh, index_imm(stride_h)),
                                                 mul(kh, index_imm(dilation_h))),
                                             index_imm(-pad_top)), "ih")
                    target = let(local, ctx, add(b_row, mul(oh, index_imm(g.out_w))), "bt")
                    source = add(x_channel, mul(ih, index_imm(g.width)))

                    def copy(i: Expr) -> list[Stmt]:
                        iw = add(mul(add(i, index_imm(low)), index_imm(stride_w)),
                                 index_imm(offset))
                        return [Store(columns, add(target, add(i, index_imm(low))),
                                      Load(x_buffer, add(source, iw)))]

                    full = fill(target, 0, low) + loop(ctx, high - low, copy) + fill(
                        target, high, g.out_w)
                    below = Binary("ge", ih, index_imm(0)) if pad_top > 0 else None
                    above = Binary("lt", ih, index_imm(g.height)) if last_ih >= g.height else None
                    check = both(below, above)
                    if check is None:
                        return local + full
                    return [*local, If(check, tuple(full), tuple(fill(target, 0, g.out_w)))]

                rows += loop(ctx, g.out_h, output_row)
            return rows

        return statements + loop(ctx, g.kernel_h, kernel_row)

    if outermost:
        var = ctx.names.fresh("i")  # a real loop even of one channel: disjoint rows of B
        return [Loop(var, g.channels, tuple(channel(var)))]
    return loop(ctx, g.channels, channel)


def _row_bias(builder: ir.IRBuilder, vector: ir.Value, row: ir.Value, col: ir.Value) -> ir.Value:
    """GEMM epilogue: add bias[row] (the output channel's bias) to every lane."""
    bias = gemm.extra_arguments(builder)[0]
    value = builder.load(builder.gep(bias, [row], inbounds=True))
    return builder.fadd(vector, gemm.splat(builder, value, vector.type.count))
