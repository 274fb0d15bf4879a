"""Wrongly shaped inputs to layers and functions: TraceErrors that name the op, the shapes and
the user's file and line."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import nn

HERE = __file__


def line_of(marker: str) -> int:
    """The line of this file that holds `marker` (in a trailing comment)."""
    lines = inspect.getsource(inspect.getmodule(line_of)).splitlines()
    (number,) = [i + 1 for i, text in enumerate(lines) if text.endswith(f"# {marker}")]
    return number


def trace_error(fn: object, *inputs: np.ndarray) -> ember.TraceError:
    with pytest.raises(ember.TraceError) as info:
        ember.compile(fn, *inputs, opt_level=0)
    return info.value


def assert_names(error: ember.TraceError, marker: str, *fragments: str) -> None:
    text = str(error)
    assert error.location == f"{HERE}:{line_of(marker)}", text
    assert text.startswith(error.location)
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float32)


def test_linear_with_wrong_features_names_matmul_shapes_and_construction_line() -> None:
    layer = nn.Linear(4, 3)  # linear-made
    error = trace_error(layer, zeros(2, 5))
    assert_names(error, "linear-made", "matmul", "5 vs 4", "f32[2,5]", "f32[4,3]")


def test_layer_inside_sequential_names_its_own_construction_line() -> None:
    model = nn.Sequential(
        nn.Linear(4, 3),
        nn.ReLU(),
        nn.Linear(5, 2),  # second-linear
    )
    error = trace_error(model, zeros(2, 4))
    assert_names(error, "second-linear", "matmul", "f32[2,3]", "f32[5,2]")


def test_conv2d_with_wrong_channels() -> None:
    layer = nn.Conv2d(3, 8, 3)  # conv-made
    error = trace_error(layer, zeros(1, 4, 8, 8))
    assert_names(error, "conv-made", "conv2d", "4 channels", "f32[1,4,8,8]", "f32[8,3,3,3]")


def test_conv2d_with_too_small_input() -> None:
    layer = nn.Conv2d(3, 8, 5)  # small-conv
    error = trace_error(layer, zeros(1, 3, 3, 3))
    assert_names(error, "small-conv", "conv2d", "does not fit input extent 3", "f32[1,3,3,3]")


def test_batch_norm_with_wrong_rank_and_wrong_channels() -> None:
    rank_layer = nn.BatchNorm2d(3)  # bn-rank
    assert_names(trace_error(rank_layer, zeros(2, 3)), "bn-rank", "BatchNorm2d", "4-D",
                 "f32[2,3]")
    channel_layer = nn.BatchNorm2d(3).eval()  # bn-channels
    assert_names(trace_error(channel_layer, zeros(2, 5, 4, 4)), "bn-channels", "batch_norm",
                 "5 channels", "[3]", "f32[2,5,4,4]")
    training_layer = nn.BatchNorm2d(3)  # bn-train
    assert_names(trace_error(training_layer, zeros(2, 5, 4, 4)), "bn-train", "batch_norm",
                 "5 channels", "f32[2,5,4,4]")


def test_layer_norm_with_wrong_last_dimension() -> None:
    layer = nn.LayerNorm((3, 4))  # ln-made
    assert_names(trace_error(layer, zeros(2, 3, 5)), "ln-made", "layer_norm", "[3, 4]",
                 "f32[2,3,5]")


def test_pooling_with_wrong_rank() -> None:
    pool = nn.MaxPool2d(2)  # pool-made
    assert_names(trace_error(pool, zeros(4, 4)), "pool-made", "max_pool2d", "rank 4",
                 "f32[4,4]")
    adaptive = nn.AdaptiveAvgPool2d(2)  # adaptive-made
    assert_names(trace_error(adaptive, zeros(4, 4)), "adaptive-made", "adaptive_avg_pool2d",
                 "f32[4,4]")


def test_embedding_with_float_indices() -> None:
    layer = nn.Embedding(5, 2)  # embedding-made
    assert_names(trace_error(layer, zeros(3)), "embedding-made", "embedding", "integers",
                 "f32[3]")


def test_custom_module_names_the_line_in_its_forward() -> None:
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(np.ones((3, 4), np.float32))

        def forward(self, x):
            return F.linear(x, self.weight)  # custom-forward

    assert_names(trace_error(Head(), zeros(2, 6)), "custom-forward", "matmul", "f32[2,6]")


def test_functional_call_in_a_plain_function_names_the_call_line() -> None:
    def model(x, w):
        return F.conv2d(x, w, stride=1)  # conv-call

    error = trace_error(model, zeros(1, 2, 5, 5), zeros(4, 3, 3, 3))
    assert_names(error, "conv-call", "conv2d", "f32[1,2,5,5]", "f32[4,3,3,3]")

    def losses(x, t):
        return F.cross_entropy(x, t)  # loss-call

    error = trace_error(losses, zeros(4, 3), np.zeros(5, np.int64))
    assert_names(error, "loss-call", "cross_entropy", "i64[5]", "f32[4,3]")

    def layer_norm(x):
        return F.layer_norm(x, (7,))  # norm-call

    assert_names(trace_error(layer_norm, zeros(2, 6)), "norm-call", "layer_norm", "[7]",
                 "f32[2,6]")


def test_conv2d_rejects_bad_arguments_at_construction() -> None:
    with pytest.raises(ValueError, match="strided convolutions"):
        nn.Conv2d(2, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="invalid padding string 'full'"):
        nn.Conv2d(2, 2, 3, padding="full")
    with pytest.raises(ValueError, match="groups=2 must divide in_channels=3"):
        nn.Conv2d(3, 4, 3, groups=2)
