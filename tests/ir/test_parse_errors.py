"""Malformed IR text -> IRParseError at the right line and column, with the source line and a
caret under the offending character (as xDSL's tests/test_parser_error.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.errors import IRParseError
from ember.ir.graph import Graph
from ember.ir.parser import parse_graph
from ember.ir.printer import print_graph
from tests.strategies import graphs

HEAD = "graph @g(%x: f32[4]) -> (f32[4]) {\n"


def body(*statements: str, result: str = "%0") -> str:
    """A graph with input %x: f32[4], the given statements, and `return result`."""
    return HEAD + "".join(f"  {s}\n" for s in statements) + f"  return {result}\n}}"


# (name, text, line, col, message fragment)
CASES = [
    ("missing colon", body("%0 = relu(%x) f32[4]"), 2, 17, "expected ':' before result types"),
    ("undefined value", body("%0 = relu(%y) : f32[4]"), 2, 13, "use of undefined value %y"),
    ("redefinition", body("%0 = relu(%x) : f32[4]", "%0 = neg(%x) : f32[4]"), 3, 3,
     "value %0 is defined twice"),
    ("redefined input", "graph @g(%x: f32[4], %x: f32[2]) -> () {\n  return\n}", 1, 22,
     "value %x is defined twice"),
    ("result shadows input", body("%x = relu(%x) : f32[4]", result="%x"), 2, 3,
     "value %x is defined twice"),
    ("bad type", body("%0 = relu(%x) : f32[4", result="%x"), 2, 19, "malformed type"),
    ("bad dimension", body("%0 = relu(%x) : f32[4,a]"), 2, 25,
     "dimension 'a' is not a non-negative integer"),
    ("negative dimension", "graph @g(%x: f32[-1]) -> () {\n  return\n}", 1, 18,
     "dimension '-1' is not a non-negative integer"),
    ("unknown dtype", body("%0 = relu(%x) : f8[4]"), 2, 19,
     "unknown dtype 'f8' (expected one of f16, bf16, f32, f64, i8, i16, i32, i64, u8, u16, "
     "u32, u64, bool)"),
    ("bad layout", body("%0 = relu(%x) : f32[4]{nchw}"), 2, 25, "unknown layout 'nchw'"),
    ("empty layout", body("%0 = relu(%x) : f32[4]{}"), 2, 25, "empty layout"),
    ("missing type", body("%0 = relu(%x) :"), 3, 3, "expected type (a tensor type"),
    ("too few elements", body("%0 = const() {value = dense<f32[4]: 1.0, 2.0>} : f32[4]"), 2, 39,
     "f32[4] needs 4 elements, found 2"),
    ("too many elements", body("%0 = const() {value = dense<f32[]: 1.0, 2.0>} : f32[]"), 2, 38,
     "f32[] needs 1 elements, found 2"),
    ("number in a bool dense", body("%0 = const() {value = dense<bool[2]: true, 1>} : bool[2]"),
     2, 46, "expected true or false (a bool element), found '1'"),
    ("bool in a float dense", body("%0 = const() {value = dense<f32[1]: true>} : f32[1]"), 2, 39,
     "expected a number (an f32 element), found 'true'"),
    ("float in an int dense", body("%0 = const() {value = dense<i32[2]: 1, 2.5>} : i32[2]"), 2, 42,
     "expected an integer (an i32 element), found 2.5"),
    ("int out of range", body("%0 = const() {value = dense<i32[1]: 2147483648>} : i32[1]"), 2, 39,
     "2147483648 is out of range for i32"),
    ("float out of range", body("%0 = const() {value = dense<f32[1]: 1e39>} : f32[1]"), 2, 39,
     "1e39 is out of range for f32"),
    ("layout on a constant",
     body("%0 = const() {value = dense<f32[1,1,1,1]{nhwc}: 1.0>} : f32[1,1,1,1]"), 2, 31,
     "a constant has no layout"),
    ("short digest", body("%0 = const() {value = dense_blob<f32[100]: sha1:abc>} : f32[100]"),
     2, 46, "expected digest (sha1:<40 hex digits>)"),
    ("unterminated string", body('%0 = gelu(%x) {approximate = "tanh} : f32[4]'), 2, 32,
     "unterminated string"),
    ("bad escape", body('%0 = gelu(%x) {approximate = "ta\\qnh"} : f32[4]'), 2, 35,
     "bad escape in string"),
    ("attribute given twice", body("%0 = leaky_relu(%x) {alpha = 0.1, alpha = 0.2} : f32[4]"),
     2, 37, "attribute 'alpha' is given twice"),
    ("bad attribute value", body("%0 = leaky_relu(%x) {alpha = %x} : f32[4]"), 2, 32,
     "expected an attribute value, found '%x'"),
    ("results and types differ", body("%0, %1 = relu(%x) : f32[4]"), 2, 12,
     "2 results but 1 types"),
    ("unexpected character", body("%0 = relu(%x) : f32[4] $"), 2, 26, "unexpected character '$'"),
    ("garbage after the graph", body("%0 = relu(%x) : f32[4]") + "\nextra", 5, 1,
     "unexpected 'extra' after the graph"),
    ("missing return", HEAD + "  %0 = relu(%x) : f32[4]\n}", 3, 1,
     "expected a statement or 'return' to end the graph"),
    ("input ends before return", HEAD + "  %0 = relu(%x) : f32[4]\n", 2, 25,
     "expected 'return' before the end of input"),
    ("return type mismatch", body("%0 = sum(%x) {axes = [0], keepdims = false} : f32[]"), 3, 10,
     "return types (f32[]) differ from the declared results (f32[4])"),
    ("return count mismatch", body("%0 = relu(%x) : f32[4]", result="%0, %0"), 3, 10,
     "return types (f32[4], f32[4]) differ from the declared results (f32[4])"),
    ("return of undefined", body(result="%5"), 2, 10, "use of undefined value %5"),
    ("missing yield",
     body("%0 = fused(%x) : f32[4] {", "^(%a: f32[4]):", "  %1 = relu(%a) : f32[4]", "}"),
     5, 3, "expected a statement or 'yield' to end the region"),
    ("region reads outer value",
     body("%0 = fused(%x) : f32[4] {", "^(%a: f32[4]):", "  %1 = relu(%x) : f32[4]",
          "  yield %1", "}"), 4, 15, "use of undefined value %x"),
    ("region without ^", body("%0 = fused(%x) : f32[4] {", "%1 = relu(%x) : f32[4]", "}"), 3, 3,
     "expected '^' to start a region"),
    ("not a graph", "func @g() -> () {\n  return\n}", 1, 1, "expected 'graph' at the start"),
    ("empty text", "", 1, 1, "expected 'graph' at the start, found end of input"),
    ("missing graph name", "graph (%x: f32[4]) -> () {\n  return\n}", 1, 7,
     "expected symbol (the graph name"),
    ("missing arrow", "graph @g(%x: f32[4]) (f32[4]) {\n  return %x\n}", 1, 22,
     "expected '->' after the parameters"),
    ("trailing comma", body("%0 = add(%x, ) : f32[4]"), 2, 16, "expected value"),
]


@pytest.mark.parametrize(("text", "line", "col", "fragment"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_parse_error(text: str, line: int, col: int, fragment: str) -> None:
    with pytest.raises(IRParseError) as info:
        parse_graph(text)
    err = info.value
    assert fragment in err.message
    assert (err.line, err.col) == (line, col), str(err)
    shown = str(err).split("\n")
    assert shown[0] == f"{line}:{col}: {err.message}"
    # The source line is shown with a caret under the offending column.
    source = text.split("\n")[line - 1]
    if not source:  # nothing to point into (empty input)
        assert len(shown) == 1
        return
    assert shown[1] == "  " + source
    assert shown[2] == "  " + " " * (col - 1) + "^"


def test_a_type_spanning_no_lines_keeps_line_numbers_right() -> None:
    """Newlines are never swallowed into a token, so later lines keep their numbers."""
    text = HEAD + "  %0 = relu(%x)\n      : f32[4]\n  %1 = relu(%y) : f32[4]\n  return %1\n}"
    with pytest.raises(IRParseError) as info:
        parse_graph(text)
    assert (info.value.line, info.value.col) == (4, 13)


@settings(max_examples=60, deadline=None)
@given(graphs(max_nodes=4), st.data())
def test_mutated_text_raises_only_parse_errors(graph: Graph, data: st.DataObject) -> None:
    """Deleting or duplicating a character anywhere gives a graph or an IRParseError, never an
    unexpected Python exception."""
    text = print_graph(graph)
    position = data.draw(st.integers(0, len(text) - 1))
    mutation = data.draw(st.sampled_from(("delete", "duplicate", "digit", "quote")))
    inserted = {"delete": "", "duplicate": text[position] * 2, "digit": "7", "quote": '"'}
    mutated = text[:position] + inserted[mutation] + text[position + 1:]
    try:
        parse_graph(mutated)
    except IRParseError as err:
        assert err.line >= 1 and err.col >= 1
