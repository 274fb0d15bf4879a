"""Operators added for the ONNX node test suite: converters (Mod, GatherElements, GatherND,
ScatterElements, ScatterND, Trilu, CumSum, CumProd, OneHot, EyeLike, Hardmax, LpNormalization,
Pad with a run-time value, DFT, RNN, GRU, LSTM, LRN, LpPool, pools with dilations or wide pads,
BatchNormalization in training mode, ReverseSequence, MaxUnpool, Sinh, Cosh) and operators
imported through their ONNX function bodies (Attention, NegativeLogLikelihoodLoss,
SoftmaxCrossEntropyLoss, RMSNormalization, LayerNormalization's extra outputs, Shrink, ...).

Each is checked at opt levels 0 and 3 against the node suite's expected outputs (computed by
onnx's numpy implementation) or, where the suite gives an operator's parameter as a run-time
input that Ember needs at import time, against `onnx.reference.ReferenceEvaluator` or float64
numpy on a model that makes it a constant.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import ember  # noqa: E402
import ember.onnx  # noqa: E402
from ember.onnx import conformance  # noqa: E402

LEVELS = (0, 3)
# Node-suite cases that exercise each addition (a few per operator, both forms of a function).
SUITE_CASES = [
    "test_mod_mixed_sign_int64", "test_mod_int64_fmod", "test_mod_broadcast",
    "test_gather_elements_0", "test_gather_elements_negative_indices",
    "test_gathernd_example_int32_batch_dim1", "test_scatter_elements_with_duplicate_indices",
    "test_scatter_elements_with_negative_indices", "test_scatternd_add", "test_scatter_with_axis",
    "test_tril_neg", "test_triu_one_row", "test_tril_out_pos",
    "test_eyelike_with_dtype", "test_eyelike_populate_off_main_diagonal",
    "test_hardmax_axis_0", "test_hardmax_one_hot",
    "test_l1normalization_axis_last", "test_l2normalization_axis_0",
    "test_attention_4d", "test_attention_4d_expanded", "test_attention_3d_gqa",
    "test_attention_4d_with_past_and_present",
    "test_nllloss_NCd1d2_with_weight_reduction_sum_ii", "test_nllloss_NC_expanded",
    "test_sce_mean_weight_ii_4d_log_prob", "test_sce_none",
    "test_rms_normalization_3d_axis_negative_1_epsilon", "test_layer_normalization_4d_axis1",
    "test_group_normalization_example", "test_mvn", "test_lrn", "test_lrn_default",
    "test_batchnorm_epsilon_training_mode", "test_batchnorm_example_training_mode",
    "test_averagepool_2d_dilations", "test_averagepool_2d_pads", "test_maxpool_2d_pads",
    "test_lppool_2d_pads", "test_lppool_3d_default", "test_dft_opset19", "test_dft_irfft_opset19",
    "test_lstm_with_peepholes", "test_gru_bidirectional", "test_simple_rnn_batchwise",
    "test_reversesequence_time", "test_maxunpool_export_without_output_shape",
    "test_sinh", "test_cosh_example", "test_shrink_soft", "test_swish",
    "test_rotary_embedding", "test_swiglu_alpha",
]


@pytest.mark.parametrize("name", SUITE_CASES)
def test_node_suite_case_passes(name: str) -> None:
    case = next(c for c in conformance.node_cases() if c.name == name)
    for outcome in conformance.run_case(case, LEVELS):
        assert outcome.status == "pass", (outcome.level, outcome.detail)


def _model(node: onnx.NodeProto, inputs: list[tuple[str, np.ndarray]],
           constants: dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                       value.shape) for name, value in inputs],
        [helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None)
         for name in node.output],
        [numpy_helper.from_array(value, name) for name, value in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check(model: onnx.ModelProto, inputs: list[tuple[str, np.ndarray]]) -> None:
    feeds = dict(inputs)
    expected = ReferenceEvaluator(model).run(None, feeds)
    loaded = ember.onnx.load(model)
    arrays = [value for _, value in inputs]
    for level in LEVELS:
        got = ember.compile(loaded, *arrays, opt_level=level)(*arrays)
        got = got if isinstance(got, tuple) else (got,)
        assert conformance.compare(list(got), expected, 1e-5, 1e-6) == "", level


@pytest.mark.parametrize("op_type", ["CumSum", "CumProd"])
@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_running_sums_and_products(op_type: str, exclusive: int, reverse: int,
                                   dtype: type) -> None:
    """Along a known axis of length 7 (three doubling steps), against the reference."""
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(3, 7, 2)).astype(dtype)
    node = helper.make_node(op_type, ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    _check(_model(node, [("x", x)], {"axis": np.array(-2, np.int64)}, 26), [("x", x)])


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot_with_known_depth(axis: int) -> None:
    """Negative indices count from the end; out-of-range ones give all off_value."""
    indices = np.array([[0, 3, -1], [5, -6, 2]], np.int64)
    node = helper.make_node("OneHot", ["indices", "depth", "values"], ["y"], axis=axis)
    constants = {"depth": np.array(4, np.int64), "values": np.array([-2.0, 3.0], np.float32)}
    _check(_model(node, [("indices", indices)], constants, 11), [("indices", indices)])


@pytest.mark.parametrize(("inverse", "onesided", "parts", "length"), [
    (0, 0, 2, 7), (0, 1, 1, 6), (1, 0, 2, 5), (1, 1, 2, 8), (0, 0, 1, 4)])
def test_dft_with_known_axis_and_length(inverse: int, onesided: int, parts: int,
                                        length: int) -> None:
    """Against numpy's float64 FFT: axis 2 of [2, 3, 5, parts], padded or cropped to
    `length`."""
    x = np.random.default_rng(2).standard_normal((2, 3, 5, parts)).astype(np.float32)
    node = helper.make_node("DFT", ["x", "length", "axis"], ["y"], inverse=inverse,
                            onesided=onesided)
    constants = {"length": np.array(length, np.int64), "axis": np.array(2, np.int64)}
    signal = x.astype(np.float64)[..., 0] + (1j * x[..., 1] if parts == 2 else 0)
    if inverse and onesided:
        expected = np.fft.irfft(signal, n=length, axis=2)[..., None]
    else:
        spectrum = (np.fft.ifft if inverse else np.fft.fft)(signal, n=length, axis=2)
        spectrum = spectrum[:, :, : length // 2 + 1] if onesided else spectrum
        expected = np.stack([spectrum.real, spectrum.imag], axis=-1)
    loaded = ember.onnx.load(_model(node, [("x", x)], constants, 20))
    for level in LEVELS:
        got = ember.compile(loaded, x, opt_level=level)(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op_type", ["Sinh", "Cosh"])
def test_hyperbolic_functions_against_float64(op_type: str) -> None:
    """Tiny, moderate and large inputs, up to where the f32 result itself overflows."""
    x = np.array([0.0, 1e-6, -3e-4, 0.1, -0.49, 0.5, 0.51, -2.0, 10.0, -60.0, 88.9, 89.5],
                 np.float32)
    node = helper.make_node(op_type, ["x"], ["y"])
    loaded = ember.onnx.load(_model(node, [("x", x)], {}, 22))
    with np.errstate(over="ignore"):
        expected = getattr(np, op_type.lower())(x.astype(np.float64)).astype(np.float32)
    for level in LEVELS:
        got = ember.compile(loaded, x, opt_level=level)(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0)


def test_lrn_with_an_even_size() -> None:
    """The window, channels c - 1 to c + 2 for size 4, against the formula in float64 (ONNX
    Runtime takes odd sizes only; onnx's reference evaluator windows the wrong axis)."""
    x = np.random.default_rng(1).standard_normal((2, 5, 3, 2)).astype(np.float32)
    node = helper.make_node("LRN", ["x"], ["y"], size=4, alpha=0.3, beta=0.6, bias=1.5)
    squares = x.astype(np.float64) ** 2
    window = np.stack([squares[:, max(c - 1, 0):c + 3].sum(axis=1) for c in range(5)], axis=1)
    expected = x / (1.5 + 0.3 / 4 * window) ** 0.6
    loaded = ember.onnx.load(_model(node, [("x", x)], {}, 13))
    for level in LEVELS:
        got = ember.compile(loaded, x, opt_level=level)(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_pad_with_a_run_time_value() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    value = np.array(-7.5, np.float32)
    node = helper.make_node("Pad", ["x", "pads", "value"], ["y"], mode="constant")
    model = _model(node, [("x", x), ("value", value)],
                   {"pads": np.array([1, 0, 0, 2], np.int64)}, 21)
    _check(model, [("x", x), ("value", value)])


def test_trilu_with_a_run_time_k() -> None:
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    k = np.array(-1, np.int64)
    node = helper.make_node("Trilu", ["x", "k"], ["y"], upper=0)
    _check(_model(node, [("x", x), ("k", k)], {}, 14), [("x", x), ("k", k)])


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_of_run_time_floats_is_exact(fmod: int) -> None:
    """Float Mod at run time is the exact remainder (np.fmod, or np.mod's sign rule): a large
    quotient, where a - trunc(a / b) * b would round, included."""
    a = np.array([5.5, -3.25, 1e30, -7.0, 0.0, -0.0, 3.0, np.inf], np.float32)
    b = np.array([2.0, 1.5, 3.0, 2.5, 1.0, 2.0, -0.0, 2.0], np.float32)
    node = helper.make_node("Mod", ["x", "y"], ["z"], fmod=fmod)
    model = _model(node, [("x", a), ("y", b)], {}, 13)
    with np.errstate(all="ignore"):
        want = (np.fmod if fmod else np.mod)(a, b)
    for level in LEVELS:
        with np.errstate(all="ignore"):
            got = ember.compile(ember.onnx.load(model), a, b, opt_level=level)(a, b)
        np.testing.assert_array_equal(got, want)
        assert np.array_equal(np.signbit(got), np.signbit(want))


def test_mod_of_known_floats_is_computed_at_import() -> None:
    x = np.array([5.5, -3.25, 7.0], np.float32)
    node = helper.make_node("Mod", ["a", "b"], ["m"], fmod=1)
    shrink = helper.make_node("Add", ["x", "m"], ["y"])
    graph = helper.make_graph(
        [node, shrink], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(x, "a"), numpy_helper.from_array(-x[::-1].copy(), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    _check(model, [("x", x)])


def test_function_body_with_a_subgraph_is_expanded_and_unrolled() -> None:
    """LinearAttention's function body loops with Scan over the sequence, reading the body's
    values from the function's scope: unrolled, it gives onnx's expected outputs."""
    case = next(c for c in conformance.node_cases() if c.name == "test_linear_attention_delta")
    outcomes = conformance.run_case(case, LEVELS)
    assert [o.status for o in outcomes] == ["pass"] * len(LEVELS), [o.detail for o in outcomes]


def test_out_of_range_gather_elements_index_is_an_error_at_run_time() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    indices = np.array([[0, 4]], np.int64)
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)
    loaded = ember.onnx.load(_model(node, [("x", x), ("i", indices)], {}, 13))
    for level in LEVELS:
        executable = ember.compile(loaded, x, indices, opt_level=level)
        with pytest.raises(ember.EmberError, match=r"(?s)(GatherElements.*out of range|"
                                                   r"out of range.*GatherElements)"):
            executable(x, indices)
