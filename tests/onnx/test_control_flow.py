"""ONNX control flow resolved at import time (If, Loop, Scan), against ONNX Runtime.

Scan is unrolled over its inputs' static length (forward and reverse, on any axis), Loop over
a trip count and condition known at import time, If takes its branch when the condition is
known and selects with Where when it is computed at run time; bodies read outer values by
name.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx  # noqa: E402

RNG = np.random.default_rng(3)
F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=19) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "control", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _info(name: str, elem: int = F, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], opt_level: int,
           constants: dict[str, np.ndarray] | None = None) -> None:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    loaded = ember.onnx.load(model, constants=constants)
    args = [feeds[name] for name in loaded.input_names]
    got = ember.compile(loaded, *args, opt_level=opt_level)(*args)
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def _scan_model(reverse_in: int, in_axis: int, reverse_out: int, out_axis: int
                ) -> onnx.ModelProto:
    """A running sum and product over the rows of x along `in_axis`, with the per-step sums
    stacked along `out_axis`; the body scales by `w`, a value of the outer graph."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["row", "w"], ["scaled"]),
         helper.make_node("Add", ["total", "scaled"], ["total_out"]),
         helper.make_node("Mul", ["product", "row"], ["product_out"]),
         helper.make_node("Identity", ["total_out"], ["step"])],
        "body", [_info("total", F, [4]), _info("product", F, [4]), _info("row", F, [4])],
        [_info("total_out", F, [4]), _info("product_out", F, [4]), _info("step", F, [4])])
    scan = helper.make_node(
        "Scan", ["t0", "p0", "x"], ["total", "product", "steps"], body=body, num_scan_inputs=1,
        scan_input_directions=[reverse_in], scan_input_axes=[in_axis],
        scan_output_directions=[reverse_out], scan_output_axes=[out_axis])
    x_shape = [3, 4] if in_axis in (0, -2) else [4, 3]
    if in_axis in (1, -1):
        scan = helper.make_node(
            "Scan", ["t0", "p0", "xt"], ["total", "product", "steps"], body=body,
            num_scan_inputs=1, scan_input_directions=[reverse_in], scan_input_axes=[in_axis],
            scan_output_directions=[reverse_out], scan_output_axes=[out_axis])
        nodes = [helper.make_node("Identity", ["x"], ["xt"]), scan]
    else:
        nodes = [scan]
    w = numpy_helper.from_array(np.array(0.5, np.float32), "w")
    return _model(nodes, [_info("t0", F, [4]), _info("p0", F, [4]), _info("x", F, x_shape)],
                  [_info("total"), _info("product"), _info("steps")], [w])


@pytest.mark.parametrize("opt_level", [0, 3])
@pytest.mark.parametrize(("reverse_in", "in_axis", "reverse_out", "out_axis"), [
    (0, 0, 0, 0), (1, 0, 0, 1), (0, 1, 1, 0), (1, -1, 1, -1)])
def test_scan_matches_onnxruntime(opt_level, reverse_in, in_axis, reverse_out, out_axis):
    model = _scan_model(reverse_in, in_axis, reverse_out, out_axis)
    x_shape = (3, 4) if in_axis in (0, -2) else (4, 3)
    feeds = {"t0": RNG.standard_normal(4).astype(np.float32),
             "p0": np.ones(4, np.float32), "x": RNG.standard_normal(x_shape).astype(np.float32)}
    _check(model, feeds, opt_level)


def _loop_model() -> onnx.ModelProto:
    """y doubles and adds x each iteration until it passes the limit 100 or M iterations; each
    iteration's y is a scan output."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["y_in", "two"], ["doubled"]),
         helper.make_node("Add", ["doubled", "x"], ["y_out"]),
         helper.make_node("ReduceMax", ["y_out"], ["top"], keepdims=0),
         helper.make_node("Less", ["top", "limit"], ["cond_out"]),
         helper.make_node("Identity", ["y_out"], ["seen"])],
        "loop_body", [_info("i", TensorProto.INT64, []), _info("cond_in", TensorProto.BOOL, []),
                      _info("y_in", F, [3])],
        [_info("cond_out", TensorProto.BOOL, []), _info("y_out", F, [3]), _info("seen", F, [3])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    loop = helper.make_node("Loop", ["M", "cond", "y0"], ["y", "history"], body=body)
    limit = numpy_helper.from_array(np.array(100.0, np.float32), "limit")
    x = numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "x")
    return _model([loop], [_info("M", TensorProto.INT64, []), _info("cond", TensorProto.BOOL, []),
                           _info("y0", F, [3])], [_info("y"), _info("history")], [limit, x])


@pytest.mark.parametrize("opt_level", [0, 3])
@pytest.mark.parametrize("trip", [1, 4, 20])
def test_loop_with_known_trip_count_and_condition(opt_level, trip):
    feeds = {"M": np.array(trip, np.int64), "cond": np.array(True),
             "y0": np.array([0.5, 1.0, 1.5], np.float32)}
    _check(_loop_model(), feeds, opt_level,
           constants={"M": feeds["M"], "cond": feeds["cond"], "y0": feeds["y0"]})


def test_loop_whose_condition_is_computed_at_run_time_is_refused_naming_it():
    model = ember.onnx.load(_loop_model(), constants={"M": np.array(5, np.int64),
                                                      "cond": np.array(True)})
    with pytest.raises(ember.EmberError, match=r"Loop.*the body's condition must be known at "
                       r"import time.*graph input 'y0'"):
        ember.compile(model, np.zeros(3, np.float32))


def _if_model(cond_known: bool) -> onnx.ModelProto:
    then = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["out_then"])], "then", [],
                             [_info("out_then", F, [2, 3])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["out_else"])], "else", [],
                              [_info("out_else", F, [2, 3])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    inputs = [_info("x", F, [2, 3])]
    if cond_known:
        inputs.append(_info("c", TensorProto.BOOL, []))
    else:  # the condition is computed from x at run time
        nodes.insert(0, helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0))
        nodes.insert(1, helper.make_node("Greater", ["s", "zero"], ["c"]))
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    return _model(nodes, inputs, [_info("y")], [] if cond_known else [zero])


@pytest.mark.parametrize("opt_level", [0, 3])
@pytest.mark.parametrize("cond", [True, False])
def test_if_on_a_known_condition_takes_the_branch(opt_level, cond):
    feeds = {"x": RNG.standard_normal((2, 3)).astype(np.float32), "c": np.array(cond)}
    _check(_if_model(True), feeds, opt_level, constants={"c": feeds["c"]})


@pytest.mark.parametrize("opt_level", [0, 3])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_if_on_a_run_time_condition_selects_each_output(opt_level, sign):
    feeds = {"x": (sign * np.abs(RNG.standard_normal((2, 3))) + sign * 0.1).astype(np.float32)}
    _check(_if_model(False), feeds, opt_level)


def test_if_with_branches_of_different_shapes_needs_a_known_condition():
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["a"])], "then", [],
                             [_info("a")])
    other = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["b"], keepdims=0)],
                              "else", [], [_info("b")])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    model = ember.onnx.load(_model(nodes, [_info("x", F, [2, 3])], [_info("y")], [zero]))
    with pytest.raises(ember.EmberError, match=r"If: with a condition computed at run time both "
                       r"branches must give one static type"):
        ember.compile(model, np.ones((2, 3), np.float32))


def test_scan_of_an_old_version_is_refused_by_name():
    body = helper.make_graph([helper.make_node("Identity", ["s"], ["s_out"])], "b",
                             [_info("s", F, [2])], [_info("s_out", F, [2])])
    node = helper.make_node("Scan", ["", "s0"], ["s"], body=body, num_scan_inputs=0)
    model = _model([node], [_info("s0", F, [1, 2])], [_info("s")], opset=8)
    with pytest.raises(ember.UnsupportedError, match=r"Scan.*Ember unrolls versions 9, 11"):
        ember.compile(ember.onnx.load(model), np.ones((1, 2), np.float32))
