"""A mutation corpus for the ONNX importer: small valid models (an MLP, a CNN, a reshape chain)
damaged byte by byte and structurally (wrong and negative dims, missing inputs, duplicate
outputs, unknown ops, bogus attributes, a huge ConstantOfShape ...).

Each mutant either loads, compiles and agrees with ONNX Runtime (where ONNX Runtime runs it),
or fails with an `ember.EmberError`; never another exception, never a crash, and never more
memory than a bounded amount while importing.
"""

from __future__ import annotations

import copy
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx  # noqa: E402

F32 = np.float32
IMPORT_PEAK = 160 * 2**20  # the most an import may allocate: above the 64 MiB fold limit
RUN_LIMIT = 2**22  # mutants whose tensors exceed this many bytes are imported, not run


def _model(nodes, inputs, outputs, initializers, name, opset=13) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _weights(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(F32), name)


def mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
             helper.make_node("Relu", ["hb"], ["a"], name="act"),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["z"], name="fc2", transB=1),
             helper.make_node("Softmax", ["z"], ["y"], name="probs", axis=-1)]
    inits = [_weights(rng, "w1", 6, 8), _weights(rng, "b1", 8), _weights(rng, "w2", 3, 8),
             _weights(rng, "b2", 3)]
    return _model(nodes, [("x", [4, 6])], ["y"], inits, "mlp")


def cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "k", "kb"], ["c"], name="conv", pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"], name="act"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
             helper.make_node("Gemm", ["f", "w", "wb"], ["y"], name="head", transB=1)]
    inits = [_weights(rng, "k", 4, 2, 3, 3), _weights(rng, "kb", 4), _weights(rng, "w", 5, 64),
             _weights(rng, "wb", 5)]
    return _model(nodes, [("x", [2, 2, 8, 8])], ["y"], inits, "cnn")


def reshape_chain() -> onnx.ModelProto:
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="batch", axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsq"),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], name="cat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["flat"], name="reshape"),
             helper.make_node("Transpose", ["flat"], ["t"], name="transpose", perm=[1, 0]),
             helper.make_node("ConstantOfShape", ["fill_shape"], ["ones"], name="fill",
                              value=numpy_helper.from_array(np.array([0.5], F32))),
             helper.make_node("Mul", ["t", "ones"], ["y"], name="scale")]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
             numpy_helper.from_array(np.array([12, 1], np.int64), "fill_shape")]
    return _model(nodes, [("x", [3, 4, 3])], ["y"], inits, "chain")


SEEDS: dict[str, Callable[[], onnx.ModelProto]] = {"mlp": mlp, "cnn": cnn,
                                                    "chain": reshape_chain}


# -- checking one mutant ----------------------------------------------------------------------


def _inputs(loaded) -> list[np.ndarray] | None:  # type: ignore[no-untyped-def]
    """Seeded inputs of the declared shapes, or None when they are too big to run here."""
    rng = np.random.default_rng(0)
    arrays = []
    for index, spec in enumerate(loaded.inputs):
        shape = loaded.input_shape(index)
        if int(np.prod(shape, dtype=np.int64)) * 8 > RUN_LIMIT:
            return None
        arrays.append(rng.standard_normal(shape).astype(spec.dtype.numpy))
    return arrays


def _onnxruntime(data: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """ONNX Runtime's outputs, or None where it refuses the model (a reference only where it
    runs)."""
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return session.run(None, feeds)
    except Exception:
        return None


def check_mutant(data: bytes, opt_levels: tuple[int, ...] = (0,)) -> str:
    """'error' (an EmberError), 'loaded' (imported, not run), 'ran' or 'matched' (agrees with
    ONNX Runtime); any other exception fails the test."""
    tracemalloc.start()
    try:
        loaded = ember.onnx.load(data)
        inputs = _inputs(loaded)
        graph = ember.trace(loaded, *inputs) if inputs is not None else None
    except ember.EmberError:
        return "error"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < IMPORT_PEAK, f"importing took {peak / 2**20:.0f} MiB"
    if graph is None or any(int(np.prod(v.type.shape, dtype=np.int64)) * 8 > RUN_LIMIT
                            for node in graph.nodes for v in node.outputs):
        return "loaded"
    results = []
    for level in opt_levels:
        try:
            got = ember.compile(loaded, *inputs, opt_level=level)(*inputs)
        except ember.EmberError:
            return "error"
        results.append(list(got) if isinstance(got, tuple) else [got])
    want = _onnxruntime(data, dict(zip(loaded.input_names, inputs, strict=True)))
    if want is None:
        return "ran"
    for got in results:
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    return "matched"


# -- byte mutations -----------------------------------------------------------------------------


def byte_mutants(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    mutants = []
    for _ in range(count):
        blob = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            kind = rng.integers(4)
            at = int(rng.integers(len(blob)))
            if kind == 0:  # flip a bit
                blob[at] ^= 1 << int(rng.integers(8))
            elif kind == 1:  # a random byte
                blob[at] = int(rng.integers(256))
            elif kind == 2:  # cut the end
                del blob[at:]
            else:  # insert a byte
                blob.insert(at, int(rng.integers(256)))
            if not blob:
                break
        mutants.append(bytes(blob))
    return mutants


@pytest.mark.parametrize("seed", list(SEEDS))
def test_byte_mutants_load_correctly_or_raise_ember_errors(seed: str) -> None:
    data = SEEDS[seed]().SerializeToString()
    assert check_mutant(data, (0, 3)) == "matched"  # the seed itself is right
    mutants = byte_mutants(data, np.random.default_rng(7), 80)
    outcomes = [check_mutant(m, (0, 3)) for m in mutants]
    assert "error" in outcomes  # the corpus does reach the error paths


# -- structured mutations -----------------------------------------------------------------------

Mutation = Callable[[onnx.ModelProto], None]


def _set_dim(index: int, value: int) -> Mutation:
    def mutate(model: onnx.ModelProto) -> None:
        model.graph.input[0].type.tensor_type.shape.dim[index].dim_value = value
    return mutate


def _drop_input(model: onnx.ModelProto) -> None:
    node = model.graph.node[0]
    del node.input[len(node.input) - 1]


def _undefined_input(model: onnx.ModelProto) -> None:
    model.graph.node[1].input[0] = "nowhere"


def _duplicate_output(model: onnx.ModelProto) -> None:
    model.graph.node[1].output[0] = model.graph.node[0].output[0]


def _shadow_input(model: onnx.ModelProto) -> None:
    model.graph.node[0].output[0] = model.graph.input[0].name


def _unknown_op(model: onnx.ModelProto) -> None:
    model.graph.node[2].op_type = "Frobnicate"


def _bogus_attribute(model: onnx.ModelProto) -> None:
    model.graph.node[0].attribute.append(helper.make_attribute("bogus", 3))


def _attribute_of_the_wrong_type(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        for attribute in node.attribute:
            value = helper.make_attribute(attribute.name, "not a number")
            attribute.CopyFrom(value)
            return
    _bogus_attribute(model)


def _out_of_range_attributes(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.INT:
                attribute.i = 99
            elif attribute.type == onnx.AttributeProto.INTS:
                del attribute.ints[:]
                attribute.ints.extend([2**40, -7])


def _huge_constant_of_shape(model: onnx.ModelProto) -> None:
    shape = numpy_helper.from_array(np.array([2**20, 2**20], np.int64), "huge_shape")
    model.graph.initializer.append(shape)
    output = model.graph.output[0].name
    last = model.graph.node[len(model.graph.node) - 1]
    last.output[0] = "before_bomb"
    model.graph.node.extend([
        helper.make_node("ConstantOfShape", ["huge_shape"], ["bomb"], name="bomb"),
        helper.make_node("Add", ["before_bomb", "bomb"], [output], name="detonate")])


def _big_constant_of_shape(model: onnx.ModelProto) -> None:
    """Just over the fold limit: stays a graph op (and is too big to run here)."""
    shape = numpy_helper.from_array(np.array([2**24 + 1], np.int64), "big_shape")
    model.graph.initializer.append(shape)
    model.graph.node.append(helper.make_node("ConstantOfShape", ["big_shape"], ["big"]))
    model.graph.output.append(helper.make_tensor_value_info("big", TensorProto.FLOAT, None))


def _wrong_initializer_size(model: onnx.ModelProto) -> None:
    tensor = model.graph.initializer[0]
    values = numpy_helper.to_array(tensor).reshape(-1)[:-1]
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    tensor.raw_data = values.tobytes()


def _string_initializer(model: onnx.ModelProto) -> None:
    model.graph.initializer[0].CopyFrom(helper.make_tensor(
        model.graph.initializer[0].name, TensorProto.STRING, [1], [b"x"]))


def _no_outputs(model: onnx.ModelProto) -> None:
    del model.graph.output[:]


def _output_not_computed(model: onnx.ModelProto) -> None:
    model.graph.output[0].name = "never_made"


def _cycle(model: onnx.ModelProto) -> None:
    model.graph.node[0].input[0] = model.graph.node[len(model.graph.node) - 1].output[0]


def _no_opset(model: onnx.ModelProto) -> None:
    del model.opset_import[:]


def _future_opset(model: onnx.ModelProto) -> None:
    model.opset_import[0].version = 999


def _attribute_tensor_of_the_wrong_size(model: onnx.ModelProto) -> None:
    value = onnx.TensorProto(name="v", data_type=TensorProto.FLOAT, dims=[29],
                             raw_data=np.ones(1, F32).tobytes())
    model.graph.node.append(helper.make_node("Constant", [], ["unused"], value=value))


def _unknown_element_type(model: onnx.ModelProto) -> None:
    model.graph.input[0].type.tensor_type.elem_type = 86


def _undefined_attribute_type(model: onnx.ModelProto) -> None:
    next(a for node in model.graph.node for a in node.attribute).type = (
        onnx.AttributeProto.UNDEFINED)


MUTATIONS: dict[str, Mutation] = {
    "wrong dim": _set_dim(1, 5), "zero dim": _set_dim(0, 0), "negative dim": _set_dim(0, -3),
    "huge dim": _set_dim(0, 2**40), "missing input": _drop_input,
    "undefined input": _undefined_input, "duplicate output": _duplicate_output,
    "output shadows an input": _shadow_input, "unknown op": _unknown_op,
    "bogus attribute": _bogus_attribute, "attribute of the wrong type":
    _attribute_of_the_wrong_type, "out-of-range attributes": _out_of_range_attributes,
    "huge ConstantOfShape": _huge_constant_of_shape,
    "big ConstantOfShape": _big_constant_of_shape,
    "initializer of the wrong size": _wrong_initializer_size,
    "string initializer": _string_initializer, "no outputs": _no_outputs,
    "output not computed": _output_not_computed, "cycle": _cycle, "no opset": _no_opset,
    "future opset": _future_opset,
    "attribute tensor of the wrong size": _attribute_tensor_of_the_wrong_size,
    "unknown element type": _unknown_element_type,
    "undefined attribute type": _undefined_attribute_type,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_structured_mutants_load_correctly_or_raise_ember_errors(mutation: str) -> None:
    for seed in SEEDS.values():
        model = copy.deepcopy(seed())
        MUTATIONS[mutation](model)
        check_mutant(model.SerializeToString(), (0, 3))


@pytest.mark.parametrize("mutation", ["negative dim", "huge dim", "duplicate output",
                                      "output shadows an input", "unknown op", "bogus attribute",
                                      "huge ConstantOfShape", "no outputs", "cycle",
                                      "attribute tensor of the wrong size",
                                      "unknown element type", "undefined attribute type"])
def test_mutants_that_no_reading_of_onnx_accepts_are_errors(mutation: str) -> None:
    for seed in SEEDS.values():
        model = copy.deepcopy(seed())
        MUTATIONS[mutation](model)
        assert check_mutant(model.SerializeToString()) == "error", seed.__name__


@pytest.mark.parametrize("seed", list(SEEDS))
def test_names_that_are_not_utf8_are_ember_errors(seed: str) -> None:
    model = SEEDS[seed]()
    model.graph.node[0].name = "zzzz"
    data = model.SerializeToString().replace(b"zzzz", b"\xff\xfezz")
    with pytest.raises(ember.EmberError, match=r"model.graph.node\[0\].name is not UTF-8 text"):
        ember.onnx.load(data)
