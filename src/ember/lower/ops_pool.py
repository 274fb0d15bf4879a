"""Scheduled pooling (opt_level 3): windows that lie inside the input, one store per output.

The general lowering (`ops_linalg.pool_loops`) folds one kernel tap at a time into the output
row, reading and writing it once per tap. Where no window reaches past the input (no padding,
no dilation, no ceil_mode overhang: the common 2x2 / stride-2 pooling) every output is one
expression over its KH x KW taps, so the loop over output columns loads each tap once (at
stride s: LLVM's interleaved vector loads), folds them in registers and stores once.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

from ember.ir.graph import Node
from ember.lower.loops import Binary, Cast, Expr, Load, Stmt, Store, add, index_imm, mul
from ember.lower.ops_linalg import let, loop, outer_loop
from ember.lower.rules import LowerContext, lowers


@lowers("max_pool2d", "avg_pool2d", scheduled=True)
def pool_inside(node: Node, ctx: LowerContext) -> Sequence[Stmt] | None:
    """out[p, oh, ow] = max (or mean) of x[p, oh*sh + kh, ow*sw + kw] over the window; None
    when a window may reach padding or past the input (the general lowering handles it)."""
    batch, channels, height, width = ctx.input_types[0].shape
    out_h, out_w = ctx.output_types[0].shape[2:]
    kernel_h, kernel_w = node.attrs["kernel"]
    stride_h, stride_w = node.attrs["stride"]
    dilation = node.attrs.get("dilation", (1, 1))
    if (any(node.attrs["padding"]) or tuple(dilation) != (1, 1)
            or (out_h - 1) * stride_h + kernel_h > height
            or (out_w - 1) * stride_w + kernel_w > width):
        return None
    x_buffer, out = ctx.inputs[0], ctx.outputs[0]
    dtype = out.dtype
    is_max = node.op == "max_pool2d"
    combine = "max" if is_max else "add"

    def plane(p: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        x_plane = let(statements, ctx, mul(p, index_imm(height * width)), "x")
        o_plane = let(statements, ctx, mul(p, index_imm(out_h * out_w)), "o")

        def output_row(oh: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            rows = [let(local, ctx, add(x_plane, mul(add(mul(oh, index_imm(stride_h)),
                                                         index_imm(kh)), index_imm(width))), "xr")
                    for kh in range(kernel_h)]
            target = let(local, ctx, add(o_plane, mul(oh, index_imm(out_w))), "r")

            def pixel(ow: Expr) -> list[Stmt]:
                column = mul(ow, index_imm(stride_w))
                taps = [Load(x_buffer, add(row, add(column, index_imm(kw))))
                        for row in rows for kw in range(kernel_w)]
                value = reduce(lambda a, b: Binary(combine, a, b), taps)
                if not is_max:
                    value = Binary("div", value, Cast(index_imm(kernel_h * kernel_w), dtype))
                return [Store(out, add(target, ow), value)]

            return local + loop(ctx, out_w, pixel)

        return statements + loop(ctx, out_h, output_row)

    return outer_loop(ctx, batch * channels, plane)
