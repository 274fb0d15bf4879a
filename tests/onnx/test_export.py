"""ONNX export: every op's exporter, checked by the ONNX checker and run in ONNX Runtime.

Each test builds a small graph, exports it with `ember.onnx.export`, checks the model with
`onnx.checker.check_model(full_check=True)` (done by `save`), runs it in ONNX Runtime on the CPU
and compares the outputs with an independent numpy (float64) computation.
"""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ember
from ember.ir.attrs import Attrs
from ember.ir.graph import Graph, GraphBuilder, Node, Value
from ember.ir.types import DType, TensorType
from ember.onnx.export import EXPORTERS, INT64_MIN, onnx_slice_bounds, save, to_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RTOL, ATOL = 1e-5, 1e-6


def run_onnx(model: onnx.ModelProto, *arrays: np.ndarray) -> list[np.ndarray]:
    """Run an ONNX model in ONNX Runtime (CPU) on positional inputs.

    ONNX Runtime's graph optimizations are off: with them, onnxruntime 1.32 computes
    Transpose(perm [0, 2, 1]) of f32[1,2,2] followed by MatMul with a 1-D f32[2] wrongly (its
    transpose-into-matmul fusion); the model itself is right (numpy agrees with Ember).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feeds = {info.name: array for info, array in zip(session.get_inputs(), arrays, strict=True)}
    return session.run(None, feeds)


def export_run(graph: ember.Graph, *arrays: np.ndarray, opset: int = 17,
               tmp_path: Path | None = None) -> list[np.ndarray]:
    """Export (through `save` when a directory is given), check, and run in ONNX Runtime."""
    if tmp_path is not None:
        model = save(graph, tmp_path / "model.onnx", opset=opset)
        model = onnx.load(str(tmp_path / "model.onnx"))
    else:
        model = to_model(graph, opset)
        onnx.checker.check_model(model, full_check=True)
    return run_onnx(model, *arrays)


def assert_close(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype | type) -> None:
    """Shape, dtype, then values: floats within (RTOL, ATOL), anything else exactly."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    if actual.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)
    else:
        np.testing.assert_array_equal(actual, expected.astype(actual.dtype))


def one_op(op: str, *arrays: np.ndarray, **attrs: object) -> ember.Graph:
    """A graph of one op applied to inputs shaped like `arrays`."""
    builder = GraphBuilder("one")
    inputs = [builder.input(TensorType.of(a), f"in{i}") for i, a in enumerate(arrays)]
    result = builder.op(op, *inputs, **attrs)
    return builder.build(result if isinstance(result, tuple) else [result])


def check_one(op: str, expected: np.ndarray | list[np.ndarray], *arrays: np.ndarray,
              opset: int = 17, **attrs: object) -> None:
    """Export one op, run it, compare each output with `expected` (float64 for float results).

    Each output must have the dtype of the op's result type.
    """
    graph = one_op(op, *arrays, **attrs)
    outputs = export_run(graph, *arrays, opset=opset)
    expecteds = expected if isinstance(expected, list) else [expected]
    assert len(outputs) == len(expecteds)
    for actual, wanted, value in zip(outputs, expecteds, graph.outputs, strict=True):
        assert_close(actual, wanted, value.dtype.numpy)


RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4)).astype(np.float32)
POSITIVE = RNG.uniform(0.5, 2.0, (3, 4)).astype(np.float32)
X64 = X.astype(np.float64)
ERF = np.vectorize(math.erf)

# ---------------------------------------------------------------------------------------------
# Elementwise ops.

UNARY_FLOAT = {
    "neg": (X, -X64),
    "abs": (X, np.abs(X64)),
    "sign": (X, np.sign(X64)),
    "exp": (X, np.exp(X64)),
    "log": (POSITIVE, np.log(POSITIVE.astype(np.float64))),
    "sqrt": (POSITIVE, np.sqrt(POSITIVE.astype(np.float64))),
    "rsqrt": (POSITIVE, 1 / np.sqrt(POSITIVE.astype(np.float64))),
    "reciprocal": (POSITIVE, 1 / POSITIVE.astype(np.float64)),
    "sin": (X, np.sin(X64)),
    "cos": (X, np.cos(X64)),
    "floor": (X * 3, np.floor(X64 * 3)),
    "ceil": (X * 3, np.ceil(X64 * 3)),
    "tanh": (X, np.tanh(X64)),
    "sigmoid": (X, 1 / (1 + np.exp(-X64))),
    "relu": (X, np.where(X64 > 0, X64, 0.0)),
    "silu": (X, X64 / (1 + np.exp(-X64))),
    "erf": (X, ERF(X64)),
}


@pytest.mark.parametrize("op", sorted(UNARY_FLOAT))
def test_unary_float_ops(op: str) -> None:
    source, expected = UNARY_FLOAT[op]
    check_one(op, expected, source)


def test_round_is_half_to_even() -> None:
    source = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4, -0.6], dtype=np.float32)
    check_one("round", np.array([-2, -2, -0, 0, 2, 2, 0, -1], dtype=np.float64), source)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op", ["neg", "abs", "sign", "relu"])
def test_unary_integer_ops(op: str, dtype: type) -> None:
    source = np.array([-5, -1, 0, 1, 7], dtype=dtype)
    expected = {"neg": [5, 1, 0, -1, -7], "abs": [5, 1, 0, 1, 7], "sign": [-1, -1, 0, 1, 1],
                "relu": [0, 0, 0, 1, 7]}[op]
    check_one(op, np.array(expected, dtype=dtype), source)


def test_leaky_relu_float_and_integer() -> None:
    check_one("leaky_relu", np.where(X64 >= 0, X64, 0.2 * X64), X, alpha=0.2)
    ints = np.array([-9, -5, -1, 0, 4], dtype=np.int32)
    # int(-9 * 0.25) = -2: scaled in float and truncated toward zero
    check_one("leaky_relu", np.array([-2, -1, 0, 0, 4], dtype=np.int32), ints, alpha=0.25)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_erf_and_tanh_forms(approximate: str, opset: int) -> None:
    if approximate == "none":
        expected = 0.5 * X64 * (1 + ERF(X64 / math.sqrt(2)))
    else:
        expected = 0.5 * X64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (X64 + 0.044715 * X64**3)))
    model = to_model(one_op("gelu", X, approximate=approximate), opset)
    op_types = {node.op_type for node in model.graph.node}
    assert ("Gelu" in op_types) == (opset >= 20)
    check_one("gelu", expected, X, opset=opset, approximate=approximate)


BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "maximum": np.maximum, "minimum": np.minimum, "eq": np.equal, "ne": np.not_equal,
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
}


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_ops_broadcast(op: str) -> None:
    left = np.round(RNG.standard_normal((2, 3)), 1).astype(np.float32)
    right = np.array([left[0, 0], 0.5, -1.0], dtype=np.float32)  # one equal pair for eq/ne
    expected = BINARY[op](left.astype(np.float64), right.astype(np.float64))
    check_one(op, expected, left, right)


def test_pow_with_positive_base() -> None:
    exponent = np.array([0.5, 2.0, -1.0, 3.0], dtype=np.float32)
    base = POSITIVE[0]
    check_one("pow", base.astype(np.float64) ** exponent.astype(np.float64), base, exponent)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_division_truncates_toward_zero(dtype: type) -> None:
    numerator = np.array([-7, 7, -7, 7, 6], dtype=dtype)
    denominator = np.array([2, 2, -2, -2, 3], dtype=dtype)
    check_one("div", np.array([-3, 3, 3, -3, 2], dtype=dtype), numerator, denominator)


@pytest.mark.parametrize("op", ["logical_and", "logical_or", "logical_xor"])
def test_logic_ops(op: str) -> None:
    left = np.array([True, True, False, False])
    right = np.array([True, False, True, False])
    expected = {"logical_and": [True, False, False, False], "logical_or": [True, True, True, False],
                "logical_xor": [False, True, True, False]}[op]
    check_one(op, np.array(expected), left, right)


def test_logical_not() -> None:
    check_one("logical_not", np.array([False, True]), np.array([True, False]))


def test_where_broadcasts_condition() -> None:
    condition = np.array([True, False, True, False])
    expected = np.array([[X64[r, c] if condition[c] else POSITIVE[r, c] for c in range(4)]
                         for r in range(3)])
    check_one("where", expected, condition, X, POSITIVE)


@pytest.mark.parametrize(("source", "dtype", "expected"), [
    (np.array([-1.7, -0.2, 0.0, 2.9], np.float32), "i32", np.array([-1, 0, 0, 2], np.int32)),
    (np.array([-1.7, 0.0, 2.9], np.float32), "bool", np.array([True, False, True])),
    (np.array([3, -4], np.int64), "f32", np.array([3.0, -4.0], np.float32)),
    (np.array([1.5, -2.25], np.float32), "f64", np.array([1.5, -2.25], np.float64)),
])
def test_cast(source: np.ndarray, dtype: str, expected: np.ndarray) -> None:
    (actual,) = export_run(one_op("cast", source, dtype=dtype), source)
    assert_close(actual, expected, expected.dtype)


@pytest.mark.parametrize(("low", "high"), [(-0.5, 0.5), (None, 0.3), (-0.2, None)])
def test_clip_with_optional_bounds(low: float | None, high: float | None) -> None:
    expected = np.clip(X64, -np.inf if low is None else low, np.inf if high is None else high)
    check_one("clip", expected, X, min=low, max=high)


def test_clip_integers() -> None:
    source = np.array([-9, -2, 0, 3, 8], dtype=np.int64)
    check_one("clip", np.array([-2, -2, 0, 3, 5], dtype=np.int64), source, min=-2.0, max=5.0)


# ---------------------------------------------------------------------------------------------
# Reductions.

CUBE = RNG.standard_normal((2, 3, 4)).astype(np.float32)
REDUCERS = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "max": np.max, "min": np.min}


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axes", [(1,), (0, 2), (-1,)])
@pytest.mark.parametrize("op", sorted(REDUCERS))
def test_reductions(op: str, axes: tuple[int, ...], keepdims: bool, opset: int) -> None:
    expected = REDUCERS[op](CUBE.astype(np.float64), axis=axes, keepdims=keepdims)
    check_one(op, expected, CUBE, opset=opset, axes=axes, keepdims=keepdims)


def test_reduction_over_no_axes_reduces_nothing() -> None:
    """ONNX reads an empty axes list as "all axes"; Ember's `axes=()` keeps the input."""
    check_one("sum", CUBE.astype(np.float64), CUBE, axes=(), keepdims=False)


@pytest.mark.parametrize("opset", [17, 20])
def test_max_of_bools(opset: int) -> None:
    source = np.array([[True, False, False], [False, False, False]])
    check_one("max", np.array([True, False]), source, opset=opset, axes=(1,), keepdims=False)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_arg_reductions_pick_the_first_of_ties(op: str, keepdims: bool) -> None:
    source = np.array([[1.0, 3.0, 3.0, 0.0], [-2.0, -2.0, 5.0, -2.0]], dtype=np.float32)
    first = {"argmax": [1, 2], "argmin": [3, 0]}[op]
    expected = np.array(first, dtype=np.int64).reshape((2, 1) if keepdims else (2,))
    check_one(op, expected, source, axis=-1, keepdims=keepdims)


# ---------------------------------------------------------------------------------------------
# Neural-network ops.


@pytest.mark.parametrize(("left_shape", "right_shape"), [
    ((3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (4, 2)), ((2, 3, 4), (4,)),
])
def test_matmul_numpy_semantics(left_shape: tuple[int, ...], right_shape: tuple[int, ...]) -> None:
    left = RNG.standard_normal(left_shape).astype(np.float32)
    right = RNG.standard_normal(right_shape).astype(np.float32)
    check_one("matmul", left.astype(np.float64) @ right.astype(np.float64), left, right)


def test_matmul_int32() -> None:
    left = np.arange(6, dtype=np.int32).reshape(2, 3) - 2
    right = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    check_one("matmul", left.astype(np.int64) @ right.astype(np.int64), left, right)


def conv2d_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                     stride: tuple[int, int], padding: tuple[int, int, int, int],
                     dilation: tuple[int, int], groups: int) -> np.ndarray:
    """Direct convolution in float64, one output element at a time."""
    top, left, bottom, right = padding
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_channels, per_group, kernel_h, kernel_w = weight.shape
    out_h = (padded.shape[2] - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    out_w = (padded.shape[3] - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    out = np.zeros((x.shape[0], out_channels, out_h, out_w))
    per_group_out = out_channels // groups
    for o in range(out_channels):
        channels = slice((o // per_group_out) * per_group, (o // per_group_out + 1) * per_group)
        for i in range(out_h):
            for j in range(out_w):
                rows = i * stride[0] + dilation[0] * np.arange(kernel_h)
                cols = j * stride[1] + dilation[1] * np.arange(kernel_w)
                window = padded[:, channels][:, :, rows][:, :, :, cols]
                out[:, o, i, j] = np.einsum("nckl,ckl->n", window, weight[o].astype(np.float64))
    if bias is not None:
        out += bias[None, :, None, None]
    return out


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups", "with_bias"), [
    ((1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    ((2, 1), (1, 0, 2, 1), (1, 2), 1, False),  # asymmetric padding: (top, left, bottom, right)
    ((1, 2), (0, 2, 0, 1), (2, 1), 2, True),
])
def test_conv2d(stride: tuple[int, int], padding: tuple[int, int, int, int],
                dilation: tuple[int, int], groups: int, with_bias: bool) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    weight = rng.standard_normal((6, 4 // groups, 3, 2)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32) if with_bias else None
    arrays = (x, weight) if bias is None else (x, weight, bias)
    expected = conv2d_reference(x, weight, bias, stride, padding, dilation, groups)
    check_one("conv2d", expected, *arrays, stride=stride, padding=padding, dilation=dilation,
              groups=groups)


def pool_out(size: int, kernel: int, stride: int, low: int, high: int, dilation: int,
             ceil_mode: bool) -> int:
    """PyTorch's pooled length, with the last window dropped when it starts in the padding."""
    room = size + low + high - dilation * (kernel - 1) - 1
    out = (math.ceil(room / stride) if ceil_mode else room // stride) + 1
    return out - 1 if ceil_mode and (out - 1) * stride >= size + low else out


def pool_reference(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int, int, int], dilation: tuple[int, int],
                   ceil_mode: bool, mode: str, count_include_pad: bool = True) -> np.ndarray:
    """Max or average pooling in float64 with PyTorch's window and divisor rules."""
    sizes = x.shape[2:]
    lows, highs = padding[:2], padding[2:]
    outs = [pool_out(sizes[a], kernel[a], stride[a], lows[a], highs[a], dilation[a], ceil_mode)
            for a in range(2)]
    out = np.zeros((*x.shape[:2], *outs))
    for i in range(outs[0]):
        for j in range(outs[1]):
            spans = []
            for axis, position in enumerate((i, j)):
                start = position * stride[axis] - lows[axis]
                taps = start + dilation[axis] * np.arange(kernel[axis])
                inside = taps[(taps >= 0) & (taps < sizes[axis])]
                padded_end = min(start + kernel[axis], sizes[axis] + highs[axis])
                spans.append((inside, padded_end - start))
            window = x.astype(np.float64)[:, :, spans[0][0]][:, :, :, spans[1][0]]
            if mode == "max":
                out[:, :, i, j] = window.max(axis=(2, 3))
            else:
                count = spans[0][1] * spans[1][1] if count_include_pad else window[0, 0].size
                out[:, :, i, j] = window.sum(axis=(2, 3)) / count
    return out


POOL_CASES = [
    ((2, 2), (2, 2), (0, 0, 0, 0), False),
    ((3, 3), (2, 2), (1, 1, 1, 1), False),
    ((3, 3), (2, 2), (0, 1, 1, 0), True),
    ((3, 2), (2, 3), (1, 0, 0, 1), True),
]


@pytest.mark.parametrize(("kernel", "stride", "padding", "ceil_mode"), POOL_CASES)
def test_max_pool2d(kernel: tuple[int, int], stride: tuple[int, int],
                    padding: tuple[int, int, int, int], ceil_mode: bool) -> None:
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 7)).astype(np.float32)
    expected = pool_reference(x, kernel, stride, padding, (1, 1), ceil_mode, "max")
    check_one("max_pool2d", expected, x, kernel=kernel, stride=stride, padding=padding,
              ceil_mode=ceil_mode)


def test_max_pool2d_with_dilation() -> None:
    x = np.random.default_rng(3).standard_normal((1, 2, 8, 8)).astype(np.float32)
    expected = pool_reference(x, (2, 2), (1, 2), (1, 1, 1, 1), (2, 3), False, "max")
    check_one("max_pool2d", expected, x, kernel=(2, 2), stride=(1, 2), padding=(1, 1, 1, 1),
              dilation=(2, 3))


def test_max_pool2d_int32_goes_through_f64() -> None:
    x = np.arange(2 * 5 * 5, dtype=np.int32).reshape(1, 2, 5, 5) * 7 - 100
    expected = pool_reference(x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), True, "max")
    check_one("max_pool2d", expected.astype(np.int32), x, kernel=(2, 2), stride=(2, 2),
              ceil_mode=True)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(("kernel", "stride", "padding", "ceil_mode"), POOL_CASES)
def test_avg_pool2d(kernel: tuple[int, int], stride: tuple[int, int],
                    padding: tuple[int, int, int, int], ceil_mode: bool,
                    count_include_pad: bool) -> None:
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 7)).astype(np.float32)
    expected = pool_reference(x, kernel, stride, padding, (1, 1), ceil_mode, "avg",
                              count_include_pad)
    check_one("avg_pool2d", expected, x, kernel=kernel, stride=stride, padding=padding,
              ceil_mode=ceil_mode, count_include_pad=count_include_pad)


@pytest.mark.parametrize(("output_size", "op_type"), [((1, 1), "GlobalAveragePool"),
                                                      ((2, 3), "AveragePool")])
def test_adaptive_avg_pool2d(output_size: tuple[int, int], op_type: str) -> None:
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 6)).astype(np.float32)
    rows, cols = 4 // output_size[0], 6 // output_size[1]
    expected = x.astype(np.float64).reshape(2, 3, output_size[0], rows, output_size[1], cols)
    expected = expected.mean(axis=(3, 5))
    model = to_model(one_op("adaptive_avg_pool2d", x, output_size=output_size))
    assert [node.op_type for node in model.graph.node] == [op_type]
    check_one("adaptive_avg_pool2d", expected, x, output_size=output_size)


def test_adaptive_avg_pool2d_that_no_pool_matches_is_unsupported() -> None:
    x = np.zeros((1, 2, 5, 5), dtype=np.float32)
    with pytest.raises(ember.UnsupportedError) as caught:
        to_model(one_op("adaptive_avg_pool2d", x, output_size=(2, 2)))
    message = str(caught.value)
    assert "adaptive_avg_pool2d from 5x5 to 2x2" in message
    assert "adaptive_avg_pool2d(%in0)" in message


def test_batch_norm() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    mean, bias = rng.standard_normal((2, 3)).astype(np.float32)
    var, weight = rng.uniform(0.5, 2, (2, 3)).astype(np.float32)
    shape = (1, 3, 1, 1)
    expected = ((x.astype(np.float64) - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-3)
                * weight.reshape(shape) + bias.reshape(shape))
    check_one("batch_norm", expected, x, mean, var, weight, bias, eps=1e-3)


@pytest.mark.parametrize("opset", [13, 17])
def test_layer_norm_over_two_axes(opset: int) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    weight = rng.uniform(0.5, 2, (3, 4)).astype(np.float32)
    bias = rng.standard_normal((3, 4)).astype(np.float32)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(1, 2), keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=(1, 2), keepdims=True)
    expected = (x64 - mean) / np.sqrt(var + 1e-5) * weight + bias
    model = to_model(one_op("layer_norm", x, weight, bias), opset)
    assert ("LayerNormalization" in {n.op_type for n in model.graph.node}) == (opset >= 17)
    check_one("layer_norm", expected, x, weight, bias, opset=opset)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_and_log_softmax(op: str, axis: int) -> None:
    shifted = CUBE.astype(np.float64) - CUBE.max(axis=axis, keepdims=True)
    log_total = np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    expected = np.exp(shifted - log_total) if op == "softmax" else shifted - log_total
    check_one(op, expected, CUBE, opset=13, axis=axis)


def test_dropout_in_inference_is_identity() -> None:
    check_one("dropout", X64, X, p=0.5, training=False)


def test_dropout_in_training_is_unsupported() -> None:
    with pytest.raises(ember.UnsupportedError, match=r"dropout in training mode.*dropout\(%in0\)"):
        to_model(one_op("dropout", X, p=0.5, training=True))


def test_gather_with_negative_indices() -> None:
    indices = np.array([[0, -1], [2, 1]], dtype=np.int64)
    expected = np.stack([[X64[:, i % 4] for i in row] for row in indices]).transpose(2, 0, 1)
    check_one("gather", expected, X, indices, axis=1)


# ---------------------------------------------------------------------------------------------
# Shape ops.


def test_reshape_and_transpose() -> None:
    check_one("reshape", X64.reshape(2, 6), X, shape=(2, 6))
    check_one("transpose", CUBE.astype(np.float64).transpose(2, 0, 1), CUBE, perm=(2, 0, 1))


def test_reshape_to_an_empty_shape() -> None:
    """A 0 in the target shape is a real 0, not ONNX's "copy this dimension"."""
    empty = np.zeros((0, 3), dtype=np.float32)
    check_one("reshape", np.zeros((3, 0)), empty, shape=(3, 0))


def test_broadcast_to_expand_dims_squeeze() -> None:
    row = X[:1]
    check_one("broadcast_to", np.repeat(row.astype(np.float64)[None], 2, axis=0).repeat(1, 1),
              row, shape=(2, 1, 4))
    check_one("expand_dims", X64[:, None, :, None], X, axes=(1, -1))
    column = X[:, :1]
    check_one("squeeze", X64[:, 0], column, axes=(-1,))


def test_squeeze_of_no_axes_keeps_unit_dimensions() -> None:
    """ONNX Squeeze without axes drops every size-1 dimension; Ember's `axes=()` none."""
    column = X[:, :1]
    check_one("squeeze", column.astype(np.float64), column, axes=())


@pytest.mark.parametrize(("start", "end", "shape"), [(1, 2, (2, 12, 5)), (0, -1, (120,)),
                                                     (2, 3, (2, 3, 20)), (1, -1, (2, 60))])
def test_flatten_between_dims(start: int, end: int, shape: tuple[int, ...]) -> None:
    source = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    check_one("flatten", source.astype(np.float64).reshape(shape), source, start_dim=start,
              end_dim=end)


def test_concat_and_split() -> None:
    check_one("concat", np.concatenate([X64, POSITIVE.astype(np.float64)], axis=1), X, POSITIVE,
              axis=1)
    wide = np.arange(2 * 7, dtype=np.float32).reshape(2, 7)
    parts = [wide[:, :2], wide[:, 2:3], wide[:, 3:]]
    check_one("split", [p.astype(np.float64) for p in parts], wide, axis=-1, sizes=(2, 1, 4))


def python_slice(array: np.ndarray, starts: tuple[int, ...], stops: tuple[int, ...],
                 steps: tuple[int, ...]) -> np.ndarray:
    """Select `range(start, stop, step)` along every axis, with Python range semantics."""
    indices = [list(range(*triple)) for triple in zip(starts, stops, steps, strict=True)]
    return array[np.ix_(*indices)] if array.ndim else array


@pytest.mark.parametrize(("starts", "stops", "steps"), [
    ((1, 0), (3, 4), (1, 2)),
    ((2, 3), (-1, -1), (-1, -1)),  # through index 0 backwards
    ((2, 3), (0, 1), (-2, -2)),
    ((0, 3), (3, 0), (1, -1)),
    ((1, 2), (1, 4), (1, 1)),  # empty along axis 0
])
def test_slice(starts: tuple[int, ...], stops: tuple[int, ...], steps: tuple[int, ...]) -> None:
    expected = python_slice(X64, starts, stops, steps)
    check_one("slice", expected, X, starts=starts, stops=stops, steps=steps)


def test_slice_bounds_use_int64_min_past_index_zero() -> None:
    assert onnx_slice_bounds(3, -1, -1) == (3, INT64_MIN)
    assert onnx_slice_bounds(3, 0, -1) == (3, 0)
    assert onnx_slice_bounds(4, -1, -2) == (4, INT64_MIN)
    assert onnx_slice_bounds(5, 1, -2) == (5, 2)
    assert onnx_slice_bounds(0, 5, 2) == (0, 5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(-2, 6), st.integers(-2, 6),
                          st.integers(-3, 3).filter(bool)), min_size=2, max_size=2))
def test_slice_matches_python_ranges(triples: list[tuple[int, int, int]]) -> None:
    shape = (4, 5)
    for axis, (start, stop, step) in enumerate(triples):
        selected = range(start, stop, step)
        if selected and (min(selected) < 0 or max(selected) >= shape[axis]):
            return  # out of range: Ember's slice rule rejects it
    starts, stops, steps = (tuple(t[i] for t in triples) for i in range(3))
    source = np.arange(20, dtype=np.float32).reshape(shape)
    expected = python_slice(source.astype(np.float64), starts, stops, steps)
    check_one("slice", expected, source, starts=starts, stops=stops, steps=steps)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(mode: str) -> None:
    pads = (1, 0, 2, 3)  # befores (1, 0), afters (2, 3)
    widths = ((1, 2), (0, 3))
    if mode == "constant":
        expected = np.pad(X64, widths, constant_values=2.5)
    else:
        expected = np.pad(X64, widths, mode=mode)
    check_one("pad", expected, X, pads=pads, mode=mode, value=2.5)


# ---------------------------------------------------------------------------------------------
# Graph structure: constants, names, outputs.


def test_named_constants_become_initializers_with_their_names() -> None:
    builder = GraphBuilder("weights")
    x = builder.input(TensorType(DType.F32, (3, 4)), "x")
    weight = builder.const(POSITIVE.T.copy(), name="layer.weight")
    offset = builder.const(np.float32(0.25))
    graph = builder.build([builder.add(builder.matmul(x, weight), offset)])
    model = to_model(graph)
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert "layer.weight" in initializers
    np.testing.assert_array_equal(initializers["layer.weight"], POSITIVE.T)
    assert [i.name for i in model.graph.input] == ["x"]
    (actual,) = run_onnx(model, X)
    assert_close(actual, X64 @ POSITIVE.T.astype(np.float64) + 0.25, np.float32)


def test_outputs_that_are_inputs_constants_or_repeated(tmp_path: Path) -> None:
    builder = GraphBuilder("outputs")
    x = builder.input(TensorType(DType.F32, (3, 4)), "x")
    seven = builder.const(np.full((2,), 7.0, dtype=np.float32), name="seven")
    doubled = builder.add(x, x)
    graph = builder.build([x, seven, doubled, doubled])
    outputs = export_run(graph, X, tmp_path=tmp_path)
    expected = [X64, np.full((2,), 7.0), 2 * X64, 2 * X64]
    for actual, wanted in zip(outputs, expected, strict=True):
        assert_close(actual, wanted, np.float32)


def test_node_locations_become_doc_strings() -> None:
    builder = GraphBuilder("located")
    x = builder.input(TensorType(DType.F32, (3,)), "x")
    builder.loc = "model.py:12"
    graph = builder.build([builder.relu(x)])
    (node,) = to_model(graph).graph.node
    assert node.op_type == "Relu"
    assert node.doc_string == "model.py:12"


def test_fused_regions_are_inlined_even_when_shared_or_nested() -> None:
    """Two `fused` nodes with one body, and a region inside a region, export as plain nodes."""
    region = GraphBuilder("region")
    argument = region.input(TensorType(DType.F32, (3, 4)), "a")
    body = region.build([region.add(region.tanh(argument), argument)])  # tanh(a) + a
    x = Value(TensorType(DType.F32, (3, 4)), "x")
    first = Node("fused", (x,), (Value(x.type),), Attrs(kind="elementwise"), body)
    second = Node("fused", first.outputs, (Value(x.type),), Attrs(kind="elementwise"), body)
    outer_argument = Value(x.type, "b")
    inner = Node("fused", (outer_argument,), (Value(x.type),), Attrs(kind="elementwise"), body)
    nested_body = Graph("nested", (outer_argument,), (inner,), inner.outputs)
    third = Node("fused", second.outputs, (Value(x.type),), Attrs(kind="elementwise"),
                 nested_body)
    graph = Graph("g", (x,), (first, second, third), (third.outputs[0], first.outputs[0]))
    model = to_model(graph)
    assert [node.op_type for node in model.graph.node] == ["Tanh", "Add"] * 3

    def step(h: np.ndarray) -> np.ndarray:
        return np.tanh(h) + h

    outputs = run_onnx(model, X)
    assert_close(outputs[0], step(step(step(X64))), np.float32)
    assert_close(outputs[1], step(X64), np.float32)


def test_every_plain_registered_op_has_an_exporter() -> None:
    from ember.ir.ops import OPS

    # Layout ops come from passes after export's input; the backward ops of training have no
    # ONNX operator (ONNX models are inference graphs).
    blocked = {"layout_convert"} | {op for op in OPS if op.endswith("_nchwc")}
    blocked |= {"max_pool2d_grad", "avg_pool2d_grad", "adaptive_avg_pool2d_grad", "scatter_add"}
    blocked |= {"matmul_nt"}  # made by a pass from matmul(a, transpose(b)), which exports
    assert sorted(set(OPS) - blocked - set(EXPORTERS)) == []


# ---------------------------------------------------------------------------------------------
# Errors.


def test_op_without_exporter_names_op_node_and_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(EXPORTERS, "relu")
    builder = GraphBuilder("g")
    x = builder.input(TensorType(DType.F32, (3,)), "x")
    builder.loc = "model.py:12"
    graph = builder.build([builder.relu(x)])
    with pytest.raises(ember.EmberError) as caught:
        to_model(graph)
    message = str(caught.value)
    assert "no exporter for op 'relu'" in message
    assert "relu(%x) : f32[3]" in message
    assert "model.py:12" in message


def test_blocked_layout_graph_names_the_layout_op() -> None:
    namespace = runpy.run_path(str(EXAMPLES / "cnn.py"), run_name="cnn_example")
    x = namespace["example_inputs"][0][:2]
    pipeline = "fold-constants,fold-batchnorm,layout,fold-constants,fuse,dce,plan-memory"
    optimized = ember.compile(namespace["model"], x, passes=pipeline).graph
    assert any(node.op == "layout_convert" for node in optimized.nodes)
    with pytest.raises(ember.UnsupportedError) as caught:
        to_model(optimized)
    message = str(caught.value)
    assert "no exporter for op 'layout_convert'" in message
    block = ember.Target.host().lanes(4)  # the blocked layout follows the host's vector width
    assert f'layout_convert(%input) {{buffer = 0, channels = 3, layout = "nchw{block}c"' in message


def test_opset_out_of_range() -> None:
    with pytest.raises(ember.UnsupportedError, match=r"opset 11 \(supported: 13 to \d+"):
        to_model(one_op("relu", X), 11)


def test_save_rejects_other_objects(tmp_path: Path) -> None:
    with pytest.raises(ember.EmberError, match=r"takes an ember\.Graph or an ember\.Executable, "
                                               r"got ndarray"):
        save(X, tmp_path / "x.onnx")


def test_public_name() -> None:
    import ember.onnx

    if not hasattr(ember.onnx, "save"):
        pytest.skip("ember.onnx does not export `save` yet")
    assert ember.onnx.save is save


# ---------------------------------------------------------------------------------------------
# Random graphs and the examples.


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_graphs_match_the_interpreter(data: st.DataObject) -> None:
    """ONNX Runtime on the exported model agrees with Ember's reference interpreter."""
    from tests.strategies import graph_inputs, graphs

    graph = data.draw(graphs())
    arrays = graph_inputs(graph, seed=0)
    expected = ember.interpret(graph, *arrays)
    actual = export_run(graph, *arrays)
    for got, wanted in zip(actual, expected, strict=True):
        assert_close(got, wanted, wanted.dtype)


@pytest.fixture(scope="module", params=["mlp", "cnn", "transformer"])
def example(request: pytest.FixtureRequest) -> dict:
    """An example's namespace (model, example_inputs, numpy_forward), small inputs for speed."""
    namespace = runpy.run_path(str(EXAMPLES / f"{request.param}.py"), run_name="x")
    namespace["inputs"] = tuple(a[:2] for a in namespace["example_inputs"])
    namespace["name"] = request.param
    return namespace


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_traced_examples_match_numpy(example: dict, opset: int, tmp_path: Path) -> None:
    graph = ember.trace(example["model"], *example["inputs"])
    (actual,) = export_run(graph, *example["inputs"], opset=opset, tmp_path=tmp_path)
    expected = example["numpy_forward"](*example["inputs"])
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-5)
    (interpreted,) = ember.interpret(graph, *example["inputs"])
    np.testing.assert_allclose(actual, interpreted, rtol=RTOL, atol=1e-6)


def test_compiled_examples_export_plain_ops(example: dict, tmp_path: Path) -> None:
    """An executable exports its optimized graph with regions inlined, or the traced graph."""
    executable = ember.compile(example["model"], *example["inputs"])
    model = save(executable, tmp_path / "model.onnx")
    (actual,) = run_onnx(model, *example["inputs"])
    expected = example["numpy_forward"](*example["inputs"])
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-5)
    # The optimized MLP has no batch norm and no transpose of its weights left to export: its
    # linear layers read the weights as stored (Gemm with transB, as PyTorch exports them).
    if example["name"] == "mlp":
        op_types = {node.op_type for node in model.graph.node}
        assert op_types == {"Gemm", "Add", "Relu", "Softmax"}


def test_round_trip_through_the_importer(example: dict, tmp_path: Path) -> None:
    """Ember -> ONNX -> Ember gives the same outputs."""
    import ember.onnx

    load = getattr(ember.onnx, "load", None)
    if load is None:
        pytest.skip("ember.onnx.load (the ONNX importer) is not available")
    graph = ember.trace(example["model"], *example["inputs"])
    save(graph, tmp_path / "model.onnx")
    imported = load(str(tmp_path / "model.onnx"))
    (actual,) = ember.interpret(ember.trace(imported, *example["inputs"]), *example["inputs"])
    expected = example["numpy_forward"](*example["inputs"])
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-5)


def test_transpose_then_matmul_with_a_vector() -> None:
    """The case ONNX Runtime's fusion gets wrong: checked against numpy, not only ORT."""
    graph = ember.parse(
        "graph @f(%x0: f32[1,2,2], %x1: f32[2]) -> (f32[1,2]) {\n"
        "  %0 = transpose(%x0) {perm = [0, 2, 1]} : f32[1,2,2]\n"
        "  %1 = matmul(%0, %x1) : f32[1,2]\n"
        "  return %1\n"
        "}"
    )
    rng = np.random.default_rng(3)
    x0, x1 = rng.random((1, 2, 2), np.float32), rng.random(2, np.float32)
    (got,) = export_run(graph, x0, x1)
    assert_close(got, np.matmul(x0.transpose(0, 2, 1), x1), np.float32)
