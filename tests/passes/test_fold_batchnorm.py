"""fold-batchnorm: structure of the rewritten graph, and numerics against float64 numpy and
PyTorch references."""

from __future__ import annotations

import numpy as np
import pytest
from ember.passes.fold_batchnorm import FoldBatchNorm

import ember
from ember.interpreter import interpret
from ember.ir.graph import Graph, GraphBuilder
from ember.ir.types import f32
from ember.pipeline import PassManager, parse_pipeline

EPS = 1e-3


def ops_of(graph: Graph) -> list[str]:
    return [node.op for node in graph.nodes if node.op != "const"]


def bn_params(rng: np.random.Generator, channels: int) -> list[np.ndarray]:
    mean = rng.normal(size=channels)
    var = rng.random(channels) + 0.1
    gamma = rng.normal(size=channels)
    beta = rng.normal(size=channels)
    return [p.astype(np.float32) for p in (mean, var, gamma, beta)]


def bn_reference(y: np.ndarray, params: list[np.ndarray], axis_shape: tuple[int, ...]
                 ) -> np.ndarray:
    mean, var, gamma, beta = (p.astype(np.float64).reshape(axis_shape) for p in params)
    return (y - mean) / np.sqrt(var + EPS) * gamma + beta


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_bn_folds_into_one_conv(with_bias: bool, groups: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 5)).astype(np.float32)
    weight = rng.normal(size=(6, 4 // groups, 3, 3)).astype(np.float32)
    bias = rng.normal(size=6).astype(np.float32)
    params = bn_params(rng, 6)
    builder = GraphBuilder("conv_bn")
    source = builder.input(f32[2, 4, 5, 5], "x")
    inputs = [source, builder.const(weight)] + ([builder.const(bias)] if with_bias else [])
    conv = builder.conv2d(*inputs, padding=(1, 0, 1, 2), stride=(2, 1), groups=groups)
    out = builder.batch_norm(conv, *[builder.const(p) for p in params], eps=EPS)
    graph = builder.build([out])

    folded = FoldBatchNorm().run(graph)

    assert ops_of(folded) == ["conv2d"]
    conv_node = folded.nodes[-1]
    assert len(conv_node.inputs) == 3 and conv_node.attrs["groups"] == groups
    # padding (top=1, left=0, bottom=1, right=2) is asymmetric: pad explicitly
    padded = torch.nn.functional.pad(torch.from_numpy(x).double(), (0, 2, 1, 1))
    conv64 = torch.nn.functional.conv2d(
        padded, torch.from_numpy(weight).double(),
        torch.from_numpy(bias).double() if with_bias else None, stride=(2, 1), groups=groups)
    want = bn_reference(conv64.numpy(), params, (1, -1, 1, 1))
    (got,) = interpret(folded, x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias_first", [False, True])
def test_linear_bn_folds_into_matmul_and_add(bias_first: bool) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    weight = rng.normal(size=(4, 5)).astype(np.float32)  # [out, in], as nn.Linear
    bias = rng.normal(size=4).astype(np.float32)
    params = bn_params(rng, 4)
    builder = GraphBuilder("linear_bn")
    source = builder.input(f32[3, 5], "x")
    product = builder.matmul(source, builder.transpose(builder.const(weight), perm=(1, 0)))
    operands = (builder.const(bias), product) if bias_first else (product, builder.const(bias))
    out = builder.batch_norm(builder.add(*operands), *[builder.const(p) for p in params], eps=EPS)
    graph = builder.build([out])

    folded = FoldBatchNorm().run(graph)

    assert ops_of(folded) == ["matmul", "add"]  # the transpose of the old weight is gone
    want = bn_reference(x.astype(np.float64) @ weight.T.astype(np.float64) + bias, params, (1, -1))
    np.testing.assert_allclose(interpret(folded, x)[0], want, rtol=1e-5, atol=1e-5)


def test_matmul_without_bias_gets_one() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3)).astype(np.float32)
    weight = rng.normal(size=(3, 2)).astype(np.float32)
    params = bn_params(rng, 2)
    builder = GraphBuilder("matmul_bn")
    source = builder.input(f32[2, 3], "x")
    out = builder.batch_norm(builder.matmul(source, builder.const(weight)),
                             *[builder.const(p) for p in params], eps=EPS)
    folded = FoldBatchNorm().run(builder.build([out]))
    assert ops_of(folded) == ["matmul", "add"]
    want = bn_reference(x.astype(np.float64) @ weight, params, (1, -1))
    np.testing.assert_allclose(interpret(folded, x)[0], want, rtol=1e-5, atol=1e-5)


def test_batch_matmul_on_rank_3_is_not_folded_into_weights() -> None:
    # batch_norm normalizes axis 1 of [N, L, C]: that is not matmul's column axis.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    weight = rng.normal(size=(4, 4)).astype(np.float32)
    params = bn_params(rng, 3)
    builder = GraphBuilder("rank3")
    source = builder.input(f32[2, 3, 4], "x")
    out = builder.batch_norm(builder.matmul(source, builder.const(weight)),
                             *[builder.const(p) for p in params], eps=EPS)
    folded = FoldBatchNorm().run(builder.build([out]))
    assert ops_of(folded) == ["matmul", "mul", "add"]
    want = bn_reference(x.astype(np.float64) @ weight, params, (1, -1, 1))
    np.testing.assert_allclose(interpret(folded, x)[0], want, rtol=1e-5, atol=1e-5)


def test_traced_model_in_eval_mode_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    from ember import nn

    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                    torch.nn.ReLU())
    with torch.no_grad():
        reference[1].running_mean.uniform_(-1, 1)
        reference[1].running_var.uniform_(0.5, 2)
        reference[1].weight.uniform_(-2, 2)
    reference.eval()
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    state = {k: v.numpy() for k, v in reference.state_dict().items() if "num_batches" not in k}
    model.load_state_dict(state, strict=False)
    model.eval()
    x = np.random.default_rng(4).normal(size=(2, 3, 6, 6)).astype(np.float32)

    folded = PassManager(parse_pipeline("fold-batchnorm")).run(ember.trace(model, x))

    assert "batch_norm" not in ops_of(folded)
    want = reference(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(interpret(folded, x)[0], want, rtol=1e-5, atol=1e-5)


def test_nothing_to_fold_returns_the_same_graph() -> None:
    builder = GraphBuilder("no_bn")
    source = builder.input(f32[2, 3], "x")
    mean, var = builder.input(f32[3], "mean"), builder.input(f32[3], "var")
    ones = builder.const(np.ones(3, np.float32))
    out = builder.batch_norm(builder.relu(source), mean, var, ones, ones)
    graph = builder.build([out])
    assert FoldBatchNorm().run(graph) is graph
