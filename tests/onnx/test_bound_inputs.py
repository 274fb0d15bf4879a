"""Graph inputs bound to values at import time: `ember.onnx.load(..., constants=...)`.

A static-shape graph needs the inputs that set a shape, axes or pads known when it is built;
binding them makes the model's remaining inputs its arguments. Results are checked against
ONNX Runtime running the unbound model on the same values.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx  # noqa: E402

RNG = np.random.default_rng(7)


def _reshape_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape_node")], "bound",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _range_model() -> onnx.ModelProto:
    """y = x[:n] * Range(0, n) with n a graph input cast to float: the Range's limit is
    computed from the input, not the input itself."""
    nodes = [
        helper.make_node("Cast", ["n"], ["limit"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor(
            "z", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor(
            "o", TensorProto.FLOAT, [], [1.0])),
        helper.make_node("Range", ["zero", "limit", "one"], ["ramp"], name="ramp"),
        helper.make_node("Mul", ["x", "ramp"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "ramp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5]),
                        helper.make_tensor_value_info("n", TensorProto.INT32, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("opt_level", [0, 3])
def test_bound_shape_input_leaves_the_data_input_as_the_argument(opt_level: int) -> None:
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    shape = np.array([4, -1], np.int64)
    model = ember.onnx.load(_reshape_model(), constants={"shape": shape})
    assert model.input_names == ["x"]
    got = ember.compile(model, x, opt_level=opt_level)(x)
    np.testing.assert_array_equal(got, _onnxruntime(_reshape_model(), {"x": x, "shape": shape}))


@pytest.mark.parametrize("opt_level", [0, 3])
def test_input_behind_a_computed_value_is_named_and_binds(opt_level: int) -> None:
    x = RNG.standard_normal(5).astype(np.float32)
    n = np.array(5, np.int32)
    unbound = ember.onnx.load(_range_model())
    with pytest.raises(ember.EmberError, match=r"Range 'ramp'.*input 1 \(limit\) must be a "
                       r"constant.*computed from graph input 'n'.*constants=\{'n': value\}"):
        ember.compile(unbound, x, n)
    assert unbound.inputs_behind("ramp") == ["n"]
    model = ember.onnx.load(_range_model(), constants={"n": n})
    got = ember.compile(model, x, opt_level=opt_level)(x)
    np.testing.assert_allclose(got, _onnxruntime(_range_model(), {"x": x, "n": n}), rtol=1e-6)


def test_unbound_shape_input_error_says_how_to_bind_it() -> None:
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    model = ember.onnx.load(_reshape_model())
    with pytest.raises(ember.EmberError, match=r"it is graph input 'shape': bind with "
                       r"ember\.onnx\.load\(\.\.\., constants=\{'shape': value\}\)"):
        ember.compile(model, x, np.array([4, 6], np.int64))


def test_bound_value_is_copied_not_held() -> None:
    shape = np.array([4, 6], np.int64)
    model = ember.onnx.load(_reshape_model(), constants={"shape": shape})
    shape[:] = [3, 8]  # the caller's array changes after the load
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert ember.compile(model, x, opt_level=0)(x).shape == (4, 6)
    assert shape.tolist() == [3, 8]


@pytest.mark.parametrize(("constants", "message"), [
    ({"nope": np.array([1], np.int64)}, r"constants names 'nope', which is not a graph input"),
    ({"shape": np.array([4.0, 6.0])}, r"constants\['shape'\] is float64; the graph input is i64"),
    ({"shape": np.array([4, 6, 1], np.int64)}, r"constants\['shape'\] has shape \[3\]; the graph "
                                              r"input is declared \[2\]"),
])
def test_bad_constants_are_clear_errors(constants: dict, message: str) -> None:
    with pytest.raises(ember.EmberError, match=message):
        ember.onnx.load(_reshape_model(), constants=constants)
