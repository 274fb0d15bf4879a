"""Parser of the graph IR text form (the grammar is in `ember.ir.printer`).

Errors are `IRParseError`s that carry `line:col` and show the source line with a caret:

    IRParseError: 3:18: expected ':' before result type
      %0 = relu(%x) f32[4]
                   ^
The parser checks syntax and names; types are checked against the op rules by `verify`.

Input is `str`, or `bytes` holding UTF-8. Whatever the input, the parser returns a Graph or
raises IRParseError, in time linear in its length. Bounds, each an IRParseError at the
offending token:

- nesting: attribute lists and regions nest at most `MAX_NESTING` (32) deep;
- sizes: every type has fewer than 2^40 elements (`ember.ir.types.ELEMENT_LIMIT`);
- numbers: attribute and constant numbers fit their type (i64 or f64 for attributes); a
  finite literal never reads as infinity.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from ember.errors import IRParseError, ShapeError
from ember.ir.attrs import Attrs, AttrValue, Const
from ember.ir.graph import Graph, Node, Value
from ember.ir.types import DType, TensorType, check_layout

MAX_NESTING = 32  # the deepest an attribute list or a region may nest
_I64 = np.iinfo(np.int64)

_TOKEN_RE = re.compile(
    r"""
    (?P<space>[ \t\r]+)
  | (?P<newline>\n)
  | (?P<comment>//[^\n]*)
  | (?P<type>[A-Za-z_][A-Za-z0-9_]*\[[^\[\]\n(){}<>:%]*\](?:\{[^{}\n=]*\})?)
  | (?P<digest>sha1:[0-9a-f]{40}(?![A-Za-z0-9_]))
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<symbol>@(?:[A-Za-z_][A-Za-z0-9_.]*|"(?:[^"\\\n]|\\.)*"))
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<open_string>")
  | (?P<arrow>->)
  | (?P<number>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|inf|nan)(?![A-Za-z0-9_]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(){}\[\],=:^<>])
    """,
    re.VERBOSE,
)
_INT_RE = re.compile(r"^[-+]?\d+$")

@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    line: int
    col: int


def tokenize(text: str) -> list[Token]:
    """Split text into tokens with positions; newlines are dropped, comments are kept."""
    tokens: list[Token] = []
    line, line_start, pos = 1, 0, 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        col = pos - line_start + 1
        if match is None:
            source = text[line_start:].split("\n", 1)[0]
            raise IRParseError(f"unexpected character {text[pos]!r}", line, col, source)
        kind = match.lastgroup or ""
        if kind == "open_string":
            source = text[line_start:].split("\n", 1)[0]
            raise IRParseError("unterminated string", line, col, source)
        if kind == "newline":
            line, line_start = line + 1, match.end()
        elif kind != "space":
            tokens.append(Token(kind, match.group(), line, col))
        pos = match.end()
    # End of input is reported just after the last token, where something is missing.
    last = tokens[-1] if tokens else Token("eof", "", 1, 1)
    tokens.append(Token("eof", "", last.line, last.col + len(last.text)))
    return tokens


class TypeSyntaxError(ValueError):
    """A malformed type; `offset` is the position of the bad part within the type's text."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


_DTYPES = ", ".join(d.value for d in DType)


def _an(dtype: DType) -> str:
    """`dtype` with its article, as read aloud: "an i8", "an f16", "a u8", "a bf16"."""
    return f"{'an' if dtype.value[0] in 'fi' else 'a'} {dtype}"


def parse_type(text: str) -> TensorType:
    """`f32[8,256]{nhwc}` -> TensorType; raises TypeSyntaxError naming the bad part."""
    dtype_text, rest = text.split("[", 1)
    if dtype_text not in DType._value2member_map_:
        raise TypeSyntaxError(f"unknown dtype {dtype_text!r} (expected one of {_DTYPES})")
    dims_text, layout_text = rest.split("]", 1)
    dims: list[int] = []
    offset = len(dtype_text) + 1
    for part in dims_text.split(",") if dims_text.strip() else []:
        where = offset + len(part) - len(part.lstrip())
        if not part.strip().isdigit() or not part.strip().isascii():
            raise TypeSyntaxError(f"dimension {part.strip()!r} is not a non-negative integer",
                                  where)
        if len(part.strip()) > 19 or int(part) > _I64.max:  # also before int() of 5000 digits
            raise TypeSyntaxError(f"dimension {_shorten(part.strip())} does not fit in i64",
                                  where)
        dims.append(int(part))
        offset += len(part) + 1
    layout = layout_text[1:-1] if layout_text else ""
    try:
        check_layout(layout)
    except ValueError as err:
        raise TypeSyntaxError(str(err), len(dtype_text) + len(dims_text) + 2) from None
    if layout_text and not layout:
        raise TypeSyntaxError("empty layout (leave out '{}' for the default layout)",
                              len(dtype_text) + len(dims_text) + 2)
    try:
        return TensorType(DType(dtype_text), tuple(dims), layout)
    except ShapeError as err:
        raise TypeSyntaxError(str(err), len(dtype_text) + 1) from None


def _shorten(text: str) -> str:
    """`text`, or its start and length when it is too long to show in a message."""
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


class _Parser:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.tokens = tokenize(text)
        self.pos = 0
        self.scopes: list[dict[str, Value]] = []
        self.depth = 0  # attribute lists and regions open around the current token

    def enter(self, token: Token, what: str) -> None:
        """Open one level of nesting at `token`; IRParseError beyond MAX_NESTING."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"{what} nested more than {MAX_NESTING} deep", token)

    # -- token helpers -------------------------------------------------------------------------

    def _next_index(self) -> int:
        """Index of the next token that is not a comment (comments are skipped lazily, so a
        statement's trailing comment is still there to be read as its location)."""
        index = self.pos
        while self.tokens[index].kind == "comment":
            index += 1
        return index

    def peek(self) -> Token:
        return self.tokens[self._next_index()]

    def error(self, message: str, token: Token | None = None) -> IRParseError:
        token = token or self.peek()
        source = self.lines[token.line - 1] if token.line <= len(self.lines) else ""
        return IRParseError(message, token.line, token.col, source)

    def next(self) -> Token:
        index = self._next_index()
        self.pos = index + 1
        return self.tokens[index]

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token.text == text and token.kind in ("punct", "ident", "arrow"):
            self.next()
            return True
        return False

    def expect(self, text: str, context: str) -> Token:
        token = self.peek()
        if not self.accept(text):
            found = repr(token.text) if token.text else "end of input"
            raise self.error(f"expected '{text}' {context}, found {found}")
        return token

    def expect_kind(self, kind: str, context: str) -> Token:
        token = self.peek()
        if token.kind != kind:
            found = repr(token.text) if token.text else "end of input"
            raise self.error(f"expected {kind} {context}, found {found}")
        return self.next()

    def trailing_comment(self, line: int) -> str:
        """The text of a comment token that follows on `line`, consumed; else ""."""
        token = self.tokens[self.pos]
        if token.kind == "comment" and token.line == line:
            self.pos += 1
            return token.text[2:].strip()
        return ""

    # -- values and types ----------------------------------------------------------------------

    def define(self, token: Token, value: Value) -> None:
        name = token.text[1:]
        if name in self.scopes[-1]:
            raise self.error(f"value %{name} is defined twice", token)
        self.scopes[-1][name] = value

    def use(self) -> Value:
        token = self.expect_kind("value", "(an SSA value such as %0)")
        value = self.scopes[-1].get(token.text[1:])
        if value is None:
            raise self.error(f"use of undefined value {token.text}", token)
        return value

    def parse_type(self) -> TensorType:
        token = self.peek()
        if token.kind == "ident" and self.tokens[self._next_index() + 1].text == "[":
            raise self.error(f"malformed type starting with {token.text!r} (expected a type "
                             "such as f32[2,3])")
        token = self.expect_kind("type", "(a tensor type such as f32[2,3])")
        try:
            return parse_type(token.text)
        except TypeSyntaxError as err:
            where = Token(token.kind, token.text, token.line, token.col + err.offset)
            raise self.error(str(err), where) from None

    def parse_params(self) -> tuple[Value, ...]:
        params: list[Value] = []
        self.expect("(", "before parameters")
        while not self.accept(")"):
            if params:
                self.expect(",", "between parameters")
            token = self.expect_kind("value", "(a parameter name)")
            self.expect(":", "after a parameter name")
            value = Value(self.parse_type(), token.text[1:])
            self.define(token, value)
            params.append(value)
        return tuple(params)

    # -- attributes ----------------------------------------------------------------------------

    def parse_attrs(self) -> Attrs:
        items: dict[str, AttrValue] = {}
        while True:
            key = self.expect_kind("ident", "(an attribute name)")
            if key.text in items:
                raise self.error(f"attribute {key.text!r} is given twice", key)
            self.expect("=", "after an attribute name")
            items[key.text] = self.parse_attr()
            if self.accept("}"):
                return Attrs(items)
            self.expect(",", "between attributes")

    def parse_attr(self) -> AttrValue:
        token = self.next()
        if token.kind == "number":
            if _INT_RE.match(token.text):
                return self.integer(token, _I64, DType.I64, "an integer attribute")
            return self.real(token, DType.F64)
        if token.kind == "string":
            return self.string(token)
        if token.kind == "ident" and token.text in ("true", "false"):
            return token.text == "true"
        if token.kind == "ident" and token.text in ("dense", "dense_blob"):
            return self.parse_const(token.text == "dense_blob")
        if token.text == "[":
            self.enter(token, "attribute lists")
            items: list[AttrValue] = []
            while not self.accept("]"):
                if items:
                    self.expect(",", "between list items")
                items.append(self.parse_attr())
            self.depth -= 1
            return tuple(items)
        raise self.error(f"expected an attribute value, found {token.text!r}", token)

    def string(self, token: Token) -> str:
        try:
            return json.loads(token.text)
        except json.JSONDecodeError as err:
            where = Token(token.kind, token.text, token.line, token.col + err.pos)
            raise self.error(f"bad escape in string: {err.msg}", where) from None

    def parse_const(self, blob: bool) -> Const:
        self.expect("<", "after dense" + ("_blob" if blob else ""))
        type_token = self.peek()
        type_ = self.parse_type()
        if type_.layout:
            raise self.error(f"a constant has no layout, found {{{type_.layout}}}", type_token)
        self.expect(":", "after the constant's type")
        if blob:
            return self.parse_blob(type_, type_token)
        start = self.peek()
        elements: list[object] = []
        while not self.accept(">"):
            if elements:
                self.expect(",", "between constant elements")
            elements.append(self.parse_element(type_.dtype))
        if len(elements) != type_.size:
            raise self.error(f"{type_} needs {type_.size} elements, found {len(elements)}", start)
        data = np.array(elements, dtype=type_.dtype.numpy)
        return Const(data.reshape(type_.shape))

    def parse_blob(self, type_: TensorType, type_token: Token) -> Const:
        digest = self.expect_kind("digest", "(sha1:<40 hex digits>)").text[5:]
        self.expect(">", "after the digest")
        const = Const(None, type_, digest)
        if const.data is not None and TensorType.of(const.data) != type_:
            raise self.error(f"dense_blob type {type_} differs from the type of its data in "
                             f"memory ({TensorType.of(const.data)})", type_token)
        return const

    def parse_element(self, dtype: DType) -> bool | int | float:
        """One element of a `dense<...>` constant, checked against the element type."""
        token = self.next()
        if dtype is DType.BOOL:
            if token.text not in ("true", "false") or token.kind != "ident":
                raise self.error(f"expected true or false (a bool element), found {token.text!r}",
                                 token)
            return token.text == "true"
        if token.kind != "number":
            raise self.error(f"expected a number ({_an(dtype)} element), found {token.text!r}",
                             token)
        if dtype.is_int:
            if not _INT_RE.match(token.text):
                raise self.error(f"expected an integer ({_an(dtype)} element), found {token.text}",
                                 token)
            return self.integer(token, np.iinfo(dtype.numpy), dtype, f"{_an(dtype)} element")
        return self.real(token, dtype)

    def real(self, token: Token, dtype: DType) -> float:
        """The number `token` as a float; IRParseError when a finite literal overflows `dtype`
        (only `inf` itself reads as infinity)."""
        value = float(token.text)
        with np.errstate(over="ignore"):
            rounded = dtype.numpy.type(value)
        if not np.isfinite(rounded) and token.text.lstrip("+-") not in ("inf", "nan"):
            raise self.error(f"{_shorten(token.text)} is out of range for {dtype}", token)
        return value

    def integer(self, token: Token, info: np.iinfo, dtype: DType, what: str) -> int:
        """The integer `token` as a Python int, if it is within `info`'s range."""
        digits = token.text.lstrip("+-")
        # NOTE: the length test comes first: int() refuses strings of more than 4300 digits.
        if len(digits) > 20 or not info.min <= int(token.text) <= info.max:
            raise self.error(f"{_shorten(token.text)} is out of range for {dtype} ({what})",
                             token)
        return int(token.text)

    # -- statements ----------------------------------------------------------------------------

    def parse_stmt(self, nodes: list[Node]) -> None:
        results = [self.expect_kind("value", "(a result name)")]
        while self.accept(","):
            results.append(self.expect_kind("value", "(a result name)"))
        self.expect("=", "after results")
        op_token = self.expect_kind("ident", "(an op name)")
        self.expect("(", "before operands")
        operands: list[Value] = []
        while not self.accept(")"):
            if operands:
                self.expect(",", "between operands")
            operands.append(self.use())
        attrs = self.parse_attrs() if self.accept("{") else Attrs()
        self.expect(":", "before result types")
        types = [self.parse_type()]
        while self.accept(","):
            types.append(self.parse_type())
        if len(types) != len(results):
            raise self.error(f"{len(results)} results but {len(types)} types", op_token)
        line = self.tokens[self.pos - 1].line
        body, loc = None, ""
        if self.peek().text == "{" and self.peek().kind == "punct":
            self.next()
            loc = self.trailing_comment(self.tokens[self.pos - 1].line)
            body = self.parse_region()
        else:
            loc = self.trailing_comment(line)
        outputs = tuple(Value(t) for t in types)
        for token, value in zip(results, outputs, strict=True):
            self.define(token, value)
        nodes.append(Node(op_token.text, tuple(operands), outputs, attrs, body, loc))

    def parse_region(self) -> Graph:
        self.enter(self.peek(), "regions")
        self.expect("^", "to start a region")
        self.scopes.append({})
        params = self.parse_params()
        self.expect(":", "after region parameters")
        nodes: list[Node] = []
        while not self.accept("yield"):
            if self.peek().kind != "value":
                raise self.error("expected a statement or 'yield' to end the region")
            self.parse_stmt(nodes)
        outputs = [self.use()]
        while self.accept(","):
            outputs.append(self.use())
        self.expect("}", "to close the region")
        self.scopes.pop()
        self.depth -= 1
        return Graph("region", params, tuple(nodes), tuple(outputs))

    def parse_graph(self) -> Graph:
        self.expect("graph", "at the start")
        name_token = self.expect_kind("symbol", "(the graph name, such as @main)")
        name = name_token.text[1:]
        if name.startswith('"'):
            name = self.string(Token("string", name, name_token.line, name_token.col + 1))
        self.scopes.append({})
        inputs = self.parse_params()
        self.expect("->", "after the parameters")
        self.expect("(", "before result types")
        result_types: list[TensorType] = []
        while not self.accept(")"):
            if result_types:
                self.expect(",", "between result types")
            result_types.append(self.parse_type())
        self.expect("{", "to open the graph body")
        nodes: list[Node] = []
        while not self.accept("return"):
            if self.peek().kind == "eof":
                raise self.error("expected 'return' before the end of input")
            if self.peek().kind != "value":
                raise self.error("expected a statement or 'return' to end the graph")
            self.parse_stmt(nodes)
        return_token = self.peek()
        outputs: list[Value] = []
        if self.peek().kind == "value":
            outputs.append(self.use())
            while self.accept(","):
                outputs.append(self.use())
        self.expect("}", "to close the graph")
        if self.peek().kind != "eof":
            raise self.error(f"unexpected {self.peek().text!r} after the graph")
        declared = [str(t) for t in result_types]
        actual = [str(v.type) for v in outputs]
        if declared != actual:
            raise self.error(f"return types ({', '.join(actual)}) differ from the declared "
                             f"results ({', '.join(declared)})", return_token)
        return Graph(name, inputs, tuple(nodes), tuple(outputs))


def parse_graph(text: str | bytes) -> Graph:
    """Parse the text form of one graph (str, or UTF-8 bytes); raises IRParseError with line and
    column."""
    return _Parser(_as_text(text)).parse_graph()


def _as_text(text: object) -> str:
    if isinstance(text, str):
        return text
    if not isinstance(text, (bytes, bytearray, memoryview)):
        raise IRParseError(f"expected the IR text as str or bytes, got {type(text).__name__}",
                           1, 1)
    data = bytes(text)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise IRParseError(f"byte 0x{data[err.start]:02x} is not UTF-8 (the IR text is UTF-8)",
                           line, col) from None
