"""TensorType printing and sizes, DType <-> numpy mapping and its errors."""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest

from ember.ir.types import DType, TensorType, boolean, check_layout, f32, f64, i32, i64

NUMPY_OF = {DType.F16: np.float16, DType.BF16: ml_dtypes.bfloat16, DType.F32: np.float32,
            DType.F64: np.float64, DType.I8: np.int8, DType.I16: np.int16, DType.I32: np.int32,
            DType.I64: np.int64, DType.U8: np.uint8, DType.U16: np.uint16,
            DType.U32: np.uint32, DType.U64: np.uint64, DType.BOOL: np.bool_}


@pytest.mark.parametrize(("type_", "text"), [
    (f32[8, 256], "f32[8,256]"),
    (f32.scalar(), "f32[]"),
    (f64[()], "f64[]"),
    (i32[0, 3], "i32[0,3]"),
    (i64[5], "i64[5]"),
    (boolean[2, 1], "bool[2,1]"),
    (TensorType(DType.F32, (1, 2, 3, 4), "nhwc"), "f32[1,2,3,4]{nhwc}"),
    (TensorType(DType.F32, (1, 8, 56, 56, 8), "nchw8c"), "f32[1,8,56,56,8]{nchw8c}"),
])
def test_type_prints(type_: TensorType, text: str) -> None:
    assert str(type_) == text


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (2, 3), (1, 1, 1, 7)])
@pytest.mark.parametrize("dtype", list(DType))
def test_size_and_nbytes_agree_with_numpy(dtype: DType, shape: tuple[int, ...]) -> None:
    reference = np.zeros(shape, NUMPY_OF[dtype])
    type_ = TensorType(dtype, shape)
    assert type_.size == reference.size
    assert type_.nbytes == reference.nbytes
    assert type_.ndim == reference.ndim
    assert TensorType.of(reference) == type_


def test_layout_is_part_of_the_type() -> None:
    plain = f32[1, 2, 3, 4]
    nhwc = TensorType(DType.F32, (1, 2, 3, 4), "nhwc")
    assert plain != nhwc and str(plain) != str(nhwc)
    assert nhwc == TensorType(DType.F32, (1, 2, 3, 4), "nhwc")
    assert hash(nhwc) == hash(TensorType(DType.F32, (1, 2, 3, 4), "nhwc"))
    assert nhwc.with_shape((4, 3, 2, 1)).layout == "nhwc"
    assert nhwc.with_dtype(DType.F64) == TensorType(DType.F64, (1, 2, 3, 4), "nhwc")


def test_fields_are_normalized() -> None:
    """A dtype name and a list of numpy integers make the same type as DType and ints."""
    type_ = TensorType("f32", [np.int64(2), 3])  # type: ignore[arg-type]
    assert type_ == f32[2, 3] and hash(type_) == hash(f32[2, 3])
    assert type_.shape == (2, 3) and all(type(d) is int for d in type_.shape)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: TensorType("f8", (2,)), "unknown dtype 'f8'"),  # type: ignore[arg-type]
    (lambda: TensorType(DType.F32, (2, -1)), "shape [2, -1] has a negative dimension"),
    (lambda: TensorType(DType.F32, (2,), "nchw"), "unknown layout 'nchw'"),
])
def test_bad_types_are_rejected(make: Callable[[], TensorType], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        make()


@pytest.mark.parametrize("layout", ["", "nhwc", "nchw8c", "nchw16c"])
def test_known_layouts(layout: str) -> None:
    assert check_layout(layout) == layout


@pytest.mark.parametrize(("dtype", "numpy_type"), list(NUMPY_OF.items()))
def test_dtype_numpy_mapping(dtype: DType, numpy_type: type) -> None:
    assert dtype.numpy == np.dtype(numpy_type)
    assert dtype.itemsize == np.dtype(numpy_type).itemsize
    assert DType.from_numpy(numpy_type) is dtype
    assert DType.from_numpy(np.dtype(numpy_type).name) is dtype
    assert str(dtype) == dtype.value


def test_dtype_kinds() -> None:
    assert [d for d in DType if d.is_float] == [DType.F16, DType.BF16, DType.F32, DType.F64]
    assert [d for d in DType if d.is_int] == [DType.I8, DType.I16, DType.I32, DType.I64,
                                              DType.U8, DType.U16, DType.U32, DType.U64]
    assert [d for d in DType if d.is_unsigned] == [DType.U8, DType.U16, DType.U32, DType.U64]
    assert DType.U64.int_range == (0, 2**64 - 1) and DType.I8.int_range == (-128, 127)


def test_non_native_byte_order_maps_to_the_same_dtype() -> None:
    swapped = np.dtype(np.float32).newbyteorder("S")
    assert DType.from_numpy(swapped) is DType.F32


@pytest.mark.parametrize("unsupported", [np.complex64, np.longdouble, np.str_, object])
def test_unsupported_numpy_dtype_names_it(unsupported: type) -> None:
    with pytest.raises(TypeError) as info:
        DType.from_numpy(unsupported)
    assert str(np.dtype(unsupported)) in str(info.value)
    assert "float16, float32, float64, int8, int16, int32, int64, uint8" in str(info.value)


def test_unsupported_array_type() -> None:
    with pytest.raises(TypeError, match="complex128"):
        TensorType.of(np.zeros(2, np.complex128))


def test_types_of_2_to_the_40_elements_or_more_are_shape_errors() -> None:
    from ember.errors import ShapeError
    from ember.ir.types import ELEMENT_LIMIT

    assert ELEMENT_LIMIT == 2**40
    assert TensorType(DType.F32, (2**20, 2**20 - 1)).size == 2**40 - 2**20  # just below
    for shape in [(2**20, 2**20), (2**40,), (0, 2**40), (0, 2**30, 2**30), (2**64,)]:
        with pytest.raises(ShapeError, match="is too large: a tensor has fewer than 2\\^40"):
            TensorType(DType.BOOL, shape)


def test_integer_attributes_beyond_i64_are_shape_errors() -> None:
    import ember
    from ember.ir.types import f32

    builder = ember.GraphBuilder("g")
    x = builder.input(f32[4], "x")
    with pytest.raises(ember.ShapeError, match="does not fit in i64"):
        builder.op("slice", x, starts=(2**63,), stops=(0,), steps=(1,))
