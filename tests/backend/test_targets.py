"""Code for a named target: AVX2-only machine code from `Target.cpu("x86-64-v3")` runs right on
any x86-64 host with AVX2 (this one included, whatever its own ISA), for every example model
and a sample of ops; the target reaches every stage (cache key, vector width, GEMM lanes).

The reference is numpy (float64 where the op is float) or PyTorch for the example models'
layers, never Ember's own output.
"""

from __future__ import annotations

import math
import re
import runpy
from pathlib import Path

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.target import Target

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
AVX2 = Target.cpu("x86-64-v3")
ZMM = re.compile(r"%zmm\d+")


def no_wide_vectors(asm: str) -> bool:
    return ZMM.search(asm) is None


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.py")))
def test_every_example_builds_avx2_only_code_that_runs_here(name: str) -> None:
    """Against the example's own numpy forward pass (written without Ember)."""
    namespace = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"{name}_example")
    inputs = tuple(namespace["example_inputs"])
    exe = ember.compile(namespace["model"], *inputs, target=AVX2)
    assert exe.target == AVX2
    assert no_wide_vectors(exe.stages["asm"]), "zmm register in x86-64-v3 code"
    assert "ymm" in exe.stages["asm"]  # it did vectorize, at 256 bits
    np.testing.assert_allclose(exe(*inputs), namespace["numpy_forward"](*inputs), rtol=2e-4,
                               atol=2e-5)


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# op -> (function, inputs, float64 numpy reference, rtol)
OPS = {
    "matmul": (lambda a, b: a @ b, (_x((96, 80)), _x((80, 72), 1)),
               lambda a, b: a.astype(np.float64) @ b, 1e-5),
    "batched_matmul": (lambda a, b: a @ b, (_x((3, 40, 33)), _x((3, 33, 50), 1)),
                       lambda a, b: np.matmul(a.astype(np.float64), b), 1e-5),
    "exp_tanh": (lambda a: np.exp(np.tanh(a)) * 0.5, (_x((4099,)),),
                 lambda a: np.exp(np.tanh(a.astype(np.float64))) * 0.5, 1e-6),
    "softmax": (lambda a: F.softmax(a, -1), (_x((37, 129)),),
                lambda a: np.exp(a - a.max(-1, keepdims=True)) / np.exp(
                    a - a.max(-1, keepdims=True)).sum(-1, keepdims=True), 1e-5),
    "sum_rows": (lambda a: a.sum(axis=1), (_x((300, 257)),),
                 lambda a: a.astype(np.float64).sum(axis=1), 1e-5),
    "conv2d_relu": (lambda x, w: F.relu(F.conv2d(x, w, padding=1)),
                    (_x((2, 8, 20, 20)), _x((16, 8, 3, 3), 1)), None, 1e-5),
    "sigmoid_f64": (lambda a: 1 / (1 + np.exp(-a)), (_x((1000,)).astype(np.float64),),
                    lambda a: 1 / (1 + np.exp(-a)), 1e-12),
}


def _conv_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    torch = pytest.importorskip("torch")
    out = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                     padding=1)
    return np.maximum(out.numpy(), 0.0)


@pytest.mark.parametrize("name", list(OPS))
def test_ops_on_avx2_target_match_numpy(name: str) -> None:
    fn, inputs, reference, rtol = OPS[name]
    exe = ember.compile(fn, *inputs, target=AVX2)
    assert no_wide_vectors(exe.stages["asm"])
    expected = _conv_reference(*inputs) if reference is None else reference(*inputs)
    np.testing.assert_allclose(exe(*inputs), expected, rtol=rtol, atol=rtol)


def test_host_build_of_the_same_model_differs_where_the_host_is_wider() -> None:
    """The target is not ignored: on an AVX-512 host, the host's build of a matmul uses zmm
    registers and the AVX2 build does not; the GEMM kernels' names record their tile."""
    x, w = _x((128, 128)), _x((128, 128), 1)
    host = ember.compile(lambda a, b: a @ b, x, w)
    avx2 = ember.compile(lambda a, b: a @ b, x, w, target=AVX2)
    if Target.host().vector_bits < 512:
        pytest.skip("host without AVX-512")
    assert not no_wide_vectors(host.stages["asm"])
    assert no_wide_vectors(avx2.stages["asm"])


def test_the_cache_key_includes_the_target(tmp_path: Path, monkeypatch) -> None:
    """Two targets, one graph: two links and two object entries, each found again."""
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("EMBER_CACHE", "1")
    x = _x((64, 64))
    for target in (AVX2, Target.host(), AVX2):
        exe = ember.compile(lambda a: np.tanh(a) + 1.0, x, target=target)
        np.testing.assert_allclose(exe(x), np.tanh(x.astype(np.float64)) + 1, atol=1e-6)
    assert exe.native.native.module.cache_hit == "graph"
    assert no_wide_vectors(exe.stages["asm"])
    assert len(list(tmp_path.glob("*/*.link"))) == 2


def test_code_the_host_cannot_run_is_built_and_refused_with_a_clear_error(monkeypatch) -> None:
    """A target wider than the host: its assembly is there, and calling it raises EmberError
    naming what the host lacks (never an illegal instruction). The host is described as an
    AVX2 machine here, so that the check runs on AVX-512 hosts too."""
    monkeypatch.setenv("EMBER_CACHE", "0")
    monkeypatch.setattr(Target, "host", staticmethod(lambda: AVX2))
    x = _x((64, 64))
    exe = ember.compile(lambda a: a * 2.0, x, target=Target.cpu("znver4"))
    assert "zmm" in exe.stages["asm"]
    with pytest.raises(ember.EmberError, match=r"cannot run on this host.*512-bit vectors"):
        exe(x)


def test_target_values() -> None:
    host = Target.host()
    assert Target.parse("cpu") == host and Target.parse(host) is host
    assert Target.parse("cpu:x86-64-v3") == AVX2
    assert AVX2.vector_bits == 256 and AVX2.has_fma and AVX2.vector_registers == 16
    assert Target.cpu("sapphirerapids").fma_per_cycle == 2
    assert Target.cpu("znver4", cores=4).cores == 4
    assert Target.cuda("sm_90").kind == "cuda"
    more = host.cores + 1
    assert host.with_(cores=more).cores == more and host.with_(cores=more) != host
    assert AVX2.key != host.key
    for bad in ("tpu", "cpu:pentium5", "cuda:sm_1"):
        with pytest.raises(ember.UnsupportedError):
            Target.parse(bad)
    with pytest.raises(ember.EmberError, match="vector widths"):
        host.with_(prefer_vector_bits=1024)


def test_cuda_target_compiles_to_ptx_without_a_gpu() -> None:
    """Compiling for a GPU needs none: the PTX is there (calling without a device is
    tests/cuda/test_runtime.py's), and an unknown arch is refused by name."""
    exe = ember.compile(lambda a: a + 1, _x((4,)), target="cuda:sm_80")
    assert ".target sm_80" in exe.stages["ptx"]
    with pytest.raises(ember.UnsupportedError, match="sm_1"):
        ember.compile(lambda a: a + 1, _x((4,)), target="cuda:sm_1")


def test_stages_are_text_and_opt_level_0_has_no_code() -> None:
    x = _x((16, 16))
    exe = ember.compile(lambda a: a + 1.0, x)
    assert list(exe.stages) == ["traced", "optimized", "loops", "llvm", "asm"]
    assert exe.stages["traced"].startswith("graph @")
    assert "kernel " in exe.stages["loops"] and "define" in exe.stages["llvm"]
    naive = ember.compile(lambda a: a + 1.0, x, opt_level=0)
    assert list(naive.stages) == ["traced", "optimized"]
    with pytest.raises(KeyError, match="opt_level 0"):
        naive.stages["asm"]


def test_for_target_gives_the_backend_of_each_kind() -> None:
    from ember.backend import for_target
    from ember.lower.rules import TARGET_RULES

    cpu = for_target(Target.host())
    assert cpu.stages == ("llvm", "asm") and set(cpu.rules) == {"matmul", "matmul_nt", "conv2d",
                                                               "conv2d_nchwc"}
    assert cpu.rules is TARGET_RULES["cpu"]
    cuda = for_target(Target.cuda("sm_80"))
    assert cuda.stages == ("ptx",) and cuda.rules is TARGET_RULES["cuda"]
    assert set(cuda.rules) == {"matmul", "matmul_nt"}


def _gelu_chain(x):
    return F.gelu(np.tanh(x) * 1.5 + x)


def test_loop_vector_width_follows_the_target_not_llvms_tuning() -> None:
    """LLVM tunes Intel server CPUs to 256-bit loops; the target's `prefer_vector_bits` (512
    for AVX-512 targets) decides instead, and a 256-bit preference keeps the hand-written GEMM
    at 512 bits (`min-legal-vector-width`)."""
    x = _x((4096,))
    wide = ember.compile(_gelu_chain, x, target=Target.cpu("sapphirerapids"))
    assert ZMM.search(wide.stages["asm"]) and "prefer-vector-width" in wide.stages["llvm"]
    narrow = Target.cpu("sapphirerapids", prefer_vector_bits=256)
    exe = ember.compile(_gelu_chain, x, target=narrow)
    assert no_wide_vectors(exe.stages["asm"]) and "ymm" in exe.stages["asm"]
    a = _x((128, 128))
    gemm = ember.compile(lambda p, q: p @ q, a, a, target=narrow)
    assert ZMM.search(gemm.stages["asm"])
    if Target.host().vector_bits == 512:  # all three run here
        y = np.tanh(x.astype(np.float64)) * 1.5 + x
        expected = 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))
        for e in (wide, exe):
            np.testing.assert_allclose(e(x), expected, rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(gemm(a, a), a.astype(np.float64) @ a, rtol=1e-5, atol=1e-5)


def test_loop_width_defaults_per_cpu() -> None:
    assert Target.cpu("znver4").prefer_vector_bits == 512
    assert Target.cpu("emeraldrapids").prefer_vector_bits == 512
    assert Target.cpu("skylake-avx512").prefer_vector_bits == 256
    assert Target.cpu("skylake-avx512").vector_bits == 512
    assert Target.cpu("x86-64-v3").prefer_vector_bits == 256
    assert Target.cpu("znver4", prefer_vector_bits=256).prefer_vector_bits == 256


def test_a_client_core_name_with_amx_is_a_server_core():
    """A hypervisor's client model number on a part with AMX gets the server's facts (two
    FMA ports), and a real client core stays what LLVM says."""
    from ember.target import _server_core

    assert _server_core("rocketlake", {"avx512f", "amx-tile"}) == "sapphirerapids"
    assert _server_core("rocketlake", {"avx512f"}) == "rocketlake"
    assert _server_core("znver4", {"avx512f", "amx-tile"}) == "znver4"
    assert Target.cpu("sapphirerapids").fma_per_cycle == 2
