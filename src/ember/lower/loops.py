"""Loop IR: loop nests, loads, stores and scalar math over flat buffers. It prints like C.

    kernel relu_3(f32* in0, f32* out) {
      for (i0 = 0; i0 < 64; i0++)            // parallel
        for (i1 = 0; i1 < 512; i1++)         // vectorize
          out[i0 * 512 + i1] = max(in0[i0 * 512 + i1], 0.0f);
    }

A `Kernel` reads and writes `Buffer`s (flat arrays of one dtype) through index expressions;
loops carry a `kind` that schedules set (serial, parallel, vectorize, unroll), so a schedule is
a transformation of this tree and codegen only follows the marks. Expressions are immutable
trees; scalar temporaries are `Let`s (immutable) or `Local`/`Assign` pairs (accumulators).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Union

from ember.ir.types import DType

# ---------------------------------------------------------------------------------------------
# Expressions.

I64 = DType.I64


@dataclass(frozen=True)
class Buffer:
    """A flat array a kernel reads or writes: `dtype`, `size` elements."""

    name: str
    dtype: DType
    size: int


@dataclass(frozen=True)
class Var:
    """A loop index or a scalar temporary."""

    name: str
    dtype: DType = I64


@dataclass(frozen=True)
class Imm:
    """A scalar constant."""

    value: float | int | bool
    dtype: DType


@dataclass(frozen=True)
class Load:
    buffer: Buffer
    index: Expr

    @property
    def dtype(self) -> DType:
        return self.buffer.dtype


COMPARISONS = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
LOGICAL = frozenset({"and", "or", "xor"})


@dataclass(frozen=True)
class Binary:
    """`op` in add sub mul div rem max min pow, comparisons eq ne lt le gt ge, and or xor;
    on integers also shl, shr (logical), ashr, udiv, urem (bit patterns, for hashing)."""

    op: str
    a: Expr
    b: Expr

    @property
    def dtype(self) -> DType:
        return DType.BOOL if self.op in COMPARISONS else self.a.dtype


@dataclass(frozen=True)
class Unary:
    """`op` is neg, not, abs, or a math function (exp, log, tanh, sigmoid, erf, sqrt, ...)."""

    op: str
    a: Expr

    @property
    def dtype(self) -> DType:
        return self.a.dtype


@dataclass(frozen=True)
class Select:
    cond: Expr
    a: Expr
    b: Expr

    @property
    def dtype(self) -> DType:
        return self.a.dtype


@dataclass(frozen=True)
class Cast:
    a: Expr
    dtype: DType


Expr = Union[Var, Imm, Load, Binary, Unary, Select, Cast]  # noqa: UP007  (runtime alias)


# ---------------------------------------------------------------------------------------------
# Statements.

LOOP_KINDS = ("serial", "parallel", "vectorize", "unroll")


@dataclass(frozen=True)
class Loop:
    """`for (var = 0; var < extent; var++) body`, scheduled as `kind`."""

    var: Var
    extent: int
    body: tuple[Stmt, ...]
    kind: str = "serial"


@dataclass(frozen=True)
class Store:
    buffer: Buffer
    index: Expr
    value: Expr


@dataclass(frozen=True)
class Let:
    """An immutable scalar temporary, visible to the statements after it in the same body."""

    var: Var
    value: Expr


@dataclass(frozen=True)
class Local:
    """A mutable scalar (an accumulator), initialized to `init`."""

    var: Var
    init: Expr


@dataclass(frozen=True)
class Assign:
    var: Var
    value: Expr


@dataclass(frozen=True)
class Pointer:
    """`&buffer[offset]`: an argument of an ExternCall."""

    buffer: Buffer
    offset: Expr


@dataclass(frozen=True)
class ExternCall:
    """A call of a generated library function (a blocked GEMM, say) with pointers and i64s.

    `emit(module)` adds the function to the LLVM module (once per `symbol`) and returns it.
    """

    symbol: str
    emit: Callable[..., object] = field(compare=False, repr=False)
    args: tuple[Pointer | Expr, ...] = ()


@dataclass(frozen=True)
class If:
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()


Stmt = Union[Loop, Store, Let, Local, Assign, If, ExternCall]  # noqa: UP007  (runtime alias)


@dataclass(frozen=True)
class Kernel:
    """One compiled function: `buffers` in argument order, then the body."""

    name: str
    buffers: tuple[Buffer, ...]
    body: tuple[Stmt, ...]
    source: str = ""  # the graph statement this kernel computes, for dumps and errors
    attrs: dict[str, object] = field(default_factory=dict, compare=False)


# ---------------------------------------------------------------------------------------------
# Building helpers.


def imm(value: float | int | bool, dtype: DType) -> Imm:
    if dtype.is_float:
        return Imm(float(value), dtype)
    if dtype is DType.BOOL:
        return Imm(bool(value), dtype)
    return Imm(int(value), dtype)


def index_imm(value: int) -> Imm:
    return Imm(int(value), I64)


def _additive_identity(e: Expr) -> bool:
    if not (isinstance(e, Imm) and e.value == 0):
        return False
    return not e.dtype.is_float or math.copysign(1.0, e.value) < 0


def add(a: Expr, b: Expr) -> Expr:
    """a + b, folding zeros and constants (index arithmetic stays readable). For floats only
    -0.0 is an identity (x + 0.0 is +0.0 for x = -0.0)."""
    if _additive_identity(b):
        return a
    if _additive_identity(a):
        return b
    if isinstance(a, Imm) and isinstance(b, Imm):
        return Imm(a.value + b.value, a.dtype)
    return Binary("add", a, b)


def sum_start(bias: Expr | None, dtype: DType) -> Expr:
    """Where a sum of products that ends in a bias starts: the bias plus +0.0, or +0.0 without
    one. Numpy's, PyTorch's and the reference's sums of products start from +0.0, so a bias of
    -0.0 gives +0.0 where no product is added (a convolution window wholly in the padding)."""
    zero = imm(0, dtype)
    return zero if bias is None else add(bias, zero)


def mul(a: Expr, b: Expr) -> Expr:
    """a * b, folding ones and constants, and zeros of integers (a float x * 0 is NaN for
    x = NaN or inf, and -0.0 for negative x, so it stays a multiply)."""
    if isinstance(b, Imm) and b.value == 1:
        return a
    if isinstance(a, Imm) and a.value == 1:
        return b
    zero = (isinstance(a, Imm) and a.value == 0) or (isinstance(b, Imm) and b.value == 0)
    if zero and not a.dtype.is_float:
        return index_imm(0) if a.dtype is I64 else imm(0, a.dtype)
    if isinstance(a, Imm) and isinstance(b, Imm):
        return Imm(a.value * b.value, a.dtype)
    return Binary("mul", a, b)


def strides_of(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major element strides."""
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def linear_index(indices: Sequence[Expr], strides: Sequence[int]) -> Expr:
    """sum(index_d * stride_d), skipping zero strides (broadcast dimensions)."""
    total: Expr = index_imm(0)
    for index, stride in zip(indices, strides, strict=True):
        if stride:
            total = add(total, mul(index, index_imm(stride)))
    return total


def broadcast_strides(in_shape: Sequence[int], out_shape: Sequence[int]) -> tuple[int, ...]:
    """Strides that read an input of `in_shape` at each index of `out_shape` (numpy rules)."""
    own = strides_of(in_shape)
    offset = len(out_shape) - len(in_shape)
    strides = [0] * len(out_shape)
    for axis, dim in enumerate(in_shape):
        strides[offset + axis] = 0 if dim == 1 and out_shape[offset + axis] != 1 else own[axis]
    return tuple(strides)


class Names:
    """Fresh variable names: i0, i1, ... / t0, t1, ..."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def fresh(self, prefix: str, dtype: DType = I64) -> Var:
        count = self.counts.get(prefix, 0)
        self.counts[prefix] = count + 1
        return Var(f"{prefix}{count}", dtype)


def loop_nest(names: Names, shape: Sequence[int],
              body: Callable[[list[Var]], Iterable[Stmt]]) -> tuple[Stmt, ...]:
    """Loops over every index of `shape` (outermost first) around `body(indices)`.

    A rank-0 shape gives the body alone. The innermost loop is marked for vectorization and
    the outermost (when there are several) for parallel execution; schedules may change that.
    """
    indices = [names.fresh("i") for _ in shape]
    statements = tuple(body(indices))
    for depth in reversed(range(len(shape))):
        kind = "serial"
        statements = (Loop(indices[depth], int(shape[depth]), statements, kind),)
    return statements


# ---------------------------------------------------------------------------------------------
# Printing like C.

_BINARY_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "rem": "%", "eq": "==",
                   "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "and": "&&",
                   "or": "||", "xor": "^", "shl": "<<", "shr": ">>", "ashr": ">>"}
_C_TYPES = {DType.F16: "_Float16", DType.BF16: "__bf16", DType.F32: "float",
            DType.F64: "double", DType.I8: "int8_t", DType.I16: "int16_t", DType.I32: "int32_t",
            DType.I64: "int64_t", DType.U8: "uint8_t", DType.U16: "uint16_t",
            DType.U32: "uint32_t", DType.U64: "uint64_t", DType.BOOL: "bool"}


def format_expr(expr: Expr) -> str:
    if isinstance(expr, Var):
        return expr.name
    if isinstance(expr, Imm):
        if expr.dtype is DType.F32:
            return f"{expr.value!r}f"
        return str(expr.value).lower() if expr.dtype is DType.BOOL else repr(expr.value)
    if isinstance(expr, Load):
        return f"{expr.buffer.name}[{format_expr(expr.index)}]"
    if isinstance(expr, Binary):
        symbol = _BINARY_SYMBOLS.get(expr.op)
        if symbol is None:
            return f"{expr.op}({format_expr(expr.a)}, {format_expr(expr.b)})"
        return f"({format_expr(expr.a)} {symbol} {format_expr(expr.b)})"
    if isinstance(expr, Unary):
        if expr.op == "neg":
            return f"-{format_expr(expr.a)}"
        if expr.op == "not":
            return f"!{format_expr(expr.a)}"
        return f"{expr.op}({format_expr(expr.a)})"
    if isinstance(expr, Select):
        return f"({format_expr(expr.cond)} ? {format_expr(expr.a)} : {format_expr(expr.b)})"
    if isinstance(expr, Cast):
        return f"({_C_TYPES[expr.dtype]}){format_expr(expr.a)}"
    raise TypeError(f"not a loop IR expression: {expr!r}")


def _format_stmt(stmt: Stmt, indent: str) -> list[str]:
    if isinstance(stmt, Loop):
        mark = "" if stmt.kind == "serial" else f"  // {stmt.kind}"
        head = (f"{indent}for (int64_t {stmt.var.name} = 0; {stmt.var.name} < {stmt.extent}; "
                f"{stmt.var.name}++) {{{mark}")
        return [head, *format_body(stmt.body, indent + "  "), indent + "}"]
    if isinstance(stmt, Store):
        return [f"{indent}{stmt.buffer.name}[{format_expr(stmt.index)}] = "
                f"{format_expr(stmt.value)};"]
    if isinstance(stmt, Let):
        return [f"{indent}const {_C_TYPES[stmt.var.dtype]} {stmt.var.name} = "
                f"{format_expr(stmt.value)};"]
    if isinstance(stmt, Local):
        return [f"{indent}{_C_TYPES[stmt.var.dtype]} {stmt.var.name} = {format_expr(stmt.init)};"]
    if isinstance(stmt, Assign):
        return [f"{indent}{stmt.var.name} = {format_expr(stmt.value)};"]
    if isinstance(stmt, ExternCall):
        args = ", ".join(f"&{a.buffer.name}[{format_expr(a.offset)}]" if isinstance(a, Pointer)
                         else format_expr(a) for a in stmt.args)
        return [f"{indent}{stmt.symbol}({args});"]
    if isinstance(stmt, If):
        lines = [f"{indent}if ({format_expr(stmt.cond)}) {{",
                 *format_body(stmt.then, indent + "  ")]
        if stmt.orelse:
            lines += [f"{indent}}} else {{", *format_body(stmt.orelse, indent + "  ")]
        return [*lines, indent + "}"]
    raise TypeError(f"not a loop IR statement: {stmt!r}")


def format_body(body: Sequence[Stmt], indent: str = "  ") -> list[str]:
    return [line for stmt in body for line in _format_stmt(stmt, indent)]


def format_kernel(kernel: Kernel) -> str:
    params = ", ".join(f"{_C_TYPES[b.dtype]}* {b.name}" for b in kernel.buffers)
    lines = [f"// {kernel.source}"] if kernel.source else []
    lines.append(f"kernel {kernel.name}({params}) {{")
    lines += format_body(kernel.body)
    lines.append("}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Traversal, for schedules.


def map_loops(body: Sequence[Stmt], fn: Callable[[Loop, int], Loop]) -> tuple[Stmt, ...]:
    """Rebuild `body` with `fn(loop, depth)` applied to every loop, innermost first."""

    def visit(stmt: Stmt, depth: int) -> Stmt:
        if isinstance(stmt, Loop):
            inner = tuple(visit(s, depth + 1) for s in stmt.body)
            return fn(replace(stmt, body=inner), depth)
        if isinstance(stmt, If):
            return replace(stmt, then=tuple(visit(s, depth) for s in stmt.then),
                           orelse=tuple(visit(s, depth) for s in stmt.orelse))
        return stmt

    return tuple(visit(stmt, 0) for stmt in body)


def is_innermost(loop: Loop) -> bool:
    """True when no loop is nested inside `loop`."""

    def has_loop(stmts: Sequence[Stmt]) -> bool:
        return any(isinstance(s, Loop) or (isinstance(s, If) and (has_loop(s.then) or
                   has_loop(s.orelse))) for s in stmts)

    return not has_loop(loop.body)


# ---------------------------------------------------------------------------------------------
# Walking and substitution, for transformations.


def walk_expr(expr: Expr) -> Iterator[Expr]:
    """`expr` and every expression inside it, parents first."""
    yield expr
    if isinstance(expr, Load):
        yield from walk_expr(expr.index)
    elif isinstance(expr, Binary):
        yield from walk_expr(expr.a)
        yield from walk_expr(expr.b)
    elif isinstance(expr, Select):
        yield from walk_expr(expr.cond)
        yield from walk_expr(expr.a)
        yield from walk_expr(expr.b)
    elif isinstance(expr, (Unary, Cast)):
        yield from walk_expr(expr.a)


def stmt_exprs(stmt: Stmt) -> tuple[Expr, ...]:
    """The expressions `stmt` itself reads (not those of the statements nested in it)."""
    if isinstance(stmt, Store):
        return (stmt.index, stmt.value)
    if isinstance(stmt, (Let, Assign)):
        return (stmt.value,)
    if isinstance(stmt, Local):
        return (stmt.init,)
    if isinstance(stmt, If):
        return (stmt.cond,)
    if isinstance(stmt, ExternCall):
        return tuple(a.offset if isinstance(a, Pointer) else a for a in stmt.args)
    return ()


def walk_stmts(body: Sequence[Stmt]) -> Iterator[Stmt]:
    """Every statement of `body` and every statement nested in it, in program order."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, Loop):
            yield from walk_stmts(stmt.body)
        elif isinstance(stmt, If):
            yield from walk_stmts(stmt.then)
            yield from walk_stmts(stmt.orelse)


def defined_vars(body: Sequence[Stmt]) -> list[Var]:
    """The variables `body` defines (loop indices, Lets, Locals), in program order."""
    return [s.var for s in walk_stmts(body) if isinstance(s, (Loop, Let, Local))]


def substitute_expr(expr: Expr, mapping: Mapping[Var, Expr]) -> Expr:
    """`expr` with every mapped Var replaced; integer add and mul fold constants again (an
    index `i * 9 + c` with i := 2 prints `18 + c`)."""
    if isinstance(expr, Var):
        return mapping.get(expr, expr)
    if isinstance(expr, Imm):
        return expr
    if isinstance(expr, Load):
        return replace(expr, index=substitute_expr(expr.index, mapping))
    if isinstance(expr, Binary):
        a, b = substitute_expr(expr.a, mapping), substitute_expr(expr.b, mapping)
        if expr.op in ("add", "mul") and a.dtype.is_int:  # NOTE: floats keep -0.0 + 0.0
            return add(a, b) if expr.op == "add" else mul(a, b)
        return Binary(expr.op, a, b)
    if isinstance(expr, Select):
        return Select(substitute_expr(expr.cond, mapping), substitute_expr(expr.a, mapping),
                      substitute_expr(expr.b, mapping))
    if isinstance(expr, (Unary, Cast)):
        return replace(expr, a=substitute_expr(expr.a, mapping))
    raise TypeError(f"not a loop IR expression: {expr!r}")


def _renamed(var: Var, mapping: Mapping[Var, Expr]) -> Var:
    """A defined variable under `mapping`: renamed when mapped to a Var, else kept."""
    target = mapping.get(var, var)
    return target if isinstance(target, Var) else var


def substitute(body: Sequence[Stmt], mapping: Mapping[Var, Expr]) -> tuple[Stmt, ...]:
    """`body` with every use of a mapped Var replaced; definitions (loop indices, Lets, Locals,
    Assigns) are renamed where the Var maps to another Var."""

    def expr(value: Expr) -> Expr:
        return substitute_expr(value, mapping)

    def visit(stmt: Stmt) -> Stmt:
        if isinstance(stmt, Loop):
            return replace(stmt, var=_renamed(stmt.var, mapping),
                           body=substitute(stmt.body, mapping))
        if isinstance(stmt, If):
            return If(expr(stmt.cond), substitute(stmt.then, mapping),
                      substitute(stmt.orelse, mapping))
        if isinstance(stmt, Store):
            return Store(stmt.buffer, expr(stmt.index), expr(stmt.value))
        if isinstance(stmt, (Let, Assign)):
            return replace(stmt, var=_renamed(stmt.var, mapping), value=expr(stmt.value))
        if isinstance(stmt, Local):
            return Local(_renamed(stmt.var, mapping), expr(stmt.init))
        if isinstance(stmt, ExternCall):
            args = tuple(Pointer(a.buffer, expr(a.offset)) if isinstance(a, Pointer) else expr(a)
                         for a in stmt.args)
            return replace(stmt, args=args)
        raise TypeError(f"not a loop IR statement: {stmt!r}")

    return tuple(visit(stmt) for stmt in body)
