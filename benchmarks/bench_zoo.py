"""The ONNX model suite: classic architectures through `ember.onnx.load`, against ONNX Runtime.

    python benchmarks/bench_zoo.py                          # every model, 1 thread then 2
    python benchmarks/bench_zoo.py --only resnet18 --threads 1
    python benchmarks/bench_zoo.py --json zoo.json --plot zoo.svg --readme

Models (PyTorch modules written here, no torchvision; random weights seeded with
torch.manual_seed(0), batch-norm statistics calibrated on one random batch so activations keep
their scale through depth, eval mode; batch 1, 3x224x224, float32): ResNet-18, ResNet-50,
MobileNetV2, ShuffleNetV2 x1.0, DenseNet-121, VGG-16, SqueezeNet 1.1, an Inception-v3 style
network (the v3 stem and two InceptionA blocks) and ViT-S/16, in their published layer
configurations. Each is exported with `torch.onnx.export` (the TorchScript exporter, opset 17)
into benchmarks/.zoo/ (git-ignored; rebuilt when missing), then:

- Ember: `ember.onnx.load`, then `ember.compile(..., opt_level=3, threads=N)` into an empty
  compile cache (EMBER_CACHE_DIR pointed at a fresh directory: the cold time) and again into the
  same cache (the cached time: the machine code is read back by the graph's key);
- ONNX Runtime: an InferenceSession on the same file, intra_op_num_threads = N, all graph
  optimizations;
- PyTorch eager: the module itself under torch.no_grad() with torch.set_num_threads(N).

Ember's output is checked against ONNX Runtime's: max|y - y_ort| / max|y_ort| must be at most
1e-4. The three runners are timed in the same process, alternating (one call of each per round,
after warm-up calls), and the medians are reported with the Ember/ORT ratio and the geometric
mean of the ratios. Each thread count runs in its own child process with EMBER_NUM_THREADS and
the BLAS/OpenMP variables set before anything is imported; its runners are timed pinned to that
many CPUs, and Ember compiles on every CPU the run may use (as a user's compile does: LLVM
compiles a model's parts on all of them), so the compile times do not depend on the thread
count. A model that Ember refuses or gets wrong keeps its row, with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ZOO_DIR = Path(__file__).resolve().parent / ".zoo"
README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- bench_zoo: begin -->", "<!-- bench_zoo: end -->"
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
TOLERANCE = 1e-4  # largest max|y - y_ort| / max|y_ort| that passes
OPSET = 17


# -- the models (PyTorch) -------------------------------------------------------------------------


def conv_bn(nn: Any, inputs: int, outputs: int, kernel: int, stride: int = 1, padding: int = 0,
            groups: int = 1, eps: float = 1e-5) -> list[Any]:
    """A bias-free convolution and its batch norm."""
    return [nn.Conv2d(inputs, outputs, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(outputs, eps=eps)]


def resnet(layers: tuple[int, int, int, int], bottleneck: bool, classes: int = 1000) -> Any:
    """ResNet-18 (basic blocks, 2-2-2-2) or ResNet-50 (bottlenecks, 3-4-6-3), as torchvision's
    v1.5 (the stride on the bottleneck's 3x3)."""
    import torch
    from torch import nn

    expansion = 4 if bottleneck else 1

    class Block(nn.Module):
        def __init__(self, inputs: int, width: int, stride: int) -> None:
            super().__init__()
            outputs = width * expansion
            if bottleneck:
                self.body = nn.Sequential(
                    *conv_bn(nn, inputs, width, 1), nn.ReLU(),
                    *conv_bn(nn, width, width, 3, stride, 1), nn.ReLU(),
                    *conv_bn(nn, width, outputs, 1))
            else:
                self.body = nn.Sequential(
                    *conv_bn(nn, inputs, width, 3, stride, 1), nn.ReLU(),
                    *conv_bn(nn, width, width, 3, 1, 1))
            self.shortcut = (nn.Sequential(*conv_bn(nn, inputs, outputs, 1, stride))
                             if stride != 1 or inputs != outputs else nn.Identity())

        def forward(self, x: Any) -> Any:
            return torch.relu(self.body(x) + self.shortcut(x))

    stages: list[Any] = []
    inputs = 64
    for index, (count, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
        for block in range(count):
            stages.append(Block(inputs, width, 2 if block == 0 and index > 0 else 1))
            inputs = width * expansion
    return nn.Sequential(*conv_bn(nn, 3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(inputs, classes))


def mobilenet_v2(classes: int = 1000) -> Any:
    """MobileNetV2 (width 1.0): inverted residuals with ReLU6, the paper's table 2."""
    from torch import nn

    class InvertedResidual(nn.Module):
        def __init__(self, inputs: int, outputs: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = inputs * expand
            layers: list[Any] = []
            if expand != 1:
                layers += [*conv_bn(nn, inputs, hidden, 1), nn.ReLU6()]
            layers += [*conv_bn(nn, hidden, hidden, 3, stride, 1, groups=hidden), nn.ReLU6(),
                       *conv_bn(nn, hidden, outputs, 1)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and inputs == outputs

        def forward(self, x: Any) -> Any:
            return x + self.body(x) if self.residual else self.body(x)

    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]
    layers: list[Any] = [*conv_bn(nn, 3, 32, 3, 2, 1), nn.ReLU6()]
    inputs = 32
    for expand, outputs, count, stride in settings:
        for index in range(count):
            layers.append(InvertedResidual(inputs, outputs, stride if index == 0 else 1, expand))
            inputs = outputs
    layers += [*conv_bn(nn, inputs, 1280, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Dropout(0.2), nn.Linear(1280, classes)]
    return nn.Sequential(*layers)


def shufflenet_v2(classes: int = 1000) -> Any:
    """ShuffleNetV2 x1.0: stages of 4, 8, 4 units, widths 24-116-232-464-1024."""
    import torch
    from torch import nn

    def shuffle(x: Any) -> Any:
        batch, channels, height, width = x.shape
        x = x.reshape(batch, 2, channels // 2, height, width).transpose(1, 2)
        return x.reshape(batch, channels, height, width)

    class Unit(nn.Module):
        def __init__(self, inputs: int, outputs: int, stride: int) -> None:
            super().__init__()
            branch = outputs // 2
            self.stride = stride
            if stride > 1:
                self.left = nn.Sequential(*conv_bn(nn, inputs, inputs, 3, stride, 1,
                                                   groups=inputs),
                                          *conv_bn(nn, inputs, branch, 1), nn.ReLU())
            right_inputs = inputs if stride > 1 else branch
            self.right = nn.Sequential(
                *conv_bn(nn, right_inputs, branch, 1), nn.ReLU(),
                *conv_bn(nn, branch, branch, 3, stride, 1, groups=branch),
                *conv_bn(nn, branch, branch, 1), nn.ReLU())

        def forward(self, x: Any) -> Any:
            if self.stride == 1:
                left, right = x.chunk(2, dim=1)
                out = torch.cat((left, self.right(right)), dim=1)
            else:
                out = torch.cat((self.left(x), self.right(x)), dim=1)
            return shuffle(out)

    layers: list[Any] = [*conv_bn(nn, 3, 24, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    inputs = 24
    for count, outputs in zip((4, 8, 4), (116, 232, 464), strict=True):
        for index in range(count):
            layers.append(Unit(inputs, outputs, 2 if index == 0 else 1))
            inputs = outputs
    layers += [*conv_bn(nn, inputs, 1024, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(1024, classes)]
    return nn.Sequential(*layers)


def densenet121(classes: int = 1000) -> Any:
    """DenseNet-121: growth 32, blocks of 6, 12, 24, 16 layers, bottleneck 4x, compression 0.5."""
    import torch
    from torch import nn

    class DenseLayer(nn.Module):
        def __init__(self, inputs: int, growth: int = 32, bottleneck: int = 4) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.BatchNorm2d(inputs), nn.ReLU(),
                nn.Conv2d(inputs, bottleneck * growth, 1, bias=False),
                nn.BatchNorm2d(bottleneck * growth), nn.ReLU(),
                nn.Conv2d(bottleneck * growth, growth, 3, padding=1, bias=False))

        def forward(self, x: Any) -> Any:
            return torch.cat((x, self.body(x)), dim=1)

    layers: list[Any] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1)]
    channels = 64
    for index, count in enumerate((6, 12, 24, 16)):
        for _ in range(count):
            layers.append(DenseLayer(channels))
            channels += 32
        if index < 3:  # transition: batch norm, ReLU, 1x1 halving the channels, 2x2 average
            layers += [nn.BatchNorm2d(channels), nn.ReLU(),
                       nn.Conv2d(channels, channels // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
            channels //= 2
    layers += [nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


def vgg16(classes: int = 1000) -> Any:
    """VGG-16 (configuration D, no batch norm): 13 3x3 convolutions, three linear layers."""
    from torch import nn

    layers: list[Any] = []
    inputs = 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers += [nn.Conv2d(inputs, width, 3, padding=1), nn.ReLU()]
        inputs = width
    layers += [nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(),
               nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
               nn.Linear(4096, classes)]
    return nn.Sequential(*layers)


def squeezenet1_1(classes: int = 1000) -> Any:
    """SqueezeNet 1.1: eight fire modules, a 1x1 convolution classifier."""
    import torch
    from torch import nn

    class Fire(nn.Module):
        def __init__(self, inputs: int, squeeze: int, expand: int) -> None:
            super().__init__()
            self.squeeze = nn.Sequential(nn.Conv2d(inputs, squeeze, 1), nn.ReLU())
            self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
            self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

        def forward(self, x: Any) -> Any:
            x = self.squeeze(x)
            return torch.cat((self.expand1(x), self.expand3(x)), dim=1)

    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(64, 16, 64), Fire(128, 16, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(128, 32, 128), Fire(256, 32, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(256, 48, 192), Fire(384, 48, 192), Fire(384, 64, 256), Fire(512, 64, 256),
        nn.Dropout(0.5), nn.Conv2d(512, classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten())


def inception_v3_block(classes: int = 1000) -> Any:
    """Inception v3's stem (to 192 channels at 1/8 size) and two InceptionA blocks (pool
    features 32 and 64), then the classifier; batch norms with eps 0.001 as in v3."""
    import torch
    from torch import nn

    def basic(inputs: int, outputs: int, kernel: int, stride: int = 1, padding: int = 0) -> Any:
        return nn.Sequential(*conv_bn(nn, inputs, outputs, kernel, stride, padding, eps=1e-3),
                             nn.ReLU())

    class InceptionA(nn.Module):
        def __init__(self, inputs: int, pool_features: int) -> None:
            super().__init__()
            self.branch1x1 = basic(inputs, 64, 1)
            self.branch5x5 = nn.Sequential(basic(inputs, 48, 1), basic(48, 64, 5, padding=2))
            self.branch3x3dbl = nn.Sequential(basic(inputs, 64, 1), basic(64, 96, 3, padding=1),
                                              basic(96, 96, 3, padding=1))
            self.branch_pool = nn.Sequential(nn.AvgPool2d(3, 1, 1),
                                             basic(inputs, pool_features, 1))

        def forward(self, x: Any) -> Any:
            return torch.cat((self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x),
                              self.branch_pool(x)), dim=1)

    return nn.Sequential(
        basic(3, 32, 3, 2), basic(32, 32, 3), basic(32, 64, 3, padding=1), nn.MaxPool2d(3, 2),
        basic(64, 80, 1), basic(80, 192, 3), nn.MaxPool2d(3, 2),
        InceptionA(192, 32), InceptionA(256, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(288, classes))


def vit_s16(classes: int = 1000, image: int = 224) -> Any:
    """ViT-S/16: 16x16 patches, width 384, 12 pre-norm encoder layers of 6 heads, MLP 1536,
    a class token and learned position embeddings, LayerNorm eps 1e-6, exact GELU."""
    import torch
    from torch import nn

    width, depth, heads, hidden, patch = 384, 12, 6, 1536, 16

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)

        def forward(self, x: Any) -> Any:
            batch, tokens, _ = x.shape
            qkv = self.qkv(x).reshape(batch, tokens, 3, heads, width // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            scores = (q @ k.transpose(-2, -1)) * (width // heads) ** -0.5
            mixed = scores.softmax(dim=-1) @ v
            return self.proj(mixed.transpose(1, 2).reshape(batch, tokens, width))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(width, eps=1e-6)
            self.attention = Attention()
            self.norm2 = nn.LayerNorm(width, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(),
                                     nn.Linear(hidden, width))

        def forward(self, x: Any) -> Any:
            x = x + self.attention(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patches = nn.Conv2d(3, width, patch, patch)
            self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
            self.position = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, width) * 0.02)
            self.layers = nn.Sequential(*(Encoder() for _ in range(depth)))
            self.norm = nn.LayerNorm(width, eps=1e-6)
            self.head = nn.Linear(width, classes)

        def forward(self, x: Any) -> Any:
            x = self.patches(x).flatten(2).transpose(1, 2)
            x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), dim=1) + self.position
            x = self.norm(self.layers(x))
            return self.head(x[:, 0])

    return ViT()


@dataclass(frozen=True)
class ZooModel:
    """One model of the suite: how to build it for an image size, and its default size."""

    name: str
    build: Callable[[int], Any]
    size: int = 224


MODELS: dict[str, ZooModel] = {model.name: model for model in (
    ZooModel("resnet18", lambda size: resnet((2, 2, 2, 2), bottleneck=False)),
    ZooModel("resnet50", lambda size: resnet((3, 4, 6, 3), bottleneck=True)),
    ZooModel("mobilenet_v2", lambda size: mobilenet_v2()),
    ZooModel("shufflenet_v2", lambda size: shufflenet_v2()),
    ZooModel("densenet121", lambda size: densenet121()),
    ZooModel("vgg16", lambda size: vgg16()),
    ZooModel("squeezenet1_1", lambda size: squeezenet1_1()),
    ZooModel("inception_v3_block", lambda size: inception_v3_block()),
    ZooModel("vit_s16", lambda size: vit_s16(image=size)),
)}


def build_torch(name: str, size: int | None = None) -> tuple[Any, np.ndarray]:
    """The seeded PyTorch model in eval mode and its seeded input (1 x 3 x size x size).

    Batch norms are calibrated first: one forward pass in training mode with momentum 1 over a
    random batch of two images sets each running mean and variance to that batch's, so every
    layer sees activations of unit scale (with torch's default init alone a deep network's
    output shrinks by orders of magnitude). Their affine parameters are then drawn around 1 and
    0, so no batch norm is the identity.
    """
    import torch

    zoo = MODELS[name]
    size = size or zoo.size
    torch.manual_seed(0)
    model = zoo.build(size)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if norms:
        for norm in norms:
            norm.momentum = 1.0
        model.train()
        with torch.no_grad():
            model(torch.randn(2, 3, size, size))
        with torch.no_grad():
            for norm in norms:
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.normal_(0.0, 0.1)
    model.eval()
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, image.numpy()


def export_onnx(name: str, size: int | None = None, directory: Path | None = None
                ) -> tuple[Path, Any, np.ndarray]:
    """The model's .onnx file (exported on first use), the PyTorch model and the input."""
    import torch

    model, image = build_torch(name, size)
    directory = directory or ZOO_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{image.shape[-1]}-torch{torch.__version__}-opset{OPSET}.onnx"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.part")
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, (torch.from_numpy(image),), str(partial), dynamo=False,
                              input_names=["image"], output_names=["logits"],
                              opset_version=OPSET, do_constant_folding=True)
        partial.replace(path)  # whole or absent: a concurrent run never reads half a file
    return path, model, image


# -- measuring one model --------------------------------------------------------------------------


@dataclass
class Side:
    """One runner's numbers for one model."""

    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    calls: int = 0


@dataclass
class ZooResult:
    """Everything measured for one model at one thread count."""

    name: str
    threads: int
    ember: Side = field(default_factory=Side)
    onnxruntime: Side = field(default_factory=Side)
    torch: Side = field(default_factory=Side)
    error: float | None = None  # Ember vs ORT: max|y - y_ort| / max|y_ort|
    torch_error: float | None = None  # PyTorch vs ORT, the same measure
    import_s: float | None = None  # ember.onnx.load
    compile_cold_s: float | None = None  # ember.compile into an empty cache
    compile_cached_s: float | None = None  # and again into the same cache
    kernels: int | None = None  # kernel calls in Ember's program
    failure: str = ""  # why Ember has no time (refused, crashed, wrong)

    @property
    def ratio(self) -> float | None:
        """Ember's median over ORT's (below 1: Ember is faster)."""
        if self.ember.median_ms is None or not self.onnxruntime.median_ms:
            return None
        return self.ember.median_ms / self.onnxruntime.median_ms

    @property
    def ok(self) -> bool:
        return not self.failure and self.error is not None and self.error <= TOLERANCE


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max|got - want| / max|want| in float64 (infinite for a shape mismatch or a NaN)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    worst = float(np.abs(got - want).max())
    return worst / max(float(np.abs(want).max()), 1e-30) if math.isfinite(worst) else float("inf")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


@contextlib.contextmanager
def fresh_cache() -> Any:
    """EMBER_CACHE_DIR pointed at a new empty directory (the compile cache on), for the block."""
    from ember.bench import environment

    with tempfile.TemporaryDirectory(prefix="ember-zoo-cache-") as directory, \
            environment(EMBER_CACHE_DIR=directory, EMBER_CACHE="1"):
        yield directory


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compile_ember(path: Path, threads: int, result: ZooResult) -> Any:
    """Import and compile the .onnx file twice (cold, cached), filling in `result`'s times;
    returns the executable (None with `result.failure` set when Ember refuses the model)."""
    import ember
    import ember.onnx

    try:
        start = time.perf_counter()
        model = ember.onnx.load(path)
        result.import_s = time.perf_counter() - start
        inputs = model.example_inputs
        with fresh_cache():
            start = time.perf_counter()
            exe = ember.compile(model, *inputs, opt_level=3, threads=threads, progress=False)
            result.compile_cold_s = time.perf_counter() - start
            start = time.perf_counter()
            exe = ember.compile(model, *inputs, opt_level=3, threads=threads, progress=False)
            result.compile_cached_s = time.perf_counter() - start
    except Exception as err:  # refused (an unsupported operator) or a compiler failure
        result.failure = f"does not compile: {_first_line(err)}"
        return None
    result.kernels = len(exe.native.program.calls) if exe.native is not None else None
    return exe


def _side(samples: list[float]) -> Side:
    if not samples:
        return Side()
    p10, median, p90 = np.percentile(np.array(samples) * 1e3, [10, 50, 90])
    return Side(float(median), float(p10), float(p90), len(samples))


@contextlib.contextmanager
def pinned(cpus: list[int] | None):
    """Every thread of this process on `cpus` inside the block (None: as it is), then back."""
    if not cpus:
        yield
        return
    tasks = [int(t) for t in os.listdir("/proc/self/task")]
    before = {task: os.sched_getaffinity(task) for task in tasks}
    for task in tasks:
        os.sched_setaffinity(task, cpus)
    try:
        yield
    finally:
        for task, mask in before.items():
            with contextlib.suppress(OSError):  # a thread that has ended since
                os.sched_setaffinity(task, mask)


def run_model(name: str, threads: int, rounds: int = 10, warmup: int = 2,
              max_seconds: float = 30.0, size: int | None = None,
              directory: Path | None = None, pin: list[int] | None = None) -> ZooResult:
    """Export, compile, check and time one model at `threads` threads in this process (the
    checks and timings on the CPUs `pin` names, when given)."""
    import torch

    torch.set_num_threads(threads)
    result = ZooResult(name, threads)
    path, torch_model, image = export_onnx(name, size, directory)
    session = ort_session(path, threads)
    feed = {session.get_inputs()[0].name: image}
    reference = session.run(None, feed)[0]
    tensor = torch.from_numpy(image)

    def run_torch() -> Any:
        with torch.no_grad():
            return torch_model(tensor)

    result.torch_error = relative_error(run_torch().numpy(), reference)
    runners: dict[str, Callable[[], Any]] = {"onnxruntime": lambda: session.run(None, feed),
                                             "torch": run_torch}
    exe = compile_ember(path, threads, result)
    with pinned(pin):
        _check_and_time(exe, image, reference, runners, result, rounds, warmup, max_seconds)
    return result


def _check_and_time(exe: Any, image: np.ndarray, reference: np.ndarray,
                    runners: dict[str, Callable[[], Any]], result: ZooResult, rounds: int,
                    warmup: int, max_seconds: float) -> None:
    if exe is not None:
        try:
            result.error = relative_error(exe(image), reference)
        except Exception as err:
            result.failure = f"fails at run time: {_first_line(err)}"
        else:
            if result.error > TOLERANCE:
                result.failure = (f"wrong: max relative error {result.error:.2e} vs ONNX Runtime "
                                  f"(limit {TOLERANCE:.0e})")
            runners = {"ember": lambda: exe(image), **runners}  # timed even when wrong
    samples = time_alternating(runners, rounds, warmup, max_seconds)
    for side, values in samples.items():
        setattr(result, side, _side(values))


def time_alternating(runners: dict[str, Callable[[], Any]], rounds: int, warmup: int,
                     max_seconds: float) -> dict[str, list[float]]:
    """Seconds per call of each runner: `warmup` untimed calls each, then rounds of one timed
    call of each in turn (so drift and a neighbour's load fall on all sides alike), stopping
    after `max_seconds` of rounds (at least 3)."""
    for call in runners.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    started = time.perf_counter()
    for round_ in range(rounds):
        for name, call in runners.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
        if round_ >= 2 and time.perf_counter() - started > max_seconds:
            break
    return samples


# -- the table ------------------------------------------------------------------------------------


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _cell(value: float | None, width: int, digits: int = 2) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def table(results: list[ZooResult]) -> str:
    """One line per model: medians, the Ember/ORT ratio, the error and the compile times."""
    threads = results[0].threads
    lines = [f"{threads} thread{'s' if threads > 1 else ''}: median ms of alternating calls "
             f"(Ember, ONNX Runtime, PyTorch eager); error = max|y - y_ort| / max|y_ort|",
             f"{'model':<20}{'ember':>9}{'ort':>9}{'torch':>9}{'ember/ort':>11}"
             f"{'ember/torch':>12}{'error':>10}{'kernels':>9}{'cold s':>8}{'cached s':>9}"]
    for r in results:
        ratio = f"{r.ratio:10.2f}x" if r.ratio is not None else f"{'-':>11}"
        versus = (f"{r.ember.median_ms / r.torch.median_ms:11.2f}x"
                  if r.ember.median_ms is not None and r.torch.median_ms else f"{'-':>12}")
        error = f"{r.error:10.1e}" if r.error is not None else f"{'-':>10}"
        kernels = f"{r.kernels:9d}" if r.kernels is not None else f"{'-':>9}"
        lines.append(f"{r.name:<20}{_cell(r.ember.median_ms, 9)}{_cell(r.onnxruntime.median_ms, 9)}"
                     f"{_cell(r.torch.median_ms, 9)}{ratio}{versus}{error}{kernels}"
                     f"{_cell(r.compile_cold_s, 8, 1)}{_cell(r.compile_cached_s, 9, 2)}")
        if r.failure:
            lines.append(f"  {r.name}: {r.failure}")
    ratios = [r.ratio for r in results if r.ratio is not None and r.ok]
    mean = geomean(ratios)
    lines.append(f"geomean ember/ort over the {len(ratios)} correct model"
                 f"{'s' if len(ratios) != 1 else ''}: " + (f"{mean:.2f}x" if mean else "-"))
    return "\n".join(lines)


def chart_groups(results: list[ZooResult]) -> list[tuple[str, list[tuple[str, float | None]]]]:
    """The bar chart's groups: per model, each runner's median ms (None: not run)."""
    return [(r.name, [("ember", r.ember.median_ms), ("onnxruntime", r.onnxruntime.median_ms),
                      ("torch", r.torch.median_ms)]) for r in results]


# -- running --------------------------------------------------------------------------------------


def run_in_process(names: list[str], threads: int, options: argparse.Namespace
                   ) -> list[ZooResult]:
    from ember.bench import machine_info

    print(machine_info(threads).line(), flush=True)
    results = []
    for name in names:
        print(f"  {name} ...", end="", flush=True)
        start = time.perf_counter()
        result = run_model(name, threads, options.rounds, options.warmup, options.max_seconds,
                           pin=[int(c) for c in options.pin.split(",")] if options.pin else None)
        print(f" {time.perf_counter() - start:.0f} s", flush=True)
        results.append(result)
    return results


def run_child(names: list[str], threads: int, options: argparse.Namespace) -> list[ZooResult]:
    """One thread count in a fresh interpreter whose thread pools start at that count, timing
    on the last `threads` CPUs of this process's affinity (under `taskset -c 0,1` the
    one-thread child times on CPU 1 alone, the two-thread child on both), compiling on all."""
    environment = dict(os.environ, EMBER_NUM_THREADS=str(threads))
    environment.update({name: str(threads) for name in THREAD_VARIABLES})
    with tempfile.TemporaryDirectory(prefix="ember-zoo-") as directory:
        output = os.path.join(directory, "result.json")
        command = [sys.executable, __file__, "--in-process", "--threads", str(threads),
                   "--only", ",".join(names), "--json", output, "--rounds", str(options.rounds),
                   "--warmup", str(options.warmup), "--max-seconds", str(options.max_seconds)]
        cpus = sorted(os.sched_getaffinity(0))[-threads:]  # the last N CPUs this run may use
        command += ["--pin", ",".join(map(str, cpus))]
        subprocess.run(command, env=environment, check=True)
        with open(output, encoding="utf-8") as file:
            return [from_dict(item) for item in json.load(file)["runs"][0]["results"]]


def from_dict(data: dict[str, Any]) -> ZooResult:
    sides = {side: Side(**data.pop(side)) for side in ("ember", "onnxruntime", "torch")}
    data = {k: v for k, v in data.items() if k in ZooResult.__dataclass_fields__}
    return ZooResult(**data, **sides)


def to_dict(result: ZooResult) -> dict[str, Any]:
    return {**asdict(result), "ratio": result.ratio, "ok": result.ok}


def write_readme(command: str, text: str) -> None:
    """Put this run's tables between the README's bench_zoo markers."""
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README}: no {BEGIN} ... {END} section to write into")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n```\n$ {command}\n{text.strip()}\n```\n{END}{tail}")
    print(f"wrote the tables into {README}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="models: " + ", ".join(MODELS))
    parser.add_argument("--only", default="", metavar="NAME[,NAME]",
                        help="run only these models (default: all)")
    parser.add_argument("--threads", default="1,2", metavar="N[,N]",
                        help="thread counts, one child process each (default: 1,2)")
    parser.add_argument("--rounds", type=int, default=10,
                        help="timed rounds, one call of each runner per round (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each first")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="stop a model's rounds after this many seconds (at least 3 rounds)")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE")
    parser.add_argument("--plot", metavar="FILE.svg", help="draw the times as an SVG bar chart")
    parser.add_argument("--readme", action="store_true",
                        help=f"write the tables into {README.name} between its bench_zoo markers")
    parser.add_argument("--pin", default="", metavar="CPU[,CPU]",
                        help="time (not compile) on these CPUs only (set for each child)")
    parser.add_argument("--in-process", action="store_true",
                        help="run in this process (one thread count; thread pools as inherited)")
    options = parser.parse_args(argv)
    names = [n for n in options.only.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r} (models: {', '.join(MODELS)})")
    try:
        counts = [int(n) for n in options.threads.split(",") if n]
    except ValueError:
        parser.error(f"--threads takes counts like 1,2, got {options.threads!r}")
    if not counts or min(counts) < 1:
        parser.error(f"--threads takes counts of at least 1, got {options.threads!r}")
    runs: list[tuple[int, list[ZooResult]]] = []
    tables = []
    for threads in counts:
        if options.in_process:
            results = run_in_process(names, threads, options)
        else:
            print(f"== {threads} thread{'s' if threads > 1 else ''} ==", flush=True)
            results = run_child(names, threads, options)
            print(flush=True)
        runs.append((threads, results))
        tables.append(table(results))
        if options.in_process:  # (a child's table is printed by the child)
            print(tables[-1], flush=True)
    if options.json:
        with open(options.json, "w", encoding="utf-8") as file:
            json.dump({"runs": [{"threads": t, "results": [to_dict(r) for r in results]}
                                for t, results in runs]}, file, indent=2)
            file.write("\n")
    if options.plot:
        from ember.bench import write_chart

        for threads, results in runs:
            path = options.plot if len(runs) == 1 else _numbered(options.plot, threads)
            write_chart(path, f"bench_zoo: median ms per call, {threads} thread"
                        f"{'s' if threads > 1 else ''}", chart_groups(results))
            print(f"wrote {path}")
    if options.readme and not options.in_process:
        from ember.bench import machine_info

        machine = machine_info(1).line().rsplit("; threads", 1)[0]
        command = " ".join(["python benchmarks/bench_zoo.py", *(argv if argv is not None
                                                                 else sys.argv[1:])])
        write_readme(command, machine + "\n\n" + "\n\n".join(tables))
    return 0 if all(r.ok for _, results in runs for r in results) else 1


def _numbered(path: str, threads: int) -> str:
    """FILE.svg -> FILE-2t.svg: one chart per thread count."""
    stem, suffix = os.path.splitext(path)
    return f"{stem}-{threads}t{suffix or '.svg'}"


if __name__ == "__main__":
    sys.exit(main())
