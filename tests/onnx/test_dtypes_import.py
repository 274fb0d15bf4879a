"""ONNX import of narrow and unsigned element types, BitShift, QuantizeLinear and
DequantizeLinear, against onnx's own reference evaluator, at opt levels 0 and 3."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import ember  # noqa: E402
from ember.onnx.loader import load  # noqa: E402

LEVELS = [0, 3]
OPSET = 28


def _model(node: onnx.NodeProto, inputs: list[tuple[str, int, list[int]]],
           outputs: list[tuple[str, int, list[int]]],
           initializers: tuple[onnx.TensorProto, ...] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 11
    return model


def _check(model: onnx.ModelProto, *arrays: np.ndarray, level: int) -> None:
    want = ReferenceEvaluator(model).run(None, dict(zip(
        [i.name for i in model.graph.input], arrays, strict=True)))
    got = ember.compile(load(model), *arrays, opt_level=level)(*arrays)
    got = list(got) if isinstance(got, tuple) else [got]
    for result, expected in zip(got, want, strict=True):
        assert result.dtype == expected.dtype and result.shape == expected.shape
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("zero_type", "numpy_type"), [
    (TensorProto.UINT8, np.uint8), (TensorProto.INT8, np.int8),
    (TensorProto.UINT16, np.uint16), (TensorProto.INT16, np.int16)])
def test_quantize_rounds_half_to_even_and_saturates(zero_type: int, numpy_type: type,
                                                    level: int) -> None:
    info = np.iinfo(numpy_type)
    x = np.array([0.0, 0.5, 1.5, 2.5, -0.5, -1.5, 1e9, -1e9, 3.7, -3.2, 100.25, 7.5],
                 np.float32)
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.5])
    zero = helper.make_tensor("zero", zero_type, [], [int(info.min + info.max) // 2 + 1])
    node = helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["y"])
    model = _model(node, [("x", TensorProto.FLOAT, [12])], [("y", zero_type, [12])],
                   (scale, zero))
    _check(model, x, level=level)


@pytest.mark.parametrize("level", LEVELS)
def test_quantize_per_axis_and_blocked(level: int) -> None:
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32) * 40
    axis_scale = helper.make_tensor("scale", TensorProto.FLOAT, [6], [0.5, 1, 2, 0.25, 3, 7])
    axis_zero = helper.make_tensor("zero", TensorProto.INT8, [6], [0, 1, -2, 3, -4, 5])
    node = helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["y"], axis=1)
    _check(_model(node, [("x", TensorProto.FLOAT, [2, 6, 3])], [("y", TensorProto.INT8,
                                                               [2, 6, 3])],
                  (axis_scale, axis_zero)), x, level=level)
    # blocks of 4 along axis 1 (6 = 4 + 2: the last block is cut short)
    scales = np.array([0.5, 2.0, 1.0, 0.25, 3.0, 1.5, 0.75, 5.0, 1.25, 2.5, 4.0, 0.5],
                      np.float32).reshape(2, 2, 3)
    block_scale = helper.make_tensor("scale", TensorProto.FLOAT, [2, 2, 3], scales.ravel())
    node = helper.make_node("QuantizeLinear", ["x", "scale"], ["y"], axis=1, block_size=4,
                            output_dtype=TensorProto.INT16)
    _check(_model(node, [("x", TensorProto.FLOAT, [2, 6, 3])], [("y", TensorProto.INT16,
                                                               [2, 6, 3])],
                  (block_scale,)), x, level=level)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("x_type", "numpy_type"), [
    (TensorProto.UINT8, np.uint8), (TensorProto.INT8, np.int8),
    (TensorProto.UINT16, np.uint16), (TensorProto.INT16, np.int16)])
def test_dequantize(x_type: int, numpy_type: type, level: int) -> None:
    info = np.iinfo(numpy_type)
    x = np.random.default_rng(1).integers(info.min, info.max, (3, 5), endpoint=True
                                          ).astype(numpy_type)
    x[0, :2] = [info.min, info.max]
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [5], [0.1, 3.0, 0.007, 12.5, 1.0])
    zero = helper.make_tensor("zero", x_type, [5], [0, 1, info.max, info.min, 7])
    node = helper.make_node("DequantizeLinear", ["x", "scale", "zero"], ["y"], axis=1)
    model = _model(node, [("x", x_type, [3, 5])], [("y", TensorProto.FLOAT, [3, 5])],
                   (scale, zero))
    _check(model, x, level=level)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("element", "numpy_type"), [
    (TensorProto.UINT8, np.uint8), (TensorProto.UINT16, np.uint16),
    (TensorProto.UINT32, np.uint32), (TensorProto.UINT64, np.uint64),
    (TensorProto.INT8, np.int8), (TensorProto.INT16, np.int16),
    (TensorProto.INT32, np.int32), (TensorProto.INT64, np.int64)])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift_by_every_count(element: int, numpy_type: type, direction: str,
                                 level: int) -> None:
    """Every count from below 0 to past the width, against every kind of value (broadcast)."""
    info = np.iinfo(numpy_type)
    width = 8 * np.dtype(numpy_type).itemsize
    values = [info.max, info.min, 1, 5, info.max // 3, 77, 0, info.min + 1, -1, -77]
    x = np.array([v for v in values if info.min <= v <= info.max], numpy_type).reshape(-1, 1)
    low = -3 if info.min < 0 else 0
    counts = np.arange(low, width + 3).astype(numpy_type)
    node = helper.make_node("BitShift", ["x", "n"], ["y"], direction=direction)
    model = _model(node, [("x", element, [x.shape[0], 1]), ("n", element, [counts.size])],
                   [("y", element, [x.shape[0], counts.size])])
    _check(model, x, counts, level=level)


@pytest.mark.parametrize("level", LEVELS)
def test_cast_uint64_and_float16(level: int) -> None:
    x = np.array([2**64 - 1, 2**63, 65504, 65519, 65520, 2049, 2051, 0], np.uint64)
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)
    model = _model(node, [("x", TensorProto.UINT64, [8])], [("y", TensorProto.FLOAT16, [8])])
    _check(model, x, level=level)


@pytest.mark.parametrize("level", LEVELS)
def test_bfloat16_cast_and_arithmetic(level: int) -> None:
    """FLOAT -> BFLOAT16 rounds to nearest even (ties, NaN, inf, -0.0, overflow to inf), and
    bf16 arithmetic rounds each result, as onnx's reference does."""
    x = np.array([1.0, 1.00390625, 1.01171875, -0.0, np.inf, -np.inf, np.nan, 3.4e38, 1e-40,
                  -2.5], np.float32)
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.BFLOAT16)
    model = _model(node, [("x", TensorProto.FLOAT, [10])], [("y", TensorProto.BFLOAT16, [10])])
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = ember.compile(load(model), x, opt_level=level)(x)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
