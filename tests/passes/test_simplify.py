"""simplify: exactness of the rules against numpy on special values, options, identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ember.passes.simplify import RULES, Simplify

import ember
from ember.errors import EmberError
from ember.interpreter import interpret
from ember.ir.graph import GraphBuilder
from ember.ir.types import DType, TensorType, f32, f64
from ember.pipeline import parse_pipeline

SPECIAL = np.array([0.0, -0.0, 1.5, -3.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38, -1e-40],
                   dtype=np.float32)


def _binary_with_constant(op: str, constant: float, dtype=np.float32, type_=f32) -> object:
    builder = GraphBuilder("g")
    x = builder.input(type_[SPECIAL.size], "x")
    c = builder.const(np.array(constant, dtype))
    return builder.build([builder.op(op, x, c)])


@pytest.mark.parametrize("divisor", [4.0, 0.5, -2.0, 2.0**-120, 2.0**120])
def test_division_by_a_power_of_two_is_exact(divisor: float) -> None:
    graph = _binary_with_constant("div", divisor)
    simplified = Simplify().run(graph)
    assert [node.op for node in simplified.nodes][-1] == "mul"
    (got,) = interpret(simplified, SPECIAL)
    with np.errstate(all="ignore"):
        expected = SPECIAL / np.float32(divisor)  # numpy's own division, IEEE-rounded once
    np.testing.assert_array_equal(got.view(np.int32), expected.view(np.int32))


@pytest.mark.parametrize("divisor", [3.0, 0.1, 0.0, 2.0**-149, np.inf])
def test_division_by_other_constants_is_kept(divisor: float) -> None:
    graph = _binary_with_constant("div", divisor)
    assert Simplify().run(graph) is graph


def test_adding_positive_zero_is_kept_because_of_negative_zero() -> None:
    assert np.signbit(np.float32(-0.0) + np.float32(0.0)) == np.False_  # the reason
    graph = _binary_with_constant("add", 0.0)
    assert Simplify().run(graph) is graph


@pytest.mark.parametrize(("op", "constant"), [("add", -0.0), ("sub", 0.0), ("mul", 1.0),
                                              ("div", 1.0)])
def test_identities_are_bit_exact_on_special_values(op: str, constant: float) -> None:
    graph = _binary_with_constant(op, constant)
    simplified = Simplify().run(graph)
    assert simplified.outputs[0] is simplified.inputs[0]
    with np.errstate(all="ignore"):
        expected = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[op](
            SPECIAL, np.float32(constant))
    np.testing.assert_array_equal(SPECIAL.view(np.int32), expected.view(np.int32))


def test_integer_zero_add_folds() -> None:
    builder = GraphBuilder("g")
    x = builder.input(f64[3], "x")
    integer = builder.cast(x, dtype="i32")
    total = builder.add(integer, builder.const(np.zeros(3, np.int32)))
    graph = builder.build([total])
    assert Simplify().run(graph).outputs[0] is integer


def test_lossy_cast_round_trip_is_kept() -> None:
    builder = GraphBuilder("g")
    x = builder.input(f64[3], "x")
    graph = builder.build([builder.cast(builder.cast(x, dtype="f32"), dtype="f64")])
    assert Simplify().run(graph) is graph
    value = np.array([0.1, 1 / 3, 1e300])
    (got,) = interpret(graph, value)
    assert not np.array_equal(got, value)  # why: f64 -> f32 -> f64 loses bits


def test_gelu_pattern_matches_the_erf_formula() -> None:
    math_erf = pytest.importorskip("math").erf
    builder = GraphBuilder("g")
    x = builder.input(f32[5], "x")
    root_half = builder.const(np.array(np.sqrt(0.5), np.float32))
    bracket = builder.add(builder.erf(builder.mul(x, root_half)),
                          builder.const(np.array(1.0, np.float32)))
    product = builder.mul(x, builder.mul(bracket, builder.const(np.array(0.5, np.float32))))
    simplified = Simplify().run(builder.build([product]))
    assert simplified.nodes[-1].op == "gelu"
    values = np.linspace(-3, 3, 5).astype(np.float32)
    (got,) = interpret(simplified, values)
    expected = [0.5 * v * (1 + math_erf(v / np.sqrt(2))) for v in values.astype(np.float64)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_rules_option_selects_and_rejects_names() -> None:
    (only,) = parse_pipeline("simplify{rules=neg-of-neg+mul-by-one}")
    assert len(only.selected()) == 2
    with pytest.raises(EmberError, match=r"unknown rule 'no-such-rule'.*neg-of-neg"):
        parse_pipeline("simplify{rules=no-such-rule}")
    builder = GraphBuilder("g")
    x = builder.input(f32[2], "x")
    graph = builder.build([builder.neg(builder.neg(x))])
    assert Simplify(rules="mul-by-one").run(graph) is graph
    assert Simplify(rules="neg-of-neg").run(graph).outputs[0] is x


def test_every_rule_has_a_before_after_comment() -> None:
    import inspect

    for name, rule in RULES.items():
        assert "->" in inspect.getsource(rule).split("\n", 2)[1], name


def test_idempotent_and_same_graph_when_nothing_matches() -> None:
    builder = GraphBuilder("g")
    x = builder.input(f32[2, 3], "x")
    twice = builder.transpose(builder.transpose(x, perm=(1, 0)), perm=(1, 0))
    graph = builder.build([builder.exp(twice)])
    once = Simplify().run(graph)
    assert once is not graph and once.nodes[-1].inputs[0] is x
    again = Simplify().run(once)
    assert again is once and str(again) == str(once)


def _golden_inputs() -> list[str]:
    """The input graphs of this pass's golden cases."""
    path = Path(__file__).parent / "golden" / "simplify.ir"
    chunks = [chunk.partition("// EXPECT:")[0] for chunk in path.read_text().split("// -----")]
    return ["\n".join(line for line in chunk.splitlines() if not line.startswith("// RUN"))
            for chunk in chunks if chunk.strip()]


@pytest.mark.parametrize("source", _golden_inputs(),
                         ids=lambda source: source.partition("@")[2].partition("(")[0])
def test_golden_inputs_run_twice_give_the_same_text(source: str) -> None:
    once = Simplify().run(ember.parse(source))
    twice = Simplify().run(once)
    assert twice is once, "a second run of simplify changed the graph again"
    assert str(twice) == str(once)


def test_broadcast_operand_stays_when_layouts_cannot_meet() -> None:
    builder = GraphBuilder("g")
    z = builder.input(TensorType(DType.F32, (1, 2, 2, 3), "nhwc"), "z")
    channels = builder.const(np.array([1.0, 2.0, 3.0], np.float32))
    graph = builder.build([builder.add(z, builder.broadcast_to(channels, shape=(1, 2, 2, 3)))])
    assert Simplify().run(graph) is graph
