"""Progress of long compiles, on stderr: what stage a compile is in and how far it has got.

    with progress.reporting(None):        # on when stderr is a terminal (True: on, False: off)
        progress.stage("trace")
        progress.stage("passes", total=31)
        progress.advance(detail="fuse")   # one pass done
        ...

`ember.compile` opens a report around its work (its `progress` argument), and the stages call
`stage` and `advance`, which do nothing when no report is open in this thread: trace, passes
(one count per pass), lowering, llvm ir (one count per kernel call of the program), llvm text,
llvm optimize and machine code. A report opened inside another one adds to the outer one; one
opened with `False` silences the stages inside it.

Nothing is written for a compile that ends within DELAY seconds. After that, on a terminal, one
line is redrawn in place (the time so far, the stage, a bar of its count) at each new stage, at
most twenty times a second as counts advance, and ten times a second while a stage is silent;
at the end one summary line with each stage's seconds replaces it. Elsewhere (`progress=True`
with stderr a pipe or a file) each stage gets one line when it ends, and the same summary line
closes the report.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

DELAY = 1.0  # seconds a compile runs before its progress is shown
REFRESH = 0.1  # seconds between redraws on a terminal while a stage is silent
MIN_REDRAW = 0.05  # the least seconds between two redraws for counts
BAR_WIDTH = 24


@dataclass
class _Stage:
    name: str
    total: int | None
    unit: str
    started: float
    done: int = 0
    detail: str = ""
    seconds: float | None = None  # set when the stage ends


class Reporter:
    """The progress of one compile, written to `stream` (a terminal: redrawn in place)."""

    def __init__(self, stream: TextIO, terminal: bool, delay: float = DELAY,
                 title: str = "compile") -> None:
        self.stream = stream
        self.terminal = terminal
        self.delay = delay
        self.title = title
        self.started = time.perf_counter()
        self.stages: list[_Stage] = []
        self._printed = 0  # stages written as finished lines (not on a terminal)
        self._drawn = False  # something is on the stream
        self._drawn_at = 0.0  # when the terminal line was last drawn
        self._width = 0  # characters of the line last drawn on a terminal
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if terminal:  # redraws while a long stage (LLVM's) reports nothing
            self._thread = threading.Thread(target=self._redraw_loop, name="ember-progress",
                                            daemon=True)
            self._thread.start()

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        """End the current stage and start `name` (with `total` counts to go, if known)."""
        with self._lock:
            now = time.perf_counter()
            self._end_stage(now)
            self.stages.append(_Stage(name, total, unit, now))
            self._update(now, new_stage=True)

    def advance(self, count: int = 1, detail: str = "") -> None:
        """`count` more of the current stage done; `detail` names the last one."""
        with self._lock:
            if not self.stages:
                return
            current = self.stages[-1]
            current.done += count
            current.detail = detail or current.detail
            self._update(time.perf_counter())

    def close(self, failed: bool = False) -> None:
        """End the report: the summary line, if anything was shown."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            now = time.perf_counter()
            self._end_stage(now)
            if now - self.started < self.delay and not self._drawn:
                return
            self._flush_finished()
            self._clear()
            elapsed = now - self.started
            parts = ", ".join(f"{s.name} {s.seconds:.1f} s" for s in self.stages
                              if s.seconds is not None)
            verb = f"{self.title} failed after" if failed else f"{self.title}d in"
            self.stream.write(f"ember: {verb} {elapsed:.1f} s ({parts})\n")
            self.stream.flush()

    # -- drawing (under the lock) -------------------------------------------------------------

    def _end_stage(self, now: float) -> None:
        if self.stages and self.stages[-1].seconds is None:
            self.stages[-1].seconds = now - self.stages[-1].started

    def _update(self, now: float, new_stage: bool = False) -> None:
        if now - self.started < self.delay:
            return
        if not self.terminal:
            self._flush_finished()
        elif new_stage or now - self._drawn_at >= MIN_REDRAW:
            self._draw(now)

    def _flush_finished(self) -> None:
        """One line for each finished stage not written yet (never on a terminal)."""
        if self.terminal:
            return
        for stage in self.stages[self._printed:]:
            if stage.seconds is None:
                break
            self.stream.write(f"ember: {self.title}: {_describe(stage)} ({stage.seconds:.1f} s)"
                              "\n")
            self._printed += 1
            self._drawn = True
        self.stream.flush()

    def _draw(self, now: float) -> None:
        line = f"ember: {self.title} {now - self.started:5.1f} s"
        if self.stages:
            current = self.stages[-1]
            bar = f"{_bar(current)} " if current.total else ""
            line += f"  {bar}{_describe(current)}"
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)
        self._drawn, self._drawn_at = True, now

    def _clear(self) -> None:
        if self.terminal and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0

    def _redraw_loop(self) -> None:
        while not self._stop.wait(REFRESH):
            with self._lock:
                now = time.perf_counter()
                if now - self.started >= self.delay:
                    self._draw(now)


def _describe(stage: _Stage) -> str:
    text = stage.name
    if stage.total is not None:
        text += f" {min(stage.done, stage.total)}/{stage.total}"
        if stage.unit:
            text += f" {stage.unit}"
    if stage.detail:
        text += f" ({stage.detail})"
    return text


def _bar(stage: _Stage) -> str:
    assert stage.total
    filled = round(BAR_WIDTH * min(stage.done, stage.total) / stage.total)
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


_ACTIVE: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("ember_progress",
                                                                          default=None)
_SILENCED: contextvars.ContextVar[bool] = contextvars.ContextVar("ember_progress_silenced",
                                                                 default=False)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextlib.contextmanager
def reporting(enabled: bool | None = None, title: str = "compile",
              stream: TextIO | None = None) -> Iterator[Reporter | None]:
    """Report the stages inside the block: `None` when `stream` (default: sys.stderr) is a
    terminal, `True` always, `False` never (stages inside are silent even in an outer
    report). Inside an open report, the outer one carries on."""
    if enabled is False:
        token = _SILENCED.set(True)
        try:
            yield None
        finally:
            _SILENCED.reset(token)
        return
    outer = _ACTIVE.get()
    if outer is not None or _SILENCED.get():
        yield outer
        return
    stream = stream if stream is not None else sys.stderr
    terminal = _is_terminal(stream)
    if enabled is None and not terminal:
        yield None
        return
    reporter = Reporter(stream, terminal, DELAY, title)
    token = _ACTIVE.set(reporter)
    failed = True
    try:
        yield reporter
        failed = False
    finally:
        _ACTIVE.reset(token)
        reporter.close(failed)


def _current() -> Reporter | None:
    return None if _SILENCED.get() else _ACTIVE.get()


def stage(name: str, total: int | None = None, unit: str = "") -> None:
    """Start stage `name` of the open report (nothing when none is open)."""
    reporter = _current()
    if reporter is not None:
        reporter.stage(name, total, unit)


def advance(count: int = 1, detail: str = "") -> None:
    """Count `count` more of the open report's current stage (nothing when none is open)."""
    reporter = _current()
    if reporter is not None:
        reporter.advance(count, detail)
