"""A small convolutional network on a batch of 16 RGB 32x32 images, in inference mode.

    python examples/cnn.py          # or: ember ir examples/cnn.py
"""

from __future__ import annotations

import numpy as np

import ember
from ember import nn

ember.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 16, kernel_size=3, padding=1),
    nn.BatchNorm2d(16),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(16, 32, kernel_size=3, padding=1),
    nn.BatchNorm2d(32),
    nn.ReLU(),
    nn.AvgPool2d(2),
    nn.Flatten(),
    nn.Linear(32 * 8 * 8, 10),
)
rng = np.random.default_rng(0)
for batch_norm in (model[1], model[5]):  # statistics as if trained, so inference is not a no-op
    channels = batch_norm.num_features
    batch_norm.running_mean.data = rng.normal(0.0, 0.5, channels).astype(np.float32)
    batch_norm.running_var.data = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    batch_norm.weight.data = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    batch_norm.bias.data = rng.normal(0.0, 0.1, channels).astype(np.float32)
model.eval()
example_inputs = (rng.standard_normal((16, 3, 32, 32)).astype(np.float32),)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3 convolution, stride 1, padding 1, as a sum over the nine kernel offsets."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    height, width = x.shape[2:]
    out = np.zeros((x.shape[0], weight.shape[0], height, width))
    for i in range(3):
        for j in range(3):
            window = padded[:, :, i : i + height, j : j + width]
            out += np.einsum("nchw,oc->nohw", window, weight[:, :, i, j])
    return out + bias[None, :, None, None]


def pool(x: np.ndarray, reduce: str) -> np.ndarray:
    """2x2 pooling with stride 2 (max or mean)."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2)
    return getattr(blocks, reduce)(axis=(3, 5))


def numpy_forward(x: np.ndarray) -> np.ndarray:
    """The same network in plain numpy (float64), from the model's state."""
    state = {name: v.astype(np.float64) for name, v in model.state_dict().items()}
    h = x.astype(np.float64)
    for conv, bn, reduce in (("0", "1", "max"), ("4", "5", "mean")):
        h = conv2d(h, state[f"{conv}.weight"], state[f"{conv}.bias"])
        scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + 1e-5)
        shift = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
        h = np.maximum(h * scale[:, None, None] + shift[:, None, None], 0.0)
        h = pool(h, reduce)
    return h.reshape(h.shape[0], -1) @ state["9.weight"].T + state["9.bias"]


if __name__ == "__main__":
    graph = ember.trace(model, *example_inputs)
    print(graph)
    executable = ember.compile(model, *example_inputs)
    result = executable(*example_inputs)
    error = np.abs(result - numpy_forward(*example_inputs)).max()
    print(f"output {result.dtype}{list(result.shape)}; max error vs numpy: {error:.3e}")
