"""GraphBuilder builds typed nodes and its errors name the op; Graph's derived views
(`producers`, `users`, `to_networkx`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from ember.errors import ShapeError
from ember.ir.graph import Graph, GraphBuilder, Value, all_values
from ember.ir.types import DType, TensorType, f32, i64


def test_builder_infers_types_and_attributes() -> None:
    b = GraphBuilder("g")
    x = b.input(f32[2, 3], "x")
    total = b.sum(x, axes=[1])
    first, second = b.split(x, axis=1, sizes=[1, 2])
    index = b.argmax(x, axis=0)
    graph = b.build([total, first, second, index])
    assert total.type == f32[2] and first.type == f32[2, 1] and second.type == f32[2, 2]
    assert index.type == i64[3]
    assert dict(graph.nodes[0].attrs) == {"axes": (1,), "keepdims": False}
    assert graph.output_types == (f32[2], f32[2, 1], f32[2, 2], i64[3])
    assert graph.input_types == (f32[2, 3],)
    assert len(graph.nodes[1].outputs) == 2


def test_locations_are_attached_while_set() -> None:
    b = GraphBuilder("g")
    x = b.input(f32[2], "x")
    b.loc = "model.py:3"
    y = b.relu(x)
    b.loc = ""
    z = b.neg(y)
    graph = b.build([z])
    assert [n.loc for n in graph.nodes] == ["model.py:3", ""]


@pytest.mark.parametrize(("build", "fragments"), [
    (lambda b, x: b.frobnicate(x), ["unknown op 'frobnicate'"]),
    (lambda b, x: b.add(x), ["add: expected 2 inputs, got 1"]),
    (lambda b, x: b.add(x, b.input(f32[3])), ["add", "[2] and [3] do not broadcast",
                                              "inputs f32[2], f32[3]"]),
    (lambda b, x: b.add(x, b.input(i64[2])), ["add", "dtypes differ (f32 vs i64)"]),
    (lambda b, x: b.leaky_relu(x, beta=1.0), ["leaky_relu: unknown attribute 'beta'"]),
    (lambda b, x: b.sum(x), ["sum: missing required attribute 'axes'"]),
    (lambda b, x: b.sum(x, axes="all"), ["sum: attribute 'axes'"]),
    (lambda b, x: b.relu(np.ones(2, np.float32)), ["relu: input 0 is a ndarray, not a Value"]),
    (lambda b, x: b.const(np.ones(2, np.complex64)), ["const: attribute 'value'", "complex64"]),
    (lambda b, x: b.reshape(x, shape=[3]), ["reshape", "cannot reshape 2 elements"]),
])
def test_builder_errors_name_the_op(build: Callable[..., object], fragments: list[str]) -> None:
    b = GraphBuilder("g")
    x = b.input(f32[2], "x")
    with pytest.raises(ShapeError) as info:
        build(b, x)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_builder_const_leaves_the_users_array_alone() -> None:
    array = np.array([1.0, 2.0], np.float32)
    b = GraphBuilder("g")
    value = b.const(array, name="w")
    graph = b.build([value])
    array[0] = 5.0
    assert array.flags.writeable
    np.testing.assert_array_equal(graph.constants()["w"], [1.0, 2.0])
    assert b.const(array).type == f32[2]
    assert "name" not in b.nodes[-1].attrs  # no empty name is recorded


def test_private_names_are_not_ops() -> None:
    with pytest.raises(AttributeError):
        GraphBuilder("g")._hidden  # noqa: B018


def make_diamond() -> tuple[Graph, Value, Value, Value, Value, Value, Value, Value]:
    """x -> a = exp(x), b = neg(x) -> c = add(a, b), c2 = mul(a, a); d = relu(x) unused."""
    b = GraphBuilder("g")
    x = b.input(f32[3], "x")
    unused_input = b.input(f32[1], "u")
    a = b.exp(x)
    n = b.neg(x)
    c = b.add(a, n)
    c2 = b.mul(a, a)
    d = b.relu(x)
    graph = b.build([c, c2, x])
    return graph, x, unused_input, a, n, c, c2, d


def test_producers_and_users() -> None:
    graph, x, unused_input, a, n, c, c2, d = make_diamond()
    exp, neg, add, mul, relu = graph.nodes
    assert graph.producers == {a: exp, n: neg, c: add, c2: mul, d: relu}
    assert graph.producer(x) is None and graph.producer(a) is exp
    assert graph.users[x] == [exp, neg, relu]
    assert graph.users[a] == [add, mul]  # mul reads `a` twice but is listed once
    assert graph.users[n] == [add]
    assert unused_input not in graph.users and d not in graph.users and c not in graph.users
    assert list(all_values(graph)) == [x, unused_input, a, n, c, c2, d]


def test_to_networkx() -> None:
    networkx = pytest.importorskip("networkx")
    graph, x, *_ = make_diamond()
    digraph = graph.to_networkx()
    assert set(digraph.nodes) == {"input:0", "input:1", 0, 1, 2, 3, 4,
                                  "output:0", "output:1", "output:2"}
    edges = sorted((str(u), str(v)) for u, v in digraph.edges())
    assert edges == sorted([
        ("input:0", "0"), ("input:0", "1"), ("input:0", "4"), ("0", "2"), ("1", "2"),
        ("0", "3"), ("0", "3"), ("2", "output:0"), ("3", "output:1"), ("input:0", "output:2"),
    ])
    assert digraph.nodes[2]["node"] is graph.nodes[2]
    assert all(data["value"] is x for _, _, data in digraph.out_edges("input:0", data=True))
    assert networkx.is_directed_acyclic_graph(digraph)
    order = list(networkx.topological_sort(digraph))
    assert order.index(0) < order.index(2) and order.index(1) < order.index(2)


def test_graph_replace_makes_a_new_graph_with_fresh_caches() -> None:
    graph, x, *_ = make_diamond()
    assert graph.users[x]
    smaller = graph.replace(nodes=graph.nodes[:1], outputs=(graph.nodes[0].output,))
    assert smaller is not graph and len(smaller.users[x]) == 1 and len(graph.users[x]) == 3


def test_value_properties() -> None:
    b = GraphBuilder("g")
    x = b.input(TensorType(DType.I32, (2, 5)), "x")
    assert x.shape == (2, 5) and x.dtype is DType.I32 and x.ndim == 2
    assert "i32[2,5]" in repr(x) and "x" in repr(x)
