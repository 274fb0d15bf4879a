"""`SGD`: stochastic gradient descent with momentum, dampening, Nesterov and weight decay,
PyTorch's `torch.optim.SGD` term for term."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ember.optim.optimizer import Optimizer, Scalars


class SGD(Optimizer):
    """PyTorch's SGD. Per step, with g the gradient:

        g = -g                                  (maximize)
        g = g + weight_decay * p                (weight_decay != 0)
        b = momentum * b + (1 - dampening) * g  (momentum != 0; b = g on the first step)
        g = g + momentum * b   if nesterov  else  g = b
        p = p - lr * g
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize}
        super().__init__(params, defaults)

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _scalars(self, group: dict[str, Any], step: int, fresh: bool) -> Scalars:
        """PyTorch starts the momentum buffer as a copy of the first gradient. Here the buffer
        starts at zeros and the first step weighs it by 0 and the gradient by 1, which gives
        exactly that gradient, so the update has no branch."""
        scalars = {"lr": float(group["lr"])}
        if group["maximize"]:
            scalars["grad_sign"] = -1.0
        if group["weight_decay"] != 0:
            scalars["weight_decay"] = float(group["weight_decay"])
        momentum = float(group["momentum"])
        if momentum != 0:
            scalars["buffer_decay"] = 0.0 if fresh else momentum
            scalars["grad_weight"] = 1.0 if fresh else 1.0 - float(group["dampening"])
            if group["nesterov"]:
                scalars["nesterov_momentum"] = momentum
        return scalars

    def update(self, param: Any, grad: Any, state: dict[str, Any],
               scalars: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if "grad_sign" in scalars:
            grad = grad * scalars["grad_sign"]
        if "weight_decay" in scalars:
            grad = grad + scalars["weight_decay"] * param
        new_state = {}
        if "momentum_buffer" in state:
            buffer = (state["momentum_buffer"] * scalars["buffer_decay"]
                      + scalars["grad_weight"] * grad)
            new_state["momentum_buffer"] = buffer
            if "nesterov_momentum" in scalars:
                grad = grad + scalars["nesterov_momentum"] * buffer
            else:
                grad = buffer
        return param - scalars["lr"] * grad, new_state
