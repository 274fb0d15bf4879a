"""The gradient rule of every op row, checked two independent ways: against float64 finite
differences (`ember.testing.gradcheck`, reference interpreter) and against torch.autograd, in
float64 through the interpreter and in float32 compiled at opt_level 3 (all the cases of an op
in one graph, one compile). Kinks (relu at 0, ties of maximum and max, abs at 0, clip at its
bounds) are checked against torch's conventions only: finite differences see one side there.

A row that has a gradient rule but no case here, or has no rule and no reason to be skipped,
fails `test_every_differentiable_op_has_cases`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ember  # noqa: E402
from ember.autodiff import NOT_DIFFERENTIABLE, GradientError  # noqa: E402
from ember.frontend.tracer import emit  # noqa: E402
from ember.ir.ops import OPS, get_op  # noqa: E402
from ember.testing import GradcheckError, gradcheck  # noqa: E402

F = torch.nn.functional

SKIPPED = {
    "const": "no inputs: nothing flows through it (every graph with a constant runs its rule)",
    "layout_convert": "layout ops are made by the layout pass, after autodiff",
    "conv2d_nchwc": "layout ops are made by the layout pass, after autodiff",
    "max_pool2d_nchwc": "layout ops are made by the layout pass, after autodiff",
    "avg_pool2d_nchwc": "layout ops are made by the layout pass, after autodiff",
    "max_pool2d_grad": "a backward op: second derivatives are not supported",
    "avg_pool2d_grad": "a backward op: second derivatives are not supported",
    "adaptive_avg_pool2d_grad": "a backward op: second derivatives are not supported",
    "scatter_add": "a backward op (of gather): second derivatives are not supported",
}


@dataclass(frozen=True)
class Case:
    """One function of ember tensors and its torch twin (same arguments), at inputs away from
    kinks. Integer and boolean inputs are passed through, never differentiated."""

    name: str
    ember: Callable[..., object]
    torch: Callable[..., object]
    inputs: tuple[np.ndarray, ...]


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(sum(map(ord, name)))


def normal(shape: tuple[int, ...], seed: str) -> np.ndarray:
    return _rng(seed).standard_normal(shape)


def positive(shape: tuple[int, ...], seed: str) -> np.ndarray:
    return _rng(seed).uniform(0.5, 2.0, shape)


def away_from_zero(shape: tuple[int, ...], seed: str) -> np.ndarray:
    """|x| >= 0.3: no sign change within a finite-difference step."""
    x = _rng(seed).standard_normal(shape)
    return np.where(x < 0, -1.0, 1.0) * (0.3 + np.abs(x))


def distinct(shape: tuple[int, ...], seed: str) -> np.ndarray:
    """Values at least 0.08 apart (no ties of max and min), in random order."""
    rng = _rng(seed)
    size = int(np.prod(shape))
    values = rng.permutation(size) * 0.1 - size * 0.05 + rng.uniform(0, 0.02, size)
    return values.reshape(shape)


def off_integers(offset: float) -> Callable[[tuple[int, ...], str], np.ndarray]:
    """k + offset + a little: away from the jumps of floor and ceil (offset 0.5) or round (0)."""

    def make(shape: tuple[int, ...], seed: str) -> np.ndarray:
        rng = _rng(seed)
        return rng.integers(-3, 3, shape) + offset + rng.uniform(-0.2, 0.2, shape)

    return make


def off_bounds(*bounds: float) -> Callable[[tuple[int, ...], str], np.ndarray]:
    """Normal values at least 0.05 from each bound."""

    def make(shape: tuple[int, ...], seed: str) -> np.ndarray:
        x = normal(shape, seed)
        for bound in bounds:
            near = np.abs(x - bound) < 0.05
            x = np.where(near, bound + 0.1 * np.where(x < bound, -1.0, 1.0), x)
        return x

    return make


SHAPES = [(2, 3, 5), (1,), (7, 5), ()]


def _op(op: str, **attrs: object) -> Callable[..., object]:
    return lambda *xs: emit(op, *xs, **attrs)


# -- elementwise ---------------------------------------------------------------------------


def unary(op: str, torch_fn, make=normal, shapes=SHAPES, **attrs) -> list[Case]:
    label = ",".join(f"{k}={v}" for k, v in attrs.items())
    return [Case(f"{op}{{{label}}}{list(s)}", _op(op, **attrs), torch_fn,
                 (make(s, f"{op}{label}{s}"),)) for s in shapes]


def _gelu_tanh(t):
    return F.gelu(t, approximate="tanh")


def _cast_cases() -> list[Case]:
    x = normal((7, 5), "cast")
    return [
        Case("cast-to-f64", _op("cast", dtype="f64"), lambda t: t.to(torch.float64), (x,)),
        # The integer round trip carries no gradient; the product rule's other term does.
        Case("cast-through-i32", lambda t: t * emit("cast", emit("cast", t * 3.0, dtype="i32"),
                                                      dtype="f64").astype(t.dtype),
             lambda t: t * (t * 3.0).to(torch.int32).to(t.dtype),
             (off_integers(0.5)((2, 3, 5), "cast-i32") / 3.0,)),
    ]


UNARY = {
    "neg": unary("neg", torch.neg),
    "abs": unary("abs", torch.abs, away_from_zero),
    "sign": unary("sign", torch.sign, away_from_zero),
    "exp": unary("exp", torch.exp),
    "log": unary("log", torch.log, positive),
    "sqrt": unary("sqrt", torch.sqrt, positive),
    "rsqrt": unary("rsqrt", torch.rsqrt, positive),
    "reciprocal": unary("reciprocal", torch.reciprocal, away_from_zero),
    "sin": unary("sin", torch.sin),
    "cos": unary("cos", torch.cos),
    "floor": unary("floor", torch.floor, off_integers(0.5)),
    "ceil": unary("ceil", torch.ceil, off_integers(0.5)),
    "round": unary("round", torch.round, off_integers(0.0)),
    "tanh": unary("tanh", torch.tanh),
    "sigmoid": unary("sigmoid", torch.sigmoid),
    "relu": unary("relu", torch.relu, away_from_zero),
    "silu": unary("silu", F.silu),
    "erf": unary("erf", torch.erf),
    "leaky_relu": unary("leaky_relu", lambda t: F.leaky_relu(t, 0.2), away_from_zero,
                        alpha=0.2),
    "gelu": unary("gelu", F.gelu, shapes=[(7, 5), (1,)])
    + unary("gelu", _gelu_tanh, shapes=[(2, 3, 5), ()], approximate="tanh"),
    "clip": unary("clip", lambda t: torch.clamp(t, -0.5, 0.7), off_bounds(-0.5, 0.7),
                  shapes=[(7, 5), (2, 3, 5)], min=-0.5, max=0.7)
    + unary("clip", lambda t: torch.clamp(t, min=0.25), off_bounds(0.25), shapes=[(7, 5)],
            min=0.25)
    + unary("clip", lambda t: torch.clamp(t, max=-0.25), off_bounds(-0.25), shapes=[(1,)],
            max=-0.25),
    "cast": _cast_cases(),
}

# Operand shapes that broadcast: [3,1] with [1,4], a scalar with a matrix, a row, odd sizes.
PAIRS = [((3, 1), (1, 4)), ((), (7, 5)), ((2, 3, 5), (5,)), ((1,), (1,)), ((7, 5), (7, 1))]


def binary(op: str, torch_fn, make_x=normal, make_y=normal) -> list[Case]:
    return [Case(f"{op}{list(sx)}{list(sy)}", _op(op), torch_fn,
                 (make_x(sx, f"{op}x{sx}{sy}"), make_y(sy, f"{op}y{sx}{sy}")))
            for sx, sy in PAIRS]


def _extreme_cases(op: str, torch_fn) -> list[Case]:
    """Operands that never tie: x from a grid, y half a step off it."""
    cases = []
    for sx, sy in PAIRS:
        x = np.round(normal(sx, f"{op}x{sx}") * 4) / 4
        y = np.round(normal(sy, f"{op}y{sy}") * 4) / 4 + 0.125
        cases.append(Case(f"{op}{list(sx)}{list(sy)}", _op(op), torch_fn, (x, y)))
    return cases


def _where_cases() -> list[Case]:
    cases = []
    for sc, sx, sy in [((7, 5), (7, 5), (7, 5)), ((3, 1), (1, 4), ()), ((2, 3, 5), (5,), (3, 1))]:
        cond = normal(sc, f"where{sc}") > 0
        cases.append(Case(f"where{list(sc)}{list(sx)}{list(sy)}", _op("where"), torch.where,
                          (cond, normal(sx, f"wx{sx}"), normal(sy, f"wy{sy}"))))
    return cases


BINARY = {
    "add": binary("add", torch.add),
    "sub": binary("sub", torch.sub),
    "mul": binary("mul", torch.mul),
    "div": binary("div", torch.div, normal, away_from_zero),
    "pow": [
        *binary("pow", torch.pow, positive, normal),
        # A negative base with a constant exponent (no gradient to the exponent: log(x)).
        Case("pow-negative-base", lambda x: emit("pow", x, 3.0), lambda t: torch.pow(t, 3.0),
             (away_from_zero((7, 5), "powi"),)),
    ],
    "maximum": _extreme_cases("maximum", torch.maximum),
    "minimum": _extreme_cases("minimum", torch.minimum),
    "where": _where_cases(),
}


# -- reductions ----------------------------------------------------------------------------

REDUCTIONS = [((2, 3, 5), (0, 2), False), ((7, 1), (1,), False), ((2, 3, 5), (1,), True),
              ((2, 3, 5), (0, 1, 2), False), ((7, 5), (0,), False), ((1,), (0,), True)]


def _torch_prod(t, axes: tuple[int, ...], keepdims: bool):
    for axis in sorted(axes, reverse=True):
        t = torch.prod(t, dim=axis, keepdim=keepdims)
    return t


def _torch_reduce(op: str):
    def reduce(t, axes, keepdims):
        if op == "prod":
            return _torch_prod(t, axes, keepdims)
        fn = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax, "min": torch.amin}[op]
        return fn(t, dim=axes, keepdim=keepdims)

    return reduce


def reduction(op: str, make=normal) -> list[Case]:
    cases = []
    for shape, axes, keepdims in REDUCTIONS:
        def torch_fn(t, axes=axes, keepdims=keepdims):
            return _torch_reduce(op)(t, axes, keepdims)

        cases.append(Case(f"{op}{list(shape)}{{axes={axes},keepdims={keepdims}}}",
                          _op(op, axes=axes, keepdims=keepdims), torch_fn,
                          (make(shape, f"{op}{shape}{axes}"),)))
    return cases


def _prod_with_zeros() -> list[Case]:
    """prod is linear in each element, so finite differences are exact at zeros too."""
    one_zero = away_from_zero((3, 5), "prod1")
    one_zero[1, 2] = 0.0
    two_zeros = away_from_zero((3, 5), "prod2")
    two_zeros[0, 1] = two_zeros[0, 4] = 0.0
    return [Case(f"prod-{name}", _op("prod", axes=(1,)),
                 lambda t: torch.prod(t, dim=1), (x,))
            for name, x in [("one-zero", one_zero), ("two-zeros", two_zeros)]]


def _prod_values(shape: tuple[int, ...], seed: str) -> np.ndarray:
    rng = _rng(seed)
    return rng.uniform(0.6, 1.4, shape) * np.where(rng.random(shape) < 0.3, -1.0, 1.0)


REDUCE = {
    "sum": reduction("sum"),
    "mean": reduction("mean"),
    "prod": reduction("prod", _prod_values) + _prod_with_zeros(),
    "max": reduction("max", distinct),
    "min": reduction("min", distinct),
}


# -- linear algebra and neural-network ops ---------------------------------------------------


def _matmul_cases() -> list[Case]:
    shapes = [((7, 5), (5, 3)), ((5,), (5, 3)), ((7, 5), (5,)), ((2, 3, 5), (5, 4)),
              ((2, 1, 3, 4), (3, 4, 2)), ((1, 1), (1, 1)), ((5,), (5,)), ((5,), (2, 5, 3)),
              ((2, 3, 5), (5,))]
    linear = Case("matmul-x@W.T", lambda x, w: emit("matmul", x, emit("transpose", w, perm=(1, 0))),
                  lambda x, w: x @ w.T, (normal((7, 5), "lin-x"), normal((3, 5), "lin-w")))
    cases = [Case(f"matmul{list(sa)}{list(sb)}", _op("matmul"), torch.matmul,
                  (normal(sa, f"ma{sa}"), normal(sb, f"mb{sb}"))) for sa, sb in shapes]
    return [cases[0], linear, *cases[1:]]  # a linear layer's x @ W.T has its own rule


def _conv_cases() -> list[Case]:
    x = normal((2, 3, 7, 6), "conv-x")
    return [
        Case("conv2d-s2-p1-bias", _op("conv2d", stride=(2, 2), padding=(1, 1, 1, 1)),
             lambda t, w, b: F.conv2d(t, w, b, stride=2, padding=1),
             (x, normal((4, 3, 3, 3), "conv-w"), normal((4,), "conv-b"))),
        Case("conv2d-depthwise-dilated", _op("conv2d", dilation=(2, 1), groups=3),
             lambda t, w: F.conv2d(t, w, dilation=(2, 1), groups=3),
             (x, normal((6, 1, 2, 3), "conv-dw"))),
    ]


def _pool_cases() -> dict[str, list[Case]]:
    x = distinct((2, 3, 7, 6), "pool")
    return {
        "max_pool2d": [
            Case("max_pool2d-k2-s2", _op("max_pool2d", kernel=(2, 2), stride=(2, 2)),
                 lambda t: F.max_pool2d(t, 2, 2), (x,)),
            Case("max_pool2d-k3-s1-p1-overlap",
                 _op("max_pool2d", kernel=(3, 3), padding=(1, 1, 1, 1)),
                 lambda t: F.max_pool2d(t, 3, 1, 1), (x,)),
        ],
        "avg_pool2d": [
            Case("avg_pool2d-k3-s2-p1", _op("avg_pool2d", kernel=(3, 3), stride=(2, 2),
                                            padding=(1, 1, 1, 1), count_include_pad=False),
                 lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False), (x,)),
            Case("avg_pool2d-k2-ceil", _op("avg_pool2d", kernel=(2, 2), stride=(2, 2),
                                           ceil_mode=True),
                 lambda t: F.avg_pool2d(t, 2, 2, ceil_mode=True), (x,)),
        ],
        "adaptive_avg_pool2d": [
            Case("adaptive_avg_pool2d-2x4", _op("adaptive_avg_pool2d", output_size=(2, 4)),
                 lambda t: F.adaptive_avg_pool2d(t, (2, 4)), (x,)),
        ],
    }


def _torch_batch_norm(t, mean, var, weight, bias):
    shape = (1, -1) + (1,) * (t.ndim - 2)
    scale = weight / torch.sqrt(var + 1e-5)
    return (t - mean.reshape(shape)) * scale.reshape(shape) + bias.reshape(shape)


def _norm_cases() -> dict[str, list[Case]]:
    return {
        "batch_norm": [
            Case(f"batch_norm{list(s)}", _op("batch_norm"), _torch_batch_norm,
                 (normal(s, f"bn{s}"), normal((s[1],), f"bnm{s}"), positive((s[1],), f"bnv{s}"),
                  normal((s[1],), f"bnw{s}"), normal((s[1],), f"bnb{s}")))
            for s in [(4, 3, 5), (2, 3, 2, 3), (1, 1)]
        ],
        "layer_norm": [
            Case(f"layer_norm{list(s)}{list(ws)}", _op("layer_norm"),
                 lambda t, w, b, ws=ws: F.layer_norm(t, ws, w, b, 1e-5),
                 (normal(s, f"ln{s}"), normal(ws, f"lnw{ws}"), normal(ws, f"lnb{ws}")))
            for s, ws in [((2, 3, 5), (5,)), ((7, 5), (7, 5)), ((2, 3, 5), (3, 5))]
        ],
        "softmax": [
            Case(f"softmax{list(s)}{{axis={a}}}", _op("softmax", axis=a),
                 lambda t, a=a: torch.softmax(t, a), (normal(s, f"sm{s}{a}"),))
            for s, a in [((7, 5), -1), ((2, 3, 5), 0), ((1,), 0), ((2, 3, 5), 1)]
        ],
        "log_softmax": [
            Case(f"log_softmax{list(s)}{{axis={a}}}", _op("log_softmax", axis=a),
                 lambda t, a=a: torch.log_softmax(t, a), (normal(s, f"lsm{s}{a}"),))
            for s, a in [((7, 5), -1), ((2, 3, 5), 0), ((1,), 0), ((2, 3, 5), 1)]
        ],
    }


def _dropout_cases() -> list[Case]:
    """torch multiplies by the mask that the forward's numpy reference draws (of ones)."""
    cases = []
    for shape, p in [((7, 5), 0.3), ((2, 3, 5), 0.5)]:
        attrs = {"p": p, "training": True, "seed": 11}
        mask = get_op("dropout").reference(np.ones(shape), **attrs)
        cases.append(Case(f"dropout{list(shape)}{{p={p}}}", _op("dropout", **attrs),
                          lambda t, mask=mask: t * torch.from_numpy(mask).to(t.dtype),
                          (normal(shape, f"do{shape}"),)))
    return cases


def _torch_take(t, indices, axis: int):
    return t[(slice(None),) * axis + (indices.long(),)]


def _gather_cases() -> list[Case]:
    rows = np.array([4, 0, -1, 4, 2], dtype=np.int64)  # a duplicate and a negative index
    cols = np.array([[1, 1], [0, -2], [4, 3]], dtype=np.int32)
    return [
        Case("gather-axis0-dup-neg", _op("gather", axis=0),
             lambda t, i: _torch_take(t, i, 0), (normal((7, 5), "g0"), rows)),
        Case("gather-axis1-2d", _op("gather", axis=1),
             lambda t, i: _torch_take(t, i, 1), (normal((2, 5, 3), "g1"), cols)),
    ]


NEURAL = {
    "matmul": _matmul_cases(),
    "matmul_nt": [Case("matmul_nt[7,5][3,5]", _op("matmul_nt"), lambda x, w: x @ w.T,
                       (normal((7, 5), "nt-x"), normal((3, 5), "nt-w")))],
    "conv2d": _conv_cases(),
    **_pool_cases(),
    **_norm_cases(),
    "dropout": _dropout_cases(),
    "gather": _gather_cases(),
}


# -- shape ops ----------------------------------------------------------------------------


def _torch_slice(t, starts, stops, steps):
    for axis, (start, stop, step) in enumerate(zip(starts, stops, steps, strict=True)):
        t = torch.index_select(t, axis, torch.arange(start, stop, step))
    return t


def _slice_case(shape, starts, stops, steps) -> Case:
    return Case(f"slice{list(shape)}{starts}:{stops}:{steps}",
                _op("slice", starts=starts, stops=stops, steps=steps),
                lambda t: _torch_slice(t, starts, stops, steps), (normal(shape, f"sl{starts}"),))


def _torch_pad(t, pads, value):
    ndim = t.ndim
    pairs = []
    for axis in reversed(range(ndim)):
        pairs += [pads[axis], pads[ndim + axis]]
    return F.pad(t, pairs, value=value)


def _torch_copy_pad(t, pads, mode: str):
    """Edge or reflect padding as torch.index_select with the index map that numpy's pad
    makes of arange (any axis; torch's own pads only the last ones)."""
    for axis in range(t.ndim):
        before, after = pads[axis], pads[t.ndim + axis]
        source = np.pad(np.arange(t.shape[axis]), (before, after), mode=mode)
        t = torch.index_select(t, axis, torch.from_numpy(source))
    return t


def _copy_pad_cases() -> list[Case]:
    small = normal((7, 5), "pad-small")
    cases = [Case(f"pad-{mode}[7,5]", _op("pad", pads=(2, 1, 3, 2), mode=mode),
                  lambda t, mode=mode: _torch_copy_pad(t, (2, 1, 3, 2), mode), (small,))
             for mode in ("reflect", "edge")]
    x = normal((2, 3, 5, 4), "pad-copy")
    for mode in ("reflect", "edge"):
        pads = (0, 2, 1, 3, 0, 0, 4, 2)  # reflect: under each axis's size
        cases.append(Case(f"pad-{mode}", _op("pad", pads=pads, mode=mode),
                          lambda t, pads=pads, mode=mode: _torch_copy_pad(t, pads, mode), (x,)))
    torch_modes = {"reflect": "reflect", "edge": "replicate"}
    for mode, torch_mode in torch_modes.items():  # rows 2, 1 and columns 1, 3; torch's own pad
        cases.append(Case(f"pad-{mode}-F.pad", _op("pad", pads=(0, 0, 2, 1, 0, 0, 1, 3), mode=mode),
                          lambda t, m=torch_mode: F.pad(t, (1, 3, 2, 1), mode=m), (x,)))
    return cases


def _split_case() -> Case:
    def ember_fn(x):
        a, _, c = emit("split", x, axis=1, sizes=(2, 1, 2))
        return emit("concat", c * 2.0, a, axis=1)  # the middle part gets no gradient

    def torch_fn(t):
        a, _, c = torch.split(t, (2, 1, 2), dim=1)
        return torch.cat([c * 2.0, a], dim=1)

    return Case("split-unused-part", ember_fn, torch_fn, (normal((3, 5, 2), "split"),))


SHAPE_OPS = {
    "reshape": [Case("reshape[2,3,5]->[6,5]", _op("reshape", shape=(6, 5)),
                     lambda t: t.reshape(6, 5), (normal((2, 3, 5), "rs"),)),
                Case("reshape[1]->[]", _op("reshape", shape=()), lambda t: t.reshape(()),
                     (normal((1,), "rs1"),))],
    "transpose": [Case("transpose(2,0,1)", _op("transpose", perm=(2, 0, 1)),
                       lambda t: t.permute(2, 0, 1), (normal((2, 3, 5), "tr"),)),
                  Case("transpose(1,0)", _op("transpose", perm=(1, 0)), lambda t: t.T,
                       (normal((7, 5), "tr2"),))],
    "broadcast_to": [Case(f"broadcast_to{list(s)}->{list(t)}", _op("broadcast_to", shape=t),
                          lambda x, t=t: x.broadcast_to(t), (normal(s, f"bt{s}"),))
                     for s, t in [((3, 1), (2, 3, 4)), ((), (7, 5)), ((5,), (2, 3, 5))]],
    "expand_dims": [Case("expand_dims(0,2)", _op("expand_dims", axes=(0, 2)),
                         lambda t: t.unsqueeze(0).unsqueeze(2), (normal((7, 5), "ed"),))],
    "squeeze": [Case("squeeze(0,2)", _op("squeeze", axes=(0, 2)),
                     lambda t: t.squeeze(2).squeeze(0), (normal((1, 7, 1, 5), "sq"),))],
    "flatten": [Case("flatten(1)", _op("flatten", start_dim=1), lambda t: t.flatten(1),
                     (normal((2, 3, 5), "fl"),)),
                Case("flatten(0,1)", _op("flatten", start_dim=0, end_dim=1),
                     lambda t: t.flatten(0, 1), (normal((2, 3, 5), "fl2"),))],
    "concat": [Case("concat-axis1", _op("concat", axis=1), lambda *ts: torch.cat(ts, 1),
                    (normal((2, 1, 5), "c1"), normal((2, 3, 5), "c2"), normal((2, 2, 5), "c3"))),
               Case("concat-one", _op("concat", axis=0), lambda t: torch.cat([t], 0),
                    (normal((7, 5), "c4"),))],
    "split": [_split_case()],
    "slice": [_slice_case((7, 5), (1, 0), (6, 5), (2, 1)),
              _slice_case((2, 3, 5), (0, 2, 4), (2, -1, 0), (1, -1, -2)),
              _slice_case((7, 5), (6, 4), (-1, -1), (-3, -4))],
    "pad": [*_copy_pad_cases(),
            Case("pad-constant", _op("pad", pads=(1, 0, 2, 3), value=0.5),
                 lambda t: _torch_pad(t, (1, 0, 2, 3), 0.5), (normal((7, 5), "pad"),)),
            Case("pad-3d", _op("pad", pads=(0, 1, 2, 1, 0, 1)),
                 lambda t: _torch_pad(t, (0, 1, 2, 1, 0, 1), 0.0), (normal((2, 3, 5), "pad3"),))],
}

# -- resampling, sorting, fmod -----------------------------------------------------------------


def _grid_case(name: str, shape: tuple[int, ...], grid: tuple[int, ...], padding: str,
               align: bool) -> Case:
    return Case(name, _op("grid_sample", mode="linear", padding=padding, align_corners=align,
                          convention="torch"),
                lambda x, g: F.grid_sample(x, g, mode="bilinear", padding_mode=padding,
                                           align_corners=align),
                (normal(shape, name), _rng(name + "grid").uniform(-1.2, 1.2, grid)))


RESAMPLE = {
    "resize": [
        Case("resize-bicubic[2,3,5,6]->[7,4]",
             _op("resize", sizes=(2, 3, 7, 4), scales=(1.0, 1.0, 7 / 5, 4 / 6), mode="cubic"),
             lambda x: F.interpolate(x, size=(7, 4), mode="bicubic"), (normal((2, 3, 5, 6), "rz"),)),
        Case("resize-bilinear-antialias[2,3,5,6]->[2,3]",
             _op("resize", sizes=(2, 3, 2, 3), scales=(1.0, 1.0, 2 / 5, 3 / 6), mode="linear",
                 antialias=True, exclude_outside=True),
             lambda x: F.interpolate(x, size=(2, 3), mode="bilinear", antialias=True),
             (normal((2, 3, 5, 6), "rz-aa"),)),
        Case("resize-nearest[2,3,5,6]->[10,3]",
             _op("resize", sizes=(2, 3, 10, 3), scales=(1.0, 1.0, 2.0, 0.5), mode="nearest",
                 coordinate_mode="asymmetric", nearest_mode="floor"),
             lambda x: F.interpolate(x, size=(10, 3), mode="nearest"),
             (normal((2, 3, 5, 6), "rz-n"),)),
    ],
    "grid_sample": [_grid_case("grid_sample-reflection", (2, 3, 5, 6), (2, 4, 3, 2),
                               "reflection", False),
                    _grid_case("grid_sample-border-align", (1, 2, 4, 5), (1, 3, 3, 2),
                               "border", True)],
    "topk": [Case("topk-values[4,9]", lambda x: emit("topk", x, k=3, axis=1, largest=True)[0],
                  lambda x: torch.topk(x, 3, dim=1)[0], (normal((4, 9), "tk"),))],
    "fmod": [Case("fmod[7,5]", _op("fmod"), torch.fmod,
                  (normal((7, 5), "fm") * 3, positive((7, 5), "fm2")))],
}

CASES: dict[str, list[Case]] = {**UNARY, **BINARY, **REDUCE, **NEURAL, **SHAPE_OPS,
                                 **RESAMPLE}

# How many of an op's cases compile at opt_level 3: the first (an odd shape); two for binary
# ops (broadcast [3,1] with [1,4], a scalar with a matrix), matmul (x @ W.T) and pad (reflect
# and edge). LLVM's time is most of this file's; conv2d's backward takes seconds per case, and
# tests/autodiff/test_grad_conv.py compiles the cases of its paths.
COMPILED = {**{op: 2 for op in BINARY}, "matmul": 2, "pad": 2, "conv2d": 0}


# -- kinks: torch's conventions (finite differences see one side) ------------------------------


def _kink_cases() -> list[Case]:
    grid = np.array([[-1.0, 0.0, 0.5, 0.0, 2.0], [0.0, -0.5, 0.0, 1.5, -2.0]])
    other = np.array([[-1.0, 0.5, 0.5, 0.0, 1.0], [0.0, -0.5, 1.0, 1.5, -3.0]])
    row_ties = np.array([[1.0, 3.0, 3.0, -1.0], [2.0, 2.0, 2.0, 2.0], [0.0, -1.0, 0.0, -1.0]])
    return [
        Case("relu-at-0", _op("relu"), torch.relu, (grid,)),
        Case("abs-at-0", _op("abs"), torch.abs, (grid,)),
        Case("leaky_relu-at-0", _op("leaky_relu", alpha=0.1),
             lambda t: F.leaky_relu(t, 0.1), (grid,)),
        Case("maximum-ties", _op("maximum"), torch.maximum, (grid, other)),
        Case("minimum-ties", _op("minimum"), torch.minimum, (grid, other)),
        Case("max-ties-axis", _op("max", axes=(1,)), lambda t: torch.amax(t, 1), (row_ties,)),
        Case("max-ties-all", _op("max", axes=(0, 1)), torch.amax, (row_ties,)),
        Case("min-ties-axis", _op("min", axes=(1,)), lambda t: torch.amin(t, 1), (row_ties,)),
        Case("clip-at-bounds", _op("clip", min=-0.5, max=0.5),
             lambda t: torch.clamp(t, -0.5, 0.5), (grid,)),
        Case("sqrt-of-grid", _op("sqrt"), torch.sqrt, (np.abs(grid) + 0.5,)),
    ]


KINKS = _kink_cases()


# -- running a batch of cases -------------------------------------------------------------


def _is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating)


def _cotangent(case: Case, index: int) -> np.ndarray:
    """A random cotangent of the case's result (its shape from torch's forward)."""
    tensors = [torch.from_numpy(np.asarray(a)) for a in case.inputs]
    shape = tuple(case.torch(*tensors).shape)
    return np.random.default_rng(index).standard_normal(shape)


def _torch_grads(case: Case, u: np.ndarray, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """d <torch(x), u> / d x for the floating-point inputs, in float64."""
    tensors = [torch.from_numpy(np.asarray(a, dtype=np.float64 if _is_float(a) else a.dtype))
               .requires_grad_(_is_float(a)) for a in inputs]
    out = case.torch(*tensors)
    loss = (out.to(torch.float64) * torch.from_numpy(u)).sum()
    wrt = [t for t in tensors if t.requires_grad]
    return [g.numpy() for g in torch.autograd.grad(loss, wrt)]


def _batched(cases: list[Case]) -> Callable[..., object]:
    """One scalar function of every case's inputs and cotangent: the sum of <case(x), u>."""
    counts = [len(case.inputs) + 1 for case in cases]

    def loss(*flat):
        total, start = None, 0
        for case, count in zip(cases, counts, strict=True):
            *xs, u = flat[start : start + count]
            start += count
            term = (case.ember(*xs) * u).sum()
            total = term if total is None else total + term
        return total

    return loss


def _check_against_torch(cases: list[Case], dtype: type, opt_level: int, rtol: float) -> None:
    """Every case's gradient in one ember.value_and_grad call against torch.autograd."""
    flat, argnums, expected = [], [], []
    for index, case in enumerate(cases):
        inputs = tuple(a.astype(dtype) if _is_float(a) else a for a in case.inputs)
        u = _cotangent(case, index)
        for a in inputs:
            if _is_float(a):
                argnums.append(len(flat))
            flat.append(a)
        flat.append(u.astype(dtype))
        grads = _torch_grads(case, u.astype(dtype).astype(np.float64), inputs)
        expected += [(case.name, i, g) for i, g in enumerate(grads)]
    _, got = ember.value_and_grad(_batched(cases), argnums=tuple(argnums),
                                  opt_level=opt_level)(*flat)
    for (name, i, want), have in zip(expected, got, strict=True):
        assert have.dtype == dtype and have.shape == want.shape, (name, i, have.dtype, have.shape)
        scale = float(np.max(np.abs(want), initial=0.0))
        np.testing.assert_allclose(have, want, rtol=rtol, atol=rtol * max(scale, 1e-3),
                                   err_msg=f"{name}: gradient of input {i} at opt_level "
                                           f"{opt_level} ({np.dtype(dtype)})")


# -- tests ------------------------------------------------------------------------------------


def test_every_differentiable_op_has_cases() -> None:
    """Every row is differentiable and covered, not differentiable, or skipped for a reason."""
    problems = []
    for name, opdef in OPS.items():
        if opdef.grad is NOT_DIFFERENTIABLE:
            continue
        if name in SKIPPED:
            continue
        if opdef.grad is None:
            problems.append(f"{name}: no gradient rule (give it one, mark it NOT_DIFFERENTIABLE, "
                            "or add it to SKIPPED with a reason)")
        elif name not in CASES:
            problems.append(f"{name}: has a gradient rule but no case in this file")
    stale = sorted(set(CASES) - set(OPS)) + sorted(set(SKIPPED) - set(OPS))
    problems += [f"{name}: not a registered op" for name in stale]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("op", sorted(CASES))
def test_gradcheck_float64(op: str) -> None:
    """Finite differences in float64 through the reference interpreter."""
    for case in CASES[op]:
        gradcheck(case.ember, *case.inputs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("op", sorted(CASES))
def test_against_torch(op: str) -> None:
    """torch.autograd in float64 (interpreter, every case) and in float32 at opt_level 3 (the
    first cases: see COMPILED), all of them in one graph each."""
    _check_against_torch(CASES[op], np.float64, opt_level=0, rtol=1e-9)
    compiled = CASES[op][: COMPILED.get(op, 1)]
    if compiled:
        _check_against_torch(compiled, np.float32, opt_level=3, rtol=1e-4)


def test_kink_conventions_match_torch() -> None:
    """relu'(0) = 0, abs'(0) = 0, leaky_relu'(0) = alpha, maximum and minimum ties split in
    halves, max and min reductions share ties evenly, clip passes the gradient at its bounds."""
    _check_against_torch(KINKS, np.float64, opt_level=0, rtol=1e-12)
    _check_against_torch(KINKS, np.float32, opt_level=3, rtol=1e-6)


# -- gradcheck itself ----------------------------------------------------------------------


def _wrong_sin(b, node, gys):
    return (b.mul(gys[0], b.sin(node.inputs[0])),)  # sin' is cos, not sin


def test_gradcheck_reports_a_wrong_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(OPS, "sin", dataclasses.replace(OPS["sin"], grad=_wrong_sin))
    x, w = normal((3, 4), "gc-x"), normal((4, 2), "gc-w")

    def fn(x, w):
        return emit("sin", x @ w)

    with pytest.raises(GradcheckError, match=r"input 0 \(x: float64\[3, 4\]\), direction 0"):
        gradcheck(fn, x, w)
    with pytest.raises(AssertionError, match="finite differences give"):
        gradcheck(fn, x, w, argnums=1)
    assert gradcheck(fn, x, w, raise_exception=False) is False


def test_gradcheck_passes_integer_inputs_through() -> None:
    data, rows = normal((5, 3), "gc-data"), np.array([0, 4, 4, -1])
    assert gradcheck(lambda d, i: emit("gather", d, i, axis=0).tanh(), data, rows)
    with pytest.raises(GradientError, match="input 1 is int64"):
        gradcheck(lambda d, i: emit("gather", d, i, axis=0), data, rows, argnums=1)


def test_gradcheck_at_several_opt_levels_and_float32_inputs() -> None:
    """float32 inputs are checked in float64; opt_level 3 compiles the float64 backward."""
    x = normal((4, 6), "gc-levels").astype(np.float32)
    assert gradcheck(lambda x: emit("softmax", x, axis=-1) * x, x, opt_levels=(0, 3),
                     directions=2)


def test_gradcheck_rejects_tuple_results() -> None:
    with pytest.raises(GradientError, match="must return one tensor"):
        gradcheck(lambda x: (x, x), normal((2,), "gc-tuple"))
