"""`ember.onnx.load`: each converter against ONNX Runtime, the import-time evaluation of constant
subgraphs, symbolic dimensions, and the errors (unsupported operators, malformed files).

One-node models are built with `onnx.helper`; ONNX Runtime (or, for opsets it no longer runs,
a numpy expression) is the independent reference.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx  # noqa: E402
from ember.onnx.converters import CONVERTERS  # noqa: E402

F32 = np.float32
RNG = np.random.default_rng(0)
_NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
               np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
               np.dtype(np.bool_): TensorProto.BOOL}


class Init:
    """A node input given as an initializer (a constant of the model)."""

    def __init__(self, value: object, dtype: object = None) -> None:
        self.value = np.asarray(value, dtype=dtype)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(F32)


def positive(*shape: int) -> np.ndarray:
    return (np.abs(randn(*shape)) + 0.1).astype(F32)


def one_node_model(op_type: str, args: tuple[object, ...], opset: int, outputs: int,
                   attrs: dict[str, object]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A model of one node; arrays become graph inputs, `Init`s initializers, None omitted."""
    names, graph_inputs, initializers, feeds = [], [], [], {}
    for index, arg in enumerate(args):
        if arg is None:
            names.append("")
            continue
        name = f"in{index}"
        names.append(name)
        if isinstance(arg, Init):
            initializers.append(numpy_helper.from_array(arg.value, name))
        else:
            array = np.asarray(arg)
            feeds[name] = array
            graph_inputs.append(helper.make_tensor_value_info(
                name, _NP_TO_ONNX[array.dtype], list(array.shape)))
    output_names = [f"out{i}" for i in range(outputs)]
    node = helper.make_node(op_type, names, output_names, name=f"{op_type.lower()}_node",
                            **attrs)
    graph = helper.make_graph([node], "single", graph_inputs,
                              [helper.make_empty_tensor_value_info(n) for n in output_names],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model, feeds


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_ember(model: onnx.ModelProto, feeds: dict[str, np.ndarray], opt_level: int = 0
              ) -> list[np.ndarray]:
    loaded = ember.onnx.load(model)
    inputs = [feeds[name] for name in loaded.input_names]
    result = ember.compile(loaded, *inputs, opt_level=opt_level)(*inputs)
    return list(result) if isinstance(result, tuple) else [result]


def case(op_type: str, *args: object, opset: int = 13, outputs: int = 1, id: str = "",
         **attrs: object) -> object:
    return pytest.param(op_type, args, opset, outputs, attrs, id=id or f"{op_type}-{opset}")


X = randn(2, 3, 4)
IMAGE = randn(2, 4, 7, 6)
VOLUME = randn(1, 2, 5, 6, 4)
SIGNAL = randn(2, 4, 9)
INTS = RNG.integers(-5, 6, size=(2, 3, 4)).astype(np.int64)
TIES = np.array([[1, 3, 3, 0], [2, 2, 1, 2]], dtype=F32)
WITH_INF = np.array([1.0, np.inf, -np.inf, np.nan, -2.0], dtype=F32)
MASK = RNG.random((2, 3, 4)) > 0.5

CASES = [
    # -- elementwise ------------------------------------------------------------------------------
    *[case(op, X) for op in ("Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs", "Sign", "Floor",
                             "Ceil", "Sin", "Cos", "Erf", "Tan", "Softplus", "Softsign",
                             "Identity", "Selu")],
    case("HardSwish", X, opset=14),
    case("Round", np.array([0.5, 1.5, 2.5, -0.5, -1.7, 2.2], dtype=F32)),
    *[case(op, positive(2, 3, 4)) for op in ("Log", "Sqrt", "Reciprocal")],
    case("LeakyRelu", X, alpha=0.2),
    case("Elu", X, alpha=0.5),
    case("Celu", X, alpha=2.0),
    case("HardSigmoid", X, alpha=0.3, beta=0.4),
    case("Mish", X, opset=18),
    case("Gelu", X, opset=20),
    case("Gelu", X, opset=20, approximate="tanh", id="Gelu-tanh"),
    case("ThresholdedRelu", X, alpha=0.5),
    case("IsNaN", WITH_INF),
    case("IsInf", WITH_INF),
    case("IsInf", WITH_INF, detect_negative=0, id="IsInf-positive"),
    case("Not", MASK),
    case("PRelu", X, Init(randn(3, 1))),
    *[case(op, X, randn(3, 1)) for op in ("Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater",
                                         "LessOrEqual", "GreaterOrEqual")],
    case("Div", INTS, Init(np.array([2, -3, 4, 7], dtype=np.int64)), id="Div-int-truncates"),
    case("Pow", positive(2, 3), randn(3)),
    case("Pow", positive(2, 3), Init(np.array(2, dtype=np.int64)), opset=15, id="Pow-int-exp"),
    *[case(op, MASK, ~MASK[:1]) for op in ("And", "Or", "Xor")],
    *[case(op, randn(2, 3), randn(3), randn(1, 1)) for op in ("Sum", "Max", "Min", "Mean")],
    case("Where", MASK, X, randn(4)),
    case("Cast", X * 3, to=TensorProto.INT64),
    case("Cast", INTS, to=TensorProto.DOUBLE, id="Cast-to-double"),
    case("Cast", INTS, to=TensorProto.BOOL, id="Cast-to-bool"),
    case("CastLike", INTS, Init(np.zeros(1, F32)), opset=15),
    case("Clip", X, Init(np.array(-0.5, F32)), Init(np.array(0.7, F32))),
    case("Clip", X, None, np.array(0.3, F32), id="Clip-traced-max"),
    case("Clip", X, opset=13, id="Clip-no-bounds"),
    # -- matrix products, convolution, pooling ----------------------------------------------------
    case("MatMul", randn(2, 1, 3, 4), randn(5, 4, 2)),
    case("MatMul", randn(3, 4), Init(randn(4))),
    case("Gemm", randn(4, 3), Init(randn(5, 4)), Init(randn(5)), transA=1, transB=1, alpha=0.5,
         beta=2.0),
    case("Gemm", randn(2, 3), randn(3, 4), id="Gemm-no-c"),
    case("Conv", IMAGE, Init(randn(6, 2, 3, 2)), Init(randn(6)), pads=[1, 0, 2, 1],
         strides=[2, 1], dilations=[1, 2], group=2),
    case("Conv", IMAGE, Init(randn(3, 4, 3, 3)), auto_pad="SAME_UPPER", strides=[2, 2],
         id="Conv-same-upper"),
    case("Conv", IMAGE, Init(randn(3, 4, 2, 2)), auto_pad="SAME_LOWER", id="Conv-same-lower"),
    case("Conv", SIGNAL, Init(randn(6, 2, 3)), Init(randn(6)), pads=[2, 1], strides=[2],
         group=2, id="Conv-1d"),
    case("Conv", VOLUME, Init(randn(4, 1, 3, 2, 2)), Init(randn(4)), pads=[1, 0, 1, 2, 1, 0],
         strides=[2, 1, 2], dilations=[1, 2, 1], group=2, id="Conv-3d"),
    case("ConvTranspose", randn(1, 4, 3, 5), Init(randn(4, 3, 3, 2)), Init(randn(6)),
         strides=[2, 3], pads=[1, 0, 0, 1], output_padding=[1, 2], group=2),
    case("ConvTranspose", randn(1, 2, 4, 4), Init(randn(2, 3, 3, 3)), strides=[2, 2],
         output_shape=[9, 8], id="ConvTranspose-output-shape"),
    case("ConvTranspose", SIGNAL, Init(randn(4, 2, 3)), strides=[2], dilations=[2],
         id="ConvTranspose-1d"),
    case("MaxPool", IMAGE, kernel_shape=[3, 2], pads=[1, 1, 1, 0], strides=[2, 2],
         ceil_mode=1),
    case("MaxPool", SIGNAL, kernel_shape=[3], dilations=[2], strides=[2], id="MaxPool-1d"),
    case("MaxPool", VOLUME, kernel_shape=[3, 2, 2], pads=[1, 0, 1, 1, 1, 0], strides=[2, 2, 1],
         id="MaxPool-3d"),
    case("MaxPool", VOLUME, kernel_shape=[2, 3, 3], strides=[2, 2, 2], ceil_mode=1,
         id="MaxPool-3d-ceil"),
    case("AveragePool", IMAGE, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
    case("AveragePool", IMAGE, kernel_shape=[3, 2], pads=[1, 1, 0, 1], count_include_pad=1,
         id="AveragePool-include-pad"),
    case("AveragePool", VOLUME, kernel_shape=[3, 3, 2], pads=[1, 1, 0, 1, 1, 1],
         strides=[2, 2, 2], id="AveragePool-3d"),
    case("AveragePool", VOLUME, kernel_shape=[2, 2, 2], pads=[1, 0, 1, 1, 1, 0],
         strides=[2, 2, 2], count_include_pad=1, ceil_mode=1, id="AveragePool-3d-include-pad"),
    case("AveragePool", SIGNAL, kernel_shape=[4], strides=[3], id="AveragePool-1d"),
    case("GlobalAveragePool", IMAGE),
    case("GlobalMaxPool", VOLUME),
    case("Einsum", randn(2, 3, 4), randn(2, 4, 5), equation="bij,bjk->bik", opset=12),
    case("Einsum", randn(3, 4), randn(5, 4), equation="ij,kj", opset=12, id="Einsum-implicit"),
    case("Einsum", randn(2, 3, 4), randn(4, 3, 6), equation="abc,cbd->da", opset=12,
         id="Einsum-sum-and-transpose"),
    case("Einsum", randn(2, 3, 4), equation="abc->ca", opset=12, id="Einsum-one-operand"),
    case("Einsum", randn(3), randn(4), equation="i,j->ij", opset=12, id="Einsum-outer"),
    # -- normalization and softmax -----------------------------------------------------------------
    case("BatchNormalization", IMAGE, Init(randn(4)), Init(randn(4)), Init(randn(4)),
         Init(positive(4)), epsilon=1e-3, opset=15),
    case("InstanceNormalization", IMAGE, Init(randn(4)), Init(randn(4)), epsilon=1e-4),
    case("LayerNormalization", X, Init(randn(3, 4)), Init(randn(3, 4)), axis=-2, opset=17),
    case("LayerNormalization", X, Init(randn(4)), opset=17, id="LayerNormalization-no-bias"),
    case("Softmax", X, axis=1, opset=11, id="Softmax-11-flattens"),
    case("Softmax", X, axis=1, opset=13),
    case("LogSoftmax", X, axis=1, opset=11, id="LogSoftmax-11-flattens"),
    case("LogSoftmax", X, opset=13),
    # -- shapes ------------------------------------------------------------------------------------
    case("Reshape", X, Init(np.array([0, -1, 2], np.int64))),
    case("Flatten", X, axis=2),
    case("Flatten", X, axis=0, id="Flatten-axis-0"),
    case("Transpose", X, perm=[2, 0, 1]),
    case("Transpose", X, id="Transpose-reverse"),
    case("Squeeze", randn(2, 1, 3, 1), axes=[1, -1], opset=11),
    case("Squeeze", randn(2, 1, 3, 1), Init(np.array([-1], np.int64)), id="Squeeze-input"),
    case("Squeeze", randn(2, 1, 3, 1), id="Squeeze-all"),
    case("Unsqueeze", X, axes=[0, -1], opset=11),
    case("Unsqueeze", X, Init(np.array([1, -1], np.int64)), id="Unsqueeze-input"),
    case("Concat", X, randn(2, 1, 4), Init(randn(2, 2, 4)), axis=-2),
    case("Split", randn(2, 7), axis=1, split=[3, 4], outputs=2, opset=11),
    case("Split", randn(6, 2), Init(np.array([1, 5], np.int64)), outputs=2, id="Split-input"),
    case("Split", randn(7, 2), num_outputs=3, outputs=3, opset=18, id="Split-uneven"),
    case("Slice", randn(5, 6, 4), Init(np.array([-1, 1], np.int64)),
         Init(np.array([-10**18, 100], np.int64)), Init(np.array([0, 2], np.int64)),
         Init(np.array([-2, 3], np.int64))),
    case("Slice", randn(5, 6), Init(np.array([1], np.int64)), Init(np.array([-1], np.int64)),
         id="Slice-defaults"),
    case("Gather", randn(5, 3), Init(np.array([[0, -1], [2, -5]], np.int64)), axis=0),
    case("Gather", randn(2, 5), np.array([4, 0, 3], np.int64), axis=1, id="Gather-traced"),
    case("Gather", randn(2, 5), Init(np.array(-2, np.int64)), axis=1, id="Gather-scalar"),
    case("Pad", X, Init(np.array([0, 1, 2, 1, 0, 1], np.int64)), Init(np.array(1.5, F32))),
    case("Pad", X, Init(np.array([1, 1, 2, 0, 1, 1], np.int64)), mode="reflect",
         id="Pad-reflect"),
    case("Pad", X, Init(np.array([1, -1, 2, 0, 1, -2], np.int64)), mode="edge",
         id="Pad-edge-crop"),
    case("Pad", X, Init(np.array([2, 1], np.int64)), None, Init(np.array([-1], np.int64)),
         opset=18, id="Pad-axes"),
    case("Expand", randn(3, 1), Init(np.array([2, 1, 4], np.int64))),
    case("Tile", randn(2, 3), Init(np.array([2, 3], np.int64))),
    case("Dropout", X, outputs=2),
    case("DepthToSpace", randn(1, 8, 2, 3), blocksize=2),
    case("DepthToSpace", randn(1, 8, 2, 3), blocksize=2, mode="CRD", id="DepthToSpace-crd"),
    case("SpaceToDepth", randn(1, 2, 4, 6), blocksize=2),
    # -- reductions --------------------------------------------------------------------------------
    *[case(op, positive(2, 3, 4), axes=[0, -1], keepdims=0, opset=13)
      for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                 "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")],
    *[case(op, positive(2, 3, 4), Init(np.array([1], np.int64)), opset=18, id=f"{op}-input")
      for op in ("ReduceMean", "ReduceMax", "ReduceL2", "ReduceLogSumExp")],
    case("ReduceSum", X, Init(np.array([-2], np.int64)), keepdims=0),
    case("ReduceSum", X, opset=11, id="ReduceSum-all"),
    case("ReduceSum", X, Init(np.zeros(0, np.int64)), noop_with_empty_axes=1, id="ReduceSum-noop"),
    case("ArgMax", TIES, axis=1),
    case("ArgMin", TIES, axis=1, keepdims=0),
    case("ArgMax", TIES, axis=1, select_last_index=1, id="ArgMax-last"),
    case("ArgMin", TIES, axis=0, select_last_index=1, keepdims=0, id="ArgMin-last"),
    case("Mod", INTS, Init(np.array([3, -2, 4, -5], np.int64)), id="Mod-python"),
    case("Mod", INTS, Init(np.array([3, -2, 4, -5], np.int64)), fmod=1, id="Mod-fmod"),
    case("GatherElements", X, np.array([[[0, 3], [-1, 2]], [[1, 1], [2, -4]]], np.int64),
         axis=2),
    case("GatherElements", X, np.array([[[1, 0, 1, 0]], [[0, 0, 1, 1]]], np.int64), axis=0,
         id="GatherElements-axis0"),
    case("GatherND", X, np.array([[0, -1], [1, 2]], np.int64)),
    case("GatherND", X, np.array([[[2, 1]], [[0, 3]]], np.int64), batch_dims=1,
         id="GatherND-batch"),
    case("ScatterElements", X, np.array([[[0, 3]], [[2, -1]]], np.int64), randn(2, 1, 2),
         axis=2, opset=16),
    case("ScatterElements", X, np.array([[[0, 0, 1, 0]], [[0, 1, 1, 1]]], np.int64),
         randn(2, 1, 4), axis=1, reduction="add", opset=16, id="ScatterElements-add"),
    case("Scatter", X, np.array([[[1, 0]]], np.int64), randn(1, 1, 2), axis=0, opset=9),
    case("ScatterND", X, np.array([[1, 2], [0, -1]], np.int64), randn(2, 4), opset=16),
    case("ScatterND", INTS, np.array([[1], [1]], np.int64),
         RNG.integers(-5, 6, size=(2, 3, 4)).astype(np.int64), reduction="add", opset=16,
         id="ScatterND-add"),
    case("AveragePool", IMAGE, kernel_shape=[3, 2], dilations=[2, 2], pads=[1, 0, 2, 1],
         ceil_mode=1, opset=19, id="AveragePool-dilations"),
    case("AveragePool", IMAGE, kernel_shape=[3, 3], pads=[2, 1, 2, 2], count_include_pad=1,
         opset=19, id="AveragePool-wide-pads"),
    case("MaxPool", IMAGE, kernel_shape=[3, 3], pads=[2, 2, 1, 2], strides=[2, 1],
         id="MaxPool-wide-pads"),
    case("LpPool", IMAGE, kernel_shape=[3, 2], pads=[1, 1, 1, 0], strides=[2, 1], p=3, opset=18),
    case("LpPool", SIGNAL, kernel_shape=[3], p=2, opset=18, id="LpPool-1d"),
    case("GRU", randn(4, 2, 3), Init(randn(1, 15, 3)), Init(randn(1, 15, 5)),
         Init(randn(1, 30)), None, randn(1, 2, 5), hidden_size=5, linear_before_reset=1,
         outputs=2, opset=14),
    case("GRU", randn(4, 2, 3), Init(randn(2, 12, 3)), Init(randn(2, 12, 4)), hidden_size=4,
         direction="bidirectional", clip=1.5, outputs=2, opset=14, id="GRU-bidirectional"),
    case("LSTM", randn(5, 2, 3), Init(randn(1, 16, 3)), Init(randn(1, 16, 4)),
         Init(randn(1, 32)), np.array([5, 3], np.int32), randn(1, 2, 4), randn(1, 2, 4),
         Init(randn(1, 12)), hidden_size=4, clip=2.0, outputs=3, opset=14),
    case("LSTM", randn(3, 2, 3), Init(randn(2, 8, 3)), Init(randn(2, 8, 2)), hidden_size=2,
         direction="bidirectional", outputs=3, opset=14, id="LSTM-bidirectional"),
    case("RNN", randn(3, 2, 4), Init(randn(2, 5, 4)), Init(randn(2, 5, 5)), Init(randn(2, 10)),
         hidden_size=5, direction="bidirectional", activations=["Relu", "Tanh"],
         outputs=2, opset=14),
    case("DFT", randn(2, 6, 2), Init(np.array(8, np.int64)), inverse=1, opset=17),
    case("ReverseSequence", randn(4, 3, 2), np.array([4, 1, 3], np.int64), opset=10),
    case("ReverseSequence", randn(2, 5, 3), np.array([2, 5], np.int64), time_axis=1,
         batch_axis=0, opset=10, id="ReverseSequence-batch-first"),
    case("MaxUnpool", randn(1, 2, 2, 2), np.array([[[[0, 3], [9, 14]], [[17, 18], [28, 31]]]],
                                                  np.int64),
         Init(np.array([1, 2, 4, 4], np.int64)), kernel_shape=[2, 2], strides=[2, 2], opset=11),
    case("Sinh", X * 3, opset=9),
    case("Cosh", X * 3, opset=9),
    case("LRN", IMAGE, size=3, alpha=0.02, beta=0.6, bias=2.0),
    case("Trilu", X, Init(np.array(1, np.int64)), opset=14),
    case("Trilu", X, Init(np.array(-1, np.int64)), upper=0, opset=14, id="Trilu-lower"),
    case("CumSum", X, Init(np.array(1, np.int64)), exclusive=1, reverse=1, opset=14),
    case("CumProd", INTS, Init(np.array(2, np.int64)), reverse=1, opset=26),
    case("OneHot", np.array([[1, -1], [3, 7]], np.int64), Init(np.array(4, np.int64)),
         Init(np.array([0.5, 2.0], F32)), axis=1, opset=11),
    case("EyeLike", randn(3, 5), k=2, dtype=TensorProto.INT64, opset=9),
    case("Hardmax", TIES, axis=1),
    case("Hardmax", X, axis=1, opset=11, id="Hardmax-flattened"),
    case("LpNormalization", np.array([[3.0, 0.0], [-4.0, 0.0]], F32), axis=0, p=1, opset=1),
    case("LpNormalization", X, axis=-1, p=2, opset=1, id="LpNormalization-l2"),
    case("Compress", randn(3, 4), Init(np.array([True, False, True])), axis=0, opset=11),
    case("Compress", randn(2, 3), Init(np.array([False, True, False, True])), opset=11,
         id="Compress-flattened"),
]


@pytest.mark.parametrize(("op_type", "args", "opset", "outputs", "attrs"), CASES)
def test_converter_matches_onnxruntime(op_type, args, opset, outputs, attrs):
    """One node of `op_type`, imported and run by Ember, gives ONNX Runtime's outputs."""
    model, feeds = one_node_model(op_type, args, opset, outputs, attrs)
    expected = run_onnxruntime(model, feeds)
    got = run_ember(model, feeds)
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_every_converter_has_a_case():
    """The parametrized cases above exercise every registered converter (or a test below)."""
    covered = {param.values[0] for param in CASES}
    covered |= {"Constant", "ConstantOfShape", "Shape", "Size", "Range"}  # tested below
    covered |= {"Resize", "Upsample", "GridSample", "TopK"}  # in test_resample_onnx.py
    covered |= {"BitShift", "QuantizeLinear", "DequantizeLinear"}  # in test_dtypes_import.py
    # ONNX Runtime has no training domain: against numpy in test_training_ops.py
    covered |= {f"ai.onnx.preview.training.{op}" for op in ("Adagrad", "Adam", "Momentum")}
    assert sorted(set(CONVERTERS) - covered) == []


def test_compiled_elementwise_graph_matches_onnxruntime():
    """A graph the CPU backend lowers runs at opt level 3 too."""
    model, feeds = one_node_model("Softplus", (X,), 13, 1, {})
    np.testing.assert_allclose(run_ember(model, feeds, opt_level=3)[0],
                               run_onnxruntime(model, feeds)[0], rtol=1e-5, atol=1e-6)


# -- semantics of old opsets (ONNX Runtime no longer runs them): numpy references -------------


def test_opset6_clip_attributes_and_legacy_broadcast():
    x, b = randn(2, 3, 4), randn(3)
    nodes = [helper.make_node("Add", ["x", "b"], ["s"], broadcast=1, axis=1),
             helper.make_node("Clip", ["s"], ["y"], min=-0.5, max=0.5)]
    graph = helper.make_graph(
        nodes, "legacy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
                          helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])],
        [helper.make_empty_tensor_value_info("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    got = run_ember(model, {"x": x, "b": b})[0]
    np.testing.assert_allclose(got, np.clip(x + b[:, None], -0.5, 0.5), rtol=1e-6)


def test_opset6_prelu_slope_is_per_channel():
    x, slope = randn(2, 3, 4, 5), randn(3)
    model, feeds = one_node_model("PRelu", (x, Init(slope)), 6, 1, {})
    expected = np.where(x < 0, x * slope[:, None, None], x)
    np.testing.assert_allclose(run_ember(model, feeds)[0], expected, rtol=1e-6)


def test_opset9_slice_attributes():
    x = randn(4, 5)
    model, feeds = one_node_model("Slice", (x,), 9, 1,
                                  {"starts": [1, -3], "ends": [100, -1], "axes": [0, 1]})
    np.testing.assert_array_equal(run_ember(model, feeds)[0], x[1:, -3:-1])


# -- the model object, names, constants ---------------------------------------------------------


def _linear_model(dims: list[object]) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(12, dtype=F32).reshape(4, 3) / 10, "fc.weight")
    nodes = [helper.make_node("MatMul", ["input.1", "fc.weight"], ["h"], name="fc"),
             helper.make_node("Relu", ["h"], ["out"], name="act")]
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_loaded_model_traces_with_named_inputs_and_constants():
    model = ember.onnx.load(_linear_model([2, 4]))
    assert model.input_names == ["input.1"] and model.output_names == ["out"]
    (example,) = model.example_inputs
    assert example.shape == (2, 4) and example.dtype == F32
    graph = ember.trace(model, example)
    text = str(graph)
    assert 'const() {name = "fc.weight"' in text
    assert "%input_1: f32[2,4]" in text
    assert [node.op for node in graph.nodes] == ["const", "matmul", "relu"]
    assert graph.nodes[1].loc.endswith(":fc")
    weight = np.arange(12, dtype=F32).reshape(4, 3) / 10
    np.testing.assert_allclose(ember.compile(model, example, opt_level=0)(example),
                               np.maximum(example @ weight, 0), rtol=1e-6)


def test_model_called_with_numpy_runs_the_interpreter():
    model = ember.onnx.load(_linear_model([2, 4]))
    x = randn(2, 4)
    weight = np.arange(12, dtype=F32).reshape(4, 3) / 10
    np.testing.assert_allclose(model(x), np.maximum(x @ weight, 0), rtol=1e-6)


def test_symbolic_dims_pinned_by_shapes_or_example_inputs():
    proto = _linear_model(["batch", 4])
    unpinned = ember.onnx.load(proto)
    with pytest.raises(ember.EmberError, match=r"input 'input.1' has a symbolic dimension 0 "
                                               r"\('batch'\)"):
        unpinned.example_inputs  # noqa: B018
    assert ember.onnx.load(proto, shapes={"input.1": (5, 4)}).example_inputs[0].shape == (5, 4)
    assert ember.onnx.load(proto, shapes={"batch": 3}).example_inputs[0].shape == (3, 4)
    graph = ember.trace(unpinned, randn(7, 4))  # the example input pins it too
    assert graph.inputs[0].type.shape == (7, 4)


def test_shapes_that_do_not_fit_are_errors():
    proto = _linear_model(["batch", 4])
    with pytest.raises(ember.EmberError, match=r"shapes\['input.1'\] = \[2, 5\] does not fit "
                                               r"the declared shape \[batch,4\]"):
        ember.onnx.load(proto, shapes={"input.1": (2, 5)})
    with pytest.raises(ember.EmberError, match="'nothing', which is neither an input"):
        ember.onnx.load(proto, shapes={"nothing": 1})
    with pytest.raises(ember.EmberError, match="dimension 1 is declared 4, got 5"):
        ember.trace(ember.onnx.load(proto), randn(2, 5))


def test_constant_subgraph_is_evaluated_at_import():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape: only the reshape reaches the graph."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero_axis"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("ConstantOfShape", ["target_shape"], ["ones"],
                         value=numpy_helper.from_array(np.array([2.0], F32))),
        helper.make_node("Mul", ["flat", "ones"], ["scaled"]),
        helper.make_node("Size", ["x"], ["count"]),
        helper.make_node("Cast", ["count"], ["count_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["scaled", "count_f"], ["shifted"]),
        helper.make_node("Range", ["r0", "r1", "r2"], ["steps"]),
        helper.make_node("Constant", [], ["c"], value_float=0.25),
        helper.make_node("Mul", ["steps", "c"], ["quarter"]),
        helper.make_node("Add", ["shifted", "quarter"], ["y"]),
    ]
    initializers = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
                    numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
                    numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
                    numpy_helper.from_array(np.array([1, 12], np.int64), "target_shape"),
                    numpy_helper.from_array(np.array(0.0, F32), "r0"),
                    numpy_helper.from_array(np.array(12.0, F32), "r1"),
                    numpy_helper.from_array(np.array(1.0, F32), "r2")]
    graph = helper.make_graph(nodes, "shapes",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_empty_tensor_value_info("y")], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = randn(2, 3, 4)
    traced = ember.trace(ember.onnx.load(model), x)
    assert sorted({node.op for node in traced.nodes}) == ["add", "const", "mul", "reshape"]
    np.testing.assert_allclose(run_ember(model, {"x": x})[0],
                               run_onnxruntime(model, {"x": x})[0], rtol=1e-6)


def test_shape_with_start_and_end_is_known():
    model, feeds = one_node_model("Shape", (X,), 15, 1, {"start": 1, "end": -1})
    (got,) = run_ember(model, feeds)
    assert got.dtype == np.int64 and got.tolist() == [3]


def test_input_that_must_be_static_names_the_node():
    model, feeds = one_node_model("Reshape", (X, np.array([4, 6], np.int64)), 13, 1, {})
    with pytest.raises(ember.EmberError, match=r"cannot convert Reshape 'reshape_node' .*"
                                               r"input 1 \(shape\) must be a constant known "
                                               "at import time"):
        run_ember(model, feeds)


def test_conversion_error_names_node_and_input_types():
    model, feeds = one_node_model("Reshape", (X, Init(np.array([5, -1], np.int64))), 13, 1, {})
    with pytest.raises(ember.EmberError, match=r"<?single.*Reshape 'reshape_node' \(inputs: "
                                               r"'in0' f32\[2,3,4\], 'in1' constant "
                                               r"int64\[2\]\): .*cannot reshape"):
        run_ember(model, feeds)


# -- unsupported operators and malformed files --------------------------------------------------


def test_unsupported_operators_are_listed_in_one_error_before_conversion():
    nodes = [helper.make_node("NonZero", ["x"], ["a"], name="nz"),
             helper.make_node("Unique", ["x"], ["b"], name="up1"),
             helper.make_node("Unique", ["x"], ["c"], name="up2"),
             helper.make_node("Relu", ["x"], ["d"], name="fine"),
             helper.make_node("Gelu", ["x"], ["e"], name="too_new")]
    graph = helper.make_graph(nodes, "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_empty_tensor_value_info(n) for n in "abcde"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ember.UnsupportedError) as info:
        ember.onnx.load(model)
    message = str(info.value)
    assert "3 unsupported ONNX operators at opset 13" in message
    assert ("Gelu at opset 13: ONNX has no Gelu there (Ember implements version 20) "
            "(node 'too_new')") in message
    assert "NonZero (node 'nz')" in message
    assert "Unique (nodes 'up1', 'up2')" in message
    assert "Relu" not in message


def test_malformed_files_are_ember_errors(tmp_path):
    good = _linear_model([2, 4]).SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    text = tmp_path / "text.onnx"
    text.write_text("this is not a protobuf message at all\n")
    for path in (truncated, text):
        pattern = rf"{re.escape(path.name)}: not a valid ONNX model"
        with pytest.raises(ember.EmberError, match=pattern):
            ember.onnx.load(path)
    with pytest.raises(ember.EmberError, match=r"missing\.onnx: cannot read the ONNX file"):
        ember.onnx.load(tmp_path / "missing.onnx")
    with pytest.raises(ember.EmberError, match="<bytes>: not a valid ONNX model"):
        ember.onnx.load(b"\xff\xff\xff")
    with pytest.raises(ember.EmberError, match=r"cannot read the ONNX file: Is a directory"):
        ember.onnx.load(tmp_path)
    os.mkfifo(tmp_path / "pipe.onnx")
    with pytest.raises(ember.EmberError, match="it is not a regular file"):
        ember.onnx.load(tmp_path / "pipe.onnx")  # reported at once, not waited on
    with pytest.raises(ember.EmberError, match="it is not a regular file"):
        ember.onnx.load("/dev/zero")


def test_load_from_file_and_bytes(tmp_path):
    path = tmp_path / "linear.onnx"
    onnx.save(_linear_model([2, 4]), path)
    x = randn(2, 4)
    from_file = ember.compile(ember.onnx.load(path), x, opt_level=0)(x)
    from_bytes = ember.compile(ember.onnx.load(path.read_bytes()), x, opt_level=0)(x)
    expected = run_onnxruntime(_linear_model([2, 4]), {"input.1": x})[0]
    np.testing.assert_allclose(from_file, expected, rtol=1e-6)
    np.testing.assert_allclose(from_bytes, expected, rtol=1e-6)
    assert ember.trace(ember.onnx.load(path), x).nodes[1].loc == "linear.onnx:fc"


# -- the command line ------------------------------------------------------------------------------


def test_cli_prints_the_ir_of_an_onnx_file(tmp_path, capsys):
    from ember.cli import main

    path = tmp_path / "linear.onnx"
    onnx.save(_linear_model(["batch", 4]), path)
    assert main(["ir", str(path), "--shape", "batch=3"]) == 0
    out = capsys.readouterr().out
    assert "graph @linear(%input_1: f32[3,4]) -> (f32[3,3])" in out
    assert "matmul(%input_1, %0) : f32[3,3]  // linear.onnx:fc" in out
    assert main(["ir", str(path), "--shape", "input.1=5x4"]) == 0
    assert "%input_1: f32[5,4]" in capsys.readouterr().out
    assert main(["ir", str(path)]) == 2
    assert ("input 'input.1' has a symbolic dimension 0 ('batch')"
            in capsys.readouterr().err)
    assert main(["ir", str(path), "--shape", "batch=three"]) == 2
    assert "--shape takes NAME=DIMS" in capsys.readouterr().err


# -- every value written once --------------------------------------------------------------------


def _graph_model(nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_empty_tensor_value_info(n) for n in outputs], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_two_nodes_writing_one_output_are_rejected_naming_both():
    model = _graph_model([helper.make_node("Relu", ["x"], ["y"], name="first"),
                          helper.make_node("Neg", ["x"], ["y"], name="second")],
                         [("x", [3])], ["y"])
    with pytest.raises(ember.EmberError, match=r"value 'y' is written by node 'second' \(Neg\) "
                                               r"and by node 'first' \(Relu\)"):
        ember.onnx.load(model)


def test_node_output_shadowing_a_graph_input_or_initializer_is_rejected():
    shadows_input = _graph_model([helper.make_node("Relu", ["x"], ["x"], name="r")],
                                 [("x", [3])], ["x"])
    with pytest.raises(ember.EmberError, match=r"value 'x' is written by node 'r' \(Relu\) and "
                                               r"by graph input 'x'"):
        ember.onnx.load(shadows_input)
    weight = numpy_helper.from_array(np.ones(3, F32), "w")
    shadows_initializer = _graph_model(
        [helper.make_node("Relu", ["x"], ["w"], name="r"),
         helper.make_node("Add", ["x", "w"], ["y"], name="a")], [("x", [3])], ["y"], [weight])
    with pytest.raises(ember.EmberError, match=r"value 'w' is written by node 'r' \(Relu\) and "
                                               r"by initializer 'w'"):
        ember.onnx.load(shadows_initializer)


def test_output_name_used_twice_within_one_node_is_rejected():
    model = _graph_model([helper.make_node("Split", ["x"], ["p", "p"], name="halves", axis=0)],
                         [("x", [4])], ["p"])
    with pytest.raises(ember.EmberError, match=r"value 'p' is written by node 'halves' \(Split\) "
                                               r"and by node 'halves' \(Split\)"):
        ember.onnx.load(model)


def test_empty_output_names_mark_unused_outputs_and_may_repeat():
    model = _graph_model([helper.make_node("Dropout", ["x"], ["d", ""], name="drop1"),
                          helper.make_node("Dropout", ["d"], ["y", ""], name="drop2")],
                         [("x", [2, 3])], ["y"])
    x = randn(2, 3)
    np.testing.assert_array_equal(run_ember(model, {"x": x})[0],
                                  run_onnxruntime(model, {"x": x})[0])


# -- sizes and dimensions ------------------------------------------------------------------------


def test_declared_input_beyond_the_tensor_limit_is_an_ember_error_at_load():
    model = _graph_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2**20, 2**20])], ["y"])
    with pytest.raises(ember.EmberError, match=r"input 'x' of shape \[1048576, 1048576\] is 4 TiB "
                                               r"of f32, beyond the 4 GiB"):
        ember.onnx.load(model)


def test_symbolic_input_pinned_beyond_the_tensor_limit_is_an_ember_error():
    loaded = ember.onnx.load(_graph_model([helper.make_node("Relu", ["x"], ["y"])],
                                          [("x", ["N", 1024])], ["y"]), shapes={"N": 2**21})
    with pytest.raises(ember.EmberError, match=r"input 'x' of shape \[2097152, 1024\]"):
        loaded.example_inputs  # noqa: B018
    with pytest.raises(ember.EmberError, match=r"input 'x' of shape \[2097152, 1024\]"):
        ember.trace(loaded, ember.TensorSpec((2**21, 1024), F32))


def test_negative_declared_dimension_is_an_ember_error():
    model = _graph_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2, -3])], ["y"])
    with pytest.raises(ember.EmberError, match=r"input 'x' dimension 1 is -3; dimensions are "
                                               "non-negative"):
        ember.onnx.load(model)


@pytest.mark.parametrize("shapes, message", [
    ({"N": -3}, r"shapes\['N'\] = \[-3\] has a negative size"),
    ({"x": (-1, 4)}, r"shapes\['x'\] = \[-1, 4\] has a negative size"),
    ({"x": "N4"}, r"shapes\['x'\] = 'N4' is not a tuple of integer sizes"),
    ({"N": 2.5}, r"shapes\['N'\] = \(2.5,\) is not a tuple of integer sizes"),
])
def test_bad_shapes_argument_is_an_ember_error(shapes, message):
    model = _graph_model([helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 4])], ["y"])
    with pytest.raises(ember.EmberError, match=message):
        ember.onnx.load(model, shapes=shapes)


def _constant_of_shape_model(shape: list[int]) -> onnx.ModelProto:
    """ConstantOfShape(shape) of 1.5, times the input x[1], reduced to its maximum."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["c"], name="fill",
                              value=numpy_helper.from_array(np.array([1.5], F32))),
             helper.make_node("Mul", ["c", "x"], ["m"], name="scale"),
             helper.make_node("ReduceMax", ["m"], ["y"], name="peak", keepdims=0)]
    shape_init = numpy_helper.from_array(np.array(shape, np.int64), "shape")
    return _graph_model(nodes, [("x", [1])], ["y"], [shape_init])


def test_constant_of_shape_beyond_the_fold_limit_stays_a_graph_op():
    import tracemalloc

    from ember.onnx.converters.base import FOLD_BYTES

    shape = [FOLD_BYTES // 4 // 1024 + 1, 1024]  # just over the limit as f32
    model = _constant_of_shape_model(shape)
    x = np.array([-2.0], F32)
    tracemalloc.start()
    traced = ember.trace(ember.onnx.load(model), x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < FOLD_BYTES // 4  # the constant was not made at import time
    fill = next(node for node in traced.nodes if node.op == "broadcast_to")
    assert fill.outputs[0].type.shape == tuple(shape)
    np.testing.assert_array_equal(ember.compile(ember.onnx.load(model), x, opt_level=0)(x),
                                  np.float32(1.5) * x[0])


def test_constant_of_shape_within_the_fold_limit_is_folded():
    model = _constant_of_shape_model([64, 64])
    traced = ember.trace(ember.onnx.load(model), np.array([2.0], F32))
    assert "broadcast_to" not in {node.op for node in traced.nodes}


def test_huge_constant_of_shape_is_an_ember_error_in_bounded_memory():
    import tracemalloc

    model = _constant_of_shape_model([2**20, 2**20])
    assert len(model.SerializeToString()) < 400
    tracemalloc.start()
    with pytest.raises(ember.EmberError, match=r"ConstantOfShape 'fill'.*shape "
                                               r"\[1048576, 1048576\] makes a tensor of 4 TiB, "
                                               r"beyond the 4 GiB"):
        ember.trace(ember.onnx.load(model), np.array([1.0], F32))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**24


@pytest.mark.parametrize("op, args, message", [
    ("ConstantOfShape", (Init(np.array([4, -3], np.int64)),), r"shape \[4, -3\] has a negative "
                                                              "dimension"),
    ("Reshape", (X, Init(np.array([-3, -8], np.int64))), r"dimension 0 is -3; only -1"),
    ("Tile", (X, Init(np.array([1, -1, 1], np.int64))), r"repeats \[1, -1, 1\] must not be "
                                                        "negative"),
    ("Expand", (X, Init(np.array([2, -3, 4], np.int64))), r"does not broadcast"),
    ("Expand", (X, Init(np.array([2**16, 2**16, 1, 1, 1], np.int64))), r"beyond the 4 GiB"),
    ("Range", (Init(np.array(0.0, F32)), Init(np.array(1e9, F32)), Init(np.array(1.0, F32))),
     r"1000000000 elements .* more than the 64 MiB"),
    ("Range", (Init(np.array(0, np.int64)), Init(np.array(5, np.int64)),
               Init(np.array(0, np.int64))), r"in steps of 0"),
])
def test_bad_sizes_in_nodes_are_ember_errors_naming_the_node(op, args, message):
    model, feeds = one_node_model(op, args, 13, 1, {})
    with pytest.raises(ember.EmberError, match=rf"{op} '{op.lower()}_node'.*{message}"):
        run_ember(model, feeds)


# -- nodes against their ONNX schema -------------------------------------------------------------


@pytest.mark.parametrize("node, message", [
    (helper.make_node("Relu", ["x"], ["y"], name="r", bogus=1),
     r"Relu 'r': unknown attribute 'bogus' \(known: none\)"),
    (helper.make_node("Softmax", ["x"], ["y"], name="s", axis="last"),
     r"Softmax 's': attribute 'axis' is STRING, the schema says INT"),
    (helper.make_node("Cast", ["x"], ["y"], name="c"), r"Cast 'c': required attribute to missing"),
    (helper.make_node("Add", ["x"], ["y"], name="a"), r"Add 'a' has 1 inputs; the schema takes 2"),
    (helper.make_node("Relu", ["x"], ["y", "z"], name="r"),
     r"Relu 'r' has 2 outputs; the schema takes 1"),
])
def test_node_that_does_not_fit_its_schema_is_an_ember_error(node, message):
    model = _graph_model([node], [("x", [3])], ["y"])
    with pytest.raises(ember.EmberError, match=message):
        ember.onnx.load(model)
