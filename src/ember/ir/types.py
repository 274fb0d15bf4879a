"""Element types and tensor types of the graph IR.

A `TensorType` prints as `f32[8,256]`, a scalar as `f32[]`, and a non-default layout as a suffix:
`f32[1,8,56,56,8]{nchw8c}`. The layout is part of the type, so two values with the same shape
but different layouts do not compare equal.

Element types: floats f16 (IEEE half), bf16 (bfloat16), f32, f64; signed integers i8, i16, i32,
i64; unsigned integers u8, u16, u32, u64; and bool. Integer arithmetic wraps around as numpy's
does. f16 and bf16 are storage types: compiled code computes with them in f32 and rounds to
nearest-even on every store, and numpy's float16 (ml_dtypes' bfloat16, an optional import made
only when a bf16 value is met) is their reference.

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

from ember.errors import ShapeError, UnsupportedError

ELEMENT_LIMIT = 2**40  # a tensor has fewer elements than this (see the module docstring)

class DType(str, Enum):
    """The element types of Ember tensors."""

    F16 = "f16"
    BF16 = "bf16"
    F32 = "f32"
    F64 = "f64"
    I8 = "i8"
    I16 = "i16"
    I32 = "i32"
    I64 = "i64"
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype:
        if self is DType.BF16:
            return bfloat16()
        return np.dtype(_TO_NUMPY[self])

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def bits(self) -> int:
        """Bits of one element (8 for bool, which is stored as a byte)."""
        return 8 * _ITEMSIZE[self]

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_int(self) -> bool:
        """Signed or unsigned integer (not bool)."""
        return self in _SIGNED or self in _UNSIGNED

    @property
    def is_signed(self) -> bool:
        """A signed integer type."""
        return self in _SIGNED

    @property
    def is_unsigned(self) -> bool:
        """An unsigned integer type."""
        return self in _UNSIGNED

    @property
    def is_narrow_float(self) -> bool:
        """f16 or bf16: stored narrow, computed in f32."""
        return self in (DType.F16, DType.BF16)

    @property
    def int_range(self) -> tuple[int, int]:
        """The smallest and largest value of an integer type (0 and 1 for bool)."""
        if self is DType.BOOL:
            return 0, 1
        if self in _UNSIGNED:
            return 0, 2**self.bits - 1
        if self in _SIGNED:
            return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        raise TypeError(f"{self} is not an integer type")

    @staticmethod
    def from_numpy(dtype: object) -> DType:
        """The DType of a numpy dtype (or anything `np.dtype` accepts); TypeError if none."""
        numpy_dtype = np.dtype(dtype)  # type: ignore[call-overload]
        # NOTE: byte order is a property of the array, not of the element type.
        found = _FROM_NUMPY.get(numpy_dtype.newbyteorder("="))
        if found is None and numpy_dtype.name == "bfloat16" and numpy_dtype == bfloat16():
            found = DType.BF16
        if found is None:
            raise TypeError(f"numpy dtype {numpy_dtype} has no Ember dtype (supported: "
                            f"{', '.join(_NUMPY_NAMES)})")
        return found

    def __str__(self) -> str:
        return self.value


_TO_NUMPY = {
    DType.F16: np.float16,
    DType.F32: np.float32,
    DType.F64: np.float64,
    DType.I8: np.int8,
    DType.I16: np.int16,
    DType.I32: np.int32,
    DType.I64: np.int64,
    DType.U8: np.uint8,
    DType.U16: np.uint16,
    DType.U32: np.uint32,
    DType.U64: np.uint64,
    DType.BOOL: np.bool_,
}
_FROM_NUMPY = {np.dtype(v): k for k, v in _TO_NUMPY.items()}
_NUMPY_NAMES = [np.dtype(v).name for v in _TO_NUMPY.values()] + ["bfloat16 (ml_dtypes)"]
_ITEMSIZE = {**{k: np.dtype(v).itemsize for k, v in _TO_NUMPY.items()}, DType.BF16: 2}
_FLOATS = frozenset({DType.F16, DType.BF16, DType.F32, DType.F64})
_SIGNED = frozenset({DType.I8, DType.I16, DType.I32, DType.I64})
_UNSIGNED = frozenset({DType.U8, DType.U16, DType.U32, DType.U64})


def bfloat16() -> np.dtype:
    """numpy's dtype for bf16, from the optional `ml_dtypes` package (which onnx depends on);
    UnsupportedError when it is not installed."""
    try:
        import ml_dtypes
    except ImportError:
        raise UnsupportedError("bf16 values need the ml_dtypes package (pip install "
                               "ml_dtypes): numpy has no bfloat16") from None
    return np.dtype(ml_dtypes.bfloat16)


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


f16 = _TypeShorthand(DType.F16)
bf16 = _TypeShorthand(DType.BF16)
f32 = _TypeShorthand(DType.F32)
f64 = _TypeShorthand(DType.F64)
i32 = _TypeShorthand(DType.I32)
i64 = _TypeShorthand(DType.I64)
i8 = _TypeShorthand(DType.I8)
i16 = _TypeShorthand(DType.I16)
u8 = _TypeShorthand(DType.U8)
u16 = _TypeShorthand(DType.U16)
u32 = _TypeShorthand(DType.U32)
u64 = _TypeShorthand(DType.U64)
boolean = _TypeShorthand(DType.BOOL)
