"""The default pipeline on the three examples: same outputs as the traced graph, batch norm
folded away, every elementwise op inside a fused node, and a memory plan that pays off."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.interpreter import interpret
from ember.ir.ops import OPS
from ember.pipeline import graph_bytes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> dict:
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="example")


@pytest.fixture(scope="module", params=["mlp", "cnn", "transformer"])
def compiled(request: pytest.FixtureRequest) -> tuple[dict, ember.Executable]:
    example = load(request.param)
    return example, ember.compile(example["model"], *example["example_inputs"])


def test_optimized_graph_computes_what_the_traced_graph_computes(compiled) -> None:
    example, exe = compiled
    inputs = example["example_inputs"]
    want = interpret(exe.traced, *inputs)[0]
    got = exe(*inputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_every_level_matches_the_examples_own_numpy_forward(name: str, level: int) -> None:
    """Each example defines the same network in float64 numpy: an oracle independent of Ember."""
    example = load(name)
    inputs = example["example_inputs"]
    want = example["numpy_forward"](*inputs)
    got = ember.compile(example["model"], *inputs, opt_level=level)(*inputs)
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    assert float(np.abs(got - want).max()) <= 1e-5 * max(scale, 1.0), f"opt_level={level}"


def test_no_batch_norm_and_no_loose_elementwise_op(compiled) -> None:
    _, exe = compiled
    ops = [node.op for node in exe.graph.nodes]
    assert "batch_norm" not in ops
    loose = [op for op in ops if op in OPS and OPS[op].elementwise]
    assert loose == [], f"elementwise ops outside fused nodes: {loose}"
    assert "fused" in ops


def test_report_shows_ledger_and_memory(compiled) -> None:
    _, exe = compiled
    report = exe.report()
    for name in ("fold-constants", "cse", "dce", "fuse", "plan-memory", "memory: arena",
                 "lower bound", "naive op-by-op"):
        assert name in report


def test_cnn_arena_against_naive_and_lower_bound() -> None:
    """The issue's memory figures on examples/cnn.py: arena <= 60% of the naive op-by-op sum
    of intermediates, and within 10% of the lower bound (largest live set) of its own plan."""
    from ember.passes.plan_memory import memory_report

    example = load("cnn")
    exe = ember.compile(example["model"], *example["example_inputs"])
    report = memory_report(exe.graph)
    naive = graph_bytes(exe.traced)
    assert report.arena_bytes <= 0.60 * naive
    assert report.arena_bytes <= 1.10 * report.lower_bound_bytes
