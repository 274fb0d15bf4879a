"""Constant folding: evaluate nodes whose operands are all constants, at compile time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from ember.passes._rewrite import Producers, Rewrite, constant_of, make_const, rewrite_nodes
from ember.passes.transpose_into_matmul import transposed_matrix

from ember.errors import EmberError
from ember.interpreter import Interpreter
from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import OPS
from ember.pipeline import Pass, is_pure

# How a folded weight's name records what was done to it: "0.weight" -> "0.weight.T".
_NAME_SUFFIX = {"transpose": "T"}


@dataclass(frozen=True)
class FoldConstants(Pass):
    """Evaluate pure nodes whose operands are all constants with the op's numpy reference.

    Before:
      %w = const() {name = "0.weight", value = dense<f32[2,3]: ...>} : f32[2,3]
      %0 = transpose(%w) {perm = [1, 0]} : f32[3,2]
      %1 = matmul(%x, %0) : f32[4,2]
    After:
      %w = const() {name = "0.weight", value = dense<f32[2,3]: ...>} : f32[2,3]
      %0 = const() {name = "0.weight.T", value = dense<f32[3,2]: ...>} : f32[3,2]
      %1 = matmul(%x, %0) : f32[4,2]

    A folded value of a named weight is named after it (`<name>.T` for a transpose,
    `<name>.<op>` otherwise). Never folded: impure ops (`dropout`), regions with an impure
    body, results larger than `max_bytes`, results with a non-default layout (a `const` has
    none), and nodes whose reference raises (integer division by zero stays a runtime error).
    With `matmul_transposes=false` (the default pipeline's choice), neither is a transposed
    matrix that only matmuls read, as their right operand: `transpose-into-matmul` makes those
    matmul_nt, whose GEMM packs the weight from its rows, and folding would only copy it on
    every compile (VGG-16's classifier: 85 MB, 0.2 s of a cached compile).
    Constants that become unused are left for `dce`.
    """

    name: ClassVar[str] = "fold-constants"

    max_bytes: int = 64 * 2**20
    matmul_transposes: bool = True

    def run(self, graph: Graph) -> Graph:
        kept = set() if self.matmul_transposes else _read_by_matmul_nt(graph)
        return rewrite_nodes(graph, lambda node, producers: None if set(node.outputs) & kept
                             else self._fold(node, producers))

    def _fold(self, node: Node, producers: Producers) -> Rewrite | None:
        if node.op == "const" or not node.inputs or not is_pure(node):
            return None
        arrays = [constant_of(value, producers) for value in node.inputs]
        if any(array is None for array in arrays):
            return None
        if any(v.type.layout or v.type.nbytes > self.max_bytes for v in node.outputs):
            return None
        results = _evaluate(node, tuple(arrays))  # type: ignore[arg-type]
        if results is None:
            return None
        name = _folded_name(node, producers)
        constants = []
        for index, (value, array) in enumerate(zip(node.outputs, results, strict=True)):
            suffix = f"{index}" if len(node.outputs) > 1 else ""
            # the results are fresh arrays or views of read-only constants: adopted, not copied
            constants.append(make_const(array, name + suffix if name else "", node.loc,
                                        value.hint, copy=False))
        return Rewrite(tuple(constants), tuple(c.output for c in constants))


def _read_by_matmul_nt(graph: Graph) -> set[Value]:
    """The transposed matrices that `transpose-into-matmul` will read in place: every user a
    matmul it rewrites, reading the transpose as its right operand only."""
    producers, users = graph.producers, graph.users

    def absorbed(transpose: Node) -> bool:
        readers = users.get(transpose.output, [])
        return transpose.output not in graph.outputs and all(
            transposed_matrix(reader, producers) is transpose
            and reader.inputs[0] is not transpose.output for reader in readers)

    return {transpose.output for transpose in (transposed_matrix(node, producers)
                                                for node in graph.nodes)
            if transpose is not None and absorbed(transpose)}


def _evaluate(node: Node, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...] | None:
    """The node's results as arrays of exactly its declared types, or None if it cannot run."""
    try:
        with np.errstate(all="ignore"):  # inf and nan are values, as at run time
            if node.body is not None:
                results = Interpreter(node.body).run_graph(node.body, arrays)
            else:
                results = OPS[node.op].evaluate(arrays, node.attrs)
    except (EmberError, ArithmeticError, ValueError, TypeError):
        return None
    conformed = []
    for value, result in zip(node.outputs, results, strict=True):
        array = np.asarray(result).astype(value.type.dtype.numpy, copy=False)
        if array.shape != value.type.shape:
            return None
        conformed.append(array)
    return tuple(conformed)


def _folded_name(node: Node, producers: Producers) -> str:
    """`<first named operand>.<what was done>`, or "" when no operand is a named weight."""
    for value in node.inputs:
        name = producers[value].attrs.get("name")
        if name:
            return f"{name}.{_NAME_SUFFIX.get(node.op, node.op)}"
    return ""
