"""Ember's CUDA kernels on the GPU, against PyTorch CUDA where it is installed: one prepared run.

    python benchmarks/bench_cuda.py                   # everything (well under 5 minutes)
    python benchmarks/bench_cuda.py copy chain gemm   # chosen benchmarks
    python benchmarks/bench_cuda.py --runs 10         # timed runs per row (median reported)

Benchmarks (float32):
- `copy`: memory bandwidth, the yardstick for the memory-bound rows. `d2d copy`: the driver's
  device-to-device copy (cuMemcpyDtoD) of N floats, 2 * 4N bytes moved; `triad`: Ember's own
  kernel a = b + 2.5 * c, 3 * 4N bytes; PyTorch's `torch.add(b, c, alpha=2.5, out=a)` beside it.
- `chain`: the fused elementwise chain gelu(tanh(x) * 1.5 + x), one Ember kernel reading x and
  writing the result once (2 * 4N bytes), as a share of the best copy bandwidth measured; PyTorch
  eager runs it as several kernels.
- `softmax`, `layernorm`: rows of a [8192, 4096] matrix (last axis), 2 * 4 bytes per element.
- `gemm`: C = A @ B, 4096^3, f32 (PyTorch with TF32 off), and PyTorch's TF32 and BF16 for
  reference; Ember's tf32/bf16 (tensor cores) are not implemented yet and are reported so.
- `models`: the examples (mlp, cnn, transformer): all their launches, device time, and one
  whole call from numpy (copies in and out included).

Every Ember row is first checked against numpy (or PyTorch) on the same data (`max err`),
then timed with CUDA events around each run on the device, the data already there; each row is
the median of `--runs` runs after warm-up. Without a GPU (or without the cuda-bindings package)
the script says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import ember
from ember.backend.cuda import runtime

N = 1 << 26  # elements of the memory-bound rows (256 MiB per float32 array)
ROWS, COLUMNS = 8192, 4096
GEMM = 4096
BENCHMARKS = ("copy", "chain", "softmax", "layernorm", "gemm", "models")

_rows: list[tuple[str, str, str, str]] = []  # (benchmark, side, median, figure)
_best_copy: list[float] = []  # GB/s of the copies measured, for the chain's share


def _torch() -> Any:
    """torch when it is installed with CUDA, else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _row(bench: str, side: str, seconds: float, figure: str) -> None:
    _rows.append((bench, side, f"{seconds * 1e3:9.3f} ms", figure))
    print(f"  {bench:<10} {side:<34} {seconds * 1e3:9.3f} ms  {figure}", flush=True)


def _ember(fn: Callable[..., Any], *inputs: np.ndarray, arch: str) -> tuple[Any, Any]:
    """The compiled executable for `arch` and its loaded device program (inputs uploaded)."""
    exe = ember.compile(fn, *inputs, target=f"cuda:{arch}")
    exe(*inputs)  # loads the module and leaves the inputs on the device
    return exe, exe.native.native.device()


def _time_ember(device: Any, runs: int) -> float:
    return statistics.median(device.time_launches(runs))


def _time_torch(torch: Any, work: Callable[[], Any], runs: int) -> float:
    for _ in range(3):
        work()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _error(actual: Any, expected: Any) -> str:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.abs(expected).max()), 1e-30)
    return f"max err {float(np.abs(actual - expected).max()) / scale:.1e} (relative to max)"


def bench_copy(arch: str, runs: int, torch: Any) -> None:
    cuda = runtime.driver()
    rng = np.random.default_rng(0)
    b, c = (rng.standard_normal(N, dtype=np.float32) for _ in range(2))
    nbytes = 4 * N
    source, target = runtime.DeviceBuffer(cuda, nbytes), runtime.DeviceBuffer(cuda, nbytes)
    source.upload(b)

    def d2d() -> None:
        runtime.check(cuda, cuda.cuMemcpyDtoD(target.address, source.address, nbytes),
                      "cuMemcpyDtoD")

    seconds = statistics.median(runtime.time_on_device(cuda, d2d, runs))
    _best_copy.append(2 * nbytes / seconds / 1e9)
    _row("copy", "d2d copy (cuMemcpyDtoD)", seconds, f"{_best_copy[-1]:7.1f} GB/s")
    exe, device = _ember(lambda x, y: x + y * 2.5, b, c, arch=arch)
    error = _error(exe(b, c), b.astype(np.float64) + 2.5 * c)
    seconds = _time_ember(device, runs)
    _best_copy.append(3 * nbytes / seconds / 1e9)
    _row("copy", "ember triad a = b + 2.5 c", seconds, f"{_best_copy[-1]:7.1f} GB/s  {error}")
    if torch is not None:
        tb, tc = torch.from_numpy(b).cuda(), torch.from_numpy(c).cuda()
        ta = torch.empty_like(tb)
        seconds = _time_torch(torch, lambda: torch.add(tb, tc, alpha=2.5, out=ta), runs)
        _row("copy", "torch triad", seconds, f"{3 * nbytes / seconds / 1e9:7.1f} GB/s")


def bench_chain(arch: str, runs: int, torch: Any) -> None:
    from math import erf

    x = np.random.default_rng(1).standard_normal(N, dtype=np.float32)

    def chain(a: Any) -> Any:
        return ember.nn.functional.gelu(np.tanh(a) * 1.5 + a)

    exe, device = _ember(chain, x, arch=arch)
    h = np.tanh(x[: 1 << 16].astype(np.float64)) * 1.5 + x[: 1 << 16]
    expected = 0.5 * h * (1 + np.vectorize(erf)(h / np.sqrt(2)))
    error = _error(exe(x)[: 1 << 16], expected)
    seconds = _time_ember(device, runs)
    rate = 2 * 4 * N / seconds / 1e9
    best = max(_best_copy) if _best_copy else float("nan")
    share = f"{rate / best:5.1%} of copy" if _best_copy else "(run `copy` for the share)"
    _row("chain", "ember fused gelu(tanh(x)*1.5+x)", seconds, f"{rate:7.1f} GB/s {share}  {error}")
    if torch is not None:
        tx = torch.from_numpy(x).cuda()
        gelu = torch.nn.functional.gelu
        seconds = _time_torch(torch, lambda: gelu(torch.tanh(tx) * 1.5 + tx), runs)
        _row("chain", "torch eager", seconds, f"{2 * 4 * N / seconds / 1e9:7.1f} GB/s")


def _bench_rows(name: str, fn: Callable[..., Any], reference: Callable[..., np.ndarray],
                torch_fn: Callable[..., Any] | None, inputs: list[np.ndarray], arch: str,
                runs: int, torch: Any) -> None:
    exe, device = _ember(fn, *inputs, arch=arch)
    error = _error(exe(*inputs), reference(*inputs))
    seconds = _time_ember(device, runs)
    moved = 2 * 4 * ROWS * COLUMNS
    report = exe.native.native.report().splitlines()[1:]
    _row(name, f"ember ({len(report)} launches)", seconds,
         f"{moved / seconds / 1e9:7.1f} GB/s  {error}")
    if torch is not None and torch_fn is not None:
        tensors = [torch.from_numpy(a).cuda() for a in inputs]
        seconds = _time_torch(torch, lambda: torch_fn(*tensors), runs)
        _row(name, "torch", seconds, f"{moved / seconds / 1e9:7.1f} GB/s")


def bench_softmax(arch: str, runs: int, torch: Any) -> None:
    x = np.random.default_rng(2).standard_normal((ROWS, COLUMNS), dtype=np.float32)

    def reference(a: np.ndarray) -> np.ndarray:
        e = np.exp(a - a.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    _bench_rows("softmax", lambda a: ember.nn.functional.softmax(a, dim=-1), reference,
                (lambda t: torch.softmax(t, dim=-1)) if torch else None, [x], arch, runs, torch)


def bench_layernorm(arch: str, runs: int, torch: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((ROWS, COLUMNS), dtype=np.float32)
    w, b = rng.standard_normal(COLUMNS, dtype=np.float32), rng.standard_normal(
        COLUMNS, dtype=np.float32)

    def norm(a: Any, weight: Any, bias: Any) -> Any:
        return ember.nn.functional.layer_norm(a, (COLUMNS,), weight, bias)

    def reference(a: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        mean, var = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
        return (a - mean) / np.sqrt(var + 1e-5) * weight + bias

    torch_fn = ((lambda t, weight, bias: torch.nn.functional.layer_norm(t, (COLUMNS,), weight,
                                                                        bias)) if torch else None)
    _bench_rows("layernorm", norm, reference, torch_fn, [x, w, b], arch, runs, torch)


def bench_gemm(arch: str, runs: int, torch: Any) -> None:
    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal((GEMM, GEMM), dtype=np.float32) for _ in range(2))
    flops = 2 * GEMM**3
    exe, device = _ember(lambda x, y: x @ y, a, b, arch=arch)
    check = slice(0, 64)
    error = _error(exe(a, b)[check], a[check].astype(np.float64) @ b)
    seconds = _time_ember(device, max(3, runs // 4))
    ember_rate = flops / seconds / 1e12
    _row("gemm", "ember f32 (4x4 tile per thread)", seconds,
         f"{ember_rate:6.2f} TFLOP/s  {error}")
    for precision in ("tf32", "bf16"):
        print(f"  gemm       ember {precision:<29} not implemented (tensor cores: later work)")
    if torch is None:
        return
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    for label, tf32, dtype in (("f32", False, torch.float32), ("tf32", True, torch.float32),
                               ("bf16", False, torch.bfloat16)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        x, y = ta.to(dtype), tb.to(dtype)
        seconds = _time_torch(torch, lambda x=x, y=y: x @ y, runs)
        rate = flops / seconds / 1e12
        ratio = f"  ember f32 = {ember_rate / rate:5.1%} of it" if label == "f32" else ""
        _row("gemm", f"torch (cuBLAS) {label}", seconds, f"{rate:6.2f} TFLOP/s{ratio}")
    torch.backends.cuda.matmul.allow_tf32 = False


def bench_models(arch: str, runs: int, torch: Any) -> None:
    import importlib.util

    for name in ("mlp", "cnn", "transformer"):
        path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"_bench_cuda_{name}", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[spec.name] = module  # type: ignore[union-attr]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        inputs = module.example_inputs
        exe, device = _ember(module.model, *inputs, arch=arch)
        error = _error(exe(*inputs), module.numpy_forward(*inputs))
        seconds = _time_ember(device, runs)
        start = time.perf_counter()
        for _ in range(runs):
            exe(*inputs)
        whole = (time.perf_counter() - start) / runs
        launches = len(exe.native.native.program.calls)
        _row("models", f"ember {name} ({launches} launches)", seconds,
             f"whole call from numpy {whole * 1e3:.3f} ms  {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="benchmarks: " + ", ".join(BENCHMARKS))
    parser.add_argument("benchmarks", nargs="*", metavar="NAME",
                        help="benchmarks to run (default: all)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per row")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.benchmarks) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (choose from "
                     f"{', '.join(BENCHMARKS)})")
    try:
        name, arch = runtime.device_name(), runtime.device_arch()
    except ember.EmberError as err:
        print(f"bench_cuda: {err}", file=sys.stderr)
        return 2
    torch = _torch()
    print(f"GPU: {name} (code for {arch}); PyTorch CUDA: "
          f"{torch.__version__ if torch else 'not installed'}; median of {args.runs} runs")
    started = time.perf_counter()
    for bench in args.benchmarks or BENCHMARKS:
        globals()[f"bench_{bench}"](arch, args.runs, torch)
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
