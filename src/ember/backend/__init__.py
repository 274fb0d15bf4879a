"""Backends: the target-specific half of the compiler, behind one protocol.

    backend = ember.backend.for_target(target)     # Target.host(), Target.cuda("sm_90"), ...
    program = backend.schedule(program)           # loop IR -> scheduled loop IR (marks, tiles)
    built = backend.build(program, opt_level)     # machine code: `built.run(...)`, `.stage()`

- `cpu/`: x86-64 through LLVM (the packed GEMM and convolution rules, the thread pool, the
  native entry over one arena, the on-disk object cache);
- `cuda/`: NVIDIA GPUs through LLVM's NVPTX target (the slot: code generation to come);
- `llvm/`: what both share: loop IR -> LLVM IR, vector math, target machines.

A backend's lowering rules are registered in `ember.lower.rules.TARGET_RULES` when its package
is imported; `import ember` imports every backend package, so the registries are complete
before the first compile. Lowering never imports a backend; backends import lowering.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ember.backend import cpu, cuda
from ember.lower.program import Program
from ember.lower.rules import TargetRule
from ember.target import Target


class Built(Protocol):
    """A program compiled for a target."""

    program: Program

    def stage(self, name: str) -> str:
        """The text of a code generation stage ("llvm", "asm", "ptx")."""
        ...


class Backend(Protocol):
    """What lowering and the driver need of a target's code generator."""

    target: Target
    stages: tuple[str, ...]  # the code generation stages `Built.stage` gives

    @property
    def rules(self) -> Mapping[str, TargetRule]:
        """op -> the backend's lowering rule for its targets (lowering finds the same rows in
        `ember.lower.rules.TARGET_RULES[target.kind]`)."""
        ...

    def check(self) -> None:
        """Raise UnsupportedError when this backend cannot build code for its target."""
        ...

    def schedule(self, program: Program) -> Program: ...

    def build(self, program: Program, opt_level: int = 3) -> Built: ...


def for_target(target: Target) -> Backend:
    """The backend that generates code for `target`."""
    if target.kind == "cpu":
        return cpu.CpuBackend(target)
    return cuda.CudaBackend(target)


__all__ = ["Backend", "Built", "for_target"]
