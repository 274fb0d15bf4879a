"""interpolate, grid_sample, topk, np.sort / np.argsort and np.fmod on traced tensors, at every
opt level, against PyTorch (float64) and numpy; their gradients against torch.autograd; and
the errors they give for what they do not support."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
from ember.errors import EmberError
from ember.frontend.tracer import emit
from ember.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional
LEVELS = (0, 1, 2, 3)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _run_levels(fn, *inputs: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    results = []
    for level in LEVELS:
        out = ember.compile(fn, *inputs, opt_level=level)(*inputs)
        results.append(out if isinstance(out, tuple) else (out,))
    return results


def _torch64(*arrays: np.ndarray) -> list:
    return [torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in arrays]


def _check(results: list[tuple[np.ndarray, ...]], expected: tuple, rtol: float, atol: float
           ) -> None:
    for level, outs in zip(LEVELS, results, strict=True):
        assert len(outs) == len(expected)
        for index, (got, want) in enumerate(zip(outs, expected, strict=True)):
            want = np.asarray(want)
            assert got.shape == want.shape, f"level {level} output {index}: {got.shape}"
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol,
                                       err_msg=f"opt_level {level}, output {index}")


def test_interpolate_modes_match_torch() -> None:
    """linear (3-D), bilinear and bicubic with and without align_corners, antialias, trilinear,
    nearest on 3-D and 5-D inputs."""
    x4 = _rng(1).standard_normal((2, 3, 6, 7)).astype(np.float32)
    x3 = _rng(2).standard_normal((2, 3, 9)).astype(np.float32)
    x5 = _rng(3).standard_normal((1, 2, 3, 4, 5)).astype(np.float32)

    def run(m, a4, a3, a5):
        return (m.interpolate(a4, size=(9, 4), mode="bilinear"),
                m.interpolate(a4, scale_factor=(1.5, 0.5), mode="bilinear", align_corners=True),
                m.interpolate(a4, size=(11, 5), mode="bicubic"),
                m.interpolate(a4, scale_factor=1.7, mode="bicubic", align_corners=True),
                m.interpolate(a4, size=(3, 2), mode="bilinear", antialias=True),
                m.interpolate(a4, size=(2, 9), mode="bicubic", antialias=True),
                m.interpolate(a3, size=14, mode="linear"),
                m.interpolate(a3, scale_factor=0.6, mode="linear", align_corners=True),
                m.interpolate(a5, size=(5, 3, 8), mode="trilinear"),
                m.interpolate(a5, scale_factor=2, mode="nearest"),
                m.interpolate(a3, size=4, mode="nearest-exact"))

    expected = tuple(t.numpy() for t in run(TF, *_torch64(x4, x3, x5)))
    _check(_run_levels(lambda a, b, c: run(F, a, b, c), x4, x3, x5), expected, 2e-5, 2e-5)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_matches_torch(mode: str) -> None:
    """Every padding mode, both align_corners, grid points inside and outside [-1, 1]."""
    x = _rng(4).standard_normal((2, 3, 5, 6))
    grid = _rng(5).uniform(-1.4, 1.4, (2, 4, 7, 2))

    def run(m, a, g):
        return tuple(m.grid_sample(a, g, mode=mode, padding_mode=padding, align_corners=align)
                     for padding in ("zeros", "border", "reflection") for align in (False, True))

    expected = tuple(t.numpy() for t in run(TF, *_torch64(x, grid)))
    _check(_run_levels(lambda a, g: run(F, a, g), x, grid), expected, 1e-10, 1e-10)


def test_grid_sample_float32_and_3d() -> None:
    x = _rng(6).standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    grid = _rng(7).uniform(-1.2, 1.2, (1, 2, 3, 4, 3)).astype(np.float32)
    x2 = x[:, :, 0]
    grid2 = grid[:, 0, :, :, :2].copy()

    def run(m, a, g, a2, g2):
        return (m.grid_sample(a, g, mode="bilinear", padding_mode="border", align_corners=False),
                m.grid_sample(a, g, mode="nearest", padding_mode="zeros", align_corners=True),
                m.grid_sample(a2, g2, mode="bilinear", padding_mode="reflection",
                              align_corners=True))

    expected = tuple(t.numpy() for t in run(TF, *_torch64(x, grid, x2, grid2)))
    _check(_run_levels(lambda *a: run(F, *a), x, grid, x2, grid2), expected, 1e-5, 2e-6)


def _stable_topk(x: np.ndarray, k: int, axis: int, largest: bool) -> tuple:
    """Python's sorted over each row: NaN beyond every number, ties by index."""
    moved = np.moveaxis(x, axis, -1)
    order = np.empty((*moved.shape[:-1], k), np.int64)
    for row in np.ndindex(*moved.shape[:-1]):
        values = [float(v) for v in moved[row]]

        def key(j: int, values: list = values) -> tuple:
            nan = math.isnan(values[j])
            magnitude = 0.0 if nan else (-values[j] if largest else values[j])
            return (nan != largest, magnitude, j)

        order[row] = sorted(range(len(values)), key=key)[:k]
    picked = np.take_along_axis(moved, order, axis=-1)
    return np.moveaxis(picked, -1, axis), np.moveaxis(order, -1, axis)


def test_topk_sort_argsort_fmod_at_every_level() -> None:
    """Ties keep index order, NaN is the largest (last in an ascending sort)."""
    x = _rng(8).standard_normal((4, 9)).astype(np.float32)
    x[0, 2:6] = 0.25
    x[1, 4] = np.nan
    x[2, :] = 1.0
    y = _rng(9).uniform(0.3, 3, (9,)).astype(np.float32) * np.where(np.arange(9) % 2, 1, -1)

    def fn(a, b):
        values, indices = F.topk(a, 4, dim=1)
        low, low_indices = a.topk(3, dim=0, largest=False)
        return (values, indices, low, low_indices, np.sort(a, axis=1), np.argsort(a, axis=-1),
                np.sort(a, axis=None), a.argsort(axis=0), np.fmod(a * 7.0, b))

    ta = torch.from_numpy(x)
    values, indices = _stable_topk(x, 4, 1, largest=True)
    low, low_indices = _stable_topk(x, 3, 0, largest=False)
    # torch.topk's values (its choice among ties is its own)
    np.testing.assert_array_equal(values, torch.topk(ta, 4, dim=1)[0].numpy())
    np.testing.assert_array_equal(low, torch.topk(ta, 3, dim=0, largest=False)[0].numpy())
    with np.errstate(invalid="ignore"):
        expected = (values, indices, low, low_indices,
                    np.sort(x, axis=1), np.argsort(x, axis=-1, kind="stable"),
                    np.sort(x, axis=None), np.argsort(x, axis=0, kind="stable"),
                    np.fmod(x * np.float32(7.0), y))
    for outs in _run_levels(fn, x, y):
        for got, want in zip(outs, expected, strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_long_rows_sort_by_the_network() -> None:
    """Rows beyond the counting limit (a bitonic network, padded to a power of two): ties,
    NaN, infinities and -0.0 in the order numpy's stable sort and torch.topk give."""
    x = _rng(13).integers(-3, 4, (5, 77)).astype(np.float32)
    x[0, 10] = np.nan
    x[1, ::7] = np.inf
    x[2, 3] = -np.inf
    x[3, :] = -0.0

    def fn(a):
        return (np.sort(a, axis=-1), np.argsort(a, axis=-1), *F.topk(a, 9, dim=1),
                *F.topk(a, 5, dim=0, largest=False))

    expected = (np.sort(x, axis=-1), np.argsort(x, axis=-1, kind="stable"),
                *_stable_topk(x, 9, 1, largest=True), *_stable_topk(x, 5, 0, largest=False))
    for outs in _run_levels(fn, x):
        for got, want in zip(outs, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_integer_sort_and_fmod() -> None:
    x = _rng(10).integers(-5, 6, (3, 8)).astype(np.int32)
    d = np.array([3, -3, 0, 2, 7, -1, 5, 0], np.int32)

    def fn(a, b):
        return np.sort(a, axis=0), np.argsort(a), np.fmod(a, b), F.topk(a, 2)[0]

    with np.errstate(divide="ignore", invalid="ignore"):
        expected = (np.sort(x, axis=0), np.argsort(x, kind="stable"), np.fmod(x, d),
                    torch.topk(torch.from_numpy(x), 2)[0].numpy())
    for outs in _run_levels(fn, x, d):
        for got, want in zip(outs, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_float_fmod_is_exact_at_the_edges() -> None:
    a = np.array([1e30, -1e30, 5.5, -0.0, np.inf, 3.0, 7.0, 1e-40], np.float32)
    b = np.array([3.3, 7.0, np.inf, 2.0, 1.0, 0.0, -2.5, 3e-41], np.float32)
    expected = np.array([math.fmod(float(p), float(q)) if q != 0 and math.isfinite(p)
                         else math.nan for p, q in zip(a, b, strict=True)], np.float32)
    for (got,) in _run_levels(lambda p, q: np.fmod(p, q), a, b):
        np.testing.assert_array_equal(got, expected)
        assert np.signbit(got[3])  # fmod(-0.0, 2) = -0.0


def test_gradients_match_torch_autograd() -> None:
    """ember.grad through bicubic and antialiased interpolate, topk values and fmod."""
    x = _rng(11).standard_normal((2, 2, 5, 6))
    p = _rng(12).uniform(0.5, 2.0, (2, 2, 5, 6))

    def loss(m, topk, fmod, a, q):
        y = m.interpolate(a, size=(7, 4), mode="bicubic", align_corners=False)
        z = m.interpolate(a, size=(2, 3), mode="bilinear", antialias=True)
        values = topk(a.reshape(2, 2, 30), 5)[0]
        return (y * y).sum() + (z * z * z).sum() + (values * values).sum() + \
            (fmod(a * 3.0, q) ** 2).sum()

    def ember_loss(a, q):
        return loss(F, F.topk, np.fmod, a, q)

    ga, gq = ember.grad(ember_loss, argnums=(0, 1))(x, p)
    tx, tp = (torch.tensor(v, requires_grad=True) for v in (x, p))
    loss(TF, lambda v, k: torch.topk(v, k), torch.fmod, tx, tp).backward()
    np.testing.assert_allclose(ga, tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(gq, tp.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_argsort_descending_as_torch() -> None:
    x = np.array([[3.0, 1.0, np.nan, 1.0, 2.0], [0.5, 0.5, -1.0, 0.5, 9.0]], np.float32)
    expected = torch.argsort(torch.from_numpy(x), dim=1, descending=True, stable=True).numpy()
    for (got,) in _run_levels(lambda a: a.argsort(dim=1, descending=True), x):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_gradients_match_torch_autograd(mode: str) -> None:
    """Input and grid cotangents for every padding and both align_corners (float64, opt level
    0), and (bilinear, nearest) a 3-D float32 one compiled at opt level 3."""
    x = _rng(14).standard_normal((2, 3, 5, 6))
    grid = _rng(15).uniform(-1.3, 1.3, (2, 4, 7, 2))
    probe = _rng(16).standard_normal((2, 3, 4, 7))
    settings = [(p, a) for p in ("zeros", "border", "reflection") for a in (False, True)]

    def loss(m, a, g, q):
        return sum(((m.grid_sample(a, g, mode=mode, padding_mode=p, align_corners=al) * q) ** 2)
                   .sum() for p, al in settings)

    got = ember.grad(lambda a, g: loss(F, a, g, probe), argnums=(0, 1))(x, grid)
    tx, tg = (torch.tensor(v, requires_grad=True) for v in (x, grid))
    loss(TF, tx, tg, torch.from_numpy(probe)).backward()
    np.testing.assert_allclose(got[0], tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got[1], tg.grad.numpy(), rtol=1e-10, atol=1e-10)

    if mode == "bicubic":
        return
    x3 = _rng(17).standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    grid3 = _rng(18).uniform(-1.1, 1.1, (1, 2, 3, 2, 3)).astype(np.float32)

    def loss3(m, a, g):
        return (m.grid_sample(a, g, mode=mode, padding_mode="border", align_corners=False) ** 2
                ).sum()

    got = ember.grad(lambda a, g: loss3(F, a, g), argnums=(0, 1), opt_level=3)(x3, grid3)
    tx, tg = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x3, grid3))
    loss3(TF, tx, tg).backward()
    np.testing.assert_allclose(got[0], tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], tg.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_unsupported_uses_are_clear_errors() -> None:
    x = np.zeros((1, 1, 4, 4), np.float32)
    grid = np.zeros((1, 2, 2, 2), np.float32)
    cases = [
        (lambda a: F.interpolate(a, size=3, mode="area"), r"mode 'area' is not supported"),
        (lambda a: F.interpolate(a, size=(2, 2), mode="nearest", align_corners=True),
         "align_corners can only be set with the interpolating modes"),
        (lambda a: F.interpolate(a, size=5, mode="linear"), r"mode 'linear' needs a 3-D"),
        (lambda a: F.topk(a, 5, dim=2), r"topk: k=5 is outside \[0, 4\]"),
        (lambda a: np.sort(a, order="x"), "order="),
        (lambda a: a.sort(), "sorts in place"),
        (lambda a: F.grid_sample(a, a, mode="bilinear"), "grid_sample: expected input"),
        (lambda a: F.interpolate(a[:, :, :0], size=(2, 2), mode="bilinear"),
         r"spatial sizes \[0, 4\] and the output size \[2, 2\] must be positive"),
    ]
    for fn, message in cases:
        with pytest.raises(EmberError, match=message):
            ember.trace(fn, x)
    with pytest.raises(EmberError, match="not for the ONNX convention"):
        ember.grad(lambda a, g: emit("grid_sample", a, g, convention="onnx").sum())(x, grid)
