"""Resampling ops: `resize` (ONNX Resize, PyTorch's interpolate) and `grid_sample`.

`resize(x)` is separable: each resized axis maps its output positions to source coordinates
and reads a fixed number of taps around each, with weights that depend only on the output
position. Shapes are static, so those taps are tables computed once from the attributes
(`resize_plan`): for axis a, `index[o, t]` (clamped into the input, which is ONNX's edge
padding), `weight[o, t]` and `outside[o]` (tf_crop_and_resize positions outside the input,
which take `extrapolation`). The axes are resized one after another, in `axes` order, as
ONNX's reference does; the numpy reference and every lowering read the same tables.

    out[.., o, ..] = outside[o] ? extrapolation : sum_t weight[o, t] * x[.., index[o, t], ..]

Attributes are fully resolved by the frontends: `sizes` is the output shape and `scales` the
factor of every axis (the coordinate transform divides by it, so it is kept apart from the
rounded size); `roi` is [starts..., ends...] over every axis, or empty.

`grid_sample(x, grid)` reads x [N, C, *D] (2 or 3 spatial axes) at the normalized coordinates
of grid [N, *O, k] (x, y[, z] in [-1, 1]; grid[..., 0] indexes the last axis) by nearest,
linear or cubic (A = -0.75) interpolation, with zeros, border or reflection padding.
`convention` chooses how coordinates outside the input are moved in, the one place where ONNX
and PyTorch differ: "onnx" clamps or reflects a coordinate only when it lies outside the
border (and does so for cubic too); "torch" clips every linear and nearest coordinate into
[0, size - 1] after reflecting, and leaves cubic coordinates as they are (only their taps are
moved in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.errors import ShapeError
from ember.ir.ops import Attr, OpDef, register_op
from ember.ir.types import DType, TensorType

RESIZE_MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                    "align_corners", "asymmetric", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")

RESIZE_ATTRS = {
    "sizes": Attr("ints"),
    "scales": Attr("floats"),
    "axes": Attr("ints", ()),  # the order in which axes are resized; () is every axis in order
    "mode": Attr("str", "nearest"),
    "coordinate_mode": Attr("str", "half_pixel"),
    "nearest_mode": Attr("str", "round_prefer_floor"),
    "cubic_a": Attr("float", -0.75),
    "exclude_outside": Attr("bool", False),
    "extrapolation": Attr("float", 0.0),
    "antialias": Attr("bool", False),
    "roi": Attr("floats", ()),
}


@dataclass(frozen=True)
class AxisTaps:
    """How one axis is resized: output o reads `index[o, t]` with `weight[o, t]`, or is
    `extrapolation` where `outside[o]`."""

    axis: int
    index: np.ndarray  # [out, taps] int64, each in [0, input size)
    weight: np.ndarray  # [out, taps] float64
    outside: np.ndarray  # [out] bool

    @property
    def gather_only(self) -> bool:
        """One tap of weight 1 per output: a gather, exact for every dtype."""
        return self.index.shape[1] == 1 and bool(np.all(self.weight == 1.0))


# ---------------------------------------------------------------------------------------------
# Coefficients of one output position, from its fractional offset `ratio` in (0, 1].


def _nearest_coeffs(ratio: np.ndarray, mode: str) -> np.ndarray:
    """Two taps (floor, floor + 1); the one that rounding picks gets weight 1."""
    whole = ratio == 1.0
    pick_high = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5,
                 "floor": np.zeros_like(whole), "ceil": np.ones_like(whole)}[mode]
    high = np.where(whole, True, pick_high)
    return np.stack([~high, high], axis=1).astype(np.float64)


def _cubic_kernel(distance: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at |distance|."""
    x = np.abs(distance)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _cubic_coeffs(ratio: np.ndarray, a: float) -> np.ndarray:
    """Four taps at distances 1 + r, r, 1 - r, 2 - r, each polynomial written as ONNX's."""
    r = ratio[:, None]
    first = ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a
    second = ((a + 2) * r - (a + 3)) * r * r + 1
    third = ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1
    fourth = ((a * (2 - r) - 5 * a) * (2 - r) + 8 * a) * (2 - r) - 4 * a
    return np.concatenate([first, second, third, fourth], axis=1)


def _antialias_coeffs(ratio: np.ndarray, scale: float, mode: str, a: float) -> np.ndarray:
    """A kernel stretched by 1 / scale when downsampling, normalized to sum 1."""
    scale = min(scale, 1.0)
    reach = 1 if mode == "linear" else 2
    start = math.floor(-reach / scale) + 1
    taps = np.arange(start, 2 - start, dtype=np.float64)
    distance = (taps[None, :] - ratio[:, None]) * scale
    linear = np.clip(1 - np.abs(distance), 0, 1)
    coeffs = linear if mode == "linear" else _cubic_kernel(distance, a)
    return coeffs / coeffs.sum(axis=1, keepdims=True)


def _coefficients(ratio: np.ndarray, scale: float, attrs: dict) -> np.ndarray:
    mode = attrs["mode"]
    if mode == "nearest":
        return _nearest_coeffs(ratio, attrs["nearest_mode"])
    if attrs["antialias"]:
        return _antialias_coeffs(ratio, scale, mode, attrs["cubic_a"])
    if mode == "linear":
        return np.stack([1 - ratio, ratio], axis=1)
    return _cubic_coeffs(ratio, attrs["cubic_a"])


# ---------------------------------------------------------------------------------------------
# The tables.


def _source_coordinates(out_size: int, in_size: int, scale: float, roi: tuple[float, float],
                        coordinate_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Each output position's source coordinate, and whether it lies outside the input
    (tf_crop_and_resize only)."""
    y = np.arange(out_size, dtype=np.float64)
    width = scale * in_size  # the unrounded output size
    outside = np.zeros(out_size, dtype=bool)
    if coordinate_mode == "align_corners":
        x = np.zeros(out_size) if width == 1 else y * (in_size - 1) / (width - 1)
    elif coordinate_mode == "asymmetric":
        x = y / scale
    elif coordinate_mode == "pytorch_half_pixel":
        x = np.full(out_size, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    elif coordinate_mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif coordinate_mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / width)
        x = offset + (y + 0.5) / scale - 0.5
    else:  # tf_crop_and_resize
        start, end = roi
        if width == 1:
            x = np.full(out_size, (end - start) * (in_size - 1) / 2)
        else:
            x = y * (end - start) * (in_size - 1) / (width - 1)
        x = x + start * (in_size - 1)
        outside = (x < 0) | (x > in_size - 1)
    return x, outside


def axis_taps(axis: int, in_size: int, out_size: int, scale: float, roi: tuple[float, float],
              attrs: dict) -> AxisTaps:
    """The tap tables of one resized axis (ONNX Resize semantics)."""
    x, outside = _source_coordinates(out_size, in_size, scale, roi, attrs["coordinate_mode"])
    floor = np.floor(x)
    ratio = np.where(x == floor, 1.0, x - floor)  # in (0, 1]: the left neighbour is preferred
    coeffs = _coefficients(ratio, scale, attrs)
    taps = coeffs.shape[1]
    # The `taps` integers nearest x, ties to the smaller: for an even count they start at
    # floor(x) - taps/2 + 1, one lower where x is an integer; for an odd one they are centred
    # on the nearest integer, rounding halves down.
    if taps % 2 == 0:
        start = floor - taps // 2 + np.where(x == floor, 0, 1)
    else:
        start = floor - (taps - 1) // 2 + np.where(x - floor <= 0.5, 0, 1)
    start = np.nan_to_num(start, nan=0.0, posinf=in_size, neginf=-taps)
    index = start.astype(np.int64)[:, None] + np.arange(taps)[None, :]
    if attrs["exclude_outside"]:
        coeffs = np.where((index < 0) | (index >= in_size), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    index = np.clip(index, 0, max(in_size - 1, 0))
    if attrs["mode"] == "nearest":  # keep the chosen tap only
        chosen = np.argmax(coeffs, axis=1)
        index = index[np.arange(out_size), chosen][:, None]
        coeffs = np.ones((out_size, 1))
    return AxisTaps(axis, index, coeffs, outside)


def _axis_order(attrs: dict, rank: int) -> tuple[int, ...]:
    return tuple(attrs["axes"]) if attrs["axes"] else tuple(range(rank))


def resize_plan(shape: tuple[int, ...], attrs: dict) -> list[AxisTaps]:
    """The tap tables of every axis `resize` changes, in the order it resizes them. An axis
    whose size, scale (1) and roi (0 to 1) leave it as it is is skipped, as in ONNX."""
    rank = len(shape)
    roi = tuple(attrs["roi"])
    plan = []
    for axis in _axis_order(attrs, rank):
        scale, out_size = float(attrs["scales"][axis]), int(attrs["sizes"][axis])
        bounds = (roi[axis], roi[rank + axis]) if roi else (0.0, 1.0)
        if (math.isclose(scale, 1.0) and out_size == shape[axis]
                and math.isclose(bounds[0], 0.0) and math.isclose(bounds[1], 1.0)):
            continue
        if out_size == 0 or shape[axis] == 0:
            continue  # an empty result needs no tables
        plan.append(axis_taps(axis, shape[axis], out_size, scale, bounds, attrs))
    return plan


def infer_resize(x: TensorType, **attrs: object) -> TensorType:
    sizes, scales, roi = attrs["sizes"], attrs["scales"], attrs["roi"]
    rank = x.ndim
    if len(sizes) != rank or len(scales) != rank:  # type: ignore[arg-type]
        raise ShapeError(f"sizes {list(sizes)} and scales {list(scales)} need one entry per "  # type: ignore[call-overload]
                         f"axis of the rank-{rank} input")
    checks = (("mode", RESIZE_MODES), ("coordinate_mode", COORDINATE_MODES),
              ("nearest_mode", NEAREST_MODES))
    for name, allowed in checks:
        if attrs[name] not in allowed:
            raise ShapeError(f"{name} {attrs[name]!r} is not one of {', '.join(allowed)}")
    order = _axis_order(attrs, rank)  # type: ignore[arg-type]
    if sorted(set(order)) != sorted(order) or any(not 0 <= a < rank for a in order):
        raise ShapeError(f"axes {list(order)} must be distinct axes of the rank-{rank} input")
    for axis in set(range(rank)) - set(order):
        if sizes[axis] != x.shape[axis]:  # type: ignore[index]
            raise ShapeError(f"axis {axis} is not in axes {list(order)} but changes size")
    if any(s < 0 for s in sizes) or any(not s > 0 for s in scales):  # type: ignore[union-attr]
        raise ShapeError(f"sizes {list(sizes)} must be >= 0 and scales {list(scales)} > 0")  # type: ignore[call-overload]
    if roi and len(roi) != 2 * rank:  # type: ignore[arg-type]
        raise ShapeError(f"roi has {len(roi)} values; a rank-{rank} input needs {2 * rank}")  # type: ignore[arg-type]
    if attrs["coordinate_mode"] == "tf_crop_and_resize" and not roi:
        raise ShapeError("coordinate_mode 'tf_crop_and_resize' needs a roi")
    for axis in order:
        if x.shape[axis] == 0 and sizes[axis]:  # type: ignore[index]
            raise ShapeError(f"axis {axis} is empty: there is nothing to resize to size "
                             f"{sizes[axis]}")  # type: ignore[index]
    if attrs["mode"] != "nearest" and not x.dtype.is_float:
        raise ShapeError(f"{attrs['mode']} resizing needs a float input, got {x.dtype}")
    if attrs["mode"] == "nearest" and attrs["antialias"]:
        raise ShapeError("antialias applies to linear and cubic resizing, not nearest")
    if x.dtype is DType.BOOL and attrs["coordinate_mode"] == "tf_crop_and_resize":
        raise ShapeError("tf_crop_and_resize of a bool input has no extrapolation value")
    return x.with_shape(tuple(sizes))  # type: ignore[arg-type]


def apply_taps(array: np.ndarray, taps: AxisTaps, extrapolation: float) -> np.ndarray:
    """One resized axis in numpy (float64 for floats; a gather for one tap of weight 1)."""
    gathered = np.take(array, taps.index, axis=taps.axis)  # [.., out, taps, ..]
    if taps.gather_only:
        result = np.squeeze(gathered, axis=taps.axis + 1)
    else:
        shape = (1,) * taps.axis + taps.weight.shape + (1,) * (array.ndim - taps.axis - 1)
        result = (gathered * taps.weight.reshape(shape)).sum(axis=taps.axis + 1)
    if taps.outside.any():
        mask = taps.outside.reshape((1,) * taps.axis + (-1,) + (1,) * (array.ndim - taps.axis - 1))
        result = np.where(mask, result.dtype.type(extrapolation), result)
    return result


def _resize(x: np.ndarray, **attrs: object) -> np.ndarray:
    out_shape = tuple(attrs["sizes"])  # type: ignore[arg-type]
    if 0 in out_shape:
        return np.zeros(out_shape, dtype=x.dtype)
    result = x.astype(np.float64) if x.dtype.kind == "f" else x
    for taps in resize_plan(x.shape, attrs):
        result = apply_taps(result, taps, float(attrs["extrapolation"]))  # type: ignore[arg-type]
    return np.ascontiguousarray(result.astype(x.dtype))


register_op(OpDef("resize", infer=infer_resize, reference=_resize, attrs=RESIZE_ATTRS,
                  doc="separable resizing (nearest, linear, cubic) with ONNX Resize's options"))

# ---------------------------------------------------------------------------------------------
# grid_sample(x, grid) {mode, padding, align_corners, convention}.

GRID_MODES = ("nearest", "linear", "cubic")
GRID_PADDINGS = ("zeros", "border", "reflection")
GRID_ATTRS = {
    "mode": Attr("str", "linear"),
    "padding": Attr("str", "zeros"),
    "align_corners": Attr("bool", False),
    "convention": Attr("str", "onnx"),
}


def infer_grid_sample(x: TensorType, grid: TensorType, **attrs: object) -> TensorType:
    for name, allowed in (("mode", GRID_MODES), ("padding", GRID_PADDINGS),
                          ("convention", ("onnx", "torch"))):
        if attrs[name] not in allowed:
            raise ShapeError(f"{name} {attrs[name]!r} is not one of {', '.join(allowed)}")
    spatial = x.ndim - 2
    if spatial not in (2, 3) or grid.ndim != x.ndim or grid.shape[-1] != spatial:
        raise ShapeError(f"expected x [N, C, H, W] with grid [N, H', W', 2] (or 3-D with "
                         f"[N, D', H', W', 3]), got x {x} and grid {grid}")
    if grid.shape[0] != x.shape[0]:
        raise ShapeError(f"grid batch {grid.shape[0]} differs from x batch {x.shape[0]}")
    if not x.dtype.is_float or grid.dtype is not x.dtype:
        raise ShapeError(f"x and grid must share one float dtype, got {x.dtype} and {grid.dtype}")
    if 0 in x.shape[2:] and grid.size:
        raise ShapeError(f"x {x} has an empty spatial axis to sample from")
    if attrs["mode"] == "cubic" and spatial != 2:
        raise ShapeError("cubic grid sampling is supported for 2 spatial axes only")
    return TensorType(x.dtype, (*x.shape[:2], *grid.shape[1:-1]))


def unnormalize(g: np.ndarray, size: int, align_corners: bool) -> np.ndarray:
    """[-1, 1] -> pixel coordinates (corner pixels' centres, or their outer edges)."""
    if align_corners:
        return (g + 1) / 2 * (size - 1)
    return ((g + 1) * size - 1) / 2


def grid_borders(size: int, align_corners: bool) -> tuple[float, float]:
    """The interval a coordinate must lie in before it is moved in (ONNX's borders)."""
    return (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)


def reflect(u: np.ndarray, low: float, high: float) -> np.ndarray:
    """u mirrored at low and high until it lies between them."""
    span = high - low
    if span <= 0:
        return np.full_like(u, low)
    below, above = u < low, u > high
    distance = np.where(below, low - u, np.where(above, u - high, 0.0))
    flips = np.floor(distance / span)
    rest = distance - flips * span
    even = np.fmod(flips, 2) == 0
    from_low, from_high = low + rest, high - rest
    moved = np.where(below, np.where(even, from_low, from_high),
                     np.where(even, from_high, from_low))
    return np.where(below | above, moved, u)


def move_in(u: np.ndarray, size: int, attrs: dict, tap: bool) -> np.ndarray:
    """A coordinate (or, `tap`, an integer tap position) moved into the input by the padding
    mode; zeros padding leaves it."""
    padding, align = attrs["padding"], attrs["align_corners"]
    low, high = grid_borders(size, align)
    if padding == "zeros":
        return u
    torch = attrs["convention"] == "torch"
    if padding == "border":
        if tap or torch:
            return np.clip(u, 0, size - 1)
        return np.where((u < low) | (u > high), np.clip(u, 0, size - 1), u)
    reflected = reflect(u, low, high)
    return np.clip(reflected, 0, size - 1) if tap or torch else reflected


def grid_coordinate(g: np.ndarray, size: int, attrs: dict) -> np.ndarray:
    """The pixel coordinate one axis samples at: unnormalized, rounded for nearest, and moved
    in by the padding mode as the convention says."""
    u = unnormalize(g, size, bool(attrs["align_corners"]))
    nearest = attrs["mode"] == "nearest"
    if attrs["convention"] == "onnx":
        return move_in(np.round(u) if nearest else u, size, attrs, tap=False)
    if attrs["mode"] == "cubic":
        return u
    moved = move_in(u, size, attrs, tap=False)
    return np.round(moved) if nearest else moved


def grid_taps(u: np.ndarray, mode: str, a: float = -0.75) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tap position, weight) pairs of one spatial axis at coordinates u."""
    if mode == "nearest":
        return [(u, np.ones_like(u))]
    base = np.floor(u)
    t = u - base
    if mode == "linear":
        return [(base, 1 - t), (base + 1, t)]
    weights = [_cubic_kernel(t + 1, a), _cubic_kernel(t, a), _cubic_kernel(1 - t, a),
               _cubic_kernel(2 - t, a)]
    return [(base + k - 1, w) for k, w in enumerate(weights)]


def _grid_sample(x: np.ndarray, grid: np.ndarray, **attrs: object) -> np.ndarray:
    batch, channels, *dims = x.shape
    out_shape = grid.shape[1:-1]
    data = x.astype(np.float64).reshape(batch, channels, -1)
    g = grid.astype(np.float64).reshape(batch, -1, len(dims))
    per_axis = []  # per spatial axis: (integer position, valid, weight) of each tap, [N, P]
    for axis, size in enumerate(dims):
        u = grid_coordinate(g[..., len(dims) - 1 - axis], size, attrs)
        taps = []
        for position, weight in grid_taps(u, str(attrs["mode"])):
            moved = move_in(position, size, attrs, tap=True)
            valid = (moved >= 0) & (moved <= size - 1)
            safe = np.where(valid, moved, 0).astype(np.int64)
            taps.append((safe, valid, weight))
        per_axis.append(taps)
    strides = [math.prod(dims[axis + 1:]) for axis in range(len(dims))]
    out = np.zeros((batch, channels, g.shape[1]))
    rows, lanes = np.arange(batch)[:, None, None], np.arange(channels)[None, :, None]
    for combo in np.ndindex(*(len(t) for t in per_axis)):
        flat, valid, weight = 0, True, 1.0
        for axis, k in enumerate(combo):
            position, ok, w = per_axis[axis][k]
            flat, valid, weight = flat + position * strides[axis], valid & ok, weight * w
        values = data[rows, lanes, np.broadcast_to(flat, valid.shape)[:, None, :]]
        out += np.where(valid, weight, 0.0)[:, None, :] * values
    return out.reshape(batch, channels, *out_shape).astype(x.dtype)


register_op(OpDef("grid_sample", infer=infer_grid_sample, reference=_grid_sample,
                  attrs=GRID_ATTRS, arity=(2, 2),
                  doc="sample x at grid's normalized coordinates (nearest, linear, cubic)"))

__all__ = ["AxisTaps", "apply_taps", "axis_taps", "grid_borders", "grid_coordinate", "grid_taps",
           "move_in",
           "reflect", "resize_plan", "unnormalize"]
