"""plan-memory: the plan is checked against an independent liveness computation written here
(no two tensors live at the same node share bytes, except an in-place pair), and by executing
each graph over one shared byte arena at the planned offsets, which must give the reference
interpreter's results on the unplanned graph."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
from ember.passes import ALL_PASSES
from ember.passes.plan_memory import PlanMemory, memory_report
from hypothesis import HealthCheck, given, settings

import ember
from ember import nn
from ember.errors import PassFailed
from ember.interpreter import Interpreter, interpret
from ember.ir.graph import Graph, GraphBuilder, Node, Value
from ember.ir.types import DType, TensorType
from ember.pipeline import PassManager, parse_pipeline, random_inputs
from tests.strategies import graph_inputs, graphs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def f32(*shape: int) -> TensorType:
    return TensorType(DType.F32, shape)


# ---------------------------------------------------------------------------------------------
# An independent checker: liveness by brute force over node indices, and offsets read from the
# annotations exactly as the pass's docstring describes them.


def planned_locations(graph: Graph) -> dict[Value, int]:
    """Arena offset of every value, -1 for graph outputs, from the annotations."""
    found: dict[Value, int] = {}
    for node in graph.nodes:
        if node.op == "const":
            continue
        if len(node.outputs) > 1:
            found.update(zip(node.outputs, node.attrs["offsets"], strict=True))
        elif node.attrs["buffer"] == -1:
            found[node.output] = -1
        else:
            assert node.attrs["buffer"] == 0
            found[node.output] = node.attrs["offset"]
    return found


def live_at(graph: Graph) -> list[set[Value]]:
    """For each node index, the values that must be kept at that node: defined at or before
    it, and read at or after it (or defined there)."""
    born = {v: i for i, node in enumerate(graph.nodes) for v in node.outputs}
    last = dict(born)
    for index, node in enumerate(graph.nodes):
        for value in node.inputs:
            if value in last:
                last[value] = max(last[value], index)
    return [{v for v in born if born[v] <= t <= last[v]} for t in range(len(graph.nodes))]


def inplace_pairs(graph: Graph) -> set[frozenset[Value]]:
    """(input, output) pairs the plan lets share bytes, after checking each is legal."""
    pairs = set()
    for index, node in enumerate(graph.nodes):
        if "inplace" not in node.attrs:
            continue
        source = node.inputs[node.attrs["inplace"]]
        assert source.type.nbytes == node.output.type.nbytes
        assert source.type.size == node.output.type.size
        later_users = [n for n in graph.nodes[index + 1:] if source in n.inputs]
        assert not later_users, f"{node.op} overwrites an input read later"
        assert source not in graph.outputs and source not in graph.inputs
        pairs.add(frozenset((source, node.output)))
    return pairs


def check_plan(graph: Graph, alignment: int = 64) -> None:
    """Raise AssertionError when the plan of `graph` is unsafe or malformed."""
    ember.verify(graph)
    location = planned_locations(graph)
    outputs = set(graph.outputs)
    for value, offset in location.items():
        assert (offset == -1) == (value in outputs), f"{value}: offset {offset}"
        assert offset == -1 or offset % alignment == 0
    pairs = inplace_pairs(graph)
    for live in live_at(graph):
        arena = sorted(((location[v], location[v] + v.type.nbytes, v) for v in live
                        if location.get(v, -1) >= 0 and v.type.nbytes > 0),
                       key=lambda item: item[:2])
        for i, (_, end, value) in enumerate(arena):
            for other_start, _, other in arena[i + 1:]:
                if other_start >= end:
                    break
                assert frozenset((value, other)) in pairs, f"{value} and {other} overlap"
    report = memory_report(graph, alignment)
    assert report.lower_bound_bytes <= report.arena_bytes <= report.naive_bytes


def run_in_arena(graph: Graph, arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Execute a planned graph with every arena value stored in one shared byte buffer, so a
    value clobbered by a wrongly overlapping one is read back wrong."""
    location = planned_locations(graph)
    size = max((location[v] + v.type.nbytes for v in location if location[v] >= 0), default=0)
    arena = bytearray(size)
    env: dict[Value, np.ndarray] = dict(zip(graph.inputs, arrays, strict=True))
    interpreter = Interpreter(graph)
    for node in graph.nodes:
        inputs = tuple(np.array(env[v]) for v in node.inputs)  # read the arena now
        for value, result in zip(node.outputs, interpreter.run_node(node, inputs), strict=True):
            env[value] = _store(arena, location.get(value, -1), value, result)
    return tuple(np.array(env[v]) for v in graph.outputs)


def _store(arena: bytearray, offset: int, value: Value, result: np.ndarray) -> np.ndarray:
    if offset < 0:
        return result
    dtype = value.type.dtype.numpy
    view = np.frombuffer(arena, dtype, value.type.size, offset).reshape(value.type.shape)
    view[...] = result
    return view


def assert_arena_run_matches(graph: Graph, planned: Graph, arrays: list[np.ndarray]) -> None:
    want = interpret(graph, *arrays)
    got = run_in_arena(planned, arrays)
    for expected, actual in zip(want, got, strict=True):
        np.testing.assert_array_equal(actual, expected)


# ---------------------------------------------------------------------------------------------
# Random graphs and traced models.


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(graphs(max_nodes=10))
def test_random_graphs_get_safe_plans(graph: Graph) -> None:
    for alignment, inplace in ((64, True), (4, False)):
        planned = PlanMemory(alignment=alignment, inplace=inplace).run(graph)
        check_plan(planned, alignment)
        assert_arena_run_matches(graph, planned, graph_inputs(graph, seed=0))
        assert PlanMemory(alignment=alignment, inplace=inplace).run(planned) is planned


def _example(name: str) -> dict:
    path = EXAMPLES / f"{name}.py"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return runpy.run_path(str(path))


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_traced_examples_get_safe_plans(name: str) -> None:
    namespace = _example(name)
    graph = ember.trace(namespace["model"], *namespace["example_inputs"])
    planned = PlanMemory().run(graph)
    check_plan(planned)
    assert_arena_run_matches(graph, planned, list(namespace["example_inputs"]))


def available_pipeline() -> str:
    wanted = ["fold-constants", "fold-batchnorm", "cse", "dce", "fuse", "dce", "plan-memory"]
    return ",".join(name for name in wanted if name in ALL_PASSES)


def test_cnn_arena_is_small_and_near_the_lower_bound() -> None:
    """Without fusion, reuse alone brings the CNN to at most 60% of one buffer per value; with
    every available pass, the arena is at most 60% of what the traced graph computes, and in
    both cases within 10% of the most bytes live at one node."""
    namespace = _example("cnn")
    graph = ember.trace(namespace["model"], *namespace["example_inputs"])
    traced_bytes = sum(v.type.nbytes for n in graph.nodes if n.op != "const" for v in n.outputs)
    unfused = PassManager(parse_pipeline("fold-constants,cse,dce,plan-memory")).run(graph)
    report = memory_report(unfused)
    assert report.arena_bytes <= 0.6 * report.naive_bytes, report
    assert report.arena_bytes <= 1.1 * report.lower_bound_bytes, report
    assert report.inplace_count >= 2  # relu after each batch_norm
    optimized = PassManager(parse_pipeline(available_pipeline())).run(graph)
    check_plan(optimized)
    report = memory_report(optimized)
    assert report.arena_bytes <= 0.6 * traced_bytes, report
    assert report.arena_bytes <= 1.1 * report.lower_bound_bytes, report


def test_cnn_built_here_conv_bn_relu_pool_linear() -> None:
    """The same property on a CNN built in the test: conv-bn-relu, pooling, linear."""
    ember.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, kernel_size=3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 8 * 8, 10),
    )
    model.eval()
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    graph = ember.trace(model, x)
    planned = PassManager(parse_pipeline("fold-constants,cse,dce,plan-memory")).run(graph)
    check_plan(planned)
    report = memory_report(planned)
    assert report.arena_bytes <= 0.6 * report.naive_bytes, report
    assert report.arena_bytes <= 1.1 * report.lower_bound_bytes, report
    assert_arena_run_matches(graph, planned, [x])


# ---------------------------------------------------------------------------------------------
# Hand-built cases: exact offsets and in-place decisions.


def _node(graph: Graph, op: str, occurrence: int = 0) -> Node:
    return [n for n in graph.nodes if n.op == op][occurrence]


def test_elementwise_chain_runs_in_place_in_one_slot() -> None:
    b = GraphBuilder("chain")
    x = b.input(f32(64), "x")
    y = b.neg(b.relu(b.exp(x)))
    planned = PlanMemory().run(b.build([b.sum(y, axes=(0,))]))
    check_plan(planned)
    assert [_node(planned, op).attrs.get("inplace") for op in ("exp", "relu", "neg")] == [
        None, 0, 0]
    assert {_node(planned, op).attrs["offset"] for op in ("exp", "relu", "neg")} == {0}
    assert memory_report(planned).arena_bytes == 256


def test_no_inplace_over_a_value_read_later_or_a_graph_input_or_output() -> None:
    b = GraphBuilder("traps")
    x = b.input(f32(16), "x")
    shared = b.exp(x)  # read by sin and by add: sin may not overwrite it
    s = b.sin(shared)
    total = b.add(shared, s)  # shared and s both die here: add takes one of them
    out = b.mul(total, total)  # a graph output, and read by neg below
    tail = b.neg(out)  # out dies here but belongs to the caller
    planned = PlanMemory().run(b.build([out, b.sum(tail, axes=(0,))]))
    check_plan(planned)
    assert "inplace" not in _node(planned, "sin").attrs
    assert _node(planned, "add").attrs["inplace"] == 0
    assert _node(planned, "mul").attrs == {"buffer": -1}
    assert "inplace" not in _node(planned, "neg").attrs
    assert "inplace" not in _node(planned, "exp").attrs  # x is the caller's


def test_inplace_needs_the_same_byte_size() -> None:
    b = GraphBuilder("sizes")
    x = b.input(f32(4, 3), "x")
    bias = b.input(f32(3), "bias")
    wide = b.exp(x)
    to_f64 = b.cast(b.exp(x), dtype="f64")  # 8-byte elements: may not overwrite 4-byte ones
    to_i32 = b.cast(b.neg(x), dtype="i32")  # same element size: may
    shifted = b.add(wide, b.exp(bias))  # output [4,3] may overwrite wide, never the [3] one
    planned = PlanMemory().run(b.build([b.sum(v, axes=(0, 1)) for v in (to_f64, to_i32, shifted)]))
    check_plan(planned)
    assert "inplace" not in _node(planned, "cast", 0).attrs
    assert _node(planned, "cast", 1).attrs["inplace"] == 0
    assert _node(planned, "add").attrs["inplace"] == 0


def test_inplace_off_and_alignment_option() -> None:
    b = GraphBuilder("options")
    x = b.input(f32(3), "x")
    y = b.relu(b.exp(x))
    planned = PlanMemory(alignment=16, inplace=False).run(b.build([b.sum(y, axes=(0,))]))
    check_plan(planned, alignment=16)
    assert [_node(planned, op).attrs["offset"] for op in ("exp", "relu")] == [0, 16]
    assert not any("inplace" in n.attrs for n in planned.nodes)


def test_freed_bytes_are_reused_by_a_later_value() -> None:
    """%0 dies at %1, so %2 (not elementwise, so not in place) takes %0's offset."""
    b = GraphBuilder("reuse")
    x = b.input(f32(8, 8), "x")
    first = b.matmul(x, x)
    second = b.transpose(first, perm=(1, 0))
    third = b.matmul(second, x)
    planned = PlanMemory().run(b.build([b.sum(third, axes=(1,))]))
    check_plan(planned)
    offsets = [_node(planned, "matmul", 0).attrs["offset"],
               _node(planned, "transpose").attrs["offset"],
               _node(planned, "matmul", 1).attrs["offset"]]
    assert offsets == [0, 256, 0]
    report = memory_report(planned)
    assert (report.arena_bytes, report.naive_bytes, report.lower_bound_bytes) == (512, 768, 512)


def test_greedy_by_size_fills_a_gap_with_a_smaller_value() -> None:
    """A big value freed early leaves a gap that a small value later fits into, next to a
    long-lived medium value, so the arena is the lower bound."""
    b = GraphBuilder("gap")
    x = b.input(f32(256), "x")
    big = b.exp(b.broadcast_to(x, shape=(4, 256)))  # 4 KiB
    medium = b.sum(big, axes=(0,))  # 1 KiB, lives to the end
    small = b.exp(b.sum(b.reshape(medium, shape=(2, 128)), axes=(1,)))  # 8 bytes each
    planned = PlanMemory().run(b.build([b.add(b.sum(small, axes=(0,)), b.sum(medium, axes=(0,)))]))
    check_plan(planned)
    report = memory_report(planned)
    assert report.arena_bytes == report.lower_bound_bytes


def test_multi_result_nodes_carry_offsets() -> None:
    b = GraphBuilder("split")
    x = b.input(f32(4, 8), "x")
    first, second = b.split(b.exp(x), axis=0, sizes=(2, 2))
    planned = PlanMemory().run(b.build([b.add(first, first), second]))
    check_plan(planned)
    offsets = _node(planned, "split").attrs["offsets"]
    assert offsets[1] == -1 and offsets[0] >= 0
    assert "buffer" not in _node(planned, "split").attrs


def test_constants_and_region_bodies_are_not_planned() -> None:
    text = """
graph @f(%x: f32[4,8], %b: f32[8]) -> (f32[8]) {
  %c = const() {value = dense<f32[8]: 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0>} : f32[8]
  %0 = exp(%x) : f32[4,8]
  %1 = fused(%0, %c) {kind = "elementwise"} : f32[4,8] {
  ^(%a: f32[4,8], %d: f32[8]):
    %2 = add(%a, %d) : f32[4,8]
    %3 = relu(%2) : f32[4,8]
    yield %3
  }
  %4 = max(%1) {axes = [0], keepdims = false} : f32[8]
  return %4
}"""
    graph = ember.parse(text)
    planned = PlanMemory().run(graph)
    check_plan(planned)
    fused = _node(planned, "fused")
    assert fused.attrs["inplace"] == 0 and fused.attrs["offset"] == 0
    assert fused.body is _node(graph, "fused").body
    assert set(_node(planned, "const").attrs) == {"value"}
    assert_arena_run_matches(graph, planned, random_inputs(graph, seed=0))


def test_pass_does_not_mutate_and_is_idempotent() -> None:
    b = GraphBuilder("f")
    x = b.input(f32(8), "x")
    graph = b.build([b.sum(b.relu(b.exp(x)), axes=(0,))])
    before = str(graph)
    planned = PlanMemory().run(graph)
    assert str(graph) == before
    assert planned is not graph
    assert PlanMemory().run(planned) is planned
    # Replanning with other options rewrites the old annotations rather than keeping them.
    replanned = PlanMemory(inplace=False).run(planned)
    assert not any("inplace" in n.attrs for n in replanned.nodes)
    check_plan(replanned)


def test_bad_alignment_is_reported_with_the_pass_name() -> None:
    b = GraphBuilder("f")
    x = b.input(f32(8), "x")
    graph = b.build([b.exp(x)])
    with pytest.raises(PassFailed, match=r"plan-memory.*alignment must be positive, got 0"):
        PassManager(parse_pipeline("plan-memory{alignment=0}")).run(graph)


def test_memory_report_text_and_unplanned_graphs() -> None:
    b = GraphBuilder("f")
    x = b.input(f32(1024), "x")
    graph = b.build([b.sum(b.neg(b.relu(b.exp(x))), axes=(0,))])
    report = memory_report(graph)  # plans a copy first
    assert (report.arena_bytes, report.naive_bytes, report.inplace_count) == (4096, 12288, 2)
    assert report.output_bytes == 4 and report.intermediates == 3
    assert str(report) == (
        "memory: arena 4.00 KiB for 3 intermediates (33% of naive 12.00 KiB; "
        "lower bound 4.00 KiB), 2 in place, outputs 4 B")


def test_a_reshape_whose_input_dies_there_is_a_view_and_runs_no_code() -> None:
    """The result of a reshape takes its dying input's storage: no copy is lowered for it,
    and the compiled graph still computes numpy's result. A reshape whose input is read
    later, or whose input is the caller's, copies."""
    from ember.lower.program import lower_graph
    from ember.runtime import compile_native

    b = GraphBuilder("views")
    x = b.input(f32(8, 6), "x")
    flat = b.reshape(b.exp(x), shape=(48,))  # exp's result dies here: a view
    kept = b.neg(x)
    again = b.reshape(kept, shape=(6, 8))  # kept is read below: a copy
    caller = b.reshape(x, shape=(4, 12))  # the caller's array: a copy
    graph = b.build([b.sin(flat), b.exp(again), b.cos(caller), b.sum(kept, axes=(0, 1))])
    planned = PlanMemory().run(graph)
    check_plan(planned)
    reshapes = [n for n in planned.nodes if n.op == "reshape"]
    assert reshapes[0].attrs.get("inplace") == 0
    assert all("inplace" not in n.attrs for n in reshapes[1:])
    lowered = [call.node for call in lower_graph(planned).calls]
    assert reshapes[0] not in lowered and all(n in lowered for n in reshapes[1:])
    data = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    results = compile_native(planned, opt_level=3)(data)
    np.testing.assert_allclose(results[0], np.sin(np.exp(data).reshape(48)), rtol=1e-5)
    np.testing.assert_allclose(results[1], np.exp(-data.reshape(6, 8)), rtol=1e-5)
    np.testing.assert_allclose(results[2], np.cos(data.reshape(4, 12)), rtol=1e-5)
    np.testing.assert_allclose(results[3], -data.astype(np.float64).sum(), rtol=1e-5)
