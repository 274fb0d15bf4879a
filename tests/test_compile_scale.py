"""Long elementwise chains compile at every level, right, and within the default recursion limit.

Compile *time* at scale is measured by `benchmarks/bench_compile_scale.py` (no wall-clock
assertions here); these tests keep its code paths correct: fusion's cycle check on long
chains, one LLVM function per distinct kernel, kernels out of line and the entry split into
parts on long programs. References are float64 numpy.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import ember
from ember.nn import functional as F

OPS = 2000
SHAPE = (8, 16)


@pytest.fixture(autouse=True)
def default_recursion_limit() -> Iterator[None]:
    """Every stage must work at Python's default limit, whatever the test runner set."""
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(saved)


def chain(ops: int) -> tuple[Callable, Callable]:
    """relu, * 1.0001, + 0.5, repeated to `ops` ops: as Ember traces it, and in numpy."""

    def ember_fn(x):
        for i in range(ops):
            x = F.relu(x) if i % 3 == 0 else x * 1.0001 if i % 3 == 1 else x + 0.5
        return x

    def numpy_fn(x):
        for i in range(ops):
            x = np.maximum(x, 0.0) if i % 3 == 0 else x * 1.0001 if i % 3 == 1 else x + 0.5
        return x

    return ember_fn, numpy_fn


def mixed(ops: int) -> tuple[Callable, Callable]:
    """A fixed pseudo-random mix of unary and binary elementwise ops on (x, y)."""
    picks = np.random.default_rng(7).integers(0, 7, ops)

    def run(x, y, numpy: bool):
        for pick in picks:
            if pick == 0:
                x = np.tanh(x) if numpy else x.tanh()
            elif pick == 1:
                x = 1.0 / (1.0 + np.exp(-x)) if numpy else F.sigmoid(x)
            elif pick == 2:
                x = np.maximum(x, 0.0) if numpy else F.relu(x)
            elif pick == 3:
                x = x * y
            elif pick == 4:
                x = x - y
            elif pick == 5:
                x = np.maximum(x, y)
            else:
                x = -x + 0.25
        return x

    return (lambda x, y: run(x, y, False)), (lambda x, y: run(x, y, True))


def inputs(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(0.5, 1.0, SHAPE).astype(np.float32) for _ in range(count)]


def defined_kernels(exe: object) -> list[str]:
    text = exe.native.native.module.unoptimized_ir  # type: ignore[attr-defined]
    return re.findall(r'^define (?:internal )?void @"(k\d+_\w+)"', text, flags=re.M)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_long_chain_matches_numpy_at_every_level(level: int) -> None:
    ember_fn, numpy_fn = chain(OPS)
    (x,) = inputs(1)
    exe = ember.compile(ember_fn, x, opt_level=level)
    np.testing.assert_allclose(exe(x), numpy_fn(x.astype(np.float64)), rtol=1e-4)
    if level >= 2:  # fused into groups of at most max-ops=16 nodes each
        fused = [n for n in exe.graph.nodes if n.op == "fused"]
        assert len(fused) == -(-OPS // 16)
        assert all(len(n.body.nodes) <= 16 + 2 for n in fused)  # + the copied constants


@pytest.mark.parametrize("level", [1, 3])
def test_long_mixed_chain_matches_numpy(level: int) -> None:
    ember_fn, numpy_fn = mixed(OPS // 2)
    x, y = inputs(2)
    exe = ember.compile(ember_fn, x, y, opt_level=level)
    want = numpy_fn(x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(exe(x, y), want, rtol=1e-4, atol=1e-5)


def test_repeated_kernels_share_one_function_and_entry_is_split() -> None:
    ember_fn, numpy_fn = chain(OPS)
    (x,) = inputs(1)
    exe = ember.compile(ember_fn, x, opt_level=1)
    assert len(exe.native.program.calls) == OPS
    assert sorted(name.split("_", 1)[1] for name in defined_kernels(exe)) == ["add", "mul",
                                                                             "relu"]
    text = exe.native.native.module.unoptimized_ir
    assert "_entry.part7" in text  # 2000 calls in parts of 256
    np.testing.assert_allclose(exe(x), numpy_fn(x.astype(np.float64)), rtol=1e-4)


def test_profile_of_a_long_program_times_every_call() -> None:
    ember_fn, _ = chain(600)
    (x,) = inputs(1)
    exe = ember.compile(ember_fn, x, opt_level=1)
    profile = exe.native.profile(x, runs=2)
    assert len(profile.rows) == 600
    assert all(row.seconds > 0 for row in profile.rows)
