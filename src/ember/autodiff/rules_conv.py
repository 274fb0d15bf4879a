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
- dw contracts gy with every kernel tap's window of x over (n, oh, ow). `conv2d_weight_grad`
  writes it as one GEMM over an im2col of x (see `_weight_grad_matmul` for why not as a
  convolution over the batch axis).
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
        stride, dilation, pad_lo, pad_hi = _axis(attrs, axis)
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
    """dw as one GEMM per group: [Og, N*OH*OW] @ [N*OH*OW, KH*KW*Cg].

    The im2col is built channels-last: x goes to NHWC once, and each kernel tap's window is a
    strided slice [N, OH, OW, C] whose rows of C channels are contiguous; stacking the taps
    before the channels gives rows in (tap, channel) order, so the small result is transposed
    to OIHW at the end instead of the large im2col. The alternative, a convolution over the
    batch axis (x as [C, N, H, W] convolved with gy as an [O, N, OH, OW] kernel), has an output
    of KH x KW pixels per image, too few for the implicit GEMM, and grouped convolutions have
    only the direct loops: on the small CNN of the benchmark it ran several times slower.
    """
    groups = int(attrs["groups"])  # type: ignore[arg-type]
    out_channels, group_in, kh, kw = w_type.shape
    batch, _, out_h, out_w = gy.type.shape
    channels = group_in * groups
    region, pads = _window_region(b, x, (kh, kw), (out_h, out_w), attrs)
    rows = b.op("transpose", region, perm=(0, 2, 3, 1))
    if any(pads):
        rows = b.op("pad", rows, pads=(0, pads[0], pads[1], 0, 0, pads[2], pads[3], 0))
    (stride_h, dilation_h, _, _), (stride_w, dilation_w, _, _) = _axis(attrs, 0), _axis(attrs, 1)
    taps = []
    for p in range(kh):
        for q in range(kw):
            top, left = p * dilation_h, q * dilation_w
            tap = b.op("slice", rows, starts=(0, top, left, 0),
                       stops=(batch, top + (out_h - 1) * stride_h + 1,
                              left + (out_w - 1) * stride_w + 1, channels),
                       steps=(1, stride_h, stride_w, 1))
            taps.append(b.op("reshape", tap, shape=(batch * out_h * out_w, 1, channels)))
    cols = taps[0] if len(taps) == 1 else b.op("concat", *taps, axis=1)
    pixels, count = batch * out_h * out_w, kh * kw
    group_out = out_channels // groups
    gy_rows = b.op("reshape", gy, shape=(batch, out_channels, out_h * out_w))
    if groups == 1:
        cols = b.op("reshape", cols, shape=(pixels, count * channels))
        gy_rows = b.op("transpose", gy_rows, perm=(1, 0, 2))
        gy_rows = b.op("reshape", gy_rows, shape=(out_channels, pixels))
    else:
        cols = b.op("reshape", cols, shape=(pixels, count, groups, group_in))
        cols = b.op("transpose", cols, perm=(2, 0, 1, 3))
        cols = b.op("reshape", cols, shape=(groups, pixels, count * group_in))
        gy_rows = b.op("reshape", gy, shape=(batch, groups, group_out, out_h * out_w))
        gy_rows = b.op("transpose", gy_rows, perm=(1, 2, 0, 3))
        gy_rows = b.op("reshape", gy_rows, shape=(groups, group_out, pixels))
    product = b.op("matmul", gy_rows, cols)  # [G,] Og, taps * Cg
    product = b.op("reshape", product, shape=(out_channels, kh, kw, group_in))
    return b.op("transpose", product, perm=(0, 3, 1, 2))  # type: ignore[return-value]


def conv2d_weight_grad(b: GraphBuilder, x: Value, gy: Value, w_type: TensorType,
                       attrs: Mapping[str, AttrValue]) -> Value:
    """dw of conv2d(x, w) for cotangent gy, shape of `w_type` (OIHW)."""
    for axis in range(2):
        stride, dilation, pad_lo, _ = _axis(attrs, axis)
        if not _reached(x.type.shape[2 + axis], w_type.shape[2 + axis],
                        gy.type.shape[2 + axis], stride, dilation, pad_lo):
            return _zeros(b, w_type)
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
