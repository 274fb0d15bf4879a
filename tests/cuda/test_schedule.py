"""The CUDA schedule: which loops become the grid, and that the launches compute the op.

The launches of every op case run on the CPU (each launch after the previous one, each grid
loop's iterations last to first) and are checked against the case's independent expected
value: a band that is not really independent, a wrong flat-index split, or a kernel split
into launches in the wrong place shows up here, without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_cases import CASES, build_graph, check_case, run_launches_on_cpu

from ember.backend.cuda.schedule import (
    MAX_BLOCKS,
    Affine,
    affine,
    disjoint_band,
    map_program,
    split_kernel,
)
from ember.ir.graph import GraphBuilder
from ember.ir.types import DType, TensorType
from ember.lower.loops import (
    Assign,
    Binary,
    Buffer,
    Kernel,
    Let,
    Load,
    Local,
    Loop,
    Store,
    Var,
    imm,
    index_imm,
)
from ember.runtime.native import lower_native
from ember.target import Target

F32 = DType.F32
CUDA = Target.cuda("sm_90")


def _program(build, *shapes):
    builder = GraphBuilder("g")
    values = [builder.input(TensorType(F32, shape), f"x{i}") for i, shape in enumerate(shapes)]
    graph = builder.build([build(builder, *values)])
    return map_program(lower_native(graph, 3, CUDA))


def _grid(kernel: Kernel) -> Loop:
    (loop,) = kernel.body
    assert loop.kind == "grid"
    return loop


def test_elementwise_nest_is_one_grid_with_the_last_axis_fastest() -> None:
    """A 2-D elementwise op is one grid over all elements; the row index is g / 512 and the
    column g % 512, so neighbouring threads touch neighbouring elements."""
    program = _program(lambda b, x: b.op("relu", x), (64, 512))
    (call,) = program.calls
    loop = _grid(call.kernel)
    assert loop.extent == 64 * 512
    assert call.kernel.attrs["launch"] == (256, 128)  # at least MIN_BLOCKS blocks
    row, column = loop.body[0], loop.body[1]
    assert isinstance(row, Let) and "udiv" in repr(row.value) and "512" in repr(row.value)
    assert isinstance(column, Let) and "urem" in repr(column.value)


def test_large_elementwise_is_grid_stride() -> None:
    """More elements than MAX_BLOCKS blocks of threads: the block count is capped and each
    thread strides over the rest."""
    program = _program(lambda b, x: b.op("exp", x), (1 << 23,))
    (call,) = program.calls
    assert _grid(call.kernel).extent == 1 << 23
    assert call.kernel.attrs["launch"] == (MAX_BLOCKS, 256)


def test_row_reduction_is_one_thread_per_row() -> None:
    """sum over the last axis: one thread per output row, the row's loop inside it."""
    program = _program(lambda b, x: b.op("sum", x, axes=(1,), keepdims=False), (300, 70))
    (call,) = program.calls
    loop = _grid(call.kernel)
    assert loop.extent == 300 and call.kernel.attrs["launch"] == (10, 32)


def test_full_reduction_runs_in_one_thread() -> None:
    """A sum of everything into one scalar keeps its accumulator: one launch of one thread."""
    program = _program(lambda b, x: b.op("sum", x, axes=(0, 1), keepdims=False), (30, 7))
    assert [c.kernel.attrs["launch"] for c in program.calls][-1] == (1, 1)


def _column_sum() -> tuple[Kernel, Loop, Loop]:
    x, out = Buffer("in0", F32, 64 * 8), Buffer("out0", F32, 8)
    r, j = Var("r"), Var("j")
    index = Binary("add", Binary("mul", r, index_imm(8)), j)
    update = Store(out, j, Binary("add", Load(out, j), Load(x, index)))
    inner = Loop(j, 8, (update,))
    outer = Loop(r, 64, (inner,))
    return Kernel("k", (x, out), (outer,)), outer, inner


def test_band_stops_where_iterations_share_an_output() -> None:
    """`for r { for j: out[j] += x[r, j] }`: every r writes the same out[j], so (r, j) is not
    a band; the inner loop alone would be."""
    kernel, outer, inner = _column_sum()
    assert not disjoint_band(kernel, [outer, inner], inner.body)
    assert disjoint_band(kernel, [inner], inner.body)


def test_band_needs_nested_strides() -> None:
    """out[2*i + j] over i < 4, j < 3 overlaps (i=0, j=2 and i=1, j=0); out[3*i + j] does not."""
    out = Buffer("out0", F32, 16)
    i, j = Var("i"), Var("j")
    for stride, expected in ((2, False), (3, True)):
        store = Store(out, Binary("add", Binary("mul", i, index_imm(stride)), j), imm(1, F32))
        inner = Loop(j, 3, (store,))
        outer = Loop(i, 4, (inner,))
        kernel = Kernel("k", (out,), (outer,))
        assert disjoint_band(kernel, [outer, inner], inner.body) is expected


def test_affine_forms_expand_lets_and_refuse_loads() -> None:
    i, j, t = Var("i"), Var("j"), Var("t")
    lets = {t: Binary("add", Binary("mul", i, index_imm(5)), index_imm(2))}
    form = affine(Binary("sub", Binary("mul", t, index_imm(3)), j), lets)
    assert form == Affine(((i, 15), (j, -1)), 6)
    assert affine(Load(Buffer("idx", DType.I64, 4), i), {}) is None
    assert affine(Binary("udiv", i, index_imm(2)), {}) is None


def test_shared_top_level_scalar_keeps_the_kernel_whole() -> None:
    """A top-level accumulator read by a later loop: one serial launch, never a split that
    would lose the scalar."""
    x, out = Buffer("in0", F32, 8), Buffer("out0", F32, 8)
    acc, i, k = Var("acc", F32), Var("i"), Var("k")
    body = (Local(acc, imm(0, F32)),
            Loop(i, 8, (Assign(acc, Binary("add", acc, Load(x, i))),)),
            Loop(k, 8, (Store(out, k, Binary("div", Load(x, k), acc)),)))
    (kernel,) = split_kernel(Kernel("k", (x, out), body))
    assert kernel.attrs["launch"] == (1, 1) and kernel.body == body


def test_kernel_with_several_nests_becomes_several_launches() -> None:
    """Independent top-level loops each get a launch, in order, with the same buffers."""
    x, out, tmp = Buffer("in0", F32, 8), Buffer("out0", F32, 8), Buffer("tmp0", F32, 8)
    i, k = Var("i"), Var("k")
    body = (Loop(i, 8, (Store(tmp, i, Binary("mul", Load(x, i), imm(2, F32))),)),
            Loop(k, 8, (Store(out, k, Load(tmp, Binary("sub", index_imm(7), k))),)))
    parts = split_kernel(Kernel("k", (x, tmp, out), body))
    assert [p.name for p in parts] == ["k_0", "k_1"]
    assert all(p.buffers == (x, tmp, out) and p.attrs["launch"] == (1, 32) for p in parts)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_launches_compute_the_op_in_any_thread_order(case) -> None:
    """Every op case: the CUDA launches, run on the CPU with each grid reversed, give the
    case's independent expected value."""
    if case.torch:
        pytest.importorskip("torch")
    graph = build_graph(case)
    check_case(case, run_launches_on_cpu(graph, [np.asarray(a) for a in case.inputs]))


@pytest.mark.parametrize(("shape", "columns"), [((17, 24), 33), ((3, 17, 24), 33),
                                               ((64, 40), 32), ((3, 32, 24), 36)])
def test_gemm_with_its_fused_chain_in_any_thread_order(shape: tuple[int, ...], columns: int
                                                       ) -> None:
    """matmul + bias (per column) + gelu + residual (a full array) after fusion: the CUDA
    GEMM rule's one launch (an element per thread, or 4x4 tiles from 32 rows and columns on),
    run on the CPU with its grid reversed, against float64 numpy."""
    import ember
    from ember.driver import optimize

    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[-1], columns)).astype(np.float32)
    bias = rng.standard_normal(columns).astype(np.float32)
    residual = rng.standard_normal((*shape[:-1], columns)).astype(np.float32)

    def chain(a, b, c, r):
        return ember.nn.functional.gelu(a @ b + c) + r

    graph = optimize(ember.trace(chain, x, w, bias, residual), 3, target=CUDA)
    assert any(n.op == "fused" for n in graph.nodes)
    (actual,) = run_launches_on_cpu(graph, [x, w, bias, residual])
    from math import erf

    h = x.astype(np.float64) @ w + bias
    expected = 0.5 * h * (1 + np.vectorize(erf)(h / np.sqrt(2))) + residual
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    program = map_program(lower_native(graph, 3, CUDA))
    (call,) = program.calls
    elements = int(np.prod(shape[:-1])) * columns
    tiled = shape[-2] % 4 == 0 and columns % 4 == 0
    assert call.kernel.body[0].kind == "grid"
    assert call.kernel.body[0].extent == (elements // 16 if tiled else elements)


@pytest.mark.parametrize("transposed", [False, True])
def test_tiled_gemm_without_a_chain(transposed: bool) -> None:
    """matmul and matmul_nt in 4x4 tiles (96 x 40 @ 40 x 64) match float64 numpy, with the
    grid reversed."""
    builder = GraphBuilder("g")
    rng = np.random.default_rng(9)
    a = rng.standard_normal((96, 40)).astype(np.float32)
    b = rng.standard_normal((64, 40) if transposed else (40, 64)).astype(np.float32)
    values = [builder.input(TensorType.of(a), "a"), builder.input(TensorType.of(b), "b")]
    graph = builder.build([builder.op("matmul_nt" if transposed else "matmul", *values)])
    program = map_program(lower_native(graph, 3, CUDA))
    assert program.calls[0].kernel.body[0].extent == 96 * 64 // 16
    (actual,) = run_launches_on_cpu(graph, [a, b])
    expected = a.astype(np.float64) @ (b.T if transposed else b)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min", "prod", "int sum"])
def test_whole_reduction_is_partials_then_one_thread(op: str) -> None:
    """A reduction of everything (104927 terms) is two launches, partial results on a grid
    (neighbouring threads reading neighbouring elements) and one thread folding them; run on
    the CPU with the grid reversed it matches float64 numpy (exactly for integers)."""
    import ember
    from ember.driver import optimize

    rng = np.random.default_rng(11)
    if op == "int sum":
        x = rng.integers(-1000, 1000, size=(317, 331)).astype(np.int32)
    elif op == "prod":  # (in float32 the 104927 roundings alone drift by 1e-3: float64)
        x = rng.uniform(0.9999, 1.0001, size=(317, 331))
    else:
        x = rng.standard_normal((317, 331)).astype(np.float32)
    name = "sum" if op == "int sum" else op
    graph = optimize(ember.trace(lambda a: getattr(a, name)(), x), 3, target=CUDA)
    program = map_program(lower_native(graph, 3, CUDA))
    launches = [c.kernel.attrs["launch"] for c in program.calls]
    assert launches == [(52, 32), (1, 1)]  # 1639 threads of 64 terms, then one
    assert program.arena_bytes >= 1639 * x.itemsize  # the partials' slot
    (actual,) = run_launches_on_cpu(graph, [x])
    expected = getattr(x.astype(np.int64 if op == "int sum" else np.float64), name)()
    if op == "int sum":
        assert actual == expected
    else:
        tolerance = 1e-10 if x.dtype == np.float64 else 1e-5
        np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(("op", "shape", "axes"), [
    ("sum", (300, 70), (0,)), ("mean", (4096, 96), (0,)), ("max", (5, 6, 7, 8), (0, 2)),
    ("min", (6, 50, 70), (1,)), ("sum", (2000, 3), (0,))])
def test_kept_last_axis_reduction_is_one_thread_per_output(op: str, shape: tuple[int, ...],
                                                          axes: tuple[int, ...]) -> None:
    """A reduction that keeps the last axis (lowered as rows accumulated into the output)
    becomes one accumulator per output element on a grid over all outputs, each element folded
    in the lowering's row order; run on the CPU with the grid reversed it matches float64
    numpy."""
    import ember
    from ember.driver import optimize

    x = np.random.default_rng(13).standard_normal(shape).astype(np.float32)

    def reduce(a):
        return getattr(a, op)(axis=axes)

    graph = optimize(ember.trace(reduce, x), 3, target=CUDA)
    (call,) = map_program(lower_native(graph, 3, CUDA)).calls
    outputs = int(np.prod([d for i, d in enumerate(shape) if i not in axes]))
    assert _grid(call.kernel).extent == outputs
    (actual,) = run_launches_on_cpu(graph, [x])
    expected = getattr(x.astype(np.float64), op)(axis=axes)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
