"""Every registered op, run through every executor, against an independent computation.

Each `Case` builds a one-node graph with GraphBuilder and states what the result must be with
an expression that does not use the op's numpy reference: per-element Python math (`math.erf`,
`math.floor`, `round`, integer arithmetic), explicit loops for the windowed ops, float64 numpy
formulas, or PyTorch (cases marked `torch=True` skip when it is not installed).
`test_every_op_has_a_case` fails when an op is registered without a case.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ember
import ember.ops  # registers every op
from ember.ir.attrs import Const
from ember.ir.graph import Graph, GraphBuilder
from ember.ir.ops import OPS, get_op
from ember.ir.types import DType, TensorType

Executor = Callable[..., tuple[np.ndarray, ...]]  # the `executor` fixture: (graph, *arrays)
F32, F64, I32, I64, BOOL = DType.F32, DType.F64, DType.I32, DType.I64, DType.BOOL

_rng = np.random.default_rng(20240611)


def floats(
    *shape: int, low: float = -3.0, high: float = 3.0, dtype: type = np.float32
) -> np.ndarray:
    """Seeded uniform floats."""
    return _rng.uniform(low, high, size=shape).astype(dtype)


def ints(*shape: int, low: int = -9, high: int = 10, dtype: type = np.int32) -> np.ndarray:
    """Seeded integers in [low, high)."""
    return _rng.integers(low, high, size=shape).astype(dtype)


def bools(*shape: int) -> np.ndarray:
    """Seeded booleans."""
    return _rng.random(size=shape) < 0.5


def nonzero(*shape: int, dtype: type = np.float32) -> np.ndarray:
    """Seeded floats with magnitude in [0.25, 3] and either sign."""
    magnitude = _rng.uniform(0.25, 3.0, size=shape)
    return (magnitude * _rng.choice([-1.0, 1.0], size=shape)).astype(dtype)


@dataclass(frozen=True)
class Case:
    """One op applied to concrete inputs, and the result an independent computation expects."""

    op: str
    inputs: tuple[np.ndarray, ...]
    expected: Callable[..., np.ndarray | tuple[np.ndarray, ...]]  # called with `inputs`
    attrs: dict[str, object] = field(default_factory=dict)
    dtype: DType | None = None  # result dtype; default: the first input's
    name: str = ""
    torch: bool = False  # `expected` needs PyTorch
    layouts: tuple[str, ...] = ()  # layout of each input type; default row-major

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}" if self.name else self.op

    @property
    def result_dtype(self) -> DType:
        return self.dtype or DType.from_numpy(self.inputs[0].dtype)


CASES: list[Case] = []


def case(
    op: str,
    *inputs: np.ndarray,
    expected: Callable[..., object],
    label: str,
    result: DType | None = None,
    torch: bool = False,
    layouts: tuple[str, ...] = (),
    **attrs: object,
) -> None:
    """Add a case to CASES; keyword arguments other than these are the op's attributes."""
    CASES.append(
        Case(
            op,
            inputs,
            expected,
            attrs,
            result,
            label,
            torch,  # type: ignore[arg-type]
            layouts,
        )
    )


def per_element(fn: Callable[..., object], otype: type = np.float64) -> Callable[..., np.ndarray]:
    """`fn` on Python scalars, applied to broadcast arrays element by element."""

    def apply(*arrays: np.ndarray) -> np.ndarray:
        scalars = [a.astype(object) for a in arrays]  # Python int/float/bool, not numpy scalars
        return np.vectorize(fn, otypes=[otype])(*scalars)

    return apply


def with_torch(fn: Callable[..., object]) -> Callable[..., np.ndarray]:
    """`fn(torch, *float64_tensors)` as an expected-value function returning numpy."""

    def apply(*arrays: np.ndarray) -> np.ndarray:
        torch = pytest.importorskip("torch")
        tensors = [torch.from_numpy(np.array(a, dtype=np.float64)) for a in arrays]
        return fn(torch, *tensors).numpy()

    return apply


def _avg_pool_grad_torch(t, gy):
    x = t.zeros(2, 3, 6, 6, dtype=t.float64, requires_grad=True)
    y = t.nn.functional.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    return t.autograd.grad(y, x, gy)[0]


def _adaptive_grad_torch(t, gy):
    x = t.zeros(2, 3, 5, 7, dtype=t.float64, requires_grad=True)
    return t.autograd.grad(t.nn.functional.adaptive_avg_pool2d(x, (2, 3)), x, gy)[0]


# ---------------------------------------------------------------------------------------------
# Elementwise unary ops: Python's math module, one element at a time.


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _gelu_erf(v: float) -> float:
    return 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))


def _gelu_tanh(v: float) -> float:
    return 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))


def between(low: float, high: float, grid: float = 0.0) -> Callable[..., np.ndarray]:
    """Input generator: uniform floats in [low, high), snapped to multiples of `grid` if set."""

    def make(*shape: int, dtype: type) -> np.ndarray:
        values = floats(*shape, low=low, high=high, dtype=np.float64)
        return (np.round(values / grid) * grid if grid else values).astype(dtype)

    return make


# name -> (scalar function, input generator `(*shape, dtype=...)`)
UNARY_FLOAT: dict[str, tuple[Callable[[float], float], Callable[..., np.ndarray]]] = {
    "neg": (lambda v: -v, floats),
    "abs": (abs, floats),
    "sign": (lambda v: float((v > 0) - (v < 0)), between(-2, 2, grid=1.0)),
    "exp": (math.exp, between(-5, 5)),
    "log": (math.log, between(0.05, 20)),
    "sqrt": (math.sqrt, between(0.0, 20)),
    "rsqrt": (lambda v: 1 / math.sqrt(v), between(0.05, 20)),
    "reciprocal": (lambda v: 1 / v, nonzero),
    "sin": (math.sin, between(-7, 7)),
    "cos": (math.cos, between(-7, 7)),
    "floor": (math.floor, between(-3, 3, grid=0.25)),  # integers included
    "ceil": (math.ceil, between(-3, 3, grid=0.25)),
    "round": (round, between(-3, 3, grid=0.5)),  # ties: half to even, as Python's round
    "tanh": (math.tanh, floats),
    "sigmoid": (_sigmoid, between(-12, 12)),
    "relu": (lambda v: max(v, 0.0), floats),
    "silu": (lambda v: v * _sigmoid(v), between(-12, 12)),
    "erf": (math.erf, floats),
}

for _op, (_fn, _make) in UNARY_FLOAT.items():
    case(_op, _make(7, 13, dtype=np.float32), expected=per_element(_fn), label="f32[7,13]")
    case(_op, _make(3, 4, dtype=np.float64), expected=per_element(_fn), label="f64[3,4]")
    case(_op, _make(0, 3, dtype=np.float32), expected=per_element(_fn), label="f32[0,3]")
    case(_op, _make(dtype=np.float32), expected=per_element(_fn), label="f32[]")

for _op, _fn in {
    "neg": lambda v: -v,
    "abs": abs,
    "sign": lambda v: (v > 0) - (v < 0),
    "relu": lambda v: max(v, 0),
}.items():
    case(_op, ints(5, 6), expected=per_element(_fn, np.int64), label="i32")
    case(_op, ints(4, dtype=np.int64), expected=per_element(_fn, np.int64), label="i64")

case("logical_not", bools(3, 5), expected=per_element(lambda v: not v, bool), label="bool")

# Values at the edges of the domains: inf and nan are results, not errors.
_SPECIAL = np.array([0.0, -1.0, np.inf, -np.inf, np.nan], dtype=np.float32)
_nan, _inf = math.nan, math.inf
for _op, _values in {
    "log": [-_inf, _nan, _inf, _nan, _nan],
    "sqrt": [0.0, _nan, _inf, _nan, _nan],
    "reciprocal": [_inf, -1.0, 0.0, -0.0, _nan],
    "exp": [1.0, math.exp(-1.0), _inf, 0.0, _nan],
    "sigmoid": [0.5, _sigmoid(-1.0), 1.0, 0.0, _nan],
    "tanh": [0.0, math.tanh(-1.0), 1.0, -1.0, _nan],
    "relu": [0.0, 0.0, _inf, 0.0, _nan],
}.items():
    case(_op, _SPECIAL, expected=lambda x, v=_values: np.array(v), label="special-values")

# Large magnitudes must not overflow intermediate results.
case(
    "sigmoid",
    np.array([-100.0, 100.0, -80.0], np.float32),
    expected=per_element(_sigmoid),
    label="large-magnitude",
)
case(
    "round",
    np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5], np.float32),
    expected=lambda x: np.array([-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 4.0]),
    label="half-to-even",
)

case(
    "leaky_relu",
    floats(7, 13),
    expected=per_element(lambda v: v if v >= 0 else 0.01 * v),
    label="default-alpha",
)
case(
    "leaky_relu",
    floats(3, 4, dtype=np.float64),
    expected=per_element(lambda v: v if v >= 0 else 0.2 * v),
    label="f64-alpha",
    alpha=0.2,
)
case(
    "leaky_relu",
    np.array([-250, -99, -3, 0, 7], np.int32),
    expected=lambda x: np.array([-2, 0, 0, 0, 7]),
    label="i32-truncates",
    alpha=0.01,
)

for _approximate, _fn in (("none", _gelu_erf), ("tanh", _gelu_tanh)):
    case(
        "gelu",
        floats(7, 13, low=-5, high=5),
        expected=per_element(_fn),
        label=f"{_approximate}-math",
        approximate=_approximate,
    )
    case(
        "gelu",
        floats(4, 5, low=-5, high=5, dtype=np.float64),
        expected=with_torch(lambda t, x, a=_approximate: t.nn.functional.gelu(x, approximate=a)),
        label=f"{_approximate}-torch",
        approximate=_approximate,
        torch=True,
    )
case("gelu", floats(3), expected=per_element(_gelu_erf), label="default-is-erf")

case(
    "clip",
    floats(7, 13),
    expected=per_element(lambda v: min(max(v, -1.0), 0.5)),
    label="both",
    min=-1.0,
    max=0.5,
)
case("clip", floats(5), expected=per_element(lambda v: max(v, 0.25)), label="min-only", min=0.25)
case(
    "clip",
    floats(5, dtype=np.float64),
    expected=per_element(lambda v: min(v, -0.5)),
    label="max-only",
    max=-0.5,
)
case("clip", floats(4), expected=lambda x: x.astype(np.float64), label="no-bounds")
case(
    "clip",
    ints(4, 5),
    expected=per_element(lambda v: min(max(v, -2), 3), np.int64),
    label="i32",
    min=-2,
    max=3,
)

# cast: Python's own conversions (int() truncates toward zero, bool() tests for nonzero).
_CASTS = [
    (floats(6, 7, low=-50, high=50), "i32", per_element(int, np.int64), I32),
    (floats(6, low=-50, high=50, dtype=np.float64), "i64", per_element(int, np.int64), I64),
    (np.array([0.0, -0.0, 0.5, -2.0, np.nan], np.float32), "bool", per_element(bool, bool), BOOL),
    (ints(3, 4), "f32", per_element(float), F32),
    (ints(3, dtype=np.int64), "i32", per_element(int, np.int64), I32),
    (bools(2, 3), "f64", per_element(float), F64),
    (bools(5), "i32", per_element(int, np.int64), I32),
    (floats(3, 3, dtype=np.float64), "f32", per_element(float), F32),
    (floats(4), "f32", per_element(float), F32),
]
for _index, (_x, _dtype, _fn, _result) in enumerate(_CASTS):
    case(
        "cast",
        _x,
        expected=_fn,
        label=f"{_x.dtype}-to-{_dtype}-{_index}",
        result=_result,
        dtype=_dtype,
    )

case(
    "where",
    bools(7, 1),
    floats(1, 13),
    floats(),
    label="broadcast",
    result=F32,
    expected=per_element(lambda c, a, b: a if c else b),
)
case(
    "where",
    bools(3, 4),
    ints(3, 4),
    ints(4),
    label="i32",
    result=I32,
    expected=per_element(lambda c, a, b: a if c else b, np.int64),
)
case(
    "where",
    bools(0, 2),
    floats(0, 2),
    floats(2),
    label="zero-size",
    result=F32,
    expected=per_element(lambda c, a, b: a if c else b),
)

# ---------------------------------------------------------------------------------------------
# Elementwise binary ops: Python arithmetic element by element, numpy broadcasting.


def _trunc_div(a: int, b: int) -> int:
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


BINARY_FLOAT: dict[str, Callable[[float, float], object]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": math.pow,
    "maximum": max,
    "minimum": min,
}
COMPARISONS: dict[str, Callable[[object, object], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}
LOGICAL: dict[str, Callable[[bool, bool], bool]] = {
    "logical_and": lambda a, b: a and b,
    "logical_or": lambda a, b: a or b,
    "logical_xor": lambda a, b: a != b,
}

# Shape pairs: equal, trailing vector, size-1 dims on both sides, rank mismatch, scalars, zero
# sizes, odd sizes.
BROADCAST_SHAPES = [
    ((7, 13), (7, 13)),
    ((7, 13), (13,)),
    ((7, 1), (1, 13)),
    ((2, 1, 3), (4, 1)),
    ((), (3, 4)),
    ((3, 4), ()),
    ((), ()),
    ((0, 3), (1, 3)),
    ((5, 1), (0,)),
    ((1,), (5,)),
]


def _operands(
    op: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...], dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    if op == "pow":  # positive bases keep every real power real
        return floats(*shape_a, low=0.1, high=3, dtype=dtype), floats(*shape_b, dtype=dtype)
    if op == "div":
        return floats(*shape_a, dtype=dtype), nonzero(*shape_b, dtype=dtype)
    return floats(*shape_a, dtype=dtype), floats(*shape_b, dtype=dtype)


for _op, _fn in BINARY_FLOAT.items():
    for _shape_a, _shape_b in BROADCAST_SHAPES:
        _a, _b = _operands(_op, _shape_a, _shape_b, np.float32)
        case(
            _op, _a, _b, expected=per_element(_fn), label=f"f32{list(_shape_a)}-f32{list(_shape_b)}"
        )
    case(_op, *_operands(_op, (3, 4), (4,), np.float64), expected=per_element(_fn), label="f64")

BINARY_INT: dict[str, Callable[[int, int], int]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": _trunc_div,
    "maximum": max,
    "minimum": min,
}
for _op, _fn in BINARY_INT.items():
    _b = ints(6, low=1, high=5) * np.array([1, -1, 1, -1, 1, -1], np.int32)
    case(_op, ints(4, 6, low=-20, high=20), _b, expected=per_element(_fn, np.int64), label="i32")
    case(
        _op,
        ints(3, low=-20, high=20, dtype=np.int64),
        np.array(3, np.int64),
        expected=per_element(_fn, np.int64),
        label="i64-scalar",
    )

case(
    "div",
    np.array([7, -7, 7, -7, 6, -6, 0, 1], np.int32),
    np.array([2, 2, -2, -2, 3, 3, -5, -1], np.int32),
    label="truncates-toward-zero",
    expected=lambda a, b: np.array([3, -3, -3, 3, 2, -2, 0, -1]),
)
case(
    "div",
    np.array([1.0, -1.0, 0.0], np.float32),
    np.array([0.0, 0.0, 0.0], np.float32),
    label="float-by-zero",
    expected=lambda a, b: np.array([math.inf, -math.inf, math.nan]),
)
case(
    "pow",
    ints(3, 4, low=-4, high=5),
    ints(4, low=0, high=4),
    label="i32",
    expected=per_element(lambda a, b: a**b, np.int64),
)
case(
    "maximum",
    np.array([math.nan, 1.0, -0.5], np.float32),
    np.array([0.0, math.nan, 2.0], np.float32),
    label="nan-propagates",
    expected=lambda a, b: np.array([math.nan, math.nan, 2.0]),
)
case(
    "minimum",
    np.array([math.nan, 1.0, -0.5], np.float32),
    np.array([0.0, math.nan, 2.0], np.float32),
    label="nan-propagates",
    expected=lambda a, b: np.array([math.nan, math.nan, -0.5]),
)

for _op, _fn in COMPARISONS.items():
    # Small integers stored as floats, so that ties occur.
    _a, _b = ints(7, 13, low=-2, high=3).astype(np.float32), ints(13, low=-2, high=3)
    case(
        _op,
        _a,
        _b.astype(np.float32),
        expected=per_element(_fn, bool),
        label="f32-ties",
        result=BOOL,
    )
    case(
        _op,
        ints(3, 1, low=-2, high=3, dtype=np.int64),
        ints(4, low=-2, high=3, dtype=np.int64),
        expected=per_element(_fn, bool),
        label="i64-broadcast",
        result=BOOL,
    )
    case(_op, floats(), floats(2, 3), expected=per_element(_fn, bool), label="scalar", result=BOOL)
    case(
        _op,
        np.array([math.nan, 1.0], np.float32),
        np.array([math.nan, math.nan], np.float32),
        expected=per_element(_fn, bool),
        label="nan",
        result=BOOL,
    )
for _op in ("eq", "ne"):
    case(
        _op,
        bools(3, 4),
        bools(4),
        expected=per_element(COMPARISONS[_op], bool),
        label="bool",
        result=BOOL,
    )
for _op, _fn in LOGICAL.items():
    case(_op, bools(5, 1), bools(1, 6), expected=per_element(_fn, bool), label="broadcast")
    case(_op, bools(0, 2), bools(), expected=per_element(_fn, bool), label="zero-size")


# The executor and check_result fixtures hold no state, so hypothesis may share them.
FIXTURES_ARE_STATELESS = [HealthCheck.function_scoped_fixture]


@settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=FIXTURES_ARE_STATELESS
)
@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
    op=st.sampled_from(["add", "sub", "mul", "maximum", "lt"]),
    seed=st.integers(0, 2**16),
)
def test_binary_ops_broadcast_like_numpy(
    shapes, op: str, seed: int, executor: Executor, check_result: Callable[..., None]
) -> None:
    """Random broadcastable shape pairs: the result has numpy's broadcast shape and values."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shapes.input_shapes[0]).astype(np.float32)
    b = rng.standard_normal(shapes.input_shapes[1]).astype(np.float32)
    fn = {**BINARY_FLOAT, **COMPARISONS}[op]
    dtype = BOOL if op == "lt" else F32
    expected = per_element(fn, bool if op == "lt" else np.float64)(a, b)
    (actual,) = executor(build_graph(Case(op, (a, b), lambda *_: None)), a, b)
    check_result(actual, expected, dtype, f"{op} {list(a.shape)} {list(b.shape)}")
    assert actual.shape == shapes.result_shape


# ---------------------------------------------------------------------------------------------
# Reductions: move the reduced axes last, then Python's fsum / prod / max / min per row.


def per_row(
    fn: Callable[[list], object], axes: tuple[int, ...], keepdims: bool, otype: type = np.float64
) -> Callable[[np.ndarray], np.ndarray]:
    """`fn` applied to the list of elements of each reduced group."""

    def apply(x: np.ndarray) -> np.ndarray:
        reduced = sorted(a % x.ndim for a in axes) if x.ndim else []
        kept = [a for a in range(x.ndim) if a not in reduced]
        kept_shape = tuple(x.shape[a] for a in kept)
        group = math.prod(x.shape[a] for a in reduced)
        rows = x.transpose(kept + reduced).reshape(math.prod(kept_shape), group)
        out = np.array([fn(row.tolist()) for row in rows], dtype=otype).reshape(kept_shape)
        if keepdims:
            out = out.reshape(tuple(1 if a in reduced else d for a, d in enumerate(x.shape)))
        return out

    return apply


def _mean(values: list) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def _first_index_of(best: Callable[..., object]) -> Callable[[list], int]:
    return lambda row: row.index(best(row))


REDUCTIONS: dict[str, tuple[Callable[[list], object], type]] = {
    "sum": (math.fsum, np.float64),
    "mean": (_mean, np.float64),
    "prod": (math.prod, np.float64),
    "max": (max, np.float64),
    "min": (min, np.float64),
}
REDUCE_AXES = [
    ((0,), False),
    ((1,), True),
    ((-1,), False),
    ((0, 1), False),
    ((0, -1), True),
    ((), False),
]
for _op, (_fn, _otype) in REDUCTIONS.items():
    _x = floats(7, 13, low=0.5, high=1.5) if _op == "prod" else floats(7, 13)
    for _axes, _keep in REDUCE_AXES:
        case(
            _op,
            _x,
            expected=per_row(_fn, _axes, _keep),
            label=f"axes{list(_axes)}-keep{_keep}",
            axes=_axes,
            keepdims=_keep,
        )
    case(
        _op,
        floats(2, 3, 4, dtype=np.float64),
        expected=per_row(_fn, (0, 2), True),
        label="f64-rank3",
        axes=(0, 2),
        keepdims=True,
    )
    case(_op, floats(), expected=per_row(_fn, (0,), False), label="scalar", axes=(0,))
    case(
        _op, floats(1, 5, 1), expected=per_row(_fn, (-3, -1), False), label="size-1", axes=(-3, -1)
    )
for _op in ("sum", "mean", "prod"):
    _fn = REDUCTIONS[_op][0]
    case(_op, floats(0, 3), expected=per_row(_fn, (0,), False), label="empty-axis", axes=(0,))
for _op in ("sum", "prod", "max", "min"):
    _fn = REDUCTIONS[_op][0]
    case(
        _op,
        ints(4, 5, low=-3, high=4),
        expected=per_row(_fn, (1,), False, np.int64),
        label="i32",
        axes=(1,),
    )
    case(
        _op,
        ints(3, 2, low=-3, high=4, dtype=np.int64),
        expected=per_row(_fn, (0, 1), True, np.int64),
        label="i64",
        axes=(0, 1),
        keepdims=True,
    )
    case(_op, floats(3, 0), expected=per_row(_fn, (0,), False), label="empty-kept-axis", axes=(0,))
for _op, _fn in (("max", any), ("min", all)):
    case(_op, bools(4, 6), expected=per_row(_fn, (1,), False, bool), label="bool", axes=(1,))

for _op, _best in (("argmax", max), ("argmin", min)):
    _pick = _first_index_of(_best)
    case(
        _op,
        floats(7, 13),
        expected=per_row(_pick, (-1,), False, np.int64),
        label="last-axis",
        result=I64,
        axis=-1,
    )
    case(
        _op,
        floats(7, 13),
        expected=per_row(_pick, (0,), True, np.int64),
        label="keepdims",
        result=I64,
        axis=0,
        keepdims=True,
    )
    case(
        _op,
        ints(3, 8, low=0, high=3),
        expected=per_row(_pick, (1,), False, np.int64),
        label="ties-take-first",
        result=I64,
        axis=1,
    )
    case(
        _op,
        ints(2, 3, 4, dtype=np.int64),
        expected=per_row(_pick, (1,), False, np.int64),
        label="i64-middle",
        result=I64,
        axis=-2,
    )
    case(_op, floats(), expected=lambda x: np.array(0), label="scalar", result=I64, axis=0)


# ---------------------------------------------------------------------------------------------
# Shape ops: index arithmetic written out, or a numpy expression of a different kind.


case(
    "reshape",
    floats(7, 13),
    expected=lambda x: x.ravel().reshape(13, 7),
    label="7x13",
    shape=(13, 7),
)
case(
    "reshape",
    ints(2, 3, 4, dtype=np.int64),
    expected=lambda x: x.ravel().reshape(4, 6),
    label="i64",
    shape=(4, 6),
)
case(
    "reshape", floats(1, 1), expected=lambda x: np.array(x.ravel()[0]), label="to-scalar", shape=()
)
case("reshape", floats(0, 3), expected=lambda x: np.zeros((3, 0)), label="zero-size", shape=(3, 0))
case("reshape", bools(6), expected=lambda x: x.reshape(2, 3), label="bool", shape=(2, 3))

case(
    "transpose",
    floats(2, 3, 4),
    expected=lambda x: np.einsum("ijk->kij", x),
    label="rank3",
    perm=(2, 0, 1),
)
case(
    "transpose", floats(7, 13), expected=lambda x: np.einsum("ij->ji", x), label="7x13", perm=(1, 0)
)
case("transpose", bools(2, 3), expected=lambda x: x.T, label="bool", perm=(1, 0))
case("transpose", floats(), expected=lambda x: x, label="scalar", perm=())

case(
    "broadcast_to",
    floats(3, 1),
    expected=lambda x: x * np.ones((2, 3, 4)),
    label="rank-up",
    shape=(2, 3, 4),
)
case("broadcast_to", floats(), expected=lambda x: np.full((2, 2), x), label="scalar", shape=(2, 2))
case("broadcast_to", floats(1), expected=lambda x: np.zeros(0), label="to-zero", shape=(0,))
case(
    "broadcast_to",
    ints(2, 1),
    expected=lambda x: np.repeat(x, 3, axis=1),
    label="i32",
    shape=(2, 3),
)

case("expand_dims", floats(3, 4), expected=lambda x: x[None], label="front", axes=(0,))
case("expand_dims", floats(3, 4), expected=lambda x: x[:, :, None], label="negative", axes=(-1,))
case("expand_dims", floats(3, 4), expected=lambda x: x[None, :, None], label="two", axes=(0, 2))
case("expand_dims", floats(), expected=lambda x: x.reshape(1), label="scalar", axes=(0,))

case("squeeze", floats(3, 1, 4, 1), expected=lambda x: x[:, 0], label="middle", axes=(1,))
case("squeeze", floats(3, 1, 4, 1), expected=lambda x: x[..., 0], label="negative", axes=(-1,))
case("squeeze", floats(1, 2, 1), expected=lambda x: x.reshape(2), label="two", axes=(0, 2))
case("squeeze", floats(), expected=lambda x: x, label="scalar", axes=(0,))

case("flatten", floats(2, 3, 4), expected=lambda x: x.reshape(2, 12), label="default")
case("flatten", floats(2, 3, 4), expected=lambda x: x.reshape(24), label="all", start_dim=0)
case(
    "flatten",
    floats(2, 3, 4, 5),
    expected=lambda x: x.reshape(2, 12, 5),
    label="middle",
    start_dim=1,
    end_dim=-2,
)
case("flatten", floats(), expected=lambda x: x.reshape(1), label="scalar")
case("flatten", floats(2, 0, 3), expected=lambda x: np.zeros((2, 0)), label="zero-size")


def _stacked(axis: int) -> Callable[..., np.ndarray]:
    """Concatenation by writing each piece into its window of a preallocated result."""

    def apply(*pieces: np.ndarray) -> np.ndarray:
        ndim = pieces[0].ndim
        where = axis % ndim
        shape = list(pieces[0].shape)
        shape[where] = sum(p.shape[where] for p in pieces)
        out = np.empty(shape, dtype=np.float64)
        offset = 0
        for piece in pieces:
            index = [slice(None)] * ndim
            index[where] = slice(offset, offset + piece.shape[where])
            out[tuple(index)] = piece
            offset += piece.shape[where]
        return out

    return apply


case("concat", floats(2, 3), floats(4, 3), expected=_stacked(0), label="axis0", axis=0)
case(
    "concat",
    floats(2, 3),
    floats(2, 1),
    floats(2, 5),
    expected=_stacked(-1),
    label="three-negative-axis",
    axis=-1,
)
case("concat", floats(2, 3), expected=_stacked(0), label="single", axis=0)
case("concat", floats(0, 3), floats(2, 3), expected=_stacked(0), label="zero-size-piece", axis=0)
case(
    "concat",
    ints(2, 2, dtype=np.int64),
    ints(2, 3, dtype=np.int64),
    expected=_stacked(1),
    label="i64",
    axis=1,
)


def _pieces(axis: int, sizes: tuple[int, ...]) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """Splitting by explicit index ranges."""

    def apply(x: np.ndarray) -> tuple[np.ndarray, ...]:
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return tuple(
            np.take(x, list(range(s, s + n)), axis=axis) for s, n in zip(starts, sizes, strict=True)
        )

    return apply


case("split", floats(3, 7), expected=_pieces(1, (2, 3, 2)), label="axis1", axis=1, sizes=(2, 3, 2))
case(
    "split",
    floats(4, 2, 5),
    expected=_pieces(-1, (1, 4)),
    label="negative-axis",
    axis=-1,
    sizes=(1, 4),
)
case(
    "split",
    floats(5, 2),
    expected=_pieces(0, (0, 5, 0)),
    label="zero-size-part",
    axis=0,
    sizes=(0, 5, 0),
)
case("split", ints(6), expected=_pieces(0, (6,)), label="single-i32", axis=0, sizes=(6,))


def _ranges(
    starts: tuple[int, ...], stops: tuple[int, ...], steps: tuple[int, ...]
) -> Callable[[np.ndarray], np.ndarray]:
    """Python `range` semantics, no wraparound: select `range(start, stop, step)` per axis."""

    def apply(x: np.ndarray) -> np.ndarray:
        index = [list(range(*bounds)) for bounds in zip(starts, stops, steps, strict=True)]
        return x[np.ix_(*index)] if index else x

    return apply


for _name, _starts, _stops, _steps in [
    ("positive", (1, 0), (6, 13), (2, 3)),
    ("negative-steps", (6, 12), (-1, 0), (-1, -3)),
    ("reverse-through-zero", (6, 12), (-1, -1), (-2, -1)),
    ("empty", (3, 0), (3, 13), (1, 1)),
    ("empty-negative", (2, 0), (5, 13), (-1, 1)),
    ("step-beyond-size", (0, 5), (7, 13), (10, 20)),
]:
    case(
        "slice",
        floats(7, 13),
        expected=_ranges(_starts, _stops, _steps),
        label=_name,
        starts=_starts,
        stops=_stops,
        steps=_steps,
    )
case(
    "slice",
    floats(0, 3),
    expected=lambda x: np.zeros((0, 3)),
    label="zero-size-axis",
    starts=(0, 2),
    stops=(0, -1),
    steps=(1, -1),
)
case(
    "slice",
    ints(5, dtype=np.int64),
    expected=_ranges((4,), (0,), (-2,)),
    label="i64",
    starts=(4,),
    stops=(0,),
    steps=(-2,),
)
case("slice", floats(), expected=lambda x: x, label="scalar", starts=(), stops=(), steps=())


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=FIXTURES_ARE_STATELESS
)
@given(
    size=st.integers(0, 6),
    start=st.integers(-2, 7),
    stop=st.integers(-2, 7),
    step=st.integers(-3, 3).filter(bool),
)
def test_slice_selects_python_range(
    size: int,
    start: int,
    stop: int,
    step: int,
    executor: Executor,
    check_result: Callable[..., None],
) -> None:
    """slice selects `range(start, stop, step)`; a range leaving the axis is a ShapeError."""
    x = np.arange(size, dtype=np.float32) + 10
    selected = range(start, stop, step)
    builder = GraphBuilder("slice")
    value = builder.input(TensorType.of(x))
    if selected and (min(selected) < 0 or max(selected) >= size):
        with pytest.raises(ember.ShapeError, match=rf"^slice: slice {start}:{stop}:{step} is out"):
            builder.slice(value, starts=(start,), stops=(stop,), steps=(step,))
        return
    graph = builder.build([builder.slice(value, starts=(start,), stops=(stop,), steps=(step,))])
    (actual,) = executor(graph, x)
    check_result(actual, np.array([10.0 + i for i in selected]), F32, f"{start}:{stop}:{step}")


def _padded(
    pads: tuple[int, ...], mode: str, value: float = 0.0
) -> Callable[[np.ndarray], np.ndarray]:
    """Padding by index arithmetic: the source index of every output position."""

    def source(i: int, size: int) -> int | None:
        if 0 <= i < size:
            return i
        if mode == "edge":
            return min(max(i, 0), size - 1)
        if mode == "reflect":
            return -i if i < 0 else 2 * (size - 1) - i
        return None

    def apply(x: np.ndarray) -> np.ndarray:
        befores, afters = pads[: x.ndim], pads[x.ndim :]
        shape = tuple(b + d + a for b, d, a in zip(befores, x.shape, afters, strict=True))
        out = np.empty(shape, dtype=np.float64)
        for position in np.ndindex(*shape):
            index = [source(p - b, d) for p, b, d in zip(position, befores, x.shape, strict=True)]
            out[position] = value if None in index else x[tuple(index)]
        return out

    return apply


case(
    "pad",
    floats(3, 4),
    expected=_padded((1, 0, 2, 3), "constant", 2.5),
    label="constant",
    pads=(1, 0, 2, 3),
    value=2.5,
)
case(
    "pad",
    floats(3, 4),
    expected=_padded((2, 1, 1, 3), "reflect"),
    label="reflect",
    pads=(2, 1, 1, 3),
    mode="reflect",
)
case(
    "pad",
    floats(3, 4),
    expected=_padded((2, 0, 3, 5), "edge"),
    label="edge",
    pads=(2, 0, 3, 5),
    mode="edge",
)
case(
    "pad",
    ints(2, 3),
    expected=_padded((0, 1, 1, 0), "constant", -7),
    label="i32",
    pads=(0, 1, 1, 0),
    value=-7.0,
)
case(
    "pad",
    floats(2, 3),
    expected=lambda x: x.astype(np.float64),
    label="no-padding",
    pads=(0, 0, 0, 0),
    mode="reflect",
)
case(
    "pad",
    floats(0, 3),
    expected=_padded((1, 1, 0, 0), "constant"),
    label="zero-size",
    pads=(1, 1, 0, 0),
)
case(
    "pad",
    floats(1, 2, 4, 5, dtype=np.float64),
    label="reflect-torch",
    torch=True,
    pads=(0, 0, 1, 2, 0, 0, 3, 1),
    mode="reflect",
    expected=with_torch(lambda t, x: t.nn.functional.pad(x, (2, 1, 1, 3), mode="reflect")),
)
case(
    "pad",
    floats(1, 2, 4, 5, dtype=np.float64),
    label="edge-torch",
    torch=True,
    pads=(0, 0, 1, 2, 0, 0, 3, 1),
    mode="edge",
    expected=with_torch(lambda t, x: t.nn.functional.pad(x, (2, 1, 1, 3), mode="replicate")),
)

_CONSTANTS = [
    ("f32", floats(2, 3)),
    ("i64-scalar", np.array(-5, np.int64)),
    ("bool", bools(4)),
    ("zero-size", floats(0, 2)),
]
for _name, _data in _CONSTANTS:
    case(
        "const",
        expected=lambda d=_data: d.copy(),
        label=_name,
        result=DType.from_numpy(_data.dtype),
        value=Const(_data),
        name=f"c_{_name}",
    )

# ---------------------------------------------------------------------------------------------
# matmul: einsum in float64 (or Python integers), numpy's 1-D and batch broadcasting rules.


def _einsum(spec: str) -> Callable[..., np.ndarray]:
    return lambda a, b: np.einsum(spec, a.astype(np.float64), b.astype(np.float64))


case("matmul", floats(7, 13), floats(13, 5), expected=_einsum("ik,kj->ij"), label="7x13x5")
case("matmul", floats(4), floats(4, 3), expected=_einsum("k,kj->j"), label="vector-matrix")
case("matmul", floats(3, 4), floats(4), expected=_einsum("ik,k->i"), label="matrix-vector")
case("matmul", floats(6), floats(6), expected=_einsum("k,k->"), label="vector-vector")
case(
    "matmul",
    floats(2, 1, 3, 4),
    floats(5, 4, 2),
    label="broadcast-batch",
    expected=lambda a, b: np.einsum(
        "xyik,ykj->xyij", np.broadcast_to(a, (2, 5, 3, 4)).astype(np.float64), b.astype(np.float64)
    ),
)
case("matmul", floats(4), floats(2, 4, 3), expected=_einsum("k,bkj->bj"), label="vector-batch")
case(
    "matmul",
    floats(3, 0),
    floats(0, 4),
    expected=lambda a, b: np.zeros((3, 4)),
    label="empty-inner",
)
case(
    "matmul",
    floats(3, 5, dtype=np.float64),
    floats(5, 2, dtype=np.float64),
    expected=_einsum("ik,kj->ij"),
    label="f64",
)
case(
    "matmul",
    ints(3, 4),
    ints(4, 2),
    label="i32",
    expected=lambda a, b: np.array(
        [[sum(int(a[i, k]) * int(b[k, j]) for k in range(4)) for j in range(2)] for i in range(3)]
    ),
)
case(
    "matmul",
    floats(2, 3, 4, dtype=np.float64),
    floats(2, 4, 5, dtype=np.float64),
    expected=with_torch(lambda t, a, b: t.matmul(a, b)),
    label="torch",
    torch=True,
)

# ---------------------------------------------------------------------------------------------
# conv2d and pooling: explicit loops over output positions, and PyTorch.


def conv2d_loops(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, ...] = (0, 0, 0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """Direct convolution, one output position at a time; padding is (top, left, bottom, right)."""
    top, left, bottom, right = padding
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    batch, _, height, width = x.shape
    out_channels, group_channels, kernel_h, kernel_w = w.shape
    out_h = (height - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    out_w = (width - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    out = np.zeros((batch, out_channels, out_h, out_w))
    per_group = out_channels // groups
    for channel in range(out_channels):
        first = channel // per_group * group_channels
        for i in range(out_h):
            for j in range(out_w):
                rows = slice(
                    i * stride[0], i * stride[0] + dilation[0] * (kernel_h - 1) + 1, dilation[0]
                )
                cols = slice(
                    j * stride[1], j * stride[1] + dilation[1] * (kernel_w - 1) + 1, dilation[1]
                )
                patch = x[:, first : first + group_channels, rows, cols]
                out[:, channel, i, j] = np.einsum("nckl,ckl->n", patch, w[channel])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def _torch_conv(
    stride: tuple[int, int], padding: tuple[int, ...], dilation: tuple[int, int], groups: int
) -> Callable[..., np.ndarray]:
    def conv(t, x, w, b=None):
        top, left, bottom, right = padding
        x = t.nn.functional.pad(x, (left, right, top, bottom))
        return t.nn.functional.conv2d(x, w, b, stride=stride, dilation=dilation, groups=groups)

    return with_torch(conv)


_CONV_SETTINGS = [
    ("plain-bias", (2, 3, 7, 9), (4, 3, 3, 3), True, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ("stride-asymmetric-pad", (2, 3, 7, 9), (4, 3, 3, 2), False, (2, 3), (1, 0, 2, 1), (1, 1), 1),
    ("dilation", (1, 2, 9, 8), (3, 2, 3, 3), True, (1, 1), (2, 2, 2, 2), (2, 3), 1),
    ("groups", (2, 4, 6, 6), (6, 2, 3, 3), True, (1, 2), (1, 1, 1, 1), (1, 1), 2),
    ("depthwise", (1, 3, 5, 5), (3, 1, 3, 3), False, (1, 1), (1, 1, 1, 1), (1, 1), 3),
    ("pointwise", (2, 5, 4, 3), (2, 5, 1, 1), True, (1, 1), (0, 0, 0, 0), (1, 1), 1),
]
for _name, _xs, _ws, _bias, _stride, _pad, _dil, _groups in _CONV_SETTINGS:
    for _dtype, _suffix in ((np.float32, ""), (np.float64, "-f64")):
        _inputs = (floats(*_xs, dtype=_dtype), floats(*_ws, dtype=_dtype))
        if _bias:
            _inputs += (floats(_ws[0], dtype=_dtype),)
        _attrs = {"stride": _stride, "padding": _pad, "dilation": _dil, "groups": _groups}
        case(
            "conv2d",
            *_inputs,
            label=_name + _suffix,
            expected=lambda *a, k=_attrs: conv2d_loops(*a, **k),
            **_attrs,
        )
        if _dtype is np.float64:
            case(
                "conv2d",
                *_inputs,
                label=_name + "-torch",
                torch=True,
                expected=_torch_conv(_stride, _pad, _dil, _groups),
                **_attrs,
            )


def pooled_size(
    size: int, kernel: int, stride: int, low: int, high: int, dilation: int, ceil_mode: bool
) -> int:
    """PyTorch's pooling output size, ceil_mode included."""
    room = size + low + high - dilation * (kernel - 1) - 1
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + low:
        out -= 1
    return out


def max_pool_loops(
    x: np.ndarray,
    *,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, ...] = (0, 0, 0, 0),
    dilation: tuple[int, int] = (1, 1),
    ceil_mode: bool = False,
) -> np.ndarray:
    """Max over the in-bounds taps of every window (padding never wins)."""
    sizes = [
        pooled_size(
            x.shape[2 + a], kernel[a], stride[a], padding[a], padding[a + 2], dilation[a], ceil_mode
        )
        for a in range(2)
    ]
    out = np.empty((*x.shape[:2], *sizes), dtype=np.float64)
    for i in range(sizes[0]):
        rows = [
            r
            for r in (i * stride[0] - padding[0] + k * dilation[0] for k in range(kernel[0]))
            if 0 <= r < x.shape[2]
        ]
        for j in range(sizes[1]):
            cols = [
                c
                for c in (j * stride[1] - padding[1] + k * dilation[1] for k in range(kernel[1]))
                if 0 <= c < x.shape[3]
            ]
            out[:, :, i, j] = x[:, :, rows][:, :, :, cols].max(axis=(2, 3))
    return out


def avg_pool_loops(
    x: np.ndarray,
    *,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, ...] = (0, 0, 0, 0),
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """PyTorch's average pooling: windows clipped to the padded input, divisor per window."""
    sizes = [
        pooled_size(x.shape[2 + a], kernel[a], stride[a], padding[a], padding[a + 2], 1, ceil_mode)
        for a in range(2)
    ]
    out = np.empty((*x.shape[:2], *sizes), dtype=np.float64)

    def window(index: int, axis: int) -> tuple[int, int, int]:
        start = index * stride[axis] - padding[axis]
        end = min(start + kernel[axis], x.shape[2 + axis] + padding[axis + 2])
        return max(start, 0), min(end, x.shape[2 + axis]), end - start

    for i in range(sizes[0]):
        top, bottom, padded_rows = window(i, 0)
        for j in range(sizes[1]):
            left, right, padded_cols = window(j, 1)
            total = x[:, :, top:bottom, left:right].astype(np.float64).sum(axis=(2, 3))
            count = (
                padded_rows * padded_cols
                if count_include_pad
                else ((bottom - top) * (right - left))
            )
            out[:, :, i, j] = total / count
    return out


_MAX_POOLS = [
    ("2x2", (2, 3, 8, 8), {"kernel": (2, 2), "stride": (2, 2)}),
    ("3x3-stride1", (1, 2, 7, 13), {"kernel": (3, 3)}),
    ("padded", (2, 2, 7, 7), {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1, 1, 1)}),
    ("asymmetric-pad", (1, 2, 6, 7), {"kernel": (3, 2), "stride": (2, 1), "padding": (0, 1, 1, 0)}),
    (
        "dilation",
        (1, 2, 9, 9),
        {"kernel": (2, 3), "stride": (2, 2), "dilation": (2, 2), "padding": (1, 1, 1, 1)},
    ),
    ("ceil-mode", (2, 2, 7, 8), {"kernel": (3, 3), "stride": (2, 2), "ceil_mode": True}),
    (
        "ceil-mode-padded",
        (1, 2, 6, 9),
        {"kernel": (3, 2), "stride": (2, 2), "ceil_mode": True, "padding": (1, 1, 1, 1)},
    ),
]
for _name, _shape, _attrs in _MAX_POOLS:
    case(
        "max_pool2d",
        floats(*_shape),
        label=_name,
        expected=lambda x, k=_attrs: max_pool_loops(x, **k),
        **_attrs,
    )
    _pad = _attrs.get("padding", (0, 0, 0, 0))
    if _pad[:2] == _pad[2:]:
        case(
            "max_pool2d",
            floats(*_shape, dtype=np.float64),
            label=_name + "-torch",
            torch=True,
            expected=with_torch(
                lambda t, x, k=_attrs, p=_pad[:2]: t.nn.functional.max_pool2d(
                    x,
                    k["kernel"],
                    k.get("stride", 1),
                    p,
                    k.get("dilation", 1),
                    ceil_mode=k.get("ceil_mode", False),
                )
            ),
            **_attrs,
        )
case(
    "max_pool2d",
    ints(1, 2, 5, 5, low=-100, high=-50),
    label="i32-negative-padded",
    expected=lambda x: max_pool_loops(x, kernel=(3, 3), padding=(1, 1, 1, 1)),
    kernel=(3, 3),
    padding=(1, 1, 1, 1),
)

_AVG_POOLS = [
    ("2x2", (2, 3, 8, 8), {"kernel": (2, 2), "stride": (2, 2)}),
    ("padded-include", (2, 2, 7, 7), {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1, 1, 1)}),
    (
        "padded-exclude",
        (2, 2, 7, 7),
        {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1, 1, 1), "count_include_pad": False},
    ),
    (
        "ceil-include",
        (1, 2, 6, 9),
        {"kernel": (3, 2), "stride": (2, 2), "ceil_mode": True, "padding": (1, 1, 1, 1)},
    ),
    (
        "ceil-exclude",
        (1, 2, 6, 9),
        {
            "kernel": (3, 2),
            "stride": (2, 2),
            "ceil_mode": True,
            "padding": (1, 1, 1, 1),
            "count_include_pad": False,
        },
    ),
    ("ceil-no-pad", (2, 1, 7, 8), {"kernel": (3, 3), "stride": (2, 2), "ceil_mode": True}),
    (
        "asymmetric-pad",
        (1, 2, 6, 7),
        {"kernel": (3, 2), "stride": (2, 1), "padding": (0, 1, 1, 0), "count_include_pad": False},
    ),
]
for _name, _shape, _attrs in _AVG_POOLS:
    case(
        "avg_pool2d",
        floats(*_shape),
        label=_name,
        expected=lambda x, k=_attrs: avg_pool_loops(x, **k),
        **_attrs,
    )
    _pad = _attrs.get("padding", (0, 0, 0, 0))
    if _pad[:2] == _pad[2:]:
        case(
            "avg_pool2d",
            floats(*_shape, dtype=np.float64),
            label=_name + "-torch",
            torch=True,
            expected=with_torch(
                lambda t, x, k=_attrs, p=_pad[:2]: t.nn.functional.avg_pool2d(
                    x,
                    k["kernel"],
                    k.get("stride", 1),
                    p,
                    ceil_mode=k.get("ceil_mode", False),
                    count_include_pad=k.get("count_include_pad", True),
                )
            ),
            **_attrs,
        )


def adaptive_loops(output_size: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """Window i of n over a length L covers [floor(i*L/n), ceil((i+1)*L/n))."""

    def apply(x: np.ndarray) -> np.ndarray:
        height, width = x.shape[2:]
        out = np.empty((*x.shape[:2], *output_size))
        for i in range(output_size[0]):
            top, bottom = (
                math.floor(i * height / output_size[0]),
                math.ceil((i + 1) * height / output_size[0]),
            )
            for j in range(output_size[1]):
                left, right = (
                    math.floor(j * width / output_size[1]),
                    math.ceil((j + 1) * width / output_size[1]),
                )
                out[:, :, i, j] = (
                    x[:, :, top:bottom, left:right].astype(np.float64).mean(axis=(2, 3))
                )
        return out

    return apply


for _shape, _size in (
    ((2, 3, 7, 13), (3, 5)),
    ((1, 2, 8, 8), (1, 1)),
    ((1, 2, 8, 8), (4, 4)),
    ((1, 1, 3, 2), (5, 4)),
):
    _label = f"{_shape[2]}x{_shape[3]}-to-{_size[0]}x{_size[1]}"
    case(
        "adaptive_avg_pool2d",
        floats(*_shape),
        expected=adaptive_loops(_size),
        label=_label,
        output_size=_size,
    )
    case(
        "adaptive_avg_pool2d",
        floats(*_shape, dtype=np.float64),
        label=_label + "-torch",
        torch=True,
        output_size=_size,
        expected=with_torch(lambda t, x, s=_size: t.nn.functional.adaptive_avg_pool2d(x, s)),
    )

# ---------------------------------------------------------------------------------------------
# Normalization, softmax, dropout, gather.


def _norm_params(channels: int, dtype: type = np.float32) -> tuple[np.ndarray, ...]:
    return (
        floats(channels, dtype=dtype),
        floats(channels, low=0.1, high=2, dtype=dtype),
        floats(channels, dtype=dtype),
        floats(channels, dtype=dtype),
    )


def _batch_norm_formula(eps: float) -> Callable[..., np.ndarray]:
    def apply(x, mean, var, weight, bias):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x, mean, var, weight, bias = (a.astype(np.float64) for a in (x, mean, var, weight, bias))
        normalized = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
        return normalized * weight.reshape(shape) + bias.reshape(shape)

    return apply


for _shape, _eps in (((2, 3, 4, 5), 1e-5), ((4, 6), 1e-3), ((2, 3, 7), 0.1)):
    case(
        "batch_norm",
        floats(*_shape),
        *_norm_params(_shape[1]),
        label=f"rank{len(_shape)}",
        expected=_batch_norm_formula(_eps),
        eps=_eps,
    )
    case(
        "batch_norm",
        floats(*_shape, dtype=np.float64),
        *_norm_params(_shape[1], np.float64),
        label=f"rank{len(_shape)}-torch",
        torch=True,
        eps=_eps,
        expected=with_torch(
            lambda t, x, m, v, w, b, e=_eps: t.nn.functional.batch_norm(
                x, m, v, w, b, training=False, eps=e
            )
        ),
    )


def _layer_norm_formula(eps: float) -> Callable[..., np.ndarray]:
    def apply(x, weight, bias):
        axes = tuple(range(x.ndim - weight.ndim, x.ndim))
        x = x.astype(np.float64)
        mean = x.mean(axis=axes, keepdims=True)
        var = np.square(x - mean).mean(axis=axes, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * weight + bias

    return apply


for _shape, _normalized, _eps in (
    ((7, 13), (13,), 1e-5),
    ((2, 3, 4), (3, 4), 1e-5),
    ((2, 5), (5,), 0.5),
):
    case(
        "layer_norm",
        floats(*_shape),
        floats(*_normalized),
        floats(*_normalized),
        label=f"{list(_shape)}-over-{list(_normalized)}",
        expected=_layer_norm_formula(_eps),
        eps=_eps,
    )
    case(
        "layer_norm",
        floats(*_shape, dtype=np.float64),
        floats(*_normalized, dtype=np.float64),
        floats(*_normalized, dtype=np.float64),
        torch=True,
        eps=_eps,
        label=f"{list(_shape)}-over-{list(_normalized)}-torch",
        expected=with_torch(
            lambda t, x, w, b, n=_normalized, e=_eps: t.nn.functional.layer_norm(x, n, w, b, eps=e)
        ),
    )


def _softmax_formula(axis: int, log: bool) -> Callable[[np.ndarray], np.ndarray]:
    def apply(x: np.ndarray) -> np.ndarray:
        exps = np.exp(x.astype(np.float64))
        total = exps.sum(axis=axis, keepdims=True)
        return np.log(exps / total) if log else exps / total

    return apply


for _op, _log, _torch_name in (("softmax", False, "softmax"), ("log_softmax", True, "log_softmax")):
    for _axis in (-1, 0, 1):
        case(
            _op,
            floats(7, 13),
            expected=_softmax_formula(_axis, _log),
            label=f"axis{_axis}",
            axis=_axis,
        )
    case(
        _op,
        floats(2, 3, 4, dtype=np.float64),
        label="f64-torch",
        torch=True,
        axis=1,
        expected=with_torch(lambda t, x, n=_torch_name: getattr(t, n)(x, dim=1)),
    )
    case(
        _op,
        floats(3, 5, low=990, high=1010),
        label="large-logits",
        axis=-1,
        expected=with_torch(lambda t, x, n=_torch_name: getattr(t, n)(x, dim=-1)),
        torch=True,
    )
    case(_op, floats(4), expected=_softmax_formula(0, _log), label="default-axis")
    case(_op, floats(1, 3), expected=_softmax_formula(0, _log), label="size-1-axis", axis=0)

case("dropout", floats(7, 13), expected=lambda x: x.astype(np.float64), label="inference", p=0.5)
case(
    "dropout",
    floats(3, 4),
    expected=lambda x: x.astype(np.float64),
    label="p0-training",
    p=0.0,
    training=True,
)
case(
    "dropout",
    floats(3, 4),
    expected=lambda x: np.zeros((3, 4)),
    label="p1-training",
    p=1.0,
    training=True,
)

case(
    "gather",
    floats(10, 4),
    np.array([[1, -1, 3], [0, 9, -10]], np.int64),
    label="negative",
    expected=lambda d, i: np.array([[d[k % 10] for k in row] for row in i.tolist()]),
)
case(
    "gather",
    floats(3, 5, 2),
    np.array([4, 0, -2], np.int32),
    label="axis1-i32",
    axis=1,
    expected=lambda d, i: np.stack([d[:, k % 5] for k in i.tolist()], axis=1),
)
case(
    "gather",
    floats(3, 5),
    np.array([[0, 1], [2, -1]], np.int64),
    label="last-axis",
    axis=-1,
    expected=lambda d, i: np.array(
        [[[d[r, k % 5] for k in row] for row in i.tolist()] for r in range(3)]
    ),
)
case(
    "gather", floats(6, 2), np.array(-6, np.int64), label="scalar-index", expected=lambda d, i: d[0]
)

case("matmul_nt", floats(33, 70), floats(45, 70), label="33x70-45x70",
     expected=lambda a, b: a.astype(np.float64) @ b.astype(np.float64).T)
case("matmul_nt", floats(5, 3, dtype=np.float64), floats(1, 3, dtype=np.float64), label="f64-n1",
     expected=lambda a, b: a @ b.T)
# Depth in whole register blocks only (64), under one block (5), and f64's narrower blocks
# with a tail (37): the transposing B packer's block and element paths.
case("matmul_nt", floats(20, 64), floats(70, 64), label="20x64-70x64",
     expected=lambda a, b: a.astype(np.float64) @ b.astype(np.float64).T)
case("matmul_nt", floats(9, 5), floats(33, 5), label="9x5-33x5",
     expected=lambda a, b: a.astype(np.float64) @ b.astype(np.float64).T)
case("matmul_nt", floats(7, 37, dtype=np.float64), floats(19, 37, dtype=np.float64),
     label="f64-7x37-19x37", expected=lambda a, b: a @ b.T)

# The backward ops of training, against torch.autograd of the forward ops.
case(
    "max_pool2d_grad", floats(2, 2, 7, 7, dtype=np.float64), floats(2, 2, 4, 4, dtype=np.float64),
    label="3x3-s2-pad", torch=True,
    expected=with_torch(lambda t, x, gy: t.autograd.grad(
        t.nn.functional.max_pool2d(x.requires_grad_(), 3, 2, 1), x, gy)[0]),
    kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1),
)
case(
    "avg_pool2d_grad", floats(2, 3, 3, 3, dtype=np.float64), label="3x3-s2-pad", torch=True,
    expected=with_torch(_avg_pool_grad_torch),
    input_shape=(2, 3, 6, 6), kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1),
    count_include_pad=False,
)
case(
    "adaptive_avg_pool2d_grad", floats(2, 3, 2, 3, dtype=np.float64), label="5x7-to-2x3",
    torch=True, expected=with_torch(lambda t, gy: _adaptive_grad_torch(t, gy)),
    input_shape=(2, 3, 5, 7),
)
case(
    "scatter_add", floats(2, 3), np.array([1, -1, 1], np.int64), label="repeats", size=4, axis=1,
    expected=lambda gy, i: np.stack([np.bincount(i % 4, weights=r, minlength=4) for r in gy]),
)
case(
    "gather",
    ints(4, 3),
    np.zeros(0, np.int64),
    label="no-indices",
    expected=lambda d, i: np.zeros((0, 3)),
)


# ---------------------------------------------------------------------------------------------
# Blocked channel layouts: channel c of an NCHW tensor lives at [n, c // b, h, w, c % b] in
# nchw<b>c, at [n, h, w, c] in nhwc. Written out channel by channel.


def to_blocks(x: np.ndarray, block: int) -> np.ndarray:
    """NCHW -> [N, ceil(C/b), H, W, b], padded channels zero."""
    batch, channels, height, width = x.shape
    out = np.zeros((batch, -(-channels // block), height, width, block))
    for channel in range(channels):
        out[:, channel // block, :, :, channel % block] = x[:, channel]
    return out


def from_blocks(y: np.ndarray, channels: int) -> np.ndarray:
    """[N, C/b, H, W, b] -> NCHW with the first `channels` channels."""
    block = y.shape[-1]
    return np.stack([y[:, c // block, :, :, c % block] for c in range(channels)], axis=1)


def pack_weight(w: np.ndarray, in_block: int, out_block: int) -> np.ndarray:
    """OIHW -> [O/ob, I/ib, KH, KW, ib, ob], padded channels zero."""
    out_channels, in_channels, kernel_h, kernel_w = w.shape
    packed = np.zeros(
        (
            -(-out_channels // out_block),
            -(-in_channels // in_block),
            kernel_h,
            kernel_w,
            in_block,
            out_block,
        ),
        dtype=w.dtype,
    )
    for o in range(out_channels):
        for i in range(in_channels):
            packed[o // out_block, i // in_block, :, :, i % in_block, o % out_block] = w[o, i]
    return packed


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.einsum("nchw->nhwc", x)


_image = floats(2, 6, 3, 5)
case(
    "layout_convert",
    _image,
    expected=lambda x: to_blocks(x, 4),
    label="to-nchw4c-padded",
    layout="nchw4c",
    channels=6,
)
case("layout_convert", _image, expected=_nhwc, label="to-nhwc", layout="nhwc", channels=6)
# The padded channels of a blocked input hold arbitrary values; converting back drops them.
case(
    "layout_convert",
    floats(2, 2, 3, 5, 4),
    expected=lambda y: from_blocks(y, 6),
    label="from-nchw4c-cropped",
    layouts=("nchw4c",),
    layout="",
    channels=6,
)
case(
    "layout_convert",
    floats(2, 3, 5, 6),
    expected=lambda y: np.einsum("nhwc->nchw", y),
    label="from-nhwc",
    layouts=("nhwc",),
    layout="",
    channels=6,
)

_x, _w, _b = floats(1, 6, 7, 6), floats(8, 6, 3, 2), floats(8)
_blocked_x = to_blocks(_x, 4).astype(np.float32)
_blocked_x[:, 1, :, :, 2:] = floats(1, 7, 6, 2)  # padded input channels: finite, unobserved
_conv = {"stride": (2, 1), "padding": (1, 0, 2, 1), "dilation": (1, 2)}
case(
    "conv2d_nchwc",
    _blocked_x,
    pack_weight(_w, 4, 4),
    _b.reshape(2, 4),
    label="nchw4c-bias",
    layouts=("nchw4c", "", ""),
    **_conv,
    expected=lambda *_: to_blocks(conv2d_loops(_x, _w, _b, **_conv), 4),
)
_x3, _w3 = floats(2, 3, 5, 5), floats(5, 3, 3, 3)
case(
    "conv2d_nchwc",
    _nhwc(_x3).copy(),
    pack_weight(_w3, 3, 5),
    label="nhwc",
    layouts=("nhwc", ""),
    padding=(1, 1, 1, 1),
    expected=lambda *_: _nhwc(conv2d_loops(_x3, _w3, padding=(1, 1, 1, 1))),
)

_pool_x = floats(2, 8, 7, 7)
for _op, _loops, _attrs in (
    (
        "max_pool2d_nchwc",
        max_pool_loops,
        {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1, 1, 1), "ceil_mode": True},
    ),
    (
        "avg_pool2d_nchwc",
        avg_pool_loops,
        {"kernel": (3, 2), "stride": (2, 1), "padding": (1, 0, 1, 1), "count_include_pad": False},
    ),
):
    case(
        _op,
        to_blocks(_pool_x, 4).astype(np.float32),
        label="nchw4c",
        layouts=("nchw4c",),
        expected=lambda _, f=_loops, k=_attrs: to_blocks(f(_pool_x, **k), 4),
        **_attrs,
    )
    case(
        _op,
        _nhwc(_pool_x).copy(),
        label="nhwc",
        layouts=("nhwc",),
        expected=lambda _, f=_loops, k=_attrs: _nhwc(f(_pool_x, **k)),
        **_attrs,
    )


# ---------------------------------------------------------------------------------------------
# resize, grid_sample, topk, fmod: PyTorch's interpolate, grid_sample and topk / sort, ONNX's
# reference Resize and GridSample (onnx.reference) for the ONNX-only options, C's fmod.

_resize_x = floats(2, 3, 5, 7)


def _resize_case(label: str, sizes: tuple[int, ...], expected: Callable[..., object],
                 torch: bool = True, x: np.ndarray = _resize_x, **attrs: object) -> None:
    scales = tuple(s / d for s, d in zip(sizes, x.shape, strict=True))
    case("resize", x, label=label, expected=expected, torch=torch, sizes=sizes,
         scales=attrs.pop("scales", scales), **attrs)


def _interpolate(size: tuple[int, ...], mode: str, **kwargs: object) -> Callable[..., object]:
    return with_torch(lambda t, x: t.nn.functional.interpolate(x, size=size, mode=mode,
                                                               **kwargs))


def _onnx_reference(op: str, extra: Sequence[tuple[str, np.ndarray | None]] = (),
                    **attrs: object) -> Callable[..., object]:
    """The expected value from onnx's own numpy reference implementation of `op`: the case's
    arrays are its first inputs, then `extra` (name and value; None for an omitted input)."""

    def apply(*arrays: np.ndarray) -> np.ndarray:
        onnx = pytest.importorskip("onnx")
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        names = [f"x{i}" for i in range(len(arrays))]
        inputs = names + [name if value is not None else "" for name, value in extra]
        node = helper.make_node(op, inputs, ["y"], **attrs)
        types = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                               a.shape) for n, a in zip(names, arrays, strict=True)]
        inits = [onnx.numpy_helper.from_array(v, n) for n, v in extra if v is not None]
        out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
        model = helper.make_model(helper.make_graph([node], op, types, [out], inits),
                                  opset_imports=[helper.make_opsetid("", 20)])
        return ReferenceEvaluator(model).run(None, dict(zip(names, arrays, strict=True)))[0]

    return apply


_resize_case("bilinear", (2, 3, 9, 4), _interpolate((9, 4), "bilinear"), mode="linear",
             coordinate_mode="pytorch_half_pixel")
_resize_case("bilinear-align", (2, 3, 8, 13), _interpolate((8, 13), "bilinear",
                                                         align_corners=True),
             mode="linear", coordinate_mode="align_corners")
_resize_case("bicubic", (2, 3, 11, 3), _interpolate((11, 3), "bicubic"), mode="cubic",
             coordinate_mode="half_pixel")
_resize_case("bicubic-align", (2, 3, 4, 10), _interpolate((4, 10), "bicubic",
                                                        align_corners=True),
             mode="cubic", coordinate_mode="align_corners")
_resize_case("nearest", (2, 3, 8, 5), _interpolate((8, 5), "nearest"), mode="nearest",
             coordinate_mode="asymmetric", nearest_mode="floor",
             scales=(1.0, 1.0, 8 / 5, 5 / 7))
_resize_case("nearest-exact", (2, 3, 3, 12), _interpolate((3, 12), "nearest-exact"),
             mode="nearest", nearest_mode="round_prefer_ceil")
_resize_case("antialias", (2, 3, 2, 3), _interpolate((2, 3), "bilinear", antialias=True),
             mode="linear", coordinate_mode="pytorch_half_pixel", antialias=True,
             exclude_outside=True)
_resize_case("nearest-int", (2, 3, 7, 14), lambda x: x.repeat(2, axis=3)[:, :, [0, 0, 1, 2, 2,
             3, 4]], torch=False, x=ints(2, 3, 5, 7), mode="nearest",
             coordinate_mode="asymmetric", nearest_mode="floor", scales=(1, 1, 1.4, 2))
_resize_case("cubic-exclude", (2, 3, 3, 4), _onnx_reference(
    "Resize", [("roi", None), ("scales", np.array([1, 1, 0.6, 0.6], np.float32))],
    mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5), torch=False,
             mode="cubic", exclude_outside=True, cubic_a=-0.5,
             scales=(1.0, 1.0, 0.6000000238418579, 0.6000000238418579))
_resize_case("tf-crop", (2, 3, 4, 6), _onnx_reference(
    "Resize", [("roi", np.array([0, 0, -0.2, 0.4, 1, 1, 0.6, 1.3], np.float32)),
               ("scales", None), ("sizes", np.array([2, 3, 4, 6], np.int64))],
    mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
    extrapolation_value=10.0), torch=False,
             mode="linear", coordinate_mode="tf_crop_and_resize", extrapolation=10.0,
             roi=(0.0, 0.0, -0.2 - 2.9802322443206464e-09, 0.4000000059604645, 1.0, 1.0,
                  0.6000000238418579, 1.2999999523162842))
case("resize", floats(4, 6, dtype=np.float64), label="linear-axes-f64", sizes=(4, 9),
     scales=(1.0, 1.5), axes=(1,), mode="linear", torch=True,
     expected=with_torch(lambda t, x: t.nn.functional.interpolate(
         x[None], size=9, mode="linear")[0]))
case("resize", floats(2, 2, 3, 4, 5), label="trilinear", sizes=(2, 2, 5, 2, 8),
     scales=(1.0, 1.0, 5 / 3, 0.5, 1.6), mode="linear", coordinate_mode="pytorch_half_pixel",
     torch=True, expected=with_torch(lambda t, x: t.nn.functional.interpolate(
         x, size=(5, 2, 8), mode="trilinear")))

_grid_x = floats(2, 3, 5, 6)
_grid = floats(2, 4, 7, 2, low=-1.3, high=1.3)
for _mode, _torch_mode in (("linear", "bilinear"), ("nearest", "nearest"),
                           ("cubic", "bicubic")):
    for _padding in ("zeros", "border", "reflection"):
        for _align in (False, True):
            # Cubic sums of 16 taps lose more than float32's tolerance to cancellation: f64.
            _pair = ((_grid_x.astype(np.float64), _grid.astype(np.float64)) if _mode == "cubic"
                     else (_grid_x, _grid))
            case("grid_sample", *_pair, label=f"{_mode}-{_padding}-{int(_align)}",
                 mode=_mode, padding=_padding, align_corners=_align, convention="torch",
                 torch=True, expected=with_torch(
                     lambda t, x, g, m=_torch_mode, p=_padding, a=_align:
                     t.nn.functional.grid_sample(x, g, mode=m, padding_mode=p,
                                                 align_corners=a)))
for _mode in ("linear", "nearest", "cubic"):
    case("grid_sample", _grid_x, _grid, label=f"onnx-{_mode}-border", mode=_mode,
         padding="border", expected=_onnx_reference("GridSample", mode=_mode,
                                                    padding_mode="border"))
# (float topk cases, whose indices are int64, are in tests/numerics/test_resample.py)
case("grid_sample", floats(1, 2, 3, 4, 5), floats(1, 2, 3, 4, 3, low=-1.2, high=1.2),
     label="3d-linear-reflection", mode="linear", padding="reflection", convention="torch",
     torch=True, expected=with_torch(lambda t, x, g: t.nn.functional.grid_sample(
         x, g, mode="bilinear", padding_mode="reflection", align_corners=False)))

case("topk", ints(5, 8, dtype=np.int64), label="int-desc", k=8, axis=1,
     expected=lambda x: (-np.sort(-x, axis=1, kind="stable"),
                         np.argsort(-x, axis=1, kind="stable")))
case("topk", ints(3, 45, 2, low=-4, high=5, dtype=np.int64), label="bitonic", k=20, axis=1,
     expected=lambda x: (-np.sort(-x, axis=1, kind="stable")[:, :20],
                         np.argsort(-x, axis=1, kind="stable")[:, :20]))
case("topk", ints(6, 4, 3, dtype=np.int64), label="int-smallest", k=2, axis=0, largest=False,
     expected=lambda x: (np.sort(x, axis=0, kind="stable")[:2],
                         np.argsort(x, axis=0, kind="stable")[:2]))

_fmod_a = np.array([5.5, -5.5, 5.5, -5.5, 1e30, 7.0, 0.0, -0.0, np.inf, 3.0, np.nan, 2.5],
                   np.float32)
_fmod_b = np.array([2.0, 2.0, -2.0, -2.0, 3.3, np.inf, 1.0, 1.0, 2.0, 0.0, 1.0, 0.1],
                   np.float32)
case("fmod", _fmod_a, _fmod_b, label="edges",
     expected=per_element(lambda a, b: math.fmod(a, b) if b != 0 and math.isfinite(a)
                          and a == a else math.nan))
case("fmod", floats(4, 5, dtype=np.float64, low=-50, high=50), nonzero(5, dtype=np.float64),
     label="f64-broadcast", expected=per_element(math.fmod))


# ---------------------------------------------------------------------------------------------
# Runners.


def build_graph(case: Case) -> Graph:
    """A graph whose inputs are the case's inputs and whose outputs are its op's outputs."""
    builder = GraphBuilder(case.op)
    layouts = case.layouts or ("",) * len(case.inputs)
    values = [
        builder.input(TensorType(DType.from_numpy(a.dtype), a.shape, layout), f"x{i}")
        for i, (a, layout) in enumerate(zip(case.inputs, layouts, strict=True))
    ]
    result = builder.op(case.op, *values, **case.attrs)  # type: ignore[arg-type]
    graph = builder.build(result if isinstance(result, tuple) else (result,))
    ember.verify(graph)
    return graph


def _as_tuple(result: object) -> tuple[np.ndarray, ...]:
    return tuple(result) if isinstance(result, tuple) else (np.asarray(result),)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_matches_independent_computation(
    case: Case, executor: Executor, check_result: Callable[..., None]
) -> None:
    """The executor's result has the expected shape, dtype and values."""
    if case.torch:
        pytest.importorskip("torch")
    check_outputs(case, executor(build_graph(case), *case.inputs), check_result)


def check_outputs(case: Case, actual: Sequence[np.ndarray],
                  check_result: Callable[..., None]) -> None:
    """`actual` (one array per output) against the case's independent expected values: the
    count, then each output's shape, dtype and values (`check_result`), or for float32 dot
    products the accumulation-order bound below. The CUDA tests check with it too."""
    with np.errstate(all="ignore"):  # inf and nan are expected values in some cases
        expected = _as_tuple(case.expected(*case.inputs))
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    if case.op in ("conv2d", "matmul_nt") and case.result_dtype is F32 and not case.torch:
        # A float32 dot product of n terms may differ from the exact sum by n * eps * the sum
        # of the terms' magnitudes (the accumulation order is the kernel's: vector width and
        # FMA differ between hosts); where terms cancel, that exceeds a relative tolerance.
        magnitude = case.expected(*(np.abs(a) for a in case.inputs))
        terms = int(np.prod(case.inputs[1].shape[1:])) + 1
        bound = terms * np.finfo(np.float32).eps * magnitude
        error = np.abs(actual[0].astype(np.float64) - expected[0])
        assert np.all(error <= bound), f"{case.id}: error {error.max()} above the bound"
        return
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        check_result(got, want, case.result_dtype, f"{case.id} output {index}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reference_returns_inferred_types(case: Case) -> None:
    """The numpy reference itself returns the types its shape rule promises.

    The interpreter converts results to the declared dtype, which would hide a reference that
    computes in the wrong precision; this calls the reference directly.
    """
    graph = build_graph(case)
    node = graph.nodes[-1]
    with np.errstate(all="ignore"):
        results = get_op(case.op).evaluate(case.inputs, node.attrs)
    for result, value in zip(results, node.outputs, strict=True):
        assert isinstance(result, np.ndarray | np.generic), type(result)
        assert (result.shape, str(result.dtype)) == (value.type.shape, str(value.type.dtype.numpy))


def test_every_op_has_a_case() -> None:
    """A newly registered op must come with a numerical test case here."""
    missing = sorted(set(OPS) - {c.op for c in CASES})
    assert not missing, f"ops without a test case in {__file__}: {missing}"


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


# ---------------------------------------------------------------------------------------------
# dropout in training: a random mask, so its properties rather than fixed values.


def _dropout_graph(shape: tuple[int, ...], p: float, seed: int) -> Graph:
    builder = GraphBuilder("dropout")
    value = builder.input(TensorType(F32, shape))
    return builder.build([builder.dropout(value, p=p, training=True, seed=seed)])


def test_dropout_training_zeroes_or_rescales(executor: Executor) -> None:
    """Each element is either dropped (0) or kept and scaled by 1/(1-p); about p are dropped."""
    x = floats(64, 64, low=0.5, high=2.0)
    (actual,) = executor(_dropout_graph(x.shape, 0.25, seed=3), x)
    assert actual.shape == x.shape and actual.dtype == np.float32
    kept = actual != 0
    np.testing.assert_allclose(actual[kept], x[kept] / 0.75, rtol=1e-6)
    assert 0.2 < 1 - kept.mean() < 0.3


def test_dropout_mask_follows_the_seed(executor: Executor) -> None:
    """The same seed gives the same mask; another seed gives another one."""
    x = floats(32, 32, low=0.5, high=2.0)
    first = executor(_dropout_graph(x.shape, 0.5, seed=1), x)[0]
    again = executor(_dropout_graph(x.shape, 0.5, seed=1), x)[0]
    other = executor(_dropout_graph(x.shape, 0.5, seed=2), x)[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first != 0, other != 0)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_erf_reference_without_scipy(monkeypatch: pytest.MonkeyPatch, shape: tuple) -> None:
    """The erf reference falls back to math.erf when scipy is absent, for every rank."""
    import math
    import sys

    from ember.ops.elementwise import _erf

    monkeypatch.setitem(sys.modules, "scipy.special", None)
    x = np.linspace(-3, 3, int(np.prod(shape))).reshape(shape).astype(np.float32)
    expected = np.vectorize(math.erf)(x.astype(np.float64)).astype(np.float32)
    got = _erf(x)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)
