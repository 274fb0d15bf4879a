"""Each IR invariant: a graph that breaks it -> IRVerifyError whose message names the node as
it prints in the graph."""

from __future__ import annotations

import numpy as np
import pytest

from ember.errors import IRVerifyError
from ember.ir.attrs import Attrs
from ember.ir.graph import Graph, GraphBuilder, Node, Value
from ember.ir.parser import parse_graph
from ember.ir.printer import print_graph
from ember.ir.types import f32, i64
from ember.ir.verify import verify

HEAD = "graph @g(%x: f32[4], %m: f32[2,3]) -> (f32[4]) {\n"


def graph_with(*statements: str, result: str = "%x") -> Graph:
    """Parse a graph (inputs %x: f32[4], %m: f32[2,3]) holding the given statements."""
    return parse_graph(HEAD + "".join(f"  {s}\n" for s in statements) + f"  return {result}\n}}")


def verify_error(graph: Graph) -> IRVerifyError:
    with pytest.raises(IRVerifyError) as info:
        verify(graph)
    return info.value


# (statement, message fragment): each statement alone breaks one rule about a single node.
NODE_CASES = [
    ("%0 = frobnicate(%x) : f32[4]", "unknown op 'frobnicate'"),
    ("%0 = relu(%x) : f32[5]", "result types do not match the op's rule (expected f32[4])"),
    ("%0 = relu(%x) : f64[4]", "(expected f32[4])"),
    ("%0 = relu(%x) : f32[2,2]{nhwc}", "(expected f32[4])"),
    ("%0, %1 = relu(%x) : f32[4], f32[4]", "(expected f32[4])"),
    ("%0 = add(%x) : f32[4]", "add: expected 2 inputs, got 1"),
    ("%0 = add(%x, %m) : f32[4]", "do not broadcast"),
    ("%0 = matmul(%m, %m) : f32[2,3]", "inner dimensions differ (3 vs 2)"),
    ("%0 = log(%b) : bool[4]", None),  # replaced below: needs a bool input
    ("%0 = leaky_relu(%x) {beta = 0.5} : f32[4]", "unknown attribute 'beta'"),
    ("%0 = sum(%m) {keepdims = false} : f32[]", "missing required attribute 'axes'"),
    ('%0 = sum(%m) {axes = "all", keepdims = false} : f32[]', "attribute 'axes'"),
    ("%0 = leaky_relu(%x) {alpha = true} : f32[4]", "attribute 'alpha': expected a number"),
    ("%0 = leaky_relu(%x) {alpha = 1} : f32[4]", "attributes are not in canonical form"),
    ("%0 = sum(%m) {axes = [1]} : f32[2]", "attributes are not in canonical form"),
    ("%0 = sum(%m) {axes = [3], keepdims = false} : f32[2]", "axis 3 is out of range for rank 2"),
    ("%0 = reshape(%m) {shape = [5]} : f32[5]", "cannot reshape 6 elements"),
]
NODE_CASES = [case for case in NODE_CASES if case[1] is not None]


@pytest.mark.parametrize(("statement", "fragment"), NODE_CASES, ids=[c[1] for c in NODE_CASES])
def test_bad_node_is_named_in_the_error(statement: str, fragment: str) -> None:
    err = verify_error(graph_with(statement))
    assert fragment in err.message
    assert err.node_text == statement
    assert str(err).startswith(f"in `{statement}`: ")


def test_dtype_rule_names_the_dtype() -> None:
    graph = parse_graph("graph @g(%b: bool[4]) -> () {\n  %0 = log(%b) : bool[4]\n  return\n}")
    err = verify_error(graph)
    assert err.node_text == "%0 = log(%b) : bool[4]"
    assert ("dtype bool is not supported here (expected a float dtype (f16, bf16, f32, f64))"
            in err.message)


def test_use_before_definition() -> None:
    graph = graph_with("%0 = relu(%x) : f32[4]", "%1 = neg(%0) : f32[4]", result="%1")
    swapped = graph.replace(nodes=graph.nodes[::-1])
    err = verify_error(swapped)
    # Values are numbered in node order, so the operand is named by its later definition.
    assert err.node_text == "%0 = neg(%1) : f32[4]"
    assert "operand 0 (f32[4]) is not defined before its use" in err.message
    assert "defined later" in err.message


def test_operand_defined_nowhere() -> None:
    stray = Value(f32[4], "stray")
    x = Value(f32[4], "x")
    node = Node("add", (x, stray), (Value(f32[4]),))
    err = verify_error(Graph("g", (x,), (node,), node.outputs))
    assert "operand 1 (f32[4]) is not defined before its use" in err.message
    assert "defined nowhere in the graph" in err.message
    assert err.node_text == "%0 = add(%x, %<undefined f32[4]>) : f32[4]"


def test_value_defined_twice() -> None:
    b = GraphBuilder("g")
    x = b.input(f32[4], "x")
    y = b.relu(x)
    graph = b.build([y])
    twice = graph.replace(nodes=(*graph.nodes, graph.nodes[0].replace(op="neg")))
    err = verify_error(twice)
    assert err.node_text == "%1 = neg(%x) : f32[4]"
    assert "  " + err.node_text in print_graph(twice).splitlines()
    assert "result 0 (f32[4]) is defined twice" in err.message


def test_graph_input_listed_twice() -> None:
    x = Value(f32[4], "x")
    err = verify_error(Graph("g", (x, x), (), (x,)))
    assert "graph input 1 (f32[4]) is defined twice" in err.message


def test_node_redefining_a_graph_input() -> None:
    x = Value(f32[4], "x")
    node = Node("relu", (x,), (x,))
    err = verify_error(Graph("g", (x,), (node,), (x,)))
    assert err.node_text == "%0 = relu(%0) : f32[4]"
    assert "result 0 (f32[4]) is defined twice" in err.message


def test_undefined_output() -> None:
    x = Value(f32[4], "x")
    stray = Value(i64[2])
    err = verify_error(Graph("g", (x,), (), (x, stray)))
    assert err.node_text == "return %x, %<undefined i64[2]>"
    assert "return value 1 (i64[2]) is not defined in this graph" in err.message


# ---------------------------------------------------------------------------------------------
# Regions.

REGION = """\
graph @g(%x: f32[4], %s: f32[]) -> (f32[4]) {
  %0 = fused(%x, %s) {kind = "elementwise"} : f32[4] {
  ^(%a: f32[4], %b: f32[]):
    %1 = mul(%a, %b) : f32[4]
    %2 = relu(%1) : f32[4]
    yield %2
  }
  return %0
}"""
FUSED = '%0 = fused(%x, %s) {kind = "elementwise"} : f32[4]'


def test_valid_region_verifies() -> None:
    verify(parse_graph(REGION))


def test_region_parameter_types_must_match_operands() -> None:
    text = REGION.replace("^(%a: f32[4], %b: f32[])", "^(%a: f32[4], %b: f32[1])")
    text = text.replace("mul(%a, %b) : f32[4]", "mul(%a, %b) : f32[4]")
    err = verify_error(parse_graph(text))
    assert err.node_text == FUSED
    assert "region parameter types (f32[4], f32[1]) differ from the operand types " \
           "(f32[4], f32[])" in err.message


def test_region_yield_types_must_match_results() -> None:
    text = REGION.replace("yield %2", "yield %2, %1")
    err = verify_error(parse_graph(text))
    assert err.node_text == FUSED
    assert "region yield types (f32[4], f32[4]) differ from the result types (f32[4])" \
        in err.message


def test_bad_node_inside_a_region_is_named() -> None:
    text = REGION.replace("%2 = relu(%1) : f32[4]", "%2 = relu(%1) : f32[2]")
    err = verify_error(parse_graph(text.replace("yield %2", "yield %1")))
    assert err.node_text == "%2 = relu(%1) : f32[2]"
    assert "(expected f32[4])" in err.message


def test_region_operand_from_outside() -> None:
    graph = parse_graph(REGION)
    fused = graph.nodes[0]
    body = fused.body
    assert body is not None
    outer_x = graph.inputs[0]
    leaky = body.nodes[0].replace(inputs=(outer_x, body.inputs[1]))  # reads %x, not %a
    bad_body = body.replace(nodes=(leaky, *body.nodes[1:]))
    err = verify_error(graph.replace(nodes=(fused.replace(body=bad_body),)))
    assert err.node_text == "%1 = mul(%x, %b) : f32[4]"
    assert "operand 0 (f32[4]) is not defined before its use" in err.message


def test_region_yields_an_outside_value() -> None:
    graph = parse_graph(REGION)
    fused = graph.nodes[0]
    assert fused.body is not None
    bad_body = fused.body.replace(outputs=(graph.inputs[0],))
    err = verify_error(graph.replace(nodes=(fused.replace(body=bad_body),)))
    assert err.node_text == "yield %x"
    assert "yield value 0 (f32[4]) is not defined in this region" in err.message


def test_fused_without_region() -> None:
    graph = parse_graph(REGION)
    err = verify_error(graph.replace(nodes=(graph.nodes[0].replace(body=None),)))
    assert err.node_text == FUSED
    assert "fused needs a region" in err.message


def test_plain_op_with_a_region_is_rejected() -> None:
    graph = parse_graph(REGION)
    fused = graph.nodes[0]
    err = verify_error(graph.replace(nodes=(fused.replace(op="relu"),)))
    assert "relu does not take a region (only fused do)" in err.message


def test_traced_and_built_graphs_verify() -> None:
    b = GraphBuilder("g")
    x = b.input(f32[2, 3], "x")
    w = b.const(np.ones((3, 4), np.float32), name="w")
    y = b.softmax(b.matmul(x, w), axis=-1)
    verify(b.build([y, x]))
    graph = Graph("g", (), (Node("const", (), (Value(f32[1]),), Attrs()),), ())
    err = verify_error(graph)
    assert "missing required attribute 'value'" in err.message
