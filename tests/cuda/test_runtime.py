"""The CUDA runtime without a GPU: the no-device error, and the driver-API calls it makes.

With the stand-in driver of `fake_driver.py` (host memory, each launch running the kernel's
loop IR on the CPU), a compiled model runs through `runtime.DeviceProgram` end to end and is
checked against numpy; error codes become EmberErrors naming the driver call.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_cases import example
from fake_driver import CUresult, FakeDriver, kernels_of

import ember
from ember.backend.cuda import runtime


def _device_present() -> bool:
    try:
        runtime.initialize(runtime.driver())
    except runtime.NoDeviceError:
        return False
    return True


def _compile(fn, *inputs, target: str = "cuda:sm_90"):
    exe = ember.compile(fn, *inputs, target=target)
    built = exe.native.native
    kernels = kernels_of(built.functions, [c.kernel for c in built.program.calls])
    return exe, built, kernels


def _use(monkeypatch: pytest.MonkeyPatch, fake: FakeDriver) -> None:
    monkeypatch.setattr(runtime, "driver", lambda: fake)


def test_without_a_device_compiling_works_and_calling_says_so() -> None:
    """No GPU: ember.compile(target="cuda") gives PTX; calling raises one EmberError."""
    if _device_present():
        pytest.skip("a CUDA device is present")
    x = np.ones((4, 8), dtype=np.float32)
    exe = ember.compile(lambda a: a * 2.0 + 1.0, x, target="cuda")
    assert ".visible .entry" in exe.stages["ptx"]
    with pytest.raises(ember.EmberError, match=r"no CUDA device") as caught:
        exe(x)
    assert "exe.stages['ptx']" in str(caught.value) or "ember[cuda]" in str(caught.value)


def test_no_device_reported_by_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuInit's CUDA_ERROR_NO_DEVICE becomes NoDeviceError naming it."""
    x = np.ones((4,), dtype=np.float32)
    exe, _, kernels = _compile(lambda a: a + 1.0, x)
    _use(monkeypatch, FakeDriver(kernels, devices=0))
    with pytest.raises(runtime.NoDeviceError, match=r"no CUDA device is present .*"
                                                    r"CUDA_ERROR_NO_DEVICE"):
        exe(x)


def test_mlp_runs_through_the_driver_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLP example through the runtime: one module, constants uploaded once, inputs in,
    every launch in program order with its grid, outputs out; the result matches numpy."""
    mlp = example("mlp")
    (x,) = mlp.example_inputs
    exe, built, kernels = _compile(mlp.model, x)
    fake = FakeDriver(kernels)
    _use(monkeypatch, fake)
    np.testing.assert_allclose(exe(x), mlp.numpy_forward(x), rtol=1e-4, atol=1e-5)
    launched = fake.launches()
    assert [name for name, _, _ in launched] == built.functions
    assert [(grid[0], block[0]) for _, grid, block in launched] == [
        c.kernel.attrs["launch"] for c in built.program.calls]
    names = [c[0] for c in fake.calls]
    assert names.count("cuModuleLoadData") == 1
    again = exe(x * 0.5)  # a second call reuses the module and buffers
    np.testing.assert_allclose(again, mlp.numpy_forward(x * 0.5), rtol=1e-4, atol=1e-5)
    assert [c[0] for c in fake.calls].count("cuModuleLoadData") == 1
    assert [c[0] for c in fake.calls].count("cuMemAlloc") == names.count("cuMemAlloc")


def test_repeated_output_is_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    """An output returned twice is computed once on the device and copied on the host."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    exe, built, kernels = _compile(lambda a: (np.exp(a), np.exp(a)), x)
    assert [s.kind for _, s in built.program.output_copies] == ["output"]
    _use(monkeypatch, FakeDriver(kernels))
    first, second = exe(x)
    np.testing.assert_allclose(first, np.exp(x), rtol=1e-6)
    np.testing.assert_allclose(second, np.exp(x), rtol=1e-6)


def test_bad_index_on_the_device_raises_execution_error(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """A kernel's status word comes back: an out-of-range gather index is an
    ExecutionError, as on the CPU."""
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    index = np.array([0, 3, 1], dtype=np.int64)

    def gather(t, i):
        return ember.nn.functional.embedding(i, t)

    exe, _, kernels = _compile(gather, table, index)
    _use(monkeypatch, FakeDriver(kernels))
    np.testing.assert_array_equal(exe(table, index), table[index])
    with pytest.raises(ember.ExecutionError):
        exe(table, np.array([0, 7, 1], dtype=np.int64))


@pytest.mark.parametrize("call", ["cuModuleLoadData", "cuMemAlloc", "cuLaunchKernel",
                                  "cuCtxSynchronize"])
def test_driver_errors_name_the_call(monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """Every checked call: an error code is an EmberError naming the call and the code."""
    x = np.ones((8,), dtype=np.float32)
    exe, _, kernels = _compile(lambda a: a * 3.0, x)
    _use(monkeypatch, FakeDriver(kernels, fail={call: CUresult.CUDA_ERROR_LAUNCH_FAILED}))
    with pytest.raises(ember.EmberError, match=rf"{call}.* failed: CUDA_ERROR_LAUNCH_FAILED"):
        exe(x)


def test_device_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, FakeDriver({}))
    assert runtime.device_name() == "Fake GPU"


def test_launches_are_timed_with_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """time_launches records an event pair around each execution of all the launches and
    returns the elapsed times in seconds (the stand-in's clock counts calls: one launch and
    the first event record between the two records)."""
    x = np.ones((8,), dtype=np.float32)
    exe, built, kernels = _compile(lambda a: a * 3.0, x)
    _use(monkeypatch, FakeDriver(kernels))
    exe(x)
    times = built.device().time_launches(runs=4, warmup=1)
    assert times == [2e-3] * 4


@pytest.mark.parametrize("level", [3, 1])
def test_split_reduction_uses_its_arena_slot(monkeypatch: pytest.MonkeyPatch, level: int
                                             ) -> None:
    """A mean of everything runs as partials in the device arena, then one thread (at level
    1 the build maps the unscheduled program itself)."""
    x = np.random.default_rng(5).standard_normal((300, 70)).astype(np.float32)
    exe = ember.compile(lambda a: a.mean(), x, target="cuda", opt_level=level)
    built = exe.native.native
    assert [c.kernel.attrs["launch"] for c in built.program.calls] == [(11, 32), (1, 1)]
    fake = FakeDriver(kernels_of(built.functions, [c.kernel for c in built.program.calls]))
    _use(monkeypatch, fake)
    np.testing.assert_allclose(exe(x), x.astype(np.float64).mean(), rtol=1e-5, atol=1e-6)
    assert built.program.arena_bytes >= 328 * 4  # 328 partials of 64 terms
    assert built.program.arena_bytes in fake.sizes.values()  # the one device arena


def test_calls_from_several_threads_each_get_their_own_result(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The device buffers are shared, so concurrent calls run one at a time: each thread gets
    the result of its own input."""
    from concurrent.futures import ThreadPoolExecutor

    x = np.ones((64, 33), dtype=np.float32)
    exe, _, kernels = _compile(lambda a: np.tanh(a) * 2.0, x)
    _use(monkeypatch, FakeDriver(kernels))
    inputs = [x * (k / 8) for k in range(16)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda a: exe(a).copy(), inputs))
    for given, result in zip(inputs, results, strict=True):
        np.testing.assert_allclose(result, np.tanh(given.astype(np.float64)) * 2, rtol=1e-6)


def test_train_step_for_cuda_matches_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """ember.train_step(target="cuda") (forward, loss, backward, Adam, in place) through the
    stand-in driver gives the CPU's losses and parameters, step after step."""
    from ember import nn
    from ember.nn import functional as F

    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 8)).astype(np.float32)
    y = np.arange(32) % 4
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    start = [p.data.copy() for p in model.parameters()]
    results = {}
    for target in ("cpu", "cuda"):
        for parameter, value in zip(model.parameters(), start, strict=True):
            parameter.data[...] = value
        optimizer = ember.optim.Adam(model.parameters(), lr=1e-2)
        step = ember.train_step(model, F.cross_entropy, optimizer, x, y, target=target)
        if target == "cuda":
            built = step.exe.native.native
            _use(monkeypatch, FakeDriver(kernels_of(built.functions,
                                                    [c.kernel for c in built.program.calls])))
        losses = [float(step(x, y)) for _ in range(4)]
        results[target] = losses, [p.data.copy() for p in model.parameters()]
    np.testing.assert_allclose(results["cuda"][0], results["cpu"][0], rtol=1e-5)
    assert results["cuda"][0][-1] < results["cuda"][0][0]
    for got, want in zip(results["cuda"][1], results["cpu"][1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
