"""Cost of a parallel region, and the speedup of parallel loops, in generated code.

    python benchmarks/bench_threads.py [--calls 5000] [--runs 30] [--size 4194304]
                                       [--threads 1,2]

Three runtimes from `ember.backend.cpu.threads` are compared: the persistent pool (workers poll
for `spin_cycles` before sleeping), the same pool with `spin_cycles=0` (workers sleep on the
condition variable at once), and fork-join (`pthread_create`/`pthread_join` per region).

1. Empty region: `parallel_for` over 2 iterations (min_chunk 1) with an empty body, called from
   Python through ctypes; median, 10th and 90th percentile of `--calls` calls. At 1 thread the
   body is called directly: that row is the cost of the ctypes call alone.
2. Memory-bound kernel: `y[i] = 3 * x[i]` over `--size` float32 elements (read 16 MiB, write
   16 MiB at 4M elements), GB/s counted as 8 bytes per element.
3. Compute-bound kernel: 64 dependent multiply-adds per element (`v = v * a + b`, contracted to
   FMA), GFLOP/s counted as 128 flops per element.
Kernels report median and the 10th-90th percentile range over `--runs` runs.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time

import numpy as np
from llvmlite import ir

from ember.backend.cpu.threads import (
    BODY_TYPE,
    attach_runtime,
    counted_loop,
    emit_parallel_runtime,
    set_num_threads,
)
from ember.backend.llvm.jit import compile_ir, host_cpu

F32, I32, I64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
CHAIN = 64  # multiply-adds per element in the compute-bound kernel
RUNTIMES = {"pool (spin, default)": {"strategy": "pool"},
            "pool (no spin)": {"strategy": "pool", "spin_cycles": 0},
            "spawn (fork-join)": {"strategy": "spawn"}}


def build(name: str, options: dict) -> ir.Module:
    """Kernels `empty(n)`, `scale(x, y, n)` and `chain(x, y, n)`, each one `parallel_for`."""
    module = ir.Module(name)
    runtime = emit_parallel_runtime(module, **options)
    pointer = F32.as_pointer()
    pair = ir.LiteralStructType([pointer, pointer])

    empty_body = ir.Function(module, BODY_TYPE, "empty_body")
    ir.IRBuilder(empty_body.append_basic_block("entry")).ret_void()
    empty = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64]), "empty")
    builder = ir.IRBuilder(empty.append_basic_block("entry"))
    runtime.parallel_for(builder, empty_body, ir.Constant(ir.IntType(8).as_pointer(), None), 0,
                         empty.args[0])
    builder.ret_void()

    def elementwise(kernel: str, compute) -> None:
        body = ir.Function(module, BODY_TYPE, f"{kernel}_body")
        builder = ir.IRBuilder(body.append_basic_block("entry"))
        context = builder.bitcast(body.args[0], pair.as_pointer())
        x = builder.load(builder.gep(context, [I32(0), I32(0)]))
        y = builder.load(builder.gep(context, [I32(0), I32(1)]))
        with counted_loop(builder, body.args[1], body.args[2]) as index:
            value = compute(builder, builder.load(builder.gep(x, [index])))
            builder.store(value, builder.gep(y, [index]))
        builder.ret_void()
        entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer, pointer, I64]),
                            kernel)
        builder = ir.IRBuilder(entry.append_basic_block("entry"))
        context = builder.alloca(pair)
        builder.store(entry.args[0], builder.gep(context, [I32(0), I32(0)]))
        builder.store(entry.args[1], builder.gep(context, [I32(0), I32(1)]))
        runtime.parallel_for(builder, body, context, 0, entry.args[2])
        builder.ret_void()

    def chain(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
        for _ in range(CHAIN):
            product = builder.fmul(value, F32(0.999), flags=["contract"])
            value = builder.fadd(product, F32(0.001), flags=["contract"])
        return value

    elementwise("scale", lambda builder, value: builder.fmul(value, F32(3.0)))
    elementwise("chain", chain)
    return module


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    low, median, high = np.percentile(samples, [10, 50, 90])
    return float(median), float(low), float(high)


def time_calls(call, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def cpu_per_wall(call, calls: int) -> float:
    """Process CPU time over wall time: about the number of threads that really ran at once."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--size", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--threads", default="1,2")
    arguments = parser.parse_args()
    thread_counts = [int(t) for t in arguments.threads.split(",")]

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"host: {host_cpu().describe()}, {len(os.sched_getaffinity(0))} CPUs available, "
          f"load average {load}")
    modules = {}
    for label, options in RUNTIMES.items():
        compiled = attach_runtime(compile_ir(build(label.split()[0], options)))
        modules[label] = compiled
    chain_asm = modules["pool (spin, default)"].asm()
    print(f"chain kernel: {chain_asm.count('vfmadd')} vfmadd instructions, "
          f"zmm used: {'zmm' in chain_asm}")

    print("\nempty parallel region, microseconds per call (median [p10, p90])")
    for label, compiled in modules.items():
        empty = compiled.function("empty", None, [ctypes.c_int64])
        for count in thread_counts:
            set_num_threads(compiled, count)
            for _ in range(200):
                empty(2)
            median, low, high = percentiles(time_calls(lambda: empty(2),  # noqa: B023
                                                       arguments.calls))
            print(f"  {label:22s} threads={count}: {median * 1e6:8.2f}  "
                  f"[{low * 1e6:.2f}, {high * 1e6:.2f}]")

    size = arguments.size
    rng = np.random.default_rng(0)
    x = rng.standard_normal(size).astype(np.float32)
    y = np.empty_like(x)
    compiled = modules["pool (spin, default)"]
    kernels = {
        "scale (memory-bound)": (compiled.function("scale", None, [ctypes.c_void_p] * 2 +
                                                   [ctypes.c_int64]), 8 * size / 1e9, "GB/s"),
        "chain (compute-bound)": (compiled.function("chain", None, [ctypes.c_void_p] * 2 +
                                                    [ctypes.c_int64]), 2 * CHAIN * size / 1e9,
                                  "GFLOP/s"),
    }
    print(f"\nkernels over {size} float32 elements, pool runtime, milliseconds "
          f"(median [p10, p90]) and rate at the median")
    for name, (kernel, work, unit) in kernels.items():
        baseline = None
        for count in thread_counts:
            set_num_threads(compiled, count)
            for _ in range(3):
                kernel(x.ctypes.data, y.ctypes.data, size)
            samples = time_calls(lambda: kernel(x.ctypes.data, y.ctypes.data, size),  # noqa: B023
                                 arguments.runs)
            median, low, high = percentiles(samples)
            baseline = baseline or median
            busy = cpu_per_wall(lambda: kernel(x.ctypes.data, y.ctypes.data, size),  # noqa: B023
                                max(arguments.runs // 3, 1))
            print(f"  {name:22s} threads={count}: {median * 1e3:8.3f} ms "
                  f"[{low * 1e3:.3f}, {high * 1e3:.3f}]  {work / median:7.1f} {unit}  "
                  f"speedup {baseline / median:.2f}x  cpu/wall {busy:.2f}")
    expected = x * np.float32(3.0)
    kernels["scale (memory-bound)"][0](x.ctypes.data, y.ctypes.data, size)
    np.testing.assert_array_equal(y, expected)


if __name__ == "__main__":
    main()
