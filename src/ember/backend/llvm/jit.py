"""From llvmlite IR to machine code for a Target, callable when the target runs here.

    compiled = compile_ir(module)                 # parse, verify, optimize (O3), MCJIT (host)
    compiled = compile_ir(module, target=Target.cpu("x86-64-v3"))   # AVX2 code
    scale = compiled.function("scale", None, [ctypes.c_void_p, ctypes.c_int64])
    compiled.llvm_ir, compiled.asm()              # what LLVM made of it, for inspection
    optimization_remarks(module)                  # what the loop vectorizer did, per function

The target machine is built for the Target's CPU name and features (`Target.host()`: the host's
own, `znver4` with AVX-512 here), so LLVM uses the vector registers the target has; every
function carries the target's preferred loop vector width (`prefer-vector-width`) and keeps
its widest vectors legal (`min-legal-vector-width`), so that the hand-written GEMM stays at
full width where auto-vectorized loops are asked to be narrower. Every compiled module keeps
its engine alive for as long as the `CompiledModule` lives.

Machine code is generated once per module: the object file LLVM emits is what the engine loads
and what the on-disk cache stores. Outlined parallel loop bodies (`<kernel>.par<n>`) are kept
out of line: inlined into their kernel's one-thread path they were optimized and compiled a
second time, which was half of the LLVM time of a model (transformer block: 3.3 -> 1.6 s).
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import llvmlite.binding as llvm
from llvmlite import ir

from ember import progress
from ember.errors import EmberError, LoweringError
from ember.target import Target

_LOCK = threading.Lock()  # LLVM's global state is not safe to build from several threads

# Called before machine code is loaded into this process: a backend registers what its code
# links to by name (the CPU's thread pool, `ember.backend.cpu.threads`), so that this shared
# layer needs to know no backend.
BEFORE_LOAD: list[Callable[[], None]] = []


def before_load(hook: Callable[[], None]) -> Callable[[], None]:
    """Register `hook` to run (it must be idempotent) before any module is loaded."""
    if hook not in BEFORE_LOAD:
        BEFORE_LOAD.append(hook)
    return hook


def _prepare_load() -> None:
    for hook in BEFORE_LOAD:
        hook()


@functools.cache
def _initialize() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    # Loop Strength Reduction is over a third of LLVM's time on a convolutional network's
    # kernels (1.1 of 3.0 s on ResNet-50) and buys no measured speed on Ember's loops, whose
    # addresses are affine in the induction variables already (benchmarks/NOTES.md).
    llvm.set_option("", "-disable-lsr")


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
    """The host as `Target.host()` sees it (name, features, triple)."""
    host = Target.host()
    return HostCPU(host.name, host.features, host.triple)


@functools.cache
def target_machine(opt_level: int = 3, target: Target | None = None) -> llvm.TargetMachine:
    """The shared target machine of a Target (default: the host) for optimization, assembly
    and object code."""
    return new_target_machine(opt_level, target)


def new_target_machine(opt_level: int = 3, target: Target | None = None
                       ) -> llvm.TargetMachine:
    """A fresh target machine. An MCJIT engine takes ownership of the one it is given, so
    every engine needs its own."""
    _initialize()
    target = target if target is not None else Target.host()
    try:
        machine = llvm.Target.from_triple(target.triple)
    except RuntimeError as err:
        raise EmberError(f"LLVM cannot generate code for {target}: {err}") from None
    return machine.create_target_machine(cpu=target.name, features=target.features,
                                         opt=opt_level, codemodel="jitdefault")


def optimize(module: llvm.ModuleRef, opt_level: int = 3, target: Target | None = None) -> None:
    """Run LLVM's standard pipeline (with loop and SLP vectorization) over a module in place."""
    options = llvm.create_pipeline_tuning_options(speed_level=opt_level)
    options.loop_vectorization = opt_level >= 2
    options.slp_vectorization = opt_level >= 2
    options.loop_unrolling = opt_level >= 2
    builder = llvm.create_pass_builder(target_machine(3, target), options)
    builder.getModulePassManager().run(module, builder)


def parse(module: ir.Module | str, target: Target | None = None) -> llvm.ModuleRef:
    """Parse and verify textual LLVM IR; a verifier failure is a LoweringError with the IR."""
    _initialize()
    text = str(module)
    try:
        parsed = llvm.parse_assembly(text)
        parsed.verify()
    except RuntimeError as err:
        raise LoweringError("<module>", f"LLVM rejected the generated IR: {err}") from None
    parsed.triple, parsed.data_layout = _triple_and_layout(target)
    return parsed


@functools.cache
def _triple_and_layout(target: Target | None = None) -> tuple[str, str]:
    # NOTE: read once: each `target_data` access makes a wrapper whose disposal is not safe to
    # repeat against the same cached target machine.
    machine = target_machine(3, target)
    return machine.triple, str(machine.target_data)


def function_attributes(target: Target) -> str:
    """String attributes every generated function carries for `target`: the loop vectorizer's
    width, and the widest vectors kept legal (hand-written 512-bit code stays 512-bit)."""
    if target.kind != "cpu":
        return ""
    return (f'"prefer-vector-width"="{target.prefer_vector_bits}" '
            f'"min-legal-vector-width"="{target.vector_bits}"')


def with_function_attributes(text: str, target: Target) -> str:
    """`text` with the target's function attributes on every function definition."""
    attributes = function_attributes(target)
    if not attributes:
        return text
    lines = text.split("\n")
    for position, line in enumerate(lines):
        if line.startswith("define "):  # llvmlite puts the body's "{" on the next line
            head = line.rstrip()
            brace = head.endswith("{")
            lines[position] = (head[:-1].rstrip() if brace else head) + " " + attributes + (
                " {" if brace else "")
    return "\n".join(lines)


class CompiledModule:
    """Machine code for one LLVM module, loaded into this process.

    With `cached=True` the object code comes from (or goes to) the on-disk cache; `from_cache`
    says which happened, and `cache_hit` how it was found: "object" (by the IR text), "graph"
    (by a graph link, before any IR was generated) or "" (compiled here). The optimized IR and
    the assembly are rebuilt on demand when the code came from the cache.
    """

    def __init__(self, module: ir.Module | str, opt_level: int = 3, cached: bool = True,
                 target: Target | None = None) -> None:
        from ember.backend.llvm import cache

        self.target = target if target is not None else Target.host()
        self.runnable = not self.target.missing_on_host()
        if self.runnable:
            with progress.reporting(False):  # (the thread pool's module: not this compile's)
                _prepare_load()  # generated parallel loops link to the thread pool by name

        self._unoptimized_ir: str | None = with_function_attributes(str(module), self.target)
        self._build_ir: Callable[[], str] | None = None
        self.opt_level = opt_level
        self._optimized: llvm.ModuleRef | None = None
        self.from_cache = False
        self.cache_hit = ""
        self.seconds: dict[str, float] = {}  # "llvm-opt", "llvm-emit": where LLVM's time went
        self.cache_key = cache.cache_key(self._unoptimized_ir, self.target.key, "", opt_level)
        payload = cache.load(self.cache_key) if cached and cache.enabled() else None
        with _LOCK:
            if payload is not None:
                self.engine = self._load_object(payload, self.target)
                self.from_cache, self.cache_hit = True, "object"
                return
            progress.stage("llvm optimize")
            optimized = self._optimize()
            progress.stage("machine code")
            start = time.perf_counter()
            payload = target_machine(3, self.target).emit_object(optimized)
            self.seconds["llvm-emit"] = time.perf_counter() - start
            self.engine = self._load_object(payload, self.target)
        if cached and cache.enabled():
            cache.store(self.cache_key, payload)

    @classmethod
    def from_object(cls, payload: bytes, build_ir: Callable[[], str], opt_level: int = 3,
                    cache_key: str = "", target: Target | None = None) -> CompiledModule:
        """Machine code that was compiled before (an on-disk cache hit found without the IR).

        `build_ir` makes the unoptimized IR text again, only if it is asked for (`llvm_ir`,
        `asm()`, `unoptimized_ir`).
        """
        compiled = cls.__new__(cls)
        compiled.target = target if target is not None else Target.host()
        compiled.runnable = not compiled.target.missing_on_host()
        if compiled.runnable:
            _prepare_load()
        compiled._unoptimized_ir = None
        compiled._build_ir = lambda: with_function_attributes(build_ir(), compiled.target)
        compiled.opt_level = opt_level
        compiled._optimized = None
        compiled.seconds = {}
        compiled.from_cache, compiled.cache_hit = True, "graph"
        compiled.cache_key = cache_key
        with _LOCK:
            compiled.engine = cls._load_object(payload, compiled.target)
        return compiled

    @property
    def unoptimized_ir(self) -> str:
        """The LLVM IR text the machine code was made from (rebuilt on first use after a cache
        hit by graph)."""
        if self._unoptimized_ir is None:
            assert self._build_ir is not None
            self._unoptimized_ir = self._build_ir()
        return self._unoptimized_ir

    def defines(self, name: str) -> bool:
        """Whether the machine code has a function or global called `name`."""
        return self.engine is not None and bool(self.engine.get_function_address(name))

    def _optimize(self) -> llvm.ModuleRef:
        start = time.perf_counter()
        parsed = parse(self.unoptimized_ir, self.target)
        if self.opt_level > 0:
            optimize(parsed, self.opt_level, self.target)
        self._optimized = parsed
        self.seconds["llvm-opt"] = time.perf_counter() - start
        return parsed

    @staticmethod
    def _load_object(payload: bytes, target: Target) -> llvm.ExecutionEngine | None:
        """The object code loaded into this process (None for code the host cannot run)."""
        if target.missing_on_host():
            return None
        empty = parse("", target)
        engine = llvm.create_mcjit_compiler(empty, new_target_machine(3, target))
        engine.add_object_file(llvm.ObjectFileRef.from_data(payload))
        engine.finalize_object()
        return engine

    @property
    def llvm_ir(self) -> str:
        """The optimized LLVM IR."""
        return str(self._optimized_module())

    def _optimized_module(self) -> llvm.ModuleRef:
        if self._optimized is None:
            _ = self.unoptimized_ir  # rebuilt (if it must be) before taking the LLVM lock
            with _LOCK:
                self._optimize()
        assert self._optimized is not None
        return self._optimized

    def address(self, name: str) -> int:
        if self.engine is None:
            missing = ", ".join(self.target.missing_on_host())
            raise EmberError(f"code for target {self.target} cannot run on this host "
                             f"({Target.host().name}): it lacks {missing}")
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
        """The assembly of the optimized module, for the module's target."""
        module = self._optimized_module()
        with _LOCK:
            return target_machine(3, self.target).emit_assembly(module)

    def object_code(self) -> bytes:
        module = self._optimized_module()
        with _LOCK:
            return target_machine(3, self.target).emit_object(module)

    def remarks(self) -> list[Remark]:
        """The loop vectorizer's remarks on this module (optimized once more to collect them)."""
        return optimization_remarks(self.unoptimized_ir, self.opt_level, self.target)


def compile_ir(module: ir.Module | str, opt_level: int = 3, cached: bool = True,
               target: Target | None = None) -> CompiledModule:
    """Parse, verify, optimize and JIT-compile a module for a target (default: the host), or
    load it from the on-disk cache."""
    return CompiledModule(module, opt_level, cached, target)


# ---------------------------------------------------------------------------------------------
# Optimization remarks


@dataclass(frozen=True)
class Remark:
    """One remark of LLVM's loop vectorizer about a loop of `function`."""

    function: str  # the LLVM function the loop ended up in
    message: str  # LLVM's text: "vectorized loop (vectorization width: 16, ...)"

    @property
    def vectorized(self) -> bool:
        """A loop that was vectorized or interleaved (a "passed" remark)."""
        return "not " not in self.message and self.message.startswith(("vectorized",
                                                                       "interleaved"))


REMARK_PASSES = "loop-vectorize"
_REMARK_OPTIONS = ("-pass-remarks", "-pass-remarks-missed", "-pass-remarks-analysis")
_REMARK_LINE = re.compile(r"^remark: ember:(\d+):\d+: (.*)$")


def optimization_remarks(module: ir.Module | str, opt_level: int = 3,
                         target: Target | None = None) -> list[Remark]:
    """Optimize a module as `compile_ir` does and return what the loop vectorizer said.

    LLVM prints remarks (passed: vectorized, width and interleave; missed and analysis: why
    not) to stderr, located by debug info, which Ember's IR has none of. So every function
    gets a line-table subprogram whose line is its position in the module: a remark at
    `ember:7:0` is about a loop of the 7th function.
    """
    _initialize()
    canonical = str(llvm.parse_assembly(str(module)))
    located, functions = _locate_functions(canonical)
    with _LOCK:
        parsed = parse(located, target)
        with _remarks_enabled(REMARK_PASSES), _captured_stderr() as captured:
            if opt_level > 0:
                optimize(parsed, opt_level, target)
    remarks = []
    for line in captured.read().splitlines():
        match = _REMARK_LINE.match(line)
        if match and 0 < int(match.group(1)) <= len(functions):
            remarks.append(Remark(functions[int(match.group(1)) - 1], match.group(2)))
    return remarks


@contextmanager
def _remarks_enabled(passes: str) -> Iterator[None]:
    """LLVM's remark switches (process-wide command-line options) on for `passes`, then off."""
    for option in _REMARK_OPTIONS:
        llvm.set_option("", f"{option}={passes}")
    try:
        yield
    finally:
        for option in _REMARK_OPTIONS:
            # NOTE: an empty pattern would leave the last one in place; this one matches no pass.
            llvm.set_option("", f"{option}=^$")


class _Captured:
    """What was written to file descriptor 2 inside `_captured_stderr`."""

    def __init__(self) -> None:
        self.text = ""

    def read(self) -> str:
        return self.text


@contextmanager
def _captured_stderr() -> Iterator[_Captured]:
    """Redirect file descriptor 2 (LLVM writes remarks there from C++) into a temporary file."""
    import sys

    captured = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")


_DEFINE = re.compile(r"^define [^@]*@(\"[^\"]+\"|[-\w.$]+)\(")
_METADATA_ID = re.compile(r"!(\d+)\b")


def _locate_functions(text: str) -> tuple[str, list[str]]:
    """Add line-table debug info to LLVM's printed IR: function k (1-based) is at line k of
    file "ember", and every instruction of it carries that location. Returns the new text and
    the function names by line."""
    lines = text.split("\n")
    next_id = max((int(m) for m in _METADATA_ID.findall(text)), default=-1) + 1
    unit, file_, type_ = next_id, next_id + 1, next_id + 2
    next_id += 3
    metadata = [f'!{unit} = distinct !DICompileUnit(language: DW_LANG_C, file: !{file_}, '
                'producer: "ember", isOptimized: true, runtimeVersion: 0, '
                'emissionKind: LineTablesOnly)',
                f'!{file_} = !DIFile(filename: "ember", directory: "")',
                f"!{type_} = !DISubroutineType(types: !{{}})"]
    functions: list[str] = []
    location = ""
    out = []
    for line in lines:
        match = _DEFINE.match(line)
        if match and line.endswith("{"):
            functions.append(match.group(1).strip('"'))
            program, location = next_id, f"!{next_id + 1}"
            next_id += 2
            line = line[:-1] + f"!dbg !{program} {{"
            metadata += [f'!{program} = distinct !DISubprogram(name: "{functions[-1]}", '
                         f"scope: !{file_}, file: !{file_}, line: {len(functions)}, "
                         f"type: !{type_}, scopeLine: {len(functions)}, "
                         f"spFlags: DISPFlagDefinition | DISPFlagOptimized, unit: !{unit})",
                         f"{location} = !DILocation(line: {len(functions)}, column: 0, "
                         f"scope: !{program})"]
        elif line == "}":
            location = ""
        elif location and _is_instruction_end(line):
            line += f", !dbg {location}"
        out.append(line)
    flags = next_id
    merged = [i for i, line in enumerate(out) if line.startswith("!llvm.module.flags = !{")]
    for index in merged:  # the module has flags already: add ours to them
        out[index] = out[index][:-1] + f", !{flags}}}"
    if not merged:
        out.append(f"!llvm.module.flags = !{{!{flags}}}")
    out += [f"!llvm.dbg.cu = !{{!{unit}}}",
            f'!{flags} = !{{i32 2, !"Debug Info Version", i32 3}}', *metadata]
    return "\n".join(out), functions


def _is_instruction_end(line: str) -> bool:
    """A line of a function body that ends an instruction (not a label, a comment, or a
    `switch` case line)."""
    if not line.startswith("  ") or line.lstrip().startswith(";"):
        return False
    if line.startswith("    "):  # a case of a multi-line `switch`
        return False
    return not line.rstrip().endswith("[")
