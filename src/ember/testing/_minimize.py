"""Shrinking a failing program, and writing it as a standalone reproducer script.

Delta debugging over the program: keep only one of its outputs; cut statements, each replaced
by a new input that holds the reference's value of it (so what follows computes the same
thing); then simplify input values (ones, zeros, fewer digits) and shapes (first element of an
axis). A candidate is kept when it still shows a finding of the same kind at one of the same
levels. Every candidate runs in a worker process, so a crashing program shrinks too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ember.testing import _oracle as O
from ember.testing._check import Finding
from ember.testing._program import GLOBALS, Input, Program


def values(program: Program) -> dict[str, np.ndarray]:
    """The reference's value of every input and statement (no noise)."""
    env = {i.name: O.rep(i.array, i.dt) for i in program.inputs}
    with O.noise(None):
        for op in program.ops:
            env[op.name] = np.asarray(eval(op.numpy, GLOBALS, dict(env)))
    return env


def cut(program: Program, name: str, value: np.ndarray) -> Program:
    """`program` with statement `name` replaced by an input holding `value`."""
    op = next(o for o in program.ops if o.name == name)
    inputs = [*program.inputs, Input(name, op.dt, O.actual(value, op.dt))]
    ops = [o for o in program.ops if o.name != name]
    return replace(program, inputs=inputs, ops=ops).pruned()


def _simpler_arrays(array: np.ndarray) -> list[np.ndarray]:
    if array.dtype == np.bool_:
        return [np.ones_like(array)] if not array.all() else []
    variants = [np.ones_like(array), np.zeros_like(array)]
    if array.dtype.kind == "f":
        with np.errstate(all="ignore"):
            special = ~np.isfinite(array) | (array == 0) | (np.abs(array) < 1e-30) | \
                (np.abs(array) > 1e30)
            variants.append(np.where(special, array, np.ones_like(array)))
            variants.append(np.where(special, array, np.round(array, 1)).astype(array.dtype))
    return [v for v in variants if not np.array_equal(v, array, equal_nan=True)]


def _smaller_shapes(program: Program) -> list[Program]:
    """Elementwise-only programs: every input keeps the first element of one axis."""
    out = []
    if not all(op.ember.count("(") <= 1 and "reshape" not in op.ember and "[" not in op.ember
               for op in program.ops):
        return out
    ranks = {len(i.array.shape) for i in program.inputs}
    for axis in range(max(ranks, default=0)):
        inputs = []
        for item in program.inputs:
            shape = item.array.shape
            at = axis - (max(ranks) - len(shape))
            if at < 0 or shape[at] <= 1:
                inputs.append(item)
            else:
                index = tuple(slice(0, 1) if i == at else slice(None) for i in range(len(shape)))
                inputs.append(replace(item, array=np.ascontiguousarray(item.array[index])))
        if any(a.array.shape != b.array.shape for a, b in zip(inputs, program.inputs,
                                                              strict=True)):
            out.append(replace(program, inputs=inputs))
    return out


def minimize(pool, program: Program, finding: Finding, *, seconds: float = 60.0,
             runs: int = 80, log: Callable[[str], None] = print) -> tuple[Program, Finding]:
    """The smallest program found that still shows `finding` (at most `runs` candidates), and
    the finding as that program shows it."""
    start, count = time.monotonic(), 0
    shown = [finding]
    saved_levels = pool.levels
    if finding.kind not in ("refusal",) and finding.levels:
        pool.levels = tuple(sorted(set(finding.levels)))

    def fails(candidate: Program) -> bool:
        nonlocal count
        if count >= runs or time.monotonic() - start > seconds:
            return False
        count += 1
        try:
            for _, _, outcome in pool.run(iter([(0, candidate)])):
                for f in outcome.findings:
                    if f.kind == finding.kind and (not finding.levels or not f.levels
                                                   or set(f.levels) & set(finding.levels)):
                        shown.append(f)
                        return True
        except Exception:
            return False
        return False

    best = program
    try:
        if len(best.outputs) > 1:
            for output in dict.fromkeys(best.outputs):
                candidate = replace(best, outputs=[output]).pruned()
                if fails(candidate):
                    best = candidate
                    break
        for op in best.ops[:-1]:  # the first statement from which the finding shows
            candidate = replace(best, outputs=[op.name]).pruned()
            if fails(candidate):
                best = candidate
                break
        changed = True
        while changed:
            changed = False
            env = values(best)
            for op in reversed(best.ops):
                candidate = cut(best, op.name, env[op.name])
                if fails(candidate):
                    best, changed = candidate, True
                    break
        for candidate in _smaller_shapes(best):
            if fails(candidate):
                best = candidate
        for index, item in enumerate(best.inputs):
            for array in _simpler_arrays(item.array):
                inputs = list(best.inputs)
                inputs[index] = replace(item, array=array)
                candidate = replace(best, inputs=inputs)
                if fails(candidate):
                    best = candidate
                    break
    finally:
        pool.levels = saved_levels
    log(f"fuzz: minimized {program.label}: {len(program.ops)} -> {len(best.ops)} statements "
        f"({count} runs, {time.monotonic() - start:.0f} s)")
    return best, shown[-1] if best is not program else finding


def _array_source(item: Input) -> str:
    array = np.ascontiguousarray(item.array)
    dtype = array.dtype.str
    return (f'{item.name} = _array("{array.tobytes().hex()}", "{dtype}", '
            f"{tuple(array.shape)})  # {item.dt}")


def reproducer(program: Program, finding: Finding, levels: Sequence[int]) -> str:
    """A standalone script that exits with status 1 while `finding` reproduces."""
    detail = str(finding).replace('"""', "'''")
    inputs = ", ".join(f'("{i.name}", "{i.dt}", {i.name}, {i.const})' for i in program.inputs)
    outputs = ", ".join(f'"{program.dtype(o)}"' for o in program.outputs)
    lines = [
        "#!/usr/bin/env python3",
        f'"""Ember fuzz finding ({program.label}): {finding.kind}.',
        "",
        detail,
        "",
        "`program` is the traced function, `reference` the same program in numpy (float64, with",
        "every float result rounded to the program's dtype by O.rnd). Exits with status 1 while",
        'the finding reproduces."""',
        "",
        "import math",
        "",
        "import numpy as np",
        "",
        "import ember",
        "import ember.nn.functional as F",
        "from ember.testing import _oracle as O",
        "from ember.testing._check import run_reproducer",
        "",
        "inf, nan = math.inf, math.nan",
        "",
        "",
        "def _array(data, dtype, shape):",
        "    return np.frombuffer(bytes.fromhex(data), dtype=dtype).reshape(shape).copy()",
        "",
        "",
        *[_array_source(i) for i in program.inputs],
        "",
        "",
        program.ember_source().rstrip(),
        "",
        "",
        program.numpy_source().rstrip(),
        "",
        "",
        'if __name__ == "__main__":',
        f"    raise SystemExit(run_reproducer(program, reference, [{inputs}], [{outputs}],",
        f"                                    levels={tuple(levels)!r}, "
        f"signed_zeros={program.signed_zeros}))",
        "",
    ]
    return "\n".join(lines)
