"""The model suite: Ember's opt levels against numpy, ONNX Runtime and PyTorch eager.

    python benchmarks/bench_models.py                      # every model, 1 thread then 2
    python benchmarks/bench_models.py --only mlp --threads 1
    python benchmarks/bench_models.py --json results.json --repeats 20

Models (float32, inference): an MLP (batch 64, 784-512-512-10), a small CNN (batch 16,
3x32x32), a ResNet basic block (batch 8, 64 channels, 56x56), a transformer encoder block
(batch 8, sequence 128, width 256, 4 heads, FFN 1024; the one in examples/transformer.py), a
GELU -> sigmoid -> tanh chain over 4M floats, and a 1024^3 matmul.

Each model runs through `ember.bench.bench` at opt levels 0 to 3, next to a numpy version of
the same computation (float32, written with BLAS matmuls where numpy has them), ONNX Runtime
on the exported traced graph, and a PyTorch module holding the same weights, each timed the
same way (median of the timed calls after warm-up, with p10/p90), and each checked against
level 0. Every thread count runs in its own child process, with EMBER_NUM_THREADS and the BLAS
variables (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS) set before numpy is imported,
so numpy's BLAS uses the same count as everyone else.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import runpy
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class Case:
    """One model of the suite: the Ember model, its inputs and the same computation elsewhere."""

    name: str
    model: Any
    inputs: tuple[np.ndarray, ...]
    numpy_fn: Callable[..., np.ndarray]
    torch_fn: Callable[[], Any] | None  # builds the PyTorch model (None: no torch version)


# -- numpy building blocks (float32) ---------------------------------------------------------------


def erf(x: np.ndarray) -> np.ndarray:
    """erf in float32: scipy's where installed, else Abramowitz-Stegun 7.1.26 (|error| < 2e-7)."""
    try:
        from scipy.special import erf as scipy_erf
    except ImportError:
        t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                               + t * 1.061405429))))
        return np.sign(x) * (1.0 - poly * np.exp(-x * x))
    return scipy_erf(x)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x * np.float32(1 / math.sqrt(2))))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def conv3x3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """3x3 convolution, stride 1, padding 1, NCHW: im2col, then one BLAS matmul."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    columns = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, c * 9)
    out = columns @ weight.reshape(weight.shape[0], -1).T
    if bias is not None:
        out += bias
    return np.ascontiguousarray(out.reshape(n, h, w, -1).transpose(0, 3, 1, 2))


def batch_norm(x: np.ndarray, state: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-5)
    shift = state[f"{prefix}.bias"] - state[f"{prefix}.running_mean"] * scale
    return x * scale[:, None, None] + shift[:, None, None]


def pool2x2(x: np.ndarray, reduce: str) -> np.ndarray:
    n, c, h, w = x.shape
    return getattr(x.reshape(n, c, h // 2, 2, w // 2, 2), reduce)(axis=(3, 5))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    centered = x - x.mean(-1, keepdims=True)
    return centered / np.sqrt((centered * centered).mean(-1, keepdims=True) + 1e-5) * weight + bias


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _randomize_batch_norms(module: Any, rng: np.random.Generator) -> None:
    """Statistics as if trained, so inference batch norm is not the identity."""
    from ember import nn

    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            channels = layer.num_features
            layer.running_mean.data = rng.normal(0.0, 0.5, channels).astype(np.float32)
            layer.running_var.data = rng.uniform(0.5, 2.0, channels).astype(np.float32)
            layer.weight.data = rng.uniform(0.5, 1.5, channels).astype(np.float32)
            layer.bias.data = rng.normal(0.0, 0.1, channels).astype(np.float32)


def _torch_copy(torch_module: Any, ember_module: Any) -> Any:
    """`torch_module` with the Ember module's weights and buffers, in eval mode."""
    import torch

    state = {name: torch.from_numpy(np.array(value)) for name, value in
             ember_module.state_dict().items()}
    torch_module.load_state_dict(state, strict=False)
    return torch_module.eval()


# -- the models ---------------------------------------------------------------------------------


def mlp_case(rng: np.random.Generator) -> Case:
    import ember
    from ember import nn

    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    state = model.state_dict()

    def numpy_fn(x: np.ndarray) -> np.ndarray:
        h = np.maximum(x @ state["0.weight"].T + state["0.bias"], 0)
        h = np.maximum(h @ state["2.weight"].T + state["2.bias"], 0)
        return h @ state["4.weight"].T + state["4.bias"]

    def torch_fn() -> Any:
        from torch import nn as tnn

        return _torch_copy(tnn.Sequential(tnn.Linear(784, 512), tnn.ReLU(), tnn.Linear(512, 512),
                                          tnn.ReLU(), tnn.Linear(512, 10)), model)

    x = rng.standard_normal((64, 784)).astype(np.float32)
    return Case("mlp", model, (x,), numpy_fn, torch_fn)


def cnn_case(rng: np.random.Generator) -> Case:
    import ember
    from ember import nn

    ember.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * 8 * 8, 10))
    _randomize_batch_norms(model, rng)
    model.eval()
    state = model.state_dict()

    def numpy_fn(x: np.ndarray) -> np.ndarray:
        h = np.maximum(batch_norm(conv3x3(x, state["0.weight"], state["0.bias"]), state, "1"), 0)
        h = pool2x2(h, "max")
        h = np.maximum(batch_norm(conv3x3(h, state["4.weight"], state["4.bias"]), state, "5"), 0)
        h = pool2x2(h, "mean").reshape(x.shape[0], -1)
        return h @ state["9.weight"].T + state["9.bias"]

    def torch_fn() -> Any:
        from torch import nn as tnn

        return _torch_copy(tnn.Sequential(
            tnn.Conv2d(3, 16, 3, padding=1), tnn.BatchNorm2d(16), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(16, 32, 3, padding=1), tnn.BatchNorm2d(32), tnn.ReLU(), tnn.AvgPool2d(2),
            tnn.Flatten(), tnn.Linear(32 * 8 * 8, 10)), model)

    x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    return Case("cnn", model, (x,), numpy_fn, torch_fn)


def resblock_case(rng: np.random.Generator) -> Case:
    import ember
    from ember import nn
    from ember.nn import functional as F

    class BasicBlock(nn.Module):
        """ResNet basic block: conv3x3-bn-relu-conv3x3-bn, plus the input, then relu."""

        def __init__(self, channels: int = 64) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x: Any) -> Any:
            h = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(h)) + x)

    ember.manual_seed(0)
    model = BasicBlock()
    _randomize_batch_norms(model, rng)
    model.eval()
    state = model.state_dict()

    def numpy_fn(x: np.ndarray) -> np.ndarray:
        h = np.maximum(batch_norm(conv3x3(x, state["conv1.weight"]), state, "bn1"), 0)
        return np.maximum(batch_norm(conv3x3(h, state["conv2.weight"]), state, "bn2") + x, 0)

    def torch_fn() -> Any:
        import torch
        from torch import nn as tnn

        class TorchBasicBlock(tnn.Module):
            def __init__(self, channels: int = 64) -> None:
                super().__init__()
                self.conv1 = tnn.Conv2d(channels, channels, 3, padding=1, bias=False)
                self.bn1 = tnn.BatchNorm2d(channels)
                self.conv2 = tnn.Conv2d(channels, channels, 3, padding=1, bias=False)
                self.bn2 = tnn.BatchNorm2d(channels)

            def forward(self, x: Any) -> Any:
                h = torch.relu(self.bn1(self.conv1(x)))
                return torch.relu(self.bn2(self.conv2(h)) + x)

        return _torch_copy(TorchBasicBlock(), model)

    x = rng.standard_normal((8, 64, 56, 56)).astype(np.float32)
    return Case("resblock", model, (x,), numpy_fn, torch_fn)


def transformer_case(rng: np.random.Generator) -> Case:
    example = runpy.run_path(str(ROOT / "examples" / "transformer.py"),
                             run_name="_bench_transformer")
    model = example["model"]
    heads = model.heads
    p = model.state_dict()

    def linear(h: np.ndarray, name: str) -> np.ndarray:
        return h @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def numpy_fn(x: np.ndarray) -> np.ndarray:
        batch, seq, width = x.shape
        qkv = linear(layer_norm(x, p["norm1.weight"], p["norm1.bias"]), "qkv")
        q, k, v = qkv.reshape(batch, seq, 3, heads, width // heads).transpose(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1 / math.sqrt(width // heads))
        mixed = softmax(scores) @ v
        h = x + linear(mixed.transpose(0, 2, 1, 3).reshape(batch, seq, width), "proj")
        hidden = gelu(linear(layer_norm(h, p["norm2.weight"], p["norm2.bias"]), "fc1"))
        return h + linear(hidden, "fc2")

    def torch_fn() -> Any:
        import torch
        from torch import nn as tnn

        class TorchEncoderBlock(tnn.Module):
            def __init__(self, width: int = 256, hidden: int = 1024) -> None:
                super().__init__()
                self.norm1, self.norm2 = tnn.LayerNorm(width), tnn.LayerNorm(width)
                self.qkv, self.proj = tnn.Linear(width, 3 * width), tnn.Linear(width, width)
                self.fc1, self.fc2 = tnn.Linear(width, hidden), tnn.Linear(hidden, width)

            def forward(self, x: Any) -> Any:
                batch, seq, width = x.shape
                qkv = self.qkv(self.norm1(x)).reshape(batch, seq, 3, heads, width // heads)
                q, k, v = qkv.permute(2, 0, 3, 1, 4)
                scores = q @ k.transpose(-1, -2) * (1 / math.sqrt(width // heads))
                mixed = torch.softmax(scores, dim=-1) @ v
                x = x + self.proj(mixed.transpose(1, 2).reshape(batch, seq, width))
                return x + self.fc2(tnn.functional.gelu(self.fc1(self.norm2(x))))

        return _torch_copy(TorchEncoderBlock(), model)

    x = rng.standard_normal((8, 128, 256)).astype(np.float32)
    return Case("transformer", model, (x,), numpy_fn, torch_fn)


def elementwise_case(rng: np.random.Generator) -> Case:
    from ember.nn import functional as F

    def chain(x: Any) -> Any:
        return F.tanh(F.sigmoid(F.gelu(x)))

    def torch_fn() -> Any:
        import torch

        return lambda t: torch.tanh(torch.sigmoid(torch.nn.functional.gelu(t)))

    x = rng.standard_normal((4096, 1024)).astype(np.float32)  # 4M floats, 16 MiB
    return Case("elementwise", chain, (x,), lambda x: np.tanh(sigmoid(gelu(x))), torch_fn)


def matmul_case(rng: np.random.Generator) -> Case:
    def matmul(a: Any, b: Any) -> Any:
        return a @ b

    def torch_fn() -> Any:
        import torch

        return torch.matmul

    a, b = (rng.standard_normal((1024, 1024)).astype(np.float32) for _ in range(2))
    return Case("matmul", matmul, (a, b), np.matmul, torch_fn)


CASES: dict[str, Callable[[np.random.Generator], Case]] = {
    "mlp": mlp_case,
    "cnn": cnn_case,
    "resblock": resblock_case,
    "transformer": transformer_case,
    "elementwise": elementwise_case,
    "matmul": matmul_case,
}


# -- running --------------------------------------------------------------------------------------


def run_models(names: list[str], threads: int, options: argparse.Namespace) -> list[dict]:
    """Benchmark the named models at one thread count in this process; prints each table."""
    from ember.bench import bench, package_version

    results = []
    for index, name in enumerate(names):
        case = CASES[name](np.random.default_rng(0))
        torch_model = case.torch_fn() if case.torch_fn and package_version("torch") else None
        result = bench(case.model, case.inputs, levels=options.levels, threads=threads,
                       repeats=options.repeats, warmup=options.warmup,
                       compare=options.compare, torch_model=torch_model,
                       peers={"numpy": case.numpy_fn}, ablate=options.ablate,
                       tolerance=options.tolerance, max_seconds=options.max_seconds,
                       name=name)
        print(result.table(machine_line=index == 0), flush=True)
        print(flush=True)
        results.append(result.to_dict())
    return results


def _child(names: list[str], threads: int, options: argparse.Namespace) -> list[dict]:
    """Run one thread count in a fresh interpreter whose BLAS starts with that many threads."""
    environment = dict(os.environ, EMBER_NUM_THREADS=str(threads))
    environment.update({name: str(threads) for name in BLAS_VARIABLES})
    with tempfile.TemporaryDirectory(prefix="ember-bench-") as directory:
        output = os.path.join(directory, "result.json")
        command = [sys.executable, __file__, "--in-process", "--threads", str(threads),
                   "--only", ",".join(names), "--json", output, "--repeats", str(options.repeats),
                   "--warmup", str(options.warmup), "--levels", ",".join(map(str, options.levels)),
                   "--compare", ",".join(options.compare), "--tolerance", str(options.tolerance),
                   "--max-seconds", str(options.max_seconds)] + (["--ablate"] if options.ablate
                                                                  else [])
        subprocess.run(command, env=environment, check=True)
        with open(output, encoding="utf-8") as file:
            return json.load(file)["runs"][0]["results"]


def summary(runs: list[dict]) -> str:
    """One row per model and configuration: median ms at each thread count, with the spread."""
    counts = [run["threads"] for run in runs]
    titles = [f"{n} thread{'s' if n > 1 else ''}: median ms (p10-p90)" for n in counts]
    header = f"{'model':<12}{'config':<13}" + "".join(f"{t:>36}{'vs L0':>8}" for t in titles)
    lines = [runs[0]["results"][0]["machine_line"].rsplit("; threads", 1)[0], header]
    for model_index, first in enumerate(runs[0]["results"]):
        names = [row["name"] for row in first["levels"] + first["peers"]]
        for name in names:
            cells = []
            for run in runs:
                result = run["results"][model_index]
                row = next((r for r in result["levels"] + result["peers"] if r["name"] == name),
                           None)
                if row is None or row["timing"] is None:
                    cells.append(f"{(row or {}).get('failure', '')[:34]:>36}{'':>8}")
                    continue
                t = row["timing"]
                flag = "" if row["ok"] else " FAIL"
                cell = f"{t['median'] * 1e3:.3f} ({t['p10'] * 1e3:.3f}-{t['p90'] * 1e3:.3f}){flag}"
                speedup = f"{row['speedup']:.2f}x" if row["speedup"] else "-"
                cells.append(f"{cell:>36}{speedup:>8}")
            lines.append(f"{first['name']:<12}{name:<13}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="models: " + ", ".join(CASES))
    parser.add_argument("--only", default="", metavar="NAME[,NAME]",
                        help="run only these models (default: all)")
    parser.add_argument("--threads", default="1,2", metavar="N[,N]",
                        help="thread counts, one run each, in order (default: 1,2)")
    parser.add_argument("--levels", default="0,1,2,3", help="opt levels (default: 0,1,2,3)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--max-seconds", type=float, default=5.0,
                        help="stop timing a row after this many seconds (at least 3 calls)")
    parser.add_argument("--compare", default="onnxruntime,torch", help="peers when installed")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest relative error against level 0 that passes")
    parser.add_argument("--ablate", action="store_true", help="level 3 without each pass")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE")
    parser.add_argument("--in-process", action="store_true",
                        help="run in this process (one thread count; BLAS threads as inherited)")
    options = parser.parse_args(argv)
    names = [n for n in options.only.split(",") if n] or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r} (models: {', '.join(CASES)})")
    options.levels = [int(level) for level in options.levels.split(",")]
    options.compare = [peer for peer in options.compare.split(",") if peer]
    counts = [int(n) for n in options.threads.split(",")]
    runs = []
    for threads in counts:
        if options.in_process:
            results = run_models(names, threads, options)
        else:
            print(f"== {threads} thread{'s' if threads > 1 else ''} ==", flush=True)
            results = _child(names, threads, options)
        runs.append({"threads": threads, "results": results})
    if not options.in_process:
        print(summary(runs))
    if options.json:
        with open(options.json, "w", encoding="utf-8") as file:
            json.dump({"runs": runs}, file, indent=2)
            file.write("\n")
    failed = any(not r["ok"] for run in runs for r in run["results"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
