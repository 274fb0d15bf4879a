"""The ONNX node test suite (`onnx.backend.test.case.node.collect_testcases()`) run through
Ember against the expected outputs that onnx computed: every case at opt level 0, and at opt
level 3 the deterministic sample `conformance.in_sample` picks (1 case in 5, by a hash of its
name).

Level 3 compiles native code per case: the whole suite takes about 240 s on one core with a
cold compile cache, the sample about 40 s; level 0 in full takes about 10 s.
`python -m ember.onnx.conformance` runs everything at both levels.

No case may give a wrong answer or raise anything but an EmberError, and the pass counts may not
fall below the ones recorded in docs/onnx-conformance.md (regenerate it with
`python -m ember.onnx.conformance --write docs/onnx-conformance.md`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from ember.onnx import conformance

DOC = Path(__file__).resolve().parents[2] / "docs" / "onnx-conformance.md"


@pytest.fixture(scope="module")
def outcomes() -> list[conformance.Outcome]:
    cases = conformance.node_cases()
    sample = [case for case in cases if conformance.in_sample(case.name)]
    return conformance.run_suite(cases, (0,)) + conformance.run_suite(sample, (3,))


def test_no_wrong_answers(outcomes: list[conformance.Outcome]) -> None:
    wrong = [f"{o.case} (level {o.level}): {o.reason}" for o in outcomes if o.status == "wrong"]
    assert not wrong, "\n".join(wrong)


def test_every_failure_is_a_clear_ember_error(outcomes: list[conformance.Outcome]) -> None:
    errors = [f"{o.case} (level {o.level}): {o.detail}" for o in outcomes if o.status == "error"]
    assert not errors, "\n".join(errors)


def test_pass_counts_do_not_fall_below_the_recorded_ones(
        outcomes: list[conformance.Outcome]) -> None:
    text = DOC.read_text(encoding="utf-8")
    whole, sampled = conformance.recorded_passes(text), conformance.recorded_passes(text, True)
    assert set(whole) == set(sampled) == {0, 3}, (whole, sampled)
    passes = conformance.counts(outcomes)
    assert passes[0]["pass"] >= whole[0], f"level 0: {passes[0]['pass']} pass, {whole[0]} recorded"
    assert passes[3]["pass"] >= sampled[3], (
        f"level 3 sample: {passes[3]['pass']} pass, {sampled[3]} recorded")


def test_the_sample_is_a_fifth_of_the_suite(outcomes: list[conformance.Outcome]) -> None:
    names = {case.name for case in conformance.node_cases()}
    assert len(names) > 1000
    assert {o.case for o in outcomes if o.level == 0} == names
    sampled = {o.case for o in outcomes if o.level == 3}
    assert sampled == {name for name in names if conformance.in_sample(name)}
    assert 0.15 < len(sampled) / len(names) < 0.25


# -- the judge ----------------------------------------------------------------------------------


def test_compare_accepts_close_values_and_matching_nans() -> None:
    want = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    got = np.array([1.0005, np.nan, np.inf, -np.inf], np.float32)
    assert conformance.compare([got], [want], 1e-3, 1e-7) == ""


@pytest.mark.parametrize(("got", "why"), [
    (np.array([1.0, 2.0, np.inf], np.float32), "output 0: NaNs in different places"),
    (np.array([1.0, np.nan, np.nan], np.float32), "output 0: NaNs in different places"),
    (np.array([1.01, np.nan, np.inf], np.float32), "max abs error 0.01"),
    (np.array([1.0, np.nan, -np.inf], np.float32), "max abs error"),
    (np.array([1.0, np.nan, np.inf], np.float64), "output 0 is float64[3], expected float32[3]"),
    (np.array([[1.0, np.nan, np.inf]], np.float32), "output 0 is float32[1, 3]"),
])
def test_compare_rejects_differences(got: np.ndarray, why: str) -> None:
    want = np.array([1.0, np.nan, np.inf], np.float32)
    assert why in conformance.compare([got], [want], 1e-3, 1e-7)


def test_compare_is_exact_for_integers_and_counts_outputs() -> None:
    want = np.array([1, 2, 3], np.int64)
    assert conformance.compare([want + np.array([0, 0, 1])], [want], 1e-3, 1e-7) == (
        "output 0: 1 elements differ")
    assert conformance.compare([want, want], [want], 1e-3, 1e-7) == "2 outputs, expected 1"


def test_refusal_reasons_name_the_operator_version_or_type() -> None:
    reason = conformance.refusal_reason
    assert reason("m: 2 unsupported ONNX operators at opset 13: NonZero (node 'nz'); Resize "
                  "(nodes 'a', 'b')") == "operator: NonZero, operator: Resize"
    assert reason("m: 1 unsupported ONNX operator at opset 5: Cast at opset 5 (version 1): "
                  "Ember implements versions 6, 9 (node #0)") == "operator version: Cast 1"
    assert reason("m: input 'x': ONNX element type FLOAT16 is not supported (supported: ...)"
                  ) == "element type: FLOAT16"
