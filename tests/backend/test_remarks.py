"""LLVM optimization remarks: what the loop vectorizer did with each function of a module."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.backend.llvm.jit import compile_ir, optimization_remarks

# `scale` is a counted loop over independent elements; `find` leaves its loop as soon as it
# sees a positive element, so the loads after that one may not be made (a data-dependent exit).
LOOPS = """
define void @scale(float* noalias %a, float* noalias %b) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %pa = getelementptr float, float* %a, i64 %i
  %x = load float, float* %pa
  %y = fmul float %x, 2.0
  %pb = getelementptr float, float* %b, i64 %i
  store float %y, float* %pb
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, 1024
  br i1 %more, label %loop, label %done
done:
  ret void
}

define i64 @find(float* noalias %a) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %step]
  %pa = getelementptr float, float* %a, i64 %i
  %x = load float, float* %pa
  %positive = fcmp ogt float %x, 0.0
  br i1 %positive, label %found, label %step
step:
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, 1024
  br i1 %more, label %loop, label %done
found:
  ret i64 %i
done:
  ret i64 -1
}
"""


def by_function(remarks) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for remark in remarks:
        grouped.setdefault(remark.function, []).append(remark.message)
    return grouped


def test_vectorized_loop_reports_its_width_and_interleave() -> None:
    (remark,) = [r for r in optimization_remarks(LOOPS) if r.function == "scale"]
    assert remark.vectorized
    assert remark.message.startswith("vectorized loop (vectorization width: ")
    assert "interleaved count: " in remark.message


def test_loop_with_data_dependent_exit_is_missed_with_a_reason() -> None:
    messages = by_function(optimization_remarks(LOOPS))["find"]
    assert messages, "no remark about the search loop"
    assert all(m.startswith("loop not vectorized") for m in messages)
    assert any(": " in m for m in messages)  # the analysis remark says why


def test_remarks_are_off_again_afterwards(capfd: pytest.CaptureFixture[str]) -> None:
    """Remarks are switched on for one optimization only: later compiles print nothing."""
    optimization_remarks(LOOPS)
    capfd.readouterr()
    compile_ir(LOOPS, cached=False)
    assert "remark" not in capfd.readouterr().err


def test_remark_functions_of_a_compiled_model_are_its_kernels(tmp_path) -> None:
    exe = ember.compile(lambda x: x * 3.0 + 1.0, np.ones((64, 256), np.float32))
    remarks = exe.native.native.module.remarks()
    kernels = {call.kernel.name for call in exe.native.program.calls}
    vectorized = [r for r in remarks if r.vectorized]
    assert vectorized and all(r.function.split(".par")[0] in kernels for r in vectorized)
    assert "vectorization width: " in vectorized[0].message


def test_module_with_its_own_flags_still_gets_remarks() -> None:
    flagged = LOOPS + '\n!llvm.module.flags = !{!0}\n!0 = !{i32 1, !"wchar_size", i32 4}\n'
    functions = {r.function for r in optimization_remarks(flagged)}
    assert {"scale", "find"} <= functions
