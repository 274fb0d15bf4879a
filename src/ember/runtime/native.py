"""A graph compiled to one native entry point, called with numpy arrays.

    native = compile_native(graph)       # lower, schedule, generate, JIT
    outputs = native(*arrays)            # tuple of new arrays

Inputs that are already C-contiguous arrays of the right dtype are passed without a copy;
outputs are fresh arrays the kernels write into directly. Each Python thread gets its own
arena, so calls from several threads at once are safe.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ember.errors import LoweringError
from ember.interpreter import check_inputs
from ember.ir.graph import Graph
from ember.lower.program import Program, Slot, check_lowerable, lower_graph
from ember.lower.schedule import parallelize_outer, unroll_short_columns, vectorize_innermost


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
        from ember.backend.llvm.threads import SET_NUM_THREADS, set_num_threads

        if count < 1:
            raise ValueError(f"threads must be at least 1, got {count}")
        if not self.native.module.defines(SET_NUM_THREADS):
            return 1
        return set_num_threads(self.native.module, count)

    def _arena(self) -> np.ndarray:
        arena = getattr(self._local, "arena", None)
        if arena is None:
            raw = np.zeros(self.program.arena_bytes + 128, dtype=np.uint8)
            start = (-raw.ctypes.data) % 64  # offsets are planned for a 64-byte aligned base
            arena = self._local.arena = raw[start : start + self.program.arena_bytes + 64]
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
        inputs = [np.ascontiguousarray(a) for a in check_inputs(self.graph, args)]
        outputs = self._outputs()
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
    """The default schedule of every kernel: unroll short column loops of reductions (so the
    row loop vectorizes), vectorize innermost loops, run big outer loops on the thread pool."""
    calls = [replace(call, kernel=parallelize_outer(vectorize_innermost(
        unroll_short_columns(call.kernel)))) for call in program.calls]
    return replace(program, calls=calls)


def lower_native(graph: Graph, opt_level: int = 3) -> Program:
    """The program `compile_native` generates code for: lowered, and scheduled at level 3."""
    program = lower_graph(graph, {"opt_level": opt_level})
    return schedule_program(program) if opt_level >= 3 else program


def compile_native(graph: Graph, opt_level: int = 3) -> NativeGraph:
    """Lower a graph to loop IR, schedule it, and compile it to machine code."""
    from ember.backend.llvm.build import build_program

    missing = check_lowerable(graph)
    if missing:
        raise LoweringError(f"@{graph.name}", f"no CPU lowering for ops: {', '.join(missing)}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    program = lower_native(graph, opt_level)
    seconds["lower"] = time.perf_counter() - start
    start = time.perf_counter()
    native = build_program(program)
    seconds["codegen"] = time.perf_counter() - start
    return NativeGraph(graph, program, native, seconds)
