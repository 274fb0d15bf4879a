"""`ember.progress`: the compile progress report on stderr (`ember.compile(..., progress=...)`).

DELAY is set to 0 where a test wants output from a compile that takes less than a second, and to
an hour where it wants none; a fresh compile cache makes every compile generate its code.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

import ember
from ember import cli, progress
from ember.nn import functional as F

X = np.linspace(-2.0, 2.0, 64, dtype=np.float32).reshape(4, 16)


def model(x):
    return F.relu(x * 2.0 + 1.0).sum(axis=-1)


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EMBER_CACHE", "1")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_true_writes_each_stage_then_the_summary(monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    exe = ember.compile(model, X, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    found = [re.fullmatch(r"ember: compile: ([a-z ]+?)( \d+/\d+[a-z ]*)?( \(.*\))? \(\d+\.\d s\)",
                          line) for line in lines[:-1]]
    assert all(found), lines
    stages = [match.group(1) for match in found]
    assert stages == ["trace", "passes", "lowering", "llvm ir", "llvm text", "llvm optimize",
                      "machine code"], lines
    passes = len(ember.passes.default_pipeline(3))
    assert found[1].group(2) == f" {passes}/{passes}"
    calls = len(exe.native.program.calls)
    assert found[3].group(2) == f" {calls}/{calls} kernels"
    assert lines[-1].startswith("ember: compiled in ") and "machine code" in lines[-1]
    np.testing.assert_allclose(exe(X), np.maximum(X * 2.0 + 1.0, 0).sum(-1), rtol=1e-6)


def test_a_cache_hit_reports_no_llvm_stage(monkeypatch, capsys):
    ember.compile(model, X, progress=False)
    monkeypatch.setattr(progress, "DELAY", 0.0)
    ember.compile(model, X, progress=True)
    err = capsys.readouterr().err
    assert "lowering" in err and "llvm" not in err, err


def test_nothing_for_a_compile_under_the_delay(monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY", 3600.0)
    ember.compile(model, X, progress=True)
    assert capsys.readouterr().err == ""


def test_nothing_when_off_or_not_a_terminal(monkeypatch, capfd):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    ember.compile(model, X, progress=False)
    ember.compile(model, X * 3.0)  # default: stderr is a pipe under capfd, not a terminal
    assert capfd.readouterr().err == ""


def test_cli_shows_progress_only_on_a_terminal(monkeypatch, tmp_path, capfd):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    target = tmp_path / "tiny.py"
    target.write_text("import numpy as np\n\ndef model(x):\n    return x * 2.0 + 1.0\n\n"
                      "example_inputs = (np.ones((4, 16), np.float32),)\n")
    assert cli.main(["ir", str(target), "--stage", "loops"]) == 0
    captured = capfd.readouterr()
    assert "kernel k0_fused" in captured.out and captured.err == ""
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert cli.main(["ir", str(target), "--stage", "llvm", "-O", "2"]) == 0
    assert "ember: compiled in" in terminal.getvalue()
    assert "trace and passes" in terminal.getvalue()


def test_a_failed_compile_says_so(monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY", 0.0)

    def broken(x):
        raise ValueError("no")

    with pytest.raises(ValueError):
        ember.compile(broken, X, progress=True)
    assert capsys.readouterr().err.splitlines()[-1].startswith("ember: compile failed after ")


def test_on_a_terminal_one_line_is_redrawn_then_replaced_by_the_summary(monkeypatch):
    monkeypatch.setattr(progress, "MIN_REDRAW", 0.0)  # every count redraws
    terminal = FakeTerminal()
    reporter = progress.Reporter(terminal, terminal=True, delay=0.0)
    reporter.stage("llvm ir", total=4, unit="kernels")
    reporter.advance()
    reporter.advance()
    drawn = terminal.getvalue()
    assert "\n" not in drawn and drawn.startswith("\r")
    assert drawn.rsplit("\r", 1)[1].rstrip().endswith(
        "[" + "#" * 12 + "-" * 12 + "] llvm ir 2/4 kernels")
    reporter.stage("machine code")
    reporter.close()
    text = terminal.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    summary = text.rsplit("\r", 1)[1]
    assert summary.startswith("ember: compiled in ") and "llvm ir" in summary


def test_automatic_mode_follows_the_stream():
    with progress.reporting(None, stream=io.StringIO()) as reporter:
        assert reporter is None
        progress.stage("trace")  # no report open: nothing happens
    terminal = FakeTerminal()
    with progress.reporting(None, stream=terminal) as reporter:
        assert isinstance(reporter, progress.Reporter) and reporter.terminal
    assert terminal.getvalue() == ""  # ended within the delay


def test_inner_reports_join_the_outer_one_and_false_silences(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    stream = io.StringIO()
    with progress.reporting(True, stream=stream) as outer:
        with progress.reporting(True, stream=io.StringIO()) as inner:
            assert inner is outer
            progress.stage("trace")
        with progress.reporting(False):
            progress.stage("hidden")
        progress.stage("passes", total=2)
        progress.advance(2)
    assert [s.name for s in outer.stages] == ["trace", "passes"]
    assert "passes 2/2" in stream.getvalue() and "hidden" not in stream.getvalue()
