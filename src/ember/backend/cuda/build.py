"""Program -> PTX for one CUDA arch, checked by ptxas, run on first call through the driver.

    built = build_program(program)          # map to launches, emit, optimize, PTX, ptxas
    built.stage("ptx"); built.report()      # the PTX; registers and spills per kernel
    built.run(inputs, outputs, arena)       # on the device (NoDeviceError without one)

Building needs neither a GPU nor the CUDA driver: the PTX comes from LLVM's NVPTX backend, and
ptxas (when found: `ptxas.find_ptxas`) assembles it for the target's arch, which both checks
the code and gives each kernel's register and spill counts. The device side is set up on the
first `run` (`runtime.DeviceProgram`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ember.backend.cuda import codegen, ptxas
from ember.backend.cuda.runtime import DeviceProgram
from ember.backend.cuda.schedule import map_program
from ember.lower.program import Program

_LOADING = threading.Lock()  # one thread loads a program on the device


@dataclass(frozen=True)
class CudaModule:
    """The code of a CudaProgram in the shape tools expect of a compiled module (`llvm_ir`,
    `asm()`: the PTX); it is not loaded into this process (`runnable` is False)."""

    llvm_ir: str
    ptx: str
    runnable: bool = False

    def asm(self) -> str:
        return self.ptx

    def defines(self, name: str) -> bool:
        return False

    def remarks(self) -> list[object]:
        """No loop-vectorizer remarks: GPU threads run scalar code."""
        return []


@dataclass
class CudaProgram:
    """A program compiled to PTX: `functions[k]` is the entry the k-th call launches."""

    program: Program
    llvm_ir: str  # optimized LLVM IR
    ptx: str
    functions: list[str]
    usage: dict[str, ptxas.KernelUsage] = field(default_factory=dict)  # from ptxas, if found
    ptxas_path: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _device: DeviceProgram | None = field(default=None, repr=False)

    @property
    def module(self) -> CudaModule:
        """The optimized LLVM IR and the PTX as a module view (`ember ir --stage llvm|asm`)."""
        return CudaModule(self.llvm_ir, self.ptx)

    @property
    def arch(self) -> str:
        return self.program.target.name

    def stage(self, name: str) -> str:
        """The text of a code generation stage: "llvm" (optimized LLVM IR) or "ptx"."""
        if name == "llvm":
            return self.llvm_ir
        if name == "ptx":
            return self.ptx
        raise KeyError(f"the CUDA backend has no stage {name!r} (stages: llvm, ptx)")

    def report(self) -> str:
        """Each launch: grid, block, and what ptxas reported (registers, spills)."""
        checked = (f"ptxas -arch={self.arch}: {len(self.usage)} kernels accepted"
                   if self.ptxas_path else "ptxas not found: the PTX was not assembled here")
        lines = [f"cuda {self.arch}: {len(self.program.calls)} launches, "
                 f"{len(set(self.functions))} kernels; {checked}"]
        for call, name in zip(self.program.calls, self.functions, strict=True):
            blocks, threads = call.kernel.attrs["launch"]  # type: ignore[misc]
            line = f"  {name:<28} grid {blocks:>6} x {threads:<4}"
            usage = self.usage.get(name)
            if usage is not None:
                line += (f" {usage.registers:>3} registers, {usage.spill_stores} B spill "
                         f"stores, {usage.spill_loads} B spill loads")
            lines.append(line)
        return "\n".join(lines)

    def device(self) -> DeviceProgram:
        """The program loaded on CUDA device 0 (on first use; NoDeviceError without one)."""
        with _LOADING:
            if self._device is None:
                self._device = DeviceProgram(self.program, self.ptx, self.functions)
        return self._device

    def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
            arena: np.ndarray) -> None:
        """Run the whole graph once on CUDA device 0."""
        self.device().run(inputs, outputs, arena)


def build_program(program: Program, opt_level: int = 3, check: bool = True) -> CudaProgram:
    """Map every call to a launch, emit and optimize the module, print PTX for the target's
    arch, and assemble it with ptxas when one is found (`check`)."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    program = map_program(program)
    module, functions = codegen.emit_module(program)
    optimized = codegen.optimized_ir(module, program.target.name, functions, opt_level)
    llvm_ir = str(optimized)
    text = codegen.compile_ptx(optimized, program.target.name)
    timings["ptx"] = time.perf_counter() - start
    path = ptxas.find_ptxas() if check else None
    usage: dict[str, ptxas.KernelUsage] = {}
    if path is not None:
        start = time.perf_counter()
        usage = ptxas.check_ptx(text, program.target.name, path)
        timings["ptxas"] = time.perf_counter() - start
    return CudaProgram(program, llvm_ir, text, functions, usage, path, timings)
