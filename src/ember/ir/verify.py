"""The IR verifier: SSA, topological order, known ops, valid attributes, types that agree.

    verify(graph)   # returns None, or raises IRVerifyError naming the node

Checks, in order, for each node: every operand is defined before use and in scope (a region
sees only its own parameters); the op is registered (or is a region op); the attributes fit
the op's schema and are in canonical form; the declared result types equal the op's inferred
types; every result is defined exactly once. A region op (`fused`, which has no `OpDef`) is
checked as its own graph, and its parameter and yield types must match the node's operand and
result types. Nodes are named in messages as they print in the whole graph (`%3 = add(%1, %2)
: f32[4]`).
"""

from __future__ import annotations

from ember.errors import IRVerifyError
from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import OPS
from ember.ir.printer import print_node, value_names

REGION_OPS = frozenset({"fused"})
_THIS_NODE = str("<the node being checked>")  # stands for its text until a check fails


def verify(graph: Graph) -> None:
    """Raise IRVerifyError for the first broken invariant."""
    _Verifier(value_names(graph)).body(graph, "return")


def _types(values: tuple[Value, ...]) -> str:
    return "(" + ", ".join(str(v.type) for v in values) + ")"


class _Verifier:
    """Walks a graph once; `defined` holds every value defined so far, in any region."""

    def __init__(self, names: dict[Value, str]) -> None:
        self.names = names
        self.defined: set[Value] = set()

    def text(self, node: Node) -> str:
        """The node's statement, without its region, for messages."""
        return print_node(node.replace(body=None) if node.body is not None else node, self.names)

    def body(self, graph: Graph, terminator: str) -> None:
        in_scope: set[Value] = set()
        for index, value in enumerate(graph.inputs):
            where = "graph" if terminator == "return" else "region"
            self.define(value, in_scope, "", f"{where} input {index}")
        for node in graph.nodes:
            self.node(node, in_scope)
        self.terminator(graph, in_scope, terminator)

    def terminator(self, graph: Graph, in_scope: set[Value], keyword: str) -> None:
        """Every value of `return` / `yield` is defined in this graph or region."""
        names = ", ".join("%" + self.names.get(v, f"<undefined {v.type}>") for v in graph.outputs)
        for index, value in enumerate(graph.outputs):
            if value not in in_scope:
                scope = "graph" if keyword == "return" else "region"
                raise IRVerifyError(f"{keyword} {names}", f"{keyword} value {index} "
                                    f"({value.type}) is not defined in this {scope} "
                                    f"({self.where(value)})")

    def where(self, value: Value) -> str:
        """Why an out-of-scope value is out of scope, for messages."""
        if value in self.names:
            return "it is defined later, or in another region"
        return "it is defined nowhere in the graph"

    def define(self, value: Value, in_scope: set[Value], text: str, what: str) -> None:
        if value in self.defined:
            raise IRVerifyError(text, f"{what} ({value.type}) is defined twice")
        self.defined.add(value)
        in_scope.add(value)

    def node(self, node: Node, in_scope: set[Value]) -> None:
        # The node's text is printed only when a check fails (printing every node up front
        # was a third of verify's time on large graphs).
        try:
            self.check_node(node, in_scope, _THIS_NODE)
        except IRVerifyError as err:
            if err.node_text is not _THIS_NODE:
                raise
            raise IRVerifyError(self.text(node), err.message) from err.__cause__

    def check_node(self, node: Node, in_scope: set[Value], text: str) -> None:
        for index, value in enumerate(node.inputs):
            if value not in in_scope:
                raise IRVerifyError(text, f"operand {index} ({value.type}) is not defined before "
                                    f"its use ({self.where(value)})")
        if node.op in REGION_OPS:
            self.region(node, text)
        elif node.body is not None:
            raise IRVerifyError(text, f"{node.op} does not take a region (only "
                                f"{', '.join(sorted(REGION_OPS))} do)")
        else:
            _check_types(node, text)
        for index, value in enumerate(node.outputs):
            self.define(value, in_scope, text, f"result {index}")

    def region(self, node: Node, text: str) -> None:
        body = node.body
        if body is None:
            raise IRVerifyError(text, f"{node.op} needs a region")
        if [v.type for v in body.inputs] != [v.type for v in node.inputs]:
            raise IRVerifyError(text, f"region parameter types {_types(body.inputs)} differ from "
                                f"the operand types {_types(node.inputs)}")
        self.body(body, "yield")
        if [v.type for v in body.outputs] != [v.type for v in node.outputs]:
            raise IRVerifyError(text, f"region yield types {_types(body.outputs)} differ from the "
                                f"result types {_types(node.outputs)}")


def _check_types(node: Node, text: str) -> None:
    """The node's attributes fit its op's schema and its result types follow the op's rule."""
    opdef = OPS.get(node.op)
    if opdef is None:
        raise IRVerifyError(text, f"unknown op {node.op!r}")
    try:
        attrs = opdef.make_attrs(node.attrs)
    except Exception as err:  # any schema failure is the node's
        raise IRVerifyError(text, f"bad attributes: {err}") from None
    if attrs != node.attrs:
        raise IRVerifyError(text, f"attributes are not in canonical form (expected {attrs})")
    try:
        inferred = opdef.infer_types(tuple(v.type for v in node.inputs), attrs)
    except Exception as err:  # rules may raise more than ShapeError
        raise IRVerifyError(text, str(err)) from None
    declared = tuple(v.type for v in node.outputs)
    if inferred != declared:
        shown = ", ".join(str(t) for t in inferred)
        raise IRVerifyError(text, f"result types do not match the op's rule (expected {shown})")

