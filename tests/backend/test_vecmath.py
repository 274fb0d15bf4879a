"""Vector math in LLVM IR against float64 references (numpy, `math`), in ulps of the result type.

Each function is compiled into a small kernel (a loop over an array calling it) three ways: float
scalar calls (the loop vectorizer widens them), explicit <16 x float> calls, and double. Inputs are
a dense sweep over the function's useful range plus special values (±0, ±inf, nan, subnormals,
huge). The bounds are the measured maxima (docs/vecmath.md) rounded up a little.
"""

from __future__ import annotations

import ctypes
import math
import re

import numpy as np
import pytest
from llvmlite import ir

from ember.backend.llvm.jit import compile_ir, host_cpu
from ember.backend.llvm.vecmath import SUPPORTED_FUNCTIONS, math_function
from ember.errors import LoweringError

VARIANTS = ("f32", "v16f32", "f64")
SWEEP_POINTS = 100_000


def value_type(variant: str) -> ir.Type:
    return {"f32": ir.FloatType(), "v16f32": ir.VectorType(ir.FloatType(), 16),
            "f64": ir.DoubleType(), "v8f64": ir.VectorType(ir.DoubleType(), 8)}[variant]


def numpy_dtype(variant: str) -> type:
    return np.float64 if variant.endswith("f64") else np.float32


def kernel_module(name: str, variant: str) -> ir.Module:
    """`kernel(out, in0[, in1], count)`: out[i] = name(in0[i][, in1[i]]) over count elements."""
    module = ir.Module(f"vecmath_{name}_{variant}")
    type_ = value_type(variant)
    element = type_.element if isinstance(type_, ir.VectorType) else type_
    step = type_.count if isinstance(type_, ir.VectorType) else 1
    arity = 2 if name == "pow" else 1
    i64 = ir.IntType(64)
    pointer = element.as_pointer()
    kernel = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer] * (1 + arity) + [i64]),
                         "kernel")
    output, *inputs, count = kernel.args
    entry, loop, done = (kernel.append_basic_block(label) for label in ("entry", "loop", "done"))
    builder = ir.IRBuilder(entry)
    builder.cbranch(builder.icmp_signed(">", count, i64(0)), loop, done)
    builder.position_at_end(loop)
    index = builder.phi(i64)
    index.add_incoming(i64(0), entry)
    alignment = 4 if element == ir.FloatType() else 8

    def address(base: ir.Value) -> ir.Value:
        return builder.bitcast(builder.gep(base, [index]), type_.as_pointer())

    arguments = [builder.load(address(source), align=alignment) for source in inputs]
    result = builder.call(math_function(module, name, type_), arguments)
    builder.store(result, address(output), align=alignment)
    following = builder.add(index, i64(step))
    index.add_incoming(following, loop)
    builder.cbranch(builder.icmp_signed("<", following, count), loop, done)
    builder.position_at_end(done)
    builder.ret_void()
    return module


_KERNELS: dict[tuple[str, str], object] = {}


def run_kernel(name: str, variant: str, *arrays: np.ndarray) -> np.ndarray:
    """The compiled function applied elementwise to `arrays` (cast to the variant's dtype)."""
    key = (name, variant)
    if key not in _KERNELS:
        compiled = compile_ir(kernel_module(name, variant))
        _KERNELS[key] = compiled.function("kernel", None,
                                          [ctypes.c_void_p] * (1 + len(arrays)) + [ctypes.c_int64])
    dtype = numpy_dtype(variant)
    size = arrays[0].size
    padded = -(-size // 16) * 16
    inputs = [np.zeros(padded, dtype) for _ in arrays]
    for target, source in zip(inputs, arrays, strict=True):
        target[:size] = source
    output = np.empty(padded, dtype)
    _KERNELS[key](output.ctypes.data, *(array.ctypes.data for array in inputs), padded)
    return output[:size]


def ulp_errors(result: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|result - reference| in ulps of the result's type at the reference (float64 reference)."""
    dtype = result.dtype
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = reference.astype(dtype)
        spacing = np.spacing(np.abs(rounded)).astype(np.float64)
        errors = np.abs(result.astype(np.float64) - reference) / spacing
    same = (result == rounded) | (np.isnan(result) & np.isnan(reference))
    return np.where(same, 0.0, np.where(np.isfinite(rounded), errors, np.inf))


# --- float64 references (independent of the code under test) ---


def erf_reference(x: np.ndarray) -> np.ndarray:
    return np.frompyfunc(math.erf, 1, 1)(x.astype(np.float64)).astype(np.float64)


def gelu_reference(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    erfc = np.frompyfunc(math.erfc, 1, 1)(-x / math.sqrt(2.0)).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return 0.5 * x * erfc  # nan at -inf (-inf * 0), as numpy and PyTorch


def sigmoid_reference(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))


def silu_reference(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return x.astype(np.float64) * sigmoid_reference(x)  # nan at -inf


def gelu_tanh_reference(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        # x/2 (1 + tanh u) written as x / (1 + exp(-2u)) so that float64 keeps its precision.
        return x / (1.0 + np.exp(-2.0 * inner))  # nan at -inf


def as64(function):
    def reference(*arrays: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return function(*(array.astype(np.float64) for array in arrays))
    return reference


REFERENCES = {
    "exp": as64(np.exp), "expm1": as64(np.expm1), "log": as64(np.log), "tanh": as64(np.tanh),
    "sigmoid": sigmoid_reference, "silu": silu_reference, "erf": erf_reference,
    "gelu": gelu_reference, "gelu_tanh": gelu_tanh_reference, "sin": as64(np.sin),
    "cos": as64(np.cos), "pow": as64(np.power), "sqrt": as64(np.sqrt),
    "rsqrt": as64(lambda x: 1.0 / np.sqrt(x)),
}

# (low, high) of the dense sweep for float and double
RANGES = {
    "exp": ((-104.0, 89.0), (-745.0, 710.0)),
    "expm1": ((-20.0, 20.0), (-40.0, 40.0)),
    "log": ((0.0, 4.0), (0.0, 4.0)),
    "tanh": ((-10.0, 10.0), (-20.0, 20.0)),
    "sigmoid": ((-100.0, 30.0), (-700.0, 40.0)),
    "silu": ((-80.0, 80.0), (-700.0, 700.0)),
    "erf": ((-5.0, 5.0), (-7.0, 7.0)),
    "gelu": ((-12.0, 10.0), (-37.0, 10.0)),
    "gelu_tanh": ((-10.0, 10.0), (-10.0, 10.0)),
    "sin": ((-1e4, 1e4), (-1e4, 1e4)),
    "cos": ((-1e4, 1e4), (-1e4, 1e4)),
    "pow": ((0.0, 30.0), (0.0, 30.0)),
    "sqrt": ((0.0, 1e4), (0.0, 1e4)),
    "rsqrt": ((0.0, 1e4), (0.0, 1e4)),
}

# Maximum error in ulps of the result type: (float, double).
BOUNDS = {
    "exp": (1.5, 2), "expm1": (2, 3), "log": (2.5, 3), "tanh": (3.5, 4), "sigmoid": (3, 3),
    "silu": (3.5, 4), "erf": (3, 3), "gelu": (6, 6), "gelu_tanh": (4, 4), "sin": (2, 2),
    "cos": (2, 2), "pow": (1, 3), "sqrt": (0.5, 0.5), "rsqrt": (1.5, 1.5),
}

# f64 pow: bound * (1 + POW_F64_GROWTH * |y log x|) ulp
POW_F64_GROWTH = 2.5

SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-40, -1e-40, 1e-310, -1e-310,
            1e-30, -1e-30, 3e38, -3e38, 1e300, -1e300, 1.0, -1.0, 0.5, -0.5]


def sweep(name: str, variant: str) -> np.ndarray:
    """Dense grid plus random points over the range, small magnitudes, and special values."""
    dtype = numpy_dtype(variant)
    low, high = RANGES[name][variant == "f64"]
    rng = np.random.default_rng(sum(map(ord, name + variant)))
    grid = np.linspace(low, high, SWEEP_POINTS // 2)
    scattered = rng.uniform(low, high, SWEEP_POINTS // 2)
    tiny = np.concatenate([np.logspace(-30, 0, 2000), -np.logspace(-30, 0, 2000)])
    points = [grid, scattered, tiny, np.array(SPECIALS)]
    if name in ("log", "sqrt", "rsqrt"):  # every binade, subnormals included
        exponents = (-1074, 1023) if variant == "f64" else (-149, 127)
        points.append(2.0 ** rng.uniform(*exponents, 20_000))
    with np.errstate(over="ignore", under="ignore"):
        return np.concatenate(points).astype(dtype)


def pow_arguments(variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Bases over (0, 30] with exponents keeping the result in range, negative bases with integer
    exponents, and the special pairs numpy defines."""
    dtype = numpy_dtype(variant)
    rng = np.random.default_rng(7 if variant == "f64" else 8)
    limit = 700.0 if variant == "f64" else 85.0
    base = rng.uniform(1e-3, 30.0, SWEEP_POINTS)
    exponent = rng.uniform(-1.0, 1.0, SWEEP_POINTS) * limit / np.abs(np.log(base)).clip(1.0)
    negative = -rng.uniform(0.1, 10.0, 5000)
    integer = rng.integers(-20, 21, 5000).astype(np.float64)
    special_base, special_exponent = np.meshgrid(
        np.array(SPECIALS), np.array([*SPECIALS, 2.0, 3.0, -3.0, 0.25, -0.5]))
    with np.errstate(over="ignore", under="ignore"):
        x = np.concatenate([base, negative, special_base.ravel()]).astype(dtype)
        y = np.concatenate([exponent, integer, special_exponent.ravel()]).astype(dtype)
    return x, y


def mpmath_reference(name: str, x: np.ndarray) -> np.ndarray:
    """gelu and gelu_tanh at 30 digits: in float64 their argument's rounding costs up to
    |x|^2 ulp (gelu) and |2u| ulp (gelu_tanh) for x << 0, too much to judge a double result."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30

    def gelu(value: float):
        return value / 2 * mpmath.erfc(-mpmath.mpf(value) / mpmath.sqrt(2))

    def gelu_tanh(value: float):
        value = mpmath.mpf(value)
        inner = mpmath.sqrt(2 / mpmath.pi) * (value + mpmath.mpf(0.044715) * value**3)
        return value / (1 + mpmath.exp(-2 * inner))

    function = {"gelu": gelu, "gelu_tanh": gelu_tanh}[name]
    finite = np.abs(x) < 1e6  # beyond, the float64 formulas are exact: x or -0
    reference = REFERENCES[name](x)
    reference[finite] = [float(function(float(value))) for value in x[finite]]
    return reference


def measure(name: str, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ulp errors, inputs, results, references) of one function and variant; inputs whose
    error is not measured in ulps are checked here by other means and count as 0."""
    arrays = pow_arguments(variant) if name == "pow" else (sweep(name, variant),)
    if name in ("gelu", "gelu_tanh") and variant == "f64":
        arrays = (arrays[0][::8],)
        reference = mpmath_reference(name, arrays[0].astype(np.float64))
    else:
        reference = REFERENCES[name](*arrays)
    result = run_kernel(name, variant, *arrays)
    errors = ulp_errors(result, reference)
    if name in ("silu", "gelu", "gelu_tanh"):
        # Subnormal results carry an absolute error of a few subnormal steps (the product of
        # |x| and a subnormal factor); they are checked in absolute terms, not in ulps.
        tiny = np.abs(reference) < np.finfo(result.dtype).tiny
        with np.errstate(invalid="ignore"):
            absolute = np.abs(result.astype(np.float64) - reference)
        assert np.all(absolute[tiny] <= 64 * np.finfo(result.dtype).smallest_subnormal)
        errors = np.where(tiny, 0.0, errors)
    return errors, np.stack(arrays), result, reference


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", SUPPORTED_FUNCTIONS)
def test_error_within_documented_bound(name: str, variant: str) -> None:
    errors, inputs, result, reference = measure(name, variant)
    bound = BOUNDS[name][variant == "f64"]
    if name == "pow" and variant == "f64":
        # log|x| is not carried in double-double: the error grows with |y log x| (documented).
        with np.errstate(all="ignore"):
            growth = np.nan_to_num(np.abs(inputs[1] * np.log(np.abs(inputs[0]))), posinf=0.0)
        errors = errors / (1.0 + POW_F64_GROWTH * growth)
    at = int(np.argmax(errors))
    assert errors[at] <= bound, (
        f"{name} {variant}: {errors[at]:.2f} ulp > {bound} at input {inputs[:, at]}: "
        f"got {result[at]!r}, expected {reference[at]!r}")


def huge_arguments(variant: str) -> np.ndarray:
    """Every binade from 2**20 to the largest finite number, both signs (the table reduction
    takes over at 2**30), plus the largest values and the ends of the fast range."""
    rng = np.random.default_rng(30)
    dtype = numpy_dtype(variant)
    finfo = np.finfo(dtype)
    top = int(np.log2(finfo.max))
    scattered = 2.0 ** rng.uniform(20, top, 40_000) * rng.choice([-1.0, 1.0], 40_000)
    edges = [2.0**30, -(2.0**30), np.nextafter(dtype(2.0**30), dtype(0)), 1e15, 1e16, 1e30,
             -1e30, 3e38, -3e38, float(finfo.max), float(-finfo.max)]
    if variant == "f64":
        edges += [1e300, -1e300, 2.0**1023]
    with np.errstate(over="ignore"):
        x = np.concatenate([scattered, np.array(edges, dtype=np.float64)]).astype(dtype)
    return x[np.isfinite(x)]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_of_huge_arguments_within_bound(name: str, variant: str) -> None:
    """cos(1e30) is cos(1e30), not cos(1): the table reduction is exact up to the largest
    finite argument, within the same bound as the sweep (float64 numpy as the reference)."""
    x = huge_arguments(variant)
    result = run_kernel(name, variant, x)
    reference = REFERENCES[name](x)
    errors = ulp_errors(result, reference)
    at = int(np.argmax(errors))
    assert errors[at] <= BOUNDS[name][variant == "f64"], (
        f"{name} {variant}: {errors[at]:.2f} ulp at {x[at]!r}: got {result[at]!r}, "
        f"expected {reference[at]!r}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_sin_cos_keep_accuracy_next_to_multiples_of_half_pi(variant: str) -> None:
    """The finite arguments closest to a multiple of pi/2 (cos about 1e-9 for float and 5e-19
    for double): the reduction keeps their relative accuracy. mpmath at 2000 bits."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 2000
    if variant == "f64":  # the worst case of double (Muller, Elementary Functions)
        x = np.array([6381956970095103 * 2.0**797, -6381956970095103 * 2.0**797])
    else:  # 16367173 * 2**72 has cos about -1.6e-9
        x = np.array([16367173 * 2.0**72, -16367173 * 2.0**72], dtype=np.float32)
    for name in ("sin", "cos"):
        result = run_kernel(name, variant, x)
        function = getattr(mpmath, name)
        reference = np.array([float(function(mpmath.mpf(float(v)))) for v in x])
        assert np.all(ulp_errors(result, reference) <= BOUNDS[name][variant == "f64"]), (
            name, result, reference)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_compiled_sin_cos_blend_one_huge_lane_at_every_ember_level(name: str, dtype: type) -> None:
    """The same blocks through `ember.compile` at every level (0 is the reference interpreter),
    within the bound of float64 numpy."""
    import ember

    x = one_huge_lane_per_block(dtype)
    ufunc = getattr(np, name)
    reference = REFERENCES[name](x)
    for level in (0, 1, 2, 3):
        result = np.asarray(ember.compile(lambda t: ufunc(t), x, opt_level=level)(x))
        errors = ulp_errors(result, reference)
        at = int(np.argmax(errors))
        assert errors[at] <= BOUNDS[name][dtype is np.float64], (
            f"{name} {dtype.__name__} level {level}: {errors[at]:.2f} ulp at {x[at]!r}: got "
            f"{result[at]!r}, expected {reference[at]!r}")


def special_cases() -> list[tuple[str, float, float]]:
    """(function, input, numpy's answer) at the edges the module docstring promises."""
    inf, nan = math.inf, math.nan
    return [
        ("exp", 1000.0, inf), ("exp", 710.0, inf), ("exp", -1000.0, 0.0), ("exp", nan, nan),
        ("exp", -inf, 0.0), ("exp", inf, inf), ("log", 0.0, -inf), ("log", -0.0, -inf),
        ("log", -1.0, nan), ("log", inf, inf), ("log", nan, nan), ("log", -inf, nan),
        ("tanh", 50.0, 1.0), ("tanh", -50.0, -1.0), ("tanh", inf, 1.0), ("tanh", -inf, -1.0),
        ("tanh", nan, nan), ("sigmoid", 200.0, 1.0), ("sigmoid", -1000.0, 0.0),
        ("sigmoid", inf, 1.0), ("sigmoid", -inf, 0.0), ("sigmoid", nan, nan),
        ("erf", inf, 1.0), ("erf", -inf, -1.0), ("erf", nan, nan), ("erf", 10.0, 1.0),
        ("silu", inf, inf), ("silu", -inf, nan), ("silu", nan, nan),
        ("gelu", inf, inf), ("gelu", -inf, nan), ("gelu", nan, nan),
        ("gelu_tanh", inf, inf), ("gelu_tanh", -inf, nan), ("gelu_tanh", nan, nan),
        ("expm1", inf, inf), ("expm1", -inf, -1.0), ("expm1", nan, nan),
        ("sin", inf, nan), ("cos", -inf, nan), ("sin", nan, nan), ("sqrt", -1.0, nan),
        ("rsqrt", 0.0, inf), ("rsqrt", inf, 0.0),
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_special_values_follow_numpy(variant: str) -> None:
    for name, value, expected in special_cases():
        (got,) = run_kernel(name, variant, np.array([value]))
        if math.isnan(expected):
            assert math.isnan(got), (name, variant, value, got)
        else:
            assert got == expected, (name, variant, value, got, expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_odd_functions_keep_the_sign_of_zero(variant: str) -> None:
    for name in ("expm1", "tanh", "erf", "sin"):
        (got,) = run_kernel(name, variant, np.array([-0.0]))
        assert got == 0.0 and math.copysign(1.0, got) == -1.0, (name, variant, got)


@pytest.mark.parametrize("variant", ("f32", "v16f32"))
def test_float_clamps_give_the_limits(variant: str) -> None:
    """Float tanh is a rational function clamped at |x| = 9.5, exp clamps its argument to
    [-104, 88.8] and scales by ldexp, gelu clamps at |x| = 10.5 sqrt 2: at and beyond those
    points the results are numpy's (in float32) exactly, subnormal results included."""
    inputs = np.array([9.5, -9.5, 9.6, 1e30, -1e30, 88.8, 88.7, -104.0, -103.9, -87.5, -100.0,
                       -14.0, -14.85, -15.0, -1e30, 1e30])
    names = ["tanh"] * 5 + ["exp"] * 6 + ["gelu"] * 5
    for name, value in zip(names, inputs, strict=True):
        (got,) = run_kernel(name, variant, np.array([value]))
        expected = REFERENCES[name](np.array([np.float32(value)]))[0]
        if abs(expected) < np.finfo(np.float32).tiny and name == "gelu":  # as in `measure`
            assert abs(got - expected) <= 64 * np.finfo(np.float32).smallest_subnormal
            continue
        error = ulp_errors(np.array([got]), np.array([expected]))[0]
        assert error <= BOUNDS[name][0], (name, variant, value, got, expected)
    (got,) = run_kernel("sigmoid", variant, np.array([-95.0]))  # subnormal: exp's own rounding
    assert got == np.float32(np.exp(np.float64(np.float32(-95.0)))), got


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ("exp", "sigmoid", "gelu", "gelu_tanh", "silu"))
def test_scaling_by_hand_where_ldexp_is_not_one_instruction(
        name: str, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without AVX-512, `ldexp` multiplies by two powers of two built from their bits: the same
    bounds hold, and no libm call appears."""
    from ember.backend.llvm import vecmath

    monkeypatch.setattr(vecmath, "native_ldexp", lambda module=None: False)
    monkeypatch.setitem(globals(), "_KERNELS", {})  # compile afresh, not the cached kernels
    errors, inputs, _, _ = measure(name, variant)
    at = int(np.argmax(errors))
    assert errors[at] <= BOUNDS[name][variant == "f64"], (name, variant, inputs[:, at])
    assembly = compile_ir(kernel_module(name, variant)).asm()
    assert "scalef" not in assembly and "call" not in assembly.split("kernel:")[1]
    for value in (math.inf, -math.inf, math.nan):
        (got,) = run_kernel(name, variant, np.array([value]))
        (expected,) = REFERENCES[name](np.array([value]))
        assert (math.isnan(got) and math.isnan(expected)) or got == expected, (name, value, got)


def test_pow_special_pairs_follow_numpy() -> None:
    inf, nan = math.inf, math.nan
    base = np.array([-2.0, -2.0, -2.0, -0.0, -0.0, 0.0, nan, 1.0, -1.0, -inf, -inf, 2.0, 0.5])
    exponent = np.array([3.0, 2.0, 0.5, -1.0, 3.0, -2.0, 0.0, nan, inf, 3.0, 0.5, -inf, inf])
    for variant in ("f32", "f64"):
        got = run_kernel("pow", variant, base, exponent)
        with np.errstate(all="ignore"):
            expected = np.power(base, exponent)
        # float is correctly rounded here; double is within its documented few ulps
        tolerance = 4e-16 if variant == "f64" else 0.0
        np.testing.assert_allclose(got, expected.astype(got.dtype), rtol=tolerance, atol=0,
                                   err_msg=variant)
        numbers = ~np.isnan(expected)
        np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(expected[numbers]),
                                      err_msg=variant)


def test_exp_loop_leaves_no_call_and_uses_the_widest_registers() -> None:
    compiled = compile_ir(kernel_module("exp", "v16f32"))
    assembly = compiled.asm()
    instructions = [line.split()[0] for line in assembly.splitlines()
                    if line.startswith("\t") and not line.strip().startswith(".")]
    assert not [i for i in instructions if i.startswith("call")], "a libm call survived"
    assert "ember.exp" not in compiled.llvm_ir.split("define void @kernel")[1]
    # Explicit <16 x float> code is 512-bit on every AVX-512 host: LLVM's preferred vector
    # width (256 bits on Intel server chips) steers only the vectorizers' choice of width.
    if host_cpu().vector_bits == 512:
        assert re.search(r"\bzmm\d+", assembly)
        if host_cpu().has_fma:
            assert re.search(r"vfmadd\w*ps\s+[^\n]*zmm", assembly)


@pytest.mark.parametrize("name", ["tanh", "sin"])
def test_scalar_float_loop_is_vectorized_by_llvm(name: str) -> None:
    """Scalar calls inline to straight-line code (sin: but for the out-of-line table reduction
    under |x| >= 2**30, which the loop vectorizer widens into a call of its vector variant),
    so the loop vectorizer widens the loop."""
    compiled = compile_ir(kernel_module(name, "f32"))
    kernel = compiled.llvm_ir.split("define void @kernel")[1].split("\ndefine ")[0]
    calls = re.findall(r"call [^@]*@\"?([\w.]+)", kernel)
    assert not [c for c in calls if not re.match(r"llvm\.|ember\.sin\.huge\.", c)], calls
    assert re.search(r"<\d+ x float>", kernel)
    if name == "sin":
        assert re.search(r"call <\d+ x float> @\"?ember\.sin\.huge\.v\d+f32", kernel), calls


def one_huge_lane_per_block(dtype: type) -> np.ndarray:
    """Blocks of 32 ordinary arguments (|x| <= 100) with one huge one (|x| >= 2**30), inf or
    nan at each position in turn."""
    rng = np.random.default_rng(9)
    blocks = []
    for huge in (1e30, -3e9, 2.0**30, float(np.finfo(dtype).max), np.inf, np.nan):
        for position in range(32):
            block = rng.uniform(-100.0, 100.0, 32)
            block[position] = huge
            blocks.append(block)
    return np.concatenate(blocks).astype(dtype)


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
@pytest.mark.parametrize("variant", ("f32", "v16f32", "f64", "v8f64"))
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_blend_one_huge_lane_into_ordinary_ones(name: str, variant: str,
                                                        opt_level: int) -> None:
    """A vector with one huge argument (|x| >= 2**30, table reduction) among ordinary ones
    (Cody-Waite) at each of 32 positions, and inf/nan among them: every lane within the bound
    against float64 numpy, so the branch to the table reduction and its blend are exercised
    (LLVM's optimization levels: at 0 the scalar kernel is not vectorized)."""
    x = one_huge_lane_per_block(numpy_dtype(variant))
    compiled = compile_ir(kernel_module(name, variant), opt_level=opt_level, cached=False)
    kernel = compiled.function("kernel", None, [ctypes.c_void_p] * 2 + [ctypes.c_int64])
    result = np.empty_like(x)
    kernel(result.ctypes.data, x.ctypes.data, x.size)
    reference = REFERENCES[name](x)
    errors = ulp_errors(result, reference)
    at = int(np.argmax(errors))
    assert errors[at] <= BOUNDS[name][variant.endswith("f64")], (
        f"{name} {variant} O{opt_level}: {errors[at]:.2f} ulp at {x[at]!r} (element {at}): "
        f"got {result[at]!r}, expected {reference[at]!r}")


def test_functions_are_created_once_per_module_and_named_by_type() -> None:
    module = ir.Module("m")
    vector = ir.VectorType(ir.DoubleType(), 4)
    first = math_function(module, "erf", vector)
    assert math_function(module, "erf", vector) is first
    assert first.name == "ember.erf.v4f64"
    assert "alwaysinline" in first.attributes
    assert math_function(module, "erf", ir.FloatType()).name == "ember.erf.f32"


def test_unknown_name_and_type_are_lowering_errors() -> None:
    module = ir.Module("m")
    with pytest.raises(LoweringError, match="no vector math function 'lgamma'; known: exp"):
        math_function(module, "lgamma", ir.FloatType())
    with pytest.raises(LoweringError, match="type i32 is not float, double"):
        math_function(module, "exp", ir.IntType(32))


def test_f64_pow_of_small_integer_exponents_is_multiplied_out() -> None:
    """Double pow with y in -4..4: exact where the power is representable (16^4 = 65536 and
    not the 65535.99999999999 of exp(4 log 16), which a cast to an integer would truncate),
    within 3 ulp (the least of pow's bound) of the correctly rounded power elsewhere (bases
    near 1 included, where a long chain of multiplies would lose more than exp and log), and
    right where |x|^|y| leaves the normal range (there the reciprocal is not taken)."""
    from fractions import Fraction

    def correctly_rounded(base: float, y: int) -> float:
        if base == 0:
            return math.copysign(0.0, base) if y > 0 else math.inf
        try:
            return float(Fraction(base) ** y)
        except OverflowError:
            return math.copysign(math.inf, base if y % 2 else 1.0)

    rng = np.random.default_rng(11)
    exact = np.array([16.0, 3.0, 0.5, 2.5, -4.0, 12.0, 1024.0, -0.75, 7.0, 1.5])
    bases = np.concatenate([exact, 1 + rng.uniform(-1e-6, 1e-6, 200),
                            rng.uniform(-30, 30, 400), [1e-77, 1.2e77, 1e-160, 3e100]])
    for y in (-4, -3, -2, -1, 1, 2, 3, 4):
        got = run_kernel("pow", "f64", bases, np.full_like(bases, float(y)))
        reference = np.array([correctly_rounded(float(b), y) for b in bases])
        for b, value in zip(exact, got[:len(exact)], strict=True):
            power = Fraction(float(b)) ** y
            if Fraction(float(power)) == power:  # representable: exactly it
                assert value == float(power), (b, y, value)
        normal = np.isfinite(reference) & (np.abs(reference) >= 2.2250738585072014e-308)
        inverse = np.abs(np.array([correctly_rounded(float(b), -y) for b in bases]))
        multiplied = normal & ((y > 0) | ((inverse >= 2.2250738585072014e-308)
                                          & np.isfinite(inverse)))
        assert ulp_errors(got[multiplied], reference[multiplied]).max() <= 3.0, y
        # where |x|^|y| is not normal, a negative y takes exp and log: their documented bound
        rest = normal & ~multiplied
        growth = 3 * (1 + POW_F64_GROWTH * np.abs(y * np.log(np.abs(bases[rest]))))
        assert (ulp_errors(got[rest], reference[rest]) <= growth).all(), y
        outside = ~normal  # overflow to inf, or a subnormal result: within a subnormal step
        np.testing.assert_allclose(got[outside], reference[outside], rtol=0, atol=1e-320)
