"""Packaging: `ember.passes` maps to the top-level `passes/`; the `ember` script is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import ember

ROOT = Path(__file__).resolve().parent.parent


def test_ember_passes_imports_and_lists_passes() -> None:
    import ember.passes

    assert isinstance(ember.passes.ALL_PASSES, dict)
    assert Path(ember.passes.__file__).parent.name == "passes"


def test_console_script_is_declared() -> None:
    scripts = metadata.entry_points(group="console_scripts")
    (entry,) = [e for e in scripts if e.name == "ember"]
    assert entry.value == "ember.cli:main"


def _ember_script() -> str:
    found = shutil.which("ember")
    if found is None:  # an activated virtual environment puts it next to its python
        candidate = Path(sys.executable).parent / "ember"
        found = str(candidate) if candidate.exists() else None
    assert found is not None, "the `ember` console script is not installed (pip install .)"
    return found


def test_ember_version_runs_as_a_console_script() -> None:
    result = subprocess.run([_ember_script(), "--version"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ember {ember.__version__}"
    assert metadata.version("ember") == ember.__version__


def test_every_subpackage_is_listed_for_installation() -> None:
    """A subpackage missing from pyproject's list would be left out of `pip install .`."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {"ember." + ".".join(path.parent.relative_to(ROOT / "src" / "ember").parts)
             for path in (ROOT / "src" / "ember").glob("*/**/__init__.py")}
    found |= {"ember.passes." + ".".join(path.parent.relative_to(ROOT / "passes").parts)
              for path in (ROOT / "passes").glob("*/**/__init__.py")}
    missing = sorted(found - listed)
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {missing}"
