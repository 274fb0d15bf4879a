"""GFLOP/s of the generated matmul (ember.backend.cpu.gemm) next to numpy's BLAS, same run.

    python benchmarks/bench_gemm.py                       # 1024^3, one thread
    python benchmarks/bench_gemm.py --sizes 512 1024x1024x256 --threads 2
    python benchmarks/bench_gemm.py --mr 14 --nr-vectors 2 --kc 384 --mc 126 --nc 2048 --asm

With `--threads T` the rows are split into T ranges, each computed by one Python thread calling
the compiled function (ctypes releases the GIL), each with its own scratch slice. numpy is
measured with whatever thread count its BLAS uses (set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS
to match). The floor is 2*M*N*K / peak, with the peak given by `--peak` in GFLOP/s.
"""

from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import threading
import time

import numpy as np
from llvmlite import ir

from ember.backend.cpu.gemm import GemmBlocking, blocking_for, emit_gemm, gemm_scratch_bytes
from ember.backend.llvm.jit import compile_ir, host_cpu

ARGTYPES = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_void_p]


def parse_size(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 1:
        return parts[0], parts[0], parts[0]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"size must be N or MxNxK, got {text!r}")
    return parts[0], parts[1], parts[2]


def aligned_empty(nbytes: int, alignment: int = 64) -> np.ndarray:
    raw = np.zeros(nbytes + alignment, np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset:offset + nbytes]


def time_call(call, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def kernel_report(asm: str, name: str) -> str:
    """FMA count and stack traffic of the loop block of `name` that holds the most vector FMAs."""
    best = None
    body = asm.split(f"\n{name}:", 1)[1].split(".Lfunc_end", 1)[0]
    blocks = re.split(r"\n(?=\.LBB\d+_\d+:)", body)
    for block in blocks:
        fmas = len(re.findall(r"vfmadd\w+\s+[^\n]*[zy]mm", block))
        if fmas and (best is None or fmas > best[0]):
            spills = len(re.findall(r"\(%rsp\)", block))
            lines = [line for line in block.splitlines() if line.startswith("\t") and
                     not line.startswith("\t.")]
            best = (fmas, spills, len(lines))
    if best is None:
        return "no vector FMA found"
    return (f"hottest loop block: {best[0]} vector FMAs, {best[1]} stack accesses, "
            f"{best[2]} instructions")


def measure(gemm, m: int, n: int, k: int, args: argparse.Namespace, blocking: GemmBlocking,
            numpy_dtype: type) -> str:
    """One line: floor, the compiled function's times at `args.threads`, numpy's."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(numpy_dtype)
    b = rng.standard_normal((k, n)).astype(numpy_dtype)
    c = np.empty((m, n), numpy_dtype)
    scratch_bytes = gemm_scratch_bytes(m, n, k, dtype=args.dtype, lanes=args.lanes,
                                       blocking=blocking)
    slice_bytes = -(-scratch_bytes // 64) * 64
    scratch = aligned_empty(slice_bytes * args.threads)
    bounds = [m * t // args.threads for t in range(args.threads + 1)]
    pointers = (a.ctypes.data, b.ctypes.data, c.ctypes.data)

    def run_range(t: int) -> None:
        gemm(*pointers, bounds[t], bounds[t + 1], scratch.ctypes.data + t * slice_bytes)

    def run() -> None:
        if args.threads == 1:
            run_range(0)
            return
        workers = [threading.Thread(target=run_range, args=(t,)) for t in range(args.threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    run()
    reference = a.astype(np.float64) @ b.astype(np.float64)
    error = float(np.abs(c - reference).max() / (np.abs(reference).max() + 1e-30))
    flops = 2.0 * m * n * k
    times = time_call(run, args.runs, args.warmup)
    best, median = min(times), statistics.median(times)
    line = (f"{m}x{n}x{k}: floor {flops / (args.peak * 1e9) * 1e3:.2f} ms | ember best "
            f"{best * 1e3:.2f} ms median {median * 1e3:.2f} ms = {flops / median / 1e9:.1f}"
            f" GFLOP/s (best {flops / best / 1e9:.1f}, spread {(max(times) - best) / best:.0%})"
            f" rel.err {error:.1e}")
    if not args.no_numpy:
        numpy_times = time_call(lambda: np.matmul(a, b, out=c), args.runs, args.warmup)
        numpy_median = statistics.median(numpy_times)
        line += (f" | numpy median {numpy_median * 1e3:.2f} ms = "
                 f"{flops / numpy_median / 1e9:.1f} GFLOP/s")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(1024, 1024, 1024)],
                        help="N (square) or MxNxK, several allowed (default 1024)")
    parser.add_argument("--threads", type=int, default=1, help="row ranges run in parallel")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    parser.add_argument("--lanes", type=int, default=None, help="vector width (default: host)")
    parser.add_argument("--mr", type=int)
    parser.add_argument("--nr-vectors", type=int)
    parser.add_argument("--kc", type=int)
    parser.add_argument("--mc", type=int)
    parser.add_argument("--nc", type=int)
    parser.add_argument("--peak", type=float, default=105.0, help="peak GFLOP/s for the floor")
    parser.add_argument("--asm", action="store_true", help="report the micro-kernel's loop")
    parser.add_argument("--no-numpy", action="store_true")
    args = parser.parse_args()

    def blocking_of(m: int, n: int, k: int) -> GemmBlocking:
        """The blocking Ember picks for the shape, with the command line's overrides."""
        base = blocking_for(m, n, k, args.dtype, args.lanes)
        return GemmBlocking(mr=args.mr or base.mr, nr_vectors=args.nr_vectors or base.nr_vectors,
                            kc=args.kc or base.kc, mc=args.mc or base.mc, nc=args.nc or base.nc)

    numpy_dtype = np.float32 if args.dtype == "f32" else np.float64
    print(f"# {host_cpu().describe()}, threads={args.threads}, {args.dtype}")
    module = ir.Module("bench_gemm")  # one module (one JIT engine) for every size
    for index, (m, n, k) in enumerate(args.sizes):
        emit_gemm(module, f"gemm{index}", m, n, k, dtype=args.dtype, lanes=args.lanes,
                  blocking=blocking_of(m, n, k))
    compiled = compile_ir(module)
    for index, (m, n, k) in enumerate(args.sizes):
        gemm = compiled.function(f"gemm{index}", None, ARGTYPES)
        blocking = blocking_of(m, n, k)
        print(f"# {m}x{n}x{k}: {blocking}")
        print(measure(gemm, m, n, k, args, blocking, numpy_dtype), flush=True)
        if args.asm:
            print("   ", kernel_report(compiled.asm(), f"gemm{index}"))


if __name__ == "__main__":
    main()
