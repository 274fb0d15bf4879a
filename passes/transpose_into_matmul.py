"""transpose-into-matmul: a matmul whose right operand is a transposed matrix reads it directly.

    %t = transpose(%w) {perm = [1, 0]} : f32[1024,512]
    %y = matmul(%x, %t) : f32[128,512]
    // after
    %y = matmul_nt(%x, %w) : f32[128,512]          // x @ w.T: no transposed copy of w

A linear layer computes `x @ W.T`. With W a constant the transpose folds at compile time; with
W a run-time input (a train step's parameters) it would copy the weight on every call, in time
and in arena bytes. `matmul_nt` lets the GEMM pack its B panels from W's rows. The transpose
stays where something else reads it (dead code elimination removes it otherwise). The pass
runs after `fold-batchnorm`, whose linear-layer pattern is a plain matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.passes._rewrite import Producers, Rewrite, make_node, rewrite_nodes

from ember.ir.graph import Graph, Node
from ember.pipeline import Pass


def transposed_matrix(node: Node, producers: Producers) -> Node | None:
    """The `transpose(w, [1, 0])` node feeding the right operand of a matrix matmul, or None:
    the matmuls this pass rewrites (`fold-constants{matmul-transposes=false}` leaves their
    transposes to it)."""
    if node.op != "matmul" or node.inputs[0].ndim != 2 or node.inputs[1].ndim != 2:
        return None
    if not node.inputs[0].dtype.is_float:
        return None
    producer = producers.get(node.inputs[1])
    if producer is None or producer.op != "transpose" or tuple(producer.attrs["perm"]) != (1, 0):
        return None
    return producer


def _rewrite(node: Node, producers: Producers) -> Rewrite | None:
    transpose = transposed_matrix(node, producers)
    if transpose is None:
        return None
    return Rewrite.with_node(make_node("matmul_nt", (node.inputs[0], transpose.inputs[0]),
                                       node.loc))


@dataclass(frozen=True)
class TransposeIntoMatmul(Pass):
    """Rewrite matmul(a, transpose(b)) of matrices as matmul_nt(a, b)."""

    name: ClassVar[str] = "transpose-into-matmul"

    def run(self, graph: Graph) -> Graph:
        return rewrite_nodes(graph, _rewrite, regions=False)
