"""Threads from the target: a loop runs on the pool only when its estimated work reaches the
target's threshold, flat elementwise loops are split into chunks for it, and the results do not
depend on the split (numpy float64 is the reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.lower.loops import Binary, Imm, Load, Loop, Store, Unary, Var
from ember.lower.schedule import MATH_COST, REDUCTION_SHARE, estimated_work
from ember.target import Target

HOST2 = Target.host().with_(cores=2)


def _erf(a: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(a)


def test_work_counts_math_above_arithmetic_and_reductions_below() -> None:
    from ember.ir.types import DType
    from ember.lower.loops import Assign, Buffer

    x, out = Buffer("x", DType.F32, 1000), Buffer("out", DType.F32, 1000)
    i = Var("i")
    cheap = Loop(i, 1000, (Store(out, i, Binary("mul", Load(x, i), Imm(2.0, DType.F32))),))
    heavy = Loop(i, 1000, (Store(out, i, Unary("tanh", Load(x, i))),))
    acc = Var("acc", DType.F32)
    reduce = Loop(i, 1000, (Assign(acc, Binary("add", acc, Load(x, i))),))
    assert estimated_work(cheap) == 1000 * 3  # mul, load, constant
    assert estimated_work(heavy) == 1000 * (MATH_COST + 1)
    assert estimated_work(reduce) == 1000 * 2 * REDUCTION_SHARE
    nest = Loop(Var("j"), 10, (cheap,))
    assert estimated_work(nest) == 10 * estimated_work(cheap)


def _loops(exe) -> str:
    return exe.stages["loops"]


@pytest.mark.parametrize("n", [3_000_001, 2_097_152, 1_000_003])
def test_a_flat_elementwise_loop_is_split_for_the_pool(n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    exe = ember.compile(lambda a: F.gelu(np.tanh(a) * 1.5 + a), x, target=HOST2)
    text = _loops(exe)
    assert "// parallel" in text and text.count("// vectorize") >= 1
    y = np.tanh(x.astype(np.float64)) * 1.5 + x
    expected = 0.5 * y * (1 + _erf(y / math.sqrt(2)))
    for threads in (1, 2):
        exe.native.set_threads(threads)
        np.testing.assert_allclose(exe(x), expected, rtol=3e-6, atol=1e-6)


def test_small_or_cheap_loops_stay_on_one_thread() -> None:
    small = np.ones(20_000, np.float32)
    assert "parallel" not in _loops(ember.compile(lambda a: a * 2.0 + 1.0, small, target=HOST2))
    # The same size with transcendental work pays for the second thread.
    assert "parallel" in _loops(ember.compile(lambda a: np.exp(np.tanh(a)), small,
                                              target=HOST2))


def test_the_threshold_and_the_cores_come_from_the_target() -> None:
    x = np.ones((512, 512), np.float32)
    fn = lambda a: np.tanh(a) + 1.0  # noqa: E731
    assert "parallel" in _loops(ember.compile(fn, x, target=HOST2))
    never = HOST2.with_(min_parallel_work=10**12)
    assert "parallel" not in _loops(ember.compile(fn, x, target=never))
    assert "parallel" not in _loops(ember.compile(fn, x, target=HOST2.with_(cores=1)))
    assert "parallel" not in _loops(ember.compile(fn, x, threads=1))
