"""`Tensor`: the proxy that traced code computes with. It acts like a numpy array.

Every operation records a node in the active trace and returns a new Tensor. Shapes and dtypes
are known while tracing (`x.shape`, `x.dtype`, `len(x)`), so Python may branch on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.ir.graph import Value
from ember.ir.types import DType

if TYPE_CHECKING:
    from ember.frontend.tracer import TraceContext


class Tensor:
    """A traced value: a graph `Value` and the trace that records operations on it."""

    __slots__ = ("ctx", "value")
    __array_priority__ = 1000  # numpy defers to our reflected operators

    def __init__(self, value: Value, ctx: TraceContext) -> None:
        self.value = value
        self.ctx = ctx

    # -- static facts --------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.value.type.dtype.numpy

    @property
    def dtype_(self) -> DType:
        return self.value.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self.value.type.size

    def __len__(self) -> int:
        if not self.shape:
            raise tracer._fail("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Tensor({self.value.type}, traced)"

    def dim(self) -> int:
        return self.ndim

    # -- values cannot steer Python ------------------------------------------------------------

    def _no_value(self, what: str) -> tracer.TraceError:
        return tracer._fail(
            f"{what} of a traced tensor {self.value.type} needs its value, which is only known "
            "at run time; Python control flow on tensor values cannot be traced into a static "
            "graph (use ember.where(cond, a, b) to select values)"
        )

    def __bool__(self) -> bool:
        raise self._no_value("bool()")

    def __int__(self) -> int:
        raise self._no_value("int()")

    def __float__(self) -> float:
        raise self._no_value("float()")

    def __index__(self) -> int:
        raise self._no_value("using as an index")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise self._no_value("np.asarray()")

    def item(self) -> Any:
        raise self._no_value(".item()")

    def tolist(self) -> Any:
        raise self._no_value(".tolist()")

    def numpy(self) -> np.ndarray:
        raise self._no_value(".numpy()")

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __setitem__(self, key: Any, value: Any) -> None:
        raise tracer._fail("traced tensors are immutable: build a new one (ember.where, "
                           "concatenate, pad) instead of assigning into it")

    __hash__ = object.__hash__

    # -- operators -----------------------------------------------------------------------------

    def __add__(self, other: Any) -> Tensor:
        return tracer.binary("add", self, other)

    def __radd__(self, other: Any) -> Tensor:
        return tracer.binary("add", other, self)

    def __sub__(self, other: Any) -> Tensor:
        return tracer.binary("sub", self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return tracer.binary("sub", other, self)

    def __mul__(self, other: Any) -> Tensor:
        return tracer.binary("mul", self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return tracer.binary("mul", other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return true_divide(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return true_divide(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return power(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return tracer.binary("pow", other, self)

    def __matmul__(self, other: Any) -> Tensor:
        return tracer.binary("matmul", self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return tracer.binary("matmul", other, self)

    def __neg__(self) -> Tensor:
        return self.ctx.emit("neg", self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return self.ctx.emit("abs", self)

    def __invert__(self) -> Tensor:
        if self.dtype_ is not DType.BOOL:
            raise tracer._fail(f"~ needs a bool tensor, got {self.value.type}")
        return self.ctx.emit("logical_not", self)

    def __and__(self, other: Any) -> Tensor:
        return tracer.binary("logical_and", self, other)

    __rand__ = __and__

    def __or__(self, other: Any) -> Tensor:
        return tracer.binary("logical_or", self, other)

    __ror__ = __or__

    def __xor__(self, other: Any) -> Tensor:
        return tracer.binary("logical_xor", self, other)

    __rxor__ = __xor__

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return tracer.binary("eq", self, other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return tracer.binary("ne", self, other)

    def __lt__(self, other: Any) -> Tensor:
        return tracer.binary("lt", self, other)

    def __le__(self, other: Any) -> Tensor:
        return tracer.binary("le", self, other)

    def __gt__(self, other: Any) -> Tensor:
        return tracer.binary("gt", self, other)

    def __ge__(self, other: Any) -> Tensor:
        return tracer.binary("ge", self, other)

    def __floordiv__(self, other: Any) -> Tensor:
        return floor_divide(self, other)

    def __rfloordiv__(self, other: Any) -> Tensor:
        return floor_divide(other, self)

    def __mod__(self, other: Any) -> Tensor:
        return remainder(self, other)

    def __rmod__(self, other: Any) -> Tensor:
        return remainder(other, self)

    def __divmod__(self, other: Any) -> tuple[Tensor, Tensor]:
        return divmod_(self, other)

    def __rdivmod__(self, other: Any) -> tuple[Tensor, Tensor]:
        return divmod_(other, self)

    # -- methods (numpy names; PyTorch's dim=/keepdim= accepted as aliases) ----------------------

    def astype(self, dtype: Any) -> Tensor:
        target = dtype if isinstance(dtype, DType) else DType.from_numpy(dtype)
        if target is self.dtype_:
            return self
        return self.ctx.emit("cast", self, dtype=target.value)

    def float(self) -> Tensor:
        return self.astype(DType.F32)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        target = tracer.resolve_shape(shape, self.size)
        if target == self.shape:
            return self
        return self.ctx.emit("reshape", self, shape=target)

    view = reshape

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        elif len(axes) == 2 and self.ndim != 2:  # PyTorch's transpose(dim0, dim1)
            perm = list(range(self.ndim))
            first, second = (a % self.ndim for a in axes)
            perm[first], perm[second] = perm[second], perm[first]
            axes = tuple(perm)
        perm = tuple(int(a) % max(self.ndim, 1) for a in axes)
        if perm == tuple(range(self.ndim)):
            return self
        return self.ctx.emit("transpose", self, perm=perm)

    def permute(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return self.ctx.emit("transpose", self, perm=tuple(int(a) % self.ndim for a in axes))

    @property
    def T(self) -> Tensor:
        return self.transpose()

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return self.ctx.emit("flatten", self, start_dim=start_dim % max(self.ndim, 1),
                             end_dim=end_dim % max(self.ndim, 1))

    def squeeze(self, axis: Any = None, dim: Any = None) -> Tensor:
        if axis is None and dim is None:
            axes = tuple(i for i, d in enumerate(self.shape) if d == 1)
        else:
            axes = tracer.normalize_axes_arg(axis, self.ndim, dim)
        return self.ctx.emit("squeeze", self, axes=axes) if axes else self

    def expand_dims(self, axis: Any) -> Tensor:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        rank = self.ndim + len(axes)
        return self.ctx.emit("expand_dims", self, axes=tuple(sorted(a % rank for a in axes)))

    def unsqueeze(self, dim: int) -> Tensor:
        return self.expand_dims(dim)

    def broadcast_to(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self.ctx.emit("broadcast_to", self, shape=tuple(int(d) for d in shape))

    expand = broadcast_to

    def _reduce(self, op: str, axis: Any, keepdims: bool, dim: Any, keepdim: Any) -> Tensor:
        axes = tracer.normalize_axes_arg(axis, self.ndim, dim)
        keep = bool(keepdim) if keepdim is not None else bool(keepdims)
        return self.ctx.emit(op, self, axes=axes, keepdims=keep)

    def sum(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
            keepdim: Any = None) -> Tensor:
        return self._reduce("sum", axis, keepdims, dim, keepdim)

    def mean(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
             keepdim: Any = None) -> Tensor:
        return self._reduce("mean", axis, keepdims, dim, keepdim)

    def max(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
            keepdim: Any = None) -> Tensor:
        return self._reduce("max", axis, keepdims, dim, keepdim)

    def min(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
            keepdim: Any = None) -> Tensor:
        return self._reduce("min", axis, keepdims, dim, keepdim)

    def prod(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
             keepdim: Any = None) -> Tensor:
        return self._reduce("prod", axis, keepdims, dim, keepdim)

    def var(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
            keepdim: Any = None, ddof: int = 0) -> Tensor:
        axes = tracer.normalize_axes_arg(axis, self.ndim, dim)
        keep = bool(keepdim) if keepdim is not None else bool(keepdims)
        centered = self - self.mean(axis=axes, keepdims=True)
        count = int(np.prod([self.shape[a] for a in axes]))
        return (centered * centered).sum(axis=axes, keepdims=keep) / (count - ddof)

    def _arg(self, op: str, axis: Any, keepdims: bool, dim: Any, keepdim: Any) -> Tensor:
        keep = bool(keepdim) if keepdim is not None else bool(keepdims)
        axis = dim if dim is not None else axis
        if axis is None:
            return self.reshape(-1)._arg(op, 0, False, None, None)
        return self.ctx.emit(op, self, axis=int(axis) % max(self.ndim, 1), keepdims=keep)

    def argmax(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
               keepdim: Any = None) -> Tensor:
        return self._arg("argmax", axis, keepdims, dim, keepdim)

    def argmin(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
               keepdim: Any = None) -> Tensor:
        return self._arg("argmin", axis, keepdims, dim, keepdim)

    def clip(self, min: Any = None, max: Any = None) -> Tensor:
        return self.ctx.emit("clip", self, min=min, max=max)

    clamp = clip

    def exp(self) -> Tensor:
        return self.ctx.emit("exp", self)

    def log(self) -> Tensor:
        return self.ctx.emit("log", self)

    def sqrt(self) -> Tensor:
        return self.ctx.emit("sqrt", self)

    def tanh(self) -> Tensor:
        return self.ctx.emit("tanh", self)

    def sigmoid(self) -> Tensor:
        return self.ctx.emit("sigmoid", self)

    def relu(self) -> Tensor:
        return self.ctx.emit("relu", self)

    def abs(self) -> Tensor:
        return self.ctx.emit("abs", self)

    def softmax(self, dim: int = -1) -> Tensor:
        return self.ctx.emit("softmax", self, axis=dim)

    # numpy math (see the decompositions below the class); PyTorch's names where they differ.

    def sin(self) -> Tensor:
        return self.ctx.emit("sin", _float_tensor(self))

    def cos(self) -> Tensor:
        return self.ctx.emit("cos", _float_tensor(self))

    def sign(self) -> Tensor:
        return self.ctx.emit("sign", self)

    def erf(self) -> Tensor:
        return erf(self)

    def rsqrt(self) -> Tensor:
        return rsqrt(self)

    def square(self) -> Tensor:
        return square(self)

    def log1p(self) -> Tensor:
        return log1p(self)

    def expm1(self) -> Tensor:
        return expm1(self)

    def log2(self) -> Tensor:
        return log2(self)

    def log10(self) -> Tensor:
        return log10(self)

    def tan(self) -> Tensor:
        return tan(self)

    def sinh(self) -> Tensor:
        return sinh(self)

    def cosh(self) -> Tensor:
        return cosh(self)

    def arctan(self) -> Tensor:
        return arctan(self)

    def arcsin(self) -> Tensor:
        return arcsin(self)

    def arccos(self) -> Tensor:
        return arccos(self)

    atan, asin, acos = arctan, arcsin, arccos

    def isnan(self) -> Tensor:
        return isnan(self)

    def isinf(self) -> Tensor:
        return isinf(self)

    def isfinite(self) -> Tensor:
        return isfinite(self)

    def floor(self) -> Tensor:
        return floor(self)

    def ceil(self) -> Tensor:
        return ceil(self)

    def round(self, decimals: int = 0) -> Tensor:
        return around(self, decimals)

    def __round__(self, ndigits: int | None = None) -> Tensor:
        return around(self, ndigits or 0)

    def floor_divide(self, other: Any) -> Tensor:
        return floor_divide(self, other)

    def remainder(self, other: Any) -> Tensor:
        return remainder(self, other)

    def std(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
            keepdim: Any = None, ddof: int = 0, correction: Any = None,
            unbiased: Any = None) -> Tensor:
        return std(self, axis, ddof=ddof, keepdims=keepdims, dim=dim, keepdim=keepdim,
                   correction=correction, unbiased=unbiased)

    def any(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
            keepdim: Any = None) -> Tensor:
        return any_(self, axis, keepdims=keepdims, dim=dim, keepdim=keepdim)

    def all(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
            keepdim: Any = None) -> Tensor:
        return all_(self, axis, keepdims=keepdims, dim=dim, keepdim=keepdim)

    def flip(self, *axes: Any, axis: Any = None, dims: Any = None) -> Tensor:
        """Reverse along axes: PyTorch's flip(0, 1) / flip(dims=...), numpy's axis=."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return flip(self, axes if axes else (dims if dims is not None else axis))

    def tile(self, *reps: Any) -> Tensor:
        if len(reps) == 1 and isinstance(reps[0], (tuple, list)):
            reps = tuple(reps[0])
        return tile(self, reps)

    def repeat(self, repeats: Any, axis: Any = None) -> Tensor:
        """numpy's ndarray.repeat (PyTorch's repeat_interleave; PyTorch's repeat is tile)."""
        return repeat(self, repeats, axis)

    def repeat_interleave(self, repeats: Any, dim: Any = None) -> Tensor:
        return repeat(self, repeats, dim)

    def take(self, indices: Any, axis: Any = None) -> Tensor:
        return take(self, indices, axis)

    def cumsum(self, axis: Any = None, dtype: Any = None, *, dim: Any = None) -> Tensor:
        return cumsum(self, axis, dtype, dim=dim)

    def sort(self, *args: Any, **kwargs: Any) -> Tensor:
        raise tracer._fail("Tensor.sort is not traceable: numpy's ndarray.sort sorts in place "
                           "and returns None; use np.sort(x, axis) for the sorted values")

    def argsort(self, axis: Any = -1, kind: Any = None, order: Any = None, *,
                dim: Any = None, stable: Any = None, descending: bool = False) -> Tensor:
        if descending:  # torch's argsort(dim, descending=True): NaN first, ties by index
            return topk(self, self.shape[_sort_axis(self, _axis_arg(axis, dim), "argsort")],
                        _axis_arg(axis, dim), largest=True)[1]
        return argsort(self, _axis_arg(axis, dim), kind, order, stable=stable)

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True
             ) -> tuple[Tensor, Tensor]:
        return topk(self, k, dim, largest, sorted)

    # -- indexing ------------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Tensor:
        return index(self, key)

    # -- numpy interop: np.exp(t), np.sum(t, axis=1), np.concatenate([a, b]) ... ----------------

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        rule = _UFUNCS.get(ufunc.__name__)
        if method != "__call__" or rule is None or kwargs:
            raise tracer._fail(f"numpy ufunc {ufunc.__name__}.{method} is not traceable; "
                               "use tensor methods or ember.nn.functional")
        return rule(*inputs)

    def __array_function__(self, func: Callable[..., Any], types: Any, args: Any,
                           kwargs: Any) -> Any:
        rule = _ARRAY_FUNCTIONS.get(func.__name__)
        if rule is None:
            raise tracer._fail(f"numpy function np.{func.__name__} is not traceable; use "
                               "tensor methods or ember.nn.functional")
        return rule(*args, **kwargs)


def true_divide(a: Any, b: Any) -> Tensor:
    """`/` divides as real numbers, as in numpy and PyTorch: integer tensors become f32."""
    left, right = tracer.binary_operands(a, b)
    if not left.dtype_.is_float:
        left, right = left.astype(DType.F32), right.astype(DType.F32)
    return left.ctx.emit("div", left, right)


# ---------------------------------------------------------------------------------------------
# Indexing, with numpy's rules: a slice keeps its axis, an int (negative counts from the end)
# removes it, None inserts an axis of size 1 where it stands in the key, and `...` stands for as
# many full slices as the key leaves unindexed. One integer array (or traced integer tensor) may
# index an axis: numpy's advanced indexing, recorded as a gather. Its dimensions replace that
# axis when the advanced indices (the array and any ints) stand next to each other in the key,
# and come first in the result otherwise. A 0-d integer array or tensor acts as an int.


def _expand_key(key: Any, shape: tuple[int, ...]) -> list[Any]:
    key = list(key) if isinstance(key, tuple) else [key]
    # NOTE: identity tests only: `in`, `count` and `.index` would call Tensor.__eq__ on tensor
    # keys.
    if sum(k is Ellipsis for k in key) > 1:
        raise tracer._fail("an index can only have a single ellipsis ('...')")
    used = sum(k is not None and k is not Ellipsis for k in key)
    if used > len(shape):
        raise tracer._fail(f"too many indices ({used}) for a tensor of shape {list(shape)}")
    at = next((i for i, k in enumerate(key) if k is Ellipsis), None)
    fill = [slice(None)] * (len(shape) - used)
    if at is None:
        return key + fill
    key[at : at + 1] = fill
    return key


def _int_index(item: Any) -> int | None:
    """`item` as an int when numpy indexes with it as an integer, else None."""
    if isinstance(item, (bool, np.bool_)):
        return None
    if isinstance(item, (int, np.integer)):
        return int(item)
    if isinstance(item, np.ndarray) and item.ndim == 0 and item.dtype.kind in "iu":
        return int(item)
    return None


def index(tensor: Tensor, key: Any) -> Tensor:
    """numpy indexing on a traced tensor, recorded as slice / gather / squeeze / transpose /
    expand_dims."""
    shape = tensor.shape
    key = _expand_key(key, shape)
    kinds: list[str] = []  # per key item: "new", "slice", "int" or "array"
    starts, stops, steps, gathers = [], [], [], []
    axis = 0
    for item in key:
        if item is None:
            kinds.append("new")
            continue
        size = shape[axis]
        number = _int_index(item)
        if isinstance(item, slice):
            try:
                start, stop, step = item.indices(size)
            except (TypeError, ValueError) as err:
                raise tracer._fail(f"bad slice {item} for axis {axis} of a tensor of shape "
                                   f"{list(shape)}: {err}") from None
            kinds.append("slice")
        elif number is not None:
            if not -size <= number < size:
                raise tracer._fail(f"index {number} is out of bounds for axis {axis} with size "
                                   f"{size} (tensor of shape {list(shape)})")
            start, stop, step = number % size, number % size + 1, 1
            kinds.append("int")
        elif isinstance(item, (Tensor, np.ndarray, list)):
            indices = _index_array(item, axis, shape)
            gathers.append((axis, indices))
            start, stop, step = 0, size, 1
            kinds.append("int" if indices.ndim == 0 else "array")
        else:
            raise tracer._fail(f"unsupported index {item!r} (ints, slices, None, ... and one "
                               "integer array are supported)")
        starts.append(start)
        stops.append(stop)
        steps.append(step)
        axis += 1
    if kinds.count("array") > 1:
        raise tracer._fail("only one integer-array index is supported per indexing expression")
    result = tensor
    if (tuple(starts), tuple(stops), tuple(steps)) != ((0,) * len(shape), shape,
                                                       (1,) * len(shape)):
        result = tensor.ctx.emit("slice", tensor, starts=tuple(starts), stops=tuple(stops),
                                 steps=tuple(steps))
    block = 0  # the rank of the array index's dimensions in the result
    shift = 0  # axes added by the array index's gather, for the gathers after it
    for axis, indices in gathers:
        if indices.ndim == 0:  # an int: keep the axis (size 1) for the squeeze below
            indices = indices.reshape(1)
        else:
            block = indices.ndim
        result = result.ctx.emit("gather", result, indices, axis=axis + shift)
        shift += indices.ndim - 1
    # Axes of the result so far, one label per dimension: a key position, or ("array", j).
    labels: list[Any] = []
    squeeze_axes = []
    for position, kind in enumerate(kinds):
        if kind == "int":
            squeeze_axes.append(len(labels))
            labels.append(None)
        elif kind == "slice":
            labels.append(position)
        elif kind == "array":
            labels += [("array", j) for j in range(block)]
    if squeeze_axes:
        result = result.ctx.emit("squeeze", result, axes=tuple(squeeze_axes))
        labels = [label for label in labels if label is not None]
    order = _result_order(kinds, block)
    kept = [label for label in order if isinstance(label, tuple) or kinds[label] != "new"]
    perm = tuple(labels.index(label) for label in kept)
    if perm != tuple(range(len(perm))):
        result = result.ctx.emit("transpose", result, perm=perm)
    new_axes = tuple(i for i, label in enumerate(order)
                     if not isinstance(label, tuple) and kinds[label] == "new")
    if new_axes:
        result = result.ctx.emit("expand_dims", result, axes=new_axes)
    return result


def _result_order(kinds: list[str], block: int) -> list[Any]:
    """numpy's order of the result's dimensions: key positions of slices and Nones, and the
    array index's dimensions ("array", j), in place or first (see above)."""
    advanced = [p for p, kind in enumerate(kinds) if kind in ("int", "array")]
    array_dims = [("array", j) for j in range(block)]
    basic = [p for p, kind in enumerate(kinds) if kind in ("slice", "new")]
    if "array" not in kinds:
        return basic
    if advanced != list(range(advanced[0], advanced[-1] + 1)):
        return array_dims + basic
    return ([p for p in basic if p < advanced[0]] + array_dims
            + [p for p in basic if p > advanced[0]])


def _index_array(item: Any, axis: int, shape: tuple[int, ...]) -> Tensor:
    """An integer-array index as a tensor; constant ones are checked and made non-negative."""
    if isinstance(item, Tensor):
        indices = item
    else:
        array = np.asarray(item)
        if isinstance(item, list) and array.size == 0:
            array = array.astype(np.int64)  # numpy indexes with an empty list too
        if array.dtype == bool:
            raise _mask_error()
        if array.dtype.kind not in "iu":
            raise tracer._fail(f"index arrays must be integers, got {array.dtype}")
        size = shape[axis]
        if array.size and (array.min() < -size or array.max() >= size):
            bad = array[(array < -size) | (array >= size)].flat[0]
            raise tracer._fail(f"index {bad} is out of bounds for axis {axis} with size {size} "
                               f"(tensor of shape {list(shape)})")
        indices = tracer.as_tensor((array % max(size, 1)).astype(np.int64))
    if indices.dtype_ is DType.BOOL:
        raise _mask_error()
    if not indices.dtype_.is_int:
        raise tracer._fail(f"index tensors must be integers, got {indices.value.type}")
    return indices


def _mask_error() -> tracer.TraceError:
    return tracer._fail("boolean-mask indexing gives a data-dependent shape, which a static "
                        "graph cannot hold; use ember.where(mask, x, 0) instead")


# ---------------------------------------------------------------------------------------------
# numpy functions and ufuncs that trace.


def _unary(op: str) -> Callable[[Any], Tensor]:
    return lambda x: tracer.emit(op, x)


def _binary(op: str) -> Callable[[Any, Any], Tensor]:
    return lambda a, b: tracer.binary(op, a, b)


def power(base: Any, exponent: Any) -> Tensor:
    """`base ** exponent`. A float tensor to the scalar power 0.5 is its square root, as in
    numpy and PyTorch, which both take sqrt for that exponent: sqrt(-0.0) = -0.0 and
    sqrt(-inf) = nan, where C's pow (the `pow` op, for every other exponent) gives +0.0 and
    +inf."""
    if (isinstance(base, Tensor) and base.dtype_.is_float
            and isinstance(exponent, (float, np.floating)) and exponent == 0.5):
        return base.sqrt()
    return tracer.binary("pow", base, exponent)


# ---------------------------------------------------------------------------------------------
# numpy math that the registry has no op for, as decompositions into ops it has. Inputs that
# are not floats become f32 (as `/` makes them). f32 inputs are computed in f64 and rounded
# once at the end, so their results are the correctly rounded ones but for rare near-ties; f64
# inputs carry the error bounds stated per function: the largest relative error, in units of
# f64 eps, measured against numpy's float64 over 500,000 points from 1e-12 to 700 in magnitude
# (tests/frontend/test_numpy_surface.py asserts them with a margin). Piecewise formulas see
# each input only where their piece applies (elsewhere a harmless stand-in), so no branch
# that `where` discards can put a NaN into the gradient.

_INV_LN2 = 1.0 / math.log(2.0)
_INV_LN10 = 1.0 / math.log(10.0)
# Cephes' atan: atan(x) = x + x^3 P(x^2) / Q(x^2) on [0, 0.66] (peak relative error 2.6e-18),
# with Q's leading coefficient 1; pi/2 as a double plus the double of its remainder.
_ATAN_P = (-8.750608600031904122785e-1, -1.615753718733365076637e1,
           -7.500855792314704667340e1, -1.228866684490136173410e2,
           -6.485021904942025371773e1)
_ATAN_Q = (2.485846490142306297962e1, 1.650270098316988542046e2, 4.328810604912902668951e2,
           4.853903996359136964868e2, 1.945506571482613964425e2)
_TAN_3PI_8 = 2.41421356237309504880
_PI_2_LOW = 6.123233995736765886130e-17


def _float_tensor(x: Any) -> Tensor:
    """x as a float tensor: integers and bools become f32."""
    t = tracer.as_tensor(x)
    return t if t.dtype_.is_float else t.astype(DType.F32)


def _in_f64(formula: Callable[[Tensor], Tensor]) -> Callable[[Any], Tensor]:
    """`formula` (written for f64) applied to x in f64, returned in x's float dtype."""

    def apply(x: Any) -> Tensor:
        t = _float_tensor(x)
        return formula(t.astype(DType.F64)).astype(t.dtype_)

    apply.__doc__ = formula.__doc__
    return apply


def _piece(condition: Tensor, t: Tensor, formula: Callable[[Tensor], Tensor],
           stand_in: float) -> Tensor:
    """formula(t) where `condition` holds; formula(stand_in) elsewhere, to be discarded."""
    return formula(where(condition, t, stand_in))


def _horner(t: Tensor, coefficients: Sequence[float]) -> Tensor:
    """c0 t^n + c1 t^(n-1) + ... + cn, coefficients from the highest power."""
    result = t * coefficients[0] + coefficients[1]
    for c in coefficients[2:]:
        result = result * t + c
    return result


def _signed_zero(t: Tensor, result: Tensor) -> Tensor:
    """`result`, but t itself where t is zero: an odd function keeps the sign of -0.0."""
    return where(t == 0.0, t, result)


def _in_f64_from(formula: Callable[[Tensor, bool], Tensor]) -> Callable[[Any], Tensor]:
    """`_in_f64`, telling `formula` whether x was f32 (its 24-bit values often allow a shorter
    formula in f64)."""

    def apply(x: Any) -> Tensor:
        t = _float_tensor(x)
        return formula(t.astype(DType.F64), t.dtype_ is DType.F32).astype(t.dtype_)

    apply.__doc__ = formula.__doc__
    return apply


def log1p_in_dtype(u: Tensor) -> Tensor:
    """log(1 + u) in u's own dtype for u in [-1, 1], accurate where 1 + u rounds (a few ulps;
    `log1p` itself computes f32 in f64 for correct rounding, at about three times the cost:
    activations and losses use this form).

    log(w) * u / (w - 1) with w = 1 + u cancels the rounding of w (Goldberg, "What every
    computer scientist should know about floating-point arithmetic", theorem 4); where w
    rounds to 1, log1p(u) is u. The divisor there is 1, not 0, so that the unused branch holds
    no 0/0 whose gradient would be nan.
    """
    w = 1.0 + u
    rounds_to_one = w == 1.0
    divisor = where(rounds_to_one, 1.0, w - 1.0)
    return where(rounds_to_one, u, w.log() * (u / divisor))


def expm1_in_dtype(x: Tensor) -> Tensor:
    """exp(x) - 1 in x's own dtype, accurate near 0 where exp(x) rounds (a few ulps; see
    `log1p_in_dtype`).

    Kahan's form (u - 1) * x / log(u) with u = exp(x) cancels the rounding of u; where u rounds
    to 1 the result is x, and where u - 1 is -1 (x below about -17 in f32) it is -1. The
    unused Kahan branch reads u = 2 there, so it holds no 0/0 or log(0) whose gradient is nan.
    """
    u = x.exp()
    exact = (u == 1.0) | (u - 1.0 == -1.0) | (u == np.inf)
    safe = where(exact, 2.0, u)
    kahan = (safe - 1.0) * (x / safe.log())
    return where(u == 1.0, x, where(exact, u - 1.0, kahan))


def _log1p(t: Tensor, from_f32: bool) -> Tensor:
    """log(1 + x) without the cancellation of 1 + x: below |x| = 1e-4 its Taylor series to
    x^4 (remainder under 2e-17 relative); below |x| = 1 Goldberg's log(u) x / (u - 1) with
    u = 1 + x; else log(1 + x); f64: 2.3 eps. For f32 input 1 + x is exact in f64 from
    |x| = 2^-29 on, so log(1 + x) serves down to the series."""
    magnitude = abs(t)
    small = magnitude < 1e-4
    series = _piece(small, t, lambda s: s * _horner(s, (-0.25, 1 / 3, -0.5, 1.0)), 0.0)
    result = (t + 1.0).log()
    if not from_f32:

        near = ~small & (magnitude < 1.0)
        result = where(near, _piece(near, t, log1p_in_dtype, 0.5), result)
    return where(small, series, result)


def _expm1(t: Tensor, from_f32: bool) -> Tensor:
    """exp(x) - 1 without its cancellation: below |x| = 1e-4 its Taylor series to x^5
    (remainder under 1e-22 relative); below |x| = 1 Kahan's (u - 1) x / log(u) with
    u = exp(x); else exp(x) - 1; f64: 2.3 eps. For f32 input exp(x) - 1 in f64 is within
    5e-12 relative down to the series, so it serves there."""
    magnitude = abs(t)
    small = magnitude < 1e-4
    series = _piece(small, t, lambda s: s * _horner(s, (1 / 120, 1 / 24, 1 / 6, 0.5, 1.0)),
                    0.0)
    result = t.exp() - 1.0
    if not from_f32:

        near = ~small & (magnitude < 1.0)
        result = where(near, _piece(near, t, expm1_in_dtype, 0.5), result)
    return where(small, series, result)


log1p, expm1 = _in_f64_from(_log1p), _in_f64_from(_expm1)


@_in_f64
def log2(t: Tensor) -> Tensor:
    """log(x) / ln 2; f64: 2.0 eps (powers of two may miss by an ulp; f32 input, computed in
    f64, is exact at them)."""
    return t.log() * _INV_LN2


@_in_f64
def log10(t: Tensor) -> Tensor:
    """log(x) / ln 10; f64: 2.5 eps (powers of ten may miss by an ulp)."""
    return t.log() * _INV_LN10


@_in_f64
def tan(t: Tensor) -> Tensor:
    """sin(x) / cos(x); f64: 2.0 eps."""
    return t.sin() / t.cos()


def _exp_half_squared(magnitude: Tensor) -> Tensor:
    """exp(a) / 2 as (exp(a / 2) / 2) exp(a / 2): finite wherever the result is."""
    half = (magnitude * 0.5).exp()
    return (half * 0.5) * half


@_in_f64_from
def sinh(t: Tensor, from_f32: bool) -> Tensor:
    """sign(x) (E + E / (E + 1)) / 2 with E = expm1(|x|) below |x| = 20, exp(|x|) / 2 above
    (exp(-|x|) is below an ulp there); f64: 2.9 eps."""
    magnitude = abs(t)

    def small(a: Tensor) -> Tensor:
        e = _expm1(a, from_f32)
        return (e + e / (e + 1.0)) * 0.5

    value = where(magnitude < 20.0, _piece(magnitude < 20.0, magnitude, small, 1.0),
                  _exp_half_squared(magnitude))
    return _signed_zero(t, where(t < 0.0, -value, value))


@_in_f64
def cosh(t: Tensor) -> Tensor:
    """(exp(|x|) + exp(-|x|)) / 2 below |x| = 20, exp(|x|) / 2 above; f64: 2.0 eps."""
    magnitude = abs(t)

    def small(a: Tensor) -> Tensor:
        e = a.exp()
        return (e + 1.0 / e) * 0.5

    return where(magnitude < 20.0, _piece(magnitude < 20.0, magnitude, small, 1.0),
                 _exp_half_squared(magnitude))


def _atan(t: Tensor) -> Tensor:
    """Cephes' atan on f64: reduced to [0, 0.66] through atan(x) = pi/2 - atan(1/x) above
    tan(3 pi/8) and pi/4 + atan((x - 1) / (x + 1)) above 0.66; f64: 1.0 eps."""
    a = abs(t)
    big = a > _TAN_3PI_8
    middle = (a > 0.66) & ~big
    reduced = where(big, -1.0 / where(big, a, 1.0), where(middle, (a - 1.0) / (a + 1.0), a))
    zero = tracer.as_tensor(0.0, like=a.dtype_)
    offset = where(big, math.pi / 2, where(middle, math.pi / 4, zero))
    low = where(big, _PI_2_LOW, where(middle, 0.5 * _PI_2_LOW, zero))
    z = reduced * reduced
    ratio = z * _horner(z, _ATAN_P) / _horner(z, (1.0, *_ATAN_Q))
    value = offset + (reduced * ratio + reduced + low)
    return _signed_zero(t, where(t < 0.0, -value, value))


@_in_f64
def arctan(t: Tensor) -> Tensor:
    """atan(x) by Cephes' rational approximation (see `_atan`)."""
    return _atan(t)


@_in_f64
def arcsin(t: Tensor) -> Tensor:
    """atan(x / sqrt((1 - x)(1 + x))); f64: 1.8 eps; nan outside [-1, 1]."""
    return _atan(t / ((1.0 - t) * (t + 1.0)).sqrt())


@_in_f64
def arccos(t: Tensor) -> Tensor:
    """2 atan(sqrt((1 - x) / (1 + x))); f64: 1.1 eps; nan outside [-1, 1]."""
    return _atan(((1.0 - t) / (t + 1.0)).sqrt()) * 2.0


def erf(x: Any) -> Tensor:
    """The error function (the `erf` op)."""
    return tracer.emit("erf", _float_tensor(x))


def rsqrt(x: Any) -> Tensor:
    """1 / sqrt(x) (the `rsqrt` op)."""
    return tracer.emit("rsqrt", _float_tensor(x))


def square(x: Any) -> Tensor:
    """x * x, in x's dtype (a bool stays itself, as in numpy)."""
    t = tracer.as_tensor(x)
    return t if t.dtype_ is DType.BOOL else t * t


def isnan(x: Any) -> Tensor:
    """x != x: true only at NaN (never for integers)."""
    t = tracer.as_tensor(x)
    return t != t


def isinf(x: Any) -> Tensor:
    """|x| == inf (never for integers)."""
    t = tracer.as_tensor(x)
    return abs(t) == math.inf if t.dtype_.is_float else t != t


def isfinite(x: Any) -> Tensor:
    """|x| < inf, false at NaN (always true for integers)."""
    t = tracer.as_tensor(x)
    return abs(t) < math.inf if t.dtype_.is_float else t == t


def _rounding(op: str) -> Callable[[Any], Tensor]:
    """floor / ceil / rint: integers are their own result (numpy 2 keeps their dtype)."""

    def apply(x: Any) -> Tensor:
        t = tracer.as_tensor(x)
        return t.ctx.emit(op, t) if t.dtype_.is_float else t

    return apply


floor, ceil, rint = _rounding("floor"), _rounding("ceil"), _rounding("round")


def around(x: Any, decimals: int = 0) -> Tensor:
    """numpy's round: half to even; for decimals != 0 numpy's own steps, x * 10^d rounded and
    divided by 10^d (x / 10^-d rounded and multiplied for d < 0), in x's dtype."""
    t = tracer.as_tensor(x)
    decimals = int(decimals)
    if not t.dtype_.is_float:
        if decimals < 0:
            raise tracer._fail(f"round of an integer tensor {t.value.type} to decimals="
                               f"{decimals} is not supported; cast to float first")
        return t
    if decimals == 0:
        return rint(t)
    scale = 10.0 ** abs(decimals)
    if decimals > 0:
        return rint(t * scale) / scale
    return rint(t / scale) * scale


def _integer_operands(a: Any, b: Any, name: str) -> tuple[Tensor, Tensor]:
    """Both operands of // or % as one integer dtype; floats and bools are refused."""
    left, right = tracer.binary_operands(a, b)
    if not left.dtype_.is_int:
        raise tracer._fail(
            f"{name} of {left.value.type} and {right.value.type} is not supported: it works on "
            "integer tensors; numpy's float floor_divide and remainder need an exact fmod, "
            "which Ember has no op for (floor(a / b) is close, but not numpy's result where "
            "a / b rounds)")
    return left, right


def _floor_divmod(a: Any, b: Any, name: str) -> tuple[Tensor, Tensor]:
    """numpy's integer floor division and remainder (the remainder takes the divisor's sign;
    a zero divisor gives 0 for both, as numpy gives)."""
    left, right = _integer_operands(a, b, name)
    zero = right == 0
    divisor = where(zero, 1, right)
    quotient = left.ctx.emit("div", left, divisor)  # truncates toward zero
    remainder = left - quotient * divisor
    # A nonzero remainder of the other sign than the divisor: floor is one below trunc.
    adjust = (remainder != 0) & ((remainder < 0) ^ (divisor < 0))
    quotient = where(adjust, quotient - 1, quotient)
    remainder = where(adjust, remainder + divisor, remainder)
    return where(zero, 0, quotient), where(zero, 0, remainder)


def floor_divide(a: Any, b: Any) -> Tensor:
    """numpy's `a // b` for integer tensors (floor of the quotient; 0 for a zero divisor)."""
    return _floor_divmod(a, b, "//")[0]


def remainder(a: Any, b: Any) -> Tensor:
    """numpy's `a % b` for integer tensors (the sign of b; 0 for a zero divisor)."""
    return _floor_divmod(a, b, "%")[1]


def divmod_(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """numpy's divmod for integer tensors: (a // b, a % b)."""
    return _floor_divmod(a, b, "divmod")


# ---------------------------------------------------------------------------------------------
# numpy functions over axes, as shape ops, reductions and gathers.


def _axis_arg(axis: Any, dim: Any) -> Any:
    return dim if dim is not None else axis


def std(x: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: int = 0,
        keepdims: bool = False, *, dim: Any = None, keepdim: Any = None,
        correction: Any = None, unbiased: Any = None) -> Tensor:
    """numpy's std: sqrt of `var` with `ddof` (PyTorch's correction= or unbiased= too)."""
    if dtype is not None or out is not None:
        raise tracer._fail("np.std with dtype= or out= is not supported")
    if correction is not None:
        ddof = int(correction)
    elif unbiased is not None:
        ddof = int(bool(unbiased))
    return _float_tensor(x).var(axis, keepdims, dim=dim, keepdim=keepdim, ddof=ddof).sqrt()


def _truth(x: Any, op: str, axis: Any, keepdims: bool, dim: Any, keepdim: Any) -> Tensor:
    """any (op "max") or all ("min") of x != 0 over axes; over an empty axis, by counting."""
    t = tracer.as_tensor(x)
    truth = t if t.dtype_ is DType.BOOL else t != 0
    axes = tracer.normalize_axes_arg(axis, t.ndim, dim)
    keep = bool(keepdim) if keepdim is not None else bool(keepdims)
    if all(t.shape[a] for a in axes):
        return truth.ctx.emit(op, truth, axes=axes, keepdims=keep)
    if op == "min":
        truth = ~truth
    count = truth.astype(DType.I64).sum(axis=axes, keepdims=keep)
    return count > 0 if op == "max" else count == 0


def any_(x: Any, axis: Any = None, out: Any = None, keepdims: bool = False, *,
         dim: Any = None, keepdim: Any = None) -> Tensor:
    """numpy's any: some element nonzero (NaN counts as nonzero) over the axes."""
    return _truth(x, "max", axis, keepdims, dim, keepdim)


def all_(x: Any, axis: Any = None, out: Any = None, keepdims: bool = False, *,
         dim: Any = None, keepdim: Any = None) -> Tensor:
    """numpy's all: every element nonzero over the axes (true over an empty axis)."""
    return _truth(x, "min", axis, keepdims, dim, keepdim)


def flip(x: Any, axis: Any = None, *, dims: Any = None) -> Tensor:
    """numpy's flip (PyTorch's dims=): reverse the order along the axes (all when None)."""
    t = tracer.as_tensor(x)
    axes = tracer.normalize_axes_arg(_axis_arg(axis, dims), t.ndim)
    if not axes:
        return t
    return index(t, tuple(slice(None, None, -1) if a in axes else slice(None)
                          for a in range(t.ndim)))


def tile(x: Any, reps: Any) -> Tensor:
    """numpy's tile (PyTorch's tile): x repeated `reps` times along each axis, reps and x's
    shape lined up from the right."""
    t = tracer.as_tensor(x)
    reps = (int(reps),) if isinstance(reps, (int, np.integer)) else tuple(int(r) for r in reps)
    if min(reps, default=0) < 0:
        raise tracer._fail(f"tile reps {list(reps)} must not be negative")
    rank = max(t.ndim, len(reps))
    shape = (1,) * (rank - t.ndim) + t.shape
    reps = (1,) * (rank - len(reps)) + reps
    if all(r == 1 for r in reps):
        return t.reshape(shape)
    # (d0, d1) -> (1, d0, 1, d1) -> (r0, d0, r1, d1) -> (r0 d0, r1 d1)
    interleaved = t.reshape(tuple(n for d in shape for n in (1, d)))
    spread = interleaved.broadcast_to(
        tuple(n for pair in zip(reps, shape, strict=True) for n in pair))
    return spread.reshape(tuple(r * d for r, d in zip(reps, shape, strict=True)))


def repeat(x: Any, repeats: Any, axis: Any = None, *, dim: Any = None) -> Tensor:
    """numpy's repeat (PyTorch's repeat_interleave): each element `repeats` times in a row
    along the axis (x flattened when None); `repeats` is an int or one count per element."""
    t = tracer.as_tensor(x)
    axis = _axis_arg(axis, dim)
    if axis is None:
        t, axis = t.reshape(-1), 0
    axis = tracer.normalize_axes_arg(axis, t.ndim)[0]
    size = t.shape[axis]
    counts = np.asarray(repeats)
    if isinstance(repeats, Tensor) or counts.dtype.kind not in "iu" or counts.ndim > 1:
        raise tracer._fail("repeat needs `repeats` as an int or a list of ints known while "
                           "tracing (the result's shape depends on them)")
    if counts.ndim == 0:
        count = int(counts)
        if count < 0:
            raise tracer._fail(f"repeat count {count} must not be negative")
        shape = t.shape
        expanded = t.expand_dims(axis + 1).broadcast_to(
            (*shape[:axis + 1], count, *shape[axis + 1:]))
        return expanded.reshape((*shape[:axis], size * count, *shape[axis + 1:]))
    if counts.shape != (size,) or counts.min(initial=0) < 0:
        raise tracer._fail(f"repeat counts of shape {list(counts.shape)} do not match axis "
                           f"{axis} of size {size} (one non-negative count per element)")
    positions = np.repeat(np.arange(size, dtype=np.int64), counts)
    return t.ctx.emit("gather", t, tracer.as_tensor(positions), axis=axis)


def take(x: Any, indices: Any, axis: Any = None, out: Any = None, mode: str = "raise") -> Tensor:
    """numpy's take: the elements at `indices` along the axis (of x flattened when None);
    constant indices are checked and may be negative."""
    if out is not None or mode != "raise":
        raise tracer._fail("np.take with out= or a mode other than 'raise' is not supported")
    t = tracer.as_tensor(x)
    if axis is None:
        t, axis = t.reshape(-1), 0
    axis = tracer.normalize_axes_arg(axis, t.ndim)[0]
    positions = _index_array(indices, axis, t.shape)
    return t.ctx.emit("gather", t, positions, axis=axis)


def cumsum(x: Any, axis: Any = None, dtype: Any = None, out: Any = None, *,
           dim: Any = None) -> Tensor:
    """numpy's cumsum: running sums along the axis (of x flattened when None). Integers and
    bools sum in i64, unsigned integers in u64 (numpy's default), exactly; floats sum as a
    log-depth tree (Hillis and Steele), which may round differently from numpy's left-to-right
    sum (at most about log2(n) ulp of the running sum of |x| more)."""
    if out is not None:
        raise tracer._fail("np.cumsum with out= is not supported")
    t = tracer.as_tensor(x)
    if dtype is not None:
        t = t.astype(dtype)
    elif not t.dtype_.is_float:
        t = t.astype(DType.U64 if t.dtype_.is_unsigned else DType.I64)
    axis = _axis_arg(axis, dim)
    if axis is None:
        t, axis = t.reshape(-1), 0
    axis = tracer.normalize_axes_arg(axis, t.ndim)[0]
    size = t.shape[axis]
    result, shift = t, 1
    while shift < size:  # result[i] += result[i - shift], with zeros shifted in
        zeros_shape = (*t.shape[:axis], shift, *t.shape[axis + 1:])
        zeros = tracer.as_tensor(np.zeros((), t.dtype)).broadcast_to(zeros_shape)
        kept = index(result, (slice(None),) * axis + (slice(0, size - shift),))
        result = result + concatenate([zeros, kept], axis=axis)
        shift *= 2
    return result


def _einsum_spec(subscripts: str, count: int) -> tuple[list[str], str]:
    """The operands' letters and the output's, numpy's implicit output when there is no ->."""
    spec = subscripts.replace(" ", "")
    if "." in spec:
        raise tracer._fail(f"einsum {subscripts!r}: ellipses are not supported")
    inputs, arrow, output = spec.partition("->")
    terms = inputs.split(",")
    if len(terms) != count or not all(term.isalpha() for term in terms if term):
        raise tracer._fail(f"einsum {subscripts!r} does not fit {count} operand(s)")
    if not arrow:
        letters = "".join(terms)
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    for term in [*terms, output]:
        if len(set(term)) != len(term):
            raise tracer._fail(f"einsum {subscripts!r}: a letter repeated within one operand "
                               "(a diagonal) is not supported")
    if set(output) - set("".join(terms)):
        raise tracer._fail(f"einsum {subscripts!r}: output letters must appear in an input")
    return terms, output


def _sum_letters(t: Tensor, term: str, keep: set[str]) -> tuple[Tensor, str]:
    """Sum t over the letters of `term` not in `keep`."""
    axes = tuple(i for i, c in enumerate(term) if c not in keep)
    if not axes:
        return t, term
    return t.sum(axis=axes), "".join(c for c in term if c in keep)


def _arrange(t: Tensor, term: str, order: str) -> Tensor:
    """t (with letters `term`) transposed to the letter order `order`."""
    return t.transpose(tuple(term.index(c) for c in order)) if order else t


def einsum(subscripts: str, *operands: Any) -> Tensor:
    """numpy's einsum of one or two operands, without ellipses or diagonals: sums, a
    transpose, and for two operands one batched matmul."""
    if not isinstance(subscripts, str) or len(operands) not in (1, 2):
        raise tracer._fail("einsum is supported with a subscript string and one or two "
                           "operands")
    terms, output = _einsum_spec(subscripts, len(operands))
    tensors = [tracer.as_tensor(o) for o in operands]
    for tensor, term in zip(tensors, terms, strict=True):
        if tensor.ndim != len(term):
            raise tracer._fail(f"einsum {subscripts!r}: operand {term!r} has shape "
                               f"{list(tensor.shape)}")
    if len(tensors) == 1:
        summed, term = _sum_letters(tensors[0], terms[0], set(output))
        return _arrange(summed, term, output)
    a, b = tracer.binary_operands(*tensors)
    (ta, tb), out = terms, set(output)
    a, ta = _sum_letters(a, ta, out | set(tb))
    b, tb = _sum_letters(b, tb, out | set(ta))
    size = {**dict(zip(tb, b.shape, strict=True)), **dict(zip(ta, a.shape, strict=True))}
    for c in set(ta) & set(tb):
        if a.shape[ta.index(c)] != b.shape[tb.index(c)]:
            raise tracer._fail(f"einsum {subscripts!r}: letter {c!r} has sizes "
                               f"{a.shape[ta.index(c)]} and {b.shape[tb.index(c)]}")
    batch = "".join(c for c in output if c in ta and c in tb)
    contract = "".join(c for c in ta if c in tb and c not in out)
    a_free = "".join(c for c in ta if c not in tb)
    b_free = "".join(c for c in tb if c not in ta)
    dims = lambda letters: int(np.prod([size[c] for c in letters]))  # noqa: E731
    left = _arrange(a, ta, batch + a_free + contract).reshape(
        dims(batch), dims(a_free), dims(contract))
    right = _arrange(b, tb, batch + contract + b_free).reshape(
        dims(batch), dims(contract), dims(b_free))
    product = (left @ right).reshape(tuple(size[c] for c in batch + a_free + b_free))
    return _arrange(product, batch + a_free + b_free, output)


_UFUNCS: dict[str, Callable[..., Tensor]] = {
    "add": _binary("add"), "subtract": _binary("sub"), "multiply": _binary("mul"),
    "true_divide": true_divide, "divide": true_divide, "power": lambda a, b: power(a, b),
    "maximum": _binary("maximum"), "minimum": _binary("minimum"), "matmul": _binary("matmul"),
    "equal": _binary("eq"), "not_equal": _binary("ne"), "less": _binary("lt"),
    "less_equal": _binary("le"), "greater": _binary("gt"), "greater_equal": _binary("ge"),
    "logical_and": _binary("logical_and"), "logical_or": _binary("logical_or"),
    "logical_xor": _binary("logical_xor"), "logical_not": _unary("logical_not"),
    "negative": _unary("neg"), "absolute": _unary("abs"), "sign": _unary("sign"),
    "exp": _unary("exp"), "log": _unary("log"), "sqrt": _unary("sqrt"), "tanh": _unary("tanh"),
    "sin": _unary("sin"), "cos": _unary("cos"), "floor": floor, "ceil": ceil,
    "reciprocal": _unary("reciprocal"), "rint": rint, "square": square, "log1p": log1p,
    "expm1": expm1, "log2": log2, "log10": log10, "tan": tan, "sinh": sinh, "cosh": cosh,
    "arctan": arctan, "arcsin": arcsin, "arccos": arccos, "isnan": isnan, "isinf": isinf,
    "isfinite": isfinite, "erf": erf, "floor_divide": floor_divide, "remainder": remainder,
    "divmod": divmod_,
}


def _method(name: str) -> Callable[..., Any]:
    return lambda x, *args, **kwargs: getattr(tracer.as_tensor(x), name)(*args, **kwargs)


def concatenate(tensors: Sequence[Any], axis: int = 0, *, dim: int | None = None) -> Tensor:
    """numpy's concatenate (PyTorch's cat) on traced tensors."""
    parts = [tracer.as_tensor(t) for t in tensors]
    if not parts:
        raise tracer._fail("concatenate needs at least one tensor")
    target = parts[0].dtype_
    for part in parts[1:]:
        target = tracer.promote(target, part.dtype_)
    parts = [p.astype(target) for p in parts]
    axis = dim if dim is not None else axis
    return parts[0].ctx.emit("concat", *parts, axis=axis % parts[0].ndim)


def stack(tensors: Sequence[Any], axis: int = 0, *, dim: int | None = None) -> Tensor:
    """numpy's stack: join along a new axis."""
    axis = dim if dim is not None else axis
    parts = [tracer.as_tensor(t) for t in tensors]
    rank = parts[0].ndim + 1
    return concatenate([p.expand_dims(axis % rank) for p in parts], axis=axis % rank)


def split(tensor: Any, sections: Any, axis: int = 0) -> tuple[Tensor, ...]:
    """numpy's split: `sections` is a count of equal parts or a list of cut indices."""
    x = tracer.as_tensor(tensor)
    axis %= x.ndim
    size = x.shape[axis]
    if isinstance(sections, int):
        if size % sections:
            raise tracer._fail(f"axis {axis} of size {size} does not split into {sections} "
                               "equal parts")
        sizes = (size // sections,) * sections
    else:
        cuts = [0, *[int(c) for c in sections], size]
        sizes = tuple(int(n) for n in np.diff(cuts))
    return x.ctx.emit("split", x, axis=axis, sizes=sizes) if len(sizes) > 1 else (x,)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """Elementwise select: `a` where `condition` holds, else `b`."""
    cond = tracer.as_tensor(condition)
    if cond.dtype_ is not DType.BOOL:
        cond = cond != 0
    left, right = tracer.binary_operands(a, b)
    return cond.ctx.emit("where", cond, left, right)


def pad(tensor: Any, pad_width: Any, mode: str = "constant", constant_values: float = 0.0
        ) -> Tensor:
    """numpy's pad (modes constant, reflect, edge)."""
    x = tracer.as_tensor(tensor)
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    pads = tuple(int(v) for v in widths[:, 0]) + tuple(int(v) for v in widths[:, 1])
    return x.ctx.emit("pad", x, pads=pads, mode=mode, value=float(constant_values))


_ARRAY_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sum": _method("sum"), "mean": _method("mean"), "max": _method("max"), "amax": _method("max"),
    "min": _method("min"), "amin": _method("min"), "prod": _method("prod"),
    "argmax": _method("argmax"), "argmin": _method("argmin"), "var": _method("var"),
    "reshape": _method("reshape"), "transpose": _method("transpose"),
    "squeeze": _method("squeeze"), "expand_dims": _method("expand_dims"),
    "clip": _method("clip"), "broadcast_to": _method("broadcast_to"),
    "concatenate": concatenate, "stack": stack, "split": split, "where": where, "pad": pad,
    "matmul": _binary("matmul"), "dot": _binary("matmul"),
    "round": around, "around": around, "std": std, "any": any_, "all": all_, "flip": flip,
    "tile": tile, "repeat": repeat, "take": take, "cumsum": cumsum, "einsum": einsum,
}


# -- sorting and fmod (the `topk` and `fmod` ops) ----------------------------------------------


def topk(x: Any, k: int, dim: int = -1, largest: bool = True, sorted: bool = True
         ) -> tuple[Tensor, Tensor]:
    """torch.topk: the k largest (or smallest) values along `dim`, in order, and their int64
    indices; equal values keep index order (lower index first) and NaN counts as the largest.
    The values always come sorted (`sorted=False` allows any order)."""
    t = tracer.as_tensor(x)
    if t.ndim == 0:
        raise tracer._fail(f"topk of a scalar {t.value.type} is not supported; give a tensor "
                           "of rank >= 1")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise tracer._fail(f"topk: k must be an integer, got {k!r}")
    axis = _sort_axis(t, dim, "topk")
    if not 0 <= int(k) <= t.shape[axis]:
        raise tracer._fail(f"topk: k={k} is outside [0, {t.shape[axis]}] for dim {dim} of "
                           f"{t.value.type}")
    if t.dtype_ is DType.BOOL:
        t = t.astype(DType.I64)
        values, indices = t.ctx.emit("topk", t, k=int(k), axis=axis, largest=bool(largest))
        return values.astype(DType.BOOL), indices
    return t.ctx.emit("topk", t, k=int(k), axis=axis, largest=bool(largest))


def _sort_axis(t: Tensor, axis: Any, name: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise tracer._fail(f"{name}: axis must be an integer or None, got {axis!r}")
    if not -t.ndim <= int(axis) < t.ndim:
        raise tracer._fail(f"{name}: axis {axis} is out of range for {t.value.type}")
    return int(axis) % t.ndim


def _sorted(a: Any, axis: Any, order: Any, name: str) -> tuple[Tensor, Tensor]:
    """numpy's ascending sort along `axis` (None: of the flattened array): values, indices."""
    if order is not None:
        raise tracer._fail(f"np.{name}: order= (structured arrays) is not supported")
    t = tracer.as_tensor(a)
    if axis is None or t.ndim == 0:
        t = t.reshape(-1)
        axis = 0
    position = _sort_axis(t, axis, f"np.{name}")
    return topk(t, t.shape[position], position, largest=False)


def sort(a: Any, axis: Any = -1, kind: Any = None, order: Any = None, *,
         stable: Any = None) -> Tensor:
    """np.sort: ascending, NaN last; always a stable sort, whatever `kind`."""
    return _sorted(a, axis, order, "sort")[0]


def argsort(a: Any, axis: Any = -1, kind: Any = None, order: Any = None, *,
            stable: Any = None) -> Tensor:
    """np.argsort as a stable sort (kind="stable"): equal values keep index order."""
    return _sorted(a, axis, order, "argsort")[1]


def fmod(a: Any, b: Any) -> Tensor:
    """np.fmod: the remainder with the dividend's sign. Floats: C's fmod, exact; integers:
    a - trunc(a / b) * b, and 0 where b is 0, as numpy gives."""
    left, right = tracer.binary_operands(a, b)
    if left.dtype_.is_float:
        return left.ctx.emit("fmod", left, right)
    if left.dtype_ is DType.BOOL:
        left, right = left.astype(DType.I64), right.astype(DType.I64)
    zero = right == 0
    divisor = where(zero, 1, right)
    remainder = left - left.ctx.emit("div", left, divisor) * divisor
    return where(zero, 0, remainder)


_UFUNCS["fmod"] = fmod
_ARRAY_FUNCTIONS.update(sort=sort, argsort=argsort)


# NOTE: imported last, so that either module can be imported first: tracer.py needs `Tensor`,
# and this module only reaches into `tracer` at call time.
from ember.frontend import tracer  # noqa: E402
