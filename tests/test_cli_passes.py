"""The `ember` command line for passes: optimized stage, per-pass printing and diffs, fusion
explanations, `ember passes` and `ember opt`."""

from __future__ import annotations

from pathlib import Path

import pytest

import ember
from ember import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

DOUBLE_NEG = """graph @f(%x: f32[4]) -> (f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = neg(%0) : f32[4]
  %2 = neg(%1) : f32[4]
  %3 = exp(%x) : f32[4]
  %4 = add(%2, %3) : f32[4]
  return %4
}"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_optimized_stage_parses_back_and_is_fused(capsys) -> None:
    status, out, err = run(["ir", str(EXAMPLES / "cnn.py"), "--stage", "optimized"], capsys)
    assert (status, err) == (0, "")
    graph = ember.parse(out.strip())
    assert str(graph) == out.strip()
    ops = [node.op for node in graph.nodes]
    assert "fused" in ops and "batch_norm" not in ops


def test_opt_runs_a_pipeline_on_ir_text(tmp_path: Path, capsys) -> None:
    path = tmp_path / "f.ir"
    path.write_text(DOUBLE_NEG)
    status, out, _ = run(["opt", str(path), "-p", "cse,simplify,dce"], capsys)
    assert status == 0
    assert out.strip() == """graph @f(%x: f32[4]) -> (f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = add(%0, %0) : f32[4]
  return %1
}"""


def test_diff_shows_only_passes_that_changed_something(tmp_path: Path, capsys) -> None:
    path = tmp_path / "f.ir"
    path.write_text(DOUBLE_NEG)
    status, out, _ = run(["opt", str(path), "-p", "cse,cse,simplify,dce", "--diff"], capsys)
    assert status == 0
    assert "--- before cse (#0)" in out and "+++ after dce (#3)" in out
    assert "before cse (#1)" not in out  # the second cse changed nothing
    assert "-  %3 = exp(%x) : f32[4]" in out


def test_print_after_all_and_after(tmp_path: Path, capsys) -> None:
    path = tmp_path / "f.ir"
    path.write_text(DOUBLE_NEG)
    _, out, _ = run(["opt", str(path), "-p", "cse,dce", "--print-after-all"], capsys)
    assert "IR after cse (#0)" in out and "IR after dce (#1)" in out
    _, out, _ = run(["opt", str(path), "-p", "cse,dce", "--after", "dce"], capsys)
    assert "IR after cse" not in out and "IR after dce (#1)" in out


def test_explain_fusion_says_why(capsys) -> None:
    status, out, _ = run(["ir", str(EXAMPLES / "mlp.py"), "--explain", "fusion"], capsys)
    assert status == 0
    assert "fused  add" in out and "into the matmul" in out


def test_passes_lists_every_pass(capsys) -> None:
    from ember.passes import ALL_PASSES

    status, out, _ = run(["passes"], capsys)
    assert status == 0
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed == list(ALL_PASSES)
    assert "max-ops=16" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["opt", "missing.ir", "-p", "cse"], "no such file: missing.ir"),
        (["opt", "BAD", "-p", "nope"], "unknown pass 'nope'"),
    ],
)
def test_opt_errors_are_one_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    if argv[1] == "BAD":
        path = tmp_path / "f.ir"
        path.write_text(DOUBLE_NEG)
        argv = [argv[0], str(path), *argv[2:]]
    status, out, err = run(argv, capsys)
    assert status == 2 and out == ""
    assert err.startswith("ember: error:") and message in err and err.count("\n") == 1


def test_opt_reports_parse_errors_with_position(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.ir"
    path.write_text("graph @f(%x: f32[4]) -> (f32[4]) {\n  %0 = exp(%y) : f32[4]\n  return %0\n}")
    status, _, err = run(["opt", str(path), "-p", "cse"], capsys)
    assert status == 2
    assert "bad.ir:2:" in err and "undefined value %y" in err
