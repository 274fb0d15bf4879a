"""Attrs are immutable, hashable and compare by kind and content (a sound CSE key); Const is a
frozen copy of the user's array, equal by content."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.ir.attrs import Attrs, Const
from ember.ir.parser import parse_graph
from ember.ir.printer import format_attr, print_graph
from ember.ir.types import f32

scalars = st.one_of(st.booleans(), st.integers(-(2**40), 2**40),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)
attr_dicts = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), values,
                             max_size=4)


@settings(max_examples=100, deadline=None)
@given(attr_dicts)
def test_equal_attrs_hash_equal_and_print_equal(items: dict) -> None:
    forward = Attrs(items)
    backward = Attrs(dict(reversed(list(items.items()))))
    assert forward == backward and hash(forward) == hash(backward)
    assert list(forward) == sorted(items)
    reprinted = Attrs({k: v for k, v in forward.items()})
    assert reprinted == forward and hash(reprinted) == hash(forward)


@settings(max_examples=100, deadline=None)
@given(attr_dicts.filter(bool))
def test_attrs_survive_printing(items: dict) -> None:
    """Printing an attribute and parsing it back gives an equal Attrs (the CSE key holds)."""
    from ember.ir.graph import Graph, Node, Value

    x = Value(f32[1], "x")
    node = Node("custom", (x,), (Value(f32[1]),), Attrs(items))
    reparsed = parse_graph(print_graph(Graph("g", (x,), (node,), node.outputs))).nodes[0].attrs
    assert reparsed == node.attrs and hash(reparsed) == hash(node.attrs)


@pytest.mark.parametrize(("first", "second"), [
    (1, 1.0), (1, True), (0, False), (0.0, -0.0), ((1, 2), (1.0, 2.0)), ("1", 1),
])
def test_values_that_print_differently_are_different(first: object, second: object) -> None:
    assert format_attr(first) != format_attr(second)  # type: ignore[arg-type]
    assert Attrs(a=first) != Attrs(a=second)  # type: ignore[arg-type]


def test_nan_attrs_are_equal() -> None:
    first, second = Attrs(alpha=float("nan")), Attrs(alpha=float("-nan"))
    assert first == second and hash(first) == hash(second)


def test_lists_become_tuples() -> None:
    attrs = Attrs(perm=[1, 0], nested=[[1], []])
    assert attrs["perm"] == (1, 0) and attrs["nested"] == ((1,), ())
    assert hash(attrs) == hash(Attrs(perm=(1, 0), nested=((1,), ())))


def test_attrs_is_an_immutable_mapping() -> None:
    attrs = Attrs({"b": 2}, a=1)
    assert dict(attrs) == {"a": 1, "b": 2} and len(attrs) == 2 and "a" in attrs
    with pytest.raises(KeyError):
        attrs["c"]
    with pytest.raises(TypeError):
        attrs["a"] = 3  # type: ignore[index]
    assert attrs.replace(a=5) == Attrs(a=5, b=2) and attrs == Attrs(a=1, b=2)
    assert attrs.without("a") == Attrs(b=2)
    assert attrs == {"a": 1, "b": 2}


def test_const_equal_by_content() -> None:
    first = Const(np.array([1.0, 2.0], np.float32))
    second = Const(np.array([1.0, 2.0], np.float32))
    assert first == second and hash(first) == hash(second)
    assert Attrs(value=first) == Attrs(value=second)
    assert Const(np.array([1.0, 2.0], np.float64)) != first  # dtype matters
    assert Const(np.array([[1.0, 2.0]], np.float32)) != first  # shape matters
    assert Const(np.array([1.0, 3.0], np.float32)) != first
    assert Const(np.array([0.0], np.float32)) != Const(np.array([-0.0], np.float32))
    assert Const(np.array([np.nan], np.float32)) == Const(np.array([np.nan], np.float32))
    big_endian = np.array([1.0, 2.0], dtype=">f4")
    assert Const(big_endian) == first


def test_const_copies_and_freezes_the_users_array() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    original = array.copy()
    const = Const(array)
    assert array.flags.writeable
    np.testing.assert_array_equal(array, original)
    assert const.data is not None and not const.data.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        const.data[0, 0] = 100
    array[0, 0] = -1  # the user's later writes do not reach the constant
    assert const.data[0, 0] == 0
    assert const.type == f32[2, 3] and const.shape == (2, 3)


def test_const_of_a_non_contiguous_view() -> None:
    base = np.arange(12, dtype=np.int64).reshape(3, 4)
    const = Const(base.T[::2])
    np.testing.assert_array_equal(const.data, base.T[::2])
    assert const.data.flags.c_contiguous  # type: ignore[union-attr]


def test_unloaded_const_equals_the_loaded_one() -> None:
    loaded = Const(np.ones(3, np.float32))
    unloaded = Const(None, f32[3], "f" * 40)
    assert unloaded.data is None and unloaded != loaded
    same = Const(None, loaded.type, loaded.digest)
    assert same == loaded and same.data is loaded.data



def test_const_adopts_without_copy_keeping_shape_and_read_only() -> None:
    """`copy=False` takes a C-contiguous array as it is (no copy), a 0-d one stays 0-d, and the
    data is read-only; a strided one is made contiguous; the default copies."""
    fresh = np.arange(6, dtype=np.float32).reshape(2, 3)
    adopted = Const(fresh, copy=False)
    assert np.shares_memory(adopted.data, fresh) and not adopted.data.flags.writeable
    scalar = Const(np.asarray(np.float32(2.5)), copy=False)
    assert scalar.shape == () and scalar.data.shape == ()
    strided = Const(np.arange(12.0).reshape(3, 4)[:, ::2], copy=False)
    assert strided.data.flags.c_contiguous
    np.testing.assert_array_equal(strided.data, [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]])
    user = np.ones(4, np.float32)
    copied = Const(user)
    assert not np.shares_memory(copied.data, user) and user.flags.writeable
