"""Program -> one LLVM module with one entry point, compiled for the host.

    native = build_program(program)
    native.run(inputs, outputs, arena)     # one call from Python per inference

The entry is `void @<graph>_entry(i8** args)` where `args` holds, in order, the input pointers,
the output pointers, the arena, the status word and the constants; it calls every kernel with
pointers into those (arena pointers are the arena base plus the planned byte offset).

A profiling build (`build_program(program, profile=True)`) reads the CPU's cycle counter around
every kernel call and adds the difference to an i64 counter per call, at the pointer that
follows the constants in `args`; its kernels are kept out of line so that the counter reads
stay around the calls they time.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ember.backend.llvm.codegen import MEMORY_TYPES, emit_kernel, finalize_module
from ember.backend.llvm.jit import CompiledModule, compile_ir
from ember.errors import ExecutionError
from ember.lower.program import Program, Slot

I8P = ir.IntType(8).as_pointer()


def entry_name(program: Program) -> str:
    return f"{program.name}_entry"


def emit_program(program: Program, profile: bool = False) -> ir.Module:
    """The LLVM module of a program: its kernels and the entry that calls them in order (with
    a cycle counter around each call when `profile`)."""
    module = ir.Module(program.name)
    kernels = {call.kernel.name: emit_kernel(module, call.kernel) for call in program.calls}
    if profile:
        for function in kernels.values():
            function.attributes.add("noinline")
    entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8P.as_pointer()]),
                        entry_name(program))
    builder = ir.IRBuilder(entry.append_basic_block("entry"))
    args = entry.args[0]
    bases = _bases(program)

    def pointer(slot: Slot, buffer_dtype: object) -> ir.Value:
        if slot.kind == "status":
            slot = Slot("status", 0)
            address = builder.load(builder.gep(args, [ir.IntType(64)(bases["status"])]))
        elif slot.kind == "arena":
            base = builder.load(builder.gep(args, [ir.IntType(64)(bases["arena"])]))
            address = builder.gep(base, [ir.IntType(64)(slot.index)], inbounds=True)
        else:
            position = bases[slot.kind] + slot.index
            address = builder.load(builder.gep(args, [ir.IntType(64)(position)]))
        return builder.bitcast(address, MEMORY_TYPES[buffer_dtype].as_pointer())  # type: ignore[index]

    counters = None
    if profile:
        position = bases["const"] + len(program.constants)
        raw = builder.load(builder.gep(args, [ir.IntType(64)(position)]))
        counters = builder.bitcast(raw, ir.IntType(64).as_pointer())
        clock = module.declare_intrinsic("llvm.readcyclecounter", (),
                                         ir.FunctionType(ir.IntType(64), []))
    for number, call in enumerate(program.calls):
        operands = [pointer(slot, buffer.dtype)
                    for slot, buffer in zip(call.slots, call.kernel.buffers, strict=True)]
        if counters is None:
            builder.call(kernels[call.kernel.name], operands)
            continue
        start = builder.call(clock, [])
        builder.call(kernels[call.kernel.name], operands)
        elapsed = builder.sub(builder.call(clock, []), start)
        counter = builder.gep(counters, [ir.IntType(64)(number)])
        builder.store(builder.add(builder.load(counter), elapsed), counter)
    builder.ret_void()
    if profile:  # `<graph>_cycles()`: the counter itself, to measure its rate
        cycles = ir.Function(module, ir.FunctionType(ir.IntType(64), []),
                             f"{program.name}_cycles")
        reader = ir.IRBuilder(cycles.append_basic_block("entry"))
        reader.ret(reader.call(clock, []))
    return module


def _bases(program: Program) -> dict[str, int]:
    inputs = len(program.graph.inputs)
    outputs = len(program.graph.outputs)
    return {"input": 0, "output": inputs, "arena": inputs + outputs,
            "status": inputs + outputs + 1, "const": inputs + outputs + 2}


@dataclass
class NativeProgram:
    """A compiled program and the pointer table its entry takes."""

    program: Program
    module: CompiledModule
    profile: bool = False

    def __post_init__(self) -> None:
        self.entry = self.module.function(entry_name(self.program), None, [ctypes.c_void_p])
        count = len(self.program.graph.inputs) + len(self.program.graph.outputs) + 2
        self._const_pointers = [c.ctypes.data for c in self.program.constants]
        if self.profile:
            self.counters = np.zeros(len(self.program.calls), dtype=np.int64)
            self._const_pointers.append(self.counters.ctypes.data)
            self.cycles = self.module.function(f"{self.program.name}_cycles", ctypes.c_int64, [])
        self._table_type = ctypes.c_void_p * (count + len(self._const_pointers))

    def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
            arena: np.ndarray) -> None:
        """Run the whole graph once: inputs and outputs must be C-contiguous arrays. A kernel
        that detects bad data (an index out of range) makes this raise ExecutionError. A
        profiling build adds each kernel's cycles to `counters`."""
        pointers = [a.ctypes.data for a in inputs] + [a.ctypes.data for a in outputs]
        status = np.zeros(1, dtype=np.int64)
        table = self._table_type(*pointers, arena.ctypes.data, status.ctypes.data,
                                 *self._const_pointers)
        self.entry(ctypes.addressof(table))
        if status[0]:
            raise ExecutionError(self.program.errors[int(status[0]) - 1])


def build_program(program: Program, opt_level: int = 3, profile: bool = False
                  ) -> NativeProgram:
    """Emit, optimize and JIT-compile a program (timing each kernel call when `profile`)."""
    text = finalize_module(str(emit_program(program, profile)))
    return NativeProgram(program, compile_ir(text, opt_level), profile)
