"""`threads=` and EMBER_NUM_THREADS on compiled executables, and calls from several Python
threads at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import ember
from ember.nn import functional as F


def big_input() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)


def model(x):
    return F.gelu(x * 2.0 + 1.0)


def reference(x: np.ndarray) -> np.ndarray:
    import math

    z = x.astype(np.float64) * 2 + 1
    return np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(z)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_threads(threads: int) -> None:
    x = big_input()
    exe = ember.compile(model, x, threads=threads)
    np.testing.assert_allclose(exe(x), reference(x), rtol=2e-5, atol=1e-6)


def test_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    x = big_input()
    monkeypatch.setenv("EMBER_NUM_THREADS", "1")
    np.testing.assert_allclose(ember.compile(model, x)(x), reference(x), rtol=2e-5, atol=1e-6)
    monkeypatch.setenv("EMBER_NUM_THREADS", "zero")
    with pytest.raises(ember.EmberError, match="EMBER_NUM_THREADS"):
        ember.compile(model, x)


def test_bad_thread_count() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ember.compile(model, big_input(), threads=0)


def test_calls_from_several_python_threads_at_once() -> None:
    x = big_input()
    exe = ember.compile(model, x, threads=2)
    inputs = [x * (i + 1) / 4 for i in range(4)]
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        for _ in range(5):
            results[index] = exe(inputs[index]).copy()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for index, array in enumerate(inputs):
        np.testing.assert_allclose(results[index], reference(array), rtol=2e-5, atol=1e-6)


def _run_in_child(exe, x, expected, results) -> None:
    """In a forked child: the shared pool's workers are the parent's, so the child must start
    its own (the fork hook resets the bookkeeping) instead of waiting for them forever."""
    results.put(bool(np.allclose(exe(x), expected, rtol=2e-5, atol=1e-6)))


def test_a_forked_child_runs_parallel_loops() -> None:
    import multiprocessing

    x = big_input()
    exe = ember.compile(model, x, threads=2)
    expected = reference(x)
    np.testing.assert_allclose(exe(x), expected, rtol=2e-5, atol=1e-6)  # parent's workers run
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_run_in_child, args=(exe, x, expected, results))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in a parallel loop")
    assert child.exitcode == 0 and results.get(timeout=5) is True


def test_models_share_one_pool_across_executables() -> None:
    """Two executables run alternately on two threads: each keeps its own thread count."""
    x = big_input()
    one, two = ember.compile(model, x, threads=1), ember.compile(model, x, threads=2)
    for _ in range(3):
        np.testing.assert_allclose(one(x), reference(x), rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(two(x), reference(x), rtol=2e-5, atol=1e-6)
