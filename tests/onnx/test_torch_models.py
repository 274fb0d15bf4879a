"""Models exported by PyTorch, loaded with `ember.onnx.load`, against ONNX Runtime.

For each example (`examples/mlp.py`, `cnn.py`, `transformer.py`) the test builds the same
network in PyTorch, copies the Ember model's weights into it, exports it with
`torch.onnx.export(..., opset_version=17, dynamo=False)`, and checks that:
- the PyTorch copy computes what the example's own float64 numpy forward computes (the copy is
  faithful), and ONNX Runtime on the exported file agrees with PyTorch;
- Ember, running the file loaded through `ember.onnx.load`, gives ONNX Runtime's outputs within
  1e-5 relative.
"""

from __future__ import annotations

import inspect
import math
import runpy
from pathlib import Path

import numpy as np
import pytest

import ember
import ember.onnx

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

load = getattr(ember.onnx, "load", None)
needs_importer = pytest.mark.skipif(load is None, reason="ember.onnx.load (the ONNX importer) "
                                                         "is not available")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BATCH = 2  # the examples' inputs, cut to a small batch to keep the tests fast


class TorchEncoderBlock(torch.nn.Module):
    """examples/transformer.py's EncoderBlock, written for PyTorch."""

    def __init__(self, width: int = 256, heads: int = 4, hidden: int = 1024) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.fc1, self.fc2 = torch.nn.Linear(width, hidden), torch.nn.Linear(hidden, width)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        qkv = self.qkv(x).reshape(batch, seq, 3, self.heads, width // self.heads)
        q, k, v = (qkv[:, :, i].permute(0, 2, 1, 3) for i in range(3))
        scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(width // self.heads))
        mixed = torch.softmax(scores, dim=-1) @ v
        return self.proj(mixed.permute(0, 2, 1, 3).reshape(batch, seq, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


def torch_mlp() -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10), nn.Softmax(dim=-1))


def torch_cnn() -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    )


TORCH_MODELS = {"mlp": torch_mlp, "cnn": torch_cnn, "transformer": TorchEncoderBlock}


def copy_weights(ember_model: ember.nn.Module, torch_model: torch.nn.Module) -> None:
    """Load the Ember model's state (parameters and buffers) into the PyTorch model."""
    state = {name: torch.from_numpy(np.array(array)) for name, array
             in ember_model.state_dict().items()}
    missing, unexpected = torch_model.load_state_dict(state, strict=False)
    assert unexpected == [], f"Ember state not in the PyTorch model: {unexpected}"
    # BatchNorm's step counter is the only PyTorch state Ember does not keep.
    assert all(name.endswith("num_batches_tracked") for name in missing), missing


def export_torch(model: torch.nn.Module, inputs: tuple[np.ndarray, ...], path: Path) -> None:
    arguments = tuple(torch.from_numpy(a) for a in inputs)
    options = {"opset_version": 17}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False
    with torch.no_grad():
        torch.onnx.export(model, arguments, str(path), **options)


def run_onnx_runtime(path: Path, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {info.name: a for info, a in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)


@pytest.fixture(scope="module", params=sorted(TORCH_MODELS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One example exported from PyTorch: its file, inputs and ONNX Runtime's outputs."""
    name = request.param
    namespace = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"{name}_example")
    inputs = tuple(a[:BATCH] for a in namespace["example_inputs"])
    torch.manual_seed(0)
    torch_model = TORCH_MODELS[name]()
    copy_weights(namespace["model"], torch_model)
    torch_model.eval()
    path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
    export_torch(torch_model, inputs, path)
    with torch.no_grad():
        torch_output = torch_model(*(torch.from_numpy(a) for a in inputs)).numpy()
    return {"name": name, "path": path, "inputs": inputs, "torch": torch_output,
            "numpy": namespace["numpy_forward"](*inputs),
            "runtime": run_onnx_runtime(path, inputs)}


def test_torch_copy_is_faithful(exported: dict) -> None:
    """The PyTorch model computes the example's numpy forward; ONNX Runtime agrees with it."""
    np.testing.assert_allclose(exported["torch"], exported["numpy"], rtol=1e-5, atol=1e-5)
    (runtime,) = exported["runtime"]
    np.testing.assert_allclose(runtime, exported["torch"], rtol=1e-5, atol=1e-5)


@needs_importer
@pytest.mark.parametrize("opt_level", [0, 3])
def test_loaded_model_matches_onnx_runtime(exported: dict, opt_level: int) -> None:
    imported = load(str(exported["path"]))
    executable = ember.compile(imported, *exported["inputs"], opt_level=opt_level)
    result = executable(*exported["inputs"])
    results = result if isinstance(result, tuple) else (result,)
    assert len(results) == len(exported["runtime"])
    for actual, expected in zip(results, exported["runtime"], strict=True):
        assert actual.shape == expected.shape
        assert actual.dtype == expected.dtype
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
