"""`ember.bench` and `ember bench`: result structure, output checks, JSON, the machine line.

Tiny shapes and few repeats; nothing here asserts how fast anything runs.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import ember
from ember import cli
from ember.bench import bench, measure, relative_error, resolve_threads
from ember.nn import functional as F

X = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)


def scaled_sigmoid(x):
    return F.sigmoid(x) * 2.0 + 1.0


def numpy_scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    return 2.0 / (1.0 + np.exp(-x.astype(np.float64))) + 1.0


def quick(**options):
    settings = dict(levels=(0, 1), threads=1, repeats=3, warmup=1, compare=())
    settings.update(options)
    return bench(scaled_sigmoid, (X,), **settings)


def test_rows_have_ordered_statistics_and_compile_times():
    result = quick(peers={"numpy": numpy_scaled_sigmoid})
    assert [row.name for row in result.levels] == ["level 0", "level 1"]
    for row in [*result.levels, *result.peers]:
        timing = row.timing
        assert timing is not None and timing.count == 3
        assert 0 < timing.min <= timing.p10 <= timing.median <= timing.p90 <= timing.max
    level0, level1 = result.levels
    assert level0.speedup == 1.0
    assert level1.speedup == pytest.approx(level0.timing.median / level1.timing.median)
    assert level0.arena_bytes is None  # the interpreter has no arena
    assert isinstance(level1.arena_bytes, int) and level1.arena_bytes >= 0
    assert level1.compile_cold > 0 and level1.compile_cached > 0
    assert level0.compile_cached is None
    assert result.threads == 1 and result.machine.threads == 1


def test_output_check_accepts_a_right_peer_and_flags_a_wrong_one():
    result = quick(peers={"numpy": numpy_scaled_sigmoid, "wrong": lambda x: x * 2.0 + 1.0})
    right, wrong = result.peers
    assert right.ok and right.error < 1e-6
    expected = (np.abs(X * 2.0 + 1.0 - numpy_scaled_sigmoid(X)).max()
                / np.abs(numpy_scaled_sigmoid(X)).max())
    assert wrong.error == pytest.approx(expected, rel=1e-3)
    assert not wrong.ok and not result.ok
    failed = [line for line in result.table().splitlines() if "FAIL" in line]
    assert len(failed) == 1 and failed[0].lstrip().startswith("wrong")


def test_a_wrong_shape_and_a_crashing_peer_are_flagged():
    def crash(x):
        raise ValueError("peer exploded")

    result = quick(levels=(0,), peers={"shape": lambda x: x[:4], "crash": crash})
    shape, crashed = result.peers
    assert shape.error == float("inf") and not shape.ok
    assert not crashed.ok and crashed.timing is None
    assert "peer exploded" in crashed.failure


def test_level0_outside_levels_still_checks_outputs():
    result = quick(levels=(1,), peers={"numpy": numpy_scaled_sigmoid})
    assert [row.level for row in result.levels] == [1]
    assert result.levels[0].speedup is None  # no timed baseline
    assert result.peers[0].error < 1e-6


def test_relative_error_against_hand_computed_values():
    want = [np.array([1.0, -4.0]), np.array([2.0])]
    assert relative_error([np.array([1.0, -3.0]), np.array([2.0])], want) == 0.25
    assert relative_error([np.array([1.0, -4.0])], want) == float("inf")  # an output missing
    assert relative_error([np.ones(3), np.array([2.0])], want) == float("inf")


def test_measure_stops_after_max_seconds_but_keeps_three_calls():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.01)

    timing = measure(slow, repeats=100, warmup=2, max_seconds=0.02)
    assert 3 <= timing.count < 10
    assert len(calls) == timing.count + 2
    assert timing.min >= 0.009
    with pytest.raises(ValueError, match="repeats must be at least 1, got 0"):
        measure(slow, repeats=0)


def test_threads_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("EMBER_NUM_THREADS", "1")
    assert resolve_threads(None) == 1
    assert resolve_threads(2) == 2
    monkeypatch.setenv("EMBER_NUM_THREADS", "two")
    with pytest.raises(ember.EmberError,
                       match="EMBER_NUM_THREADS must be a positive integer, got 'two'"):
        resolve_threads(None)
    monkeypatch.delenv("EMBER_NUM_THREADS")
    assert resolve_threads(None) == len(os.sched_getaffinity(0))


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="opt levels are 0, 1, 2 and 3, got 4"):
        quick(levels=(0, 4))
    with pytest.raises(ValueError, match="unknown peer 'tvm'"):
        quick(compare=("tvm",))


def test_json_holds_every_number(tmp_path):
    result = quick(peers={"numpy": numpy_scaled_sigmoid})
    path = tmp_path / "result.json"
    result.write_json(path)
    data = json.loads(path.read_text())
    assert data["threads"] == 1 and data["ok"] is True
    assert data["machine_line"].startswith("machine: ")
    assert [row["name"] for row in data["levels"]] == ["level 0", "level 1"]
    assert data["levels"][1]["timing"]["median"] == result.levels[1].timing.median
    assert data["levels"][1]["compile_cold"] == result.levels[1].compile_cold
    assert data["peers"][0]["error"] == result.peers[0].error


def test_a_level_that_does_not_compile_gets_a_row_not_an_exception(monkeypatch):
    import ember.runtime
    from ember.errors import LoweringError

    def refuse(graph, opt_level=3, target=None):
        raise LoweringError(f"@{graph.name}", "no CPU lowering for ops: sigmoid")

    monkeypatch.setattr(ember.runtime, "compile_cached", refuse)
    result = quick(levels=(0, 2), peers={"numpy": numpy_scaled_sigmoid})
    row = result.level(2)
    assert row.timing is None
    assert row.failure.startswith("does not compile: LoweringError")
    assert "no CPU lowering for ops: sigmoid" in row.failure
    assert result.level(0).timing is not None and result.peer("numpy").ok
    assert "does not compile" in result.table()


def test_ablation_leaves_out_each_pass_once():
    from ember.passes import default_pipeline

    result = quick(levels=(3,), ablate=True, repeats=2, warmup=0)
    names = [str(p) for p in default_pipeline(3)]
    assert [row.name for row in result.ablation] == [f"-{n}#{i}" for i, n in enumerate(names)]
    for row in result.ablation:
        assert row.failure or (row.timing is not None and row.ok)
    assert "level 3 without one pass" in result.table()


def test_onnxruntime_peer_matches_numpy():
    pytest.importorskip("onnxruntime")
    result = quick(levels=(0,), compare=("onnxruntime",))
    row = result.peer("onnxruntime")
    assert row.failure == "" and row.ok and row.error < 1e-6
    assert row.version


def test_torch_peer_is_checked_like_the_others():
    torch = pytest.importorskip("torch")
    good = quick(levels=(0,), compare=("torch",),
                 torch_model=lambda t: torch.sigmoid(t) * 2.0 + 1.0)
    assert good.peer("torch").ok and good.peer("torch").error < 1e-6
    bad = quick(levels=(0,), compare=("torch",), torch_model=lambda t: torch.tanh(t))
    assert not bad.peer("torch").ok
    missing = quick(levels=(0,), compare=("torch",))
    assert missing.peer("torch").failure == "no PyTorch model given"


TARGET = """\
import numpy as np
from ember.nn import functional as F

def model(x):
    return F.sigmoid(x) * 2.0 + 1.0

example_inputs = (np.linspace(-3, 3, 64, dtype=np.float32).reshape(4, 16),)
"""


def test_cli_bench_prints_the_machine_line_and_writes_json(tmp_path, capsys):
    target = tmp_path / "tiny.py"
    target.write_text(TARGET)
    output = tmp_path / "bench.json"
    status = cli.main(["bench", str(target), "--threads", "1", "--levels", "0,1", "--repeats",
                       "2", "--warmup", "0", "--compare", "", "--json", str(output)])
    printed = capsys.readouterr().out.splitlines()
    assert status == 0
    assert printed[0].startswith("machine: ") and "threads 1" in printed[0]
    assert "LLVM" in printed[0] and f"numpy {np.__version__}" in printed[0]
    assert any(line.lstrip().startswith("level 1") for line in printed)
    data = json.loads(output.read_text())
    assert [row["level"] for row in data["levels"]] == [0, 1]


def test_cli_bench_reports_bad_levels_in_one_line(tmp_path, capsys):
    target = tmp_path / "tiny.py"
    target.write_text(TARGET)
    assert cli.main(["bench", str(target), "--levels", "0,7"]) == 2
    error = capsys.readouterr().err
    assert error == "ember: error: --levels takes opt levels 0 to 3, got '0,7'\n"
    assert cli.main(["bench", str(target), "--compare", "tvm"]) == 2
    assert "unknown peer 'tvm'" in capsys.readouterr().err


def test_cli_bench_profile_lists_every_kernel(tmp_path, capsys):
    target = tmp_path / "tiny.py"
    target.write_text(TARGET)
    status = cli.main(["bench", str(target), "--threads", "1", "--levels", "3", "--repeats", "3",
                       "--warmup", "0", "--compare", "", "--profile"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "level 3, threads 1: kernel times: median of 3 runs" in printed
    assert "tiny.py:" in printed  # each kernel names the user's line


def test_profile_rows_follow_the_program():
    """One row per kernel call, in the program's order, each with the node it computes; the
    counts are non-negative, and the profiled build still computes the model (numpy, float64)."""
    import ember
    from ember.backend.cpu.build import build_program

    x = np.random.default_rng(1).standard_normal((64, 128)).astype(np.float32)
    w = (0.1 * np.random.default_rng(2).standard_normal((128, 96))).astype(np.float32)

    def two_kernels(x):
        return F.softmax(F.relu(x @ w), dim=-1)

    executable = ember.compile(two_kernels, x, threads=1)
    profile = executable.native.profile(x, runs=4)
    calls = executable.native.program.calls
    assert [row.kernel for row in profile.rows] == [call.kernel.name for call in calls]
    assert len(profile.rows) >= 2 and all(row.seconds >= 0 for row in profile.rows)
    assert profile.total_seconds > 0
    assert {row.node.op for row in profile.rows} >= {"softmax"}
    table = str(profile)
    assert all(row.kernel in table for row in profile.rows)
    profiled = build_program(executable.native.program, profile=True)
    out = np.empty((64, 96), np.float32)
    profiled.run([x], [out], executable.native._arena())  # the executable's aligned arena
    h = np.maximum(x.astype(np.float64) @ w, 0.0)
    e = np.exp(h - h.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=-1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert [row.node for row in profile.rows] == [call.node for call in calls]
