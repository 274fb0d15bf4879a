"""Converters of the ONNX recurrent layers RNN, GRU and LSTM, unrolled over the static sequence.

Each direction projects the whole input sequence with one matmul (X W^T + Wb), then runs one
step per time index: a matmul with the recurrence weights, the gates, the new state. A
`sequence_lens` input (forward direction only) masks the steps past each sequence's length:
the state holds and Y is 0 there. The activations are Sigmoid, Tanh or Relu; `clip` bounds
the gates' inputs (as ONNX Runtime does; onnx's reference ignores it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ember.frontend import tracer
from ember.frontend.tensor import Tensor
from ember.ir.types import DType
from ember.onnx.converters.base import NodeContext, Outputs, converter

Activation = Callable[[Tensor], Tensor]
_ACTIVATIONS: dict[str, Callable[[NodeContext, Tensor], Tensor]] = {
    "sigmoid": lambda node, x: node.emit("sigmoid", x),
    "tanh": lambda node, x: node.emit("tanh", x),
    "relu": lambda node, x: node.emit("relu", x),
}


@dataclass
class _Layer:
    """What every step of one recurrent node needs."""

    node: NodeContext
    hidden: int
    gates: int  # gate blocks in W and R: 1 (RNN), 3 (GRU), 4 (LSTM)
    directions: list[str]  # "forward" / "reverse", one per direction
    activations: list[list[Activation]]  # per direction
    lengths: Tensor | None  # sequence_lens as i64 [batch], when given


def _activations(node: NodeContext, defaults: Sequence[str], count: int,
                 unclipped: int | None = None) -> list[list[Activation]]:
    """The activations of each direction; `clip` bounds their inputs, except the one at
    position `unclipped` (LSTM's h(C), which ONNX Runtime leaves unclipped)."""
    names = node.attr("activations") or list(defaults) * count
    if node.attr("activation_alpha") or node.attr("activation_beta"):
        raise node.error("activation_alpha / activation_beta are not supported")
    if len(names) != len(defaults) * count:
        raise node.error(f"{len(names)} activations for {count} direction(s); expected "
                         f"{len(defaults) * count}")
    clip = node.attr("clip")
    functions = []
    for position, name in enumerate(names):
        rule = _ACTIVATIONS.get(str(name).lower())
        if rule is None:
            raise node.error(f"activation {name!r} is not supported (Sigmoid, Tanh, Relu)")
        bound = None if position % len(defaults) == unclipped else clip

        def apply(x: Tensor, rule: Callable[[NodeContext, Tensor], Tensor] = rule,
                  bound: float | None = bound) -> Tensor:
            if bound is not None:
                x = x.clip(-float(bound), float(bound))
            return rule(node, x)

        functions.append(apply)
    per = len(defaults)
    return [functions[i * per : (i + 1) * per] for i in range(count)]


def _layer(node: NodeContext, gates: int, defaults: Sequence[str],
           unclipped: int | None = None) -> _Layer:
    direction = node.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise node.error(f"direction {direction!r} is not forward, reverse or bidirectional")
    directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    hidden = int(node.attr("hidden_size", node.shape(1)[1] // gates))
    lengths = None
    if node.has(4):
        if directions != ["forward"]:
            raise node.error("sequence_lens with a reverse direction is not supported")
        lengths = node.tensor(4).astype(DType.I64)
    return _Layer(node, hidden, gates, directions,
                  _activations(node, defaults, len(directions), unclipped), lengths)


def _inputs(layer: _Layer) -> tuple[Tensor, int, int]:
    """X as [seq, batch, input] (from layout 1: [batch, seq, input]), seq, batch."""
    x = layer.node.tensor(0)
    if x.ndim != 3:
        raise layer.node.error(f"X of shape {list(x.shape)}; expected rank 3")
    if layer.node.attr("layout", 0):
        x = layer.node.emit("transpose", x, perm=(1, 0, 2))
    return x, x.shape[0], x.shape[1]


def _initial(layer: _Layer, index: int, direction: int, batch: int) -> Tensor:
    """initial_h (index 5) or initial_c (index 6) of one direction, zeros when omitted."""
    node = layer.node
    x = node.tensor(0)
    if not node.has(index):
        return node.const(np.zeros((batch, layer.hidden)), like=x)
    state = node.tensor(index)
    if node.attr("layout", 0):
        state = node.emit("transpose", state, perm=(1, 0, 2))
    return state[direction]


def _columns(x: Tensor, block: int, hidden: int) -> Tensor:
    return x[:, block * hidden : (block + 1) * hidden]


def _step_mask(layer: _Layer, t: int) -> Tensor | None:
    """Where step t is inside each sequence ([batch, 1]), or None without sequence_lens."""
    if layer.lengths is None:
        return None
    inside = layer.lengths > layer.node.const(np.int64(t))
    return inside.reshape(-1, 1)


StepFn = Callable[[_Layer, int, Tensor, list[Tensor], dict[str, Tensor]], list[Tensor]]


def _run(layer: _Layer, step: StepFn, states: int) -> tuple[list[list[Tensor]],
                                                              list[list[Tensor]]]:
    """Unroll every direction: (Y's per-step outputs [seq][direction], final states per
    state kind [kind][direction])."""
    node = layer.node
    x, seq, batch = _inputs(layer)
    w, r = node.tensor(1), node.tensor(2)
    bias = node.tensor(3) if node.has(3) else None
    _check_weights(layer, x.shape[2], batch)
    outputs: list[list[Tensor]] = [[] for _ in range(seq)]
    finals: list[list[Tensor]] = [[] for _ in range(states)]
    size = layer.gates * layer.hidden
    for d, direction in enumerate(layer.directions):
        weights = {"r": node.emit("transpose", r[d], perm=(1, 0))}
        projected = node.emit("matmul", x.reshape(seq * batch, x.shape[2]),
                              node.emit("transpose", w[d], perm=(1, 0)))
        if bias is not None:
            projected = projected + bias[d][:size]
            weights["rb"] = bias[d][size : 2 * size]
        if node.op_type == "LSTM" and node.has(7):
            weights["p"] = node.tensor(7)[d]
        projected = projected.reshape(seq, batch, size)
        state = [_initial(layer, 5, d, batch)]
        if states == 2:
            state.append(_initial(layer, 6, d, batch))
        order = range(seq) if direction == "forward" else range(seq - 1, -1, -1)
        for t in order:
            new = step(layer, d, projected[t], state, weights)
            mask = _step_mask(layer, t)
            if mask is None:
                state = new
                outputs[t].append(state[0])
                continue
            # Past a sequence's end the state holds and Y is 0.
            state = [tracer.emit("where", mask, n, o) for n, o in zip(new, state, strict=True)]
            outputs[t].append(tracer.emit("where", mask, state[0], node.const(0, like=x)))
        for kind in range(states):
            finals[kind].append(state[kind])
    return outputs, finals


def _check_weights(layer: _Layer, width: int, batch: int) -> None:
    """W, R, B, the initial states and P have the shapes the attributes make."""
    node, count, size = layer.node, len(layer.directions), layer.gates * layer.hidden
    expected = {1: (count, size, width), 2: (count, size, layer.hidden), 3: (count, 2 * size),
                5: (count, batch, layer.hidden), 6: (count, batch, layer.hidden),
                7: (count, 3 * layer.hidden)}
    names = {1: "W", 2: "R", 3: "B", 5: "initial_h", 6: "initial_c", 7: "P"}
    for index, shape in expected.items():
        if (index >= 6 and node.op_type != "LSTM") or not node.has(index):
            continue
        got = node.shape(index)
        if index in (5, 6) and node.attr("layout", 0):
            got = (got[1], got[0], *got[2:]) if len(got) == 3 else got
        if tuple(got) != shape:
            raise node.error(f"{names[index]} has shape {list(node.shape(index))}; "
                             f"{node.op_type} with {count} direction(s), hidden_size "
                             f"{layer.hidden} and input width {width} takes {list(shape)}")


def _recurrence(layer: _Layer, h: Tensor, weights: dict[str, Tensor]) -> Tensor:
    """H R^T (+ Rb)."""
    product = layer.node.emit("matmul", h, weights["r"])
    return product + weights["rb"] if "rb" in weights else product


def _outputs(layer: _Layer, outputs: list[list[Tensor]], finals: list[list[Tensor]]
             ) -> list[Tensor]:
    """Y [seq, directions, batch, hidden] and the final states [directions, batch, hidden]
    (layout 1: batch first)."""
    node = layer.node
    steps = [tracer.emit("concat", *[h.expand_dims(0) for h in per], axis=0) if len(per) > 1
             else per[0].expand_dims(0) for per in outputs]
    y = tracer.emit("concat", *[s.expand_dims(0) for s in steps], axis=0) if len(steps) > 1 \
        else steps[0].expand_dims(0)
    states = [tracer.emit("concat", *[h.expand_dims(0) for h in kind], axis=0)
              if len(kind) > 1 else kind[0].expand_dims(0) for kind in finals]
    if node.attr("layout", 0):
        y = node.emit("transpose", y, perm=(2, 0, 1, 3))
        states = [node.emit("transpose", s, perm=(1, 0, 2)) for s in states]
    return [y, *states]


# -- the three cells -----------------------------------------------------------------------------


def _rnn_step(layer: _Layer, d: int, projected: Tensor, state: list[Tensor],
              weights: dict[str, Tensor]) -> list[Tensor]:
    # H = f(X W^T + Wb + H R^T + Rb)
    (f,) = layer.activations[d]
    return [f(projected + _recurrence(layer, state[0], weights))]


def _gru_step(layer: _Layer, d: int, projected: Tensor, state: list[Tensor],
              weights: dict[str, Tensor]) -> list[Tensor]:
    # z, r = f(X W^T + Wb + H R^T + Rb) (blocks 0, 1); the candidate (block 2) is
    # g(X Wh^T + Wbh + (r * H) Rh^T + Rbh), or with linear_before_reset
    # g(X Wh^T + Wbh + r * (H Rh^T + Rbh)); H = (1 - z) * candidate + z * H
    f, g = layer.activations[d]
    node, hidden, h = layer.node, layer.hidden, state[0]
    recurrent = _recurrence(layer, h, weights)
    z = f(_columns(projected, 0, hidden) + _columns(recurrent, 0, hidden))
    reset = f(_columns(projected, 1, hidden) + _columns(recurrent, 1, hidden))
    if node.attr("linear_before_reset", 0):
        candidate = g(_columns(projected, 2, hidden) + reset * _columns(recurrent, 2, hidden))
    else:
        reset_h = node.emit("matmul", reset * h, _columns(weights["r"], 2, hidden))
        if "rb" in weights:
            reset_h = reset_h + weights["rb"][2 * hidden : 3 * hidden]
        candidate = g(_columns(projected, 2, hidden) + reset_h)
    return [(node.const(1.0, like=z) - z) * candidate + z * h]


def _lstm_step(layer: _Layer, d: int, projected: Tensor, state: list[Tensor],
               weights: dict[str, Tensor]) -> list[Tensor]:
    # gates i, o, f, c (blocks 0-3): C = f * C + i * g(c), H = o * h(C); the peepholes P
    # (i, o, f) add P * C to a gate: the old C for i and f, the new one for o
    f, g, h_act = layer.activations[d]
    hidden = layer.hidden
    h, c = state
    total = projected + _recurrence(layer, h, weights)
    peep = weights.get("p")

    def gate(block: int, peephole: int, cell: Tensor) -> Tensor:
        value = _columns(total, block, hidden)
        if peep is not None:
            value = value + peep[peephole * hidden : (peephole + 1) * hidden] * cell
        return value

    input_gate = f(gate(0, 0, c))
    forget = f(gate(2, 2, c))
    cell = forget * c + input_gate * g(_columns(total, 3, hidden))
    output = f(gate(1, 1, cell))
    return [output * h_act(cell), cell]


@converter("RNN", versions=(7, 14, 22))
def rnn(node: NodeContext) -> Outputs:
    """H = f(X W^T + H R^T + Wb + Rb), unrolled (Tanh by default)."""
    return _convert(node, _layer(node, 1, ["Tanh"]), _rnn_step, 1)


@converter("GRU", versions=(7, 14, 22))
def gru(node: NodeContext) -> Outputs:
    """Update and reset gates and a candidate state (Sigmoid, Tanh), unrolled;
    `linear_before_reset` applies the reset gate after the recurrence matmul."""
    return _convert(node, _layer(node, 3, ["Sigmoid", "Tanh"]), _gru_step, 1)


@converter("LSTM", versions=(7, 14, 22))
def lstm(node: NodeContext) -> Outputs:
    """Input, output, forget gates and a cell (Sigmoid, Tanh, Tanh) with optional peepholes,
    unrolled."""
    if node.attr("input_forget", 0):
        raise node.error("input_forget (coupled input and forget gates) is not supported")
    return _convert(node, _layer(node, 4, ["Sigmoid", "Tanh", "Tanh"], unclipped=2),
                    _lstm_step, 2)


def _convert(node: NodeContext, layer: _Layer, step: StepFn, states: int) -> Outputs:
    outputs, finals = _run(layer, step, states)
    return _outputs(layer, outputs, finals)
