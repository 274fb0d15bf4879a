"""benchmarks/bench_cuda.py runs: without a GPU it exits 2 with the reason; with the stand-in
driver (tiny sizes) every benchmark checks its result and prints its rows."""

from __future__ import annotations

import ctypes
import importlib.util
import sys
import types

import pytest
from cuda_cases import ROOT
from fake_driver import OK, FakeDriver, kernels_of

from ember.backend.cuda import runtime
from ember.backend.cuda.build import CudaProgram


def _bench() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("_ember_bench_cuda",
                                                  ROOT / "benchmarks" / "bench_cuda.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class _Device(FakeDriver):
    """The stand-in driver with what the benchmark asks of a device beyond the runtime."""

    CUdevice_attribute = types.SimpleNamespace(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR=9,
                                               CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR=0)

    def cuDeviceGetAttribute(self, attribute: int, device: int) -> tuple[object, int]:
        return OK, attribute

    def cuMemcpyDtoD(self, target: int, source: int, nbytes: int) -> tuple[object]:
        ctypes.memmove(target, source, nbytes)
        return self._result("cuMemcpyDtoD")


def test_without_a_device_it_exits_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        runtime.initialize(runtime.driver())
        pytest.skip("a CUDA device is present")
    except runtime.NoDeviceError:
        pass
    assert _bench().main(["copy"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_every_benchmark_runs_on_the_stand_in(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    fake = _Device({})
    monkeypatch.setattr(runtime, "driver", lambda: fake)
    load = CudaProgram.device

    def device(self: CudaProgram) -> runtime.DeviceProgram:
        if self._device is None:  # the stand-in runs the loop IR of this program's launches
            fake.kernels = kernels_of(self.functions, [c.kernel for c in self.program.calls])
            fake._compiled = {}
        return load(self)

    monkeypatch.setattr(CudaProgram, "device", device)
    monkeypatch.setattr(bench, "N", 1 << 12)
    monkeypatch.setattr(bench, "ROWS", 64)
    monkeypatch.setattr(bench, "COLUMNS", 32)
    monkeypatch.setattr(bench, "GEMM", 48)
    monkeypatch.setattr(bench, "bench_models", lambda *args: None)  # (seconds on the CPU)
    assert bench.main(["--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("GPU: Fake GPU (code for sm_90)")
    for row in ("d2d copy", "ember triad", "ember fused", "softmax", "layernorm",
                "ember f32", "ember tf32", "not implemented"):
        assert row in out
    errors = [float(part.split()[0]) for part in out.split("max err ")[1:]]
    assert len(errors) == 5 and max(errors) < 1e-5  # triad, chain, softmax, layernorm, gemm
