"""fold-constants: behaviour that golden text shows poorly (identity, options, errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ember.passes.fold_constants import FoldConstants

import ember
from ember.driver import compile_graph, optimize, resolve_target
from ember.interpreter import interpret
from ember.ir.graph import GraphBuilder
from ember.ir.types import f32, i32
from ember.pipeline import parse_pipeline


def _weight_graph() -> tuple[ember.Graph, np.ndarray]:
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    builder = GraphBuilder("linear")
    x = builder.input(f32[4, 3], "x")
    w = builder.const(weight, name="0.weight")
    return builder.build([builder.matmul(x, builder.transpose(w, perm=(1, 0)))]), weight


def test_folds_a_transposed_weight_against_numpy() -> None:
    graph, weight = _weight_graph()
    folded = FoldConstants().run(graph)
    constants = folded.constants()
    np.testing.assert_array_equal(constants["0.weight.T"], weight.T)
    x = np.random.default_rng(0).random((4, 3), dtype=np.float32)
    (got,) = interpret(folded, x)
    np.testing.assert_allclose(got, x.astype(np.float64) @ weight.T.astype(np.float64), rtol=1e-6)


def test_returns_the_same_graph_when_nothing_folds() -> None:
    builder = GraphBuilder("g")
    x = builder.input(f32[3], "x")
    graph = builder.build([builder.exp(x)])
    assert FoldConstants().run(graph) is graph


def test_is_idempotent() -> None:
    graph, _ = _weight_graph()
    once = FoldConstants().run(graph)
    twice = FoldConstants().run(once)
    assert twice is once
    assert str(twice) == str(once)


def test_max_bytes_option_from_pipeline_text() -> None:
    (fold,) = parse_pipeline("fold-constants{max-bytes=16}")
    assert fold == FoldConstants(max_bytes=16)
    graph, _ = _weight_graph()  # the transposed weight is 24 bytes
    assert fold.run(graph) is graph


def test_integer_division_by_zero_is_left_for_run_time() -> None:
    builder = GraphBuilder("g")
    x = builder.input(i32[2], "x")
    quotient = builder.div(builder.const(np.array([7, 1], np.int32)),
                           builder.const(np.array([0, 1], np.int32)))
    graph = builder.build([builder.add(x, quotient)])
    assert FoldConstants().run(graph) is graph


def test_impure_ops_are_never_folded() -> None:
    builder = GraphBuilder("g")
    c = builder.const(np.ones(8, np.float32), name="c")
    graph = builder.build([builder.dropout(c, p=0.5, training=True, seed=3)])
    assert FoldConstants().run(graph) is graph


def test_folds_a_pure_region_and_keeps_an_impure_one() -> None:
    text = """graph @regions() -> (f32[3], f32[3]) {
  %c = const() {name = "w", value = dense<f32[3]: 1.0, 2.0, 3.0>} : f32[3]
  %0 = fused(%c) {kind = "elementwise"} : f32[3] {
  ^(%a: f32[3]):
    %1 = mul(%a, %a) : f32[3]
    yield %1
  }
  %2 = fused(%c) {kind = "elementwise"} : f32[3] {
  ^(%b: f32[3]):
    %3 = dropout(%b) {p = 0.5, seed = 0, training = true} : f32[3]
    yield %3
  }
  return %0, %2
}"""
    folded = FoldConstants().run(ember.parse(text))
    ops = [node.op for node in folded.nodes]
    assert ops == ["const", "const", "fused"]
    np.testing.assert_array_equal(folded.constants()["w.fused"], [1.0, 4.0, 9.0])


def test_a_result_with_a_layout_is_not_folded() -> None:
    from ember.ir.ops import OPS

    if "layout_convert" not in OPS:
        pytest.skip("no layout_convert op in this build")
    builder = GraphBuilder("g")
    c = builder.const(np.ones((1, 4, 2, 2), np.float32))
    graph = builder.build([builder.layout_convert(c, layout="nhwc", channels=4)])
    assert graph.outputs[0].type.layout == "nhwc"
    assert FoldConstants().run(graph) is graph


def _golden_inputs() -> list[str]:
    """The input graphs of this pass's golden cases."""
    path = Path(__file__).parent / "golden" / "fold_constants.ir"
    chunks = [chunk.partition("// EXPECT:")[0] for chunk in path.read_text().split("// -----")]
    return ["\n".join(line for line in chunk.splitlines() if not line.startswith("// RUN"))
            for chunk in chunks if chunk.strip()]


@pytest.mark.parametrize("source", _golden_inputs(),
                         ids=lambda source: source.partition("@")[2].partition("(")[0])
def test_golden_inputs_run_twice_give_the_same_text(source: str) -> None:
    once = FoldConstants().run(ember.parse(source))
    twice = FoldConstants().run(once)
    assert twice is once, "a second run of fold-constants changed the graph again"
    assert str(twice) == str(once)


def test_a_region_that_fails_on_its_constants_is_left_for_run_time() -> None:
    text = """graph @g(%x: i32[2]) -> (i32[2]) {
  %a = const() {value = dense<i32[2]: 7, 1>} : i32[2]
  %b = const() {value = dense<i32[2]: 0, 1>} : i32[2]
  %0 = fused(%a, %b) {kind = "elementwise"} : i32[2] {
  ^(%p: i32[2], %q: i32[2]):
    %1 = div(%p, %q) : i32[2]
    yield %1
  }
  %2 = add(%x, %0) : i32[2]
  return %2
}"""
    graph = ember.parse(text)
    assert FoldConstants().run(graph) is graph


def test_a_weight_only_matmuls_read_transposed_is_kept_for_matmul_nt() -> None:
    graph, weight = _weight_graph()
    kept = FoldConstants(matmul_transposes=False).run(graph)
    assert [n.op for n in kept.nodes] == ["const", "transpose", "matmul"]
    # the default pipeline: matmul_nt reads the weight itself, never a transposed copy
    optimized = optimize(graph, 3)
    (matmul,) = [n for n in optimized.nodes if n.op.startswith("matmul")]
    assert matmul.op == "matmul_nt"
    (const,) = [n for n in optimized.nodes if n.op == "const"]
    np.testing.assert_array_equal(const.attrs["value"].data, weight)
    x = np.random.default_rng(1).random((4, 3), dtype=np.float32)
    want = x.astype(np.float64) @ weight.T.astype(np.float64)
    for level in (0, 1, 2, 3):
        target, _ = resolve_target("cpu", None, level)
        exe = compile_graph(graph, target=target, opt_level=level)
        np.testing.assert_allclose(exe(x), want, rtol=1e-6)


def test_a_transpose_read_otherwise_still_folds() -> None:
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    builder = GraphBuilder("two_users")
    x = builder.input(f32[4, 3], "x")
    t = builder.transpose(builder.const(weight, name="w"), perm=(1, 0))
    graph = builder.build([builder.matmul(x, t), builder.exp(t)])
    folded = FoldConstants(matmul_transposes=False).run(graph)
    assert "transpose" not in [n.op for n in folded.nodes]
    np.testing.assert_array_equal(folded.constants()["w.T"], weight.T)


def test_matmul_transposes_option_parses() -> None:
    (kept,) = parse_pipeline("fold-constants{matmul-transposes=false}")
    assert kept == FoldConstants(matmul_transposes=False)
