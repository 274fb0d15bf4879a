"""Running one program at every opt level and checking it against the numpy oracle.

`check_functions` is what a fuzzer worker and a reproducer script both run: compile the traced
function at each level, call it twice, and check the results (values within the oracle's
tolerance, inputs not mutated, both calls bit for bit equal, no output sharing memory with
another output, an input or the other call's outputs). An `EmberError` is Ember refusing the
program on purpose: counted as a refusal, and a finding only when another level accepts it.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import ember
import ember.nn.functional as F
from ember.testing import _oracle as O
from ember.testing._program import Program

TRIALS = 6  # noisy runs of the reference that measure the program's conditioning
KINDS = ("mismatch", "crash", "timeout", "error", "refusal", "mutation", "nondeterminism",
         "aliasing")


@dataclass
class Finding:
    kind: str  # one of KINDS
    levels: tuple[int, ...]
    detail: str

    def __str__(self) -> str:
        levels = ",".join(map(str, self.levels)) or "-"
        return f"{self.kind} at level {levels}: {self.detail}"


@dataclass
class Outcome:
    findings: list[Finding] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # one line per refused program
    compiles: int = 0


def namespace(consts: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"np": np, "ember": ember, "F": F, "O": O, "inf": math.inf, "nan": math.nan, **consts}


def functions(program: Program) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The traced function and the numpy reference of a program, from their sources."""
    ns = namespace({i.name: i.array for i in program.inputs if i.const})
    exec(compile(program.ember_source(), "<fuzz program>", "exec"), ns)
    exec(compile(program.numpy_source(), "<fuzz reference>", "exec"), ns)
    return ns["program"], ns["reference"]


def check_program(program: Program, levels: Sequence[int], progress=None,
                  target: str = "cpu") -> Outcome:
    fn, reference = functions(program)
    inputs = [(i.name, i.dt, i.array, i.const) for i in program.inputs]
    return check_functions(fn, reference, inputs, [program.dtype(o) for o in program.outputs],
                           levels, program.signed_zeros, progress, target)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _results(value: Any) -> list[Any]:
    return list(value) if isinstance(value, tuple) else [value]


def _short(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)[-2:]
    where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames)
    return f"{type(err).__name__}: {str(err)[:300]} [{where}]"


def check_functions(fn: Callable[..., Any], reference: Callable[..., Any],
                    inputs: Sequence[tuple[str, str, np.ndarray, bool]], out_dtypes: Sequence[str],
                    levels: Sequence[int], signed_zeros: bool, progress=None,
                    target: str = "cpu") -> Outcome:
    """Compile `fn` at each level and compare with `reference` (see the module docstring)."""
    outcome = Outcome()
    held = [O.rep(array, dt) for _, dt, array, _ in inputs]
    with O.noise(None):
        refs = [np.asarray(r) for r in reference(*held)]
    trials = []
    for seed in range(TRIALS):
        with O.noise(seed):
            trials.append([np.asarray(r) for r in reference(*[h.copy() for h in held])])
    args = [array for _, _, array, const in inputs if not const]
    refused: dict[int, str] = {}
    accepted: list[int] = []
    for level in levels:
        if progress:
            progress(level)
        try:
            arrays = [array for _, _, array, _ in inputs]  # arguments and captured constants
            before = [a.copy() for a in arrays]
            exe = ember.compile(fn, *args, opt_level=level, target=target)
            outcome.compiles += 1
            first = _results(exe(*args))
            saved = [np.array(r, copy=True) for r in first]
            mutated = [inputs[i][0] for i, (a, b) in enumerate(zip(arrays, before, strict=True))
                       if not _same_bits(a, b)]
            second = _results(exe(*args))
        except ember.EmberError as err:
            refused[level] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            continue
        except Exception as err:
            outcome.findings.append(Finding("error", (level,), _short(err)))
            continue
        accepted.append(level)
        if mutated:
            outcome.findings.append(Finding("mutation", (level,), f"inputs {mutated} changed"))
        problems = _compare(first, saved, second, args, refs, trials, out_dtypes, signed_zeros)
        for kind, detail in problems:
            outcome.findings.append(Finding(kind, (level,), detail))
    if refused and accepted:
        text = "; ".join(f"level {lv}: {msg}" for lv, msg in refused.items())
        outcome.findings.append(Finding("refusal", tuple(refused),
                                        f"accepted at {accepted}, refused at {text}"))
    elif refused:
        outcome.refusals.append(next(iter(refused.values())))
    return _merge(outcome)


def _compare(first, saved, second, args, refs, trials, out_dtypes, signed_zeros):
    problems = []
    if len(first) != len(refs):
        return [("mismatch", f"{len(first)} outputs, expected {len(refs)}")]
    for i, (out, ref, dt) in enumerate(zip(first, refs, out_dtypes, strict=True)):
        why = O.compare(out, ref, [t[i] for t in trials], dt, signed_zeros)
        if why:
            problems.append(("mismatch", f"output {i} ({dt}{list(ref.shape)}): {why}"))
            continue
        if not _same_bits(out, saved[i]):
            problems.append(("aliasing", f"output {i} of the first call changed during the second"))
        elif not _same_bits(second[i], saved[i]):
            problems.append(("nondeterminism", f"output {i} differs between two calls"))
    arrays = [r for r in first if isinstance(r, np.ndarray)]
    for i, a in enumerate(arrays):
        others = [("output", j, b) for j, b in enumerate(arrays) if j > i]
        others += [("input", j, b) for j, b in enumerate(args)]
        others += [("second-call output", j, b) for j, b in enumerate(second)
                   if isinstance(b, np.ndarray)]
        for what, j, b in others:
            if a.size and b.size and np.shares_memory(a, b):
                problems.append(("aliasing", f"output {i} shares memory with {what} {j}"))
    return problems


def _merge(outcome: Outcome) -> Outcome:
    """One finding per kind and detail, listing every level that shows it."""
    merged: dict[tuple[str, str], Finding] = {}
    for finding in outcome.findings:
        key = (finding.kind, finding.detail)
        if key in merged:
            merged[key].levels = tuple(sorted(set(merged[key].levels) | set(finding.levels)))
        else:
            merged[key] = Finding(finding.kind, finding.levels, finding.detail)
    outcome.findings = list(merged.values())
    return outcome


def run_reproducer(fn: Callable[..., Any], reference: Callable[..., Any],
                   inputs: Sequence[tuple[str, str, np.ndarray, bool]], out_dtypes: Sequence[str],
                   levels: Sequence[int] = (0, 1, 2, 3), signed_zeros: bool = False) -> int:
    """What a reproducer script runs: the fuzzer's checks in this process; 1 on any finding."""
    import warnings

    warnings.simplefilter("ignore")
    outcome = check_functions(fn, reference, inputs, out_dtypes, levels, signed_zeros,
                              progress=lambda level: print(f"level {level} ...", flush=True))
    for finding in outcome.findings:
        print(finding)
    for line in outcome.refusals:
        print(f"refused at every level: {line}")
    print("reproduced" if outcome.findings else "no finding")
    return 1 if outcome.findings else 0
