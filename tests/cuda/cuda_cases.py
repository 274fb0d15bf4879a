"""What the CUDA tests share: the op cases of tests/numerics, the examples, and result checks.

The op cases (one graph per case, each with an expected value computed independently of Ember)
are those of `tests/numerics/test_ops.py`, loaded under a private module name, so the CUDA
tests walk exactly the ops and shapes the CPU's numerical tests walk.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ember.ir.graph import Graph
from ember.lower.loops import Binary, Kernel, Let, Loop, Var, index_imm, map_loops
from ember.target import Target

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ("mlp", "cnn", "transformer")


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    return module


OPS = _load("_ember_cuda_op_cases", ROOT / "tests" / "numerics" / "test_ops.py")
CHECKS = _load("_ember_cuda_op_checks", ROOT / "tests" / "numerics" / "conftest.py")
CASES = OPS.CASES
build_graph = OPS.build_graph


def check_case(case: Any, actual: Sequence[np.ndarray]) -> None:
    """`actual` against the case's independent expected value, as tests/numerics checks the
    CPU (`test_ops.check_outputs`)."""
    OPS.check_outputs(case, actual, CHECKS.assert_result)


def example(name: str) -> ModuleType:
    """examples/<name>.py as a module: `model`, `example_inputs` and `numpy_forward` (its
    script part, under `if __name__ == "__main__"`, does not run)."""
    return _load(f"_ember_cuda_example_{name}", ROOT / "examples" / f"{name}.py")


def reversed_grids(kernel: Kernel) -> Kernel:
    """The kernel with every grid loop's iterations run last to first: one thread order that
    a GPU may pick, and the one that exposes an iteration reading what a later one writes."""

    def reverse(loop: Loop, depth: int) -> Loop:
        if loop.kind != "grid":
            return loop
        turned = Var(f"{loop.var.name}_rev")
        last = Binary("sub", index_imm(loop.extent - 1), turned)
        return Loop(turned, loop.extent, (Let(loop.var, last), *loop.body))

    return replace(kernel, body=map_loops(kernel.body, reverse))


def run_launches_on_cpu(graph: Graph, inputs: Sequence[np.ndarray], level: int = 3,
                        arch: str = "sm_90") -> tuple[np.ndarray, ...]:
    """Run the CUDA program of `graph` (lowered and mapped to launches for `arch`) on the CPU,
    one launch after another, each grid in reverse order: what the GPU computes, whatever the
    order its threads run in, if the mapping is right."""
    from ember.backend.cpu.build import build_program
    from ember.backend.cuda.schedule import map_program
    from ember.runtime.native import NativeGraph, lower_native

    program = map_program(lower_native(graph, level, Target.cuda(arch)))
    calls = [replace(call, kernel=reversed_grids(call.kernel)) for call in program.calls]
    program = replace(program, calls=calls, target=Target.host().with_(cores=1))
    native = NativeGraph(graph, program, build_program(program, opt_level=1), {})
    return native(*inputs)
