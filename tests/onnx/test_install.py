"""Without the optional onnx package, ONNX import and export fail with one clear EmberError that
says `pip install "ember[onnx]"`, in Python and in the CLI; the `onnx` extra declares it.

The missing package is simulated (`sys.modules["onnx"] = None` makes `import onnx` raise
ModuleNotFoundError), not uninstalled.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ember
from ember.errors import EmberError

ROOT = Path(__file__).resolve().parents[2]
HINT = 'pip install "ember[onnx]"'


@pytest.fixture
def without_onnx(monkeypatch: pytest.MonkeyPatch):
    """`ember.onnx` imported afresh while `import onnx` fails; the real modules come back after."""
    for name in [n for n in sys.modules if n == "onnx" or n.startswith(("onnx.", "ember.onnx"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnx", None)
    original = vars(ember).pop("onnx", None)
    import ember.onnx as fresh

    yield fresh
    if original is None:
        vars(ember).pop("onnx", None)
    else:
        ember.onnx = original


def test_load_without_onnx_names_the_extra(without_onnx, tmp_path: Path) -> None:
    with pytest.raises(EmberError) as info:
        without_onnx.load(tmp_path / "model.onnx")
    assert str(info.value) == ("ember.onnx.load needs the onnx package, which is not installed; "
                               f"install it with: {HINT}")


def test_save_and_model_without_onnx_name_the_extra(without_onnx, tmp_path: Path) -> None:
    with pytest.raises(EmberError, match=r"ember\.onnx\.save needs the onnx package.*"
                                         r"ember\[onnx\]"):
        without_onnx.save(None, tmp_path / "model.onnx")
    with pytest.raises(EmberError, match=r"ember\.onnx\.OnnxModel needs the onnx package"):
        without_onnx.OnnxModel(None, "model.onnx")


def test_ember_onnx_attribute_without_onnx(without_onnx) -> None:
    """`ember.onnx` (resolved lazily from `import ember`) is the module, not an ImportError."""
    assert ember.onnx.load is without_onnx.load


def test_cli_without_onnx_prints_one_line(tmp_path: Path) -> None:
    """`ember ir model.onnx` without onnx: exit status 2 and one error line, no traceback."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07")
    script = ("import sys; sys.modules['onnx'] = None; from ember.cli import main; "
              f"sys.exit(main(['ir', {str(model)!r}]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert HINT in result.stderr
    assert "ModuleNotFoundError" not in result.stderr


def test_onnx_extra_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert extras["onnx"] == ["onnx>=1.14"]
