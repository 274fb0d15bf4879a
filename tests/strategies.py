"""Hypothesis strategies for random, valid Ember graphs, shared by the IR and pass tests.

    from tests.strategies import graphs, graph_inputs

    @given(graphs())
    def test_something(graph):
        verify(graph)
        arrays = graph_inputs(graph, seed=0)
        results = ember.interpret(graph, *arrays)

`graphs()` builds each graph with `GraphBuilder`, so every op goes through its registry row and
the result always verifies. It draws from: elementwise unary and binary ops (with numpy
broadcasting), comparisons feeding `where`, reductions (`sum mean max min`, any axes,
keepdims), `matmul` (1-D and batched), shape ops (`reshape transpose slice concat expand_dims
squeeze split`), `softmax`, `cast` between float dtypes, and `const` with small inline data.
Graphs may have several outputs, outputs that are graph inputs, the same output twice, and
values that nothing uses.

Shapes stay small (rank <= 3, dimensions 1 to 4) so a graph runs in microseconds.

Numerics stay tame: the strategy tracks an upper bound of |x| for every value (and a lower
bound for values known to be positive), uses `log`, `sqrt`, `rsqrt`, `reciprocal` and the
divisor of `div` only on values bounded away from zero, and skips any op whose result could
exceed `MAX_MAGNITUDE`. Graph inputs named `%p<i>` must be positive and `%x<i>` may have any
sign; `graph_inputs` follows that convention, drawing positive inputs from [0.5, 2] and the
others from [-2, 2].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from ember.ir.graph import Graph, GraphBuilder, Value
from ember.ir.ops import broadcast_shapes
from ember.ir.types import DType, TensorType

MAX_MAGNITUDE = 1e4  # no value of a generated graph can exceed this in absolute value
INPUT_BOUND = 2.0  # graph inputs lie in [-2, 2]; positive ones in [0.5, 2]
POSITIVE_LOW = 0.5
FLOAT_DTYPES = (DType.F32, DType.F64)

UNARY = ("neg", "abs", "relu", "tanh", "sigmoid", "exp", "log", "sqrt", "rsqrt", "reciprocal",
         "sin", "cos", "floor")
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum")
REDUCTIONS = ("sum", "mean", "max", "min")
KINDS = ("unary", "binary", "where", "reduce", "matmul", "reshape", "transpose", "slice",
         "concat", "expand_dims", "squeeze", "split", "softmax", "cast", "const")


@dataclass(frozen=True)
class Range:
    """What is known about a value's elements: |x| <= bound, and x >= low when low is set."""

    bound: float
    low: float | None = None  # a positive lower bound, or None when x may be <= 0

    @property
    def positive(self) -> bool:
        return self.low is not None and self.low > 0


def _unary_range(op: str, x: Range) -> Range | None:
    """The range of `op(x)`, or None when `op` is not safe on `x`."""
    b, low = x.bound, x.low
    rules: dict[str, Callable[[], Range | None]] = {
        "neg": lambda: Range(b),
        "abs": lambda: Range(b),
        "relu": lambda: Range(b),
        "floor": lambda: Range(b + 1),
        "tanh": lambda: Range(min(b, 1.0)),
        "sin": lambda: Range(1.0),
        "cos": lambda: Range(1.0),
        "sigmoid": lambda: Range(1.0, 1 / (1 + math.exp(min(b, 50)))),
        "exp": lambda: Range(math.exp(b), math.exp(-b)) if b <= 8 else None,
        "log": lambda: Range(max(abs(math.log(low)), abs(math.log(b))))
        if low and low >= 1e-3 else None,
        "sqrt": lambda: Range(math.sqrt(b), math.sqrt(low)) if low else None,
        "rsqrt": lambda: Range(1 / math.sqrt(low), 1 / math.sqrt(b))
        if low and low >= 1e-2 else None,
        "reciprocal": lambda: Range(1 / low, 1 / b) if low and low >= 1e-2 else None,
    }
    return rules[op]()


def _binary_range(op: str, a: Range, b: Range) -> Range | None:
    both = a.positive and b.positive
    if op == "add":
        return Range(a.bound + b.bound, a.low + b.low if both else None)  # type: ignore[operator]
    if op == "sub":
        return Range(a.bound + b.bound)
    if op == "mul":
        return Range(a.bound * b.bound, a.low * b.low if both else None)  # type: ignore[operator]
    if op == "div":
        if not b.positive or b.low < 1e-2:  # type: ignore[operator]
            return None
        return Range(a.bound / b.low, a.low / b.bound if a.positive else None)  # type: ignore
    if op == "maximum":
        lows = [r.low for r in (a, b) if r.positive]
        return Range(max(a.bound, b.bound), max(lows) if lows else None)  # type: ignore[type-var]
    # minimum
    return Range(max(a.bound, b.bound), min(a.low, b.low) if both else None)  # type: ignore


def _merge(ranges: list[Range]) -> Range:
    """A range holding every value of all `ranges` (concat, where, split)."""
    lows = [r.low for r in ranges]
    low = min(lows) if all(r.positive for r in ranges) else None  # type: ignore[type-var]
    return Range(max(r.bound for r in ranges), low)


class _Drawer:
    """Grows one graph: a pool of values with their types and ranges, one method per op kind."""

    def __init__(self, draw: Callable, dtype: DType) -> None:
        self.draw = draw
        self.dtype = dtype
        self.builder = GraphBuilder("random")
        self.ranges: dict[Value, Range] = {}
        self.pool: list[Value] = []  # float values that ops may use

    # -- helpers -------------------------------------------------------------------------------

    def add(self, value: Value, known: Range) -> bool:
        """Keep `value` for later ops unless its range is too wide; True if kept."""
        if known.bound > MAX_MAGNITUDE:
            return False
        self.ranges[value] = known
        self.pool.append(value)
        return True

    def pick(self, accept: Callable[[Value], bool] = lambda v: True) -> Value | None:
        candidates = [v for v in self.pool if accept(v)]
        return self.draw(st.sampled_from(candidates)) if candidates else None

    def shape(self, min_rank: int = 0) -> tuple[int, ...]:
        rank = self.draw(st.integers(min_rank, 3))
        return tuple(self.draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))

    def new_input(self, shape: tuple[int, ...], dtype: DType | None = None) -> Value:
        positive = self.draw(st.booleans())
        hint = f"{'p' if positive else 'x'}{len(self.builder.inputs)}"
        value = self.builder.input(TensorType(dtype or self.dtype, shape), hint)
        self.add(value, Range(INPUT_BOUND, POSITIVE_LOW if positive else None))
        return value

    def new_const(self, shape: tuple[int, ...], dtype: DType | None = None) -> Value:
        size = math.prod(shape)
        positive = self.draw(st.booleans())
        elements = st.floats(0.25 if positive else -2.0, 2.0, width=32)
        data = np.array(self.draw(st.lists(elements, min_size=size, max_size=size)))
        value = self.builder.const(data.reshape(shape).astype((dtype or self.dtype).numpy))
        self.add(value, Range(INPUT_BOUND, 0.25 if positive else None))
        return value

    def operand_like(self, shape: tuple[int, ...], dtype: DType) -> Value:
        """A pool value, a new input or a new const whose shape broadcasts with `shape`."""
        def fits(v: Value) -> bool:
            return v.dtype is dtype and _broadcasts(v.shape, shape)

        choice = self.draw(st.sampled_from(("pool", "input", "const")))
        if choice == "pool" and (found := self.pick(fits)) is not None:
            return found
        keep = self.draw(st.integers(0, len(shape)))
        suffix = tuple(1 if self.draw(st.booleans()) else d for d in shape[len(shape) - keep:])
        return self.new_input(suffix, dtype) if choice == "input" else self.new_const(suffix, dtype)

    # -- one method per op kind; each returns True when it added a node ----------------------

    def unary(self) -> bool:
        op = self.draw(st.sampled_from(UNARY))
        x = self.pick(lambda v: _unary_range(op, self.ranges[v]) is not None)
        if x is None:
            return False
        return self.add(getattr(self.builder, op)(x), _unary_range(op, self.ranges[x]))

    def binary(self) -> bool:
        a = self.pick()
        if a is None:
            return False
        b = self.operand_like(a.shape, a.dtype)
        a, b = (b, a) if self.draw(st.booleans()) else (a, b)
        op = self.draw(st.sampled_from(BINARY))
        known = _binary_range(op, self.ranges[a], self.ranges[b])
        return known is not None and self.add(getattr(self.builder, op)(a, b), known)

    def where(self) -> bool:
        a = self.pick()
        if a is None:
            return False
        b = self.operand_like(a.shape, a.dtype)
        condition = getattr(self.builder, self.draw(st.sampled_from(("lt", "gt", "le"))))(a, b)
        first, second = (a, b) if self.draw(st.booleans()) else (b, a)
        known = _merge([self.ranges[a], self.ranges[b]])
        return self.add(self.builder.where(condition, first, second), known)

    def reduce(self) -> bool:
        x = self.pick()
        if x is None:
            return False
        axes = self.draw(st.lists(st.integers(0, max(x.ndim - 1, 0)), unique=True,
                                  max_size=x.ndim))
        op = self.draw(st.sampled_from(REDUCTIONS))
        known = self.ranges[x]
        if op == "sum":
            count = math.prod(x.shape[a] for a in axes)
            known = Range(known.bound * count, known.low)
        result = getattr(self.builder, op)(x, axes=sorted(axes), keepdims=self.draw(st.booleans()))
        return self.add(result, known)

    def matmul(self) -> bool:
        a = self.pick(lambda v: v.ndim >= 1)
        if a is None:
            return False
        inner = a.shape[-1]
        shape = (inner,) if self.draw(st.booleans()) else (inner, self.draw(st.integers(1, 4)))
        b = self.pick(lambda v: v.dtype is a.dtype and v.shape == shape)
        b = b or (self.new_input(shape, a.dtype) if self.draw(st.booleans())
                  else self.new_const(shape, a.dtype))
        ra, rb = self.ranges[a], self.ranges[b]
        low = ra.low * rb.low * inner if ra.positive and rb.positive else None  # type: ignore
        return self.add(self.builder.matmul(a, b), Range(ra.bound * rb.bound * inner, low))

    def reshape(self) -> bool:
        x = self.pick()
        if x is None:
            return False
        dims = list(x.shape)
        candidates = [(math.prod(dims),), (*dims, 1), (1, *dims)]
        candidates += [(*dims[:i], dims[i] * dims[i + 1], *dims[i + 2:])
                       for i in range(len(dims) - 1)]
        shape = self.draw(st.sampled_from(candidates))
        return self.add(self.builder.reshape(x, shape=shape), self.ranges[x])

    def transpose(self) -> bool:
        x = self.pick(lambda v: v.ndim >= 1)
        if x is None:
            return False
        perm = self.draw(st.permutations(range(x.ndim)))
        return self.add(self.builder.transpose(x, perm=perm), self.ranges[x])

    def slice(self) -> bool:
        x = self.pick(lambda v: v.ndim >= 1)
        if x is None:
            return False
        starts, stops, steps = [], [], []
        for size in x.shape:
            step = self.draw(st.sampled_from((1, 1, 2, -1)))
            if step > 0:
                start = self.draw(st.integers(0, size - 1))
                stop = self.draw(st.integers(start + 1, size))
            else:  # walk down from `start` through `stop + 1`; a stop of -1 reaches index 0
                start = self.draw(st.integers(0, size - 1))
                stop = self.draw(st.integers(-1, start - 1))
            starts.append(start)
            stops.append(stop)
            steps.append(step)
        result = self.builder.slice(x, starts=starts, stops=stops, steps=steps)
        return self.add(result, self.ranges[x])

    def concat(self) -> bool:
        x = self.pick(lambda v: v.ndim >= 1)
        if x is None:
            return False
        axis = self.draw(st.integers(0, x.ndim - 1))

        def fits(v: Value) -> bool:
            return v.dtype is x.dtype and v.ndim == x.ndim and all(
                a == b for i, (a, b) in enumerate(zip(v.shape, x.shape, strict=True)) if i != axis)

        parts = [x] + [self.pick(fits) for _ in range(self.draw(st.integers(1, 2)))]
        parts = [p for p in parts if p is not None]
        result = self.builder.concat(*parts, axis=axis)
        return self.add(result, _merge([self.ranges[p] for p in parts]))

    def expand_dims(self) -> bool:
        x = self.pick(lambda v: v.ndim <= 2)
        if x is None:
            return False
        axis = self.draw(st.integers(0, x.ndim))
        return self.add(self.builder.expand_dims(x, axes=[axis]), self.ranges[x])

    def squeeze(self) -> bool:
        x = self.pick(lambda v: 1 in v.shape)
        if x is None:
            return False
        ones = [i for i, d in enumerate(x.shape) if d == 1]
        axes = self.draw(st.lists(st.sampled_from(ones), min_size=1, unique=True))
        return self.add(self.builder.squeeze(x, axes=sorted(axes)), self.ranges[x])

    def split(self) -> bool:
        x = self.pick(lambda v: any(d >= 2 for d in v.shape))
        if x is None:
            return False
        axis = self.draw(st.sampled_from([i for i, d in enumerate(x.shape) if d >= 2]))
        first = self.draw(st.integers(1, x.shape[axis] - 1))
        parts = self.builder.split(x, axis=axis, sizes=[first, x.shape[axis] - first])
        for part in parts:
            self.add(part, self.ranges[x])
        return True

    def softmax(self) -> bool:
        x = self.pick(lambda v: v.ndim >= 1)
        if x is None:
            return False
        axis = self.draw(st.integers(-x.ndim, x.ndim - 1))
        low = math.exp(-2 * self.ranges[x].bound) / x.shape[axis]
        return self.add(self.builder.softmax(x, axis=axis), Range(1.0, low))

    def cast(self) -> bool:
        x = self.pick()
        if x is None:
            return False
        other = DType.F64 if x.dtype is DType.F32 else DType.F32
        return self.add(self.builder.cast(x, dtype=other.value), self.ranges[x])

    def const(self) -> bool:
        self.new_const(self.shape())
        return True


def _broadcasts(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        return broadcast_shapes(a, b) == b
    except Exception:
        return False


@st.composite
def graphs(draw: Callable, max_nodes: int = 8, max_inputs: int = 3) -> Graph:
    """A random valid graph of up to `max_nodes` drawn ops over 1 to `max_inputs` inputs."""
    drawer = _Drawer(draw, draw(st.sampled_from(FLOAT_DTYPES)))
    for _ in range(draw(st.integers(1, max_inputs))):
        drawer.new_input(drawer.shape())
    steps = draw(st.integers(1, max_nodes))
    for _ in range(steps):
        getattr(drawer, draw(st.sampled_from(KINDS)))()
    values = drawer.builder.inputs + [v for n in drawer.builder.nodes for v in n.outputs]
    # Outputs: the last value made, plus up to two more of anything (inputs included).
    outputs = [values[-1], *draw(st.lists(st.sampled_from(values), max_size=2))]
    return drawer.builder.build(outputs)


def graph_inputs(graph: Graph, seed: int) -> list[np.ndarray]:
    """Seeded random arrays for `graph`'s inputs, following the `%p<i>` / `%x<i>` convention.

    Float inputs whose hint starts with "p" lie in [0.5, 2], other float inputs in [-2, 2];
    integer inputs in [-3, 3]; bool inputs are fair coin flips. The same seed gives the same
    arrays.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for value in graph.inputs:
        dtype = value.type.dtype
        if dtype is DType.BOOL:
            array = rng.random(value.shape) < 0.5
        elif dtype.is_int:
            array = rng.integers(-3, 4, size=value.shape)
        elif value.hint.startswith("p"):
            array = rng.uniform(POSITIVE_LOW, INPUT_BOUND, size=value.shape)
        else:
            array = rng.uniform(-INPUT_BOUND, INPUT_BOUND, size=value.shape)
        arrays.append(np.asarray(array, dtype=dtype.numpy))
    return arrays
