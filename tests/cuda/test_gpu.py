"""On a CUDA device: every op case and every example against its independent reference.

Marked `cuda` (registered in pyproject.toml's pytest markers); every test skips cleanly when
no device or no cuda-bindings package is present. Run them alone with `pytest -m cuda
tests/cuda`. The code is built for the newest arch Ember knows that the device runs.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from cuda_cases import CASES, EXAMPLES, build_graph, check_case, example

import ember
from ember.backend.cuda import runtime
from ember.runtime import compile_native
from ember.target import Target

pytestmark = pytest.mark.cuda


@functools.cache
def _device() -> str:
    """The device's arch, or "" when there is none (with the reason in _reason)."""
    try:
        return runtime.device_arch()
    except runtime.NoDeviceError as err:
        _reason.append(str(err))
        return ""


_reason: list[str] = []


def _target() -> Target:
    arch = _device()
    if not arch:
        pytest.skip(_reason[0] if _reason else "no CUDA device")
    return Target.cuda(arch)


@pytest.mark.parametrize("level", [3, 1])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_case_on_the_device(case, level: int) -> None:
    """The op's kernels on the GPU give the case's independent expected value."""
    target = _target()
    if case.torch:
        pytest.importorskip("torch")
    native = compile_native(build_graph(case), level, target)
    check_case(case, native(*[np.asarray(a) for a in case.inputs]))


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_on_the_device(name: str) -> None:
    """Each example model on the GPU matches the example's own numpy forward pass."""
    target = _target()
    loaded = example(name)
    exe = ember.compile(loaded.model, *loaded.example_inputs, target=target)
    actual = exe(*loaded.example_inputs)
    expected = loaded.numpy_forward(*loaded.example_inputs)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_device_results_are_repeatable() -> None:
    """Two calls with the same input give the same bits (no state left between calls)."""
    target = _target()
    x = np.random.default_rng(1).standard_normal((257, 129)).astype(np.float32)
    exe = ember.compile(lambda a: ember.nn.functional.softmax(a * 2.0, dim=-1), x,
                        target=target)
    np.testing.assert_array_equal(exe(x), exe(x))
