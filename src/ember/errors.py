"""The `EmberError` hierarchy: every error a user can see from Ember is one of these.

    EmberError
    ├── IRParseError(message, line, col, source_line)   prints the source line and a caret
    ├── IRVerifyError(node_text, message)               names the offending node
    ├── ShapeError(message)                             inputs that do not fit an op's rule
    ├── TraceError(message, location)                   names the user's file:line
    ├── PassFailed(pass_name, index, previous)          raised `from` the original exception
    ├── LoweringError(node_text, message)
    ├── ExecutionError(message)                         bad inputs to an executable
    └── UnsupportedError(feature)                       "not yet supported" (op, dtype, layout)
"""

from __future__ import annotations


class EmberError(Exception):
    """Base class of every error Ember raises on purpose."""


class IRParseError(EmberError):
    """Text IR that does not parse; the message shows `line:col`, the source line and a caret."""

    def __init__(self, message: str, line: int, col: int, source_line: str = "") -> None:
        self.message = message
        self.line = line
        self.col = col
        self.source_line = source_line
        text = f"{line}:{col}: {message}"
        if source_line:
            text += f"\n  {source_line}\n  {' ' * (col - 1)}^"
        super().__init__(text)


class IRVerifyError(EmberError):
    """A graph that breaks an IR invariant (SSA, order, types); names the offending node."""

    def __init__(self, node_text: str, message: str) -> None:
        self.node_text = node_text
        self.message = message
        where = f"in `{node_text}`: " if node_text else ""
        super().__init__(where + message)


class ShapeError(EmberError):
    """The inputs of an op do not satisfy its shape, dtype or attribute rule."""


class TraceError(EmberError):
    """An error while tracing user code; `location` is the user's `file:line`."""

    def __init__(self, message: str, location: str = "") -> None:
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class PassFailed(EmberError):
    """A pass raised or produced an invalid graph; names it, its position and the passes before."""

    def __init__(self, pass_name: str, index: int, previous: list[str], detail: str = "") -> None:
        self.pass_name = pass_name
        self.index = index
        self.previous = previous
        before = ",".join(previous) if previous else "(none)"
        message = f"pass '{pass_name}' (#{index} in the pipeline, after: {before}) failed"
        super().__init__(f"{message}: {detail}" if detail else message)


class LoweringError(EmberError):
    """A node that cannot be lowered to loops or machine code."""

    def __init__(self, node_text: str, message: str) -> None:
        self.node_text = node_text
        self.message = message
        super().__init__(f'while lowering "{node_text}": {message}')


class ExecutionError(EmberError):
    """A compiled executable was called with inputs that do not match, or could not run."""


class UnsupportedError(EmberError):
    """A feature (op, dtype, layout, argument) that Ember does not support yet."""
