"""Property tests for every pass in `ember.passes.ALL_PASSES`, on seeded random graphs.

For each pass and each graph: the result verifies, the input graph is left untouched, the
result computes what the input computes (the reference interpreter on both, inputs from
`random_inputs`, rtol 1e-4), and running the pass again changes nothing and returns the very
same graph object. New passes are covered as soon as they are registered.

Two graph families: `tests.strategies.graphs()` (elementwise, reductions, matmul, shape ops,
softmax, casts, constants) and `conv_graphs()` below (conv2d with constant weights, batch
norm, relu, pooling, residual adds), which the CNN passes (`fold-batchnorm`, `layout`,
`fuse`) need to have something to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from ember.passes import ALL_PASSES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ember
from ember.interpreter import interpret
from ember.ir.graph import Graph, GraphBuilder, Value
from ember.ir.types import DType, TensorType
from ember.pipeline import Pass, random_inputs
from tests.strategies import graphs

PASS_NAMES = sorted(ALL_PASSES)

# Passes that need not be idempotent, with the reason. Every other pass must be.
NOT_IDEMPOTENT: dict[str, str] = {}

RTOL = 1e-4
ATOL = 1e-5


# ---------------------------------------------------------------------------------------------
# Convolutional graphs.


@st.composite
def conv_graphs(draw: Callable) -> Graph:
    """A random chain of conv2d (constant weights, bias or not), batch_norm (constant
    statistics), relu, 2x2 pooling and residual adds on an NCHW input; one or two outputs."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    builder = GraphBuilder("conv")
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 5))
    size = draw(st.integers(3, 6))
    value = builder.input(TensorType(DType.F32, (batch, channels, size, size)), "x")
    made = [value]
    for _ in range(draw(st.integers(1, 5))):
        layer = draw(st.sampled_from(sorted(_LAYERS)))
        value = _LAYERS[layer](builder, value, draw, rng)
        made.append(value)
    extra = draw(st.sampled_from(made))
    outputs = [value] if extra is value or draw(st.booleans()) else [value, extra]
    return builder.build(outputs)


def _const(builder: GraphBuilder, array: np.ndarray) -> Value:
    return builder.const(array.astype(np.float32))


def _conv(builder: GraphBuilder, x: Value, draw: Callable, rng: np.random.Generator) -> Value:
    channels = x.shape[1]
    out_channels, kernel = draw(st.integers(1, 6)), draw(st.sampled_from((1, 3)))
    weight = _const(builder, rng.normal(0.0, 0.4, (out_channels, channels, kernel, kernel)))
    operands = [x, weight]
    if draw(st.booleans()):
        operands.append(_const(builder, rng.normal(0.0, 0.2, out_channels)))
    pad = kernel // 2
    return builder.conv2d(*operands, padding=(pad, pad, pad, pad))


def _batch_norm(builder: GraphBuilder, x: Value, draw: Callable, rng: np.random.Generator
                ) -> Value:
    channels = x.shape[1]
    mean = _const(builder, rng.normal(0.0, 0.5, channels))
    var = _const(builder, rng.uniform(0.5, 2.0, channels))
    weight = _const(builder, rng.uniform(0.5, 1.5, channels))
    bias = _const(builder, rng.normal(0.0, 0.2, channels))
    return builder.batch_norm(x, mean, var, weight, bias)


def _pool(builder: GraphBuilder, x: Value, draw: Callable, rng: np.random.Generator) -> Value:
    if x.shape[2] < 2:
        return builder.relu(x)
    op = draw(st.sampled_from(("max_pool2d", "avg_pool2d")))
    return builder.op(op, x, kernel=(2, 2), stride=(2, 2))  # type: ignore[return-value]


def _residual(builder: GraphBuilder, x: Value, draw: Callable, rng: np.random.Generator
              ) -> Value:
    return builder.add(x, builder.relu(x))


def _relu(builder: GraphBuilder, x: Value, draw: Callable, rng: np.random.Generator) -> Value:
    return builder.relu(x)


_LAYERS = {"conv": _conv, "batch_norm": _batch_norm, "pool": _pool, "residual": _residual,
           "relu": _relu}


# ---------------------------------------------------------------------------------------------
# The properties.


def check_pass(pass_: Pass, graph: Graph) -> None:
    """Assert every property of `pass_` on `graph` (see the module docstring)."""
    before = str(graph)
    result = pass_.run(graph)
    assert str(graph) == before, f"{pass_} mutated its input graph"
    ember.verify(result)
    assert result.output_types == graph.output_types
    arrays = random_inputs(graph, seed=0)
    want = interpret(graph, *arrays)
    got = interpret(result, *arrays)
    for index, (expected, actual) in enumerate(zip(want, got, strict=True)):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, equal_nan=True,
                                   err_msg=f"{pass_} changed output {index}\n{graph}\n{result}")
    if pass_.name in NOT_IDEMPOTENT:
        return
    again = pass_.run(result)
    assert str(again) == str(result), f"{pass_} is not idempotent on\n{graph}"
    assert again is result, f"{pass_} changed nothing but returned a new graph object"


PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", PASS_NAMES)
@PROPERTY_SETTINGS
@given(graph=graphs(max_nodes=8))
def test_pass_properties_on_random_graphs(name: str, graph: Graph) -> None:
    check_pass(ALL_PASSES[name](), graph)


@pytest.mark.parametrize("name", PASS_NAMES)
@settings(PROPERTY_SETTINGS, max_examples=25)
@given(graph=conv_graphs())
def test_pass_properties_on_conv_graphs(name: str, graph: Graph) -> None:
    check_pass(ALL_PASSES[name](), graph)


def test_every_non_idempotent_pass_exists() -> None:
    """The exemption list names only registered passes (a renamed pass must not hide here)."""
    assert set(NOT_IDEMPOTENT) <= set(ALL_PASSES)


# ---------------------------------------------------------------------------------------------
# The checker itself catches broken passes.


@dataclass(frozen=True)
class _NegateFirstOutput(Pass):
    """A wrong pass: negates the first output."""

    name: ClassVar[str] = "test-negate-first-output"

    def run(self, graph: Graph) -> Graph:
        builder = GraphBuilder(graph.name)
        builder.inputs, builder.nodes = list(graph.inputs), list(graph.nodes)
        return builder.build([builder.neg(graph.outputs[0]), *graph.outputs[1:]])


@dataclass(frozen=True)
class _AlwaysCopy(Pass):
    """A pass that changes nothing yet always returns a new graph object."""

    name: ClassVar[str] = "test-always-copy"

    def run(self, graph: Graph) -> Graph:
        return graph.replace()


def _small_graph() -> Graph:
    builder = GraphBuilder("small")
    x = builder.input(TensorType(DType.F32, (3,)), "x")
    return builder.build([builder.exp(x)])


def test_checker_rejects_a_pass_that_changes_results() -> None:
    with pytest.raises(AssertionError, match="test-negate-first-output changed output 0"):
        check_pass(_NegateFirstOutput(), _small_graph())


def test_checker_rejects_a_new_object_for_an_unchanged_graph() -> None:
    with pytest.raises(AssertionError, match="changed nothing but returned a new graph object"):
        check_pass(_AlwaysCopy(), _small_graph())
