"""The IR verifier: SSA, topological order, known ops, valid attributes, types that agree.

    verify(graph)   # returns None, or raises IRVerifyError naming the node

Checks, in order, for each node: the op is registered; every operand is defined before use and
in scope (a region sees only its own parameters); every result is defined exactly once; the
attributes fit the op's schema; the declared result types equal the op's inferred types. A
region (`fused`) is checked as its own graph, and its parameter and yield types must match the
node's operands and results.
"""

from __future__ import annotations

from ember.errors import EmberError, IRVerifyError
from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import OPS, get_op

REGION_OPS = frozenset({"fused"})


def verify(graph: Graph) -> None:
    """Raise IRVerifyError for the first broken invariant."""
    defined: set[Value] = set()
    _verify_body(graph, defined)


def _verify_body(graph: Graph, defined: set[Value]) -> None:
    in_scope: set[Value] = set()
    for value in graph.inputs:
        _define(value, defined, in_scope, "")
    for node in graph.nodes:
        _verify_node(node, defined, in_scope)
    for index, value in enumerate(graph.outputs):
        if value not in in_scope:
            raise IRVerifyError("return", f"output {index} ({value.type}) is not defined")


def _define(value: Value, defined: set[Value], in_scope: set[Value], node_text: str) -> None:
    if value in defined:
        raise IRVerifyError(node_text, f"value of type {value.type} is defined twice")
    defined.add(value)
    in_scope.add(value)


def _verify_node(node: Node, defined: set[Value], in_scope: set[Value]) -> None:
    text = _short(node)
    for index, value in enumerate(node.inputs):
        if value not in in_scope:
            where = "later, or in another region" if value in defined else "anywhere before"
            raise IRVerifyError(text, f"operand {index} ({value.type}) is not defined {where}")
    if node.op in REGION_OPS or node.body is not None:
        _verify_region(node, text, defined)
    else:
        _verify_types(node, text)
    for value in node.outputs:
        _define(value, defined, in_scope, text)


def _verify_types(node: Node, text: str) -> None:
    if node.op not in OPS and not OPS:
        get_op(node.op)  # loads the registry
    opdef = OPS.get(node.op)
    if opdef is None:
        raise IRVerifyError(text, f"unknown op {node.op!r}")
    try:
        attrs = opdef.make_attrs(node.attrs)
        if attrs != node.attrs:
            raise IRVerifyError(text, f"attributes are not in canonical form (expected {attrs})")
        inferred = opdef.infer_types(tuple(v.type for v in node.inputs), attrs)
    except IRVerifyError:
        raise
    except EmberError as err:
        raise IRVerifyError(text, str(err)) from None
    declared = tuple(v.type for v in node.outputs)
    if inferred != declared:
        shown = ", ".join(str(t) for t in inferred)
        raise IRVerifyError(text, f"result types do not match the op's rule (expected {shown})")


def _verify_region(node: Node, text: str, defined: set[Value]) -> None:
    body = node.body
    if body is None:
        raise IRVerifyError(text, f"{node.op} needs a region")
    operand_types = [v.type for v in node.inputs]
    if [v.type for v in body.inputs] != operand_types:
        raise IRVerifyError(text, "region parameter types differ from the operand types")
    if [v.type for v in body.outputs] != [v.type for v in node.outputs]:
        raise IRVerifyError(text, "region yield types differ from the result types")
    _verify_body(body, defined)


def _short(node: Node) -> str:
    """The node's statement, without its region, for messages."""
    return str(node.replace(body=None)) if node.body is not None else str(node)
