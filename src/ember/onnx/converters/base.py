"""The converter registry and the context a converter works in.

A converter turns one ONNX node into Ember ops on traced tensors:

    @converter("Relu", versions=(6, 13, 14))
    def relu(node: NodeContext) -> Outputs:
        return [node.tensor(0).relu()]

`versions` are the ONNX operator versions (the schemas' `since_version`) the converter
implements. A model at opset N uses the version in effect there
(`onnx.defs.get_schema(op, N).since_version`); the converter accepts the node only if it
implements that version, so an opset in which the operator did not change is accepted and one
that changed it is refused by name.

It returns one entry per ONNX output: a traced `Tensor`, or a numpy array when the value is
known at import time (Shape, Constant, ConstantOfShape ...). Known values stay numpy until an op
needs them as a tensor, so shape computations never reach the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ember.errors import EmberError
from ember.frontend import tracer
from ember.frontend.tensor import Tensor
from ember.ir.attrs import Const
from ember.ir.types import DType

Output = Tensor | np.ndarray | None
Outputs = Sequence[Output]
ConvertFn = Callable[["NodeContext"], Outputs]

# The most bytes one value computed with numpy at import time may have; bigger known work
# (a large ConstantOfShape) stays in the graph as an op, or is an error where it cannot.
FOLD_BYTES = 64 * 2**20
# The most bytes one tensor of an imported model may have: a declared input, or any value a
# node makes.
TENSOR_BYTES = 2**32


def shape_bytes(shape: Sequence[int], dtype: Any) -> int:
    """The bytes of an array of `shape` (exact Python integers: no overflow)."""
    count = 1
    for dim in shape:
        count *= int(dim)
    return count * np.dtype(dtype).itemsize


def format_bytes(count: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.4g} {unit}"
    return f"{count} bytes"

# ONNX element types Ember has, and their numpy dtypes.
ONNX_DTYPES: dict[int, DType] = {
    onnx.TensorProto.FLOAT16: DType.F16,
    onnx.TensorProto.BFLOAT16: DType.BF16,
    onnx.TensorProto.FLOAT: DType.F32,
    onnx.TensorProto.DOUBLE: DType.F64,
    onnx.TensorProto.INT8: DType.I8,
    onnx.TensorProto.INT16: DType.I16,
    onnx.TensorProto.INT32: DType.I32,
    onnx.TensorProto.INT64: DType.I64,
    onnx.TensorProto.UINT8: DType.U8,
    onnx.TensorProto.UINT16: DType.U16,
    onnx.TensorProto.UINT32: DType.U32,
    onnx.TensorProto.UINT64: DType.U64,
    onnx.TensorProto.BOOL: DType.BOOL,
}


def onnx_dtype(elem_type: int, what: str) -> DType:
    """The Ember dtype of an ONNX element type; EmberError for one Ember lacks."""
    dtype = ONNX_DTYPES.get(elem_type)
    if dtype is None:
        known_types = onnx.TensorProto.DataType.values()
        name = (onnx.TensorProto.DataType.Name(elem_type) if elem_type in known_types
                else f"UNDEFINED ({elem_type})")
        known = ", ".join(onnx.TensorProto.DataType.Name(t) for t in ONNX_DTYPES)
        raise EmberError(f"{what}: ONNX element type {name} is not supported (supported: {known})")
    return dtype


class NeedsKnownValue(EmberError):
    """A converter needs the value of an ONNX value (`value_name`) at import time, and it is
    computed at run time. When that value is a graph input, `load(..., constants=...)` binds it."""

    def __init__(self, message: str, value_name: str) -> None:
        super().__init__(message)
        self.value_name = value_name


@dataclass(frozen=True)
class Converter:
    """One ONNX operator: its conversion function and the operator versions it implements."""

    op_type: str
    convert: ConvertFn
    versions: tuple[int, ...]  # the schema since_versions it implements, ascending
    doc: str = ""

    def version_at(self, opset: int) -> int | None:
        """The operator's version in effect at `opset`; None when ONNX has none by then."""
        try:
            return int(onnx.defs.get_schema(self.op_type, opset, "").since_version)
        except onnx.defs.SchemaError:
            return None

    def supports(self, opset: int) -> bool:
        return self.version_at(opset) in self.versions

    def refusal(self, opset: int) -> str:
        """Why a node at `opset` is refused: `Pad at opset 24 (version 24): Ember implements
        versions 13, 18, 19, 21`."""
        implemented = ", ".join(str(v) for v in self.versions)
        version = self.version_at(opset)
        if version is None:
            return (f"{self.op_type} at opset {opset}: ONNX has no {self.op_type} there "
                    f"(Ember implements version{'s' if len(self.versions) > 1 else ''} "
                    f"{implemented})")
        return (f"{self.op_type} at opset {opset} (version {version}): Ember implements "
                f"version{'s' if len(self.versions) > 1 else ''} {implemented}")


CONVERTERS: dict[str, Converter] = {}


class ByFunction(Exception):
    """Raised by a converter for a form of its node it leaves to the operator's ONNX function
    body (LayerNormalization's Mean and InvStdDev outputs ...)."""


def converter(*op_types: str, versions: tuple[int, ...]) -> Callable[[ConvertFn], ConvertFn]:
    """Register a function as the converter of one or more ONNX op types, implementing the
    given operator versions (schema since_versions)."""

    def register(fn: ConvertFn) -> ConvertFn:
        for op_type in op_types:
            if op_type in CONVERTERS:
                raise ValueError(f"ONNX op {op_type!r} already has a converter")
            doc = (fn.__doc__ or "").strip().splitlines()
            CONVERTERS[op_type] = Converter(op_type, fn, tuple(sorted(versions)),
                                            doc[0] if doc else "")
        return fn

    return register


@dataclass
class Slot:
    """What the importer knows about one ONNX value: a traced tensor, a numpy value, or both."""

    name: str
    tensor: Tensor | None = None
    known: np.ndarray | None = None
    const_name: str = ""  # initializers keep their name as a named constant
    # the IR constant of `known`, made once per model (an initializer's weights are copied
    # and hashed once, not at every trace)
    const: Callable[[], Const] | None = None

    def as_tensor(self) -> Tensor:
        if self.tensor is None:
            assert self.known is not None, f"value {self.name!r} has neither tensor nor data"
            if self.const is not None:
                self.tensor = tracer.current().constant(self.const(), self.const_name)
            else:
                self.tensor = materialize(self.known, self.const_name)
        return self.tensor


def materialize(array: np.ndarray, name: str = "") -> Tensor:
    """A known numpy value as a constant of the active trace (named when `name` is set)."""
    array = np.asarray(array)
    try:
        DType.from_numpy(array.dtype)
    except TypeError as err:
        raise EmberError(f"constant {name or '(unnamed)'}: {err}") from None
    return tracer.current().constant(array, name)


@dataclass
class NodeContext:
    """One ONNX node being converted: its attributes, its inputs and the model's opset."""

    node: onnx.NodeProto
    opset: int
    slots: list[Slot | None]  # None for an omitted optional input
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attribute in self.node.attribute:
            try:
                self.attrs[attribute.name] = _attribute_value(attribute)
            except (TypeError, ValueError) as err:  # a tensor whose data does not fit its dims
                raise self.error(f"attribute {attribute.name!r} cannot be read: {err}") from None

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def label(self) -> str:
        """`Conv 'conv1'`: how errors name this node."""
        return f"{self.node.op_type} {self.node.name!r}" if self.node.name else self.node.op_type

    @property
    def input_count(self) -> int:
        return len(self.slots)

    @property
    def output_count(self) -> int:
        return len(self.node.output)

    def output_used(self, index: int) -> bool:
        return index < len(self.node.output) and bool(self.node.output[index])

    def has(self, index: int) -> bool:
        """Whether optional input `index` is given."""
        return index < len(self.slots) and self.slots[index] is not None

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def tensor(self, index: int) -> Tensor:
        """Input `index` as a traced tensor (a known value becomes a constant)."""
        slot = self._slot(index)
        return slot.as_tensor()

    def optional_tensor(self, index: int) -> Tensor | None:
        return self.tensor(index) if self.has(index) else None

    def known(self, index: int) -> np.ndarray | None:
        """Input `index` as a numpy value when it is known at import time, else None."""
        if not self.has(index):
            return None
        return self._slot(index).known

    def static(self, index: int, what: str) -> np.ndarray:
        """Input `index`, which must be known at import time (a shape, axes, pads ...)."""
        value = self.known(index)
        if value is None:
            raise NeedsKnownValue(
                f"{self.label}: input {index} ({what}) must be a constant known at import time; "
                "Ember graphs have static shapes", self._slot(index).name)
        return value

    def static_ints(self, index: int, what: str) -> list[int]:
        return [int(v) for v in self.static(index, what).reshape(-1)]

    def shape(self, index: int) -> tuple[int, ...]:
        slot = self._slot(index)
        if slot.known is not None:
            return tuple(slot.known.shape)
        return slot.as_tensor().shape

    def emit(self, op: str, *inputs: Tensor, **attrs: Any) -> Any:
        return tracer.current().emit(op, *inputs, **attrs)

    def full(self, shape: Sequence[int], value: Any, dtype: Any) -> Output:
        """A tensor of `shape` filled with `value`: known when it is at most FOLD_BYTES, else
        a broadcast in the graph."""
        shape = self.check_dims(shape, dtype, "shape")
        if shape_bytes(shape, dtype) <= FOLD_BYTES:
            return np.full(shape, value, dtype=dtype)
        scalar = materialize(np.asarray(value, dtype=dtype))
        return self.emit("broadcast_to", scalar, shape=shape)

    def check_dims(self, dims: Sequence[int], dtype: Any, what: str) -> tuple[int, ...]:
        """`dims` as the shape of a tensor of `dtype`: non-negative sizes, at most
        TENSOR_BYTES in all; else an EmberError naming this node."""
        dims = tuple(int(d) for d in dims)
        if any(d < 0 for d in dims):
            raise self.error(f"{what} {list(dims)} has a negative dimension")
        size = shape_bytes(dims, dtype)
        if size > TENSOR_BYTES:
            raise self.error(f"{what} {list(dims)} makes a tensor of {format_bytes(size)}, "
                             f"beyond the {format_bytes(TENSOR_BYTES)} one tensor of an "
                             "imported model may have")
        return dims

    def const(self, array: Any, like: Tensor | None = None) -> Tensor:
        """An unnamed constant, of `like`'s dtype when given."""
        array = np.asarray(array, dtype=like.dtype if like is not None else None)
        return materialize(array)

    def error(self, message: str) -> EmberError:
        return EmberError(f"{self.label}: {message}")

    def _slot(self, index: int) -> Slot:
        if not self.has(index):
            raise self.error(f"input {index} is required but missing")
        slot = self.slots[index]
        assert slot is not None
        return slot


def _attribute_value(attribute: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    return value


def normalize_axis(axis: int, rank: int, node: NodeContext) -> int:
    """A non-negative axis; EmberError naming the node when it is out of range."""
    if not -rank <= axis < max(rank, 1):
        raise node.error(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0
