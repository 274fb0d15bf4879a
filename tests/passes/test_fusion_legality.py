"""Every group the `fuse` pass forms lowers and computes the right answer at levels 2 and 3.

Programs with fan-out, several results of different shapes, and broadcasting inside fused
regions; each is compiled at opt levels 2 and 3 and checked against float64 numpy. The random
family builds a numpy function and an Ember function from the same recipe, so the reference
never goes through Ember.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ember
from ember.nn import functional as F

LEVELS = (2, 3)
RTOL, ATOL = 1e-5, 1e-6


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + len(shape)).uniform(-1.0, 1.0, shape).astype(np.float32)


def fused_result_shapes(exe: ember.driver.Executable) -> list[list[tuple[int, ...]]]:
    """For each fused node of the optimized graph, the shapes of its results."""
    return [[v.type.shape for v in node.outputs] for node in exe.graph.nodes
            if node.op == "fused"]


def check(fn: Callable, reference: Callable, *inputs: np.ndarray,
          level: int) -> ember.driver.Executable:
    exe = ember.compile(fn, *inputs, opt_level=level)
    got = exe(*inputs)
    want = reference(*(x.astype(np.float64) for x in inputs))
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    return exe


@pytest.mark.parametrize("level", LEVELS)
def test_results_of_two_shapes_from_one_group_lower(level: int) -> None:
    x, w = rand(3, 4), rand(2, 3, 4, seed=1)
    exe = check(lambda x, w: (x.exp(), x.exp() + w),
                lambda x, w: (np.exp(x), np.exp(x) + w), x, w, level=level)
    assert [(3, 4), (2, 3, 4)] in fused_result_shapes(exe)  # the case is really fused


@pytest.mark.parametrize("level", LEVELS)
def test_fan_out_to_results_of_three_shapes(level: int) -> None:
    def fn(a, b, c):
        y = F.relu(a * 2.0)  # [4]
        z = y + b  # [3,4]
        return y, z, z * c - y  # [4], [3,4], [2,3,4]

    def reference(a, b, c):
        y = np.maximum(a * 2.0, 0.0)
        z = y + b
        return y, z, z * c - y

    exe = check(fn, reference, rand(4), rand(3, 4, seed=1), rand(2, 3, 4, seed=2), level=level)
    assert any(len(set(shapes)) > 1 for shapes in fused_result_shapes(exe))


@pytest.mark.parametrize("level", LEVELS)
def test_broadcast_both_ways_inside_a_group_with_an_inner_result(level: int) -> None:
    def fn(col, row):
        c = col.tanh()  # [5,1]
        r = row.exp()  # [1,6]
        return c, (c + r).sigmoid() * r  # [5,1], [5,6]

    def reference(col, row):
        c, r = np.tanh(col), np.exp(row)
        return c, r * (1.0 / (1.0 + np.exp(-(c + r))))

    check(fn, reference, rand(5, 1), rand(1, 6, seed=1), level=level)


@pytest.mark.parametrize("level", LEVELS)
def test_reduction_group_with_results_of_several_shapes(level: int) -> None:
    def fn(x, w):
        y = (x * 3.0).exp()  # [4,8]
        s = y.sum(axis=-1)  # [4]
        return y, s, s.reshape(4, 1) + w  # [4,8], [4], [4,8]

    def reference(x, w):
        y = np.exp(x * 3.0)
        s = y.sum(axis=-1)
        return y, s, s.reshape(4, 1) + w

    check(fn, reference, rand(4, 8), rand(4, 8, seed=1), level=level)


@pytest.mark.parametrize("level", LEVELS)
def test_matmul_epilogue_with_a_broadcast_side_result(level: int) -> None:
    def fn(x, w, b):
        h = F.relu(x @ w + b)  # [8,16]
        e = b.exp()  # [16]
        return h, e, h * e  # [8,16], [16], [8,16]

    def reference(x, w, b):
        h = np.maximum(x @ w + b, 0.0)
        e = np.exp(b)
        return h, e, h * e

    check(fn, reference, rand(8, 32), rand(32, 16, seed=1), rand(16, seed=2), level=level)


# --- random elementwise programs --------------------------------------------------------------

_SHAPES = [(4,), (3, 4), (2, 3, 4), (3, 1), (1, 4), (2, 1, 4)]
_UNARY = {"exp": (lambda t: np.exp(t * 0.5), lambda a: np.exp(a * 0.5)),
          "tanh": (lambda t: t.tanh(), np.tanh),
          "relu": (F.relu, lambda a: np.maximum(a, 0.0)),
          "neg": (lambda t: -t, np.negative)}
_BINARY = {"add": (lambda a, b: a + b, np.add), "mul": (lambda a, b: a * b, np.multiply),
           "sub": (lambda a, b: a - b, np.subtract),
           "maximum": (np.maximum, np.maximum)}  # numpy's ufuncs trace on Ember tensors


@st.composite
def programs(draw: Callable) -> tuple[list[tuple[int, ...]], list[tuple], list[int]]:
    """A recipe: input shapes, steps (unary on one earlier value, or binary on two), and
    which values are returned (several, of different shapes: each may fan out)."""
    inputs = draw(st.lists(st.sampled_from(_SHAPES), min_size=1, max_size=3))
    shapes = list(inputs)
    steps: list[tuple] = []
    for _ in range(draw(st.integers(2, 9))):
        if draw(st.booleans()):
            op = draw(st.sampled_from(sorted(_UNARY)))
            a = draw(st.integers(0, len(shapes) - 1))
            steps.append((op, a))
            shapes.append(shapes[a])
        else:
            op = draw(st.sampled_from(sorted(_BINARY)))
            a, b = draw(st.integers(0, len(shapes) - 1)), draw(st.integers(0, len(shapes) - 1))
            steps.append((op, a, b))
            shapes.append(np.broadcast_shapes(shapes[a], shapes[b]))
    made = range(len(inputs), len(shapes))
    returned = draw(st.lists(st.sampled_from(made), min_size=1, max_size=4, unique=True))
    return inputs, steps, returned


def run_recipe(values: list, steps: list[tuple], returned: list[int], numpy: bool) -> tuple:
    values = list(values)
    for step in steps:
        if len(step) == 2:
            ember_fn, numpy_fn = _UNARY[step[0]]
            values.append((numpy_fn if numpy else ember_fn)(values[step[1]]))
        else:
            ember_fn, numpy_fn = _BINARY[step[0]]
            values.append((numpy_fn if numpy else ember_fn)(values[step[1]], values[step[2]]))
    return tuple(values[i] for i in returned)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.sampled_from(LEVELS))
def test_random_elementwise_programs_lower_at_levels_2_and_3(recipe: tuple, level: int) -> None:
    inputs, steps, returned = recipe
    arrays = [rand(*shape, seed=i) for i, shape in enumerate(inputs)]

    def fn(*xs):
        return run_recipe(list(xs), steps, returned, numpy=False)

    def reference(*xs):
        return run_recipe(list(xs), steps, returned, numpy=True)

    check(fn, reference, *arrays, level=level)
