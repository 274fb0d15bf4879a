"""A graph compiled to one native entry point, called with numpy arrays.

    native = compile_native(graph)       # lower, schedule, generate, JIT
    outputs = native(*arrays)            # tuple of new arrays

Inputs that are already C-contiguous arrays of the right dtype are passed without a copy;
outputs are fresh arrays the kernels write into directly. Each Python thread gets its own
arena, so calls from several threads at once are safe.
"""

from __future__ import annotations

import collections
import functools
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.errors import LoweringError
from ember.interpreter import check_inputs
from ember.ir.graph import Graph
from ember.lower.aligned import aligned_empty
from ember.lower.program import Program, Slot, check_lowerable, lower_graph
from ember.target import Target

if TYPE_CHECKING:
    from ember.backend.llvm.jit import Part


class NativeGraph:
    """A callable compiled graph; `program` is its loop IR, `native.module` its machine code."""

    def __init__(self, graph: Graph, program: Program, native: Any, seconds: dict[str, float]
                 ) -> None:
        self.graph = graph
        self.program = program
        self.native = native
        self.timings = seconds
        self._local = threading.local()
        self._output_types = [v.type for v in graph.outputs]

    def set_threads(self, count: int) -> int:
        """Threads the parallel loops of this graph may use; returns the count in effect (1
        when the graph has no parallel loop)."""
        from ember.backend.cpu.threads import SET_NUM_THREADS, set_num_threads

        if count < 1:
            raise ValueError(f"threads must be at least 1, got {count}")
        if not self.native.module.runnable or not self.native.module.defines(SET_NUM_THREADS):
            return 1
        return set_num_threads(self.native.module, count)

    def _arena(self) -> np.ndarray:
        arena = getattr(self._local, "arena", None)
        if arena is None:
            # offsets are planned for an aligned base; 64 bytes past the end as before
            arena = self._local.arena = aligned_empty(self.program.arena_bytes + 64, np.uint8,
                                                      zeroed=True)
        return arena

    def _outputs(self) -> list[np.ndarray]:
        """Output arrays for this call: last call's arrays when the caller has dropped them
        (nothing else refers to them), else fresh ones. A fresh large array costs page faults
        on every call (malloc hands big blocks back to the system), reuse costs nothing."""
        cached = getattr(self._local, "outputs", None)
        if cached is None:
            cached = self._local.outputs = [None] * len(self._output_types)
        outputs = []
        for index, type_ in enumerate(self._output_types):
            array = cached[index]
            # NOTE: 3 references = the cache list, `array`, and getrefcount's argument.
            if array is None or sys.getrefcount(array) > 3:
                array = cached[index] = np.empty(type_.shape, dtype=type_.dtype.numpy)
            outputs.append(array)
        return outputs

    def __call__(self, *args: Any) -> tuple[np.ndarray, ...]:
        return self.run_into(args, ())

    def run_into(self, args: Sequence[Any], into: Sequence[np.ndarray | None]
                 ) -> tuple[np.ndarray, ...]:
        """Run with output k written into `into[k]` where given (a C-contiguous array of the
        output's type, which may be one of the inputs when the caller has checked that the
        kernels allow it: `ember.train`'s in-place updates); fresh arrays for the rest."""
        inputs = [np.ascontiguousarray(a) for a in check_inputs(self.graph, args)]
        outputs = self._outputs()
        for index, array in enumerate(into):
            if array is not None:
                outputs[index] = array
        arena = self._arena()
        self.native.run(inputs, outputs, arena)
        for index, slot in self.program.output_copies:
            outputs[index][...] = self._read(slot, inputs, outputs, arena, index)
        return tuple(outputs)

    def profile(self, *args: Any, runs: int = 20) -> Any:
        """Median time of every kernel over `runs` calls with these inputs (an
        `ember.runtime.profile.Profile`; print it for a table, slowest first)."""
        from ember.runtime.profile import profile_program

        return profile_program(self.program, check_inputs(self.graph, args), self._arena(), runs)

    def _read(self, slot: Slot, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
              arena: np.ndarray, index: int) -> np.ndarray:
        """The value in `slot`, for outputs that are not computed in place."""
        if slot.kind == "input":
            return inputs[slot.index]
        if slot.kind == "const":
            return self.program.constants[slot.index]
        if slot.kind == "output":
            return outputs[slot.index]
        type_ = self._output_types[index]
        raw = arena[slot.index : slot.index + type_.nbytes]
        return raw.view(type_.dtype.numpy).reshape(type_.shape)


def schedule_program(program: Program) -> Program:
    """The default schedule of the program's target (`Backend.schedule`)."""
    from ember.backend import for_target

    return for_target(program.target).schedule(program)


def lower_native(graph: Graph, opt_level: int = 3, target: Target | None = None) -> Program:
    """The program `compile_native` generates code for: lowered for the target (default: the
    host), and scheduled at level 3."""
    program = lower_graph(graph, {"opt_level": opt_level}, target)
    return schedule_program(program) if opt_level >= 3 else program


def compile_native(graph: Graph, opt_level: int = 3, target: Target | None = None
                   ) -> NativeGraph:
    """Lower a graph to loop IR, schedule it, and compile it to machine code for the target
    (default: the host)."""
    from ember.backend import for_target

    target = target if target is not None else Target.host()
    backend = for_target(target)
    missing = check_lowerable(graph)
    if missing:
        raise LoweringError(f"@{graph.name}", f"no lowering for ops: {', '.join(missing)}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    program = lower_native(graph, opt_level, target)
    seconds["lower"] = time.perf_counter() - start
    start = time.perf_counter()
    native = backend.build(program)
    seconds["codegen"] = time.perf_counter() - start
    return NativeGraph(graph, program, native, seconds)


def compile_cached(graph: Graph, opt_level: int = 3, target: Target | None = None
                   ) -> NativeGraph:
    """`compile_native`, looking in the on-disk cache by the optimized graph first: the one
    route of `ember.compile`, the CLI and the benchmarks.

    A hit skips LLVM IR generation, optimization and code generation; a miss compiles as
    usual and links the graph's key (graph text, target, opt level, Ember's source) to the
    object entry it made.
    """
    from ember.backend.llvm import cache

    target = target if target is not None else Target.host()
    if not cache.enabled() or target.kind != "cpu":
        return compile_native(graph, opt_level, target)
    key = graph_key(graph, opt_level, target)
    native = _native_from_cache(graph, opt_level, target, key)
    if native is not None:
        return native
    native = compile_native(graph, opt_level, target)
    module = native.native.module
    cache.store_link(key, cache.Link(module.cache_key, module.opt_level,
                                     program_layout(native.program)))
    _remember(key, native.program)
    return native


# Programs lowered in this process, by graph key (most recent last): a second compile of the
# same graph (another thread count aside) reads its machine code from the cache and its
# program from here instead of lowering again, which for a CNN is mostly packing the weights
# (ResNet-50: 0.3 of 0.4 s). Programs are not changed after scheduling, so executables may
# share one. At most PROGRAM_MEMO programs, of at most PROGRAM_MEMO_BYTES constants in all.
PROGRAM_MEMO = 16
PROGRAM_MEMO_BYTES = 2**31
_PROGRAMS: collections.OrderedDict[str, Program] = collections.OrderedDict()
_PROGRAMS_LOCK = threading.Lock()


def _remember(key: str, program: Program) -> None:
    with _PROGRAMS_LOCK:
        _PROGRAMS[key] = program
        _PROGRAMS.move_to_end(key)
        while len(_PROGRAMS) > PROGRAM_MEMO or sum(
                sum(c.nbytes for c in p.constants) for p in _PROGRAMS.values()
        ) > PROGRAM_MEMO_BYTES:
            if len(_PROGRAMS) == 1:
                break
            _PROGRAMS.popitem(last=False)


def _remembered(key: str) -> Program | None:
    with _PROGRAMS_LOCK:
        program = _PROGRAMS.get(key)
        if program is not None:
            _PROGRAMS.move_to_end(key)
        return program


def graph_key(graph: Graph, opt_level: int, target: Target) -> str:
    """The cache key of a graph link: everything the machine code made from it depends on."""
    from ember.backend.llvm import cache
    from ember.ir.printer import print_graph

    return cache.graph_key(print_graph(graph, locations=False), target.key, "", opt_level)


def _native_from_cache(graph: Graph, opt_level: int, target: Target, key: str
                       ) -> NativeGraph | None:
    """The native graph made from cached machine code, or None (no link, no object entry, or
    a program whose layout differs from the one the code was compiled for)."""
    from ember.backend.cpu.build import NativeProgram
    from ember.backend.llvm import cache
    from ember.backend.llvm.jit import CompiledModule

    link = cache.load_link(key)
    payload = cache.load(link.object_key) if link is not None else None
    if link is None or payload is None:
        return None
    start = time.perf_counter()
    program = _remembered(key) or lower_native(graph, opt_level, target)
    if program_layout(program) != link.layout:
        return None
    _remember(key, program)
    seconds = {"lower": time.perf_counter() - start}
    start = time.perf_counter()
    module = CompiledModule.from_object(payload, functools.partial(_llvm_ir, program),
                                        link.opt_level, link.object_key, target)
    native = NativeGraph(graph, program, NativeProgram(program, module), seconds)
    seconds["cached"] = time.perf_counter() - start
    return native


def _llvm_ir(program: Program) -> list[Part]:
    """The LLVM IR parts `build_program` compiles for a program (rebuilt only on demand)."""
    from ember.backend.cpu.build import emit_parts

    return list(emit_parts(program))


def program_layout(program: Program) -> str:
    """Digest of what the machine code of a program assumes of its caller: the entry's name,
    each kernel call and its slots, the constants' types, the arena and the number of error
    codes (their messages are Python-side)."""
    import hashlib

    parts = [program.name, str(program.arena_bytes), repr(program.output_copies),
             str(len(program.errors))]
    parts += [f"{call.kernel.name}{call.slots}" for call in program.calls]
    parts += [f"{array.dtype}{array.shape}" for array in program.constants]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
