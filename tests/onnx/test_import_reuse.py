"""An imported model makes the IR constant of each initializer once: every trace (each
compile, each opt level) holds the same Const, and the model's results stay ONNX Runtime's."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx  # noqa: E402
from ember.frontend.tracer import trace  # noqa: E402


def test_initializer_constants_are_made_once_per_model():
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((8, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "reuse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(weight, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = ember.onnx.load(proto)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    consts = []
    for _ in range(2):
        traced = trace(model, x)
        consts += [n.attrs["value"] for n in traced.nodes if n.op == "const"]
    assert len(consts) == 2 and consts[0] is consts[1]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    for level in (0, 3):
        np.testing.assert_allclose(ember.compile(model, x, opt_level=level)(x), want,
                                   rtol=1e-5, atol=1e-6)
