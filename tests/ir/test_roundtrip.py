"""The text form round-trips: `str(parse_graph(str(g))) == str(g)`, and the reparsed graph
computes the same results (checked against numpy, and element for element against the original)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ember.errors import ExecutionError
from ember.interpreter import interpret
from ember.ir.attrs import Attrs, Const
from ember.ir.graph import Graph, GraphBuilder, Node, Value
from ember.ir.parser import parse_graph
from ember.ir.printer import DENSE_LIMIT, print_graph
from ember.ir.types import DType, TensorType, f32
from ember.ir.verify import verify
from tests.strategies import graph_inputs, graphs


def assert_round_trips(text: str) -> Graph:
    """`text` is canonical: it parses, verifies, and prints back byte for byte."""
    graph = parse_graph(text)
    assert print_graph(graph) == text
    assert print_graph(parse_graph(print_graph(graph))) == text
    return graph


def assert_same_results(first: Graph, second: Graph, seed: int = 0) -> None:
    arrays = graph_inputs(first, seed)
    expected = interpret(first, *arrays)
    actual = interpret(second, *arrays)
    assert len(actual) == len(expected)
    for left, right in zip(expected, actual, strict=True):
        assert left.dtype == right.dtype and left.shape == right.shape
        np.testing.assert_array_equal(left, right)


# ---------------------------------------------------------------------------------------------
# Random graphs.


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_random_graphs_round_trip_and_compute_the_same(graph: Graph) -> None:
    verify(graph)
    text = print_graph(graph)
    reparsed = assert_round_trips(text)
    verify(reparsed)
    assert print_graph(graph) == text, "printing is not deterministic"
    assert_same_results(graph, reparsed, seed=1)


def test_graph_inputs_is_seeded_and_honours_positive_inputs() -> None:
    b = GraphBuilder("g")
    p = b.input(f32[50], "p0")
    x = b.input(TensorType(DType.F64, (50,)), "x1")
    graph = b.build([b.log(p), x])
    first, second = graph_inputs(graph, 3), graph_inputs(graph, 3)
    np.testing.assert_array_equal(first[0], second[0])
    assert first[0].dtype == np.float32 and first[1].dtype == np.float64
    assert first[0].min() >= 0.5 and first[1].min() < 0  # signed input does reach negatives
    assert not np.array_equal(graph_inputs(graph, 4)[1], first[1])


# ---------------------------------------------------------------------------------------------
# Hand-written graphs covering every printed feature.

CANONICAL = {
    "all_dtypes": """\
graph @types(%a: f32[2], %b: f64[2], %c: i32[2], %d: i64[2], %e: bool[2]) -> (bool[2], i64[2]) {
  %0 = logical_not(%e) : bool[2]
  %1 = add(%d, %d) : i64[2]
  return %0, %1
}""",
    "scalars_zero_size_and_layouts": """\
graph @shapes(%s: f32[], %z: f32[0,3], %n: f32[1,2,3,4]{nhwc}, %c: f32[1,2,3,4,8]{nchw8c}) -> \
(f32[], f32[0,3], f32[1,2,3,4]{nhwc}, f32[1,2,3,4,8]{nchw8c}) {
  %0 = exp(%s) : f32[]
  %1 = neg(%z) : f32[0,3]
  return %0, %1, %n, %c
}""",
    "float_attributes": """\
graph @floats(%x: f32[3]) -> (f32[3], f32[3], f32[3], f32[3], f32[3]) {
  %0 = leaky_relu(%x) {alpha = nan} : f32[3]
  %1 = leaky_relu(%x) {alpha = inf} : f32[3]
  %2 = leaky_relu(%x) {alpha = -inf} : f32[3]
  %3 = leaky_relu(%x) {alpha = 1e-05} : f32[3]
  %4 = leaky_relu(%x) {alpha = -0.0} : f32[3]
  return %0, %1, %2, %3, %4
}""",
    "int_bool_list_attributes": """\
graph @lists(%x: f32[2,3,1]) -> (f32[3,2], f32[2,3], f32[1]) {
  %0 = squeeze(%x) {axes = [2]} : f32[2,3]
  %1 = transpose(%0) {perm = [1, 0]} : f32[3,2]
  %2 = sum(%x) {axes = [], keepdims = false} : f32[2,3,1]
  %3 = mean(%x) {axes = [0, 1, 2], keepdims = true} : f32[1,1,1]
  %4 = reshape(%3) {shape = [1]} : f32[1]
  return %1, %0, %4
}""",
    "string_attributes": """\
graph @strings(%x: f32[2]) -> (f32[2]) {
  %0 = const() {name = "say \\"hi\\" \\\\ back\\\\slash \\u00fc\\u65e5\\ud83d\\ude00", \
value = dense<f32[2]: 1.0, 2.0>} : f32[2]
  %1 = gelu(%x) {approximate = "tanh"} : f32[2]
  %2 = add(%0, %1) : f32[2]
  return %2
}""",
    "dense_of_every_dtype": """\
graph @dense() -> (f32[2,2], f64[3], i32[2], i64[], bool[3], bool[], f32[0], f32[]) {
  %0 = const() {value = dense<f32[2,2]: 0.1, -0.0, nan, -inf>} : f32[2,2]
  %1 = const() {value = dense<f64[3]: 0.1, 1e-300, inf>} : f64[3]
  %2 = const() {value = dense<i32[2]: 2147483647, -2147483648>} : i32[2]
  %3 = const() {value = dense<i64[]: -9223372036854775808>} : i64[]
  %4 = const() {value = dense<bool[3]: true, false, true>} : bool[3]
  %5 = const() {value = dense<bool[]: false>} : bool[]
  %6 = const() {value = dense<f32[0]: >} : f32[0]
  %7 = const() {value = dense<f32[]: 3.5>} : f32[]
  return %0, %1, %2, %3, %4, %5, %6, %7
}""",
    "multi_output_and_unused": """\
graph @multi(%x: f32[5,2]) -> (f32[3,2], f32[2,2], f32[5,2], f32[5,2]) {
  %0, %1 = split(%x) {axis = 0, sizes = [3, 2]} : f32[3,2], f32[2,2]
  %2 = exp(%x) : f32[5,2]
  return %0, %1, %x, %x
}""",
    "locations": """\
graph @located(%x: f32[4]) -> (f32[4]) {
  %0 = relu(%x) : f32[4]  // model.py:12
  %1 = neg(%0) : f32[4]  // /home/user/my model/layers.py:7 in forward
  %2 = exp(%1) : f32[4]
  return %2
}""",
    "region": """\
graph @fused(%x: f32[4], %b: f32[4]) -> (f32[4]) {
  %0 = matmul(%x, %x) : f32[]
  %1 = fused(%x, %b, %0) {kind = "elementwise"} : f32[4] {  // model.py:3
  ^(%x: f32[4], %c: f32[4], %s: f32[]):
    %2 = add(%x, %c) : f32[4]  // model.py:4
    %3 = mul(%2, %s) : f32[4]
    %4 = relu(%3) : f32[4]
    yield %4
  }
  %5 = neg(%1) : f32[4]
  return %5
}""",
    "no_inputs_no_outputs": """\
graph @empty() -> () {
  return
}""",
    "quoted_name": """\
graph @"<lambda> #2"(%x: f32[1]) -> (f32[1]) {
  return %x
}""",
}


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_hand_written_graph_is_canonical(name: str) -> None:
    graph = assert_round_trips(CANONICAL[name])
    verify(graph)


def test_every_dense_dtype_keeps_its_exact_bits() -> None:
    graph = parse_graph(CANONICAL["dense_of_every_dtype"])
    data = [node.attrs["value"].data for node in graph.nodes]
    expected = [
        np.array([[0.1, -0.0], [np.nan, -np.inf]], np.float32),
        np.array([0.1, 1e-300, np.inf], np.float64),
        np.array([2**31 - 1, -(2**31)], np.int32),
        np.array(-(2**63), np.int64),
        np.array([True, False, True]),
        np.array(False),
        np.zeros((0,), np.float32),
        np.array(3.5, np.float32),
    ]
    for got, want in zip(data, expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()  # bit for bit: -0.0 and nan included


def test_float_attributes_keep_their_values() -> None:
    graph = parse_graph(CANONICAL["float_attributes"])
    alphas = [node.attrs["alpha"] for node in graph.nodes]
    assert math.isnan(alphas[0]) and alphas[1] == math.inf and alphas[2] == -math.inf
    assert alphas[3] == 1e-05
    assert alphas[4] == 0.0 and math.copysign(1.0, alphas[4]) == -1.0
    assert all(isinstance(a, float) for a in alphas)


def test_string_attribute_escapes_decode() -> None:
    graph = parse_graph(CANONICAL["string_attributes"])
    assert graph.nodes[0].attrs["name"] == 'say "hi" \\ back\\slash ü日😀'


def test_strings_survive_printing() -> None:
    """Quotes, backslashes, newlines, control and non-BMP characters all print and reparse."""
    tricky = 'a"b\\c\nd\te\x00f\u2028ü日本😀'
    b = GraphBuilder("g")
    value = b.const(np.ones(2, np.float32), name=tricky)
    graph = b.build([value])
    text = print_graph(graph)
    assert "\n" not in text.splitlines()[1]  # the statement stays on one line
    assert parse_graph(text).nodes[0].attrs["name"] == tricky
    assert_round_trips(text)


def test_nested_and_empty_lists_round_trip() -> None:
    x = Value(f32[2], "x")
    node = Node("custom", (x,), (Value(f32[2]),),
                Attrs(empty=(), nested=((1, 2), (), (3.5, "s", True, (-1,)))))
    text = print_graph(Graph("g", (x,), (node,), node.outputs))
    assert "{empty = [], nested = [[1, 2], [], [3.5, \"s\", true, [-1]]]}" in text
    reparsed = assert_round_trips(text)
    assert reparsed.nodes[0].attrs == node.attrs


def test_comments_elsewhere_are_ignored() -> None:
    text = """\
// a header comment
graph @g(%x: f32[4]) -> (f32[4]) {   // after the brace
  // a comment line
  %0 = relu(%x)   // inside a statement
     : f32[4]  // model.py:3
  // another one
  return %0  // after return
}  // after the graph
"""
    graph = parse_graph(text)
    assert graph.nodes[0].loc == "model.py:3"
    assert print_graph(graph) == (
        "graph @g(%x: f32[4]) -> (f32[4]) {\n  %0 = relu(%x) : f32[4]  // model.py:3\n"
        "  return %0\n}"
    )


def test_region_nodes_keep_structure_and_locations() -> None:
    graph = parse_graph(CANONICAL["region"])
    fused = graph.nodes[1]
    assert fused.op == "fused" and fused.loc == "model.py:3"
    assert fused.body is not None
    assert [n.op for n in fused.body.nodes] == ["add", "mul", "relu"]
    assert fused.body.nodes[0].loc == "model.py:4"
    assert [v.hint for v in fused.body.inputs] == ["x", "c", "s"]
    x, b = np.arange(4, dtype=np.float32) - 1.5, np.full(4, 0.5, np.float32)
    (result,) = interpret(graph, x, b)
    expected = -np.maximum((x + b) * np.dot(x, x), 0)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_printer_sanitizes_locations_and_names() -> None:
    b = GraphBuilder("my graph")
    x = b.input(f32[2], "x")
    b.loc = "  model.py:3\n  in   forward  "
    y = b.relu(x)
    text = print_graph(b.build([y]))
    assert text.splitlines()[0].startswith('graph @"my graph"(')
    assert "  // model.py:3 in forward" in text
    graph = assert_round_trips(text)
    assert graph.name == "my graph" and graph.nodes[0].loc == "model.py:3 in forward"


def test_input_hints_are_made_unique_and_valid() -> None:
    b = GraphBuilder("g")
    hints = ("x", "x", "", "fc.weight", "0.weight", "bad name", "arg2")
    values = [b.input(f32[1], hint) for hint in hints]
    text = print_graph(b.build(values))
    assert text.splitlines()[0] == (
        "graph @g(%x: f32[1], %x_1: f32[1], %arg2: f32[1], %fc.weight: f32[1], %arg4: f32[1], "
        "%arg5: f32[1], %arg2_1: f32[1]) -> (" + ", ".join(["f32[1]"] * 7) + ") {"
    )
    assert_round_trips(text)


def test_numerics_of_a_hand_written_graph_match_numpy() -> None:
    text = """\
graph @mlp(%x: f32[2,3]) -> (f32[2,2]) {
  %0 = const() {value = dense<f32[3,2]: 1.0, -1.0, 0.5, 2.0, -0.25, 0.0>} : f32[3,2]
  %1 = matmul(%x, %0) : f32[2,2]
  %2 = const() {value = dense<f32[2]: 0.1, -0.2>} : f32[2]
  %3 = add(%1, %2) : f32[2,2]
  %4 = softmax(%3) {axis = -1} : f32[2,2]
  return %4
}"""
    graph = assert_round_trips(text)
    x = np.array([[1, 2, 3], [-1, 0.5, 4]], np.float64)
    weight = np.array([[1.0, -1.0], [0.5, 2.0], [-0.25, 0.0]])
    logits = x @ weight + np.array([0.1, -0.2])
    expected = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    (result,) = interpret(graph, x.astype(np.float32))
    np.testing.assert_allclose(result, expected, rtol=1e-5)
    assert_same_results(graph, parse_graph(print_graph(graph)))


# ---------------------------------------------------------------------------------------------
# Large constants: dense_blob.


def test_large_constant_prints_as_blob_and_recovers_its_data_in_process() -> None:
    weights = np.arange(DENSE_LIMIT + 1, dtype=np.float32).reshape(5, 13) / 7
    b = GraphBuilder("g")
    x = b.input(f32[13], "x")
    w = b.const(weights, name="w")
    graph = b.build([b.matmul(w, x)])
    text = print_graph(graph)
    assert f"dense_blob<f32[5,13]: sha1:{graph.nodes[0].attrs['value'].digest}>" in text
    reparsed = assert_round_trips(text)
    np.testing.assert_array_equal(reparsed.constants()["w"], weights)
    vector = np.linspace(-1, 1, 13).astype(np.float32)
    (result,) = interpret(reparsed, vector)
    np.testing.assert_allclose(result, weights.astype(np.float64) @ vector, rtol=1e-5)


def test_blob_without_data_in_memory_parses_and_fails_clearly_at_run_time() -> None:
    digest = "0123456789abcdef0123456789abcdef01234567"
    text = f"""\
graph @g() -> (f32[100]) {{
  %0 = const() {{name = "missing.weight", value = dense_blob<f32[100]: sha1:{digest}>}} : f32[100]
  return %0
}}"""
    graph = assert_round_trips(text)
    verify(graph)
    const = graph.nodes[0].attrs["value"]
    assert const.data is None and const.type == f32[100] and const.digest == digest
    with pytest.raises(ExecutionError, match=r"missing\.weight.*not loaded.*dense_blob"):
        interpret(graph)


def test_blob_of_another_type_than_its_data_is_rejected() -> None:
    data = np.arange(100, dtype=np.float32)
    const = Const(data)
    text = f"""\
graph @g() -> (f32[10,10]) {{
  %0 = const() {{value = dense_blob<f32[10,10]: sha1:{const.digest}>}} : f32[10,10]
  return %0
}}"""
    from ember.errors import IRParseError

    with pytest.raises(IRParseError, match=r"differs from the type of its data in memory"):
        parse_graph(text)
