"""Shape ops through the LLVM backend, against numpy indexing: larger and odd shapes, every
dtype, transposes big enough to be tiled, negative and empty slices, every pad mode and zero
widths, gathers with i32 and i64 indices and the run-time error of an index out of range."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ember
from ember.ir.graph import GraphBuilder
from ember.ir.types import DType, TensorType
from ember.lower.program import lower_graph
from ember.runtime import compile_native

DTYPES = [DType.F32, DType.F64, DType.I32, DType.I64, DType.BOOL]


def array(shape: tuple[int, ...], dtype: DType, seed: int = 0) -> np.ndarray:
    """Distinct-looking values of `dtype` (bools about half true)."""
    rng = np.random.default_rng(seed)
    if dtype is DType.BOOL:
        return rng.random(shape) < 0.5
    if dtype.is_float:
        return rng.standard_normal(shape).astype(dtype.numpy)
    return rng.integers(-1000, 1000, shape).astype(dtype.numpy)


def run(op: str, inputs: list[np.ndarray], **attrs: object) -> tuple[np.ndarray, ...]:
    """Build a one-node graph of `op` and run it natively."""
    builder = GraphBuilder(op)
    values = [builder.input(TensorType(DType.from_numpy(a.dtype), a.shape), f"x{i}")
              for i, a in enumerate(inputs)]
    result = getattr(builder, op)(*values, **attrs)
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    return compile_native(builder.build(outputs))(*inputs)


def kernel_text(op: str, types: list[TensorType], **attrs: object) -> str:
    builder = GraphBuilder(op)
    values = [builder.input(t, f"x{i}") for i, t in enumerate(types)]
    result = getattr(builder, op)(*values, **attrs)
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    return str(lower_graph(builder.build(outputs)))


def same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Copies are exact: same shape, dtype and bits."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


# -- flat copies --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.value)
def test_reshape_family_every_dtype(dtype: DType) -> None:
    x = array((7, 1, 13, 3), dtype)
    same(run("reshape", [x], shape=(21, 13))[0], x.ravel().reshape(21, 13))
    same(run("flatten", [x], start_dim=1, end_dim=2)[0], x.ravel().reshape(7, 13, 3))
    same(run("squeeze", [x], axes=(1,))[0], x[:, 0])
    same(run("expand_dims", [x], axes=(0, -1))[0], x[None, ..., None])


def test_reshape_is_one_contiguous_loop() -> None:
    text = kernel_text("reshape", [TensorType(DType.F32, (6, 35, 4))], shape=(30, 28))
    assert text.count("for (") == 1
    assert "i0 < 840" in text and "out0[i0] = in0[i0];" in text


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.value)
@pytest.mark.parametrize(("in_shape", "out_shape"), [
    ((3, 1, 5), (2, 3, 4, 5)),
    ((1,), (37,)),
    ((37, 1), (37, 19)),
    ((), (4, 3)),
    ((1, 1), (0, 5)),
])
def test_broadcast_to(dtype: DType, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
                      ) -> None:
    x = array(in_shape, dtype)
    same(run("broadcast_to", [x], shape=out_shape)[0], np.broadcast_to(x, out_shape).copy())


# -- transpose --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.value)
def test_transpose_large_odd_matrix_every_dtype(dtype: DType) -> None:
    x = array((67, 101), dtype)
    same(run("transpose", [x], perm=(1, 0))[0], np.ascontiguousarray(x.T))


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_transpose_every_permutation_of_rank_3(perm: tuple[int, ...]) -> None:
    x = array((5, 40, 33), DType.F32, seed=1)
    same(run("transpose", [x], perm=perm)[0], np.ascontiguousarray(np.transpose(x, perm)))


@pytest.mark.parametrize("perm", [(0, 3, 1, 2), (0, 2, 3, 1), (3, 2, 1, 0), (1, 0, 3, 2)])
def test_transpose_rank_4(perm: tuple[int, ...]) -> None:
    x = array((2, 35, 3, 48), DType.I64, seed=2)
    same(run("transpose", [x], perm=perm)[0], np.ascontiguousarray(np.transpose(x, perm)))


def test_transpose_of_a_big_matrix_is_tiled() -> None:
    text = kernel_text("transpose", [TensorType(DType.F32, (100, 70))], perm=(1, 0))
    # full 16 x 16 tiles, then remainders of 70 % 16 = 6 rows and 100 % 16 = 4 columns
    assert "< 16;" in text and "< 6;" in text and "< 4;" in text


def test_transpose_of_a_small_matrix_is_a_plain_nest() -> None:
    text = kernel_text("transpose", [TensorType(DType.F32, (3, 5))], perm=(1, 0))
    assert text.count("for (") == 2
    assert "out0[((i0 * 3) + i1)] = in0[(i0 + (i1 * 5))];" in text


# -- concat and split -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.value)
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_concat_three_pieces(dtype: DType, axis: int) -> None:
    shapes = [[4, 5, 6], [4, 5, 6], [4, 5, 6]]
    for position, extent in enumerate((3, 0, 7)):
        shapes[position][axis] = extent
    pieces = [array(tuple(s), dtype, seed=i) for i, s in enumerate(shapes)]
    same(run("concat", pieces, axis=axis)[0], np.concatenate(pieces, axis=axis))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.value)
@pytest.mark.parametrize(("axis", "sizes"), [(0, (2, 0, 9)), (1, (1, 6)), (-1, (5, 5, 1))])
def test_split(dtype: DType, axis: int, sizes: tuple[int, ...]) -> None:
    shape = [11, 7, 11]
    shape[axis] = sum(sizes)
    x = array(tuple(shape), dtype)
    outputs = run("split", [x], axis=axis, sizes=sizes)
    bounds = np.cumsum((0, *sizes))
    assert len(outputs) == len(sizes)
    for output, start, stop in zip(outputs, bounds[:-1], bounds[1:], strict=True):
        index = [slice(None)] * 3
        index[axis] = slice(int(start), int(stop))
        same(output, x[tuple(index)])


# -- slice -------------------------------------------------------------------------------------


def _range_take(x: np.ndarray, starts: tuple[int, ...], stops: tuple[int, ...],
                steps: tuple[int, ...]) -> np.ndarray:
    """x at every combination of range(start, stop, step) per dimension (np.ix_)."""
    ranges = [list(range(a, b, c)) for a, b, c in zip(starts, stops, steps, strict=True)]
    if any(not r for r in ranges):
        return np.zeros([len(r) for r in ranges], x.dtype)
    return x[np.ix_(*ranges)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.value)
@pytest.mark.parametrize(("starts", "stops", "steps"), [
    ((1, 0, 2), (9, 13, 17), (3, 1, 5)),  # strided
    ((8, 12, 16), (-1, -1, -1), (-1, -2, -3)),  # reversed through index 0
    ((8, 3, 0), (2, 3, 17), (-2, 1, 1)),  # an empty middle dimension
    ((0, 0, 0), (9, 13, 17), (1, 1, 1)),  # everything
    ((4, 12, 16), (5, 11, 15), (1, -1, -1)),  # one element
])
def test_slice(dtype: DType, starts: tuple[int, ...], stops: tuple[int, ...],
               steps: tuple[int, ...]) -> None:
    x = array((9, 13, 17), dtype)
    expected = _range_take(x, starts, stops, steps)
    same(run("slice", [x], starts=starts, stops=stops, steps=steps)[0], expected)


@st.composite
def _slices(draw: st.DrawFn) -> tuple[tuple[int, ...], list[tuple[int, int, int]]]:
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)))
    parts = []
    for size in shape:
        step = draw(st.sampled_from([-3, -2, -1, 1, 2, 3]))
        if size == 0:
            parts.append((0, 0, step))
            continue
        start = draw(st.integers(0, size - 1))
        stop = draw(st.integers(-1, size))
        if step > 0:
            stop = max(stop, 0)
        parts.append((start, stop, step))
    return shape, parts


@settings(max_examples=40, deadline=None, derandomize=True)
@given(_slices())
def test_slice_matches_python_ranges(case: tuple[tuple[int, ...], list[tuple[int, int, int]]]
                                     ) -> None:
    shape, parts = case
    x = array(shape, DType.I32, seed=3)
    starts, stops, steps = (tuple(p[k] for p in parts) for k in range(3))
    expected = _range_take(x, starts, stops, steps)
    same(run("slice", [x], starts=starts, stops=stops, steps=steps)[0], expected)


# -- pad ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.value)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", [(1, 0, 3, 2, 4, 0), (0, 0, 0, 0, 0, 0), (0, 2, 0, 0, 1, 5),
                                  (3, 3, 3, 3, 3, 3)])
def test_pad(dtype: DType, mode: str, pads: tuple[int, ...]) -> None:
    x = array((4, 5, 6), dtype)
    widths = list(zip(pads[:3], pads[3:], strict=True))
    if mode == "constant":
        expected = np.pad(x, widths, mode="constant", constant_values=dtype.numpy.type(2.75))
        actual = run("pad", [x], pads=pads, mode=mode, value=2.75)[0]
    else:
        expected = np.pad(x, widths, mode=mode)
        actual = run("pad", [x], pads=pads, mode=mode)[0]
    same(actual, expected)


def test_pad_constant_value_converts_like_numpy() -> None:
    x = array((3, 4), DType.I32)
    actual = run("pad", [x], pads=(1, 2, 2, 1), mode="constant", value=-2.75)[0]
    expected = np.full((6, 7), -2, np.int32)  # -2.75 truncated toward zero, as int32(-2.75)
    expected[1:4, 2:6] = x
    same(actual, expected)


def test_pad_of_an_empty_dimension_with_constant() -> None:
    x = np.zeros((0, 3), np.float64)
    same(run("pad", [x], pads=(2, 1, 1, 0), mode="constant", value=7.0)[0],
         np.full((3, 4), 7.0))


def test_pad_interior_is_a_contiguous_copy() -> None:
    text = kernel_text("pad", [TensorType(DType.F32, (3, 4))], pads=(1, 2, 0, 3),
                       mode="constant", value=1.5)
    assert "out0[(w0 + (2 + i2))] = in0[(r0 + i2)];" in text
    assert "= 1.5f;" in text and "} else {" in text


# -- gather ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.value)
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather(dtype: DType, index_dtype: type, axis: int) -> None:
    data = array((6, 7, 9), dtype)
    size = data.shape[axis]
    indices = np.random.default_rng(4).integers(-size, size, (3, 5)).astype(index_dtype)
    indices[0, :2] = (-size, size - 1)  # both ends of the range
    expected = np.take(data, indices.astype(np.int64) % size, axis=axis)
    same(run("gather", [data, indices], axis=axis)[0], expected)


def test_gather_embedding_rows() -> None:
    table = array((1000, 64), DType.F32)
    indices = np.random.default_rng(5).integers(0, 1000, 300).astype(np.int64)
    same(run("gather", [table, indices], axis=0)[0], table[indices])


@pytest.mark.parametrize("bad", [5, -6, 1 << 40], ids=["size", "below", "huge"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64], ids=["i32", "i64"])
def test_gather_index_out_of_range_raises(bad: int, index_dtype: type) -> None:
    if index_dtype is np.int32 and bad > np.iinfo(np.int32).max:
        bad = np.iinfo(np.int32).max
    data = array((3, 5), DType.F32)
    builder = GraphBuilder("g")
    x = builder.input(TensorType(DType.F32, (3, 5)), "x")
    i = builder.input(TensorType(DType.from_numpy(np.dtype(index_dtype)), (4,)), "i")
    native = compile_native(builder.build([builder.gather(x, i, axis=1)]))
    good = np.array([0, 4, -5, 2], index_dtype)
    same(native(data, good)[0], data[:, [0, 4, 0, 2]])
    with pytest.raises(ember.ExecutionError,
                       match=r"^gather: index out of range \[-5, 5\) for axis 1 of size 5"):
        native(data, np.array([0, bad, 1, 2], index_dtype))
    same(native(data, good)[0], data[:, [0, 4, 0, 2]])  # the next call is clean again


def test_gather_checks_indices_even_with_an_empty_result() -> None:
    data = np.zeros((0, 4), np.float32)
    with pytest.raises(ember.ExecutionError, match=r"for axis 1 of size 4"):
        run("gather", [data, np.array([4], np.int64)], axis=1)
    same(run("gather", [data, np.array([3, -4], np.int64)], axis=1)[0],
         np.zeros((0, 2), np.float32))
