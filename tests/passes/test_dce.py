"""dce: identity when nothing is dead, idempotence, impure nodes stay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ember.passes.dce import EliminateDeadCode

import ember
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


def _golden_inputs() -> list[str]:
    """The input graphs of this pass's golden cases."""
    path = Path(__file__).parent / "golden" / "dce.ir"
    chunks = [chunk.partition("// EXPECT:")[0] for chunk in path.read_text().split("// -----")]
    return ["\n".join(line for line in chunk.splitlines() if not line.startswith("// RUN"))
            for chunk in chunks if chunk.strip()]


@pytest.mark.parametrize("source", _golden_inputs(),
                         ids=lambda source: source.partition("@")[2].partition("(")[0])
def test_golden_inputs_run_twice_give_the_same_text(source: str) -> None:
    once = EliminateDeadCode().run(ember.parse(source))
    twice = EliminateDeadCode().run(once)
    assert twice is once, "a second run of dce changed the graph again"
    assert str(twice) == str(once)
