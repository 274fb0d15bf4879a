"""The gradient rules of resize, topk and fmod, written with existing graph ops; grid_sample
has none yet (asking for one raises GradientError naming it).

- resize is linear in x, one pass per resized axis: out = sum_t w[:, t] * gather(x, k[:, t]).
  Its backward runs the passes last to first, each scattering the cotangent back through its
  taps (`scatter_add`, gather's backward, which adds where taps share a source); positions
  that take the extrapolation value pass nothing back.
- topk: the cotangent of each kept value goes to its index (a one-hot comparison of the
  indices with every position of the axis, summed over the k kept); indices have none.
- fmod(a, b) = a - trunc(a / b) * b: da = g, db = -g * trunc(a / b), as PyTorch's.
"""

from __future__ import annotations

import numpy as np

from ember.autodiff.engine import GradientError, attrs_of
from ember.ir.graph import GraphBuilder, Node, Value
from ember.ir.ops import normalize_axis, set_rule
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


def grid_sample_rule(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    raise GradientError("grid_sample: gradients are not supported yet (neither for the input "
                        "nor for the grid); compute the sampling outside the differentiated "
                        "function")


set_rule("resize", grad=resize_rule)
set_rule("topk", grad=topk_rule)
set_rule("fmod", grad=fmod_rule)
set_rule("grid_sample", grad=grid_sample_rule)
