"""Converters of ONNX's resampling and sorting operators: Resize, Upsample, GridSample, TopK.

Resize's roi, scales and sizes and TopK's K must be known at import time (Ember's shapes are
static); the converters resolve them, with `axes` and `keep_aspect_ratio_policy`, into the
full-rank `sizes` and `scales` of Ember's `resize` op.
"""

from __future__ import annotations

import numpy as np

from ember.onnx import export_resample  # noqa: F401  (registers the same operators' exporters)
from ember.onnx.converters.base import NodeContext, Outputs, converter, normalize_axis

_RESIZE_MODES = ("nearest", "linear", "cubic")
_POLICIES = ("stretch", "not_larger", "not_smaller")


def _given(node: NodeContext, index: int, what: str) -> np.ndarray | None:
    """An optional input's value, None when it is omitted or empty."""
    if not node.has(index):
        return None
    value = node.static(index, what)
    return None if value.size == 0 else value


def _resize_axes(node: NodeContext, rank: int) -> list[int]:
    axes = node.attr("axes")
    if axes is None:
        return list(range(rank))
    resolved = [normalize_axis(int(a), rank, node) for a in axes]
    if len(set(resolved)) != len(resolved):
        raise node.error(f"axes {list(axes)} repeat an axis")
    return resolved


def _sizes_and_scales(node: NodeContext, shape: tuple[int, ...], axes: list[int]
                      ) -> tuple[list[int], list[float]]:
    """Full-rank output sizes and scale factors, from the scales or the sizes input."""
    sizes, scales = list(shape), [1.0] * len(shape)
    given_scales = _given(node, 2, "scales")
    given_sizes = _given(node, 3, "sizes")
    if (given_scales is None) == (given_sizes is None):
        raise node.error("give exactly one of scales and sizes")
    if given_scales is not None:
        if given_scales.size != len(axes):
            raise node.error(f"scales has {given_scales.size} values for {len(axes)} axes")
        for axis, scale in zip(axes, given_scales.reshape(-1).astype(np.float32), strict=True):
            if not scale > 0:
                raise node.error(f"scale {float(scale)} of axis {axis} must be positive")
            scales[axis] = float(scale)
            sizes[axis] = int(float(scale) * shape[axis])  # rounds down, as ONNX
        return sizes, scales
    assert given_sizes is not None
    wanted = [int(v) for v in given_sizes.reshape(-1)]
    if len(wanted) != len(axes) or min(wanted, default=0) < 0:
        raise node.error(f"sizes {wanted} must give a size >= 0 for each of {len(axes)} axes")
    if 0 in (shape[a] for a in axes):
        raise node.error(f"cannot resize an empty axis of input shape {list(shape)}")
    policy = node.attr("keep_aspect_ratio_policy", "stretch")
    if policy not in _POLICIES:
        raise node.error(f"keep_aspect_ratio_policy {policy!r} is not one of "
                         f"{', '.join(_POLICIES)}")
    ratios = [size / shape[axis] for axis, size in zip(axes, wanted, strict=True)]
    for axis, size, ratio in zip(axes, wanted, ratios, strict=True):
        if policy == "stretch":
            sizes[axis], scales[axis] = size, ratio
        else:
            scale = min(ratios) if policy == "not_larger" else max(ratios)
            sizes[axis], scales[axis] = int(scale * shape[axis] + 0.5), scale
    return sizes, scales


def _full_roi(node: NodeContext, rank: int, axes: list[int]) -> tuple[float, ...]:
    roi = _given(node, 1, "roi")
    if roi is None:
        raise node.error("coordinate_transformation_mode 'tf_crop_and_resize' needs a roi")
    values = [float(v) for v in roi.reshape(-1)]
    if len(values) != 2 * len(axes):
        raise node.error(f"roi has {len(values)} values; {len(axes)} axes need {2 * len(axes)}")
    full = [0.0] * rank + [1.0] * rank
    for i, axis in enumerate(axes):
        full[axis], full[rank + axis] = values[i], values[len(axes) + i]
    return tuple(full)


@converter("Resize", versions=(11, 13, 18, 19))
def resize(node: NodeContext) -> Outputs:
    """`resize` with every option of Resize; roi, scales and sizes known at import time."""
    x = node.tensor(0)
    rank = x.ndim
    mode = node.attr("mode", "nearest")
    if mode not in _RESIZE_MODES:
        raise node.error(f"mode {mode!r} is not one of {', '.join(_RESIZE_MODES)}")
    axes = _resize_axes(node, rank)
    sizes, scales = _sizes_and_scales(node, x.shape, axes)
    coordinate_mode = node.attr("coordinate_transformation_mode", "half_pixel")
    roi = _full_roi(node, rank, axes) if coordinate_mode == "tf_crop_and_resize" else ()
    node.check_dims(sizes, x.dtype, "output shape")
    return [node.emit(
        "resize", x, sizes=tuple(sizes), scales=tuple(scales), axes=tuple(axes), mode=mode,
        coordinate_mode=coordinate_mode,
        nearest_mode=node.attr("nearest_mode", "round_prefer_floor"),
        cubic_a=float(node.attr("cubic_coeff_a", -0.75)),
        exclude_outside=bool(node.attr("exclude_outside", 0)),
        extrapolation=float(node.attr("extrapolation_value", 0.0)),
        antialias=bool(node.attr("antialias", 0)) and mode != "nearest", roi=roi)]


_GRID_MODES = {"bilinear": "linear", "bicubic": "cubic", "linear": "linear", "cubic": "cubic",
               "nearest": "nearest"}


@converter("GridSample", versions=(16, 20, 22))
def grid_sample(node: NodeContext) -> Outputs:
    """`grid_sample` with ONNX's handling of coordinates outside the input."""
    mode = node.attr("mode", "bilinear" if node.opset < 20 else "linear")
    if mode not in _GRID_MODES:
        raise node.error(f"mode {mode!r} is not one of {', '.join(_GRID_MODES)}")
    return [node.emit("grid_sample", node.tensor(0), node.tensor(1), mode=_GRID_MODES[mode],
                      padding=node.attr("padding_mode", "zeros"),
                      align_corners=bool(node.attr("align_corners", 0)), convention="onnx")]


@converter("TopK", versions=(1, 10, 11, 24))
def top_k(node: NodeContext) -> Outputs:
    """`topk`: the K largest (or smallest) along `axis`, sorted, ties to the lower index."""
    x = node.tensor(0)
    if x.ndim == 0:
        raise node.error(f"TopK needs an input of rank >= 1, got shape {list(x.shape)}")
    axis = normalize_axis(int(node.attr("axis", -1)), x.ndim, node)
    if node.input_count > 1:
        ks = node.static_ints(1, "K")
        if len(ks) != 1:
            raise node.error(f"K must hold one value, got {ks}")
        k = ks[0]
    else:
        k = int(node.attr("k"))
    if not 0 <= k <= x.shape[axis]:
        raise node.error(f"K={k} is outside [0, {x.shape[axis]}] (axis {axis} of input shape "
                         f"{list(x.shape)})")
    values, indices = node.emit("topk", x, k=k, axis=axis,
                                largest=bool(node.attr("largest", 1)))
    return [values, indices]


@converter("Upsample", versions=(7, 9))
def upsample(node: NodeContext) -> Outputs:
    """Upsample (Resize's predecessor): `resize` with asymmetric coordinates, nearest rounding
    down; scales from the attribute (version 7) or the input (9)."""
    x = node.tensor(0)
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise node.error(f"mode {mode!r} is not one of nearest, linear")
    if node.input_count > 1:
        given = node.static(1, "scales").reshape(-1).astype(np.float32)
    else:
        given = np.asarray(node.attr("scales", []), np.float32)
    if given.size != x.ndim or not np.all(given >= 1):
        raise node.error(f"scales {given.tolist()} need one value >= 1 per axis of input shape "
                         f"{list(x.shape)}")
    scales = [float(s) for s in given]
    sizes = [int(s * n) for s, n in zip(scales, x.shape, strict=True)]
    node.check_dims(sizes, x.dtype, "output shape")
    return [node.emit("resize", x, sizes=tuple(sizes), scales=tuple(scales),
                      mode="nearest" if mode == "nearest" else "linear",
                      coordinate_mode="asymmetric", nearest_mode="floor")]
