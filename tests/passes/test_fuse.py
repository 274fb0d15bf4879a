"""The `fuse` pass beyond its golden cases: idempotence, traced models, explanations, region
invariants, and random graphs.

References are independent of Ember: float64 numpy for the traced models; for random graphs the
reference interpreter on the unfused graph (op-by-op numpy references, the golden runner's rule).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from ember.passes.fuse import FuseOperators, explain, explain_fusion, format_decisions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ember
from ember.interpreter import interpret
from ember.ir.graph import Graph, GraphBuilder
from ember.ir.ops import OPS
from ember.ir.types import DType, TensorType
from ember.ir.verify import verify
from ember.nn import functional as F
from ember.pipeline import parse_pipeline, random_inputs

F32 = DType("f32")
GOLDEN = Path(__file__).parent / "golden" / "fuse.ir"


def golden_inputs() -> list[str]:
    """The input graph of every case in the fuse golden file."""
    chunks = [c for c in GOLDEN.read_text().split("// -----") if c.strip()]
    sources = [c.partition("// EXPECT:")[0] for c in chunks]
    return ["\n".join(l for l in s.splitlines() if not l.startswith("//")) for s in sources]


FUSE_CASES = golden_inputs()


def f32(*shape: int) -> TensorType:
    return TensorType(F32, tuple(shape))


def fuse(graph: Graph, **options: int) -> Graph:
    result = FuseOperators(**options).run(graph)
    verify(result)
    return result


def unfused_elementwise(graph: Graph) -> list[str]:
    """Elementwise nodes left at the top level of a graph (outside every fused node)."""
    return [str(n) for n in graph.nodes if n.op in OPS and OPS[n.op].elementwise]


# --- idempotence and determinism -------------------------------------------------------------


@pytest.mark.parametrize("source", FUSE_CASES)
def test_fuse_twice_changes_nothing_the_second_time(source: str) -> None:
    """A second run returns the very same graph: fused nodes never nest, nothing new fuses."""
    once = fuse(ember.parse(source))
    assert FuseOperators().run(once) is once
    bodies = [inner for node in once.nodes if node.body for inner in node.body.nodes]
    assert all(inner.op != "fused" for inner in bodies)


@pytest.mark.parametrize("source", FUSE_CASES)
def test_fuse_is_deterministic(source: str) -> None:
    first = str(fuse(ember.parse(source)))
    second = str(fuse(ember.parse(source)))
    assert first == second


def test_does_nothing_returns_the_same_graph() -> None:
    builder = GraphBuilder("plain")
    x = builder.input(f32(4, 8), "x")
    graph = builder.build([builder.transpose(builder.relu(x), perm=(1, 0))])
    assert FuseOperators().run(graph) is graph


def test_pipeline_text_sets_max_ops() -> None:
    (pass_,) = parse_pipeline("fuse{max-ops=3}")
    assert pass_ == FuseOperators(max_ops=3)
    assert str(pass_) == "fuse{max-ops=3}"


# --- region invariants -----------------------------------------------------------------------


def test_anchor_is_first_in_body_and_named_weights_stay_outside() -> None:
    builder = GraphBuilder("linear")
    x = builder.input(f32(2, 4), "x")
    weight = builder.const(np.ones((4, 3), np.float32), name="fc.weight")
    bias = builder.const(np.full((3,), 0.5, np.float32), name="fc.bias")
    scale = builder.const(np.float32(2.0))
    y = builder.mul(builder.relu(builder.add(builder.matmul(x, weight), bias)), scale)
    result = fuse(builder.build([y]))
    (fused,) = [n for n in result.nodes if n.op == "fused"]
    assert fused.attrs["kind"] == "matmul"
    assert fused.body.nodes[0].op == "matmul"
    assert {str(n.attrs["name"]) for n in result.nodes if n.op == "const"} == {"fc.weight",
                                                                               "fc.bias"}
    assert [n.op for n in fused.body.nodes] == ["matmul", "add", "relu", "const", "mul"]
    expected = np.maximum(np.ones((2, 4)) @ np.ones((4, 3)) + 0.5, 0) * 2.0
    (got,) = interpret(result, np.ones((2, 4), np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_constant_read_inside_and_outside_is_copied() -> None:
    builder = GraphBuilder("shared")
    x = builder.input(f32(4), "x")
    two = builder.const(np.full((4,), 2.0, np.float32))
    inner = builder.exp(builder.mul(x, two))
    outer = builder.transpose(two, perm=(0,))
    result = fuse(builder.build([inner, outer]))
    assert [n.op for n in result.nodes] == ["const", "fused", "transpose"]
    assert result.nodes[1].body.nodes[0].op == "const"
    data = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
    got_inner, got_outer = interpret(result, data)
    np.testing.assert_allclose(got_inner, np.exp(2.0 * data.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(got_outer, [2.0] * 4)


def test_group_level_cycle_is_refused() -> None:
    """No path of single nodes leaves the neg group and comes back, but once tanh, exp and
    their add form one group, neg -> transpose -> group -> transpose -> add is a cycle."""
    builder = GraphBuilder("cycle")
    x = builder.input(f32(4, 4), "x")
    first = builder.exp(x)
    first_turned = builder.transpose(first, perm=(1, 0))
    negated = builder.neg(x)
    negated_turned = builder.transpose(negated, perm=(1, 0))
    joined = builder.add(builder.tanh(negated_turned), first)
    late = builder.add(negated, first_turned)
    graph = builder.build([joined, late])
    result = fuse(graph)
    assert [n.op for n in result.nodes] == ["neg", "transpose", "fused", "transpose", "add"]
    data = np.random.default_rng(2).standard_normal((4, 4)).astype(np.float32)
    d64 = data.astype(np.float64)
    got_joined, got_late = interpret(result, data)
    np.testing.assert_allclose(got_joined, np.tanh(-d64.T) + np.exp(d64), rtol=1e-5)
    np.testing.assert_allclose(got_late, -d64 + np.exp(d64).T, rtol=1e-5)
    assert ("kept   add %6 not fused with the neg %2 group: would create a cycle through "
            "transpose %3") in explain(graph).splitlines()


def test_cycle_through_several_unfused_nodes_is_refused() -> None:
    """exp -> transpose -> transpose -> add also reads exp directly: fusing add into the exp
    group would close a cycle two nodes long, which the search must follow hop by hop."""
    builder = GraphBuilder("detour")
    x = builder.input(f32(3, 5), "x")
    first = builder.exp(x)
    back = builder.transpose(builder.transpose(first, perm=(1, 0)), perm=(1, 0))
    graph = builder.build([builder.add(builder.relu(first), back)])
    result = fuse(graph)
    assert [n.op for n in result.nodes] == ["fused", "transpose", "transpose", "add"]
    data = np.random.default_rng(3).standard_normal((3, 5)).astype(np.float32)
    d64 = data.astype(np.float64)
    np.testing.assert_allclose(interpret(result, data)[0],
                               np.maximum(np.exp(d64), 0.0) + np.exp(d64), rtol=1e-6)


def test_long_chain_plans_into_full_groups() -> None:
    """5,000 elementwise nodes in a row: every group holds max-ops nodes, the last the rest."""
    builder = GraphBuilder("chain")
    value = builder.input(f32(16), "x")
    for i in range(5000):
        value = builder.tanh(value) if i % 2 else builder.neg(value)
    result = fuse(builder.build([value]), max_ops=16)
    assert [len(n.body.nodes) for n in result.nodes] == [16] * 312 + [8]
    data = np.linspace(-2.0, 2.0, 16, dtype=np.float32)
    want = data.astype(np.float64)
    for i in range(5000):
        want = np.tanh(want) if i % 2 else -want
    np.testing.assert_allclose(interpret(result, data)[0], want, rtol=1e-4)


# --- traced models ---------------------------------------------------------------------------


def test_traced_mlp_fuses_every_elementwise_op() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    w1, b1 = rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal(16).astype(
        np.float32)
    w2, b2 = rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal(4).astype(
        np.float32)

    def mlp(x, w1, b1, w2, b2):
        return F.sigmoid(F.relu(x @ w1 + b1) @ w2 + b2)

    graph = ember.trace(mlp, x, w1, b1, w2, b2)
    result = fuse(graph)
    assert unfused_elementwise(result) == []
    assert [n.attrs["kind"] for n in result.nodes if n.op == "fused"] == ["matmul", "matmul"]
    f64 = [a.astype(np.float64) for a in (x, w1, b1, w2, b2)]
    hidden = np.maximum(f64[0] @ f64[1] + f64[2], 0)
    expected = 1 / (1 + np.exp(-(hidden @ f64[3] + f64[4])))
    np.testing.assert_allclose(interpret(result, x, w1, b1, w2, b2)[0], expected, rtol=1e-5,
                               atol=1e-6)


def _block(x, g1, beta1, wq, wk, wv, wo, g2, beta2, w1, b1, w2, b2):
    h = F.layer_norm(x, (x.shape[-1],), g1, beta1)
    scores = (h @ wq) @ (h @ wk).T * (1.0 / math.sqrt(wq.shape[-1]))
    x = x + (F.softmax(scores, dim=-1) @ (h @ wv)) @ wo
    h = F.layer_norm(x, (x.shape[-1],), g2, beta2)
    return x + F.gelu(h @ w1 + b1) @ w2 + b2


def _block_reference(x, g1, beta1, wq, wk, wv, wo, g2, beta2, w1, b1, w2, b2):
    def norm(h, gain, shift):
        centered = h - h.mean(-1, keepdims=True)
        return centered / np.sqrt((centered**2).mean(-1, keepdims=True) + 1e-5) * gain + shift

    erf = np.vectorize(math.erf)
    h = norm(x, g1, beta1)
    scores = (h @ wq) @ (h @ wk).T / math.sqrt(wq.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    x = x + (weights / weights.sum(-1, keepdims=True)) @ (h @ wv) @ wo
    hidden = norm(x, g2, beta2) @ w1 + b1
    return x + (0.5 * hidden * (1 + erf(hidden / math.sqrt(2)))) @ w2 + b2


def test_traced_transformer_block_fuses_every_elementwise_op() -> None:
    rng = np.random.default_rng(1)
    shapes = [(6, 8), (8,), (8,), (8, 8), (8, 8), (8, 8), (8, 8), (8,), (8,), (8, 16), (16,),
              (16, 8), (8,)]
    arrays = [(rng.standard_normal(s) * 0.5).astype(np.float32) for s in shapes]
    graph = ember.trace(_block, *arrays)
    result = fuse(graph)
    assert unfused_elementwise(result) == []
    assert {n.attrs["kind"] for n in result.nodes if n.op == "fused"} == {"matmul"}
    expected = _block_reference(*(a.astype(np.float64) for a in arrays))
    np.testing.assert_allclose(interpret(result, *arrays)[0], expected, rtol=1e-4, atol=1e-5)
    assert FuseOperators().run(result) is result


# --- explanations ----------------------------------------------------------------------------

EXPLAINED = """
graph @f(%x: f32[4,8], %w: f32[8,8]) -> (f32[4,8]) {
  %0 = matmul(%x, %w) : f32[4,8]
  %1 = relu(%0) : f32[4,8]
  %2 = dropout(%1) {p = 0.5, seed = 0, training = true} : f32[4,8]
  %3 = exp(%2) : f32[4,8]
  %4 = transpose(%3) {perm = [0, 1]} : f32[4,8]
  %5 = neg(%3) : f32[4,8]
  %6 = add(%5, %4) : f32[4,8]
  %7 = tanh(%6) : f32[4,8]
  return %7
}
"""


def test_explain_names_each_reason() -> None:
    graph = ember.parse(EXPLAINED)
    lines = explain(graph).splitlines()
    assert "fused  relu %1 fused into the matmul %0 group (elementwise epilogue)" in lines
    assert "kept   dropout %2 not fused: dropout is impure (it must run exactly as written)" in (
        lines)
    assert "kept   transpose %4 not fused: transpose has no fusion rule" in lines
    assert ("kept   add %6 not fused with the exp %3 group: would create a cycle through "
            "transpose %4") in lines
    assert "fused  neg %5 fused into the exp %3 group (elementwise chain)" in lines
    assert "kept   exp %3 not fused with dropout %2: dropout is impure" in "\n".join(lines)


def test_explain_reports_outside_users_and_max_ops() -> None:
    graph = ember.parse(EXPLAINED)
    text = explain(graph, **{"max-ops": 2})
    assert "fused  %3 in the exp %3 group has a user outside the group (%4)" in text
    assert "kept   add %6 not fused with the exp %3 group: stopped: max-ops=2" in text
    assert text == format_decisions(explain_fusion(graph, {"max_ops": 2}))
    assert explain(graph, max_ops=2) == text


def test_explain_does_not_change_the_graph() -> None:
    graph = ember.parse(EXPLAINED)
    before = str(graph)
    explain(graph)
    assert str(graph) == before


# --- random graphs ---------------------------------------------------------------------------

UNARY = ["exp", "neg", "tanh", "sigmoid", "relu"]


@st.composite
def random_graphs(draw: st.DrawFn) -> Graph:
    builder = GraphBuilder("random")
    values = [builder.input(f32(4, 4), "x"), builder.input(f32(4, 4), "y")]
    for _ in range(draw(st.integers(2, 12))):
        kind = draw(st.sampled_from(["unary", "binary", "matmul", "transpose", "sum"]))
        pick = st.sampled_from(values)
        if kind == "unary":
            values.append(builder.op(draw(st.sampled_from(UNARY)), draw(pick)))
        elif kind == "binary":
            values.append(builder.op(draw(st.sampled_from(["add", "mul", "maximum"])),
                                     draw(pick), draw(pick)))
        elif kind == "matmul":
            values.append(builder.matmul(draw(pick), draw(pick)))
        elif kind == "transpose":
            values.append(builder.transpose(draw(pick), perm=(1, 0)))
        else:
            values.append(builder.sum(draw(pick), axes=(1,), keepdims=True))
            values[-1] = builder.add(values[-1], draw(pick))
    outputs = draw(st.lists(st.sampled_from(values[2:]), min_size=1, max_size=3, unique=True))
    return builder.build(outputs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=random_graphs(), max_ops=st.sampled_from([2, 3, 16]))
def test_random_graphs_verify_keep_results_and_are_idempotent(graph: Graph, max_ops: int) -> None:
    result = fuse(graph, max_ops=max_ops)
    assert FuseOperators(max_ops=max_ops).run(result) is result
    for node in result.nodes:
        if node.op == "fused":
            assert 2 <= len([n for n in node.body.nodes if n.op != "const"]) <= max_ops
    inputs = random_inputs(graph, seed=0)
    for want, got in zip(interpret(graph, *inputs), interpret(result, *inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
