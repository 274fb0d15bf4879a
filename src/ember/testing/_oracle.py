"""The fuzzer's oracle: plain numpy, independent of Ember, and its tolerance model.

A program's reference runs in float64 (integers and bools in their own dtype, where wrapping
and truncation are the semantics). Every floating-point result is rounded to the program's
dtype by `rnd`, so an f32 program overflows, underflows and produces NaN where f32 does.

Tolerance comes from the program's own conditioning, measured rather than guessed: the
reference also runs a few times with noise. `rnd(x, dtype, ulps)` then perturbs each result by
`ulps` units in the last place of `dtype` (a random sign per element): the documented error of
that op (docs/vecmath.md for the transcendental functions, half an ulp plus FMA contraction for
arithmetic). `acc(x, dtype, n)` perturbs the operands of an op that accumulates n terms (sum,
matmul, conv, norms) by n ulps, which bounds the rounding of any summation order. An element
passes when it lies within 3x the largest deviation of those runs (plus 2 ulps of the result);
elements whose class (NaN, an infinity, an integer or bool) differs between the runs depend on
rounding and are not compared.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import numpy as np

_state: dict[str, object] = {"noise": None, "seed": None}

_EPS = {"f32": float(np.finfo(np.float32).eps), "f64": float(np.finfo(np.float64).eps)}
_TINY = {"f32": float(np.finfo(np.float32).tiny), "f64": float(np.finfo(np.float64).tiny)}
NUMPY = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}
# The dtype in which the reference holds values of each program dtype.
HELD = {"f32": np.float64, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}


@contextmanager
def noise(seed: int | None):
    """Run the reference with noise (seed) or exactly (None)."""
    saved = dict(_state)
    _state["noise"] = None if seed is None else np.random.default_rng(seed)
    _state["seed"] = seed
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's "mean of empty slice" and the like
            yield
    finally:
        _state.update(saved)


def _to(x: np.ndarray, dt: str) -> np.ndarray:
    x = np.asarray(x)
    if dt == "f32":
        return x.astype(np.float32).astype(np.float64)
    return x.astype(HELD[dt])


def rnd(x: object, dt: str, ulps: float = 1.0) -> np.ndarray:
    """A result rounded to dtype `dt` (then perturbed by `ulps` when noise is on)."""
    y = _to(np.asarray(x), dt)
    rng = _state["noise"]
    if rng is not None and dt in _EPS and y.size and np.any(ulps):
        signs = rng.choice(np.array([-1.0, 1.0]), size=y.shape)
        y = _to(y * (1 + signs * (np.asarray(ulps) * _EPS[dt])), dt)
        # A subnormal result is within `compare`'s absolute tolerance of zero (and compiled
        # vector math may flush such tails): downstream, it may as well be zero, so that an
        # op that is discontinuous at zero (sign, a comparison) is not judged on it.
        with np.errstate(all="ignore"):
            flush = (np.abs(y) < _TINY[dt]) & rng.choice(np.array([False, True]), size=y.shape)
        y = np.where(flush, np.copysign(0.0, y), y).astype(y.dtype)
    return y


def jitter(x: np.ndarray, size: np.ndarray, dt: str, ulps: float) -> np.ndarray:
    """Under noise, `x` moved by `ulps` of `size` (an absolute rounding error) either way."""
    rng = _state["noise"]
    if rng is None or dt not in _EPS or not np.size(x):
        return x
    signs = rng.choice(np.array([-1.0, 1.0]), size=np.shape(x))
    with np.errstate(all="ignore"):
        return x + signs * ulps * _EPS[dt] * np.where(np.isfinite(size), size, 0.0)


def acc(x: np.ndarray, dt: str, terms: int) -> np.ndarray:
    """Operands of an op that adds up `terms` products: perturbed by `terms` ulps under noise."""
    if _state["noise"] is None or dt not in _EPS:
        return x
    return rnd(x, dt, 2.0 * max(int(terms), 1))


def guard(result: np.ndarray, magnitude: np.ndarray, dt: str, underflow: bool = False
          ) -> np.ndarray:
    """An accumulating op whose terms may overflow `dt` on the way (`magnitude`, the same op on
    |operands|, exceeds the largest finite value) has no defined result in `dt`: under noise
    such elements become NaN, inf, -inf or the largest finite value depending on the run (an
    order that adds 1e308 - 1e308 before another 1e308 stays finite), so that neither they nor
    what is computed from them downstream are compared. A product (`underflow`) may also
    underflow on the way to a zero of its sign: 1e-10 * 1e-37 * 1e28 is 0 left to right in
    f32."""
    if _state["noise"] is None or dt not in _EPS:
        return result
    limit = float(np.finfo(NUMPY[dt]).max)
    with np.errstate(all="ignore"):
        risky = ~(np.abs(magnitude) <= limit)
    # One of the trials keeps the op's own result, which may be what another evaluation order
    # gives (batch_norm's folded scale: 0 * x + b where the unfolded order overflows to nan).
    choices = [np.nan, np.inf, -np.inf, result, limit]
    if underflow:  # a zero of the product's sign
        choices.append(np.copysign(0.0, np.nan_to_num(result)))
    return np.where(risky, choices[_state["seed"] % len(choices)], result)


def fin(x: np.ndarray) -> np.ndarray:
    """|x| where x is finite, else 0: what a bound of `guard` adds up."""
    with np.errstate(all="ignore"):
        return np.where(np.isfinite(x), np.abs(x), 0.0)


def prod_bound(x: np.ndarray, axis: object, keepdims: bool) -> np.ndarray:
    """A product may overflow or underflow on the way when the factors above 1 multiply past
    the largest value or those below 1 past the smallest: their ratio bounds both."""
    with np.errstate(all="ignore"):
        size = fin(x)
        big = np.prod(np.maximum(size, 1), axis=axis, keepdims=keepdims)
        small = np.prod(np.where(size > 0, np.minimum(size, 1), 1), axis=axis, keepdims=keepdims)
        return big / small


def rep(array: np.ndarray, dt: str) -> np.ndarray:
    """How the reference holds an Ember input of dtype `dt`."""
    return np.asarray(array).astype(HELD[dt])


def actual(x: np.ndarray, dt: str) -> np.ndarray:
    """An Ember array of dtype `dt` from the reference's value."""
    return np.ascontiguousarray(np.asarray(x).astype(NUMPY[dt]))


def sc(value: float, dt: str) -> object:
    """A Python scalar as the program's dtype sees it (weakly typed scalars take the tensor's)."""
    if dt == "f32":
        return float(np.float32(value))
    return value


# -- casts ---------------------------------------------------------------------------------------


def cast(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Ember's cast: floats to integers truncate toward zero; anything nonzero is True."""
    if dst == "bool":
        return np.asarray(x != 0)
    if src == "bool":
        return _to(x.astype(np.int64), dst)
    if dst in ("i32", "i64") and src in ("f32", "f64"):
        return np.trunc(x).astype(HELD[dst])
    if dst == "f32" and src in ("i32", "i64"):
        return x.astype(np.float32).astype(np.float64)  # one rounding, not two
    return _to(x, dst)


# -- elementwise functions -------------------------------------------------------------------------


def sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def silu(x: np.ndarray) -> np.ndarray:
    # nan at -inf (-inf * 0), as numpy's formula and PyTorch give.
    return x * sigmoid(x)


_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(_erf(x), dtype=np.float64).reshape(x.shape)


def gelu(x: np.ndarray) -> np.ndarray:
    """x * Phi(x) = x/2 * erfc(-x/sqrt 2): no cancellation for x < 0; nan at -inf (PyTorch)."""
    x = np.asarray(x, dtype=np.float64)
    tail = np.asarray(_erfc(-x / math.sqrt(2)), dtype=np.float64).reshape(x.shape)
    return x / 2 * tail


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    return np.where(x == -np.inf, np.nan, x * sigmoid(2 * u))


def leaky_relu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x >= 0, x, x * alpha)


def relu(x: np.ndarray) -> np.ndarray:
    """x unless x < 0 (relu(-0.0) = -0.0, nan stays), as PyTorch."""
    return np.where(x < 0, np.zeros((), x.dtype), x)


def maximum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IEEE 754-2019 maximum: nan propagates, -0.0 < +0.0."""
    out = np.maximum(a, b)
    if out.dtype.kind == "f":
        both_zero = (a == 0) & (b == 0)
        out = np.where(both_zero, np.where(np.signbit(a) & np.signbit(b), -0.0, 0.0), out)
    return out


def minimum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IEEE 754-2019 minimum: nan propagates, -0.0 < +0.0."""
    out = np.minimum(a, b)
    if out.dtype.kind == "f":
        both_zero = (a == 0) & (b == 0)
        out = np.where(both_zero, np.where(np.signbit(a) | np.signbit(b), -0.0, 0.0), out)
    return out


def amax(x: np.ndarray, axis: object, keepdims: bool) -> np.ndarray:
    """max over axes with nan propagating and -0.0 < +0.0."""
    out = np.max(x, axis=axis, keepdims=keepdims)
    if x.dtype.kind == "f":
        plus = np.any((x == 0) & ~np.signbit(x), axis=axis, keepdims=keepdims)
        out = np.where((out == 0) & plus, 0.0, out)
    return np.asarray(out)


def amin(x: np.ndarray, axis: object, keepdims: bool) -> np.ndarray:
    """min over axes with nan propagating and -0.0 < +0.0."""
    out = np.min(x, axis=axis, keepdims=keepdims)
    if x.dtype.kind == "f":
        minus = np.any((x == 0) & np.signbit(x), axis=axis, keepdims=keepdims)
        out = np.where((out == 0) & minus, -0.0, out)
    return np.asarray(out)


def gelu_ulps(x: np.ndarray, dt: str) -> np.ndarray:
    """gelu: 6 ulps (docs/vecmath.md), plus, for f64, the oracle's own error: erfc(a) at the
    rounded a = |x|/sqrt 2 is off by about 2a^2 = x^2 ulps of the result (f32 programs are
    computed in float64, where that is far below an f32 ulp)."""
    with np.errstate(all="ignore"):
        extra = np.where(np.isfinite(x), np.square(x), 0.0) if dt == "f64" else 0.0
    return 6.0 + np.broadcast_to(extra, np.shape(x))


def gelu_tanh_ulps(x: np.ndarray, dt: str) -> np.ndarray:
    """gelu_tanh: 64 ulps, plus, for f64, the oracle's own error: sigmoid(2u) for x < 0 is
    about exp(2u), so the rounding of 2u costs |2u| ulps of the result."""
    with np.errstate(all="ignore"):
        u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        extra = np.where(np.isfinite(u), 2 * np.abs(u), 0.0) if dt == "f64" else 0.0
    return 64.0 + np.broadcast_to(extra, np.shape(x))


def trig_ulps(x: np.ndarray) -> np.ndarray:
    """sin and cos: 2 ulps for every finite x (docs/vecmath.md)."""
    return np.full(np.shape(x), 2.0)


def _c_pow() -> np.ufunc:
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m") or None)
    libm.pow.restype, libm.pow.argtypes = ctypes.c_double, (ctypes.c_double, ctypes.c_double)
    return np.frompyfunc(libm.pow, 2, 1)


_POW = _c_pow()


def power(x: np.ndarray, y: object) -> np.ndarray:
    """C's pow element by element (Ember's documented choice: pow(-inf, 0.5) = +inf and
    pow(-0.0, 0.5) = +0.0, where numpy's scalar-exponent path takes sqrt)."""
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    return np.asarray(_POW(x, y), dtype=np.float64).reshape(x.shape)


def pow_ulps(x: np.ndarray, y: np.ndarray, dt: str) -> np.ndarray:
    """f32 pow is correctly rounded; f64 pow loses 2|y ln x| ulps (docs/vecmath.md)."""
    if dt == "f32":
        return np.ones(np.broadcast(x, y).shape)
    return 3 * (1 + 2.5 * np.abs(y * np.log(np.abs(x))))


def clip(x: np.ndarray, low: object, high: object) -> np.ndarray:
    """x unless strictly outside [low, high] (clip(-0.0, 0, 1) = -0.0, nan stays); with
    low > high, high (numpy's clip)."""
    out = x if low is None else np.where(x < low, np.asarray(low, x.dtype), x)
    return out if high is None else np.where(out > high, np.asarray(high, x.dtype), out)


# -- reductions and nn ops ----------------------------------------------------------------------


def var(x: np.ndarray, axis: object, keepdims: bool, ddof: int) -> np.ndarray:
    axes = tuple(range(x.ndim)) if axis is None else axis
    count = int(np.prod([x.shape[a] for a in np.atleast_1d(axes)])) if x.ndim else 1
    mean = np.sum(x, axis=axis, keepdims=True) / count if count else x.sum(axis, keepdims=True)
    return np.sum((x - mean) ** 2, axis=axis, keepdims=keepdims) / (count - ddof)


# The nn ops below take the program's dtype: under noise they also perturb the intermediate
# whose rounding dominates (the sum of exponentials, the normalized values before the affine
# step), where a perturbation of the operands would not show it.


def softmax(x: np.ndarray, axis: int, dt: str) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    y = shifted / rnd(shifted.sum(axis=axis, keepdims=True), dt, 2 * x.shape[axis])
    # A probability below the dtype's normal range is zero or not depending on how it is
    # computed (`simplify` turns log(softmax(x)) into log_softmax, which stays finite where the
    # softmax underflows): odd noisy trials keep it at twice the smallest normal (as `guard`
    # picks per trial), so every such element has trials both ways and an op discontinuous at
    # zero (log) is not judged there.
    odd = _state["noise"] is not None and int(_state["seed"]) % 2  # type: ignore[call-overload]
    if odd and dt in _EPS and y.size:
        y = np.where(y < _TINY[dt], 2 * _TINY[dt], y)  # 2x: out of `rnd`'s flush
    return y


def log_softmax(x: np.ndarray, axis: int, dt: str) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    total = rnd(np.exp(shifted).sum(axis=axis, keepdims=True), dt, 2 * x.shape[axis])
    return shifted - np.log(total)


def _normalize(x: np.ndarray, axes: tuple[int, ...], eps: float, dt: str) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) over `axes`, scaled by a power of two first so that the
    squares cannot overflow even in float64. Under noise the mean is perturbed by an ulp of
    `dt`, as a kernel holding it in `dt` rounds it: centring cancels, so a row of close values
    far from zero (-86.58 and -87.63) loses |mean| / |x - mean| ulps to it."""
    with np.errstate(all="ignore"):
        top = np.max(fin(x), axis=axes, keepdims=True) if x.size else np.ones(())
        scale = np.where(top > 1, np.ldexp(1.0, np.frexp(np.maximum(top, 1))[1] - 1), 1.0)
        xs = x / scale
        mean = xs.mean(axis=axes, keepdims=True)
        if _state["noise"] is not None and dt in _EPS:
            mean = rnd(mean, dt, 1)
        centered = xs - mean
        variance = (centered**2).mean(axis=axes, keepdims=True)
        # eps / scale**2 may underflow to 0: a row of equal values still normalizes to 0.
        return np.where(centered == 0, 0.0, centered / np.sqrt(variance + eps / scale**2))


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float, dt: str) -> np.ndarray:
    normalized = _normalize(x, tuple(range(x.ndim - w.ndim, x.ndim)), eps, dt)
    return rnd(normalized, dt, 8) * w + b


def batch_norm(x: np.ndarray, mean: np.ndarray, variance: np.ndarray, w: np.ndarray,
               b: np.ndarray, eps: float, dt: str) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, w, b = mean.reshape(shape), w.reshape(shape), b.reshape(shape)
    normalized = rnd(x - mean, dt, 1) / np.sqrt(variance.reshape(shape) + eps)
    # Folded into x * scale + (b - mean * scale), as inference kernels (PyTorch's too) do, the
    # sum cancels: its rounding is relative to |x * scale| + |mean * scale|, not to the result.
    scale = w / np.sqrt(variance.reshape(shape) + eps)
    size = np.abs(x * scale) + np.abs(mean * scale)
    if dt in _TINY:  # a subnormal scale is rounded to a subnormal step, not to its own ulps:
        with np.errstate(all="ignore"):  # (|x| + |mean|) steps, in ulps of that size
            size = size + np.where(np.abs(scale) < _TINY[dt],
                                   (fin(x) + fin(mean)) * _TINY[dt], 0.0)
    out = jitter(rnd(normalized, dt, 4) * w + b, size, dt, 4)
    if _state["noise"] is not None and _state["seed"] % 2:
        # The folded order where the two disagree on finiteness: a zero weight gives b there
        # even when (x - mean) / sqrt(var + eps) overflows (inf * 0 = nan unfolded).
        folded = x * scale + (b - mean * scale)
        out = np.where(np.isfinite(out) != np.isfinite(folded), folded, out)
    return out


def batch_norm_bound(x: np.ndarray, mean: np.ndarray, variance: np.ndarray, w: np.ndarray,
                     b: np.ndarray, eps: float) -> np.ndarray:
    """The largest intermediate of batch_norm in any order of its products (the scale
    weight / sqrt(var + eps) alone too, which implementations fold first)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    rstd = 1 / np.sqrt(fin(variance.reshape(shape) + eps))
    with np.errstate(all="ignore"):
        scale = w.reshape(shape) * rstd
        # A folded scale that overflows (inf * 0 later) or underflows to 0 (inf * 0 with an
        # infinite x or mean) gives nan where another order gives inf.
        lost = np.isinf(scale) | ((scale == 0) & (w.reshape(shape) != 0))
        infinite_scale = np.where(lost, np.inf, 0.0)
        return ((fin(x) + fin(mean.reshape(shape)) + 1) * (1 + fin(w.reshape(shape)))
                * (1 + rstd) + fin(b.reshape(shape)) + infinite_scale)


def batch_norm_train(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float, dt: str
                     ) -> np.ndarray:
    axes = tuple(a for a in range(x.ndim) if a != 1)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return rnd(_normalize(x, axes, eps, dt), dt, 8) * w.reshape(shape) + b.reshape(shape)


def _reduce_loss(loss: np.ndarray, reduction: str, dt: str) -> np.ndarray:
    if reduction == "none":
        return loss
    total = rnd(loss, dt, 1).sum()
    return total / loss.size if reduction == "mean" else total


def mse_loss(x: np.ndarray, y: np.ndarray, reduction: str, dt: str) -> np.ndarray:
    return _reduce_loss(rnd((x - y) ** 2, dt, 2), reduction, dt)


def cross_entropy(x: np.ndarray, target: np.ndarray, reduction: str, dt: str) -> np.ndarray:
    """-log_softmax(x)[i, target[i]] per row, over classes on axis 1."""
    logp = log_softmax(x, 1, dt)
    return _reduce_loss(-logp[np.arange(len(target)), target], reduction, dt)


def _out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if span < 0:
        raise ValueError(f"a window of extent {dilation * (kernel - 1) + 1} does not fit {size} "
                         f"padded by {pad}")
    out = (span + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= size + pad:  # PyTorch: the last window starts inside
        out -= 1
    return max(out, 0)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int],
           padding: tuple[int, int, int, int], dilation: tuple[int, int], groups: int
           ) -> np.ndarray:
    """Direct convolution: zero padding takes part in the products (0 * nan = nan)."""
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None]
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    top, left, bottom, right = padding
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if oh <= 0 or ow <= 0:
        raise ValueError("the kernel does not fit the padded input")
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dilation[0], i * dilation[0] + (oh - 1) * stride[0] + 1, stride[0])
                cols = slice(j * dilation[1], j * dilation[1] + (ow - 1) * stride[1] + 1, stride[1])
                patch = xp[:, g * cg : (g + 1) * cg, rows, cols]  # n, cg, oh, ow
                out[:, g * og : (g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, w[g * og : (g + 1) * og, :, i, j])
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return out[0] if squeeze else out


def _pool_windows(x: np.ndarray, kernel, stride, pad, dilation, ceil, fill):
    """(out_h, out_w, list of (i, j, padded-input view)) for a 2-D pooling."""
    h, w = x.shape[-2:]
    oh = _out_size(h, kernel[0], stride[0], pad[0], dilation[0], ceil)
    ow = _out_size(w, kernel[1], stride[1], pad[1], dilation[1], ceil)
    extra_h = max((oh - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1 - h - pad[0], 0)
    extra_w = max((ow - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1 - w - pad[1], 0)
    widths = [(0, 0)] * (x.ndim - 2) + [(pad[0], extra_h), (pad[1], extra_w)]
    xp = np.pad(x, widths, constant_values=fill)
    views = []
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            r0, c0 = i * dilation[0], j * dilation[1]
            views.append(xp[..., r0 : r0 + (oh - 1) * stride[0] + 1 : stride[0],
                            c0 : c0 + (ow - 1) * stride[1] + 1 : stride[1]])
    return oh, ow, views


def max_pool2d(x: np.ndarray, kernel, stride, pad, dilation, ceil) -> np.ndarray:
    """Window maxima; padding never wins; NaN propagates (as PyTorch)."""
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    _, _, views = _pool_windows(x, kernel, stride, pad, dilation, ceil, low)
    out = views[0]
    for view in views[1:]:
        out = np.where(np.isnan(out) | (out >= view), out, view) if x.dtype.kind == "f" else \
            np.maximum(out, view)
    return np.array(out)


def _divisors(size, out, kernel, stride, pad, include_pad):
    starts = np.arange(out) * stride - pad
    ends = np.minimum(starts + kernel, size + pad)
    if include_pad:
        return (ends - starts).astype(np.float64)
    return (np.minimum(ends, size) - np.maximum(starts, 0)).astype(np.float64)


def avg_pool2d(x: np.ndarray, kernel, stride, pad, ceil, include_pad, divisor=None
               ) -> np.ndarray:
    oh, ow, views = _pool_windows(x, kernel, stride, pad, (1, 1), ceil, 0.0)
    total = sum(views[1:], views[0].copy())
    if divisor:
        return total / divisor
    rows = _divisors(x.shape[-2], oh, kernel[0], stride[0], pad[0], include_pad)
    cols = _divisors(x.shape[-1], ow, kernel[1], stride[1], pad[1], include_pad)
    return total / np.outer(rows, cols)


def adaptive_avg_pool2d(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = x.shape[-2:]
    out = np.zeros((*x.shape[:-2], *size))
    for i in range(size[0]):
        r0, r1 = (i * h) // size[0], -((-(i + 1) * h) // size[0])
        for j in range(size[1]):
            c0, c1 = (j * w) // size[1], -((-(j + 1) * w) // size[1])
            out[..., i, j] = x[..., r0:r1, c0:c1].mean(axis=(-2, -1))
    return out


def torch_pad(x: np.ndarray, pads: list[int], mode: str, value: float) -> np.ndarray:
    """PyTorch's F.pad: (before, after) pairs from the last dimension; negative crops."""
    befores, afters = [0] * x.ndim, [0] * x.ndim
    for i in range(len(pads) // 2):
        befores[x.ndim - 1 - i], afters[x.ndim - 1 - i] = pads[2 * i], pads[2 * i + 1]
    grow = [(max(b, 0), max(a, 0)) for b, a in zip(befores, afters, strict=True)]
    if mode == "constant":
        out = np.pad(x, grow, constant_values=value)
    else:
        out = np.pad(x, grow, mode={"reflect": "reflect", "replicate": "edge",
                                    "circular": "wrap"}[mode])
    crop = tuple(slice(-min(b, 0), out.shape[i] + min(a, 0))
                 for i, (b, a) in enumerate(zip(befores, afters, strict=True)))
    return out[crop]


# -- comparison ------------------------------------------------------------------------------------


def compare(out: np.ndarray, ref: np.ndarray, trials: list[np.ndarray], dt: str,
            signed_zeros: bool) -> str:
    """'' when `out` (an Ember result) matches the reference within tolerance, else why not."""
    if not isinstance(out, np.ndarray):
        return f"result is a {type(out).__name__}, not a numpy array"
    if out.dtype != np.dtype(NUMPY[dt]):
        return f"dtype {out.dtype}, expected {np.dtype(NUMPY[dt])}"
    if out.shape != ref.shape:
        return f"shape {out.shape}, expected {ref.shape}"
    if not ref.size:
        return ""
    if dt not in _EPS:
        agree = np.logical_and.reduce([t == ref for t in trials]) if trials else True
        bad = agree & (out != ref)
        return _describe(bad, out, ref, None) if bad.any() else ""
    o = out.astype(np.float64)
    with np.errstate(all="ignore"):
        nan, inf = np.isnan(ref), np.isinf(ref)
        same = np.ones(ref.shape, bool)
        deviation = np.zeros(ref.shape)
        for t in trials:
            same &= (np.isnan(t) == nan) & (np.isinf(t) == inf) & (~inf | (t == ref))
            deviation = np.maximum(deviation, np.where(np.isfinite(t) & ~inf & ~nan,
                                                       np.abs(t - ref), 0.0))
        tol = 3 * deviation + 2 * _EPS[dt] * np.abs(ref) + 2 * _TINY[dt]
        finite = same & ~nan & ~inf
        bad = same & nan & ~np.isnan(o)
        bad |= same & inf & (o != ref)
        bad |= finite & ~(np.abs(o - ref) <= tol)
        if signed_zeros:
            zero = same & (ref == 0)
            for t in trials:
                zero &= np.signbit(t) == np.signbit(ref)
            bad |= zero & (o == 0) & (np.signbit(o) != np.signbit(ref))
    return _describe(bad, out, ref, tol) if bad.any() else ""


def _describe(bad: np.ndarray, out: np.ndarray, ref: np.ndarray, tol: np.ndarray | None) -> str:
    positions = np.argwhere(bad)
    parts = []
    for pos in positions[:3]:
        at = tuple(int(p) for p in pos)
        text = f"[{','.join(map(str, at))}] got {out[at]!r} expected {ref[at]!r}"
        if tol is not None:
            text += f" (tolerance {float(tol[at]):.3g})"
        parts.append(text)
    more = f" (+{len(positions) - 3} more)" if len(positions) > 3 else ""
    return f"{len(positions)} of {bad.size} elements differ: " + "; ".join(parts) + more
