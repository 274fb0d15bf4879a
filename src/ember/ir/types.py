"""Element types and tensor types of the graph IR.

A `TensorType` prints as `f32[8,256]`, a scalar as `f32[]`, and a non-default layout as a suffix:
`f32[1,8,56,56,8]{nchw8c}`. The layout is part of the type, so two values with the same shape
but different layouts do not compare equal.

Sizes are bounded: the non-zero dimensions of a shape multiply to fewer than `ELEMENT_LIMIT`
(2^40) elements. Every element and byte offset (below 2^43) then fits the generated code's i64
index arithmetic with room to spare and lies well inside the 2^47-byte x86-64 user address
space. A larger type is rejected where it is made (ShapeError; the parser and the tracer turn
it into an IRParseError or a TraceError).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ember.errors import ShapeError

ELEMENT_LIMIT = 2**40  # a tensor has fewer elements than this (see the module docstring)

class DType(str, Enum):
    """The element types of Ember tensors."""

    F32 = "f32"
    F64 = "f64"
    I32 = "i32"
    I64 = "i64"
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(_TO_NUMPY[self])

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.F64)

    @property
    def is_int(self) -> bool:
        return self in (DType.I32, DType.I64)

    @staticmethod
    def from_numpy(dtype: object) -> DType:
        """The DType of a numpy dtype (or anything `np.dtype` accepts); TypeError if none."""
        numpy_dtype = np.dtype(dtype)  # type: ignore[call-overload]
        # NOTE: byte order is a property of the array, not of the element type.
        found = _FROM_NUMPY.get(numpy_dtype.newbyteorder("="))
        if found is None:
            raise TypeError(f"numpy dtype {numpy_dtype} has no Ember dtype (supported: "
                            "float32, float64, int32, int64, bool)")
        return found

    def __str__(self) -> str:
        return self.value


_TO_NUMPY = {
    DType.F32: np.float32,
    DType.F64: np.float64,
    DType.I32: np.int32,
    DType.I64: np.int64,
    DType.BOOL: np.bool_,
}
_FROM_NUMPY = {np.dtype(v): k for k, v in _TO_NUMPY.items()}

# Layout names: "" is the default (row-major, logical order) and is never printed. Blocked
# channel layouts are written like "nchw8c"; "nhwc" is channels-last.
_LAYOUT_RE = re.compile(r"^(|nhwc|nchw[0-9]+c)$")


def check_layout(layout: str) -> str:
    """Return `layout` if it is a known layout name, else raise ValueError."""
    if not _LAYOUT_RE.match(layout):
        raise ValueError(f"unknown layout {layout!r} (expected nhwc or nchw<N>c)")
    return layout


def check_size(shape: tuple[int, ...]) -> None:
    """ShapeError unless the non-zero dimensions of `shape` multiply to < ELEMENT_LIMIT."""
    count = 1
    for dim in shape:
        count *= dim or 1
        if count >= ELEMENT_LIMIT:
            raise ShapeError(f"shape {list(shape)} is too large: a tensor has fewer than 2^40 "
                             f"elements ({ELEMENT_LIMIT})")


@dataclass(frozen=True, slots=True)
class TensorType:
    """The static type of a value: element type, shape, and memory layout."""

    dtype: DType
    shape: tuple[int, ...]
    layout: str = ""  # "" is row-major in logical dimension order

    def __post_init__(self) -> None:
        # Accept "f32" for DType.F32 and numpy integers or lists for the shape, so every
        # TensorType holds exactly a DType, a tuple of Python ints and a known layout.
        if not isinstance(self.dtype, DType):
            try:
                object.__setattr__(self, "dtype", DType(self.dtype))
            except ValueError:
                raise ValueError(f"unknown dtype {self.dtype!r} (expected one of "
                                 f"{', '.join(d.value for d in DType)})") from None
        shape = tuple(int(d) for d in self.shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"shape {list(shape)} has a negative dimension")
        check_size(shape)
        object.__setattr__(self, "shape", shape)
        check_layout(self.layout)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        return TensorType(self.dtype, tuple(shape), self.layout)

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape, self.layout)

    def __str__(self) -> str:  # f32[8,256]  or  f32[1,8,56,56,8]{nchw8c}
        dims = ",".join(str(d) for d in self.shape)
        suffix = "{" + self.layout + "}" if self.layout else ""
        return f"{self.dtype.value}[{dims}]{suffix}"

    @staticmethod
    def of(array: np.ndarray) -> TensorType:
        """The type of a numpy array."""
        return TensorType(DType.from_numpy(array.dtype), tuple(int(d) for d in array.shape))


class _TypeShorthand:
    """`f32[8, 784]` is shorthand for `TensorType(DType.F32, (8, 784))`."""

    def __init__(self, dtype: DType) -> None:
        self.dtype = dtype

    def __getitem__(self, dims: int | tuple[int, ...]) -> TensorType:
        shape = dims if isinstance(dims, tuple) else (dims,)
        return TensorType(self.dtype, tuple(int(d) for d in shape))

    def scalar(self) -> TensorType:
        return TensorType(self.dtype, ())


f32 = _TypeShorthand(DType.F32)
f64 = _TypeShorthand(DType.F64)
i32 = _TypeShorthand(DType.I32)
i64 = _TypeShorthand(DType.I64)
boolean = _TypeShorthand(DType.BOOL)
