"""The loop nest of `topk`: sorting by counting places.

topk: each element's place in its row is the number of row elements that come before it (the
order of `ember.ops.sort`: larger first for `largest`, NaN beyond every number, ties by index),
so every row is a permutation written by one store per element, no data-dependent control
flow, the same code on every target. Elements whose place is k or more are not stored:

    for r < outer:  for j < inner:  for i < n:
      const float xi = x[(r * n + i) * inner + j];  int64_t place = 0;
      for m < n:  place += before(x[(r * n + m) * inner + j], m, xi, i);
      if (place < k) { values[(r * k + place) * inner + j] = xi; indices[...] = i; }

That is n^2 comparisons per row: fine for the rows of TopK and of sorting small axes.
"""

from __future__ import annotations

import math

from ember.ir.graph import Node
from ember.ir.ops import normalize_axis
from ember.ir.types import DType
from ember.lower.loops import (
    Assign,
    Binary,
    Expr,
    If,
    Load,
    Local,
    Loop,
    Select,
    Stmt,
    Store,
    Unary,
    add,
    index_imm,
    mul,
)
from ember.lower.ops_linalg import let, loop, outer_loop
from ember.lower.rules import LowerContext, lowers

I64 = DType.I64


def _is_nan(value: Expr) -> Expr:
    return Binary("ne", value, value)


def _before(other: Expr, other_index: Expr, value: Expr, index: Expr, largest: bool) -> Expr:
    """Whether `other` (at other_index) comes before `value` (at index) in the sorted row."""
    ahead = Binary("gt" if largest else "lt", other, value)  # NaN: beyond every number
    tie = Binary("and", Binary("eq", other, value), Binary("lt", other_index, index))
    if other.dtype.is_float:
        nan_other, nan_value = _is_nan(other), _is_nan(value)
        beyond = (Binary("and", nan_other, Unary("not", nan_value)) if largest
                  else Binary("and", nan_value, Unary("not", nan_other)))
        both = Binary("and", Binary("and", nan_other, nan_value),
                      Binary("lt", other_index, index))
        tie = Binary("or", tie, both)
        ahead = Binary("or", ahead, beyond)
    return Binary("or", ahead, tie)


@lowers("topk")
def lower_topk(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """Places by counting (see the module docstring)."""
    x_type = ctx.input_types[0]
    x = ctx.inputs[0]
    values, indices = ctx.outputs
    axis = normalize_axis(int(node.attrs.get("axis", -1)), x_type.ndim)  # type: ignore[arg-type]
    k = int(node.attrs["k"])  # type: ignore[arg-type]
    largest = bool(node.attrs.get("largest", True))
    outer = math.prod(x_type.shape[:axis])
    size = x_type.shape[axis]
    inner = math.prod(x_type.shape[axis + 1:])
    if k == 0 or values.size == 0:
        return ()

    def row(r: Expr) -> list[Stmt]:
        def lane(j: Expr) -> list[Stmt]:
            def element(i: Expr) -> list[Stmt]:
                local: list[Stmt] = []
                at = add(mul(add(mul(r, index_imm(size)), i), index_imm(inner)), j)
                value = let(local, ctx, Load(x, at), "x")
                place = ctx.names.fresh("place", I64)
                m = ctx.names.fresh("m")
                other = Load(x, add(mul(add(mul(r, index_imm(size)), m), index_imm(inner)), j))
                step = Select(_before(other, m, value, i, largest), index_imm(1), index_imm(0))
                local += [Local(place, index_imm(0)),
                          Loop(m, size, (Assign(place, Binary("add", place, step)),))]
                where = add(mul(add(mul(r, index_imm(k)), place), index_imm(inner)), j)
                local.append(If(Binary("lt", place, index_imm(k)),
                                (Store(values, where, value), Store(indices, where, i))))
                return local

            return loop(ctx, size, element)

        return loop(ctx, inner, lane)

    return tuple(outer_loop(ctx, outer, row))
