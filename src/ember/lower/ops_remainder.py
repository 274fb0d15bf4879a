"""`fmod`: C's fmod, exact on every target.

On CPUs `fmod` is LLVM's `frem` (the C library's fmod, exact), one elementwise loop nest. The
NVPTX backend expands `frem` as x - trunc(x / y) * y, which is wrong once x / y needs more bits
than the mantissa holds, so on CUDA targets each element is reduced by binary long division,
every step exact: the divisor d = |y| is doubled while 2d <= |x|, then for each halving
r >= d ? r - d : r (Sterbenz: d <= r < 2d makes the difference exact) until d = |y| again:

    d = |y|;  for (e < STEPS) d = (2d <= |x|) ? 2d : d;
    r = |x|;  for (e < STEPS) { r = (r >= d) ? r - d : r;  d = (d > |y|) ? d / 2 : d; }
    out = (y == 0 || |x| == inf || nan) ? nan : (|x| < |y|) ? x : copysign(r, x)

STEPS covers the whole exponent range (280 for f32, 2101 for f64): slow, and exact. The row is
not `elementwise`, so fusion leaves fmod nodes alone and this lowering always sees its target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ember.ir.graph import Node
from ember.ir.types import DType
from ember.lower.loops import (
    Assign,
    Binary,
    Expr,
    Let,
    Load,
    Local,
    Loop,
    Select,
    Stmt,
    Store,
    Unary,
    broadcast_strides,
    imm,
    linear_index,
    loop_nest,
    strides_of,
)
from ember.lower.ops_elementwise import lower_elementwise
from ember.lower.rules import LowerContext, lowers, scalar_rule


def _steps(dtype: DType) -> int:
    """Doublings (and halvings) that take the smallest subnormal past the largest finite
    value: 280 for f32, 2101 for f64."""
    info = np.finfo(dtype.numpy)
    return int(info.maxexp - info.minexp + info.nmant + 3)


@scalar_rule("fmod")
def fmod(node: Node, operands: Sequence[Expr]) -> Expr:
    """C's fmod as LLVM's frem (exact on CPUs)."""
    a, b = operands
    return Binary("rem", a, b)


@lowers("fmod")
def lower_fmod(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """frem on CPUs; binary long division on CUDA targets (see the module docstring)."""
    if ctx.target.kind != "cuda":
        return lower_elementwise(node, ctx)
    out_type = ctx.output_types[0]
    if out_type.size == 0:
        return ()
    strides = [broadcast_strides(t.shape, out_type.shape) for t in ctx.input_types]

    def body(indices: list) -> list[Stmt]:
        a, b = (ctx.names.fresh(name, out_type.dtype) for name in ("a", "b"))
        loads = [Let(var, Load(buffer, linear_index(indices, stride)))
                 for var, buffer, stride in zip((a, b), ctx.inputs, strides, strict=True)]
        where = linear_index(indices, strides_of(out_type.shape))
        return [*loads, *_long_division(ctx, a, b, ctx.outputs[0], where)]

    return loop_nest(ctx.names, out_type.shape, body)


def _long_division(ctx: LowerContext, a: Expr, b: Expr, out: object, where: Expr
                   ) -> list[Stmt]:
    dtype = a.dtype
    steps = _steps(dtype)
    two, half = imm(2.0, dtype), imm(0.5, dtype)
    size, divisor = ctx.names.fresh("ax", dtype), ctx.names.fresh("by", dtype)
    d, r = ctx.names.fresh("d", dtype), ctx.names.fresh("r", dtype)
    up, down = ctx.names.fresh("e"), ctx.names.fresh("e")
    doubled = Binary("mul", d, two)
    statements: list[Stmt] = [
        Let(size, Unary("abs", a)), Let(divisor, Unary("abs", b)),
        Local(d, divisor),
        Loop(up, steps, (Assign(d, Select(Binary("le", doubled, size), doubled, d)),)),
        Local(r, size),
        Loop(down, steps, (
            Assign(r, Select(Binary("ge", r, d), Binary("sub", r, d), r)),
            Assign(d, Select(Binary("gt", d, divisor), Binary("mul", d, half), d)))),
    ]
    nan = imm(math.nan, dtype)
    invalid = Binary("or", Binary("or", Binary("eq", divisor, imm(0.0, dtype)),
                                  Binary("eq", size, imm(math.inf, dtype))),
                     Binary("or", Binary("ne", a, a), Binary("ne", b, b)))
    signed = Select(Binary("lt", a, imm(0.0, dtype)), Unary("neg", r), r)
    value = Select(invalid, nan, Select(Binary("lt", size, divisor), a, signed))
    statements.append(Store(out, where, value))  # type: ignore[arg-type]
    return statements
