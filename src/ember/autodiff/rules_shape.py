"""Gradient rules of the reductions and the shape ops.

A reduction's cotangent is reshaped to keep the reduced axes and broadcast back; max and min
share their gradient evenly between tied maxima (PyTorch's amax / full `max()`); prod handles
zeros exactly. Shape ops move the cotangent back (reshape, inverse transpose, slices of a
concat); a slice's cotangent is scattered into zeros by dilation and padding, and a pad's
is sliced back, with the copies of edge and reflect padding added to the elements they copy.
"""

from __future__ import annotations

import numpy as np

from ember.autodiff.engine import NOT_DIFFERENTIABLE, attrs_of, scalar, zeros
from ember.ir.graph import GraphBuilder, Node, Value
from ember.ir.ops import normalize_axes, set_rule

Cotangents = tuple[Value | None, ...]


def _kept(b: GraphBuilder, node: Node, value: Value) -> Value:
    """A reduction's result (or cotangent) reshaped to keep the reduced axes as size 1."""
    x = node.inputs[0]
    axes = normalize_axes(attrs_of(node)["axes"], x.ndim) if x.ndim else ()
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return value if value.shape == shape else b.reshape(value, shape=shape)


def _spread(b: GraphBuilder, node: Node, value: Value) -> Value:
    kept = _kept(b, node, value)
    x = node.inputs[0]
    return kept if kept.shape == x.shape else b.broadcast_to(kept, shape=x.shape)


def _sum(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    return (_spread(b, node, gys[0]),)


def _mean(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    x = node.inputs[0]
    count = int(np.prod(x.shape)) // max(int(np.prod(node.output.shape)), 1)
    g = b.div(gys[0], scalar(b, float(max(count, 1)), gys[0].dtype))
    return (_spread(b, node, g),)


def _extreme(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    x = node.inputs[0]
    if not x.dtype.is_float:
        return (None,)
    axes = attrs_of(node)["axes"]
    y = _kept(b, node, node.output)
    hit = b.logical_or(b.eq(x, y), b.logical_and(b.ne(x, x), b.ne(y, y)))
    mask = b.cast(hit, dtype=x.dtype)
    count = b.sum(mask, axes=axes, keepdims=True)
    return (b.div(b.mul(_kept(b, node, gys[0]), mask), count),)


def _prod(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    x = node.inputs[0]
    if not x.dtype.is_float:
        return (None,)
    axes = attrs_of(node)["axes"]
    zero, one = scalar(b, 0.0, x.dtype), scalar(b, 1.0, x.dtype)
    is_zero = b.eq(x, zero)
    y = _kept(b, node, node.output)
    # At a zero the derivative is the product of the others: of the nonzero elements when it
    # is the only zero, else 0. Elsewhere it is prod / x.
    nonzero_prod = b.prod(b.where(is_zero, one, x), axes=axes, keepdims=True)
    zero_count = b.sum(b.cast(is_zero, dtype=x.dtype), axes=axes, keepdims=True)
    at_zero = b.where(b.eq(zero_count, one), nonzero_prod, zero)
    safe_x = b.where(is_zero, one, x)
    derivative = b.where(is_zero, at_zero, b.div(y, safe_x))
    return (b.mul(_kept(b, node, gys[0]), derivative),)


set_rule("sum", grad=_sum)
set_rule("mean", grad=_mean)
set_rule("max", grad=_extreme)
set_rule("min", grad=_extreme)
set_rule("prod", grad=_prod)
set_rule("argmax", grad=NOT_DIFFERENTIABLE)
set_rule("argmin", grad=NOT_DIFFERENTIABLE)


# -- shape ops ------------------------------------------------------------------------------


def _reshape_back(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    return (b.reshape(gys[0], shape=node.inputs[0].shape),)


def _transpose(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    perm = attrs_of(node)["perm"]
    inverse = tuple(int(i) for i in np.argsort(perm))
    return (b.transpose(gys[0], perm=inverse),)


def _broadcast_to(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    return (gys[0],)  # the engine sums it back to the operand's shape


def _concat(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    axis = int(attrs_of(node)["axis"]) % g.ndim
    sizes = tuple(v.shape[axis] for v in node.inputs)
    if len(sizes) == 1:
        return (g,)
    parts = b.split(g, axis=axis, sizes=sizes)
    return tuple(parts)


def _split(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    axis = int(attrs_of(node)["axis"]) % node.inputs[0].ndim
    parts = [g if g is not None else zeros(b, v.type)
             for g, v in zip(gys, node.outputs, strict=True)]
    return (parts[0] if len(parts) == 1 else b.concat(*parts, axis=axis),)


def dilate(b: GraphBuilder, value: Value, axis: int, step: int) -> Value:
    """`value` with step - 1 zeros between neighbours along `axis` (length (n - 1) * step + 1)."""
    n = value.shape[axis]
    if step == 1 or n == 0:
        return value
    spread = b.expand_dims(value, axes=(axis + 1,))
    pads = [0] * (2 * spread.ndim)
    pads[spread.ndim + axis + 1] = step - 1
    spread = b.pad(spread, pads=tuple(pads))
    shape = (*value.shape[:axis], n * step, *value.shape[axis + 1 :])
    flat = b.reshape(spread, shape=shape)
    return _take(b, flat, axis, 0, (n - 1) * step + 1, 1)


def _take(b: GraphBuilder, value: Value, axis: int, start: int, stop: int, step: int) -> Value:
    starts = [0] * value.ndim
    stops = list(value.shape)
    steps = [1] * value.ndim
    starts[axis], stops[axis], steps[axis] = start, stop, step
    return b.slice(value, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


def _slice(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    x = node.inputs[0]
    a = attrs_of(node)
    if 0 in g.shape:
        return (None,)
    befores, afters = [0] * x.ndim, [0] * x.ndim
    for axis, (start, stop, step) in enumerate(zip(a["starts"], a["stops"], a["steps"],
                                                   strict=True)):
        count = len(range(start, stop, step))
        if step < 0:  # the same elements in ascending order
            g = _take(b, g, axis, count - 1, -1, -1) if count > 1 else g
            start, step = start + (count - 1) * step, -step
        g = dilate(b, g, axis, step)
        befores[axis] = start
        afters[axis] = x.shape[axis] - (start + (count - 1) * step + 1)
    if any(befores) or any(afters):
        g = b.pad(g, pads=(*befores, *afters))
    return (g,)


def _pad(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    x = node.inputs[0]
    a = attrs_of(node)
    befores, afters = a["pads"][: x.ndim], a["pads"][x.ndim :]
    if a["mode"] == "constant":
        stops = tuple(s + d for s, d in zip(befores, x.shape, strict=True))
        return (b.slice(g, starts=tuple(befores), stops=stops, steps=(1,) * x.ndim),)
    # numpy pads edge and reflect axis by axis, so the cotangent is folded back one axis at a
    # time: each padded entry adds to the element it copies.
    fold = _fold_edge if a["mode"] == "edge" else _fold_reflect
    for axis, (before, after) in enumerate(zip(befores, afters, strict=True)):
        if before or after:
            g = fold(b, g, axis, before, after, x.shape[axis])
    return (g,)


def _placed(b: GraphBuilder, value: Value, axis: int, before: int, after: int) -> Value:
    """`value` with `before` and `after` zeros along `axis`."""
    pads = [0] * (2 * value.ndim)
    pads[axis], pads[value.ndim + axis] = before, after
    return b.pad(value, pads=tuple(pads))


def _fold_edge(b: GraphBuilder, g: Value, axis: int, before: int, after: int, n: int
               ) -> Value:
    """Edge padding repeats x[0] `before` times and x[n-1] `after` times along `axis`."""
    folded = _take(b, g, axis, before, before + n, 1)
    if before:
        head = b.sum(_take(b, g, axis, 0, before, 1), axes=(axis,), keepdims=True)
        folded = b.add(folded, _placed(b, head, axis, 0, n - 1))
    if after:
        tail = b.sum(_take(b, g, axis, before + n, before + n + after, 1), axes=(axis,),
                     keepdims=True)
        folded = b.add(folded, _placed(b, tail, axis, n - 1, 0))
    return folded


def _fold_reflect(b: GraphBuilder, g: Value, axis: int, before: int, after: int, n: int
                  ) -> Value:
    """Reflect padding copies x[before], ..., x[1] before x and x[n-2], ..., x[n-1-after]
    after it (the edge itself is not repeated)."""
    folded = _take(b, g, axis, before, before + n, 1)
    if before:  # g[before-1], ..., g[0] belong to x[1], ..., x[before]
        head = _take(b, g, axis, before - 1, -1, -1)
        folded = b.add(folded, _placed(b, head, axis, 1, n - 1 - before))
    if after:  # g[before+n+after-1], ..., g[before+n] belong to x[n-1-after], ..., x[n-2]
        tail = _take(b, g, axis, before + n + after - 1, before + n - 1, -1)
        folded = b.add(folded, _placed(b, tail, axis, n - 1 - after, 1))
    return folded


def _const(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    return ()


for _name in ("reshape", "expand_dims", "squeeze", "flatten"):
    set_rule(_name, grad=_reshape_back)
set_rule("transpose", grad=_transpose)
set_rule("broadcast_to", grad=_broadcast_to)
set_rule("concat", grad=_concat)
set_rule("split", grad=_split)
set_rule("slice", grad=_slice)
set_rule("pad", grad=_pad)
set_rule("const", grad=_const)
