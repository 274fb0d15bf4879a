"""Loop transformations: split, reorder, tile and unroll a kernel's loops, keeping its results.

    kernel = split(kernel, "i3", 64)                 # i3 -> i3_o (ceil(n / 64)) x i3_i (64)
    kernel = reorder(kernel, ["i3_o", "i2"])         # interchange a perfectly nested band
    kernel = tile(kernel, ("i0", "i1"), (32, 32))    # split both, then i0_o, i1_o, i0_i, i1_i
    kernel = unroll(kernel, "r0")                    # the body once per iteration, index fixed

Each takes a Kernel and returns a new one (loop IR is immutable); loops are named by their
variable's name. A missing loop, or a nest that a transformation cannot keep exact, raises
LoweringError naming the kernel, the loops and why. `schedule.vectorize` and
`schedule.parallelize` mark a chosen loop; a split keeps a vectorize or unroll mark on the inner
loop and a parallel mark on the outer one.

Split, before and after (extent 10, factor 4):

    for (i = 0; i < 10; i++)        for (i_o = 0; i_o < 3; i_o++)
      S(i);                           for (i_i = 0; i_i < 4; i_i++) {
                                        const int64_t i = ((i_o * 4) + i_i);
                                        if ((i < 10)) { S(i); }
                                      }

The original index becomes a Let of the same variable, so the body is untouched. A
non-dividing extent is kept exact with a guard `If` rather than a separate tail loop: one nest
stays one band that later splits, reorders and tiles compose on (a tail loop would copy the body
into a second nest that every later transformation would have to follow), and reorder moves the
guard with its variable. The guard costs a compare per inner iteration; a dividing factor has
none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ember.errors import LoweringError
from ember.ir.types import DType
from ember.lower.loops import (
    Assign,
    Binary,
    Buffer,
    Expr,
    ExternCall,
    If,
    Kernel,
    Let,
    Load,
    Local,
    Loop,
    Stmt,
    Store,
    Var,
    add,
    defined_vars,
    index_imm,
    mul,
    stmt_exprs,
    substitute,
    walk_expr,
    walk_stmts,
)

MAX_UNROLL = 32  # iterations: beyond this an unrolled body costs more in code than it saves


def schedule_error(kernel: Kernel, message: str) -> LoweringError:
    """The error of a transformation that cannot apply, naming the kernel."""
    return LoweringError(kernel.name, message)


def find_loop(kernel: Kernel, name: str) -> Loop:
    """The loop over the variable called `name`."""
    for stmt in walk_stmts(kernel.body):
        if isinstance(stmt, Loop) and stmt.var.name == name:
            return stmt
    raise schedule_error(kernel, f"no loop {name} in kernel {kernel.name}")


def replace_loop(body: Sequence[Stmt], name: str,
                 rewrite: Callable[[Loop], Sequence[Stmt]]) -> tuple[Stmt, ...]:
    """`body` with the loop over `name` replaced by the statements `rewrite(loop)`."""
    rebuilt: list[Stmt] = []
    for stmt in body:
        if isinstance(stmt, Loop) and stmt.var.name == name:
            rebuilt += rewrite(stmt)
            continue
        if isinstance(stmt, Loop):
            stmt = replace(stmt, body=replace_loop(stmt.body, name, rewrite))
        elif isinstance(stmt, If):
            stmt = replace(stmt, then=replace_loop(stmt.then, name, rewrite),
                           orelse=replace_loop(stmt.orelse, name, rewrite))
        rebuilt.append(stmt)
    return tuple(rebuilt)


def _fresh(base: str, taken: set[str], dtype: DType = DType.I64) -> Var:
    """A variable called `base` (or base1, base2, ... when taken); marks it taken."""
    name, count = base, 1
    while name in taken:
        name, count = f"{base}{count}", count + 1
    taken.add(name)
    return Var(name, dtype)


# ---------------------------------------------------------------------------------------------
# split and tile.


def split(kernel: Kernel, var: str, factor: int) -> Kernel:
    """Loop `var` as an outer loop `var_o` of ceil(extent / factor) iterations around an inner
    loop `var_i` of `factor`, with `var = var_o * factor + var_i` (see the module docstring).
    A factor above the extent is clamped to it."""
    return _split(kernel, var, factor)[0]


def _split(kernel: Kernel, var: str, factor: int) -> tuple[Kernel, str, str]:
    """split, also returning the names of the outer and inner loops."""
    loop = find_loop(kernel, var)
    if factor < 1:
        raise schedule_error(kernel, f"split: factor {factor} of loop {var} is not positive")
    taken = {v.name for v in defined_vars(kernel.body)}
    outer_var, inner_var = _fresh(f"{var}_o", taken), _fresh(f"{var}_i", taken)
    inner_extent = max(1, min(factor, loop.extent))
    outer_extent = -(-loop.extent // inner_extent)
    # NOTE: a parallel loop keeps its threads on the outer loop; vectorize and unroll marks
    # belong to the short inner loop.
    outer_kind, inner_kind = ((loop.kind, "serial") if loop.kind == "parallel"
                              else ("serial", loop.kind))

    def rewrite(loop: Loop) -> tuple[Stmt, ...]:
        body = loop.body
        if loop.extent % inner_extent:
            body = (If(Binary("lt", loop.var, index_imm(loop.extent)), body),)
        index = Let(loop.var, add(mul(outer_var, index_imm(inner_extent)), inner_var))
        inner = Loop(inner_var, inner_extent, (index, *body), inner_kind)
        return (Loop(outer_var, outer_extent, (inner,), outer_kind),)

    split_kernel = replace(kernel, body=replace_loop(kernel.body, var, rewrite))
    return split_kernel, outer_var.name, inner_var.name


def tile(kernel: Kernel, vars: tuple[str, str], factors: tuple[int, int]) -> Kernel:
    """Split the perfectly nested loops `vars` (outer, inner) by `factors`, then reorder to
    outer_o, inner_o, outer_i, inner_i: a factors[0] x factors[1] tile at a time."""
    (row, column), (rows, columns) = vars, factors
    reorder(kernel, [row, column])  # check the band before changing anything
    kernel, row_outer, row_inner = _split(kernel, row, rows)
    kernel, column_outer, column_inner = _split(kernel, column, columns)
    return reorder(kernel, [row_outer, column_outer, row_inner, column_inner])


# ---------------------------------------------------------------------------------------------
# reorder.


@dataclass(frozen=True)
class Band:
    """A perfectly nested chain of loops, outermost first. `movable` are the Lets and guard
    Ifs (an If with no else around the rest of the body) found between them, in order; `body`
    is the innermost loop's body."""

    loops: tuple[Loop, ...]
    movable: tuple[Let | If, ...]
    body: tuple[Stmt, ...]


def reorder(kernel: Kernel, vars: Sequence[str]) -> Kernel:
    """Nest the loops `vars` in the given order, outermost first.

    The loops must form a perfectly nested band: each holds only the next one, Lets and guard
    Ifs (which move to the shallowest place where their variables are defined). Loop extents
    are static in this IR, so an inner extent never depends on an outer index; guards (from a
    non-dividing split) are how a nest becomes non-rectangular, and they move with their
    variables. The innermost body may update a buffer only at the index it reads it from, and
    the loops whose index it does not use keep their relative order: every element sees its
    updates in the same order, so the result is bit-exact.
    """
    names = list(vars)
    if len(set(names)) != len(names):
        raise schedule_error(kernel, f"reorder: loops {', '.join(names)} repeat a loop")
    for name in names:
        find_loop(kernel, name)
    band = _band(kernel, names)
    by_name = {loop.var.name: loop for loop in band.loops}
    _check_movable(kernel, band)
    _check_dependences(kernel, band, names)
    nest = _rebuild([by_name[name] for name in names], band.movable, band.body)
    return replace(kernel, body=replace_loop(kernel.body, band.loops[0].var.name,
                                             lambda _: (nest,)))


def _band(kernel: Kernel, names: Sequence[str]) -> Band:
    """The band of the loops `names`, starting at the first of them in program order."""
    remaining = set(names)
    loop = next(s for s in walk_stmts(kernel.body)
                if isinstance(s, Loop) and s.var.name in remaining)
    loops: list[Loop] = []
    movable: list[Let | If] = []
    while True:
        loops.append(loop)
        remaining.discard(loop.var.name)
        if not remaining:
            return Band(tuple(loops), tuple(movable), loop.body)
        inner, between, other = _peel(loop.body)
        if other is not None or inner is None or inner.var.name not in remaining:
            rest = " or ".join(n for n in names if n in remaining)
            if other is not None:
                why = f"{loop.var.name} also holds {_describe(other)}"
            elif inner is not None and _contains(inner, remaining):
                why = f"loop {inner.var.name} lies between {loop.var.name} and {rest}"
            else:
                why = f"{loop.var.name} does not hold {rest}"
            raise schedule_error(kernel, f"loops {', '.join(names)} are not perfectly nested "
                                         f"in kernel {kernel.name}: {why}")
        movable += between
        loop = inner


def _peel(body: Sequence[Stmt]) -> tuple[Loop | None, list[Let | If], Stmt | None]:
    """(the one loop of `body`, the Lets and guards around it, the first other statement)."""
    between: list[Let | If] = []
    for position, stmt in enumerate(body):
        last = position == len(body) - 1
        if isinstance(stmt, Let):
            between.append(stmt)
        elif isinstance(stmt, Loop) and last:
            return stmt, between, None
        elif isinstance(stmt, If) and last and not stmt.orelse:
            inner, nested, other = _peel(stmt.then)
            return inner, [*between, If(stmt.cond, ()), *nested], other
        else:
            return None, between, stmt
    return None, between, None


def _contains(loop: Loop, names: set[str]) -> bool:
    return any(isinstance(s, Loop) and s.var.name in names for s in walk_stmts(loop.body))


def _describe(stmt: Stmt) -> str:
    """A few words for a statement in an error message."""
    if isinstance(stmt, Loop):
        return f"another loop {stmt.var.name}"
    if isinstance(stmt, Store):
        return f"a store to {stmt.buffer.name}"
    if isinstance(stmt, (Local, Assign)):
        return f"an update of {stmt.var.name}"
    if isinstance(stmt, ExternCall):
        return f"a call of {stmt.symbol}"
    return "an if/else"


def _memory(kernel: Kernel, buffer: Buffer) -> str:
    """The name that stands for the memory of `buffer`: buffers that may share memory (an
    in-place kernel's `may_alias` pair) have one."""
    alias = kernel.attrs.get("may_alias")
    if isinstance(alias, tuple) and buffer.name in alias:
        return str(alias[0])
    return buffer.name


def _written(kernel: Kernel, body: Sequence[Stmt]) -> set[str]:
    """The memories (see `_memory`) that `body` stores to."""
    return {_memory(kernel, s.buffer) for s in walk_stmts(body) if isinstance(s, Store)}


def _loads(expr: Expr) -> set[Buffer]:
    return {e.buffer for e in walk_expr(expr) if isinstance(e, Load)}


def _check_movable(kernel: Kernel, band: Band) -> None:
    """A Let or guard that moves must not read a buffer that the band writes."""
    written = _written(kernel, band.body)
    for stmt in band.movable:
        value = stmt.value if isinstance(stmt, Let) else stmt.cond
        clash = sorted(b.name for b in _loads(value) if _memory(kernel, b) in written)
        if clash:
            what = stmt.var.name if isinstance(stmt, Let) else "a guard"
            raise schedule_error(kernel, f"reorder: {what} between loops "
                                         f"{', '.join(l.var.name for l in band.loops)} reads "
                                         f"{clash[0]}, which the band writes")


def _check_dependences(kernel: Kernel, band: Band, order: Sequence[str]) -> None:
    """Refuse a reorder that could change which value an element ends with (see reorder)."""
    definitions = {s.var: s.value for s in (*band.movable, *walk_stmts(band.body))
                   if isinstance(s, Let)}
    band_vars = [loop.var for loop in band.loops]
    private = {s.var for s in walk_stmts(band.body) if isinstance(s, Local)}
    loops = ", ".join(order)

    def uses(expr: Expr) -> set[Var]:
        found: set[Var] = set()
        for var in (e for e in walk_expr(expr) if isinstance(e, Var)):
            found |= uses(definitions[var]) if var in definitions else {var}
        return found

    def keeps_order(index: Expr | None) -> bool:
        used = uses(index) if index is not None else set()
        free = [v.name for v in band_vars if v not in used]
        return [name for name in order if name in free] == free

    indices: dict[str, set[Expr]] = {}
    for stmt in walk_stmts(band.body):
        if isinstance(stmt, ExternCall):
            raise schedule_error(kernel, f"reorder: loops {loops} hold a call of {stmt.symbol}")
        if isinstance(stmt, Store):
            indices.setdefault(_memory(kernel, stmt.buffer), set()).add(stmt.index)
            if not keeps_order(stmt.index):
                raise schedule_error(kernel, f"reorder: loops {loops} would change the order of "
                                             f"the updates of {stmt.buffer.name}")
        if isinstance(stmt, Assign) and stmt.var not in private and not keeps_order(None):
            raise schedule_error(kernel, f"reorder: loops {loops} would change the order of the "
                                         f"updates of {stmt.var.name}")
    several = sorted(memory for memory, index in indices.items() if len(index) > 1)
    if several:
        raise schedule_error(kernel, f"reorder: loops {loops} write {several[0]} at several "
                                     "indices")
    written = _written(kernel, band.body)
    for stmt in walk_stmts(band.body):
        for expr in stmt_exprs(stmt):
            for load in (e for e in walk_expr(expr) if isinstance(e, Load)):
                memory = _memory(kernel, load.buffer)
                if memory in written and indices[memory] != {load.index}:
                    raise schedule_error(kernel, f"reorder: loops {loops} read "
                                                 f"{load.buffer.name} where another iteration "
                                                 "may write it")


def _rebuild(loops: Sequence[Loop], movable: Sequence[Let | If], body: tuple[Stmt, ...]) -> Loop:
    """The band nested in the order of `loops`, each Let and guard placed (in their original
    order) right inside the first loop where every band variable they use is defined."""
    band_vars = {loop.var for loop in loops} | {s.var for s in movable if isinstance(s, Let)}
    defined: set[Var] = set()
    pending = list(movable)
    placed: list[list[Let | If]] = []
    for loop in loops:
        defined.add(loop.var)
        here: list[Let | If] = []
        while pending and _band_uses(pending[0], band_vars) <= defined:
            stmt = pending.pop(0)
            here.append(stmt)
            if isinstance(stmt, Let):
                defined.add(stmt.var)
        placed.append(here)
    assert not pending, "every band variable is defined inside the innermost loop"
    nest = body
    for loop, here in zip(reversed(loops), reversed(placed), strict=True):
        for stmt in reversed(here):
            nest = (If(stmt.cond, nest),) if isinstance(stmt, If) else (stmt, *nest)
        nest = (replace(loop, body=nest),)
    return nest[0]


def _band_uses(stmt: Let | If, band_vars: set[Var]) -> set[Var]:
    value = stmt.value if isinstance(stmt, Let) else stmt.cond
    return {e for e in walk_expr(value) if isinstance(e, Var) and e in band_vars}


# ---------------------------------------------------------------------------------------------
# unroll.


def unroll(kernel: Kernel, var: str, limit: int = MAX_UNROLL) -> Kernel:
    """Replace loop `var` (of at most `limit` iterations) by one copy of its body per
    iteration, the index substituted by its value. The variables defined inside get a `_u<k>`
    suffix per copy, so every loop keeps a unique name for later transformations."""
    loop = find_loop(kernel, var)
    if loop.kind in ("parallel", "vectorize"):
        raise schedule_error(kernel, f"unroll: loop {var} of kernel {kernel.name} is marked "
                                     f"{loop.kind}")
    if loop.extent > limit:
        raise schedule_error(kernel, f"unroll: loop {var} of kernel {kernel.name} has "
                                     f"{loop.extent} iterations, above the limit of {limit}")
    taken = {v.name for v in defined_vars(kernel.body)}

    def copies(loop: Loop) -> tuple[Stmt, ...]:
        unrolled: list[Stmt] = []
        inner = dict.fromkeys(defined_vars(loop.body))  # each once, in order
        for value in range(loop.extent):
            mapping: dict[Var, Expr] = {v: _fresh(f"{v.name}_u{value}", taken, v.dtype)
                                        for v in inner}
            mapping[loop.var] = index_imm(value)
            unrolled += substitute(loop.body, mapping)
        return tuple(unrolled)

    return replace(kernel, body=replace_loop(kernel.body, var, copies))
