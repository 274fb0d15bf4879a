"""`Adam` and `AdamW`, PyTorch's `torch.optim.Adam` / `AdamW` term for term (amsgrad,
maximize, coupled or decoupled weight decay)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ember.optim.optimizer import Optimizer, Scalars


class Adam(Optimizer):
    """PyTorch's Adam. Per step t, with g the gradient:

        g = -g                                               (maximize)
        p = p * (1 - lr * weight_decay)                      (decoupled weight decay, AdamW)
        g = g + weight_decay * p                             (coupled weight decay, Adam)
        m = m + (1 - beta1) * (g - m)                        (lerp)
        v = v * beta2 + (1 - beta2) * g * g
        v_max = maximum(v_max, v)                            (amsgrad: v_max replaces v below)
        p = p - step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)

    with step_size = lr / (1 - beta1**t) and bias_correction2_sqrt = (1 - beta2**t) ** 0.5
    computed on the host. PyTorch's lerp switches to the mirrored form g - (1 - w) * (g - m)
    for weights w >= 0.5 (beta1 <= 0.5); the two agree to rounding.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {"lr": lr, "betas": (float(betas[0]), float(betas[1])), "eps": eps,
                    "weight_decay": weight_decay, "amsgrad": amsgrad, "maximize": maximize,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        names = ("exp_avg", "exp_avg_sq")
        return (*names, "max_exp_avg_sq") if group["amsgrad"] else names

    def _scalars(self, group: dict[str, Any], step: int, fresh: bool) -> Scalars:
        lr = float(group["lr"])
        beta1, beta2 = (float(b) for b in group["betas"])
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        scalars = {"beta1_weight": 1 - beta1, "beta2": beta2, "beta2_weight": 1 - beta2,
                   "step_size": lr / bias_correction1,
                   "bias_correction2_sqrt": bias_correction2**0.5, "eps": float(group["eps"])}
        if group["maximize"]:
            scalars["grad_sign"] = -1.0
        weight_decay = float(group["weight_decay"])
        if weight_decay != 0 and group["decoupled_weight_decay"]:
            scalars["param_decay"] = 1 - lr * weight_decay
        elif weight_decay != 0:
            scalars["weight_decay"] = weight_decay
        return scalars

    def update(self, param: Any, grad: Any, state: dict[str, Any],
               scalars: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if "grad_sign" in scalars:
            grad = grad * scalars["grad_sign"]
        if "param_decay" in scalars:
            param = param * scalars["param_decay"]
        if "weight_decay" in scalars:
            grad = grad + scalars["weight_decay"] * param
        exp_avg = state["exp_avg"]
        exp_avg = exp_avg + scalars["beta1_weight"] * (grad - exp_avg)
        exp_avg_sq = state["exp_avg_sq"] * scalars["beta2"] + scalars["beta2_weight"] * grad * grad
        new_state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        second_moment = exp_avg_sq
        if "max_exp_avg_sq" in state:
            second_moment = np.maximum(state["max_exp_avg_sq"], exp_avg_sq)
            new_state["max_exp_avg_sq"] = second_moment
        denom = np.sqrt(second_moment) / scalars["bias_correction2_sqrt"] + scalars["eps"]
        return param - scalars["step_size"] * exp_avg / denom, new_state


class AdamW(Adam):
    """PyTorch's AdamW: Adam with decoupled weight decay (p *= 1 - lr * weight_decay before
    the moments), 1e-2 by default."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
