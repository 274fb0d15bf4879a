"""Backward ops of pooling and gather: the cotangents their gradient rules build.

Each is the vector-Jacobian product of a forward row of `ember.ops.neural`, with PyTorch's
semantics and the forward op's attributes, so a rule copies the forward node's attributes
across. The references accumulate in float64 (overlapping windows and repeated indices add
up), like the forward references.

- `max_pool2d_grad(x, gy)`: each window's cotangent goes to one tap of x, chosen as PyTorch's
  max pooling chooses it: the taps inside the input scanned in row-major order, a tap taken
  when it is greater than the best so far or NaN. So the first maximum wins a tie, the last
  NaN wins a window with NaNs, and padding never receives gradient.
- `avg_pool2d_grad(gy)`, `adaptive_avg_pool2d_grad(gy)`: each window's cotangent spread over
  its taps, divided by the forward's divisor; `input_shape` is x's shape (gy alone does not
  determine it).
- `scatter_add(gy, indices)`: gather's backward, a zero tensor whose `axis` has `size`
  entries with gy's slices added at the indices (negative ones wrap; repeats accumulate).
"""

from __future__ import annotations

import numpy as np

from ember.errors import ShapeError
from ember.ir.ops import Attr, OpDef, normalize_axis, register_op
from ember.ir.types import DType, TensorType
from ember.ops.neural import (
    AVG_ATTRS,
    POOL_ATTRS,
    _avg_divisors,
    _pad_for,
    _windows,
    infer_adaptive_avg_pool2d,
    infer_avg_pool2d,
    infer_max_pool2d,
    spatial_out,
)


def _float_type(t: TensorType, role: str) -> None:
    if not t.dtype.is_float:
        raise ShapeError(f"{role} must be f32 or f64, got {t.dtype}")


def _check_cotangent(gy: TensorType, expected: TensorType) -> None:
    """gy must have the forward output's type: shape and dtype."""
    if gy.dtype is not expected.dtype:
        raise ShapeError(f"cotangent dtype {gy.dtype} differs from the input's {expected.dtype}")
    if gy.shape != expected.shape:
        raise ShapeError(f"cotangent shape {list(gy.shape)} differs from the forward output's "
                         f"{list(expected.shape)}")


def _input_type(gy: TensorType, input_shape: tuple[int, ...]) -> TensorType:
    _float_type(gy, "cotangent")
    if len(input_shape) != 4 or min(input_shape) < 1:
        raise ShapeError(f"input_shape must be 4 sizes >= 1 (NCHW), got {list(input_shape)}")
    return TensorType(gy.dtype, tuple(input_shape))


# ---------------------------------------------------------------------------------------------
# max_pool2d_grad(x, gy) -> dx.


def infer_max_pool2d_grad(x: TensorType, gy: TensorType, *, kernel: tuple[int, ...],
                          stride: tuple[int, ...], padding: tuple[int, ...],
                          dilation: tuple[int, ...], ceil_mode: bool) -> TensorType:
    _float_type(x, "input")
    forward = infer_max_pool2d(x, kernel=kernel, stride=stride, padding=padding,
                               dilation=dilation, ceil_mode=ceil_mode)
    _check_cotangent(gy, forward)
    return x


def _tap_inside(size: int, out: int, kernel: int, stride: int, pad: int, dilation: int
                ) -> np.ndarray:
    """[out, kernel] booleans: whether window position o's tap k lies inside [0, size)."""
    taps = np.arange(out)[:, None] * stride - pad + np.arange(kernel)[None, :] * dilation
    return (taps >= 0) & (taps < size)


def max_pool_choice(x: np.ndarray, kernel: tuple[int, ...], stride: tuple[int, ...],
                    padding: tuple[int, ...], dilation: tuple[int, ...], ceil_mode: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(tap, valid): for each window [N, C, OH, OW], the flat index into its KH x KW taps that
    PyTorch's max pooling picks, and whether the window has any tap inside the input."""
    out_hw = spatial_out(TensorType.of(x), kernel, stride, padding, dilation, ceil_mode)
    padded = _pad_for(x.astype(np.float64), padding, kernel, stride, dilation, out_hw, -np.inf)
    taps = _windows(padded, kernel, stride, dilation, out_hw)
    taps = taps.reshape(*taps.shape[:4], kernel[0] * kernel[1])
    rows = _tap_inside(x.shape[2], out_hw[0], kernel[0], stride[0], padding[0], dilation[0])
    cols = _tap_inside(x.shape[3], out_hw[1], kernel[1], stride[1], padding[1], dilation[1])
    inside = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(*out_hw, -1)
    nan = np.isnan(taps) & inside
    best = np.where(inside, taps, -np.inf).max(axis=-1, initial=-np.inf, keepdims=True)
    first_max = np.argmax(inside & (taps == best), axis=-1)
    last_nan = taps.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    tap = np.where(nan.any(axis=-1), last_nan, first_max)
    return tap, np.broadcast_to(inside.any(axis=-1), tap.shape)


def _max_pool2d_grad(x: np.ndarray, gy: np.ndarray, *, kernel: tuple[int, ...],
                     stride: tuple[int, ...], padding: tuple[int, ...],
                     dilation: tuple[int, ...], ceil_mode: bool) -> np.ndarray:
    tap, valid = max_pool_choice(x, kernel, stride, padding, dilation, ceil_mode)
    batch, channels, out_h, out_w = tap.shape
    oh = np.arange(out_h)[:, None]
    ow = np.arange(out_w)[None, :]
    ih = oh * stride[0] - padding[0] + (tap // kernel[1]) * dilation[0]
    iw = ow * stride[1] - padding[1] + (tap % kernel[1]) * dilation[1]
    n, c = np.indices((batch, channels))
    n = np.broadcast_to(n[:, :, None, None], tap.shape)
    c = np.broadcast_to(c[:, :, None, None], tap.shape)
    dx = np.zeros(x.shape, dtype=np.float64)
    np.add.at(dx, (n[valid], c[valid], ih[valid], iw[valid]), gy.astype(np.float64)[valid])
    return dx.astype(x.dtype)


register_op(OpDef("max_pool2d_grad", infer=infer_max_pool2d_grad, reference=_max_pool2d_grad,
                  attrs=POOL_ATTRS, arity=(2, 2)))

# ---------------------------------------------------------------------------------------------
# avg_pool2d_grad(gy) {input_shape} -> dx.

AVG_GRAD_ATTRS = {"input_shape": Attr("ints"), **AVG_ATTRS}


def infer_avg_pool2d_grad(gy: TensorType, *, input_shape: tuple[int, ...],
                          kernel: tuple[int, ...], stride: tuple[int, ...],
                          padding: tuple[int, ...], ceil_mode: bool, count_include_pad: bool
                          ) -> TensorType:
    x = _input_type(gy, input_shape)
    forward = infer_avg_pool2d(x, kernel=kernel, stride=stride, padding=padding,
                               ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    _check_cotangent(gy, forward)
    return x


def _avg_pool2d_grad(gy: np.ndarray, *, input_shape: tuple[int, ...], kernel: tuple[int, ...],
                     stride: tuple[int, ...], padding: tuple[int, ...], ceil_mode: bool,
                     count_include_pad: bool) -> np.ndarray:
    height, width = input_shape[2:]
    out_h, out_w = gy.shape[2:]
    rows = _avg_divisors(height, out_h, kernel[0], stride[0], padding[0], padding[2],
                         count_include_pad)
    cols = _avg_divisors(width, out_w, kernel[1], stride[1], padding[1], padding[3],
                         count_include_pad)
    share = gy.astype(np.float64) / np.outer(rows, cols)
    # The padded input, reaching as far as ceil_mode's last windows do.
    extent = [max(size + padding[axis] + padding[axis + 2], (out - 1) * stride[axis] + kernel[axis])
              for axis, (size, out) in enumerate(((height, out_h), (width, out_w)))]
    padded = np.zeros((*input_shape[:2], *extent))
    for kh in range(kernel[0]):
        for kw in range(kernel[1]):
            padded[:, :, kh : kh + out_h * stride[0] : stride[0],
                   kw : kw + out_w * stride[1] : stride[1]] += share
    inner = padded[:, :, padding[0] : padding[0] + height, padding[1] : padding[1] + width]
    return np.ascontiguousarray(inner, dtype=gy.dtype)


register_op(OpDef("avg_pool2d_grad", infer=infer_avg_pool2d_grad, reference=_avg_pool2d_grad,
                  attrs=AVG_GRAD_ATTRS))

# ---------------------------------------------------------------------------------------------
# adaptive_avg_pool2d_grad(gy) {input_shape} -> dx.


def infer_adaptive_avg_pool2d_grad(gy: TensorType, *, input_shape: tuple[int, ...]
                                   ) -> TensorType:
    x = _input_type(gy, input_shape)
    if gy.ndim != 4:
        raise ShapeError(f"expected an NCHW cotangent of rank 4, got rank {gy.ndim}")
    _check_cotangent(gy, infer_adaptive_avg_pool2d(x, output_size=gy.shape[2:]))
    return x


def adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    """[start, end) of each of the `out` adaptive windows along an axis of `size`."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _adaptive_avg_pool2d_grad(gy: np.ndarray, *, input_shape: tuple[int, ...]) -> np.ndarray:
    dx = np.zeros(input_shape, dtype=np.float64)
    rows = adaptive_bounds(input_shape[2], gy.shape[2])
    cols = adaptive_bounds(input_shape[3], gy.shape[3])
    for i, (top, bottom) in enumerate(rows):
        for j, (left, right) in enumerate(cols):
            share = gy[:, :, i, j].astype(np.float64) / ((bottom - top) * (right - left))
            dx[:, :, top:bottom, left:right] += share[:, :, None, None]
    return dx.astype(gy.dtype)


register_op(OpDef("adaptive_avg_pool2d_grad", infer=infer_adaptive_avg_pool2d_grad,
                  reference=_adaptive_avg_pool2d_grad, attrs={"input_shape": Attr("ints")}))

# ---------------------------------------------------------------------------------------------
# scatter_add(gy, indices) {axis, size}: gather's backward.


def infer_scatter_add(gy: TensorType, indices: TensorType, *, axis: int, size: int
                      ) -> TensorType:
    if not indices.dtype.is_int:
        raise ShapeError(f"indices must be i32 or i64, got {indices.dtype}")
    if gy.dtype is DType.BOOL:
        raise ShapeError("dtype bool is not supported")
    if size < 0:
        raise ShapeError(f"size must be >= 0, got {size}")
    rank = gy.ndim - indices.ndim + 1
    if rank < 1:
        raise ShapeError(f"cotangent of rank {gy.ndim} cannot hold indices of rank "
                         f"{indices.ndim}")
    axis = normalize_axis(axis, rank)
    if gy.shape[axis : axis + indices.ndim] != indices.shape:
        raise ShapeError(f"cotangent dimensions {list(gy.shape[axis : axis + indices.ndim])} at "
                         f"axis {axis} differ from the indices' shape {list(indices.shape)}")
    return gy.with_shape((*gy.shape[:axis], size, *gy.shape[axis + indices.ndim :]))


def _scatter_add(gy: np.ndarray, indices: np.ndarray, *, axis: int, size: int) -> np.ndarray:
    rank = gy.ndim - indices.ndim + 1
    axis = normalize_axis(axis, rank)
    if indices.size and (indices.min() < -size or indices.max() >= size):
        bad = indices[(indices < -size) | (indices >= size)].flat[0]
        raise IndexError(f"index {bad} is out of range for axis {axis} of size {size}")
    wide = np.float64 if gy.dtype.kind == "f" else np.int64
    out = np.zeros((*gy.shape[:axis], size, *gy.shape[axis + indices.ndim :]), dtype=wide)
    # Move the scattered axis first, so np.add.at indexes one axis with the flat indices.
    moved = np.moveaxis(out, axis, 0)
    rows = gy.reshape(*gy.shape[:axis], indices.size, *gy.shape[axis + indices.ndim :])
    np.add.at(moved, indices.reshape(-1) % max(size, 1), np.moveaxis(rows, axis, 0).astype(wide))
    return out.astype(gy.dtype)


register_op(OpDef("scatter_add", infer=infer_scatter_add, reference=_scatter_add, arity=(2, 2),
                  attrs={"axis": Attr("int", 0), "size": Attr("int")}))
