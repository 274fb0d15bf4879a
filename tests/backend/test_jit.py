"""The JIT: host CPU detection, and a small llvmlite module compiled and run against numpy."""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest
from llvmlite import ir

from ember.backend.llvm.jit import compile_ir, host_cpu
from ember.errors import LoweringError


def scale_module() -> ir.Module:
    module = ir.Module("scale")
    f32, i64 = ir.FloatType(), ir.IntType(64)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32.as_pointer()] * 2 + [i64]),
                     "scale")
    source, target, count = fn.args
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    builder = ir.IRBuilder(entry)
    builder.cbranch(builder.icmp_signed(">", count, i64(0)), loop, done)
    builder.position_at_end(loop)
    index = builder.phi(i64)
    index.add_incoming(i64(0), entry)
    value = builder.fmul(builder.load(builder.gep(source, [index])), f32(3.0))
    builder.store(value, builder.gep(target, [index]))
    following = builder.add(index, i64(1))
    index.add_incoming(following, loop)
    builder.cbranch(builder.icmp_signed("<", following, count), loop, done)
    builder.position_at_end(done)
    builder.ret_void()
    return module


def test_host_cpu_is_described() -> None:
    cpu = host_cpu()
    assert cpu.vector_bits in (128, 256, 512)
    assert cpu.f32_lanes == cpu.vector_bits // 32
    assert "LLVM" in cpu.describe()


def test_compiled_loop_matches_numpy_and_vectorizes() -> None:
    compiled = compile_ir(scale_module())
    scale = compiled.function("scale", None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64])
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    y = np.empty_like(x)
    scale(x.ctypes.data, y.ctypes.data, x.size)
    np.testing.assert_array_equal(y, x * np.float32(3.0))
    assert_vectorized(compiled.llvm_ir, compiled.asm())


def assert_vectorized(optimized_ir: str, asm: str) -> None:
    """The scale loop was vectorized. The vector width is LLVM's choice for the CPU model (its
    tuning for Intel server chips prefers 256-bit vectors even with AVX-512): any packed
    multiply on xmm, ymm or zmm registers shows it, and the IR says at how many lanes."""
    lanes = [int(n) for n in re.findall(r"fmul <(\d+) x float>", optimized_ir)]
    assert lanes and min(lanes) >= 4, "the loop was not vectorized"
    assert re.search(r"\bv?mulps\s[^\n]*%[xyz]mm\d+", asm), "no packed multiply"


@pytest.mark.parametrize("cpu", ["skylake-avx512", "sapphirerapids", "znver4", "haswell"])
def test_vectorization_check_holds_for_each_cpu_models_tuning(cpu: str) -> None:
    """The check above passes whatever width LLVM prefers: code for Intel server chips (256-bit
    vectors), AMD Zen 4 (512-bit) and AVX2, compiled here for each CPU model (not run)."""
    import llvmlite.binding as llvm

    host_cpu()  # initializes LLVM's native target
    triple = llvm.get_process_triple()
    if not triple.startswith("x86_64"):
        pytest.skip("x86-64 CPU models")
    machine = llvm.Target.from_triple(triple).create_target_machine(cpu=cpu, opt=3)
    module = llvm.parse_assembly(str(scale_module()))
    module.triple, module.data_layout = triple, str(machine.target_data)
    options = llvm.create_pipeline_tuning_options(speed_level=3)
    options.loop_vectorization = True
    builder = llvm.create_pass_builder(machine, options)
    builder.getModulePassManager().run(module, builder)
    assert_vectorized(str(module), machine.emit_assembly(module))


def test_invalid_ir_is_a_lowering_error() -> None:
    with pytest.raises(LoweringError, match="LLVM rejected"):
        compile_ir("define void @f() {\n  ret i32 0\n}")
