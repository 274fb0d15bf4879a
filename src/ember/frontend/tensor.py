"""`Tensor`: the proxy that traced code computes with. It acts like a numpy array.

Every operation records a node in the active trace and returns a new Tensor. Shapes and dtypes
are known while tracing (`x.shape`, `x.dtype`, `len(x)`), so Python may branch on them.
"""

from __future__ import annotations

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
        raise tracer._fail("// is not supported yet; use (a / b) and floor()")

    def __mod__(self, other: Any) -> Tensor:
        raise tracer._fail("% is not supported yet")

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
    "sin": _unary("sin"), "cos": _unary("cos"), "floor": _unary("floor"), "ceil": _unary("ceil"),
    "reciprocal": _unary("reciprocal"), "rint": _unary("round"),
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
}


# NOTE: imported last, so that either module can be imported first: tracer.py needs `Tensor`,
# and this module only reaches into `tracer` at call time.
from ember.frontend import tracer  # noqa: E402
