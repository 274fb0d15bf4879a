"""Loop IR -> llvmlite IR: one LLVM function per `Kernel`.

    function = emit_kernel(module, kernel)     # void name(T0* b0, T1* b1, ...)

Each buffer is a pointer argument (`noalias` unless the kernel says two of them may share
memory, as an in-place update does). Loops become the canonical phi/branch pattern; loops that
a schedule marked `vectorize` carry LLVM loop metadata asking for vectorization at the host's
width, and reductions are emitted with `reassoc` so that LLVM may vectorize them. Math
functions come from `vecmath` (branch-free, inlined, vectorizable).

Element types: unsigned integers share the signed ones' LLVM types and take the unsigned
instructions (udiv, icmp ult, zext, uitofp). f16 and bf16 are storage types: memory holds
`half` and `i16`, registers hold f32, a load widens exactly and a store rounds to nearest-even
(`fptrunc` for f16, integer rounding for bf16), as are casts to them inside an expression, so
a register of either type always holds a value of that type.
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

I1, I8, I16, I32, I64 = (ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32),
                         ir.IntType(64))
F16, F32, F64 = ir.HalfType(), ir.FloatType(), ir.DoubleType()

# Registers hold bools as i1 and f16/bf16 as f32; memory holds bools as one byte, as numpy
# does, f16 as half and bf16 as its 16 bits.
REGISTER_TYPES = {DType.F16: F32, DType.BF16: F32, DType.F32: F32, DType.F64: F64,
                  DType.I8: I8, DType.I16: I16, DType.I32: I32, DType.I64: I64,
                  DType.U8: I8, DType.U16: I16, DType.U32: I32, DType.U64: I64,
                  DType.BOOL: I1}
MEMORY_TYPES = {**REGISTER_TYPES, DType.BOOL: I8, DType.F16: F16, DType.BF16: I16}

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
        value = to_memory(self.builder, self.expr(stmt.value), stmt.buffer.dtype)
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
        return REGISTER_TYPES[expr.dtype](register_constant(expr))

    def expr_load(self, expr: Load) -> ir.Value:
        value = self.builder.load(self.address(expr.buffer, expr.index))
        return from_memory(self.builder, value, expr.buffer.dtype)

    def expr_binary(self, expr: Binary) -> ir.Value:
        result = self.binary(expr)
        if expr.dtype.is_narrow_float and expr.op not in ("max", "min"):
            # numpy rounds every f16 (bf16) result: computed in f32, rounded to the type
            return round_narrow(self.builder, result, expr.dtype)
        return result

    def binary(self, expr: Binary) -> ir.Value:
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
        if dtype.is_unsigned and expr.op in ("div", "rem"):
            return self.unsigned_divide(expr.op, a, b)
        if not dtype.is_float and expr.op in ("div", "rem"):
            return self.signed_divide(expr.op, a, b)
        result = getattr(self.builder, name)(a, b)
        if dtype.is_float and not dtype.is_narrow_float and expr.op in ("add", "sub", "mul"):
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

    def unsigned_divide(self, op: str, a: ir.Value, b: ir.Value) -> ir.Value:
        """`udiv`/`urem` that never traps: a divisor of 0 gives 0 (the lowering makes the call
        raise first, as for signed division)."""
        constant = b.constant if isinstance(b, ir.Constant) else None
        if isinstance(constant, int) and constant != 0:
            return self.builder.udiv(a, b) if op == "div" else self.builder.urem(a, b)
        builder = self.builder
        zero, one = _splat(b.type, 0), _splat(b.type, 1)
        is_zero = builder.icmp_unsigned("==", b, zero)
        safe = builder.select(is_zero, one, b)
        result = builder.udiv(a, safe) if op == "div" else builder.urem(a, safe)
        return builder.select(is_zero, zero, result)

    def _reassociable(self, expr: Binary) -> bool:
        # An accumulator update `acc = acc + x` may be reassociated: that is what lets LLVM
        # vectorize a reduction (documented tolerance: reductions are not bit-exact).
        return isinstance(expr.a, Var) and expr.a in self.slots

    def power(self, a: ir.Value, b: ir.Value, dtype: DType) -> ir.Value:
        if dtype.is_float:
            return self.math_call("pow", (a, b), register_dtype(dtype))
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
        if dtype is DType.BOOL or dtype.is_unsigned:
            return self.builder.icmp_unsigned(symbol, a, b)
        return self.builder.icmp_signed(symbol, a, b)

    def max_min(self, op: str, a: ir.Value, b: ir.Value, dtype: DType) -> ir.Value:
        symbol = ">" if op == "max" else "<"
        if not dtype.is_float:
            compare = (self.builder.icmp_unsigned if dtype is DType.BOOL or dtype.is_unsigned
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
        if expr.op == "abs" and dtype.is_unsigned:
            return a
        if expr.op == "abs" and not dtype.is_float:
            negative = self.builder.icmp_signed("<", a, a.type(0))
            return self.builder.select(negative, self.builder.neg(a), a)
        if not dtype.is_float:
            raise self.fail(f"{expr.op} needs a float operand, got {dtype}")
        if expr.op in _INTRINSICS:
            result = self.intrinsic(_INTRINSICS[expr.op], (a,))
        else:
            result = self.math_call(expr.op, (a,), register_dtype(dtype))
        return round_narrow(self.builder, result, dtype)  # (f16, bf16: as numpy rounds it)

    def intrinsic(self, name: str, args: Sequence[ir.Value]) -> ir.Value:
        """Call `name` (an overloaded LLVM intrinsic) on operands of one type."""
        return call_intrinsic(self.builder, name, args)

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
        scalar = REGISTER_TYPES[expr.dtype](register_constant(expr))
        return ir.Constant(ir.VectorType(scalar.type, self.lanes), [scalar] * self.lanes)


def call_intrinsic(builder: ir.IRBuilder, name: str, args: Sequence[ir.Value]) -> ir.Value:
    """Call `name` (an overloaded LLVM intrinsic) on operands of one type, scalar or vector
    (llvmlite's `declare_intrinsic` names scalar types only)."""
    module = builder.module
    type_ = args[0].type
    signature = ir.FunctionType(type_, [type_] * len(args))
    if not isinstance(type_, ir.VectorType):
        function = module.declare_intrinsic(name, [type_], signature)
        return builder.call(function, list(args))
    symbol = f"{name}.v{type_.count}{type_.element.intrinsic_name}"
    function = module.globals.get(symbol) or ir.Function(module, signature, symbol)
    return builder.call(function, list(args))


def _splat(type_: ir.Type, value: int | float) -> ir.Constant:
    """`value` as a constant of `type_`, every lane of a vector type."""
    if isinstance(type_, ir.VectorType):
        return ir.Constant(type_, [ir.Constant(type_.element, value)] * type_.count)
    return ir.Constant(type_, value)


def register_dtype(dtype: DType) -> DType:
    """The dtype whose LLVM type registers of `dtype` have: f32 for f16 and bf16."""
    return DType.F32 if dtype.is_narrow_float else dtype


def register_constant(expr: Imm) -> float | int | bool:
    """An immediate's value as its register holds it: an f16 or bf16 constant rounded to its
    type (the register is an f32)."""
    if expr.dtype.is_narrow_float:
        return float(expr.dtype.numpy.type(expr.value))
    return expr.value


def _like(type_: ir.Type, element: ir.Type) -> ir.Type:
    """`element`, or a vector of it as long as `type_` when that is a vector."""
    if isinstance(type_, ir.VectorType):
        return ir.VectorType(element, type_.count)
    return element


def from_memory(builder: ir.IRBuilder, value: ir.Value, dtype: DType) -> ir.Value:
    """A loaded element as its register holds it: bool as i1, f16 and bf16 widened to f32
    (exactly)."""
    if dtype is DType.BOOL:
        return builder.icmp_unsigned("!=", value, _splat(value.type, 0))
    if dtype is DType.F16:
        return builder.fpext(value, _like(value.type, F32))
    if dtype is DType.BF16:  # the high half of an f32
        wide = builder.zext(value, _like(value.type, I32))
        return builder.bitcast(builder.shl(wide, _splat(wide.type, 16)), _like(value.type, F32))
    return value


def to_memory(builder: ir.IRBuilder, value: ir.Value, dtype: DType) -> ir.Value:
    """A register as the element a store writes: bool as a byte, an f16 or bf16 register
    (already of its type, see `round_narrow`) narrowed."""
    if dtype is DType.BOOL:
        return builder.zext(value, _like(value.type, I8))
    if dtype is DType.F16:
        return builder.fptrunc(value, _like(value.type, F16))
    if dtype is DType.BF16:
        bits = builder.lshr(_bf16_bits(builder, value), _splat(_like(value.type, I32), 16))
        return builder.trunc(bits, _like(value.type, I16))
    return value


def _bf16_bits(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """The f32 bits of `value` rounded to bf16 (nearest, ties to even): the low 16 bits are
    zero. A NaN stays a NaN of the same sign (quieted)."""
    int_type = _like(value.type, I32)
    bits = builder.bitcast(value, int_type)
    odd = builder.and_(builder.lshr(bits, _splat(int_type, 16)), _splat(int_type, 1))
    rounded = builder.add(builder.add(bits, _splat(int_type, 0x7FFF)), odd)
    quiet = builder.or_(bits, _splat(int_type, 0x00400000))
    is_nan = builder.fcmp_unordered("uno", value, value)
    chosen = builder.select(is_nan, quiet, rounded)
    return builder.and_(chosen, _splat(int_type, 0xFFFF0000))


def round_narrow(builder: ir.IRBuilder, value: ir.Value, dtype: DType) -> ir.Value:
    """An f32 register rounded to `dtype` (f16 or bf16, nearest-even), still an f32: what a
    store and a load of it give."""
    if dtype is DType.F16:
        narrow = builder.fptrunc(value, _like(value.type, F16))
        return builder.fpext(narrow, value.type)
    if dtype is DType.BF16:
        return builder.bitcast(_bf16_bits(builder, value), value.type)
    return value


def _round_to_odd_f32(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """An f64 as the f32 nearest it rounded to odd (toward zero, the last bit set when
    inexact): rounding that f32 to f16 or bf16 then rounds the f64 once, correctly."""
    near = builder.fptrunc(value, _like(value.type, F32))
    back = builder.fpext(near, value.type)
    int_type = _like(value.type, I32)
    bits = builder.bitcast(near, int_type)
    away = builder.fcmp_ordered(">", call_intrinsic(builder, "llvm.fabs", (back,)),
                                call_intrinsic(builder, "llvm.fabs", (value,)))
    inexact = builder.fcmp_ordered("!=", back, value)
    toward_zero = builder.select(away, builder.sub(bits, _splat(int_type, 1)), bits)
    odd = builder.select(inexact, builder.or_(toward_zero, _splat(int_type, 1)), bits)
    return builder.bitcast(odd, _like(value.type, F32))


def _float_to_int(builder: ir.IRBuilder, value: ir.Value, target: DType) -> ir.Value:
    """numpy's float -> integer cast (truncation toward zero) for values in the target's range.
    Out of range (and NaN), which numpy leaves to the machine, narrow types wrap from the i32
    conversion (as numpy on x86 gives), u32 from the i64 one, and u64 takes values from 2^63
    up by subtracting 2^63 first."""
    to_type = _like(value.type, REGISTER_TYPES[target])
    if target.bits < 32:
        return builder.trunc(builder.fptosi(value, _like(value.type, I32)), to_type)
    if target is DType.U32:
        return builder.trunc(builder.fptosi(value, _like(value.type, I64)), to_type)
    if target is DType.U64:
        half = _splat(value.type, 2.0**63)
        low = builder.fptosi(value, to_type)
        high = builder.xor(builder.fptosi(builder.fsub(value, half), to_type),
                           _splat(to_type, -(2**63)))
        return builder.select(builder.fcmp_ordered(">=", value, half), high, low)
    return builder.fptosi(value, to_type)


def convert(builder: ir.IRBuilder, value: ir.Value, source: DType, target: DType) -> ir.Value:
    """numpy's astype between Ember dtypes, on registers (float -> int truncates toward zero;
    an f16 or bf16 result is rounded to its type, see `round_narrow`)."""
    if source is target:
        return value
    to_type = _like(value.type, REGISTER_TYPES[target])
    if target is DType.BOOL:
        if source.is_float:
            return builder.fcmp_unordered("!=", value, _splat(value.type, 0))
        return builder.icmp_unsigned("!=", value, _splat(value.type, 0))
    if source.is_float and target.is_float:
        return _convert_float(builder, value, source, target)
    if source.is_float:
        return _float_to_int(builder, value, target)
    if target.is_float:
        unsigned = source is DType.BOOL or source.is_unsigned
        wide = (builder.uitofp if unsigned else builder.sitofp)(value, _like(
            value.type, REGISTER_TYPES[register_dtype(target)]))
        return round_narrow(builder, wide, target)
    if source is DType.BOOL or (source.is_unsigned and target.bits > source.bits):
        return builder.zext(value, to_type)
    if target.bits > source.bits:
        return builder.sext(value, to_type)
    if target.bits < source.bits:
        return builder.trunc(value, to_type)
    return value  # the same bits: numpy reinterprets (wraps) them


def _convert_float(builder: ir.IRBuilder, value: ir.Value, source: DType,
                   target: DType) -> ir.Value:
    """Float -> float: f16 and bf16 registers are f32, so widening them is exact, and a
    narrowing from f64 rounds to odd first so that it rounds once."""
    if target is DType.F64:
        return builder.fpext(value, _like(value.type, F64))
    if source is DType.F64:
        if target is DType.F32:
            return builder.fptrunc(value, _like(value.type, F32))
        return round_narrow(builder, _round_to_odd_f32(builder, value), target)
    if target is DType.F32:
        return value  # an f16 or bf16 register is an f32 holding its value
    return round_narrow(builder, value, target)


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


def module_text(module: ir.Module) -> str:
    """The finalized text of a module that is not used after: the module is emptied as it is
    printed. Its instructions, blocks and functions point at each other, so left whole they are
    freed only by the cyclic garbage collector, whose passes over a model's millions of IR
    objects cost more than the printing (DenseNet-121: 0.6 s of collections during its compile
    and a 0.5 s one after it); emptied, they are freed as the references go."""
    text = finalize_module(str(module))
    for value in list(module.globals.values()):
        if isinstance(value, ir.Function):
            for block in value.blocks:
                block.instructions.clear()
            value.blocks.clear()
    module.globals.clear()
    return text


def finalize_module(text: str) -> str:
    """Patch loop-ID placeholders into LLVM's distinct self-referencing form (see above)."""
    lines = text.split("\n")
    for position, line in enumerate(lines):
        if '!"ember.loop.self"' in line:
            name = line.split("=", 1)[0].strip()
            lines[position] = line.replace('!"ember.loop.self"', name).replace(
                "= !{", "= distinct !{", 1)
    return "\n".join(lines)
