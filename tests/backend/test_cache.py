"""The on-disk cache of object code: reuse, corruption, concurrent writers, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.backend.llvm import cache
from ember.runtime import compile_native


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("EMBER_CACHE", raising=False)
    return tmp_path


def graph() -> ember.Graph:
    x = np.zeros((8, 16), np.float32)
    return ember.trace(lambda a: (a * 3.0 + 1.0) * a, x)


def run(native) -> np.ndarray:
    x = np.arange(128, dtype=np.float32).reshape(8, 16) / 7
    return native(x)[0], (x * 3 + 1) * x


def test_second_compile_comes_from_the_cache(cache_dir: Path) -> None:
    first = compile_native(graph())
    second = compile_native(graph())
    assert not first.native.module.from_cache and second.native.module.from_cache
    got, want = run(second)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert cache.info().entries == 1
    assert "ret" in second.native.module.llvm_ir  # inspection still works from the cache


def test_corrupt_entry_is_detected_and_rebuilt(cache_dir: Path) -> None:
    compile_native(graph())
    (entry,) = cache_dir.glob("*/*.o")
    entry.write_bytes(entry.read_bytes()[:-100])  # truncated
    rebuilt = compile_native(graph())
    assert not rebuilt.native.module.from_cache
    got, want = run(rebuilt)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert compile_native(graph()).native.module.from_cache


def test_disabled_cache_writes_nothing(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_CACHE", "0")
    compile_native(graph())
    assert not list(cache_dir.glob("*/*.o"))


def test_two_processes_compiling_at_once(cache_dir: Path) -> None:
    script = (
        "import numpy as np, ember\n"
        "from ember.runtime import compile_native\n"
        "x = np.ones((8, 16), np.float32)\n"
        "g = ember.trace(lambda a: (a * 3.0 + 1.0) * a, x)\n"
        "assert (compile_native(g)(x)[0] == 4).all()\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    assert cache.info().entries == 1


def test_cli_cache_info_and_clear(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ember import cli

    compile_native(graph())
    assert cli.main(["cache", "info"]) == 0
    assert "1 entries" in capsys.readouterr().out
    assert cli.main(["cache", "clear"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert cache.info().entries == 0
