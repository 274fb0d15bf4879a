"""Every `examples/*.py` runs as a script and matches its own numpy forward pass."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ember

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
MAX_ERROR = 1e-4  # float32 against a float64 numpy reference


def test_examples_are_found() -> None:
    assert {path.name for path in EXAMPLES} >= {"mlp.py", "cnn.py", "transformer.py"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs_and_matches_numpy(example: Path) -> None:
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("graph @"), "the example prints the traced IR first"
    match = re.search(r"max error vs numpy: (\S+)", result.stdout)
    assert match, f"no 'max error vs numpy' line in the output of {example.name}"
    error = float(match.group(1))
    assert 0 <= error < MAX_ERROR, f"{example.name}: max error {error}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_is_short_and_defines_model_and_inputs(example: Path) -> None:
    source = example.read_text()
    assert len(source.splitlines()) < 80
    assert re.search(r"^model = ", source, re.MULTILINE)
    assert re.search(r"^example_inputs = ", source, re.MULTILINE)
    assert 'if __name__ == "__main__":' in source


def test_ember_ir_output_of_the_cnn_example_parses_back() -> None:
    result = subprocess.run([sys.executable, "-m", "ember.cli", "ir", "examples/cnn.py"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    text = result.stdout.rstrip("\n")
    assert text.startswith("graph @cnn(%input: f32[16,3,32,32]) -> (f32[16,10]) {")
    for op in ("conv2d", "batch_norm", "relu", "max_pool2d", "avg_pool2d", "matmul"):
        assert f"= {op}(" in text, op
    assert str(ember.parse(text)) == text
