"""The layout pass, the blocked-layout ops and the Target: index formulas written out by hand,
PyTorch as the reference for convolutions and the small CNN."""

from __future__ import annotations

import numpy as np
import pytest
from ember.passes.layout import ConvertLayout

import ember
from ember.errors import ShapeError
from ember.interpreter import interpret
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType, f32
from ember.ops.layout import from_blocked, pack_conv_weight, to_blocked
from ember.pipeline import PassManager, parse_pipeline
from ember.target import Target


def test_target_vector_width_and_preference() -> None:
    assert Target.cpu("x86-64-v3").f32_lanes == 8
    assert Target.cpu("x86-64-v3").prefers_blocked_layout
    assert not Target.cpu("x86-64-v2").prefers_blocked_layout
    llvm = pytest.importorskip("llvmlite.binding")
    features = llvm.get_host_cpu_features()
    expected = 16 if features.get("avx512f") else 8 if features.get("avx2") else 4
    assert Target.host().f32_lanes == expected
    with pytest.raises(ember.EmberError, match="unknown target 'tpu'"):
        Target.parse("tpu")


def test_layout_pass_takes_its_block_from_the_pipeline_target() -> None:
    """The pass's default block is the target's f32 lanes: 8 on an AVX2 target, wherever the
    compiler runs."""
    x = np.random.default_rng(0).standard_normal((1, 16, 8, 8)).astype(np.float32)
    conv = ember.nn.Conv2d(16, 16, 3, padding=1)
    graph = ember.trace(conv, x)
    avx2 = PassManager(parse_pipeline("layout"), target=Target.cpu("x86-64-v3")).run(graph)
    assert "nchw8c" in str(avx2) and "nchw16c" not in str(avx2)
    wide = PassManager(parse_pipeline("layout"), target=Target.cpu("znver4")).run(graph)
    assert "nchw16c" in str(wide)


def test_to_blocked_places_channel_c_at_block_c_div_b_lane_c_mod_b() -> None:
    x = np.random.default_rng(0).normal(size=(2, 5, 3, 2)).astype(np.float32)
    blocked = to_blocked(x, "nchw4c")
    assert blocked.shape == (2, 2, 3, 2, 4)
    for channel in range(5):
        np.testing.assert_array_equal(blocked[:, channel // 4, :, :, channel % 4], x[:, channel])
    np.testing.assert_array_equal(blocked[:, 1, :, :, 1:], 0)  # channels 5..7 are padding
    np.testing.assert_array_equal(from_blocked(blocked, "nchw4c", 5), x)
    np.testing.assert_array_equal(to_blocked(x, "nhwc"), x.transpose(0, 2, 3, 1))


def test_pack_conv_weight_index_formula() -> None:
    weight = np.random.default_rng(1).normal(size=(3, 5, 2, 2))
    packed = pack_conv_weight(weight, 4, 2)  # [O/2, I/4, KH, KW, 4, 2]
    assert packed.shape == (2, 2, 2, 2, 4, 2)
    for out in range(3):
        for inp in range(5):
            np.testing.assert_array_equal(packed[out // 2, inp // 4, :, :, inp % 4, out % 2],
                                          weight[out, inp])
    assert packed[1, :, :, :, :, 1].sum() == 0 and packed[:, 1, :, :, 1:].sum() == 0


@pytest.mark.parametrize("layout", ["nchw4c", "nchw8c", "nhwc"])
def test_conv2d_nchwc_matches_torch(layout: str) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 7, 6)).astype(np.float32)
    weight = rng.normal(size=(6, 5, 3, 3)).astype(np.float32)
    bias = rng.normal(size=6).astype(np.float32)
    graph = ConvertLayout(block=int(layout[4:-1]) if layout != "nhwc" else 0,
                          format="nhwc" if layout == "nhwc" else "nchwc").run(
        conv_graph(x.shape, weight, bias))
    assert "conv2d_nchwc" in [node.op for node in graph.nodes]
    want = torch.nn.functional.conv2d(torch.from_numpy(x).double(),
                                      torch.from_numpy(weight).double(),
                                      torch.from_numpy(bias).double(), stride=2, padding=1)
    np.testing.assert_allclose(interpret(graph, x)[0], want.numpy(), rtol=1e-5, atol=1e-5)


def conv_graph(shape: tuple[int, ...], weight: np.ndarray, bias: np.ndarray) -> ember.Graph:
    builder = GraphBuilder("conv")
    source = builder.input(f32[shape], "x")
    out = builder.conv2d(source, builder.const(weight), builder.const(bias), stride=(2, 2),
                         padding=(1, 1, 1, 1))
    return builder.build([out])


def test_type_rules_name_the_problem() -> None:
    builder = GraphBuilder("bad")
    x = builder.input(f32[1, 6, 2, 2], "x")
    with pytest.raises(ShapeError, match="layout_convert: channels=4 differs from the input's 6"):
        builder.layout_convert(x, layout="nchw4c", channels=4)
    blocked = builder.layout_convert(x, layout="nchw4c", channels=6)
    assert blocked.type == TensorType(f32[1].dtype, (1, 2, 2, 2, 4), "nchw4c")
    with pytest.raises(ShapeError, match="channels=9 does not fit 2 blocks of 4"):
        builder.layout_convert(blocked, layout="", channels=9)
    other = builder.input(TensorType(f32[1].dtype, (1, 2, 2, 2, 4), "nchw8c"), "y")
    with pytest.raises(ShapeError, match=r"add: operand layouts differ \(nchw4c vs nchw8c\)"):
        builder.add(blocked, other)
    with pytest.raises(ShapeError, match=r"f32\[4\] without a layout cannot broadcast"):
        builder.add(blocked, builder.const(np.ones(4, np.float32)))


def test_bad_options_are_reported() -> None:
    with pytest.raises(ember.EmberError, match="format must be one of nchwc, nhwc, got 'nchw'"):
        parse_pipeline("layout{format=nchw}")
    assert parse_pipeline("layout{block=8}")[0].layout == "nchw8c"
    assert ConvertLayout().layout == f"nchw{Target.host().f32_lanes}c"


class SmallCNN:
    """conv-bn-relu-conv-relu-pool-flatten-linear, built in torch and copied into ember.nn."""

    def __init__(self) -> None:
        self.torch = pytest.importorskip("torch")
        torch = self.torch
        torch.manual_seed(0)
        self.reference = torch.nn.Sequential(
            torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
            torch.nn.Conv2d(6, 10, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(10 * 4 * 4, 5))
        with torch.no_grad():
            self.reference[1].running_mean.uniform_(-0.5, 0.5)
            self.reference[1].running_var.uniform_(0.5, 2)
        self.reference.eval()
        from ember import nn

        self.model = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 10, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(10 * 4 * 4, 5))
        state = self.reference.state_dict()
        self.model.load_state_dict({k: v.numpy() for k, v in state.items()
                                    if "num_batches" not in k}, strict=False)
        self.model.eval()


@pytest.mark.parametrize("pipeline", ["fold-batchnorm,layout{block=8}", "layout{block=4}",
                                      "fold-batchnorm,layout{format=nhwc}"])
def test_small_cnn_matches_torch(pipeline: str) -> None:
    cnn = SmallCNN()
    x = np.random.default_rng(3).normal(size=(2, 3, 8, 8)).astype(np.float32)
    graph = ember.trace(cnn.model, x)

    converted = PassManager(parse_pipeline(pipeline)).run(graph)

    ops = [node.op for node in converted.nodes]
    assert ops.count("conv2d_nchwc") == 2 and "conv2d" not in ops
    assert ops.count("layout_convert") == (2 if "fold" in pipeline else 4)
    want = cnn.reference(cnn.torch.from_numpy(x)).detach().numpy()
    got = interpret(converted, x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert ConvertLayout(block=8).run(converted) is converted  # nothing left to convert
