"""Sorting: `topk(x) {k, axis, largest}` -> (values, int64 indices) along one axis.

The k largest (or smallest) elements of each row along `axis`, in order, with their positions.
The order is stable: equal values keep their index order (lower index first), as ONNX TopK
requires and numpy's stable sort gives. NaN counts as larger than every number (it comes last
in an ascending sort, as numpy's; first among the largest, as torch.topk's); -0.0 equals 0.0.
A full sort is `topk` with k the axis size: `np.sort`, `np.argsort` and torch.sort trace to it.
"""

from __future__ import annotations

import numpy as np

from ember.errors import ShapeError
from ember.ir.ops import Attr, OpDef, normalize_axis, register_op
from ember.ir.types import DType, TensorType


def infer_topk(x: TensorType, *, k: int, axis: int, largest: bool
               ) -> tuple[TensorType, TensorType]:
    if x.ndim == 0:
        raise ShapeError("expected an input of rank >= 1, got a scalar")
    if x.dtype is DType.BOOL:
        raise ShapeError("sorting bool values is not supported; cast them to an integer first")
    position = normalize_axis(axis, x.ndim)
    if not 0 <= k <= x.shape[position]:
        raise ShapeError(f"k={k} is outside [0, {x.shape[position]}] (the size of axis {axis})")
    shape = (*x.shape[:position], k, *x.shape[position + 1:])
    return x.with_shape(shape), TensorType(DType.I64, shape)


def sort_order(x: np.ndarray, axis: int, largest: bool) -> np.ndarray:
    """Stable argsort along `axis`: ascending with NaN last, or (largest) descending with NaN
    first; ties keep index order either way."""
    if x.dtype.kind == "f":
        nan = np.isnan(x)
        filled = np.where(nan, 0, x).astype(np.float64)
        keys = (-filled, ~nan) if largest else (filled, nan)  # (value, then NaN first)
    else:
        keys = (~x.astype(np.int64),) if largest else (x.astype(np.int64),)  # ~x = -x - 1
    moved = [np.moveaxis(key, axis, -1) for key in keys]
    order = np.lexsort(moved, axis=-1)  # the last key is the primary one
    return np.moveaxis(order, -1, axis)


def _topk(x: np.ndarray, *, k: int, axis: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    position = normalize_axis(axis, x.ndim)
    order = np.take(sort_order(x, position, largest), np.arange(k), axis=position)
    return np.take_along_axis(x, order, axis=position), order.astype(np.int64)


register_op(OpDef("topk", infer=infer_topk, reference=_topk,
                  attrs={"k": Attr("int"), "axis": Attr("int", -1),
                         "largest": Attr("bool", True)},
                  doc="the k largest (or smallest) along an axis, stable, and their indices"))

__all__ = ["sort_order"]
