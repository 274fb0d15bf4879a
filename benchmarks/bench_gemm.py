"""GFLOP/s of the generated matmul (ember.backend.cpu.gemm) next to numpy's and PyTorch's BLAS.

    python benchmarks/bench_gemm.py                  # 1024^3, 2048^3 and model shapes, 1 thread
    python benchmarks/bench_gemm.py --sizes 512 1024x1024x256 --threads 2
    python benchmarks/bench_gemm.py --mr 6 --nr-vectors 4 --kc 384 --mc 120 --nc 2048 --asm
    python benchmarks/bench_gemm.py --target x86-64-v3    # that target's blocking and code

Every library runs in the same process, in alternating rounds; each figure is the median of
`--runs` calls per round, and the table shows the median over rounds. BLAS threads are set
before numpy and torch are imported (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS,
torch.set_num_threads) to `--threads`. Ember's rows are split into `--threads` ranges, each
computed by one Python thread calling the compiled function (ctypes releases the GIL), each
with its own scratch slice. Pin the process (`taskset -c 1`) for one-thread figures. The
floor is 2*M*N*K / peak, the peak `--peak` GFLOP/s (default: 2 x lanes x fma_per_cycle x
`--ghz` of the target).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import statistics
import sys
import threading
import time


def _threads_from_argv() -> str:
    """`--threads` before the BLAS libraries are imported (they read it once, at import)."""
    for index, word in enumerate(sys.argv):
        if word == "--threads" and index + 1 < len(sys.argv):
            return sys.argv[index + 1]
        if word.startswith("--threads="):
            return word.split("=", 1)[1]
    return "1"


for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "EMBER_NUM_THREADS"):
    os.environ[_variable] = _threads_from_argv()

import numpy as np  # noqa: E402  (after the thread variables)
from llvmlite import ir  # noqa: E402

from ember import Target  # noqa: E402
from ember.backend.cpu.gemm import (  # noqa: E402
    GemmBlocking,
    blocking_for,
    emit_gemm,
    gemm_scratch_bytes,
)
from ember.backend.llvm.jit import compile_ir  # noqa: E402
from ember.bench import cpu_model  # noqa: E402

try:
    import torch
except ImportError:  # the comparison is optional
    torch = None

# 1024^3 and 2048^3, then the GEMMs of the example models (MxNxK): MLP layers (batch 64),
# transformer QKV / FFN (8 x 128 tokens, width 256, FFN 1024), the ResNet block's conv.
DEFAULT_SIZES = [(1024, 1024, 1024), (2048, 2048, 2048), (64, 512, 784), (1024, 768, 256),
                 (1024, 1024, 256), (1024, 256, 1024), (64, 3136, 576)]
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


def median_gflops(flops: float, times: list[float]) -> float:
    return flops / statistics.median(times) / 1e9


def measure(gemm, m: int, n: int, k: int, args: argparse.Namespace, blocking: GemmBlocking,
            numpy_dtype: type, peak: float) -> str:
    """One row: floor, Ember's, numpy's and torch's median GFLOP/s, Ember / best BLAS."""
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
    calls = {"ember": run}
    if not args.no_numpy:
        numpy_out = np.empty_like(c)
        calls["numpy"] = lambda: np.matmul(a, b, out=numpy_out)
    if torch is not None and not args.no_torch:
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(np.empty_like(c))
        calls["torch"] = lambda: torch.mm(ta, tb, out=tc)
    runs = args.runs or max(5, min(50, int(2e10 / flops)))  # ~0.2 s of calls per round
    rounds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):  # alternate, so that a busy moment hits every library
        for name, call in calls.items():
            rounds[name].append(statistics.median(time_call(call, runs, args.warmup)))
    rates = {name: median_gflops(flops, times) for name, times in rounds.items()}
    spread = max(rounds["ember"]) / min(rounds["ember"]) - 1
    line = (f"{m:>5}x{n:>5}x{k:>5} {flops / (peak * 1e9) * 1e3:9.2f} "
            f"{statistics.median(rounds['ember']) * 1e3:9.2f} {rates['ember']:7.1f}")
    for name in ("numpy", "torch"):
        line += f" {rates[name]:7.1f}" if name in rates else f" {'-':>7}"
    blas = [rates[name] for name in ("numpy", "torch") if name in rates]
    line += f" {rates['ember'] / max(blas):6.2f}" if blas else f" {'-':>6}"
    return line + f" {spread:6.0%} {error:8.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=DEFAULT_SIZES,
                        help="N (square) or MxNxK, several allowed (default: 1024, 2048 and "
                             "the example models' GEMMs)")
    parser.add_argument("--threads", type=int, default=1,
                        help="row ranges run in parallel; also the BLAS thread count")
    parser.add_argument("--runs", type=int, default=0, help="calls per round (default: ~0.2 s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    parser.add_argument("--target", default="cpu",
                        help="the CPU (znver4, x86-64-v3, cpu:NAME; default the host) whose "
                             "blocking and code are measured, here")
    parser.add_argument("--lanes", type=int, default=None, help="vector width (default: target)")
    parser.add_argument("--mr", type=int)
    parser.add_argument("--nr-vectors", type=int)
    parser.add_argument("--kc", type=int)
    parser.add_argument("--mc", type=int)
    parser.add_argument("--nc", type=int)
    parser.add_argument("--ghz", type=float, default=3.3, help="clock for the default peak")
    parser.add_argument("--peak", type=float, default=None, help="peak GFLOP/s for the floor")
    parser.add_argument("--asm", action="store_true", help="report the micro-kernel's loop")
    parser.add_argument("--no-numpy", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    name = args.target if ":" in args.target or args.target == "cpu" else f"cpu:{args.target}"
    target = Target.parse(name).with_(cores=args.threads)
    size = 4 if args.dtype == "f32" else 8
    args.lanes = args.lanes or target.lanes(size)
    peak = args.peak or 2 * args.lanes * target.fma_per_cycle * args.ghz
    if torch is not None:
        torch.set_num_threads(args.threads)

    def blocking_of(m: int, n: int, k: int) -> GemmBlocking:
        """The blocking Ember picks for the shape, with the command line's overrides."""
        base = blocking_for(m, n, k, args.dtype, args.lanes, target)
        return GemmBlocking(mr=args.mr or base.mr, nr_vectors=args.nr_vectors or base.nr_vectors,
                            kc=args.kc or base.kc, mc=args.mc or base.mc, nc=args.nc or base.nc)

    numpy_dtype = np.float32 if args.dtype == "f32" else np.float64
    torch_version = torch.__version__ if torch is not None else "absent"
    print(f"# CPU: {cpu_model()}; target {target.describe()}; threads={args.threads}; "
          f"{args.dtype}; peak {peak:.0f} GFLOP/s; numpy {np.__version__}, torch {torch_version}")
    print(f"# medians of {args.rounds} rounds (each the median of its calls); ratio = ember / "
          "best of numpy and torch; spread = ember's slowest / fastest round - 1")
    module = ir.Module("bench_gemm")  # one module (one JIT engine) for every size
    for index, (m, n, k) in enumerate(args.sizes):
        emit_gemm(module, f"gemm{index}", m, n, k, dtype=args.dtype, lanes=args.lanes,
                  blocking=blocking_of(m, n, k))
    compiled = compile_ir(module, target=target)
    print(f"# {'M x N x K':>17} {'floor ms':>9} {'ember ms':>9} {'ember':>7} {'numpy':>7} "
          f"{'torch':>7} {'ratio':>6} {'spread':>6} {'rel.err':>8}   (GFLOP/s)")
    for index, (m, n, k) in enumerate(args.sizes):
        gemm = compiled.function(f"gemm{index}", None, ARGTYPES)
        blocking = blocking_of(m, n, k)
        print(measure(gemm, m, n, k, args, blocking, numpy_dtype, peak) + f"  {blocking}",
              flush=True)
        if args.asm:
            print("   ", kernel_report(compiled.asm(), f"gemm{index}"))


if __name__ == "__main__":
    main()
