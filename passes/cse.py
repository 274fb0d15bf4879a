"""Common-subexpression elimination: compute each pure expression once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.ir.graph import Graph, Node, Value
from ember.pipeline import Pass, is_pure


@dataclass(frozen=True)
class EliminateCommonSubexpressions(Pass):
    """Reuse the first of several pure nodes that compute the same thing.

    Before:                                 After:
      %0 = exp(%x) : f32[4]                   %0 = exp(%x) : f32[4]
      %1 = exp(%x) : f32[4]                   %1 = add(%0, %0) : f32[4]
      %2 = add(%0, %1) : f32[4]

    Two nodes compute the same thing when their `cse_key()` is equal: same op, same operand
    values, same attributes (so two constants merge only with the same data and the same
    name) and same result types. Impure nodes (`dropout` in training) never merge: each
    draws its own mask. Region bodies are cleaned on their own; a region never reuses a
    value of the enclosing graph.
    """

    name: ClassVar[str] = "cse"

    def run(self, graph: Graph) -> Graph:
        first: dict[tuple[object, ...], Node] = {}
        rename: dict[Value, Value] = {}
        kept: list[Node] = []
        changed = False
        for original in graph.nodes:
            node = original.with_inputs_renamed(rename)
            if node.body is not None:
                body = self.run(node.body)
                node = node if body is node.body else node.replace(body=body)
            changed = changed or node is not original
            if not is_pure(node):
                kept.append(node)
                continue
            key = node.cse_key()
            prior = first.get(key)
            if prior is None:
                first[key] = node
                kept.append(node)
                continue
            rename.update(zip(node.outputs, prior.outputs, strict=True))
        if not rename and not changed:
            return graph  # nothing merged: hand back the same object
        outputs = tuple(rename.get(value, value) for value in graph.outputs)
        return graph.replace(nodes=tuple(kept), outputs=outputs)
