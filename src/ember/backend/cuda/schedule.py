"""Loop nests -> CUDA launches: which loops become the grid, and how many blocks and threads.

    program = map_program(program)     # every call is one launch: kernel.attrs["launch"]

A kernel's top-level statements run one after another; on a GPU each top-level loop becomes its
own launch (launches on one stream run in order, so a later nest sees everything an earlier one
wrote), and the kernel is split into several calls with the same buffers. Top-level statements
that are not such loops (a scalar result, an accumulator over everything) run as a launch of one
thread, correct and slow.

A top-level loop whose iterations are independent becomes a grid-stride loop (`kind="grid"`)
over a band of loops flattened into one index, the innermost loop of the band on the fastest
threads, so that neighbouring threads touch neighbouring elements (coalesced accesses):

    for (i0 < 64) for (i1 < 512) out[i0*512 + i1] = relu(in0[i0*512 + i1]);
 -> for (g = tid; g < 32768; g += threads) {          // grid, 128 blocks x 256 threads
      const int64_t i0 = g / 512; const int64_t i1 = g % 512;
      out[i0*512 + i1] = relu(in0[i0*512 + i1]); }

Lowering guarantees that iterations of a top-level loop that reads no outer variable touch
disjoint outputs and scratch (the CPU's thread pool relies on the same promise); a loop nested
inside joins the band only when `disjoint_band` proves it from the affine index expressions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ember.ir.types import DType
from ember.lower.loops import (
    Assign,
    Binary,
    Buffer,
    Cast,
    Expr,
    If,
    Imm,
    Kernel,
    Let,
    Load,
    Local,
    Loop,
    Select,
    Stmt,
    Store,
    Unary,
    Var,
    defined_vars,
    map_loops,
    stmt_exprs,
    substitute_expr,
    walk_expr,
    walk_stmts,
)
from ember.lower.program import Call, Program, Slot
from ember.lower.schedule import free_variables
from ember.lower.transforms import _fresh

BLOCK_THREADS = 256  # threads per block of a grid launch (8 warps)
MAX_BLOCKS = 16384  # blocks of one launch; a grid-stride loop covers the rest
MIN_BLOCKS = 256  # blocks a launch has when it has enough threads (about 2 per SM of an H100)
I32_LIMIT = 2**31  # flat indices below this are split with 32-bit division
SERIAL_LAUNCH = (1, 1)  # (blocks, threads) of a launch that runs its statements in order
# A reduction of everything into one value over at least MIN_SPLIT_REDUCTION terms is folded
# by up to MAX_PARTIALS threads of at least MIN_PARTIAL_TERMS terms each, then by one thread.
MIN_SPLIT_REDUCTION = 4096
MIN_PARTIAL_TERMS = 64
MAX_PARTIALS = 8192
SCRATCH_ALIGNMENT = 256  # bytes
_FOLDS = frozenset({"add", "mul", "max", "min"})


@dataclass(frozen=True)
class Affine:
    """sum(coefficient * var) + constant over loop indices."""

    terms: tuple[tuple[Var, int], ...]
    constant: int

    def coefficient(self, var: Var) -> int:
        return dict(self.terms).get(var, 0)


def map_program(program: Program) -> Program:
    """The program with every call a single launch (`launch` = (blocks, threads) in the
    kernel's attrs); calls already mapped are kept."""
    calls: list[Call] = []
    arena = program.arena_bytes
    for call in program.calls:
        if "launch" in call.kernel.attrs:
            calls.append(call)
            continue
        split = split_reduction(call.kernel)
        if split is not None:  # partial results in a scratch slot of the arena's end
            offset = -(-arena // SCRATCH_ALIGNMENT) * SCRATCH_ALIGNMENT
            partials = split[0].buffers[-1]
            arena = offset + partials.size * partials.dtype.itemsize
            slots = [*call.slots, Slot("arena", offset)]
            calls += [Call(kernel, slots, call.node) for kernel in split]
            continue
        parts = split_kernel(call.kernel)
        for kernel in parts:
            calls.append(Call(kernel, call.slots, call.node))
    return replace(program, calls=calls, arena_bytes=arena)


# -- a whole-buffer reduction in two launches ---------------------------------------------------


def split_reduction(kernel: Kernel) -> list[Kernel] | None:
    """A kernel that folds one long loop into one accumulator (a sum, max, mean of everything)
    as two launches, or None when the kernel is not one:

        [Let...] acc = init; for (r < R) acc = acc op e(r); out[k] = f(acc);
     -> grid p < P:  part = init; for (q < ceil(R / P)) { r = q * P + p;
                                     if (r < R) part = part op e(r); }  partials[p] = part;
        one thread:  acc = init; for (p < P) acc = acc op partials[p]; out[k] = f(acc);

    `op` is add, mul, max or min (reassociated, as the CPU's vectorized reductions are);
    neighbouring threads read neighbouring elements. The partials are a new last buffer of
    both kernels (an arena slot that `map_program` adds)."""
    body = map_loops(kernel.body, _plain)
    *lets, local, loop, store = body if len(body) >= 3 else (None, None, None)
    if not (isinstance(local, Local) and isinstance(loop, Loop) and isinstance(store, Store)
            and all(isinstance(s, Let) for s in lets) and loop.extent >= MIN_SPLIT_REDUCTION
            and len(loop.body) == 1):
        return None
    (update,) = loop.body
    acc = local.var
    if not (isinstance(update, Assign) and update.var == acc
            and isinstance(update.value, Binary) and update.value.op in _FOLDS
            and update.value.a == acc and acc not in _vars(update.value.b)):
        return None
    op, term = update.value.op, update.value.b
    count = min(MAX_PARTIALS, loop.extent // MIN_PARTIAL_TERMS)
    steps = -(-loop.extent // count)
    partials = Buffer(_fresh_name("partials", kernel), acc.dtype, count)
    taken = {v.name for v in defined_vars(body)}
    thread, step, part = _fresh("p", taken), _fresh("q", taken), _fresh("part", taken, acc.dtype)
    index = Binary("add", Binary("mul", step, Imm(count, DType.I64)), thread)
    fold: Stmt = Assign(part, Binary(op, part, term))
    inner: tuple[Stmt, ...] = (Let(loop.var, index), fold)
    if steps * count != loop.extent:
        inner = (Let(loop.var, index), If(Binary("lt", loop.var, Imm(loop.extent, DType.I64)),
                                          (fold,)))
    grid = Loop(thread, count, (*lets, Local(part, local.init), Loop(step, steps, inner),
                                Store(partials, thread, part)), "grid")
    first = replace(kernel, name=f"{kernel.name}_partials", buffers=(*kernel.buffers, partials),
                    body=(grid,), attrs={**kernel.attrs, "launch": _grid_launch(count)})
    total = Loop(thread, count, (Assign(acc, Binary(op, acc, Load(partials, thread))),))
    second = replace(kernel, buffers=(*kernel.buffers, partials),
                     body=(*lets, local, total, store), attrs={**kernel.attrs,
                                                              "launch": SERIAL_LAUNCH})
    return [first, second]


def _vars(expr: Expr) -> set[Var]:
    return {e for e in walk_expr(expr) if isinstance(e, Var)}


def _fresh_name(base: str, kernel: Kernel) -> str:
    names = {b.name for b in kernel.buffers}
    name, count = base, 0
    while name in names:
        count += 1
        name = f"{base}{count}"
    return name


def _grid_launch(total: int) -> tuple[int, int]:
    """(blocks, threads) for `total` iterations: BLOCK_THREADS per block, fewer (whole warps)
    when that would give under MIN_BLOCKS blocks, so that a small launch (one thread per row
    of a norm) still spreads over the multiprocessors."""
    threads = min(BLOCK_THREADS, max(32, -(-total // MIN_BLOCKS // 32) * 32))
    return min(-(-total // threads), MAX_BLOCKS), threads


def split_kernel(kernel: Kernel) -> list[Kernel]:
    """One kernel per launch: each independent top-level loop as a grid, each run of other
    statements as one thread. A kernel whose top-level statements share a scalar (a Let or
    Local read by a later statement) stays one serial launch."""
    body = map_loops(kernel.body, _plain)
    taken = {v.name for v in defined_vars(body)}
    kernel = replace(kernel, body=tuple(_rows_into_columns(s, taken) or s for s in body))
    if _shares_scalars(kernel.body):
        return [_launch(kernel, kernel.name, kernel.body, SERIAL_LAUNCH)]
    segments: list[tuple[tuple[Stmt, ...], bool]] = []
    pending: list[Stmt] = []
    for stmt in kernel.body:
        if isinstance(stmt, Loop) and stmt.extent >= 1 and not free_variables(stmt):
            if pending:
                segments.append((tuple(pending), False))
                pending = []
            segments.append(((stmt,), True))
        else:
            pending.append(stmt)
    if pending:
        segments.append((tuple(pending), False))
    parts = []
    for number, (body, parallel) in enumerate(segments):
        name = kernel.name if len(segments) == 1 else f"{kernel.name}_{number}"
        if parallel:
            parts.append(_grid_kernel(kernel, name, body[0]))  # type: ignore[arg-type]
        else:
            parts.append(_launch(kernel, name, body, SERIAL_LAUNCH))
    return parts


def _rows_into_columns(stmt: Stmt, taken: set[str]) -> Loop | None:
    """A reduction that accumulates whole rows into an output block (the CPU's loop order for
    a kept last axis) as one accumulator per output element, or None when `stmt` is not one:

        for (b) { Let...; for (j0 < W) out[f(j0)] = init;
                  for (r...) { Let...; for (j1 < W) out[f(j1)] = out[f(j1)] op e(j1); }
                  [for (j2 < W) out[f(j2)] = g(out[f(j2)]);] }
     -> for (b) { Let...; for (j < W) { acc = init;
                  for (r...) { Let...; acc = acc op e(j); }  out[f(j)] = g(acc); } }

    Each element is folded in the order the loop nest folds it, and (b, j) is a band of
    disjoint outputs: a grid whose neighbouring threads read neighbouring elements of every
    row."""
    if not isinstance(stmt, Loop):
        return None
    *head, init, nest = stmt.body if len(stmt.body) >= 2 else (None, None)
    finish = None
    if isinstance(nest, Loop) and isinstance(init, Loop) and head and isinstance(head[-1], Loop):
        *head, init, nest, finish = stmt.body
    if not (all(isinstance(s, Let) for s in head) and _is_fill(init)):
        return None
    store = init.body[0]  # type: ignore[union-attr]
    column = _fresh(f"{init.var.name}_c", taken)  # type: ignore[union-attr]
    target = _at(store.buffer, store.index, init.var, column)  # type: ignore[union-attr]
    acc = _fresh(f"{init.var.name}_acc", taken, store.buffer.dtype)  # type: ignore[union-attr]
    folded = _fold_rows(nest, target, column, acc)
    if folded is None:
        return None
    result: Expr = acc
    if finish is not None:
        if not (isinstance(finish, Loop) and finish.extent == init.extent  # type: ignore[union-attr]
                and len(finish.body) == 1 and isinstance(finish.body[0], Store)):
            return None
        last = finish.body[0]
        if _at(last.buffer, last.index, finish.var, column) != target:
            return None
        result = _replace_load(substitute_expr(last.value, {finish.var: column}), target, acc)
        if target in _loads(result):
            return None
    element = (Local(acc, store.value), folded, Store(target.buffer, target.index, result))  # type: ignore[union-attr]
    return replace(stmt, body=(*head, Loop(column, init.extent, element)))  # type: ignore[union-attr]


def _is_fill(stmt: Stmt | None) -> bool:
    """`for (j < W) out[f(j)] = constant`."""
    return (isinstance(stmt, Loop) and len(stmt.body) == 1 and isinstance(stmt.body[0], Store)
            and isinstance(stmt.body[0].value, Imm))


def _at(buffer: Buffer, index: Expr, var: Var, column: Var) -> Load:
    return Load(buffer, substitute_expr(index, {var: column}))


def _fold_rows(nest: Stmt | None, target: Load, column: Var, acc: Var) -> Stmt | None:
    """The reduction loops (each body: Lets, then the next loop) with the innermost column
    loop replaced by `acc = acc op e`, or None when they are not of that form."""
    if not isinstance(nest, Loop) or not nest.body:
        return None
    *lets, last = nest.body
    if not (isinstance(last, Loop) and all(isinstance(s, Let) for s in lets)):
        return None
    if not (len(last.body) == 1 and isinstance(last.body[0], Store)):
        inner = _fold_rows(last, target, column, acc)  # another reduced dimension
        return None if inner is None else replace(nest, body=(*lets, inner))
    update = last.body[0]
    value = substitute_expr(update.value, {last.var: column})
    if (_at(update.buffer, update.index, last.var, column) != target
            or not isinstance(value, Binary) or value.op not in _FOLDS or value.a != target
            or target.buffer in {load.buffer for load in _loads(value.b)}):
        return None
    return replace(nest, body=(*lets, Assign(acc, Binary(value.op, acc, value.b))))


def _loads(expr: Expr) -> list[Load]:
    return [e for e in walk_expr(expr) if isinstance(e, Load)]


def _replace_load(expr: Expr, load: Load, var: Var) -> Expr:
    """`expr` with every occurrence of `load` replaced by `var`."""
    if expr == load:
        return var
    if isinstance(expr, Binary):
        return Binary(expr.op, _replace_load(expr.a, load, var), _replace_load(expr.b, load, var))
    if isinstance(expr, (Unary, Cast)):
        return replace(expr, a=_replace_load(expr.a, load, var))
    if isinstance(expr, Select):
        return Select(*(_replace_load(e, load, var) for e in (expr.cond, expr.a, expr.b)))
    return expr


def _plain(loop: Loop, depth: int) -> Loop:
    """CPU marks mean nothing here: every loop a thread runs is a plain counted loop."""
    return loop if loop.kind == "serial" else replace(loop, kind="serial")


def _launch(kernel: Kernel, name: str, body: tuple[Stmt, ...],
            launch: tuple[int, int]) -> Kernel:
    return replace(kernel, name=name, body=body, attrs={**kernel.attrs, "launch": launch})


def _shares_scalars(body: Sequence[Stmt]) -> bool:
    """Whether a scalar defined by a top-level Let or Local is read by a later statement."""
    defined: set[Var] = set()
    for stmt in body:
        used = {e for s in walk_stmts((stmt,)) for x in stmt_exprs(s) for e in walk_expr(x)
                if isinstance(e, Var)}
        if used & defined:
            return True
        if isinstance(stmt, (Let, Local)):
            defined.add(stmt.var)
    return False


# -- the grid of one top-level loop -------------------------------------------------------------


def _grid_kernel(kernel: Kernel, name: str, loop: Loop) -> Kernel:
    """The launch of one independent top-level loop: its band flattened onto the grid."""
    band, lets, inner = _band(kernel, loop)
    total = math.prod(b.extent for b in band)
    taken = {v.name for v in defined_vars(kernel.body)}
    flat = _fresh("g", taken)
    body = (*_unflatten(flat, band, total), *lets, *inner)
    grid = Loop(flat, total, body, "grid")
    return _launch(kernel, name, (grid,), _grid_launch(total))


def _band(kernel: Kernel, loop: Loop) -> tuple[list[Loop], list[Stmt], tuple[Stmt, ...]]:
    """The loops flattened onto the grid (outermost first), the Lets met between them, and the
    body each thread runs."""
    band, lets = [loop], []
    body = loop.body
    while True:
        *head, last = body if body else (None,)
        if not (isinstance(last, Loop) and all(isinstance(s, Let) for s in head)):
            break
        if last.extent < 1 or not disjoint_band(kernel, [*band, last],
                                                (*lets, *head, *last.body)):
            break
        band.append(last)
        lets += head
        body = last.body
    return band, lets, body


def _unflatten(flat: Var, band: Sequence[Loop], total: int) -> list[Stmt]:
    """Lets giving each band variable from the flat index (innermost = fastest)."""
    narrow = total < I32_LIMIT
    index: Expr = Cast(flat, DType.I32) if narrow else flat
    dtype = DType.I32 if narrow else DType.I64
    stmts: list[Stmt] = []
    inner = 1
    for loop in reversed(band):
        value = index
        if inner != 1:
            value = Binary("udiv", value, Imm(inner, dtype))
        if inner * loop.extent != total:
            value = Binary("urem", value, Imm(loop.extent, dtype))
        stmts.append(Let(loop.var, Cast(value, DType.I64) if narrow else value))
        inner *= loop.extent
    return list(reversed(stmts))


# -- proof that a band's iterations touch disjoint memory ---------------------------------------


def disjoint_band(kernel: Kernel, band: Sequence[Loop], body: Sequence[Stmt]) -> bool:
    """True when distinct index tuples of `band` (loops, outermost first, `body` the innermost
    one's) never touch the same element of a buffer that the band writes.

    Every access of a written buffer must be affine in loop indices with the same coefficient of
    each band variable (`body` holds the Lets met between the band's loops too). Sorted by
    coefficient c_1 <= c_2 <= ..., the band's strides must nest (c_{j+1} >= c_j * extent_j)
    and c_1 must cover the span the inner loops reach: then each index tuple owns a window of
    the buffer that no other one touches.
    """
    lets = {s.var: s.value for s in walk_stmts(body) if isinstance(s, Let)}
    extents = {s.var: s.extent for s in walk_stmts(body) if isinstance(s, Loop)}
    accesses = _accesses(body)
    for group in _written_groups(kernel, body):
        forms = [affine(index, lets) for buffer, index in accesses if buffer.name in group]
        if not _owns_windows([f for f in forms if f is not None], len(forms), band, extents):
            return False
    return True


def _owns_windows(forms: list[Affine], count: int, band: Sequence[Loop],
                  extents: dict[Var, int]) -> bool:
    if len(forms) != count or not forms:
        return False
    coefficients = [forms[0].coefficient(loop.var) for loop in band]
    if any(c <= 0 for c in coefficients):
        return False
    low, high = math.inf, -math.inf
    band_vars = {loop.var for loop in band}
    for form in forms:
        if [form.coefficient(loop.var) for loop in band] != coefficients:
            return False
        lo = hi = form.constant
        for var, coefficient in form.terms:
            if var in band_vars:
                continue
            if var not in extents:
                return False
            reach = coefficient * (extents[var] - 1)
            lo, hi = lo + min(reach, 0), hi + max(reach, 0)
        low, high = min(low, lo), max(high, hi)
    ordered = sorted(zip(coefficients, (loop.extent for loop in band), strict=True))
    if ordered[0][0] < high - low + 1:
        return False
    return all(upper[0] >= lower[0] * lower[1] for lower, upper in itertools.pairwise(ordered))


def _written_groups(kernel: Kernel, body: Sequence[Stmt]) -> list[set[str]]:
    """Names of the buffers `body` stores to, buffers that may share memory in one group."""
    written = {s.buffer.name for s in walk_stmts(body) if isinstance(s, Store)}
    written.discard("status")  # every failing thread writes the same kind of code
    alias = set(kernel.attrs.get("may_alias", ()))  # type: ignore[arg-type]
    groups = [{name} for name in sorted(written - alias)]
    if written & alias:
        groups.append(alias)
    return groups


def _accesses(body: Sequence[Stmt]) -> list[tuple[Buffer, Expr]]:
    """Every (buffer, index) that `body` loads or stores, at any depth."""
    found: list[tuple[Buffer, Expr]] = []
    for stmt in walk_stmts(body):
        if isinstance(stmt, Store):
            found.append((stmt.buffer, stmt.index))
        for expr in stmt_exprs(stmt):
            found += [(e.buffer, e.index) for e in walk_expr(expr) if isinstance(e, Load)]
    return found


def affine(expr: Expr, lets: dict[Var, Expr], depth: int = 0) -> Affine | None:
    """`expr` as an affine form of loop variables (Lets expanded), or None when it is not one
    (a load, a division, a float)."""
    if depth > 64:
        return None
    if isinstance(expr, Imm) and isinstance(expr.value, int) and not isinstance(expr.value, bool):
        return Affine((), expr.value)
    if isinstance(expr, Var):
        if expr in lets:
            return affine(lets[expr], lets, depth + 1)
        return Affine(((expr, 1),), 0) if expr.dtype is DType.I64 else None
    if isinstance(expr, Cast) and expr.dtype is DType.I64 and expr.a.dtype is DType.I64:
        return affine(expr.a, lets, depth + 1)
    if not isinstance(expr, Binary) or expr.op not in ("add", "sub", "mul"):
        return None
    a, b = affine(expr.a, lets, depth + 1), affine(expr.b, lets, depth + 1)
    if a is None or b is None:
        return None
    if expr.op == "mul":
        if a.terms and b.terms:
            return None
        scale, form = (a.constant, b) if not a.terms else (b.constant, a)
        return Affine(tuple((v, c * scale) for v, c in form.terms if c * scale), form.constant
                      * scale)
    sign = 1 if expr.op == "add" else -1
    terms = dict(a.terms)
    for var, coefficient in b.terms:
        terms[var] = terms.get(var, 0) + sign * coefficient
    return Affine(tuple((v, c) for v, c in terms.items() if c), a.constant + sign * b.constant)


def launches(program: Program) -> list[tuple[str, tuple[int, int]]]:
    """(kernel name, (blocks, threads)) of every launch of a mapped program, in order."""
    return [(c.kernel.name, c.kernel.attrs["launch"]) for c in program.calls]  # type: ignore[misc]


__all__ = ["BLOCK_THREADS", "MAX_BLOCKS", "Affine", "affine", "disjoint_band", "launches",
           "map_program", "split_kernel"]
