"""What the ONNX importer supports: the operator table and the backend test data results.

    python -m ember.onnx.support            # rewrite the generated tables in docs/onnx.md
    python -m ember.onnx.support --print    # print them instead

The operator table comes from the converter registry (`CONVERTERS`); the case table runs every
model of the ONNX backend test data shipped inside the `onnx` package (`pytorch-converted`,
`pytorch-operator`) at opt levels 0 and 3 against its expected outputs.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ember.errors import EmberError, LoweringError, UnsupportedError
from ember.onnx.converters import CONVERTERS

SUITES = ("pytorch-converted", "pytorch-operator")
LEVELS = (0, 3)
RTOL, ATOL = 1e-3, 1e-5
# Cases whose expected outputs need a looser tolerance, and why.
TOLERANCES: dict[str, tuple[float, float]] = {}

DOC_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "onnx.md")
_MARKERS = {
    "operators": ("<!-- BEGIN GENERATED: operators -->", "<!-- END GENERATED: operators -->"),
    "cases": ("<!-- BEGIN GENERATED: cases -->", "<!-- END GENERATED: cases -->"),
}


@dataclass(frozen=True)
class BackendCase:
    """One model of the ONNX backend test data and its first test data set."""

    suite: str
    name: str
    directory: str

    @property
    def model_path(self) -> str:
        return os.path.join(self.directory, "model.onnx")

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"


def data_root() -> str:
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def backend_cases() -> list[BackendCase]:
    """Every case of the suites, sorted; empty when the onnx package ships no test data."""
    cases = []
    for suite in SUITES:
        folder = os.path.join(data_root(), suite)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            directory = os.path.join(folder, name)
            if os.path.isfile(os.path.join(directory, "model.onnx")):
                cases.append(BackendCase(suite, name, directory))
    return cases


def _tensors(folder: str, prefix: str) -> list[np.ndarray]:
    names = [n for n in os.listdir(folder) if re.fullmatch(prefix + r"_\d+\.pb", n)]
    names.sort(key=lambda n: int(n[len(prefix) + 1 : -3]))
    return [numpy_helper.to_array(onnx.load_tensor(os.path.join(folder, n))) for n in names]


@functools.cache
def case_data(directory: str) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """(inputs, expected outputs) of a case's first test data set (cached)."""
    sets = sorted(n for n in os.listdir(directory) if n.startswith("test_data_set_"))
    folder = os.path.join(directory, sets[0])
    return tuple(_tensors(folder, "input")), tuple(_tensors(folder, "output"))


def case_operators(case: BackendCase) -> tuple[int, list[str]]:
    """The case's default-domain opset and its operator types, in first-use order."""
    proto = onnx.load(case.model_path)
    opset = next((e.version for e in proto.opset_import if e.domain in ("", "ai.onnx")), 0)
    return opset, list(dict.fromkeys(node.op_type for node in proto.graph.node))


def run_case(case: BackendCase, opt_level: int) -> str:
    """"pass", "unsupported: ...", "no-lowering: ..." or "fail: ..." for a case at a level."""
    import ember
    from ember.onnx.loader import load

    try:
        model = load(case.model_path)
        inputs, expected = case_data(case.directory)
        result = ember.compile(model, *inputs, opt_level=opt_level)(*inputs)
    except UnsupportedError as err:
        return f"unsupported: {err}"
    except LoweringError as err:  # the importer's graph is fine; the CPU backend lacks an op
        return f"no-lowering: {err}"
    except EmberError as err:
        return f"fail: {type(err).__name__}: {err}"
    results = result if isinstance(result, tuple) else (result,)
    rtol, atol = TOLERANCES.get(case.name, (RTOL, ATOL))
    for index, (got, want) in enumerate(zip(results, expected, strict=True)):
        if got.shape != want.shape:
            return f"fail: output {index} has shape {got.shape}, expected {want.shape}"
        if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            error = np.nanmax(np.abs(got.astype(np.float64) - want))
            return f"fail: output {index} differs (max abs error {error:.3g})"
    return "pass"


# ---------------------------------------------------------------------------------------------
# Tables.


def operator_table() -> str:
    """Markdown table of every converter: ONNX op, the operator versions it implements, what
    it becomes."""
    lines = ["| ONNX operator | versions | conversion |", "|---|---|---|"]
    for op_type in sorted(CONVERTERS):
        converter = CONVERTERS[op_type]
        versions = ", ".join(str(v) for v in converter.versions)
        lines.append(f"| {op_type} | {versions} | {converter.doc.replace('|', '/')} |")
    return "\n".join(lines)


def _short(status: str) -> str:
    return status.split(":", 1)[0]


def case_table(cases: list[BackendCase] | None = None) -> str:
    """Markdown table of every backend case at each opt level, with totals."""
    cases = backend_cases() if cases is None else cases
    header = "| case | opset | operators | " + " | ".join(f"O{level}" for level in LEVELS) + " |"
    lines = [header, "|---|---|---|" + "---|" * len(LEVELS)]
    totals = {level: {"pass": 0, "fail": 0, "unsupported": 0, "no-lowering": 0}
              for level in LEVELS}
    for case in cases:
        opset, operators = case_operators(case)
        statuses = [run_case(case, level) for level in LEVELS]
        for level, status in zip(LEVELS, statuses, strict=True):
            totals[level][_short(status)] += 1
        cells = " | ".join(_short(s) for s in statuses)
        lines.append(f"| {case.id} | {opset} | {', '.join(operators)} | {cells} |")
    lines.append("")
    for level in LEVELS:
        counts = totals[level]
        rate = counts["pass"] / max(len(cases), 1)
        lines.append(f"- O{level}: {counts['pass']} pass, {counts['fail']} fail, "
                     f"{counts['unsupported']} unsupported, {counts['no-lowering']} not yet "
                     f"lowered by the CPU backend, of {len(cases)} ({rate:.1%} pass)")
    return "\n".join(lines)


def rewrite(text: str, section: str, body: str) -> str:
    """`text` with the generated `section` replaced by `body`."""
    begin, end = _MARKERS[section]
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise EmberError(f"the document has no {begin} ... {end} section")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ember.onnx.support",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the tables, write nothing")
    parser.add_argument("--doc", default=os.path.normpath(DOC_PATH), help="the file to rewrite")
    args = parser.parse_args(argv)
    operators, cases = operator_table(), case_table()
    if args.print:
        print(operators + "\n\n" + cases)
        return 0
    with open(args.doc, encoding="utf-8") as handle:
        text = handle.read()
    text = rewrite(rewrite(text, "operators", operators), "cases", cases)
    with open(args.doc, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
