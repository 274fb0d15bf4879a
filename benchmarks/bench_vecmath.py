"""Throughput of Ember's vector math against numpy on a big array.

    taskset -c 0 python benchmarks/bench_vecmath.py --size 4194304 --runs 20
    taskset -c 0 python benchmarks/bench_vecmath.py --functions sin cos --baseline 4f17d1e

Each Ember kernel is a loop over the variant's type calling `math_function` (inlined, no libm
call): `v16f32` and `v8f64` are explicit vectors, `f32` and `f64` scalar calls that LLVM's loop
vectorizer widens (as in Ember's own kernels). `--baseline REV` also times the kernels built by
`vecmath.py` as of git revision REV, in the same run (before / after). The floor is memory
traffic: one read and one write of the array at the machine's copy bandwidth.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "backend"))
import test_vecmath
from test_vecmath import kernel_module, numpy_dtype

from ember.backend.llvm.jit import compile_ir, host_cpu


def median_ms(function, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), max(times)


def interleaved_median_ms(functions, runs: int) -> list[tuple[float, float]]:
    """(median, max) of each function, timed in turn (after one warm-up call each) so that a
    busy spell of the machine costs them alike."""
    times = [[] for _ in functions]
    for function in functions:
        function()
    for _ in range(runs):
        for function, spent in zip(functions, times, strict=True):
            start = time.perf_counter()
            function()
            spent.append((time.perf_counter() - start) * 1e3)
    return [(statistics.median(spent), max(spent)) for spent in times]


def numpy_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def numpy_gelu(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf
    except ImportError:
        erf = np.frompyfunc(math.erf, 1, 1)
    return (0.5 * x * (1.0 + erf(x * x.dtype.type(math.sqrt(0.5))))).astype(x.dtype)


REFERENCES = {"exp": np.exp, "tanh": np.tanh, "sigmoid": numpy_sigmoid, "gelu": numpy_gelu,
              "sin": np.sin, "cos": np.cos}


def baseline_vecmath(revision: str):
    """`vecmath.py` as of git `revision`, imported as a separate module."""
    source = subprocess.run(["git", "show", f"{revision}:src/ember/backend/llvm/vecmath.py"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "vecmath_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("vecmath_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_kernel(name: str, variant: str, vecmath=None):
    saved = test_vecmath.math_function
    if vecmath is not None:
        test_vecmath.math_function = vecmath.math_function
    try:
        module = kernel_module(name, variant)
    finally:
        test_vecmath.math_function = saved
    return compile_ir(module).function("kernel", None,
                                       [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4 * 1024 * 1024, help="elements per array")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (median reported)")
    parser.add_argument("--bandwidth", type=float, default=22.0,
                        help="memory copy bandwidth in GB/s for the floor")
    parser.add_argument("--functions", nargs="+", default=["exp", "tanh", "sigmoid", "gelu"],
                        choices=sorted(REFERENCES))
    parser.add_argument("--variants", nargs="+", default=["v16f32"],
                        choices=["f32", "v16f32", "f64", "v8f64"])
    parser.add_argument("--range", type=float, default=8.0, help="inputs uniform in [-R, R]")
    parser.add_argument("--baseline", metavar="REV", help="also time vecmath.py as of REV")
    arguments = parser.parse_args()
    size = -(-arguments.size // 16) * 16
    baseline = baseline_vecmath(arguments.baseline) if arguments.baseline else None
    print(f"{host_cpu().describe()}; {size} elements in [-{arguments.range}, {arguments.range}]")
    print(f"{'function':10s} {'variant':7s} {'floor':>6s} {'ember ms':>9s} {'max':>7s} "
          f"{'GB/s':>6s} {'numpy ms':>9s} {'speedup':>8s}"
          + (f" {arguments.baseline + ' ms':>12s} {'gain':>6s}" if baseline else ""))
    for variant in arguments.variants:
        x = np.random.default_rng(0).uniform(-arguments.range, arguments.range, size)
        x = x.astype(numpy_dtype(variant))
        y = np.empty_like(x)
        floor_ms = 2 * x.nbytes / (arguments.bandwidth * 1e9) * 1e3
        for name in arguments.functions:
            kernels = [compile_kernel(name, variant)]
            if baseline is not None:
                kernels.append(compile_kernel(name, variant, baseline))
            reference = REFERENCES[name]
            reference(x)
            runs = [lambda kernel=kernel: kernel(y.ctypes.data, x.ctypes.data, size)
                    for kernel in kernels]
            times = interleaved_median_ms(runs, arguments.runs)
            numpy_ms, _ = median_ms(lambda: reference(x), arguments.runs)
            (ember_ms, ember_max), *before = times
            line = (f"{name:10s} {variant:7s} {floor_ms:6.2f} {ember_ms:9.2f} {ember_max:7.2f} "
                    f"{2 * x.nbytes / ember_ms / 1e6:6.1f} {numpy_ms:9.2f} "
                    f"{numpy_ms / ember_ms:7.1f}x")
            if before:
                line += f" {before[0][0]:12.2f} {before[0][0] / ember_ms:5.2f}x"
            print(line)


if __name__ == "__main__":
    main()
