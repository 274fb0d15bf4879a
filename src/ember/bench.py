"""Measure a model at each optimization level, side by side with other runtimes.

    from ember.bench import bench
    result = bench(model, (x,), levels=(0, 1, 2, 3), threads=1)
    print(result.table())            # a machine line, then one row per level and peer
    result.write_json("mlp.json")    # every number

For each level the model is compiled twice: once into an empty compile cache (the cold compile
time: trace, passes, lowering, LLVM codegen) and once more into the same cache (the cached
time: the object code is read back instead of generated). Calls are timed one by one with
`time.perf_counter` after `warmup` calls; the table shows the median with min, max, p10 and p90,
and the speedup of each median over level 0's (the reference interpreter, the naive baseline).

The outputs of every level and every peer are checked against level 0: the error is
`max|y - y0| / max|y0|` over all outputs, and a row whose error exceeds `tolerance` is flagged
(`ok = False`, `FAIL` in the table). Peers run when they are installed:

- `onnxruntime`: the traced graph exported with `ember.onnx.export.to_model`, run by an
  `InferenceSession` with `intra_op_num_threads` set to the same thread count;
- `torch`: a PyTorch module (or any callable on torch tensors) the caller passes as
  `torch_model`, run eagerly under `torch.no_grad()` with `torch.set_num_threads`;
- any callable on numpy arrays passed in `peers={"numpy": fn}`.

`chart_svg` / `write_chart` draw such numbers as an SVG bar chart (hand-written SVG, one bar
per model and runner); `chart_groups(result)` gives a bench run's bars (`ember bench --plot`).

`ablate=True` compiles level 3 again once per pass of its default pipeline, leaving that one
pass out, and shows how much slower (or faster) the model runs without it.

Threads: `threads=None` reads `EMBER_NUM_THREADS`, else uses every CPU this process may run on.
The count is set on each compiled module (`threads.set_num_threads`), on ONNX Runtime and on
PyTorch; numpy's BLAS follows it only where `threadpoolctl` is installed (else it uses its own
setting, e.g. `OPENBLAS_NUM_THREADS`; the machine line says which).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DEFAULT_COMPARE = ("onnxruntime", "torch")


# -- the machine ----------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None (without importing it)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _blas_threads() -> str:
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if os.environ.get(name):
                return f"{name}={os.environ[name]}"
        return "BLAS default"
    return "threadpoolctl"


@dataclass
class Machine:
    """What the numbers were measured on; `line()` heads every table."""

    cpu: str
    cores: int
    isa: str  # host CPU, vector ISA and LLVM version, from jit.host_cpu().describe()
    python: str
    numpy: str
    onnxruntime: str | None
    torch: str | None
    threads: int
    blas_threads: str

    def line(self) -> str:
        versions = [f"numpy {self.numpy}"]
        versions += [f"{name} {version}" for name, version in
                     (("onnxruntime", self.onnxruntime), ("torch", self.torch)) if version]
        return (f"machine: {self.cpu}, {self.cores} cores, {self.isa}; Python {self.python}, "
                f"{', '.join(versions)}; threads {self.threads} (numpy: {self.blas_threads})")


def machine_info(threads: int) -> Machine:
    """The machine line's facts for a run at `threads` threads."""
    from ember.backend.llvm.jit import host_cpu

    return Machine(cpu_model(), available_cpus(), host_cpu().describe(),
                   platform.python_version(), np.__version__, package_version("onnxruntime"),
                   package_version("torch"), threads, _blas_threads())


def resolve_threads(threads: int | None) -> int:
    """The thread count to use: the argument, else EMBER_NUM_THREADS, else every CPU."""
    if threads is None:
        from ember import config

        configured = config.num_threads()
        threads = configured if configured is not None else available_cpus()
    if threads < 1:
        raise ValueError(f"the thread count must be at least 1, got {threads}")
    return threads


# -- timing ---------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds per call over `count` timed calls."""

    median: float
    min: float
    max: float
    p10: float
    p90: float
    count: int

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how noisy the calls were."""
        return (self.p90 - self.p10) / self.median if self.median > 0 else 0.0


def measure(call: Callable[[], Any], repeats: int = 20, warmup: int = 3,
            max_seconds: float | None = None) -> Timing:
    """Time `call()` one call at a time after `warmup` untimed calls.

    Stops early (after at least 3 timed calls) once `max_seconds` of timed calls have passed.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        call()
    samples: list[float] = []
    total = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
        samples.append(seconds)
        total += seconds
        if max_seconds is not None and total > max_seconds and len(samples) >= 3:
            break
    values = np.array(samples)
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return Timing(float(median), float(values.min()), float(values.max()), float(p10),
                  float(p90), len(samples))


# -- results --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: an opt level, a peer, or level 3 without one pass."""

    name: str  # "level 2", "onnxruntime", "-fuse#12"
    timing: Timing | None = None
    speedup: float | None = None  # level 0 median / this median
    error: float | None = None  # max|y - y0| / max|y0|
    ok: bool = True  # outputs within tolerance of level 0, and no failure
    failure: str = ""  # why the row has no timing (a compile error, a missing package, ...)
    arena_bytes: int | None = None
    compile_cold: float | None = None  # seconds, empty cache
    compile_cached: float | None = None  # seconds, second compile into the same cache
    level: int | None = None
    version: str | None = None


@dataclass
class BenchResult:
    """All numbers of one `bench` run."""

    name: str
    machine: Machine
    threads: int
    repeats: int
    warmup: int
    tolerance: float
    levels: list[Row] = field(default_factory=list)
    peers: list[Row] = field(default_factory=list)
    ablation: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row that ran agrees with level 0."""
        return all(row.ok for row in [*self.levels, *self.peers, *self.ablation]
                   if not row.failure)

    def level(self, opt_level: int) -> Row:
        for row in self.levels:
            if row.level == opt_level:
                return row
        raise KeyError(f"level {opt_level} was not benchmarked")

    def peer(self, name: str) -> Row:
        for row in self.peers:
            if row.name == name:
                return row
        raise KeyError(f"peer {name!r} was not benchmarked")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["machine_line"] = self.machine.line()
        data["ok"] = self.ok
        return data

    def write_json(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, indent=2)
            file.write("\n")

    def table(self, machine_line: bool = True) -> str:
        """The text table: the machine line, the levels and peers, then the ablation."""
        lines = [self.machine.line()] if machine_line else []
        lines.append(f"{self.name}: median of up to {self.repeats} calls after {self.warmup} "
                     f"warm-up calls, {self.threads} thread{'s' if self.threads > 1 else ''}")
        header = (f"  {'':<14}{'median ms':>11}{'min':>9}{'max':>9}{'p10':>9}{'p90':>9}"
                  f"{'speedup':>10}{'arena KiB':>11}{'compile ms':>12}{'cached ms':>11}"
                  f"  {'rel. error':<12}")
        lines.append(header)
        for row in [*self.levels, *self.peers]:
            lines.append(_format_row(row))
        if self.ablation:
            full = self.level(3).timing if any(r.level == 3 for r in self.levels) else None
            lines.append("")
            lines.append("  level 3 without one pass (time lost = median without it - median "
                         "with it):")
            for row in self.ablation:
                lost = ""
                if row.timing and full:
                    delta = row.timing.median - full.median
                    lost = f"{delta * 1e3:+9.3f} ms ({delta / full.median:+.0%})"
                detail = f"{row.timing.median * 1e3:9.3f} ms" if row.timing else row.failure
                check = "" if row.ok else "  FAIL: outputs differ from level 0"
                lines.append(f"  {row.name:<22}{detail:>12}  {lost}{check}")
        return "\n".join(lines)


def _ms(seconds: float | None, width: int) -> str:
    return f"{seconds * 1e3:{width}.3f}" if seconds is not None else " " * (width - 1) + "-"


def _format_row(row: Row) -> str:
    if row.timing is None:
        return f"  {row.name:<14}  {row.failure}"
    t = row.timing
    speedup = f"{row.speedup:9.2f}x" if row.speedup is not None else " " * 9 + "-"
    arena = f"{row.arena_bytes / 1024:11.1f}" if row.arena_bytes is not None else " " * 10 + "-"
    error = f"{row.error:.2e}" if row.error is not None else "-"
    flag = "" if row.ok else "  FAIL: outputs differ from level 0"
    return (f"  {row.name:<14}{_ms(t.median, 11)}{_ms(t.min, 9)}{_ms(t.max, 9)}{_ms(t.p10, 9)}"
            f"{_ms(t.p90, 9)}{speedup}{arena}{_ms(row.compile_cold, 12)}"
            f"{_ms(row.compile_cached, 11)}  {error:<12}{flag}")


# -- checking outputs -----------------------------------------------------------------------------


def _as_tuple(outputs: Any) -> tuple[np.ndarray, ...]:
    if isinstance(outputs, (tuple, list)):
        return tuple(_to_numpy(o) for o in outputs)
    return (_to_numpy(outputs),)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def relative_error(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """max|y - y0| / max|y0| over all outputs; infinite when shapes or counts differ."""
    if len(outputs) != len(reference):
        return float("inf")
    worst = 0.0
    for got, want in zip(outputs, reference, strict=True):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        if got.shape != want.shape:
            return float("inf")
        if want.size == 0:
            continue
        scale = max(float(np.abs(want).max()), 1e-30)
        difference = np.abs(got - want)
        if not np.all(np.isfinite(difference)):
            if np.array_equal(got, want, equal_nan=True):
                continue
            return float("inf")
        worst = max(worst, float(difference.max()) / scale)
    return worst


# -- the benchmark --------------------------------------------------------------------------------


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Environment variables set (None: unset) for the block, then restored."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _numpy_threads(threads: int) -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=threads):
        yield


def _set_threads(exe: Any, threads: int) -> None:
    if getattr(exe, "native", None) is None:
        return
    from ember.backend.cpu.threads import set_num_threads

    module = exe.native.native.module
    with contextlib.suppress(Exception):  # a module without parallel loops has no runtime
        set_num_threads(module, threads)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


class _Runner:
    """State shared by the rows of one bench run."""

    def __init__(self, model: Any, inputs: tuple[np.ndarray, ...], threads: int, repeats: int,
                 warmup: int, tolerance: float, max_seconds: float | None) -> None:
        self.model = model
        self.inputs = inputs
        self.threads = threads
        self.repeats = repeats
        self.warmup = warmup
        self.tolerance = tolerance
        self.max_seconds = max_seconds
        self.reference: tuple[np.ndarray, ...] | None = None
        self.baseline: float | None = None  # level 0 median

    def compile_twice(self, opt_level: int, passes: Any = None) -> tuple[Any, float, float | None]:
        """Compile into an empty cache, then again into the same cache: (exe, cold, cached)."""
        import ember

        if opt_level == 0:
            start = time.perf_counter()
            exe = ember.compile(self.model, *self.inputs, opt_level=0, passes=passes)
            return exe, time.perf_counter() - start, None
        with tempfile.TemporaryDirectory(prefix="ember-bench-") as directory, \
                environment(EMBER_CACHE_DIR=directory, EMBER_CACHE="1"):
            start = time.perf_counter()
            exe = ember.compile(self.model, *self.inputs, opt_level=opt_level, passes=passes,
                                threads=self.threads)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            exe = ember.compile(self.model, *self.inputs, opt_level=opt_level, passes=passes,
                                threads=self.threads)
            cached = time.perf_counter() - start
        return exe, cold, cached

    def time_row(self, row: Row, call: Callable[[], Any]) -> None:
        """Check one call's outputs against level 0, then time the calls."""
        try:
            outputs = _as_tuple(call())
        except Exception as err:  # a peer or a compiled level that fails at run time
            row.failure, row.ok = f"failed at run time: {_first_line(err)}", False
            return
        if self.reference is not None:
            row.error = relative_error(outputs, self.reference)
            row.ok = row.error <= self.tolerance
        with _numpy_threads(self.threads):
            row.timing = measure(call, self.repeats, self.warmup, self.max_seconds)
        if self.baseline is not None and row.timing.median > 0:
            row.speedup = self.baseline / row.timing.median

    def level(self, opt_level: int, timed: bool, passes: Any = None, name: str = "") -> Row:
        row = Row(name or f"level {opt_level}", level=opt_level)
        try:
            exe, row.compile_cold, row.compile_cached = self.compile_twice(opt_level, passes)
        except Exception as err:  # an op without a lowering, a pass that fails, ...
            row.failure = f"does not compile: {_first_line(err)}"
            return row
        _set_threads(exe, self.threads)
        if getattr(exe, "native", None) is not None:  # level 0 has no arena: numpy allocates
            row.arena_bytes = int(exe.native.program.arena_bytes)

        def call() -> Any:
            return exe(*self.inputs)

        if opt_level == 0 and passes is None:
            with _numpy_threads(self.threads):
                self.reference = _as_tuple(call())
            row.error = 0.0
            self.exe0 = exe
            if not timed:
                return row
        self.time_row(row, call)
        if opt_level == 0 and passes is None:
            self.baseline = row.timing.median if row.timing else None
            row.speedup = 1.0 if row.timing else None
        return row


def bench(model: Any, example_inputs: Sequence[Any], levels: Sequence[int] = (0, 1, 2, 3),
          threads: int | None = None, repeats: int = 20, warmup: int = 3,
          compare: Sequence[str] = DEFAULT_COMPARE, torch_model: Any = None,
          peers: Mapping[str, Callable[..., Any]] | None = None, ablate: bool = False,
          tolerance: float = 1e-3, max_seconds: float | None = 10.0, name: str | None = None
          ) -> BenchResult:
    """Time `model` on `example_inputs` at each opt level and against peers; see the module doc.

    `compare` names the peers to try ("onnxruntime", "torch"); a peer that is not installed, or
    "torch" without a `torch_model`, gets a row saying so. `peers` adds callables on numpy
    arrays (a hand-written numpy version, say). Level 0 always runs once, as the reference for
    the output check, even when it is not in `levels`. `max_seconds` bounds the timed calls of
    one row (at least 3 are made).
    """
    inputs = tuple(_to_numpy(x) for x in example_inputs)
    threads = resolve_threads(threads)
    for level in levels:
        if level not in (0, 1, 2, 3):
            raise ValueError(f"opt levels are 0, 1, 2 and 3, got {level!r}")
    unknown = [peer for peer in compare if peer not in DEFAULT_COMPARE]
    if unknown:
        raise ValueError(f"unknown peer {unknown[0]!r} (known: {', '.join(DEFAULT_COMPARE)})")
    title = name or getattr(model, "__name__", None) or type(model).__name__
    result = BenchResult(title, machine_info(threads), threads, repeats, warmup, tolerance)
    runner = _Runner(model, inputs, threads, repeats, warmup, tolerance, max_seconds)
    level0 = runner.level(0, timed=0 in levels)
    if 0 in levels:
        result.levels.append(level0)
    if level0.failure:
        raise RuntimeError(f"{title}: the reference interpreter failed: {level0.failure}")
    for level in sorted(set(levels) - {0}):
        result.levels.append(runner.level(level, timed=True))
    for peer in compare:
        result.peers.append(_PEERS[peer](runner, torch_model))
    for peer_name, function in (peers or {}).items():
        row = Row(peer_name)
        runner.time_row(row, lambda function=function: function(*inputs))
        result.peers.append(row)
    if ablate:
        result.ablation = _ablate(runner)
    return result


def _onnxruntime_row(runner: _Runner, torch_model: Any) -> Row:
    row = Row("onnxruntime", version=package_version("onnxruntime"))
    if row.version is None:
        row.failure = "not installed"
        return row
    import onnxruntime

    from ember.onnx.export import to_model

    try:
        model = to_model(runner.exe0.traced)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = runner.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
    except Exception as err:  # an op without an exporter, a model ORT rejects
        row.failure = f"cannot export or load: {_first_line(err)}"
        return row
    feed = {spec.name: array for spec, array in zip(session.get_inputs(), runner.inputs,
                                                     strict=True)}

    def call() -> Any:
        return session.run(None, feed)

    runner.time_row(row, call)
    return row


def _torch_row(runner: _Runner, torch_model: Any) -> Row:
    row = Row("torch", version=package_version("torch"))
    if row.version is None:
        row.failure = "not installed"
        return row
    if torch_model is None:
        row.failure = "no PyTorch model given"
        return row
    import torch

    tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in runner.inputs]
    previous = torch.get_num_threads()
    torch.set_num_threads(runner.threads)

    def call() -> Any:
        with torch.no_grad():
            return torch_model(*tensors)

    try:
        runner.time_row(row, call)
    finally:
        torch.set_num_threads(previous)
    return row


_PEERS: dict[str, Callable[[_Runner, Any], Row]] = {
    "onnxruntime": _onnxruntime_row,
    "torch": _torch_row,
}


def _ablate(runner: _Runner) -> list[Row]:
    """Level 3 compiled once per pass of its pipeline, without that pass."""
    from ember.passes import default_pipeline

    pipeline = default_pipeline(3)
    rows = []
    for index, pass_ in enumerate(pipeline):
        rest = pipeline[:index] + pipeline[index + 1 :]
        rows.append(runner.level(3, True, passes=rest, name=f"-{pass_}#{index}"))
    return rows


# -- the bar chart --------------------------------------------------------------------------------

CHART_COLORS = ("#d9480f", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f59f00", "#0c8599", "#868e96")


def chart_svg(title: str, groups: Sequence[tuple[str, Sequence[tuple[str, float | None]]]]
              ) -> str:
    """An SVG bar chart of milliseconds per call: one group of horizontal bars per model, one
    bar per runner (`groups`: (model, [(runner, ms or None), ...])), each group scaled to its
    own slowest bar so models of any size read alike; every bar is labelled with its ms and its
    ratio to the group's first runner. A runner without a time gets a "not run" label instead.
    """
    from xml.sax.saxutils import escape

    runners = list(dict.fromkeys(name for _, bars in groups for name, _ in bars))
    color = {name: CHART_COLORS[i % len(CHART_COLORS)] for i, name in enumerate(runners)}
    left, label_width, bar_width, bar_height, gap = 10, 170, 420, 16, 14
    width = left + label_width + bar_width + 160
    rows = sum(len(bars) for _, bars in groups)
    height = 60 + rows * (bar_height + 2) + len(groups) * gap + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']
    for index, name in enumerate(runners):  # the legend
        x = left + index * 130
        parts.append(f'<rect x="{x}" y="30" width="12" height="12" fill="{color[name]}"/>')
        parts.append(f'<text x="{x + 16}" y="40">{escape(name)}</text>')
    y = 60
    for model, bars in groups:
        timed = [ms for _, ms in bars if ms is not None and ms > 0]
        longest = max(timed, default=1.0)
        first_runner, first = bars[0] if bars else ("", None)
        parts.append(f'<text x="{left}" y="{y + bar_height - 3}" font-weight="bold">'
                     f'{escape(model)}</text>')
        for runner, ms in bars:
            x0 = left + label_width
            if ms is None or ms <= 0:
                parts.append(f'<text x="{x0 + 4}" y="{y + bar_height - 3}" fill="#868e96">'
                             f'{escape(runner)}: not run</text>')
            else:
                length = max(bar_width * ms / longest, 1.0)
                ratio = f" ({ms / first:.2f}x {first_runner})" if first else ""
                parts.append(f'<rect class="bar" data-model="{escape(model)}" '
                             f'data-runner="{escape(runner)}" x="{x0}" y="{y}" '
                             f'width="{length:.1f}" height="{bar_height}" '
                             f'fill="{color[runner]}"><title>{escape(runner)}: {ms:.3f} ms'
                             f'</title></rect>')
                parts.append(f'<text x="{x0 + length + 4:.1f}" y="{y + bar_height - 3}">'
                             f'{ms:.2f} ms{ratio}</text>')
            y += bar_height + 2
        y += gap
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_chart(path: str | os.PathLike[str], title: str,
                groups: Sequence[tuple[str, Sequence[tuple[str, float | None]]]]) -> None:
    """Write `chart_svg(title, groups)` to `path`."""
    with open(path, "w", encoding="utf-8") as file:
        file.write(chart_svg(title, groups))


def chart_groups(result: BenchResult) -> list[tuple[str, list[tuple[str, float | None]]]]:
    """A bench run as one chart group: level 3 first (Ember), then the other levels and the
    peers, each with its median ms (None for a row that did not run)."""
    rows = sorted(result.levels, key=lambda row: row.level != 3) + result.peers
    return [(result.name, [(row.name, row.timing.median * 1e3 if row.timing else None)
                           for row in rows])]
