"""Schedules: transformations of loop IR that decide how loops run.

    kernel = vectorize_innermost(kernel)   # innermost loops -> "vectorize"
    kernel = parallelize_outer(kernel)     # big outermost loops -> "parallel" (thread pool)

and the primitives, each on one loop named by its variable (`transforms.py` has the loop
rewrites, this module the marks):

    kernel = split(kernel, "i3", 64)                 # i3_o x i3_i, guarded when 64 does not divide
    kernel = reorder(kernel, ["i3_o", "i2"])         # interchange a perfectly nested band
    kernel = tile(kernel, ("i0", "i1"), (32, 32))    # split both + reorder
    kernel = unroll(kernel, "r0")                    # the body once per iteration
    kernel = vectorize(kernel, "i3_i")               # mark: LLVM vectorizes it
    kernel = parallelize(kernel, "i0")               # mark: run on the thread pool

Each schedule takes a `Kernel` and returns a new one (loop IR is immutable); codegen only
follows the marks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields, replace

from ember.lower.loops import (
    Assign,
    Binary,
    Buffer,
    ExternCall,
    If,
    Kernel,
    Let,
    Local,
    Loop,
    Pointer,
    Stmt,
    Store,
    Unary,
    Var,
    add,
    defined_vars,
    index_imm,
    is_innermost,
    map_loops,
    mul,
    walk_expr,
    walk_stmts,
)
from ember.lower.transforms import (
    MAX_UNROLL,
    _fresh,
    find_loop,
    reorder,
    replace_loop,
    schedule_error,
    split,
    tile,
    unroll,
)

__all__ = ["MAX_UNROLL", "free_variables", "parallelize", "parallelize_outer",
           "reorder", "split", "tile", "unroll", "unroll_short_columns", "vectorize",
           "vectorize_innermost"]

MIN_VECTOR_EXTENT = 4
# Work is counted in cheap-op units (`estimated_work`): below MIN_PARALLEL_WORK of them a
# parallel region costs more than the second thread gives back. Targets carry their own
# threshold (`Target.min_parallel_work`); this is the Zen 4 figure (benchmarks/NOTES.md).
MIN_PARALLEL_WORK = 500_000
MATH_COST = 64  # a vector-math function (exp, tanh, erf, ...) against one expression node
REDUCTION_SHARE = 0.25  # an accumulating loop pays for threads later (break-even ~4x the work)
CHEAP_UNARY = frozenset({"neg", "not", "abs", "floor", "ceil", "round", "sqrt"})
THREAD_CHUNKS = 4  # chunks per thread when a flat loop is split for the pool


def vectorize_innermost(kernel: Kernel) -> Kernel:
    """Mark every innermost loop of at least MIN_VECTOR_EXTENT iterations for vectorization."""

    def mark(loop: Loop, depth: int) -> Loop:
        if loop.kind == "serial" and is_innermost(loop) and loop.extent >= MIN_VECTOR_EXTENT:
            return replace(loop, kind="vectorize")
        return loop

    return replace(kernel, body=map_loops(kernel.body, mark))


def parallelize_outer(kernel: Kernel, min_work: int = MIN_PARALLEL_WORK,
                      threads: int = 2) -> Kernel:
    """Mark top-level loops whose estimated work (`estimated_work`) reaches `min_work` (the
    target's threshold), and that read no free scalar variables, as parallel.

    A top-level loop that is also innermost (a flat elementwise loop) is split first: a
    parallel loop over THREAD_CHUNKS chunks per thread around the vectorized chunk, and a
    vectorized tail for the remainder, so that no guard enters the vector loop.
    """
    body: list[Stmt] = []
    for stmt in kernel.body:
        if (isinstance(stmt, Loop) and stmt.kind in ("serial", "vectorize") and stmt.extent >= 2
                and estimated_work(stmt) >= min_work and not free_variables(stmt)):
            if stmt.kind == "serial" and not is_innermost(stmt):
                body.append(replace(stmt, kind="parallel"))
                continue
            if is_innermost(stmt):
                body += _split_for_threads(stmt, threads, kernel)
                continue
        body.append(stmt)
    return replace(kernel, body=tuple(body))


def _split_for_threads(loop: Loop, threads: int, kernel: Kernel) -> list[Stmt]:
    """`for i < n: body` as `parallel for c < n // chunk: vectorize for j < chunk: body(i = c *
    chunk + j)` and a tail `for t < n % chunk: body(i = n - n % chunk + t)`."""
    chunks = max(threads, 1) * THREAD_CHUNKS
    chunk = loop.extent // chunks // 64 * 64  # whole vectors; the tail is under 64 * chunks
    if chunk == 0:
        return [loop]
    rest = loop.extent - chunks * chunk
    taken = {v.name for v in defined_vars(kernel.body)}
    outer, inner, tail = (_fresh(f"{loop.var.name}_{suffix}", taken) for suffix in "cvt")
    main = Loop(outer, chunks, (Loop(inner, chunk, (
        Let(loop.var, add(mul(outer, index_imm(chunk)), inner)), *loop.body), loop.kind),),
        "parallel")
    if not rest:
        return [main]
    return [main, Loop(tail, rest, (Let(loop.var, add(index_imm(chunks * chunk), tail)),
                                    *loop.body), loop.kind)]


def estimated_work(loop: Loop) -> float:
    """The loop's work in cheap-op units: each expression node an iteration evaluates counts 1
    (a load, an add, a compare), a vector-math function MATH_COST, a library call (a GEMM)
    as all the work there is; a loop that accumulates into a scalar counts REDUCTION_SHARE of
    its body (its break-even, measured, comes about four times later)."""
    return loop.extent * _body_work(loop.body)


def _body_work(body: Sequence[Stmt]) -> float:
    work = 0.0
    accumulates = False
    for stmt in body:
        if isinstance(stmt, Loop):
            work += estimated_work(stmt)
        elif isinstance(stmt, If):
            work += _expression_work(stmt.cond) + max(_body_work(stmt.then),
                                                      _body_work(stmt.orelse))
        elif isinstance(stmt, ExternCall):
            return float("inf")
        else:
            accumulates = accumulates or isinstance(stmt, Assign)
            work += sum(_expression_work(e) for e in _expressions(stmt)
                        if not isinstance(e, (Var, Buffer)))
    return max(work, 1.0) * (REDUCTION_SHARE if accumulates else 1.0)


def _expression_work(expr: object) -> float:
    total = 0.0
    for node in walk_expr(expr):  # type: ignore[arg-type]
        if ((isinstance(node, Unary) and node.op not in CHEAP_UNARY)
                or (isinstance(node, Binary) and node.op == "pow")):
            total += MATH_COST
        elif not isinstance(node, Var):
            total += 1
    return total


def unroll_short_columns(kernel: Kernel) -> Kernel:
    """Unroll a loop of fewer than MIN_VECTOR_EXTENT iterations that is the innermost of a
    loop it accumulates over (its stores do not use the enclosing index), so that the enclosing
    loop becomes innermost and `vectorize_innermost` vectorizes it. Run before it.

    A column sum of [65536, 3] (`for r { for j < 3: out[j] += x[r, j] }`) then keeps three
    accumulators in registers and vectorizes over r: 0.071 -> 0.028 ms at one thread.
    """
    chosen: list[str] = []

    def visit(loop: Loop, depth: int) -> Loop:
        for stmt in loop.body:
            if (isinstance(stmt, Loop) and stmt.kind == "serial" and is_innermost(stmt)
                    and stmt.extent < MIN_VECTOR_EXTENT and _accumulates_over(stmt, loop.var)):
                chosen.append(stmt.var.name)
        return loop

    map_loops(kernel.body, visit)
    for name in chosen:
        kernel = unroll(kernel, name)
    return kernel


def _accumulates_over(loop: Loop, outer: Var) -> bool:
    """True when every store of `loop` writes at an index that does not use `outer`."""
    stores = [s for s in walk_stmts(loop.body) if isinstance(s, Store)]
    return bool(stores) and all(outer not in set(_used(s.index)) for s in stores)


def vectorize(kernel: Kernel, var: str) -> Kernel:
    """Mark loop `var` for vectorization (LLVM still checks that it may; the mark asks)."""
    loop = find_loop(kernel, var)
    if loop.kind == "parallel":
        raise schedule_error(kernel, f"vectorize: loop {var} of kernel {kernel.name} is "
                                     "parallel")
    return _mark(kernel, var, "vectorize")


def parallelize(kernel: Kernel, var: str) -> Kernel:
    """Mark loop `var` to run its iterations on the thread pool.

    Codegen outlines a parallel loop into a function that sees only the kernel's buffers, so
    the loop may read no scalar defined outside it, and parallel loops do not nest.
    """
    loop = find_loop(kernel, var)
    outside = sorted(v.name for v in free_variables(loop))
    if outside:
        raise schedule_error(kernel, f"parallelize: loop {var} of kernel {kernel.name} reads "
                                     f"{', '.join(outside)} from outside it")
    nested = [s.var.name for s in walk_stmts(loop.body)
              if isinstance(s, Loop) and s.kind == "parallel"]
    if nested or any(_encloses(s, var) for s in walk_stmts(kernel.body)
                     if isinstance(s, Loop) and s.kind == "parallel"):
        raise schedule_error(kernel, f"parallelize: loop {var} of kernel {kernel.name} would "
                                     "nest parallel loops")
    return _mark(kernel, var, "parallel")


def _mark(kernel: Kernel, var: str, kind: str) -> Kernel:
    return replace(kernel, body=replace_loop(kernel.body, var,
                                             lambda loop: (replace(loop, kind=kind),)))


def _encloses(loop: Loop, var: str) -> bool:
    return any(isinstance(s, Loop) and s.var.name == var for s in walk_stmts(loop.body))


def _expressions(stmt: object) -> Iterator[object]:
    for item in fields(stmt):  # type: ignore[arg-type]
        value = getattr(stmt, item.name)
        if isinstance(value, tuple):
            yield from value
        else:
            yield value


def _used(node: object) -> Iterator[Var]:
    """Every Var inside a loop IR expression or statement."""
    if isinstance(node, Var):
        yield node
    elif hasattr(node, "__dataclass_fields__") and not isinstance(node, Buffer):
        for child in _expressions(node):
            yield from _used(child)


def free_variables(loop: Loop) -> set[Var]:
    """Scalar variables the loop reads but does not define (its own index is defined)."""
    defined: set[Var] = {loop.var}
    used: set[Var] = set()

    def visit(body: Sequence[Stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, Loop):
                defined.add(stmt.var)
                visit(stmt.body)
            elif isinstance(stmt, If):
                used.update(_used(stmt.cond))
                visit(stmt.then)
                visit(stmt.orelse)
            elif isinstance(stmt, (Let, Local)):
                defined.add(stmt.var)
                used.update(_used(stmt.value if isinstance(stmt, Let) else stmt.init))
            elif isinstance(stmt, ExternCall):
                for arg in stmt.args:
                    used.update(_used(arg.offset if isinstance(arg, Pointer) else arg))
            else:
                used.update(_used(stmt))

    visit(loop.body)
    return {v for v in used if v not in defined}
