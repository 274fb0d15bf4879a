"""Compile time of long elementwise chains, per opt level and per stage.

    python benchmarks/bench_compile_scale.py                       # N = 1000, 3000, 10000
    python benchmarks/bench_compile_scale.py --sizes 2000 --levels 3 --kind mix

A chain of N ops on one small tensor: `--kind chain` alternates relu with `x * 1.0001 + 0.5`;
`--kind mix` cycles through a fixed pseudo-random sequence of unary and binary elementwise ops
(tanh, sigmoid, abs, neg, exp, relu, and add/mul/sub/maximum with a second input). Every compile
runs with the on-disk cache off, and its result is checked against numpy. The table shows the
whole compile and its stages: trace, graph passes, lowering, codegen (building the LLVM IR,
optimizing it and making machine code), and of codegen LLVM's optimization and machine code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np

SIZES = (1000, 3000, 10000)
SHAPE = (8, 16)


def chain_ops(n: int, kind: str, seed: int = 0) -> list[str]:
    """The op names of a chain of `n` ops (each binary op with a constant counts as one)."""
    if kind == "chain":
        pattern = ["relu", "mul_c", "add_c"]
        return [pattern[i % 3] for i in range(n)]
    names = ["tanh", "sigmoid", "abs", "neg", "exp_small", "relu", "add_y", "mul_y", "sub_y",
             "max_y", "mul_c", "add_c"]
    rng = np.random.default_rng(seed)
    return [names[i] for i in rng.integers(0, len(names), n)]


def build_chain(ops: list[str], numpy: bool) -> Callable:
    """The chain as a function of (x, y), traced by Ember or run by numpy (float64)."""
    if numpy:
        def relu(t): return np.maximum(t, 0.0)
        def sigmoid(t): return 1.0 / (1.0 + np.exp(-t))
        tanh, exp, maximum = np.tanh, np.exp, np.maximum
    else:
        from ember.nn import functional as F
        relu, sigmoid = F.relu, F.sigmoid
        def tanh(t): return t.tanh()
        def exp(t): return t.exp()
        maximum = np.maximum  # a numpy ufunc traces on Ember tensors

    steps = {"relu": relu, "tanh": tanh, "sigmoid": sigmoid, "abs": abs,
             "neg": lambda t: -t, "exp_small": lambda t: exp(t * 0.01),
             "mul_c": lambda t: t * 1.0001, "add_c": lambda t: t + 0.5}
    binary = {"add_y": lambda t, y: t + y, "mul_y": lambda t, y: t * y,
              "sub_y": lambda t, y: t - y, "max_y": maximum}

    def fn(x, y):
        for op in ops:
            x = binary[op](x, y) if op in binary else steps[op](x)
        return x

    return fn


def op_count(graph: object) -> int:
    return sum(1 for node in graph.nodes if node.op != "const")  # type: ignore[attr-defined]


def compile_once(n: int, level: int, kind: str) -> dict[str, float]:
    """Seconds of one cold compile and of its stages; raises when the result is wrong."""
    import ember

    ops = chain_ops(n, kind)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.0, 1.0, SHAPE).astype(np.float32)
    y = rng.uniform(0.5, 1.0, SHAPE).astype(np.float32)  # keeps mul_y chains bounded
    start = time.perf_counter()
    exe = ember.compile(build_chain(ops, numpy=False), x, y, opt_level=level)
    total = time.perf_counter() - start
    want = build_chain(ops, numpy=True)(x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(exe(x, y), want, rtol=2e-3, atol=1e-3)
    result = {"total": total, "ops": op_count(exe.traced), "kernels": 0.0, **exe.timings}
    if exe.native is not None:
        module = exe.native.native.module
        result["kernels"] = len(exe.native.program.calls)
        result.update(getattr(module, "seconds", {}))
    return result


COLUMNS = ("trace", "passes", "lower", "codegen", "llvm-opt", "llvm-emit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                        help="chain lengths in ops (default: 1000 3000 10000)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3],
                        help="opt levels to compile at (default: 1 2 3)")
    parser.add_argument("--kind", choices=("chain", "mix"), default="chain",
                        help="relu / x * 1.0001 + 0.5 chain, or a mix of ops (default: chain)")
    args = parser.parse_args(argv)
    os.environ["EMBER_CACHE"] = "0"  # cold compiles only
    sys.setrecursionlimit(1000)  # the default: no stage may need more on a long chain
    print(f"{args.kind} of {'x'.join(map(str, SHAPE))} f32, cache off; seconds")
    print(f"{'N':>6} {'level':>5} {'ops':>6} {'kernels':>7} {'total':>7} " +
          " ".join(f"{c:>9}" for c in COLUMNS))
    for n in args.sizes:
        for level in args.levels:
            r = compile_once(n, level, args.kind)
            print(f"{n:>6} {level:>5} {int(r['ops']):>6} {int(r['kernels']):>7} "
                  f"{r['total']:>7.2f} " +
                  " ".join(f"{r[c]:>9.2f}" if c in r else f"{'-':>9}" for c in COLUMNS),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
