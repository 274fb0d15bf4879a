"""The on-disk cache of object code: reuse, corruption, concurrent writers, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
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
    ember.compile(lambda a: a * 2.0 + 1.0, x, threads=2)
    exe = ember.compile(lambda a: a * 2.0 + 1.0, x, threads=2)
    assert exe.native.native.module.cache_hit == "graph"
    assert exe.native.set_threads(1) == 1 and exe.native.set_threads(2) == 2
    np.testing.assert_allclose(exe(x), x * 2 + 1, rtol=1e-6)


def test_code_for_another_thread_count_is_another_entry(cache_dir: Path) -> None:
    """`threads=` decides how the code is partitioned, so it is part of the target's key."""
    x = np.random.default_rng(1).standard_normal((512, 256), np.float32)
    ember.compile(lambda a: a * 2.0 + 1.0, x, threads=2)
    one = ember.compile(lambda a: a * 2.0 + 1.0, x, threads=1)
    assert one.native.native.module.cache_hit == "" and "parallel" not in one.stages["loops"]
    assert len(links(cache_dir)) == 2
    np.testing.assert_allclose(one(x), x * 2 + 1, rtol=1e-6)


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


# -- entries are bound to their keys; the directory must be private ---------------------------


def other_graph() -> ember.Graph:
    return ember.trace(lambda a: a - 2.0, np.zeros((8, 16), np.float32))


def entry(directory: Path, native, suffix: str = cache.OBJECT) -> Path:
    key = native.native.module.cache_key
    return directory / key[:2] / f"{key}{suffix}"


def test_entry_copied_over_another_models_entry_is_not_used(cache_dir: Path) -> None:
    first, second = compile_native(graph()), compile_native(other_graph())
    entry(cache_dir, second).write_bytes(entry(cache_dir, first).read_bytes())
    again = compile_native(other_graph())
    assert not again.native.module.from_cache
    x = np.arange(128, dtype=np.float32).reshape(8, 16)
    np.testing.assert_array_equal(again(x)[0], x - 2)
    assert compile_native(other_graph()).native.module.from_cache  # rebuilt under its key


@pytest.mark.parametrize("damage", ["flipped payload byte", "flipped hash byte", "edited key",
                                    "old header format", "empty file"])
def test_damaged_entry_is_detected_and_rebuilt(cache_dir: Path, damage: str) -> None:
    path = entry(cache_dir, compile_native(graph()))
    blob = path.read_bytes()
    header, _, payload = blob.partition(b"\n")
    if damage == "flipped payload byte":
        middle = len(header) + 1 + len(payload) // 2
        blob = blob[:middle] + bytes([blob[middle] ^ 0x01]) + blob[middle + 1:]
    elif damage == "flipped hash byte":
        blob = header[:-1] + bytes([header[-1] ^ 0x01]) + b"\n" + payload
    elif damage == "edited key":  # the header claims another key, hash left as it was
        parts = header.split(b" ")
        parts[3] = b"0" * len(parts[3])
        blob = b" ".join(parts) + b"\n" + payload
    elif damage == "old header format":  # the hash of the payload alone, bound to no key
        import hashlib

        blob = b"EMBER-OBJ 1 " + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    else:
        blob = b""
    path.write_bytes(blob)
    rebuilt = compile_native(graph())
    assert not rebuilt.native.module.from_cache
    got, want = run(rebuilt)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert compile_native(graph()).native.module.from_cache


def test_symlinked_entry_is_not_followed(cache_dir: Path) -> None:
    first, second = compile_native(graph()), compile_native(other_graph())
    target = entry(cache_dir, second)
    target.unlink()
    target.symlink_to(entry(cache_dir, first))  # a valid entry, but another key's and a link
    assert cache.load(second.native.module.cache_key) is None
    assert not target.is_symlink()  # removed; the entry it pointed at is untouched
    assert cache.load(first.native.module.cache_key) is not None
    x = np.arange(128, dtype=np.float32).reshape(8, 16)
    np.testing.assert_array_equal(compile_native(other_graph())(x)[0], x - 2)


def test_fifo_in_place_of_an_entry_is_not_waited_on(cache_dir: Path) -> None:
    key = compile_native(graph()).native.module.cache_key
    path = cache_dir / key[:2] / f"{key}{cache.OBJECT}"
    path.unlink()
    os.mkfifo(path)
    assert cache.load(key) is None  # returns at once: opened without blocking, not a file
    got, want = run(compile_native(graph()))
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_entry_owned_by_another_user_is_not_used(cache_dir: Path) -> None:
    path = entry(cache_dir, compile_native(graph()))
    os.chown(path, 12345, 12345)
    rebuilt = compile_native(graph())
    assert not rebuilt.native.module.from_cache
    got, want = run(rebuilt)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert path.stat().st_uid == os.getuid()  # the rebuilt entry is the current user's


def test_graph_link_copied_over_another_graphs_link_is_not_used(cache_dir: Path) -> None:
    x = np.arange(128, dtype=np.float32).reshape(8, 16)
    ember.compile(lambda a: a * a, x)
    ember.compile(lambda a: a + a, x)
    square, double = (cache.load_link(p.stem) for p in links(cache_dir))
    assert square is not None and double is not None
    first, second = links(cache_dir)
    second.write_bytes(first.read_bytes())  # both programs have the same calling layout
    for fn, want in [(lambda a: a * a, x * x), (lambda a: a + a, x + x)]:
        exe = ember.compile(fn, x)
        np.testing.assert_array_equal(exe(x), want)
    assert ember.compile(lambda a: a + a, x).native.native.module.cache_hit == "graph"


def test_graph_link_edited_to_name_another_object_is_not_used(cache_dir: Path) -> None:
    x = np.arange(128, dtype=np.float32).reshape(8, 16)
    square = ember.compile(lambda a: a * a, x).native.native.module.cache_key
    double = ember.compile(lambda a: a + a, x).native.native.module.cache_key
    for path in links(cache_dir):
        blob = path.read_bytes()
        if double.encode() in blob:  # the link of `a + a`, made to name the code of `a * a`
            path.write_bytes(blob.replace(double.encode(), square.encode()))
    exe = ember.compile(lambda a: a + a, x)
    assert exe.native.native.module.cache_hit == "object"
    np.testing.assert_array_equal(exe(x), x + x)


def directory_is_refused(directory: Path, monkeypatch: pytest.MonkeyPatch, reason: str) -> None:
    """Compiling with `directory` as the cache warns once, naming `reason`, writes nothing
    there and still computes the right result (from a private fallback directory)."""
    monkeypatch.setenv("EMBER_CACHE_DIR", str(directory))
    before = sorted(directory.rglob("*"))
    with pytest.warns(cache.CacheWarning, match=reason):
        native = compile_native(graph())
    fallback = cache.cache_dir()
    assert fallback != directory and fallback.stat().st_uid == os.getuid()
    assert fallback.stat().st_mode & 0o777 == 0o700
    assert sorted(directory.rglob("*")) == before
    got, want = run(native)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert compile_native(graph()).native.module.from_cache  # the fallback caches


def test_world_writable_cache_directory_is_refused(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    directory_is_refused(directory, monkeypatch, "writable by its group or others")


def test_world_writable_parent_of_the_cache_directory_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = tmp_path / "shared"
    (parent / "ember").mkdir(parents=True, mode=0o700)
    parent.chmod(0o757)
    directory_is_refused(parent / "ember", monkeypatch, f"parent {parent} is writable")


@pytest.mark.skipif(os.getuid() != 0, reason="chgrp to another group needs root")
def test_group_writable_parent_of_another_group_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = tmp_path / "team"
    (parent / "ember").mkdir(parents=True, mode=0o700)
    os.chown(parent, -1, 12345)  # a group the current user's private group is not
    parent.chmod(0o775)
    directory_is_refused(parent / "ember", monkeypatch, f"parent {parent} is writable")


def test_group_writable_by_the_users_private_group_is_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import grp
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid())
    if group.gr_name != user or set(group.gr_mem) - {user}:
        pytest.skip("the current user has no private group")
    directory = tmp_path / "home" / ".cache"
    directory.mkdir(parents=True)
    os.chown(directory, os.getuid(), os.getgid())
    directory.chmod(0o775)  # what a umask of 002 makes
    (tmp_path / "home").chmod(0o775)
    monkeypatch.setenv("EMBER_CACHE_DIR", str(directory / "ember"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache.CacheWarning)
        compile_native(graph())
    assert len(list((directory / "ember").glob("*/*.o"))) == 1


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_cache_directory_owned_by_another_user_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 12345, 12345)  # root may write it, but it is not the current user's
    directory_is_refused(directory, monkeypatch, "owned by uid 12345")


def test_sticky_world_writable_parent_is_accepted(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    parent = tmp_path / "tmp-like"
    parent.mkdir()
    parent.chmod(0o1777)  # like /tmp: others cannot rename or remove what is ours
    monkeypatch.setenv("EMBER_CACHE_DIR", str(parent / "ember"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache.CacheWarning)
        compile_native(graph())
    assert cache.cache_dir() == parent / "ember"
    assert len(list((parent / "ember").glob("*/*.o"))) == 1


def test_missing_cache_directories_are_created_private(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    compile_native(graph())
    for directory in [tmp_path / "home", tmp_path / "home" / ".cache",
                      tmp_path / "home" / ".cache" / "ember"]:
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    (shard,) = (tmp_path / "home" / ".cache" / "ember").iterdir()
    assert shard.stat().st_mode & 0o777 == 0o700
    (entry_path,) = shard.iterdir()
    assert entry_path.stat().st_mode & 0o077 == 0


def test_processes_filling_the_cache_with_different_models_at_once(cache_dir: Path) -> None:
    script = (
        "import sys, numpy as np, ember\n"
        "from ember.runtime import compile_native\n"
        "order = [int(c) for c in sys.argv[1]]\n"
        "for _ in range(2):\n"
        "    for k in order:\n"
        "        x = np.arange(8 * (k + 1), dtype=np.float32).reshape(8, k + 1)\n"
        "        g = ember.trace(lambda a: a * float(k + 2) - 1.0, x)\n"
        "        np.testing.assert_array_equal(compile_native(g)(x)[0], x * (k + 2) - 1)\n"
    )
    orders = ["0123", "3210", "1302", "2031"]
    processes = [subprocess.Popen([sys.executable, "-c", script, order]) for order in orders]
    assert [p.wait(timeout=180) for p in processes] == [0] * len(orders)
    entries = sorted(cache_dir.glob("*/*.o"))
    assert len(entries) == 4 and not list(cache_dir.glob("*/*.tmp"))
    assert all(cache.load(path.stem) is not None for path in entries)  # each verifies


def test_link_naming_a_path_instead_of_a_key_is_not_followed(cache_dir: Path) -> None:
    x = np.arange(128, dtype=np.float32).reshape(8, 16)
    ember.compile(lambda a: a * 4.0, x)
    (path,) = links(cache_dir)
    link = cache.load_link(path.stem)
    assert link is not None
    cache.store(path.stem, f"../../{link.object_key} {link.opt_level} {link.layout}".encode(),
                cache.LINK)  # a well-formed entry whose object key is a relative path
    assert cache.load_link(path.stem) is None
    assert cache.load("../" + link.object_key) is None
    exe = ember.compile(lambda a: a * 4.0, x)
    assert exe.native.native.module.cache_hit == "object"
    np.testing.assert_array_equal(exe(x), x * 4)
