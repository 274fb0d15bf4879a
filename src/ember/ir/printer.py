"""Canonical text form of the graph IR. `parse_graph(print_graph(g))` prints back byte for byte.

Grammar (one statement a line; `//` starts a comment; a comment that ends a statement's line
is that node's source location):

    graph   ::= 'graph' '@' (NAME | STRING) '(' [param (',' param)*] ')'
                '->' '(' [type (',' type)*] ')' '{' stmt* 'return' [values] '}'
    param   ::= VALUE ':' type
    stmt    ::= values '=' OPNAME '(' [values] ')' [attrs] ':' type (',' type)* [region]
    region  ::= '{' '^' '(' [param (',' param)*] ')' ':' stmt* 'yield' values '}'
    type    ::= DTYPE '[' [INT (',' INT)*] ']' ['{' LAYOUT '}']      (no space before '{')
    attrs   ::= '{' NAME '=' attr (',' NAME '=' attr)* '}'
    attr    ::= INT | FLOAT | STRING | 'true' | 'false' | '[' [attr (',' attr)*] ']'
              | 'dense<' type ':' [number (',' number)*] '>' | 'dense_blob<' type ':' DIGEST '>'
    values  ::= VALUE (',' VALUE)*
    VALUE   ::= '%' (NAME | INT)
    DTYPE   ::= 'f32' | 'f64' | 'i32' | 'i64' | 'bool'

A graph name that is not a plain NAME prints quoted, `@"<lambda>"`. A source location is
printed on one line with runs of whitespace collapsed.

Canonical means: node outputs are numbered %0, %1, ... in pre-order (a region's values follow
its node's outputs); graph and region inputs keep their hints, made unique; attributes are
sorted by name; floats print in the shortest form that reads back exactly; constants of more
than `DENSE_LIMIT` elements print as `dense_blob<type: sha1:...>` whose data the parser finds in
memory (the graph's constants are still alive in this process) or leaves unloaded.
"""

from __future__ import annotations

import json
import re

import numpy as np

from ember.ir.attrs import AttrValue, Const
from ember.ir.graph import Graph, Node, Value

DENSE_LIMIT = 64
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def format_float(value: float, dtype: np.dtype | None = None) -> str:
    """Shortest text that reads back to the same value (of `dtype`, default float64)."""
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    if dtype in (np.float16, np.float32):  # numpy's shortest text that reads back
        text = str(np.dtype(dtype).type(value))
    else:
        text = repr(float(value))
    return text if any(c in text for c in ".en") else text + ".0"


def format_const(const: Const) -> str:
    if const.type.size > DENSE_LIMIT or const.data is None:
        return f"dense_blob<{const.type}: sha1:{const.digest}>"
    flat = const.data.reshape(-1)
    if flat.dtype == np.bool_:
        items = ["true" if v else "false" for v in flat]
    elif flat.dtype.kind == "f" or flat.dtype.name == "bfloat16":
        items = [format_float(v, flat.dtype) for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    return f"dense<{const.type}: {', '.join(items)}>"


def format_attr(value: AttrValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Const):
        return format_const(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    raise TypeError(f"cannot print attribute value {value!r}")


class _Namer:
    """Assigns printed names: hints for inputs (made unique), numbers for everything else."""

    def __init__(self) -> None:
        self.names: dict[Value, str] = {}
        self.counter = 0

    def name_inputs(self, values: tuple[Value, ...]) -> None:
        taken: set[str] = set()
        for index, value in enumerate(values):
            base = value.hint if _NAME_RE.match(value.hint) else f"arg{index}"
            name, suffix = base, 1
            while name in taken:
                name, suffix = f"{base}_{suffix}", suffix + 1
            taken.add(name)
            self.names[value] = name

    def number(self, value: Value) -> None:
        self.names[value] = str(self.counter)
        self.counter += 1

    def __getitem__(self, value: Value) -> str:
        name = self.names.get(value)
        return "%" + name if name is not None else f"%<undefined {value.type}>"


def _loc_comment(loc: str, locations: bool = True) -> str:
    """The trailing `  // file.py:12` of a statement ("" without a location, or when
    `locations` is off)."""
    text = " ".join(loc.split()) if locations else ""
    return f"  // {text}" if text else ""


def _stmt_lines(node: Node, namer: _Namer, indent: str, renumber: bool = True,
                locations: bool = True) -> list[str]:
    if renumber:
        for value in node.outputs:
            namer.number(value)
    results = ", ".join(namer[v] for v in node.outputs)
    operands = ", ".join(namer[v] for v in node.inputs)
    attrs = ""
    if node.attrs:
        attrs = " {" + ", ".join(f"{k} = {format_attr(v)}" for k, v in node.attrs.items()) + "}"
    types = ", ".join(str(v.type) for v in node.outputs)
    head = f"{indent}{results} = {node.op}({operands}){attrs} : {types}"
    if node.body is None:
        return [head + _loc_comment(node.loc, locations)]
    lines = [head + " {" + _loc_comment(node.loc, locations)]
    lines += _region_lines(node.body, namer, indent, renumber, locations)
    lines.append(indent + "}")
    return lines


def _region_lines(body: Graph, namer: _Namer, indent: str, renumber: bool = True,
                  locations: bool = True) -> list[str]:
    if renumber:
        namer.name_inputs(body.inputs)
    params = ", ".join(f"{namer[v]}: {v.type}" for v in body.inputs)
    lines = [f"{indent}^({params}):"]
    for node in body.nodes:
        lines += _stmt_lines(node, namer, indent + "  ", renumber, locations)
    lines.append(f"{indent}  yield {', '.join(namer[v] for v in body.outputs)}")
    return lines


def format_symbol(name: str) -> str:
    """`@main`, or `@"<lambda>"` for a name that is not a plain NAME."""
    return "@" + (name if _NAME_RE.match(name) else json.dumps(name))


def _name_all(graph: Graph, namer: _Namer) -> None:
    """Give every value of `graph` (regions included) its canonical name, as `print_graph` does."""
    for node in graph.nodes:
        for value in node.outputs:
            namer.number(value)
        if node.body is not None:
            namer.name_inputs(node.body.inputs)
            _name_all(node.body, namer)


def value_names(graph: Graph) -> dict[Value, str]:
    """The printed name of every value of `graph` (without `%`), regions included."""
    namer = _Namer()
    namer.name_inputs(graph.inputs)
    _name_all(graph, namer)
    return namer.names


def print_graph(graph: Graph, locations: bool = True) -> str:
    """The canonical text of a graph (ends without a newline); `locations=False` leaves out
    the `// file.py:12` source locations (what the graph computes, not where it came from)."""
    namer = _Namer()
    namer.name_inputs(graph.inputs)
    params = ", ".join(f"{namer[v]}: {v.type}" for v in graph.inputs)
    results = ", ".join(str(v.type) for v in graph.outputs)
    lines = [f"graph {format_symbol(graph.name)}({params}) -> ({results}) {{"]
    for node in graph.nodes:
        lines += _stmt_lines(node, namer, "  ", locations=locations)
    returned = ", ".join(namer[v] for v in graph.outputs)
    lines.append(f"  return {returned}".rstrip())
    lines.append("}")
    return "\n".join(lines)


def print_node(node: Node, names: dict[Value, str] | None = None) -> str:
    """One node as a statement, for error messages.

    With `names` (from `value_names(graph)`) values read as in the printed graph; without, the
    node's outputs are numbered from %0 and its operands named by hint or `in<index>`.
    """
    namer = _Namer()
    if names is not None:
        namer.names = names
        return "\n".join(_stmt_lines(node, namer, "", renumber=False))
    for index, value in enumerate(node.inputs):
        namer.names.setdefault(value, value.hint if _NAME_RE.match(value.hint) else f"in{index}")
    return "\n".join(_stmt_lines(node, namer, ""))
