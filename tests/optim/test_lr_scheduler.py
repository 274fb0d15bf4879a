"""ember.optim.lr_scheduler against torch.optim.lr_scheduler over 100 steps, two param groups
with different learning rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ember.nn import Parameter
from ember.optim import SGD, Adam, lr_scheduler

STEPS = 100
LRS = (0.1, 0.02)


def _optimizers(kind: str) -> tuple:
    """An ember and a torch optimizer with two groups of one parameter each."""
    ember_params = [Parameter(np.zeros(2)), Parameter(np.zeros(3))]
    torch_params = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    ember_cls, torch_cls = {"sgd": (SGD, torch.optim.SGD), "adam": (Adam, torch.optim.Adam)}[kind]
    kwargs = dict(momentum=0.9) if kind == "sgd" else {}

    def build(cls, params):
        return cls([{"params": [params[0]], "lr": LRS[0]}, {"params": [params[1]], "lr": LRS[1]}],
                   **kwargs)

    return build(ember_cls, ember_params), build(torch_cls, torch_params)


CASES = [
    ("StepLR", dict(step_size=7, gamma=0.5), "sgd"),
    ("MultiStepLR", dict(milestones=[10, 30, 30, 70], gamma=0.3), "sgd"),
    ("ExponentialLR", dict(gamma=0.97), "adam"),
    ("CosineAnnealingLR", dict(T_max=30, eta_min=0.001), "sgd"),
    ("CosineAnnealingLR", dict(T_max=100), "adam"),
    ("LinearLR", dict(start_factor=0.25, end_factor=0.9, total_iters=40), "sgd"),
    ("LinearLR", dict(), "adam"),
    ("LambdaLR", dict(lr_lambda=lambda epoch: 0.95**epoch), "sgd"),
    ("LambdaLR", dict(lr_lambda=[lambda e: 1 / (1 + e), lambda e: math.cos(e / 50)]), "adam"),
    ("OneCycleLR", dict(max_lr=[0.5, 0.1], total_steps=STEPS), "sgd"),
    ("OneCycleLR", dict(max_lr=0.3, total_steps=STEPS), "adam"),
    ("OneCycleLR", dict(max_lr=0.4, epochs=10, steps_per_epoch=10, anneal_strategy="linear",
                        three_phase=True, pct_start=0.25), "sgd"),
]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def _check_groups(ours: list[dict], theirs: list[dict]) -> None:
    for group, torch_group in zip(ours, theirs, strict=True):
        assert _close(group["lr"], torch_group["lr"])
        if "betas" in group:
            assert _close(group["betas"][0], torch_group["betas"][0])
        if "momentum" in group:
            assert _close(group["momentum"], torch_group["momentum"])


@pytest.mark.parametrize(("name", "kwargs", "kind"), CASES,
                         ids=[f"{n}-{k}-{i}" for i, (n, _, k) in enumerate(CASES)])
def test_schedule_matches_torch(name: str, kwargs: dict, kind: str) -> None:
    opt, torch_opt = _optimizers(kind)
    ours = getattr(lr_scheduler, name)(opt, **kwargs)
    theirs = getattr(torch.optim.lr_scheduler, name)(torch_opt, **kwargs)
    _check_groups(opt.param_groups, torch_opt.param_groups)
    for _ in range(STEPS):
        opt.step()
        torch_opt.step()
        ours.step()
        theirs.step()
        assert all(_close(a, b) for a, b in zip(ours.get_last_lr(), theirs.get_last_lr(),
                                                 strict=True))
        _check_groups(opt.param_groups, torch_opt.param_groups)
    state, torch_state = ours.state_dict(), theirs.state_dict()
    for key in ("last_epoch", "_step_count", "base_lrs"):
        assert state[key] == torch_state[key]


@pytest.mark.parametrize(("name", "kwargs"), [
    ("CosineAnnealingLR", dict(T_max=30, eta_min=0.001)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("LinearLR", dict(start_factor=0.5, total_iters=30)),
])
def test_resuming_with_last_epoch_matches_torch(name: str, kwargs: dict) -> None:
    opt, torch_opt = _optimizers("sgd")
    first = getattr(lr_scheduler, name)(opt, **kwargs)
    torch_first = getattr(torch.optim.lr_scheduler, name)(torch_opt, **kwargs)
    for _ in range(20):
        torch_opt.step()
        first.step()
        torch_first.step()
    ours = getattr(lr_scheduler, name)(opt, last_epoch=first.last_epoch, **kwargs)
    theirs = getattr(torch.optim.lr_scheduler, name)(torch_opt,
                                                     last_epoch=torch_first.last_epoch, **kwargs)
    for _ in range(40):
        _check_groups(opt.param_groups, torch_opt.param_groups)
        torch_opt.step()
        ours.step()
        theirs.step()


def test_scheduler_changes_what_begin_step_returns() -> None:
    """A schedule reaches the compiled step through the scalars, with the same keys."""
    opt = SGD([Parameter(np.zeros(2))], lr=1.0, momentum=0.5)
    schedule = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lrs = []
    for _ in range(3):
        lrs.append(opt.begin_step()[0]["lr"])
        schedule.step()
    assert lrs == [1.0, 0.5, 0.25]


def test_load_state_dict_restores_the_schedule() -> None:
    opt, _ = _optimizers("sgd")
    schedule = lr_scheduler.MultiStepLR(opt, milestones=[3, 6])
    for _ in range(4):
        schedule.step()
    saved = schedule.state_dict()
    assert "optimizer" not in saved
    fresh = lr_scheduler.MultiStepLR(_optimizers("sgd")[0], milestones=[1])
    fresh.load_state_dict(saved)
    assert fresh.last_epoch == 4 and fresh.milestones == schedule.milestones


def test_argument_errors() -> None:
    opt, _ = _optimizers("sgd")
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)]), 3)
    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        lr_scheduler.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 1"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0])
    with pytest.raises(ValueError, match="total_steps OR"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="max_lr must have the same length"):
        lr_scheduler.OneCycleLR(opt, max_lr=[0.1], total_steps=10)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.ExponentialLR(_optimizers("sgd")[0], gamma=0.5, last_epoch=3)
    one_cycle = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=2)
    one_cycle.step()
    one_cycle.step()
    with pytest.raises(ValueError, match="Tried to step 3 times"):
        one_cycle.step()
