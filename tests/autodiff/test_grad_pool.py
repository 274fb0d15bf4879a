"""The backward ops of pooling and gather (max_pool2d_grad, avg_pool2d_grad,
adaptive_avg_pool2d_grad, scatter_add) and the gradient rules that build them, against
torch.autograd in float64: the numpy references, the kernels compiled at opt_level 1 and 3,
and the rules run through the reference interpreter."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ember  # noqa: E402
import ember.autodiff.rules_pool  # noqa: E402  (registers the rules)
from ember.ir.ops import get_op  # noqa: E402
from ember.ir.types import TensorType  # noqa: E402
from ember.runtime import compile_native  # noqa: E402

F = torch.nn.functional


def reference(op: str, *arrays: np.ndarray, **attrs: object) -> np.ndarray:
    opdef = get_op(op)
    return opdef.evaluate(arrays, opdef.make_attrs(attrs))[0]


def compiled(op: str, *arrays: np.ndarray, opt_level: int, **attrs: object) -> np.ndarray:
    """One node of `op` over graph inputs, compiled natively and run."""
    return compiled_nodes(op, [(arrays, attrs)], opt_level)[0]


def compiled_nodes(op: str, problems: list[tuple[tuple[np.ndarray, ...], dict]],
                   opt_level: int) -> list[np.ndarray]:
    """One node of `op` per (arrays, attrs) problem, all in one graph (one compile), run."""
    b = ember.GraphBuilder(op)
    outputs = []
    for arrays, attrs in problems:
        values = [b.input(TensorType.of(a)) for a in arrays]
        outputs.append(b.op(op, *values, **attrs))
    native = compile_native(b.build(outputs), opt_level=opt_level)
    return list(native(*(a for arrays, _ in problems for a in arrays)))


def as_f32(arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    return tuple(a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays)


def torch_vjp(forward, x: np.ndarray, gy_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(gy, dx) of a torch forward at x in float64, gy drawn at random for its output."""
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    out = forward(tx)
    gy = np.random.default_rng(gy_seed).standard_normal(tuple(out.shape))
    (dx,) = torch.autograd.grad(out, tx, torch.from_numpy(gy))
    return gy, dx.numpy()


def ties(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values on a coarse grid (many equal maxima in a window), in float64."""
    return np.round(np.random.default_rng(seed).standard_normal(shape) * 1.5) / 2


# -- max_pool2d_grad ----------------------------------------------------------------------------

# x shape, kernel, stride, padding (t, l, b, r), dilation, ceil_mode
MAX_CASES = {
    "2x2-s2": ((2, 3, 8, 6), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    "3x3-s1-overlap": ((1, 2, 7, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),
    "3x3-s2-pad-ceil": ((2, 2, 9, 8), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    "rect-dilated": ((1, 3, 11, 10), (3, 2), (2, 1), (1, 1, 1, 1), (2, 3), False),
    "dilated-ceil": ((1, 2, 10, 9), (2, 3), (3, 2), (1, 1, 1, 1), (2, 1), True),
    "asymmetric-pad": ((2, 2, 7, 7), (3, 3), (2, 1), (0, 1, 1, 0), (1, 1), False),
    "odd-1x1": ((1, 1, 5, 3), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), True),
    "kernel-is-input": ((2, 1, 4, 5), (4, 5), (1, 1), (0, 0, 0, 0), (1, 1), False),
    # windows that tile the input (the lowering's scatter-free path), with rows and columns
    # past the last window
    "2x2-s2-leftover": ((2, 3, 9, 7), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    "3x2-tiled-leftover": ((1, 2, 10, 11), (3, 2), (3, 2), (0, 0, 0, 0), (1, 1), False),
}


def _max_pool_torch(x: np.ndarray, kernel, stride, padding, dilation, ceil_mode, seed: int):
    top, left, bottom, right = padding
    if (top, left) == (bottom, right):
        return torch_vjp(lambda t: F.max_pool2d(t, kernel, stride, (top, left), dilation,
                                                ceil_mode=ceil_mode), x, seed)
    assert not ceil_mode  # explicit -inf padding keeps PyTorch's output size only without it

    def forward(t):
        padded = F.pad(t, (left, right, top, bottom), value=-float("inf"))
        return F.max_pool2d(padded, kernel, stride, 0, dilation)

    return torch_vjp(forward, x, seed)


def _max_problem(case: str, nan: bool = False):
    shape, kernel, stride, padding, dilation, ceil_mode = MAX_CASES[case]
    seed = sum(map(ord, case))
    x = ties(shape, seed)
    if nan:  # NaNs at random places, sometimes two in one window
        rng = np.random.default_rng(seed + 1)
        x.reshape(-1)[rng.choice(x.size, size=max(2, x.size // 8), replace=False)] = np.nan
    gy, dx = _max_pool_torch(x, kernel, stride, padding, dilation, ceil_mode, seed)
    attrs = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation,
             "ceil_mode": ceil_mode}
    return x, gy, dx, attrs


@pytest.mark.parametrize("nan", [False, True], ids=["ties", "nan"])
@pytest.mark.parametrize("case", sorted(MAX_CASES))
def test_max_pool2d_grad_reference_matches_torch(case: str, nan: bool) -> None:
    x, gy, dx, attrs = _max_problem(case, nan)
    np.testing.assert_allclose(reference("max_pool2d_grad", x, gy, **attrs), dx, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("opt_level", [1, 3])
def test_max_pool2d_grad_compiled(opt_level: int) -> None:
    """Every case in f64 (against torch) and f32 (against the reference), with NaNs in two."""
    problems, expected = [], []
    for case in sorted(MAX_CASES):
        x, gy, dx, attrs = _max_problem(case, nan=case in ("3x3-s1-overlap", "dilated-ceil",
                                                           "2x2-s2", "3x2-tiled-leftover"))
        small = as_f32((x, gy))
        problems += [((x, gy), attrs), (small, attrs)]
        expected += [(case, dx), (f"{case} f32", reference("max_pool2d_grad", *small, **attrs))]
    got = compiled_nodes("max_pool2d_grad", problems, opt_level)
    for (name, want), have in zip(expected, got, strict=True):
        assert have.dtype == want.dtype, name
        np.testing.assert_allclose(have, want, rtol=1e-12 if want.dtype == np.float64 else 1e-5,
                                   atol=1e-12 if want.dtype == np.float64 else 1e-6,
                                   err_msg=name)


def test_max_pool2d_grad_signed_zeros_and_infinities() -> None:
    """IEEE comparison picks the tap (-0.0 is not greater than +0.0), and a window of -inf
    sends its gradient to its first tap inside the input, as in PyTorch."""
    x = np.array([[[[-0.0, 0.0, -np.inf], [0.0, -0.0, -np.inf], [-np.inf, -np.inf, -np.inf]]]])
    attrs = {"kernel": (2, 2), "stride": (1, 1), "padding": (1, 1, 1, 1)}
    gy, dx = torch_vjp(lambda t: F.max_pool2d(t, 2, 1, 1), x, 5)
    np.testing.assert_array_equal(reference("max_pool2d_grad", x, gy, **attrs), dx)
    for level in (1, 3):
        np.testing.assert_array_equal(compiled("max_pool2d_grad", x, gy, opt_level=level,
                                               **attrs), dx)


def test_max_pool2d_grad_on_threads() -> None:
    """Enough planes for the schedule to run them on threads; overlapping windows in each."""
    x = ties((8, 32, 40, 40), 11)
    gy, dx = torch_vjp(lambda t: F.max_pool2d(t, 3, 1, 1), x, 12)
    got = compiled("max_pool2d_grad", x, gy, opt_level=3, kernel=(3, 3), stride=(1, 1),
                   padding=(1, 1, 1, 1))
    np.testing.assert_allclose(got, dx, rtol=1e-12, atol=1e-12)


def test_tiled_max_pool2d_grad_on_threads_with_nans() -> None:
    """The CNN's 2x2 pool backward on enough planes for threads, NaNs and ties included."""
    x = ties((8, 32, 40, 40), 13)
    x.reshape(-1)[np.random.default_rng(14).choice(x.size, size=500, replace=False)] = np.nan
    gy, dx = torch_vjp(lambda t: F.max_pool2d(t, 2, 2), x, 15)
    for dtype, tolerance in ((np.float64, 1e-12), (np.float32, 1e-6)):
        got = compiled("max_pool2d_grad", x.astype(dtype), gy.astype(dtype), opt_level=3,
                       kernel=(2, 2), stride=(2, 2))
        np.testing.assert_allclose(got, dx.astype(dtype), rtol=tolerance, atol=tolerance)


# -- avg_pool2d_grad ----------------------------------------------------------------------------

# x shape, kernel, stride, padding (symmetric: t, l), ceil_mode, count_include_pad
AVG_CASES = {
    "2x2-s2": ((2, 3, 8, 6), (2, 2), (2, 2), (0, 0), False, True),
    "3x3-s1-pad": ((1, 2, 7, 9), (3, 3), (1, 1), (1, 1), False, True),
    "3x3-s1-pad-exclude": ((1, 2, 7, 9), (3, 3), (1, 1), (1, 1), False, False),
    "3x3-s2-ceil": ((2, 2, 9, 8), (3, 3), (2, 2), (1, 1), True, True),
    "3x3-s2-ceil-exclude": ((2, 2, 10, 7), (3, 3), (2, 2), (1, 0), True, False),
    "rect-stride-gaps": ((1, 3, 11, 10), (2, 3), (3, 4), (1, 1), True, False),
    "5x5-s1-many-windows": ((1, 1, 9, 12), (5, 5), (1, 1), (2, 2), False, False),
    "7x6-s1-looped": ((1, 2, 9, 8), (7, 6), (1, 1), (3, 3), True, True),
}


def _avg_problem(case: str):
    shape, kernel, stride, (pad_h, pad_w), ceil_mode, include = AVG_CASES[case]
    seed = sum(map(ord, case))
    x = np.random.default_rng(seed).standard_normal(shape)
    gy, dx = torch_vjp(lambda t: F.avg_pool2d(t, kernel, stride, (pad_h, pad_w),
                                              ceil_mode=ceil_mode, count_include_pad=include),
                       x, seed)
    attrs = {"input_shape": shape, "kernel": kernel, "stride": stride,
             "padding": (pad_h, pad_w, pad_h, pad_w), "ceil_mode": ceil_mode,
             "count_include_pad": include}
    return gy, dx, attrs


@pytest.mark.parametrize("case", sorted(AVG_CASES))
def test_avg_pool2d_grad_reference_matches_torch(case: str) -> None:
    gy, dx, attrs = _avg_problem(case)
    np.testing.assert_allclose(reference("avg_pool2d_grad", gy, **attrs), dx, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("opt_level", [1, 3])
def test_avg_pool2d_grad_compiled(opt_level: int) -> None:
    """Every case in f64 and f32, against torch."""
    problems, expected = [], []
    for case in sorted(AVG_CASES):
        gy, dx, attrs = _avg_problem(case)
        problems += [((gy,), attrs), (as_f32((gy,)), attrs)]
        expected += [(case, dx, np.float64, 1e-12), (f"{case} f32", dx, np.float32, 1e-5)]
    got = compiled_nodes("avg_pool2d_grad", problems, opt_level)
    for (name, want, dtype, tolerance), have in zip(expected, got, strict=True):
        assert have.dtype == dtype, name
        np.testing.assert_allclose(have, want, rtol=tolerance, atol=tolerance, err_msg=name)


# -- adaptive_avg_pool2d_grad -------------------------------------------------------------------

# x shape, output size
ADAPTIVE_CASES = {
    "divides": ((2, 3, 8, 6), (4, 3)),
    "global": ((1, 4, 7, 5), (1, 1)),
    "uneven": ((2, 2, 9, 7), (4, 3)),
    "wider-output": ((1, 2, 3, 5), (5, 7)),
    "one-row": ((1, 1, 1, 10), (1, 4)),
}


def _adaptive_problem(case: str):
    shape, output_size = ADAPTIVE_CASES[case]
    seed = sum(map(ord, case))
    x = np.random.default_rng(seed).standard_normal(shape)
    gy, dx = torch_vjp(lambda t: F.adaptive_avg_pool2d(t, output_size), x, seed)
    return gy, dx, {"input_shape": shape}


@pytest.mark.parametrize("case", sorted(ADAPTIVE_CASES))
def test_adaptive_avg_pool2d_grad_reference_matches_torch(case: str) -> None:
    gy, dx, attrs = _adaptive_problem(case)
    np.testing.assert_allclose(reference("adaptive_avg_pool2d_grad", gy, **attrs), dx,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("opt_level", [1, 3])
def test_adaptive_avg_pool2d_grad_compiled(opt_level: int) -> None:
    problems = [_adaptive_problem(case) for case in sorted(ADAPTIVE_CASES)]
    got = compiled_nodes("adaptive_avg_pool2d_grad", [((gy,), attrs) for gy, _, attrs in problems],
                         opt_level)
    for case, (_, dx, _), have in zip(sorted(ADAPTIVE_CASES), problems, got, strict=True):
        np.testing.assert_allclose(have, dx, rtol=1e-12, atol=1e-12, err_msg=case)


# -- scatter_add --------------------------------------------------------------------------------

# data shape, indices, axis
SCATTER_CASES = {
    "rows-repeated": ((5, 4), [3, 0, 3, 3, -1, 1], 0),
    "middle-axis-2d-indices": ((2, 4, 3), [[0, -4, 2], [2, 2, 3]], 1),
    "last-axis": ((3, 2, 6), [5, -6, 0, 0], -1),
    "scalar-index": ((4, 3), 2, 0),
    "empty-indices": ((3, 2), np.zeros((0,), dtype=np.int64), 0),
    "i32-indices": ((6, 5), np.array([[1, 1], [5, -2]], dtype=np.int32), 0),
}


def _scatter_problem(case: str):
    shape, indices, axis = SCATTER_CASES[case]
    indices = np.asarray(indices, dtype=getattr(indices, "dtype", np.int64))
    seed = sum(map(ord, case))
    data = np.random.default_rng(seed).standard_normal(shape)
    size = shape[axis]
    axis = axis % len(shape)

    def forward(t):
        picked = t.index_select(axis, torch.from_numpy(indices.reshape(-1).astype(np.int64) % size))
        return picked.reshape(*shape[:axis], *indices.shape, *shape[axis + 1 :])

    gy, dx = torch_vjp(forward, data, seed)
    return gy, indices, dx, {"axis": SCATTER_CASES[case][2], "size": size}


@pytest.mark.parametrize("case", sorted(SCATTER_CASES))
def test_scatter_add_reference_matches_torch(case: str) -> None:
    gy, indices, dx, attrs = _scatter_problem(case)
    np.testing.assert_allclose(reference("scatter_add", gy, indices, **attrs), dx, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("opt_level", [1, 3])
def test_scatter_add_compiled(opt_level: int) -> None:
    problems = [_scatter_problem(case) for case in sorted(SCATTER_CASES)]
    got = compiled_nodes("scatter_add", [((gy, indices), attrs)
                                         for gy, indices, _, attrs in problems], opt_level)
    for case, (_, _, dx, _), have in zip(sorted(SCATTER_CASES), problems, got, strict=True):
        np.testing.assert_allclose(have, dx, rtol=1e-12, atol=1e-12, err_msg=case)


def test_scatter_add_many_repeats_stay_exact() -> None:
    """Half a million repeats of a few rows (enough work for threads): every one counted."""
    indices = np.random.default_rng(3).integers(-4, 4, size=(500_000,))
    gy = np.ones((500_000,), dtype=np.float64)
    expected = np.bincount(indices % 4, minlength=4).astype(np.float64)
    np.testing.assert_array_equal(reference("scatter_add", gy, indices, size=4), expected)
    got = compiled("scatter_add", gy, indices, opt_level=3, size=4)
    np.testing.assert_array_equal(got, expected)


def test_scatter_add_index_out_of_range_raises() -> None:
    gy = np.ones((3, 2), dtype=np.float32)
    indices = np.array([0, 4, 1])
    with pytest.raises(IndexError, match="index 4 is out of range"):
        reference("scatter_add", gy, indices, size=4 - 1)
    for level in (1, 3):
        with pytest.raises(ember.ExecutionError, match=r"scatter_add: index out of range"):
            compiled("scatter_add", gy, indices, opt_level=level, size=3)


# -- shape rules --------------------------------------------------------------------------------


def _build(op: str, *types: TensorType, **attrs: object) -> None:
    b = ember.GraphBuilder(op)
    b.op(op, *(b.input(t) for t in types), **attrs)


@pytest.mark.parametrize("op, types, attrs, message", [
    ("max_pool2d_grad", [((1, 1, 6, 6), "f32"), ((1, 1, 3, 2), "f32")], {"kernel": (2, 2),
     "stride": (2, 2)},
     r"max_pool2d_grad: cotangent shape \[1, 1, 3, 2\] differs .*\[1, 1, 3, 3\]"),
    ("max_pool2d_grad", [((1, 1, 6, 6), "f32"), ((1, 1, 3, 3), "f64")], {"kernel": (2, 2),
     "stride": (2, 2)}, r"max_pool2d_grad: cotangent dtype f64"),
    ("avg_pool2d_grad", [((1, 1, 3, 3), "i64")], {"input_shape": (1, 1, 6, 6), "kernel": (2, 2),
     "stride": (2, 2)}, r"avg_pool2d_grad: cotangent must be f32 or f64"),
    ("adaptive_avg_pool2d_grad", [((1, 2, 3, 3), "f32")], {"input_shape": (1, 3, 6, 6)},
     r"adaptive_avg_pool2d_grad: cotangent shape \[1, 2, 3, 3\]"),
    ("scatter_add", [((4, 3), "f32"), ((4,), "f32")], {"size": 5},
     r"scatter_add: indices must be i32 or i64"),
    ("scatter_add", [((4, 3), "f32"), ((3,), "i64")], {"size": 5, "axis": 0},
     r"scatter_add: cotangent dimensions \[4\] at axis 0 differ .* \[3\]"),
])
def test_shape_errors_name_the_op(op: str, types, attrs, message: str) -> None:
    from ember.ir.types import DType

    tensor_types = [TensorType(DType(dtype), shape) for shape, dtype in types]
    with pytest.raises(ember.errors.ShapeError, match=message):
        _build(op, *tensor_types, **attrs)


# -- the gradient rules -------------------------------------------------------------------------


def _rule_graph(op: str, x: np.ndarray, *extra: np.ndarray, **attrs: object):
    """Forward node of `op` on inputs (x, *extra) and its rule's cotangents, in one graph whose
    inputs are x, extra and gy; also returns the forward output's type."""
    b = ember.GraphBuilder(op)
    values = [b.input(TensorType.of(a), f"in{i}") for i, a in enumerate((x, *extra))]
    y = b.op(op, *values, **attrs)
    gy = b.input(y.type, "gy")
    grads = get_op(op).grad(b, b.nodes[-1], (gy,))
    assert len(grads) == len(values)
    for value, grad in zip(values, grads, strict=True):
        assert grad is None or grad.type == value.type
    return b, grads, y.type


def test_max_pool2d_rule() -> None:
    x, gy, dx, attrs = _max_problem("3x3-s2-pad-ceil")
    b, grads, _ = _rule_graph("max_pool2d", x, **attrs)
    (got,) = ember.interpret(b.build(grads), x, gy)
    np.testing.assert_allclose(got, dx, rtol=1e-12, atol=1e-12)


def test_avg_pool2d_rule() -> None:
    gy, dx, attrs = _avg_problem("3x3-s2-ceil-exclude")
    x = np.zeros(attrs.pop("input_shape"))
    b, grads, _ = _rule_graph("avg_pool2d", x, **attrs)
    (got,) = ember.interpret(b.build(grads), x, gy)
    np.testing.assert_allclose(got, dx, rtol=1e-12, atol=1e-12)


def test_adaptive_avg_pool2d_rule() -> None:
    shape, output_size = ADAPTIVE_CASES["uneven"]
    gy, dx, _ = _adaptive_problem("uneven")
    x = np.zeros(shape)
    b, grads, _ = _rule_graph("adaptive_avg_pool2d", x, output_size=output_size)
    (got,) = ember.interpret(b.build(grads), x, gy)
    np.testing.assert_allclose(got, dx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["middle-axis-2d-indices", "last-axis"])
def test_gather_rule(case: str) -> None:
    gy, indices, dx, attrs = _scatter_problem(case)
    data = np.zeros(dx.shape)
    b, grads, _ = _rule_graph("gather", data, indices, axis=attrs["axis"])
    assert grads[1] is None  # integer indices get no gradient
    (got,) = ember.interpret(b.build(grads[:1]), data, indices, gy)
    np.testing.assert_allclose(got, dx, rtol=1e-12, atol=1e-12)


def test_rules_without_a_cotangent_give_none() -> None:
    b = ember.GraphBuilder("none")
    x = b.input(TensorType.of(np.zeros((1, 1, 4, 4), np.float32)))
    indices = b.input(TensorType.of(np.zeros((2,), np.int64)))
    for op, inputs, attrs in [("max_pool2d", (x,), {"kernel": (2, 2)}),
                              ("avg_pool2d", (x,), {"kernel": (2, 2)}),
                              ("adaptive_avg_pool2d", (x,), {"output_size": (2, 2)}),
                              ("gather", (x, indices), {"axis": 2})]:
        b.op(op, *inputs, **attrs)
        assert get_op(op).grad(b, b.nodes[-1], (None,)) == (None,) * len(inputs)


def _second_order(op: str, first: np.ndarray, *extra: np.ndarray, **attrs: object):
    """The rule of backward op `op` (linear in its first input), run on a random cotangent gz:
    returns (gz, the rule's cotangent of the first input)."""
    b = ember.GraphBuilder(op)
    values = [b.input(TensorType.of(a)) for a in (first, *extra)]
    z = b.op(op, *values, **attrs)
    gz_value = b.input(z.type)
    grads = get_op(op).grad(b, b.nodes[-1], (gz_value,))
    assert grads[0].type == values[0].type and all(g is None for g in grads[1:])
    gz = np.random.default_rng(9).standard_normal(z.type.shape)
    (got,) = ember.interpret(b.build(grads[:1]), first, *extra, gz)
    return gz, got


def test_second_derivatives_are_the_forward_ops() -> None:
    """d/d(gy) <backward(gy), gz> is the forward op applied to gz, checked by torch's double
    backward for the average pools and with index_select for scatter_add."""
    gy, _, attrs = _avg_problem("3x3-s2-ceil-exclude")
    gz, got = _second_order("avg_pool2d_grad", gy, **attrs)
    pad = attrs["padding"][:2]
    expected = F.avg_pool2d(torch.from_numpy(gz), attrs["kernel"], attrs["stride"], pad,
                            ceil_mode=True, count_include_pad=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)

    gy, _, attrs = _adaptive_problem("uneven")
    gz, got = _second_order("adaptive_avg_pool2d_grad", gy, **attrs)
    expected = F.adaptive_avg_pool2d(torch.from_numpy(gz), gy.shape[2:]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)

    gy, indices, _, attrs = _scatter_problem("middle-axis-2d-indices")
    gz, got = _second_order("scatter_add", gy, indices, **attrs)
    picked = torch.from_numpy(gz).index_select(1, torch.from_numpy(indices.reshape(-1) % 4))
    np.testing.assert_allclose(got, picked.numpy().reshape(gy.shape), rtol=1e-12, atol=1e-12)
