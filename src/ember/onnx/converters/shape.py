"""Converters of shape, indexing and constant ONNX operators.

Inputs that ONNX passes as tensors but Ember needs as attributes (a Reshape's shape, a Slice's
starts, a Pad's pads ...) must be known at import time; `NodeContext.static` says so otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ember.frontend import tracer
from ember.frontend.tensor import Tensor
from ember.onnx.converters.base import (
    FOLD_BYTES,
    NodeContext,
    Outputs,
    converter,
    format_bytes,
    normalize_axis,
    shape_bytes,
)

# -- constants and shapes -----------------------------------------------------------------------


@converter("Constant", versions=(1, 9, 11, 12, 13, 19, 21, 23, 24, 25))
def constant(node: NodeContext) -> Outputs:
    """The value attribute, known at import time."""
    for name, dtype in (("value", None), ("value_float", np.float32),
                        ("value_floats", np.float32), ("value_int", np.int64),
                        ("value_ints", np.int64)):
        if name in node.attrs:
            return [np.asarray(node.attrs[name], dtype=dtype)]
    given = ", ".join(sorted(node.attrs)) or "none"
    raise node.error(f"only numeric constants are supported (attributes: {given})")


@converter("ConstantOfShape", versions=(9, 20, 21, 23, 24, 25))
def constant_of_shape(node: NodeContext) -> Outputs:
    """A tensor of the known shape filled with `value` (f32 zero by default)."""
    shape = node.static_ints(0, "shape")
    value = node.attr("value")
    fill = np.zeros(1, dtype=np.float32) if value is None else np.asarray(value).reshape(-1)
    if fill.size != 1:
        raise node.error(f"value must hold one element, got {fill.size}")
    return [node.full(shape, fill[0], fill.dtype)]


@converter("Shape", versions=(1, 13, 15, 19, 21, 23, 24, 25))
def shape(node: NodeContext) -> Outputs:
    """The input's static shape as a known i64 vector (`start`/`end` from opset 15)."""
    dims = node.shape(0)
    rank = len(dims)
    start, end = node.attr("start", 0), node.attr("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return [np.asarray(dims[start:end], dtype=np.int64)]


@converter("Size", versions=(1, 13, 19, 21, 23, 24, 25))
def size(node: NodeContext) -> Outputs:
    """The input's element count as a known i64 scalar."""
    return [np.asarray(int(np.prod(node.shape(0))), dtype=np.int64)]


@converter("Range", versions=(11, 27))
def range_(node: NodeContext) -> Outputs:
    """np.arange of known start, limit and delta."""
    start = node.static(0, "start")
    limit, delta = node.static(1, "limit"), node.static(2, "delta")
    if any(v.size != 1 for v in (start, limit, delta)):
        raise node.error("start, limit and delta must be scalars")
    start, limit, delta = (v.reshape(()) for v in (start, limit, delta))  # [1] counts as one
    if delta == 0 or not np.isfinite([start, limit, delta]).all():
        raise node.error(f"cannot count from {start} to {limit} in steps of {delta}")
    count = max(math.ceil((float(limit) - float(start)) / float(delta)), 0)
    size = shape_bytes((count,), start.dtype)
    if size > FOLD_BYTES:
        raise node.error(f"{count} elements ({format_bytes(size)}) are more than the "
                         f"{format_bytes(FOLD_BYTES)} a value computed at import time may have")
    if start.dtype == np.float16 and node.opset >= 27 and node.attr("stash_type", 1):
        # version 27: count in f32, then round
        return [np.arange(*(v.astype(np.float32) for v in (start, limit, delta)),
                          dtype=np.float32).astype(np.float16)]
    return [np.arange(start, limit, delta, dtype=start.dtype)]


def _dropout_is_random(node: NodeContext) -> bool:
    """Whether the node drops elements: `is_test` 0 before version 7, a true `training_mode`
    input from version 12 (its ratio, an attribute before version 12 and an input after,
    defaulting to 0.5, nonzero)."""
    if node.opset < 7:
        training, ratio = not node.attr("is_test", 0), float(node.attr("ratio", 0.5))
    elif node.opset < 12:
        return False
    else:
        if not node.has(2):
            return False
        ratio = float(node.static(1, "ratio").reshape(-1)[0]) if node.has(1) else 0.5
        if ratio == 0.0:  # nothing dropped, whatever the mode
            return False
        training = bool(node.static(2, "training_mode").reshape(-1)[0])
    return training and ratio != 0.0


@converter("Dropout", versions=(1, 6, 7, 10, 12, 13, 22))
def dropout(node: NodeContext) -> Outputs:
    """Inference: the input unchanged, and an all-true mask when asked for (training mode is
    random, and refused unless its ratio is 0)."""
    x = node.tensor(0)
    if _dropout_is_random(node):
        raise node.error("training mode with a nonzero ratio drops random elements; Ember "
                         "imports inference graphs (export the model in eval mode)")
    mask = node.full(x.shape, True, bool) if node.output_used(1) else None
    return [x, mask]


# -- reshaping ----------------------------------------------------------------------------------


def reshape_target(node: NodeContext, current: tuple[int, ...], target: list[int],
                   allow_zero: bool) -> tuple[int, ...]:
    """ONNX's target shape resolved: 0 copies the input's dimension, one -1 is inferred."""
    dims = []
    for index, dim in enumerate(target):
        if dim < -1:
            raise node.error(f"target {target}: dimension {index} is {dim}; only -1 (inferred) "
                             "may be negative")
        if dim == 0 and not allow_zero:
            if index >= len(current):
                raise node.error(f"target {target}: dimension {index} copies an input "
                                 f"dimension that {list(current)} does not have")
            dim = current[index]
        dims.append(dim)
    size = int(np.prod(current))
    if dims.count(-1) > 1:
        raise node.error(f"target {target} has more than one -1")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        if known == 0 or size % known:
            raise node.error(f"cannot reshape {list(current)} into {target}")
        dims = [size // known if d == -1 else d for d in dims]
    if int(np.prod(dims)) != size:
        raise node.error(f"cannot reshape {list(current)} ({size} elements) into {target}")
    return tuple(dims)


@converter("Reshape", versions=(1, 5, 13, 14, 19, 21, 23, 24, 25))
def reshape(node: NodeContext) -> Outputs:
    """`reshape` to a known target shape (an attribute before opset 5)."""
    x = node.tensor(0)
    target = (list(node.attr("shape")) if node.opset < 5
              else node.static_ints(1, "shape"))
    dims = reshape_target(node, x.shape, target, bool(node.attr("allowzero", 0)))
    return [x if dims == x.shape else node.emit("reshape", x, shape=dims)]


@converter("Flatten", versions=(1, 9, 11, 13, 21, 23, 24, 25))
def flatten(node: NodeContext) -> Outputs:
    """Reshape to 2-D: the dimensions before `axis`, and those from it."""
    x = node.tensor(0)
    axis = int(node.attr("axis", 1))
    if not -x.ndim <= axis <= x.ndim:  # ONNX allows [-r, r]: -1 counts from r, not r + 1
        raise node.error(f"axis {axis} is out of range for rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    dims = (int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))
    return [x if dims == x.shape else node.emit("reshape", x, shape=dims)]


@converter("Transpose", versions=(1, 13, 21, 23, 24, 25))
def transpose(node: NodeContext) -> Outputs:
    """`transpose` by `perm` (reversed axes by default)."""
    x = node.tensor(0)
    perm = node.attr("perm") or list(reversed(range(x.ndim)))
    perm = tuple(normalize_axis(p, x.ndim, node) for p in perm)
    return [x if perm == tuple(range(x.ndim)) else node.emit("transpose", x, perm=perm)]


def _axes(node: NodeContext, attr_until: int, index: int) -> list[int] | None:
    """Axes from the attribute (opsets up to `attr_until`) or from input `index` after."""
    if node.opset <= attr_until:
        axes = node.attr("axes")
        return None if axes is None else list(axes)
    return node.static_ints(index, "axes") if node.has(index) else None


@converter("Squeeze", versions=(1, 11, 13, 21, 23, 24, 25))
def squeeze(node: NodeContext) -> Outputs:
    """`squeeze` of the given axes (attribute before opset 13), or of every size-1 axis."""
    x = node.tensor(0)
    axes = _axes(node, 12, 1)
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    axes = sorted(normalize_axis(a, x.ndim, node) for a in axes)
    for axis in axes:
        if x.shape[axis] != 1:
            raise node.error(f"cannot squeeze axis {axis} of size {x.shape[axis]} "
                             f"(input shape {list(x.shape)})")
    return [node.emit("squeeze", x, axes=tuple(axes)) if axes else x]


@converter("Unsqueeze", versions=(1, 11, 13, 21, 23, 24, 25))
def unsqueeze(node: NodeContext) -> Outputs:
    """`expand_dims`: axes index the output (attribute before opset 13)."""
    x = node.tensor(0)
    axes = _axes(node, 12, 1)
    if axes is None:
        raise node.error("axes are required")
    rank = x.ndim + len(axes)
    axes = sorted(normalize_axis(a, rank, node) for a in axes)
    return [node.emit("expand_dims", x, axes=tuple(axes))]


@converter("Concat", versions=(1, 4, 11, 13))
def concat(node: NodeContext) -> Outputs:
    """`concat` along `axis`."""
    parts = [node.tensor(i) for i in range(node.input_count) if node.has(i)]
    parts = [p for p in parts if p.size or p.ndim != 1]  # ONNX allows empty 1-D operands
    if len(parts) == 1:
        return [parts[0]]
    axis = normalize_axis(node.attr("axis", 0), parts[0].ndim, node)
    return [tracer.emit("concat", *parts, axis=axis)]


def _split_sizes(node: NodeContext, length: int) -> list[int]:
    if node.opset < 13 and node.attr("split") is not None:
        return list(node.attr("split"))
    if node.opset >= 13 and node.has(1):
        return node.static_ints(1, "split")
    count = node.attr("num_outputs", node.output_count)
    chunk = -(-length // count)  # the last part is smaller when the axis does not divide
    return [min(chunk, length - i * chunk) for i in range(count)]


@converter("Split", versions=(1, 2, 11, 13, 18))
def split(node: NodeContext) -> Outputs:
    """`split` by the given sizes, or into equal parts (the last smaller, from opset 18)."""
    x = node.tensor(0)
    axis = normalize_axis(node.attr("axis", 0), x.ndim, node)
    sizes = _split_sizes(node, x.shape[axis])
    if sum(sizes) != x.shape[axis]:
        raise node.error(f"split sizes {sizes} do not add up to axis {axis} of size "
                         f"{x.shape[axis]}")
    if len(sizes) == 1:
        return [x]
    return list(node.emit("split", x, axis=axis, sizes=tuple(sizes)))


def slice_bounds(dim: int, start: int, end: int, step: int) -> tuple[int, int]:
    """ONNX's clamped start and end as Python `range` bounds without wraparound."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


def _slice_arguments(node: NodeContext, rank: int) -> tuple[list[int], ...]:
    if node.opset < 10:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes = list(node.attr("axes", range(len(starts))))
        return starts, ends, axes, [1] * len(starts)
    starts, ends = node.static_ints(1, "starts"), node.static_ints(2, "ends")
    axes = node.static_ints(3, "axes") if node.has(3) else list(range(len(starts)))
    steps = node.static_ints(4, "steps") if node.has(4) else [1] * len(starts)
    return starts, ends, axes, steps


@converter("Slice", versions=(1, 10, 11, 13))
def slice_(node: NodeContext) -> Outputs:
    """`slice` with ONNX's clamping of starts and ends."""
    x = node.tensor(0)
    starts, stops, steps = [0] * x.ndim, list(x.shape), [1] * x.ndim
    for start, end, axis, step in zip(*_slice_arguments(node, x.ndim), strict=True):
        axis = normalize_axis(axis, x.ndim, node)
        if step == 0:
            raise node.error(f"step 0 on axis {axis}")
        starts[axis], stops[axis] = slice_bounds(x.shape[axis], start, end, step)
        steps[axis] = step
    if (starts, stops, steps) == ([0] * x.ndim, list(x.shape), [1] * x.ndim):
        return [x]
    return [node.emit("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))]


@converter("Gather", versions=(1, 11, 13))
def gather(node: NodeContext) -> Outputs:
    """`gather` along `axis`; known negative indices are made non-negative at import time."""
    data = node.tensor(0)
    axis = normalize_axis(node.attr("axis", 0), data.ndim, node)
    known = node.known(1)
    if known is None:
        return [node.emit("gather", data, node.tensor(1), axis=axis)]
    dim = data.shape[axis]
    if known.size and (known.min() < -dim or known.max() >= dim):
        raise node.error(f"indices {known.reshape(-1).tolist()} are out of range for axis "
                         f"{axis} of size {dim}")
    indices = node.const(np.where(known < 0, known + dim, known).astype(np.int64))
    return [node.emit("gather", data, indices, axis=axis)]


# -- padding, broadcasting, repetition ----------------------------------------------------------


def _pad_arguments(node: NodeContext, rank: int) -> tuple[list[int], str, float | Tensor]:
    """(pads, mode, value): the value is a traced scalar when only known at run time."""
    mode = node.attr("mode", "constant")
    if node.opset < 11:
        pads = list(node.attr("pads", node.attr("paddings", [])))
        return pads, mode, float(node.attr("value", 0.0))
    pads = node.static_ints(1, "pads")
    value: Any = node.known(2) if node.has(2) else None
    if node.has(2) and value is None:
        value = node.tensor(2)
        if value.size != 1:
            raise node.error(f"constant_value must hold one element, got shape "
                             f"{list(value.shape)}")
        value = value.reshape()
    if node.has(3):
        axes = [normalize_axis(a, rank, node) for a in node.static_ints(3, "axes")]
        full = [0] * (2 * rank)
        for i, axis in enumerate(axes):
            full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
        pads = full
    if isinstance(value, Tensor):
        return pads, mode, value
    return pads, mode, 0.0 if value is None else float(value.reshape(-1)[0])


@converter("Pad", versions=(1, 2, 11, 13, 18, 19, 21, 23, 24, 25))
def pad(node: NodeContext) -> Outputs:
    """`pad` (constant, reflect, edge); negative pads crop."""
    x = node.tensor(0)
    pads, mode, value = _pad_arguments(node, x.ndim)
    if len(pads) != 2 * x.ndim:
        raise node.error(f"pads {pads} must hold {2 * x.ndim} values for rank {x.ndim}")
    if mode not in ("constant", "reflect", "edge"):
        raise node.error(f"mode {mode!r} is not supported (constant, reflect, edge)")
    befores, afters = pads[: x.ndim], pads[x.ndim :]
    if min(pads) < 0:  # crop first, then pad what is positive
        starts = [max(-b, 0) for b in befores]
        stops = [d - max(-a, 0) for d, a in zip(x.shape, afters, strict=True)]
        x = node.emit("slice", x, starts=tuple(starts), stops=tuple(stops),
                      steps=(1,) * x.ndim)
        pads = [max(p, 0) for p in pads]
    if not any(pads):
        return [x]
    if isinstance(value, Tensor):  # pad with zeros, then put the run-time value around x
        padded = node.emit("pad", x, pads=tuple(pads), mode=mode, value=0.0)
        if mode != "constant":
            return [padded]
        widths = list(zip(pads[: x.ndim], pads[x.ndim :], strict=True))
        inside = node.const(np.pad(np.ones(x.shape, dtype=bool), widths))
        return [tracer.emit("where", inside, padded, value.astype(x.dtype_))]
    return [node.emit("pad", x, pads=tuple(pads), mode=mode, value=value)]


@converter("Expand", versions=(8, 13))
def expand(node: NodeContext) -> Outputs:
    """`broadcast_to` the broadcast of the input's shape and the known target shape."""
    x = node.tensor(0)
    target = node.static_ints(1, "shape")
    try:
        shape = tuple(np.broadcast_shapes(x.shape, tuple(target)))
    except ValueError:
        raise node.error(f"shape {list(x.shape)} does not broadcast to {target}") from None
    if shape == x.shape:
        return [x]
    if len(shape) > x.ndim:
        x = x.reshape(*([1] * (len(shape) - x.ndim)), *x.shape)
    return [node.emit("broadcast_to", x, shape=shape)]


@converter("Tile", versions=(6, 13))
def tile(node: NodeContext) -> Outputs:
    """Repeat the whole tensor `repeats[i]` times along axis i (broadcast then reshape)."""
    x = node.tensor(0)
    repeats = node.static_ints(1, "repeats")
    if len(repeats) != x.ndim:
        raise node.error(f"repeats {repeats} must hold one count per axis ({x.ndim})")
    if min(repeats, default=0) < 0:
        raise node.error(f"repeats {repeats} must not be negative")
    if all(r == 1 for r in repeats):
        return [x]
    # [d0, d1] -> [1, d0, 1, d1] -> [r0, d0, r1, d1] -> [r0 * d0, r1 * d1]
    interleaved = tuple(v for d in x.shape for v in (1, d))
    target = tuple(v for r, d in zip(repeats, x.shape, strict=True) for v in (r, d))
    spread = node.emit("broadcast_to", x.reshape(*interleaved), shape=target)
    return [spread.reshape(*(r * d for r, d in zip(repeats, x.shape, strict=True)))]


def _depth_space(node: NodeContext, x: Tensor, to_space: bool) -> Tensor:
    block = int(node.attr("blocksize"))
    n, c, h, w = x.shape
    if to_space:
        if node.attr("mode", "DCR") == "DCR":
            y = x.reshape(n, block, block, c // block**2, h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // block**2, block, block, h, w).transpose(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c // block**2, h * block, w * block)
    y = x.reshape(n, c, h // block, block, w // block, block)
    if node.attr("mode", "DCR") == "DCR":  # channel index (row, column, depth)
        y = y.transpose(0, 3, 5, 1, 2, 4)
    else:  # CRD (from version 28): channel index (depth, row, column)
        y = y.transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * block**2, h // block, w // block)


@converter("DepthToSpace", versions=(1, 11, 13, 28))
def depth_to_space(node: NodeContext) -> Outputs:
    """Channels to spatial blocks (DCR or CRD order), by reshape and transpose."""
    return [_depth_space(node, node.tensor(0), to_space=True)]


@converter("SpaceToDepth", versions=(1, 13, 28))
def space_to_depth(node: NodeContext) -> Outputs:
    """Spatial blocks to channels (DCR or CRD order), by reshape and transpose."""
    return [_depth_space(node, node.tensor(0), to_space=False)]
