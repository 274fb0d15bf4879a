"""Schedule primitives (split, reorder, tile, unroll, vectorize, parallelize) on real lowered
kernels: each transformed program is built with the LLVM backend and compared with the
untransformed program and with numpy; the printed loop IR shows the new nest; transformations
that cannot keep a kernel exact raise LoweringError naming the kernel, the loops and why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.backend.cpu.build import build_program
from ember.errors import LoweringError
from ember.ir.graph import GraphBuilder
from ember.ir.types import DType, TensorType
from ember.lower.loops import Kernel, Loop, format_kernel, walk_stmts
from ember.lower.program import lower_graph
from ember.lower.schedule import (
    parallelize,
    reorder,
    split,
    tile,
    unroll,
    unroll_short_columns,
    vectorize,
    vectorize_innermost,
)
from ember.lower.transforms import replace_loop
from ember.runtime.native import NativeGraph

Transform = Callable[[Kernel], Kernel]


def f32(*shape: int) -> TensorType:
    return TensorType(DType.F32, shape)


def floats(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


class Case:
    """One op lowered at opt_level 2 (general loops, no marks), its inputs and numpy's answer."""

    def __init__(self, op: str, shapes: list[tuple[int, ...]],
                 reference: Callable[..., np.ndarray], **attrs: object) -> None:
        builder = GraphBuilder(op)
        values = [builder.input(f32(*s), f"x{i}") for i, s in enumerate(shapes)]
        self.graph = builder.build([getattr(builder, op)(*values, **attrs)])
        self.program = lower_graph(self.graph, {"opt_level": 2})
        self.inputs = [floats(s, seed) for seed, s in enumerate(shapes)]
        self.expected = reference(*[a.astype(np.float64) for a in self.inputs])

    @property
    def kernel(self) -> Kernel:
        assert len(self.program.calls) == 1
        return self.program.calls[0].kernel

    def run(self, transform: Transform | None = None) -> np.ndarray:
        program = self.program
        if transform is not None:
            call = program.calls[0]
            program = replace(program, calls=[replace(call, kernel=transform(call.kernel))])
        native = NativeGraph(self.graph, program, build_program(program), {})
        return native(*self.inputs)[0].copy()

    def check(self, transform: Transform, exact: bool = True) -> None:
        """The transformed kernel agrees with the untransformed one (bit for bit when `exact`)
        and with numpy in float64."""
        actual = self.run(transform)
        assert actual.shape == self.expected.shape
        np.testing.assert_allclose(actual, self.expected, rtol=1e-4, atol=1e-4)
        if exact:
            np.testing.assert_array_equal(actual, self.run())


def conv2d_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Valid cross-correlation, NCHW / OIHW, stride 1."""
    _, _, height, width = x.shape
    _, _, kh, kw = w.shape
    out = np.zeros((x.shape[0], w.shape[0], height - kh + 1, width - kw + 1))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + out.shape[2], j:j + out.shape[3]]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def matmul() -> Case:
    return Case("matmul", [(13, 7), (7, 30)], lambda a, b: a @ b)


def transpose() -> Case:
    return Case("transpose", [(13, 7)], lambda a: a.T, perm=(1, 0))


def column_sum() -> Case:
    return Case("sum", [(50, 3)], lambda a: a.sum(axis=0), axes=(0,))


def row_sum() -> Case:
    return Case("sum", [(11, 6)], lambda a: a.sum(axis=1), axes=(1,))


def conv2d() -> Case:
    return Case("conv2d", [(1, 2, 7, 6), (3, 2, 3, 3)], conv2d_reference)


def loop_names(kernel: Kernel) -> list[str]:
    return [s.var.name for s in walk_stmts(kernel.body) if isinstance(s, Loop)]


# -- split --------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 3, 4, 7, 30, 64])
def test_split_of_matmul_columns_keeps_results(factor: int) -> None:
    """Dividing (3, 30), non-dividing (4, 7) and larger-than-extent (64) factors."""
    matmul().check(lambda k: split(k, "i3", factor))


def test_split_prints_outer_inner_and_a_guard_when_the_factor_does_not_divide() -> None:
    text = format_kernel(split(transpose().kernel, "i1", 4))
    assert "for (int64_t i1_o = 0; i1_o < 4; i1_o++) {" in text
    assert "for (int64_t i1_i = 0; i1_i < 4; i1_i++) {" in text
    assert "const int64_t i1 = ((i1_o * 4) + i1_i);" in text
    assert "if ((i1 < 13)) {" in text
    assert "if (" not in format_kernel(split(transpose().kernel, "i0", 7))


def test_split_keeps_vectorize_inside_and_parallel_outside() -> None:
    kernel = vectorize(transpose().kernel, "i1")
    marked = split(kernel, "i1", 4)
    kinds = {s.var.name: s.kind for s in walk_stmts(marked.body) if isinstance(s, Loop)}
    assert kinds == {"i0": "serial", "i1_o": "serial", "i1_i": "vectorize"}
    parallel = split(parallelize(transpose().kernel, "i0"), "i0", 2)
    kinds = {s.var.name: s.kind for s in walk_stmts(parallel.body) if isinstance(s, Loop)}
    assert kinds == {"i0_o": "parallel", "i0_i": "serial", "i1": "serial"}


@pytest.mark.parametrize("case", [transpose, row_sum, conv2d])
def test_split_of_every_loop_keeps_results(case: Callable[[], Case]) -> None:
    lowered = case()
    for name in loop_names(lowered.kernel):
        lowered.check(lambda k, name=name: split(k, name, 4))


@settings(max_examples=12, deadline=None)
@given(factor=st.integers(1, 16), loop=st.sampled_from(["i0", "i1"]))
def test_split_property_random_factors(factor: int, loop: str) -> None:
    case = Case("transpose", [(9, 11)], lambda a: a.T, perm=(1, 0))
    case.check(lambda k: split(k, loop, factor))


# -- reorder and tile ---------------------------------------------------------------------------


def test_reorder_interchanges_transpose_loops() -> None:
    case = transpose()
    swapped = reorder(case.kernel, ["i1", "i0"])
    assert loop_names(swapped) == ["i1", "i0"]
    case.check(lambda k: reorder(k, ["i1", "i0"]))


def test_reorder_moves_lets_to_where_their_variables_are_defined() -> None:
    """Split matmul's j loop and move its outer half above k: the hoisted A[i, k] stays right
    inside the k loop, not in the innermost loop."""
    case = matmul()
    nested = reorder(split(case.kernel, "i3", 8), ["i3_o", "i2"])
    text = format_kernel(nested)
    assert text.index("i3_o < 4") < text.index("i2 < 7") < text.index("x0 = in0") < text.index(
        "i3_i < 8")
    case.check(lambda k: reorder(split(k, "i3", 8), ["i3_o", "i2"]))


@pytest.mark.parametrize("factors", [(4, 4), (3, 5), (16, 2), (1, 13)])
def test_tile_of_transpose_keeps_results(factors: tuple[int, int]) -> None:
    case = transpose()
    tiled = tile(case.kernel, ("i0", "i1"), factors)
    assert loop_names(tiled) == ["i0_o", "i1_o", "i0_i", "i1_i"]
    case.check(lambda k: tile(k, ("i0", "i1"), factors))


def test_tile_of_matmul_k_and_j_keeps_results() -> None:
    matmul().check(lambda k: tile(k, ("i2", "i3"), (3, 8)))


def test_tile_of_a_split_loop_composes() -> None:
    """A guard from the first split moves with its variable when the inner loops are tiled."""
    transpose().check(lambda k: tile(split(k, "i0", 5), ("i0_i", "i1"), (2, 3)))


# -- unroll -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "loop"), [(column_sum, "j1"), (row_sum, "r0"),
                                            (conv2d, "i4"), (matmul, "i2")])
def test_unroll_small_loops_keeps_results(case: Callable[[], Case], loop: str) -> None:
    lowered = case()
    assert loop in loop_names(lowered.kernel)
    unrolled = unroll(lowered.kernel, loop)
    assert loop not in loop_names(unrolled)
    lowered.check(lambda k: unroll(k, loop))


def test_unroll_substitutes_the_index_and_renames_inner_definitions() -> None:
    text = format_kernel(unroll(column_sum().kernel, "j1"))
    assert "out0[(obase0 + 2)] = (out0[(obase0 + 2)] + in0[(row0 + 2)]);" in text
    assert "j1" not in text
    conv = format_kernel(unroll(conv2d().kernel, "i4"))
    assert "const int64_t ih0_u2 = (i1 + 2);" in conv
    assert "for (int64_t i5_u1 = 0;" in conv


def test_split_then_unroll_of_the_inner_loop_keeps_results() -> None:
    """A non-dividing split leaves a guard in each unrolled copy."""
    matmul().check(lambda k: unroll(split(k, "i2", 3), "i2_i"))


def test_unroll_then_vectorize_innermost_marks_the_enclosing_loop() -> None:
    case = column_sum()
    scheduled = vectorize_innermost(unroll(case.kernel, "j1"))
    kinds = {s.var.name: s.kind for s in walk_stmts(scheduled.body) if isinstance(s, Loop)}
    assert kinds["r0"] == "vectorize"
    case.check(lambda k: vectorize_innermost(unroll(k, "j1")), exact=False)


# -- marks --------------------------------------------------------------------------------------


def test_vectorize_and_parallelize_marks_keep_results() -> None:
    case = transpose()
    case.check(lambda k: parallelize(vectorize(k, "i1"), "i0"))
    assert "// parallel" in format_kernel(parallelize(case.kernel, "i0"))


# -- errors -------------------------------------------------------------------------------------


def error_of(transform: Callable[[], object]) -> str:
    with pytest.raises(LoweringError) as info:
        transform()
    return str(info.value)


def test_missing_loop_is_named() -> None:
    kernel = transpose().kernel
    assert "no loop i7 in kernel k0_transpose" in error_of(lambda: split(kernel, "i7", 4))
    assert "no loop i7 in kernel k0_transpose" in error_of(lambda: reorder(kernel, ["i0", "i7"]))
    assert "no loop i7" in error_of(lambda: unroll(kernel, "i7"))


def test_reorder_of_an_imperfect_nest_says_what_is_in_between() -> None:
    kernel = matmul().kernel
    message = error_of(lambda: reorder(kernel, ["i2", "i0"]))
    assert "loops i2, i0 are not perfectly nested in kernel k0_matmul" in message
    assert "i0 also holds another loop i1" in message
    message = error_of(lambda: reorder(conv2d().kernel, ["i0", "i2"]))
    assert "not perfectly nested" in message


def test_reorder_of_loops_with_a_loop_between_them() -> None:
    kernel = tile(transpose().kernel, ("i0", "i1"), (4, 4))
    message = error_of(lambda: reorder(kernel, ["i0_o", "i0_i"]))
    assert "loop i1_o lies between i0_o and i0_i" in message


def test_reorder_refuses_to_change_the_order_of_a_sum() -> None:
    """A full sum adds every element into one accumulator: a split and interchange of its loop
    would add in another order."""
    case = Case("sum", [(4, 5)], lambda a: a.sum(axis=(0, 1)), axes=(0, 1))
    kernel = split(case.kernel, "r0", 4)
    message = error_of(lambda: reorder(kernel, ["r0_i", "r0_o"]))
    assert "reorder: loops r0_i, r0_o would change the order of the updates of acc0" in message


def test_reorder_of_a_column_sum_keeps_each_column_in_order() -> None:
    """out[j] += x[r, j]: the r loop is the one the index does not use, and every column still
    adds its rows in order, so the swap is exact."""
    column_sum().check(lambda k: reorder(k, ["j1", "r0"]))


def test_bad_factors_and_limits() -> None:
    kernel = matmul().kernel
    assert "factor 0 of loop i3 is not positive" in error_of(lambda: split(kernel, "i3", 0))
    assert "loop i3 of kernel k0_matmul has 30 iterations, above the limit of 16" in error_of(
        lambda: unroll(kernel, "i3", limit=16))
    assert "is marked vectorize" in error_of(lambda: unroll(vectorize(kernel, "i3"), "i3"))


def test_parallelize_needs_a_self_contained_loop() -> None:
    kernel = matmul().kernel
    message = error_of(lambda: parallelize(kernel, "i2"))
    assert "parallelize: loop i2 of kernel k0_matmul reads a0, c0 from outside it" in message
    inner_parallel = replace_loop(transpose().kernel.body, "i1",
                                  lambda loop: (replace(loop, kind="parallel"),))
    nested = replace(transpose().kernel, body=inner_parallel)
    assert "nest parallel loops" in error_of(lambda: parallelize(nested, "i0"))


def test_unroll_short_columns_unrolls_a_column_sum_and_keeps_results() -> None:
    case = column_sum()
    scheduled = vectorize_innermost(unroll_short_columns(case.kernel))
    kinds = {s.var.name: s.kind for s in walk_stmts(scheduled.body) if isinstance(s, Loop)}
    assert kinds == {"b0": "serial", "r0": "vectorize"}
    case.check(lambda k: vectorize_innermost(unroll_short_columns(k)), exact=False)
    assert unroll_short_columns(transpose().kernel) == transpose().kernel
