"""Parallel loops in generated code: results against numpy, chunking, concurrency, thread counts."""

from __future__ import annotations

import ctypes
import gc
import os
import re
import threading

import numpy as np
import pytest
from llvmlite import ir

from ember.backend.cpu import threads
from ember.backend.cpu.threads import (
    BODY_TYPE,
    attach_runtime,
    counted_loop,
    emit_parallel_runtime,
    num_threads,
    release_workers,
    set_num_threads,
)
from ember.backend.llvm.jit import compile_ir
from ember.errors import LoweringError

F32, I32, I64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
VOID_P, INT64 = ctypes.c_void_p, ctypes.c_int64
SIZES = [0, 1, 7, 1000, 10**6]
THREAD_COUNTS = [1, 2, 3, 8]
STRATEGIES = ["pool", "spawn", "shared"]
MAX_RECORDS = 64


def field(builder: ir.IRBuilder, context: ir.Value, struct: ir.Type, index: int) -> ir.Value:
    typed = builder.bitcast(context, struct.as_pointer())
    return builder.load(builder.gep(typed, [I32(0), I32(index)]))


def entry_point(module: ir.Module, name: str, struct: ir.LiteralStructType,
                extra: list[ir.Type]) -> tuple[ir.Function, ir.IRBuilder, ir.Value]:
    """`void name(<struct fields>..., <extra>...)`: stores the fields in a stack context."""
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [*struct.elements, *extra]),
                           name)
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    context = builder.alloca(struct)
    for index in range(len(struct.elements)):
        builder.store(function.args[index], builder.gep(context, [I32(0), I32(index)]))
    return function, builder, context


def build_kernels(strategy: str, min_chunk: int = 1, **options: object) -> ir.Module:
    """Four kernels that use `parallel_for`.

    axpy(x, y, begin, end):      y[i] += 3 * x[i] for i in [begin, end)   (float32)
    total(x, result, n):         *result = sum(x[0:n])                     (int64, atomic add)
    record(log, begin, end):     log = {count, (chunk_begin, chunk_end, pthread_self)...}
    nested(x, y, rows, cols):    parallel over rows, each row's axpy parallel over columns
    """
    module = ir.Module(f"kernels_{strategy}")
    runtime = emit_parallel_runtime(module, strategy=strategy, **options)
    pointer = F32.as_pointer()

    axpy_context = ir.LiteralStructType([pointer, pointer])
    body = ir.Function(module, BODY_TYPE, "axpy_body")
    builder = ir.IRBuilder(body.append_basic_block("entry"))
    x, y = (field(builder, body.args[0], axpy_context, i) for i in range(2))
    with counted_loop(builder, body.args[1], body.args[2]) as index:
        product = builder.fmul(builder.load(builder.gep(x, [index])), F32(3.0))
        target = builder.gep(y, [index])
        builder.store(builder.fadd(builder.load(target), product), target)
    builder.ret_void()
    axpy_body = body
    function, builder, context = entry_point(module, "axpy", axpy_context, [I64, I64])
    runtime.parallel_for(builder, axpy_body, context, function.args[2], function.args[3],
                         min_chunk=min_chunk)
    builder.ret_void()

    total_context = ir.LiteralStructType([I64.as_pointer(), I64.as_pointer()])
    body = ir.Function(module, BODY_TYPE, "total_body")
    builder = ir.IRBuilder(body.append_basic_block("entry"))
    x, result = (field(builder, body.args[0], total_context, i) for i in range(2))
    partial = builder.alloca(I64)
    builder.store(I64(0), partial)
    with counted_loop(builder, body.args[1], body.args[2]) as index:
        builder.store(builder.add(builder.load(partial), builder.load(builder.gep(x, [index]))),
                      partial)
    builder.atomic_rmw("add", result, builder.load(partial), "monotonic")
    builder.ret_void()
    function, builder, context = entry_point(module, "total", total_context, [I64])
    runtime.parallel_for(builder, body, context, 0, function.args[2], min_chunk=min_chunk)
    builder.ret_void()

    pthread_self = ir.Function(module, ir.FunctionType(I64, []), "pthread_self")
    record_context = ir.LiteralStructType([I64.as_pointer()])
    body = ir.Function(module, BODY_TYPE, "record_body")
    builder = ir.IRBuilder(body.append_basic_block("entry"))
    log = field(builder, body.args[0], record_context, 0)
    slot = builder.atomic_rmw("add", log, I64(1), "monotonic")
    base = builder.add(builder.mul(slot, I64(3)), I64(1))
    values = [body.args[1], body.args[2], builder.call(pthread_self, [])]
    for offset, value in enumerate(values):
        builder.store(value, builder.gep(log, [builder.add(base, I64(offset))]))
    builder.ret_void()
    function, builder, context = entry_point(module, "record", record_context, [I64, I64])
    runtime.parallel_for(builder, body, context, function.args[1], function.args[2],
                         min_chunk=min_chunk)
    builder.ret_void()

    # nested: context {x, y, cols}; row body runs axpy over the row's columns in parallel.
    nested_context = ir.LiteralStructType([pointer, pointer, I64])
    body = ir.Function(module, BODY_TYPE, "row_body")
    builder = ir.IRBuilder(body.append_basic_block("entry"))
    x, y, cols = (field(builder, body.args[0], nested_context, i) for i in range(3))
    with counted_loop(builder, body.args[1], body.args[2], "rows") as row:
        offset = builder.mul(row, cols)
        inner = builder.alloca(axpy_context)
        builder.store(builder.gep(x, [offset]), builder.gep(inner, [I32(0), I32(0)]))
        builder.store(builder.gep(y, [offset]), builder.gep(inner, [I32(0), I32(1)]))
        runtime.parallel_for(builder, axpy_body, inner, 0, cols)
    builder.ret_void()
    function, builder, context = entry_point(module, "nested", nested_context, [I64])
    runtime.parallel_for(builder, body, context, 0, function.args[3])
    builder.ret_void()
    return module


class Kernels:
    def __init__(self, strategy: str, min_chunk: int = 1, **options: object) -> None:
        self.compiled = attach_runtime(compile_ir(build_kernels(strategy, min_chunk, **options)))
        self.axpy = self.compiled.function("axpy", None, [VOID_P, VOID_P, INT64, INT64])
        self.total = self.compiled.function("total", None, [VOID_P, VOID_P, INT64])
        self.record = self.compiled.function("record", None, [VOID_P, INT64, INT64])
        self.nested = self.compiled.function("nested", None, [VOID_P, VOID_P, INT64, INT64])

    def chunks(self, begin: int, end: int) -> list[tuple[int, int, int]]:
        """(chunk_begin, chunk_end, thread id) of every body call, sorted by chunk_begin."""
        log = np.zeros(1 + 3 * MAX_RECORDS, dtype=np.int64)
        self.record(log.ctypes.data, begin, end)
        count = int(log[0])
        assert count <= MAX_RECORDS
        rows = log[1:1 + 3 * count].reshape(count, 3)
        return sorted((int(a), int(b), int(t)) for a, b, t in rows)


@pytest.fixture(scope="module", params=STRATEGIES)
def kernels(request: pytest.FixtureRequest) -> Kernels:
    return Kernels(request.param)


def expected_chunks(begin: int, end: int, count: int) -> list[tuple[int, int]]:
    """Contiguous static chunks: the first (end - begin) % count chunks are one longer."""
    base, remainder = divmod(end - begin, count)
    bounds, start = [], begin
    for index in range(count):
        stop = start + base + (1 if index < remainder else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


@pytest.mark.parametrize("thread_count", THREAD_COUNTS)
@pytest.mark.parametrize("size", SIZES)
def test_axpy_matches_numpy_and_writes_each_element_once(kernels: Kernels, size: int,
                                                        thread_count: int) -> None:
    set_num_threads(kernels.compiled, thread_count)
    rng = np.random.default_rng(size + thread_count)
    x = rng.standard_normal(size).astype(np.float32)
    start = rng.standard_normal(size).astype(np.float32)
    y = start.copy()
    kernels.axpy(x.ctypes.data, y.ctypes.data, 0, size)
    # An element written twice would have 3x added twice; one never written keeps its start.
    np.testing.assert_array_equal(y, start + np.float32(3.0) * x)


@pytest.mark.parametrize("thread_count", THREAD_COUNTS)
@pytest.mark.parametrize("size", SIZES)
def test_integer_sum_is_exact(kernels: Kernels, size: int, thread_count: int) -> None:
    set_num_threads(kernels.compiled, thread_count)
    x = np.random.default_rng(size).integers(-(10**9), 10**9, size, dtype=np.int64)
    result = np.zeros(1, dtype=np.int64)
    kernels.total(x.ctypes.data, result.ctypes.data, size)
    assert int(result[0]) == int(x.sum())


@pytest.mark.parametrize("thread_count", THREAD_COUNTS)
@pytest.mark.parametrize("begin, end", [(0, 0), (5, 5), (9, 4), (3, 4), (10, 17), (-20, 980),
                                        (100, 10**6 + 100)])
def test_bodies_see_disjoint_chunks_covering_the_range(kernels: Kernels, begin: int, end: int,
                                                       thread_count: int) -> None:
    set_num_threads(kernels.compiled, thread_count)
    chunks = kernels.chunks(begin, end)
    size = max(end - begin, 0)
    count = min(thread_count, size)
    if count == 0:
        assert chunks == []
        return
    assert [(a, b) for a, b, _ in chunks] == expected_chunks(begin, end, count)
    caller = threading.get_ident()  # pthread_self of this thread on Linux
    assert chunks[0][2] == caller  # the calling thread takes the first chunk
    assert len({thread for _, _, thread in chunks}) == count  # one thread per chunk


def test_min_chunk_keeps_short_ranges_serial() -> None:
    kernels = Kernels("pool", min_chunk=1000)
    set_num_threads(kernels.compiled, 2)
    caller = threading.get_ident()
    assert kernels.chunks(0, 1999) == [(0, 1999, caller)]
    chunks = kernels.chunks(0, 2000)
    assert [(a, b) for a, b, _ in chunks] == [(0, 1000), (1000, 2000)]
    set_num_threads(kernels.compiled, 8)
    assert [(a, b) for a, b, _ in kernels.chunks(0, 3500)] == expected_chunks(0, 3500, 3)


@pytest.mark.parametrize("thread_count", [1, 2, 3])
def test_nested_parallel_loops_run_and_match_numpy(kernels: Kernels, thread_count: int) -> None:
    set_num_threads(kernels.compiled, thread_count)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((13, 301)).astype(np.float32)
    start = rng.standard_normal((13, 301)).astype(np.float32)
    y = start.copy()
    kernels.nested(x.ctypes.data, y.ctypes.data, 301, 13)
    np.testing.assert_array_equal(y, start + np.float32(3.0) * x)


def run_concurrently(jobs: list, repeats: int) -> None:
    errors: list[BaseException] = []

    def worker(job) -> None:
        try:
            for _ in range(repeats):
                job()
        except BaseException as error:  # reported in the main thread
            errors.append(error)

    workers = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        raise errors[0]


def axpy_job(kernels: Kernels, seed: int, size: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(size).astype(np.float32)
    start = rng.standard_normal(size).astype(np.float32)
    expected = start + np.float32(3.0) * x

    def job() -> None:
        y = start.copy()
        kernels.axpy(x.ctypes.data, y.ctypes.data, 0, size)
        np.testing.assert_array_equal(y, expected)

    return job


def test_two_python_threads_call_the_same_function(kernels: Kernels) -> None:
    set_num_threads(kernels.compiled, 2)
    run_concurrently([axpy_job(kernels, 1, 20_000), axpy_job(kernels, 2, 30_001)], repeats=150)


def test_two_python_threads_call_the_same_module_nested_and_flat(kernels: Kernels) -> None:
    set_num_threads(kernels.compiled, 3)
    rng = np.random.default_rng(3)
    x = rng.integers(-1000, 1000, 50_000, dtype=np.int64)

    def total_job() -> None:
        result = np.zeros(1, dtype=np.int64)
        kernels.total(x.ctypes.data, result.ctypes.data, x.size)
        assert int(result[0]) == int(x.sum())

    run_concurrently([total_job, axpy_job(kernels, 4, 10_000)], repeats=150)


def test_two_python_threads_call_different_modules() -> None:
    first, second = Kernels("pool"), Kernels("spawn")
    for kernels in (first, second):
        set_num_threads(kernels.compiled, 2)
    run_concurrently([axpy_job(first, 5, 25_000), axpy_job(second, 6, 25_000)], repeats=100)


def test_thread_count_setter_and_default() -> None:
    kernels = Kernels("pool", max_threads=16)
    compiled = kernels.compiled
    assert num_threads(compiled) == min(len(os.sched_getaffinity(0)), 16)
    assert set_num_threads(compiled, 3) == 3
    assert num_threads(compiled) == 3
    assert [(a, b) for a, b, _ in kernels.chunks(0, 9)] == [(0, 3), (3, 6), (6, 9)]
    assert set_num_threads(compiled, 1000) == 16  # clamped to max_threads
    raw_setter = compiled.function("ember_set_num_threads", None, [ctypes.c_int32])
    raw_setter(-5)  # the generated setter clamps to 1
    assert num_threads(compiled) == 1
    with pytest.raises(ValueError, match="thread count must be at least 1, not 0"):
        set_num_threads(compiled, 0)
    assert num_threads(Kernels("spawn", default_threads=5).compiled) == 5


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc/self/task")
def test_pool_workers_start_lazily_and_are_joined() -> None:
    before = task_count()
    kernels = Kernels("pool")
    set_num_threads(kernels.compiled, 4)
    kernels.chunks(0, 3)  # three chunks: the caller and two workers
    assert task_count() == before + 2
    kernels.chunks(0, 100)  # four chunks: one more worker
    assert task_count() == before + 3
    release_workers(kernels.compiled)
    assert task_count() == before
    assert len(kernels.chunks(0, 100)) == 4  # the pool restarts on the next region
    assert task_count() == before + 3
    del kernels  # attach_runtime joins the workers before the machine code is freed
    gc.collect()
    assert task_count() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc/self/task")
def test_one_thread_starts_no_workers() -> None:
    before = task_count()
    kernels = Kernels("pool")
    set_num_threads(kernels.compiled, 1)
    assert kernels.chunks(0, 10**6) == [(0, 10**6, threading.get_ident())]
    assert task_count() == before


def test_runtime_calls_only_libc_and_pthread() -> None:
    module = ir.Module("runtime_only")
    emit_parallel_runtime(module)
    declared = set(re.findall(r"^declare .*?@\"?([\w.]+)\"?\(", str(module), re.MULTILINE))
    assert declared <= {"pthread_create", "pthread_join", "pthread_mutex_init",
                        "pthread_mutex_lock", "pthread_mutex_trylock", "pthread_mutex_unlock",
                        "pthread_cond_init", "pthread_cond_wait", "pthread_cond_signal",
                        "pthread_cond_broadcast", "sched_yield", "sigfillset",
                        "pthread_sigmask", "llvm.readcyclecounter", "llvm.x86.sse2.pause"}
    assert {"pthread_create", "pthread_cond_wait"} <= declared
    assert emit_parallel_runtime(module) is emit_parallel_runtime(module)  # added once


def test_pool_without_spinning_is_correct() -> None:
    kernels = Kernels("pool", spin_cycles=0)
    set_num_threads(kernels.compiled, 3)
    run_concurrently([axpy_job(kernels, 8, 1001), axpy_job(kernels, 9, 999)], repeats=50)


def test_errors_name_the_body_and_the_option() -> None:
    module = ir.Module("errors")
    runtime = emit_parallel_runtime(module)
    wrong = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64]), "wrong_body")
    caller = ir.Function(module, ir.FunctionType(ir.VoidType(), []), "caller")
    builder = ir.IRBuilder(caller.append_basic_block("entry"))
    context = ir.Constant(ir.IntType(8).as_pointer(), None)
    with pytest.raises(LoweringError, match=r'"wrong_body": a parallel loop body must have type '
                                            r"`void \(i8\*, i64, i64\)`, not `void \(i64\)`"):
        runtime.parallel_for(builder, wrong, context, 0, 10)
    right = ir.Function(module, BODY_TYPE, "right_body")
    with pytest.raises(LoweringError, match="min_chunk must be at least 1, not 0"):
        runtime.parallel_for(builder, right, context, 0, 10, min_chunk=0)
    with pytest.raises(LoweringError, match="already has a parallel runtime with strategy 'pool'"):
        emit_parallel_runtime(module, strategy="spawn")
    with pytest.raises(LoweringError, match="unknown parallel strategy 'openmp'; expected one "
                                            "of pool, spawn"):
        emit_parallel_runtime(ir.Module("other"), strategy="openmp")


def test_available_cpus_matches_the_affinity_mask() -> None:
    assert threads.available_cpus() == len(os.sched_getaffinity(0))


def test_narrow_integer_bounds_are_sign_extended() -> None:
    module = ir.Module("narrow")
    runtime = emit_parallel_runtime(module, default_threads=2)
    body = ir.Function(module, BODY_TYPE, "sum_body")  # *(i64*)context += sum of indices
    builder = ir.IRBuilder(body.append_basic_block("entry"))
    target = builder.bitcast(body.args[0], I64.as_pointer())
    with counted_loop(builder, body.args[1], body.args[2]) as index:
        builder.atomic_rmw("add", target, index, "monotonic")
    builder.ret_void()
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64.as_pointer(), I32, I32]),
                           "sum_range")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    runtime.parallel_for(builder, body, function.args[0], function.args[1], function.args[2])
    builder.ret_void()
    compiled = attach_runtime(compile_ir(module))
    sum_range = compiled.function("sum_range", None, [VOID_P, ctypes.c_int32, ctypes.c_int32])
    result = np.zeros(1, dtype=np.int64)
    sum_range(result.ctypes.data, -1000, 2001)
    assert int(result[0]) == sum(range(-1000, 2001))
    with pytest.raises(LoweringError, match="a loop bound must be an integer, not `float`"):
        runtime.parallel_for(builder, body, function.args[0], F32(0.0), 10)


def build_spinner(strategy: str, **options: object) -> ir.Module:
    """`spin(log, ticks, count)`: each of `count` chunks (one iteration each) busy-waits `ticks`
    time stamp counter ticks and writes log[3 * k .. 3 * k + 2] = start, end, pthread_self."""
    module = ir.Module(f"spinner_{strategy}")
    runtime = emit_parallel_runtime(module, strategy=strategy, **options)
    counter = module.globals.get("llvm.readcyclecounter") or ir.Function(
        module, ir.FunctionType(I64, []), "llvm.readcyclecounter")
    pthread_self = ir.Function(module, ir.FunctionType(I64, []), "pthread_self")
    spin_context = ir.LiteralStructType([I64.as_pointer(), I64])
    body = ir.Function(module, BODY_TYPE, "spin_body")
    builder = ir.IRBuilder(body.append_basic_block("entry"))
    log, ticks = (field(builder, body.args[0], spin_context, i) for i in range(2))
    start = builder.call(counter, [])
    loop = body.append_basic_block("spin")
    done = body.append_basic_block("done")
    builder.branch(loop)
    builder.position_at_end(loop)
    now = builder.call(counter, [])
    builder.cbranch(builder.icmp_unsigned("<", builder.sub(now, start), ticks), loop, done)
    builder.position_at_end(done)
    base = builder.mul(body.args[1], I64(3))
    for offset, value in enumerate([start, now, builder.call(pthread_self, [])]):
        builder.store(value, builder.gep(log, [builder.add(base, I64(offset))]))
    builder.ret_void()
    function, builder, context = entry_point(module, "spin", spin_context, [I64])
    runtime.parallel_for(builder, body, context, 0, function.args[2])
    builder.ret_void()
    return module


# ~40 ms at 2.6 GHz: long next to a wake-up (tens of microseconds) and to a scheduler slice.
SPIN_TICKS = 100_000_000


@pytest.mark.skipif(threads.available_cpus() < 2, reason="needs two CPUs")
@pytest.mark.parametrize(("strategy", "spin_cycles"), [("pool", threads.DEFAULT_SPIN_CYCLES),
                                                       ("pool", 0), ("spawn", 0)])
def test_two_long_chunks_run_at_the_same_time(strategy: str, spin_cycles: int) -> None:
    """The worker must start its chunk while the caller is still in its own: a region whose
    chunks run one after the other (serial fallback, a worker that only sees the job once the
    caller waits, a lock held across the caller's chunk) fails this."""
    compiled = attach_runtime(compile_ir(build_spinner(strategy, spin_cycles=spin_cycles)))
    spin = compiled.function("spin", None, [VOID_P, INT64, INT64])
    set_num_threads(compiled, 2)
    log = np.zeros(6, dtype=np.int64)
    spin(log.ctypes.data, 1000, 2)  # starts the pool
    # Three regions, the worker polling (back to back) and asleep (after a pause).
    for pause in (0.0, 0.0, 0.05):
        threading.Event().wait(pause)
        log[:] = 0
        spin(log.ctypes.data, SPIN_TICKS, 2)
        (start0, end0, thread0), (start1, end1, thread1) = log.reshape(2, 3).tolist()
        assert thread0 == threading.get_ident() and thread1 != thread0
        assert end0 - start0 >= SPIN_TICKS and end1 - start1 >= SPIN_TICKS
        # Overlap of [start0, end0) and [start1, end1) (the counter is shared by the CPUs).
        assert max(start0, start1) < min(end0, end1), (
            f"{strategy}: chunk 1 ran [{start1}, {end1}), chunk 0 [{start0}, {end0}): "
            f"not at the same time")
    release_workers(compiled)
