"""The pass manager: pipelines as text, verification, failure messages, and instruments."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import ember
from ember.ir.graph import Graph, Node, Value
from ember.pipeline import (
    CheckNumerics,
    DumpIR,
    Pass,
    PassManager,
    PrintAfter,
    TimePasses,
    instruments_from_env,
    parse_pipeline,
)

SOURCE = """graph @f(%x: f32[4]) -> (f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = neg(%0) : f32[4]
  %2 = neg(%1) : f32[4]
  return %2
}"""


@dataclass(frozen=True)
class DropDoubleNeg(Pass):
    """Return x where a graph output is neg(neg(x)) (a test pass)."""

    name: ClassVar[str] = "drop-double-neg"
    limit: int = 10
    loud: bool = False

    def run(self, graph: Graph) -> Graph:
        producers = graph.producers
        rename: dict[Value, Value] = {}
        for node in graph.nodes:
            inner = producers.get(node.inputs[0]) if node.inputs else None
            double = node.op == "neg" and inner is not None and inner.op == "neg"
            if double and node.output in graph.outputs:
                rename[node.output] = inner.inputs[0]
        if not rename:
            return graph
        outputs = tuple(rename.get(v, v) for v in graph.outputs)
        return graph.replace(outputs=outputs)


@dataclass(frozen=True)
class BreakTypes(Pass):
    """Return a graph whose last node claims a wrong result type (a broken test pass)."""

    name: ClassVar[str] = "break-types"

    def run(self, graph: Graph) -> Graph:
        last = graph.nodes[-1]
        wrong = Value(ember.TensorType(ember.DType.F32, (5,)))
        nodes = (*graph.nodes[:-1], Node(last.op, last.inputs, (wrong,), last.attrs))
        return graph.replace(nodes=nodes, outputs=(wrong,))


@dataclass(frozen=True)
class ChangeNumbers(Pass):
    """Replace exp by neg: verifies, but computes something else (a wrong test pass)."""

    name: ClassVar[str] = "change-numbers"

    def run(self, graph: Graph) -> Graph:
        nodes = tuple(n.replace(op="neg") if n.op == "exp" else n for n in graph.nodes)
        return graph.replace(nodes=nodes)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    import ember.passes

    extra = {p.name: p for p in (DropDoubleNeg, BreakTypes, ChangeNumbers)}
    monkeypatch.setattr(ember.passes, "ALL_PASSES", {**ember.passes.ALL_PASSES, **extra})


def test_parse_pipeline_with_options(registry: None) -> None:
    passes = parse_pipeline("drop-double-neg{limit=3,loud=true}, drop-double-neg")
    assert passes == [DropDoubleNeg(limit=3, loud=True), DropDoubleNeg()]
    assert str(passes[0]) == "drop-double-neg{limit=3,loud=true}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-such-pass", "unknown pass 'no-such-pass'"),
        ("drop-double-neg{nope=1}", "has no option 'nope'"),
        ("drop-double-neg{limit=x}", "option 'limit'"),
        ("drop-double-neg{loud=yes}", "expected true or false"),
    ],
)
def test_bad_pipelines_are_clear_errors(registry: None, text: str, message: str) -> None:
    with pytest.raises(ember.EmberError, match=message):
        parse_pipeline(text)


def test_manager_runs_passes_and_keeps_unchanged_graphs(registry: None) -> None:
    graph = ember.parse(SOURCE)
    ledger = TimePasses()
    result = PassManager(parse_pipeline("drop-double-neg,drop-double-neg"), [ledger]).run(graph)
    assert [r.changed for r in ledger.records] == [True, False]
    assert result.outputs[0] is graph.nodes[0].output
    assert "drop-double-neg" in ledger.report() and "total" in ledger.report()


def test_failure_names_pass_position_and_previous_passes(registry: None) -> None:
    graph = ember.parse(SOURCE)
    with pytest.raises(ember.PassFailed) as info:
        PassManager(parse_pipeline("drop-double-neg,break-types")).run(graph)
    message = str(info.value)
    assert "'break-types'" in message and "#1" in message and "after: drop-double-neg" in message
    assert "IRVerifyError" in message


def test_numerics_check_names_the_first_pass_that_changes_results(registry: None) -> None:
    graph = ember.parse(SOURCE)
    manager = PassManager(parse_pipeline("drop-double-neg,change-numbers"), [CheckNumerics()])
    with pytest.raises(ember.PassFailed, match=r"'change-numbers'.*output 0 changed"):
        manager.run(graph)


def test_print_after_and_dump(registry: None, tmp_path) -> None:
    graph = ember.parse(SOURCE)
    stream = io.StringIO()
    dump = DumpIR(str(tmp_path))
    PassManager(parse_pipeline("drop-double-neg"), [PrintAfter("all", stream), dump]).run(graph)
    assert "IR after drop-double-neg" in stream.getvalue()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["000_traced.ir", "001_drop-double-neg.ir"]
    for path in tmp_path.iterdir():  # every dump parses back
        text = path.read_text().strip()
        assert str(ember.parse(text)) == text


def test_failure_message_points_at_the_dumped_input(registry: None, tmp_path) -> None:
    manager = PassManager(parse_pipeline("break-types"), [DumpIR(str(tmp_path))])
    with pytest.raises(ember.PassFailed, match=r"000_traced\.ir"):
        manager.run(ember.parse(SOURCE))


def test_environment_switches(tmp_path) -> None:
    found = instruments_from_env({"EMBER_PRINT_AFTER": "cse,dce", "EMBER_DUMP_DIR": str(tmp_path),
                                  "EMBER_CHECK_PASSES": "1"})
    kinds = [type(i).__name__ for i in found]
    assert kinds == ["PrintAfter", "DumpIR", "CheckNumerics"]
    assert found[0].names == ["cse", "dce"]
    assert instruments_from_env({}) == []


def test_interpreter_result_of_source() -> None:
    graph = ember.parse(SOURCE)
    x = np.array([0.0, 1.0, -1.0, 2.0], np.float32)
    np.testing.assert_allclose(ember.interpret(graph, x)[0], np.exp(x), rtol=1e-6)
