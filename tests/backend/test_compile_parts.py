"""Programs compiled in parts (`build.emit_parts`, `jit.Part`): LLVM works on several parts at
once, the engine links them by name, the cache keeps each part and the whole, and the answers
are those of a module compiled whole, checked against numpy in float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ember
from ember.backend.cpu import build
from ember.backend.llvm import jit
from ember.errors import EmberError, LoweringError


def network(x, w1, w2):
    """More than MAX_INLINED_CALLS kernels (so kernels stay out of line and parts apply): GEMMs,
    reductions and sin/cos (whose out-of-line helpers every part defines for itself)."""
    h = np.sin(x) * 0.5  # |x| large in places: sin's table reduction, a helper of its own
    for i in range(10):  # a constant of its own in each layer: kernels that differ
        h = np.sin(h @ w1) + np.cos(h @ w2) * (0.5 + 0.01 * i)
        h = h - h.mean(axis=1, keepdims=True)
        h = h / (np.sqrt((h * h).sum(axis=1, keepdims=True)) + 1.0)
    return h


def reference(x, w1, w2) -> np.ndarray:
    return network(*(a.astype(np.float64) for a in (x, w1, w2)))


def inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((37, 48)).astype(np.float32)
    # large values reach sin's table reduction, the helper each part defines for itself
    x[0, :4] = [3e5, -2e6, np.float32(1e30), -0.0]
    w1 = (rng.standard_normal((48, 48)) / 7).astype(np.float32)
    w2 = (rng.standard_normal((48, 48)) / 7).astype(np.float32)
    return x, w1, w2


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "PART_SIZE", 1)  # every kernel a part of its own


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("EMBER_CACHE", raising=False)
    return tmp_path


def compiled(*args, **kwargs) -> ember.Executable:
    return ember.compile(network, *inputs(), threads=1, **kwargs)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_parts_on_any_number_of_threads_agree_with_numpy(small_parts, threads: str,
                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EMBER_CACHE", "0")
    monkeypatch.setenv("EMBER_COMPILE_THREADS", threads)
    exe = compiled()
    module = exe.native.native.module
    assert len(module.parts) > 10
    assert module.parts[-1].exports == (build.entry_name(exe.native.program),)
    for seed in range(3):
        x, w1, w2 = inputs(seed)
        np.testing.assert_allclose(exe(x, w1, w2), reference(x, w1, w2), rtol=2e-5,
                                   atol=2e-6)


def test_parts_compile_to_the_same_code_as_on_one_thread(small_parts,
                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EMBER_CACHE", "0")
    monkeypatch.setenv("EMBER_COMPILE_THREADS", "1")
    one = compiled().native.native.module
    monkeypatch.setenv("EMBER_COMPILE_THREADS", "2")
    two = compiled().native.native.module
    assert one.cache_key == two.cache_key
    assert one.object_code() == two.object_code()


def test_only_the_exports_stay_external(small_parts, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EMBER_CACHE", "0")
    module = compiled().native.native.module
    text = module.llvm_ir
    assert text.count("; ---- part ") == len(module.parts)
    for part in module.parts[:-1]:
        assert part.exports and all(f"@\"{name}\"(" in part.text for name in part.exports)
    defined = [line for line in text.split("\n") if line.startswith("define ")]
    external = [line for line in defined if " internal " not in line]
    exported = {name for part in module.parts for name in part.exports or ()}
    assert len(external) == len(exported)  # the helpers defined in several parts: internal
    assert "part 0 of" in module.asm()


def with_weights(w1: np.ndarray, w2: np.ndarray):
    """The network with its weights as constants (a function named as the network, so that
    its LLVM IR, which names the graph, does not depend on the weights' values)."""
    layers = network

    def network_(a):
        return layers(a, w1, w2)

    network_.__name__ = "network"
    return network_


def test_each_part_and_the_whole_are_cached(small_parts, cache_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch):
    first = compiled().native.native.module
    assert first.cache_hit == "" and len(first.parts) > 1
    again = compiled()
    assert again.native.native.module.cache_hit == "graph"  # the bundle, by the graph link
    x, w1, w2 = inputs(1)
    np.testing.assert_allclose(again(x, w1, w2), reference(x, w1, w2), rtol=2e-5, atol=2e-6)
    assert len(again.native.native.module.llvm_ir) > 0  # the IR is rebuilt on demand
    # constant weights, then other constant weights: another graph (no link), the same IR:
    # every part found by its text
    _, w1, w2 = inputs(2)
    ember.compile(with_weights(w1, w2), x, threads=1)
    _, v1, v2 = inputs(4)
    other = ember.compile(with_weights(v1, v2), x, threads=1)
    module = other.native.native.module
    assert module.cache_hit == "object" and len(module.parts) > 1
    x = inputs(3)[0]
    np.testing.assert_allclose(other(x), reference(x, v1, v2), rtol=2e-5, atol=2e-6)


def test_bundle_round_trip_and_truncation():
    payloads = [b"\x7fELF one", b"", b"three\nlines\n"]
    assert jit.unbundle(jit.bundle(payloads)) == payloads
    assert jit.unbundle(b"\x7fELF alone") == [b"\x7fELF alone"]
    assert jit.bundle([b"\x7fELF alone"]) == b"\x7fELF alone"
    with pytest.raises(EmberError, match="truncated"):
        jit.unbundle(jit.bundle(payloads)[:-1])


def test_a_part_llvm_rejects_is_an_error_in_the_caller():
    good = jit.Part("define void @f() {\n  ret void\n}", ("f",))
    bad = jit.Part("define void @g() {\n  ret i32 0\n}", ("g",))
    with pytest.raises(LoweringError, match="LLVM rejected"):
        jit.compile_ir(iter([good, bad, good]), cached=False)


def test_parts_call_each_other_by_name():
    callee = jit.Part("define i64 @twice(i64 %x) {\n  %y = add i64 %x, %x\n  ret i64 %y\n}\n"
                      "define i64 @helper() {\n  ret i64 1\n}", ("twice",))
    caller = jit.Part("declare i64 @twice(i64)\n"
                      "define i64 @helper() {\n  ret i64 2\n}\n"
                      "define i64 @entry(i64 %x) {\n  %y = call i64 @twice(i64 %x)\n"
                      "  %z = call i64 @helper()\n  %w = add i64 %y, %z\n  ret i64 %w\n}",
                      ("entry",))
    import ctypes

    module = jit.compile_ir([callee, caller], cached=False)
    entry = module.function("entry", ctypes.c_int64, [ctypes.c_int64])
    assert entry(20) == 42  # 2 * 20 + the caller's own helper, not the callee's


def test_compile_threads_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EMBER_COMPILE_THREADS", "3")
    assert jit.compile_threads() == 3
    monkeypatch.setenv("EMBER_COMPILE_THREADS", "none")
    with pytest.raises(EmberError, match="EMBER_COMPILE_THREADS"):
        jit.compile_threads()
    monkeypatch.delenv("EMBER_COMPILE_THREADS")
    assert 1 <= jit.compile_threads() <= 8
