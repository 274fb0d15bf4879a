"""Time the reference interpreter (`opt_level=0`, the naive baseline) on the example models.

    python benchmarks/bench_interpreter.py                 # all examples, median of 20 runs
    python benchmarks/bench_interpreter.py mlp --runs 50   # one example

Each example is loaded like `ember ir` loads it (its `model` and `example_inputs`), traced once,
warmed up, then timed call by call; the table shows the median, the fastest run and the spread.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import ember
from ember.cli import load_target

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = ("mlp", "cnn", "transformer")


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """CPU model, cores, numpy version and the BLAS thread setting, for the table's header."""
    threads = os.environ.get("OMP_NUM_THREADS") or os.environ.get("OPENBLAS_NUM_THREADS")
    return (f"{cpu_model()}, {os.cpu_count()} cores, numpy {np.__version__}, "
            f"BLAS threads {threads or 'default'}, Python {platform.python_version()}")


def time_example(name: str, runs: int, warmup: int) -> dict[str, float]:
    """Median, minimum and spread (seconds) of one interpreter call on the example's inputs."""
    target = load_target(str(EXAMPLES / f"{name}.py"))
    executable = ember.compile(target.model, *target.example_inputs, opt_level=0)
    for _ in range(warmup):
        executable(*target.example_inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        executable(*target.example_inputs)
        times.append(time.perf_counter() - start)
    return {"nodes": len(executable.graph.nodes), "median": statistics.median(times),
            "min": min(times), "max": max(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", nargs="*", metavar="EXAMPLE",
                        help=f"which examples to time ({', '.join(NAMES)}; default: all)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.examples) - set(NAMES))
    if unknown:
        parser.error(f"unknown example {', '.join(unknown)} (choose from {', '.join(NAMES)})")
    print(f"reference interpreter (opt_level=0), median of {args.runs} runs after "
          f"{args.warmup} warm-up runs")
    print(f"machine: {machine_line()}")
    print(f"{'example':<12} {'nodes':>6} {'median ms':>10} {'min ms':>9} {'max ms':>9}")
    for name in args.examples or NAMES:
        row = time_example(name, args.runs, args.warmup)
        print(f"{name:<12} {row['nodes']:>6} {row['median'] * 1e3:>10.2f} "
              f"{row['min'] * 1e3:>9.2f} {row['max'] * 1e3:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
