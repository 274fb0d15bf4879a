"""PTX of every op case and every example, accepted by NVIDIA's ptxas for sm_80 and sm_90.

No GPU is needed: the kernels of all cases go into one LLVM module per arch (names prefixed
per case), LLVM's NVPTX backend prints it, and one ptxas run assembles it, which checks every
kernel (skipped only when no ptxas is found, on PATH or in the nvidia-cuda-nvcc package).
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
from cuda_cases import CASES, EXAMPLES, build_graph, example

import ember
from ember.backend.cuda import codegen, ptxas
from ember.backend.cuda.schedule import map_program
from ember.driver import optimize
from ember.errors import UnsupportedError
from ember.runtime.native import lower_native
from ember.target import Target

ARCHES = ("sm_80", "sm_90")
LEVELS = {"sm_80": (3,), "sm_90": (3, 1)}  # level 1: the unscheduled lowerings (built mapped)


@functools.cache
def assembled(arch: str) -> tuple[dict[str, ptxas.KernelUsage], list[str], list[str], str]:
    """ptxas's usage per kernel, the kernels emitted, the cases that could not emit, and the
    PTX, for every op case (at each level of LEVELS) and every example."""
    target = Target.cuda(arch)
    module = codegen.new_module("cases", target)
    kernels: list[str] = []
    refused: list[str] = []
    distinct: dict[tuple[object, ...], str] = {}  # equal kernels of several cases: assembled once
    programs = [(f"c{number}l{level}_", case.id, build_graph(case), level)
                for level in LEVELS[arch] for number, case in enumerate(CASES)]
    for name in EXAMPLES:
        loaded = example(name)
        traced = ember.trace(loaded.model, *loaded.example_inputs)
        programs.append((f"{name}_", name, optimize(traced, 3, target=target), 3))
    for prefix, label, graph, level in programs:
        try:
            program = lower_native(graph, level, target)
            kernels += codegen.add_program(module, map_program(program), prefix, distinct)
        except UnsupportedError as err:
            refused.append(f"{label}: {err}")
    optimized = codegen.optimized_ir(module, arch, kernels)
    text = codegen.compile_ptx(optimized, arch)
    path = ptxas.find_ptxas()
    usage = ptxas.check_ptx(text, arch, path) if path else {}
    return usage, kernels, refused, text


@pytest.mark.parametrize("arch", ARCHES)
def test_every_op_case_and_example_emits_ptx(arch: str) -> None:
    """Every case lowers and emits for the arch (an op that cannot would raise
    UnsupportedError naming itself: none does)."""
    _, kernels, refused, text = assembled(arch)
    assert not refused, "\n".join(refused)
    assert len(set(kernels)) > len(CASES) // 2
    assert f".target {arch}" in text
    entries = set(re.findall(r"\.visible \.entry (\w+)\(", text))
    assert entries == set(kernels)


@pytest.mark.parametrize("arch", ARCHES)
def test_ptxas_accepts_every_kernel(arch: str) -> None:
    """ptxas assembles the PTX of every case and example and reports every kernel."""
    if ptxas.find_ptxas() is None:
        pytest.skip("no ptxas on PATH or in the nvidia-cuda-nvcc package")
    usage, kernels, _, _ = assembled(arch)
    assert set(usage) == set(kernels)
    assert all(0 < u.registers <= 255 for u in usage.values())


def test_ptxas_rejection_is_an_ember_error() -> None:
    """Bad PTX stops with an EmberError quoting ptxas, not a traceback from subprocess."""
    if ptxas.find_ptxas() is None:
        pytest.skip("no ptxas on PATH or in the nvidia-cuda-nvcc package")
    bad = ".version 7.8\n.target sm_90\n.address_size 64\n.visible .entry k() { bogus; }\n"
    with pytest.raises(ember.EmberError, match=r"ptxas -arch=sm_90 rejected the PTX"):
        ptxas.check_ptx(bad, "sm_90")


def test_report_parser_reads_registers_and_spills() -> None:
    """The -v report of ptxas (format of CUDA 12 and 13) gives registers and spill bytes."""
    output = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k1' for 'sm_90'
ptxas info    : Function properties for k1
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers, 1024 bytes smem
ptxas info    : Compiling entry function 'k2' for 'sm_90'
ptxas info    : Function properties for k2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers
"""
    usage = ptxas.parse_report(output)
    assert usage == {"k1": ptxas.KernelUsage(40, 8, 4, 16, 1024),
                     "k2": ptxas.KernelUsage(12, 0, 0, 0, 0)}


def test_compile_for_cuda_gives_ptx_and_a_ptxas_report() -> None:
    """ember.compile(target="cuda:sm_80") builds PTX for that arch; the built object's report
    lists every launch with ptxas's register and spill counts when ptxas is there."""
    loaded = example("mlp")
    exe = ember.compile(loaded.model, *loaded.example_inputs, target="cuda:sm_80")
    assert ".target sm_80" in exe.stages["ptx"]
    built = exe.native.native
    assert "ptx_kernel" in built.stage("llvm")
    report = built.report()
    assert report.startswith("cuda sm_80: ")
    assert report in exe.report()  # the executable's report carries it
    if built.ptxas_path:
        assert f"{len(built.usage)} kernels accepted" in report
        assert "registers" in report and "spill" in report


def test_what_cannot_emit_is_an_unsupported_error_naming_it() -> None:
    """A math function Ember has no device version of, and a kernel with more pointer
    parameters than CUDA passes, stop at compile time with UnsupportedError (no bad PTX)."""
    from ember.ir.types import DType
    from ember.lower.loops import Buffer, Kernel, Load, Store, Unary, index_imm

    module = codegen.new_module("m", Target.cuda("sm_90"))
    x, out = Buffer("in0", DType.F32, 1), Buffer("out0", DType.F32, 1)
    body = (Store(out, index_imm(0), Unary("atan", Load(x, index_imm(0)))),)
    with pytest.raises(UnsupportedError, match=r"k_atan.*math function 'atan'"):
        codegen.emit_kernel(module, Kernel("k_atan", (x, out), body))
    many = tuple(Buffer(f"in{i}", DType.F32, 1) for i in range(codegen.MAX_PARAMETERS + 1))
    with pytest.raises(UnsupportedError, match=r"513 buffers"):
        codegen.emit_kernel(module, Kernel("k_many", many, ()))


def test_ember_ir_prints_ptx_for_a_cuda_target(capsys: pytest.CaptureFixture[str]) -> None:
    """`ember ir FILE --target cuda:sm_90 --stage ptx` prints the PTX; the stage on a CPU
    target is a usage error naming what to do; --stage llvm and asm on a CUDA target give
    the NVPTX LLVM IR and the PTX."""
    from cuda_cases import ROOT

    from ember.cli import main

    path = str(ROOT / "examples" / "mlp.py")
    assert main(["ir", path, "--target", "cuda:sm_90", "--stage", "ptx"]) == 0
    out = capsys.readouterr().out
    assert ".target sm_90" in out and ".visible .entry" in out
    assert main(["ir", path, "--stage", "ptx"]) == 2
    assert "--stage ptx needs a CUDA target" in capsys.readouterr().err
    assert main(["ir", path, "--target", "cuda:sm_80", "--stage", "llvm"]) == 0
    assert "define ptx_kernel void" in capsys.readouterr().out
    assert main(["ir", path, "--target", "cuda:sm_80", "--stage", "asm"]) == 0
    assert ".target sm_80" in capsys.readouterr().out


def test_threads_and_profiles_on_a_gpu() -> None:
    """set_threads on a CUDA executable is a no-op that says 1 (the grid is the GPU's
    parallelism), threads= does not stop a CUDA compile, and the CPU's per-kernel profile is
    an UnsupportedError that says what to use instead."""
    x = np.ones((8, 8), dtype=np.float32)
    exe = ember.compile(lambda a: a + 1.0, x, target="cuda", threads=2)
    assert exe.native.set_threads(4) == 1
    with pytest.raises(UnsupportedError, match=r"profiling is not implemented for CUDA"):
        exe.native.profile(x)


def test_aligned_parameters_give_vector_accesses() -> None:
    """Buffer parameters carry the alignment their slots guarantee (cuMemAlloc's 256 bytes,
    plus the arena offset), capped at 16: the tiled GEMM then reads B and writes C with
    128-bit accesses."""
    from ember.lower.program import Slot

    assert [codegen.slot_alignment(Slot(kind, index)) for kind, index in (
        ("input", 0), ("arena", 0), ("arena", 64), ("arena", 8), ("arena", 4), ("arena", 2))
    ] == [16, 16, 16, 8, 4, 2]
    a = np.ones((64, 64), dtype=np.float32)
    exe = ember.compile(lambda x, y: x @ y, a, a, target="cuda:sm_80")
    ptx = exe.stages["ptx"]
    assert "ld.global.nc.v4.b32" in ptx or "ld.global.nc.v4.f32" in ptx
    assert "st.global.v4" in ptx
