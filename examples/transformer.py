"""One transformer encoder block (pre-norm): batch 8, sequence 128, width 256, 4 heads, FFN 1024.

    python examples/transformer.py  # or: ember ir examples/transformer.py
"""

from __future__ import annotations

import math

import numpy as np

import ember
from ember import nn
from ember.nn import functional as F


class EncoderBlock(nn.Module):
    """x + attention(norm(x)), then + mlp(norm(.)); attention from Linear, matmul and softmax."""

    def __init__(self, width: int = 256, heads: int = 4, hidden: int = 1024) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def attention(self, x: ember.Tensor) -> ember.Tensor:
        batch, seq, width = x.shape
        qkv = self.qkv(x).reshape(batch, seq, 3, self.heads, width // self.heads)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # [batch, heads, seq, d]
        scores = q @ k.transpose(0, 1, 3, 2) * (1.0 / math.sqrt(width // self.heads))
        mixed = F.softmax(scores, dim=-1) @ v
        return self.proj(mixed.transpose(0, 2, 1, 3).reshape(batch, seq, width))

    def forward(self, x: ember.Tensor) -> ember.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


ember.manual_seed(0)
model = EncoderBlock()
example_inputs = (np.random.default_rng(0).standard_normal((8, 128, 256)).astype(np.float32),)


def numpy_forward(x: np.ndarray) -> np.ndarray:
    """The same block in plain numpy (float64), from the model's weights."""
    p = {name: v.data.astype(np.float64) for name, v in model.named_parameters()}
    erf = np.vectorize(math.erf)

    def linear(h: np.ndarray, name: str) -> np.ndarray:
        return h @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def layer_norm(h: np.ndarray, name: str) -> np.ndarray:
        centered = h - h.mean(-1, keepdims=True)
        scaled = centered / np.sqrt((centered**2).mean(-1, keepdims=True) + 1e-5)
        return scaled * p[f"{name}.weight"] + p[f"{name}.bias"]

    batch, seq, width = x.shape
    h = x.astype(np.float64)
    q, k, v = np.split(linear(layer_norm(h, "norm1"), "qkv").reshape(batch, seq, 3, 4, -1), 3, 2)
    q, k, v = (t[:, :, 0].transpose(0, 2, 1, 3) for t in (q, k, v))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(width // 4)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    mixed = (weights / weights.sum(-1, keepdims=True)) @ v
    h = h + linear(mixed.transpose(0, 2, 1, 3).reshape(batch, seq, width), "proj")
    hidden = linear(layer_norm(h, "norm2"), "fc1")
    return h + linear(0.5 * hidden * (1.0 + erf(hidden / math.sqrt(2.0))), "fc2")


if __name__ == "__main__":
    graph = ember.trace(model, *example_inputs)
    print(graph)
    executable = ember.compile(model, *example_inputs)
    result = executable(*example_inputs)
    error = np.abs(result - numpy_forward(*example_inputs)).max()
    print(f"output {result.dtype}{list(result.shape)}; max error vs numpy: {error:.3e}")
