"""Differential fuzzing of Ember: random programs at every opt level against numpy.

    python -m ember.testing.fuzz [--seed S] [--seconds T | --programs N] [--jobs J]
                                 [--levels 0,1,2,3] [--out DIR] [--verbose]

Each program is drawn from one random description and written twice: as a traced Python
function over Ember's public API (operators, tensor methods, numpy functions on tensors,
`ember.*`, `ember.nn.functional`) and as plain numpy in float64, or in the integer dtype where
integer semantics matter (`ember.testing._generate`). Inputs include NaN, infinities, -0.0,
subnormal and huge values, size-1, odd and empty shapes. `ember.compile(fn, *inputs,
opt_level=L)` runs at every level and each result must match the numpy reference within the
tolerance the program's own conditioning allows (`ember.testing._oracle`); integers, bools and
shape ops match exactly, NaN positions always, signed zeros where the program defines them.
Inputs must not change, two calls must agree bit for bit, and no output may share memory with
another output, an input, or the outputs of the next call.

Programs run in worker processes (a fresh one every few dozen programs), so a crash or a hang
is a finding and the run goes on. Every finding is minimized (`ember.testing._minimize`) to a
standalone script in `--out` that exits with status 1 while the finding reproduces. Programs
that Ember refuses with an `EmberError` at every level are counted and listed; one refused at
some levels and accepted at others is a finding. Exit status: 1 if there was any finding.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait

import numpy as np

from ember.errors import EmberError
from ember.target import Target
from ember.testing._check import Finding, Outcome
from ember.testing._generate import generate
from ember.testing._program import Program

RECYCLE = 40  # programs per worker process before a fresh one takes over
TIMEOUT = 120.0  # seconds one program may take at all levels together


# -- worker processes ------------------------------------------------------------------------------


def _worker(conn, initializer: str | None, target: str = "cpu") -> None:
    """Run programs sent over `conn` until told to stop (None)."""
    import warnings

    os.environ.setdefault("EMBER_CACHE", "0")  # random programs would only fill the cache
    warnings.simplefilter("ignore")
    from ember.testing._check import check_program

    if initializer:
        _load(initializer)()
    while True:
        job = conn.recv()
        if job is None:
            return
        program, levels = job
        try:
            outcome = check_program(program, levels, progress=lambda lv: conn.send(("level", lv)),
                                    target=target)
        except Exception as err:  # the harness itself failed: report it, keep the worker
            outcome = Outcome([Finding("error", (), f"fuzzer: {type(err).__name__}: {err}")])
        conn.send(("done", outcome))


def _load(spec: str) -> Callable[[], None]:
    """The function `spec` names: "package.module:function" or "path/to/file.py:function"."""
    import importlib
    import importlib.util

    where, _, name = spec.rpartition(":")
    if where.endswith(".py"):
        loader = importlib.util.spec_from_file_location("_fuzz_initializer", where)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


@dataclass
class _Slot:
    process: multiprocessing.process.BaseProcess
    conn: object
    done: int = 0
    job: tuple | None = None  # (key, program, started)
    level: int | None = None  # the level the worker last started


class Pool:
    """Worker processes that run programs, each under a timeout; a crash costs one process."""

    def __init__(self, jobs: int, levels: Sequence[int], timeout: float = TIMEOUT,
                 initializer: str | None = None, target: str = "cpu") -> None:
        self.context = multiprocessing.get_context(
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        self.jobs, self.levels, self.timeout = max(1, jobs), tuple(levels), timeout
        self.initializer = initializer
        self.target = target
        self.slots: list[_Slot | None] = [None] * self.jobs

    def _start(self) -> _Slot:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child, self.initializer, self.target),
                                       daemon=True)
        process.start()
        child.close()
        return _Slot(process, parent)

    def _stop(self, index: int, kill: bool = False) -> None:
        slot = self.slots[index]
        self.slots[index] = None
        if slot is None:
            return
        if kill:
            slot.process.kill()
        else:
            with contextlib.suppress(OSError):
                slot.conn.send(None)
        slot.process.join(5)
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join()
        slot.conn.close()

    def close(self) -> None:
        for index in range(self.jobs):
            self._stop(index)

    def run(self, jobs: Iterator[tuple[object, Program]]) -> Iterator[tuple[object, Program,
                                                                             Outcome]]:
        """Run every (key, program) of `jobs`; yield (key, program, outcome) as they finish."""
        pending = iter(jobs)
        exhausted = False
        while True:
            for index in range(self.jobs):
                slot = self.slots[index]
                if exhausted or (slot is not None and slot.job is not None):
                    continue
                nxt = next(pending, None)
                if nxt is None:
                    exhausted = True
                    continue
                if slot is None:
                    slot = self.slots[index] = self._start()
                slot.job = (nxt[0], nxt[1], time.monotonic())
                slot.level = None
                slot.conn.send((nxt[1], self.levels))
            busy = [s for s in self.slots if s is not None and s.job is not None]
            if not busy:
                return
            deadline = min(s.job[2] for s in busy) + self.timeout
            ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy],
                         timeout=max(0.0, deadline - time.monotonic()))
            for index, slot in enumerate(self.slots):
                if slot is None or slot.job is None:
                    continue
                result = self._collect(index, slot, ready)
                if result is not None:
                    yield result

    def _collect(self, index: int, slot: _Slot, ready: list) -> tuple | None:
        key, program, started = slot.job
        outcome = None
        if slot.conn in ready or slot.process.sentinel in ready:
            try:
                while slot.conn.poll():
                    tag, value = slot.conn.recv()
                    if tag == "level":
                        slot.level = value
                    else:
                        outcome = value
            except (EOFError, OSError):
                pass
            if outcome is None and not slot.process.is_alive():
                code = slot.process.exitcode
                why = (f"signal {signal.Signals(-code).name}" if code and code < 0
                       else f"exit status {code}")
                levels = () if slot.level is None else (slot.level,)
                outcome = Outcome([Finding("crash", levels, f"the worker died ({why})")])
                self._stop(index, kill=True)
                return key, program, outcome
        if outcome is None and time.monotonic() - started > self.timeout:
            levels = () if slot.level is None else (slot.level,)
            outcome = Outcome([Finding("timeout", levels,
                                       f"no result after {self.timeout:.0f} s")])
            self._stop(index, kill=True)
            return key, program, outcome
        if outcome is None:
            return None
        slot.job = None
        slot.done += 1
        if slot.done >= RECYCLE:
            self._stop(index)
        return key, program, outcome


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Summary:
    seed: int
    programs: int = 0
    compiles: int = 0
    findings: list[tuple[str, Finding, str]] = field(default_factory=list)  # label, finding, file
    refusals: Counter = field(default_factory=Counter)

    def count(self, *kinds: str) -> int:
        return sum(1 for _, f, _ in self.findings if f.kind in kinds)

    def line(self) -> str:
        counts = Counter(f.kind for _, f, _ in self.findings)
        other = "".join(f", {n} {k}" for k, n in sorted(counts.items())
                        if k not in ("mismatch", "crash"))
        return (f"fuzz: seed {self.seed}: {self.programs} programs, {self.compiles} compiles, "
                f"{counts['mismatch']} mismatches, {counts['crash']} crashes{other}, "
                f"{sum(self.refusals.values())} refused")


def program_for(seed: int, index: int) -> Program:
    """Program `index` of a seed: the same on every machine and in every run."""
    program = generate(np.random.default_rng([seed, index]))
    program.label = f"seed {seed} program {index}"
    return program


def run(seed: int, *, seconds: float | None = None, programs: int | None = None, jobs: int = 1,
        levels: Sequence[int] = (0, 1, 2, 3), out: str | None = None, minimize: int = 8,
        minimize_runs: int = 80, minimize_seconds: float = 120.0,
        verbose: bool = False, initializer: str | None = None, timeout: float = TIMEOUT,
        first: int = 0, log: Callable[[str], None] = print, target: str = "cpu") -> Summary:
    """Fuzz for `seconds` or `programs` (whichever ends first); findings are minimized to
    reproducers under `out` (the first `minimize` of them, with at most `minimize_runs`
    candidates each, all of them within `minimize_seconds`). `initializer` ("module:function"
    or "file.py:function") runs in each worker before any program: tests use it to plant a
    bug. `target`: what every level compiles for ("cpu", "cpu:x86-64-v3", ...)."""
    from ember.testing import _minimize

    summary = Summary(seed)
    start = time.monotonic()
    stop_at = start + seconds if seconds is not None else None
    pool = Pool(jobs, levels, timeout, initializer, target)
    failing: list[tuple[Program, Finding]] = []

    def jobs_iter():
        index = first
        while (programs is None or index < first + programs) and (
                stop_at is None or time.monotonic() < stop_at):
            yield index, program_for(seed, index)
            index += 1

    last_report = start
    try:
        for _, program, outcome in pool.run(jobs_iter()):
            summary.programs += 1
            summary.compiles += outcome.compiles
            for line in outcome.refusals:
                summary.refusals[line] += 1
            for finding in _by_kind(outcome.findings):
                failing.append((program, finding))
                log(f"fuzz: {program.label}: {finding}")
                summary.findings.append((program.label, finding, ""))
            if verbose:
                log(f"fuzz: {program.label}: {len(program.ops)} ops, "
                    f"{'ok' if not outcome.findings else 'FINDING'}")
            now = time.monotonic()
            if now - last_report >= 10:
                last_report = now
                rate = summary.programs / (now - start)
                log(f"{summary.line()} ({rate:.1f} programs/s, {now - start:.0f} s)")
        summary.findings = []
        written: dict[tuple[str, str], str] = {}
        shrink_start = time.monotonic()
        for number, (program, finding) in enumerate(failing):
            left = minimize_seconds - (time.monotonic() - shrink_start)
            if number < minimize and left > 1:
                program, finding = _minimize.minimize(pool, program, finding,
                                                      seconds=min(60.0, left),
                                                      runs=minimize_runs, log=log)
            key = (finding.kind, program.ember_source())
            if key in written:
                log(f"fuzz: {program.label} minimizes to the reproducer {written[key]}")
                summary.findings.append((program.label, finding, written[key]))
                continue
            if out is None:  # made only when there is something to put in it
                out = tempfile.mkdtemp(prefix="ember-fuzz-")
            os.makedirs(out, exist_ok=True)
            index = program.label.rsplit(" ", 1)[-1]
            path = written[key] = os.path.join(out, f"fuzz_{seed}_{index}_{finding.kind}.py")
            with open(path, "w") as handle:
                handle.write(_minimize.reproducer(program, finding, levels))
            summary.findings.append((program.label, finding, path))
            log(f"fuzz: reproducer {path} ({finding}):")
            log(program.ember_source().rstrip())
    finally:
        pool.close()
    if summary.refusals:
        log("fuzz: programs Ember refused at every level (not findings):")
        for line, n in summary.refusals.most_common(10):
            log(f"  {n:4d} x {line}")
    return summary


def _by_kind(findings: list[Finding]) -> list[Finding]:
    """One finding per kind for a program: the levels of all, the detail of the first."""
    merged: dict[str, Finding] = {}
    for finding in findings:
        first = merged.get(finding.kind)
        if first is None:
            merged[finding.kind] = Finding(finding.kind, finding.levels, finding.detail)
        else:
            first.levels = tuple(sorted(set(first.levels) | set(finding.levels)))
    return list(merged.values())


def _parse_levels(text: str) -> tuple[int, ...]:
    levels = tuple(int(t) for t in text.split(",") if t.strip())
    if not levels or any(lv not in (0, 1, 2, 3) for lv in levels):
        raise argparse.ArgumentTypeError(f"levels must be among 0,1,2,3, got {text!r}")
    return levels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ember.testing.fuzz",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    parser.add_argument("--seconds", type=float, default=None, help="stop starting programs")
    parser.add_argument("--programs", type=int, default=None, help="how many (default 100 "
                        "when --seconds is not given)")
    parser.add_argument("--first", type=int, default=0, help="index of the first program "
                        "(--first 228 --programs 1 reruns 'seed S program 228')")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="worker processes (default: the CPUs this process may use)")
    parser.add_argument("--levels", type=_parse_levels, default=(0, 1, 2, 3))
    parser.add_argument("--out", default=None, help="directory for reproducers (default: a "
                        "new temporary directory, made when there is a finding)")
    parser.add_argument("--minimize", type=int, default=8, help="findings to minimize")
    parser.add_argument("--minimize-seconds", type=float, default=120.0,
                        help="time for minimizing, all findings together")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per program")
    parser.add_argument("--target", default="cpu", help="compile for this target: cpu (the "
                        "host), cpu:x86-64-v3 (AVX2 code, runs on any AVX2 host), cpu:NAME")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        ember_target = Target.parse(args.target)
    except EmberError as err:
        parser.error(str(err))
    if ember_target.missing_on_host():
        parser.error(f"code for {ember_target} cannot run on this host")
    seed = args.seed if args.seed is not None else int(time.time())
    programs = args.programs if args.programs is not None or args.seconds else 100
    again = f" --target {args.target}" if args.target != "cpu" else ""
    print(f"fuzz: seed {seed} (rerun: python -m ember.testing.fuzz --seed {seed}{again}), "
          f"{args.jobs} jobs, levels {','.join(map(str, args.levels))}, target "
          f"{ember_target.describe()}", flush=True)
    summary = run(seed, seconds=args.seconds, programs=programs, jobs=args.jobs,
                  levels=args.levels, out=args.out, minimize=args.minimize,
                  minimize_seconds=args.minimize_seconds,
                  verbose=args.verbose, timeout=args.timeout, first=args.first,
                  log=lambda text: print(text, flush=True), target=args.target)
    print(summary.line(), flush=True)
    return 1 if summary.findings else 0


if __name__ == "__main__":
    sys.exit(main())
