"""From llvmlite IR to callable machine code for the host CPU.

    compiled = compile_ir(module)                 # parse, verify, optimize (O3), MCJIT
    scale = compiled.function("scale", None, [ctypes.c_void_p, ctypes.c_int64])
    compiled.llvm_ir, compiled.asm()              # what LLVM made of it, for inspection

The target machine is built for the host CPU name and features (`znver4` with AVX-512 here), so
LLVM uses the widest vector registers the machine has. Every compiled module keeps its engine
alive for as long as the `CompiledModule` lives.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llvmlite.binding as llvm
from llvmlite import ir

from ember.errors import LoweringError

_LOCK = threading.Lock()  # LLVM's global state is not safe to build from several threads


@functools.cache
def _initialize() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@dataclass(frozen=True)
class HostCPU:
    """The CPU code is generated for."""

    name: str  # LLVM's CPU name, e.g. "znver4"
    features: str  # LLVM feature string, e.g. "+avx2,+avx512f,..."
    triple: str

    @property
    def vector_bits(self) -> int:
        """Width of the widest float vector registers: 512 (AVX-512), 256 (AVX2) or 128."""
        enabled = set(f[1:] for f in self.features.split(",") if f.startswith("+"))
        if "avx512f" in enabled:
            return 512
        return 256 if "avx2" in enabled or "avx" in enabled else 128

    @property
    def f32_lanes(self) -> int:
        return self.vector_bits // 32

    @property
    def has_fma(self) -> bool:
        return "+fma" in self.features.split(",")

    def describe(self) -> str:
        isa = {512: "AVX-512", 256: "AVX2", 128: "SSE"}[self.vector_bits]
        return f"{self.name} ({isa}{', FMA' if self.has_fma else ''}), LLVM " + ".".join(
            str(v) for v in llvm.llvm_version_info)


@functools.cache
def host_cpu() -> HostCPU:
    _initialize()
    return HostCPU(llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(),
                   llvm.get_process_triple())


@functools.cache
def target_machine(opt_level: int = 3) -> llvm.TargetMachine:
    """The shared target machine for the host CPU (optimization, assembly, object code)."""
    return new_target_machine(opt_level)


def new_target_machine(opt_level: int = 3) -> llvm.TargetMachine:
    """A fresh target machine. An MCJIT engine takes ownership of the one it is given, so
    every engine needs its own."""
    cpu = host_cpu()
    target = llvm.Target.from_triple(cpu.triple)
    return target.create_target_machine(cpu=cpu.name, features=cpu.features, opt=opt_level,
                                        codemodel="jitdefault")


def optimize(module: llvm.ModuleRef, opt_level: int = 3) -> None:
    """Run LLVM's standard pipeline (with loop and SLP vectorization) over a module in place."""
    options = llvm.create_pipeline_tuning_options(speed_level=opt_level)
    options.loop_vectorization = opt_level >= 2
    options.slp_vectorization = opt_level >= 2
    options.loop_unrolling = opt_level >= 2
    builder = llvm.create_pass_builder(target_machine(), options)
    builder.getModulePassManager().run(module, builder)


def parse(module: ir.Module | str) -> llvm.ModuleRef:
    """Parse and verify textual LLVM IR; a verifier failure is a LoweringError with the IR."""
    _initialize()
    text = str(module)
    try:
        parsed = llvm.parse_assembly(text)
        parsed.verify()
    except RuntimeError as err:
        raise LoweringError("<module>", f"LLVM rejected the generated IR: {err}") from None
    parsed.triple, parsed.data_layout = _triple_and_layout()
    return parsed


@functools.cache
def _triple_and_layout() -> tuple[str, str]:
    # NOTE: read once: each `target_data` access makes a wrapper whose disposal is not safe to
    # repeat against the same cached target machine.
    machine = target_machine()
    return machine.triple, str(machine.target_data)


class CompiledModule:
    """Machine code for one LLVM module, loaded into this process.

    With `cached=True` the object code comes from (or goes to) the on-disk cache; `from_cache`
    says which happened. The optimized IR and the assembly are rebuilt on demand when the
    code came from the cache.
    """

    def __init__(self, module: ir.Module | str, opt_level: int = 3, cached: bool = True) -> None:
        from ember.backend.llvm import cache

        self.unoptimized_ir = str(module)
        self.opt_level = opt_level
        self._optimized: llvm.ModuleRef | None = None
        self.from_cache = False
        cpu = host_cpu()
        key = cache.cache_key(self.unoptimized_ir, cpu.name, cpu.features, opt_level)
        payload = cache.load(key) if cached and cache.enabled() else None
        with _LOCK:
            if payload is not None:
                self.engine = self._load_object(payload)
                self.from_cache = True
                return
            parsed = self._optimize()
            self.engine = llvm.create_mcjit_compiler(parsed, new_target_machine())
            self.engine.finalize_object()
        if cached and cache.enabled():
            cache.store(key, self.object_code())

    def _optimize(self) -> llvm.ModuleRef:
        parsed = parse(self.unoptimized_ir)
        if self.opt_level > 0:
            optimize(parsed, self.opt_level)
        self._optimized = parsed
        return parsed

    @staticmethod
    def _load_object(payload: bytes) -> llvm.ExecutionEngine:
        empty = parse("")
        engine = llvm.create_mcjit_compiler(empty, new_target_machine())
        engine.add_object_file(llvm.ObjectFileRef.from_data(payload))
        engine.finalize_object()
        return engine

    @property
    def llvm_ir(self) -> str:
        """The optimized LLVM IR."""
        return str(self._optimized_module())

    def _optimized_module(self) -> llvm.ModuleRef:
        if self._optimized is None:
            with _LOCK:
                self._optimize()
        assert self._optimized is not None
        return self._optimized

    def address(self, name: str) -> int:
        address = self.engine.get_function_address(name)
        if not address:
            raise LoweringError(name, "no such function in the compiled module")
        return address

    def function(self, name: str, restype: Any, argtypes: Sequence[Any]) -> Any:
        """A ctypes callable for a compiled function (ctypes releases the GIL while it runs)."""
        prototype = ctypes.CFUNCTYPE(restype, *argtypes)
        function = prototype(self.address(name))
        function._ember_module = self  # keep the machine code alive with the callable
        return function

    def asm(self) -> str:
        """The x86-64 assembly of the optimized module."""
        module = self._optimized_module()
        with _LOCK:
            return target_machine().emit_assembly(module)

    def object_code(self) -> bytes:
        module = self._optimized_module()
        with _LOCK:
            return target_machine().emit_object(module)


def compile_ir(module: ir.Module | str, opt_level: int = 3, cached: bool = True
               ) -> CompiledModule:
    """Parse, verify, optimize and JIT-compile a module for the host CPU (or load it from the
    on-disk cache)."""
    return CompiledModule(module, opt_level, cached)
