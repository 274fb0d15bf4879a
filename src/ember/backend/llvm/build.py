"""Program -> one LLVM module with one entry point, compiled for the host.

    native = build_program(program)
    native.run(inputs, outputs, arena)     # one call from Python per inference

The entry is `void @<graph>_entry(i8** args)` where `args` holds, in order, the input pointers,
the output pointers, the arena and the constants; it calls every kernel with pointers into
those (arena pointers are the arena base plus the planned byte offset).
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


def emit_program(program: Program) -> ir.Module:
    """The LLVM module of a program: its kernels and the entry that calls them in order."""
    module = ir.Module(program.name)
    kernels = {call.kernel.name: emit_kernel(module, call.kernel) for call in program.calls}
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

    for call in program.calls:
        operands = [pointer(slot, buffer.dtype)
                    for slot, buffer in zip(call.slots, call.kernel.buffers, strict=True)]
        builder.call(kernels[call.kernel.name], operands)
    builder.ret_void()
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

    def __post_init__(self) -> None:
        self.entry = self.module.function(entry_name(self.program), None, [ctypes.c_void_p])
        count = len(self.program.graph.inputs) + len(self.program.graph.outputs) + 2
        self._const_pointers = [c.ctypes.data for c in self.program.constants]
        self._table_type = ctypes.c_void_p * (count + len(self._const_pointers))

    def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
            arena: np.ndarray) -> None:
        """Run the whole graph once: inputs and outputs must be C-contiguous arrays. A kernel
        that detects bad data (an index out of range) makes this raise ExecutionError."""
        pointers = [a.ctypes.data for a in inputs] + [a.ctypes.data for a in outputs]
        status = np.zeros(1, dtype=np.int64)
        table = self._table_type(*pointers, arena.ctypes.data, status.ctypes.data,
                                 *self._const_pointers)
        self.entry(ctypes.addressof(table))
        if status[0]:
            raise ExecutionError(self.program.errors[int(status[0]) - 1])


def build_program(program: Program, opt_level: int = 3) -> NativeProgram:
    """Emit, optimize and JIT-compile a program."""
    text = finalize_module(str(emit_program(program)))
    return NativeProgram(program, compile_ir(text, opt_level))
