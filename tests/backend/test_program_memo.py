"""A second compile of a graph in one process takes its machine code from the compile cache
and its lowered program from memory: no lowering, the same results (against numpy), and a
graph that differs in a constant gets its own program."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.runtime import native


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("EMBER_CACHE", raising=False)
    monkeypatch.setattr(native, "_PROGRAMS", type(native._PROGRAMS)())


def test_second_compile_reuses_the_program(fresh_cache, monkeypatch):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 48)).astype(np.float32)
    x = rng.standard_normal((32, 64)).astype(np.float32)
    first = ember.compile(lambda a: np.maximum(a @ weight, 0.0), x)
    lowered = []
    monkeypatch.setattr(native, "lower_native",
                        lambda *a, **k: lowered.append(a) or pytest.fail("lowered again"))
    second = ember.compile(lambda a: np.maximum(a @ weight, 0.0), x)
    assert "cached" in second.timings and not lowered
    assert second.native.program is first.native.program
    want = np.maximum(x.astype(np.float64) @ weight, 0.0)
    for exe in (first, second):
        np.testing.assert_allclose(exe(x), want, rtol=1e-4, atol=1e-4)


def test_a_different_constant_is_a_different_program(fresh_cache):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 32)).astype(np.float32)
    weights = [rng.standard_normal((32, 8)).astype(np.float32) for _ in range(2)]
    exes = [ember.compile(lambda a, w=w: a @ w, x) for w in weights]
    assert exes[0].native.program is not exes[1].native.program
    for exe, w in zip(exes, weights, strict=True):
        np.testing.assert_allclose(exe(x), x.astype(np.float64) @ w, rtol=1e-4, atol=1e-4)


def test_the_memo_is_bounded(fresh_cache, monkeypatch):
    monkeypatch.setattr(native, "PROGRAM_MEMO", 2)
    x = np.ones((4, 4), np.float32)
    for scale in (1.0, 2.0, 3.0):
        ember.compile(lambda a, s=scale: a * np.float32(s), x)
    assert len(native._PROGRAMS) == 2
