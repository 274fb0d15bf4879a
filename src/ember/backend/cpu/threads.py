"""Parallel loops inside generated code: a thread pool written in LLVM IR.

A compiled graph is one native function, called once per inference from Python. Its kernels
split their outer loops across the cores with this runtime. Everything here is LLVM IR built
with llvmlite; it calls only the libc/libpthread symbols that the Python process has already
loaded (`pthread_create`, `pthread_join`, `pthread_mutex_*`, `pthread_cond_*`, `sched_yield`,
`sigfillset`, `pthread_sigmask`), resolved by MCJIT. No C compiler runs.

Generating code:

    runtime = emit_parallel_runtime(module)           # once per module; again returns the same
    runtime.parallel_for(builder, body, context, begin, end, min_chunk=4096)

`body` is an `ir.Function` of type `void (i8* context, i64 chunk_begin, i64 chunk_end)`. The
call runs it over `[begin, end)` split into contiguous static chunks, one per thread: with `T`
threads and `N` iterations, chunk `k` is `N // T` long plus one for the first `N % T` chunks,
and the calling thread runs chunk 0. The number of chunks is `min(T, N // min_chunk)`; when
that is 1 or less (one thread, or a short range), `body` is called directly, inline, with no
threading cost at all. An empty range calls nothing. `parallel_for` leaves the builder at the
end of a new block after the call.

Using it from Python (`compiled` is the `CompiledModule` from `jit.compile_ir`):

    attach_runtime(compiled)                # once: joins the workers before the code is freed
    set_num_threads(compiled, 2)            # ember_set_num_threads(i32), clamped to [1, max]
    num_threads(compiled)                   # ember_get_num_threads()
    release_workers(compiled)               # join the pool now; it restarts on the next region

The thread count is the module global `ember_num_threads` (i32). It starts at the number of
CPUs this process may run on (`os.sched_getaffinity`, else `os.cpu_count()`), read when the
module is generated, and is read once at the start of every parallel region.

Two strategies (`emit_parallel_runtime(module, strategy=...)`):

- `"pool"` (default): one persistent pool per module, created lazily by the first region that
  needs it (more workers are added when the thread count grows). A region publishes its job
  under the pool mutex, bumps a generation counter and broadcasts a condition variable; each
  participating worker runs its chunk and decrements a pending counter, and the caller, after
  its own chunk, waits until the counter reaches zero. Waiting (an idle worker, the joining
  caller) first polls the counter with atomic loads and `pause` for `spin_cycles` time stamp
  counter ticks (~77 us at 2.6 GHz), calling `sched_yield` every `YIELD_EVERY` polls, and only
  then sleeps on the condition variable: a sleeping vCPU takes 10-50 us to wake under KVM,
  a polling one under 1 us (numbers in benchmarks/NOTES.md). Workers run with all signals
  blocked, so Python's signal handling stays on Python's threads.
- `"spawn"`: fork-join, `pthread_create` for chunks 1..T-1 and `pthread_join` per region. All
  state lives on the caller's stack. Slower per region; kept for comparison and as a fallback.
- `"shared"` (what compiled graphs use): the `"pool"` runtime, once per process. It is compiled
  into a module of its own the first time it is needed (`ensure_shared_pool`), that module is
  never freed, and generated modules call its entry by name (`ember_shared_parallel_run`,
  registered with `llvm.add_symbol`, so cached object code links to it too). Its workers
  never need joining: they wait in code that lives until the process exits, which removes the
  per-module pool's shutdown (seen to hang at exit once) and a pool per compiled model. A
  child made by `fork()` resets the pool's bookkeeping (`os.register_at_fork`) and starts
  workers of its own on its first region. The thread count stays per module.

Thread safety. Several Python threads may call compiled functions of the same or of different
modules at the same time (ctypes releases the GIL). A pool region holds the module's region
mutex for its duration and takes it with `pthread_mutex_trylock`: a region that finds the pool
busy (another Python thread is using it, or the call is a parallel loop nested inside a chunk)
runs its whole range serially on the calling thread instead of waiting. So there is no deadlock,
every call makes progress, and results do not depend on which path ran. Modules do not share
pools. The spawn strategy needs no lock: every region has its own threads.

Limits: at most `max_threads` threads (64 by default). Do not run a module's parallel regions in
a child process created by `fork()` after the parent ran them: the child inherits the pool's
bookkeeping but not its threads; call `release_workers` before forking. pthread object sizes
are glibc x86-64 (`pthread_t` 8 bytes, `pthread_mutex_t` 40, `pthread_cond_t` 48); the objects
are byte arrays initialized once with `pthread_mutex_init`/`pthread_cond_init`, guarded by a
`cmpxchg` on an init flag.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from llvmlite import ir

from ember.backend.llvm import jit
from ember.errors import LoweringError
from ember.target import Target

I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
VOID = ir.VoidType()
I8_POINTER = I8.as_pointer()
BODY_TYPE = ir.FunctionType(VOID, [I8_POINTER, I64, I64])
THREAD_ENTRY_TYPE = ir.FunctionType(I8_POINTER, [I8_POINTER])

# glibc x86-64 sizes of the pthread objects this runtime allocates.
PTHREAD_T_BYTES = 8
MUTEX_BYTES = 40
COND_BYTES = 48
SIGSET_BYTES = 128
SIG_SETMASK = 2

DEFAULT_MAX_THREADS = 64
DEFAULT_SPIN_CYCLES = 200_000  # about 50-100 us of polling at 2-4 GHz before sleeping
YIELD_EVERY = 64  # polls between two sched_yield calls while spinning (a power of two)
STRATEGIES = ("pool", "spawn", "shared")

# Names of the entry points Python calls.
SET_NUM_THREADS = "ember_set_num_threads"
GET_NUM_THREADS = "ember_get_num_threads"
SHUTDOWN = "ember_pool_shutdown"
SHARED_RUN = "ember_shared_parallel_run"
SHARED_AFTER_FORK = "ember_shared_after_fork"
NUM_THREADS_GLOBAL = "ember_num_threads"


def available_cpus() -> int:
    """The number of CPUs this process may run on: the default thread count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ParallelRuntime:
    """The parallel runtime of one module: what `parallel_for` calls."""

    module: ir.Module
    strategy: str
    max_threads: int
    num_threads: ir.GlobalVariable  # i32 `ember_num_threads`
    run: ir.Function  # void (body*, i8* context, i64 begin, i64 end, i64 chunks)

    def parallel_for(self, builder: ir.IRBuilder, body: ir.Function, context: ir.Value,
                     begin: ir.Value | int, end: ir.Value | int, min_chunk: int = 1) -> None:
        """Emit a call that runs `body(context, chunk_begin, chunk_end)` over `[begin, end)`.

        The range is split into `min(threads, (end - begin) // min_chunk)` contiguous chunks;
        with one chunk or fewer, `body` is called directly (or not at all for an empty range).
        The builder is left at the end of a new block after the loop.
        """
        if body.function_type != BODY_TYPE:
            raise LoweringError(body.name, f"a parallel loop body must have type "
                                           f"`{BODY_TYPE}`, not `{body.function_type}`")
        if min_chunk < 1:
            raise LoweringError(body.name, f"min_chunk must be at least 1, not {min_chunk}")
        begin, end = (_as_i64(builder, bound) for bound in (begin, end))
        if context.type != I8_POINTER:
            context = builder.bitcast(context, I8_POINTER)
        function = builder.function
        threaded = function.append_basic_block(f"{body.name}.threaded")
        serial = function.append_basic_block(f"{body.name}.serial")
        direct = function.append_basic_block(f"{body.name}.direct")
        after = function.append_basic_block(f"{body.name}.done")

        total = builder.sub(end, begin, name="total")
        threads = builder.sext(builder.load_atomic(self.num_threads, "monotonic", 4), I64)
        by_size = builder.sdiv(total, I64(min_chunk)) if min_chunk > 1 else total
        chunks = builder.select(builder.icmp_signed("<", threads, by_size), threads, by_size,
                                name="chunks")
        builder.cbranch(builder.icmp_signed(">", chunks, I64(1)), threaded, serial)

        builder.position_at_end(threaded)
        builder.call(self.run, [body, context, begin, end, chunks])
        builder.branch(after)

        builder.position_at_end(serial)
        builder.cbranch(builder.icmp_signed(">", total, I64(0)), direct, after)
        builder.position_at_end(direct)
        builder.call(body, [context, begin, end])
        builder.branch(after)

        builder.position_at_end(after)


def _as_i64(builder: ir.IRBuilder, value: ir.Value | int) -> ir.Value:
    if isinstance(value, int):
        return I64(value)
    if not isinstance(value.type, ir.IntType):
        raise LoweringError(str(value), f"a loop bound must be an integer, not `{value.type}`")
    if value.type.width < 64:
        return builder.sext(value, I64)
    return value


def emit_parallel_runtime(module: ir.Module, strategy: str = "pool",
                          max_threads: int = DEFAULT_MAX_THREADS,
                          default_threads: int | None = None,
                          spin_cycles: int = DEFAULT_SPIN_CYCLES) -> ParallelRuntime:
    """Add the parallel runtime to `module` (once) and return its handle.

    `default_threads` is the initial value of `ember_num_threads` (default: the CPUs this process
    may run on), clamped to `[1, max_threads]`. `spin_cycles` (pool only) is how long, in time
    stamp counter ticks, an idle worker or a joining caller polls before it sleeps on its
    condition variable; 0 sleeps at once.
    """
    existing = getattr(module, "_ember_parallel_runtime", None)
    if existing is not None:
        if existing.strategy != strategy or existing.max_threads != max_threads:
            raise LoweringError(module.name, f"the module already has a parallel runtime with "
                                             f"strategy {existing.strategy!r} and "
                                             f"max_threads {existing.max_threads}")
        return existing
    if strategy not in STRATEGIES:
        raise LoweringError(module.name, f"unknown parallel strategy {strategy!r}; "
                                         f"expected one of {', '.join(STRATEGIES)}")
    if max_threads < 1:
        raise LoweringError(module.name, f"max_threads must be at least 1, not {max_threads}")
    threads = available_cpus() if default_threads is None else default_threads
    threads = min(max(threads, 1), max_threads)
    emitter = _Emitter(module, max_threads, spin_cycles)
    num_threads = emitter.global_variable(NUM_THREADS_GLOBAL, I32, I32(threads), internal=False)
    emitter.emit_thread_count_functions(num_threads)
    if strategy == "shared":
        ensure_shared_pool()
        run = emitter.declare(SHARED_RUN, VOID, BODY_TYPE.as_pointer(), I8_POINTER, I64, I64, I64)
        emitter.emit_no_shutdown()
    else:
        run = emitter.emit_pool() if strategy == "pool" else emitter.emit_spawn()
    runtime = ParallelRuntime(module, strategy, max_threads, num_threads, run)
    module._ember_parallel_runtime = runtime
    return runtime


# ---------------------------------------------------------------------------------------------
# Python side


def _entry(compiled: Any, name: str, restype: Any, argtypes: list[Any]) -> Callable[..., Any]:
    # A bare ctypes prototype: unlike `compiled.function`, it holds no reference to the module.
    return ctypes.CFUNCTYPE(restype, *argtypes)(compiled.address(name))


def set_num_threads(compiled: Any, count: int) -> int:
    """Set the thread count of a compiled module's parallel loops; returns the count in effect.

    Counts above the module's `max_threads` are clamped to it; a count below 1 is an error.
    """
    if count < 1:
        raise ValueError(f"set_num_threads: the thread count must be at least 1, not {count}")
    _entry(compiled, SET_NUM_THREADS, None, [ctypes.c_int32])(min(count, 2**31 - 1))
    return num_threads(compiled)


def num_threads(compiled: Any) -> int:
    """The thread count a compiled module's next parallel region will use."""
    return _entry(compiled, GET_NUM_THREADS, ctypes.c_int32, [])()


def release_workers(compiled: Any) -> None:
    """Stop and join the module's pool workers now (they restart on the next parallel region)."""
    _entry(compiled, SHUTDOWN, None, [])()


_SHARED: list[Any] = []  # the compiled process-wide pool, once built
_SHARED_LOCK = threading.RLock()


@jit.before_load
def ensure_shared_pool() -> None:
    """Build the process-wide pool (once) and register its entry for generated code to link."""
    if _SHARED:
        return
    with _SHARED_LOCK:
        if _SHARED:
            return
        import llvmlite.binding as llvm

        _SHARED.append(None)  # building: compile_ir below must not come back here
        module = ir.Module("ember_shared_pool")
        emitter = _Emitter(module, DEFAULT_MAX_THREADS, DEFAULT_SPIN_CYCLES)
        run = emitter.emit_pool()
        entry, builder = emitter.function(SHARED_RUN, VOID, list(run.function_type.args),
                                          internal=False)
        builder.call(run, list(entry.args))
        builder.ret_void()
        _reset, builder = emitter.function(SHARED_AFTER_FORK, VOID, [], internal=False)
        builder.store(I64(0), emitter.started)  # the parent's workers do not exist here
        builder.store(I64(0), emitter.pending)
        builder.store(I64(0), emitter.stop)
        builder.store_atomic(I32(0), emitter.init_state, "release", 4)  # fresh mutexes
        builder.ret_void()
        compiled = jit.compile_ir(module, cached=False)
        # Never freed: idle workers poll and sleep inside this code until the process exits.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(compiled))
        llvm.add_symbol(SHARED_RUN, compiled.address(SHARED_RUN))
        os.register_at_fork(after_in_child=_entry(compiled, SHARED_AFTER_FORK, None, []))
        _SHARED[0] = compiled


def attach_runtime(compiled: Any) -> Any:
    """Join the pool's workers when `compiled` is garbage collected (or at exit); returns it.

    Call it once on every compiled module that contains the parallel runtime: workers sleep
    inside the module's machine code, so they must be joined before that code is freed.
    """
    if not getattr(compiled, "_ember_workers_attached", False):
        shutdown = _entry(compiled, SHUTDOWN, None, [])
        weakref.finalize(compiled, shutdown)
        compiled._ember_workers_attached = True
    return compiled


# ---------------------------------------------------------------------------------------------
# IR generation


def _is_x86() -> bool:
    return Target.host().triple.startswith(("x86_64", "i386", "i686"))


@contextmanager
def counted_loop(builder: ir.IRBuilder, start: ir.Value, stop: ir.Value,
                 label: str = "loop") -> Iterator[ir.Value]:
    """`for (index = start; index < stop; ++index) { <the with-block> }` on i64 values."""
    function = builder.function
    header = function.append_basic_block(f"{label}.header")
    body = function.append_basic_block(f"{label}.body")
    done = function.append_basic_block(f"{label}.done")
    before = builder.block
    builder.branch(header)
    builder.position_at_end(header)
    index = builder.phi(I64, name=f"{label}.index")
    index.add_incoming(start, before)
    builder.cbranch(builder.icmp_signed("<", index, stop), body, done)
    builder.position_at_end(body)
    yield index
    index.add_incoming(builder.add(index, I64(1)), builder.block)
    builder.branch(header)
    builder.position_at_end(done)


class _Emitter:
    """Builds the runtime's globals and functions into one module."""

    def __init__(self, module: ir.Module, max_threads: int, spin_cycles: int) -> None:
        self.module = module
        self.max_threads = max_threads
        self.spin_cycles = spin_cycles
        entry_pointer = THREAD_ENTRY_TYPE.as_pointer()
        self.pthread_create = self.declare("pthread_create", I32, I64.as_pointer(), I8_POINTER,
                                           entry_pointer, I8_POINTER)
        self.pthread_join = self.declare("pthread_join", I32, I64, I8_POINTER.as_pointer())
        self.mutex_init = self.declare("pthread_mutex_init", I32, I8_POINTER, I8_POINTER)
        self.mutex_lock = self.declare("pthread_mutex_lock", I32, I8_POINTER)
        self.mutex_trylock = self.declare("pthread_mutex_trylock", I32, I8_POINTER)
        self.mutex_unlock = self.declare("pthread_mutex_unlock", I32, I8_POINTER)
        self.cond_init = self.declare("pthread_cond_init", I32, I8_POINTER, I8_POINTER)
        self.cond_wait = self.declare("pthread_cond_wait", I32, I8_POINTER, I8_POINTER)
        self.cond_signal = self.declare("pthread_cond_signal", I32, I8_POINTER)
        self.cond_broadcast = self.declare("pthread_cond_broadcast", I32, I8_POINTER)
        self.sched_yield = self.declare("sched_yield", I32)
        self.sigfillset = self.declare("sigfillset", I32, I8_POINTER)
        self.pthread_sigmask = self.declare("pthread_sigmask", I32, I32, I8_POINTER, I8_POINTER)
        self.read_cycle_counter = self.declare("llvm.readcyclecounter", I64)
        self.pause = self.declare("llvm.x86.sse2.pause", VOID) if _is_x86() else None
        self.run_chunk = self.emit_run_chunk()

    # --- small helpers

    def declare(self, name: str, result: ir.Type, *arguments: ir.Type) -> ir.Function:
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        return ir.Function(self.module, ir.FunctionType(result, arguments), name)

    def global_variable(self, name: str, value_type: ir.Type,
                        initializer: ir.Constant | None = None, internal: bool = True,
                        align: int = 8) -> ir.GlobalVariable:
        if name in self.module.globals:
            raise LoweringError(self.module.name, f"the module already defines `{name}`")
        variable = ir.GlobalVariable(self.module, value_type, name)
        variable.initializer = initializer if initializer is not None else value_type(None)
        variable.align = align
        if internal:
            variable.linkage = "internal"
        return variable

    def function(self, name: str, result: ir.Type, arguments: list[ir.Type],
                 internal: bool = True) -> tuple[ir.Function, ir.IRBuilder]:
        function = ir.Function(self.module, ir.FunctionType(result, arguments), name)
        if internal:
            function.linkage = "internal"
        return function, ir.IRBuilder(function.append_basic_block("entry"))

    def spin_until(self, builder: ir.IRBuilder, condition: Callable[[], ir.Value],
                   label: str) -> None:
        """Poll `condition()` (atomic loads only) until true or `spin_cycles` ticks pass."""
        if self.spin_cycles <= 0:
            return
        function = builder.function
        loop = function.append_basic_block(f"{label}.spin")
        polite = function.append_basic_block(f"{label}.yield")
        done = function.append_basic_block(f"{label}.spun")
        before = builder.block
        start = builder.call(self.read_cycle_counter, [])
        builder.branch(loop)
        builder.position_at_end(loop)
        count = builder.phi(I64, name=f"{label}.polls")
        count.add_incoming(I64(0), before)
        if self.pause is not None:
            builder.call(self.pause, [])
        elapsed = builder.sub(builder.call(self.read_cycle_counter, []), start)
        expired = builder.icmp_unsigned(">", elapsed, I64(self.spin_cycles))
        following = builder.add(count, I64(1))
        # Every YIELD_EVERY polls, give the CPU away: when threads outnumber free CPUs, the
        # thread being waited for may be runnable on this very CPU.
        should_yield = builder.icmp_unsigned(
            "==", builder.and_(following, I64(YIELD_EVERY - 1)), I64(0))
        proceed = builder.or_(condition(), expired)
        spin_on = function.append_basic_block(f"{label}.poll")
        count.add_incoming(following, polite)
        count.add_incoming(following, spin_on)
        builder.cbranch(proceed, done, spin_on)
        builder.position_at_end(spin_on)
        builder.cbranch(should_yield, polite, loop)
        builder.position_at_end(polite)
        builder.call(self.sched_yield, [])
        builder.branch(loop)
        builder.position_at_end(done)

    @staticmethod
    def byte_pointer(builder: ir.IRBuilder, variable: ir.GlobalVariable) -> ir.Value:
        return builder.bitcast(variable, I8_POINTER)

    # --- thread count

    def emit_thread_count_functions(self, num_threads: ir.GlobalVariable) -> None:
        setter, builder = self.function(SET_NUM_THREADS, VOID, [I32], internal=False)
        (count,) = setter.args
        count = builder.select(builder.icmp_signed("<", count, I32(1)), I32(1), count)
        limit = I32(self.max_threads)
        count = builder.select(builder.icmp_signed(">", count, limit), limit, count)
        builder.store_atomic(count, num_threads, "monotonic", 4)
        builder.ret_void()

        _getter, builder = self.function(GET_NUM_THREADS, I32, [], internal=False)
        builder.ret(builder.load_atomic(num_threads, "monotonic", 4))

    # --- chunk k of n over [begin, end)

    def emit_run_chunk(self) -> ir.Function:
        function, builder = self.function(
            "ember_run_chunk", VOID, [BODY_TYPE.as_pointer(), I8_POINTER, I64, I64, I64, I64])
        body, context, begin, end, chunks, index = function.args
        total = builder.sub(end, begin)
        base = builder.udiv(total, chunks, name="base")
        remainder = builder.urem(total, chunks, name="remainder")
        before = builder.select(builder.icmp_unsigned("<", index, remainder), index, remainder)
        start = builder.add(builder.add(begin, builder.mul(index, base)), before, name="start")
        extra = builder.zext(builder.icmp_unsigned("<", index, remainder), I64)
        stop = builder.add(builder.add(start, base), extra, name="stop")
        builder.call(body, [context, start, stop])
        builder.ret_void()
        return function

    # --- fork-join strategy

    def emit_spawn(self) -> ir.Function:
        # A task is {body, context, begin, end, chunks, index, thread, created}.
        task_type = ir.LiteralStructType(
            [BODY_TYPE.as_pointer(), I8_POINTER, I64, I64, I64, I64, I64, I64])

        entry, builder = self.function("ember_spawn_entry", I8_POINTER, [I8_POINTER])
        task = builder.bitcast(entry.args[0], task_type.as_pointer())
        fields = [builder.load(builder.gep(task, [I32(0), I32(i)])) for i in range(6)]
        builder.call(self.run_chunk, fields)
        builder.ret(I8_POINTER(None))

        run, builder = self.function(
            "ember_parallel_run", VOID, [BODY_TYPE.as_pointer(), I8_POINTER, I64, I64, I64])
        body, context, begin, end, chunks = run.args
        chunks = self.clamp_chunks(builder, chunks)
        tasks = builder.alloca(task_type, size=I64(self.max_threads), name="tasks")

        def field(index: ir.Value, number: int) -> ir.Value:
            return builder.gep(tasks, [index, I32(number)])

        def create(index: ir.Value) -> None:
            for number, value in enumerate([body, context, begin, end, chunks, index]):
                builder.store(value, field(index, number))
            argument = builder.bitcast(builder.gep(tasks, [index]), I8_POINTER)
            status = builder.call(self.pthread_create,
                                  [field(index, 6), I8_POINTER(None), entry, argument])
            created = builder.icmp_signed("==", status, I32(0))
            builder.store(builder.zext(created, I64), field(index, 7))
            with builder.if_then(builder.not_(created)):
                builder.call(self.run_chunk, [body, context, begin, end, chunks, index])

        def join(index: ir.Value) -> None:
            created = builder.icmp_signed("!=", builder.load(field(index, 7)), I64(0))
            with builder.if_then(created):
                builder.call(self.pthread_join,
                             [builder.load(field(index, 6)), I8_POINTER.as_pointer()(None)])

        with counted_loop(builder, I64(1), chunks, "create") as index:
            create(index)
        builder.call(self.run_chunk, [body, context, begin, end, chunks, I64(0)])
        with counted_loop(builder, I64(1), chunks, "join") as index:
            join(index)
        builder.ret_void()

        _shutdown, builder = self.function(SHUTDOWN, VOID, [], internal=False)
        builder.ret_void()
        return run

    def clamp_chunks(self, builder: ir.IRBuilder, chunks: ir.Value) -> ir.Value:
        limit = I64(self.max_threads)
        return builder.select(builder.icmp_signed(">", chunks, limit), limit, chunks,
                              name="chunks")

    # --- persistent pool strategy

    def emit_pool(self) -> ir.Function:
        array = ir.ArrayType
        self.init_state = self.global_variable("ember_pool_init_state", I32, align=4)
        self.region_mutex = self.global_variable("ember_pool_region_mutex", array(I8, MUTEX_BYTES))
        self.state_mutex = self.global_variable("ember_pool_state_mutex", array(I8, MUTEX_BYTES))
        self.work_cond = self.global_variable("ember_pool_work_cond", array(I8, COND_BYTES))
        self.done_cond = self.global_variable("ember_pool_done_cond", array(I8, COND_BYTES))
        # Guarded by the state mutex:
        self.generation = self.global_variable("ember_pool_generation", I64)
        self.pending = self.global_variable("ember_pool_pending", I64)
        self.stop = self.global_variable("ember_pool_stop", I64)
        self.job = self.global_variable(
            "ember_pool_job",
            ir.LiteralStructType([BODY_TYPE.as_pointer(), I8_POINTER, I64, I64, I64]))
        # Guarded by the region mutex (written by the thread that owns the pool):
        self.started = self.global_variable("ember_pool_started", I64)
        self.threads = self.global_variable("ember_pool_threads",
                                            array(I64, self.max_threads))
        # The generation each worker was created in (it waits for the next one).
        self.seen = self.global_variable("ember_pool_seen", array(I64, self.max_threads))

        self.ensure_initialized = self.emit_pool_initialize()
        self.worker = self.emit_pool_worker()
        self.start_workers = self.emit_start_workers()
        self.emit_pool_shutdown()
        return self.emit_pool_run()

    def lock(self, builder: ir.IRBuilder, mutex: ir.GlobalVariable) -> None:
        builder.call(self.mutex_lock, [self.byte_pointer(builder, mutex)])

    def unlock(self, builder: ir.IRBuilder, mutex: ir.GlobalVariable) -> None:
        builder.call(self.mutex_unlock, [self.byte_pointer(builder, mutex)])

    def emit_pool_initialize(self) -> ir.Function:
        """Initialize the mutexes and condition variables exactly once (0 -> 1 busy -> 2 ready)."""
        function, builder = self.function("ember_pool_initialize", VOID, [])
        check = function.append_basic_block("check")
        claim = function.append_basic_block("claim")
        initialize = function.append_basic_block("initialize")
        wait = function.append_basic_block("wait")
        ready = function.append_basic_block("ready")
        builder.branch(check)

        builder.position_at_end(check)
        state = builder.load_atomic(self.init_state, "acquire", 4)
        builder.cbranch(builder.icmp_signed("==", state, I32(2)), ready, claim)

        builder.position_at_end(claim)
        exchanged = builder.cmpxchg(self.init_state, I32(0), I32(1), "acq_rel", "acquire")
        builder.cbranch(builder.extract_value(exchanged, 1), initialize, wait)

        builder.position_at_end(initialize)
        null = I8_POINTER(None)
        for mutex in (self.region_mutex, self.state_mutex):
            builder.call(self.mutex_init, [self.byte_pointer(builder, mutex), null])
        for cond in (self.work_cond, self.done_cond):
            builder.call(self.cond_init, [self.byte_pointer(builder, cond), null])
        builder.store_atomic(I32(2), self.init_state, "release", 4)
        builder.branch(ready)

        builder.position_at_end(wait)  # another thread is initializing: yield until it is done
        builder.call(self.sched_yield, [])
        builder.branch(check)

        builder.position_at_end(ready)
        builder.ret_void()
        return function

    def emit_pool_worker(self) -> ir.Function:
        """Worker `w` (1-based) runs chunk `w` of every region that has more than `w` chunks."""
        function, builder = self.function("ember_pool_worker", I8_POINTER, [I8_POINTER])
        wait = function.append_basic_block("wait")
        sleep = function.append_basic_block("sleep")
        woken = function.append_basic_block("woken")
        leave = function.append_basic_block("leave")
        work = function.append_basic_block("work")

        worker = builder.ptrtoint(function.args[0], I64, name="worker")
        seen = builder.alloca(I64, name="seen")
        spun = builder.alloca(I8, name="spun")  # polled since the last job: sleep next time
        builder.store(I8(0), spun)
        self.lock(builder, self.state_mutex)
        slot = builder.gep(self.seen, [I32(0), builder.sub(worker, I64(1))])
        builder.store(builder.load(slot), seen)
        builder.branch(wait)

        # The state mutex is held from here on, except while running a chunk or sleeping.
        builder.position_at_end(wait)
        stopping = builder.icmp_signed("!=", builder.load(self.stop), I64(0))
        generation = builder.load(self.generation)
        fresh = builder.icmp_signed("!=", generation, builder.load(seen))
        builder.cbranch(builder.or_(stopping, fresh), woken, sleep)

        builder.position_at_end(sleep)
        if self.spin_cycles > 0:
            poll = function.append_basic_block("poll")
            block = function.append_basic_block("block")
            builder.cbranch(builder.icmp_signed("==", builder.load(spun), I8(0)), poll, block)
            builder.position_at_end(poll)
            builder.store(I8(1), spun)
            self.unlock(builder, self.state_mutex)
            expected = builder.load(seen)

            def job_or_stop() -> ir.Value:
                generation = builder.load_atomic(self.generation, "monotonic", 8)
                stop = builder.load_atomic(self.stop, "monotonic", 8)
                return builder.or_(builder.icmp_signed("!=", generation, expected),
                                   builder.icmp_signed("!=", stop, I64(0)))

            self.spin_until(builder, job_or_stop, "worker")
            self.lock(builder, self.state_mutex)
            builder.branch(wait)
            builder.position_at_end(block)
        builder.call(self.cond_wait, [self.byte_pointer(builder, self.work_cond),
                                      self.byte_pointer(builder, self.state_mutex)])
        builder.branch(wait)

        builder.position_at_end(woken)
        builder.store(generation, seen)
        builder.store(I8(0), spun)
        chunks = builder.load(builder.gep(self.job, [I32(0), I32(4)]))
        participating = builder.icmp_signed("<", worker, chunks)
        builder.cbranch(stopping, leave, work)

        builder.position_at_end(leave)
        self.unlock(builder, self.state_mutex)
        builder.ret(I8_POINTER(None))

        builder.position_at_end(work)
        with builder.if_then(participating):
            job = [builder.load(builder.gep(self.job, [I32(0), I32(i)])) for i in range(4)]
            self.unlock(builder, self.state_mutex)
            builder.call(self.run_chunk, [*job, chunks, worker])
            self.lock(builder, self.state_mutex)
            remaining = builder.sub(builder.load(self.pending), I64(1))
            builder.store_atomic(remaining, self.pending, "release", 8)
            with builder.if_then(builder.icmp_signed("==", remaining, I64(0))):
                builder.call(self.cond_signal, [self.byte_pointer(builder, self.done_cond)])
        builder.branch(wait)
        return function

    def emit_start_workers(self) -> ir.Function:
        """Start workers until there are `wanted`; returns how many run (fewer if creation fails).

        Called with the region mutex held. Workers are created with every signal blocked.
        """
        function, builder = self.function("ember_pool_start_workers", I64, [I64])
        (wanted,) = function.args
        header = function.append_basic_block("header")
        create = function.append_basic_block("create")
        created = function.append_basic_block("created")
        done = function.append_basic_block("done")

        blocked = builder.alloca(I8, size=I64(SIGSET_BYTES), name="blocked")
        previous = builder.alloca(I8, size=I64(SIGSET_BYTES), name="previous")
        blocked.align = previous.align = 8
        builder.call(self.sigfillset, [blocked])
        builder.call(self.pthread_sigmask, [I32(SIG_SETMASK), blocked, previous])
        entry = builder.block
        first = builder.load(self.started)
        builder.branch(header)

        builder.position_at_end(header)
        count = builder.phi(I64, name="count")
        count.add_incoming(first, entry)
        builder.cbranch(builder.icmp_signed("<", count, wanted), create, done)

        builder.position_at_end(create)
        builder.store(builder.load(self.generation), builder.gep(self.seen, [I32(0), count]))
        worker = builder.add(count, I64(1))
        status = builder.call(self.pthread_create, [
            builder.gep(self.threads, [I32(0), count]), I8_POINTER(None), self.worker,
            builder.inttoptr(worker, I8_POINTER)])
        builder.cbranch(builder.icmp_signed("==", status, I32(0)), created, done)

        builder.position_at_end(created)
        builder.store(worker, self.started)
        count.add_incoming(worker, created)
        builder.branch(header)

        builder.position_at_end(done)
        builder.call(self.pthread_sigmask, [I32(SIG_SETMASK), previous, I8_POINTER(None)])
        builder.ret(builder.load(self.started))
        return function

    def emit_no_shutdown(self) -> None:
        """`ember_pool_shutdown` of a module on the shared pool: nothing of its own to join."""
        _function, builder = self.function(SHUTDOWN, VOID, [], internal=False)
        builder.ret_void()

    def emit_pool_shutdown(self) -> None:
        _function, builder = self.function(SHUTDOWN, VOID, [], internal=False)
        initialized = builder.load_atomic(self.init_state, "acquire", 4)
        with builder.if_then(builder.icmp_signed("==", initialized, I32(2))):
            self.lock(builder, self.region_mutex)
            self.lock(builder, self.state_mutex)
            builder.store_atomic(I64(1), self.stop, "release", 8)
            builder.call(self.cond_broadcast, [self.byte_pointer(builder, self.work_cond)])
            self.unlock(builder, self.state_mutex)
            started = builder.load(self.started)
            with counted_loop(builder, I64(0), started, "join") as index:
                thread = builder.load(builder.gep(self.threads, [I32(0), index]))
                builder.call(self.pthread_join, [thread, I8_POINTER.as_pointer()(None)])
            builder.store(I64(0), self.started)
            builder.store_atomic(I64(0), self.stop, "release", 8)
            self.unlock(builder, self.region_mutex)
        builder.ret_void()

    def emit_pool_run(self) -> ir.Function:
        function, builder = self.function(
            "ember_parallel_run", VOID, [BODY_TYPE.as_pointer(), I8_POINTER, I64, I64, I64])
        body, context, begin, end, chunks = function.args
        owned = function.append_basic_block("owned")
        threaded = function.append_basic_block("threaded")
        released = function.append_basic_block("released")
        serial = function.append_basic_block("serial")
        join = function.append_basic_block("join")
        sleep = function.append_basic_block("sleep")
        joined = function.append_basic_block("joined")

        builder.call(self.ensure_initialized, [])
        busy = builder.call(self.mutex_trylock, [self.byte_pointer(builder, self.region_mutex)])
        builder.cbranch(builder.icmp_signed("==", busy, I32(0)), owned, serial)

        builder.position_at_end(owned)
        chunks = self.clamp_chunks(builder, chunks)
        workers = builder.call(self.start_workers, [builder.sub(chunks, I64(1))])
        workers_plus_caller = builder.add(workers, I64(1))
        chunks = builder.select(builder.icmp_signed("<", workers_plus_caller, chunks),
                                workers_plus_caller, chunks, name="chunks")
        builder.cbranch(builder.icmp_signed(">", chunks, I64(1)), threaded, released)

        builder.position_at_end(threaded)
        self.lock(builder, self.state_mutex)
        for number, value in enumerate([body, context, begin, end, chunks]):
            builder.store(value, builder.gep(self.job, [I32(0), I32(number)]))
        builder.store_atomic(builder.sub(chunks, I64(1)), self.pending, "release", 8)
        following = builder.add(builder.load(self.generation), I64(1))
        builder.store_atomic(following, self.generation, "release", 8)
        builder.call(self.cond_broadcast, [self.byte_pointer(builder, self.work_cond)])
        self.unlock(builder, self.state_mutex)
        builder.call(self.run_chunk, [body, context, begin, end, chunks, I64(0)])
        self.spin_until(builder, lambda: builder.icmp_signed(
            "==", builder.load_atomic(self.pending, "acquire", 8), I64(0)), "join")
        self.lock(builder, self.state_mutex)
        builder.branch(join)

        builder.position_at_end(join)
        waiting = builder.icmp_signed("!=", builder.load(self.pending), I64(0))
        builder.cbranch(waiting, sleep, joined)

        builder.position_at_end(sleep)
        builder.call(self.cond_wait, [self.byte_pointer(builder, self.done_cond),
                                      self.byte_pointer(builder, self.state_mutex)])
        builder.branch(join)

        builder.position_at_end(joined)
        self.unlock(builder, self.state_mutex)
        self.unlock(builder, self.region_mutex)
        builder.ret_void()

        # No workers could be started: run the whole range here.
        builder.position_at_end(released)
        self.unlock(builder, self.region_mutex)
        builder.call(body, [context, begin, end])
        builder.ret_void()

        # The pool is busy (another caller, or a loop nested in a chunk): run the range serially.
        builder.position_at_end(serial)
        builder.call(body, [context, begin, end])
        builder.ret_void()
        return function
