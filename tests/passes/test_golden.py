"""Golden IR tests: each case in tests/passes/golden/*.ir is an input graph, a pipeline and the
expected output; the runner also checks that the output computes what the input computes.

    // RUN: cse
    graph @f(...) { ... }
    // EXPECT:
    graph @f(...) { ... }
    // -----

Instead of EXPECT, a case may list `// CHECK: <substring>` and `// CHECK-NOT: <substring>`
lines that the printed output must (not) contain. `pytest --update-golden` rewrites EXPECT
blocks from the current output: review those diffs like code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.interpreter import interpret
from ember.pipeline import PassManager, parse_pipeline, random_inputs

GOLDEN = Path(__file__).parent / "golden"
SEPARATOR = "// -----"


@dataclass
class Case:
    path: Path
    index: int
    pipeline: str
    source: str
    expect: str | None
    checks: list[str] = field(default_factory=list)
    check_nots: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.path.stem}:{self.index}"


def _parse_case(path: Path, index: int, text: str) -> Case:
    run = re.search(r"^// RUN: (.*)$", text, re.M)
    assert run, f"{path}: case {index} has no '// RUN:' line"
    body, _, expect = text.partition("// EXPECT:")
    lines = [l for l in body.splitlines() if not l.startswith("// RUN:")]
    checks = [l[len("// CHECK: "):] for l in lines if l.startswith("// CHECK: ")]
    check_nots = [l[len("// CHECK-NOT: "):] for l in lines if l.startswith("// CHECK-NOT: ")]
    source = "\n".join(l for l in lines if not l.startswith("// CHECK")).strip()
    return Case(path, index, run.group(1).strip(), source, expect.strip() or None, checks,
                check_nots)


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(GOLDEN.glob("*.ir")):
        chunks = [c for c in path.read_text().split(SEPARATOR) if c.strip()]
        cases += [_parse_case(path, i, chunk) for i, chunk in enumerate(chunks)]
    return cases


CASES = load_cases()


def _rewrite_expect(case: Case, output: str) -> None:
    chunks = [c for c in case.path.read_text().split(SEPARATOR) if c.strip()]
    head = chunks[case.index].partition("// EXPECT:")[0].rstrip()
    chunks[case.index] = f"\n{head.strip()}\n// EXPECT:\n{output}\n"
    case.path.write_text(SEPARATOR.join(chunks).lstrip("\n") + "\n")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_golden(case: Case, update_golden: bool) -> None:
    graph = ember.parse(case.source)
    ember.verify(graph)
    result = PassManager(parse_pipeline(case.pipeline)).run(graph)
    output = str(result)
    assert str(ember.parse(output)) == output  # the result is valid, parseable IR
    if update_golden and case.expect is not None:
        _rewrite_expect(case, output)
    elif case.expect is not None:
        assert output == case.expect
    for check in case.checks:
        assert check in output, f"CHECK failed: {check!r} not in\n{output}"
    for check in case.check_nots:
        assert check not in output, f"CHECK-NOT failed: {check!r} in\n{output}"
    inputs = random_inputs(graph, seed=case.index)
    for want, got in zip(interpret(graph, *inputs), interpret(result, *inputs), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_every_pass_has_a_golden_file() -> None:
    from ember.passes import ALL_PASSES

    covered = {name for c in CASES for name in re.findall(r"[a-z][a-z-]*", c.pipeline)}
    missing = sorted(set(ALL_PASSES) - covered)
    assert not missing, f"passes without golden cases: {missing}"
