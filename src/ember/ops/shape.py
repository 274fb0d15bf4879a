"""Shape ops and constants: reshape, transpose, broadcast_to, expand_dims, squeeze, flatten,
concat, split, slice, pad, const.

Attributes are fully resolved by the tracer: `reshape` has no -1, `slice` has one
`(start, stop, step)` per dimension with Python `range` semantics: the selected indices are
`range(start, stop, step)`, with no negative wraparound (a stop of -1 with a negative step means
"through index 0"), and every selected index must lie inside the dimension.
"""

from __future__ import annotations

import numpy as np

from ember.errors import ShapeError
from ember.ir.attrs import Const
from ember.ir.ops import Attr, OpDef, normalize_axes, normalize_axis, register_op
from ember.ir.types import TensorType


def infer_reshape(x: TensorType, *, shape: tuple[int, ...]) -> TensorType:
    if any(d < 0 for d in shape):
        raise ShapeError(f"target shape {list(shape)} has a negative dimension")
    new = x.with_shape(shape)
    if new.size != x.size:
        raise ShapeError(f"cannot reshape {x.size} elements {list(x.shape)} into {list(shape)} "
                         f"({new.size} elements)")
    return new


def infer_transpose(x: TensorType, *, perm: tuple[int, ...]) -> TensorType:
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"perm {list(perm)} is not a permutation of {x.ndim} axes")
    return x.with_shape(tuple(x.shape[p] for p in perm))


def infer_broadcast_to(x: TensorType, *, shape: tuple[int, ...]) -> TensorType:
    if min(shape, default=0) < 0 or len(shape) < x.ndim or any(
        d not in (1, t) for d, t in zip(x.shape, shape[len(shape) - x.ndim :], strict=True)
    ):
        raise ShapeError(f"cannot broadcast {list(x.shape)} to {list(shape)}")
    return x.with_shape(shape)


def infer_expand_dims(x: TensorType, *, axes: tuple[int, ...]) -> TensorType:
    rank = x.ndim + len(axes)
    positions = normalize_axes(axes, rank)
    dims = iter(x.shape)
    return x.with_shape(tuple(1 if i in positions else next(dims) for i in range(rank)))


def infer_squeeze(x: TensorType, *, axes: tuple[int, ...]) -> TensorType:
    positions = _array_axes(axes, x.ndim)
    for axis in positions:
        if x.shape[axis] != 1:
            raise ShapeError(f"cannot squeeze axis {axis} of size {x.shape[axis]}")
    return x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in positions))


def _array_axes(axes: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """Normalized axes that exist in an array of rank `ndim` (a scalar's axis 0 does not)."""
    normalized = normalize_axes(axes, ndim)
    return normalized if ndim else ()


def _squeeze(x: np.ndarray, *, axes: tuple[int, ...]) -> np.ndarray:
    return np.squeeze(x, _array_axes(axes, x.ndim))


def _need_rank(x: TensorType) -> None:
    if x.ndim == 0:
        raise ShapeError("expected an input of rank >= 1, got a scalar")


def infer_flatten(x: TensorType, *, start_dim: int, end_dim: int) -> TensorType:
    if x.ndim == 0:
        return x.with_shape((1,))
    start, end = normalize_axis(start_dim, x.ndim), normalize_axis(end_dim, x.ndim)
    if start > end:
        raise ShapeError(f"start_dim {start_dim} comes after end_dim {end_dim}")
    middle = int(np.prod(x.shape[start : end + 1]))
    return x.with_shape((*x.shape[:start], middle, *x.shape[end + 1 :]))


def _flatten(x: np.ndarray, *, start_dim: int, end_dim: int) -> np.ndarray:
    return x.reshape(infer_flatten(TensorType.of(x), start_dim=start_dim, end_dim=end_dim).shape)


def infer_concat(*inputs: TensorType, axis: int) -> TensorType:
    first = inputs[0]
    _need_rank(first)
    axis = normalize_axis(axis, first.ndim)
    for other in inputs[1:]:
        if other.dtype is not first.dtype:
            raise ShapeError(f"operand dtypes differ ({first.dtype} vs {other.dtype})")
        pairs = enumerate(zip(first.shape, other.shape, strict=False))
        if other.ndim != first.ndim or any(a != b for i, (a, b) in pairs if i != axis):
            raise ShapeError(f"shapes {list(first.shape)} and {list(other.shape)} differ "
                             f"outside axis {axis}")
    total = sum(t.shape[axis] for t in inputs)
    return first.with_shape((*first.shape[:axis], total, *first.shape[axis + 1 :]))


def infer_split(x: TensorType, *, axis: int, sizes: tuple[int, ...]) -> tuple[TensorType, ...]:
    _need_rank(x)
    axis = normalize_axis(axis, x.ndim)
    if not sizes or sum(sizes) != x.shape[axis] or min(sizes) < 0:
        raise ShapeError(f"sizes {list(sizes)} do not add up to axis {axis} of size "
                         f"{x.shape[axis]}")
    return tuple(x.with_shape((*x.shape[:axis], s, *x.shape[axis + 1 :])) for s in sizes)


def _split(x: np.ndarray, *, axis: int, sizes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    cuts = np.cumsum(sizes)[:-1]
    return tuple(part.copy() for part in np.split(x, cuts, axis=axis))


def infer_slice(x: TensorType, *, starts: tuple[int, ...], stops: tuple[int, ...],
                steps: tuple[int, ...]) -> TensorType:
    if not len(starts) == len(stops) == len(steps) == x.ndim:
        raise ShapeError(f"slice needs one start, stop and step per dimension ({x.ndim})")
    shape = []
    for axis, (start, stop, step) in enumerate(zip(starts, stops, steps, strict=True)):
        size = x.shape[axis]
        selected = range(start, stop, step) if step else range(0)
        if step == 0 or (selected and (min(selected) < 0 or max(selected) >= size)):
            raise ShapeError(f"slice {start}:{stop}:{step} is out of range for axis {axis} "
                             f"of size {size}")
        shape.append(len(selected))
    return x.with_shape(tuple(shape))


def _slice(x: np.ndarray, *, starts: tuple[int, ...], stops: tuple[int, ...],
           steps: tuple[int, ...]) -> np.ndarray:
    # NOTE: explicit indices, not Python slices: a slice would wrap a negative start or stop.
    for axis, (start, stop, step) in enumerate(zip(starts, stops, steps, strict=True)):
        x = np.take(x, np.arange(start, stop, step, dtype=np.intp), axis=axis)
    return x.copy()  # a scalar has no axis to take along; still a fresh array


PAD_MODES = ("constant", "reflect", "edge")


def infer_pad(x: TensorType, *, pads: tuple[int, ...], mode: str, value: float) -> TensorType:
    if len(pads) != 2 * x.ndim or min(pads, default=0) < 0:
        raise ShapeError(f"pads {list(pads)} must hold {2 * x.ndim} non-negative values "
                         "(all befores, then all afters)")
    if mode not in PAD_MODES:
        raise ShapeError(f"mode {mode!r} is not one of {', '.join(PAD_MODES)}")
    befores, afters = pads[: x.ndim], pads[x.ndim :]
    if mode != "constant" and any(
        d == 0 for b, a, d in zip(befores, afters, x.shape, strict=True) if b or a
    ):
        raise ShapeError(f"{mode} padding {list(pads)} cannot extend an empty dimension "
                         f"of {list(x.shape)}")
    if mode == "reflect" and any(
        max(b, a) >= d for b, a, d in zip(befores, afters, x.shape, strict=True) if b or a
    ):
        raise ShapeError(f"reflect padding {list(pads)} must be smaller than the dimensions "
                         f"{list(x.shape)}")
    return x.with_shape(tuple(b + d + a for b, d, a in zip(befores, x.shape, afters, strict=True)))


def _pad(x: np.ndarray, *, pads: tuple[int, ...], mode: str, value: float) -> np.ndarray:
    widths = list(zip(pads[: x.ndim], pads[x.ndim :], strict=True))
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=x.dtype.type(value))
    return np.pad(x, widths, mode=mode)


def infer_const(*, value: Const, name: str = "") -> TensorType:
    return value.type


def _const(*, value: Const, name: str = "") -> np.ndarray:
    if value.data is None:
        raise ValueError(f"the data of constant {name or value!r} is not loaded "
                         "(it was parsed from a dense_blob reference)")
    return value.data


register_op(OpDef("reshape", infer=infer_reshape, reference=lambda x, shape: x.reshape(shape),
                  attrs={"shape": Attr("ints")}))
register_op(OpDef("transpose", infer=infer_transpose,
                  reference=lambda x, perm: x.transpose(perm).copy(),  # C order, rank kept
                  attrs={"perm": Attr("ints")}))
register_op(OpDef("broadcast_to", infer=infer_broadcast_to,
                  reference=lambda x, shape: np.broadcast_to(x, shape).copy(),
                  attrs={"shape": Attr("ints")}))
register_op(OpDef("expand_dims", infer=infer_expand_dims,
                  reference=lambda x, axes: np.expand_dims(x, axes), attrs={"axes": Attr("ints")}))
register_op(OpDef("squeeze", infer=infer_squeeze, reference=_squeeze,
                  attrs={"axes": Attr("ints")}))
register_op(OpDef("flatten", infer=infer_flatten, reference=_flatten,
                  attrs={"start_dim": Attr("int", 1), "end_dim": Attr("int", -1)}))
register_op(OpDef("concat", infer=infer_concat,
                  reference=lambda *xs, axis: np.concatenate(xs, axis=axis),
                  attrs={"axis": Attr("int")}, arity=(1, None)))
register_op(OpDef("split", infer=infer_split, reference=_split,
                  attrs={"axis": Attr("int"), "sizes": Attr("ints")}))
register_op(OpDef("slice", infer=infer_slice, reference=_slice,
                  attrs={"starts": Attr("ints"), "stops": Attr("ints"), "steps": Attr("ints")}))
register_op(OpDef("pad", infer=infer_pad, reference=_pad,
                  attrs={"pads": Attr("ints"), "mode": Attr("str", "constant"),
                         "value": Attr("float", 0.0)}))
register_op(OpDef("const", infer=infer_const, reference=_const, arity=(0, 0),
                  attrs={"value": Attr("const"), "name": Attr("str", None)}))
