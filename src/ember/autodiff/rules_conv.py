"""The gradient rule of conv2d, as decompositions into existing graph ops.

Both gradients of a convolution are convolutions or GEMMs themselves, so the rule builds them
from conv2d, matmul and shape ops: they run on the same implicit-GEMM and GEMM kernels as the
forward pass, and every graph pass (fusion, memory planning) handles them like any other node.

Notation, per spatial axis: input extent H, forward padding (pt, pb), kernel K, stride s,
dilation d, output extent OH. In padded coordinates output row i reads rows i*s + k*d for
k < K; the rows any window reads are [0, E) with E = (OH - 1)*s + (K - 1)*d + 1, which may
stop short of H + pt + pb when (H + pt + pb - E) is not a multiple of s.

- dx is the transposed convolution: gy spread by the stride (s - 1 zeros between elements),
  convolved at stride 1 with the spatially flipped weight whose in/out channels are swapped
  per group. Rows that no window reached come out as zeros from the padding.
- dw contracts gy with every kernel tap's window of x over (n, oh, ow): one GEMM over an
  im2col of x, or for grouped convolutions with few outputs per group a convolution over the
  batch axis (`conv2d_weight_grad` says which and why).
- db is gy summed over N, H and W.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ember.ir.attrs import AttrValue
from ember.ir.graph import GraphBuilder, Node, Value
from ember.ir.ops import get_op, set_rule
from ember.ir.types import TensorType


def _axis(attrs: Mapping[str, AttrValue], axis: int) -> tuple[int, int, int, int]:
    """(stride, dilation, pad before, pad after) of spatial axis 0 (rows) or 1 (columns)."""
    stride, dilation, padding = attrs["stride"], attrs["dilation"], attrs["padding"]
    return (int(stride[axis]), int(dilation[axis]),  # type: ignore[index]
            int(padding[axis]), int(padding[axis + 2]))  # type: ignore[index]


def _reached(size: int, kernel: int, out: int, stride: int, dilation: int, before: int) -> bool:
    """Whether any window of this axis reads a row of the input, not only padding (a stride
    larger than the input plus its end padding can leave every window in the padding)."""
    return any(before <= i * stride + k * dilation < before + size
               for i in range(out) for k in range(kernel))


def _zeros(b: GraphBuilder, type_: TensorType) -> Value:
    scalar = b.const(np.zeros((), dtype=type_.dtype.numpy))
    return b.op("broadcast_to", scalar, shape=type_.shape)  # type: ignore[return-value]


def _crop(b: GraphBuilder, v: Value, starts: tuple[int, int], stops: tuple[int, int]) -> Value:
    """v[:, :, starts[0]:stops[0], starts[1]:stops[1]]; v itself when that is all of it."""
    shape = v.type.shape
    if starts == (0, 0) and stops == shape[2:]:
        return v
    return b.op("slice", v, starts=(0, 0, *starts), stops=(*shape[:2], *stops),  # type: ignore[return-value]
                steps=(1, 1, 1, 1))


def _spread(b: GraphBuilder, gy: Value, strides: tuple[int, int]) -> Value:
    """gy with s - 1 zeros after every element of each spatial axis: [N, O, OH*s0, OW*s1].

    Element i lands at i*s; the s - 1 trailing zeros after the last element are harmless (the
    caller crops or keeps them as zero padding)."""
    if strides == (1, 1):
        return gy
    batch, channels, height, width = gy.type.shape
    cells = b.op("reshape", gy, shape=(batch, channels, height, 1, width, 1))
    cells = b.op("pad", cells, pads=(0, 0, 0, 0, 0, 0, 0, 0, 0, strides[0] - 1, 0, strides[1] - 1))
    return b.op("reshape", cells,  # type: ignore[return-value]
                shape=(batch, channels, height * strides[0], width * strides[1]))


def _transposed_weight(b: GraphBuilder, w: Value, groups: int) -> Value:
    """OIHW [G*Og, Cg, KH, KW] -> [G*Cg, Og, KH, KW], flipped in both spatial axes."""
    out_channels, group_in, kh, kw = w.type.shape
    group_out = out_channels // groups
    if groups == 1:
        swapped = b.op("transpose", w, perm=(1, 0, 2, 3))
    else:
        split = b.op("reshape", w, shape=(groups, group_out, group_in, kh, kw))
        split = b.op("transpose", split, perm=(0, 2, 1, 3, 4))
        swapped = b.op("reshape", split, shape=(groups * group_in, group_out, kh, kw))
    if (kh, kw) == (1, 1):
        return swapped  # type: ignore[return-value]
    shape = swapped.type.shape  # type: ignore[union-attr]
    return b.op("slice", swapped, starts=(0, 0, kh - 1, kw - 1),  # type: ignore[return-value]
                stops=(shape[0], shape[1], -1, -1), steps=(1, 1, -1, -1))


def conv2d_input_grad(b: GraphBuilder, gy: Value, w: Value, x_type: TensorType,
                      attrs: Mapping[str, AttrValue]) -> Value:
    """dx of conv2d(x, w) for cotangent gy: the transposed convolution, shape of `x_type`.

    Padded input row u gets sum over k of spread[u - k*d] * w[k], a stride-1 convolution of the
    spread gy, zero-padded by (K - 1)*d, with the flipped kernel. Only rows pt .. pt + H - 1 of
    that are dx, so the left zero padding is (K - 1)*d - pt and the right one whatever makes the
    result H long; either may be negative, which crops the spread gy instead.
    """
    groups = int(attrs["groups"])  # type: ignore[arg-type]
    kernel = w.type.shape[2:]
    spread = _spread(b, gy, (_axis(attrs, 0)[0], _axis(attrs, 1)[0]))
    befores, afters, starts, stops = [], [], [], []
    for axis in range(2):
        stride, dilation, pad_lo, _ = _axis(attrs, axis)
        size, out = x_type.shape[2 + axis], gy.type.shape[2 + axis]
        if not _reached(size, kernel[axis], out, stride, dilation, pad_lo):
            return _zeros(b, x_type)
        reach = (kernel[axis] - 1) * dilation
        length = spread.type.shape[2 + axis]
        before = reach - pad_lo
        after = size + reach - length - before
        starts.append(max(0, -before))
        stops.append(length - max(0, -after))
        befores.append(max(0, before))
        afters.append(max(0, after))
    spread = _crop(b, spread, (starts[0], starts[1]), (stops[0], stops[1]))
    flipped = _transposed_weight(b, w, groups)
    return b.op("conv2d", spread, flipped, stride=(1, 1),  # type: ignore[return-value]
                padding=(befores[0], befores[1], afters[0], afters[1]),
                dilation=attrs["dilation"], groups=groups)


def _window_region(b: GraphBuilder, x: Value, kernel: tuple[int, ...],
                   out_hw: tuple[int, ...], attrs: Mapping[str, AttrValue]
                   ) -> tuple[Value, tuple[int, int, int, int]]:
    """x cropped to the rows and columns the windows read, and the padding (t, l, b, r) that
    turns it into exactly the E-long padded extent of each axis."""
    stops, befores, afters = [], [], []
    for axis in range(2):
        stride, dilation, pad_lo, _ = _axis(attrs, axis)
        extent = (out_hw[axis] - 1) * stride + (kernel[axis] - 1) * dilation + 1
        keep = min(x.type.shape[2 + axis], extent - pad_lo)
        stops.append(keep)
        befores.append(pad_lo)
        afters.append(extent - pad_lo - keep)
    cropped = _crop(b, x, (0, 0), (stops[0], stops[1]))
    return cropped, (befores[0], befores[1], afters[0], afters[1])


def _weight_grad_matmul(b: GraphBuilder, x: Value, gy: Value, w_type: TensorType,
                        attrs: Mapping[str, AttrValue]) -> Value:
    """dw as one GEMM per group: im2col [Cg*KH*KW, N*OH*OW] @ gy [N*OH*OW, Og], transposed.

    x goes to [C, N, H, W] once; each kernel tap's window is then a strided slice
    [C, N, OH, OW] whose N*OH*OW pixels are one row per channel, so stacking the taps along
    axis 1 copies long contiguous rows (and needs no reshape: reshapes are copies). gy goes
    channels-last ([N*OH*OW, O]) for the other operand, and only the small [C*KH*KW, O]
    product is transposed to OIHW.

    Against the convolution over the batch axis, at opt_level 3 on one thread (batch 32,
    3x3, padding 1, f32): 3->16 at 32x32 1.9 ms against 10.6 ms, 16->32 at 16x16 3.0 ms against
    28.9 ms. That convolution's output is KH x KW pixels per image, too few for the implicit
    GEMM, so it runs on the direct loops.
    """
    groups = int(attrs["groups"])  # type: ignore[arg-type]
    out_channels, group_in, kh, kw = w_type.shape
    batch, _, out_h, out_w = gy.type.shape
    channels, pixels, group_out = group_in * groups, batch * out_h * out_w, out_channels // groups
    region, pads = _window_region(b, x, (kh, kw), (out_h, out_w), attrs)
    planes = b.op("transpose", region, perm=(1, 0, 2, 3))
    if any(pads):
        planes = b.op("pad", planes, pads=(0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]))
    (stride_h, dilation_h, _, _), (stride_w, dilation_w, _, _) = _axis(attrs, 0), _axis(attrs, 1)
    taps = []
    for p in range(kh):
        for q in range(kw):
            top, left = p * dilation_h, q * dilation_w
            tap = b.op("slice", planes, starts=(0, 0, top, left),
                       stops=(channels, batch, top + (out_h - 1) * stride_h + 1,
                              left + (out_w - 1) * stride_w + 1),
                       steps=(1, 1, stride_h, stride_w))
            taps.append(tap)
    # [C, taps * N, OH, OW]: in memory, [C, taps, N*OH*OW].
    cols = taps[0] if len(taps) == 1 else b.op("concat", *taps, axis=1)
    gy_rows = b.op("transpose", gy, perm=(0, 2, 3, 1))
    if groups == 1:
        cols = b.op("reshape", cols, shape=(channels * kh * kw, pixels))
        gy_rows = b.op("reshape", gy_rows, shape=(pixels, out_channels))
    else:
        cols = b.op("reshape", cols, shape=(groups, group_in * kh * kw, pixels))
        gy_rows = b.op("reshape", gy_rows, shape=(pixels, groups, group_out))
        gy_rows = b.op("transpose", gy_rows, perm=(1, 0, 2))
    product = b.op("matmul", cols, gy_rows)  # [G,] Cg * taps, Og
    product = b.op("reshape", product, shape=(groups, group_in, kh, kw, group_out))
    product = b.op("transpose", product, perm=(0, 4, 1, 2, 3))
    return b.op("reshape", product, shape=w_type.shape)  # type: ignore[return-value]


def _weight_grad_batch_conv(b: GraphBuilder, x: Value, gy: Value, w_type: TensorType,
                            attrs: Mapping[str, AttrValue]) -> Value:
    """dw as a convolution over the batch axis: per group, x as [Cg, N, H, W] (channels as
    images, images as channels) convolved with gy as an [Og, N, OH, OW] kernel, stride and
    dilation exchanged, gives dw as [Cg, Og, KH, KW].

    The groups stay groups: x becomes [Cg, G*N, H, W] and gy [G*Og, N, OH, OW], group-major,
    so one grouped conv2d computes every group's block.
    """
    groups = int(attrs["groups"])  # type: ignore[arg-type]
    out_channels, group_in, kh, kw = w_type.shape
    batch, _, out_h, out_w = gy.type.shape
    group_out = out_channels // groups
    region, pads = _window_region(b, x, (kh, kw), (out_h, out_w), attrs)
    height, width = region.type.shape[2:]
    images = b.op("reshape", region, shape=(batch, groups, group_in, height, width))
    images = b.op("transpose", images, perm=(2, 1, 0, 3, 4))
    images = b.op("reshape", images, shape=(group_in, groups * batch, height, width))
    kernel = b.op("reshape", gy, shape=(batch, groups, group_out, out_h, out_w))
    kernel = b.op("transpose", kernel, perm=(1, 2, 0, 3, 4))
    kernel = b.op("reshape", kernel, shape=(out_channels, batch, out_h, out_w))
    (stride_h, dilation_h, _, _), (stride_w, dilation_w, _, _) = _axis(attrs, 0), _axis(attrs, 1)
    blocks = b.op("conv2d", images, kernel, stride=(dilation_h, dilation_w),
                  dilation=(stride_h, stride_w), padding=pads, groups=groups)
    return b.op("transpose", blocks, perm=(1, 0, 2, 3))  # type: ignore[return-value]


def conv2d_weight_grad(b: GraphBuilder, x: Value, gy: Value, w_type: TensorType,
                       attrs: Mapping[str, AttrValue]) -> Value:
    """dw of conv2d(x, w) for cotangent gy, shape of `w_type` (OIHW).

    One GEMM over an im2col, except for grouped convolutions with at most 2 output channels
    per group (depthwise ones among them): their GEMMs are [Cg*KH*KW, N*OH*OW] @ [N*OH*OW, Og]
    with one or two columns, and the convolution over the batch axis runs faster. Measured at
    opt_level 3, one thread, batch 32, 3x3, 16x16 images, f32 (GEMM against batch conv):
    16->32 in 4 groups (Og 8) 3.4 ms against 5.2 ms, 16->16 in 8 groups (Og 2) 2.3 against
    1.4 ms, depthwise 16 channels 1.8 against 0.7 ms, depthwise 5x5 on 32 channels at 32x32
    51.7 against 10.7 ms.
    """
    for axis in range(2):
        stride, dilation, pad_lo, _ = _axis(attrs, axis)
        if not _reached(x.type.shape[2 + axis], w_type.shape[2 + axis],
                        gy.type.shape[2 + axis], stride, dilation, pad_lo):
            return _zeros(b, w_type)
    groups = int(attrs["groups"])  # type: ignore[arg-type]
    if groups > 1 and w_type.shape[0] // groups <= 2:
        return _weight_grad_batch_conv(b, x, gy, w_type, attrs)
    return _weight_grad_matmul(b, x, gy, w_type, attrs)


def conv2d_bias_grad(b: GraphBuilder, gy: Value) -> Value:
    """db: gy summed over the batch and both spatial axes."""
    return b.op("sum", gy, axes=(0, 2, 3))  # type: ignore[return-value]


def conv2d_grad(b: GraphBuilder, node: Node, gys: tuple[Value | None, ...]
                ) -> tuple[Value | None, ...]:
    """Cotangents of (x, w[, bias]) of a conv2d node."""
    gy = gys[0]
    if gy is None:
        return (None,) * len(node.inputs)
    attrs = get_op(node.op).own_attrs(node.attrs)
    x, w = node.inputs[:2]
    grads: list[Value | None] = [conv2d_input_grad(b, gy, w, x.type, attrs),
                                 conv2d_weight_grad(b, x, gy, w.type, attrs)]
    if len(node.inputs) == 3:
        grads.append(conv2d_bias_grad(b, gy))
    return tuple(grads)


set_rule("conv2d", grad=conv2d_grad)
