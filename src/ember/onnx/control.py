"""ONNX control flow (If, Loop, Scan) rewritten into plain nodes the converters handle.

Ember graphs are static, so control flow is resolved at import time: an `If` whose condition
is known takes its branch (otherwise both branches run and `Where` selects each output, when
the branches agree in shape and type); a `Loop` whose trip count and condition are known at
import time, and a `Scan` over inputs of static length, are unrolled, the body once per
iteration. This module only rewrites protos: each iteration's body nodes with their values
renamed apart (`prefix` + name), reading the values the caller names for the body's formal
inputs; `ember.onnx.loader` converts the nodes and decides when a loop stops.

ONNX subgraphs may read values of the scopes around them by name; `free_names` lists what a
subgraph reads from outside, and the renaming follows those references into nested subgraphs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Operator versions (schema since_versions) the importer unrolls; Scan-8 (with a batch axis
# and sequence_lens) and Loop-1 are not among them.
VERSIONS: dict[str, tuple[int, ...]] = {
    "If": (1, 11, 13, 16, 19, 21, 23, 24, 25),
    "Loop": (11, 13, 16, 19, 21, 23, 24, 25),
    "Scan": (9, 11, 16, 19, 21, 23, 24, 25),
}
# The opset the helper nodes this module makes (Constant, Gather, Unsqueeze, Concat, Where,
# Identity) are written against.
HELPER_OPSET = 21
# The name ending that marks those helper nodes.
HELPER_MARK = "@helper"
# Iterations of one Loop or Scan the importer unrolls; a longer one is refused.
UNROLL_LIMIT = 4096

_COUNTER = itertools.count()

GRAPH_KINDS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def is_control_flow(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type in VERSIONS


def supports(node: onnx.NodeProto, opset: int) -> bool:
    """Whether the importer unrolls `node`'s operator at `opset`."""
    try:
        version = onnx.defs.get_schema(node.op_type, opset, "").since_version
    except onnx.defs.SchemaError:
        return False
    return version in VERSIONS[node.op_type]


def fresh_prefix(node: onnx.NodeProto) -> str:
    return f"{node.name or node.op_type}/{next(_COUNTER)}/"


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The subgraphs among `node`'s attributes."""
    found = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            found.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            found.extend(attribute.graphs)
    return found


def _defined(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    names |= {t.values.name for t in graph.sparse_initializer}
    return names | {out for node in graph.node for out in node.output if out}


def free_names(graph: onnx.GraphProto) -> list[str]:
    """The names `graph` (and the subgraphs in it) reads from the scopes around it."""
    defined = _defined(graph)
    found: dict[str, None] = {}
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                found[name] = None
        for inner in subgraphs(node):
            for name in free_names(inner):
                if name not in defined:
                    found[name] = None
    return list(found)


def implicit_inputs(node: onnx.NodeProto) -> list[str]:
    """The outer values `node`'s subgraphs read: inputs of the node for ordering."""
    return [name for graph in subgraphs(node) for name in free_names(graph)]


def rename_free(graph: onnx.GraphProto, rename: Mapping[str, str]) -> onnx.GraphProto:
    """A copy of `graph` whose references to outer values follow `rename`."""
    copy = onnx.GraphProto()
    copy.CopyFrom(graph)
    defined = _defined(graph)
    for node in copy.node:
        for index, name in enumerate(node.input):
            if name and name not in defined and name in rename:
                node.input[index] = rename[name]
        _rename_attributes(node, {k: v for k, v in rename.items() if k not in defined})
    return copy


def _rename_attributes(node: onnx.NodeProto, rename: Mapping[str, str]) -> None:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            attribute.g.CopyFrom(rename_free(attribute.g, rename))
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for graph in attribute.graphs:
                graph.CopyFrom(rename_free(graph, rename))


def inline(graph: onnx.GraphProto, prefix: str, bound: Mapping[str, str]
           ) -> tuple[list[onnx.NodeProto], list[str]]:
    """`graph`'s nodes with its formal inputs read from the values `bound` names, its own
    values renamed to `prefix` + name (initializers become Constant nodes), and the names its
    outputs get. Outer references stay as they are."""
    rename = dict(bound)
    for name in _defined(graph):
        rename.setdefault(name, prefix + name)
    nodes = []
    for tensor in graph.initializer:
        value = onnx.TensorProto()
        value.CopyFrom(tensor)
        nodes.append(helper.make_node("Constant", [], [rename[tensor.name]], value=value,
                                      name=prefix + tensor.name))
    for index, inner in enumerate(graph.node):
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.name = prefix + (inner.name or f"{inner.op_type}_{index}")
        copy.ClearField("input")
        copy.ClearField("output")
        copy.input.extend(rename.get(n, n) if n else "" for n in inner.input)
        copy.output.extend(rename[n] if n else "" for n in inner.output)
        _rename_attributes(copy, rename)
        nodes.append(copy)
    return nodes, [rename.get(v.name, v.name) for v in graph.output]


def helper_node(op_type: str, inputs: Sequence[str], outputs: Sequence[str],
                **attrs: object) -> onnx.NodeProto:
    """A node this module adds, written against HELPER_OPSET (its name ends in HELPER_MARK)."""
    return helper.make_node(op_type, list(inputs), list(outputs),
                            name=outputs[0] + HELPER_MARK, **attrs)


def constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper_node("Constant", [], [name], value=numpy_helper.from_array(
        np.asarray(value), name))


def stacked(names: Sequence[str], axis: int, output: str, prefix: str
            ) -> list[onnx.NodeProto]:
    """Nodes joining the values `names` along a new axis `axis` (negative: of the result) into
    `output`."""
    axes = prefix + "axes"
    nodes = [constant(axes, np.array([axis], np.int64))]
    parts = []
    for index, name in enumerate(names):
        part = f"{prefix}part{index}"
        nodes.append(helper_node("Unsqueeze", [name, axes], [part]))
        parts.append(part)
    nodes.append(helper_node("Concat", parts, [output], axis=axis))
    return nodes


@dataclass(frozen=True)
class ScanPlan:
    """A Scan node's layout: N states, M scan inputs with their axes and directions, K scan
    outputs with theirs."""

    states: int
    scan_axes: tuple[int, ...]
    scan_reverse: tuple[bool, ...]
    output_axes: tuple[int, ...]
    output_reverse: tuple[bool, ...]

    @staticmethod
    def of(node: onnx.NodeProto, body: onnx.GraphProto) -> ScanPlan:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        scans = int(attrs["num_scan_inputs"])
        states = len(node.input) - scans
        outputs = len(body.output) - states
        if states < 0 or outputs < 0:
            raise ValueError(f"{scans} scan inputs of {len(node.input)} inputs, with a body of "
                             f"{len(body.output)} outputs")
        directions = list(attrs.get("scan_input_directions", [0] * scans))
        # Scan-9 named them directions only; from 11 on they may be given per axis too
        axes = list(attrs.get("scan_input_axes", [0] * scans))
        out_axes = list(attrs.get("scan_output_axes", [0] * outputs))
        out_directions = list(attrs.get("scan_output_directions", [0] * outputs))
        for what, values, count in (("scan_input_directions", directions, scans),
                                    ("scan_input_axes", axes, scans),
                                    ("scan_output_axes", out_axes, outputs),
                                    ("scan_output_directions", out_directions, outputs)):
            if len(values) != count:
                raise ValueError(f"{what} has {len(values)} entries for {count} values")
        return ScanPlan(states, tuple(int(a) for a in axes),
                        tuple(bool(d) for d in directions), tuple(int(a) for a in out_axes),
                        tuple(bool(d) for d in out_directions))


def scan_slices(inputs: Sequence[str], plan: ScanPlan, step: int, length: int, prefix: str
                ) -> tuple[list[onnx.NodeProto], list[str]]:
    """Nodes taking element `step` (counted from the end for a reversed input) along each scan
    input's axis, which the slice drops."""
    nodes, names = [], []
    for index, (name, axis, reverse) in enumerate(zip(inputs, plan.scan_axes, plan.scan_reverse,
                                                      strict=True)):
        position = length - 1 - step if reverse else step
        where = f"{prefix}at{index}"
        sliced = f"{prefix}slice{index}"
        nodes.append(constant(where, np.array(position, np.int64)))
        nodes.append(helper_node("Gather", [name, where], [sliced], axis=axis))
        names.append(sliced)
    return nodes, names
