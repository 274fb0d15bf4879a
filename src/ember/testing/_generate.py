"""Random programs for the fuzzer, each written twice from one random description.

A `Program` is a list of inputs and a list of statements. Each statement has an Ember
spelling (operators, tensor methods, numpy functions on tensors, `ember.*`,
`ember.nn.functional`) and a numpy spelling (float64, or the integer dtype, with `O.rnd`
rounding every float result to the program's dtype). The generator evaluates the numpy
spelling as it goes, so every statement it keeps is valid numpy on the actual inputs and its
shape and values are known to the statements after it.
"""

from __future__ import annotations

import math

import numpy as np

from ember.testing import _oracle as O
from ember.testing._program import GLOBALS, INTS, MAX_SIZE, Input, Op, Program
from ember.testing._statements import Statements

# -- input values --------------------------------------------------------------------------------

_SPECIAL_F32 = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-40, -1e-40, 3e38, -3e38, 1.0, 0.5,
                -2.5, 1e-30]
_SPECIAL_F64 = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-320, -5e-320, 1.7e308, -1e300, 1.0,
                0.5, -2.5, 1e-300]


def make_array(rng: np.random.Generator, dt: str, shape: tuple[int, ...], special: float,
               positive: bool = False) -> np.ndarray:
    """Random values of dtype `dt`; `special` is the share of NaN, inf, -0.0, subnormal, huge."""
    if dt == "bool":
        return rng.random(shape) < 0.5
    if dt in INTS:
        info = np.iinfo(O.NUMPY[dt])
        low = 0 if positive else -9
        values = rng.integers(low, 10, size=shape)
        out = values.astype(O.NUMPY[dt])
        if special:
            pick = rng.random(shape) < special
            extremes = np.array([info.min, info.max, -1, 0], dtype=O.NUMPY[dt])
            out = np.where(pick, rng.choice(extremes, size=shape), out)
            if positive:
                out = np.abs(out)
        return out.astype(O.NUMPY[dt])
    kind = rng.choice(["normal", "normal", "scaled", "halves", "wide"])
    if kind == "normal":
        values = rng.standard_normal(shape)
    elif kind == "scaled":
        values = rng.standard_normal(shape) * 10.0 ** rng.integers(-4, 5)
    elif kind == "halves":
        values = rng.integers(-8, 9, size=shape) / 2
    else:
        top = 37 if dt == "f32" else 300
        values = rng.choice([-1.0, 1.0], size=shape) * 10.0 ** rng.uniform(-top, top, size=shape)
    if special:
        palette = _SPECIAL_F32 if dt == "f32" else _SPECIAL_F64
        pick = rng.random(shape) < special
        values = np.where(pick, rng.choice(palette, size=shape), values)
    if positive:
        values = np.abs(values) + (0.5 if kind != "wide" else 0.0)
    with np.errstate(all="ignore"):
        return np.asarray(values).astype(O.NUMPY[dt])


# -- the generator ---------------------------------------------------------------------------------

_DIMS = [1, 1, 2, 2, 3, 3, 4, 5, 7, 8, 16, 17]
KINDS = {  # weight of each kind of statement
    "unary": 14, "binary": 14, "scalar": 6, "compare": 5, "logical": 2, "where": 4, "clip": 3,
    "cast": 4, "reduce": 9, "arg": 2, "matmul": 6, "linear": 2, "conv": 4, "pool": 3,
    "norm": 4, "softmax": 3, "reshape": 4, "transpose": 3, "index": 5, "gather": 2, "concat": 3,
    "split": 1, "pad": 3, "broadcast": 2, "squeeze": 2, "loss": 2, "embedding": 1,
}


class Builder(Statements):
    """Builds one random program, statement by statement, evaluating its numpy spelling."""

    def __init__(self, rng: np.random.Generator, main: str, special: float) -> None:
        self.rng = rng
        self.main = main
        self.special = special
        self.inputs: list[Input] = []
        self.ops: list[Op] = []
        self.types: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.env: dict[str, np.ndarray] = {}
        self.count = 0

    # -- values --

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count - 1}"

    def shape(self, rank: int | None = None) -> tuple[int, ...]:
        rng = self.rng
        if rank is None:
            rank = int(rng.choice([0, 1, 1, 2, 2, 2, 3, 3, 4]))
        dims = [int(rng.choice(_DIMS)) if rng.random() > 0.03 else 0 for _ in range(rank)]
        while math.prod(dims) > 256:
            dims[int(np.argmax(dims))] //= 2
        return tuple(dims)

    def fresh(self, dt: str, shape: tuple[int, ...], positive: bool = False,
              const: bool | None = False) -> str:
        name = self._name("x")
        array = make_array(self.rng, dt, shape, self.special, positive)
        const = bool(self.rng.random() < 0.3) if const is None else const
        if const:
            name = "c" + name[1:]
        self.inputs.append(Input(name, dt, array, const))
        self.types[name] = (dt, tuple(array.shape))
        self.env[name] = O.rep(array, dt)
        return name

    def pick(self, dts: tuple[str, ...], ok=lambda shape: True, fresh_shape=None,
             secondary: bool = False) -> str:
        """An existing value of one of `dts` whose shape is `ok` (recent ones first), or a new
        input. Only a `secondary` operand (one that meets a traced tensor in the same call) may
        be a constant: on its own, a numpy constant would be computed by numpy, not Ember."""
        names = [n for n, (dt, shape) in self.types.items() if dt in dts and ok(shape)
                 and (secondary or not n.startswith("c"))]
        if names and self.rng.random() < 0.75:
            weights = np.arange(1, len(names) + 1, dtype=float) ** 2
            return names[int(self.rng.choice(len(names), p=weights / weights.sum()))]
        dt = self.main if self.main in dts else str(self.rng.choice(dts))
        for _ in range(20):
            shape = fresh_shape() if fresh_shape else self.shape()
            if ok(shape):
                return self.fresh(dt, shape, const=None if secondary else False)
        return ""

    def emit(self, ember: str, numpy: str, deps: tuple[str, ...], dt: str,
             sign_exact: bool = False) -> bool:
        """Keep the statement if numpy computes it and its result is small."""
        try:
            with O.noise(None):
                value = np.asarray(eval(numpy, GLOBALS, dict(self.env)))
        except Exception:
            return False
        if value.size > MAX_SIZE or value.dtype != np.dtype(O.HELD[dt]):
            return False
        name = self._name("v")
        self.ops.append(Op(name, dt, ember, numpy, tuple(dict.fromkeys(deps)), sign_exact))
        self.types[name] = (dt, tuple(value.shape))
        self.env[name] = value
        return True

    def choice(self, options):
        return options[int(self.rng.choice(len(options)))]

    def broadcastable(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            return shape
        if roll < 0.55:
            return ()
        if roll < 0.7 and shape:
            return shape[int(rng.integers(0, len(shape) + 1)):]
        if roll < 0.85:
            return tuple(1 if rng.random() < 0.5 else d for d in shape)
        if len(shape) < 4:
            return (int(rng.choice([1, 2, 3])), *shape)
        return shape

    def fits(self, a: tuple[int, ...], b: tuple[int, ...]) -> bool:
        try:
            np.broadcast_shapes(a, b)
            return True
        except ValueError:
            return False

    def dims(self, name: str) -> tuple[int, ...]:
        return self.types[name][1]

    def dt(self, name: str) -> str:
        return self.types[name][0]

def generate(rng: np.random.Generator, max_ops: int = 8) -> Program:
    """One random program of 1 to `max_ops` statements."""
    main = str(rng.choice(["f32"] * 6 + ["f64"] * 2 + ["i32", "i64", "bool"]))
    special = float(rng.choice([0.0, 0.0, 0.05, 0.2]))
    builder = Builder(rng, main, special)
    kinds = sorted(KINDS)
    weights = np.array([KINDS[k] for k in kinds], dtype=float)
    target = int(rng.integers(1, max_ops + 1))
    attempts = 0
    while len(builder.ops) < target and attempts < 6 * target:
        attempts += 1
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        getattr(builder, f"op_{kind}")()
    if not builder.ops:
        builder.op_unary() or builder.op_reshape()
    names = [op.name for op in builder.ops]
    outputs = [names[-1]] if names else [builder.inputs[0].name]
    used = {dep for op in builder.ops for dep in op.deps}
    leaves = [n for n in names[:-1] if n not in used]
    outputs += [str(n) for n in rng.permutation(leaves)[: int(rng.integers(0, 3))]]
    if rng.random() < 0.2:  # fan-out to an output, the same output twice, an input returned
        pool = names + [i.name for i in builder.inputs]
        outputs.append(str(rng.choice(pool)))
    return Program(builder.inputs, builder.ops, outputs).pruned()
