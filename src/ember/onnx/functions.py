"""Operators without a converter, imported through the function body ONNX defines for them.

Many ONNX operators (Attention, NegativeLogLikelihoodLoss, RMSNormalization, Shrink, ...) come
with a function: a subgraph of simpler ONNX operators that is, by the standard, the operator's
meaning. When no converter implements a node's version, the importer expands the node into that
body and converts its nodes one by one (each by its converter, or expanded in turn):

    Shrink(x) {lambd = 0.3}  ->  Constant {value_float = 0.3}, CastLike, Neg, Less, Where, ...

Static bodies (`schema.function_body`) refer to the node's attributes by name
(`ref_attr_name`); they take the node's value, or the schema's default. Context-dependent bodies
(`get_context_dependent_function`) are built by onnx for the node's attributes and input types.
Either is written against an opset of its own (the body's `opset_import`), and its nodes are
converted at that opset.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import onnx
from onnx import defs

from ember.errors import UnsupportedError
from ember.onnx import control

_EXPANSIONS = itertools.count()  # a fresh prefix for the values of each expanded body


def _schema(op_type: str, opset: int, domain: str = "") -> defs.OpSchema | None:
    try:
        return defs.get_schema(op_type, opset, "" if domain == "ai.onnx" else domain)
    except defs.SchemaError:
        return None


def has_function(node: onnx.NodeProto, opset: int) -> bool:
    """Whether ONNX defines a function body for `node`'s operator at `opset` (the opset the
    model imports for the node's domain: ONNX's own, or one such as ai.onnx.preview)."""
    schema = _schema(node.op_type, opset, node.domain)
    if schema is None:
        return False
    return bool(schema.has_function and schema.function_opset_versions) or bool(
        schema.has_context_dependent_function and schema.context_dependent_function_opset_versions)


def _body_version(versions: Sequence[int], opset: int) -> int:
    """Which of a schema's bodies to use: the newest written for an opset up to `opset`, else
    the oldest. Every body of one schema defines that same operator version; they differ only
    in the opset their own nodes are written against."""
    older = [v for v in versions if v <= opset]
    return max(older) if older else min(versions)


def function_body(node: onnx.NodeProto, opset: int,
                  input_types: Sequence[onnx.TypeProto | None]) -> onnx.FunctionProto:
    """The function body of `node` at `opset` (`input_types` build a context-dependent one)."""
    schema = _schema(node.op_type, opset, node.domain)
    assert schema is not None and has_function(node, opset)
    body = onnx.FunctionProto()
    if schema.has_function and schema.function_opset_versions:
        version = _body_version(schema.function_opset_versions, opset)
        body.ParseFromString(schema.get_function_with_opset_version(version))
        return body
    types = [(t or onnx.TypeProto()).SerializeToString() for t in input_types]
    version = _body_version(schema.context_dependent_function_opset_versions, opset)
    data = schema.get_context_dependent_function_with_opset_version(
        version, node.SerializeToString(), types)
    if not data:
        raise UnsupportedError(f"{node.op_type}: ONNX could not build its function body for "
                               "these inputs")
    body.ParseFromString(data)
    return body


def body_opset(body: onnx.FunctionProto, default: int) -> int:
    """The default-domain opset the body's nodes are written against."""
    return next((int(e.version) for e in body.opset_import if e.domain in ("", "ai.onnx")),
                default)


def expand(node: onnx.NodeProto, opset: int, body: onnx.FunctionProto) -> list[onnx.NodeProto]:
    """The body's nodes with its values renamed into the caller's (formal inputs and outputs
    become the node's, the rest fresh names) and attribute references resolved."""
    prefix = f"{node.name or node.op_type}/{next(_EXPANSIONS)}/"
    rename = {formal: (node.input[i] if i < len(node.input) else "")
              for i, formal in enumerate(body.input)}
    for i, formal in enumerate(body.output):
        given = node.output[i] if i < len(node.output) else ""
        rename[formal] = given or prefix + formal
    schema = _schema(node.op_type, opset, node.domain)
    given = {a.name: a for a in node.attribute}
    nodes = []
    for inner in body.node:
        if inner.domain not in ("", "ai.onnx"):
            raise UnsupportedError(f"{node.op_type}: its ONNX function body uses {inner.op_type}"
                                   f" of domain {inner.domain}")
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.name = prefix + (inner.name or inner.op_type)
        copy.ClearField("input")
        copy.ClearField("output")
        copy.input.extend(rename.setdefault(n, prefix + n) if n else "" for n in inner.input)
        copy.output.extend(rename.setdefault(n, prefix + n) if n else "" for n in inner.output)
        copy.ClearField("attribute")
        for attribute in inner.attribute:
            resolved = _resolve(attribute, given, schema)
            if resolved is not None:
                copy.attribute.append(resolved)
        # Subgraphs (a Loop's or If's body) read the function's values by their new names.
        for attribute in copy.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                attribute.g.CopyFrom(control.rename_free(attribute.g, rename))
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for graph in attribute.graphs:
                    graph.CopyFrom(control.rename_free(graph, rename))
        nodes.append(copy)
    return nodes


def _resolve(attribute: onnx.AttributeProto, given: dict[str, onnx.AttributeProto],
             schema: defs.OpSchema | None) -> onnx.AttributeProto | None:
    """An inner node's attribute: itself, or the caller's value (or the schema's default) of
    the attribute it refers to; None when the reference has neither."""
    if not attribute.ref_attr_name:
        return attribute
    source = given.get(attribute.ref_attr_name)
    if source is None and schema is not None and attribute.ref_attr_name in schema.attributes:
        default = schema.attributes[attribute.ref_attr_name].default_value
        source = default if default.type else None
    if source is None:
        return None
    resolved = onnx.AttributeProto()
    resolved.CopyFrom(source)
    resolved.name = attribute.name
    return resolved
