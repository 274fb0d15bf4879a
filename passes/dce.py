"""Dead-code elimination: drop pure nodes whose results nobody uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.ir.graph import Graph, Node, Value
from ember.pipeline import Pass, is_pure


@dataclass(frozen=True)
class EliminateDeadCode(Pass):
    """Remove pure nodes whose outputs are unused, transitively; keep every impure node.

    Before:                                 After:
      %0 = exp(%x) : f32[4]                   %1 = relu(%x) : f32[4]
      %1 = relu(%x) : f32[4]                  return %1
      %2 = neg(%0) : f32[4]
      return %1

    Graph outputs are always live. An impure node (`dropout` in training) stays even when
    unused, and so does everything it reads. Region bodies are cleaned too: a region's
    yields are its live outputs. A multi-output node stays while any of its outputs is used.
    """

    name: ClassVar[str] = "dce"

    def run(self, graph: Graph) -> Graph:
        live: set[Value] = set(graph.outputs)
        kept: list[Node] = []
        changed = False
        for node in reversed(graph.nodes):
            if is_pure(node) and not any(value in live for value in node.outputs):
                changed = True
                continue
            if node.body is not None:
                body = self.run(node.body)
                if body is not node.body:
                    node = node.replace(body=body)
                    changed = True
            live.update(node.inputs)
            kept.append(node)
        if not changed:
            return graph
        return graph.replace(nodes=tuple(reversed(kept)))
