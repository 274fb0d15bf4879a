"""Train a 64-128-64-10 MLP with Adam and a cosine lr on 8x8 digits (scikit-learn's `load_digits`,
else synthetic clusters), dropping each epoch's last partial batch (one compiled batch shape)."""

from __future__ import annotations

import time

import numpy as np

import ember
import ember.nn.functional as F
from ember import nn


def load_data(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Standardized float32 images [N, 64] and int64 labels, a fixed 80/20 split, the source."""
    try:
        from sklearn.datasets import load_digits
        x, y, source = *load_digits(return_X_y=True), "sklearn load_digits"
    except ImportError:
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 10, 1797)
        x, source = rng.normal(0, 4, (10, 64))[y] + rng.normal(0, 1, (1797, 64)), "synthetic"
    order = np.random.default_rng(seed).permutation(len(y))
    x, y, split = x[order], y[order].astype(np.int64), int(0.8 * len(y))
    x = ((x - x[:split].mean(axis=0)) / (x[:split].std(axis=0) + 1e-6)).astype(np.float32)
    return x[:split], y[:split], x[split:], y[split:], source


x_train, y_train, x_test, y_test, source = load_data()
ember.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                      nn.Linear(64, 10))
example_inputs = (x_test,)


def train_step_args(batch: int = 64) -> tuple[object, ...]:
    """`ember.train_step`'s arguments (`ember ir` on this file shows that step's graph)."""
    optimizer = ember.optim.Adam(model.parameters(), lr=3e-3)
    return model, F.cross_entropy, optimizer, x_train[:batch], y_train[:batch]


def main(epochs: int = 10, quiet: bool = False, batch: int = 64) -> float:
    step = ember.train_step(*train_step_args(batch))
    scheduler = ember.optim.lr_scheduler.CosineAnnealingLR(step.optimizer, T_max=epochs)
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
            f"lr {scheduler.get_last_lr()[0]:.2e}  {time.perf_counter() - start:.2f} s")
        scheduler.step()
    say(f"the step compiled {step.compiles} time(s): once = {step.compiles == 1}")
    return accuracy


def numpy_forward(x: np.ndarray) -> np.ndarray:
    """The same network in plain numpy (float64), from the model's weights."""
    w = {name: p.data.astype(np.float64) for name, p in model.named_parameters()}
    h = np.maximum(x @ w["0.weight"].T + w["0.bias"], 0.0)
    h = np.maximum(h @ w["2.weight"].T + w["2.bias"], 0.0)
    return h @ w["4.weight"].T + w["4.bias"]


if __name__ == "__main__":
    print(ember.trace(model, *example_inputs))
    print(f"final test accuracy: {main():.3f}")
    reference, logits = numpy_forward(x_test), ember.compile(model.eval(), x_test)(x_test)
    error = np.abs(logits - reference).max() / np.abs(reference).max()  # relative to the largest
    print(f"trained logits; max error vs numpy: {error:.3e}")
