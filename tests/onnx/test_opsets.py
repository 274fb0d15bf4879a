"""Operator versions: each converter declares the ONNX operator versions (schema since_version)
it implements; a model is accepted at any opset where its operators' versions in effect are
implemented, through the installed onnx's newest, and refused by name otherwise.

References are the onnx package's schemas (`onnx.defs`) and its reference evaluator
(`onnx.reference.ReferenceEvaluator`), which runs every opset the package knows.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import ember  # noqa: E402
import ember.onnx  # noqa: E402
from ember.onnx.converters import CONVERTERS  # noqa: E402

NEWEST = onnx.defs.onnx_opset_version()


def _since_versions(op_type: str) -> set[int]:
    """The schema versions of a registry key: `Conv`, or `domain.Op` for another domain."""
    domain = getattr(CONVERTERS[op_type], "domain", "") if op_type in CONVERTERS else ""
    name = op_type[len(domain) + 1:] if domain else op_type
    return {int(schema.since_version) for schema in onnx.defs.get_all_schemas_with_history()
            if schema.name == name and schema.domain == domain}


@pytest.mark.parametrize("op_type", sorted(CONVERTERS))
def test_declared_versions_are_onnx_schema_versions(op_type: str) -> None:
    """Every declared version is the since_version of one of the operator's schemas."""
    versions = CONVERTERS[op_type].versions
    assert versions, op_type
    assert list(versions) == sorted(set(versions))
    assert set(versions) <= _since_versions(op_type), (
        f"{op_type}: {sorted(set(versions) - _since_versions(op_type))} are not versions of "
        f"the operator (it has {sorted(_since_versions(op_type))})")


def _model(node: onnx.NodeProto, opset: int, shape: tuple[int, ...]) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in node.output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check_against_reference(model: onnx.ModelProto, x: np.ndarray) -> None:
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    loaded = ember.onnx.load(model)
    for level in (0, 3):
        got = ember.compile(loaded, x, opt_level=level)(x)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_unchanged_operator_at_the_newest_opset_is_accepted() -> None:
    """Relu and Softplus at the newest opset (Softplus version 22 only adds bfloat16)."""
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    for op_type in ("Relu", "Softplus"):
        _check_against_reference(_model(helper.make_node(op_type, ["x"], ["y"]), NEWEST,
                                        x.shape), x)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_space_to_depth_version_28_modes(mode: str) -> None:
    """SpaceToDepth version 28 adds `mode`; both orders match the reference."""
    if NEWEST < 28:
        pytest.skip("the installed onnx predates SpaceToDepth version 28")
    x = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6)
    node = helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2, mode=mode)
    _check_against_reference(_model(node, 28, x.shape), x)


def test_unimplemented_version_is_refused_by_name() -> None:
    """Cast at opset 5 is version 1 (`to` a string); Ember implements version 6 on."""
    node = helper.make_node("Cast", ["x"], ["y"], to="FLOAT")
    with pytest.raises(ember.UnsupportedError) as info:
        ember.onnx.load(_model(node, 5, (2,)))
    versions = ", ".join(str(v) for v in CONVERTERS["Cast"].versions)
    assert (f"Cast at opset 5 (version 1): Ember implements versions {versions} (node #0)"
            in str(info.value))


def test_opset_newer_than_onnx_knows_is_refused() -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    with pytest.raises(ember.UnsupportedError, match=rf"imports opset {NEWEST + 1}, newer than "
                                                     rf"the installed onnx package knows "
                                                     rf"\({NEWEST}\)"):
        ember.onnx.load(_model(node, NEWEST + 1, (2,)))
