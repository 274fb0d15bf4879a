"""cse: identity when nothing merges, idempotence, impure nodes, numerics against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ember.passes.cse import EliminateCommonSubexpressions

import ember
from ember.interpreter import interpret
from ember.ir.graph import GraphBuilder
from ember.ir.types import f32


def _repeated() -> object:
    builder = GraphBuilder("g")
    x = builder.input(f32[4], "x")
    total = builder.add(builder.exp(x), builder.exp(x))
    return builder.build([total, builder.neg(builder.exp(x))])


def test_merges_and_matches_numpy() -> None:
    graph = _repeated()
    merged = EliminateCommonSubexpressions().run(graph)
    assert [node.op for node in merged.nodes] == ["exp", "add", "neg"]
    x = np.random.default_rng(1).random(4, dtype=np.float32)
    total, negated = interpret(merged, x)
    np.testing.assert_allclose(total, 2 * np.exp(x.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(negated, -np.exp(x.astype(np.float64)), rtol=1e-6)


def test_is_idempotent_and_returns_the_same_graph_when_nothing_merges() -> None:
    once = EliminateCommonSubexpressions().run(_repeated())
    assert EliminateCommonSubexpressions().run(once) is once


def test_training_dropouts_never_merge() -> None:
    builder = GraphBuilder("g")
    x = builder.input(f32[64], "x")
    first = builder.dropout(x, p=0.5, training=True, seed=1)
    second = builder.dropout(x, p=0.5, training=True, seed=2)
    graph = builder.build([builder.add(first, second)])
    assert EliminateCommonSubexpressions().run(graph) is graph


def test_constants_merge_only_with_equal_data_and_name() -> None:
    builder = GraphBuilder("g")
    data = np.array([1.0, 2.0], np.float32)
    a, b = builder.const(data, name="w"), builder.const(data.copy(), name="w")
    c = builder.const(data, name="v")
    d = builder.const(np.array([1.0, 3.0], np.float32), name="w")
    graph = builder.build([builder.add(builder.add(a, b), builder.add(c, d))])
    merged = EliminateCommonSubexpressions().run(graph)
    assert [node.op for node in merged.nodes].count("const") == 3


def _golden_inputs() -> list[str]:
    """The input graphs of this pass's golden cases."""
    path = Path(__file__).parent / "golden" / "cse.ir"
    chunks = [chunk.partition("// EXPECT:")[0] for chunk in path.read_text().split("// -----")]
    return ["\n".join(line for line in chunk.splitlines() if not line.startswith("// RUN"))
            for chunk in chunks if chunk.strip()]


@pytest.mark.parametrize("source", _golden_inputs(),
                         ids=lambda source: source.partition("@")[2].partition("(")[0])
def test_golden_inputs_run_twice_give_the_same_text(source: str) -> None:
    once = EliminateCommonSubexpressions().run(ember.parse(source))
    twice = EliminateCommonSubexpressions().run(once)
    assert twice is once, "a second run of cse changed the graph again"
    assert str(twice) == str(once)
