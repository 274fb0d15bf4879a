"""Producer-consumer fusion into `fused` region nodes.

Before:

    %0 = matmul(%x, %w) : f32[8,256]
    %1 = add(%0, %b) : f32[8,256]
    %2 = relu(%1) : f32[8,256]
    return %2

After `fuse`:

    %0 = fused(%x, %w, %b) {kind = "matmul"} : f32[8,256] {
    ^(%x: f32[8,784], %w: f32[784,256], %b: f32[256]):
      %1 = matmul(%x, %w) : f32[8,256]
      %2 = add(%1, %b) : f32[8,256]
      %3 = relu(%2) : f32[8,256]
      yield %3
    }
    return %0

Groups (the `kind` attribute of the fused node):
- `elementwise`: chains and trees of elementwise ops (and `broadcast_to`);
- `reduction`: `sum`/`mean`/`max`/`min`/`prod`/`softmax`/`log_softmax`/`layer_norm` with an
  elementwise prologue and epilogue (a softmax or layer norm written out by hand is one group;
  all reductions of a group read inputs of one shape);
- `matmul` / `conv`: one `matmul`, `conv2d` or `conv2d_nchwc`, first in the body, with an
  elementwise epilogue of its output shape (bias, activation, residual add).

Rules: impure nodes and existing fused nodes never join a group (so running `fuse` twice changes
nothing the second time); a value that a group computes and something outside reads becomes an
extra result of the fused node (fusion never recomputes); no group both feeds and reads an
outside node (a cycle check on the graph of groups); small constants read only by a group move
into its region; at most `max-ops` nodes per group; a group of one node stays a plain node.
The planning lives in `_fusion.py` (with the explanations), the rewriting in `_fusion_build.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.ir.graph import Graph
from ember.pipeline import Pass

from ._fusion import Decision, explain_fusion, format_decisions, plan_fusion
from ._fusion_build import build_fused_graph

__all__ = ["Decision", "FuseOperators", "explain", "explain_fusion", "format_decisions"]


@dataclass(frozen=True)
class FuseOperators(Pass):
    """Fuse elementwise chains, reductions and matmul/conv epilogues into region nodes."""

    name: ClassVar[str] = "fuse"
    max_ops: int = 16  # the most nodes (constants not counted) one fused node may hold
    # a train step: nodes after the loss (graph output 0) never join the forward's kernels
    phases: bool = False

    def run(self, graph: Graph) -> Graph:
        plan = plan_fusion(graph, self.max_ops, self.phases)
        return build_fused_graph(graph, plan.groups)  # the same graph when no group formed

    def explain(self, graph: Graph) -> list[Decision]:
        """Why each candidate node was or was not fused, with this pass's options."""
        return plan_fusion(graph, self.max_ops, self.phases).decisions


def explain(graph: Graph, **options: object) -> str:
    """The fusion decisions for `graph` as readable lines (`ember ir --explain fusion`).

    Options are the pass's, spelled either way: `explain(graph, max_ops=4)` or
    `explain(graph, **{"max-ops": 4})`.
    """
    return format_decisions(explain_fusion(graph, dict(options)))
