"""Time per kernel of a compiled graph, from the CPU's cycle counter.

    table = profile_program(program, inputs, arena, runs=20)    # a `Profile`
    print(table)                                       # slowest kernels first

The graph is built a second time with a counter read around every kernel call (see
`ember.backend.cpu.build`); each run's counts become seconds at the counter's rate, measured
against `time.perf_counter`. Rows give the median over the runs, so that one slow run (the
machine's other work) does not move them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ember.ir.graph import Node
from ember.lower.program import Program


@dataclass(frozen=True)
class KernelTime:
    """One kernel's median time per call, and the node it computes."""

    kernel: str
    node: Node
    seconds: float

    @property
    def what(self) -> str:
        """The node in a few words: op (fused kind), output type, user line."""
        kind = self.node.attrs.get("kind")
        op = f"{self.node.op}[{kind}]" if kind is not None else self.node.op
        types = ", ".join(str(v.type) for v in self.node.outputs)
        where = f"  {self.node.loc}" if self.node.loc else ""
        return f"{op} -> {types}{where}"


@dataclass(frozen=True)
class Profile:
    rows: tuple[KernelTime, ...]
    total_seconds: float  # median time of a whole run, between the first and last counter
    runs: int

    def __str__(self) -> str:
        kernels = sum(row.seconds for row in self.rows)
        lines = [f"kernel times: median of {self.runs} runs, {kernels * 1e3:.3f} ms in kernels",
                 f"  {'ms':>9}  {'share':>6}  {'kernel':<18} node"]
        for row in sorted(self.rows, key=lambda r: -r.seconds):
            share = row.seconds / kernels if kernels else 0.0
            lines.append(f"  {row.seconds * 1e3:9.3f}  {share:6.1%}  {row.kernel:<18} {row.what}")
        return "\n".join(lines)


def counter_rate(cycles: object, seconds: float = 0.02) -> float:
    """Counts per second of the cycle counter read by `cycles()` (constant-rate on x86)."""
    start_count, start = cycles(), time.perf_counter()  # type: ignore[operator]
    while time.perf_counter() - start < seconds:
        pass
    return (cycles() - start_count) / (time.perf_counter() - start)  # type: ignore[operator]


def profile_program(program: Program, inputs: Sequence[np.ndarray], arena: np.ndarray,
                    runs: int = 20, warmup: int = 2) -> Profile:
    """Run a lowered program `runs` times with per-kernel counters and return the medians
    (`arena`: a 64-byte aligned buffer of `program.arena_bytes` bytes)."""
    from ember.backend import for_target

    native = for_target(program.target).build(program, profile=True)  # type: ignore[call-arg]
    arrays = [np.ascontiguousarray(a) for a in inputs]
    outputs = [np.empty(v.type.shape, dtype=v.type.dtype.numpy) for v in program.graph.outputs]
    samples = []
    for run in range(warmup + runs):
        native.counters[:] = 0
        native.run(arrays, outputs, arena)
        if run >= warmup:
            samples.append(native.counters.copy())
    rate = counter_rate(native.cycles)
    medians = np.median(np.array(samples, dtype=np.float64), axis=0) / rate
    rows = tuple(KernelTime(call.kernel.name, call.node, float(seconds))
                 for call, seconds in zip(program.calls, medians, strict=True))
    total = float(np.median(np.array(samples, dtype=np.float64).sum(axis=1))) / rate
    return Profile(rows, total, runs)
