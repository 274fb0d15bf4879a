"""Branch-free math functions in LLVM IR, for scalar and vector float types.

    fn = math_function(module, "exp", ir.VectorType(ir.FloatType(), 16))
    y = builder.call(fn, [x])          # inlined (alwaysinline): no call survives optimization

Compiled kernels never call libm per element. Every function here is straight-line code: range
reduction (Cody-Waite with FMA), a polynomial or rational function, exponent scaling (`llvm.ldexp`,
one `vscalefps` on AVX-512; elsewhere two powers of two built from their bits), and clamps or
`select` for special values, so a loop that calls one vectorizes like any other loop. (The one
exception, sin and cos for |x| >= 2**30: a vector branches to a cold block for its table
reduction when some lane needs it; a scalar calls an out-of-line function only then, whose
masked vector variants the loop vectorizer calls once per vector.)
Each function is emitted once per module as an internal `alwaysinline` function named
`ember.<name>.<type>` (e.g. `ember.exp.v16f32`); `type_` is float, double, or a vector of either.

Functions (`SUPPORTED_FUNCTIONS`): exp, expm1, log, tanh, sigmoid, silu, erf, gelu (erf form),
gelu_tanh, sin, cos, pow (two arguments, float exponent), sqrt, rsqrt (`llvm.sqrt`, one
instruction, then a division).

Special values follow numpy: exp overflows to inf and underflows to 0; log(0) = -inf,
log(x < 0) = nan, log(inf) = inf; tanh, sigmoid, erf saturate to their limits at ±inf; nan
propagates through every function (pow(x, 0) = pow(1, y) = 1, as in numpy). silu, gelu and gelu_tanh
give nan at -inf (x f(x) = -inf * 0), as numpy's and PyTorch's float32 formulas do.

Measured maximum errors over the sweeps in `tests/backend/test_vecmath.py` (ulp of the result's
type, against float64 numpy/`math`, or mpmath for double gelu and gelu_tanh; the tests assert the
bound column, set a little above; f64 figures include the reference's own rounding):

    function   f32 measured (scalar / <16 x float>)   f64 measured   bounds f32, f64
    exp        0.84 / 0.84                            1              1.5, 2
    expm1      1.38 / 1.40                            2              2, 3
    log        1.84 / 1.85                            2              2.5, 3
    tanh       2.89 / 3.02                            3              3.5, 4
    sigmoid    1.98 / 2.03                            2              3, 3
    silu       2.72 / 2.66                            3              3.5, 4
    erf        2.35 / 2.33                            2              3, 3
    gelu       4.78 / 4.78                            5              6, 6
    gelu_tanh  3.06 / 2.89                            3              4, 4
    sin, cos   1.43 / 1.41 (any finite x)             1              2, 2
    pow        0 (computed in double, then rounded)   see below      1, 3 (1 + 2.5 |y ln x|)
    sqrt       0 (correctly rounded)                  0              0.5, 0.5
    rsqrt      1.44                                   0 (vs 1/sqrt)  1.5, 1.5

Not at full precision: double pow, whose error grows as about 2 |y ln x| ulp (log|x| is not
carried in double-double; 1146 ulp at y ln x = 570), except for an integer y in -4..4, which
is multiplied out (exact where the power is representable). sin and cos reduce the argument in
double (also for float): Cody-Waite below |x| = 2**30, a table of 2/pi (Payne-Hanek) from there
to the largest finite number, exact enough for the same bound everywhere. silu, gelu and gelu_tanh
results below the smallest normal carry an absolute error of a few subnormal steps.
docs/vecmath.md has the details.

The code relies on a fused multiply-add (`llvm.fma`): exact on hosts with FMA, as every x86-64
CPU with AVX2 or AVX-512 has; elsewhere LLVM lowers it to a libm call (correct, slow).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence

from llvmlite import ir

from ember.errors import LoweringError
from ember.target import Target

SUPPORTED_FUNCTIONS = ("exp", "expm1", "log", "tanh", "sigmoid", "silu", "erf", "gelu",
                       "gelu_tanh", "sin", "cos", "pow", "sqrt", "rsqrt")


def math_function(module: ir.Module, name: str, type_: ir.Type) -> ir.Function:
    """The function `name` for `type_` in `module`, created on first use and reused after.

    `type_` is `ir.FloatType()`, `ir.DoubleType()` or an `ir.VectorType` of either (any lane
    count). The function takes one argument of that type (two for `pow`: base, exponent) and
    returns that type. It is internal and `alwaysinline`: after optimization no call remains
    (but scalar sin and cos, which call their table reduction out of line for |x| >= 2**30).
    """
    if name not in _BODIES:
        raise LoweringError(name, f"no vector math function {name!r}; known: "
                            + ", ".join(SUPPORTED_FUNCTIONS))
    function_name = f"ember.{name}.{_type_suffix(type_)}"
    existing = module.globals.get(function_name)
    if existing is not None:
        return existing
    arity = 2 if name == "pow" else 1
    function = ir.Function(module, ir.FunctionType(type_, [type_] * arity), function_name)
    function.linkage = "internal"
    function.attributes.add("alwaysinline")
    function.attributes.add("nounwind")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    builder.ret(_BODIES[name](_Emitter(builder, type_), *function.args))
    return function


def _type_suffix(type_: ir.Type) -> str:
    element = type_.element if isinstance(type_, ir.VectorType) else type_
    if isinstance(element, ir.FloatType):
        scalar = "f32"
    elif isinstance(element, ir.DoubleType):
        scalar = "f64"
    else:
        raise LoweringError("math_function", f"type {type_} is not float, double or a vector "
                            "of them")
    return f"v{type_.count}{scalar}" if isinstance(type_, ir.VectorType) else scalar


def _int_suffix(type_: ir.Type) -> str:
    if isinstance(type_, ir.VectorType):
        return f"v{type_.count}i{type_.element.width}"
    return f"i{type_.width}"


def native_ldexp(module: ir.Module | None = None) -> bool:
    """True where `llvm.ldexp` compiles to one instruction for every vector width: AVX-512
    (`vscalefps/pd`). Elsewhere LLVM calls libm's ldexp per element, so `ldexp` scales by hand.
    The module's target decides (`module_target`); the object cache is keyed by it."""
    return module_target(module).vector_bits == 512


def module_target(module: ir.Module | None) -> Target:
    """The Target a module is generated for: set by `for_target(module, target)`, else the
    host (modules that tests and benchmarks build by hand)."""
    target = getattr(module, "ember_target", None)
    return target if target is not None else Target.host()


def for_target(module: ir.Module, target: Target) -> ir.Module:
    """Mark `module` as generated for `target` (vector math chooses its instructions by it)."""
    module.ember_target = target  # type: ignore[attr-defined]
    return module


# --- the emitter: arithmetic on one float type (scalar or vector) with splatted constants ---


class _Emitter:
    """Builds instructions on values of one float type and the integer type of the same width."""

    def __init__(self, builder: ir.IRBuilder, type_: ir.Type) -> None:
        self.builder = builder
        self.type = type_
        self.lanes = type_.count if isinstance(type_, ir.VectorType) else None
        element = type_.element if self.lanes else type_
        self.is_double = isinstance(element, ir.DoubleType)
        self.bits = 64 if self.is_double else 32
        self.mantissa_bits = 52 if self.is_double else 23
        self.bias = 1023 if self.is_double else 127
        self.int_type = self._shaped(ir.IntType(self.bits))
        self.bool_type = self._shaped(ir.IntType(1))

    def _shaped(self, element: ir.Type) -> ir.Type:
        return ir.VectorType(element, self.lanes) if self.lanes else element

    def with_type(self, element: ir.Type) -> _Emitter:
        """An emitter on the same builder for `element` (float or double) with the same lanes."""
        return _Emitter(self.builder, self._shaped(element))

    # constants
    def const(self, value: float) -> ir.Constant:
        element = self.type.element if self.lanes else self.type
        if self.lanes:
            return ir.Constant(self.type, [ir.Constant(element, value)] * self.lanes)
        return ir.Constant(element, value)

    def iconst(self, value: int) -> ir.Constant:
        element = ir.IntType(self.bits)
        if self.lanes:
            return ir.Constant(self.int_type, [ir.Constant(element, value)] * self.lanes)
        return ir.Constant(element, value)

    def bconst(self, value: bool) -> ir.Constant:
        if self.lanes:
            return ir.Constant(self.bool_type, [ir.Constant(ir.IntType(1), value)] * self.lanes)
        return ir.Constant(ir.IntType(1), value)

    # intrinsics
    def intrinsic(self, name: str, *args: ir.Value) -> ir.Value:
        module = self.builder.module
        full_name = f"llvm.{name}.{_type_suffix(self.type)}"
        function = module.globals.get(full_name)
        if function is None:
            function = ir.Function(module, ir.FunctionType(self.type, [self.type] * len(args)),
                                   full_name)
        return self.builder.call(function, list(args))

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.intrinsic("fma", a, b, c)

    def abs(self, x: ir.Value) -> ir.Value:
        return self.intrinsic("fabs", x)

    def rint(self, x: ir.Value) -> ir.Value:
        return self.intrinsic("rint", x)

    def floor(self, x: ir.Value) -> ir.Value:
        return self.intrinsic("floor", x)

    def sqrt(self, x: ir.Value) -> ir.Value:
        return self.intrinsic("sqrt", x)

    def copysign(self, magnitude: ir.Value, sign: ir.Value) -> ir.Value:
        return self.intrinsic("copysign", magnitude, sign)

    def clamp(self, x: ir.Value, low: float, high: float) -> ir.Value:
        """min(max(x, low), high); nan becomes `high` (minnum/maxnum ignore a nan operand)."""
        return self.intrinsic("minnum", self.intrinsic("maxnum", x, self.const(low)),
                              self.const(high))

    def at_least(self, x: ir.Value, low: float) -> ir.Value:
        """max(x, low) with nan passed through: `low > x ? low : x`, one x86 `maxps`."""
        low_value = self.const(low)
        return self.select(self.compare(">", low_value, x), low_value, x)

    def at_most(self, x: ir.Value, high: float) -> ir.Value:
        """min(x, high) with nan passed through: `high < x ? high : x`, one x86 `minps`."""
        high_value = self.const(high)
        return self.select(self.compare("<", high_value, x), high_value, x)

    # arithmetic
    def add(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.builder.fadd(a, b)

    def sub(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.builder.fsub(a, b)

    def mul(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.builder.fmul(a, b)

    def div(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.builder.fdiv(a, b)

    def neg(self, a: ir.Value) -> ir.Value:
        return self.builder.fneg(a)

    def horner(self, x: ir.Value, coefficients: Sequence[float]) -> ir.Value:
        """c[0] + c[1] x + c[2] x^2 + ... by Horner's rule with FMAs."""
        result = self.const(coefficients[-1])
        for coefficient in reversed(coefficients[:-1]):
            result = self.fma(result, x, self.const(coefficient))
        return result

    def estrin(self, x: ir.Value, coefficients: Sequence[float]) -> ir.Value:
        """The polynomial of `horner` by Estrin's scheme: pairs c[2i] + c[2i+1] x, combined
        with x^2, x^4, ...; a dependency chain of about log2(degree) FMAs instead of degree."""
        terms = [self.fma(self.const(coefficients[i + 1]), x, self.const(coefficients[i]))
                 if i + 1 < len(coefficients) else self.const(coefficients[i])
                 for i in range(0, len(coefficients), 2)]
        power = self.mul(x, x)
        while len(terms) > 1:
            terms = [self.fma(terms[i + 1], power, terms[i]) if i + 1 < len(terms) else terms[i]
                     for i in range(0, len(terms), 2)]
            if len(terms) > 1:
                power = self.mul(power, power)
        return terms[0]

    def clenshaw(self, y: ir.Value, coefficients: Sequence[float]) -> ir.Value:
        """sum c[k] T_k(y) (Chebyshev polynomials, |y| <= 1) by Clenshaw's recurrence."""
        two_y = self.add(y, y)
        following, current = self.const(0.0), self.const(0.0)
        for coefficient in reversed(coefficients[1:]):
            following, current = current, self.fma(
                two_y, current, self.sub(self.const(coefficient), following))
        return self.fma(y, current, self.sub(self.const(coefficients[0]), following))

    # comparisons and selection (ordered comparisons are false when an operand is nan)
    def compare(self, operator: str, a: ir.Value, b: ir.Value | float) -> ir.Value:
        if isinstance(b, (int, float)):
            b = self.const(b)
        return self.builder.fcmp_ordered(operator, a, b)

    def is_nan(self, x: ir.Value) -> ir.Value:
        return self.builder.fcmp_unordered("uno", x, x)

    def select(self, condition: ir.Value, a: ir.Value | float, b: ir.Value | float) -> ir.Value:
        a = self.const(a) if isinstance(a, (int, float)) else a
        b = self.const(b) if isinstance(b, (int, float)) else b
        return self.builder.select(condition, a, b)

    def both(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.builder.and_(a, b)

    def negation(self, a: ir.Value) -> ir.Value:
        return self.builder.xor(a, self.bconst(True))

    # integers and bits
    def to_bits(self, x: ir.Value) -> ir.Value:
        return self.builder.bitcast(x, self.int_type)

    def from_bits(self, x: ir.Value) -> ir.Value:
        return self.builder.bitcast(x, self.type)

    def to_int(self, x: ir.Value) -> ir.Value:
        return self.builder.fptosi(x, self.int_type)

    def to_float(self, x: ir.Value) -> ir.Value:
        return self.builder.sitofp(x, self.type)

    def power_of_two(self, exponent: ir.Value) -> ir.Value:
        """2**exponent for an integer exponent in the normal range, built from its bits."""
        biased = self.builder.add(exponent, self.iconst(self.bias))
        return self.from_bits(self.builder.shl(biased, self.iconst(self.mantissa_bits)))

    def scale(self, x: ir.Value, exponent: ir.Value) -> ir.Value:
        """x * 2**exponent in two steps, so that results near overflow and in the subnormal
        range come out right (each factor stays a normal number; one rounding at the end)."""
        half = self.builder.ashr(exponent, self.iconst(1))
        rest = self.builder.sub(exponent, half)
        return self.mul(self.mul(x, self.power_of_two(half)), self.power_of_two(rest))

    def ldexp(self, x: ir.Value, exponent: ir.Value) -> ir.Value:
        """x * 2**exponent (any integer exponent that keeps the two-step `scale` in range):
        `llvm.ldexp` where it is one instruction (AVX-512 `vscalefps`, which rounds once into
        the subnormals and overflows to inf), else `scale`."""
        if not native_ldexp(self.builder.module):
            return self.scale(x, exponent)
        module = self.builder.module
        name = f"llvm.ldexp.{_type_suffix(self.type)}.{_int_suffix(self.int_type)}"
        function = module.globals.get(name)
        if function is None:
            function = ir.Function(module, ir.FunctionType(self.type, [self.type, self.int_type]),
                                   name)
        return self.builder.call(function, [x, exponent])


# --- constants ---

_LN2 = math.log(2.0)
_LOG2E = 1.0 / _LN2
# Cody-Waite split of ln 2: the high part has trailing zero bits, so n * high is exact.
_LN2_HIGH = {False: 0.693359375, True: 6.93147180369123816490e-01}
_LN2_LOW = {False: -2.12194440e-4, True: 1.90821492927058770002e-10}
# exp(x) overflows above ln(max float) (88.72, 709.78) and rounds to 0 below ln(smallest
# subnormal / 2) (-103.97, -745.13); exp is inf at and above _EXP_HIGH, 0 at and below _EXP_LOW.
_EXP_HIGH = {False: 88.8, True: 709.8}
_EXP_LOW = {False: -104.0, True: -746.0}
# x * log2(e) + this rounds to an integer held in the low mantissa bits.
_ROUNDING_MAGIC = {False: 1.5 * 2.0**23, True: 1.5 * 2.0**52}
# expm1(x) equals exp(x) above this, and -1 below minus this (to the type's precision).
_EXPM1_LIMIT = {False: 20.0, True: 40.0}


def _taylor(count: int, first: int, step: int, sign: int = 1) -> list[float]:
    """Coefficients 1/first!, sign/(first+step)!, 1/(first+2 step)!, ... (count of them)."""
    return [sign ** index / math.factorial(first + step * index) for index in range(count)]


# expm1(r) = r + r^2 * P(r) on |r| <= ln2/2 (Taylor, truncation below a quarter ulp).
_EXPM1_POLY = {False: _taylor(7, 2, 1), True: _taylor(12, 2, 1)}
# exp(r) on |r| <= 1.001 ln2/2 for float: 1 + r + r^2 (c2 + ... + c6 r^4), relative minimax
# (linear program on 4001 points), approximation error 0.05 ulp; by Horner's rule in 6 FMAs.
_EXP_POLY_F32 = [1.0, 1.0, 0.4999999341250588, 0.166665201078116, 0.041668394210057025,
                 0.008368780411915328, 0.0013814467099908792]


# --- exp, expm1 ---


def _reduce_exp(m: _Emitter, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """n = round(x / ln 2) and r = x - n ln 2 with |r| <= ln2 / 2."""
    n = m.rint(m.mul(x, m.const(_LOG2E)))
    r = m.fma(m.neg(n), m.const(_LN2_HIGH[m.is_double]), x)
    r = m.fma(m.neg(n), m.const(_LN2_LOW[m.is_double]), r)
    return n, r


def _expm1_reduced(m: _Emitter, r: ir.Value) -> ir.Value:
    # Float: Estrin's scheme (the polynomial is a correction below r^2/2, so its rounding order
    # hardly matters, and the shorter dependency chain lets more vectors overlap in flight).
    evaluate = m.horner if m.is_double else m.estrin
    return m.fma(m.mul(r, r), evaluate(r, _EXPM1_POLY[m.is_double]), r)


def _reduce_exp_to_bits(m: _Emitter, x: ir.Value, offset: int = 0
                        ) -> tuple[ir.Value, ir.Value]:
    """(n + offset, r) of `_reduce_exp` with n as an integer, without `rint` or a conversion:
    adding 1.5 * 2**mantissa_bits rounds x / ln 2 to an integer that lands in the low bits, and
    the difference of the bit patterns is n. Defined for every x (a nan x gives a nan r)."""
    magic_value = _ROUNDING_MAGIC[m.is_double]
    magic = m.const(magic_value)
    shifted = m.fma(x, m.const(_LOG2E), magic)
    n = m.sub(shifted, magic)
    exponent = m.builder.sub(m.to_bits(shifted), m.iconst(_bits_of(magic_value, m) - offset))
    r = m.fma(m.neg(n), m.const(_LN2_HIGH[m.is_double]), x)
    r = m.fma(m.neg(n), m.const(_LN2_LOW[m.is_double]), r)
    return exponent, r


def _bits_of(value: float, m: _Emitter) -> int:
    """The bit pattern of `value` in the emitter's float type, as an integer."""
    if m.is_double:
        return struct.unpack("<q", struct.pack("<d", value))[0]
    return struct.unpack("<i", struct.pack("<f", value))[0]


def _exp_reduced(m: _Emitter, r: ir.Value) -> ir.Value:
    """exp(r) for |r| <= ln2 / 2 (a little beyond is fine)."""
    if m.is_double:
        return m.add(_expm1_reduced(m, r), m.const(1.0))
    return m.horner(r, _EXP_POLY_F32)


def _exp(m: _Emitter, x: ir.Value, nonpositive: bool = False) -> ir.Value:
    """exp(x); with `nonpositive` the caller promises x <= 0 (or nan). Clamping to the range
    where exp is finite and nonzero (keeping nan), and scaling by 2**n with `ldexp`, gives
    inf above, 0 below and nan for nan without any select."""
    x = m.at_least(x, _EXP_LOW[m.is_double])
    if not nonpositive:
        x = m.at_most(x, _EXP_HIGH[m.is_double])
    exponent, r = _reduce_exp_to_bits(m, x)
    return m.ldexp(_exp_reduced(m, r), exponent)


def _expm1(m: _Emitter, x: ir.Value, nonpositive: bool = False) -> ir.Value:
    """expm1(x); with `nonpositive` the caller promises x <= 0 (or nan), which drops the exp
    that large positive x need (about a quarter of the instructions)."""
    limit = _EXPM1_LIMIT[m.is_double]
    n, r = _reduce_exp(m, m.clamp(x, -limit, 0.0 if nonpositive else limit))
    power = m.power_of_two(m.to_int(n))
    # 2^n (expm1(r) + 1) - 1 with one rounding: 2^n - 1 is exact for the n that can occur.
    result = m.fma(power, _expm1_reduced(m, r), m.sub(power, m.const(1.0)))
    if not nonpositive:
        result = m.select(m.compare(">", x, limit), _exp(m, x), result)
    result = m.select(m.compare("<", x, -limit), -1.0, result)
    result = m.select(m.compare("==", x, 0.0), x, result)  # keeps the sign of zero
    return m.select(m.is_nan(x), x, result)


# --- log ---

# log(m) = 2 atanh(s) = 2s + s R(s^2), s = (m-1)/(m+1), |s| <= 0.1716: R(z) = sum 2 z^k/(2k+1).
_LOG_POLY = {double: [2.0 / (2 * k + 1) for k in range(1, count + 1)]
             for double, count in ((False, 4), (True, 10))}


def _log_positive(m: _Emitter, x: ir.Value) -> ir.Value:
    """log(x) for finite x > 0 (subnormals included); other inputs give finite garbage."""
    subnormal = m.compare("<", x, 2.0 ** (1 - m.bias))
    scaled = m.select(subnormal, m.mul(x, m.const(2.0 ** m.mantissa_bits)), x)
    bits = m.to_bits(scaled)
    builder = m.builder
    exponent = builder.sub(builder.lshr(bits, m.iconst(m.mantissa_bits)), m.iconst(m.bias))
    mantissa_mask = (1 << m.mantissa_bits) - 1
    one_bits = m.bias << m.mantissa_bits
    mantissa = m.from_bits(builder.or_(builder.and_(bits, m.iconst(mantissa_mask)),
                                       m.iconst(one_bits)))  # in [1, 2)
    large = m.compare(">", mantissa, math.sqrt(2.0))
    mantissa = m.select(large, m.mul(mantissa, m.const(0.5)), mantissa)  # in [sqrt(1/2), sqrt 2]
    exponent = m.add(m.to_float(exponent), m.select(large, 1.0, 0.0))
    exponent = m.sub(exponent, m.select(subnormal, float(m.mantissa_bits), 0.0))
    f = m.sub(mantissa, m.const(1.0))
    s = m.div(f, m.add(f, m.const(2.0)))
    z = m.mul(s, s)
    log_mantissa = m.fma(s, m.mul(z, m.horner(z, _LOG_POLY[m.is_double])), m.add(s, s))
    low = m.fma(exponent, m.const(_LN2_LOW[m.is_double]), log_mantissa)
    return m.fma(exponent, m.const(_LN2_HIGH[m.is_double]), low)


def _log(m: _Emitter, x: ir.Value) -> ir.Value:
    result = _log_positive(m, x)
    result = m.select(m.compare("==", x, math.inf), math.inf, result)
    result = m.select(m.compare("==", x, 0.0), -math.inf, result)
    result = m.select(m.compare("<", x, 0.0), math.nan, result)
    return m.select(m.is_nan(x), x, result)


# --- tanh, sigmoid, silu ---


# Float tanh by the double-angle formula: with N / D = tanh(x/2) a rational function
# (2N = x P(x^2), D = Q(x^2), P(0) = Q(0) = 1), tanh x = 2 N D / (N^2 + D^2). For large |x| the
# rounding errors of N and D are damped by (1 - t^2) / (1 + t^2), t = N / D (a plain rational
# x P / Q for tanh itself measured 5 ulp there). P, Q: relative minimax of degree 4 over 4 in x^2
# for tanh(x/2) / (x/2) on |x| <= _TANH_LIMIT (linear programs iterated on the weight Q, Loeb's
# method, 9000 points), approximation error 0.01 ulp; tanh(x) rounds to 1 in float beyond it.
_TANH_LIMIT = 9.5
_TANH_NUMERATOR = [1.0, 0.0335072338197566, 0.00021970040071854226, 3.198941151949996e-07,
                   4.349181430299891e-11]
_TANH_DENOMINATOR = [1.0, 0.11684056784095262, 0.0016230809322910435, 5.159199275317634e-06,
                     2.889085172597291e-09]


def _tanh_float(m: _Emitter, x: ir.Value) -> ir.Value:
    """One division and no exp. With 2N = x + x s p(s) and D = 1 + d, d = s q(s) (s = x^2; the
    1 + ... split keeps the roundings on small terms), tanh x = 2N D / (1 + e) with
    e = d (d + 2) + (2N)^2 / 4: four roundings of quantities near the result's size."""
    x = m.at_most(m.at_least(x, -_TANH_LIMIT), _TANH_LIMIT)  # nan flows through
    square = m.mul(x, x)
    twice_numerator = m.fma(m.mul(x, square), m.horner(square, _TANH_NUMERATOR[1:]), x)
    d = m.mul(square, m.horner(square, _TANH_DENOMINATOR[1:]))
    quarter = m.mul(m.mul(twice_numerator, m.const(0.25)), twice_numerator)
    e = m.fma(d, m.add(d, m.const(2.0)), quarter)
    product = m.fma(twice_numerator, d, twice_numerator)  # 2N D
    return m.div(product, m.add(e, m.const(1.0)))


def _tanh(m: _Emitter, x: ir.Value) -> ir.Value:
    if not m.is_double:
        return _tanh_float(m, x)
    # tanh|x| = -e / (e + 2) with e = expm1(-2|x|) in (-1, 0]: no cancellation anywhere.
    e = _expm1(m, m.mul(m.abs(x), m.const(-2.0)), nonpositive=True)
    result = m.copysign(m.div(m.neg(e), m.add(e, m.const(2.0))), x)
    return m.select(m.is_nan(x), x, result)


def _sigmoid_parts(m: _Emitter, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(numerator, denominator) of sigmoid(x): 1 / (1 + e) for x >= 0, e / (1 + e) below,
    with e = exp(-|x|), so neither overflows nor cancels."""
    e = _exp(m, m.neg(m.abs(x)), nonpositive=True)
    numerator = m.select(m.compare(">=", x, 0.0), m.const(1.0), e)
    return numerator, m.add(e, m.const(1.0))


def _sigmoid(m: _Emitter, x: ir.Value) -> ir.Value:
    numerator, denominator = _sigmoid_parts(m, x)
    return m.div(numerator, denominator)


def _nan_at_minus_infinity(m: _Emitter, x: ir.Value, result: ir.Value) -> ir.Value:
    """x f(x) with f -> 0 at -inf is -inf * 0 = nan there, as numpy's and PyTorch's float32
    formulas give (the polynomial path would return the limit -0.0)."""
    return m.select(m.compare("==", x, -math.inf), math.nan, result)


def _silu(m: _Emitter, x: ir.Value) -> ir.Value:
    numerator, denominator = _sigmoid_parts(m, x)
    return _nan_at_minus_infinity(m, x, m.div(m.mul(x, numerator), denominator))


# --- erf, gelu ---

# erf(a) = a P(a^2) for a < _ERF_SMALL (Taylor series of erf, truncation below a quarter ulp).
_ERF_SMALL = 0.75
_ERF_POLY = {double: [2.0 / math.sqrt(math.pi) * (-1) ** k / (math.factorial(k) * (2 * k + 1))
                      for k in range(count)] for double, count in ((False, 9), (True, 16))}
# erfc(a) = t exp(-a^2 + g(t)), t = 2 / (2 + a), for a >= _ERF_SMALL; g is a Chebyshev series in
# y = 2 t / t_max - 1 on t in (0, t_max], t_max = 2 / (2 + 0.75), interpolated with mpmath at 40
# digits and truncated where the terms drop below a tenth of an ulp.
_ERFC_T_MAX = 2.0 / (2.0 + _ERF_SMALL)
_ERFC_CHEBYSHEV = [
    -0.8314912827460389, 0.4550441283466537, 0.018795158493296618, -0.0027777457519392013,
    -0.0005327863829919371, 3.338304380203139e-05, 1.6650704178715777e-05,
    -4.787552951074236e-07, -5.884444671037403e-07, 1.0671952655692948e-08,
    2.2739062568517423e-08, -6.434752056460595e-10, -9.21243302564241e-10,
    5.4356720659674283e-11, 3.7022675550027413e-11, -4.170530359981283e-12,
    -1.3551336894371984e-12, 2.762573123091351e-13, 3.697380841056442e-14,
    -1.5521714517672558e-14, -1.4738519260065097e-17, 6.927879842922765e-16,
    -9.061924959416253e-17, -1.8810397153106867e-17, 7.437994569776888e-18,
]
_ERFC_TERMS = {False: 13, True: 25}


def _chebyshev_to_power(coefficients: Sequence[float], scale: float) -> list[float]:
    """Coefficients in t of sum c[k] T_k(scale t - 1) (the power basis, lowest degree first)."""
    # T_k as power series in y by the recurrence T_k+1 = 2 y T_k - T_k-1, then y = scale t - 1.
    previous, current = [1.0], [0.0, 1.0]
    in_y = [0.0] * len(coefficients)
    for index, coefficient in enumerate(coefficients):
        term = [1.0] if index == 0 else current
        if index >= 2:
            term = [2.0 * c for c in [0.0, *current]]
            term = [a - (previous[i] if i < len(previous) else 0.0) for i, a in enumerate(term)]
            previous, current = current, term
        for power, value in enumerate(term):
            in_y[power] += coefficient * value
    in_t = [0.0] * len(in_y)
    for power, value in enumerate(in_y):  # (scale t - 1)^power, binomially
        for j in range(power + 1):
            in_t[j] += value * math.comb(power, j) * scale ** j * (-1.0) ** (power - j)
    return in_t


# Float evaluates g by Horner's rule in t (one FMA a term, against Clenshaw's two operations):
# the power-basis coefficients stay below 2.5 in magnitude on t in (0, t_max], and the sweep in
# tests/backend/test_vecmath.py measures no loss against the Chebyshev form.
_ERFC_POWER_F32 = _chebyshev_to_power(_ERFC_CHEBYSHEV[:_ERFC_TERMS[False]], 2.0 / _ERFC_T_MAX)
# erfc(a) is below half the smallest subnormal (also times |x| for gelu) beyond this.
_ERFC_LIMIT = {False: 10.5, True: 27.5}


def _erf_small(m: _Emitter, a: ir.Value) -> ir.Value:
    return m.mul(a, m.horner(m.mul(a, a), _ERF_POLY[m.is_double]))


def _erfc_large(m: _Emitter, a: ir.Value, square_high: ir.Value,
                square_low: ir.Value) -> ir.Value:
    """erfc(a) for a >= 0.75, given a^2 = square_high + square_low exactly (an error of one
    rounding in a^2 would cost a relative error of a^2 ulp in the result)."""
    t = m.div(m.const(2.0), m.add(a, m.const(2.0)))
    if m.is_double:
        y = m.fma(t, m.const(2.0 / _ERFC_T_MAX), m.const(-1.0))
        g = m.clenshaw(y, _ERFC_CHEBYSHEV[:_ERFC_TERMS[True]])
    else:
        g = m.estrin(t, _ERFC_POWER_F32)
    # g - a^2 as sum + error (Fast2Sum: |a^2| > |g| here), then exp(sum) (1 + error - low).
    total = m.sub(g, square_high)
    error = m.sub(g, m.add(total, square_high))
    power = _exp(m, total, nonpositive=True)
    return m.mul(t, m.fma(power, m.sub(error, square_low), power))


def _erf(m: _Emitter, x: ir.Value) -> ir.Value:
    a = m.clamp(m.abs(x), 0.0, _ERFC_LIMIT[m.is_double])
    square = m.mul(a, a)
    complement = _erfc_large(m, a, square, m.fma(a, a, m.neg(square)))
    magnitude = m.select(m.compare("<", a, _ERF_SMALL), _erf_small(m, a),
                         m.sub(m.const(1.0), complement))
    return m.select(m.is_nan(x), x, m.copysign(magnitude, x))


# Float gelu takes erfc(a) = t G(t) exp(-a^2), t = 2 / (2 + a), from one series over the whole
# range a in [0, 10.5] (t in [_GELU_T_MIN, 1]; G = erfcx(a) / t lies in [0.33, 1]): G as a
# polynomial in y = (2t - 1 - t_min) / (1 - t_min) in [-1, 1], Chebyshev interpolation of
# mpmath's G at 400 nodes turned into powers of y (better conditioned in float than powers of
# t); relative truncation error 0.1 ulp, 1.3 ulp with float evaluation (numpy emulation).
_GELU_T_MIN = 2.0 / (2.0 + _ERFC_LIMIT[False])
_GELU_ERFCX_POLY = [
    0.5694087225293494, 0.32718790662381064, 0.10352098777454755, 0.006308424428814428,
    -0.00632728164877125, -0.0006748691215678987, 0.0006249549825224957, 9.80038260209564e-06,
    -7.086763589989728e-05, 6.553030711398981e-06, 5.670811201229156e-06,
]


def _gelu_float(m: _Emitter, x: ir.Value) -> ir.Value:
    """x/2 erfc(-x/sqrt 2) with a = |x|/sqrt 2: x E for x < 0 and x (1 - E) for x >= 0, where
    E = erfc(a) / 2 (no cancellation either way, and no separate series for small a).
    -a^2 = -x^2/2 is carried exactly as high + low (exp(high) (1 + low)), and the exp is
    inlined so that the 2**(n-1) scaling comes last (one rounding into the subnormals)."""
    limit = _ERFC_LIMIT[False] * math.sqrt(2.0)
    lower = m.at_least(x, -limit)  # nan flows through; -inf: see the end
    xc = m.at_most(lower, limit)
    minus_half_x = m.mul(xc, m.const(-0.5))
    high = m.mul(minus_half_x, xc)
    low = m.fma(minus_half_x, xc, m.neg(high))
    # t = 2 / (2 + |x|/sqrt 2) = c / (c + |x|), c = 2 sqrt 2 (t(0) = 1 exactly)
    c = m.const(2.0 * math.sqrt(2.0))
    t = m.div(c, m.add(m.abs(xc), c))
    y = m.fma(t, m.const(2.0 / (1.0 - _GELU_T_MIN)),
              m.const(-(1.0 + _GELU_T_MIN) / (1.0 - _GELU_T_MIN)))
    erfcx = m.mul(t, m.horner(y, _GELU_ERFCX_POLY))
    exponent, r = _reduce_exp_to_bits(m, high, offset=-1)  # E = erfc / 2: scale by 2**(n-1)
    power = _exp_reduced(m, m.add(r, low))  # exp(high + low) = 2**n exp(r + low)
    half_complement = m.ldexp(m.mul(erfcx, power), exponent)
    factor = m.select(m.compare("<", x, 0.0), half_complement,
                      m.sub(m.const(1.0), half_complement))
    return _nan_at_minus_infinity(m, x, m.mul(lower, factor))


def _gelu(m: _Emitter, x: ir.Value) -> ir.Value:
    if not m.is_double:
        return _gelu_float(m, x)
    # gelu(x) = x/2 (1 + erf(z)) = x/2 erfc(-z), z = x / sqrt 2; x < 0 uses erfc(|z|) directly.
    limit = _ERFC_LIMIT[m.is_double]
    xc = m.clamp(x, -limit * math.sqrt(2.0), limit * math.sqrt(2.0))
    a = m.mul(m.abs(xc), m.const(math.sqrt(0.5)))
    square = m.mul(xc, xc)  # z^2 = x^2 / 2 exactly as (square + low) / 2
    low = m.fma(xc, xc, m.neg(square))
    complement = _erfc_large(m, a, m.mul(square, m.const(0.5)), m.mul(low, m.const(0.5)))
    small = m.compare("<", a, _ERF_SMALL)
    erf_small = _erf_small(m, a)
    negative_factor = m.select(small, m.sub(m.const(1.0), erf_small), complement)
    positive_factor = m.select(small, m.add(m.const(1.0), erf_small),
                               m.sub(m.const(2.0), complement))
    factor = m.select(m.compare("<", x, 0.0), negative_factor, positive_factor)
    result = m.mul(m.mul(x, m.const(0.5)), factor)
    return m.select(m.is_nan(x), x, _nan_at_minus_infinity(m, x, result))


# 2 sqrt(2/pi) as a double and the double of its remainder.
_GELU_TANH_SCALE = (1.5957691216057308, -9.96930880911092e-17)


def _two_product(m: _Emitter, a: ir.Value, b: ir.Value) -> tuple[ir.Value, ir.Value]:
    """a * b as high + low exactly (FMA)."""
    high = m.mul(a, b)
    return high, m.fma(a, b, m.neg(high))


def _gelu_tanh(m: _Emitter, x: ir.Value) -> ir.Value:
    # x/2 (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): no cancellation.
    # For x << 0 the result is about x exp(2u), so one rounding of 2u would cost |2u| ulp (up
    # to 90 at x = -10): 2u is carried as high + low (error-free products and sums).
    xc = m.clamp(x, -30.0, 30.0)  # exp(2u) at -30 is below the subnormals of double
    scale_high = _round_to(_GELU_TANH_SCALE[0], m.is_double)
    scale_low = _GELU_TANH_SCALE[0] - scale_high + _GELU_TANH_SCALE[1]
    cubic_high = _round_to(0.044715, m.is_double)
    cubic_coefficient = m.const(cubic_high)
    square, square_low = _two_product(m, xc, xc)
    term, term_low = _two_product(m, cubic_coefficient, square)
    term_low = m.fma(cubic_coefficient, square_low, term_low)
    term_low = m.fma(m.const(0.044715 - cubic_high), square, term_low)
    one = m.const(1.0)
    factor = m.add(one, term)  # 1 + term as factor + factor_low (TwoSum)
    term_part = m.sub(factor, one)
    factor_low = m.add(m.sub(one, m.sub(factor, term_part)), m.sub(term, term_part))
    factor_low = m.add(factor_low, term_low)
    linear, linear_low = _two_product(m, m.const(scale_high), xc)
    linear_low = m.fma(m.const(scale_low), xc, linear_low)
    two_u, two_u_low = _two_product(m, linear, factor)
    two_u_low = m.add(two_u_low, m.fma(linear, factor_low, m.mul(linear_low, factor)))
    e = _exp(m, m.neg(m.abs(two_u)), nonpositive=True)
    positive = m.compare(">=", two_u, 0.0)
    e = m.fma(e, m.select(positive, m.neg(two_u_low), two_u_low), e)  # exp(-|2u|) exactly
    numerator = m.select(positive, one, e)
    result = m.div(m.mul(x, numerator), m.add(e, one))
    return m.select(m.is_nan(x), x, _nan_at_minus_infinity(m, x, result))


def _round_to(value: float, double: bool) -> float:
    """value rounded to float (or kept as double)."""
    return value if double else struct.unpack("f", struct.pack("f", value))[0]


# --- sin, cos ---

# sin r = r + r^3 S(r^2), cos r = 1 + r^2 C(r^2) on |r| <= pi/4 (Taylor, below a quarter ulp).
_SIN_POLY = {False: _taylor(4, 3, 2, -1), True: _taylor(8, 3, 2, -1)}
_COS_POLY = {False: [-c for c in _taylor(5, 2, 2, -1)], True: [-c for c in _taylor(8, 2, 2, -1)]}
_SIN_POLY = {double: [-c for c in coefficients] for double, coefficients in _SIN_POLY.items()}
# pi/2 as three doubles (Cody-Waite): the sum is pi/2 to about 160 bits.
_HALF_PI = (1.5707963267948966, 6.123233995736766e-17, -1.4973849048591698e-33)


# Beyond this |x| the reduction multiplies by 2/pi from a table (Payne-Hanek; below it,
# Cody-Waite is accurate). x = M 2**E with M a signed integer (24 bits for float, 53 for
# double), and x 2/pi mod 4 = M T_E mod 4 with T_E = 2**E 2/pi mod 4, stored as a few chunks of
# 53 consecutive bits (2 for float, 4 for double), each product M t exact as high + low (FMA),
# the sum carried as high + low (TwoSum), so that even the x closest to a multiple of pi/2
# keeps its relative accuracy.
_HUGE = 2.0**30
# (E of the smallest and of the largest finite |x| >= 2**30, bits per chunk, chunks)
_HUGE_TABLE = {False: (7, 104, 53, 2), True: (-22, 971, 53, 4)}


@functools.cache
def _two_over_pi_bits(bits: int) -> int:
    """floor(2/pi * 2**bits), from pi by Machin's formula in integers (32 guard bits)."""
    scale = 1 << (bits + 32)

    def arctan_inverse(n: int) -> int:  # arctan(1/n) * scale
        total, power, k = 0, scale // n, 0
        while power:
            total += power // (2 * k + 1) if k % 2 == 0 else -(power // (2 * k + 1))
            power //= n * n
            k += 1
        return total

    pi = 4 * (4 * arctan_inverse(5) - arctan_inverse(239))
    return (2 * scale * (1 << (bits + 32)) // pi) >> 32


@functools.cache
def _two_over_pi_table(double: bool) -> list[float]:
    """T_E = 2**E 2/pi mod 4 for E from low to high, `chunks` doubles per E: chunk k holds the
    `width` bits of weights 2**(1 - width k) down to 2**(2 - width (k + 1)) (truncated)."""
    low, high, width, chunks = _HUGE_TABLE[double]
    fraction = width * chunks - 2  # bits below the point that the chunks hold
    bits = _two_over_pi_bits(high + fraction + 2)
    table = []
    for exponent in range(low, high + 1):
        fixed = (bits >> (high + 2 - exponent)) % (4 << fraction)  # T_E * 2**fraction
        for k in range(chunks):
            shift = width * (chunks - 1 - k)
            table.append(math.ldexp(float(fixed >> shift), shift - fraction))
            fixed &= (1 << shift) - 1
    return table


def _table_constant(m: _Emitter, name: str, values: Sequence[float]) -> ir.GlobalVariable:
    module = m.builder.module
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    type_ = ir.ArrayType(ir.DoubleType(), len(values))
    table = ir.GlobalVariable(module, type_, name)
    table.global_constant = True
    table.linkage = "internal"
    table.initializer = ir.Constant(type_, list(values))
    return table


def _load_table(m: _Emitter, table: ir.GlobalVariable, index: ir.Value) -> ir.Value:
    """table[index] for an i64 index (a vector of them: one load per lane, which LLVM may
    turn into a gather); `m` is the double emitter of the result."""
    builder = m.builder
    zero = ir.IntType(64)(0)
    if not m.lanes:
        return builder.load(builder.gep(table, [zero, index], inbounds=True))
    result = m.const(0.0)
    for lane in range(m.lanes):
        position = builder.extract_element(index, ir.IntType(32)(lane))
        value = builder.load(builder.gep(table, [zero, position], inbounds=True))
        result = builder.insert_element(result, value, ir.IntType(32)(lane))
    return result


def _table_chunks(wide: _Emitter, exponent: ir.Value, double: bool) -> list[ir.Value]:
    """The chunks of T_E for an i64 `exponent` E (clamped into the table): a vector loads them
    lane by lane."""
    low, high, _, chunks = _HUGE_TABLE[double]
    builder = wide.builder
    index = builder.sub(exponent, wide.iconst(low))
    index = builder.select(builder.icmp_signed("<", index, wide.iconst(0)), wide.iconst(0), index)
    index = builder.select(builder.icmp_signed(">", index, wide.iconst(high - low)),
                           wide.iconst(high - low), index)
    first = builder.mul(index, wide.iconst(chunks))
    table = _table_constant(wide, f"ember.two_over_pi.{'f64' if double else 'f32'}",
                            _two_over_pi_table(double))
    return [_load_table(wide, table, builder.add(first, wide.iconst(k))) for k in range(chunks)]


def _two_sum(m: _Emitter, a: ir.Value, b: ir.Value) -> tuple[ir.Value, ir.Value]:
    """a + b as sum + error exactly (Knuth's TwoSum, no ordering needed)."""
    total = m.add(a, b)
    b_part = m.sub(total, a)
    error = m.add(m.sub(a, m.sub(total, b_part)), m.sub(b, b_part))
    return total, error


def _mod4(m: _Emitter, x: ir.Value) -> ir.Value:
    """x - 4 floor(x/4), exact for any double x (in [0, 4))."""
    return m.fma(m.floor(m.mul(x, m.const(0.25))), m.const(-4.0), x)


def _split_integer(m: _Emitter, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(rint(x), x - rint(x)), both exact."""
    integer = m.rint(x)
    return integer, m.sub(x, integer)


def _reduce_huge_float(m: _Emitter, wide: _Emitter, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(r, j): x = j pi/2 + r (|r| about pi/4 at most, j an integer: its low two bits are
    the quadrant), in double, for a finite float |x| >= _HUGE."""
    builder = m.builder
    bits = m.to_bits(x)
    biased = builder.and_(builder.lshr(bits, m.iconst(23)), m.iconst(0xFF))
    mantissa = builder.or_(builder.and_(bits, m.iconst((1 << 23) - 1)), m.iconst(1 << 23))
    negative = builder.icmp_signed("<", bits, m.iconst(0))
    mantissa = builder.select(negative, builder.neg(mantissa), mantissa)
    magnitude = builder.sitofp(mantissa, wide.type)  # M, signed, exact
    exponent = builder.sext(builder.sub(biased, m.iconst(150)), wide.int_type)
    parts = _table_chunks(wide, exponent, False)
    # M t_0 = high + low exactly, both multiples of 2**-51 (M < 2**24, so low < 2**-28);
    # high mod 4 splits into an exact integer and fraction, to which low adds exactly; M t_1
    # (below 2**-27) joins by TwoSum, its rounding error joins the error.
    head, head_low = _two_product(wide, magnitude, parts[0])
    whole, fraction = _split_integer(wide, _mod4(wide, head))
    second, second_low = _two_product(wide, magnitude, parts[1])
    total, error = _two_sum(wide, wide.add(fraction, head_low), second)
    integer, total = _split_integer(wide, total)
    error = wide.add(error, second_low)
    r = wide.fma(total, wide.const(_HALF_PI[0]), wide.mul(error, wide.const(_HALF_PI[0])))
    return r, wide.add(whole, integer)


def _reduce_huge_double(m: _Emitter, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(r, j) as `_reduce_huge_float`, for a finite double |x| >= _HUGE."""
    builder = m.builder
    bits = m.to_bits(x)
    biased = builder.and_(builder.lshr(bits, m.iconst(52)), m.iconst(0x7FF))
    mantissa = builder.or_(builder.and_(bits, m.iconst((1 << 52) - 1)), m.iconst(1 << 52))
    negative = builder.icmp_signed("<", bits, m.iconst(0))
    magnitude = m.to_float(builder.select(negative, builder.neg(mantissa), mantissa))
    parts = _table_chunks(m, builder.sub(biased, m.iconst(1075)), True)
    # M t_0 = high + low exactly (high mod 4 exact too); with M t_1's high part, each below 8:
    # integers and fractions, exact. The rest (each below 2**-50) joins by TwoSum.
    head, head_low = _two_product(m, magnitude, parts[0])
    second, second_low = _two_product(m, magnitude, parts[1])
    third, third_low = _two_product(m, magnitude, parts[2])
    whole = m.const(0.0)
    fractions = []
    for term in (_mod4(m, head), head_low, second):
        integer, fraction = _split_integer(m, term)
        whole = m.add(whole, integer)
        fractions.append(fraction)
    total = m.add(fractions[0], fractions[1])  # multiples of 2**-51 below 1: exact
    total, error = _two_sum(m, total, fractions[2])
    for term in (second_low, third, third_low, m.mul(magnitude, parts[3])):
        total, term_error = _two_sum(m, total, term)
        error = m.add(error, term_error)
    integer, total = _split_integer(m, total)
    total, error = _two_sum(m, total, error)
    # r = (total + error) pi/2, with pi/2 as two doubles
    r, r_low = _two_product(m, total, m.const(_HALF_PI[0]))
    r_low = m.fma(total, m.const(_HALF_PI[1]), m.fma(error, m.const(_HALF_PI[0]), r_low))
    return m.add(r, r_low), m.add(whole, integer)


def _any(m: _Emitter, condition: ir.Value) -> ir.Value:
    """Whether `condition` holds in some lane (an i1; the condition itself for a scalar)."""
    if not m.lanes:
        return condition
    module = m.builder.module
    name = f"llvm.vector.reduce.or.v{m.lanes}i1"
    function = module.globals.get(name) or ir.Function(
        module, ir.FunctionType(ir.IntType(1), [condition.type]), name)
    return m.builder.call(function, [condition])


def _reduce_huge_where_needed(m: _Emitter, wide: _Emitter, x: ir.Value, xd: ir.Value,
                              r: ir.Value, quadrant: ir.Value) -> tuple[ir.Value, ir.Value]:
    """For a vector: the Cody-Waite (r, quadrant), with the table reduction's in the lanes
    where |x| >= _HUGE. The table reduction sits in a block entered only when some lane needs
    it, so ordinary arguments skip it; the block computes it for every lane and blends by
    `select`. (Not for a scalar: the loop vectorizer would if-convert the block, running its
    arithmetic for every element; a scalar calls `_huge_function` instead.)"""
    builder = m.builder
    huge = wide.compare(">=", wide.abs(xd), _HUGE)
    before = builder.block
    # No branch weights: marked unlikely, LLVM compiles the block as cold code (spills), and a
    # vector of huge arguments took 2-5 times as long as without the branch.
    with builder.if_then(_any(wide, huge)):
        if m.is_double:
            huge_r, huge_quadrant = _reduce_huge_double(m, x)
        else:
            huge_r, huge_quadrant = _reduce_huge_float(m, wide, x)
        blended = (wide.select(huge, huge_r, r), wide.select(huge, huge_quadrant, quadrant))
        inside = builder.block
    results = []
    for fast, slow in zip((r, quadrant), blended, strict=True):
        phi = builder.phi(wide.type)
        phi.add_incoming(slow, inside)
        phi.add_incoming(fast, before)
        results.append(phi)
    return results[0], results[1]


# Lane counts of the vector variants of the out-of-line scalar table reduction (float, double)
_HUGE_LANES = {False: (4, 8, 16), True: (2, 4, 8)}


def _huge_function(module: ir.Module, quadrant_offset: int, type_: ir.Type) -> ir.Function:
    """`ember.<sin|cos>.huge.<type>`: the function on |x| >= _HUGE (table reduction only), out
    of line (noinline) so that a scalar call site stays cheap. The scalar one names its masked
    vector variants (`vector-function-abi-variant`) so that the loop vectorizer widens a call
    under `|x| >= _HUGE` into one call per vector; a variant returns at once when no lane of its
    mask is set."""
    lanes = type_.count if isinstance(type_, ir.VectorType) else None
    name = f"ember.{('sin', 'cos')[quadrant_offset]}.huge.{_type_suffix(type_)}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    bool_type = ir.VectorType(ir.IntType(1), lanes) if lanes else None
    arguments = [type_, bool_type] if lanes else [type_]
    function = ir.Function(module, ir.FunctionType(type_, arguments), name)
    function.attributes.add("noinline")
    function.attributes.add("nounwind")
    # llvmlite does not know these two: added to the set as written (it reads only its
    # constant table)
    set.add(function.attributes, "willreturn")
    set.add(function.attributes, "memory(none)")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    m = _Emitter(builder, type_)
    if not lanes:
        function.linkage = "internal"
        variants = [_huge_function(module, quadrant_offset, ir.VectorType(type_, count))
                    for count in _HUGE_LANES[m.is_double]]
        mangled = ",".join(f"_ZGV_LLVM_M{count}v_{name}({variant.name})" for count, variant
                           in zip(_HUGE_LANES[m.is_double], variants, strict=True))
        set.add(function.attributes, f'"vector-function-abi-variant"="{mangled}"')
        builder.ret(_sin_cos(m, function.args[0], quadrant_offset, table=True))
        return function
    # External linkage: nothing but the attribute string refers to a variant before the loop
    # vectorizer runs, and an internal one would be deleted as unused.
    x, mask = function.args
    before = builder.block
    with builder.if_then(_any(m, mask), likely=True):
        value = _sin_cos(m, x, quadrant_offset, table=True)
        inside = builder.block
    result = builder.phi(type_)
    result.add_incoming(value, inside)
    result.add_incoming(m.const(0.0), before)
    builder.ret(result)
    return function


def _sin_cos(m: _Emitter, x: ir.Value, quadrant_offset: int, table: bool = False) -> ir.Value:
    """sin(x) (offset 0) or cos(x) = sin(x + pi/2) (offset 1). `table`: by the table
    reduction alone (for |x| >= _HUGE)."""
    original = x
    finite = m.compare("<", m.abs(x), math.inf)
    x = m.select(finite, x, 0.0)
    # The reduction runs in double even for float, so a float argument loses nothing there.
    wide = m.with_type(ir.DoubleType())
    xd = m.builder.fpext(x, wide.type) if not m.is_double else x
    if table:
        r, quadrant = (_reduce_huge_double(m, x) if m.is_double
                       else _reduce_huge_float(m, wide, x))
    else:
        j = wide.rint(wide.mul(xd, wide.const(2.0 / math.pi)))
        r = xd
        for part in _HALF_PI if m.is_double else _HALF_PI[:2]:
            r = wide.fma(wide.neg(j), wide.const(part), r)
        quadrant = _mod4(wide, j)
        if m.lanes:
            r, quadrant = _reduce_huge_where_needed(m, wide, x, xd, r, quadrant)
    quadrant = m.builder.fptosi(quadrant, m.int_type)
    r = m.builder.fptrunc(r, m.type) if not m.is_double else r
    quadrant = m.builder.add(quadrant, m.iconst(quadrant_offset))
    z = m.mul(r, r)
    sine = m.fma(m.mul(r, z), m.horner(z, _SIN_POLY[m.is_double]), r)
    cosine = m.fma(z, m.horner(z, _COS_POLY[m.is_double]), m.const(1.0))
    builder = m.builder
    odd = builder.icmp_unsigned("!=", builder.and_(quadrant, m.iconst(1)), m.iconst(0))
    value = m.select(odd, cosine, sine)
    sign = builder.shl(builder.and_(quadrant, m.iconst(2)), m.iconst(m.bits - 2))
    value = m.from_bits(builder.xor(m.to_bits(value), sign))
    value = m.select(finite, value, math.nan)
    if table or m.lanes:
        return value
    # A scalar calls the table reduction out of line, only for |x| >= _HUGE.
    before = builder.block
    with builder.if_then(wide.compare(">=", wide.abs(xd), _HUGE), likely=False):
        huge = builder.call(_huge_function(builder.module, quadrant_offset, m.type), [original])
        inside = builder.block
    result = builder.phi(m.type)
    result.add_incoming(huge, inside)
    result.add_incoming(value, before)
    return result


def _sin(m: _Emitter, x: ir.Value) -> ir.Value:
    return m.select(m.compare("==", x, 0.0), x, _sin_cos(m, x, 0))  # keeps the sign of zero


def _cos(m: _Emitter, x: ir.Value) -> ir.Value:
    return _sin_cos(m, x, 1)


# --- pow, sqrt, rsqrt ---


def _pow(m: _Emitter, x: ir.Value, y: ir.Value) -> ir.Value:
    # |x|^y = exp(y log|x|). In double, log's relative error is amplified by |y log x|; float
    # computes the whole chain in double, which leaves far more than enough.
    if m.is_double:
        magnitude = _small_integer_power(m, x, y, _exp(m, m.mul(y, _log(m, m.abs(x)))))
    else:
        wide = m.with_type(ir.DoubleType())
        xd, yd = (m.builder.fpext(value, wide.type) for value in (x, y))
        magnitude = _exp(wide, wide.mul(yd, _log(wide, wide.abs(xd))))
        magnitude = m.builder.fptrunc(magnitude, m.type)
    integer = m.compare("==", m.rint(y), y)
    half = m.mul(y, m.const(0.5))
    odd = m.both(integer, m.builder.fcmp_unordered("!=", m.rint(half), half))
    sign_bit = m.builder.icmp_signed("<", m.to_bits(x), m.iconst(0))
    result = m.select(m.both(sign_bit, odd), m.neg(magnitude), magnitude)
    negative_finite = m.both(m.compare("<", x, 0.0), m.compare(">", x, -math.inf))
    result = m.select(m.both(negative_finite, m.negation(integer)), math.nan, result)
    one = m.builder.or_(m.compare("==", x, 1.0),
                        m.both(m.compare("==", x, -1.0),
                               m.compare("==", m.abs(y), math.inf)))
    return m.select(m.builder.or_(one, m.compare("==", y, 0.0)), 1.0, result)


# |y| up to this is multiplied out in double pow: |x|^4 carries 1.5 ulp, 2 with the reciprocal
# of a negative y, inside pow's bound of 3 ulp at any x (a longer chain would not be near 1)
SMALL_INTEGER_POWER = 4
_SMALLEST_NORMAL_F64 = 2.2250738585072014e-308


def _small_integer_power(m: _Emitter, x: ir.Value, y: ir.Value, general: ir.Value
                         ) -> ir.Value:
    """|x|^y by multiplication where y is an integer with 1 <= |y| <= SMALL_INTEGER_POWER (a
    negative y: the reciprocal, where |x|^|y| is a normal number), else `general`. Exact
    wherever the power is representable (16^4 = 65536, where exp(4 log 16) is one ulp below it
    and a cast to an integer would take 65535)."""
    magnitude, count = m.abs(x), m.abs(y)
    square = m.mul(magnitude, magnitude)
    powers = {1: magnitude, 2: square, 3: m.mul(square, magnitude), 4: m.mul(square, square)}
    assert max(powers) == SMALL_INTEGER_POWER
    power = powers[1]
    for exponent in range(2, SMALL_INTEGER_POWER + 1):
        power = m.select(m.compare("==", count, float(exponent)), powers[exponent], power)
    reciprocal = m.div(m.const(1.0), power)
    normal = m.both(m.compare(">=", power, _SMALLEST_NORMAL_F64),
                    m.compare("<", power, math.inf))
    negative = m.compare("<", y, 0.0)
    small = m.both(m.compare("==", m.rint(y), y),
                   m.both(m.compare(">=", count, 1.0),
                          m.compare("<=", count, float(SMALL_INTEGER_POWER))))
    usable = m.both(small, m.builder.or_(m.negation(negative), normal))
    return m.select(usable, m.select(negative, reciprocal, power), general)


def _sqrt(m: _Emitter, x: ir.Value) -> ir.Value:
    return m.sqrt(x)


def _rsqrt(m: _Emitter, x: ir.Value) -> ir.Value:
    return m.div(m.const(1.0), m.sqrt(x))


_BODIES: dict[str, Callable[..., ir.Value]] = {
    "exp": _exp, "expm1": _expm1, "log": _log, "tanh": _tanh, "sigmoid": _sigmoid,
    "silu": _silu, "erf": _erf, "gelu": _gelu, "gelu_tanh": _gelu_tanh, "sin": _sin,
    "cos": _cos, "pow": _pow, "sqrt": _sqrt, "rsqrt": _rsqrt,
}
assert set(_BODIES) == set(SUPPORTED_FUNCTIONS)
