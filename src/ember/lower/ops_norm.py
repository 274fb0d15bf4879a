"""Softmax, log_softmax, layer_norm, batch_norm and dropout as loop nests.

Softmax-like ops see their input as [outer, A, inner] around the normalized axis A:

- inner == 1 (the last axis): per outer index, three passes over one contiguous row (max,
  exp-sum, write) with register accumulators; the row stays in cache between passes;
- inner > 1: the same passes over whole [A, inner] slabs, the per-column max and sum in scratch,
  so every innermost loop walks `inner` contiguous elements (and vectorizes).

The outer loop is emitted even when it has one iteration: it is the loop the schedule may run
in parallel, and its iterations touch disjoint rows (and disjoint scratch).
"""

from __future__ import annotations

import math

import numpy as np

from ember.ir.graph import Node
from ember.ir.ops import normalize_axis
from ember.ir.types import DType
from ember.lower.loops import (
    Assign,
    Binary,
    Buffer,
    Cast,
    Expr,
    If,
    Let,
    Load,
    Local,
    Loop,
    Select,
    Stmt,
    Store,
    Unary,
    Var,
    add,
    imm,
    index_imm,
    mul,
)
from ember.lower.rules import LowerContext, lowers

I32, I64 = DType.I32, DType.I64


def _loop(var: Var, extent: int, *body: Stmt) -> Loop:
    return Loop(var, extent, tuple(body))


# ---------------------------------------------------------------------------------------------
# softmax, log_softmax.


@lowers("softmax", "log_softmax")
def lower_softmax(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """Numerically stable: m = max over the axis, s = sum(exp(x - m)), then
    softmax = exp(x - m) * (1 / s) and log_softmax = (x - m) - log(s).

    Loop order: see the module docstring (rows when the axis is last, slabs otherwise).
    """
    x_type = ctx.input_types[0]
    source, target = ctx.inputs[0], ctx.outputs[0]
    dtype = x_type.dtype
    if x_type.size == 0:
        return ()
    shape = x_type.shape
    axis = normalize_axis(int(node.attrs["axis"]), x_type.ndim) if shape else 0  # type: ignore[arg-type]
    outer = math.prod(shape[:axis])
    extent = shape[axis] if shape else 1
    inner = math.prod(shape[axis + 1 :])
    log = node.op == "log_softmax"
    names = ctx.names
    o = names.fresh("i")
    base = names.fresh("base")
    if inner == 1:
        maximum = names.fresh("m", dtype)
        total = names.fresh("s", dtype)
        scale = names.fresh("t", dtype)
        j1, j2, j3 = names.fresh("j"), names.fresh("j"), names.fresh("j")
        x1, x2, x3 = (Load(source, add(base, j)) for j in (j1, j2, j3))
        shifted = Unary("exp", Binary("sub", x2, maximum))
        if log:
            sum_pass = _loop(j2, extent, Assign(total, Binary("add", total, shifted)))
            write = (Let(scale, Unary("log", total)),
                     _loop(j3, extent, Store(target, add(base, j3),
                                             Binary("sub", Binary("sub", x3, maximum), scale))))
        else:
            e = names.fresh("e", dtype)
            sum_pass = _loop(j2, extent, Let(e, shifted), Store(target, add(base, j2), e),
                             Assign(total, Binary("add", total, e)))
            out3 = Load(target, add(base, j3))
            write = (Let(scale, Binary("div", imm(1, dtype), total)),
                     _loop(j3, extent, Store(target, add(base, j3), Binary("mul", out3, scale))))
        body = (Let(base, mul(o, index_imm(extent))),
                Local(maximum, imm(-math.inf, dtype)),
                # A NaN-propagating max chain, which LLVM does not vectorize: unrolled.
                Loop(j1, extent, (Assign(maximum, Binary("max", maximum, x1)),), "unroll"),
                Local(total, imm(0, dtype)), sum_pass, *write)
        return (_loop(o, outer, *body),)
    # Slabs: per-column max and sum in scratch (one slot per output column, so that parallel
    # outer iterations never share one).
    maxima = ctx.scratch(dtype, outer * inner, "max")
    totals = ctx.scratch(dtype, outer * inner, "sum")
    column_base = names.fresh("cbase")
    row = names.fresh("row")
    a = names.fresh("r")

    def slab_pass(*make: object) -> Loop:
        lane = names.fresh("j")
        column = add(column_base, lane)
        element = add(row, lane)
        stmts = tuple(fn(column, element) for fn in make)  # type: ignore[operator]
        return _loop(a, extent, Let(row, add(base, mul(a, index_imm(inner)))),
                     _loop(lane, inner, *stmts))

    def column_pass(*make: object) -> Loop:
        lane = names.fresh("j")
        column = add(column_base, lane)
        return _loop(lane, inner, *(fn(column) for fn in make))  # type: ignore[operator]

    def m(column: Expr) -> Expr:
        return Load(maxima, column)

    def shifted(column: Expr, element: Expr) -> Expr:
        return Binary("sub", Load(source, element), m(column))

    passes: list[Stmt] = [
        column_pass(lambda c: Store(maxima, c, imm(-math.inf, dtype)),
                    lambda c: Store(totals, c, imm(0, dtype))),
        slab_pass(lambda c, e: Store(maxima, c, Binary("max", m(c), Load(source, e)))),
    ]
    if log:
        passes += [
            slab_pass(lambda c, e: Store(totals, c, Binary(
                "add", Load(totals, c), Unary("exp", shifted(c, e))))),
            column_pass(lambda c: Store(totals, c, Unary("log", Load(totals, c)))),
            slab_pass(lambda c, e: Store(target, e, Binary(
                "sub", shifted(c, e), Load(totals, c)))),
        ]
    else:
        passes += [
            slab_pass(lambda c, e: Store(target, e, Unary("exp", shifted(c, e))),
                      lambda c, e: Store(totals, c, Binary(
                          "add", Load(totals, c), Load(target, e)))),
            column_pass(lambda c: Store(totals, c, Binary("div", imm(1, dtype),
                                                          Load(totals, c)))),
            slab_pass(lambda c, e: Store(target, e, Binary(
                "mul", Load(target, e), Load(totals, c)))),
        ]
    body = (Let(base, mul(o, index_imm(extent * inner))),
            Let(column_base, mul(o, index_imm(inner))), *passes)
    return (_loop(o, outer, *body),)


# ---------------------------------------------------------------------------------------------
# layer_norm, batch_norm.


@lowers("layer_norm")
def lower_layer_norm(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """Per row of the normalized size N (the last weight.ndim dimensions): the mean, then the
    variance as the mean of squared deviations (two passes: no cancellation), then
    out = (x - mean) * rstd * weight + bias. Each pass is a contiguous inner loop over one row,
    which stays in cache; rows are independent (the outer loop may run in parallel).

    The sums overflow for rows of huge values (|x| above about 1.8e19 in f32, where the squared
    deviations pass the largest float) although the result is always of order one. Such a row
    (its sum of squares not below inf) is normalized again as x / p with p = max |x|: layer
    norm is invariant to scaling x when eps scales with it (eps / p^2). x is divided by p, not
    multiplied by 1 / p, which is subnormal for p above 2^126 (f32; 2^1022 in f64) and would
    round x / p away from +-1 (a row of equal values then has deviations that are not 0).
    eps / p^2 underflows, so variance + eps is kept from 0 by min(eps, smallest normal): where
    x equals the mean the result is then bias, and for eps = 0 a constant row still gives
    0 / 0 = NaN. A row holding inf or NaN takes the rescaled path too and gives NaN, like the
    float64 reference."""
    x_type, w_type, _ = ctx.input_types
    source, weight, bias = ctx.inputs
    target = ctx.outputs[0]
    dtype = x_type.dtype
    count = w_type.size
    if x_type.size == 0:
        return ()
    rows = x_type.size // count
    names = ctx.names
    o, base = names.fresh("i"), names.fresh("base")
    n = imm(count, dtype)
    eps_value = float(dtype.numpy.type(node.attrs["eps"]))  # type: ignore[arg-type]
    eps = imm(eps_value, dtype)
    floor = imm(min(eps_value, float(np.finfo(dtype.numpy).tiny)), dtype)

    def normalize(peak: Expr | None, eps: Expr) -> tuple[list[Stmt], Var, list[Stmt]]:
        """The statistics of the row x / peak (x when peak is None), their sum of squares,
        and the write of the normalized row."""
        total, mean, squares, rstd = (names.fresh(v, dtype) for v in ("s", "mean", "q", "rstd"))
        j1, j2, j3 = names.fresh("j"), names.fresh("j"), names.fresh("j")
        deviation = names.fresh("d", dtype)

        def x(j: Var) -> Expr:
            value = Load(source, add(base, j))
            return value if peak is None else Binary("div", value, peak)

        write = Binary("add", Binary("mul", Binary("mul", Binary("sub", x(j3), mean), rstd),
                                     Load(weight, j3)), Load(bias, j3))
        statistics = [
            Local(total, imm(0, dtype)),
            _loop(j1, count, Assign(total, Binary("add", total, x(j1)))),
            Let(mean, Binary("div", total, n)),
            Local(squares, imm(0, dtype)),
            _loop(j2, count, Let(deviation, Binary("sub", x(j2), mean)),
                  Assign(squares, Binary("add", squares, Binary("mul", deviation, deviation)))),
        ]
        output = [
            Let(rstd, Binary("div", imm(1, dtype), Unary("sqrt", Binary("max", Binary(
                "add", Binary("div", squares, n), eps), floor)))),
            _loop(j3, count, Store(target, add(base, j3), write)),
        ]
        return statistics, squares, output

    statistics, squares, output = normalize(None, eps)
    peak, j = names.fresh("peak", dtype), names.fresh("j")
    scaled_statistics, _, scaled_output = normalize(peak, Binary("div", Binary(
        "div", eps, peak), peak))
    rescaled = (
        Local(peak, imm(0, dtype)),
        _loop(j, count, Assign(peak, Binary("max", peak,
                                            Unary("abs", Load(source, add(base, j)))))),
        *scaled_statistics, *scaled_output,
    )
    body = (
        Let(base, mul(o, index_imm(count))),
        *statistics,
        If(Binary("lt", squares, imm(math.inf, dtype)), tuple(output), rescaled),
    )
    return (_loop(o, rows, *body),)


@lowers("batch_norm")
def lower_batch_norm(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """Inference batch norm on axis 1: a first loop over the C channels computes
    scale = weight / sqrt(var + eps) and shift = bias - mean * scale (in f64, stored in scratch
    in the input dtype); then one elementwise pass out = x * scale[c] + shift[c], a loop over
    the N * C planes (parallel) around a contiguous loop over each plane. Rank 2 inputs have
    planes of one element: the pass is then N rows of C contiguous channels.

    A channel whose scale rounds to zero in the input dtype while its weight is not zero (a
    subnormal weight over a huge variance) takes PyTorch's order instead,
    ((x - mean) * invstd) * weight + bias, so that an infinite x gives an infinity, not
    inf * 0 = NaN; the test is one branch per plane."""
    x_type = ctx.input_types[0]
    source, mean, var, weight, bias = ctx.inputs
    target = ctx.outputs[0]
    dtype = x_type.dtype
    if x_type.size == 0:
        return ()
    batch, channels = x_type.shape[0], x_type.shape[1]
    plane = math.prod(x_type.shape[2:])
    scale = ctx.scratch(dtype, channels, "scale")
    shift = ctx.scratch(dtype, channels, "shift")
    inverse = ctx.scratch(dtype, channels, "invstd")
    names = ctx.names
    c = names.fresh("c")
    wide, root = names.fresh("w", DType.F64), names.fresh("r", DType.F64)

    def f64(buffer: Buffer) -> Expr:
        return Cast(Load(buffer, c), DType.F64)

    eps = imm(float(node.attrs["eps"]), DType.F64)  # type: ignore[arg-type]
    prepare = _loop(c, channels,
                    Let(root, Unary("sqrt", Binary("add", f64(var), eps))),
                    Let(wide, Binary("div", f64(weight), root)),
                    Store(scale, c, Cast(wide, dtype)),
                    Store(inverse, c, Cast(Binary("div", imm(1.0, DType.F64), root), dtype)),
                    Store(shift, c, Cast(Binary("sub", f64(bias), Binary("mul", f64(mean), wide)),
                                         dtype)))
    zero = imm(0.0, dtype)

    def underflowed(channel: Expr) -> Expr:
        return Binary("and", Binary("eq", Load(scale, channel), zero),
                      Binary("ne", Load(weight, channel), zero))

    def ordered(x: Expr, channel: Expr) -> Expr:  # PyTorch's order, for underflowed scales
        centred = Binary("sub", x, Load(mean, channel))
        return Binary("add", Binary("mul", Binary("mul", centred, Load(inverse, channel)),
                                    Load(weight, channel)), Load(bias, channel))

    if plane == 1:
        n, k = names.fresh("i"), names.fresh("j")
        index = add(mul(n, index_imm(channels)), k)
        x = Load(source, index)
        apply = _loop(n, batch, _loop(k, channels, Store(target, index, Select(
            underflowed(k), ordered(x, k), _affine(x, Load(scale, k), Load(shift, k))))))
        return (prepare, apply)
    p, k, slow = names.fresh("i"), names.fresh("j"), names.fresh("j")
    channel, factor, offset, base = (names.fresh("ch"), names.fresh("a", dtype),
                                     names.fresh("b", dtype), names.fresh("base"))
    apply = _loop(p, batch * channels,
                  Let(channel, Binary("rem", p, index_imm(channels))),
                  Let(factor, Load(scale, channel)), Let(offset, Load(shift, channel)),
                  Let(base, mul(p, index_imm(plane))),
                  If(underflowed(channel),
                     (_loop(slow, plane, Store(target, add(base, slow), ordered(
                         Load(source, add(base, slow)), channel))),),
                     (_loop(k, plane, Store(target, add(base, k), _affine(
                         Load(source, add(base, k)), factor, offset))),)))
    return (prepare, apply)


def _affine(x: Expr, factor: Expr, offset: Expr) -> Expr:
    return Binary("add", Binary("mul", x, factor), offset)


# ---------------------------------------------------------------------------------------------
# dropout.

# The mask of a training dropout is a counter-based hash of (seed, flat index), the same as the
# reference `_dropout` in ember/ops/neural.py computes with numpy uint32 arithmetic:
#   key = fmix32((seed mod 2^64) low 32 bits ^ high 32 bits)
#   h = fmix32(index * GOLDEN + key)          (mod 2^32)
#   keep = h >= ceil(p * 2^32)                (that is, h / 2^32 >= p)
# with murmur3's finalizer fmix32. Kept elements are scaled by dtype(1 / (1 - p)).
GOLDEN = 0x9E3779B1
FMIX_1 = 0x85EBCA6B
FMIX_2 = 0xC2B2AE35
MASK32 = 0xFFFFFFFF


def fmix32(value: int) -> int:
    """murmur3's 32-bit finalizer on a Python int (compile-time constants)."""
    value &= MASK32
    value ^= value >> 16
    value = (value * FMIX_1) & MASK32
    value ^= value >> 13
    value = (value * FMIX_2) & MASK32
    return value ^ (value >> 16)


def dropout_key(seed: int) -> int:
    seed &= (1 << 64) - 1
    return fmix32((seed & MASK32) ^ (seed >> 32))


def _i32(value: int) -> Expr:
    """A 32-bit pattern as an i32 immediate (two's complement)."""
    value &= MASK32
    return imm(value - (1 << 32) if value >= 1 << 31 else value, I32)


def _fmix32_expr(ctx: LowerContext, value: Expr, into: list[Stmt]) -> Expr:
    """fmix32 on an i32 expression (wrapping multiplies, logical shifts), as Lets."""
    for shift, factor in ((16, FMIX_1), (13, FMIX_2), (16, None)):
        mixed = Binary("xor", value, Binary("shr", value, imm(shift, I32)))
        if factor is not None:
            mixed = Binary("mul", mixed, _i32(factor))
        var = ctx.names.fresh("h", I32)
        into.append(Let(var, mixed))
        value = var
    return value


@lowers("dropout")
def lower_dropout(node: Node, ctx: LowerContext) -> tuple[Stmt, ...]:
    """Inference (or p = 0): a copy. Training: one flat contiguous loop; each element's keep bit
    is the hash above of its flat index (i32 arithmetic, vectorizable), so the compiled mask is
    bit-identical to the reference's."""
    x_type = ctx.input_types[0]
    source, target = ctx.inputs[0], ctx.outputs[0]
    dtype = x_type.dtype
    p = float(node.attrs["p"])  # type: ignore[arg-type]
    i = ctx.names.fresh("i")
    if not node.attrs["training"] or p == 0:
        return (_loop(i, x_type.size, Store(target, i, Load(source, i))),)
    if p >= 1:
        return (_loop(i, x_type.size, Store(target, i, imm(0, dtype))),)
    threshold = math.ceil(p * 2.0**32)
    scale = float(dtype.numpy.type(1 / (1 - p)))
    statements: list[Stmt] = []
    key = (Load(ctx.inputs[1], index_imm(0)) if len(ctx.inputs) > 1
           else _i32(dropout_key(int(node.attrs["seed"]))))  # type: ignore[arg-type]
    counter = Binary("add", Binary("mul", Cast(i, I32), _i32(GOLDEN)), key)
    hashed = _fmix32_expr(ctx, counter, statements)
    unsigned = Binary("and", Cast(hashed, I64), index_imm(MASK32))
    keep = Binary("ge", unsigned, index_imm(threshold))
    factor = Select(keep, imm(scale, dtype), imm(0, dtype))
    statements.append(Store(target, i, Binary("mul", Load(source, i), factor)))
    return (_loop(i, x_type.size, *statements),)
