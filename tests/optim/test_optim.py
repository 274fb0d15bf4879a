"""ember.optim against torch.optim: the same parameters and random gradients, 30 steps, every
option combination, in float64 and float32; state_dict round-trips; the traced update."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import ember
from ember.errors import EmberError, ShapeError
from ember.nn import Parameter
from ember.optim import SGD, Adam, AdamW

SHAPES = [(3, 4), (5,), ()]
STEPS = 30
# float64: the same operations in the same order; torch fuses some multiply-adds, so the last
# bit may differ. float32: single-precision rounding, on values of order one.
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=2e-5, atol=2e-6)}


def _initial(dtype: type, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def _grads(dtype: type, steps: int, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape).astype(dtype) for shape in SHAPES] for _ in range(steps)]


def _groups(params: list, options: list[dict] | None) -> list:
    """One group of all parameters, or the first parameter alone and the rest together."""
    if options is None:
        return params
    return [{"params": params[:1], **options[0]}, {"params": params[1:], **options[1]}]


class Pair:
    """An ember optimizer and a torch optimizer over equal parameters, stepped together."""

    def __init__(self, ember_cls: type, torch_cls: type, dtype: type, kwargs: dict,
                 groups: list[dict] | None = None) -> None:
        initial = _initial(dtype)
        self.dtype = dtype
        self.params = [Parameter(a) for a in initial]
        self.tensors = [torch.tensor(a, requires_grad=True) for a in initial]
        self.opt = ember_cls(_groups(self.params, groups), **kwargs)
        self.torch_opt = torch_cls(_groups(self.tensors, groups), **kwargs)

    def step(self, grads: list[np.ndarray]) -> None:
        for param, tensor, grad in zip(self.params, self.tensors, grads, strict=True):
            param.grad = grad.copy()
            tensor.grad = torch.tensor(grad)
        self.opt.step()
        self.torch_opt.step()

    def check(self) -> None:
        for param, tensor in zip(self.params, self.tensors, strict=True):
            assert param.data.dtype == self.dtype
            np.testing.assert_allclose(param.data, tensor.detach().numpy(),
                                       **TOLERANCE[self.dtype])


def _run(pair: Pair, steps: int = STEPS) -> None:
    for grads in _grads(pair.dtype, steps):
        pair.step(grads)
        pair.check()


SGD_CASES = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=w, maximize=x)
    for m, d, n, w, x in itertools.product((0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 0.1),
                                           (False, True))
    if not (n and (m == 0 or d != 0))
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", SGD_CASES, ids=lambda o: "-".join(f"{k}={v}"
                                                                      for k, v in o.items()))
def test_sgd_matches_torch(options: dict, dtype: type) -> None:
    _run(Pair(SGD, torch.optim.SGD, dtype, dict(lr=0.05, **options)))


ADAM_CASES = [
    (cls, dict(weight_decay=w, amsgrad=a, maximize=x))
    for cls, w, a, x in itertools.product(("Adam", "AdamW"), (0.0, 0.1), (False, True),
                                          (False, True))
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "options"), ADAM_CASES,
                         ids=lambda v: v if isinstance(v, str) else "-".join(
                             f"{k}={x}" for k, x in v.items()))
def test_adam_matches_torch(name: str, options: dict, dtype: type) -> None:
    ember_cls = {"Adam": Adam, "AdamW": AdamW}[name]
    torch_cls = getattr(torch.optim, name)
    _run(Pair(ember_cls, torch_cls, dtype, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                                                **options)))


def test_adam_small_beta1_matches_torch() -> None:
    """beta1 <= 0.5: PyTorch's lerp takes its mirrored form, equal up to rounding."""
    _run(Pair(Adam, torch.optim.Adam, np.float64, dict(lr=0.01, betas=(0.3, 0.9))))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_param_groups_with_their_own_hyper_parameters(dtype: type) -> None:
    sgd_groups = [dict(lr=0.1, momentum=0.5), dict(lr=0.01, nesterov=True)]
    _run(Pair(SGD, torch.optim.SGD, dtype, dict(lr=0.05, momentum=0.9), sgd_groups))
    adam_groups = [dict(lr=0.02, betas=(0.7, 0.95)), dict(amsgrad=True, weight_decay=0.2)]
    _run(Pair(AdamW, torch.optim.AdamW, dtype, dict(lr=0.005), adam_groups))


@pytest.mark.parametrize(("ember_cls", "torch_cls", "kwargs"), [
    (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
])
def test_changing_lr_mid_run(ember_cls: type, torch_cls: type, kwargs: dict) -> None:
    pair = Pair(ember_cls, torch_cls, np.float64, kwargs)
    for index, grads in enumerate(_grads(np.float64, STEPS)):
        if index == 12:
            for group in (*pair.opt.param_groups, *pair.torch_opt.param_groups):
                group["lr"] *= 0.3
        pair.step(grads)
        pair.check()


def test_grad_none_skips_the_parameter_like_torch() -> None:
    pair = Pair(Adam, torch.optim.Adam, np.float64, dict(lr=0.01))
    for index, grads in enumerate(_grads(np.float64, 10)):
        pair.step(grads)
        if index % 3 == 0:  # the next step leaves the first parameter out
            pair.params[0].grad = None
            pair.tensors[0].grad = None
            pair.opt.step()
            pair.torch_opt.step()
        pair.check()
    assert pair.opt.state[pair.params[0]]["step"] == pair.torch_opt.state[pair.tensors[0]]["step"]


@pytest.mark.parametrize(("cls", "kwargs"), [
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    (AdamW, dict(lr=0.01, maximize=True)),
])
def test_state_dict_round_trip_continues_like_uninterrupted(cls: type, kwargs: dict) -> None:
    grads = _grads(np.float64, 10)
    straight = [Parameter(a) for a in _initial(np.float64)]
    straight_opt = cls(straight, **kwargs)
    for step in grads:
        for param, grad in zip(straight, step, strict=True):
            param.grad = grad
        straight_opt.step()

    first = [Parameter(a) for a in _initial(np.float64)]
    first_opt = cls(first, **kwargs)
    for step in grads[:5]:
        for param, grad in zip(first, step, strict=True):
            param.grad = grad
        first_opt.step()
    saved = first_opt.state_dict()
    resumed = [Parameter(p.data) for p in first]
    first_opt.step()  # later steps must not change the saved dict

    resumed_opt = cls(resumed, lr=123.0)  # hyper-parameters come from the state dict
    resumed_opt.load_state_dict(saved)
    assert resumed_opt.param_groups[0]["lr"] == kwargs["lr"]
    for step in grads[5:]:
        for param, grad in zip(resumed, step, strict=True):
            param.grad = grad
        resumed_opt.step()
    for a, b in zip(resumed, straight, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_has_torchs_layout() -> None:
    pair = Pair(Adam, torch.optim.Adam, np.float64, dict(lr=0.01),
                [dict(lr=0.1), dict(amsgrad=True)])
    for grads in _grads(np.float64, 3):
        pair.step(grads)
    ours, theirs = pair.opt.state_dict(), pair.torch_opt.state_dict()
    assert ours.keys() == theirs.keys() == {"state", "param_groups"}
    assert [g["params"] for g in ours["param_groups"]] == [g["params"] for g in
                                                           theirs["param_groups"]]
    assert ours["state"].keys() == theirs["state"].keys()
    for index, state in theirs["state"].items():
        assert ours["state"][index].keys() == state.keys()
        assert ours["state"][index]["step"] == int(state["step"])
        for name in state.keys() - {"step"}:
            assert isinstance(ours["state"][index][name], np.ndarray)
            np.testing.assert_allclose(ours["state"][index][name], state[name].numpy(),
                                       rtol=1e-12, atol=1e-14)
    for group, torch_group in zip(ours["param_groups"], theirs["param_groups"], strict=True):
        for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
            assert group[key] == torch_group[key]


def test_load_state_dict_checks_the_groups() -> None:
    opt = SGD([Parameter(np.zeros(2)), Parameter(np.zeros(3))], lr=0.1)
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        SGD([{"params": [Parameter(np.zeros(2))]}, {"params": [Parameter(np.zeros(3))]}],
            lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="doesn't match the size"):
        SGD([Parameter(np.zeros(2))], lr=0.1).load_state_dict(saved)


def test_zero_grad() -> None:
    params = [Parameter(np.ones(3)), Parameter(np.ones(2))]
    opt = SGD(params, lr=0.1)
    for p in params:
        p.grad = np.ones_like(p.data)
    opt.zero_grad(set_to_none=False)
    assert all(np.array_equal(p.grad, np.zeros_like(p.data)) for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_argument_checks_name_the_value() -> None:
    p = [Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        SGD(p, lr=-1)
    with pytest.raises(ValueError, match="Invalid momentum value"):
        SGD(p, momentum=-0.5)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        SGD(p, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"Invalid beta parameter at index 1: 1\.0"):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Invalid epsilon value"):
        AdamW(p, eps=-1e-8)
    with pytest.raises(ValueError, match="Invalid weight_decay value"):
        Adam(p, weight_decay=-0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Parameters"):
        SGD(p[0], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Parameters"):
        SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": p}, {"params": p}], lr=0.1)


def test_grad_of_the_wrong_shape_names_both_shapes() -> None:
    param = Parameter(np.zeros((2, 3)))
    param.grad = np.zeros(3)
    with pytest.raises(ShapeError, match=r"\[3\].*\[2, 3\]"):
        SGD([param], lr=0.1).step()


def test_begin_step_scalars_follow_the_groups_current_values() -> None:
    param = Parameter(np.zeros(2))
    opt = Adam([param], lr=0.01, betas=(0.9, 0.99))
    first = opt.begin_step()[0]
    assert first["step_size"] == 0.01 / (1 - 0.9)
    assert first["bias_correction2_sqrt"] == (1 - 0.99) ** 0.5
    assert "weight_decay" not in first and "grad_sign" not in first
    opt.param_groups[0]["lr"] = 0.5
    second = opt.begin_step()[0]
    assert second["step_size"] == 0.5 / (1 - 0.9**2)
    assert second.keys() == first.keys()  # the same compiled update serves both steps

    sgd = SGD([Parameter(np.zeros(2))], lr=0.1, momentum=0.9, dampening=0.25)
    assert sgd.begin_step()[0] == dict(lr=0.1, buffer_decay=0.0, grad_weight=1.0)
    assert sgd.begin_step()[0] == dict(lr=0.1, buffer_decay=0.9, grad_weight=0.75)


def test_begin_step_refuses_a_group_at_different_steps() -> None:
    params = [Parameter(np.zeros(2)), Parameter(np.zeros(2))]
    opt = Adam(params)
    params[0].grad = np.ones(2)
    opt.step()
    with pytest.raises(EmberError, match=r"param group 0 .* different steps \[1, 2\]"):
        opt.begin_step()


@pytest.mark.parametrize(("cls", "kwargs"), [
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, maximize=True)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    (AdamW, dict(lr=0.01, maximize=True)),
])
def test_update_traces_into_a_compiled_step(cls: type, kwargs: dict) -> None:
    """The train step's use: param, grad, state and scalars are run-time inputs of one graph,
    compiled once and called with each step's scalars (lr changes do not recompile)."""
    rng = np.random.default_rng(2)
    param = Parameter(rng.standard_normal((4, 8)).astype(np.float32))
    opt = cls([param], **kwargs)
    group = opt.param_groups[0]
    names = opt.state_names(group)
    state = opt.init_state(param)
    scalars = opt.begin_step()[0]
    keys = tuple(scalars)

    def step(p, g, *rest):
        new_p, new_state = opt.update(p, g, dict(zip(names, rest[:len(names)], strict=True)),
                                      dict(zip(keys, rest[len(names):], strict=True)))
        return (new_p, *(new_state[n] for n in names))

    def inputs(p, g, state, scalars):
        return [p, g, *(state[n] for n in names),
                *(np.array(scalars[k], dtype=np.float32) for k in keys)]

    grad = rng.standard_normal((4, 8)).astype(np.float32)
    exe = ember.compile(step, *inputs(param.data, grad, state, scalars))
    eager_p, eager_state = param.data, state
    for index in range(5):
        if index:
            group["lr"] *= 0.5
            scalars = opt.begin_step()[0]
            assert tuple(scalars) == keys
            grad = rng.standard_normal((4, 8)).astype(np.float32)
        compiled = exe(*inputs(eager_p, grad, eager_state, scalars))
        eager = step(*inputs(eager_p, grad, eager_state, scalars))
        assert all(e.dtype == np.float32 for e in eager)
        for got, want in zip(compiled, eager, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        eager_p, eager_state = eager[0], dict(zip(names, eager[1:], strict=True))


@pytest.mark.parametrize(("cls", "torch_cls", "kwargs"), [
    (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (AdamW, torch.optim.AdamW, dict(lr=0.01, amsgrad=True)),
])
def test_begin_step_and_update_as_the_train_step_uses_them(cls: type, torch_cls: type,
                                                           kwargs: dict) -> None:
    """The compiled step's protocol, run eagerly: begin_step, then update every parameter of
    each group from `opt.state` with the group's scalars, writing the results back."""
    pair = Pair(cls, torch_cls, np.float64, kwargs, [dict(lr=0.1), {}])
    for grads in _grads(np.float64, STEPS):
        for tensor, grad in zip(pair.tensors, grads, strict=True):
            tensor.grad = torch.tensor(grad)
        pair.torch_opt.step()
        group_scalars = pair.opt.begin_step()
        grad_of = {id(p): g for p, g in zip(pair.params, grads, strict=True)}
        for group, scalars in zip(pair.opt.param_groups, group_scalars, strict=True):
            names = pair.opt.state_names(group)
            for param in group["params"]:
                state = pair.opt.state[param]
                new_param, new_state = pair.opt.update(param.data, grad_of[id(param)],
                                                       {n: state[n] for n in names}, scalars)
                param.data[...] = new_param
                for name in names:
                    state[name] = np.asarray(new_state[name])
        pair.check()
