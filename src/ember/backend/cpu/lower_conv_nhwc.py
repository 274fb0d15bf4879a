"""The CPU's rule for channels-last convolutions (`conv2d_nchwc` in the `nhwc` layout): a GEMM
whose A rows are read in place from the image (opt_level 3).

In NHWC the output of image n is the row-major [OH*OW, O] matrix C: one row per output pixel,
the output channels along the vector. Its A is the [OH*OW, KH*KW*C] im2col matrix, never formed:
output pixel q's window row kh is KW*C contiguous floats of the (zero-padded) image, so the
GEMM's micro-kernel broadcasts A[q, k] straight from the image through one pointer per row of
its tile (`gemm.ARows`), and its depth blocks are whole window rows (or equal parts of one). B
is the weight as [KH*KW*C, O] (the `layout` pass packs HWIO), packed into the GEMM's panels at
compile time. Nothing is packed at run time: the micro-panel of B (a depth block by NR output
channels) stays in L2 for every pixel, and the output channels, a multiple of 16 in most
networks, fill whole vectors however small the image is.

A convolution that pads copies its image into a zero-bordered scratch buffer first (its
windows then never leave memory); one without padding (1x1, or strided without padding) reads
the image itself. The bias and a fused elementwise chain (relu, a residual add) run on each
output vector before its one store; in this view a per-channel operand is one value per
column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from llvmlite import ir

from ember.backend.cpu import gemm
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
MAX_DEPTH_BLOCK = 2048  # depth of one block of the GEMM: its B micro-panel stays in L2
MIN_DEPTH_BLOCK = 8  # shallower blocks reload the C tile too often: the loops do better


def depth_block(run: int, rows: int) -> tuple[int, bool]:
    """(depth of one block of the GEMM, whether it is made of whole window rows) for `rows`
    window rows of `run` elements each: as many whole rows as fit MAX_DEPTH_BLOCK, in equal
    numbers per block; a row longer than that is split into equal parts (a block never
    spans two rows then). A 7 x 7 stem's rows of 21 elements go 7 to a block: one pass over
    C instead of seven (measured on Intel Xeon, one thread: its kernel 156 -> 186 GFLOP/s;
    benchmarks/NOTES.md)."""
    if run > MAX_DEPTH_BLOCK:
        parts = -(-run // MAX_DEPTH_BLOCK)
        while run % parts:
            parts += 1
        return run // parts, False
    blocks = -(-run * rows // MAX_DEPTH_BLOCK)
    return -(-rows // blocks) * run, True


@target_rule("cpu", "conv2d_nchwc")
def gemm_conv2d_nhwc(node: Node, ctx: LowerContext, epilogue: Epilogue | None = None
                     ) -> Sequence[Stmt] | None:
    """out[n] = im2col(x[n]) @ W[KH*KW*C, O] (+ bias per column) for every image n, in NHWC.

    Returns None for blocked layouts other than nhwc, dilations, non-float dtypes, weights not
    known at compile time, and convolutions too small or too shallow to pay for it."""
    x_type, w_type = ctx.input_types[:2]
    if x_type.layout != "nhwc" or x_type.dtype.value not in ("f32", "f64"):
        return None
    if tuple(node.attrs["dilation"]) != (1, 1):
        return None
    weights = ctx.constant_data(1)
    if weights is None:
        return None
    dtype = x_type.dtype
    batch, height, width, channels = x_type.shape
    _, _, kernel_h, kernel_w, _, out_channels = w_type.shape
    _, out_h, out_w, _ = ctx.output_types[0].shape
    stride_h, stride_w = node.attrs["stride"]
    pad_top, pad_left = node.attrs["padding"][:2]
    m, n, k = out_h * out_w, out_channels, kernel_h * kernel_w * channels
    run = kernel_w * channels  # one window row: contiguous in the padded image
    kc, whole_rows = depth_block(run, kernel_h)
    if 2 * m * n * k < MIN_FLOPS or kc < MIN_DEPTH_BLOCK:
        return None
    # The padded image: every window inside it (rows and columns past the image are zero).
    padded_h = max(height + pad_top, (out_h - 1) * stride_h + kernel_h)
    padded_w = max(width + pad_left, (out_w - 1) * stride_w + kernel_w)
    pads = pad_top or pad_left or padded_h > height or padded_w > width

    target = ctx.target
    name = dtype.value
    lanes = target.lanes(dtype.itemsize)
    tiles = gemm.blocking_for(m, n, k, name, lanes, target, every_row_count=True)
    blocking = dataclasses.replace(tiles, kc=kc)
    packed = gemm.pack_b_constant(np.ascontiguousarray(weights.reshape(k, n)), m, lanes=lanes,
                                  blocking=blocking)
    b_matrix = Pointer(ctx.constant(packed, "wpack"), index_imm(0))
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    row_stride = padded_w * channels
    symbol = (f"ember_gemm_nhwc_{name}_{m}x{n}x{k}_c{channels}w{padded_w}k{kernel_h}x{kernel_w}"
              f"s{stride_h}x{stride_w}o{out_w}" + ("_bias" if bias is not None else "")
              + (f"_ep{epilogue.tag}" if epilogue is not None else ""))
    chain_start = gemm.ARGUMENT_COUNT + (1 if bias is not None else 0)

    def rows(e: gemm.GemmEmitter, first: ir.Value, pc: ir.Value) -> list[ir.Value]:
        """A[first + r, pc]: pixel q = (oy, ox) reads window row pc // run from column
        pc % run of its window, at ((oy * sh + kh) * Wp + ox * sw) * C."""
        builder = e.builder
        const = e.const
        last = builder.sub(e.row_end, const(1))
        kh = builder.udiv(pc, const(run))
        offset = builder.add(builder.mul(kh, const(row_stride)), builder.urem(pc, const(run)))
        pointers = []
        for r in range(blocking.mr):
            q = builder.add(first, const(r))
            q = builder.select(builder.icmp_signed("<", q, e.row_end), q, last)
            oy, ox = builder.udiv(q, const(out_w)), builder.urem(q, const(out_w))
            start = builder.add(builder.mul(builder.mul(oy, const(stride_h)), const(row_stride)),
                                builder.mul(builder.mul(ox, const(stride_w)), const(channels)))
            pointers.append(builder.gep(e.a, [builder.add(start, offset)], inbounds=True))
        return pointers

    def finish(builder: ir.IRBuilder, vector: ir.Value, row: ir.Value, col: ir.Value
               ) -> ir.Value:
        if bias is not None:
            pointer = gemm.extra_arguments(builder)[0]
            mask = gemm.column_mask(builder, col, n, lanes)
            vector = builder.fadd(vector, gemm.masked_load(builder, builder.gep(
                pointer, [col], inbounds=True), mask, vector.type))
        return (emit_epilogue(epilogue, builder, vector, row, col, chain_start) if epilogue
                else vector)

    def emit(module: ir.Module) -> ir.Function:
        element = ir.FloatType() if name == "f32" else ir.DoubleType()
        options = {"dtype": name, "blocking": blocking, "lanes": lanes, "b_packed": True,
                   "a_rows": rows, "a_segments": (run, row_stride) if whole_rows else None,
                   "prefetch_b": True}
        extra_args = ([element.as_pointer()] if bias is not None else []) + (
            epilogue_types(epilogue, element) if epilogue is not None else [])
        return gemm.emit_gemm(module, symbol, m, n, k, extra_args=extra_args,
                              epilogue=None if bias is None and epilogue is None else finish,
                              **options)

    x_buffer, out = ctx.inputs[0], ctx.outputs[0]
    image_elements = padded_h * padded_w * channels
    unused = ctx.scratch(dtype, 16, "unused")  # the GEMM's packing scratch: nothing is packed
    extra = (Pointer(bias, index_imm(0)),) if bias is not None else ()
    padded = ctx.scratch(dtype, image_elements * batch, "padded") if pads else None

    def call(image: Expr, begin: Expr, end: Expr) -> ExternCall:
        if padded is not None:
            a_matrix = Pointer(padded, mul(image, index_imm(image_elements)))
        else:
            a_matrix = Pointer(x_buffer, mul(image, index_imm(height * width * channels)))
        c_offset = mul(image, index_imm(m * n))
        chain = epilogue.pointers(c_offset) if epilogue is not None else ()
        return ExternCall(symbol, emit, (a_matrix, b_matrix, Pointer(out, c_offset), begin, end,
                                         Pointer(unused, index_imm(0)), *extra, *chain))

    def pad_image(image: Expr) -> list[Stmt]:
        return _pad_copy(ctx, x_buffer, padded, image, batch_shape=(height, width, channels),
                         padded_shape=(padded_h, padded_w), top_left=(pad_top, pad_left))

    if batch == 1:
        statements = pad_image(index_imm(0)) if padded is not None else []
        rows_each = gemm.rows_per_thread(m, target.cores, blocking.mr)
        chunks = -(-m // rows_each)
        chunk = ctx.names.fresh("c")
        begin = mul(chunk, index_imm(rows_each))
        end = Binary("min", add(begin, index_imm(rows_each)), index_imm(m))
        kind = "parallel" if chunks > 1 else "serial"
        statements.append(Loop(chunk, chunks, (call(index_imm(0), begin, end),), kind))
        return statements

    image = ctx.names.fresh("n")
    body = (pad_image(image) if padded is not None else []) + [
        call(image, index_imm(0), index_imm(m))]
    return [Loop(image, batch, tuple(body), "parallel" if target.cores > 1 else "serial")]


def _pad_copy(ctx: LowerContext, x_buffer: Buffer, padded: Buffer, image: Expr,
              batch_shape: tuple[int, int, int], padded_shape: tuple[int, int],
              top_left: tuple[int, int]) -> list[Stmt]:
    """padded[image] = x[image] with a zero border: `top_left` rows and columns before it and
    the rest of `padded_shape` after it. Rows front to back, each row one contiguous run."""
    height, width, channels = batch_shape
    padded_h, padded_w = padded_shape
    top, left = top_left
    zero = imm(0, padded.dtype)
    row_elements = padded_w * channels
    statements: list[Stmt] = []
    x_image = let(statements, ctx, mul(image, index_imm(height * width * channels)), "xi")
    p_image = let(statements, ctx, mul(image, index_imm(padded_h * row_elements)), "pi")

    def fill(base: Expr, start: int, stop: int) -> list[Stmt]:
        return fill_range(ctx, padded, base, start, stop, zero)

    def row(y: Expr) -> list[Stmt]:
        local: list[Stmt] = []
        target_row = let(local, ctx, add(p_image, mul(y, index_imm(row_elements))), "pr")
        source_row = add(x_image, mul(add(y, index_imm(-top)), index_imm(width * channels)))
        inside_start, inside_stop = left * channels, (left + width) * channels
        copy = loop(ctx, width * channels, lambda i: [Store(
            padded, add(target_row, add(i, index_imm(inside_start))),
            Load(x_buffer, add(source_row, i)))])
        whole = fill(target_row, 0, inside_start) + copy + fill(target_row, inside_stop,
                                                                row_elements)
        inside = both(Binary("ge", y, index_imm(top)), Binary("lt", y, index_imm(top + height)))
        return [*local, If(inside, tuple(whole), tuple(fill(target_row, 0, row_elements)))]

    return statements + loop(ctx, padded_h, row)
