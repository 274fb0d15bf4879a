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

Kernels with the same buffers, body and aliasing (the same op on the same shapes, an encoder
layer's repeated norm) become one LLVM function that every such call uses, so LLVM's work
follows the distinct kernels, not the calls. A program of more than MAX_INLINED_CALLS calls
keeps its kernels out of line: inlined into one entry, LLVM's time grows much faster than the
program (a 300-op level-1 chain: 51 s inlined, 7 s out of line, 0.3 s with one function per
distinct kernel). So does a kernel of more than MAX_INLINED_SIZE instructions in any program
(a fused BatchNorm backward). For the same reason a long entry calls its kernels through
parts of at most ENTRY_PART_CALLS calls (`<entry>.part<k>`, out of line): no LLVM function
grows with the graph.

A program whose kernels are out of line is compiled in parts (`emit_parts`): modules of about
PART_SIZE instructions of kernels each, in call order, the entry in the last one, which calls
the others' kernels by name. LLVM optimizes and compiles each part on a thread of its own while
the next one is generated (`ember.backend.llvm.jit`), so a model's compile uses every core:
DenseNet-121 6.5 -> 3.3 s on two (benchmarks/NOTES.md).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ember import progress
from ember.backend.cpu.parallel import CpuKernelEmitter
from ember.backend.llvm.codegen import MEMORY_TYPES, emit_kernel, module_text
from ember.backend.llvm.jit import CompiledModule, Part, compile_ir
from ember.backend.llvm.vecmath import for_target
from ember.errors import ExecutionError
from ember.lower.loops import Kernel
from ember.lower.program import Call, Program, Slot

I8P = ir.IntType(8).as_pointer()
# Kernels are inlined into the entry only in programs of at most this many calls: there a
# call's overhead is a share of the run time; in bigger ones LLVM's work on the one function
# they make is not repaid (ResNet-50, 56 calls: 4.1 s cold compile inlined, 2.9 s out of line,
# the same call time).
MAX_INLINED_CALLS = 16
# Kernels of more instructions stay calls: inlined into the entry, they make one function that
# LLVM optimizes in more than linear time (a BatchNorm CNN train step: 28 s to compile with
# every kernel inlined, 9 s with these kept out, the step as fast).
MAX_INLINED_SIZE = 200
ENTRY_PART_CALLS = 256
# Instructions of generated kernels per part of a program compiled in parts: LLVM takes about
# 0.4 s over one on this project's machines, so two cores share a ResNet's dozen parts
# evenly, and the first part starts compiling while most of the program is still to generate.
PART_SIZE = 8_000


def entry_name(program: Program) -> str:
    return f"{program.name}_entry"


def emit_parts(program: Program, profile: bool = False,
               part_size: int | None = None) -> Iterator[Part]:
    """The LLVM IR of a program as parts, each yielded as soon as it is generated: its kernels
    and the entry that calls them in order (with a cycle counter around each call when
    `profile`). Where kernels are inlined, one module kept whole; otherwise modules of at least
    `part_size` (default PART_SIZE) instructions of kernels, which export their kernels, and
    last the one with the entry, which declares the kernels of the others."""
    split = _out_of_line(program, profile)
    limit = (PART_SIZE if part_size is None else part_size) if split else math.inf
    count = 0

    def new_module() -> ir.Module:
        name = f"{program.name}.part{count}" if split else program.name
        return for_target(ir.Module(name), program.target)

    module = new_module()
    distinct: dict[tuple[object, ...], ir.Function] = {}
    kernels: dict[str, ir.Function] = {}  # kernel name -> its function, in whichever part
    exports: list[str] = []
    size = 0
    progress.stage("llvm ir", total=len(program.calls), unit="kernels")
    for call in program.calls:
        key = _kernel_key(call.kernel)
        if key not in distinct:
            before = len(module.globals)
            function = emit_kernel(module, call.kernel, CpuKernelEmitter)
            if split or _size([function]) > MAX_INLINED_SIZE:
                function.attributes.add("noinline")
            if split:
                function.linkage = ""  # external: the entry's part calls it
                exports.append(function.name)
            distinct[key] = function
            size += _size(list(module.globals.values())[before:])
        kernels[call.kernel.name] = distinct[key]
        progress.advance()
        if size >= limit:
            yield Part(module_text(module), tuple(exports))
            count += 1
            module, exports, size = new_module(), [], 0
    for name, function in list(kernels.items()):  # declared where the entry calls them
        if function.module is not module:
            declared = module.globals.get(function.name)
            kernels[name] = declared if declared is not None else ir.Function(
                module, function.function_type, function.name)
    _emit_entry(module, program, kernels, profile)
    progress.stage("llvm text")
    names = [entry_name(program)] + ([f"{program.name}_cycles"] if profile else [])
    yield Part(module_text(module), tuple(names) if split else None)


def _out_of_line(program: Program, profile: bool) -> bool:
    """Whether a program's kernels are kept out of line (are calls from its entry)."""
    return profile or len(program.calls) > MAX_INLINED_CALLS


def _size(values: Sequence[object]) -> int:
    """Instructions in the functions among `values`."""
    return sum(len(block.instructions) for value in values if isinstance(value, ir.Function)
               for block in value.blocks)


def _emit_entry(module: ir.Module, program: Program, kernels: dict[str, ir.Function],
                profile: bool) -> None:
    """The entry of a program into `module`: it calls `kernels` (by kernel name) in order."""
    entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8P.as_pointer()]),
                        entry_name(program))
    clock = module.declare_intrinsic("llvm.readcyclecounter", (),
                                     ir.FunctionType(ir.IntType(64), [])) if profile else None
    numbered = list(enumerate(program.calls))
    if len(numbered) <= ENTRY_PART_CALLS:
        _emit_calls(entry, numbered, kernels, program, clock)
    else:  # the entry calls parts of ENTRY_PART_CALLS kernel calls each, in order
        builder = ir.IRBuilder(entry.append_basic_block("entry"))
        for first in range(0, len(numbered), ENTRY_PART_CALLS):
            part = ir.Function(module, entry.function_type,
                               f"{entry.name}.part{first // ENTRY_PART_CALLS}")
            part.linkage = "internal"
            part.attributes.add("noinline")
            _emit_calls(part, numbered[first : first + ENTRY_PART_CALLS], kernels, program,
                        clock)
            builder.call(part, [entry.args[0]])
        builder.ret_void()
    if profile:  # `<graph>_cycles()`: the counter itself, to measure its rate
        cycles = ir.Function(module, ir.FunctionType(ir.IntType(64), []),
                             f"{program.name}_cycles")
        reader = ir.IRBuilder(cycles.append_basic_block("entry"))
        reader.ret(reader.call(clock, []))


def _emit_calls(function: ir.Function, calls: Sequence[tuple[int, Call]],
                kernels: dict[str, ir.Function], program: Program,
                clock: ir.Function | None) -> None:
    """The body of `function(i8** args)`: the given (number, call)s in order, each with its
    buffer pointers taken from `args` (each pointer computed once per function)."""
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    args = function.args[0]
    bases = _bases(program)
    made: dict[tuple[Slot, object], ir.Value] = {}

    def pointer(slot: Slot, buffer_dtype: object) -> ir.Value:
        if (slot, buffer_dtype) in made:
            return made[slot, buffer_dtype]
        if slot.kind == "status":
            address = builder.load(builder.gep(args, [ir.IntType(64)(bases["status"])]))
        elif slot.kind == "arena":
            base = builder.load(builder.gep(args, [ir.IntType(64)(bases["arena"])]))
            address = builder.gep(base, [ir.IntType(64)(slot.index)], inbounds=True)
        else:
            position = bases[slot.kind] + slot.index
            address = builder.load(builder.gep(args, [ir.IntType(64)(position)]))
        made[slot, buffer_dtype] = builder.bitcast(
            address, MEMORY_TYPES[buffer_dtype].as_pointer())  # type: ignore[index]
        return made[slot, buffer_dtype]

    counters = None
    if clock is not None:
        position = bases["const"] + len(program.constants)
        raw = builder.load(builder.gep(args, [ir.IntType(64)(position)]))
        counters = builder.bitcast(raw, ir.IntType(64).as_pointer())
    for number, call in calls:
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


def _kernel_key(kernel: Kernel) -> tuple[object, ...]:
    """What the machine code of a kernel depends on (not its name or source comment)."""
    return (kernel.buffers, kernel.body, repr(sorted(kernel.attrs.items())))


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
        # Code for a target the host cannot run (AVX-512 code on an AVX2 host) is kept for
        # its IR and assembly; calling it raises EmberError naming what the host lacks.
        self.entry = (self.module.function(entry_name(self.program), None, [ctypes.c_void_p])
                      if self.module.runnable else None)
        count = len(self.program.graph.inputs) + len(self.program.graph.outputs) + 2
        self._const_pointers = [c.ctypes.data for c in self.program.constants]
        if self.profile:
            self.counters = np.zeros(len(self.program.calls), dtype=np.int64)
            self._const_pointers.append(self.counters.ctypes.data)
            self.cycles = self.module.function(f"{self.program.name}_cycles", ctypes.c_int64, [])
        self._table_type = ctypes.c_void_p * (count + len(self._const_pointers))

    def stage(self, name: str) -> str:
        """The text of a code generation stage: "llvm" (optimized LLVM IR) or "asm"."""
        if name == "llvm":
            return self.module.llvm_ir
        if name == "asm":
            return self.module.asm()
        raise KeyError(f"the CPU backend has no stage {name!r} (stages: llvm, asm)")

    def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
            arena: np.ndarray) -> None:
        """Run the whole graph once: inputs and outputs must be C-contiguous arrays. A kernel
        that detects bad data (an index out of range) makes this raise ExecutionError. A
        profiling build adds each kernel's cycles to `counters`."""
        if self.entry is None:
            self.module.address(entry_name(self.program))  # raises: not runnable here
        pointers = [a.ctypes.data for a in inputs] + [a.ctypes.data for a in outputs]
        status = np.zeros(1, dtype=np.int64)
        table = self._table_type(*pointers, arena.ctypes.data, status.ctypes.data,
                                 *self._const_pointers)
        self.entry(ctypes.addressof(table))
        if status[0]:
            raise ExecutionError(self.program.errors[int(status[0]) - 1])


def build_program(program: Program, opt_level: int = 3, profile: bool = False
                  ) -> NativeProgram:
    """Emit, optimize and JIT-compile a program (timing each kernel call when `profile`), its
    parts compiling while the next ones are generated."""
    module = compile_ir(emit_parts(program, profile), opt_level, target=program.target)
    return NativeProgram(program, module, profile)
