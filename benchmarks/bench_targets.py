"""Two per-target defaults measured on this machine: loop vector width and the parallel threshold.

    taskset -c 1 python benchmarks/bench_targets.py --part vector      # 512- vs 256-bit loops
    python benchmarks/bench_targets.py --part threads                  # 1 vs 2 threads by size
    python benchmarks/bench_targets.py --quick                         # both, short

1. Vector width (`Target.prefer_vector_bits`, LLVM's "prefer-vector-width" on every generated
   function): each case is compiled twice in this process, for `Target.host()` (512 on AVX-512
   hosts) and for `host().with_(prefer_vector_bits=256)`, at one thread; the assembly's zmm and
   ymm mentions show which width each got. Cases: elementwise chains over 3M floats, a row
   softmax and a layer norm over [4096, 1024], sum reductions, and the models of
   benchmarks/bench_models.py and examples/*.py. Run it pinned (`taskset -c 1`).
2. Parallel threshold (`Target.min_parallel_work`): each case is compiled once for
   `host().with_(min_parallel_work=1)`, so every top-level loop with at least two iterations
   runs on the thread pool, then timed with `set_threads(1)` and `set_threads(2)` at sizes
   from 1K to 4M elements. Run it unpinned (two threads need both CPUs).

Both variants of a case run in alternating blocks of calls, in alternating order, so load
from other processes falls on both; each block's median is kept, and the table shows the
median over blocks of each variant, the ratio of the two (median of the per-block ratios)
and the spread of that ratio over blocks (p10-p90), which says how noisy the machine was.

The on-disk compile cache is off for this process (EMBER_CACHE=0): the two variants must be
compiled here, from the IR this Ember version generates. Where the function attributes do not
reach the generated functions (llvmlite prints a definition's `{` on the next line, which
`with_function_attributes` does not look for), the script applies them itself and says so;
`--as-shipped` measures without that.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import runpy
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ["EMBER_CACHE"] = "0"  # both variants compiled in this process (see the docstring)

import numpy as np

import ember
from ember.bench import cpu_model
from ember.frontend import tracer
from ember.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


# -- function attributes ---------------------------------------------------------------------------


def _attributes_reach_functions() -> bool:
    """Whether the shipped `with_function_attributes` tags a definition as llvmlite prints it."""
    from ember.backend.llvm import jit

    text = 'define void @"f"(float* %"x")\n{\nentry:\n  ret void\n}\n'
    narrow = ember.Target.host().with_(prefer_vector_bits=256)
    return "prefer-vector-width" in jit.with_function_attributes(text, narrow)


def apply_function_attributes() -> None:
    """Tag every definition with the target's attributes, its `{` on the same line or the next."""
    from ember.backend.llvm import jit

    def with_attributes(text: str, target: ember.Target) -> str:
        attributes = jit.function_attributes(target)
        if not attributes:
            return text
        lines = text.split("\n")
        for position, line in enumerate(lines):
            if not line.startswith("define "):
                continue
            if line.rstrip().endswith("{"):
                lines[position] = line.rstrip()[:-1] + attributes + " {"
            elif position + 1 < len(lines) and lines[position + 1].strip() == "{":
                lines[position] = line.rstrip() + " " + attributes
        return "\n".join(lines)

    jit.with_function_attributes = with_attributes


# -- timing ----------------------------------------------------------------------------------------


def _busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (first line of /proc/stat)."""
    try:
        with open("/proc/stat", encoding="utf-8") as file:
            fields = [int(v) for v in file.readline().split()[1:9]]
    except OSError:
        return float("nan")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Comparison:
    """Per-block medians of two variants, timed in alternating blocks; `others` is the CPU
    that other processes used meanwhile, in percent of one CPU (the noise we could see)."""

    a: list[float]
    b: list[float]
    others: float = float("nan")

    @property
    def ratios(self) -> list[float]:
        return [b / a for a, b in zip(self.a, self.b, strict=True)]

    def row(self) -> str:
        ratios = sorted(self.ratios)
        p10 = ratios[int(0.1 * (len(ratios) - 1))]
        p90 = ratios[round(0.9 * (len(ratios) - 1))]
        a, b = statistics.median(self.a) * 1e3, statistics.median(self.b) * 1e3
        return (f"{a:>10.4f}{b:>10.4f}{statistics.median(ratios):>8.3f}"
                f"{f'{p10:.3f}-{p90:.3f}':>14}{(b - a) * 1e3:>10.1f}{self.others:>9.0f}")


HEADER_COLUMNS = (f"{'A ms':>10}{'B ms':>10}{'B/A':>8}{'B/A p10-p90':>14}{'B-A us':>10}"
                  f"{'others%':>9}")


def compare(call_a: Callable[[], Any], call_b: Callable[[], Any], blocks: int,
            block_seconds: float, before_a: Callable[[], Any] = lambda: None,
            before_b: Callable[[], Any] = lambda: None) -> Comparison:
    """Time `call_a` and `call_b` in `blocks` alternating blocks of about `block_seconds` each."""
    for before, call in ((before_a, call_a), (before_b, call_b)):
        before()
        call()
        call()
    before_a()
    start = time.perf_counter()
    call_a()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(3, min(2000, int(block_seconds / once)))
    result = Comparison([], [])
    wall, busy, own = time.perf_counter(), _busy_seconds(), _own_seconds()
    for block in range(blocks):
        order = ((before_a, call_a, result.a), (before_b, call_b, result.b))
        for before, call, times in order if block % 2 == 0 else order[::-1]:
            before()
            samples = []
            for _ in range(calls):
                start = time.perf_counter()
                call()
                samples.append(time.perf_counter() - start)
            times.append(statistics.median(samples))
    wall = time.perf_counter() - wall
    result.others = 100 * ((_busy_seconds() - busy) - (_own_seconds() - own)) / wall
    return result


def compare_quietly(options: argparse.Namespace, *args: Any, **kwargs: Any) -> Comparison:
    """`compare`, repeated up to `options.retries` times while other processes used more than
    `options.max_others` percent of a CPU; the quietest attempt."""
    best = compare(*args, **kwargs)
    for _ in range(options.retries):
        if best.others <= options.max_others:
            break
        again = compare(*args, **kwargs)
        best = again if again.others < best.others else best
    return best


# -- part 1: vector width --------------------------------------------------------------------------


def erf(x: Any) -> Any:
    return tracer.emit("erf", x)


def _vector_cases(rng: np.random.Generator, with_models: bool) -> list[tuple[str, Any, tuple]]:
    flat = rng.standard_normal(3_000_000).astype(np.float32)
    rows = rng.standard_normal((4096, 1024)).astype(np.float32)
    cases: list[tuple[str, Any, tuple]] = [
        ("x*2+1 [3M]", lambda x: x * 2.0 + 1.0, (flat,)),
        ("gelu(tanh*1.5+x) [3M]", lambda x: F.gelu(np.tanh(x) * 1.5 + x), (flat,)),
        ("erf(silu(tanh)) [3M]", lambda x: erf(F.silu(np.tanh(x))), (flat,)),
        ("exp(-x*x)*x [3M]", lambda x: np.exp(-(x * x)) * x, (flat,)),
        ("softmax rows [4096,1024]", lambda x: F.softmax(x, dim=-1), (rows,)),
        ("layer_norm [4096,1024]", lambda x: F.layer_norm(x, (1024,)), (rows,)),
        ("sum all [3M]", lambda x: x.sum(), (flat,)),
        ("sum rows [4096,1024]", lambda x: x.sum(axis=-1), (rows,)),
        ("sum cols [4096,1024]", lambda x: x.sum(axis=0), (rows,)),
    ]
    if with_models:
        import bench_models

        for name in ("mlp", "cnn", "resblock", "transformer", "elementwise", "matmul"):
            case = bench_models.CASES[name](np.random.default_rng(0))
            cases.append((f"bench_models:{name}", case.model, case.inputs))
        for path in sorted((ROOT / "examples").glob("*.py")):
            example = runpy.run_path(str(path), run_name=f"_bench_targets_{path.stem}")
            if "model" in example and "example_inputs" in example:
                cases.append((f"examples/{path.name}", example["model"],
                              tuple(example["example_inputs"])))
    return cases


def _widths(exe: Any) -> str:
    asm = exe.stages["asm"]
    return f"{len(re.findall(r'zmm', asm))}z/{len(re.findall(r'ymm', asm))}y"


def run_vector(options: argparse.Namespace) -> None:
    wide = ember.Target.host()
    wide = wide.with_(prefer_vector_bits=wide.vector_bits)
    narrow = wide.with_(prefer_vector_bits=256)
    if wide.vector_bits < 512:
        print("\n[vector width] skipped: the host has no 512-bit vectors")
        return
    print(f"\n[vector width] threads=1; A = {wide.prefer_vector_bits}-bit loops, "
          f"B = {narrow.prefer_vector_bits}-bit loops; asm: zmm/ymm mentions")
    print(f"{'case':<30}{'asm A':>11}{'asm B':>11}" + HEADER_COLUMNS)
    for name, model, inputs in _vector_cases(np.random.default_rng(0), not options.no_models):
        if options.only and not any(word in name for word in options.only.split(",")):
            continue
        exe_a = ember.compile(model, *inputs, target=wide, threads=1)
        exe_b = ember.compile(model, *inputs, target=narrow, threads=1)
        out_a, out_b = (np.asarray(e(*inputs), dtype=np.float64) for e in (exe_a, exe_b))
        agree = np.allclose(out_a, out_b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(out_a).max()))
        result = compare_quietly(options, functools.partial(exe_a, *inputs),
                                 functools.partial(exe_b, *inputs), options.blocks,
                                 options.block_seconds)
        flag = "" if agree else "  OUTPUTS DIFFER"
        print(f"{name:<30}{_widths(exe_a):>11}{_widths(exe_b):>11}" + result.row() + flag,
              flush=True)


# -- part 2: parallel threshold --------------------------------------------------------------------


def _thread_cases() -> list[tuple[str, Callable[[Any], Any]]]:
    """(kind, function), each run on [n / ROW, ROW] floats: a 1-D loop is innermost and
    vectorized, and `parallelize_outer` does not split it, so the cases need a row loop."""
    return [
        ("cheap x*2+1", lambda x: x * 2.0 + 1.0),
        ("medium gelu", lambda x: F.gelu(x)),
        ("heavy exp(erf(tanh))*x", lambda x: np.exp(erf(np.tanh(x)) * 0.5) * x + np.tanh(x * 0.7)),
        ("row sum", lambda x: x.sum(axis=-1)),
        ("row softmax", lambda x: F.softmax(x, dim=-1)),
    ]


ROW = 256


def run_threads(options: argparse.Namespace) -> None:
    target = ember.Target.host().with_(min_parallel_work=1)
    if target.cores < 2:
        print("\n[threads] skipped: this process may use one CPU (run it without taskset)")
        return
    sizes = [1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22]
    if options.quick:
        sizes = [1 << 10, 1 << 14, 1 << 18, 1 << 22]
    if options.sizes:
        sizes = [int(v) for v in options.sizes.split(",")]
    print(f"\n[threads] min_parallel_work=1; shape [n/{ROW}, {ROW}]; A = set_threads(1), "
          f"B = set_threads(2); 'par' = parallel loops in the loop IR")
    print(f"{'kind':<26}{'elements':>10}{'par':>5}" + HEADER_COLUMNS)
    rng = np.random.default_rng(0)
    for kind, fn in _thread_cases():
        if options.only and not any(word in kind for word in options.only.split(",")):
            continue
        for size in sizes:
            shape = (size // ROW, ROW)
            x = rng.standard_normal(shape).astype(np.float32)
            exe = ember.compile(fn, x, target=target, threads=2)
            parallel = exe.stages["loops"].count("parallel")
            one, two = exe.native.set_threads(1), exe.native.set_threads(2)
            if (one, two) != (1, 2):
                print(f"{kind:<26}{size:>10}{parallel:>5}  no parallel loop (threads {one}, {two})")
                continue
            call = functools.partial(exe, x)
            result = compare_quietly(options, call, call, options.blocks, options.block_seconds,
                                     before_a=functools.partial(exe.native.set_threads, 1),
                                     before_b=functools.partial(exe.native.set_threads, 2))
            print(f"{kind:<26}{size:>10}{parallel:>5}" + result.row(), flush=True)


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("vector", "threads", "both"), default="both")
    parser.add_argument("--quick", action="store_true",
                        help="few blocks, short blocks, no models, fewer sizes")
    parser.add_argument("--blocks", type=int, default=None,
                        help="alternating blocks per variant (default 20, quick 6)")
    parser.add_argument("--block-seconds", type=float, default=None,
                        help="length of one block of calls (default 0.15, quick 0.05)")
    parser.add_argument("--max-others", type=float, default=15.0,
                        help="repeat a comparison while other processes used more than this "
                             "percent of a CPU (default 15)")
    parser.add_argument("--retries", type=int, default=None,
                        help="repeats at most (default 4, quick 1)")
    parser.add_argument("--only", default="", metavar="WORD[,WORD]",
                        help="only the cases whose name contains one of these words")
    parser.add_argument("--sizes", default="", metavar="N[,N]",
                        help="element counts of the thread part (multiples of 256)")
    parser.add_argument("--no-models", action="store_true", help="skip the model suite")
    parser.add_argument("--as-shipped", action="store_true",
                        help="do not apply the function attributes where Ember does not")
    options = parser.parse_args(argv)
    options.blocks = options.blocks or (6 if options.quick else 20)
    options.block_seconds = options.block_seconds or (0.05 if options.quick else 0.15)
    options.no_models = options.no_models or options.quick
    options.retries = options.retries if options.retries is not None else (
        1 if options.quick else 4)

    host = ember.Target.host()
    import llvmlite.binding as llvm

    print(f"CPU: {cpu_model()}; target {host.describe()}; CPUs this process may use: "
          f"{sorted(os.sched_getaffinity(0))}; LLVM {'.'.join(map(str, llvm.llvm_version_info))}")
    reach = _attributes_reach_functions()
    if not reach and not options.as_shipped:
        apply_function_attributes()
        print("note: Ember's with_function_attributes does not tag llvmlite's definitions "
              "(`{` on the next line); this run applies prefer-/min-legal-vector-width itself")
    elif not reach:
        print("note: as shipped, the vector-width attributes do not reach the functions")
    if options.part in ("vector", "both"):
        run_vector(options)
    if options.part in ("threads", "both"):
        run_threads(options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
