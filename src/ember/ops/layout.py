"""Blocked-layout ops: conversions between NCHW and blocked channel layouts, and the ops that run
on blocked tensors inside the regions the `layout` pass builds.

A blocked value keeps its physical shape in its type and names the layout in braces:

    f32[N, C/b, H, W, b]{nchw<b>c}     channel c lives at [n, c // b, h, w, c % b]
    f32[N, H, W, C]{nhwc}              channels last: nchw<C>c with a single block

Channels that do not fill the last block are padded with zeros on the way in and cropped on the
way out; `layout_convert` records the logical channel count as its `channels` attribute. Padded
channels stay finite and nothing observes them: convolution weights of padded input channels are
zero, and every other blocked op works channel by channel.

Conv weights are packed OIHW[ib][ob]: `[O/ob, I/ib, KH, KW, ib, ob]`, a bias `[O/ob, ob]`; both
are plain constants (no layout in their type), packed at compile time by `pack_conv_weight` and
`pack_channels`.
"""

from __future__ import annotations

import re

import numpy as np

from ember.errors import ShapeError
from ember.ir.ops import OPS, Attr, OpDef, register_op
from ember.ir.types import TensorType
from ember.ops.neural import AVG_ATTRS, CONV_ATTRS, POOL_ATTRS, spatial_out

_BLOCKED_RE = re.compile(r"^nchw([0-9]+)c$")


def block_size(layout: str, channels: int) -> int:
    """Channels per block of a blocked layout: b for nchw<b>c, all `channels` for nhwc."""
    if layout == "nhwc":
        return channels
    found = _BLOCKED_RE.match(layout)
    if found is None or int(found.group(1)) < 1:
        raise ShapeError(f"layout {layout!r} is not a blocked channel layout (nchw<b>c or nhwc)")
    return int(found.group(1))


def blocked_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """Physical shape of an NCHW tensor of `shape` stored in `layout`."""
    batch, channels, height, width = shape
    if layout == "nhwc":
        return (batch, height, width, channels)
    block = block_size(layout, channels)
    return (batch, -(-channels // block), height, width, block)


def logical_shape(type_: TensorType) -> tuple[int, ...]:
    """NCHW shape of a blocked value, padded channels included."""
    if type_.layout == "nhwc" and type_.ndim == 4:
        batch, height, width, channels = type_.shape
        return (batch, channels, height, width)
    if type_.ndim != 5 or not _BLOCKED_RE.match(type_.layout):
        raise ShapeError(f"expected a blocked value (nchw<b>c of rank 5 or nhwc of rank 4), "
                         f"got {type_}")
    batch, blocks, height, width, block = type_.shape
    if block != block_size(type_.layout, 0):
        raise ShapeError(f"last dimension {block} of {type_} differs from its layout's block")
    return (batch, blocks * block, height, width)


# ---------------------------------------------------------------------------------------------
# numpy: NCHW <-> blocked.


def to_blocked(array: np.ndarray, layout: str, pad_value: float = 0.0) -> np.ndarray:
    """An NCHW array in `layout`; channels padded with `pad_value` up to a whole block."""
    batch, channels, height, width = array.shape
    if layout == "nhwc":
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    block = block_size(layout, channels)
    padded_channels = -(-channels // block) * block
    widths = ((0, 0), (0, padded_channels - channels), (0, 0), (0, 0))
    padded = np.pad(array, widths, constant_values=array.dtype.type(pad_value))
    split = padded.reshape(batch, padded_channels // block, block, height, width)
    return np.ascontiguousarray(split.transpose(0, 1, 3, 4, 2))


def from_blocked(array: np.ndarray, layout: str, channels: int | None = None) -> np.ndarray:
    """The NCHW array of a blocked one, cropped to `channels` (default: keep the padding)."""
    if layout == "nhwc":
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2)[:, :channels])
    batch, blocks, height, width, block = array.shape
    merged = array.transpose(0, 1, 4, 2, 3).reshape(batch, blocks * block, height, width)
    return np.ascontiguousarray(merged[:, :channels])


def pack_conv_weight(weight: np.ndarray, in_block: int, out_block: int) -> np.ndarray:
    """OIHW -> [O/ob, I/ib, KH, KW, ib, ob], zero-padding both channel counts to whole blocks."""
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    out_blocks, in_blocks = -(-out_channels // out_block), -(-in_channels // in_block)
    widths = ((0, out_blocks * out_block - out_channels), (0, in_blocks * in_block - in_channels),
              (0, 0), (0, 0))
    padded = np.pad(weight, widths)
    split = padded.reshape(out_blocks, out_block, in_blocks, in_block, kernel_h, kernel_w)
    return np.ascontiguousarray(split.transpose(0, 2, 4, 5, 3, 1))


def unpack_conv_weight(packed: np.ndarray) -> np.ndarray:
    """[O/ob, I/ib, KH, KW, ib, ob] -> OIHW with the padded channel counts."""
    out_blocks, in_blocks, kernel_h, kernel_w, in_block, out_block = packed.shape
    merged = packed.transpose(0, 5, 1, 4, 2, 3)
    return merged.reshape(out_blocks * out_block, in_blocks * in_block, kernel_h, kernel_w)


def pack_channels(vector: np.ndarray, block: int, pad_value: float = 0.0) -> np.ndarray:
    """A per-channel vector [C] as [C/b, b], padded with `pad_value`."""
    blocks = -(-vector.shape[0] // block)
    padded = np.pad(vector, (0, blocks * block - vector.shape[0]),
                    constant_values=vector.dtype.type(pad_value))
    return padded.reshape(blocks, block)


def _as_blocks(array: np.ndarray, layout: str) -> np.ndarray:
    """The rank-5 [N, C/b, H, W, b] view of a blocked array (nhwc has a single block)."""
    return array[:, None] if layout == "nhwc" else array


def _from_blocks(array: np.ndarray, layout: str) -> np.ndarray:
    return array[:, 0] if layout == "nhwc" else array


# ---------------------------------------------------------------------------------------------
# layout_convert(x) {layout, channels}: NCHW -> blocked when `layout` is set, blocked -> NCHW
# (cropping to `channels`) when it is "".


def infer_layout_convert(x: TensorType, *, layout: str, channels: int) -> TensorType:
    if layout:
        if x.layout or x.ndim != 4:
            raise ShapeError(f"converting to {layout} needs an NCHW value of rank 4, got {x}")
        if channels != x.shape[1]:
            raise ShapeError(f"channels={channels} differs from the input's {x.shape[1]}")
        return TensorType(x.dtype, blocked_shape(x.shape, layout), layout)
    batch, padded, height, width = logical_shape(x)
    block = block_size(x.layout, padded)
    if not padded - block < channels <= padded:
        raise ShapeError(f"channels={channels} does not fit {padded // block} blocks of {block}")
    return TensorType(x.dtype, (batch, channels, height, width))


def _layout_convert(x: np.ndarray, *, layout: str, channels: int) -> np.ndarray:
    if layout:
        return to_blocked(x, layout)
    source = "nhwc" if x.ndim == 4 else f"nchw{x.shape[-1]}c"
    return from_blocked(x, source, channels)


register_op(OpDef("layout_convert", infer=infer_layout_convert, reference=_layout_convert,
                  attrs={"layout": Attr("str"), "channels": Attr("int")},
                  doc="NCHW <-> blocked channel layout (zero-pads, or crops to `channels`)"))

# ---------------------------------------------------------------------------------------------
# conv2d_nchwc(x, w, b?): blocked input, packed weight [O/ob, I/ib, KH, KW, ib, ob], bias
# [O/ob, ob].

BLOCKED_CONV_ATTRS = {k: v for k, v in CONV_ATTRS.items() if k != "groups"}


def infer_conv2d_nchwc(x: TensorType, w: TensorType, b: TensorType | None = None, *,
                       stride: tuple[int, ...], padding: tuple[int, ...],
                       dilation: tuple[int, ...]) -> TensorType:
    batch, in_padded, height, width = logical_shape(x)
    if w.ndim != 6 or w.layout:
        raise ShapeError(f"weight must be packed [O/ob, I/ib, KH, KW, ib, ob], got {w}")
    out_blocks, in_blocks, kernel_h, kernel_w, in_block, out_block = w.shape
    if in_blocks * in_block != in_padded or in_block != block_size(x.layout, in_padded):
        raise ShapeError(f"weight {w} does not match the input's channel blocks ({x})")
    if b is not None and b.shape != (out_blocks, out_block):
        raise ShapeError(f"bias must have shape [{out_blocks}, {out_block}], got {list(b.shape)}")
    if len({t.dtype for t in (x, w, b) if t is not None}) > 1 or not x.dtype.is_float:
        raise ShapeError("operands must share one float dtype")
    if x.layout == "nhwc" and out_blocks != 1:
        raise ShapeError(f"an nhwc convolution needs a single output block, got {out_blocks}")
    logical = TensorType(x.dtype, (batch, in_padded, height, width))
    out_h, out_w = spatial_out(logical, (kernel_h, kernel_w), stride, padding, dilation)
    layout = "nhwc" if x.layout == "nhwc" else f"nchw{out_block}c"
    shape = blocked_shape((batch, out_blocks * out_block, out_h, out_w), layout)
    return TensorType(x.dtype, shape, layout)


def _conv2d_nchwc(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *,
                  stride: tuple[int, ...], padding: tuple[int, ...],
                  dilation: tuple[int, ...]) -> np.ndarray:
    layout = "nhwc" if x.ndim == 4 else f"nchw{x.shape[-1]}c"
    out_layout = "nhwc" if x.ndim == 4 else f"nchw{w.shape[-1]}c"
    bias = None if b is None else b.reshape(-1)
    out = OPS["conv2d"].reference(from_blocked(x, layout), unpack_conv_weight(w), bias,
                                  stride=stride, padding=padding, dilation=dilation, groups=1)
    return to_blocked(out, out_layout)


register_op(OpDef("conv2d_nchwc", infer=infer_conv2d_nchwc, reference=_conv2d_nchwc,
                  attrs=BLOCKED_CONV_ATTRS, arity=(2, 3),
                  doc="conv2d on a blocked input with a packed OIHW[ib][ob] weight"))

# ---------------------------------------------------------------------------------------------
# Pooling on blocked values: the NCHW rules and references, channel block by channel block.


def _blocked_pool(name: str) -> tuple[object, object]:
    def infer(x: TensorType, **attrs: object) -> TensorType:
        logical = TensorType(x.dtype, logical_shape(x))
        pooled = OPS[name].infer(logical, **attrs)
        return TensorType(x.dtype, blocked_shape(pooled.shape, x.layout), x.layout)

    def reference(x: np.ndarray, **attrs: object) -> np.ndarray:
        blocks = _as_blocks(x, "nhwc" if x.ndim == 4 else "")
        batch, count, height, width, block = blocks.shape
        merged = blocks.transpose(0, 1, 4, 2, 3).reshape(batch, count * block, height, width)
        pooled = OPS[name].reference(merged, **attrs)
        split = pooled.reshape(batch, count, block, *pooled.shape[2:]).transpose(0, 1, 3, 4, 2)
        return np.ascontiguousarray(_from_blocks(split, "nhwc" if x.ndim == 4 else ""))

    return infer, reference


for _name, _attrs in (("max_pool2d", POOL_ATTRS), ("avg_pool2d", AVG_ATTRS)):
    _infer, _reference = _blocked_pool(_name)
    register_op(OpDef(f"{_name}_nchwc", infer=_infer, reference=_reference, attrs=_attrs,
                      doc=f"{_name} on a blocked value"))

__all__ = ["block_size", "blocked_shape", "from_blocked", "logical_shape",
           "pack_channels", "pack_conv_weight", "to_blocked", "unpack_conv_weight"]
