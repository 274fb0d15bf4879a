"""Depthwise conv2d at opt level 3 (`backend/cpu/lower_depthwise.py`) against PyTorch in
float64: strides, padding, dilation, kernels 1x1 to 7x7, a fused bias + ReLU6 chain and a
residual add, NaN and inf inputs, several images and threads, at level 3 and at level 1 (the
direct loops)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(17)
CASES = [  # (batch, channels, height, width, kernel, stride, padding, dilation)
    (1, 8, 12, 12, 3, 1, 1, 1),
    (2, 16, 15, 13, 3, 2, 1, 1),
    (1, 5, 9, 20, 5, 1, 2, 1),
    (1, 4, 11, 11, 3, 1, 2, 2),
    (1, 3, 8, 8, 7, 2, 3, 1),
    (1, 6, 7, 9, 1, 1, 0, 1),
    (1, 4, 6, 6, 3, 3, 0, 1),
]


def _reference(x, weight, bias, stride, padding, dilation, residual=None):
    out = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(weight).double(),
                                     torch.from_numpy(bias).double(), stride, padding, dilation,
                                     groups=x.shape[1])
    out = torch.clamp(out, 0.0, 6.0)
    if residual is not None:
        out = out + torch.from_numpy(residual).double()
    return out.numpy()


@pytest.mark.parametrize("case", CASES, ids=[f"{c[4]}x{c[4]}-s{c[5]}-p{c[6]}-d{c[7]}"
                                             for c in CASES])
@pytest.mark.parametrize("residual", [False, True])
def test_depthwise_matches_pytorch(case, residual):
    batch, channels, height, width, kernel, stride, padding, dilation = case
    x = RNG.standard_normal((batch, channels, height, width)).astype(np.float32) * 3
    x[0, 0, 1, 2] = np.nan
    x[-1, -1, -1, -1] = np.inf
    weight = RNG.standard_normal((channels, 1, kernel, kernel)).astype(np.float32)
    bias = RNG.standard_normal(channels).astype(np.float32)
    out_h = (height + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    extra = RNG.standard_normal((batch, channels, out_h, out_w)).astype(np.float32)

    def model(a, r):
        y = F.conv2d(a, weight, bias, stride=stride, padding=padding, dilation=dilation,
                     groups=channels)
        y = np.minimum(np.maximum(y, 0.0), 6.0)
        return y + r if residual else y

    want = _reference(x, weight, bias, stride, padding, dilation, extra if residual else None)
    for level in (1, 3):
        got = ember.compile(model, x, extra, opt_level=level)(x, extra)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, equal_nan=True)


def test_depthwise_on_two_threads_matches_one():
    x = RNG.standard_normal((2, 32, 28, 28)).astype(np.float32)
    weight = RNG.standard_normal((32, 1, 3, 3)).astype(np.float32)
    model = lambda a: F.conv2d(a, weight, None, stride=1, padding=1, groups=32)  # noqa: E731
    one = ember.compile(model, x, threads=1)(x)
    two = ember.compile(model, x, threads=2)(x)
    np.testing.assert_array_equal(one, two)
    want = torch.nn.functional.conv2d(torch.from_numpy(x).double(),
                                      torch.from_numpy(weight).double(), padding=1, groups=32)
    np.testing.assert_allclose(one, want.numpy(), rtol=2e-5, atol=2e-5)
