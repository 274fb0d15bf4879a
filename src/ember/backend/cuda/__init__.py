"""The CUDA backend: NVIDIA GPUs through LLVM's NVPTX target and the CUDA driver API.

    backend = CudaBackend(Target.cuda("sm_90"))
    built = backend.build(backend.schedule(lower_graph(graph, {"opt_level": 3}, target)))
    built.stage("ptx"); built.report(); built.run(inputs, outputs, arena)

- `schedule.py`: each kernel's top-level loop nests become launches, independent loops a
  grid-stride loop with the innermost dimension on threadIdx.x;
- `codegen.py`: mapped loop IR -> LLVM IR (`ptx_kernel` functions) -> PTX for the arch;
- `ptxas.py`: assembles the PTX with NVIDIA's ptxas when found (validity, registers, spills);
- `runtime.py`: the driver API (`cuda-bindings`, optional): module, one device arena, copies
  and launches. Without a device or the package, running raises one EmberError; compiling
  needs neither.

Importing this package registers the CUDA target rules (`lower_gemm`: matmul and matmul_nt as
one thread per output element, with a fused elementwise chain in the store); every other op
lowers through the target-neutral rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ember.backend.cuda import lower_gemm  # noqa: F401  (registers the CUDA target rules)
from ember.errors import UnsupportedError
from ember.lower.program import Program
from ember.lower.rules import TARGET_RULES, TargetRule
from ember.target import Target

if TYPE_CHECKING:
    from ember.backend.cuda.build import CudaProgram


@dataclass(frozen=True)
class CudaBackend:
    target: Target
    stages: tuple[str, ...] = ("ptx",)  # exe.stages; the built program also has "llvm"

    @property
    def rules(self) -> Mapping[str, TargetRule]:
        """The CUDA target's lowering rules (op -> rule), as lowering finds them."""
        return TARGET_RULES["cuda"]

    def check(self) -> None:
        """PTX for any known arch can be built here (running it is checked on the call)."""

    def schedule(self, program: Program) -> Program:
        """Every call becomes one launch: independent loop nests as grids (`map_program`)."""
        from ember.backend.cuda.schedule import map_program

        return replace(map_program(program), target=self.target)

    def build(self, program: Program, opt_level: int = 3, profile: bool = False
              ) -> CudaProgram:
        """PTX for the program (mapped to launches first if the schedule did not run), checked
        by ptxas when one is found; the result runs it on the first device. A profiling build
        (per-kernel cycle counters, as the CPU's) does not exist for CUDA yet."""
        from ember.backend.cuda.build import build_program

        if profile:
            raise UnsupportedError(f"target {self.target}: per-kernel profiling is not "
                                   "implemented for CUDA; time all launches with "
                                   "exe.native.native.device().time_launches()")

        return build_program(program, opt_level)
