"""The CPU's depthwise conv2d (groups == input channels == output channels, opt_level 3).

A depthwise convolution has no reduction over channels to feed a GEMM: each output pixel is
a weighted sum of KH x KW input pixels of its own channel. The direct loops of `ops_linalg`
add each tap's row into the output row in memory (KH * KW passes over the row, three memory
operations per multiply-add). Here each output pixel is one expression: the bias, then every
tap added in (kh, kw) order (the direct loops' order; a multiply-add may be fused), then the
fused elementwise chain, and one store; the innermost loop runs over output columns and
vectorizes, its input reads contiguous (stride 1) or interleaved (stride 2).

Padding: output rows and columns whose windows stay inside the input are split from the edge
ones, so the interior reads with no test. A tap outside the input adds nothing: its read is
clamped into the input and the sum passes it by with a select. Weights must be
constants and finite (a padding tap then contributes exactly nothing); other convolutions
return None and the direct loops lower them. `window_loops` is the loop structure for any
window that folds its taps (`Window.combine`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ember.ir.graph import Node
from ember.lower.epilogue import Epilogue
from ember.lower.loops import (
    Binary,
    Buffer,
    Expr,
    Load,
    Select,
    Stmt,
    Store,
    add,
    index_imm,
    mul,
    substitute_expr,
    sum_start,
)
from ember.lower.ops_linalg import both, let, loop, outer_loop
from ember.lower.rules import LowerContext

MAX_TAPS = 49  # kernels up to 7 x 7: each output pixel is one expression of its taps


def _inside(kernel: int, stride: int, pad: int, dilation: int, size: int, out: int
            ) -> tuple[int, int]:
    """The output positions [first, end) whose every tap reads inside [0, size)."""
    first = min(out, -(-pad // stride))  # the smallest o with o * stride - pad >= 0
    last_tap = (kernel - 1) * dilation - pad
    end = (size - 1 - last_tap) // stride + 1 if size - 1 - last_tap >= 0 else 0
    return first, max(first, min(out, end))


@dataclass(frozen=True)
class Window:
    """A sliding window over NCHW planes: sizes, and how each output folds its taps."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]  # top, left (bottom and right show in the output size)
    dilation: tuple[int, int]
    combine: str  # "add" or "max": the fold of the running value and a tap


def window_loops(ctx: LowerContext, window: Window, x_buffer: Buffer, out: Buffer, planes: int,
                 prologue: Callable[[list[Stmt], Expr], tuple[Expr, Callable[[int, Expr], Expr]]],
                 finish: Callable[[Expr, Expr, Expr, Expr], Expr] | None = None) -> list[Stmt]:
    """The loops of a window kernel: planes in parallel, output rows, then output columns
    innermost, each output one expression folded from `start` over its taps in (kh, kw) order
    and stored once. `prologue(statements, plane)` emits the plane's hoisted values and returns
    (start, tap(k, x) -> the value tap k folds in, given its input element x); `finish(value,
    plane, pixel, element)` maps the folded value before the store."""
    height, width = window.in_hw
    out_h, out_w = window.out_hw
    kernel_h, kernel_w = window.kernel
    sh, sw = window.stride
    ph, pw = window.padding
    dh, dw = window.dilation
    rows_inside = _inside(kernel_h, sh, ph, dh, height, out_h)
    columns_inside = _inside(kernel_w, sw, pw, dw, width, out_w)

    def plane(p: Expr) -> list[Stmt]:
        statements: list[Stmt] = []
        x_plane = let(statements, ctx, mul(p, index_imm(height * width)), "xp")
        start, tap_value = prologue(statements, p)

        def output_row(oh: Expr, checked: bool) -> list[Stmt]:
            local: list[Stmt] = []
            rows, valid = [], []
            for kh in range(kernel_h):
                ih = add(mul(oh, index_imm(sh)), index_imm(kh * dh - ph))
                if checked:
                    ih = let(local, ctx, ih, "ih")
                    valid.append(let(local, ctx, both(Binary("ge", ih, index_imm(0)),
                                                      Binary("lt", ih, index_imm(height))), "ok"))
                    ih = Binary("min", Binary("max", ih, index_imm(0)), index_imm(height - 1))
                else:
                    valid.append(None)
                rows.append(let(local, ctx, add(x_plane, mul(ih, index_imm(width))), "xr"))
            out_row = let(local, ctx, mul(add(mul(p, index_imm(out_h)), oh), index_imm(out_w)),
                          "r")

            def pixel(ow: Expr, edge: bool) -> list[Stmt]:
                body: list[Stmt] = []
                value = start
                for kh in range(kernel_h):
                    for kw in range(kernel_w):
                        iw = add(mul(ow, index_imm(sw)), index_imm(kw * dw - pw))
                        column_ok = None
                        if edge:
                            column_ok = both(Binary("ge", iw, index_imm(0)),
                                             Binary("lt", iw, index_imm(width)))
                            iw = Binary("min", Binary("max", iw, index_imm(0)),
                                        index_imm(width - 1))
                        tap = tap_value(kh * kernel_w + kw, Load(x_buffer, add(rows[kh], iw)))
                        folded = Binary(window.combine, value, tap)
                        ok = both(valid[kh], column_ok)
                        # a select names its running value (a temporary), which both of its
                        # arms read: as one expression tree it would double per tap
                        value = folded if ok is None else let(body, ctx, Select(ok, folded,
                                                                                value), "acc")
                if finish is not None:
                    value = finish(value, p, add(mul(oh, index_imm(out_w)), ow), add(out_row, ow))
                return [*body, Store(out, add(out_row, ow), value)]

            first, end = columns_inside
            local += _span(ctx, 0, first, lambda ow: pixel(ow, True))
            local += _span(ctx, first, end, lambda ow: pixel(ow, False))
            local += _span(ctx, end, out_w, lambda ow: pixel(ow, True))
            return local

        # The interior rows read with no test; the edge rows (top and bottom, one loop over
        # both, so one more copy of the row's code) pass a kernel row in the padding by with
        # a select whose condition holds for the whole output row.
        first, end = rows_inside
        statements += _span(ctx, first, end, lambda oh: output_row(oh, False))
        skip = index_imm(end - first)
        statements += _span(ctx, 0, first + out_h - end, lambda k: output_row(
            add(k, Select(Binary("ge", k, index_imm(first)), skip, index_imm(0))), True))
        return statements

    return outer_loop(ctx, planes, plane)


def _window(attrs: dict, kernel: Sequence[int], in_hw: Sequence[int], out_hw: Sequence[int],
            combine: str) -> Window:
    return Window(tuple(in_hw), tuple(out_hw), tuple(kernel), tuple(attrs["stride"]),
                  tuple(attrs["padding"][:2]), tuple(attrs["dilation"]), combine)


def depthwise_conv2d(node: Node, ctx: LowerContext, epilogue: Epilogue | None = None
                     ) -> Sequence[Stmt] | None:
    """out[n, c, oh, ow] = chain(bias[c] + sum over (kh, kw) of w[c, 0, kh, kw] *
    x[n, c, oh * sh - ph + kh * dh, ow * sw - pw + kw * dw]), one store per output pixel;
    planes (n, c) in parallel. None unless depthwise with constant finite weights."""
    x_type, w_type = ctx.input_types[:2]
    dtype = x_type.dtype
    batch, channels, height, width = x_type.shape
    out_channels, group_channels, kernel_h, kernel_w = w_type.shape
    if (node.attrs["groups"] != channels or out_channels != channels or group_channels != 1
            or dtype.value not in ("f32", "f64") or kernel_h * kernel_w > MAX_TAPS):
        return None
    weights = ctx.constant_data(1)
    if weights is None or not bool(np.isfinite(weights).all()):
        return None
    w_buffer = ctx.inputs[1]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    taps = kernel_h * kernel_w
    channel_of: dict[Expr, Expr] = {}

    def prologue(statements: list[Stmt], nc: Expr) -> tuple[Expr, Callable[[int, Expr], Expr]]:
        channel = let(statements, ctx, Binary("rem", nc, index_imm(channels)), "c")
        channel_of[nc] = channel
        w = [let(statements, ctx, Load(w_buffer, add(mul(channel, index_imm(taps)),
                                                     index_imm(k))), "w") for k in range(taps)]
        start = sum_start(Load(bias, channel) if bias is not None else None, dtype)
        start = let(statements, ctx, start, "b") if bias is not None else start
        return start, lambda k, x: Binary("mul", w[k], x)

    def finish(value: Expr, nc: Expr, pixel: Expr, element: Expr) -> Expr:
        return _apply(epilogue, value, channel_of[nc], pixel, element) if epilogue else value

    window = _window(node.attrs, (kernel_h, kernel_w), (height, width),
                     ctx.output_types[0].shape[2:], "add")
    return window_loops(ctx, window, ctx.inputs[0], ctx.outputs[0], batch * channels,
                        prologue, finish)


def _span(ctx: LowerContext, start: int, stop: int, body: Callable[[Expr], list[Stmt]]
          ) -> list[Stmt]:
    """A loop over [start, stop) (nothing when empty)."""
    if stop <= start:
        return []
    return loop(ctx, stop - start, lambda j: body(add(j, index_imm(start))))


def _apply(epilogue: Epilogue, value: Expr, channel: Expr, pixel: Expr, element: Expr) -> Expr:
    """The fused chain on one output value: in the GEMM view of a convolution's output
    ([channels, pixels] per image), a "row" operand is per channel, a "col" one per pixel, a
    "full" one per element."""
    mapping = {epilogue.acc: value}
    for variable, operand in zip(epilogue.variables, epilogue.operands, strict=True):
        index = {"row": channel, "col": pixel, "scalar": index_imm(0), "full": element}[
            operand.pattern]
        mapping[variable] = Load(operand.buffer, index)
    return substitute_expr(epilogue.expr, mapping)
