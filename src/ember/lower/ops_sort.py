"""The loop nest of `topk`: sorting by counting places.

topk: each element's place in its row is the number of row elements that come before it (the
order of `ember.ops.sort`: larger first for `largest`, NaN beyond every number, ties by index),
so every row is a permutation written by one store per element, no data-dependent control
flow, the same code on every target. Elements whose place is k or more are not stored:

    for r < outer:  for j < inner:  for i < n:
      const float xi = x[(r * n + i) * inner + j];  int64_t place = 0;
      for m < n:  place += before(x[(r * n + m) * inner + j], m, xi, i);
      if (place < k) { values[(r * k + place) * inner + j] = xi; indices[...] = i; }

That is n^2 comparisons per row, for rows of up to COUNTING_LIMIT. Longer rows are sorted by a
bitonic network: copied with their indices into scratch, padded to a power of two N (padding
after every element), then log2(N) (log2(N) + 1) / 2 passes of N / 2 compare-exchanges each,
entries ordered by (value, index) as above, so the network's order is the stable one; the
first k entries are the result. Every pass is a loop over rows, as static as the counting.
"""

from __future__ import annotations

import math

from ember.ir.graph import Node
from ember.ir.ops import normalize_axis
from ember.ir.types import DType
from ember.lower.loops import (
    Assign,
    Binary,
    Buffer,
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
from ember.lower.ops_linalg import div, let, loop, outer_loop, rem
from ember.lower.rules import LowerContext, lowers

I64 = DType.I64
COUNTING_LIMIT = 32  # longer rows sort by the bitonic network


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
    """Places by counting for short rows, a bitonic network for long ones (see the module
    docstring)."""
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
    if size > COUNTING_LIMIT:
        return _bitonic(ctx, (outer, size, inner), k, largest)

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


def _bitonic(ctx: LowerContext, shape: tuple[int, int, int], k: int, largest: bool
             ) -> tuple[Stmt, ...]:
    """Rows copied into scratch (keys and their indices) padded to a power of two, sorted by
    the compare-exchange passes of a bitonic network, and their first k entries stored."""
    outer, size, inner = shape
    x = ctx.inputs[0]
    values, indices = ctx.outputs
    rows, width = outer * inner, 1 << (size - 1).bit_length()
    keys = ctx.scratch(x.dtype, rows * width, "keys")
    order = ctx.scratch(I64, rows * width, "order")

    def copy_in(row: Expr) -> list[Stmt]:
        def entry(p: Expr) -> list[Stmt]:
            source = add(mul(add(mul(div(row, inner), index_imm(size)), p), index_imm(inner)),
                         rem(row, inner))
            safe = Select(Binary("lt", p, index_imm(size)), source, index_imm(0))
            at = add(mul(row, index_imm(width)), p)
            return [Store(keys, at, Load(x, safe)), Store(order, at, p)]

        return loop(ctx, width, entry)

    statements = outer_loop(ctx, rows, copy_in)
    block = 2
    while block <= width:
        stride = block // 2
        while stride >= 1:
            statements += _exchange_pass(ctx, keys, order, (rows, width, size), block, stride,
                                         largest)
            stride //= 2
        block *= 2

    def copy_out(row: Expr) -> list[Stmt]:
        def entry(t: Expr) -> list[Stmt]:
            at = add(mul(row, index_imm(width)), t)
            target = add(mul(add(mul(div(row, inner), index_imm(k)), t), index_imm(inner)),
                         rem(row, inner))
            return [Store(values, target, Load(keys, at)), Store(indices, target, Load(order, at))]

        return loop(ctx, k, entry)

    return (*statements, *outer_loop(ctx, rows, copy_out))


def _exchange_pass(ctx: LowerContext, keys: Buffer, order: Buffer, shape: tuple[int, int, int],
                   block: int, stride: int, largest: bool) -> list[Stmt]:
    """One pass: within each group q of 2 * stride entries, entry i = q * 2 * stride + t
    (t < stride) is compared with i + stride, and the one that comes first goes to i in an
    ascending block (i / block even), last in a descending one. The direction is the group's
    (a block holds whole groups), and the accesses are affine in t: vector code."""
    rows, width, size = shape

    def row(r: Expr) -> list[Stmt]:
        def group(q: Expr) -> list[Stmt]:
            local: list[Stmt] = []
            start = let(local, ctx, add(mul(r, index_imm(width)),
                                        mul(q, index_imm(2 * stride))), "g")
            ascending = let(local, ctx, Binary("eq", rem(div(mul(q, index_imm(2 * stride)),
                                                             block), 2), index_imm(0)), "up")

            def pair(t: Expr) -> list[Stmt]:
                at_a = add(start, t)
                at_b = add(at_a, index_imm(stride))
                inner: list[Stmt] = []
                key_a, key_b = (let(inner, ctx, Load(keys, at), "k") for at in (at_a, at_b))
                index_a, index_b = (let(inner, ctx, Load(order, at), "n") for at in (at_a, at_b))
                b_first = _entry_before((key_b, index_b), (key_a, index_a), size, largest)
                a_first = _entry_before((key_a, index_a), (key_b, index_b), size, largest)
                swap = let(inner, ctx, Select(ascending, b_first, a_first), "s")
                return [*inner, Store(keys, at_a, Select(swap, key_b, key_a)),
                        Store(keys, at_b, Select(swap, key_a, key_b)),
                        Store(order, at_a, Select(swap, index_b, index_a)),
                        Store(order, at_b, Select(swap, index_a, index_b))]

            return local + loop(ctx, stride, pair)

        return loop(ctx, width // (2 * stride), group)

    return outer_loop(ctx, rows, row)


def _entry_before(a: tuple[Expr, Expr], b: tuple[Expr, Expr], size: int, largest: bool) -> Expr:
    """Whether entry a (key, index) comes before entry b: real entries in the row's order,
    then the padding (indices >= size) in index order."""
    pad_a = Binary("ge", a[1], index_imm(size))
    pad_b = Binary("ge", b[1], index_imm(size))
    both_real = Binary("and", Unary("not", pad_a), Unary("not", pad_b))
    real_first = Binary("and", Unary("not", pad_a), pad_b)
    both_pad = Binary("and", Binary("and", pad_a, pad_b), Binary("lt", a[1], b[1]))
    ordered = Binary("and", both_real, _before(a[0], a[1], b[0], b[1], largest))
    return Binary("or", Binary("or", real_first, both_pad), ordered)
