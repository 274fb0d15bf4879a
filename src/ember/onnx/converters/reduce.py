"""Converters of ONNX reductions (ReduceSum, ReduceMean, ..., ReduceLogSumExp) and ArgMax/ArgMin.

The reduced axes are an attribute up to opset 12 (ReduceSum) or 17 (the others), and an
optional input after; either way they must be known at import time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ember.frontend.tensor import Tensor
from ember.onnx.converters.base import NodeContext, Output, Outputs, converter, normalize_axis

Reducer = Callable[[NodeContext, Tensor, tuple[int, ...], bool], Tensor]


def _plain(op: str) -> Reducer:
    def run(node: NodeContext, x: Tensor, axes: tuple[int, ...], keep: bool) -> Tensor:
        return node.emit(op, x, axes=axes, keepdims=keep)

    return run


def _sum_of(transform: Callable[[Tensor], Tensor]) -> Reducer:
    def run(node: NodeContext, x: Tensor, axes: tuple[int, ...], keep: bool) -> Tensor:
        return node.emit("sum", transform(x), axes=axes, keepdims=keep)

    return run


def _l2(node: NodeContext, x: Tensor, axes: tuple[int, ...], keep: bool) -> Tensor:
    return node.emit("sum", x * x, axes=axes, keepdims=keep).sqrt()


def _log_sum(node: NodeContext, x: Tensor, axes: tuple[int, ...], keep: bool) -> Tensor:
    return node.emit("sum", x, axes=axes, keepdims=keep).log()


def _log_sum_exp(node: NodeContext, x: Tensor, axes: tuple[int, ...], keep: bool) -> Tensor:
    # log(sum(exp(x - max))) + max: no overflow for large inputs.
    peak = node.emit("max", x, axes=axes, keepdims=True)
    total = node.emit("sum", (x - peak).exp(), axes=axes, keepdims=True).log() + peak
    return total if keep else total.squeeze(axis=axes) if axes else total


# ONNX op -> (last opset with `axes` as an attribute, how to reduce, the ONNX operator
# versions it implements)
_REDUCERS: dict[str, tuple[int, Reducer, tuple[int, ...]]] = {
    "ReduceSum": (12, _plain("sum"), (1, 11, 13)),
    "ReduceMean": (17, _plain("mean"), (1, 11, 13, 18)),
    "ReduceMax": (17, _plain("max"), (1, 11, 12, 13, 18, 20)),
    "ReduceMin": (17, _plain("min"), (1, 11, 12, 13, 18, 20)),
    "ReduceProd": (17, _plain("prod"), (1, 11, 13, 18)),
    "ReduceL1": (17, _sum_of(lambda x: x.abs()), (1, 11, 13, 18)),
    "ReduceL2": (17, _l2, (1, 11, 13, 18)),
    "ReduceSumSquare": (17, _sum_of(lambda x: x * x), (1, 11, 13, 18)),
    "ReduceLogSum": (17, _log_sum, (1, 11, 13, 18, 28)),
    "ReduceLogSumExp": (17, _log_sum_exp, (1, 11, 13, 18, 28)),
}


def _reduce_axes(node: NodeContext, rank: int, attr_until: int) -> tuple[int, ...] | None:
    """Normalized axes; None means "no reduction" (noop_with_empty_axes)."""
    if node.opset <= attr_until:
        axes = node.attr("axes")
    else:
        axes = node.static_ints(1, "axes") if node.has(1) else None
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return None
        return tuple(range(rank))
    return tuple(sorted(normalize_axis(a, rank, node) for a in axes))


# Reductions with no identity of their own, and what ONNX gives over an empty set: the
# smallest value of the type for a maximum (-inf for floats, False for bools), the largest for a
# minimum, and -inf for the log of an empty sum of exponentials.
_EMPTY_EXTREME = {"ReduceMax": -1, "ReduceMin": 1, "ReduceLogSumExp": -1}


def _empty_extreme(node: NodeContext, x: Tensor, axes: tuple[int, ...], keep: bool) -> Output:
    """The reduction of `x` over `axes`, one of which is empty: filled with ONNX's value."""
    dtype = np.dtype(x.dtype)
    high = _EMPTY_EXTREME[node.op_type] > 0
    if dtype.kind == "b":
        value = high
    elif dtype.kind == "f":
        value = np.inf if high else -np.inf
    else:
        info = np.iinfo(dtype)
        value = info.max if high else info.min
    shape = [1 if a in axes else size for a, size in enumerate(x.shape) if keep or a not in axes]
    return node.full(shape, value, dtype)


def _reduction(attr_until: int, reducer: Reducer) -> Callable[[NodeContext], Outputs]:
    def convert(node: NodeContext) -> Outputs:
        x = node.tensor(0)
        axes = _reduce_axes(node, x.ndim, attr_until)
        if axes is None:
            return [x]
        keep = bool(node.attr("keepdims", 1))
        if node.op_type in _EMPTY_EXTREME and any(x.shape[a] == 0 for a in axes):
            return [_empty_extreme(node, x, axes, keep)]
        return [reducer(node, x, axes, keep)]

    convert.__doc__ = "Reduction over known axes (`keepdims` 1 by default)."
    return convert


for _name, (_until, _reducer, _versions) in _REDUCERS.items():
    converter(_name, versions=_versions)(_reduction(_until, _reducer))


def _arg(op: str) -> Callable[[NodeContext], Outputs]:
    def convert(node: NodeContext) -> Outputs:
        x = node.tensor(0)
        axis = normalize_axis(node.attr("axis", 0), x.ndim, node)
        keep = bool(node.attr("keepdims", 1))
        if not node.attr("select_last_index", 0):
            return [node.emit(op, x, axis=axis, keepdims=keep)]
        # The last extreme is the first one of the reversed axis: index = size - 1 - position.
        size = x.shape[axis]
        starts, stops, steps = [0] * x.ndim, list(x.shape), [1] * x.ndim
        starts[axis], stops[axis], steps[axis] = size - 1, -1, -1
        flipped = node.emit("slice", x, starts=tuple(starts), stops=tuple(stops),
                            steps=tuple(steps))
        position = node.emit(op, flipped, axis=axis, keepdims=keep)
        return [node.const(size - 1, like=position) - position]

    convert.__doc__ = f"`{op}` along `axis` (`select_last_index` through a reversed slice)."
    return convert


converter("ArgMax", versions=(1, 11, 12, 13))(_arg("argmax"))
converter("ArgMin", versions=(1, 11, 12, 13))(_arg("argmin"))
