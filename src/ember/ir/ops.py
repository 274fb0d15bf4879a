"""The op registry: one `OpDef` row per op is the single source of truth about it.

A row holds the op's attribute schema, its shape/dtype rule, its numpy reference and its
flags. The verifier, the interpreter, constant folding, autodiff, lowering and the numerical
tests all read that row, so adding an op touches one place. The rows themselves live in
`ember/ops/*.py`, one `register_op(OpDef(...))` each; `import ember` imports them all, so the
registry is complete before anything reads it.

    register_op(OpDef("relu", infer=same_as_first, reference=lambda x: np.maximum(x, 0),
                      elementwise=True))

Gradient rules (`grad`) and lowerings (`lower`) are filled in by the stages that own them with
`set_rule(name, grad=...)`, which replaces the row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.errors import ShapeError
from ember.ir.attrs import Attrs, AttrValue, Const
from ember.ir.types import DType, TensorType

InferFn = Callable[..., "TensorType | tuple[TensorType, ...]"]
ReferenceFn = Callable[..., "np.ndarray | tuple[np.ndarray, ...]"]

_REQUIRED = object()


@dataclass(frozen=True, slots=True)
class Attr:
    """Schema of one attribute: its kind and default (`REQUIRED` when it has none)."""

    kind: str  # int | float | bool | str | ints | floats | const | dtype
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


REQUIRED = _REQUIRED


_I64 = np.iinfo(np.int64)


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"expected an integer, got {value!r}")
    if not _I64.min <= value <= _I64.max:  # generated code computes with i64
        raise TypeError(f"integer {value} does not fit in i64")
    return int(value)


def _as_ints(value: object) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),)
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"expected a list of integers, got {value!r}")
    return tuple(_as_int(v) for v in value)


def _as_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _as_bool(value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"expected true or false, got {value!r}")
    return bool(value)


def _as_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _as_dtype(value: object) -> str:
    if isinstance(value, DType):
        return value.value
    if isinstance(value, str) and value in DType._value2member_map_:
        return value
    try:
        return DType.from_numpy(value).value
    except TypeError as err:
        names = ", ".join(d.value for d in DType)
        raise TypeError(f"expected a dtype ({names}), got {value!r}") from err


def _as_const(value: object) -> Const:
    if isinstance(value, Const):
        return value
    return Const(np.asarray(value))


_CONVERT: dict[str, Callable[[object], AttrValue]] = {
    "int": _as_int,
    "ints": _as_ints,
    "float": _as_float,
    "floats": lambda v: tuple(_as_float(x) for x in (v if isinstance(v, (tuple, list)) else (v,))),
    "bool": _as_bool,
    "str": _as_str,
    "dtype": _as_dtype,
    "const": _as_const,
}


@dataclass(frozen=True, slots=True)
class OpDef:
    """Everything Ember knows about one op."""

    name: str
    infer: InferFn  # (*input_types, **attrs) -> output type(s); raises ShapeError
    reference: ReferenceFn  # (*arrays, **attrs) -> array(s): numpy semantics, the ground truth
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    arity: tuple[int, int | None] = (1, 1)  # (min, max) inputs; max None = variadic
    pure: bool = True  # False: may not be removed, merged or folded
    elementwise: bool = False  # one output element from the same-index input elements
    grad: Callable[..., Any] | None = None  # gradient rule, filled in by autodiff
    lower: Callable[..., Any] | None = None  # loop-IR lowering, filled in by the backend
    doc: str = ""

    def make_attrs(self, given: Mapping[str, object]) -> Attrs:
        """Check given attributes against the schema, convert them, and fill in defaults."""
        schema = {**self.attrs, **COMMON_ATTRS}
        unknown = sorted(set(given) - set(schema))
        if unknown:
            known = ", ".join(sorted(self.attrs)) or "none"
            raise ShapeError(f"{self.name}: unknown attribute {unknown[0]!r} (known: {known})")
        values: dict[str, AttrValue] = {}
        for name, spec in schema.items():
            value = given.get(name)
            if value is None:
                if spec.required:
                    raise ShapeError(f"{self.name}: missing required attribute {name!r}")
                if spec.default is not None:
                    values[name] = spec.default
                continue
            try:
                values[name] = _CONVERT[spec.kind](value)
            except TypeError as err:
                raise ShapeError(f"{self.name}: attribute {name!r}: {err}") from None
        return Attrs(values)

    def infer_types(self, types: tuple[TensorType, ...], attrs: Mapping[str, AttrValue]
                    ) -> tuple[TensorType, ...]:
        """Output types for these input types; ShapeError names the op and the input types."""
        low, high = self.arity
        if len(types) < low or (high is not None and len(types) > high):
            most = high if high is not None else "any"
            expected = f"{low}" if low == high else f"{low} to {most}"
            raise ShapeError(f"{self.name}: expected {expected} inputs, got {len(types)}")
        try:
            result = self.infer(*types, **self.own_attrs(attrs))
        except ShapeError as err:
            shapes = ", ".join(str(t) for t in types)
            raise ShapeError(f"{self.name}: {err}; inputs {shapes or '(none)'}") from None
        return result if isinstance(result, tuple) else (result,)

    def evaluate(self, arrays: tuple[np.ndarray, ...], attrs: Mapping[str, AttrValue]
                 ) -> tuple[np.ndarray, ...]:
        """Run the numpy reference; always returns a tuple.

        bf16 inputs (ml_dtypes arrays, which most numpy code does not take as floats) are given
        to it as f32, and its f32 results are rounded back to bf16: the op computes in f32 and
        rounds once. (An op's operands share one float dtype, so an f32 result of bf16 inputs
        is a bf16 value; a cast to f32 is exact either way.)"""
        narrow = [a.dtype for a in arrays if a.dtype.name == "bfloat16"]
        if narrow:
            arrays = tuple(a.astype(np.float32) if a.dtype == narrow[0] else a for a in arrays)
        result = self.reference(*arrays, **self.own_attrs(attrs))
        results = result if isinstance(result, tuple) else (result,)
        if narrow:
            results = tuple(r.astype(narrow[0]) if getattr(r, "dtype", None) == np.float32
                            else r for r in results)
        return results

    def own_attrs(self, attrs: Mapping[str, AttrValue]) -> dict[str, AttrValue]:
        """The op's own attributes, without annotations every node may carry (COMMON_ATTRS)."""
        return {k: v for k, v in attrs.items() if k not in COMMON_ATTRS}


# Annotations any node may carry, set by passes rather than by the op's meaning: the memory
# plan's buffer and arena offset, and whether the result overwrites an input in place.
COMMON_ATTRS: dict[str, Attr] = {
    "buffer": Attr("int", None),
    "offset": Attr("int", None),
    "inplace": Attr("int", None),  # index of the input whose storage the result reuses
    "offsets": Attr("ints", None),  # arena offsets of a multi-result node (-1: graph output)
}

# Ops whose result is their input's bytes under another shape: with `inplace = 0` (the memory
# plan gave the result the input's storage) they run no code at all.
VIEW_OPS = frozenset({"reshape", "flatten", "squeeze", "expand_dims"})

OPS: dict[str, OpDef] = {}


def register_op(opdef: OpDef) -> OpDef:
    """Add a row to the registry."""
    if opdef.name in OPS:
        raise ValueError(f"op {opdef.name!r} is already registered")
    OPS[opdef.name] = opdef
    return opdef


def set_rule(name: str, **rules: Any) -> OpDef:
    """Replace fields of a registered row (a stage adding its `grad` or `lower` rule)."""
    OPS[name] = dataclasses.replace(get_op(name), **rules)
    return OPS[name]


def get_op(name: str) -> OpDef:
    """The row of `name`; raises ShapeError for an unknown op."""
    opdef = OPS.get(name)
    if opdef is None:
        raise ShapeError(f"unknown op {name!r}")
    return opdef


# ---------------------------------------------------------------------------------------------
# Shared shape rules.


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy broadcasting of shapes; ShapeError when two dimensions are neither equal nor 1."""
    ndim = max((len(s) for s in shapes), default=0)
    result = []
    for axis in range(-ndim, 0):
        dims = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(dims) > 1:
            listed = " and ".join(str(list(s)) for s in shapes)
            raise ShapeError(
                f"shapes {listed} do not broadcast (axis {axis}: sizes {sorted(dims)})")
        result.append(dims.pop() if dims else 1)
    return tuple(result)


def normalize_axis(axis: int, ndim: int) -> int:
    """`axis` in [0, ndim); negative axes count from the end."""
    if not -ndim <= axis < max(ndim, 1):
        raise ShapeError(f"axis {axis} is out of range for rank {ndim}")
    return axis % ndim if ndim else 0


def normalize_axes(axes: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """Sorted, non-negative, unique axes."""
    normalized = tuple(sorted(normalize_axis(a, ndim) for a in axes))
    if len(set(normalized)) != len(normalized):
        raise ShapeError(f"repeated axis in {list(axes)}")
    return normalized


def same_as_first(first: TensorType, *rest: TensorType, **attrs: AttrValue) -> TensorType:
    """Shape rule of ops whose output has the type of their first input."""
    return first
