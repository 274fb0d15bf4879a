"""The ONNX node test suite run through Ember: pass, wrong, refused or error for every case.

    python -m ember.onnx.conformance                                 # print the table
    python -m ember.onnx.conformance --write docs/onnx-conformance.md
    python -m ember.onnx.conformance --levels 0 --cases test_pad     # names containing "test_pad"

The suite is the one the installed onnx package generates (`onnx.backend.test.case.node.
collect_testcases()`): one small model per case with inputs and the outputs that onnx's own
numpy implementation computed, independent of Ember. Each case is imported with
`ember.onnx.load` once, then compiled with `ember.compile` and run at each opt level. A case

- passes when every output has the expected shape and dtype and its values are close (the
  case's rtol and atol, or a looser pair from TOLERANCES with its reason; bfloat16 within one
  of its units in the last place, BF16_RTOL; NaNs in the same places, infinities equal);
- is wrong when it runs and an output differs;
- is refused when Ember stops it with an EmberError (an operator, version, element type or
  attribute it does not handle), grouped by a reason that names the operator, type or opset;
- is an error when anything else is raised: a bug to fix.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import time
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ember.errors import EmberError, LoweringError, UnsupportedError

LEVELS = (0, 3)
# Cases whose expected outputs need a looser tolerance than the case's own: name -> (rtol,
# atol). Each entry says why.
TOLERANCES: dict[str, tuple[float, float]] = {
    # The expected output comes from numpy's single-precision FFT: its outputs near zero carry
    # about 1.5e-6 of absolute error against a float64 FFT (Ember's, computed in f64: 4.4e-7,
    # its f32 rounding of values up to 54), beyond the case's atol of 1e-7.
    "test_dft_inverse_opset19": (1e-3, 5e-6),
    "test_dft_inverse": (1e-3, 5e-6),  # the same data, with the axis as an input
}

# bfloat16 outputs are compared as floats within one bf16 unit in the last place relative
# (8 significant bits: 2^-7), or the case's rtol if looser: a result computed in f32 and
# rounded once may round the other way from a reference that rounds after every step.
BF16_RTOL = 2.0**-7

STATUSES = ("pass", "wrong", "refused", "error")
# The test runs level 3 (a native compile per case) on every SAMPLE-th case by a hash of its
# name: a deterministic fifth of the suite. Level 0 runs in full.
SAMPLE = 5


def in_sample(name: str) -> bool:
    """Whether the case named `name` is in the test's deterministic level-3 sample."""
    return zlib.crc32(name.encode()) % SAMPLE == 0


@dataclass(frozen=True)
class Outcome:
    """One case at one opt level."""

    case: str  # the case name, `test_abs`
    level: int  # opt level
    status: str  # one of STATUSES
    reason: str = ""  # refused: the group it counts in; wrong and error: what differed
    detail: str = ""  # the full message
    seconds: float = 0.0  # compile and run (import excluded)


@functools.cache
def node_cases() -> tuple[Any, ...]:
    """The node test cases of the installed onnx package, sorted by name."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():  # generating the data warns about its own casts
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return tuple(sorted((c for c in cases if c.kind == "node"), key=lambda c: c.name))


# ---------------------------------------------------------------------------------------------
# Running one case.


def _array(value: Any, what: str) -> np.ndarray:
    """A case's tensor as numpy; UnsupportedError for element types numpy cannot hold."""
    if isinstance(value, onnx.TensorProto):
        try:
            return numpy_helper.to_array(value)
        except Exception as err:
            raise UnsupportedError(f"{what}: ONNX element type "
                                   f"{onnx.TensorProto.DataType.Name(value.data_type)} cannot "
                                   f"be read as numpy ({err})") from None
    return np.asarray(value)


def _value(value: Any, what: str) -> Any:
    """A case's input or expected output: an array, a list of arrays (a sequence) or None
    (an empty optional)."""
    if value is None:
        return None
    if isinstance(value, list):
        return [_array(v, f"{what}[{i}]") for i, v in enumerate(value)]
    return _array(value, what)


def compare(results: Sequence[np.ndarray], expected: Sequence[np.ndarray], rtol: float,
            atol: float) -> str:
    """Why `results` do not match `expected` ("" when they do)."""
    if len(results) != len(expected):
        return f"{len(results)} outputs, expected {len(expected)}"
    for index, (got, want) in enumerate(zip(results, expected, strict=True)):
        if isinstance(want, list) or isinstance(got, list):
            if not (isinstance(want, list) and isinstance(got, list)):
                return f"output {index}: a sequence and a tensor"
            if len(got) != len(want):
                return f"output {index}: a sequence of {len(got)}, expected {len(want)}"
            why = compare(got, want, rtol, atol)
            if why:
                return f"output {index} (a sequence): {why}"
            continue
        got = np.asarray(got)
        if got.shape != want.shape or got.dtype != want.dtype:
            return (f"output {index} is {got.dtype}{list(got.shape)}, expected "
                    f"{want.dtype}{list(want.shape)}")
        if want.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: a float numpy does not know
            got, want = got.astype(np.float32), want.astype(np.float32)
            rtol = max(rtol, BF16_RTOL)
        if want.dtype.kind not in "fc":
            if not np.array_equal(got, want):
                return f"output {index}: {int(np.sum(got != want))} elements differ"
            continue
        if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            finite = np.isfinite(got) & np.isfinite(want)
            if not np.array_equal(np.isnan(got), np.isnan(want)):
                return f"output {index}: NaNs in different places"
            error = np.max(np.abs(got[finite].astype(np.float64) - want[finite]), initial=0.0)
            return f"output {index}: max abs error {error:.3g} (rtol {rtol:g}, atol {atol:g})"
    return ""


def run_case(case: Any, levels: Iterable[int] = LEVELS) -> list[Outcome]:
    """The outcome of one node test case at each opt level (imported once, compiled per level)."""
    import ember
    from ember.onnx.loader import load

    levels = tuple(levels)
    inputs_data, expected_data = case.data_sets[0]
    try:
        inputs = [_value(v, f"input {i}") for i, v in enumerate(inputs_data)]
        expected = [_value(v, f"expected output {i}") for i, v in enumerate(expected_data)]
        if any(e is None for e in expected):
            raise UnsupportedError("an expected output is an empty optional; Ember returns "
                                   "tensors")
        names = _input_names(case.model)
        values = dict(zip(names, inputs, strict=False))
        model = load(case.model, **_boundary(case.model, values))
    except EmberError as err:
        return [_refused(case.name, level, err) for level in levels]
    except Exception as err:
        return [_error(case.name, level, err) for level in levels]
    rtol, atol = TOLERANCES.get(case.name, (case.rtol, case.atol))
    outcomes = []
    for level in levels:
        start = time.perf_counter()
        try:
            with np.errstate(all="ignore"):
                model, args = _bound(case, model, values)
                result = model.results(ember.compile(model, *args, opt_level=level)(*args))
        except EmberError as err:
            outcomes.append(_refused(case.name, level, err))
            continue
        except Exception as err:
            outcomes.append(_error(case.name, level, err))
            continue
        seconds = time.perf_counter() - start
        why = compare(result, expected, rtol, atol)
        status = "wrong" if why else "pass"
        outcomes.append(Outcome(case.name, level, status, why, why, seconds))
    return outcomes


def _input_names(model: onnx.ModelProto) -> list[str]:
    initializers = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in initializers]


def _boundary(model: onnx.ModelProto, values: dict[str, Any]) -> dict[str, Any]:
    """load()'s arguments for the case's sequence inputs (their lengths) and empty optional
    inputs (bound to None)."""
    sequences = {name: len(v) for name, v in values.items() if isinstance(v, list)}
    absent = {name: None for name, v in values.items() if v is None}
    return {"sequences": sequences, "constants": absent}


def _bound(case: Any, model: Any, values: dict[str, Any]) -> tuple[Any, list[Any]]:
    """`model` with the graph inputs behind the values its converters need at import time
    bound to the case's values (`load(..., constants=...)`, as a user of a static-shape
    compiler does for an input that sets a shape, axes or pads), and the arguments left to
    pass."""
    from ember.frontend.tracer import trace
    from ember.onnx.converters.base import NeedsKnownValue
    from ember.onnx.loader import load

    boundary = _boundary(case.model, values)
    while True:
        args = model.arguments(values)
        try:
            trace(model, *args)
            return model, args
        except NeedsKnownValue as err:
            behind = model.inputs_behind(err.value_name)
            if not behind:
                raise
            constants = dict(model.constants) | boundary["constants"]
            constants |= {name: values[name] for name in behind}
            model = load(case.model, constants=constants, sequences=boundary["sequences"])


def _refused(name: str, level: int, err: EmberError) -> Outcome:
    message = str(err)
    return Outcome(name, level, "refused", refusal_reason(message, err), message)


def _error(name: str, level: int, err: Exception) -> Outcome:
    message = f"{type(err).__name__}: {err}"
    return Outcome(name, level, "error", message.splitlines()[0][:200], message)


# ---------------------------------------------------------------------------------------------
# Grouping refusals.

_OPERATORS = re.compile(r"unsupported ONNX operators? at opset \d+: (.*)$", re.S)
_VERSION = re.compile(r"^(\w+) at opset \d+ \(version (\d+)\)")
_NO_SCHEMA = re.compile(r"^(\w+) at opset (\d+): ONNX has no")
_ELEMENT = re.compile(r"ONNX element type (\w+)")
_CONVERT = re.compile(r"cannot convert (\w+)(?: '[^']*')? \(inputs: .*?\): (?:\w+(?: '[^']*')?: )?"
                      r"(.*)$", re.S)


def refusal_reason(message: str, err: EmberError | None = None) -> str:
    """The group a refusal counts in: `operator: Resize`, `operator version: Cast 1`,
    `element type: FLOAT16`, `Pad: mode 'wrap' is not supported`, ..."""
    if (match := _OPERATORS.search(message)) is not None:
        listed = [_operator_of(item) for item in match.group(1).split("; ")]
        return ", ".join(sorted(set(listed)))
    if (match := _ELEMENT.search(message)) is not None:
        return f"element type: {match.group(1)}"
    if "is a sequence" in message or "sequence_type" in message:
        return "sequence values"
    if "optional" in message and ("optional_type" in message or "empty optional" in message):
        return "optional values"
    if isinstance(err, LoweringError):
        return "no CPU lowering: " + _generalize(message.splitlines()[-1])
    if (match := _CONVERT.search(message)) is not None:
        return f"{match.group(1)}: {_generalize(match.group(2))}"
    return _generalize(message)


def _operator_of(item: str) -> str:
    """`Cast at opset 5 (version 1): ... (node #0)` -> `operator version: Cast 1`;
    `Resize (nodes ...)` -> `operator: Resize`."""
    if (match := _VERSION.match(item)) is not None:
        return f"operator version: {match.group(1)} {match.group(2)}"
    if (match := _NO_SCHEMA.match(item)) is not None:
        return f"operator: {match.group(1)} (not in ONNX at opset {match.group(2)})"
    return f"operator: {item.split(' (node')[0]}"


def _generalize(text: str) -> str:
    """One line with the case-specific parts (values, shapes, names) collapsed."""
    line = text.strip().splitlines()[0] if text.strip() else text
    line = re.sub(r"^[^:]*\.onnx: |^<[^>]*>: |^test_\w+: ", "", line)
    line = re.sub(r"'[^']*'", "'…'", line)
    line = re.sub(r"\[[^\]]*\]", "[…]", line)
    line = re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", line)
    return line[:160]


# ---------------------------------------------------------------------------------------------
# The suite and its table.


def run_suite(cases: Iterable[Any] | None = None, levels: Iterable[int] = LEVELS,
              progress: bool = False) -> list[Outcome]:
    """Every case (all node cases by default) at each level."""
    cases = node_cases() if cases is None else tuple(cases)
    outcomes: list[Outcome] = []
    for index, case in enumerate(cases):
        outcomes += run_case(case, levels)
        if progress and (index + 1) % 100 == 0:
            print(f"  {index + 1}/{len(cases)} cases", file=sys.stderr, flush=True)
    return outcomes


def counts(outcomes: Iterable[Outcome]) -> dict[int, Counter[str]]:
    """level -> status -> count."""
    table: dict[int, Counter[str]] = defaultdict(Counter)
    for outcome in outcomes:
        table[outcome.level][outcome.status] += 1
    return dict(table)


def table(outcomes: Sequence[Outcome], seconds: float | None = None) -> str:
    """The markdown report: pass counts per level, wrong and error cases, refusals by reason."""
    levels = sorted({o.level for o in outcomes})
    total = len({o.case for o in outcomes})
    by_level = counts(outcomes)
    lines = [f"{total} cases of the node test suite of onnx {onnx.__version__} (opsets up to "
             f"{onnx.defs.onnx_opset_version()}).", ""]
    for level in levels:
        tally = by_level.get(level, Counter())
        lines.append(f"- level {level}: **{tally['pass']:,}** of {total:,} pass, "
                     f"{tally['wrong']} wrong, {tally['refused']:,} refused, "
                     f"{tally['error']} errors")
    sampled = sorted({o.case for o in outcomes if in_sample(o.case)})
    for level in levels:
        passes = sum(o.status == "pass" for o in outcomes
                     if o.level == level and in_sample(o.case))
        lines.append(f"- level {level}, the test's sample (1 case in {SAMPLE}): "
                     f"**{passes:,}** of {len(sampled):,} pass")
    if seconds is not None:
        lines += ["", f"The run took {seconds:.0f} s."]
    for status in ("wrong", "error"):
        bad = [o for o in outcomes if o.status == status]
        if bad:
            lines += ["", f"## {status.capitalize()}", "", "| case | level | what |",
                      "|---|---|---|"]
            lines += [f"| {o.case} | {o.level} | {_cell(o.reason)} |" for o in bad]
    lines += ["", "## Refusals by reason", "",
              "Cases refused at every level are counted once; the level column says where.", "",
              "| cases | reason | levels | examples |", "|---|---|---|---|"]
    lines += _refusal_rows(outcomes, levels)
    return "\n".join(lines) + "\n"


def _refusal_rows(outcomes: Sequence[Outcome], levels: Sequence[int]) -> list[str]:
    groups: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for outcome in outcomes:
        if outcome.status == "refused":
            groups[outcome.reason][outcome.case].add(outcome.level)
    rows = []
    for reason, cases in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        where = sorted({level for found in cases.values() for level in found})
        shown = "all" if where == list(levels) else ", ".join(str(level) for level in where)
        names = sorted(cases)
        examples = ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
        rows.append(f"| {len(cases)} | {_cell(reason)} | {shown} | {examples} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


HEADER = """# ONNX node test suite: conformance

Generated by `python -m ember.onnx.conformance --write docs/onnx-conformance.md`; checked by
`tests/onnx/test_node_suite.py`, which fails on any wrong answer or error and on a pass count
below the one recorded here. See `src/ember/onnx/conformance.py` for how a case is judged.

"""


def recorded_passes(text: str, sample: bool = False) -> dict[int, int]:
    """level -> pass count (of the whole suite, or of the test's sample), as a table written
    by `table` records them."""
    where = r", the test's sample \(1 case in \d+\)" if sample else ""
    found = re.findall(rf"^- level (\d+){where}: \*\*([\d,]+)\*\* of", text, re.M)
    return {int(level): int(count.replace(",", "")) for level, count in found}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ember.onnx.conformance",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="FILE", help="write the markdown report to FILE")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)),
                        help="opt levels, comma-separated (default 0,3)")
    parser.add_argument("--cases", default="", help="only cases whose name contains this")
    args = parser.parse_args(argv)
    levels = tuple(int(level) for level in args.levels.split(","))
    cases = [c for c in node_cases() if args.cases in c.name]
    start = time.perf_counter()
    outcomes = run_suite(cases, levels, progress=True)
    report = HEADER + table(outcomes, time.perf_counter() - start)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as handle:
            handle.write(report)
        print(f"wrote {args.write}")
    else:
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
