"""A stand-in for `cuda.bindings.driver` that runs on the host, for the runtime's tests.

Device memory is host memory (each cuMemAlloc a numpy buffer, its address the "device
pointer"), copies are memmoves, and cuLaunchKernel runs the launched kernel's loop IR compiled
for the CPU on the parameters it was given (the grid loop over all its iterations, in one
thread). So `ember.backend.cuda.runtime` is exercised end to end (module, arena, constants,
parameter blocks, launch order, copies back, status word) without a GPU; only the PTX itself is
not run. Calls are recorded in `calls`; `fail` makes one call return an error code.
"""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Sequence
from typing import Any

import numpy as np
from llvmlite import ir

from ember.backend.llvm.codegen import emit_kernel, finalize_module
from ember.backend.llvm.jit import compile_ir
from ember.backend.llvm.vecmath import for_target
from ember.lower.loops import Kernel
from ember.target import Target


class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1
    CUDA_ERROR_NO_DEVICE = 100
    CUDA_ERROR_INVALID_PTX = 218
    CUDA_ERROR_LAUNCH_FAILED = 719


OK = CUresult.CUDA_SUCCESS


class FakeDriver:
    """The subset of the driver API that `runtime.DeviceProgram` uses."""

    CUresult = CUresult

    def __init__(self, kernels: dict[str, Kernel], devices: int = 1,
                 fail: dict[str, CUresult] | None = None) -> None:
        self.kernels = kernels
        self.devices = devices
        self.fail = fail or {}
        self.calls: list[tuple[Any, ...]] = []
        self.memory: dict[int, np.ndarray] = {}
        self.sizes: dict[int, int] = {}  # bytes asked for, per allocation
        self._compiled: dict[str, Any] = {}

    def _result(self, name: str, *values: Any) -> tuple[Any, ...]:
        self.calls.append((name, *values))
        if name in self.fail:
            return (self.fail[name], *([None] * len(values)))
        return (OK, *values)

    def cuGetErrorName(self, error: CUresult) -> tuple[CUresult, bytes]:
        return OK, error.name.encode()

    def cuInit(self, flags: int) -> tuple[CUresult]:
        if not self.devices:
            return (CUresult.CUDA_ERROR_NO_DEVICE,)
        return self._result("cuInit")

    def cuDeviceGetCount(self) -> tuple[CUresult, int]:
        return self._result("cuDeviceGetCount", self.devices)

    def cuDeviceGet(self, ordinal: int) -> tuple[CUresult, int]:
        return self._result("cuDeviceGet", ordinal)

    def cuDeviceGetName(self, length: int, device: int) -> tuple[CUresult, bytes]:
        return self._result("cuDeviceGetName", b"Fake GPU\0\0")

    def cuDevicePrimaryCtxRetain(self, device: int) -> tuple[CUresult, str]:
        return self._result("cuDevicePrimaryCtxRetain", "context")

    def cuCtxSetCurrent(self, context: str) -> tuple[CUresult]:
        return self._result("cuCtxSetCurrent")

    def cuModuleLoadData(self, image: int) -> tuple[CUresult, str]:
        assert b".entry" in ctypes.string_at(image)  # a NUL-terminated PTX text
        return self._result("cuModuleLoadData", "module")

    def cuModuleGetFunction(self, module: str, name: bytes) -> tuple[CUresult, str]:
        return self._result("cuModuleGetFunction", name.decode())

    def cuModuleUnload(self, module: str) -> tuple[CUresult]:
        return self._result("cuModuleUnload")

    def cuMemAlloc(self, nbytes: int) -> tuple[CUresult, int]:
        block = np.zeros(nbytes + 256, dtype=np.uint8)
        address = block.ctypes.data + (-block.ctypes.data) % 256
        self.memory[address] = block
        self.sizes[address] = nbytes
        return self._result("cuMemAlloc", address)

    def cuMemFree(self, address: int) -> tuple[CUresult]:
        self.memory.pop(address, None)
        return (OK,)

    def cuMemcpyHtoD(self, device: int, host: int, nbytes: int) -> tuple[CUresult]:
        ctypes.memmove(device, host, nbytes)
        return self._result("cuMemcpyHtoD", nbytes)

    def cuMemcpyDtoH(self, host: int, device: int, nbytes: int) -> tuple[CUresult]:
        ctypes.memmove(host, device, nbytes)
        return self._result("cuMemcpyDtoH", nbytes)

    def cuLaunchKernel(self, function: str, gx: int, gy: int, gz: int, bx: int, by: int,
                       bz: int, shared: int, stream: int, params: int, extra: int
                       ) -> tuple[CUresult]:
        kernel = self.kernels[function]
        count = len(kernel.buffers)
        pointers = (ctypes.c_uint64 * count).from_address(params)
        addresses = [ctypes.c_uint64.from_address(p).value for p in pointers]
        result = self._result("cuLaunchKernel", function, (gx, gy, gz), (bx, by, bz), addresses)
        if result[0] == OK:
            self._cpu_function(function, kernel)(*addresses)
        return result

    def cuCtxSynchronize(self) -> tuple[CUresult]:
        return self._result("cuCtxSynchronize")

    def cuEventCreate(self, flags: int) -> tuple[CUresult, list[int]]:
        return self._result("cuEventCreate", [0])

    def cuEventRecord(self, event: list[int], stream: int) -> tuple[CUresult]:
        event[0] = len(self.calls)  # "time" counts the calls made so far
        return self._result("cuEventRecord")

    def cuEventSynchronize(self, event: list[int]) -> tuple[CUresult]:
        return self._result("cuEventSynchronize")

    def cuEventElapsedTime(self, start: list[int], end: list[int]) -> tuple[CUresult, float]:
        return self._result("cuEventElapsedTime", float(end[0] - start[0]))

    def cuEventDestroy(self, event: list[int]) -> tuple[CUresult]:
        return (OK,)

    def _cpu_function(self, name: str, kernel: Kernel) -> Any:
        """The launch's kernel compiled for the host: a grid loop runs all its iterations."""
        if name not in self._compiled:
            module = for_target(ir.Module(name), Target.host())
            function = emit_kernel(module, kernel)
            function.linkage = ""
            compiled = compile_ir(finalize_module(str(module)), opt_level=1, cached=False)
            self._compiled[name] = (compiled, compiled.function(
                kernel.name, None, [ctypes.c_void_p] * len(kernel.buffers)))
        return self._compiled[name][1]

    def launches(self) -> list[tuple[str, tuple[int, int, int], tuple[int, int, int]]]:
        return [(c[1], c[2], c[3]) for c in self.calls if c[0] == "cuLaunchKernel"]


def kernels_of(functions: Sequence[str], kernels: Sequence[Kernel]) -> dict[str, Kernel]:
    """Function name -> the kernel it launches (names as `CudaProgram.functions` gives)."""
    return dict(zip(functions, kernels, strict=True))
