"""The CUDA backend's slot: NVIDIA GPUs through LLVM's NVPTX target.

Lowering, the graph passes and the compile route already take a `Target.cuda(...)`; what this
package will add is the GPU's schedules (loop nests bound to blocks and threads), PTX emission
through the shared LLVM layer and the driver-API runtime. Until then compiling for a CUDA
target stops with one UnsupportedError, before any work is done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ember.errors import UnsupportedError
from ember.lower.program import Program
from ember.lower.rules import TARGET_RULES, TargetRule
from ember.target import Target


@dataclass(frozen=True)
class CudaBackend:
    target: Target
    stages: tuple[str, ...] = ("ptx",)

    @property
    def rules(self) -> Mapping[str, TargetRule]:
        return TARGET_RULES["cuda"]

    def _unsupported(self) -> UnsupportedError:
        return UnsupportedError(f"target {self.target}: CUDA code generation is not part of "
                                "this build of Ember yet (compile for target='cpu')")

    def check(self) -> None:
        raise self._unsupported()

    def schedule(self, program: Program) -> Program:
        raise self._unsupported()

    def build(self, program: Program, opt_level: int = 3) -> object:
        raise self._unsupported()
