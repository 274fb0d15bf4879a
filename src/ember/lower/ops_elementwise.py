"""Elementwise ops as scalar expressions, and the loop nest that applies them.

A standalone elementwise node and a fused elementwise region lower the same way: one loop nest
over the output shape whose body loads each input at its broadcast index, computes the
expressions of the nodes in order (a `Let` per value that is used more than once), and stores.
"""

from __future__ import annotations

from collections.abc import Sequence

import ember.ops  # noqa: F401  (the registry rows, read by register_elementwise)
from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import OPS
from ember.ir.types import DType
from ember.lower.loops import (
    Binary,
    Buffer,
    Cast,
    Expr,
    Imm,
    Let,
    Load,
    Select,
    Stmt,
    Store,
    Unary,
    Var,
    broadcast_strides,
    imm,
    linear_index,
    loop_nest,
    strides_of,
)
from ember.lower.rules import LowerContext, lowers, scalar_rule, scalar_rule_for

# -- scalar rules -------------------------------------------------------------------------------

_BINARY_OPS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow",
               "maximum": "max", "minimum": "min", "eq": "eq", "ne": "ne", "lt": "lt",
               "le": "le", "gt": "gt", "ge": "ge", "logical_and": "and", "logical_or": "or",
               "logical_xor": "xor"}
_MATH_OPS = ("exp", "log", "sqrt", "sin", "cos", "floor", "ceil", "round", "tanh", "sigmoid",
             "erf", "silu")


@scalar_rule(*_BINARY_OPS)
def binary(node: Node, operands: Sequence[Expr]) -> Expr:
    a, b = operands
    return Binary(_BINARY_OPS[node.op], a, b)


@scalar_rule(*_MATH_OPS)
def math(node: Node, operands: Sequence[Expr]) -> Expr:
    return Unary(node.op, operands[0])


@scalar_rule("neg")
def neg(node: Node, operands: Sequence[Expr]) -> Expr:
    return Unary("neg", operands[0])


@scalar_rule("abs")
def absolute(node: Node, operands: Sequence[Expr]) -> Expr:
    return Unary("abs", operands[0])


@scalar_rule("logical_not")
def logical_not(node: Node, operands: Sequence[Expr]) -> Expr:
    return Unary("not", operands[0])


@scalar_rule("relu")
def relu(node: Node, operands: Sequence[Expr]) -> Expr:
    # relu(x) -> x < 0 ? 0 : x, as the reference: relu(-0.0) = -0.0, nan propagates (one x86
    # maxps with the operands in this order)
    x = operands[0]
    zero = imm(0, x.dtype)
    return Select(Binary("lt", x, zero), zero, x)


@scalar_rule("leaky_relu")
def leaky_relu(node: Node, operands: Sequence[Expr]) -> Expr:
    # leaky_relu(x) -> x >= 0 ? x : x * alpha
    x = operands[0]
    alpha = imm(node.attrs["alpha"], x.dtype) if x.dtype.is_float else imm(0, x.dtype)
    scaled = Binary("mul", x, alpha) if x.dtype.is_float else _int_leaky(x, node)
    return Select(Binary("ge", x, imm(0, x.dtype)), x, scaled)


def _int_leaky(x: Expr, node: Node) -> Expr:
    # The reference computes x * alpha in float64 and casts back (truncating toward zero).
    product = Binary("mul", Cast(x, DType.F64), imm(node.attrs["alpha"], DType.F64))
    return Cast(product, x.dtype)


@scalar_rule("sign")
def sign(node: Node, operands: Sequence[Expr]) -> Expr:
    # sign(x) -> x > 0 ? 1 : (x < 0 ? -1 : (x == 0 ? 0 : x))   (sign(-0.0) = +0.0 and nan
    # stays nan, as numpy and PyTorch do)
    x = operands[0]
    zero, one = imm(0, x.dtype), imm(1, x.dtype)
    rest = Select(Binary("eq", x, zero), zero, x)
    negative = Select(Binary("lt", x, zero), imm(-1, x.dtype), rest)
    return Select(Binary("gt", x, zero), one, negative)


@scalar_rule("rsqrt")
def rsqrt(node: Node, operands: Sequence[Expr]) -> Expr:
    x = operands[0]
    return Binary("div", imm(1, x.dtype), Unary("sqrt", x))


@scalar_rule("reciprocal")
def reciprocal(node: Node, operands: Sequence[Expr]) -> Expr:
    x = operands[0]
    return Binary("div", imm(1, x.dtype), x)


@scalar_rule("gelu")
def gelu(node: Node, operands: Sequence[Expr]) -> Expr:
    name = "gelu_tanh" if node.attrs["approximate"] == "tanh" else "gelu"
    return Unary(name, operands[0])


@scalar_rule("clip")
def clip(node: Node, operands: Sequence[Expr]) -> Expr:
    # clip(x, lo, hi) -> (x < lo ? lo : x) then (. > hi ? hi : .), each bound only when
    # given: as the reference, x is kept unless strictly outside (clip(-0.0, 0.0) = -0.0), nan
    # in x propagates, and a nan bound gives nan
    x = operands[0]
    result = x
    for name, compare in (("min", "lt"), ("max", "gt")):
        if node.attrs.get(name) is None:
            continue
        bound = _bound(node.attrs[name], x.dtype)
        if bound.value != bound.value:
            return bound
        result = Select(Binary(compare, result, bound), bound, result)
    return result


def _bound(value: object, dtype: DType) -> Imm:
    # The reference converts the bound with the input's dtype (ints truncate).
    return imm(float(value) if dtype.is_float else int(float(value)), dtype)  # type: ignore[arg-type]


@scalar_rule("cast")
def cast(node: Node, operands: Sequence[Expr]) -> Expr:
    return Cast(operands[0], DType(node.attrs["dtype"]))


@scalar_rule("where")
def where(node: Node, operands: Sequence[Expr]) -> Expr:
    cond, a, b = operands
    return Select(cond, a, b)


@scalar_rule("dropout")
def dropout(node: Node, operands: Sequence[Expr]) -> Expr:
    if node.attrs["training"] and node.attrs["p"] > 0:
        raise NotImplementedError("dropout in training mode")  # handled by its own lowering
    return operands[0]


# -- loop nests ---------------------------------------------------------------------------------


def region_statements(body: Graph, params: Sequence[Buffer], outputs: Sequence[Buffer],
                      ctx: LowerContext) -> tuple[Stmt, ...]:
    """One loop nest computing every yield of an elementwise region (or a single node)."""
    shape = body.outputs[0].type.shape
    if any(v.type.shape != shape for v in body.outputs):
        raise ctx.fail("fused outputs of different shapes are not supported yet")

    def inner(indices: list[Var]) -> list[Stmt]:
        statements: list[Stmt] = []
        values: dict[Value, Expr] = {}
        for param, buffer in zip(body.inputs, params, strict=True):
            strides = broadcast_strides(param.type.shape, shape)
            values[param] = Load(buffer, linear_index(indices, strides))
        uses = _use_counts(body)
        for node in body.nodes:
            operands = [values[v] for v in node.inputs]
            statements += division_checks(node, operands, ctx)
            result = _node_expr(node, operands, ctx)
            if uses.get(node.outputs[0], 0) > 1:
                var = ctx.names.fresh("t", result.dtype)
                statements.append(Let(var, result))
                result = var
            values[node.outputs[0]] = result
        index = linear_index(indices, strides_of(shape))
        for value, buffer in zip(body.outputs, outputs, strict=True):
            statements.append(Store(buffer, index, values[value]))
        return statements

    return loop_nest(ctx.names, shape, inner)


def division_checks(node: Node, operands: Sequence[Expr], ctx: LowerContext) -> list[Stmt]:
    """An integer `div` makes the call raise ExecutionError on a zero divisor, naming the node
    and its source line, as the reference does (codegen's division itself never traps)."""
    if node.op != "div" or node.outputs[0].type.dtype.is_float:
        return []
    divisor = operands[1]
    if isinstance(divisor, Imm) and divisor.value != 0:
        return []
    inner = ctx.inner(node, ctx.inputs, ctx.outputs)
    check = inner.raise_if(Binary("eq", divisor, imm(0, divisor.dtype)),
                           "integer division by zero")
    ctx.status = inner.status
    return [check]


def _use_counts(body: Graph) -> dict[Value, int]:
    counts: dict[Value, int] = {}
    for node in body.nodes:
        for value in node.inputs:
            counts[value] = counts.get(value, 0) + 1
    for value in body.outputs:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _node_expr(node: Node, operands: list[Expr], ctx: LowerContext) -> Expr:
    if node.op == "const":
        data = node.attrs["value"].data  # type: ignore[union-attr]
        if data is None or data.size != 1:
            raise ctx.fail("only scalar constants can live inside an elementwise region")
        dtype = DType.from_numpy(data.dtype)
        return imm(data.reshape(()).item(), dtype)
    rule = scalar_rule_for(node.op)
    if rule is None:
        raise ctx.fail(f"{node.op} is not elementwise")
    return rule(node, operands)


def is_elementwise_region(body: Graph) -> bool:
    """True when every node of the region has a scalar rule (or is a scalar constant)."""
    for node in body.nodes:
        if node.op == "const":
            data = node.attrs["value"].data  # type: ignore[union-attr]
            if data is None or data.size != 1:
                return False
        elif scalar_rule_for(node.op) is None or len(node.outputs) != 1 or _random(node):
            return False
    return True


def _random(node: Node) -> bool:
    """Dropout in training draws a mask: it has its own lowering."""
    return node.op == "dropout" and bool(node.attrs["training"]) and node.attrs["p"] > 0  # type: ignore[operator]


def lower_elementwise(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """A single elementwise node: its one-node region."""
    from ember.ir.graph import Graph as G

    params = tuple(node.inputs)
    body = G("region", params, (node,), node.outputs)
    return region_statements(body, ctx.inputs, ctx.outputs, ctx)


def register_elementwise() -> None:
    for op, opdef in OPS.items():
        if opdef.elementwise and op in _ALL_SCALAR_OPS:
            lowers(op)(lower_elementwise)


_ALL_SCALAR_OPS = {*_BINARY_OPS, *_MATH_OPS, "neg", "abs", "logical_not", "relu", "leaky_relu",
                   "sign", "rsqrt", "reciprocal", "gelu", "clip", "cast", "where"}
register_elementwise()
