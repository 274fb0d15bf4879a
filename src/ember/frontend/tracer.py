"""Tracing: run user code on proxy tensors that record each operation into a graph.

    g = ember.trace(model, x)          # an nn.Module or a plain function, and example inputs

Inside traced code a `Tensor` behaves like a numpy array (operators, methods, slicing, numpy
functions through `__array_function__`). Python control flow on shapes works, because shapes are
static; control flow on tensor *values* cannot be recorded in a static graph and raises a
TraceError naming the user's line. Each node remembers the user's `file:line`.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ember.errors import EmberError, ShapeError, TraceError
from ember.ir.attrs import Const
from ember.ir.graph import Graph, GraphBuilder, Value
from ember.ir.types import DType, TensorType
from ember.ir.verify import verify

_EMBER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STATE = threading.local()


@dataclass(frozen=True)
class TensorSpec:
    """An example input given by shape and dtype instead of data."""

    shape: tuple[int, ...]
    dtype: Any = np.float32

    @property
    def type(self) -> TensorType:
        return TensorType(DType.from_numpy(self.dtype), tuple(int(d) for d in self.shape))


def user_frame() -> tuple[str, int]:
    """(file, line) in user code that the current operation comes from.

    That is the innermost stack frame outside the ember package, except inside a built-in
    layer's forward (nn.Linear called by nn.Sequential, say): then it is the line of user code
    where that layer was created, which is what a user can act on.
    """
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_EMBER_DIR + os.sep):
            return filename, frame.f_lineno
        if frame.f_code.co_name == "__call__":
            defined_at = getattr(frame.f_locals.get("self"), "_ember_defined_at", None)
            if defined_at is not None:
                return defined_at
        frame = frame.f_back
    return "<unknown>", 0


class TraceContext:
    """The state of one trace: the graph being built and the module parameters seen so far."""

    def __init__(self, name: str) -> None:
        self.builder = GraphBuilder(name)
        self.param_names: dict[int, str] = {}  # id(Parameter) -> state-dict name
        self.param_values: dict[int, Tensor] = {}
        self.param_inputs: dict[int, Tensor] = {}  # params given as graph inputs (training)
        self.dropout_seed = 0
        # Training traces (`ember.train_step`) collect the new values of module buffers
        # (BatchNorm's running statistics) here, as extra graph outputs; None elsewhere.
        self.updates: dict[int, tuple[Any, Tensor]] | None = None
        self.dropout_keys = 0  # run-time mask keys made by `dropout_key`

    def dropout_key(self) -> Tensor | None:
        """In a training trace, a new i32 scalar input: the mask key of one dropout, drawn
        afresh for every step. None elsewhere (the mask then follows the `seed` attribute)."""
        if self.updates is None:
            return None
        self.dropout_keys += 1
        value = self.builder.input(TensorType(DType.I32, ()), f"dropout_key{self.dropout_keys}")
        return Tensor(value, self)

    def record_update(self, buffer: Any, value: Tensor) -> bool:
        """Note `value` as the new content of a module buffer after this call; False (and
        nothing recorded) outside a training trace or when `buffer` is no graph input."""
        if self.updates is None or id(buffer) not in self.param_inputs:
            return False
        self.updates[id(buffer)] = (buffer, value)
        return True

    def emit(self, op: str, *inputs: Tensor, **attrs: Any) -> Any:
        """Record one op; returns a Tensor, or a tuple of Tensors for multi-output ops."""
        filename, line = user_frame()
        self.builder.loc = f"{os.path.basename(filename)}:{line}"
        try:
            result = self.builder.op(op, *(t.value for t in inputs), **attrs)
        except ShapeError as err:
            raise TraceError(str(err), f"{filename}:{line}") from None
        if isinstance(result, tuple):
            return tuple(Tensor(v, self) for v in result)
        return Tensor(result, self)

    def constant(self, array: np.ndarray | Const, name: str = "") -> Tensor:
        """A constant of the graph: an array (copied and hashed), or an IR Const made before."""
        value = array if isinstance(array, Const) else np.asarray(array)
        return self.emit("const", value=value, name=name or None)

    def lift_parameter(self, param: Any) -> Tensor:
        """The graph value of a module parameter: an input (training) or a named constant."""
        key = id(param)
        if key in self.param_inputs:
            return self.param_inputs[key]
        if key not in self.param_values:
            name = self.param_names.get(key, "")
            self.param_values[key] = self.constant(param.data, name)
        return self.param_values[key]


def current() -> TraceContext:
    """The active trace; TraceError outside of one."""
    ctx = getattr(_STATE, "ctx", None)
    if ctx is None:
        filename, line = user_frame()
        raise TraceError("this needs a traced tensor: call it inside ember.trace / ember.compile "
                         "/ @ember.jit", f"{filename}:{line}")
    return ctx


def tracing() -> bool:
    return getattr(_STATE, "ctx", None) is not None


def _fail(message: str) -> TraceError:
    filename, line = user_frame()
    return TraceError(message, f"{filename}:{line}")


# ---------------------------------------------------------------------------------------------
# Converting Python values into graph values.

def promote(a: DType, b: DType) -> DType:
    """Result dtype of mixing two tensor dtypes: floats beat ints and bool, wider beats
    narrower; f16 with bf16 gives f32. Integers mix as in numpy: a signed type holding every
    value of both (u8 with i8 gives i16), and u64 with a signed type gives f64."""
    if a is b or b is DType.BOOL:
        return a
    if a is DType.BOOL:
        return b
    if a.is_float != b.is_float:
        return a if a.is_float else b
    if a.is_float:
        if {a, b} == {DType.F16, DType.BF16}:
            return DType.F32
        return a if a.itemsize >= b.itemsize else b
    if a.is_signed == b.is_signed:
        return a if a.itemsize >= b.itemsize else b
    signed, unsigned = (a, b) if a.is_signed else (b, a)
    if signed.itemsize > unsigned.itemsize:
        return signed
    if unsigned is DType.U64:
        return DType.F64
    return {1: DType.I16, 2: DType.I32, 4: DType.I64}[unsigned.itemsize]


def _scalar_dtype(value: object, like: DType | None) -> DType:
    """Python scalars are weakly typed: they take the dtype of the tensor they meet (JAX, torch)."""
    if isinstance(value, bool):
        return DType.BOOL if like is None or like is DType.BOOL else like
    if isinstance(value, int):
        return like if like is not None and like is not DType.BOOL else DType.I64
    if like is not None and like.is_float:
        return like
    return DType.F32


def as_tensor(value: object, like: DType | None = None) -> Tensor:
    """A Tensor for a traced value, module parameter, numpy array or Python scalar."""
    if isinstance(value, Tensor):
        return value
    to_tensor = getattr(value, "_ember_tensor", None)
    if to_tensor is not None:  # nn.Parameter and other tensor-likes
        return to_tensor()
    ctx = current()
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)) and not (
        isinstance(value, np.generic) and like is None
    ):
        scalar = value.item() if isinstance(value, np.generic) else value
        dtype = _scalar_dtype(scalar, like)
        if isinstance(scalar, int) and dtype.is_int:
            low, high = dtype.int_range
            if not low <= scalar <= high:  # numpy 2 refuses it too (OverflowError)
                raise _fail(f"the Python integer {scalar} is out of range for {dtype} "
                            f"({low} to {high}); cast the tensor to a wider type first")
        return ctx.constant(np.array(scalar, dtype=dtype.numpy))
    array = np.asarray(value)
    if array.dtype == object:
        raise _fail(f"cannot use a {type(value).__name__} as a tensor")
    array = supported_array(array)
    try:
        DType.from_numpy(array.dtype)
    except TypeError as err:
        raise _fail(str(err)) from None
    return ctx.constant(array)


def supported_array(array: np.ndarray) -> np.ndarray:
    """`array` as it is when Ember has its dtype; otherwise a float of another width as f64
    (long double) and any other integer as i64."""
    try:
        DType.from_numpy(array.dtype)
        return array
    except TypeError:
        pass
    if array.dtype.kind == "f":
        return array.astype(np.float64)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    return array


def binary_operands(a: object, b: object) -> tuple[Tensor, Tensor]:
    """Both operands as tensors of one dtype, casting the lower-ranked one if needed."""
    left = as_tensor(a, b.dtype_ if isinstance(b, Tensor) else None)
    right = as_tensor(b, left.dtype_)
    if left.dtype_ is not right.dtype_:
        target = promote(left.dtype_, right.dtype_)
        left, right = left.astype(target), right.astype(target)
    return left, right


def emit(op: str, *inputs: object, **attrs: Any) -> Any:
    """Record `op` on inputs converted to tensors (the first tensor sets scalars' dtype)."""
    like = next((t.dtype_ for t in inputs if isinstance(t, Tensor)), None)
    tensors = [as_tensor(t, like) for t in inputs]
    ctx = tensors[0].ctx if tensors else current()
    return ctx.emit(op, *tensors, **attrs)


def binary(op: str, a: object, b: object) -> Tensor:
    left, right = binary_operands(a, b)
    return left.ctx.emit(op, left, right)


def normalize_axes_arg(axis: Any, ndim: int, dim: Any = None) -> tuple[int, ...]:
    """numpy's `axis=` (None, int or tuple) or PyTorch's `dim=` as sorted non-negative axes."""
    if dim is not None:
        axis = dim
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise _fail(f"axis {a} is out of range for a tensor of rank {ndim}")
        out.append(int(a) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise _fail(f"repeated axis in {list(axes)}")
    return tuple(sorted(out))


def resolve_shape(shape: Sequence[int], size: int) -> tuple[int, ...]:
    """A reshape target with at most one -1 resolved against `size` elements."""
    shape = tuple(int(d) for d in shape)
    if shape.count(-1) > 1:
        raise _fail(f"reshape target {list(shape)} has more than one -1")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        if known == 0 or size % known:
            raise _fail(f"cannot reshape {size} elements into {list(shape)}")
        shape = tuple(size // known if d == -1 else d for d in shape)
    return shape


from ember.frontend.tensor import Tensor  # noqa: E402  (Tensor methods call back into this module)

# ---------------------------------------------------------------------------------------------
# The entry point.


def _graph_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if name == "_lambda_" or not name:
        name = "main"
    return name if not name[0].isdigit() else "g" + name


def _example_type(example: Any, position: int) -> TensorType:
    """The type of an example input; TraceError for a dtype Ember lacks or a bad shape (negative,
    or ELEMENT_LIMIT elements or more)."""
    try:
        if isinstance(example, TensorSpec):
            return example.type
        return TensorType.of(np.asarray(example))
    except (TypeError, ValueError, ShapeError) as err:
        raise TraceError(f"example input {position}: {err}") from None


def _input_names(fn: Any, count: int) -> list[str]:
    target = fn.forward if hasattr(fn, "forward") and hasattr(fn, "named_parameters") else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if params and params[-1].kind is inspect.Parameter.VAR_POSITIONAL:
        names += [f"{params[-1].name}{i}" for i in range(count)]
    return (names + [f"arg{i}" for i in range(count)])[:count] if names else [
        f"arg{i}" for i in range(count)
    ]


def _collect_outputs(result: Any, ctx: TraceContext) -> tuple[list[Tensor], bool]:
    """The traced function's result as tensors, and whether it was a single tensor."""
    if isinstance(result, (tuple, list)):
        return [as_tensor(r) for r in result], False
    if result is None:
        raise TraceError("the traced function returned None; return the output tensor(s)")
    return [as_tensor(result)], True


def trace(fn: Callable[..., Any], *example_inputs: Any, name: str | None = None,
          params_as_inputs: bool = False) -> Graph:
    """Trace `fn` (an nn.Module or a Python function) on example inputs into a verified Graph.

    Example inputs are numpy arrays or `TensorSpec`s. Module parameters become named `const`
    nodes (their state-dict names), or graph inputs after the data inputs when
    `params_as_inputs` is set.
    """
    return trace_with_info(fn, *example_inputs, name=name, params_as_inputs=params_as_inputs)[0]


def trace_with_info(fn: Callable[..., Any], *example_inputs: Any, name: str | None = None,
                    params_as_inputs: bool = False) -> tuple[Graph, bool, list[str]]:
    """`trace`, plus whether the function returned one tensor, and the parameter input names."""
    if getattr(_STATE, "ctx", None) is not None:
        raise TraceError("ember.trace was called inside a trace")
    if not callable(fn):
        raise TraceError(f"cannot trace a {type(fn).__name__}: expected a function or nn.Module")
    ctx = TraceContext(name or _graph_name(fn))
    names = _input_names(fn, len(example_inputs))
    tensors = [Tensor(ctx.builder.input(_example_type(x, i), names[i]), ctx)
               for i, x in enumerate(example_inputs)]
    param_names = _register_params(fn, ctx, params_as_inputs)
    _STATE.ctx = ctx
    try:
        result = fn(*tensors)
        outputs, single = _collect_outputs(result, ctx)
    finally:
        _STATE.ctx = None
    graph = ctx.builder.build(t.value for t in outputs)
    try:
        verify(graph)
    except EmberError as err:  # a bug in Ember, not in user code: say so
        raise TraceError(f"internal error: the traced graph does not verify: {err}") from err
    return graph, single, param_names


def _register_params(fn: Any, ctx: TraceContext, as_inputs: bool, buffers: bool = False
                     ) -> list[str]:
    named = getattr(fn, "named_parameters", None)
    if named is None:
        return []
    names: list[str] = []
    for param_name, param in fn.named_parameters():
        ctx.param_names[id(param)] = param_name
        if as_inputs and (buffers or getattr(param, "requires_grad", True)):
            value = ctx.builder.input(TensorType.of(param.data), param_name)
            ctx.param_inputs[id(param)] = Tensor(value, ctx)
            names.append(param_name)
    for buffer_name, buffer in fn.named_buffers():
        ctx.param_names[id(buffer)] = buffer_name
        if buffers and buffer is not None and buffer.data.dtype.kind == "f":
            value = ctx.builder.input(TensorType.of(buffer.data), buffer_name)
            ctx.param_inputs[id(buffer)] = Tensor(value, ctx)
            names.append(buffer_name)
    return names


@dataclass
class TrainTrace:
    """A module traced for training: graph inputs are the data, then every parameter and
    floating-point buffer of the module (`state`, in that order, by state-dict name); outputs
    are the function's results, then the new value of each buffer in `updated`."""

    graph: Graph
    state: list[tuple[str, Any]]  # (name, Parameter or Buffer) of each state input
    updated: list[tuple[str, Any]]  # (name, Buffer) of each extra output
    result_count: int  # outputs of the function itself
    dropout_keys: int  # i32 scalar inputs after the state: one mask key per dropout


def trace_for_training(fn: Callable[..., Any], module: Any, *example_inputs: Any,
                       name: str | None = None) -> TrainTrace:
    """Trace `fn(*inputs)` (which calls `module`) with the module's parameters and buffers as
    graph inputs, collecting buffer updates (see `TraceContext.record_update`)."""
    if getattr(_STATE, "ctx", None) is not None:
        raise TraceError("ember.train_step was called inside a trace")
    ctx = TraceContext(name or _graph_name(module))
    ctx.updates = {}
    tensors = [Tensor(ctx.builder.input(_example_type(x, i), f"batch{i}"), ctx)
               for i, x in enumerate(example_inputs)]
    names = _register_params(module, ctx, as_inputs=True, buffers=True)
    by_name = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    _STATE.ctx = ctx
    try:
        outputs, _ = _collect_outputs(fn(*tensors), ctx)
    finally:
        _STATE.ctx = None
    names_of = {id(by_name[n]): n for n in names}
    updated = [(names_of[key], buffer) for key, (buffer, _) in ctx.updates.items()]
    values = [t.value for t in outputs] + [t.value for _, t in ctx.updates.values()]
    graph = ctx.builder.build(values)
    try:
        verify(graph)
    except EmberError as err:
        raise TraceError(f"internal error: the traced graph does not verify: {err}") from err
    return TrainTrace(graph, [(n, by_name[n]) for n in names], updated, len(outputs),
                      ctx.dropout_keys)


def traced_value(tensor: Tensor) -> Value:
    return tensor.value
