"""Shared machinery of the numerical op tests: the ways to run a graph, and how to compare.

Every op test takes the `executor` fixture and so runs once per entry of `EXECUTORS`. A new
backend adds one entry (a function `(graph, *arrays) -> tuple of arrays`) and every op test
then checks it against the same independent expressions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import ember
from ember.ir.graph import Graph
from ember.ir.types import DType

Executor = Callable[..., tuple[np.ndarray, ...]]


def run_interpreter(graph: Graph, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The reference interpreter, op by op with the registry's numpy references."""
    return ember.interpret(graph, *arrays)


def run_llvm(graph: Graph, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The LLVM CPU backend: each op its own scheduled kernel, one native entry point."""
    from ember.lower.program import check_lowerable
    from ember.runtime import compile_native

    missing = check_lowerable(graph)
    if missing:  # tests/backend/test_lowering_coverage.py fails for every op in this state
        pytest.skip(f"no CPU lowering yet for {', '.join(missing)}")
    return compile_native(graph)(*arrays)


# name -> how to run a graph on numpy arrays. One entry per backend.
EXECUTORS: dict[str, Executor] = {
    "interpreter": run_interpreter,
    "llvm": run_llvm,
}

# (rtol, atol) per dtype; integer and bool results must match exactly.
TOLERANCES: dict[DType, tuple[float, float]] = {
    DType.F32: (1e-5, 1e-6),
    DType.F64: (1e-12, 1e-12),
}


@pytest.fixture(params=sorted(EXECUTORS))
def executor(request: pytest.FixtureRequest) -> Executor:
    """One way to run a graph: `executor(graph, *arrays) -> tuple of arrays`."""
    return EXECUTORS[request.param]


def assert_result(actual: np.ndarray, expected: np.ndarray, dtype: DType, label: str = "") -> None:
    """Check shape, then dtype, then values (within the tolerance of `dtype`).

    `expected` may be computed at higher precision (float64); `dtype` is the dtype `actual`
    must have.
    """
    where = f"{label}: " if label else ""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{where}shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == dtype.numpy, f"{where}dtype {actual.dtype}, expected {dtype.numpy}"
    if dtype in TOLERANCES:
        rtol, atol = TOLERANCES[dtype]
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=where)
    else:
        np.testing.assert_array_equal(actual, expected.astype(dtype.numpy), err_msg=where)


@pytest.fixture
def check_result() -> Callable[..., None]:
    """`assert_result` as a fixture, for test modules that cannot import conftest by name."""
    return assert_result
