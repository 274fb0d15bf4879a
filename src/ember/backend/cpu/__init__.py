"""The CPU backend: x86-64 machine code through LLVM, run in this process.

    backend = CpuBackend(Target.host())
    built = backend.build(backend.schedule(lower_graph(graph, {"opt_level": 3}, target)))
    built.run(inputs, outputs, arena); built.stage("asm")

Importing this package registers the CPU's target rules (`lower_gemm`: matmul as calls of the
packed GEMM; `lower_conv`: conv2d as an implicit GEMM), so `import ember` makes them known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ember.backend.cpu import (  # noqa: F401  (register target rules)
    lower_conv,
    lower_conv_nhwc,
    lower_gemm,
)
from ember.lower.loops import Kernel
from ember.lower.program import Program
from ember.lower.rules import TARGET_RULES, TargetRule
from ember.lower.schedule import parallelize_outer, unroll_short_columns, vectorize_innermost
from ember.target import Target

if TYPE_CHECKING:
    from ember.backend.cpu.build import NativeProgram


@dataclass(frozen=True)
class CpuBackend:
    target: Target
    stages: tuple[str, ...] = ("llvm", "asm")

    @property
    def rules(self) -> Mapping[str, TargetRule]:
        """The CPU's lowering rules (op -> rule), as lowering finds them in the registry."""
        return TARGET_RULES["cpu"]

    def check(self) -> None:
        """Code for any CPU target can be built (running it is checked on the call)."""

    def schedule(self, program: Program) -> Program:
        """The default schedule of every kernel: unroll short column loops of reductions (so
        the row loop vectorizes), vectorize innermost loops, and run outer loops with enough
        work (the target's threshold) on the thread pool when the target has several cores."""
        min_work = self.target.min_parallel_work

        def schedule(kernel: Kernel) -> Kernel:
            kernel = vectorize_innermost(unroll_short_columns(kernel))
            if self.target.cores == 1:
                return kernel
            return parallelize_outer(kernel, min_work, self.target.cores)

        calls = [replace(call, kernel=schedule(call.kernel)) for call in program.calls]
        return replace(program, calls=calls)

    def build(self, program: Program, opt_level: int = 3, profile: bool = False
              ) -> NativeProgram:
        """Emit, optimize and compile the program; the result runs it."""
        from ember.backend.cpu.build import build_program

        return build_program(program, opt_level, profile)
