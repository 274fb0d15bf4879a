"""dce: identity when nothing is dead, idempotence, impure nodes stay."""

from __future__ import annotations

import numpy as np
from ember.passes.dce import EliminateDeadCode

from ember.interpreter import interpret
from ember.ir.graph import GraphBuilder
from ember.ir.types import f32


def test_removes_dead_chain_and_keeps_results() -> None:
    builder = GraphBuilder("g")
    x = builder.input(f32[4], "x")
    builder.neg(builder.exp(x))  # dead
    graph = builder.build([builder.relu(builder.sin(x))])
    cleaned = EliminateDeadCode().run(graph)
    assert [node.op for node in cleaned.nodes] == ["sin", "relu"]
    values = np.linspace(-2, 2, 4, dtype=np.float32)
    (got,) = interpret(cleaned, values)
    np.testing.assert_allclose(got, np.maximum(np.sin(values.astype(np.float64)), 0), rtol=1e-6)


def test_same_graph_when_nothing_is_dead_and_idempotent() -> None:
    builder = GraphBuilder("g")
    x = builder.input(f32[4], "x")
    builder.exp(x)
    graph = builder.build([builder.neg(x)])
    once = EliminateDeadCode().run(graph)
    assert once is not graph
    assert EliminateDeadCode().run(once) is once


def test_unused_training_dropout_stays_with_its_operands() -> None:
    builder = GraphBuilder("g")
    x = builder.input(f32[4], "x")
    builder.dropout(builder.exp(x), p=0.5, training=True, seed=0)
    graph = builder.build([x])
    assert EliminateDeadCode().run(graph) is graph
