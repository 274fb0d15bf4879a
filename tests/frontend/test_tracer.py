"""Tracing Python functions: numpy-like tensors, static control flow, errors naming user lines."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import nn
from ember.nn import functional as F

RNG = np.random.default_rng(0)


def rand(*shape: int, dtype: type = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def run(fn, *inputs):
    """Trace `fn`, check the text form round-trips, and run it with the reference interpreter."""
    graph = ember.trace(fn, *inputs)
    assert str(ember.parse(str(graph))) == str(graph)
    results = ember.interpret(graph, *inputs)
    return results[0] if len(results) == 1 else results


def test_operators_match_numpy() -> None:
    a, b = rand(3, 4), rand(4)
    fn = lambda x, y: (x + y) * 2.0 - y / 3.0 + (-x) ** 2 + abs(y)  # noqa: E731
    np.testing.assert_allclose(run(fn, a, b), fn(a, b), rtol=1e-6)


def test_reflected_operators_and_scalars_keep_dtype() -> None:
    a = rand(5)
    graph = ember.trace(lambda x: 1.0 - 2 * x / 4 + 3, a)
    assert all(v.type.dtype.value == "f32" for n in graph.nodes for v in n.outputs)
    np.testing.assert_allclose(ember.interpret(graph, a)[0], 1.0 - 2 * a / 4 + 3, rtol=1e-6)


def test_numpy_array_on_the_left_defers_to_tensor() -> None:
    a, w = rand(2, 3), rand(2, 3)
    np.testing.assert_allclose(run(lambda x: w * x + w, a), w * a + w, rtol=1e-6)


def test_methods_match_numpy() -> None:
    a = rand(2, 3, 4)

    def fn(x):
        return (
            x.sum(axis=1),
            x.mean(axis=(0, 2), keepdims=True),
            x.max(dim=-1),
            x.reshape(6, -1).T,
            x.transpose(2, 0, 1),
            x.argmax(axis=1),
            x.var(axis=-1),
            x.clip(-0.5, 0.5),
            x.flatten(),
            x.expand_dims(0).squeeze(0),
        )

    expected = (
        a.sum(axis=1), a.mean(axis=(0, 2), keepdims=True), a.max(axis=-1), a.reshape(6, -1).T,
        a.transpose(2, 0, 1), a.argmax(axis=1), a.var(axis=-1), a.clip(-0.5, 0.5), a.flatten(), a,
    )
    for got, want in zip(run(fn, a), expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_numpy_functions_trace() -> None:
    a, b = rand(3, 4), rand(3, 4)

    def fn(x, y):
        return np.concatenate([np.exp(x), np.tanh(y)], axis=1), np.where(x > y, x, y), np.sum(x)

    got = run(fn, a, b)
    np.testing.assert_allclose(got[0], np.concatenate([np.exp(a), np.tanh(b)], axis=1), rtol=1e-6)
    np.testing.assert_allclose(got[1], np.where(a > b, a, b))
    np.testing.assert_allclose(got[2], np.sum(a), rtol=1e-5)


@pytest.mark.parametrize(
    "key",
    [
        (slice(1, None), slice(None, None, 2)),
        (Ellipsis, 0),
        (None, 1, slice(None, None, -1)),
        (-1,),
        (slice(None, None, -2), None, Ellipsis),
        (slice(5, 1, -1),),
        (slice(10, 20),),
    ],
)
def test_indexing_matches_numpy(key: tuple) -> None:
    a = rand(4, 5, 3)
    np.testing.assert_array_equal(run(lambda x: x[key], a), a[key])


def test_integer_array_index_gathers() -> None:
    a, idx = rand(5, 3), np.array([4, 0, -1], dtype=np.int64)
    np.testing.assert_array_equal(run(lambda x, i: x[i], a, idx), a[idx])
    np.testing.assert_array_equal(run(lambda x: x[:, [2, 0]], a), a[:, [2, 0]])


def test_dtype_promotion_like_numpy_for_floats_and_ints() -> None:
    a, i = rand(3), np.arange(3, dtype=np.int32)
    got = run(lambda x, n: x + n, a, i)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, a + i, rtol=1e-6)
    quotient = run(lambda n: n / 2, i)
    assert quotient.dtype == np.float32
    np.testing.assert_allclose(quotient, i / 2)


def test_control_flow_on_shapes_is_static() -> None:
    def fn(x):
        for _ in range(x.shape[0]):
            x = x * 2.0
        return x if x.ndim == 2 else x.sum()

    a = rand(3, 2)
    np.testing.assert_allclose(run(fn, a), a * 8, rtol=1e-6)


def test_control_flow_on_values_names_the_user_line() -> None:
    def fn(x):
        if x.sum() > 0:  # this line is named in the error
            return x
        return -x

    with pytest.raises(ember.TraceError) as info:
        ember.trace(fn, rand(3))
    line = fn.__code__.co_firstlineno + 1
    assert f"test_tracer.py:{line}" in str(info.value)
    assert "ember.where" in str(info.value)


def test_shape_error_names_op_shapes_and_line() -> None:
    def fn(x, y):
        return x @ y

    with pytest.raises(ember.TraceError) as info:
        ember.trace(fn, rand(2, 3), rand(4, 5))
    message = str(info.value)
    assert "matmul" in message and "f32[2,3]" in message and "f32[4,5]" in message
    assert f"test_tracer.py:{fn.__code__.co_firstlineno + 1}" in message
    assert isinstance(info.value, ember.EmberError)


def test_layer_shape_error_names_where_the_layer_was_built() -> None:
    model = nn.Sequential(
        nn.Linear(8, 4),
        nn.Linear(5, 2),  # wrong in_features: the error points here
    )
    import inspect

    line = inspect.currentframe().f_lineno - 4  # type: ignore[union-attr]
    with pytest.raises(ember.TraceError) as info:
        ember.trace(model, rand(2, 8))
    assert f"test_tracer.py:{line}" in str(info.value)
    assert "matmul" in str(info.value)


def test_nodes_carry_source_locations() -> None:
    def fn(x):
        y = F.relu(x)
        return y * 2.0

    graph = ember.trace(fn, rand(3))
    first = fn.__code__.co_firstlineno
    assert graph.nodes[0].loc == f"test_tracer.py:{first + 1}"
    assert graph.nodes[-1].loc == f"test_tracer.py:{first + 2}"
    assert f"// test_tracer.py:{first + 1}" in str(graph)


def test_module_parameters_become_named_constants_and_are_not_modified() -> None:
    model = nn.Linear(3, 2)
    before = model.weight.data.copy()
    graph = ember.trace(model, rand(4, 3))
    constants = graph.constants()
    assert set(constants) == {"weight", "bias"}
    np.testing.assert_array_equal(constants["weight"], before)
    np.testing.assert_array_equal(model.weight.data, before)
    assert [v.hint for v in graph.inputs] == ["input"]


def test_params_as_inputs_for_training() -> None:
    model = nn.Linear(3, 2)
    graph = ember.trace(model, rand(4, 3), params_as_inputs=True)
    assert [v.hint for v in graph.inputs] == ["input", "weight", "bias"]
    assert not graph.constants()


def test_user_inputs_are_not_modified() -> None:
    a = rand(3, 3)
    keep = a.copy()
    exe = ember.compile(lambda x: x * 2.0, a)
    exe(a)
    np.testing.assert_array_equal(a, keep)


def test_assignment_into_a_traced_tensor_is_an_error() -> None:
    def fn(x):
        x[0] = 1.0
        return x

    with pytest.raises(ember.TraceError, match="immutable"):
        ember.trace(fn, rand(3))


def test_untraceable_numpy_function_is_named() -> None:
    with pytest.raises(ember.TraceError, match=r"np\.unique"):
        ember.trace(lambda x: np.unique(x), rand(3))


def test_returning_none_is_an_error() -> None:
    with pytest.raises(ember.TraceError, match="returned None"):
        ember.trace(lambda x: None, rand(3))


def test_tensorspec_inputs() -> None:
    graph = ember.trace(lambda x: x.sum(), ember.TensorSpec((2, 3), np.float64))
    assert str(graph.inputs[0].type) == "f64[2,3]"


def test_unsupported_input_dtype_is_a_trace_error() -> None:
    with pytest.raises(ember.TraceError, match="complex64"):
        ember.trace(lambda x: x, np.zeros(3, np.complex64))
