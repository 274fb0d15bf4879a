"""ONNX sequences and optionals, resolved at import time, against ONNX Runtime.

A sequence is a list of tensors whose length is known when the model is built: a sequence
graph input takes its length from `load(..., sequences={name: n})` and its tensors as n
arguments (`model.arguments` lays a list out so); a sequence output comes back as its tensors,
which `model.results` groups into a list. An optional graph input bound to None is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx  # noqa: E402

RNG = np.random.default_rng(5)
F = TensorProto.FLOAT


def _seq_info(name: str, elem: int = F, shape=None):
    return helper.make_value_info(name, helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(elem, shape)))


def _info(name: str, elem: int = F, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, opset=19) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "sequences", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _onnxruntime(model: onnx.ModelProto, feeds: dict) -> list:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _ember(model: onnx.ModelProto, feeds: dict, opt_level: int, **load) -> list:
    loaded = ember.onnx.load(model, **load)
    args = loaded.arguments(feeds)
    return loaded.results(ember.compile(loaded, *args, opt_level=opt_level)(*args))


def _same(got, want) -> None:
    assert len(got) == len(want)
    for ours, theirs in zip(got, want, strict=True):
        if isinstance(theirs, list):
            assert isinstance(ours, list) and len(ours) == len(theirs)
            _same(ours, theirs)
        else:
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
            np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("opt_level", [0, 3])
def test_split_construct_insert_erase_at_concat(opt_level):
    """A tensor split into a sequence, rearranged, read back and concatenated."""
    nodes = [
        helper.make_node("SplitToSequence", ["x"], ["parts"], axis=1, keepdims=0),
        helper.make_node("SequenceInsert", ["parts", "y"], ["grown"]),
        helper.make_node("SequenceErase", ["grown", "first"], ["trimmed"]),
        helper.make_node("SequenceAt", ["trimmed", "last"], ["picked"]),
        helper.make_node("SequenceLength", ["trimmed"], ["count"]),
        helper.make_node("ConcatFromSequence", ["trimmed"], ["stacked"], axis=0, new_axis=1),
        helper.make_node("ConcatFromSequence", ["trimmed"], ["joined"], axis=0),
    ]
    first = helper.make_tensor("first", TensorProto.INT64, [], [0])
    last = helper.make_tensor("last", TensorProto.INT64, [], [-1])
    graph = helper.make_graph(nodes, "seq", [_info("x", F, [2, 4]), _info("y", F, [2])],
                              [_info("picked"), _info("count", TensorProto.INT64),
                               _info("stacked"), _info("joined")], [first, last])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    feeds = {"x": RNG.standard_normal((2, 4)).astype(np.float32),
             "y": RNG.standard_normal(2).astype(np.float32)}
    _same(_ember(model, feeds, opt_level), _onnxruntime(model, feeds))


@pytest.mark.parametrize("opt_level", [0, 3])
def test_sequence_input_and_output(opt_level):
    """A sequence graph input of three tensors of different lengths, mapped and returned."""
    body = helper.make_graph([helper.make_node("Mul", ["item", "item"], ["squared"])], "square",
                             [_info("item", F, ["n"])], [_info("squared", F, ["n"])])
    nodes = [helper.make_node("SequenceMap", ["xs"], ["ys"], body=body)]
    model = _model(nodes, [_seq_info("xs", F, ["n"])], [_seq_info("ys", F, ["n"])], opset=17)
    xs = [RNG.standard_normal(n).astype(np.float32) for n in (3, 1, 5)]
    got = _ember(model, {"xs": xs}, opt_level, sequences={"xs": 3})
    _same(got, _onnxruntime(model, {"xs": xs}))


@pytest.mark.parametrize("opt_level", [0, 3])
@pytest.mark.parametrize("present", [True, False])
def test_optional_input_present_or_absent(opt_level, present):
    opt_type = helper.make_optional_type_proto(helper.make_tensor_type_proto(F, [3]))
    nodes = [helper.make_node("OptionalHasElement", ["maybe"], ["has"])]
    model = _model(nodes, [helper.make_value_info("maybe", opt_type)],
                   [_info("has", TensorProto.BOOL)], opset=18)
    value = RNG.standard_normal(3).astype(np.float32) if present else None
    got = _ember(model, {"maybe": value}, opt_level,
                 constants={} if present else {"maybe": None})
    assert got[0].dtype == np.bool_ and bool(got[0]) is present


def test_sequence_input_without_a_length_says_how_to_give_it():
    model = _model([helper.make_node("SequenceLength", ["xs"], ["n"])], [_seq_info("xs", F, [2])],
                   [_info("n", TensorProto.INT64)])
    with pytest.raises(ember.EmberError, match=r"input 'xs' is a sequence of tensors: give its "
                       r"length with ember\.onnx\.load\(\.\.\., sequences=\{'xs': n\}\)"):
        ember.onnx.load(model)


def test_tensor_operator_reading_a_sequence_is_a_clear_error():
    nodes = [helper.make_node("SequenceConstruct", ["x", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    model = ember.onnx.load(_model(nodes, [_info("x", F, [2])], [_info("y")]))
    with pytest.raises(ember.EmberError, match=r"Relu .* reads 's', a sequence; it takes tensors"):
        ember.compile(model, np.zeros(2, np.float32))


def test_sequence_position_out_of_range_is_a_clear_error():
    nodes = [helper.make_node("SequenceConstruct", ["x", "x"], ["s"]),
             helper.make_node("SequenceAt", ["s", "at"], ["y"])]
    at = helper.make_tensor("at", TensorProto.INT64, [], [2])
    graph = helper.make_graph(nodes, "g", [_info("x", F, [2])], [_info("y")], [at])
    model = ember.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
    with pytest.raises(ember.EmberError, match=r"SequenceAt: position 2 is out of range for a "
                       r"sequence of 2"):
        ember.compile(model, np.zeros(2, np.float32))
