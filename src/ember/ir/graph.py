"""The graph IR: `Value`, `Node`, `Graph` and a `GraphBuilder` that reads like numpy.

The IR is a flat list of nodes in topological order (A-normal form). Values compare by identity.
All three classes are frozen: a pass builds new tuples and returns a new graph, or the very same
graph object when it changed nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.ir.attrs import Attrs, AttrValue, Const
from ember.ir.types import DType, TensorType

if TYPE_CHECKING:
    import networkx


@dataclass(frozen=True, slots=True, eq=False)
class Value:
    """An SSA value. Compared by identity, so two equal-looking values are still distinct."""

    type: TensorType
    hint: str = ""  # preferred printed name; the printer renumbers to keep names unique

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def ndim(self) -> int:
        return self.type.ndim

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"Value({self.type}{', ' + self.hint if self.hint else ''} @{id(self):x})"


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One operation: `outputs = op(inputs) {attrs}`; `body` is set only for region ops."""

    op: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    attrs: Attrs = field(default_factory=Attrs)
    body: Graph | None = None
    loc: str = ""  # the user's `file:line` this node was traced from, or ""

    @property
    def output(self) -> Value:
        """The single output of a one-output node."""
        assert len(self.outputs) == 1, f"{self.op} has {len(self.outputs)} outputs"
        return self.outputs[0]

    def replace(self, **changes: Any) -> Node:
        return dataclasses.replace(self, **changes)

    def with_inputs_renamed(self, rename: Mapping[Value, Value]) -> Node:
        """The same node reading `rename[v]` for every input `v` in `rename`; `self` if none is."""
        if not any(v in rename for v in self.inputs):
            return self
        return self.replace(inputs=tuple(rename.get(v, v) for v in self.inputs))

    def cse_key(self) -> tuple[object, ...]:
        """Two pure nodes with equal keys compute the same values."""
        return (self.op, self.inputs, self.attrs, self.body, tuple(v.type for v in self.outputs))

    def __str__(self) -> str:
        from ember.ir.printer import print_node

        return print_node(self)


@dataclass(frozen=True, eq=False)
class Graph:
    """A function in A-normal form. `nodes` are in topological order; `verify()` checks it."""

    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Value, ...]

    def replace(self, **changes: Any) -> Graph:
        """A new graph with some fields changed (derived caches are not carried over)."""
        return dataclasses.replace(self, **changes)

    # Derived facts are computed on demand and cached per graph object.
    @cached_property
    def producers(self) -> dict[Value, Node]:
        """The node that defines each non-input value."""
        return {value: node for node in self.nodes for value in node.outputs}

    @cached_property
    def users(self) -> dict[Value, list[Node]]:
        """The nodes that read each value, in node order; a node that reads a value twice
        (`add(%x, %x)`) is listed once. Values nobody reads have no entry."""
        users: dict[Value, list[Node]] = {}
        for node in self.nodes:
            for value in dict.fromkeys(node.inputs):
                users.setdefault(value, []).append(node)
        return users

    def producer(self, value: Value) -> Node | None:
        return self.producers.get(value)

    @property
    def input_types(self) -> tuple[TensorType, ...]:
        return tuple(v.type for v in self.inputs)

    @property
    def output_types(self) -> tuple[TensorType, ...]:
        return tuple(v.type for v in self.outputs)

    def constants(self) -> dict[str, np.ndarray]:
        """Named constants (module weights) by name."""
        found = {}
        for node in self.nodes:
            if node.op == "const" and node.attrs.get("name"):
                found[str(node.attrs["name"])] = node.attrs["value"].data  # type: ignore[union-attr]
        return found

    def to_networkx(self) -> networkx.MultiDiGraph:
        """A networkx view for analyses: one vertex per node index, edges along values.

        Vertices are node indices, plus "input:i" and "output:i"; edge data holds the `value`.
        """
        import networkx

        digraph = networkx.MultiDiGraph()
        where: dict[Value, object] = {}
        for index, value in enumerate(self.inputs):
            where[value] = f"input:{index}"
            digraph.add_node(f"input:{index}", value=value)
        for index, node in enumerate(self.nodes):
            digraph.add_node(index, node=node)
            for value in node.inputs:
                digraph.add_edge(where[value], index, value=value)
            for value in node.outputs:
                where[value] = index
        for index, value in enumerate(self.outputs):
            digraph.add_node(f"output:{index}")
            digraph.add_edge(where[value], f"output:{index}", value=value)
        return digraph

    def __str__(self) -> str:
        from ember.ir.printer import print_graph

        return print_graph(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython shows the text form
        printer.text(str(self))


class GraphBuilder:
    """Builds a graph op by op: `b.relu(b.add(b.matmul(x, w), bias))`.

    Any registered op is a method: positional arguments are input values, keyword arguments are
    attributes. A one-output op returns its Value, a multi-output op a tuple of Values. Types are
    inferred with the op's rule, so a bad combination raises ShapeError right where it is built.
    """

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.loc = ""  # attached to every node built while set

    def input(self, type_: TensorType, hint: str = "") -> Value:
        value = Value(type_, hint)
        self.inputs.append(value)
        return value

    def op(self, op: str, *inputs: Value, **attrs: AttrValue | None) -> Value | tuple[Value, ...]:
        """Add one node and return its output(s)."""
        from ember.errors import ShapeError
        from ember.ir.ops import get_op

        opdef = get_op(op)
        for index, value in enumerate(inputs):
            if not isinstance(value, Value):
                raise ShapeError(f"{op}: input {index} is a {type(value).__name__}, not a Value "
                                 "(pass constants through `const`)")
        full_attrs = opdef.make_attrs(attrs)
        types = opdef.infer_types(tuple(v.type for v in inputs), full_attrs)
        outputs = tuple(Value(t) for t in types)
        self.nodes.append(Node(op, tuple(inputs), outputs, full_attrs, None, self.loc))
        return outputs[0] if len(outputs) == 1 else outputs

    def const(self, array: np.ndarray | Const, name: str = "") -> Value:
        """A constant node holding a frozen copy of `array` (the caller's array is untouched)."""
        value = array if isinstance(array, Const) else np.asarray(array)
        return self.op("const", value=value, name=name or None)  # type: ignore[return-value]

    def add_node(self, node: Node) -> None:
        self.nodes.append(node)

    def build(self, outputs: Iterable[Value]) -> Graph:
        return Graph(self.name, tuple(self.inputs), tuple(self.nodes), tuple(outputs))

    def __getattr__(self, op: str) -> Any:
        if op.startswith("_"):
            raise AttributeError(op)

        def build_op(*inputs: Value, **attrs: AttrValue | None) -> Value | tuple[Value, ...]:
            return self.op(op, *inputs, **attrs)

        return build_op


def all_values(graph: Graph) -> Sequence[Value]:
    """Every value of the graph in definition order: inputs, then node outputs."""
    return list(graph.inputs) + [v for node in graph.nodes for v in node.outputs]
