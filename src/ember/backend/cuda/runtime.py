"""Running a CUDA program through the driver API (`cuda.bindings.driver`, imported lazily).

    session = DeviceProgram(program, ptx, functions)   # cuInit, context, module, arena
    session.run(inputs, outputs, host_arena)           # copies in, launches in order, copies out

One device arena of the memory plan's size is allocated once, with the constants copied to the
device once and a device buffer per graph input and output; a call copies the inputs in,
launches every kernel in program order on the context's stream, synchronizes, and copies the
outputs (and the arena bytes of outputs the host reads from the arena) back. Every driver call
is checked: a failing one raises EmberError naming the call and CUDA's error name.

Without the `cuda-bindings` package (`pip install "ember[cuda]"`) or without a device,
`DeviceProgram(...)` raises one EmberError that says so; compiling never needs either.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.errors import EmberError, ExecutionError
from ember.lower.program import Program, Slot

INSTALL_HINT = 'pip install "ember[cuda]" (the cuda-bindings package) on a machine with an ' \
    "NVIDIA GPU and its driver"
ALIGNMENT = 256  # bytes: cuMemAlloc's own alignment, kept for the arena's offsets


class NoDeviceError(EmberError):
    """No CUDA device (or no driver bindings) to run on."""


def driver() -> Any:
    """The `cuda.bindings.driver` module, or NoDeviceError saying how to get it."""
    try:
        from cuda.bindings import driver as cuda
    except ImportError:
        try:
            from cuda import cuda  # cuda-python before 12.6 named it so
        except ImportError:
            raise NoDeviceError("cannot run CUDA code: no CUDA device is available to Ember "
                                f"(the driver bindings are not installed: {INSTALL_HINT}); "
                                "the compiled PTX is in exe.stages['ptx']") from None
    return cuda


def check(cuda: Any, result: Any, call: str) -> Any:
    """The values a driver call returned after its CUresult, or EmberError naming `call`."""
    values = result if isinstance(result, tuple) else (result,)
    error, rest = values[0], values[1:]
    if error != cuda.CUresult.CUDA_SUCCESS:
        raise EmberError(f"CUDA driver call {call} failed: {error_name(cuda, error)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def error_name(cuda: Any, error: Any) -> str:
    try:
        status, name = cuda.cuGetErrorName(error)
        if status == cuda.CUresult.CUDA_SUCCESS:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # the name is only for the message
        pass
    return str(error)


def initialize(cuda: Any) -> Any:
    """cuInit and the primary context of device 0 (made current); NoDeviceError when the
    driver finds no device or cannot be loaded."""
    try:
        result = cuda.cuInit(0)
    except Exception as err:  # no libcuda.so: the bindings raise on the first call
        raise NoDeviceError(f"cannot run CUDA code: no CUDA device is present (the CUDA "
                            f"driver could not be loaded: {err}); {INSTALL_HINT}") from None
    error = result[0] if isinstance(result, tuple) else result
    if error != cuda.CUresult.CUDA_SUCCESS:
        raise NoDeviceError(f"cannot run CUDA code: no CUDA device is present (cuInit: "
                            f"{error_name(cuda, error)}); compiling for target='cuda' still "
                            "gives PTX (exe.stages['ptx'])")
    count = check(cuda, cuda.cuDeviceGetCount(), "cuDeviceGetCount")
    if not count:
        raise NoDeviceError("cannot run CUDA code: no CUDA device is present "
                            "(cuDeviceGetCount: 0)")
    device = check(cuda, cuda.cuDeviceGet(0), "cuDeviceGet")
    context = check(cuda, cuda.cuDevicePrimaryCtxRetain(device), "cuDevicePrimaryCtxRetain")
    check(cuda, cuda.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    return device, context


def device_name() -> str:
    """The name of CUDA device 0 ("NVIDIA H100 80GB HBM3"), or NoDeviceError."""
    cuda = driver()
    device, _ = initialize(cuda)
    name = check(cuda, cuda.cuDeviceGetName(256, device), "cuDeviceGetName")
    return (name.split(b"\0")[0].decode() if isinstance(name, bytes) else str(name)).strip()


def device_arch() -> str:
    """The newest arch Ember knows that device 0 runs ("sm_90" on an H100 or H200): PTX for
    it is JIT-compiled by the driver for the device itself."""
    from ember.target import CUDA_ARCHES

    cuda = driver()
    device, _ = initialize(cuda)
    attribute = cuda.CUdevice_attribute
    major = check(cuda, cuda.cuDeviceGetAttribute(
        attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device), "cuDeviceGetAttribute")
    minor = check(cuda, cuda.cuDeviceGetAttribute(
        attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device), "cuDeviceGetAttribute")
    known = [a for a in CUDA_ARCHES if not a.endswith("a") and int(a[3:]) <= major * 10 + minor]
    if not known:
        raise EmberError(f"CUDA device 0 has compute capability {major}.{minor}, older than "
                         f"every arch Ember generates code for ({', '.join(CUDA_ARCHES)})")
    return known[-1]


class DeviceBuffer:
    """`nbytes` of device memory (at least one byte), freed with the object."""

    def __init__(self, cuda: Any, nbytes: int) -> None:
        self.cuda, self.nbytes = cuda, nbytes
        self.handle = check(cuda, cuda.cuMemAlloc(max(nbytes, 1)), f"cuMemAlloc({nbytes})")
        self.address = int(self.handle)

    # NOTE: host memory is passed as an integer address, which every cuda-bindings version
    # accepts; `array` must be C-contiguous.
    def upload(self, array: np.ndarray, offset: int = 0) -> None:
        data = np.ascontiguousarray(array)
        if data.nbytes:
            check(self.cuda, self.cuda.cuMemcpyHtoD(self.address + offset, data.ctypes.data,
                                                    data.nbytes), "cuMemcpyHtoD")

    def download(self, array: np.ndarray, offset: int = 0) -> None:
        if not array.flags.c_contiguous:
            raise EmberError("internal: a download needs a C-contiguous array")
        if array.nbytes:
            check(self.cuda, self.cuda.cuMemcpyDtoH(array.ctypes.data, self.address + offset,
                                                    array.nbytes), "cuMemcpyDtoH")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at exit the driver may be gone already
            self.cuda.cuMemFree(self.handle)


class DeviceProgram:
    """A loaded module and its buffers: `run` executes the program once."""

    def __init__(self, program: Program, ptx: str, functions: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self.cuda = cuda = driver()
        self.device, self.context = initialize(cuda)
        self.program = program
        # the driver reads the image as a C string; kept alive with the module
        self._image = np.frombuffer(ptx.encode() + b"\0", dtype=np.uint8)
        self.module = check(cuda, cuda.cuModuleLoadData(self._image.ctypes.data),
                            "cuModuleLoadData")
        self.functions = {name: check(cuda, cuda.cuModuleGetFunction(self.module,
                                                                     name.encode()),
                                      f"cuModuleGetFunction({name})")
                          for name in dict.fromkeys(functions)}
        self.order = list(functions)
        graph = program.graph
        self.inputs = [DeviceBuffer(cuda, v.type.nbytes) for v in graph.inputs]
        self.outputs = [DeviceBuffer(cuda, v.type.nbytes) for v in graph.outputs]
        self.arena = DeviceBuffer(cuda, program.arena_bytes)
        self.status = DeviceBuffer(cuda, 8)
        self.constants = []
        for data in program.constants:
            buffer = DeviceBuffer(cuda, data.nbytes)
            buffer.upload(data)
            self.constants.append(buffer)
        self._parameters = [self._parameter_block(call.slots) for call in program.calls]

    def _address(self, slot: Slot) -> int:
        if slot.kind == "input":
            return self.inputs[slot.index].address
        if slot.kind == "output":
            return self.outputs[slot.index].address
        if slot.kind == "const":
            return self.constants[slot.index].address
        if slot.kind == "status":
            return self.status.address
        return self.arena.address + slot.index

    def _parameter_block(self, slots: Sequence[Slot]) -> tuple[np.ndarray, np.ndarray]:
        """cuLaunchKernel's `kernelParams`: an array of pointers to each parameter's value
        (each value a 64-bit device address); both arrays live as long as the program."""
        values = np.array([self._address(slot) for slot in slots], dtype=np.uint64)
        pointers = np.array([values.ctypes.data + 8 * k for k in range(len(slots))],
                            dtype=np.uint64)
        return values, pointers

    def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
            host_arena: np.ndarray) -> None:
        """Copy the inputs in, launch every kernel in order, copy the outputs out; a kernel
        that detected bad data (an index out of range) makes this raise ExecutionError. Calls
        from several threads run one at a time (they share the device buffers)."""
        with self._lock:
            self.upload(inputs)
            self.launch()
            check(self.cuda, self.cuda.cuCtxSynchronize(),
                  "cuCtxSynchronize (after the kernels)")
            self.download(outputs, host_arena)

    def upload(self, inputs: Sequence[np.ndarray]) -> None:
        """Copy the graph inputs to the device and clear the status word."""
        check(self.cuda, self.cuda.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
        for buffer, array in zip(self.inputs, inputs, strict=True):
            buffer.upload(array)
        self.status.upload(np.zeros(1, dtype=np.int64))

    def launch(self) -> None:
        """Launch every kernel of the program in order on the default stream (returns before
        they finish)."""
        cuda = self.cuda
        for call, name, (_, pointers) in zip(self.program.calls, self.order, self._parameters,
                                              strict=True):
            blocks, threads = call.kernel.attrs["launch"]  # type: ignore[misc]
            check(cuda, cuda.cuLaunchKernel(self.functions[name], blocks, 1, 1, threads, 1, 1,
                                            0, 0, pointers.ctypes.data, 0),
                  f"cuLaunchKernel({name}, {blocks}x{threads})")

    def download(self, outputs: Sequence[np.ndarray], host_arena: np.ndarray) -> None:
        """Copy the outputs (and arena bytes the host reads outputs from) back; raise
        ExecutionError when a kernel set the status word."""
        for buffer, array in zip(self.outputs, outputs, strict=True):
            buffer.download(array)
        for index, slot in self.program.output_copies:
            if slot.kind == "arena":
                view = host_arena[slot.index : slot.index + outputs[index].nbytes]
                self.arena.download(view, slot.index)
        status = np.zeros(1, dtype=np.int64)
        self.status.download(status)
        if status[0]:
            raise ExecutionError(self.program.errors[int(status[0]) - 1])

    def time_launches(self, runs: int = 20, warmup: int = 3) -> list[float]:
        """Seconds of each of `runs` executions of all the program's launches (the data
        already on the device), timed with CUDA events around each execution."""
        cuda = self.cuda
        for _ in range(warmup):
            self.launch()
        check(cuda, cuda.cuCtxSynchronize(), "cuCtxSynchronize")
        return time_on_device(cuda, self.launch, runs)

    def close(self) -> None:
        """Unload the module (buffers are freed with this object)."""
        if getattr(self, "module", None) is not None:
            self.cuda.cuModuleUnload(self.module)
            self.module = None


def time_on_device(cuda: Any, work: Any, runs: int) -> list[float]:
    """Seconds of each of `runs` calls of `work()` (which enqueues device work on the default
    stream), measured with a pair of CUDA events around each call."""
    start = check(cuda, cuda.cuEventCreate(0), "cuEventCreate")
    end = check(cuda, cuda.cuEventCreate(0), "cuEventCreate")
    times = []
    try:
        for _ in range(runs):
            check(cuda, cuda.cuEventRecord(start, 0), "cuEventRecord")
            work()
            check(cuda, cuda.cuEventRecord(end, 0), "cuEventRecord")
            check(cuda, cuda.cuEventSynchronize(end), "cuEventSynchronize")
            times.append(check(cuda, cuda.cuEventElapsedTime(start, end),
                               "cuEventElapsedTime") / 1e3)
    finally:
        cuda.cuEventDestroy(start)
        cuda.cuEventDestroy(end)
    return times
