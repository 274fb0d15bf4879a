"""Reductions over axes (sum, mean, max, min, prod) and index reductions (argmax, argmin).

`axes` lists the reduced axes (the tracer writes them non-negative and sorted; `()` reduces
nothing); `keepdims` keeps them as size-1 dimensions, as numpy does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ember.errors import ShapeError
from ember.ir.ops import Attr, OpDef, normalize_axes, normalize_axis, register_op
from ember.ir.types import DType, TensorType

REDUCE_ATTRS = {"axes": Attr("ints"), "keepdims": Attr("bool", False)}
ARG_ATTRS = {"axis": Attr("int"), "keepdims": Attr("bool", False)}


def _array_axes(axes: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """Normalized axes that exist in an array of rank `ndim`.

    A scalar accepts axis 0 (as in PyTorch), which reduces nothing: numpy has no axis to
    reduce there, so the references pass `()`.
    """
    normalized = normalize_axes(axes, ndim)
    return normalized if ndim else ()


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    axes = normalize_axes(axes, len(shape))
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def reduce_rule(floats_only: bool, bool_ok: bool) -> Callable[..., TensorType]:
    """`bool_ok` marks max/min: they take bools, and have no identity for an empty axis."""

    def infer(x: TensorType, *, axes: tuple[int, ...], keepdims: bool) -> TensorType:
        if floats_only and not x.dtype.is_float:
            raise ShapeError(f"dtype {x.dtype} is not supported (expected f32 or f64)")
        if not bool_ok and x.dtype is DType.BOOL:
            raise ShapeError("dtype bool is not supported; cast to a numeric dtype first")
        shape = reduced_shape(x.shape, axes, keepdims)
        if bool_ok and any(x.shape[a] == 0 for a in _array_axes(axes, x.ndim)):
            raise ShapeError("reduction over an axis of size 0 has no identity")
        return x.with_shape(shape)

    return infer


def infer_arg(x: TensorType, *, axis: int, keepdims: bool) -> TensorType:
    if x.dtype is DType.BOOL:
        raise ShapeError("dtype bool is not supported; cast to a numeric dtype first")
    axis = normalize_axis(axis, x.ndim)
    if x.ndim == 0:  # the position of a scalar along its one implicit axis is 0
        return TensorType(DType.I64, ())
    if x.shape[axis] == 0:
        raise ShapeError(f"axis {axis} has size 0: no position to return")
    return TensorType(DType.I64, reduced_shape(x.shape, (axis,), keepdims))


def _reducer(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def reference(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        axes = _array_axes(axes, x.ndim)
        return np.asarray(fn(x, axis=axes, keepdims=keepdims)).astype(x.dtype, copy=False)

    return reference


def _mean(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    # Accumulate in float64 so the reference is no less accurate than any compiled kernel. The
    # mean over an empty axis is 0/0 = nan, as in numpy and PyTorch (without numpy's warning).
    count = int(np.prod([x.shape[a] for a in axis]))
    total = np.sum(x, axis=axis, keepdims=keepdims, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return total / count if count else total * np.nan


def _sum(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    wide = np.float64 if x.dtype.kind == "f" else x.dtype
    return np.sum(x, axis=axis, keepdims=keepdims, dtype=wide)


def extreme(x: np.ndarray, axis: tuple[int, ...], keepdims: bool = False,
            larger: bool = True) -> np.ndarray:
    """max (larger) or min over axes with NaN propagating (numpy) and -0.0 < +0.0 (IEEE
    754-2019, as the elementwise maximum/minimum and compiled code: numpy returns whichever
    zero its summation order meets first)."""
    result = (np.max if larger else np.min)(x, axis=axis, keepdims=keepdims)
    if x.dtype.kind != "f":
        return result
    wanted = ~np.signbit(x) if larger else np.signbit(x)
    present = np.any((x == 0) & wanted, axis=axis, keepdims=keepdims)
    zero = x.dtype.type(0) if larger else -x.dtype.type(0)
    return np.where((result == 0) & present, zero, result)


def _extreme(larger: bool) -> Callable[..., np.ndarray]:
    def reduce(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return extreme(x, axis, keepdims, larger)

    return reduce


def _arg(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def reference(x: np.ndarray, axis: int, keepdims: bool) -> np.ndarray:
        if x.ndim == 0:
            return np.zeros((), dtype=np.int64)
        return fn(x, axis=normalize_axis(axis, x.ndim), keepdims=keepdims).astype(np.int64)

    return reference


register_op(OpDef("sum", infer=reduce_rule(False, False), reference=_reducer(_sum),
                  attrs=REDUCE_ATTRS))
register_op(OpDef("mean", infer=reduce_rule(True, False), reference=_reducer(_mean),
                  attrs=REDUCE_ATTRS))
register_op(OpDef("prod", infer=reduce_rule(False, False), reference=_reducer(np.prod),
                  attrs=REDUCE_ATTRS))
register_op(OpDef("max", infer=reduce_rule(False, True),
                  reference=_reducer(_extreme(larger=True)),
                  attrs=REDUCE_ATTRS))
register_op(OpDef("min", infer=reduce_rule(False, True),
                  reference=_reducer(_extreme(larger=False)),
                  attrs=REDUCE_ATTRS))
register_op(OpDef("argmax", infer=infer_arg, reference=_arg(np.argmax), attrs=ARG_ATTRS))
register_op(OpDef("argmin", infer=infer_arg, reference=_arg(np.argmin), attrs=ARG_ATTRS))
