"""Train a small CNN with AdamW on 8x8 digits (scikit-learn's `load_digits`, else synthetic
clusters), dropping each epoch's last partial batch (one compiled batch shape)."""

from __future__ import annotations

import time

import numpy as np

import ember
import ember.nn.functional as F
from ember import nn


def load_data(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Standardized float32 images [N, 1, 8, 8], int64 labels, a fixed 80/20 split, the source."""
    try:
        from sklearn.datasets import load_digits
        x, y, source = *load_digits(return_X_y=True), "sklearn load_digits"
    except ImportError:
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 10, 1797)
        x, source = rng.normal(0, 4, (10, 64))[y] + rng.normal(0, 1, (1797, 64)), "synthetic"
    order = np.random.default_rng(seed).permutation(len(y))
    x, y, split = x[order], y[order].astype(np.int64), int(0.8 * len(y))
    x = ((x - x[:split].mean()) / x[:split].std()).astype(np.float32).reshape(-1, 1, 8, 8)
    return x[:split], y[:split], x[split:], y[split:], source


x_train, y_train, x_test, y_test, source = load_data()
ember.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 4 x 4
    nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 2 x 2
    nn.Flatten(), nn.Linear(32 * 2 * 2, 10))
example_inputs = (x_test,)


def train_step_args(batch: int = 64) -> tuple[object, ...]:
    """`ember.train_step`'s arguments (`ember ir` on this file shows that step's graph)."""
    optimizer = ember.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    return model, F.cross_entropy, optimizer, x_train[:batch], y_train[:batch]


def main(epochs: int = 10, quiet: bool = False, batch: int = 64) -> float:
    step = ember.train_step(*train_step_args(batch))
    rng, say = np.random.default_rng(1), (lambda *_: None) if quiet else print
    say(f"data: {source}, {len(x_train)} train / {len(x_test)} test images, batch {batch}")
    for epoch in range(1, epochs + 1):
        start, order = time.perf_counter(), rng.permutation(len(x_train))
        losses = [step(x_train[order[i : i + batch]], y_train[order[i : i + batch]])
                  for i in range(0, len(order) - batch + 1, batch)]
        predicted = ember.compile(model.eval(), x_test)(x_test).argmax(axis=1)  # weights: constants
        accuracy = float((predicted == y_test).mean())
        model.train()
        say(f"epoch {epoch:2d}  loss {np.mean(losses):.4f}  test accuracy {accuracy:.3f}  "
            f"{time.perf_counter() - start:.2f} s")
    return accuracy


def numpy_forward(h: np.ndarray) -> np.ndarray:
    """The network in numpy (float64), 3x3 convolutions as nine shifted products."""
    w = {name: p.data.astype(np.float64) for name, p in model.named_parameters()}
    for conv in ("0", "3"):
        padded, (n, _, size, _) = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1))), h.shape
        h = sum(np.einsum("nchw,oc->nohw", padded[:, :, i : i + size, j : j + size],
                          w[f"{conv}.weight"][:, :, i, j]) for i in range(3) for j in range(3))
        h = np.maximum(h + w[f"{conv}.bias"][:, None, None], 0.0)
        h = h.reshape(n, -1, size // 2, 2, size // 2, 2).max(axis=(3, 5))
    return h.reshape(len(h), -1) @ w["7.weight"].T + w["7.bias"]


if __name__ == "__main__":
    print(ember.trace(model, *example_inputs))
    print(f"final test accuracy: {main():.3f}")
    reference, logits = numpy_forward(x_test), ember.compile(model.eval(), x_test)(x_test)
    error = np.abs(logits - reference).max() / np.abs(reference).max()  # relative to the largest
    print(f"trained logits; max error vs numpy: {error:.3e}")
