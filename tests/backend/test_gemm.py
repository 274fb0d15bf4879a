"""The generated matmul against float64 numpy: odd shapes, block edges, row ranges, epilogues."""

from __future__ import annotations

import ctypes
import re
import threading

import numpy as np
import pytest
from llvmlite import ir

from ember.backend.cpu.gemm import (
    GemmBlocking,
    blocking_for,
    column_mask,
    default_blocking,
    emit_gemm,
    extra_arguments,
    gemm_scratch_bytes,
    masked_load,
    pack_b_transposed,
    splat,
    transpose_vectors,
)
from ember.backend.llvm.jit import compile_ir, host_cpu
from ember.target import Target

# Small blocks make every loop level (several KC, MC and NC blocks) run on small shapes.
TINY = GemmBlocking(mr=14, nr_vectors=2, kc=16, mc=28, nc=64)
TINY_WIDE = GemmBlocking(mr=6, nr_vectors=4, kc=16, mc=24, nc=128)
TINY_AVX2 = GemmBlocking(mr=6, nr_vectors=2, kc=8, mc=12, nc=32)
GUARD = 256  # bytes after the scratch that the kernel must leave alone

# name -> (m, n, k, keyword arguments of emit_gemm)
KERNELS: dict[str, tuple[int, int, int, dict]] = {
    "square64": (64, 64, 64, {}),
    "one": (1, 1, 1, {}),
    "odd_7x13x5": (7, 13, 5, {}),
    "odd_33x65x17": (33, 65, 17, {}),
    "column_100x1x300": (100, 1, 300, {}),
    "row_1x1000x1": (1, 1000, 1, {}),
    "past_mc_127x40x9": (127, 40, 9, {}),
    "past_kc_15x33x513": (15, 33, 513, {}),
    "deep_split_9x20x2100": (9, 20, 2100, {}),  # K above 1024: equal depth blocks
    "narrow_64x10x512": (64, 10, 512, {}),  # one vector across, 8 rows
    "narrow_25x40x30": (25, 40, 30, {}),  # three vectors across
    "wide_tiny_25x130x35": (25, 130, 35, {"blocking": TINY_WIDE}),
    "tiny_exact_28x64x32": (28, 64, 32, {"blocking": TINY}),
    "tiny_over_29x65x33": (29, 65, 33, {"blocking": TINY}),
    "tiny_under_27x63x15": (27, 63, 15, {"blocking": TINY}),
    "tiny_many_57x129x47": (57, 129, 47, {"blocking": TINY}),
    "f64_19x21x23": (19, 21, 23, {"dtype": "f64"}),
    "f64_tiny_31x40x37": (31, 40, 37, {"dtype": "f64", "blocking": TINY}),
    "avx2_17x19x21": (17, 19, 21, {"lanes": 8}),
    "avx2_tiny_25x41x19": (25, 41, 19, {"lanes": 8, "blocking": TINY_AVX2}),
}
ARGTYPES = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_void_p]
EPILOGUE_SHAPE = (23, 37, 41)  # edge tiles in both directions, three K blocks with TINY


def bias_row_relu(builder: ir.IRBuilder, vector: ir.Value, row: ir.Value,
                  col: ir.Value) -> ir.Value:
    """relu(x + bias[col] + row_offset[row]), loading from the two extra arguments."""
    bias, row_offset = extra_arguments(builder)
    lanes = vector.type.count
    mask = column_mask(builder, col, EPILOGUE_SHAPE[1], lanes)
    value = builder.fadd(vector, masked_load(builder, builder.gep(bias, [col]), mask,
                                             vector.type))
    value = builder.fadd(value, splat(builder, builder.load(builder.gep(row_offset, [row])),
                                      lanes))
    zero = ir.Constant(vector.type, None)
    return builder.select(builder.fcmp_ordered(">", value, zero), value, zero)


@pytest.fixture(scope="module")
def compiled():
    """Every kernel in one module, compiled once (one JIT engine for the whole file)."""
    module = ir.Module("test_gemm")
    for name, (m, n, k, options) in KERNELS.items():
        emit_gemm(module, name, m, n, k, **options)
    f32_pointer = ir.FloatType().as_pointer()
    emit_gemm(module, "epilogue", *EPILOGUE_SHAPE, epilogue=bias_row_relu, blocking=TINY,
              extra_args=[f32_pointer, f32_pointer])
    return compile_ir(module)


def aligned_scratch(nbytes: int) -> np.ndarray:
    raw = np.full(nbytes + GUARD + 64, 0x5A, np.uint8)
    offset = (-raw.ctypes.data) % 64
    return raw[offset:offset + nbytes + GUARD]


def operands(m: int, n: int, k: int, dtype: type, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    return a, b


def assert_close(actual: np.ndarray, a: np.ndarray, b: np.ndarray, dtype: type) -> None:
    """Elementwise: |C - A@B| <= tol * sqrt(K) * (|A| @ |B|), all in float64."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    reference = a64 @ b64
    scale = np.abs(a64) @ np.abs(b64) + 1e-30
    tolerance = (1e-5 if dtype == np.float32 else 1e-13) * np.sqrt(a.shape[1])
    error = np.abs(actual.astype(np.float64) - reference) / scale
    assert error.max() <= tolerance, f"max scaled error {error.max():.2e} > {tolerance:.2e}"


def run(compiled, name: str, a, b, c, row_begin: int, row_end: int,
        scratch: np.ndarray, *extra: int) -> None:
    function = compiled.function(name, None, ARGTYPES + [ctypes.c_void_p] * len(extra))
    function(a.ctypes.data, b.ctypes.data, c.ctypes.data, row_begin, row_end, scratch.ctypes.data,
             *extra)


@pytest.mark.parametrize("name", list(KERNELS))
def test_matches_float64_numpy(compiled, name: str) -> None:
    m, n, k, options = KERNELS[name]
    dtype = np.float64 if options.get("dtype") == "f64" else np.float32
    a, b = operands(m, n, k, dtype)
    c = np.full((m, n), np.nan, dtype)
    scratch_bytes = gemm_scratch_bytes(m, n, k, **options)
    scratch = aligned_scratch(scratch_bytes)
    run(compiled, name, a, b, c, 0, m, scratch)
    assert_close(c, a, b, dtype)
    assert (scratch[scratch_bytes:] == 0x5A).all(), "wrote past gemm_scratch_bytes"


# Kernels given B as its transpose (matmul_nt): depth blocks in whole register blocks (kc 16
# with TINY, 64), under one block (5), with a tail (17, 47, 37 in f64), columns past N.
TRANSPOSED = ("square64", "odd_7x13x5", "odd_33x65x17", "column_100x1x300", "past_kc_15x33x513",
              "tiny_exact_28x64x32", "tiny_many_57x129x47", "f64_tiny_31x40x37", "avx2_17x19x21",
              "avx2_tiny_25x41x19")


@pytest.fixture(scope="module")
def compiled_transposed():
    module = ir.Module("test_gemm_nt")
    for name in TRANSPOSED:
        m, n, k, options = KERNELS[name]
        emit_gemm(module, name, m, n, k, b_packer=pack_b_transposed, **options)
    return compile_ir(module)


@pytest.mark.parametrize("name", TRANSPOSED)
def test_transposed_b_matches_float64_numpy(compiled_transposed, name: str) -> None:
    """The transposing B packer (register-block transposes and the element tail) gives the
    product of A with B read from Bt [n, k]."""
    m, n, k, options = KERNELS[name]
    dtype = np.float64 if options.get("dtype") == "f64" else np.float32
    a, b = operands(m, n, k, dtype, seed=3)
    c = np.full((m, n), np.nan, dtype)
    scratch_bytes = gemm_scratch_bytes(m, n, k, **options)
    scratch = aligned_scratch(scratch_bytes)
    run(compiled_transposed, name, a, np.ascontiguousarray(b.T), c, 0, m, scratch)
    assert_close(c, a, b, dtype)
    assert (scratch[scratch_bytes:] == 0x5A).all(), "wrote past gemm_scratch_bytes"


def test_transpose_vectors_is_a_transpose() -> None:
    """The shuffle network alone, for every width the GEMM uses, through LLVM."""
    module = ir.Module("transpose")
    for count in (2, 4, 8, 16):
        vector = ir.VectorType(ir.FloatType(), count)
        function = ir.Function(module, ir.FunctionType(ir.VoidType(), [vector.as_pointer()] * 2),
                               f"transpose{count}")
        builder = ir.IRBuilder(function.append_basic_block())
        source, target = function.args
        rows = [builder.load(builder.gep(source, [ir.Constant(ir.IntType(64), i)]), align=4)
                for i in range(count)]
        for i, row in enumerate(transpose_vectors(builder, rows)):
            builder.store(row, builder.gep(target, [ir.Constant(ir.IntType(64), i)]), align=4)
        builder.ret_void()
    engine = compile_ir(module)
    for count in (2, 4, 8, 16):
        block = np.arange(count * count, dtype=np.float32).reshape(count, count)
        out = np.zeros_like(block)
        engine.function(f"transpose{count}", None, [ctypes.c_void_p] * 2)(block.ctypes.data,
                                                                          out.ctypes.data)
        np.testing.assert_array_equal(out, block.T)


@pytest.mark.parametrize("rows", [(0, 1), (5, 6), (3, 31), (14, 28), (50, 57), (0, 57), (9, 9)])
def test_row_range_writes_only_those_rows(compiled, rows: tuple[int, int]) -> None:
    m, n, k, options = KERNELS["tiny_many_57x129x47"]
    a, b = operands(m, n, k, np.float32, seed=1)
    sentinel = np.float32(-7.5)
    c = np.full((m, n), sentinel, np.float32)
    run(compiled, "tiny_many_57x129x47", a, b, c, *rows,
        aligned_scratch(gemm_scratch_bytes(m, n, k, **options)))
    begin, end = rows
    if end > begin:
        assert_close(c[begin:end], a[begin:end], b, np.float32)
    untouched = np.ones(m, bool)
    untouched[begin:end] = False
    assert (c[untouched] == sentinel).all()


def test_two_threads_on_two_row_ranges(compiled) -> None:
    m, n, k, options = KERNELS["tiny_many_57x129x47"]
    a, b = operands(m, n, k, np.float32, seed=2)
    c = np.full((m, n), np.nan, np.float32)
    slice_bytes = -(-gemm_scratch_bytes(m, n, k, **options) // 64) * 64
    scratches = [aligned_scratch(slice_bytes) for _ in range(2)]
    ranges = [(0, 30), (30, m)]
    threads = [threading.Thread(target=run, args=(compiled, "tiny_many_57x129x47", a, b, c,
                                                  *ranges[t], scratches[t])) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_close(c, a, b, np.float32)


def test_epilogue_bias_row_offset_relu(compiled) -> None:
    m, n, k = EPILOGUE_SHAPE
    a, b = operands(m, n, k, np.float32, seed=3)
    rng = np.random.default_rng(4)
    bias = rng.standard_normal(n).astype(np.float32)
    row_offset = rng.standard_normal(m).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    run(compiled, "epilogue", a, b, c, 0, m, aligned_scratch(gemm_scratch_bytes(m, n, k,
                                                                                blocking=TINY)),
        bias.ctypes.data, row_offset.ctypes.data)
    reference = np.maximum(a.astype(np.float64) @ b.astype(np.float64) + bias[None, :]
                           + row_offset[:, None], 0.0)
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)) + 1.0
    assert (np.abs(c - reference) / scale).max() <= 1e-5 * np.sqrt(k)
    assert (c == 0).any() and (c > 0).any()  # relu really clipped something


@pytest.mark.skipif(host_cpu().vector_bits != 512, reason="needs AVX-512")
def test_micro_kernel_is_zmm_fmas_without_spills(compiled) -> None:
    """The hottest loop of square64 holds MR * NR / 16 zmm FMAs per step of k, no stack traffic."""
    blocking = default_blocking("f32")
    asm = compiled.asm()
    body = asm.split("\nsquare64:", 1)[1].split(".Lfunc_end", 1)[0]
    blocks = re.split(r"\n(?=\.LBB\d+_\d+:)", body)
    kernel = max(blocks, key=lambda block: len(re.findall(r"vfmadd\w+", block)))
    fmas = len(re.findall(r"vfmadd\d+ps\s+%zmm\d+, %zmm\d+, %zmm\d+", kernel))
    per_step = blocking.mr * blocking.nr_vectors
    assert fmas >= per_step and fmas % per_step == 0, (fmas, per_step)
    assert "(%rsp)" not in kernel


@pytest.mark.parametrize(("call", "message"), [
    (lambda: gemm_scratch_bytes(4, 4, 4, dtype="i32"), "dtype must be one of ['f32', 'f64'], "
                                                        "got 'i32'"),
    (lambda: gemm_scratch_bytes(0, 4, 4), "sizes must be positive, got m=0, n=4, k=4"),
    (lambda: gemm_scratch_bytes(4, 4, 4, lanes=16, blocking=GemmBlocking(14, 2, 8, 20, 64)),
     "mc=20 must be a multiple of mr=14"),
])
def test_invalid_arguments_are_named(call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


@pytest.mark.parametrize(("m", "n", "k", "mr", "vectors", "kc"), [
    (1024, 1024, 1024, 4, 4, 1024),  # the default tile; K up to 1024 in one block
    (64, 10, 512, 8, 1, 512),  # narrow: one vector across, 8 rows
    (32, 256, 144, 4, 4, 144),
    (64, 3136, 576, 4, 4, 576),
    (64, 40, 784, 8, 3, 784),
    (9, 20, 2100, 8, 2, 700),  # K above 1024: three equal blocks of at most 1024
])
def test_blocking_fits_the_problem(m, n, k, mr, vectors, kc):
    """Zen 4's blocks (32 registers, one 512-bit FMA a cycle, 1 MiB L2), whatever the host."""
    blocking = blocking_for(m, n, k, "f32", target=Target.cpu("znver4"))
    assert (blocking.mr, blocking.nr_vectors, blocking.kc) == (mr, vectors, kc)
    assert blocking.mr * blocking.nr_vectors <= 24  # accumulators fit the 32 registers
    assert blocking.mc % blocking.mr == 0 and blocking.nc % blocking.nr(16) == 0


@pytest.mark.parametrize("nc", [2048, 64])  # one column block; several, the last only an edge
@pytest.mark.parametrize("k", [300, 40])  # three depth blocks (C read back and added); one
def test_narrow_edge_tiles_match_numpy_and_full_tiles(monkeypatch, nc: int, k: int) -> None:
    """C's last, partial NR columns in tiles of fewer vectors (12 x 1 instead of 12 x 2): the
    same sums as full-width tiles, bit for bit, and float64 numpy's product."""
    from ember.backend.cpu import gemm

    lanes = host_cpu().f32_lanes
    n = 196 if lanes == 16 else 36  # 4 columns past the last whole NR: one vector of the two
    m = 100  # a last row sliver of 4 of 12
    blocking = GemmBlocking(mr=12, nr_vectors=2, kc=128, mc=48, nc=nc)
    a, b = operands(m, n, k, np.float32, seed=5)
    results = {}
    for narrow in (True, False):
        monkeypatch.setattr(gemm, "NARROW_EDGE", narrow)
        module = ir.Module("edge")
        emit_gemm(module, "edge", m, n, k, blocking=blocking)
        assert ("ir.edge" in str(module)) == narrow
        compiled = compile_ir(module, cached=False)
        c = np.full((m, n), np.nan, np.float32)
        scratch_bytes = gemm_scratch_bytes(m, n, k, blocking=blocking)
        scratch = aligned_scratch(scratch_bytes)
        for rows in ((0, 48), (48, m)):  # two row ranges, as two threads have them
            run(compiled, "edge", a, b, c, *rows, scratch)
        assert (scratch[scratch_bytes:] == 0x5A).all(), "wrote past gemm_scratch_bytes"
        assert_close(c, a, b, np.float32)
        results[narrow] = c
    np.testing.assert_array_equal(results[True], results[False])
