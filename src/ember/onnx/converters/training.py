"""Converters of the optimizers of ONNX's `ai.onnx.preview.training` domain: Adagrad, Adam
and Momentum (standard and Nesterov), each one update step of n tensors at once.

Each takes the learning rate R and the step count T as scalars computed at run time, then the n
parameters X, their gradients G and the optimizer states; it returns the n new parameters,
then the new states. The per-step scalars (the decayed rate, the bias corrections, whether T
is the first step) are computed in float64 from R and T, as ONNX's reference does, and applied
to the tensors in their own dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from ember.frontend import tracer
from ember.frontend.tensor import Tensor
from ember.ir.types import DType
from ember.onnx.converters.base import CONVERTERS, Converter, NodeContext, Outputs

DOMAIN = "ai.onnx.preview.training"


@dataclass(frozen=True)
class DomainConverter(Converter):
    """A converter of an operator of another domain than ONNX's: its versions are that
    domain's, and the opset it is asked about is the one the model imports for the domain."""

    domain: str = DOMAIN

    def version_at(self, opset: int) -> int | None:
        name = self.op_type.rsplit(".", 1)[-1]
        try:
            return int(onnx.defs.get_schema(name, opset, self.domain).since_version)
        except onnx.defs.SchemaError:
            return None


def _register(op: str, versions: tuple[int, ...]) -> Callable[[Callable[[NodeContext], Outputs]],
                                                              Callable[[NodeContext], Outputs]]:
    def register(fn: Callable[[NodeContext], Outputs]) -> Callable[[NodeContext], Outputs]:
        key = f"{DOMAIN}.{op}"
        if key in CONVERTERS:
            raise ValueError(f"ONNX op {key!r} already has a converter")
        doc = (fn.__doc__ or "").strip().splitlines()
        CONVERTERS[key] = DomainConverter(key, fn, versions, doc[0] if doc else "")
        return fn

    return register


def _scalars(node: NodeContext) -> tuple[Tensor, Tensor]:
    """R and T as float64 scalars."""
    rate, step = node.tensor(0), node.tensor(1)
    for index, (value, what) in enumerate(((rate, "R"), (step, "T"))):
        if value.ndim != 0 and value.shape != (1,):
            raise node.error(f"input {index} ({what}) must be a scalar, got shape "
                             f"{list(value.shape)}")
    return (node.emit("cast", rate.reshape(()), dtype="f64"),
            node.emit("cast", step.reshape(()), dtype="f64"))


def _groups(node: NodeContext, count: int) -> list[list[Tensor]]:
    """The n tensors of each of `count` groups after R and T (X, G, then the states), each
    group's tensors of one float dtype and matching shapes across groups."""
    tensors = node.input_count - 2
    if tensors < count or tensors % count:
        raise node.error(f"takes R, T and {count} groups of n tensors; got {tensors} tensors "
                         "after R and T")
    n = tensors // count
    groups = [[node.tensor(2 + g * n + i) for i in range(n)] for g in range(count)]
    for i in range(n):
        first = groups[0][i]
        if not first.dtype_.is_float:
            raise node.error(f"parameter {i} is {first.dtype_.value}; the optimizers take "
                             "float tensors")
        for group in groups[1:]:
            if group[i].shape != first.shape or group[i].dtype_ is not first.dtype_:
                raise node.error(f"tensor {i} of each group must match the parameter "
                                 f"{first.dtype_.value}{list(first.shape)}, got "
                                 f"{group[i].dtype_.value}{list(group[i].shape)}")
    return groups


def _as(node: NodeContext, scalar: Tensor, like: Tensor) -> Tensor:
    """A float64 scalar in `like`'s dtype."""
    return scalar if like.dtype_ is DType.F64 else node.emit("cast", scalar,
                                                             dtype=like.dtype_.value)


def _first_step(node: NodeContext, step: Tensor) -> Tensor:
    """Whether T is 0 (no step taken yet), as a bool scalar."""
    return tracer.emit("le", step, node.const(0.0, like=step))


@_register("Adagrad", versions=(1,))
def adagrad(node: NodeContext) -> Outputs:
    """Adagrad: X - R / (1 + T * decay_factor) * G' / (sqrt(H + G'^2) + epsilon), with
    G' = norm_coefficient * X + G."""
    rate, step = _scalars(node)
    decay = float(node.attr("decay_factor", 0.0))
    epsilon = float(node.attr("epsilon", 0.0))
    norm = float(node.attr("norm_coefficient", 0.0))
    xs, gs, hs = _groups(node, 3)
    decayed = rate / (step * node.const(decay, like=step) + node.const(1.0, like=step))
    new_x, new_h = [], []
    for x, g, h in zip(xs, gs, hs, strict=True):
        regularized = x * node.const(norm, like=x) + g
        accumulated = h + regularized * regularized
        scale = node.emit("sqrt", accumulated) + node.const(epsilon, like=x)
        new_x.append(x - _as(node, decayed, x) * regularized / scale)
        new_h.append(accumulated)
    return [*new_x, *new_h]


@_register("Adam", versions=(1,))
def adam(node: NodeContext) -> Outputs:
    """Adam: V' = alpha V + (1 - alpha) G', H' = beta H + (1 - beta) G'^2, X' = (1 -
    norm_coefficient_post) (X - R_t V' / (sqrt(H') + epsilon)), with the bias-corrected rate
    R_t = R sqrt(1 - beta^T) / (1 - alpha^T) after the first step."""
    rate, step = _scalars(node)
    alpha = float(node.attr("alpha", 0.9))
    beta = float(node.attr("beta", 0.999))
    epsilon = float(node.attr("epsilon", 0.0))
    norm = float(node.attr("norm_coefficient", 0.0))
    post = float(node.attr("norm_coefficient_post", 0.0))
    xs, gs, vs, hs = _groups(node, 4)
    one = node.const(1.0, like=step)
    corrected = rate * node.emit("sqrt", one - node.emit("pow", node.const(beta, like=step), step)
                                 ) / (one - node.emit("pow", node.const(alpha, like=step), step))
    adjusted = tracer.emit("where", _first_step(node, step), rate, corrected)
    new_x, new_v, new_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs, strict=True):
        regularized = x * node.const(norm, like=x) + g
        moment = v * node.const(alpha, like=x) + regularized * node.const(1.0 - alpha, like=x)
        second = h * node.const(beta, like=x) + (
            regularized * regularized) * node.const(1.0 - beta, like=x)
        scale = node.emit("sqrt", second) + node.const(epsilon, like=x)
        updated = x - _as(node, adjusted, x) * (moment / scale)
        new_x.append(updated * node.const(1.0 - post, like=x))
        new_v.append(moment)
        new_h.append(second)
    return [*new_x, *new_v, *new_h]


@_register("Momentum", versions=(1,))
def momentum(node: NodeContext) -> Outputs:
    """SGD with momentum: V' = alpha V + beta_t G' (beta_t = 1 at the first step), X' = X - R V'
    ("standard") or X - R (G' + alpha V') ("nesterov"), with G' = norm_coefficient X + G."""
    rate, step = _scalars(node)
    alpha = float(node.attr("alpha"))
    beta = float(node.attr("beta"))
    norm = float(node.attr("norm_coefficient"))
    mode = node.attr("mode")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("standard", "nesterov"):
        raise node.error(f"mode {mode!r} is not one of 'standard', 'nesterov'")
    xs, gs, vs = _groups(node, 3)
    gain = tracer.emit("where", _first_step(node, step), node.const(1.0, like=step),
                       node.const(beta, like=step))
    new_x, new_v = [], []
    for x, g, v in zip(xs, gs, vs, strict=True):
        regularized = x * node.const(norm, like=x) + g
        moment = v * node.const(alpha, like=x) + _as(node, gain, x) * regularized
        direction = moment if mode == "standard" else (
            regularized + moment * node.const(alpha, like=x))
        new_x.append(x - _as(node, rate, x) * direction)
        new_v.append(moment)
    return [*new_x, *new_v]
