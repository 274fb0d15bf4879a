"""The imports run one way: lowering, the IR and the passes know no backend.

Every module under `src/ember/lower/`, `src/ember/ir/`, `src/ember/autodiff/` and `passes/` is parsed, and each of
its import statements (at any depth: a function-local import counts too) is checked. Lowering
produces loop IR; what a target adds (LLVM IR, the CPU's GEMM) comes from `ember.backend`
through the rule registry, which the backends fill.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEUTRAL = [ROOT / "src" / "ember" / "lower", ROOT / "src" / "ember" / "ir", ROOT / "passes",
           ROOT / "src" / "ember" / "autodiff"]
FORBIDDEN = ("llvmlite", "ember.backend")


def package_of(path: Path) -> tuple[str, ...]:
    """The package a file of this checkout belongs to (`passes/` installs as ember.passes)."""
    folder = path.parent.relative_to(ROOT)
    if folder.parts[0] == "passes":
        return ("ember", *folder.parts)
    return folder.parts[1:]  # src/ember/... -> ember...


def imported_modules(path: Path, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, module) of every import in a file; `from . import x` resolved to absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def neutral_files() -> list[Path]:
    return sorted(p for folder in NEUTRAL for p in folder.rglob("*.py"))


def offending(path: Path, package: tuple[str, ...] | None = None) -> list[str]:
    package = package if package is not None else package_of(path)
    return [f"{path.name}:{line}: imports {module}"
            for line, module in imported_modules(path, package)
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN)]


def test_the_walk_sees_every_neutral_module() -> None:
    names = {p.name for p in neutral_files()}
    assert {"program.py", "rules.py", "epilogue.py", "graph.py", "fuse.py"} <= names
    assert len(names) > 30


@pytest.mark.parametrize("path", neutral_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_neutral_module_imports_no_backend(path: Path) -> None:
    assert offending(path) == []


def test_the_check_catches_a_backend_import(tmp_path: Path) -> None:
    """The check itself can fail: a module-level, a local and a `from` import are all found."""
    bad = tmp_path / "probe.py"
    bad.write_text("import llvmlite.ir\n\ndef f():\n    from ember.backend.cpu import gemm\n"
                   "    from ..backend import for_target\n    from ember.lower import loops\n")
    found = offending(bad, ("ember", "lower"))
    assert [line.split(":")[1] for line in found] == ["1", "4", "4", "5", "5"], found
