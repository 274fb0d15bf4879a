"""Loop IR -> llvmlite IR: one LLVM function per `Kernel`.

    function = emit_kernel(module, kernel)     # void name(T0* b0, T1* b1, ...)

Each buffer is a pointer argument (`noalias` unless the kernel says two of them may share
memory, as an in-place update does). Loops become the canonical phi/branch pattern; loops that
a schedule marked `vectorize` carry LLVM loop metadata asking for vectorization at the host's
width, and reductions are emitted with `reassoc` so that LLVM may vectorize them. Math
functions come from `vecmath` (branch-free, inlined, vectorizable).
"""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from ember.errors import LoweringError
from ember.ir.types import DType
from ember.lower.loops import (
    COMPARISONS,
    Assign,
    Binary,
    Buffer,
    Cast,
    Expr,
    ExternCall,
    If,
    Imm,
    Kernel,
    Let,
    Load,
    Local,
    Loop,
    Pointer,
    Select,
    Stmt,
    Store,
    Unary,
    Var,
)

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()

# Registers hold bools as i1; memory holds them as one byte, as numpy does.
REGISTER_TYPES = {DType.F32: F32, DType.F64: F64, DType.I32: I32, DType.I64: I64, DType.BOOL: I1}
MEMORY_TYPES = {**REGISTER_TYPES, DType.BOOL: I8}

INTERLEAVE_MIN_EXTENT = 256  # iterations before a vectorized loop is interleaved 4 ways

_FLOAT_BINARY = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv", "rem": "frem"}
_INT_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "sdiv", "rem": "srem",
               "and": "and_", "or": "or_", "xor": "xor", "shl": "shl", "shr": "lshr",
               "ashr": "ashr", "udiv": "udiv", "urem": "urem"}
_FLOAT_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_INTRINSICS = {"sqrt": "llvm.sqrt", "floor": "llvm.floor", "ceil": "llvm.ceil",
               "round": "llvm.roundeven", "abs": "llvm.fabs"}


class KernelEmitter:
    """Emits one kernel's body; `values` maps loop IR variables to LLVM values or slots."""

    def __init__(self, module: ir.Module, kernel: Kernel, function: ir.Function,
                 outlined: bool = False) -> None:
        self.module = module
        self.kernel = kernel
        self.function = function
        # Allocas go in a block of their own ahead of the code, so that inserting one never
        # moves the main builder's position.
        allocas = function.append_basic_block("allocas")
        self.builder = ir.IRBuilder(function.append_basic_block("entry"))
        branch = ir.IRBuilder(allocas).branch(self.builder.block)
        self.alloca_builder = ir.IRBuilder(allocas)
        self.alloca_builder.position_before(branch)
        # An outlined parallel body loads its pointers from its context instead.
        self.pointers: dict[Buffer, ir.Value] = {} if outlined else dict(
            zip(kernel.buffers, function.args, strict=True))
        self.values: dict[Var, ir.Value] = {}
        self.slots: dict[Var, ir.Value] = {}  # mutable locals (promoted to registers by LLVM)
        self.loop_ids = 0

    def fail(self, message: str) -> LoweringError:
        return LoweringError(self.kernel.source or self.kernel.name, message)

    # -- statements ----------------------------------------------------------------------------

    def emit_body(self, body: Sequence[Stmt]) -> None:
        for stmt in body:
            self.emit_stmt(stmt)

    def emit_stmt(self, stmt: Stmt) -> None:
        if isinstance(stmt, Loop):
            self.emit_loop(stmt)
        elif isinstance(stmt, Store):
            self.emit_store(stmt)
        elif isinstance(stmt, Let):
            self.values[stmt.var] = self.expr(stmt.value)
        elif isinstance(stmt, Local):
            slot = self._entry_alloca(REGISTER_TYPES[stmt.var.dtype], stmt.var.name)
            self.builder.store(self.expr(stmt.init), slot)
            self.slots[stmt.var] = slot
        elif isinstance(stmt, Assign):
            self.builder.store(self.expr(stmt.value), self.slots[stmt.var])
        elif isinstance(stmt, If):
            self.emit_if(stmt)
        elif isinstance(stmt, ExternCall):
            self.emit_extern_call(stmt)
        else:
            raise self.fail(f"unknown statement {stmt!r}")

    def _entry_alloca(self, type_: ir.Type, name: str) -> ir.Value:
        return self.alloca_builder.alloca(type_, name=name)

    def emit_loop(self, loop: Loop) -> None:
        if loop.extent <= 0:
            return
        if loop.kind == "parallel":
            self.emit_parallel_loop(loop)
            return
        self.emit_counted_loop(loop, I64(0), I64(loop.extent))

    def emit_counted_loop(self, loop: Loop, begin: ir.Value, end: ir.Value) -> None:
        """`for (var = begin; var < end; var++) body`, for a range known to be non-empty."""
        builder = self.builder
        preheader = builder.block
        header = self.function.append_basic_block(f"{loop.var.name}.loop")
        after = self.function.append_basic_block(f"{loop.var.name}.done")
        builder.branch(header)
        builder.position_at_end(header)
        index = builder.phi(I64, name=loop.var.name)
        index.add_incoming(begin, preheader)
        self.values[loop.var] = index
        self.emit_body(loop.body)
        following = builder.add(index, I64(1), name=f"{loop.var.name}.next", flags=("nuw", "nsw"))
        index.add_incoming(following, builder.block)
        done = builder.icmp_signed(">=", following, end)
        branch = builder.cbranch(done, after, header)
        if loop.kind == "vectorize" and not _calls_out(loop.body):
            # (A loop around a call, such as a GEMM call per image, cannot be vectorized:
            # forcing it would only make LLVM print a warning.)
            branch.set_metadata("llvm.loop", self._vectorize_metadata(loop.extent))
        builder.position_at_end(after)

    def emit_parallel_loop(self, loop: Loop) -> None:
        """A loop marked `parallel`: each backend runs it its own way (the CPU's thread pool,
        `ember.backend.cpu.parallel`); this shared emitter has no runtime for it."""
        raise self.fail(f"loop {loop.var.name} is marked parallel, and this emitter has no "
                        "parallel runtime")

    def _vectorize_metadata(self, extent: int) -> ir.MDValue:
        # NOTE: LLVM wants loop IDs to be distinct, self-referencing nodes; llvmlite cannot
        # build the self-reference, so finalize_module() patches the placeholder afterwards.
        self.loop_ids += 1
        hints = [self.module.add_metadata(["llvm.loop.vectorize.enable", I1(1)])]
        if extent >= 8:
            # Keep a short loop (a 16-channel block, an 8-wide pooled row) rolled for the
            # vectorizer: fully unrolled first, its body is left as scalar code or vectorized
            # across the outer loop with gathers (8-wide avg pool: 0.018 -> 0.047 ms).
            hints.append(self.module.add_metadata(["llvm.loop.unroll.disable"]))
        if extent >= INTERLEAVE_MIN_EXTENT:
            # Four vectors in flight: a long fused body (gelu -> sigmoid -> tanh) is bound by
            # its dependency chain, not by throughput (chain over 4M floats 13.4 -> 9.8 ms).
            hints.append(self.module.add_metadata(["llvm.loop.interleave.count", I32(4)]))
        return self.module.add_metadata([ir.MetaDataString(self.module, "ember.loop.self"),
                                         *hints])

    def emit_store(self, stmt: Store) -> None:
        value = self.expr(stmt.value)
        if stmt.buffer.dtype is DType.BOOL:
            value = self.builder.zext(value, I8)
        self.builder.store(value, self.address(stmt.buffer, stmt.index))

    def emit_extern_call(self, stmt: ExternCall) -> None:
        function = self.module.globals.get(stmt.symbol)
        if function is None:
            function = stmt.emit(self.module)
        arguments = []
        for arg, param in zip(stmt.args, function.args, strict=True):
            if isinstance(arg, Pointer):
                address = self.address(arg.buffer, arg.offset)
                arguments.append(self.builder.bitcast(address, param.type))
            else:
                arguments.append(self.expr(arg))
        self.builder.call(function, arguments)

    def emit_if(self, stmt: If) -> None:
        cond = self.expr(stmt.cond)
        with self.builder.if_else(cond) as (then, orelse):
            with then:
                self.emit_body(stmt.then)
            with orelse:
                self.emit_body(stmt.orelse)

    # -- expressions ---------------------------------------------------------------------------

    def address(self, buffer: Buffer, index: Expr) -> ir.Value:
        pointer = self.pointers.get(buffer)
        if pointer is None:
            raise self.fail(f"buffer {buffer.name} is not a parameter of the kernel")
        return self.builder.gep(pointer, [self.expr(index)], inbounds=True)

    def expr(self, expr: Expr) -> ir.Value:
        method = getattr(self, "expr_" + type(expr).__name__.lower(), None)
        if method is None:
            raise self.fail(f"unknown expression {expr!r}")
        return method(expr)

    def expr_var(self, expr: Var) -> ir.Value:
        if expr in self.slots:
            return self.builder.load(self.slots[expr])
        if expr not in self.values:
            raise self.fail(f"variable {expr.name} is used before it is defined")
        return self.values[expr]

    def expr_imm(self, expr: Imm) -> ir.Value:
        return REGISTER_TYPES[expr.dtype](expr.value)

    def expr_load(self, expr: Load) -> ir.Value:
        value = self.builder.load(self.address(expr.buffer, expr.index))
        if expr.buffer.dtype is DType.BOOL:
            return self.builder.icmp_unsigned("!=", value, I8(0))
        return value

    def expr_binary(self, expr: Binary) -> ir.Value:
        a, b = self.expr(expr.a), self.expr(expr.b)
        dtype = expr.a.dtype
        if expr.op in COMPARISONS:
            return self.compare(expr.op, a, b, dtype)
        if expr.op in ("max", "min"):
            return self.max_min(expr.op, a, b, dtype)
        if expr.op == "pow":
            return self.power(a, b, dtype)
        table = _FLOAT_BINARY if dtype.is_float else _INT_BINARY
        name = table.get(expr.op)
        if name is None:
            raise self.fail(f"no {expr.op} for {dtype}")
        if not dtype.is_float and expr.op in ("div", "rem"):
            return self.signed_divide(expr.op, a, b)
        result = getattr(self.builder, name)(a, b)
        if dtype.is_float and expr.op in ("add", "sub", "mul"):
            result.flags.append("contract")  # a*b+c may become one FMA (one rounding, not two)
            if expr.op in ("add", "mul") and self._reassociable(expr):
                result.flags.append("reassoc")
        return result

    def signed_divide(self, op: str, a: ir.Value, b: ir.Value) -> ir.Value:
        """`sdiv`/`srem` that never traps: x86's idiv faults (SIGFPE) on a zero divisor and
        on INT_MIN / -1. A divisor of 0 gives 0 (the lowering makes the call raise first, see
        `ops_elementwise.division_checks`); -1 gives -a and 0, so INT_MIN / -1 wraps to
        INT_MIN and INT_MIN % -1 is 0, as in numpy. A constant divisor other than 0 and -1
        (index arithmetic) needs no guard."""
        constant = b.constant if isinstance(b, ir.Constant) else None  # (a list for a vector)
        if isinstance(constant, int) and constant not in (0, -1):
            return self.builder.sdiv(a, b) if op == "div" else self.builder.srem(a, b)
        builder = self.builder
        zero, one, minus_one = (_splat(b.type, value) for value in (0, 1, -1))
        special = builder.or_(builder.icmp_signed("==", b, zero),
                              builder.icmp_signed("==", b, minus_one))
        safe = builder.select(special, one, b)
        if op == "div":
            quotient = builder.sdiv(a, safe)
            negated = builder.select(builder.icmp_signed("==", b, zero), zero, builder.neg(a))
            return builder.select(special, negated, quotient)
        return builder.select(special, zero, builder.srem(a, safe))

    def _reassociable(self, expr: Binary) -> bool:
        # An accumulator update `acc = acc + x` may be reassociated: that is what lets LLVM
        # vectorize a reduction (documented tolerance: reductions are not bit-exact).
        return isinstance(expr.a, Var) and expr.a in self.slots

    def power(self, a: ir.Value, b: ir.Value, dtype: DType) -> ir.Value:
        if dtype.is_float:
            return self.math_call("pow", (a, b), dtype)
        # Integer powers go through f64: exact while the result stays below 2**53.
        wide = [convert(self.builder, v, dtype, DType.F64) for v in (a, b)]
        result = self.intrinsic("llvm.roundeven", (self.math_call("pow", wide, DType.F64),))
        return convert(self.builder, result, DType.F64, dtype)

    def compare(self, op: str, a: ir.Value, b: ir.Value, dtype: DType) -> ir.Value:
        symbol = _FLOAT_COMPARE[op]
        if dtype.is_float:
            if op == "ne":  # numpy: nan != x is True
                return self.builder.fcmp_unordered("!=", a, b)
            return self.builder.fcmp_ordered(symbol, a, b)
        if dtype is DType.BOOL:
            return self.builder.icmp_unsigned(symbol, a, b)
        return self.builder.icmp_signed(symbol, a, b)

    def max_min(self, op: str, a: ir.Value, b: ir.Value, dtype: DType) -> ir.Value:
        symbol = ">" if op == "max" else "<"
        if not dtype.is_float:
            compare = (self.builder.icmp_unsigned if dtype is DType.BOOL
                       else self.builder.icmp_signed)
            return self.builder.select(compare(symbol, a, b), a, b)
        # numpy's maximum/minimum propagate NaN from either side: LLVM's maximum/minimum
        # intrinsics do too, and (unlike a compare-and-select) vectorize as reductions.
        return self.intrinsic("llvm.maximum" if op == "max" else "llvm.minimum", (a, b))

    def expr_unary(self, expr: Unary) -> ir.Value:
        a = self.expr(expr.a)
        dtype = expr.a.dtype
        if expr.op == "neg":
            return self.builder.fneg(a) if dtype.is_float else self.builder.neg(a)
        if expr.op == "not":
            return self.builder.not_(a)
        if expr.op == "abs" and not dtype.is_float:
            negative = self.builder.icmp_signed("<", a, a.type(0))
            return self.builder.select(negative, self.builder.neg(a), a)
        if not dtype.is_float:
            raise self.fail(f"{expr.op} needs a float operand, got {dtype}")
        if expr.op in _INTRINSICS:
            return self.intrinsic(_INTRINSICS[expr.op], (a,))
        return self.math_call(expr.op, (a,), dtype)

    def intrinsic(self, name: str, args: Sequence[ir.Value]) -> ir.Value:
        """Call `name` (an overloaded LLVM intrinsic) on operands of one type, scalar or
        vector (llvmlite's `declare_intrinsic` names scalar types only)."""
        type_ = args[0].type
        signature = ir.FunctionType(type_, [type_] * len(args))
        if not isinstance(type_, ir.VectorType):
            function = self.module.declare_intrinsic(name, [type_], signature)
            return self.builder.call(function, list(args))
        symbol = f"{name}.v{type_.count}{type_.element.intrinsic_name}"
        function = self.module.globals.get(symbol) or ir.Function(self.module, signature, symbol)
        return self.builder.call(function, list(args))

    def math_call(self, name: str, args: Sequence[ir.Value], dtype: DType) -> ir.Value:
        from ember.backend.llvm import mathlib

        return mathlib.call(self.builder, self.module, name, list(args), dtype)

    def expr_select(self, expr: Select) -> ir.Value:
        return self.builder.select(self.expr(expr.cond), self.expr(expr.a), self.expr(expr.b))

    def expr_cast(self, expr: Cast) -> ir.Value:
        return convert(self.builder, self.expr(expr.a), expr.a.dtype, expr.dtype)


class VectorExprEmitter(KernelEmitter):
    """Loop IR expressions evaluated on vectors of `lanes` elements, at the builder's position:
    variables are bound to vectors in `leaves`, constants are splatted, equal subexpressions
    are emitted once. A GEMM epilogue computes its elementwise chain with it."""

    def __init__(self, builder: ir.IRBuilder, lanes: int, leaves: dict[Var, ir.Value]) -> None:
        self.builder, self.module, self.lanes = builder, builder.module, lanes
        self.values, self.slots = dict(leaves), {}
        self.kernel = None
        self.emitted: dict[Expr, ir.Value] = {}

    def fail(self, message: str) -> LoweringError:
        return LoweringError("vector expression", message)

    def expr(self, expr: Expr) -> ir.Value:
        if expr not in self.emitted:
            self.emitted[expr] = super().expr(expr)
        return self.emitted[expr]

    def expr_imm(self, expr: Imm) -> ir.Value:
        scalar = REGISTER_TYPES[expr.dtype](expr.value)
        return ir.Constant(ir.VectorType(scalar.type, self.lanes), [scalar] * self.lanes)


def _splat(type_: ir.Type, value: int | float) -> ir.Constant:
    """`value` as a constant of `type_`, every lane of a vector type."""
    if isinstance(type_, ir.VectorType):
        return ir.Constant(type_, [ir.Constant(type_.element, value)] * type_.count)
    return ir.Constant(type_, value)


def convert(builder: ir.IRBuilder, value: ir.Value, source: DType, target: DType) -> ir.Value:
    """numpy's astype between Ember dtypes (float -> int truncates toward zero)."""
    if source is target:
        return value
    to_type = REGISTER_TYPES[target]
    if target is DType.BOOL:
        if source.is_float:
            return builder.fcmp_unordered("!=", value, value.type(0))
        return builder.icmp_unsigned("!=", value, value.type(0))
    if source is DType.BOOL:
        return builder.uitofp(value, to_type) if target.is_float else builder.zext(value, to_type)
    if source.is_float and target.is_float:
        wider = target.itemsize > source.itemsize
        return builder.fpext(value, to_type) if wider else builder.fptrunc(value, to_type)
    if source.is_float:
        return builder.fptosi(value, to_type)
    if target.is_float:
        return builder.sitofp(value, to_type)
    wider = target.itemsize > source.itemsize
    return builder.sext(value, to_type) if wider else builder.trunc(value, to_type)


def _calls_out(body: Sequence[Stmt]) -> bool:
    """Whether statements call an external function (an ExternCall, at any depth)."""
    from ember.lower.loops import walk_stmts

    return any(isinstance(stmt, ExternCall) for stmt in walk_stmts(body))


def emit_kernel(module: ir.Module, kernel: Kernel,
                emitter: type[KernelEmitter] = KernelEmitter) -> ir.Function:
    """Add `void kernel.name(ptr...)` to the module; returns the function. `emitter`: the
    backend's subclass (it knows how to run parallel loops)."""
    types = [MEMORY_TYPES[b.dtype].as_pointer() for b in kernel.buffers]
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), types), kernel.name)
    function.linkage = "internal"
    shared = set(kernel.attrs.get("may_alias", ()))
    for buffer, argument in zip(kernel.buffers, function.args, strict=True):
        argument.name = buffer.name
        if buffer.name not in shared:
            argument.add_attribute("noalias")
    body = emitter(module, kernel, function)
    body.emit_body(kernel.body)
    body.builder.ret_void()
    return function


def finalize_module(text: str) -> str:
    """Patch loop-ID placeholders into LLVM's distinct self-referencing form (see above)."""
    lines = text.split("\n")
    for position, line in enumerate(lines):
        if '!"ember.loop.self"' in line:
            name = line.split("=", 1)[0].strip()
            lines[position] = line.replace('!"ember.loop.self"', name).replace(
                "= !{", "= distinct !{", 1)
    return "\n".join(lines)
