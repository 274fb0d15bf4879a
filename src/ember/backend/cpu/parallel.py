"""Parallel loops on the CPU: a loop marked `parallel` is outlined and run on the thread pool.

    function = emit_kernel(module, kernel, CpuKernelEmitter)

The shared loop-IR emitter (`ember.backend.llvm.codegen`) knows nothing of threads; this
subclass gives it the CPU's runtime (`ember.backend.cpu.threads`).
"""

from __future__ import annotations

from dataclasses import replace

from llvmlite import ir

from ember.backend.cpu.threads import BODY_TYPE, emit_parallel_runtime
from ember.backend.llvm.codegen import I8, I32, I64, KernelEmitter
from ember.lower.loops import Loop


class CpuKernelEmitter(KernelEmitter):
    """The loop-IR emitter with parallel loops on the process-wide thread pool."""

    def emit_parallel_loop(self, loop: Loop) -> None:
        """Outline the loop into `void body(i8** buffers, i64 begin, i64 end)` and run it over
        the thread pool. The schedule only marks loops whose body reads nothing but buffers
        and its own variables, so the buffer pointers are the whole context."""
        # The process-wide pool: a region costs ~1 us (fork-join: 20-70 us), and its workers
        # live in code that is never freed, so nothing is joined when a module is freed or the
        # process exits.
        runtime = emit_parallel_runtime(self.module, strategy="shared")
        self.loop_ids += 1
        name = f"{self.function.name}.par{self.loop_ids}"
        body = ir.Function(self.module, BODY_TYPE, name)
        body.linkage = "internal"
        # Out of line: inlined on the one-thread path it would be a second copy of the loop
        # nest that LLVM optimizes and compiles again.
        body.attributes.add("noinline")
        table = self._entry_alloca(ir.ArrayType(I8.as_pointer(), len(self.kernel.buffers)),
                                   "buffers")
        for position, buffer in enumerate(self.kernel.buffers):
            slot = self.builder.gep(table, [I32(0), I32(position)])
            self.builder.store(self.builder.bitcast(self.pointers[buffer], I8.as_pointer()), slot)
        # The body unpacks the buffer pointers from its context and calls `<name>.loop`, which
        # takes them as arguments marked `noalias` like the kernel's own (inlined, LLVM keeps
        # that as alias scopes): loads from a context alone would make every vectorized loop
        # inside test its pointers for overlap at run time.
        types = [self.pointers[buffer].type for buffer in self.kernel.buffers]
        nest = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [*types, I64, I64]),
                           f"{name}.loop")
        nest.linkage = "internal"
        nest.attributes.add("alwaysinline")
        shared = set(self.kernel.attrs.get("may_alias", ()))
        for buffer, argument in zip(self.kernel.buffers, nest.args, strict=False):
            argument.name = buffer.name
            if buffer.name not in shared:
                argument.add_attribute("noalias")
        inner = type(self)(self.module, self.kernel, nest, outlined=True)
        inner.loop_ids = self.loop_ids * 100
        for buffer, argument in zip(self.kernel.buffers, nest.args, strict=False):
            inner.pointers[buffer] = argument
        inner.emit_counted_loop(replace(loop, kind="serial"), nest.args[-2], nest.args[-1])
        inner.builder.ret_void()

        unpack = ir.IRBuilder(body.append_basic_block("entry"))
        context, begin, end = body.args
        pointers = unpack.bitcast(context, I8.as_pointer().as_pointer())
        arguments = [unpack.bitcast(unpack.load(unpack.gep(pointers, [I32(position)])), type_)
                     for position, type_ in enumerate(types)]
        unpack.call(nest, [*arguments, begin, end])
        unpack.ret_void()
        runtime.parallel_for(self.builder, body, table, 0, loop.extent)
