"""Elementwise chains after a matmul or conv2d, computed in the GEMM's store (opt_level 3),
against float64 numpy / PyTorch: column and row biases, scalars, full residual arrays with
batch offsets, activations from vecmath, edge columns, and the chains that must fall back."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import nn
from ember.nn import functional as F

torch = pytest.importorskip("torch")


def floats(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def compiled(fn, *inputs):
    executable = ember.compile(fn, *inputs)
    return executable, str(executable.native.program)


def gemm_calls(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if "ember_gemm_" in line]


def close(actual: np.ndarray, expected: np.ndarray, tolerance: float = 1e-5) -> None:
    scale = np.abs(expected).max() + 1.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale)


def erf(x: np.ndarray) -> np.ndarray:
    return torch.erf(torch.from_numpy(x)).numpy()


def test_bias_and_relu_with_edge_columns() -> None:
    x, w, b = floats(64, 100), floats(100, 70, seed=1), floats(70, seed=2)
    executable, text = compiled(lambda x: F.relu(x @ w + b), x)
    (call,) = gemm_calls(text)
    assert "_ep" in call, text  # one GEMM call, the chain in its store
    expected = np.maximum(x.astype(np.float64) @ w + b, 0.0)
    close(executable(x), expected)


def test_batched_residual_scalar_and_gelu() -> None:
    """A full-shape operand is read at each batch's offset; a scalar constant splatted."""
    x, w = floats(3, 40, 30), floats(30, 40, seed=1)
    residual = floats(3, 40, 40, seed=2)

    def block(x, residual):
        return F.gelu((x @ w) * 0.5 + residual)

    executable, text = compiled(block, x, residual)
    calls = gemm_calls(text)
    assert calls and all("_ep" in c for c in calls), text
    h = (x.astype(np.float64) @ w) * 0.5 + residual
    expected = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
    close(executable(x, residual), expected)


def test_per_row_operand() -> None:
    x, w, rows = floats(50, 33), floats(33, 64, seed=1), floats(50, 1, seed=2)
    executable, text = compiled(lambda x, rows: F.sigmoid(x @ w - rows), x, rows)
    assert all("_ep" in c for c in gemm_calls(text)), text
    expected = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ w - rows)))
    close(executable(x, rows), expected)


def test_conv_bias_residual_relu() -> None:
    """The second half of a ResNet basic block: conv, bias, + input, relu in one store."""
    ember.manual_seed(0)
    conv = nn.Conv2d(8, 8, kernel_size=3, padding=1)
    x = floats(2, 8, 18, 18)
    executable, text = compiled(lambda x: F.relu(conv(x) + x), x)
    (call,) = gemm_calls(text)
    assert "_ep" in call, text
    weight = torch.from_numpy(conv.weight.data.astype(np.float64))
    bias = torch.from_numpy(conv.bias.data.astype(np.float64))
    xt = torch.from_numpy(x.astype(np.float64))
    expected = torch.relu(torch.nn.functional.conv2d(xt, weight, bias, padding=1) + xt).numpy()
    close(executable(x), expected)


def test_value_used_twice_is_computed_once() -> None:
    x, w = floats(40, 24), floats(24, 48, seed=1)

    def mish_like(x):
        y = x @ w
        return y * F.tanh(y)

    executable, text = compiled(mish_like, x)
    assert all("_ep" in c for c in gemm_calls(text)), text
    y = x.astype(np.float64) @ w
    close(executable(x), y * np.tanh(y))


def test_operand_of_another_broadcast_falls_back() -> None:
    """A bias per (batch, column) is none of row / column / scalar / full: the region is
    lowered node by node (still correct)."""
    x, w, bias = floats(3, 40, 30), floats(30, 40, seed=1), floats(3, 1, 40, seed=2)
    executable, text = compiled(lambda x, bias: x @ w + bias, x, bias)
    assert calls_without_epilogue(text), text
    close(executable(x, bias), x.astype(np.float64) @ w + bias)


def calls_without_epilogue(text: str) -> bool:
    calls = gemm_calls(text)
    return bool(calls) and not any("_ep" in c for c in calls)


def test_nan_from_an_operand_propagates() -> None:
    x, w, b = floats(16, 32), floats(32, 32, seed=1), floats(32, seed=2)
    b[3] = np.nan
    executable, _ = compiled(lambda x, b: F.relu(x @ w + b), x, b)
    result = executable(x, b)
    assert np.isnan(result[:, 3]).all() and not np.isnan(np.delete(result, 3, axis=1)).any()
