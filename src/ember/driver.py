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

import contextlib
import functools
import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember import progress as progress_report
from ember.errors import EmberError
from ember.frontend.tracer import TensorSpec, trace_with_info
from ember.interpreter import Interpreter
from ember.ir.graph import Graph
from ember.ir.printer import print_graph
from ember.pipeline import (
    Instrument,
    Pass,
    PassManager,
    TimePasses,
    graph_bytes,
    instruments_from_env,
    parse_pipeline,
    verify_from_env,
)
from ember.target import Target


class Stages(Mapping[str, str]):
    """The text of every stage of one compile, produced on first use: `traced`, `optimized`,
    `loops`, and the backend's (`llvm`, `asm` on the CPU; `ptx` on CUDA)."""

    def __init__(self, exe: Executable) -> None:
        self._exe = exe
        self._texts: dict[str, str] = {}

    def _names(self) -> list[str]:
        names = ["traced", "optimized"]
        if self._exe.native is not None:
            from ember.backend import for_target

            names += ["loops", *for_target(self._exe.target).stages]
        return names

    def __getitem__(self, name: str) -> str:
        if name not in self._texts:
            if name not in self._names():
                available = ", ".join(self._names())
                level = (" (opt_level 0 runs the reference interpreter: no code is generated)"
                         if self._exe.native is None else "")
                raise KeyError(f"no stage {name!r}{level}; stages: {available}")
            self._texts[name] = self._make(name)
        return self._texts[name]

    def _make(self, name: str) -> str:
        exe = self._exe
        if name == "traced":
            return print_graph(exe.traced)
        if name == "optimized":
            return print_graph(exe.graph)
        if name == "loops":
            return str(exe.native.program)
        return exe.native.native.stage(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


@dataclass
class Executable:
    """A compiled graph: call it with numpy arrays shaped like the example inputs."""

    graph: Graph  # the IR that runs
    traced: Graph  # the IR as traced, before any pass
    single_output: bool = True
    opt_level: int = 0
    target: Target = field(default_factory=Target.host)
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    ledger: TimePasses = field(default_factory=TimePasses)  # per-pass time, nodes, bytes
    native: Any = None  # ember.runtime.NativeGraph at opt_level >= 1

    def __post_init__(self) -> None:
        self._interpreter = Interpreter(self.graph)
        self.stages = Stages(self)

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
        lines = [f"executable @{self.graph.name}: target={self.target.describe()} "
                 f"opt_level={self.opt_level}",
                 f"  nodes: {len(self.traced.nodes)} traced, {len(self.graph.nodes)} optimized"]
        weights = sum(n.outputs[0].type.nbytes for n in self.graph.nodes if n.op == "const")
        lines.append(f"  constants: {weights} bytes")
        for stage, seconds in self.timings.items():
            lines.append(f"  {stage:<10} {seconds * 1e3:9.2f} ms")
        if self.ledger.records:
            lines += ["", self.ledger.report()]
        built = getattr(self.native, "native", None)
        if callable(getattr(built, "report", None)):  # a GPU build: launches, ptxas's counts
            lines += ["", built.report()]
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


def _as_input(arg: Any) -> Any:
    """Accept anything array-like (a PyTorch tensor too) without copying numpy arrays."""
    if isinstance(arg, np.ndarray):
        return arg
    if hasattr(arg, "detach") and hasattr(arg, "numpy"):
        return arg.detach().cpu().numpy()
    return np.asarray(arg)


def compile(fn: Callable[..., Any], *example_inputs: Any, target: str | Target = "cpu",
            opt_level: int = 3, passes: Any = None, threads: int | None = None,
            progress: bool | None = None) -> Executable:
    """Trace `fn` (nn.Module or function) on example inputs and build an executable.

    `target`: "cpu" (the host), "cuda", "cpu:NAME" or an `ember.Target`; every stage reads
    it. `threads` (default: EMBER_NUM_THREADS, else the target's cores: every CPU this process
    may use for the host) is the number of threads the code is partitioned for and runs on:
    it replaces the target's `cores`, so `exe.native.set_threads` can lower it later but not
    raise it. `progress`: a progress bar on stderr for a compile that takes over a second
    (`ember.progress`): None (default) when stderr is a terminal, True always, False never.
    """
    target, count = resolve_target(target, threads, opt_level)
    with progress_report.reporting(progress), without_cyclic_gc():
        progress_report.stage("trace")
        start = time.perf_counter()
        traced, single, _ = trace_with_info(fn, *example_inputs)
        trace_seconds = time.perf_counter() - start
        exe = compile_graph(traced, target=target, opt_level=opt_level, passes=passes,
                            threads=count)
    exe.single_output = single
    exe.timings = {"trace": trace_seconds, **exe.timings}
    return exe


def resolve_target(target: str | Target, threads: int | None, opt_level: int
                   ) -> tuple[Target, int | None]:
    """The Target a compile builds for, with `threads` (or EMBER_NUM_THREADS) as its cores,
    and the thread count; errors for a backend that cannot build or a bad level, before any
    work is done."""
    from ember import config
    from ember.backend import for_target

    config.warn_unknown()
    target = Target.parse(target)
    count = threads if threads is not None else config.num_threads()
    if count is not None and count < 1:
        raise ValueError(f"threads must be at least 1, got {count}")
    if count is not None and target.kind == "cpu":
        # Code is partitioned for the threads it will run on: at one thread a GEMM packs B
        # once (not once per row block) and no loop pays for the thread pool.
        target = target.with_(cores=count)
    for_target(target).check()  # before any work: a backend that cannot build says so
    if opt_level not in (0, 1, 2, 3):
        raise EmberError(f"opt_level must be 0, 1, 2 or 3, got {opt_level!r}")
    return target, count


@contextlib.contextmanager
def without_cyclic_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused inside the block (as it was, after it).

    A compile allocates millions of short-lived objects, each full collection walks every live
    object of the process, and a model's IR is freed by reference counting
    (`codegen.module_text`): with PyTorch's ResNet-50, DenseNet-121 and VGG-16 loaded (190,000
    objects), DenseNet-121's cold compile took 5.2 s with the collector on, 4.0 s paused.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def compile_graph(traced: Graph, *, target: Target, opt_level: int = 3, passes: Any = None,
                  threads: int | None = None) -> Executable:
    """Optimize a graph and build its executable for `target` (as `resolve_target` made it):
    the part of `compile` after tracing, which `ember.grad` and `ember.train_step` share."""
    with without_cyclic_gc():
        return _compile_graph(traced, target=target, opt_level=opt_level, passes=passes,
                              threads=threads)


def _compile_graph(traced: Graph, *, target: Target, opt_level: int, passes: Any,
                   threads: int | None) -> Executable:
    ledger = TimePasses()
    start = time.perf_counter()
    graph = optimize(traced, opt_level, passes, [ledger], target)
    timings = {"passes": time.perf_counter() - start}
    native = None
    if opt_level >= 1:
        from ember.runtime import compile_cached

        progress_report.stage("lowering")
        native = compile_cached(graph, opt_level, target)
        timings.update(native.timings)
        if threads is not None and target.kind == "cpu":  # a GPU's threads are its grid
            native.set_threads(threads)
    single = len(graph.outputs) == 1
    return Executable(graph, traced, single, opt_level, target, timings, ledger, native)


def optimize(graph: Graph, opt_level: int = 3, passes: Any = None,
             instruments: Sequence[Instrument] = (), target: Target | None = None) -> Graph:
    """Run the pipeline of `opt_level` (or the given `passes`: text or a list) on a graph.

    The environment switches EMBER_PRINT_AFTER, EMBER_DUMP_DIR, EMBER_CHECK_PASSES and
    EMBER_VERIFY add their instruments.
    """
    from ember.passes import default_pipeline

    pipeline = default_pipeline(opt_level) if passes is None else parse_pipeline(passes)
    progress_report.stage("passes", total=len(pipeline))
    manager = PassManager(pipeline, [*instruments, *instruments_from_env(), _PassProgress()],
                          verify_from_env(), target)
    return manager.run(graph)


class _PassProgress(Instrument):
    """Counts each pass done in the open progress report."""

    def after_pass(self, index: int, pass_: Pass, before: Graph, after: Graph,
                   seconds: float) -> None:
        progress_report.advance(detail=pass_.name)


def _signature(args: tuple[Any, ...]) -> tuple[Any, ...]:
    key = []
    for arg in args:
        if isinstance(arg, (np.ndarray, TensorSpec)) or hasattr(arg, "__array__"):
            array = arg if isinstance(arg, TensorSpec) else np.asarray(arg)
            key.append(("array", tuple(array.shape), str(np.dtype(array.dtype))))
        else:
            key.append(("static", arg))
    return tuple(key)


def jit(fn: Callable[..., Any] | None = None, *, opt_level: int = 3,
        target: str | Target = "cpu") -> Any:
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
