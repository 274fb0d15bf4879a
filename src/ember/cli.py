"""The `ember` command line: look at what Ember makes of a model, stage by stage.

    ember ir examples/mlp.py                    # the traced IR of `model` on `example_inputs`
    ember ir examples/mlp.py:model --format dot # Graphviz, for `dot -Tsvg`
    ember ir my_model.py:block -o block.ir      # NAME: a function or module in the file

A TARGET file is imported under a private module name (never `"__main__"`), so the script part
of an example does not run. It defines the model (`model`, or the NAME given after a colon) and
`example_inputs`, a tuple or list of numpy arrays.

Every mistake a user can make (a missing file, a missing name, a syntax error, code that cannot
be traced) ends with one line on stderr, `ember: error: ...`, and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
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

EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake: reported as one `ember: error:` line, exit status 2."""


@dataclass(frozen=True)
class Target:
    """What `ember ir TARGET` works on: a callable, its example inputs and a graph name."""

    model: Callable[..., Any]
    example_inputs: tuple[Any, ...]
    name: str  # the graph's name: the file's stem, or NAME
    path: str  # the file as given
    where: str  # "file.py" or "file.py:NAME", for messages


# -- loading a target -----------------------------------------------------------------------------


def _import_file(path: str) -> ModuleType:
    """Import a Python file by path, with a `__name__` that is not `"__main__"`."""
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
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


def load_target(text: str) -> Target:
    """Resolve `file.py` or `file.py:NAME` into a model and its example inputs."""
    if text.endswith(".onnx"):
        raise UsageError(f"{text}: ONNX targets are not supported by `ember ir` yet")
    path, name = text, ""
    if ":" in text and not os.path.isfile(text):
        path, _, name = text.rpartition(":")
    module = _import_file(path)
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
    return Target(model, _example_inputs(module, path), graph_name, path, where)


def _trace(target: Target) -> Graph:
    try:
        return ember.trace(target.model, *target.example_inputs, name=target.name)
    except EmberError as err:
        raise UsageError(f"cannot trace {target.where}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # user code raised while being traced
        raise UsageError(f"cannot trace {target.where}: {_describe(err, target.path)}") from None


# -- stages ---------------------------------------------------------------------------------------

StageFn = Callable[[Target], Graph]

# Each stage takes the loaded target to what `ember ir --stage NAME` prints. Later stages
# (optimized, loops, llvm) are further entries of this table.
STAGES: dict[str, StageFn] = {
    "traced": _trace,
}


def _render(result: Graph, fmt: str) -> str:
    if fmt == "dot":
        from ember.ir.dot import to_dot

        return to_dot(result)
    return str(result)


# -- commands -------------------------------------------------------------------------------------


def command_ir(args: argparse.Namespace) -> int:
    """`ember ir TARGET`: print the IR of a model at one stage."""
    target = load_target(args.target)
    text = _render(STAGES[args.stage](target), args.format)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as file:
                file.write(text + "\n")
        except OSError as err:
            raise UsageError(f"cannot write {args.output}: {err.strerror}") from None
    else:
        sys.stdout.write(text + "\n")
    return 0


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
    ir.add_argument("target", metavar="TARGET", help="file.py or file.py:NAME")
    ir.add_argument("--stage", choices=list(STAGES), default="traced",
                    help="which stage of the pipeline to print (default: traced)")
    ir.add_argument("--format", choices=["text", "dot"], default="text",
                    help="text IR (parses back) or Graphviz dot (default: text)")
    ir.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    ir.set_defaults(run=command_ir)
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
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
