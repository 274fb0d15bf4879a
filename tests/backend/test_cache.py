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


# -- graph links: `ember.compile` finds the machine code before generating any LLVM IR ---------


def affine(weight: np.ndarray):
    def model(x):
        return ember.nn.functional.relu(x @ weight) * 2.0

    return model


def reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return np.maximum(x @ weight, 0) * 2


def links(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*/*{cache.LINK}"))


def test_second_ember_compile_skips_llvm_ir_generation(cache_dir: Path) -> None:
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((16, 32), np.float32), rng.standard_normal((32, 8), np.float32)
    first = ember.compile(affine(weight), x)
    second = ember.compile(affine(weight), x)
    assert first.native.native.module.cache_hit == ""
    assert second.native.native.module.cache_hit == "graph"
    np.testing.assert_allclose(second(x), reference(x, weight), rtol=1e-5, atol=1e-5)
    assert len(links(cache_dir)) == 1
    assert "ret void" in second.native.native.module.llvm_ir  # inspection rebuilds the IR


def test_threads_are_set_on_code_from_a_graph_link(cache_dir: Path) -> None:
    x = np.random.default_rng(1).standard_normal((512, 256), np.float32)
    ember.compile(lambda a: a * 2.0 + 1.0, x)
    exe = ember.compile(lambda a: a * 2.0 + 1.0, x, threads=1)
    assert exe.native.native.module.cache_hit == "graph"
    np.testing.assert_allclose(exe(x), x * 2 + 1, rtol=1e-6)


def test_other_weights_shapes_and_levels_miss_the_link(cache_dir: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 32), np.float32)
    weights = [rng.standard_normal((32, 8), np.float32) for _ in range(2)]
    wide = rng.standard_normal((32, 24), np.float32)
    variants = [(weights[0], x, 3), (weights[1], x, 3), (wide, x, 3), (weights[0], x[:4], 3),
                (weights[0], x, 2)]
    for weight, inputs, level in variants:
        exe = ember.compile(affine(weight), inputs, opt_level=level)
        assert exe.native.native.module.cache_hit != "graph"
        np.testing.assert_allclose(exe(inputs), reference(inputs, weight), rtol=1e-5,
                                   atol=1e-5)
    assert len(links(cache_dir)) == len(variants)


def test_graph_key_depends_on_every_input(monkeypatch: pytest.MonkeyPatch) -> None:
    base = ("graph @g() -> () {\n}", "znver4", "+avx2", 3)
    key = cache.graph_key(*base)
    assert key == cache.graph_key(*base)
    others = [cache.graph_key("graph @h() -> () {\n}", *base[1:]),
              cache.graph_key(base[0], "skylake", *base[2:]),
              cache.graph_key(*base[:2], "+avx2,+avx512f", 3),
              cache.graph_key(*base[:3], 2)]
    monkeypatch.setattr(ember, "__version__", ember.__version__ + ".dev1")
    others.append(cache.graph_key(*base))
    monkeypatch.undo()
    monkeypatch.setattr(cache, "source_digest", lambda: "0" * 64)
    others.append(cache.graph_key(*base))
    assert len({key, *others}) == len(others) + 1


def test_edited_source_misses_the_link(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.ones((8, 16), np.float32)
    ember.compile(lambda a: a * 3.0, x)
    monkeypatch.setattr(cache, "source_digest", lambda: "edited")
    exe = ember.compile(lambda a: a * 3.0, x)
    assert exe.native.native.module.cache_hit == "object"  # the same IR: found by its text
    assert len(links(cache_dir)) == 2


def test_corrupt_link_is_detected_and_rewritten(cache_dir: Path) -> None:
    x = np.arange(128, dtype=np.float32).reshape(8, 16)
    ember.compile(lambda a: a - 1.0, x)
    (link,) = links(cache_dir)
    link.write_bytes(link.read_bytes()[:-5])
    exe = ember.compile(lambda a: a - 1.0, x)
    assert exe.native.native.module.cache_hit == "object"
    np.testing.assert_array_equal(exe(x), x - 1)
    assert ember.compile(lambda a: a - 1.0, x).native.native.module.cache_hit == "graph"


def test_link_to_another_program_layout_is_not_used(cache_dir: Path) -> None:
    x = np.arange(128, dtype=np.float32).reshape(8, 16)
    ember.compile(lambda a: a * a, x)
    (path,) = links(cache_dir)
    link = cache.load_link(path.stem)
    assert link is not None
    cache.store_link(path.stem, cache.Link(link.object_key, link.opt_level, "0" * 64))
    exe = ember.compile(lambda a: a * a, x)
    assert exe.native.native.module.cache_hit == "object"
    np.testing.assert_array_equal(exe(x), x * x)


def test_link_to_a_missing_object_recompiles(cache_dir: Path) -> None:
    x = np.arange(128, dtype=np.float32).reshape(8, 16)
    ember.compile(lambda a: a + a, x)
    for entry in cache_dir.glob("*/*.o"):
        entry.unlink()
    exe = ember.compile(lambda a: a + a, x)
    assert exe.native.native.module.cache_hit == ""
    np.testing.assert_array_equal(exe(x), x + x)


def test_two_processes_ember_compile_at_once(cache_dir: Path) -> None:
    script = (
        "import numpy as np, ember\n"
        "x = np.ones((8, 16), np.float32)\n"
        "for _ in range(2):\n"
        "    assert (ember.compile(lambda a: (a * 3.0 + 1.0) * a, x)(x) == 4).all()\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    assert cache.info().entries == 1
    assert len(links(cache_dir)) == 1


def test_clear_removes_links_too(cache_dir: Path) -> None:
    ember.compile(lambda a: a * 5.0, np.ones((4, 4), np.float32))
    assert cache.clear() == 1
    assert not links(cache_dir) and not list(cache_dir.glob("*/*.o"))
