"""Graphviz output for a graph: `ember ir model.py --format dot | dot -Tsvg > model.svg`.

One record per node (op, a summary of its attributes, output types), one ellipse per graph input
and output, and one edge per use of a value, labelled with the value's printed name:

    digraph "mlp" {
      in0 [shape=ellipse, label="%x\\nf32[64,784]"];
      n0 [label="{matmul|f32[64,512]}"];
      in0 -> n0 [label="%x"];
      ...
    }
"""

from __future__ import annotations

from ember.ir.attrs import AttrValue, Const
from ember.ir.graph import Graph, Node, Value
from ember.ir.printer import format_attr

ATTR_CHARS = 40  # longest attribute value shown in a record; longer ones are cut with "..."


def _escape_record(text: str) -> str:
    """Escape the characters that structure a record label, and quotes."""
    for char in "\\{}|<>\"":  # the backslash first, so added ones are not doubled
        text = text.replace(char, "\\" + char)
    return text


def _escape(text: str) -> str:
    """Escape text for a double-quoted dot string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _quote(text: str) -> str:
    return '"' + _escape(text) + '"'


def _attr_summary(name: str, value: AttrValue) -> str:
    if isinstance(value, Const):
        return f"{name}: {value.type}"  # weights: their type, never their data
    text = format_attr(value)
    if len(text) > ATTR_CHARS:
        text = text[: ATTR_CHARS - 3] + "..."
    return f"{name} = {text}"


def _node_label(node: Node) -> str:
    fields = [node.op]
    summary = [_attr_summary(k, v) for k, v in node.attrs.items()]
    if node.body is not None:
        summary.append(f"region: {len(node.body.nodes)} ops")
    if summary:
        fields.append("\\l".join(_escape_record(s) for s in summary) + "\\l")
    fields.append(_escape_record(", ".join(str(v.type) for v in node.outputs)))
    return "{" + "|".join(fields) + "}"


def _region_values(node: Node) -> int:
    """How many numbered values a node's region defines (nested regions included)."""
    if node.body is None:
        return 0
    return sum(len(inner.outputs) + _region_values(inner) for inner in node.body.nodes)


def to_dot(graph: Graph) -> str:
    """The graph as Graphviz `digraph` text (ends without a newline)."""
    lines = [f"digraph {_quote(graph.name)} {{",
             '  node [shape=record, fontname="monospace", fontsize=10];',
             '  edge [fontname="monospace", fontsize=9];']
    where: dict[Value, str] = {}  # value -> id of the dot node that defines it
    names: dict[Value, str] = {}  # value -> printed name (%x, %3)
    for index, value in enumerate(graph.inputs):
        where[value], names[value] = f"in{index}", "%" + (value.hint or f"arg{index}")
        label = f"{_escape(names[value])}\\n{value.type}"
        lines.append(f'  in{index} [shape=ellipse, label="{label}"];')
    counter = 0
    for index, node in enumerate(graph.nodes):
        lines.append(f'  n{index} [label="{_node_label(node)}"];')
        for value in node.inputs:
            lines.append(f"  {where[value]} -> n{index} [label={_quote(names[value])}];")
        for value in node.outputs:
            where[value], names[value] = f"n{index}", f"%{counter}"
            counter += 1
        counter += _region_values(node)  # the printer numbers a region's values next
    for index, value in enumerate(graph.outputs):
        lines.append(f'  out{index} [shape=ellipse, label="return {index}\\n{value.type}"];')
        lines.append(f"  {where[value]} -> out{index} [label={_quote(names[value])}];")
    lines.append("}")
    return "\n".join(lines)
