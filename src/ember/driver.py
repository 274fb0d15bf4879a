"""`ember.compile` and `ember.jit`: from a model and example inputs to a callable executable.

    exe = ember.compile(model, x)     # trace, optimize, generate code
    y = exe(x)                        # numpy in, numpy out
    exe.graph                         # the IR that runs; exe.report() shows how it was made

`opt_level` 0 runs the reference interpreter op by op on the traced graph (the naive baseline);
1 compiles every op to its own straightforward kernel, with no graph passes; 2 runs the graph
passes first; 3 (default) adds layout transforms and scheduled kernels (vectorized, parallel,
blocked matmul). Levels 1-3 run as one native call per inference over one arena.

Compiling the same model again (same optimized graph, weights, opt level, CPU and Ember source)
takes its machine code from the on-disk cache (`ember.backend.llvm.cache`) through a link keyed
by the optimized graph: no LLVM IR is generated, optimized or compiled. The graph is still
traced, optimized and lowered, so `exe.graph`, `exe.report()` and the loop IR are all there.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.errors import EmberError, UnsupportedError
from ember.frontend.tracer import TensorSpec, trace_with_info
from ember.interpreter import Interpreter
from ember.ir.graph import Graph
from ember.pipeline import (
    Instrument,
    PassManager,
    TimePasses,
    graph_bytes,
    instruments_from_env,
    parse_pipeline,
    verify_from_env,
)

TARGETS = ("cpu", "cuda")


@dataclass
class Executable:
    """A compiled graph: call it with numpy arrays shaped like the example inputs."""

    graph: Graph  # the IR that runs
    traced: Graph  # the IR as traced, before any pass
    single_output: bool = True
    opt_level: int = 0
    target: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    ledger: TimePasses = field(default_factory=TimePasses)  # per-pass time, nodes, bytes
    native: Any = None  # ember.runtime.NativeGraph at opt_level >= 1

    def __post_init__(self) -> None:
        self._interpreter = Interpreter(self.graph)

    def __call__(self, *args: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        arrays = [_as_input(a) for a in args]
        if self.native is not None:
            results = self.native(*arrays)
        else:
            results = self._interpreter.run(*arrays)  # arrays the caller owns
        return results[0] if self.single_output else results

    @property
    def arena_bytes(self) -> int:
        """Bytes of the one arena the memory plan laid out (0 when unplanned)."""
        if not any("offset" in node.attrs for node in self.graph.nodes):
            return 0
        from ember.passes.plan_memory import memory_report

        return memory_report(self.graph).arena_bytes

    def report(self) -> str:
        """What was built and how long each stage took."""
        lines = [f"executable @{self.graph.name}: target={self.target} opt_level={self.opt_level}",
                 f"  nodes: {len(self.traced.nodes)} traced, {len(self.graph.nodes)} optimized"]
        weights = sum(n.outputs[0].type.nbytes for n in self.graph.nodes if n.op == "const")
        lines.append(f"  constants: {weights} bytes")
        for stage, seconds in self.timings.items():
            lines.append(f"  {stage:<10} {seconds * 1e3:9.2f} ms")
        if self.ledger.records:
            lines += ["", self.ledger.report()]
        memory = _memory_report(self.graph)
        if memory:
            traced = graph_bytes(self.traced)
            lines += ["", memory, f"  naive op-by-op execution of the traced graph: {traced} bytes "
                      f"of intermediates (arena = {self.arena_bytes / max(traced, 1):.0%} of it)"]
        return "\n".join(lines)


def _memory_report(graph: Graph) -> str:
    """The memory plan's figures, when the graph was planned."""
    if not any("offset" in node.attrs for node in graph.nodes):
        return ""
    from ember.passes.plan_memory import memory_report

    return str(memory_report(graph))


def _env_threads() -> int | None:
    import os

    text = os.environ.get("EMBER_NUM_THREADS", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise EmberError(f"EMBER_NUM_THREADS must be a positive integer, got {text!r}")
    return int(text)


def _as_input(arg: Any) -> Any:
    """Accept anything array-like (a PyTorch tensor too) without copying numpy arrays."""
    if isinstance(arg, np.ndarray):
        return arg
    if hasattr(arg, "detach") and hasattr(arg, "numpy"):
        return arg.detach().cpu().numpy()
    return np.asarray(arg)


def compile(fn: Callable[..., Any], *example_inputs: Any, target: str = "cpu",
            opt_level: int = 3, passes: Any = None, threads: int | None = None) -> Executable:
    """Trace `fn` (nn.Module or function) on example inputs and build an executable.

    `threads` bounds the threads of parallel loops (default: EMBER_NUM_THREADS, else every
    CPU this process may use).
    """
    if target not in TARGETS:
        raise UnsupportedError(f"target {target!r} (known targets: {', '.join(TARGETS)})")
    if target == "cuda":
        raise UnsupportedError("target 'cuda' is not available yet")
    if opt_level not in (0, 1, 2, 3):
        raise EmberError(f"opt_level must be 0, 1, 2 or 3, got {opt_level!r}")
    start = time.perf_counter()
    traced, single, _ = trace_with_info(fn, *example_inputs)
    timings = {"trace": time.perf_counter() - start}
    ledger = TimePasses()
    start = time.perf_counter()
    graph = optimize(traced, opt_level, passes, [ledger])
    timings["passes"] = time.perf_counter() - start
    native = None
    if opt_level >= 1:
        native = compile_cached(graph, opt_level)
        timings.update(native.timings)
        count = threads if threads is not None else _env_threads()
        if count is not None:
            native.set_threads(count)
    return Executable(graph, traced, single, opt_level, target, timings, ledger, native)


def compile_cached(graph: Graph, opt_level: int = 3) -> Any:
    """`compile_native`, looking in the on-disk cache by the optimized graph first.

    A hit skips LLVM IR generation, optimization and code generation; a miss compiles as
    usual and links the graph's key to the object entry it made.
    """
    from ember.backend.llvm import cache
    from ember.runtime import compile_native

    if not cache.enabled():
        return compile_native(graph, opt_level)
    key = _graph_key(graph, opt_level)
    native = _native_from_cache(graph, opt_level, key)
    if native is not None:
        return native
    native = compile_native(graph, opt_level)
    module = native.native.module
    cache.store_link(key, cache.Link(module.cache_key, module.opt_level,
                                     program_layout(native.program)))
    return native


def _graph_key(graph: Graph, opt_level: int) -> str:
    from ember.backend.llvm import cache
    from ember.backend.llvm.jit import host_cpu
    from ember.ir.printer import print_graph

    cpu = host_cpu()
    return cache.graph_key(print_graph(graph, locations=False), cpu.name, cpu.features, opt_level)


def _native_from_cache(graph: Graph, opt_level: int, key: str) -> Any:
    """The native graph made from cached machine code, or None (no link, no object entry, or
    a program whose layout differs from the one the code was compiled for)."""
    from ember.backend.llvm import cache
    from ember.backend.llvm.build import NativeProgram
    from ember.backend.llvm.jit import CompiledModule
    from ember.runtime.native import NativeGraph, lower_native

    link = cache.load_link(key)
    payload = cache.load(link.object_key) if link is not None else None
    if link is None or payload is None:
        return None
    start = time.perf_counter()
    program = lower_native(graph, opt_level)
    seconds = {"lower": time.perf_counter() - start}
    if program_layout(program) != link.layout:
        return None
    start = time.perf_counter()
    module = CompiledModule.from_object(payload, functools.partial(_llvm_ir, program),
                                        link.opt_level, link.object_key)
    native = NativeGraph(graph, program, NativeProgram(program, module), seconds)
    seconds["cached"] = time.perf_counter() - start
    return native


def _llvm_ir(program: Any) -> str:
    """The LLVM IR text `build_program` compiles for a program (rebuilt only on demand)."""
    from ember.backend.llvm.build import emit_program
    from ember.backend.llvm.codegen import finalize_module

    return finalize_module(str(emit_program(program)))


def program_layout(program: Any) -> str:
    """Digest of what the machine code of a program assumes of its caller: the entry's name,
    each kernel call and its slots, the constants' types, the arena and the number of error
    codes (their messages are Python-side)."""
    import hashlib

    parts = [program.name, str(program.arena_bytes), repr(program.output_copies),
             str(len(program.errors))]
    parts += [f"{call.kernel.name}{call.slots}" for call in program.calls]
    parts += [f"{array.dtype}{array.shape}" for array in program.constants]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def optimize(graph: Graph, opt_level: int = 3, passes: Any = None,
             instruments: Sequence[Instrument] = ()) -> Graph:
    """Run the pipeline of `opt_level` (or the given `passes`: text or a list) on a graph.

    The environment switches EMBER_PRINT_AFTER, EMBER_DUMP_DIR, EMBER_CHECK_PASSES and
    EMBER_VERIFY add their instruments.
    """
    from ember.passes import default_pipeline

    pipeline = default_pipeline(opt_level) if passes is None else parse_pipeline(passes)
    manager = PassManager(pipeline, [*instruments, *instruments_from_env()], verify_from_env())
    return manager.run(graph)


def _signature(args: tuple[Any, ...]) -> tuple[Any, ...]:
    key = []
    for arg in args:
        if isinstance(arg, (np.ndarray, TensorSpec)) or hasattr(arg, "__array__"):
            array = arg if isinstance(arg, TensorSpec) else np.asarray(arg)
            key.append(("array", tuple(array.shape), str(np.dtype(array.dtype))))
        else:
            key.append(("static", arg))
    return tuple(key)


def jit(fn: Callable[..., Any] | None = None, *, opt_level: int = 3, target: str = "cpu") -> Any:
    """Decorator: trace and compile on the first call for each input signature, then reuse.

    Array arguments are traced; other arguments (ints, strings, ...) are static: each value
    gets its own compiled version.
    """
    if fn is None:
        return functools.partial(jit, opt_level=opt_level, target=target)
    cache: dict[tuple[Any, ...], Executable] = {}

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        key = _signature(args)
        exe = cache.get(key)
        arrays = [a for a, k in zip(args, key, strict=True) if k[0] == "array"]
        if exe is None:
            statics = {i: a for i, (a, k) in enumerate(zip(args, key, strict=True))
                       if k[0] == "static"}
            exe = compile(_bind_static(fn, statics, len(args)), *arrays, opt_level=opt_level,
                          target=target)
            cache[key] = exe
        return exe(*arrays)

    wrapper.cache = cache  # type: ignore[attr-defined]
    return wrapper


def _bind_static(fn: Callable[..., Any], statics: dict[int, Any], count: int) -> Callable[..., Any]:
    if not statics:
        return fn

    def bound(*arrays: Any) -> Any:
        supplied = iter(arrays)
        return fn(*(statics[i] if i in statics else next(supplied) for i in range(count)))

    bound.__name__ = getattr(fn, "__name__", "main")
    return bound
