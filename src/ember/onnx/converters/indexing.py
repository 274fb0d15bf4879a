"""Converters of ONNX indexing and scan operators built from Ember's gather, where and slices:
GatherElements, GatherND, ScatterElements (and Scatter), ScatterND, Trilu, CumSum, CumProd, OneHot,
EyeLike, ReverseSequence, MaxUnpool.
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


def _strides(shape: tuple[int, ...]) -> list[int]:
    """Row-major element strides of `shape`."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return strides[::-1]


def _checked(node: NodeContext, index: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """(index made non-negative, where it is out of range for an axis of `dim`)."""
    index = index.astype(DType.I64)
    index = tracer.emit("where", index < 0, index + dim, index)  # negative: from the end
    return index, node.emit("logical_or", index < 0, index >= dim)


def _element_offsets(node: NodeContext, data: Tensor, indices: Tensor, axis: int) -> Tensor:
    """The flat offsets into `data` that GatherElements and ScatterElements address: the
    index along `axis`, each element's own position on the other axes. An out-of-range index
    gets offset data.size, which gather's and scatter_add's range checks reject."""
    if indices.ndim != data.ndim:
        raise node.error(f"indices of rank {indices.ndim} for data of rank {data.ndim}; "
                         f"{node.op_type} takes equal ranks")
    if any(i > d for k, (i, d) in enumerate(zip(indices.shape, data.shape, strict=True))
           if k != axis):
        raise node.error(f"indices shape {list(indices.shape)} exceeds data shape "
                         f"{list(data.shape)} off axis {axis}")
    strides = _strides(data.shape)
    index, bad = _checked(node, indices, data.shape[axis])
    offset = index * node.const(np.int64(strides[axis]))
    for k, size in enumerate(indices.shape):
        if k != axis:
            shape = [1] * indices.ndim
            shape[k] = size
            position = np.arange(size, dtype=np.int64).reshape(shape) * strides[k]
            offset = offset + node.const(position)
    return tracer.emit("where", bad, node.const(np.int64(data.size)), offset)


def _tuple_offsets(node: NodeContext, data: Tensor, indices: Tensor, batch: int) -> Tensor:
    """GatherND's and ScatterND's flat offsets: indices[..., k] index data's axes from `batch`
    on, the leading `batch` axes are shared; the result has indices.shape[:-1] plus the
    addressed slice's element count as its last axis."""
    count = indices.shape[-1] if indices.ndim else 0
    if indices.ndim < 1 or batch + count > data.ndim:
        raise node.error(f"indices of shape {list(indices.shape)} index more than the "
                         f"{data.ndim - batch} axes of data {list(data.shape)}")
    if indices.shape[:batch] != data.shape[:batch]:
        raise node.error(f"the {batch} batch axes of indices {list(indices.shape)} and data "
                         f"{list(data.shape)} differ")
    strides = _strides(data.shape)
    lead = indices.shape[:-1]
    offset: Tensor = node.const(np.zeros([1] * len(lead), np.int64))
    bad: Tensor = node.const(np.zeros([1] * len(lead), bool))
    for k in range(batch):
        shape = [1] * len(lead)
        shape[k] = lead[k]
        offset = offset + node.const(np.arange(lead[k], dtype=np.int64).reshape(shape)
                                     * strides[k])
    for j in range(count):
        part = node.emit("slice", indices, starts=(0,) * (indices.ndim - 1) + (j,),
                         stops=(*lead, j + 1), steps=(1,) * indices.ndim).reshape(*lead)
        index, out_of_range = _checked(node, part, data.shape[batch + j])
        offset = offset + index * node.const(np.int64(strides[batch + j]))
        bad = node.emit("logical_or", bad, out_of_range)
    offset = tracer.emit("where", bad, node.const(np.int64(data.size)), offset)
    inner = int(np.prod(data.shape[batch + count:], dtype=np.int64))
    return offset.expand_dims(len(lead)) + node.const(np.arange(inner, dtype=np.int64))


@converter("GatherElements", versions=(11, 13))
def gather_elements(node: NodeContext) -> Outputs:
    """out[i, j, k] = data[indices[i, j, k], j, k] (for axis 0): one `gather` from the flattened
    data at the row-major offsets of (index along `axis`, own position on the other axes)."""
    data, indices = node.tensor(0), node.tensor(1)
    axis = normalize_axis(node.attr("axis", 0), data.ndim, node)
    offsets = _element_offsets(node, data, indices, axis)
    return [node.emit("gather", data.reshape(-1), offsets, axis=0)]


@converter("GatherND", versions=(11, 12, 13))
def gather_nd(node: NodeContext) -> Outputs:
    """Slices of data at the index tuples of indices' last axis (after `batch_dims` shared
    axes): one `gather` from the flattened data."""
    data, indices = node.tensor(0), node.tensor(1)
    batch = int(node.attr("batch_dims", 0))
    offsets = _tuple_offsets(node, data, indices, batch)
    gathered = node.emit("gather", data.reshape(-1), offsets, axis=0)
    shape = indices.shape[:-1] + data.shape[batch + indices.shape[-1]:]
    return [gathered.reshape(*shape)]


def _scatter(node: NodeContext, data: Tensor, offsets: Tensor, updates: Tensor) -> Tensor:
    """data with the updates written (reduction none) or added (add) at flat `offsets`:
    `scatter_add` of the updates, and of ones to mark which elements were hit."""
    reduction = node.attr("reduction", "none")
    if reduction not in ("none", "add"):
        raise node.error(f"reduction {reduction!r} is not supported (none, add)")
    if data.dtype_ is DType.BOOL:
        raise node.error("bool data is not supported")
    flat_offsets = offsets.reshape(-1)
    size = int(data.size)
    sums = node.emit("scatter_add", updates.astype(data.dtype_).reshape(-1), flat_offsets,
                     axis=0, size=size)
    flat = data.reshape(-1)
    if reduction == "add":
        return (flat + sums).reshape(*data.shape)
    # NOTE: ONNX leaves repeated indices undefined without a reduction; here they add up.
    ones = node.const(np.ones(flat_offsets.shape, np.float32))
    hits = node.emit("scatter_add", ones, flat_offsets, axis=0, size=size)
    written = node.emit("gt", hits, node.const(np.float32(0)))
    return tracer.emit("where", written, sums, flat).reshape(*data.shape)


@converter("ScatterElements", versions=(11, 13, 16, 18))
def scatter_elements(node: NodeContext) -> Outputs:
    """data with updates written (or added: `reduction` add) at the elements GatherElements
    would read."""
    data, indices, updates = node.tensor(0), node.tensor(1), node.tensor(2)
    if updates.shape != indices.shape:
        raise node.error(f"updates {list(updates.shape)} and indices {list(indices.shape)} "
                         "differ in shape")
    axis = normalize_axis(node.attr("axis", 0), data.ndim, node)
    return [_scatter(node, data, _element_offsets(node, data, indices, axis), updates)]


converter("Scatter", versions=(9, 11))(scatter_elements)


@converter("ScatterND", versions=(11, 13, 16, 18))
def scatter_nd(node: NodeContext) -> Outputs:
    """data with updates written (or added: `reduction` add) at the slices GatherND would
    read."""
    data, indices, updates = node.tensor(0), node.tensor(1), node.tensor(2)
    offsets = _tuple_offsets(node, data, indices, 0)
    if updates.size != offsets.size:
        raise node.error(f"updates of shape {list(updates.shape)} for {offsets.size} "
                         "addressed elements")
    return [_scatter(node, data, offsets, updates)]


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


@converter("ReverseSequence", versions=(10, 28))
def reverse_sequence(node: NodeContext) -> Outputs:
    """The first sequence_lens[b] steps of each batch entry reversed along `time_axis`, the
    rest kept: GatherElements with the index len - 1 - t (t < len) or t."""
    x, lengths = node.tensor(0), node.tensor(1).astype(DType.I64)
    time_axis = normalize_axis(node.attr("time_axis", 0), x.ndim, node)
    batch_axis = normalize_axis(node.attr("batch_axis", 1), x.ndim, node)
    if {time_axis, batch_axis} != {0, 1}:
        raise node.error(f"time_axis {time_axis} and batch_axis {batch_axis} must be 0 and 1")
    if lengths.shape != (x.shape[batch_axis],):
        raise node.error(f"sequence_lens of shape {list(lengths.shape)} for batch size "
                         f"{x.shape[batch_axis]}")
    shape = [1] * x.ndim
    shape[time_axis] = x.shape[time_axis]
    steps = node.const(np.arange(x.shape[time_axis], dtype=np.int64).reshape(shape))
    shape = [1] * x.ndim
    shape[batch_axis] = x.shape[batch_axis]
    length = lengths.reshape(*shape)
    index = tracer.emit("where", steps < length, length - node.const(np.int64(1)) - steps,
                        steps)
    index = node.emit("broadcast_to", index, shape=x.shape)
    offsets = _element_offsets(node, x, index, time_axis)
    return [node.emit("gather", x.reshape(-1), offsets, axis=0).reshape(*x.shape)]


@converter("MaxUnpool", versions=(9, 11, 22))
def max_unpool(node: NodeContext) -> Outputs:
    """Zeros with each value written at its flat index (MaxPool's Indices) into the pool's
    inverse size; a known `output_shape` larger than that pads it with zeros at the end of each
    axis (the indices stay flat into the inverse size, as ONNX's reference implementation
    reads them)."""
    x, indices = node.tensor(0), node.tensor(1)
    if x.shape != indices.shape:
        raise node.error(f"X {list(x.shape)} and I {list(indices.shape)} differ in shape")
    kernel = list(node.attr("kernel_shape"))
    count = x.ndim - 2
    strides = list(node.attr("strides", [1] * count))
    pads = list(node.attr("pads", [0] * (2 * count)))
    inferred = (*x.shape[:2], *((size - 1) * s - pads[i] - pads[i + count] + k for i, (size, s, k)
                                in enumerate(zip(x.shape[2:], strides, kernel, strict=True))))
    inferred = node.check_dims(inferred, x.dtype, "output shape")
    zeros = node.const(np.zeros(inferred), like=x)
    index, bad = _checked(node, indices, int(np.prod(inferred)))
    offsets = tracer.emit("where", bad, node.const(np.int64(np.prod(inferred))), index)
    result = _scatter(node, zeros, offsets, x)
    if not node.has(2):
        return [result]
    shape = node.check_dims(tuple(node.static_ints(2, "output_shape")), x.dtype, "output shape")
    if len(shape) != x.ndim or any(a < b for a, b in zip(shape, inferred, strict=True)):
        raise node.error(f"output_shape {list(shape)} is smaller than the unpooled shape "
                         f"{list(inferred)}")
    if shape == inferred:
        return [result]
    grow = [a - b for a, b in zip(shape, inferred, strict=True)]
    return [node.emit("pad", result, pads=tuple([0] * x.ndim + grow), mode="constant",
                      value=0.0)]


@converter("Compress", versions=(9, 11, 28))
def compress(node: NodeContext) -> Outputs:
    """The slices along `axis` (of the flattened input without one) where the condition, known
    at import time, is true: a gather of those positions. A condition shorter than the axis
    leaves the rest out; a longer one may only be false beyond it."""
    x = node.tensor(0)
    condition = node.static(1, "condition").reshape(-1).astype(bool)
    if node.attr("axis") is None:
        x = x.reshape(-1)
        axis = 0
    else:
        axis = normalize_axis(int(node.attr("axis")), x.ndim, node)
    size = x.shape[axis]
    if condition[size:].any():
        raise node.error(f"the condition selects position {int(np.argmax(condition[size:])) + size}"
                         f" of an axis of size {size}")
    positions = np.flatnonzero(condition[:size]).astype(np.int64)
    return [node.emit("gather", x, node.const(positions), axis=axis)]
