"""Indexing traced tensors follows numpy exactly: ints, slices, None, ... and one integer array.

Every result is compared with numpy indexing the same array with the same key, at every opt
level; bad keys raise a TraceError naming the shape and the user's line.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ember

OPT_LEVELS = (0, 1, 2, 3)


def random_key(rng: np.random.Generator, shape: tuple[int, ...], arrays: bool) -> tuple:
    """A random valid numpy index for `shape`: ints (negative too), slices with any bounds and
    steps, None, at most one ellipsis and (when `arrays`) at most one integer list."""
    have_array = False

    def item(axis: int) -> object:
        nonlocal have_array
        size = shape[axis]
        choice = rng.random()
        if choice < 0.3:
            return int(rng.integers(-size, size))
        if choice < 0.45 and arrays and not have_array:
            have_array = True
            return [int(i) for i in rng.integers(-size, size, int(rng.integers(1, 4)))]

        def bound() -> int | None:
            return None if rng.random() < 0.3 else int(rng.integers(-size - 3, size + 4))

        step = [None, 1, 2, 3, -1, -2, -3][int(rng.integers(0, 7))]
        return slice(bound(), bound(), step)

    rank = len(shape)
    if rng.random() < 0.3:  # an ellipsis between the first `before` and the last `after` axes
        before = int(rng.integers(0, rank + 1))
        after = int(rng.integers(0, rank - before + 1))
        items = [item(a) for a in range(before)] + [Ellipsis]
        items += [item(a) for a in range(rank - after, rank)]
    else:  # the first `count` axes; numpy indexes the rest with full slices
        items = [item(a) for a in range(int(rng.integers(0, rank + 1)))]
    for _ in range(int(rng.integers(0, 3))):
        items.insert(int(rng.integers(0, len(items) + 1)), None)
    return tuple(items)


def random_shape(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(1, 6, int(rng.integers(0, 5))))  # rank 0 too


@settings(max_examples=300, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), arrays=st.booleans())
def test_traced_index_shape_and_values_match_numpy(seed: int, arrays: bool) -> None:
    rng = np.random.default_rng(seed)
    shape = random_shape(rng)
    key = random_key(rng, shape, arrays)
    a = rng.standard_normal(shape).astype(np.float32)
    graph = ember.trace(lambda x: x[key], a)
    assert graph.outputs[0].type.shape == a[key].shape, key
    np.testing.assert_array_equal(ember.interpret(graph, a)[0], a[key])


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_many_random_indexes_match_numpy_at_every_level(opt_level: int) -> None:
    # One executable with many outputs, so every level sees every key with one compile.
    rng = np.random.default_rng(9)
    a = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    keys = [random_key(rng, a.shape, arrays=i % 3 == 0) for i in range(40)]
    exe = ember.compile(lambda x: tuple(x[k] + 0.0 for k in keys), a, opt_level=opt_level)
    for key, got in zip(keys, exe(a), strict=True):
        assert got.shape == a[key].shape, key
        np.testing.assert_array_equal(got, a[key], err_msg=str(key))


NUMPY_KEYS = [
    (1, None),                                   # the new axis lands after the removed one
    (None, 1),
    (-1, None, slice(None, None, -1)),
    (0, None, 1, None),
    (0, None, None, Ellipsis, None),             # more new axes than removed ones
    (Ellipsis, None),
    (None, Ellipsis, -2),
    (slice(None, None, -1), None, 0),
    (slice(-100, 100), slice(None, None, -3)),   # out-of-range bounds clip like numpy
    (slice(4, 0, -2),),
    (slice(3, 1),),                              # empty
    (np.int64(-2), np.array(3)),                 # numpy integers and 0-d arrays are ints
    (),
    (0, slice(None), [1, 2]),                    # advanced indices apart: array dims first
    (slice(None), 0, [1, 2]),                    # side by side: in place
    ([1, 0], None, 0),
    (0, [3, -1], None),
    (Ellipsis, 0, [2, 0, 1]),
    (np.array([[1, 0], [0, 1]]), None, 2),
]


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_documented_numpy_index_rules_hold_at_every_level(opt_level: int) -> None:
    a = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4) - 7.5
    exe = ember.compile(lambda x: tuple(x[k] * 1.0 for k in NUMPY_KEYS), a, opt_level=opt_level)
    for key, got in zip(NUMPY_KEYS, exe(a), strict=True):
        assert got.shape == a[key].shape, key
        np.testing.assert_array_equal(got, a[key], err_msg=str(key))


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_traced_integer_tensor_index_matches_numpy(opt_level: int) -> None:
    a = np.arange(30, dtype=np.float32).reshape(5, 6)
    rows = np.array([4, -5, 2], dtype=np.int64)  # negative indices count from the end
    one = np.array(3, dtype=np.int64)

    def fn(x, i, j):
        return x[i, 1:], x[None, :, i], x[j], x[1, j]

    exe = ember.compile(fn, a, rows, one, opt_level=opt_level)
    expected = (a[rows, 1:], a[None, :, rows], a[one], a[1, one])
    for got, want in zip(exe(a, rows, one), expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ((2, 0), "index 2 is out of bounds for axis 0 with size 2 (tensor of shape [2, 5])"),
        ((0, -6), "index -6 is out of bounds for axis 1 with size 5 (tensor of shape [2, 5])"),
        ((slice(None), [0, 5]), "index 5 is out of bounds for axis 1 with size 5"),
        ((0, 0, 0), "too many indices (3) for a tensor of shape [2, 5]"),
        ((Ellipsis, 0, Ellipsis), "single ellipsis"),
        ((slice(None, None, 0),), "slice step cannot be zero"),
        ((1.5,), "unsupported index 1.5"),
        (([True, False],), "boolean-mask indexing"),
    ],
)
def test_bad_index_is_a_trace_error_naming_shape_and_line(key: tuple, message: str) -> None:
    a = np.zeros((2, 5), np.float32)
    with pytest.raises(ember.TraceError) as info:
        ember.trace(lambda x: x[key], a)  # the line the error names
    text = str(info.value)
    assert message in text
    assert f"{__file__}:" in text


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_two_d_index_array_with_a_traced_int_matches_numpy(opt_level: int) -> None:
    # The 2-D index adds an axis: the gather of the traced 0-d index after it must see that.
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    grid = np.array([[0, 2], [1, -1]], dtype=np.int64)
    last = np.array(-1, dtype=np.int64)

    def fn(x, i, j):
        return x[i, j] * 1.0, x[i, :, j] * 1.0, x[j, i] * 1.0, x[[]] * 1.0

    exe = ember.compile(fn, a, grid, last, opt_level=opt_level)
    expected = (a[grid, last], a[grid, :, last], a[last, grid], a[[]])
    for got, want in zip(exe(a, grid, last), expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
