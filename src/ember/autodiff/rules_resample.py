"""The gradient rules of resize, topk, fmod and grid_sample, written with existing graph ops.

- resize is linear in x, one pass per resized axis: out = sum_t w[:, t] * gather(x, k[:, t]).
  Its backward runs the passes last to first, each scattering the cotangent back through its
  taps (`scatter_add`, gather's backward, which adds where taps share a source); positions
  that take the extrapolation value pass nothing back.
- topk: the cotangent of each kept value goes to its index (a one-hot comparison of the
  indices with every position of the axis, summed over the k kept); indices have none.
- fmod(a, b) = a - trunc(a / b) * b: da = g, db = -g * trunc(a / b), as PyTorch's.
- grid_sample (PyTorch's bilinear, nearest and bicubic; the ONNX convention raises
  GradientError): x's cotangent scatters each tap's weight times g to the tap; the grid's is
  the weights' derivative times the tapped values, times du/dgrid (the unnormalization's
  factor and the padding's slope: 0 where border clipping holds a coordinate, -1 where a
  reflection flips it), as PyTorch's grid_sampler backward computes it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ember.autodiff.engine import GradientError, attrs_of
from ember.ir.graph import GraphBuilder, Node, Value
from ember.ir.ops import normalize_axis, set_rule
from ember.ir.types import DType
from ember.ops.resample import AxisTaps, resize_plan

Cotangents = tuple[Value | None, ...]


def _const(b: GraphBuilder, array: np.ndarray, like: Value) -> Value:
    return b.const(np.asarray(array, dtype=like.type.dtype.numpy))


def _axis_backward(b: GraphBuilder, g: Value, taps: AxisTaps, size: int) -> Value:
    """The cotangent of one pass's input from that of its output."""
    ndim = g.type.ndim
    shape = [1] * ndim
    shape[taps.axis] = taps.index.shape[0]
    if taps.outside.any():
        keep = _const(b, (~taps.outside).astype(np.float64).reshape(shape), g)
        g = b.mul(g, keep)
    total: Value | None = None
    for t in range(taps.index.shape[1]):
        term = g
        if not taps.gather_only:
            term = b.mul(g, _const(b, taps.weight[:, t].reshape(shape), g))
        index = b.const(np.ascontiguousarray(taps.index[:, t]))
        scattered = b.op("scatter_add", term, index, axis=taps.axis, size=size)
        total = scattered if total is None else b.add(total, scattered)
    assert total is not None
    return total


def resize_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    if g is None:
        return (None,)
    x = node.inputs[0]
    plan = resize_plan(x.type.shape, attrs_of(node))
    sizes = list(x.type.shape)
    before = []  # the input size of each pass's axis
    for taps in plan:
        before.append(sizes[taps.axis])
        sizes[taps.axis] = taps.index.shape[0]
    for taps, size in zip(reversed(plan), reversed(before), strict=True):
        g = _axis_backward(b, g, taps, size)
    return (g,)


def topk_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    g = gys[0]
    if g is None:
        return (None,)
    x = node.inputs[0]
    axis = normalize_axis(int(attrs_of(node)["axis"]), x.type.ndim)  # type: ignore[arg-type]
    size = x.type.shape[axis]
    indices = node.outputs[1]
    # one_hot[..., k, j, ...] = indices[..., k, ...] == j
    positions = [1] * (x.type.ndim + 1)
    positions[axis + 1] = size
    expanded = b.expand_dims(indices, axes=(axis + 1,))
    grid = b.const(np.arange(size, dtype=np.int64).reshape(positions))
    hot = b.cast(b.eq(expanded, grid), dtype=x.type.dtype)
    spread = b.mul(hot, b.expand_dims(g, axes=(axis + 1,)))
    return (b.sum(spread, axes=(axis,), keepdims=False),)


def fmod_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    if g is None:
        return (None, None)
    a, d = node.inputs
    quotient = b.div(a, d)
    zero = _const(b, np.array(0.0), quotient)
    truncated = b.where(b.lt(quotient, zero), b.ceil(quotient), b.floor(quotient))
    return (g, b.neg(b.mul(g, truncated)))


def _scalar(b: GraphBuilder, value: float, like: Value) -> Value:
    return _const(b, np.array(value), like)


def _clip_with_grad(b: GraphBuilder, u: Value, size: int) -> tuple[Value, Value]:
    """PyTorch's clip_coordinates_set_grad: u clipped into [0, size - 1], and its derivative
    (0 at and beyond the borders, which count as outside)."""
    zero, high = _scalar(b, 0.0, u), _scalar(b, size - 1.0, u)
    inside = b.logical_and(b.gt(u, zero), b.lt(u, high))
    clipped = b.where(b.gt(u, zero), b.where(b.lt(u, high), u, high), zero)
    return clipped, b.cast(inside, dtype=u.type.dtype)


def _reflect_with_grad(b: GraphBuilder, u: Value, size: int, align: bool
                       ) -> tuple[Value, Value]:
    """PyTorch's reflect_coordinates_set_grad, then the clip: the coordinate and d/du."""
    low, high = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
    span = high - low
    if span <= 0:
        zero = _scalar(b, 0.0, u)
        return b.mul(u, zero), b.mul(u, zero)
    shifted = b.sub(u, _scalar(b, low, u))
    negative = b.lt(shifted, _scalar(b, 0.0, u))
    one = _scalar(b, 1.0, u)
    sign = b.where(negative, b.neg(one), one)
    distance = b.where(negative, b.neg(shifted), shifted)
    extra = b.fmod(distance, _scalar(b, span, u))
    flips = b.floor(b.div(distance, _scalar(b, span, u)))
    even = b.eq(b.fmod(flips, _scalar(b, 2.0, u)), _scalar(b, 0.0, u))
    value = b.where(even, b.add(extra, _scalar(b, low, u)),
                    b.add(b.sub(_scalar(b, span, u), extra), _scalar(b, low, u)))
    clipped, inside = _clip_with_grad(b, value, size)
    return clipped, b.mul(b.where(even, sign, b.neg(sign)), inside)


def _cubic_taps(b: GraphBuilder, t: Value) -> list[tuple[Value, Value]]:
    """Keys' weights (A = -0.75) of the taps at distances t + 1, t, 1 - t, 2 - t, and their
    derivatives in t."""
    a = -0.75

    def c(value: float) -> Value:
        return _scalar(b, value, t)

    def near(x: Value) -> tuple[Value, Value]:  # ((a + 2) x - (a + 3)) x x + 1, and d/dx
        value = b.add(b.mul(b.mul(b.sub(b.mul(c(a + 2), x), c(a + 3)), x), x), c(1.0))
        slope = b.mul(b.sub(b.mul(c(3 * (a + 2)), x), c(2 * (a + 3))), x)
        return value, slope

    def far(x: Value) -> tuple[Value, Value]:  # ((a x - 5a) x + 8a) x - 4a, and d/dx
        value = b.sub(b.mul(b.add(b.mul(b.sub(b.mul(c(a), x), c(5 * a)), x), c(8 * a)), x),
                      c(4 * a))
        slope = b.add(b.mul(b.sub(b.mul(c(3 * a), x), c(10 * a)), x), c(8 * a))
        return value, slope

    w0, d0 = far(b.add(t, c(1.0)))
    w1, d1 = near(t)
    w2, d2 = near(b.sub(c(1.0), t))
    w3, d3 = far(b.sub(c(2.0), t))
    return [(w0, d0), (w1, d1), (w2, b.neg(d2)), (w3, b.neg(d3))]


def _move_tap(b: GraphBuilder, position: Value, size: int, attrs: dict) -> Value:
    """A cubic tap's position moved in by the padding (PyTorch's compute_coordinates)."""
    if attrs["padding"] == "border":
        return _clip_with_grad(b, position, size)[0]
    if attrs["padding"] == "reflection":
        return _reflect_with_grad(b, position, size, bool(attrs["align_corners"]))[0]
    return position


def _sample_axis(b: GraphBuilder, g: Value, size: int, attrs: dict) -> tuple[list, Value]:
    """One spatial axis: [(integer position, valid, weight, d weight / du)] per tap, and
    du/dg (the unnormalization's factor times the padding's derivative; cubic sampling moves
    its taps, not the coordinate)."""
    align = bool(attrs["align_corners"])
    factor = (size - 1) / 2 if align else size / 2
    u = b.add(b.mul(g, _scalar(b, factor, g)), _scalar(b, (size - 1) / 2, g))
    slope = _scalar(b, factor, g)
    cubic = attrs["mode"] == "cubic"
    if attrs["padding"] == "border" and not cubic:
        u, inside = _clip_with_grad(b, u, size)
        slope = b.mul(slope, inside)
    elif attrs["padding"] == "reflection" and not cubic:
        u, derivative = _reflect_with_grad(b, u, size, align)
        slope = b.mul(slope, derivative)
    one, zero = _scalar(b, 1.0, g), _scalar(b, 0.0, g)
    if attrs["mode"] == "nearest":
        taps = [(b.round(u), b.add(b.mul(u, zero), one), b.mul(u, zero))]
    elif cubic:
        base = b.floor(u)
        weights = _cubic_taps(b, b.sub(u, base))
        taps = [(_move_tap(b, b.add(base, _scalar(b, k - 1.0, g)), size, attrs), w, d)
                for k, (w, d) in enumerate(weights)]
    else:
        base = b.floor(u)
        t = b.sub(u, base)
        taps = [(base, b.sub(one, t), b.sub(b.mul(u, zero), one)),
                (b.add(base, one), t, b.add(b.mul(u, zero), one))]
    result = []
    for position, weight, slope_w in taps:
        valid = b.logical_and(b.ge(position, zero), b.le(position, _scalar(b, size - 1.0, g)))
        safe = b.where(valid, position, zero)  # moved taps are whole: the cast truncates none
        result.append((b.cast(safe, dtype=DType.I64), valid, weight, slope_w))
    return result, slope


def grid_sample_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    """PyTorch's grid_sample backward (bilinear, nearest, bicubic), from gathers and
    scatter_adds over the batch and spatial axes merged (x as [C, N * S], a tap's index
    n * S + its offset)."""
    (gy,) = gys
    if gy is None:
        return (None, None)
    attrs = attrs_of(node)
    if attrs["convention"] != "torch":
        raise GradientError("grid_sample: gradients are supported for PyTorch's sampling "
                            "(F.grid_sample), not for the ONNX convention of an imported "
                            "GridSample")
    x, grid = node.inputs
    batch, channels, *dims = x.type.shape
    rank, points, plane = len(dims), math.prod(grid.type.shape[1:-1]), math.prod(dims)
    flat_grid = b.reshape(grid, shape=(batch, points, rank))
    per_axis = []
    for axis, size in enumerate(dims):
        component = rank - 1 - axis  # grid[..., 0] indexes the last axis
        g = b.reshape(b.slice(flat_grid, starts=(0, 0, component),
                              stops=(batch, points, component + 1), steps=(1, 1, 1)),
                      shape=(batch, points))
        per_axis.append(_sample_axis(b, g, size, attrs))
    strides = [math.prod(dims[axis + 1:]) for axis in range(rank)]
    rows = b.const((np.arange(batch, dtype=np.int64) * plane)[:, None])
    merged = b.reshape(b.transpose(b.reshape(x, shape=(batch, channels, plane)), perm=(1, 0, 2)),
                       shape=(channels, batch * plane))
    gy_rows = b.transpose(b.reshape(gy, shape=(batch, channels, points)), perm=(1, 0, 2))
    gx_merged = None
    slopes: list[Value | None] = [None] * rank
    for combo in itertools.product(*(taps for taps, _ in per_axis)):
        index, valid, weight = rows, None, None
        for axis, (position, ok, w, _) in enumerate(combo):
            index = b.add(index, b.mul(position, b.const(np.array(strides[axis], np.int64))))
            valid = ok if valid is None else b.logical_and(valid, ok)
            weight = w if weight is None else b.mul(weight, w)
        assert valid is not None and weight is not None
        zero = _scalar(b, 0.0, weight)
        kept = b.where(valid, weight, zero)  # [N, P]
        scattered = b.op("scatter_add", b.mul(gy_rows, kept), index, axis=1,
                         size=batch * plane)
        gx_merged = scattered if gx_merged is None else b.add(gx_merged, scattered)
        values = b.mul(b.gather(merged, index, axis=1), gy_rows)  # [C, N, P]
        summed = b.sum(values, axes=(0,), keepdims=False)  # [N, P]
        for axis in range(rank):
            coefficient = combo[axis][3]
            for other, tap in enumerate(combo):
                if other != axis:
                    coefficient = b.mul(coefficient, tap[2])
            term = b.mul(b.where(valid, coefficient, zero), summed)
            slopes[axis] = term if slopes[axis] is None else b.add(slopes[axis], term)
    assert gx_merged is not None
    gx = b.reshape(b.transpose(b.reshape(gx_merged, shape=(channels, batch, plane)),
                               perm=(1, 0, 2)), shape=x.type.shape)
    parts = []
    for component in range(rank):
        axis = rank - 1 - component
        total = b.mul(slopes[axis], per_axis[axis][1])
        parts.append(b.reshape(total, shape=(batch, points, 1)))
    ggrid = b.reshape(b.concat(*parts, axis=2), shape=grid.type.shape)
    return (gx, ggrid)


set_rule("resize", grad=resize_rule)
set_rule("topk", grad=topk_rule)
set_rule("fmod", grad=fmod_rule)
set_rule("grid_sample", grad=grid_sample_rule)
