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
and what the on-disk cache stores. A module may come in parts (`Part`: a model's kernels in
groups, its entry last, `ember.backend.cpu.build`): each part is parsed, optimized and compiled
on its own thread, in its own LLVM context with its own target machine, while the caller goes on
generating the next part; the objects load into one engine, which links them by name. Each part
is cached under its own text, so a model that shares parts with another compiles only the rest.

Outlined parallel loop bodies (`<kernel>.par<n>`) are kept out of line: inlined into their
kernel's one-thread path they were optimized and compiled a second time, which was half of the
LLVM time of a model (transformer block: 3.3 -> 1.6 s).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import llvmlite.binding as llvm
from llvmlite import ir
from llvmlite.binding import ffi

from ember import config, progress
from ember.errors import EmberError, LoweringError
from ember.target import Target

# Held by a thread through the whole of a compile (the parts' threads do not take it): two
# compiles, and the remark switches of `optimization_remarks`, never interleave. Reentrant: code
# generation may compile a helper module (the thread pool's) while a model's parts compile.
_LOCK = threading.RLock()

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


def optimize(module: llvm.ModuleRef, opt_level: int = 3, target: Target | None = None,
             machine: llvm.TargetMachine | None = None) -> None:
    """Run LLVM's standard pipeline (with loop and SLP vectorization) over a module in place,
    for `machine` (default: the target's shared one; a thread of its own needs its own)."""
    options = llvm.create_pipeline_tuning_options(speed_level=opt_level)
    options.loop_vectorization = opt_level >= 2
    options.slp_vectorization = opt_level >= 2
    options.loop_unrolling = opt_level >= 2
    builder = llvm.create_pass_builder(machine or target_machine(3, target), options)
    run = _unlocked if machine is not None else _locked
    run("LLVMPY_RunNewModulePassManager")(builder.getModulePassManager(), module, builder)


def _unlocked(name: str) -> Callable[..., Any]:
    """llvmlite's C function `name`, called without llvmlite's process-wide lock, which it takes
    around every call into LLVM. Only for the long calls on objects that one thread owns (a
    module in its own context, its own target machine): LLVM runs those on several threads at
    once, and ctypes lets go of the GIL while they run. Where llvmlite's wrapper is not the one
    known here, the locked call is returned (one part at a time, still right)."""
    wrapper = getattr(ffi.lib, name)
    return getattr(wrapper, "_cfn", wrapper)


def _locked(name: str) -> Callable[..., Any]:
    """llvmlite's C function `name` as llvmlite calls it, under its lock."""
    return getattr(ffi.lib, name)


def parse(module: ir.Module | str, target: Target | None = None,
          context: llvm.ContextRef | None = None) -> llvm.ModuleRef:
    """Parse and verify textual LLVM IR (into `context`, default: LLVM's global one); a parse
    or verifier failure is a LoweringError with LLVM's message."""
    _initialize()
    call = _unlocked if context is not None else _locked  # a private context: this thread's
    context = context if context is not None else llvm.get_global_context()
    with ffi.OutputString() as message:
        pointer = call("LLVMPY_ParseAssembly")(
            context, ctypes.c_char_p(str(module).encode()), message)
        parsed = (llvm.ModuleRef(pointer, context) if call is _locked
                  else _ContextModule(pointer, context))
        if message:
            parsed.close()
            raise LoweringError("<module>", f"LLVM rejected the generated IR: {message}")
    with ffi.OutputString() as message:
        if call("LLVMPY_VerifyModule")(parsed, message):
            raise LoweringError("<module>", f"LLVM rejected the generated IR: {message}")
    parsed.triple, parsed.data_layout = _triple_and_layout(target)
    return parsed


class _ContextModule(llvm.ModuleRef):
    """A module that owns the LLVM context it was parsed into: disposing of it disposes of the
    module, then of the context. (Left to its own wrapper, a context collected in the same
    garbage cycle as its module may be disposed of first, and the module's disposal then
    touches freed memory.)"""

    def __init__(self, pointer: Any, context: llvm.ContextRef) -> None:
        super().__init__(pointer, context)
        self._context_pointer = context._ptr  # (the wrapper forgets it when collected first)
        context._owned = True  # its wrapper no longer disposes of it: this module does

    def _dispose(self) -> None:
        super()._dispose()
        ffi.lib.LLVMPY_ContextDispose(self._context_pointer)


def emit_object(machine: llvm.TargetMachine, module: llvm.ModuleRef) -> bytes:
    """The object code of an optimized module (`machine.emit_object`, without llvmlite's lock:
    the machine and the module must be the calling thread's own)."""
    with ffi.OutputString() as message:
        buffer = _unlocked("LLVMPY_TargetMachineEmitToMemory")(machine, module, 1, message)
        if not buffer:
            raise LoweringError("<module>", f"LLVM could not generate code: {message}")
    try:
        return ctypes.string_at(ffi.lib.LLVMPY_GetBufferStart(buffer),
                                ffi.lib.LLVMPY_GetBufferSize(buffer))
    finally:
        ffi.lib.LLVMPY_DisposeMemoryBuffer(buffer)


@dataclass(frozen=True)
class Part:
    """One part of a module compiled in parts: LLVM IR text, and the names the other parts
    call (`exports`: every other definition is made internal after optimization, so that the
    helpers each part defines for itself do not collide in the engine). `exports=None`: a
    whole module, kept as it is."""

    text: str
    exports: tuple[str, ...] | None = None


def compile_threads() -> int:
    """Threads that compile a module's parts at once: EMBER_COMPILE_THREADS, or every CPU this
    process may use (at most 8)."""
    chosen = config.compile_threads()
    if chosen is not None:
        return chosen
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(8, available))


@dataclass
class _Compiled:
    """What `_compile_part` made of one part."""

    payload: bytes
    module: llvm.ModuleRef  # optimized, in the part's own context
    seconds: dict[str, float]


def _compile_part(part: Part, opt_level: int, target: Target, emit: bool = True,
                  on_optimized: Callable[[], None] | None = None) -> _Compiled:
    """Parse, verify, optimize and (with `emit`) compile one part, on the calling thread, with
    an LLVM context and a target machine of its own."""
    context = llvm.create_context()
    start = time.perf_counter()
    module = parse(part.text, target, context)
    machine = new_target_machine(3, target)
    if opt_level > 0:
        optimize(module, opt_level, target, machine)
    if part.exports is not None:
        _internalize(module, set(part.exports))
    optimized = time.perf_counter()
    if on_optimized is not None:
        on_optimized()
    payload = emit_object(machine, module) if emit else b""
    return _Compiled(payload, module, {"llvm-opt": optimized - start,
                                       "llvm-emit": time.perf_counter() - optimized})


def _internalize(module: llvm.ModuleRef, exports: set[str]) -> None:
    """Give every definition of `module` but `exports` internal linkage."""
    for value in [*module.functions, *module.global_variables]:
        if not value.is_declaration and value.name not in exports:
            value.linkage = llvm.Linkage.internal


_BUNDLE = b"EMBER-PARTS"


def bundle(payloads: Sequence[bytes]) -> bytes:
    """One cache payload for the objects of a module's parts (a single object stays as it is)."""
    if len(payloads) == 1:
        return payloads[0]
    sizes = ",".join(str(len(p)) for p in payloads).encode()
    return b" ".join([_BUNDLE, str(len(payloads)).encode(), sizes]) + b"\n" + b"".join(payloads)


def unbundle(payload: bytes) -> list[bytes]:
    """The objects of a payload `bundle` made."""
    if not payload.startswith(_BUNDLE + b" "):
        return [payload]
    header, _, body = payload.partition(b"\n")
    sizes = [int(size) for size in header.split()[2].split(b",")]
    offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    if offsets[-1] != len(body):
        raise EmberError("a cached object bundle is truncated")
    return [body[offsets[i]:offsets[i + 1]] for i in range(len(sizes))]


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

    `module` is an llvmlite module, IR text, or the module's parts (`Part`s, in any iterable:
    a generator is consumed while the parts before compile on other threads). With
    `cached=True` the object code comes from (or goes to) the on-disk cache, part by part;
    `from_cache` says whether every part came from it, and `cache_hit` how the code was found:
    "object" (by the IR text), "graph" (by a graph link, before any IR was generated) or ""
    (compiled here). The optimized IR and the assembly are rebuilt on demand when the code came
    from the cache.
    """

    def __init__(self, module: ir.Module | str | Iterable[Part], opt_level: int = 3,
                 cached: bool = True, target: Target | None = None) -> None:
        from ember.backend.llvm import cache

        self.target = target if target is not None else Target.host()
        self.runnable = not self.target.missing_on_host()
        if self.runnable:
            with progress.reporting(False):  # (the thread pool's module: not this compile's)
                _prepare_load()  # generated parallel loops link to the thread pool by name
        if isinstance(module, (ir.Module, str)):
            module = [Part(str(module))]
        self.opt_level = opt_level
        self._build_ir: Callable[[], list[Part]] | None = None
        self._parts: list[Part] | None = []
        self._optimized: list[llvm.ModuleRef] | None = None
        self.seconds: dict[str, float] = {}  # "llvm-opt", "llvm-emit": LLVM's time, all parts
        caching = cached and cache.enabled()
        _triple_and_layout(self.target)  # read once here, not first by racing part threads
        keys: list[str] = []
        found: dict[int, bytes] = {}
        pending: dict[int, concurrent.futures.Future[_Compiled]] = {}
        with _LOCK, concurrent.futures.ThreadPoolExecutor(
                compile_threads(), thread_name_prefix="ember-llvm") as pool:
            held: int | None = None  # the last part to compile: submitted once another comes
            for index, part in enumerate(module):
                part = self._attributed(part)
                self._parts.append(part)
                keys.append(cache.cache_key(part.text, self.target.key, "", opt_level))
                payload = cache.load(keys[-1]) if caching else None
                if payload is not None:
                    found[index] = payload
                    continue
                if held is not None:
                    pending[held] = pool.submit(_compile_part, self._parts[held], opt_level,
                                                self.target)
                held = index
            compiled: dict[int, _Compiled] = {}
            if held is not None and not pending:  # one part to compile: here, stage by stage
                progress.stage("llvm optimize")
                compiled[held] = _compile_part(self._parts[held], opt_level, self.target,
                                               on_optimized=lambda: progress.stage(
                                                   "machine code"))
            elif held is not None:
                pending[held] = pool.submit(_compile_part, self._parts[held], opt_level,
                                            self.target)
                progress.stage("machine code", total=len(pending), unit="parts")
                for future in concurrent.futures.as_completed(pending.values()):
                    future.result()  # a failure surfaces here, in the caller's thread
                    progress.advance()
                compiled.update((index, future.result()) for index, future in pending.items())
            for index, made in compiled.items():
                for name, seconds in made.seconds.items():
                    self.seconds[name] = self.seconds.get(name, 0.0) + seconds
                if caching:
                    cache.store(keys[index], made.payload)
            payloads = [found[i] if i in found else compiled[i].payload
                        for i in range(len(self._parts))]
            if len(compiled) == len(self._parts):
                self._optimized = [compiled[i].module for i in range(len(self._parts))]
            self.engine = self._load_objects(payloads, self.target)
        self.from_cache = not compiled
        self.cache_hit = "object" if self.from_cache else ""
        self.cache_key = keys[0] if len(keys) == 1 else cache.cache_key(
            " ".join(keys), self.target.key, "parts", opt_level)
        if caching and len(keys) > 1:  # the whole, for a graph link to name
            cache.store(self.cache_key, bundle(payloads))

    @classmethod
    def from_object(cls, payload: bytes, build_ir: Callable[[], list[Part]],
                    opt_level: int = 3, cache_key: str = "", target: Target | None = None
                    ) -> CompiledModule:
        """Machine code that was compiled before (an on-disk cache hit found without the IR):
        one object, or the `bundle` of a module's parts.

        `build_ir` makes the unoptimized parts again, only if they are asked for (`llvm_ir`,
        `asm()`, `unoptimized_ir`).
        """
        compiled = cls.__new__(cls)
        compiled.target = target if target is not None else Target.host()
        compiled.runnable = not compiled.target.missing_on_host()
        if compiled.runnable:
            _prepare_load()
        compiled._parts = None
        compiled._build_ir = build_ir
        compiled.opt_level = opt_level
        compiled._optimized = None
        compiled.seconds = {}
        compiled.from_cache, compiled.cache_hit = True, "graph"
        compiled.cache_key = cache_key
        with _LOCK:
            compiled.engine = cls._load_objects(unbundle(payload), compiled.target)
        return compiled

    @property
    def parts(self) -> list[Part]:
        """The parts the machine code was made from, with the target's function attributes
        (rebuilt on first use after a cache hit by graph)."""
        if self._parts is None:
            assert self._build_ir is not None
            self._parts = [self._attributed(part) for part in self._build_ir()]
        return self._parts

    def _attributed(self, part: Part) -> Part:
        """`part` with the target's function attributes on its definitions."""
        return Part(with_function_attributes(part.text, self.target), part.exports)

    @property
    def unoptimized_ir(self) -> str:
        """The LLVM IR text the machine code was made from (its parts one after another)."""
        return _joined(part.text for part in self.parts)

    def defines(self, name: str) -> bool:
        """Whether the machine code has a function or global called `name`."""
        return self.engine is not None and bool(self.engine.get_function_address(name))

    @staticmethod
    def _load_objects(payloads: Sequence[bytes], target: Target
                      ) -> llvm.ExecutionEngine | None:
        """The objects loaded into this process, linked to each other by name (None for code
        the host cannot run)."""
        if target.missing_on_host():
            return None
        empty = parse("", target)
        engine = llvm.create_mcjit_compiler(empty, new_target_machine(3, target))
        for payload in payloads:
            engine.add_object_file(llvm.ObjectFileRef.from_data(payload))
        engine.finalize_object()
        return engine

    @property
    def llvm_ir(self) -> str:
        """The optimized LLVM IR (its parts one after another)."""
        return _joined(str(module) for module in self._optimized_modules())

    def _optimized_modules(self) -> list[llvm.ModuleRef]:
        if self._optimized is None:
            parts = self.parts  # rebuilt (if it must be) before taking the LLVM lock
            with _LOCK:
                self._optimized = [_compile_part(part, self.opt_level, self.target,
                                                 emit=False).module for part in parts]
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
        """The assembly of the optimized module (its parts one after another)."""
        modules = self._optimized_modules()
        with _LOCK:
            machine = target_machine(3, self.target)
            return _joined(machine.emit_assembly(module) for module in modules)

    def object_code(self) -> bytes:
        """The object code (one object, or the `bundle` of the parts')."""
        modules = self._optimized_modules()
        with _LOCK:
            machine = target_machine(3, self.target)
            return bundle([machine.emit_object(module) for module in modules])

    def remarks(self) -> list[Remark]:
        """The loop vectorizer's remarks on this module (optimized once more to collect them)."""
        return [remark for part in self.parts
                for remark in optimization_remarks(part.text, self.opt_level, self.target)]


def _joined(texts: Iterable[str]) -> str:
    """Texts of a module's parts as one listing, each part after a comment line."""
    texts = list(texts)
    if len(texts) == 1:
        return texts[0]
    return "\n".join(f"; ---- part {i} of {len(texts)} ----\n{t}" for i, t in enumerate(texts))


def compile_ir(module: ir.Module | str | Iterable[Part], opt_level: int = 3,
               cached: bool = True, target: Target | None = None) -> CompiledModule:
    """Parse, verify, optimize and JIT-compile a module (or its parts) for a target (default:
    the host), or load it from the on-disk cache."""
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
