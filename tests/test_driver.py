"""`ember.compile` and `ember.jit`: the executable's calling convention and errors."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import nn

RNG = np.random.default_rng(1)


def test_compile_runs_model_and_matches_numpy() -> None:
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.Softmax(dim=-1))
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    exe = ember.compile(model, x, opt_level=0)
    w0, b0 = model[0].weight.data, model[0].bias.data
    w1, b1 = model[2].weight.data, model[2].bias.data
    hidden = np.maximum(x @ w0.T + b0, 0) @ w1.T + b1
    expected = np.exp(hidden - hidden.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(exe(x), expected, rtol=1e-5, atol=1e-7)
    assert isinstance(exe.graph, ember.Graph)
    assert "opt_level=0" in exe.report()


def test_several_outputs_come_back_as_a_tuple() -> None:
    x = RNG.standard_normal(3).astype(np.float32)
    result = ember.compile(lambda a: (a + 1.0, a * 2.0), x)(x)
    assert isinstance(result, tuple) and len(result) == 2
    np.testing.assert_allclose(result[1], x * 2)


def test_wrong_input_shape_or_dtype_is_an_execution_error() -> None:
    exe = ember.compile(lambda a: a * 2.0, np.zeros((2, 3), np.float32))
    with pytest.raises(ember.ExecutionError, match=r"expected shape \[2, 3\], got \[3, 2\]"):
        exe(np.zeros((3, 2), np.float32))
    with pytest.raises(ember.ExecutionError, match="expected dtype float32, got float64"):
        exe(np.zeros((2, 3)))
    with pytest.raises(ember.ExecutionError, match="takes 1 inputs, got 2"):
        exe(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))


def test_bad_compile_arguments() -> None:
    x = np.zeros(3, np.float32)
    with pytest.raises(ember.UnsupportedError, match="tpu"):
        ember.compile(lambda a: a, x, target="tpu")
    with pytest.raises(ember.EmberError, match="opt_level"):
        ember.compile(lambda a: a, x, opt_level=7)


@pytest.mark.parametrize("opt_level", [0, 3])
def test_runtime_failure_names_op_and_line(opt_level: int) -> None:
    def fn(table, idx):
        return table[idx]

    exe = ember.compile(fn, np.zeros((4, 2), np.float32), np.zeros(3, np.int64),
                        opt_level=opt_level)
    with pytest.raises(ember.ExecutionError) as info:
        exe(np.zeros((4, 2), np.float32), np.array([0, 9, 1]))
    message = str(info.value)
    assert "gather" in message and "out of range" in message
    assert f"test_driver.py:{fn.__code__.co_firstlineno + 1}" in message
    # the executable still works after the error
    np.testing.assert_array_equal(exe(np.eye(4, 2, dtype=np.float32), np.array([1, 0, 1])),
                                  np.eye(4, 2, dtype=np.float32)[[1, 0, 1]])


def test_jit_traces_once_per_signature() -> None:
    calls = []

    @ember.jit
    def f(a, b):
        calls.append(1)
        return ember.nn.functional.gelu(a @ b + 1.0).sum(axis=-1)

    a = RNG.standard_normal((3, 4)).astype(np.float32)
    b = RNG.standard_normal((4, 2)).astype(np.float32)
    first = f(a, b)
    second = f(a * 2, b)
    assert len(calls) == 1
    f(np.ones((5, 4), np.float32), b)
    assert len(calls) == 2
    assert len(f.cache) == 2
    z = a * 2 @ b + 1
    import math

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    np.testing.assert_allclose(second, gelu(z).sum(-1), rtol=1e-5)
    assert first.shape == (3,)


def test_jit_static_arguments_are_baked_in() -> None:
    @ember.jit
    def scale(x, factor):
        return x * factor

    x = np.arange(3, dtype=np.float32)
    np.testing.assert_allclose(scale(x, 2), x * 2)
    np.testing.assert_allclose(scale(x, 3), x * 3)
    assert len(scale.cache) == 2


def test_the_cyclic_gc_is_paused_during_a_compile_and_restored_after() -> None:
    import gc

    seen = []

    def fn(a):
        seen.append(gc.isenabled())
        return a * 2.0

    x = np.ones(4, np.float32)
    assert gc.isenabled()
    np.testing.assert_array_equal(ember.compile(fn, x)(x), x * 2.0)
    assert seen == [False] and gc.isenabled()
    with pytest.raises(ember.EmberError):
        ember.compile(lambda a: a @ a, np.ones((2, 3), np.float32))  # a shape error
    assert gc.isenabled()
    gc.disable()
    try:  # a caller's own choice is left as it was
        ember.compile(fn, x)
        assert not gc.isenabled()
    finally:
        gc.enable()
