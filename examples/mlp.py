"""A multilayer perceptron, 784-512-512-10, on a batch of 64: trace, print the IR, run, check.

    python examples/mlp.py          # or: ember ir examples/mlp.py
"""

from __future__ import annotations

import numpy as np

import ember
from ember import nn

ember.manual_seed(0)
model = nn.Sequential(
    nn.Linear(784, 512),
    nn.ReLU(),
    nn.Linear(512, 512),
    nn.ReLU(),
    nn.Linear(512, 10),
    nn.Softmax(dim=-1),
)
example_inputs = (np.random.default_rng(0).standard_normal((64, 784)).astype(np.float32),)


def numpy_forward(x: np.ndarray) -> np.ndarray:
    """The same network in plain numpy (float64), from the model's weights."""
    weights = {name: p.data.astype(np.float64) for name, p in model.named_parameters()}
    h = x.astype(np.float64)
    for index in (0, 2):
        h = np.maximum(h @ weights[f"{index}.weight"].T + weights[f"{index}.bias"], 0.0)
    logits = h @ weights["4.weight"].T + weights["4.bias"]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


if __name__ == "__main__":
    graph = ember.trace(model, *example_inputs)
    print(graph)
    executable = ember.compile(model, *example_inputs)
    result = executable(*example_inputs)
    error = np.abs(result - numpy_forward(*example_inputs)).max()
    print(f"output {result.dtype}{list(result.shape)}; max error vs numpy: {error:.3e}")
