"""The `ember` command line: look at what Ember makes of a model, stage by stage.

    ember ir examples/mlp.py                    # the traced IR of `model` on `example_inputs`
    ember ir examples/mlp.py:model --format dot # Graphviz, for `dot -Tsvg`
    ember ir my_model.py:block -o block.ir      # NAME: a function or module in the file
    ember ir examples/cnn.py --stage optimized  # after the default pipeline (-p to choose)
    ember ir examples/cnn.py --diff             # what each pass changed
    ember ir examples/cnn.py --explain fusion   # why each fusion candidate was (not) fused
    ember ir examples/mlp.py --stage llvm --remarks  # and what the loop vectorizer did, per kernel
    ember ir examples/mlp.py --target cuda:sm_90 --stage ptx  # PTX for an NVIDIA GPU
    ember passes                                # the passes and their options
    ember opt dump/002_cse.ir -p dce            # run passes on IR text, like mlir-opt
    ember bench examples/mlp.py --threads 1     # opt levels 0-3 and ONNX Runtime, timed
    ember bench model.onnx --plot bench.svg     # and the medians as an SVG bar chart

A TARGET file is imported under a private module name (never `"__main__"`), so the script part
of an example does not run. It defines the model (`model`, or the NAME given after a colon) and
`example_inputs`, a tuple or list of numpy arrays.

Every mistake a user can make (a missing file, a missing name, a syntax error, code that cannot
be traced) ends with one line on stderr, `ember: error: ...`, and exit status 2. A target must
be a regular file (a directory, FIFO or device is named as such); IR files given to `ember opt`
are UTF-8 text of at most IR_FILE_LIMIT bytes (256 MiB), read no further than that.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import os
import re
import stat
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

import numpy as np

import ember
from ember.errors import EmberError
from ember.ir.graph import Graph
from ember.pipeline import Instrument, Pass, PassManager, parse_pipeline

EXIT_USAGE = 2
IR_FILE_LIMIT = 256 * 2**20  # the most bytes of IR text `ember opt` reads


class UsageError(Exception):
    """A user mistake: reported as one `ember: error:` line, exit status 2."""


@dataclass(frozen=True)
class ModelFile:
    """What `ember ir TARGET` works on: a callable, its example inputs and a graph name."""

    model: Callable[..., Any]
    example_inputs: tuple[Any, ...]
    name: str  # the graph's name: the file's stem, or NAME
    path: str  # the file as given
    where: str  # "file.py" or "file.py:NAME", for messages
    graph: Graph | None = None  # already traced (a training file's train step)


# -- loading a target -----------------------------------------------------------------------------


def _check_file(path: str) -> None:
    """A UsageError unless `path` is a regular file; a directory, FIFO or device is named."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None
    if stat.S_ISREG(mode):
        return
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket")]
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    raise UsageError(f"{path} is {kind}, not a file")


def _read_ir(path: str) -> str:
    """The UTF-8 text of an IR file (`-`: stdin), at most IR_FILE_LIMIT bytes."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(IR_FILE_LIMIT + 1)
        else:
            _check_file(path)
            with open(path, "rb") as handle:
                data = handle.read(IR_FILE_LIMIT + 1)
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None
    if len(data) > IR_FILE_LIMIT:
        raise UsageError(f"{'stdin' if path == '-' else path} is larger than "
                         f"{IR_FILE_LIMIT // 2**20} MiB, the limit for IR files")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UsageError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at "
                         f"offset {err.start})") from None


def _import_file(path: str) -> ModuleType:
    """Import a Python file by path, with a `__name__` that is not `"__main__"`."""
    _check_file(path)
    if not path.endswith(".py"):
        raise UsageError(f"{path}: expected a Python file (file.py or file.py:NAME)")
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(f"_ember_target_{stem}", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    directory = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, directory)  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise UsageError(f"{err.filename}:{err.lineno}: syntax error: {err.msg}") from None
    except Exception as err:  # any failure of user code is reported in one line
        raise UsageError(f"while importing {path}: {_describe(err, path)}") from None
    except SystemExit as exit_:
        raise UsageError(f"{path} called sys.exit({exit_.code!r}) while being imported"
                         ) from None
    finally:
        sys.path.remove(directory)
    return module


def _describe(err: BaseException, path: str) -> str:
    """`file:line: Type: message`, located at the innermost frame in the user's file."""
    location = ""
    wanted = os.path.abspath(path)
    for frame in traceback.extract_tb(err.__traceback__):
        if os.path.abspath(frame.filename) == wanted:
            location = f"{path}:{frame.lineno}: "
    message = str(err).splitlines()[0] if str(err) else ""
    return f"{location}{type(err).__name__}: {message}".rstrip(": ")


def _graph_name(text: str) -> str:
    name = re.sub(r"\W", "_", text) or "main"
    return name if not name[0].isdigit() else "g" + name


def _example_inputs(module: ModuleType, path: str) -> tuple[Any, ...]:
    if not hasattr(module, "example_inputs"):
        raise UsageError(f"{path} does not define `example_inputs` (a tuple of numpy arrays)")
    inputs = module.example_inputs
    if isinstance(inputs, np.ndarray):
        inputs = (inputs,)
    if not isinstance(inputs, (tuple, list)):
        raise UsageError(f"{path}: `example_inputs` must be a tuple or list of numpy arrays, "
                         f"not {type(inputs).__name__}")
    for index, value in enumerate(inputs):
        if not isinstance(value, (np.ndarray, ember.TensorSpec)):
            raise UsageError(f"{path}: example_inputs[{index}] is a {type(value).__name__}, "
                             "expected a numpy array")
    return tuple(inputs)


def load_target(text: str, shapes: Sequence[str] | None = None) -> ModelFile:
    """Resolve `file.py`, `file.py:NAME` or `model.onnx` into a model and its example inputs.

    `shapes` pins an ONNX model's symbolic dimensions: `["input=1x3x224x224", "batch=1"]`.
    """
    if text.endswith(".onnx"):
        return _load_onnx_target(text, shapes or [])
    path, name = text, ""
    if ":" in text and not os.path.isfile(text):
        path, _, name = text.rpartition(":")
    module = _import_file(path)
    if not name and callable(getattr(module, "train_step_args", None)):
        return _train_target(module, path)
    attribute = name or "model"
    if not hasattr(module, attribute):
        if name:
            raise UsageError(f"{path} has no function or module named {name!r}")
        raise UsageError(f"{path} does not define `model` (or name one: {path}:NAME)")
    model = getattr(module, attribute)
    if not callable(model):
        raise UsageError(f"{path}:{attribute} is a {type(model).__name__}, not a function or "
                         "module")
    graph_name = _graph_name(name or os.path.splitext(os.path.basename(path))[0])
    where = f"{path}:{name}" if name else path
    return ModelFile(model, _example_inputs(module, path), graph_name, path, where)


def _train_target(module: ModuleType, path: str) -> ModelFile:
    """A training file (it defines `train_step_args()`, returning the arguments of
    `ember.train_step`): its joint forward-backward-update graph."""
    from ember.train import train_graph

    try:
        model, loss_fn, optimizer, *batch = module.train_step_args()
        graph = train_graph(model, loss_fn, optimizer, *batch)
    except EmberError as err:
        raise UsageError(f"cannot trace the train step of {path}: {str(err).splitlines()[0]}"
                         ) from None
    except Exception as err:
        raise UsageError(f"cannot trace the train step of {path}: {_describe(err, path)}"
                         ) from None
    return ModelFile(model, tuple(batch), graph.name, path, path, graph)


def _load_onnx_target(path: str, shapes: Sequence[str]) -> ModelFile:
    """An ONNX file as a target: `ember.onnx.load` with `--shape NAME=DxDxD` pins."""
    import ember.onnx

    pinned: dict[str, Any] = {}
    for item in shapes:
        name, _, dims = item.partition("=")
        try:
            sizes = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            sizes = ()
        if not name or not sizes:
            raise UsageError(f"--shape takes NAME=DIMS like input=1x3x224x224 or batch=1, "
                             f"got {item!r}")
        pinned[name] = sizes
    _check_file(path)
    try:
        model = ember.onnx.load(path, shapes=pinned)
        examples = model.example_inputs
    except EmberError as err:
        hint = " (ember ir: --shape NAME=DIMS)" if "symbolic dimension" in str(err) else ""
        raise UsageError(str(err).splitlines()[0] + hint) from None
    name = _graph_name(os.path.splitext(os.path.basename(path))[0])
    return ModelFile(model, examples, name, path, path)


def _trace(target: ModelFile, args: argparse.Namespace | None = None) -> Graph:
    if target.graph is not None:
        return target.graph
    try:
        return ember.trace(target.model, *target.example_inputs, name=target.name)
    except EmberError as err:
        raise UsageError(f"cannot trace {target.where}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # user code raised while being traced
        raise UsageError(f"cannot trace {target.where}: {_describe(err, target.path)}") from None
    except SystemExit as exit_:
        raise UsageError(f"{target.where} called sys.exit({exit_.code!r}) while being traced"
                         ) from None


# -- stages ---------------------------------------------------------------------------------------

@dataclass
class _Snapshots(Instrument):
    """Keeps the IR after every pass, for --print-after-all, --after and --diff."""

    steps: list[tuple[str, Graph, Graph]]

    def after_pass(self, index: int, pass_: Pass, before: Graph, after: Graph,
                   seconds: float) -> None:
        self.steps.append((str(pass_), before, after))


def _pipeline(args: argparse.Namespace) -> list[Pass]:
    from ember.passes import default_pipeline

    try:
        return parse_pipeline(args.pipeline) if args.pipeline else default_pipeline(args.opt_level)
    except EmberError as err:
        raise UsageError(str(err)) from None


def _compile_target(args: argparse.Namespace) -> ember.Target:
    """--target: the host by default, `cpu:NAME` or `cuda[:ARCH]`."""
    try:
        return ember.Target.parse(getattr(args, "compile_target", None) or "cpu")
    except EmberError as err:
        raise UsageError(str(err)) from None


def _run_passes(graph: Graph, args: argparse.Namespace) -> Graph:
    snapshots = _Snapshots([])
    try:
        result = PassManager(_pipeline(args), [snapshots], target=_compile_target(args)).run(graph)
    except EmberError as err:
        raise UsageError(str(err).splitlines()[0]) from None
    args.snapshots = snapshots.steps
    return result


def _optimized(target: ModelFile, args: argparse.Namespace) -> Graph:
    return _run_passes(_trace(target, args), args)


def _native(target: ModelFile, args: argparse.Namespace) -> Any:
    """The optimized graph through the compile route of `ember.compile` (and its cache), with
    a progress bar on a terminal when it takes over a second."""
    from ember import progress
    from ember.runtime import compile_cached

    with progress.reporting(None):
        progress.stage("trace and passes")
        graph = _optimized(target, args)
        progress.stage("lowering")
        try:
            return compile_cached(graph, args.opt_level, _compile_target(args))
        except EmberError as err:
            raise UsageError(f"cannot compile {target.where}: {str(err).splitlines()[0]}"
                             ) from None


def _loops(target: ModelFile, args: argparse.Namespace) -> str:
    return str(_native(target, args).program)


def _llvm(target: ModelFile, args: argparse.Namespace) -> str:
    native = _native(target, args)
    return native.native.module.llvm_ir + _remarks_section(native, args, ";")


def _asm(target: ModelFile, args: argparse.Namespace) -> str:
    native = _native(target, args)
    return native.native.module.asm() + _remarks_section(native, args, "#")


def _ptx(target: ModelFile, args: argparse.Namespace) -> str:
    if _compile_target(args).kind != "cuda":
        raise UsageError("--stage ptx needs a CUDA target (--target cuda or cuda:ARCH)")
    return _native(target, args).native.stage("ptx")


# -- optimization remarks -------------------------------------------------------------------------

# codegen's names for a kernel's outlined parallel loop and the loop nest inside it
_PARALLEL_BODY = re.compile(r"\.par\d+(\.loop)?$")


def _remarks_section(native: Any, args: argparse.Namespace, comment: str) -> str:
    """With --remarks: the loop vectorizer's remarks grouped by kernel, as comment lines of the
    printed IR or assembly (so the output still assembles)."""
    if not getattr(args, "remarks", False):
        return ""
    remarks = native.native.module.remarks()
    lines = ["", *format_remarks(native.program, remarks)]
    return "\n".join(f"{comment} {line}".rstrip() for line in lines)


def format_remarks(program: Any, remarks: Sequence[Any]) -> list[str]:
    """Remarks by kernel (in call order), then by library function (a GEMM) and the runtime.

    A function belongs to kernel `k5_fused` when it is the kernel or one of its outlined
    parallel bodies (`k5_fused.par1`); a loop of a kernel inlined into the entry keeps its
    kernel's debug location. Repeated remarks are shown once with a count.
    """
    by_owner: dict[str, list[Any]] = {}
    for remark in remarks:
        by_owner.setdefault(_PARALLEL_BODY.sub("", remark.function), []).append(remark)
    kernels = {call.kernel.name: call.kernel for call in program.calls}
    lines = ["LLVM loop-vectorize remarks by kernel (+ vectorized, - not vectorized: why, . note)"]
    quiet = []
    for name, kernel in kernels.items():
        if name not in by_owner:
            quiet.append(name)
            continue
        lines.append(f"{name}: {_shorten(kernel.source)}")
        lines += _remark_lines(by_owner.pop(name))
    callers = _library_callers(program)
    for name in sorted(by_owner, key=lambda n: (n not in callers, n)):
        role = f"called by {', '.join(callers[name])}" if name in callers else "runtime"
        lines.append(f"{name} ({role})")
        lines += _remark_lines(by_owner[name])
    if quiet:
        lines.append(f"no loop remarks: {', '.join(quiet)}")
    return lines


def _remark_lines(remarks: Sequence[Any]) -> list[str]:
    """One line per distinct remark: vectorized first, then not vectorized, then notes."""
    counts: dict[tuple[str, str, str], int] = {}
    for remark in remarks:
        key = (_marker(remark), remark.message, remark.function)
        counts[key] = counts.get(key, 0) + 1
    lines = []
    for (marker, message, function), count in sorted(counts.items(),
                                                     key=lambda item: "+-.".index(item[0][0])):
        where = f"  [{function}]" if _PARALLEL_BODY.search(function) else ""
        times = f" (x{count})" if count > 1 else ""
        lines.append(f"  {marker} {message}{times}{where}")
    return lines


def _marker(remark: Any) -> str:
    """'+' a loop vectorized, '-' a loop not vectorized, '.' a note (on interleaving, say)."""
    if remark.vectorized:
        return "+"
    return "-" if "not vectorized" in remark.message else "."


def _library_callers(program: Any) -> dict[str, list[str]]:
    """Library functions (`ExternCall` symbols) -> the kernels that call them."""
    callers: dict[str, list[str]] = {}
    for call in program.calls:
        for symbol in _extern_symbols(call.kernel.body):
            names = callers.setdefault(symbol, [])
            if call.kernel.name not in names:
                names.append(call.kernel.name)
    return callers


def _extern_symbols(body: Sequence[Any]) -> list[str]:
    symbols = []
    for stmt in body:
        if hasattr(stmt, "symbol"):
            symbols.append(stmt.symbol)
        for field in ("body", "then", "orelse"):
            symbols += _extern_symbols(getattr(stmt, field, ()))
    return symbols


def _shorten(text: str, width: int = 100) -> str:
    """A kernel's graph statement cut to `width`, keeping its `// file:line` at the end."""
    statement, marker, location = text.partition("  // ")
    room = width - len(marker + location)
    if len(statement) > room:
        statement = statement[: max(room - 3, 20)] + "..."
    return statement + marker + location


# Each stage takes the loaded target to what `ember ir --stage NAME` prints: a graph for the
# graph stages, text for the code stages.
STAGES: dict[str, Callable[[ModelFile, argparse.Namespace], Graph | str]] = {
    "traced": _trace,
    "optimized": _optimized,
    "loops": _loops,
    "llvm": _llvm,
    "asm": _asm,
    "ptx": _ptx,
}


def _pass_report(args: argparse.Namespace) -> str:
    """The IR after chosen passes (--after, --print-after-all) and/or diffs (--diff)."""
    chunks = []
    for index, (name, before, after) in enumerate(getattr(args, "snapshots", [])):
        base = name.split("{")[0]
        if args.diff and after is not before:
            lines = difflib.unified_diff(str(before).splitlines(), str(after).splitlines(),
                                         f"before {name} (#{index})", f"after {name} (#{index})",
                                         lineterm="")
            chunks.append("\n".join(lines))
        if args.print_after_all or base in (args.after or []):
            chunks.append(f"// ----- IR after {name} (#{index}) -----\n{after}")
    return "\n".join(chunks)


def _render(result: Graph | str, fmt: str) -> str:
    if isinstance(result, str):
        return result
    if fmt == "dot":
        from ember.ir.dot import to_dot

        return to_dot(result)
    return str(result)


# -- commands -------------------------------------------------------------------------------------


def command_ir(args: argparse.Namespace) -> int:
    """`ember ir TARGET`: print the IR of a model at one stage."""
    target = load_target(args.target, args.shape)
    if args.explain:
        from ember.passes.fuse import explain

        sys.stdout.write(explain(_run_passes(_trace(target), _before_fuse(args))) + "\n")
        return 0
    wants_passes = args.print_after_all or args.after or args.diff
    stage = "optimized" if wants_passes and args.stage == "traced" else args.stage
    if args.remarks and stage not in ("llvm", "asm"):
        raise UsageError("--remarks goes with --stage llvm or --stage asm")
    graph = STAGES[stage](target, args)
    report = _pass_report(args)
    text = (report + "\n" if report else "") + _render(graph, args.format)
    _write(args, text)
    return 0


def _before_fuse(args: argparse.Namespace) -> argparse.Namespace:
    """The pipeline up to (not including) its first `fuse`: what fusion decides on."""
    passes = _pipeline(args)
    names = [p.name for p in passes]
    cut = names.index("fuse") if "fuse" in names else len(passes)
    return argparse.Namespace(**{**vars(args), "pipeline": passes[:cut]})


def _write(args: argparse.Namespace, text: str) -> None:
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as file:
                file.write(text + "\n")
        except OSError as err:
            raise UsageError(f"cannot write {args.output}: {err.strerror}") from None
    else:
        sys.stdout.write(text + "\n")


def command_passes(args: argparse.Namespace) -> int:
    """`ember passes`: every pass with its options and one line about it."""
    from ember.passes import ALL_PASSES

    for name, cls in ALL_PASSES.items():
        options = ", ".join(f"{f.name.replace('_', '-')}={f.default}"
                            for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        suffix = f"  {{{options}}}" if options else ""
        print(f"{name:<16} {cls.summary()}{suffix}")
    return 0


def command_opt(args: argparse.Namespace) -> int:
    """`ember opt FILE.ir -p PIPELINE`: run passes on IR text (like mlir-opt)."""
    text = _read_ir(args.file)
    try:
        graph = ember.parse(text)
        ember.verify(graph)
    except EmberError as err:
        raise UsageError(f"{args.file}:{str(err).splitlines()[0]}") from None
    result = _run_passes(graph, args)
    report = _pass_report(args)
    _write(args, (report + "\n" if report else "") + _render(result, args.format))
    return 0


def command_cache(args: argparse.Namespace) -> int:
    """`ember cache info|clear`: the on-disk cache of compiled object code."""
    from ember.backend.llvm import cache

    if args.action == "clear":
        print(f"removed {cache.clear()} entries from {cache.cache_dir()}")
    else:
        print(cache.info())
    return 0


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated integers, got {text!r}") from None


def command_bench(args: argparse.Namespace) -> int:
    """`ember bench TARGET`: time the opt levels side by side (and ONNX Runtime, PyTorch)."""
    from ember.bench import DEFAULT_COMPARE, bench

    target = load_target(args.target, args.shape)
    levels = _int_list(args.levels, "--levels")
    if not levels or any(level not in (0, 1, 2, 3) for level in levels):
        raise UsageError(f"--levels takes opt levels 0 to 3, got {args.levels!r}")
    compare = [name.strip() for name in args.compare.split(",") if name.strip()]
    unknown = [name for name in compare if name not in DEFAULT_COMPARE]
    if unknown:
        raise UsageError(f"--compare: unknown peer {unknown[0]!r} (known: "
                         f"{', '.join(DEFAULT_COMPARE)})")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    try:
        result = bench(target.model, target.example_inputs, levels=levels, threads=args.threads,
                       repeats=args.repeats, warmup=args.warmup, compare=compare,
                       ablate=args.ablate, name=target.where)
    except (EmberError, ValueError, RuntimeError) as err:
        raise UsageError(f"cannot benchmark {target.where}: {str(err).splitlines()[0]}"
                         ) from None
    print(result.table())
    if args.profile:
        print(_kernel_profile(target, args))
    if args.json:
        try:
            result.write_json(args.json)
        except OSError as err:
            raise UsageError(f"cannot write {args.json}: {err.strerror}") from None
    if args.plot:
        from ember.bench import chart_groups, write_chart

        title = (f"{target.where}: median ms per call, {result.threads} "
                 f"thread{'s' if result.threads > 1 else ''}")
        try:
            write_chart(args.plot, title, chart_groups(result))
        except OSError as err:
            raise UsageError(f"cannot write {args.plot}: {err.strerror}") from None
    failed = not result.ok or any(row.failure for row in result.levels)
    return 1 if failed else 0


def _kernel_profile(target: Any, args: argparse.Namespace) -> str:
    """Level 3's time per kernel (a build with a cycle counter around every kernel call)."""
    import ember

    try:
        executable = ember.compile(target.model, *target.example_inputs, threads=args.threads,
                                   target=_compile_target(args))
        profile = executable.native.profile(*target.example_inputs, runs=args.repeats)
    except (EmberError, ValueError, RuntimeError) as err:
        raise UsageError(f"cannot profile {target.where}: {str(err).splitlines()[0]}") from None
    threads = args.threads if args.threads is not None else "default"
    return f"\n{target.where}, level 3, threads {threads}: {profile}"


def _add_target_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", dest="compile_target", metavar="TARGET", default="cpu",
                        help="what to compile for: cpu (this host, the default), cpu:NAME "
                             "(an LLVM CPU name: x86-64-v3, znver4, sapphirerapids, ...) or "
                             "cuda[:sm_XX]")


def _add_shape_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=DIMS",
                        help="pin an ONNX input's shape (input=1x3x224x224) or a symbolic "
                             "dimension (batch=1); repeatable")


def _add_pass_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--passes", dest="pipeline", metavar="PIPELINE",
                        help='passes to run, e.g. "fold-constants,cse,fuse{max-ops=8}" '
                        "(default: the opt level's pipeline)")
    parser.add_argument("-O", "--opt-level", type=int, default=3, choices=[0, 1, 2, 3],
                        help="whose default pipeline to run (default: 3)")
    parser.add_argument("--print-after-all", action="store_true",
                        help="print the IR after every pass")
    parser.add_argument("--after", action="append", metavar="PASS",
                        help="print the IR after each run of PASS (repeatable)")
    parser.add_argument("--diff", action="store_true",
                        help="a unified diff for each pass that changed the IR")
    parser.add_argument("--format", choices=["text", "dot"], default="text",
                        help="text IR (parses back) or Graphviz dot (default: text)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors reported as one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"ember: error: {message} (see `ember --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `ember` argument parser, one subparser per command."""
    parser = _Parser(prog="ember", description="Ember: a deep-learning compiler. Trace a model "
                     "and look at its IR.")
    parser.add_argument("--version", action="version", version=f"ember {ember.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    ir = commands.add_parser("ir", help="print the IR of a model", description="Print the IR "
                             "of a model. TARGET is file.py (defines `model` and `example_inputs`) "
                             "or file.py:NAME (a function or module in that file).")
    ir.add_argument("target", metavar="TARGET", help="file.py, file.py:NAME or model.onnx")
    _add_shape_option(ir)
    ir.add_argument("--stage", choices=list(STAGES), default="traced",
                    help="which stage of the pipeline to print (default: traced)")
    _add_target_option(ir)
    ir.add_argument("--explain", choices=["fusion"],
                    help="say why each fusion candidate was or was not fused")
    ir.add_argument("--remarks", action="store_true",
                    help="with --stage llvm or asm: after the code, LLVM's loop-vectorize "
                    "remarks grouped by kernel, as comments: '+' a loop vectorized (width, "
                    "interleave count), '-' a loop not vectorized and why; the kernel's "
                    "graph statement heads each group (GEMM and thread-pool functions last)")
    _add_pass_options(ir)
    ir.set_defaults(run=command_ir)
    passes = commands.add_parser("passes", help="list the graph passes")
    passes.set_defaults(run=command_passes)
    opt = commands.add_parser("opt", help="run passes on IR text (like mlir-opt)",
                              description="Parse FILE.ir (or - for stdin), run a pipeline, "
                              "print the result.")
    opt.add_argument("file", metavar="FILE.ir")
    _add_pass_options(opt)
    opt.set_defaults(run=command_opt)
    cache = commands.add_parser("cache", help="the compiled-code cache (EMBER_CACHE_DIR)")
    cache.add_argument("action", choices=["info", "clear"])
    cache.set_defaults(run=command_cache)
    bench = commands.add_parser("bench", help="time a model at each opt level",
                                description="Time a model at opt levels 0 to 3 side by side "
                                "(median, spread, speedup over level 0, arena, compile time), "
                                "with ONNX Runtime as a peer; outputs are checked against "
                                "level 0. Exit status 1 when a level does not compile or any "
                                "output differs from level 0.")
    bench.add_argument("target", metavar="TARGET", help="file.py, file.py:NAME or model.onnx")
    _add_shape_option(bench)
    bench.add_argument("--threads", type=int, metavar="N",
                       help="threads (default: EMBER_NUM_THREADS, else every CPU)")
    bench.add_argument("--levels", default="0,1,2,3", metavar="L,L,...",
                       help="opt levels to time (default: 0,1,2,3)")
    bench.add_argument("--repeats", type=int, default=20, metavar="N",
                       help="timed calls per row (default: 20)")
    bench.add_argument("--warmup", type=int, default=3, metavar="N",
                       help="untimed calls first (default: 3)")
    bench.add_argument("--compare", default="onnxruntime,torch", metavar="PEERS",
                       help="peers to run when installed: onnxruntime, torch (torch needs a "
                       "PyTorch model: from the command line it is listed as not given); "
                       "'' for none")
    bench.add_argument("--ablate", action="store_true",
                       help="also time level 3 without each pass of its pipeline")
    bench.add_argument("--json", metavar="FILE", help="write every number to FILE")
    bench.add_argument("--plot", metavar="FILE.svg",
                       help="draw the medians as an SVG bar chart (level 3 against the other "
                       "levels and the peers)")
    bench.add_argument("--profile", action="store_true",
                       help="also print level 3's median time per kernel, slowest first")
    bench.set_defaults(run=command_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `ember` command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.run(args)
    except UsageError as err:
        print(f"ember: error: {err}", file=sys.stderr)
    except EmberError as err:  # one a command did not put in its own words
        print(f"ember: error: {str(err).splitlines()[0]}", file=sys.stderr)
    except MemoryError:
        print("ember: error: out of memory", file=sys.stderr)
    except SystemExit as exit_:  # only user code exits from inside a command
        print(f"ember: error: {getattr(args, 'target', 'the model')} called "
              f"sys.exit({exit_.code!r}) while being run", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
