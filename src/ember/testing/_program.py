"""A fuzz program: inputs and statements, each written for Ember and for numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ember.testing import _oracle as O

FLOATS, INTS = ("f32", "f64"), ("i32", "i64")
NUMERIC = FLOATS + INTS
_RANK = {"bool": 0, "i32": 1, "i64": 2, "f32": 3, "f64": 4}
MAX_SIZE = 600  # elements of any value
GLOBALS = {"np": np, "O": O, "inf": math.inf, "nan": math.nan}


def promote(a: str, b: str) -> str:
    """Ember's promotion of two tensor dtypes (ember.frontend.tracer.promote)."""
    if (a in FLOATS) != (b in FLOATS) and "bool" not in (a, b):
        return a if a in FLOATS else b
    return a if _RANK[a] >= _RANK[b] else b


@dataclass
class Input:
    name: str
    dt: str
    array: np.ndarray  # in the Ember dtype
    const: bool = False  # captured by the traced function as a constant, not an argument


@dataclass
class Op:
    name: str
    dt: str
    ember: str
    numpy: str
    deps: tuple[str, ...]
    sign_exact: bool = False  # the sign of a zero result is defined (checked)


@dataclass
class Program:
    inputs: list[Input]
    ops: list[Op]
    outputs: list[str]
    label: str = ""
    dtypes: dict[str, str] = field(default_factory=dict)

    @property
    def signed_zeros(self) -> bool:
        return all(op.sign_exact for op in self.ops)

    def dtype(self, name: str) -> str:
        for item in (*self.inputs, *self.ops):
            if item.name == name:
                return item.dt
        raise KeyError(name)

    def ember_source(self) -> str:
        args = ", ".join(i.name for i in self.inputs if not i.const)
        lines = [f"def program({args}):"]
        lines += [f"    {op.name} = {op.ember}" for op in self.ops]
        outs = ", ".join(self.outputs)
        lines.append(f"    return {outs}" if len(self.outputs) == 1 else f"    return ({outs})")
        return "\n".join(lines) + "\n"

    def numpy_source(self) -> str:
        args = ", ".join(i.name for i in self.inputs)
        lines = [f"def reference({args}):"]
        lines += [f"    {op.name} = {op.numpy}" for op in self.ops]
        lines.append(f"    return ({', '.join(self.outputs)},)")
        return "\n".join(lines) + "\n"

    def pruned(self) -> Program:
        """Without the statements and inputs that no output needs."""
        needed = set(self.outputs)
        ops = []
        for op in reversed(self.ops):
            if op.name in needed:
                needed.update(op.deps)
                ops.append(op)
        inputs = [i for i in self.inputs if i.name in needed]
        return replace(self, inputs=inputs, ops=ops[::-1])
