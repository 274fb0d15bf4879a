"""numpy's math, reductions and shape functions on traced tensors, at every opt level, against
numpy (float64 where rounding matters) and PyTorch: edge values (NaN, inf, -0.0, negatives,
integers), error bounds of the decompositions, refusals, and gradients against torch.autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ember
from ember.errors import EmberError

LEVELS = (0, 1, 2, 3)
RNG = np.random.default_rng(13)

# Edge values, tiny magnitudes (log1p / expm1 must not cancel), the decompositions' branch
# points (1e-4, 0.66, tan(3 pi/8), 1, 20) and overflow of sinh / cosh in f32 (89.4) and f64.
EDGES = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1e-30, -1e-20, 3e-9, -7e-6, 9.99e-5, 1.0001e-4,
                  0.3, -0.65, 0.67, 0.999, -0.99999, 1.5, -2.4142, 2.4143, 3.0, -19.99, 20.01,
                  50.0, -88.0, 89.0, 90.0, 709.0, 710.0, -711.0, 1e300, np.inf, -np.inf, np.nan])


def sweep(dtype: type) -> np.ndarray:
    magnitudes = np.exp(RNG.uniform(np.log(1e-12), np.log(700.0), 8000))
    values = np.concatenate([EDGES, RNG.uniform(-4, 4, 4000), RNG.uniform(-1, 1, 4000),
                             magnitudes * RNG.choice([-1.0, 1.0], magnitudes.size)])
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def compiled(fn, *inputs, level: int):
    return ember.compile(fn, *inputs, opt_level=level)(*inputs)


def assert_ulp(got: np.ndarray, ref64: np.ndarray, dtype: type, ulps: float, name: str) -> None:
    """got (of `dtype`) within `ulps` eps of the float64 reference, relative to |ref|; special
    values (nan, inf) and the sign of exact zeros equal."""
    assert got.dtype == dtype, name
    ref = ref64.astype(dtype)
    special = ~np.isfinite(ref)
    np.testing.assert_array_equal(got[special], ref[special], err_msg=name)
    zero = ref == 0
    np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(ref[zero]), err_msg=name)
    finite = ~special & ~zero
    eps = np.finfo(dtype).eps
    scale = np.maximum(np.abs(ref64[finite]), np.finfo(dtype).tiny)
    error = np.abs(got[finite].astype(np.float64) - ref64[finite]) / scale / eps
    assert error.max(initial=0) <= ulps, f"{name}: {error.max():.2f} eps"


# name: (numpy function, bound in eps relative to |result| for f64 input). f32 input is
# computed in f64 and rounded once: within half an ulp (0.51 allows a near-tie). The f64 bounds
# are those tensor.py states, with a margin.
UNARY = {
    "log1p": (np.log1p, 3), "expm1": (np.expm1, 3), "log2": (np.log2, 3),
    "log10": (np.log10, 3.5), "tan": (np.tan, 3), "sinh": (np.sinh, 4), "cosh": (np.cosh, 3),
    "arctan": (np.arctan, 2), "arcsin": (np.arcsin, 2.5), "arccos": (np.arccos, 2),
    "square": (np.square, 0.5),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_ufuncs_match_float64_numpy(level: int, dtype: type) -> None:
    x = sweep(dtype)
    names = list(UNARY)
    got = compiled(lambda a: tuple(UNARY[n][0](a) for n in names), x, level=level)
    with np.errstate(all="ignore"):
        for name, result in zip(names, got, strict=True):
            fn, bound64 = UNARY[name]
            ref = fn(x.astype(np.float64))
            assert_ulp(result, ref, dtype, 0.51 if dtype == np.float32 else bound64, name)


def test_methods_agree_with_ufuncs_and_torch() -> None:
    x = np.clip(sweep(np.float64), -0.999, 0.999)
    x = x[np.isfinite(x)]
    methods = ["log1p", "expm1", "tan", "sinh", "cosh", "atan", "asin", "acos", "square",
               "erf", "sign", "floor", "ceil", "round"]
    got = compiled(lambda a: tuple(getattr(a, m)() for m in methods), x, level=3)
    t = torch.from_numpy(x)
    for method, result in zip(methods, got, strict=True):
        np.testing.assert_allclose(result, getattr(t, method)().numpy(), rtol=2e-15, atol=0,
                                   err_msg=method)
    positive = np.abs(x) + 0.5
    np.testing.assert_allclose(compiled(lambda a: (a.rsqrt(), np.log2(a), np.log10(a)),
                                        positive, level=3),
                               [torch.from_numpy(positive).rsqrt().numpy(), np.log2(positive),
                                np.log10(positive)], rtol=1e-15)


@pytest.mark.parametrize("level", LEVELS)
def test_classification_and_powers_are_exact(level: int) -> None:
    x = sweep(np.float32)
    ints = np.array([-3, 0, 7], np.int64)
    got = compiled(lambda a, i: (np.isnan(a), np.isinf(a), np.isfinite(a), np.isnan(i),
                                 np.isinf(i), np.isfinite(i), np.square(i), a.isnan()),
                   x, ints, level=level)
    expected = (np.isnan(x), np.isinf(x), np.isfinite(x), np.isnan(ints), np.isinf(ints),
                np.isfinite(ints), np.square(ints), np.isnan(x))
    for result, ref in zip(got, expected, strict=True):
        assert result.dtype == ref.dtype
        np.testing.assert_array_equal(result, ref)
    powers = np.array([2.0 ** k for k in range(-126, 128)], np.float32)
    tens = np.array([10.0 ** k for k in range(-30, 30)], np.float32)
    np.testing.assert_array_equal(compiled(np.log2, powers, level=level), np.log2(powers))
    # numpy's own float32 log10 misses some of these by an ulp; the float64 one rounded does not.
    np.testing.assert_array_equal(compiled(np.log10, tens, level=level),
                                  np.log10(tens.astype(np.float64)).astype(np.float32))


@pytest.mark.parametrize("level", LEVELS)
def test_rounding_matches_numpy(level: int) -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, -0.0, 0.0, 1.25, -1.35, 123.456, 2.675, np.inf,
                  -np.inf, np.nan, -7.7], np.float32)
    ints = np.array([-5, 0, 12345], np.int64)
    got = compiled(lambda a, i: (np.round(a), np.around(a, 1), np.round(a, 2), np.round(a, -1),
                                 a.round(), a.floor(), a.ceil(), np.floor(i), np.round(i),
                                 i.ceil(), np.rint(a)), x, ints, level=level)
    expected = (np.round(x), np.around(x, 1), np.round(x, 2), np.round(x, -1), np.round(x),
                np.floor(x), np.ceil(x), np.floor(ints), np.round(ints), np.ceil(ints),
                np.rint(x))
    for result, ref in zip(got, expected, strict=True):
        assert result.dtype == ref.dtype
        np.testing.assert_array_equal(result, ref)
        np.testing.assert_array_equal(np.signbit(result), np.signbit(ref))
    np.testing.assert_array_equal(got[0], torch.from_numpy(x).round().numpy())


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_floor_divide_and_remainder_follow_numpy(level: int, dtype: type) -> None:
    low = np.iinfo(dtype).min
    a = np.array([7, -7, 7, -7, 0, 5, -5, low, low, 3, -1, 6], dtype)
    b = np.array([2, 2, -2, -2, 3, 0, 0, -1, 1, 7, 3, -3], dtype)
    with np.errstate(all="ignore"):
        expected = (a // b, a % b, np.floor_divide(a, b), np.remainder(a, b), np.mod(a, 3),
                    a // 4, -9 // b[b != 0][:1], divmod(a, b)[0], 10 % a[:1])
        got = compiled(lambda x, y: (x // y, x % y, np.floor_divide(x, y), np.remainder(x, y),
                                     np.mod(x, 3), x // 4, -9 // y[:1], divmod(x, y)[0],
                                     10 % x[:1]), a, b, level=level)
    for result, ref in zip(got, expected, strict=True):
        assert result.dtype == ref.dtype
        np.testing.assert_array_equal(result, ref)
    nonzero = b != 0
    ta, tb = torch.from_numpy(a[nonzero]), torch.from_numpy(b[nonzero])
    np.testing.assert_array_equal(got[0][nonzero], torch.div(ta, tb, rounding_mode="floor"))
    np.testing.assert_array_equal(got[1][nonzero], torch.remainder(ta, tb))


def test_float_floor_divide_is_refused_by_name() -> None:
    x = np.ones(3, np.float32)
    for fn in (lambda a: a // 2.0, lambda a: a % a, lambda a: np.floor_divide(a, 2),
               lambda a: np.remainder(2, a)):
        with pytest.raises(EmberError, match=r"integer tensors.*exact fmod"):
            ember.trace(fn, x)
    with pytest.raises(EmberError, match=r"Tensor.sort is not traceable.*sorts in place"):
        ember.trace(lambda a: a.sort(), x)
    with pytest.raises(EmberError, match="ellipses are not supported"):
        ember.trace(lambda a: np.einsum("...i->i", a), x)
    with pytest.raises(EmberError, match=r"einsum 'ij,jk': letter 'j' has sizes 3 and 2"):
        ember.trace(lambda a: np.einsum("ij,jk", a.reshape(1, 3), a[:2].reshape(2, 1)), x)
    with pytest.raises(EmberError, match=r"repeat counts of shape \[2\] do not match axis 0 of "
                                         "size 3"):
        ember.trace(lambda a: np.repeat(a, [1, 2]), x)
    with pytest.raises(EmberError, match="index 3 is out of bounds for axis 0 with size 3"):
        ember.trace(lambda a: np.take(a, [0, 3]), x)


@pytest.mark.parametrize("level", LEVELS)
def test_integer_inputs_to_float_math_become_f32(level: int) -> None:
    """As with `/`, integer tensors become f32 (numpy would give f64)."""
    ints = np.array([0, 1, -1, 7, 1000], np.int64)
    got = compiled(lambda i: (np.log1p(i), np.tan(i), i.erf(), np.arctan(i), round(i * 1.5),
                              np.std(i)), ints, level=level)
    f = ints.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = (np.log1p(f), np.tan(f), [math.erf(v) for v in f], np.arctan(f),
                    np.round(f * 1.5), np.std(f))
    for result, ref in zip(got, expected, strict=True):
        assert result.dtype == np.float32
        np.testing.assert_allclose(result, np.asarray(ref, np.float32), rtol=1e-6)


@pytest.mark.parametrize("level", LEVELS)
def test_reductions_std_any_all(level: int) -> None:
    x = RNG.standard_normal((3, 4, 5)).astype(np.float32)
    flags = np.array([[0.0, np.nan, 0.0], [-0.0, 0.0, 0.0], [1.0, 2.0, -3.0]], np.float32)
    empty = np.zeros((2, 0), np.float32)
    got = compiled(lambda a, f, e: (np.std(a), np.std(a, axis=1, ddof=1), a.std(dim=(0, 2),
                                                                                keepdim=True),
                                    a.std(-1, correction=1), np.any(f, axis=1), np.all(f, 0),
                                    f.any(), f.all(axis=1, keepdims=True), np.any(e, axis=1),
                                    np.all(e, axis=1), np.any(a > 3.0)),
                   x, flags, empty, level=level)
    x64 = x.astype(np.float64)
    expected = (np.std(x64), np.std(x64, axis=1, ddof=1), np.std(x64, axis=(0, 2), keepdims=True),
                np.std(x64, -1, ddof=1), np.any(flags, axis=1), np.all(flags, 0), flags.any(),
                flags.all(axis=1, keepdims=True), np.any(empty, axis=1), np.all(empty, axis=1),
                np.any(x > 3.0))
    for result, ref in zip(got, expected, strict=True):
        assert result.shape == np.shape(ref)
        np.testing.assert_allclose(result, ref, rtol=2e-6)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(got[3], t.std(-1).numpy(), rtol=2e-6)
    np.testing.assert_array_equal(got[4], torch.from_numpy(flags).any(dim=1).numpy())


@pytest.mark.parametrize("level", LEVELS)
def test_shape_functions_match_numpy_and_torch(level: int) -> None:
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    ints = np.arange(-6, 6, dtype=np.int64).reshape(3, 4)
    index = np.array([[2, -1], [0, 0]])
    got = compiled(lambda a, i: (np.flip(a), np.flip(a, axis=1), a.flip(0, 2), np.tile(a, 2),
                                 np.tile(i, (2, 1, 3)), a.tile(1, 2, 1), np.repeat(a, 2, axis=1),
                                 np.repeat(i, 3), i.repeat([1, 0, 2], axis=0),
                                 a.repeat_interleave(2, dim=-1), np.take(a, index, axis=2),
                                 np.take(i, [5, -1]), i.take(index), np.cumsum(i, axis=1),
                                 np.cumsum(i), i.cumsum(dim=0), np.cumsum(a > 0, axis=2)),
                   x, ints, level=level)
    expected = (np.flip(x), np.flip(x, axis=1), np.flip(x, (0, 2)), np.tile(x, 2),
                np.tile(ints, (2, 1, 3)), np.tile(x, (1, 2, 1)), np.repeat(x, 2, axis=1),
                np.repeat(ints, 3), ints.repeat([1, 0, 2], axis=0), np.repeat(x, 2, axis=-1),
                np.take(x, index, axis=2), np.take(ints, [5, -1]), ints.take(index),
                np.cumsum(ints, axis=1), np.cumsum(ints), np.cumsum(ints, axis=0),
                np.cumsum(x > 0, axis=2))
    for result, ref in zip(got, expected, strict=True):
        assert result.dtype == ref.dtype and result.shape == ref.shape
        np.testing.assert_array_equal(result, ref)
    t, ti = torch.from_numpy(x), torch.from_numpy(ints)
    np.testing.assert_array_equal(got[2], t.flip(0, 2).numpy())
    np.testing.assert_array_equal(got[5], t.tile(1, 2, 1).numpy())
    np.testing.assert_array_equal(got[9], t.repeat_interleave(2, dim=-1).numpy())
    np.testing.assert_array_equal(got[15], ti.cumsum(dim=0).numpy())


@pytest.mark.parametrize("level", LEVELS)
def test_float_cumsum_within_its_tree_rounding(level: int) -> None:
    """A log-depth sum rounds differently from numpy's sequential one: each running sum is
    within log2(n) + 1 ulp of the running sum of |x| of the float64 result."""
    x = RNG.standard_normal((3, 1000)).astype(np.float32)
    got = compiled(lambda a: (np.cumsum(a, axis=1), a.cumsum(0)), x, level=level)
    for result, axis in zip(got, (1, 0), strict=True):
        ref = np.cumsum(x.astype(np.float64), axis=axis)
        scale = np.cumsum(np.abs(x.astype(np.float64)), axis=axis)
        bound = (np.log2(x.shape[axis]) + 1) * np.finfo(np.float32).eps * scale
        assert np.all(np.abs(result - ref) <= bound)
    np.testing.assert_allclose(got[0], torch.from_numpy(x).cumsum(1).numpy(), rtol=1e-4,
                               atol=1e-4)


EINSUM = ["ij,jk->ik", "bij,bjk->bik", "ij->ji", "ij->", "i,j->ij", "ijk,ikl->jl", "ij,ij->i",
          "ij,kj", "abc,cd->dba", "ij->j"]


@pytest.mark.parametrize("level", LEVELS)
def test_einsum_of_one_and_two_operands(level: int) -> None:
    shapes = {"i": 3, "j": 4, "k": 5, "b": 2, "l": 6, "a": 2, "c": 3, "d": 4}
    cases = []
    for spec in EINSUM:
        terms = spec.split("->")[0].split(",")
        cases.append((spec, [RNG.standard_normal([shapes[c] for c in t]) for t in terms]))
    flat = [array for _, arrays in cases for array in arrays]

    def fn(*arrays):
        results, at = [], 0
        for spec, operands in cases:
            results.append(np.einsum(spec, *arrays[at:at + len(operands)]))
            at += len(operands)
        return tuple(results)

    got = compiled(fn, *flat, level=level)
    for (spec, operands), result in zip(cases, got, strict=True):
        ref = np.einsum(spec, *operands)
        assert result.shape == ref.shape, spec
        np.testing.assert_allclose(result, ref, rtol=1e-12, atol=1e-12, err_msg=spec)
        torch_ref = torch.einsum(spec, *[torch.from_numpy(o) for o in operands]).numpy()
        np.testing.assert_allclose(result, torch_ref, rtol=1e-12, atol=1e-12, err_msg=spec)


@pytest.mark.parametrize("level", [0, 3])
def test_gradients_flow_through_the_decompositions(level: int) -> None:
    x = RNG.uniform(-0.9, 0.9, (4, 6))
    x[0, :3] = (0.0, 1e-6, -3e-5)  # the series pieces of log1p, expm1, sinh

    def loss(a, lib):
        square = lib.square(a) if lib is np else a.square()
        terms = [lib.log1p(a), lib.expm1(a), lib.tan(a), lib.sinh(a * 30), lib.cosh(a * 30),
                 lib.arctan(a * 5), lib.arcsin(a), lib.arccos(a), lib.log2(a + 2),
                 lib.log10(a + 2), square, lib.flip(a, (0,)) * a,
                 lib.cumsum(a, 1) * a]
        total = sum((term * (i + 1)).sum() for i, term in enumerate(terms))
        return total + (a.std(1, correction=1) if lib is torch else a.std(1, ddof=1)).sum()

    got = ember.grad(lambda a: loss(a, np), opt_level=level)(x)
    t = torch.from_numpy(x).requires_grad_()
    loss(t, torch).backward()
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-9, atol=1e-9)


def test_gradients_stay_finite_where_a_discarded_piece_would_overflow() -> None:
    """Each piece of a piecewise formula sees only its own inputs: huge x (whose x^4 in the
    series piece would overflow) and x = 0 (where Goldberg's u - 1 is 0) give torch's
    gradients, not NaN."""
    x = np.array([1e100, 1e80, 0.0, -0.5, 5e3, 1e-9])
    fn = lambda a, lib: (lib.log1p(a) + lib.expm1(-a) + lib.sinh(-a / 1e80)  # noqa: E731
                         + lib.arctan(a)).sum()
    got = ember.grad(lambda a: fn(a, np))(x)
    t = torch.from_numpy(x).requires_grad_()
    fn(t, torch).backward()
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-12, atol=0)
