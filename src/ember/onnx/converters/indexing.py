"""Converters of ONNX indexing and scan operators built from Ember's gather, where and slices:
GatherElements, Trilu, CumSum, CumProd, OneHot, EyeLike.
"""

from __future__ import annotations

import numpy as np

from ember.frontend import tracer
from ember.frontend.tensor import Tensor
from ember.ir.types import DType
from ember.onnx.converters.base import (
    NodeContext,
    Outputs,
    converter,
    normalize_axis,
    onnx_dtype,
)


@converter("GatherElements", versions=(11, 13))
def gather_elements(node: NodeContext) -> Outputs:
    """out[i, j, k] = data[indices[i, j, k], j, k] (for axis 0): one `gather` from the flattened
    data at the row-major offsets of (index along `axis`, own position on the other axes)."""
    data, indices = node.tensor(0), node.tensor(1)
    axis = normalize_axis(node.attr("axis", 0), data.ndim, node)
    if indices.ndim != data.ndim:
        raise node.error(f"indices of rank {indices.ndim} for data of rank {data.ndim}; "
                         "GatherElements takes equal ranks")
    if any(i > d for k, (i, d) in enumerate(zip(indices.shape, data.shape, strict=True))
           if k != axis):
        raise node.error(f"indices shape {list(indices.shape)} exceeds data shape "
                         f"{list(data.shape)} off axis {axis}")
    dim = data.shape[axis]
    index = indices.astype(DType.I64)
    index = tracer.emit("where", index < 0, index + dim, index)  # negative: from the end
    strides = np.cumprod((1, *data.shape[::-1]))[-2::-1]  # row-major strides of data
    offset = index * node.const(np.int64(strides[axis]))
    for k, size in enumerate(indices.shape):
        if k == axis:
            continue
        position = np.arange(size, dtype=np.int64) * strides[k]
        shape = [1] * indices.ndim
        shape[k] = size
        offset = offset + node.const(position.reshape(shape))
    if indices.size:
        # An out-of-range index along `axis` must not land on a neighbouring row: clamp it
        # there, and let gather's own range check reject it through an impossible offset.
        bad = node.emit("logical_or", index < 0, index >= dim)
        offset = tracer.emit("where", bad, node.const(np.int64(data.size)), offset)
    return [node.emit("gather", data.reshape(-1), offset, axis=0)]


@converter("Trilu", versions=(14,))
def trilu(node: NodeContext) -> Outputs:
    """The upper (j - i >= k) or lower (j - i <= k) triangle of the last two axes, zeros
    elsewhere: `where` on a known mask."""
    x = node.tensor(0)
    if x.ndim < 2:
        raise node.error(f"input of rank {x.ndim}; Trilu takes rank 2 or more")
    rows, columns = x.shape[-2:]
    offsets = np.arange(columns)[None, :] - np.arange(rows)[:, None]
    upper = bool(node.attr("upper", 1))
    known = node.known(1) if node.has(1) else np.zeros((), np.int64)
    if known is not None:
        k = int(known.reshape(-1)[0])
        mask: Tensor = node.const(offsets >= k if upper else offsets <= k)
    else:  # k known only at run time: compare the known offsets with it
        k_tensor = node.tensor(1).astype(DType.I64).reshape(())
        diagonal = node.const(offsets.astype(np.int64))
        mask = diagonal >= k_tensor if upper else diagonal <= k_tensor
    return [tracer.emit("where", mask, x, node.const(0, like=x))]


def _shift(node: NodeContext, x: Tensor, axis: int, count: int, reverse: bool,
           fill: float) -> Tensor:
    """x moved `count` places along `axis` (toward the end, or the start when `reverse`),
    `fill` coming in."""
    size = x.shape[axis]
    if count >= size:
        return tracer.emit("where", node.const(np.zeros(x.shape, dtype=bool)), x,
                           node.const(fill, like=x))
    starts, stops, steps = [0] * x.ndim, list(x.shape), [1] * x.ndim
    if reverse:
        starts[axis] = count
    else:
        stops[axis] = size - count
    kept = node.emit("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    pads = [0] * (2 * x.ndim)
    pads[axis + (x.ndim if reverse else 0)] = count
    return node.emit("pad", kept, pads=tuple(pads), mode="constant", value=fill)


def _scan(node: NodeContext, op: str, identity: float) -> Outputs:
    """Inclusive prefix `op` by doubling (Hillis-Steele: log2(n) shifted combines), then
    shifted once more for `exclusive`."""
    x = node.tensor(0)
    axis = normalize_axis(int(node.static(1, "axis").reshape(-1)[0]), x.ndim, node)
    reverse = bool(node.attr("reverse", 0))
    result, count = x, 1
    while count < x.shape[axis]:
        result = node.emit(op, result, _shift(node, result, axis, count, reverse, identity))
        count *= 2
    if node.attr("exclusive", 0):
        result = _shift(node, result, axis, 1, reverse, identity)
    return [result]


@converter("CumSum", versions=(11, 14))
def cumsum(node: NodeContext) -> Outputs:
    """Running sums along a known axis (`exclusive`, `reverse`)."""
    return _scan(node, "add", 0.0)


@converter("CumProd", versions=(26,))
def cumprod(node: NodeContext) -> Outputs:
    """Running products along a known axis (`exclusive`, `reverse`)."""
    return _scan(node, "mul", 1.0)


@converter("OneHot", versions=(9, 11, 28))
def one_hot(node: NodeContext) -> Outputs:
    """values[1] where an index (negative ones from the end) equals its position along the new
    `axis`, values[0] elsewhere: `where` on a comparison with a known range."""
    indices = node.tensor(0)
    depth_value = node.static(1, "depth").reshape(-1)
    if depth_value.size != 1 or depth_value[0] < 1:
        raise node.error(f"depth must be one positive value, got {depth_value.tolist()}")
    depth = int(depth_value[0])
    rank = indices.ndim + 1
    axis = normalize_axis(node.attr("axis", -1), rank, node)
    values = node.tensor(2)
    if values.size != 2:
        raise node.error(f"values must hold [off_value, on_value], got shape "
                         f"{list(values.shape)}")
    flat = values.reshape(2)
    off = node.emit("slice", flat, starts=(0,), stops=(1,), steps=(1,)).reshape(())
    on = node.emit("slice", flat, starts=(1,), stops=(2,), steps=(1,)).reshape(())
    wrapped = tracer.emit("where", indices < 0, indices + node.const(depth, like=indices),
                          indices)
    shape = [1] * rank
    shape[axis] = depth
    positions = node.const(np.arange(depth).reshape(shape), like=indices)
    match = node.emit("eq", *tracer.binary_operands(wrapped.expand_dims(axis), positions))
    return [tracer.emit("where", match, on, off)]


@converter("EyeLike", versions=(9, 22))
def eye_like(node: NodeContext) -> Outputs:
    """Ones on the k-th diagonal of the input's 2-D shape, known at import time."""
    shape = node.shape(0)
    if len(shape) != 2:
        raise node.error(f"input of shape {list(shape)}; EyeLike takes a 2-D input")
    dtype = node.attr("dtype")
    numpy_dtype = (onnx_dtype(int(dtype), node.label).numpy if dtype is not None
                   else node.tensor(0).dtype)
    node.check_dims(shape, numpy_dtype, "shape")
    return [np.eye(*shape, k=int(node.attr("k", 0)), dtype=numpy_dtype)]
