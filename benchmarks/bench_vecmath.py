"""Throughput of Ember's vector math (exp, tanh, sigmoid, gelu) against numpy on a big array.

    taskset -c 0 python benchmarks/bench_vecmath.py --size 4194304 --runs 20

Each Ember kernel is a loop over <16 x float> calling `math_function` (inlined, no libm call).
The floor is memory traffic: one read and one write of the array at the machine's copy bandwidth.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "backend"))
from test_vecmath import kernel_module

from ember.backend.llvm.jit import compile_ir, host_cpu


def median_ms(function, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), max(times)


def numpy_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def numpy_gelu(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf
    except ImportError:
        erf = np.frompyfunc(math.erf, 1, 1)
    return (0.5 * x * (1.0 + erf(x * np.float32(math.sqrt(0.5))))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4 * 1024 * 1024, help="floats per array")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (median reported)")
    parser.add_argument("--bandwidth", type=float, default=22.0,
                        help="memory copy bandwidth in GB/s for the floor")
    arguments = parser.parse_args()
    size = -(-arguments.size // 16) * 16
    x = np.random.default_rng(0).uniform(-8.0, 8.0, size).astype(np.float32)
    y = np.empty_like(x)
    floor_ms = 2 * x.nbytes / (arguments.bandwidth * 1e9) * 1e3
    print(f"{host_cpu().describe()}; {size} floats; floor (read + write at "
          f"{arguments.bandwidth} GB/s) {floor_ms:.2f} ms")
    references = {"exp": lambda: np.exp(x, out=y), "tanh": lambda: np.tanh(x, out=y),
                  "sigmoid": lambda: numpy_sigmoid(x), "gelu": lambda: numpy_gelu(x)}
    print(f"{'function':10s} {'ember ms':>9s} {'max':>7s} {'GB/s':>6s} {'numpy ms':>9s} "
          f"{'max':>7s} {'speedup':>8s}")
    for name, reference in references.items():
        kernel = compile_ir(kernel_module(name, "v16f32")).function(
            "kernel", None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64])

        def run(kernel=kernel) -> None:
            kernel(y.ctypes.data, x.ctypes.data, size)

        run()
        reference()
        ember_ms, ember_max = median_ms(run, arguments.runs)
        numpy_ms, numpy_max = median_ms(reference, arguments.runs)
        print(f"{name:10s} {ember_ms:9.2f} {ember_max:7.2f} {2 * x.nbytes / ember_ms / 1e6:6.1f} "
              f"{numpy_ms:9.2f} {numpy_max:7.2f} {numpy_ms / ember_ms:7.1f}x")


if __name__ == "__main__":
    main()
