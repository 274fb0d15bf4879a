"""Passes, pipelines and the pass manager, with instruments for timing, printing, dumping and
checking numerics after every pass.

    manager = PassManager(parse_pipeline("fold-constants,cse,dce"), [TimePasses()])
    optimized = manager.run(graph)

A pass is a frozen dataclass whose fields are its options, written in pipelines as
`fuse{max-ops=16}`. The manager verifies the graph after every pass; when a pass raises or
breaks the IR, `PassFailed` names it, its position and the passes before it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

import numpy as np

from ember.errors import EmberError, PassFailed
from ember.ir.graph import Graph, Node
from ember.ir.ops import OPS
from ember.ir.verify import verify
from ember.target import Target


class Pass(ABC):
    """A named Graph -> Graph transformation.

    Subclasses are frozen dataclasses whose fields are the pass options. A pass never mutates
    its input, returns the very same graph object when it changed nothing, and must return a
    graph that verifies.
    """

    name: ClassVar[str]

    @abstractmethod
    def run(self, graph: Graph) -> Graph: ...

    @classmethod
    def summary(cls) -> str:
        """The first line of the pass's docstring."""
        return (cls.__doc__ or "").strip().split("\n", 1)[0]

    def __str__(self) -> str:
        options = [
            f"{f.name.replace('_', '-')}={_format_option(getattr(self, f.name))}"
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if getattr(self, f.name) != f.default
        ]
        return self.name + ("{" + ",".join(options) + "}" if options else "")


def _format_option(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# ---------------------------------------------------------------------------------------------
# Facts about nodes and graphs that many passes share.


def is_pure(node: Node) -> bool:
    """True when the node can be removed, merged or reordered (a region is pure if its body is)."""
    if node.body is not None:
        return all(is_pure(n) for n in node.body.nodes)
    opdef = OPS.get(node.op)
    return opdef is not None and opdef.pure


def graph_bytes(graph: Graph) -> int:
    """Bytes of all values the graph's nodes compute (constants excluded): the naive footprint."""
    return sum(v.type.nbytes for n in graph.nodes if n.op != "const" for v in n.outputs)


def count_nodes(graph: Graph) -> int:
    """Nodes, counting a region's body nodes too."""
    return sum(1 + (count_nodes(n.body) if n.body is not None else 0) for n in graph.nodes)


# ---------------------------------------------------------------------------------------------
# Pipelines as text: "fold-constants,cse,fuse{max-ops=16},plan-memory".


def _all_passes() -> dict[str, type[Pass]]:
    from ember.passes import ALL_PASSES

    return ALL_PASSES


def _convert_option(pass_name: str, option: dataclasses.Field[Any], text: str) -> Any:
    kind = option.type if isinstance(option.type, str) else getattr(option.type, "__name__", "")
    try:
        if kind == "bool":
            if text not in ("true", "false"):
                raise ValueError("expected true or false")
            return text == "true"
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        return text
    except ValueError as err:
        raise EmberError(f"pass {pass_name!r}: option {option.name!r}: {err}") from None


def parse_pass(text: str) -> Pass:
    """One pipeline element, `name` or `name{opt=value,opt2=value}`, as a Pass instance."""
    name, brace, rest = text.strip().partition("{")
    name = name.strip()
    cls = _all_passes().get(name)
    if cls is None:
        known = ", ".join(sorted(_all_passes()))
        raise EmberError(f"unknown pass {name!r} (known passes: {known})")
    if brace and not rest.endswith("}"):
        raise EmberError(f"pass options of {name!r} must end with '}}': {text!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    options: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest[:-1].split(","))) if brace else ():
        key, equals, value = item.partition("=")
        option = fields.get(key.strip().replace("-", "_"))
        if option is None or not equals:
            known = ", ".join(f.replace("_", "-") for f in fields) or "none"
            raise EmberError(f"pass {name!r} has no option {key.strip()!r} (options: {known})")
        options[option.name] = _convert_option(name, option, value.strip())
    return cls(**options)


def _split_pipeline(text: str) -> list[str]:
    """Split at commas outside braces."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in (p.strip() for p in parts) if p]


def parse_pipeline(text: str | Sequence[str | Pass]) -> list[Pass]:
    """A pipeline from text (`"cse,dce"`) or a list of names and Pass instances."""
    items = _split_pipeline(text) if isinstance(text, str) else list(text)
    return [item if isinstance(item, Pass) else parse_pass(item) for item in items]


def format_pipeline(passes: Sequence[Pass]) -> str:
    return ",".join(str(p) for p in passes)


# ---------------------------------------------------------------------------------------------
# Instruments.


class Instrument:
    """Hooks around each pass; the manager calls them in order."""

    def start(self, graph: Graph) -> None:
        """Called once with the input graph, before the first pass."""

    def before_pass(self, index: int, pass_: Pass, graph: Graph) -> None: ...

    def after_pass(self, index: int, pass_: Pass, before: Graph, after: Graph,
                   seconds: float) -> None: ...


@dataclass
class PassRecord:
    """One line of the pass ledger."""

    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    bytes_before: int
    bytes_after: int
    changed: bool


@dataclass
class TimePasses(Instrument):
    """The pass ledger: time, node counts and computed bytes before and after each pass."""

    records: list[PassRecord] = field(default_factory=list)
    # the last graph measured, its nodes and bytes: a pass's input is the previous one's result
    _measured: tuple[Graph, int, int] | None = field(default=None, repr=False, compare=False)

    def after_pass(self, index: int, pass_: Pass, before: Graph, after: Graph,
                   seconds: float) -> None:
        nodes_before, bytes_before = self._measure(before)
        nodes_after, bytes_after = self._measure(after)
        self.records.append(PassRecord(str(pass_), seconds, nodes_before, nodes_after,
                                       bytes_before, bytes_after, after is not before))

    def _measure(self, graph: Graph) -> tuple[int, int]:
        if self._measured is None or self._measured[0] is not graph:
            self._measured = (graph, count_nodes(graph), graph_bytes(graph))
        return self._measured[1], self._measured[2]

    def report(self) -> str:
        lines = [f"{'pass':<28}{'time (ms)':>10}  {'nodes':>12}  {'bytes':>22}"]
        for r in self.records:
            nodes = f"{r.nodes_before} -> {r.nodes_after}"
            size = f"{r.bytes_before} -> {r.bytes_after}"
            lines.append(f"{r.name:<28}{r.seconds * 1e3:>10.2f}  {nodes:>12}  {size:>22}")
        total = sum(r.seconds for r in self.records)
        lines.append(f"{'total':<28}{total * 1e3:>10.2f}")
        return "\n".join(lines)


@dataclass
class PrintAfter(Instrument):
    """Print the IR after the named passes (or "all"), like Numba's DEBUG_PRINT_AFTER."""

    names: Sequence[str] | str = "all"
    stream: IO[str] | None = None
    only_changed: bool = False

    def after_pass(self, index: int, pass_: Pass, before: Graph, after: Graph,
                   seconds: float) -> None:
        if self.names != "all" and pass_.name not in self.names:
            return
        if self.only_changed and after is before:
            return
        out = self.stream or sys.stderr
        out.write(f"// ----- IR after {pass_} (#{index}) -----\n{after}\n")


@dataclass
class DumpIR(Instrument):
    """Write `000_traced.ir`, `001_<pass>.ir`, ... into a directory; each file parses back."""

    directory: str
    files: list[str] = field(default_factory=list)

    def start(self, graph: Graph) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self._write(0, "traced", graph)

    def after_pass(self, index: int, pass_: Pass, before: Graph, after: Graph,
                   seconds: float) -> None:
        self._write(index + 1, pass_.name, after)

    def _write(self, number: int, name: str, graph: Graph) -> None:
        path = os.path.join(self.directory, f"{number:03d}_{name}.ir")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(str(graph) + "\n")
        self.files.append(path)


@dataclass
class CheckNumerics(Instrument):
    """Rerun the reference interpreter after every pass on seeded random inputs, and stop at
    the first pass whose graph disagrees with the input graph beyond tolerance."""

    seed: int = 0
    rtol: float = 1e-4
    atol: float = 1e-5
    inputs: list[np.ndarray] = field(default_factory=list)
    expected: tuple[np.ndarray, ...] = ()

    def start(self, graph: Graph) -> None:
        from ember.interpreter import interpret

        self.inputs = random_inputs(graph, self.seed)
        self.expected = interpret(graph, *self.inputs)

    def after_pass(self, index: int, pass_: Pass, before: Graph, after: Graph,
                   seconds: float) -> None:
        from ember.interpreter import interpret

        if after is before:
            return
        got = interpret(after, *self.inputs)
        for position, (want, have) in enumerate(zip(self.expected, got, strict=True)):
            if not np.allclose(have, want, rtol=self.rtol, atol=self.atol, equal_nan=True):
                error = float(np.max(np.abs(have.astype(np.float64) - want)))
                raise NumericsChanged(
                    f"output {position} changed by up to {error:.3g} (rtol={self.rtol}, "
                    f"atol={self.atol})")


class NumericsChanged(EmberError):
    """A pass changed the graph's results (raised inside the manager, reported as PassFailed)."""


def random_inputs(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    """Seeded inputs for a graph: floats in [0.5, 1.5) (safe for log, sqrt, division), small
    non-negative ints (safe as indices into any axis of size >= 3), random bools."""
    rng = np.random.default_rng(seed)
    arrays = []
    for value in graph.inputs:
        dtype = value.type.dtype.numpy
        shape = value.type.shape
        if dtype.kind == "f":
            arrays.append((rng.random(shape) + 0.5).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.random(shape) < 0.5)
        else:
            arrays.append(rng.integers(0, 3, size=shape).astype(dtype))
    return arrays


# ---------------------------------------------------------------------------------------------
# The manager.


@dataclass
class PassManager:
    """Runs passes in order, with instruments, verifying after each pass."""

    passes: Sequence[Pass]
    instruments: Sequence[Instrument] = ()
    verify_each: bool = True
    target: Target | None = None  # passes that choose by the machine ask it (`for_target`)

    def run(self, graph: Graph) -> Graph:
        for instrument in self.instruments:
            instrument.start(graph)
        target = self.target if self.target is not None else Target.host()
        for index, pass_ in enumerate(self.passes):
            if hasattr(pass_, "for_target"):  # a pass with a machine-dependent default
                pass_ = pass_.for_target(target)
            for instrument in self.instruments:
                instrument.before_pass(index, pass_, graph)
            start = time.perf_counter()
            try:
                result = pass_.run(graph)
                seconds = time.perf_counter() - start  # the pass alone, not the verifier
                if self.verify_each and result is not graph:
                    verify(result)
                for instrument in self.instruments:
                    instrument.after_pass(index, pass_, graph, result, seconds)
            except Exception as err:
                previous = [str(p) for p in self.passes[:index]]
                raise PassFailed(str(pass_), index, previous, self._detail(err, index)) from err
            graph = result
        return graph

    def _detail(self, err: Exception, index: int) -> str:
        detail = f"{type(err).__name__}: {err}"
        dumps = [i for i in self.instruments if isinstance(i, DumpIR)]
        if dumps and index < len(dumps[0].files):
            detail += f" (input IR: {dumps[0].files[index]})"
        return detail


# ---------------------------------------------------------------------------------------------
# Environment switches, read when a pipeline is built.


def instruments_from_env(environ: dict[str, str] | None = None) -> list[Instrument]:
    """Instruments asked for by EMBER_PRINT_AFTER=all|cse,dce, EMBER_DUMP_DIR=path and
    EMBER_CHECK_PASSES=1."""
    from ember import config

    found: list[Instrument] = []
    if names := config.print_after(environ):
        found.append(PrintAfter(names))
    if directory := config.dump_dir(environ):
        found.append(DumpIR(directory))
    if config.check_passes(environ):
        found.append(CheckNumerics())
    return found


def verify_from_env(environ: dict[str, str] | None = None) -> bool:
    from ember import config

    return config.verify_passes(environ)
