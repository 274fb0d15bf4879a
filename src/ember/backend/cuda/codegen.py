"""Mapped loop IR -> LLVM IR for `nvptx64-nvidia-cuda` -> PTX text.

    module = emit_module(program)             # one `ptx_kernel` function per distinct launch
    ptx = compile_ptx(module, "sm_90")        # optimized by LLVM, printed by the NVPTX backend

Every kernel is `.entry name(T0* b0, T1* b1, ...)`: pointers into the device arena, the
inputs, outputs and constants (generic pointers; LLVM's NVPTX passes turn kernel parameters
into global-space accesses). A loop marked `grid` (see `schedule.py`) becomes a grid-stride
loop over `ctaid.x * ntid.x + tid.x`; every other loop is a counted loop in one thread. Math
functions come from Ember's own polynomials (`vecmath`, scalar), `sqrt`, `fabs`, `floor`,
`ceil`, `roundeven`, `fma`, `maximum` and `minimum` from NVPTX-legal LLVM intrinsics: nothing
needs libdevice. A function neither provides stops with UnsupportedError naming it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

import llvmlite.binding as llvm
from llvmlite import ir

from ember.backend.llvm.codegen import (
    I32,
    I64,
    MEMORY_TYPES,
    KernelEmitter,
    finalize_module,
)
from ember.backend.llvm.vecmath import SUPPORTED_FUNCTIONS, for_target
from ember.errors import EmberError, LoweringError, UnsupportedError
from ember.ir.types import DType
from ember.lower.loops import ExternCall, Kernel, Loop
from ember.lower.program import Program, Slot
from ember.target import NVPTX_TRIPLE, Target

_LOCK = threading.Lock()  # LLVM's global state is not safe to build from several threads
_SREG = ir.FunctionType(I32, [])
VECTOR_ALIGNMENT = 16  # bytes: the widest vector access (ld.global.v4.f32)
MAX_PARAMETERS = 512  # 8-byte pointers in the 4 KiB of kernel parameters every arch accepts


class CudaKernelEmitter(KernelEmitter):
    """The loop-IR emitter for one GPU thread: `grid` loops stride over the whole launch."""

    def emit_loop(self, loop: Loop) -> None:
        if loop.kind == "grid" and loop.extent > 0:
            self.emit_grid_loop(loop)
            return
        super().emit_loop(loop)

    def special_register(self, name: str) -> ir.Value:
        """`%tid.x`-style special register `name` ("tid.x", "ctaid.x", ...) as an i64."""
        function = self.module.globals.get(f"llvm.nvvm.read.ptx.sreg.{name}")
        if function is None:
            function = ir.Function(self.module, _SREG, f"llvm.nvvm.read.ptx.sreg.{name}")
        return self.builder.zext(self.builder.call(function, []), I64)

    def emit_grid_loop(self, loop: Loop) -> None:
        """`for (var = ctaid*ntid + tid; var < extent; var += nctaid*ntid) body`."""
        builder = self.builder
        threads = self.special_register("ntid.x")
        start = builder.add(builder.mul(self.special_register("ctaid.x"), threads),
                            self.special_register("tid.x"), flags=("nuw", "nsw"))
        step = builder.mul(self.special_register("nctaid.x"), threads, flags=("nuw", "nsw"))
        end = I64(loop.extent)
        preheader = builder.block
        header = self.function.append_basic_block(f"{loop.var.name}.grid")
        after = self.function.append_basic_block(f"{loop.var.name}.done")
        builder.cbranch(builder.icmp_signed("<", start, end), header, after)
        builder.position_at_end(header)
        index = builder.phi(I64, name=loop.var.name)
        index.add_incoming(start, preheader)
        self.values[loop.var] = index
        self.emit_body(loop.body)
        following = builder.add(index, step, name=f"{loop.var.name}.next", flags=("nuw", "nsw"))
        index.add_incoming(following, builder.block)
        builder.cbranch(builder.icmp_signed(">=", following, end), after, header)
        builder.position_at_end(after)

    def emit_parallel_loop(self, loop: Loop) -> None:
        # The CUDA schedule turns parallelism into grids; a CPU `parallel` mark is a plain loop.
        self.emit_counted_loop(loop, I64(0), I64(loop.extent))

    def emit_extern_call(self, stmt: ExternCall) -> None:
        raise UnsupportedError(f"{self.kernel.source or self.kernel.name}: the CUDA backend has "
                               f"no device version of the library call {stmt.symbol}")

    def math_call(self, name: str, args: Sequence[ir.Value], dtype: DType) -> ir.Value:
        if name not in SUPPORTED_FUNCTIONS:
            raise UnsupportedError(f"{self.kernel.source or self.kernel.name}: no CUDA version "
                                   f"of the math function {name!r} for {dtype} (Ember's own: "
                                   f"{', '.join(SUPPORTED_FUNCTIONS)})")
        return super().math_call(name, args, dtype)


def emit_kernel(module: ir.Module, kernel: Kernel, name: str | None = None,
                alignments: Sequence[int] = ()) -> ir.Function:
    """Add the kernel as a `ptx_kernel` function called `name` (default: the kernel's);
    `alignments[k]`: bytes buffer k's address is known to be a multiple of (`align`, which
    lets LLVM merge neighbouring loads and stores into vector accesses)."""
    if len(kernel.buffers) > MAX_PARAMETERS:
        raise UnsupportedError(f"{kernel.source or kernel.name}: {len(kernel.buffers)} buffers, "
                               f"more than the {MAX_PARAMETERS} pointer parameters a CUDA "
                               "kernel may take (fuse less: passes='...' without fuse)")
    narrow = sorted({b.dtype.value for b in kernel.buffers if b.dtype.is_narrow_float})
    if narrow:
        raise UnsupportedError(f"{kernel.source or kernel.name}: the CUDA backend does not "
                               f"handle {' or '.join(narrow)} yet (compile for target='cpu', "
                               "or cast to f32)")
    types = [MEMORY_TYPES[b.dtype].as_pointer() for b in kernel.buffers]
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), types), name or kernel.name)
    function.calling_convention = "ptx_kernel"
    shared = set(kernel.attrs.get("may_alias", ()))  # type: ignore[arg-type]
    for buffer, argument in zip(kernel.buffers, function.args, strict=True):
        argument.name = buffer.name
        if buffer.name not in shared:
            argument.add_attribute("noalias")
    for argument, alignment in zip(function.args, alignments, strict=False):
        if alignment > 1:
            argument.attributes.align = alignment
    body = CudaKernelEmitter(module, kernel, function)
    body.emit_body(kernel.body)
    body.builder.ret_void()
    return function


def kernel_key(kernel: Kernel) -> tuple[object, ...]:
    """What a launch's code depends on (not its name or source comment)."""
    return (kernel.buffers, kernel.body, repr(sorted(kernel.attrs.items())))


def emit_module(program: Program, prefix: str = "") -> tuple[ir.Module, list[str]]:
    """The program's LLVM module and the function each call launches (equal launches share
    one function). `prefix` goes before every function name (programs batched in one module)."""
    module = new_module(program.name, program.target)
    return module, add_program(module, program, prefix)


def new_module(name: str, target: Target) -> ir.Module:
    """An empty NVPTX module for `target` (vector math reads the target from it)."""
    module = for_target(ir.Module(name), target)
    module.triple = NVPTX_TRIPLE
    module.data_layout = str(target_machine(target.name).target_data)
    return module


def add_program(module: ir.Module, program: Program, prefix: str = "",
                distinct: dict[tuple[object, ...], str] | None = None) -> list[str]:
    """Add the program's kernels to `module`; the function name of each call, in order.
    `distinct` (kernel_key -> name) is shared by programs batched into one module, so that
    equal kernels are emitted once."""
    distinct = {} if distinct is None else distinct
    names = []
    for call in program.calls:
        alignments = tuple(slot_alignment(slot) for slot in call.slots)
        key = (*kernel_key(call.kernel), alignments)
        if key not in distinct:
            distinct[key] = emit_kernel(module, call.kernel, prefix + call.kernel.name,
                                        alignments).name
        names.append(distinct[key])
    return names


def slot_alignment(slot: Slot) -> int:
    """Bytes the device address of `slot` is a multiple of, up to VECTOR_ALIGNMENT: the
    runtime's buffers come from cuMemAlloc (256-byte aligned), arena slots add their offset."""
    if slot.kind != "arena" or slot.index == 0:
        return VECTOR_ALIGNMENT
    return min(slot.index & -slot.index, VECTOR_ALIGNMENT)


@functools.cache
def _initialize() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


@functools.cache
def target_machine(arch: str) -> llvm.TargetMachine:
    """LLVM's NVPTX target machine for `arch` ("sm_80", "sm_90", "sm_90a", ...)."""
    _initialize()
    try:
        machine = llvm.Target.from_triple(NVPTX_TRIPLE)
    except RuntimeError as err:
        raise EmberError(f"this LLVM has no NVPTX target ({err}): llvmlite built without it "
                         "cannot generate CUDA code") from None
    return machine.create_target_machine(cpu=arch, opt=3)


def optimized_ir(module: ir.Module | str, arch: str, kernels: Sequence[str],
                 opt_level: int = 3) -> llvm.ModuleRef:
    """Parse, verify and optimize the module for `arch`, with `kernels` its only visible
    functions; a verifier failure is a LoweringError with LLVM's message."""
    _initialize()
    text = finalize_module(str(module))
    with _LOCK:
        try:
            parsed = llvm.parse_assembly(text)
            parsed.verify()
        except RuntimeError as err:
            raise LoweringError("<cuda module>", f"LLVM rejected the generated IR: {err}"
                                ) from None
        entries = set(kernels)
        for function in parsed.functions:
            # Helpers (vector math's out-of-line parts and their vector variants) stay out of
            # the PTX unless a kernel calls them.
            if not function.is_declaration and function.name not in entries:
                function.linkage = llvm.Linkage.internal
        machine = target_machine(arch)
        if opt_level > 0:
            options = llvm.create_pipeline_tuning_options(speed_level=min(opt_level, 3))
            options.loop_vectorization = False  # one thread is scalar code
            options.slp_vectorization = False
            builder = llvm.create_pass_builder(machine, options)
            builder.getModulePassManager().run(parsed, builder)
        _valid_names(parsed)
    return parsed


def _valid_names(module: llvm.ModuleRef) -> None:
    """PTX identifiers have no dots: `ember.sin.huge.f32` -> `ember_sin_huge_f32`."""
    for value in [*module.functions, *module.global_variables]:
        if "." in value.name and not value.name.startswith("llvm.") and (
                not value.is_declaration or value.is_global):
            value.name = value.name.replace(".", "_")


def compile_ptx(module: ir.Module | str | llvm.ModuleRef, arch: str, opt_level: int = 3
                ) -> str:
    """PTX text of an LLVM module (optimized first unless it is an optimized ModuleRef)."""
    parsed = module if isinstance(module, llvm.ModuleRef) else optimized_ir(module, arch,
                                                                             opt_level)
    with _LOCK:
        try:
            return target_machine(arch).emit_assembly(parsed)
        except RuntimeError as err:
            raise LoweringError("<cuda module>", f"the NVPTX backend failed: {err}") from None
