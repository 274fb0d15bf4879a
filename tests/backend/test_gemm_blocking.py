"""GEMM block sizes derived from the Target: they fit the register file and the caches they
are sized for, and matmuls compiled with each target's blocking match float64 numpy."""

from __future__ import annotations

import re

import numpy as np
import pytest

import ember
from ember import Target
from ember.backend.cpu import conv_pack
from ember.backend.cpu.gemm import (
    A_SLIVERS_PER_BLOCK,
    FMA_LATENCY_CYCLES,
    NARROW_TILE_MARGIN,
    blocking_for,
    default_blocking,
    register_tile,
)
from ember.ir.graph import GraphBuilder
from ember.ir.types import DType, TensorType
from ember.runtime import compile_native

TARGETS = ["znver4", "znver5", "sapphirerapids", "emeraldrapids", "skylake-avx512",
           "x86-64-v3", "haswell"]
SIZES = {"f32": 4, "f64": 8}


def target_named(name: str) -> Target:
    return Target.host() if name == "host" else Target.cpu(name, cores=1)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("name", ["host", *TARGETS])
def test_default_blocking_fits_registers_and_caches(name: str, dtype: str) -> None:
    target = target_named(name)
    size = SIZES[dtype]
    lanes = target.lanes(size)
    b = default_blocking(dtype, lanes, target)
    nr = b.nr(lanes)
    accumulators = b.mr * b.nr_vectors
    # the C tile, the NR B vectors of one step and one broadcast of A are all in registers
    assert accumulators + b.nr_vectors + 1 <= target.vector_registers
    # enough independent accumulators to keep every FMA unit busy through the FMA latency
    assert accumulators >= FMA_LATENCY_CYCLES * target.fma_per_cycle
    assert b.kc * nr * size <= target.l2_bytes // 8  # B micro-panel, re-read from L2
    assert 2 * b.kc * nr * size > target.l2_bytes // 8  # ... and the deepest that fits
    assert b.mc * b.kc * size <= target.l2_bytes // 2  # A block
    assert b.mc <= A_SLIVERS_PER_BLOCK * b.mr
    assert b.kc * b.nc * size <= min(target.l3_bytes // 8, 4 * target.l2_bytes)  # B panel
    assert b.mc % b.mr == 0 and b.nc % nr == 0


@pytest.mark.parametrize(("name", "tile"), [
    ("znver4", (4, 4)),  # 1 zmm FMA per cycle: 16 accumulators cover it
    ("sapphirerapids", (6, 4)),  # 2 zmm FMAs per cycle: as many rows as 32 registers allow
    ("emeraldrapids", (6, 4)),
    ("x86-64-v3", (6, 2)),  # 16 registers: 12 accumulators
])
def test_register_tile_follows_the_fma_units(name: str, tile: tuple[int, int]) -> None:
    target = Target.cpu(name)
    assert register_tile(target, target.vector_bits // 8) == tile


def test_zen4_blocking_is_the_measured_one() -> None:
    """4 x 64, KC 512, MC 120, NC 2048 measured best on Zen 4 (benchmarks/NOTES.md)."""
    b = default_blocking("f32", 16, Target.cpu("znver4"))
    assert (b.mr, b.nr_vectors, b.kc, b.mc, b.nc) == (4, 4, 512, 120, 2048)


@pytest.mark.parametrize("name", ["host", *TARGETS])
@pytest.mark.parametrize(("m", "n", "k"), [
    (1024, 1024, 1024), (2048, 2048, 2048), (64, 10, 512), (32, 256, 144), (16, 1024, 27),
    (64, 3136, 576), (64, 40, 784), (9, 20, 2100), (37, 70, 1100),
])
def test_blocking_for_keeps_the_measured_special_cases(name: str, m: int, n: int,
                                                       k: int) -> None:
    target = target_named(name)
    lanes = target.lanes(4)
    base = default_blocking("f32", lanes, target)
    b = blocking_for(m, n, k, "f32", lanes, target)
    assert b.mc % b.mr == 0 and b.nc % b.nr(lanes) == 0
    assert b.mr * b.nr_vectors + b.nr_vectors + 1 <= target.vector_registers
    if -(-n // lanes) < base.nr_vectors:  # narrow: as many vectors as N needs, 8 rows
        assert b.nr_vectors == -(-n // lanes) and b.mr == 8
    elif (b.mr, b.nr_vectors) != (base.mr, base.nr_vectors) and b.mr != 4:
        # a narrower tile only where it pads C by the margin less than the default's
        def padded(mr: int, vectors: int) -> int:
            return -(-m // mr) * mr * -(-n // (vectors * lanes)) * vectors * lanes
        assert b.nr_vectors < base.nr_vectors
        assert padded(b.mr, b.nr_vectors) * NARROW_TILE_MARGIN < padded(base.mr, base.nr_vectors)
    if m in (16, 32) and b.nr_vectors == base.nr_vectors:  # no padded rows
        assert b.mr == 4
    if k <= 2 * base.kc:  # one depth block
        assert b.kc == k
    else:  # equal blocks, none deeper than 2 x KC
        assert b.kc <= 2 * base.kc and -(-k // b.kc) == -(-k // (2 * base.kc))


@pytest.mark.parametrize("name", ["znver4", "sapphirerapids", "x86-64-v3"])
def test_conv_blocking_panel_fills_half_of_l2(name: str) -> None:
    target = Target.cpu(name)
    lanes = target.lanes(4)
    b = conv_pack.conv_blocking(64, 3136, 2304, 9, "f32", lanes, 4, target)
    assert b.kc % 9 == 0
    assert b.kc * b.nc * 4 <= target.l2_bytes // 2
    assert b.kc * (b.nc + b.nr(lanes)) * 4 > target.l2_bytes // 2 or b.nc >= 3136


def check_matmul(target: Target, m: int, n: int, k: int, dtype: type) -> str:
    """Compile `a @ b` for `target`, run it here, compare with float64; returns the asm."""
    missing = target.missing_on_host()
    if missing:
        pytest.skip(f"{target.name} code needs {', '.join(missing)}")
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    exe = ember.compile(lambda x, y: x @ y, a, b, target=target, threads=1)
    assert "ember_gemm" in exe.stages["loops"]  # the packed GEMM, not the general loops
    out = np.asarray(exe(a, b))
    reference = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)) + 1.0
    eps = np.finfo(dtype).eps
    assert (np.abs(out - reference) / scale).max() <= 4 * eps * np.sqrt(k)
    return exe.stages["asm"]


@pytest.mark.parametrize("name", ["host", "znver4", "sapphirerapids", "x86-64-v3"])
@pytest.mark.parametrize(("m", "n", "k"), [
    (67, 131, 97),  # no dimension a multiple of any tile
    (37, 70, 2100),  # K split into depth blocks on every target
    (130, 10, 300),  # narrow N
    (250, 600, 40),
])
def test_matmul_with_each_targets_blocking(name: str, m: int, n: int, k: int) -> None:
    asm = check_matmul(target_named(name), m, n, k, np.float32)
    if name == "x86-64-v3":  # 256-bit code only: its blocking is the one with 16 registers
        assert "zmm" not in asm and re.search(r"vfmadd\w+\s+[^\n]*ymm", asm)
    elif name in ("znver4", "sapphirerapids"):
        assert re.search(r"vfmadd\w+\s+[^\n]*zmm", asm)


@pytest.mark.parametrize("name", ["znver4", "sapphirerapids", "x86-64-v3"])
def test_f64_matmul_with_each_targets_blocking(name: str) -> None:
    check_matmul(target_named(name), 45, 77, 1300, np.float64)


@pytest.mark.parametrize(("m", "n", "tile"), [
    (256, 196, (12, 2)),  # a 14 x 14 image: 224 columns padded instead of 256
    (64, 196, (8, 3)),  # 64 rows: 8-row tiles pad none, 12 or 14 would
    (64, 3136, (6, 4)),  # 3136 = 49 x 64: nothing to save
    (512, 49, (6, 4)),  # 49 columns: 64 at 4 or 2 vectors alike, the default kept
])
def test_least_padded_tile_on_intel(m: int, n: int, tile: tuple[int, int]) -> None:
    target = Target.cpu("sapphirerapids")
    b = blocking_for(m, n, 1024, "f32", target.lanes(4), target)
    assert (b.mr, b.nr_vectors) == tile
    assert b.mc % b.mr == 0


@pytest.mark.parametrize("name", ["host", "znver4", "sapphirerapids", "x86-64-v3"])
@pytest.mark.parametrize(("m", "n", "k"), [
    (37, 197, 600),  # panels past a whole number of PACK_TILE_DEPTH steps, a partial panel
    (64, 196, 300),  # a 14 x 14 image's width: the less padded tile where the target has one
])
def test_linear_weight_packed_from_its_transpose(name: str, m: int, n: int, k: int) -> None:
    """matmul_nt(x, W) with W a constant [n, k] (ONNX Gemm with transB): the GEMM's B is the
    transposed view W.T, packed at compile time in tiles; the product against float64 numpy."""
    target = target_named(name)
    missing = target.missing_on_host()
    if missing:
        pytest.skip(f"{target.name} code needs {', '.join(missing)}")
    rng = np.random.default_rng(m + n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    builder = GraphBuilder("linear")
    x = builder.input(TensorType(DType.F32, a.shape), "x")
    native = compile_native(builder.build([builder.matmul_nt(x, builder.const(w))]),
                            opt_level=3, target=target)
    assert "_pb(" in str(native.program), native.program  # B packed at compile time
    out = native(a)[0]
    reference = a.astype(np.float64) @ w.T.astype(np.float64)
    scale = np.abs(a.astype(np.float64)) @ np.abs(w.T.astype(np.float64)) + 1.0
    assert (np.abs(out - reference) / scale).max() <= 4 * np.finfo(np.float32).eps * np.sqrt(k)
