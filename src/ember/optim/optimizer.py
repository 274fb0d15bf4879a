"""`Optimizer`: PyTorch's optimizer structure over numpy arrays, split so a compiler can trace it.

An optimizer step has two halves:

- host work, once per step and per param group: advance the step counters and turn the
  group's hyper-parameters into plain numbers (`begin_step`). It is Python arithmetic in
  float64, with PyTorch's formulas, so the numbers equal PyTorch's exactly;
- array work, once per parameter: `update(param, grad, state, scalars)`, pure arithmetic on
  arrays that runs eagerly on numpy arrays or traced into a graph, where `scalars` are 0-d
  tensors passed in at run time.

A compiled train step traces `update` once and feeds it the numbers of `begin_step` on every
call, so changing a learning rate (by hand or by a scheduler) never recompiles. The shape of
the update (which terms it has) depends only on `state_names(group)` and on the keys of the
group's scalars: a term that is off (weight decay 0, no maximize, no Nesterov) has no key and
no operation, as in PyTorch. A compiled update stays valid while those two stay the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ember.errors import EmberError, ShapeError
from ember.nn.module import Parameter

Scalars = dict[str, float]


class Optimizer:
    """Base class: param groups, per-parameter state, `state_dict`, and the eager `step`.

    Subclasses define `state_names`, `_scalars` (the host numbers of one step) and `update`
    (the array arithmetic).
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, Parameter):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Parameters or dicts, but got a Parameter")
        self.defaults = dict(defaults)
        # Keyed by the Parameter object itself (hashed by identity): PyTorch's layout.
        self.state: dict[Parameter, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- param groups ------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own hyper-parameters (the defaults fill the rest)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of parameters in sets will change between runs. "
                            "Please use a list instead.")
        group["params"] = list(params)
        for param in group["params"]:
            if not isinstance(param, Parameter):
                raise TypeError("optimizer can only optimize Parameters, but one of the params "
                                f"is {type(param).__name__}")
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in taken for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: `param.grad = None` (or zeros with `set_to_none=False`)."""
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none or param.grad is None:
                    param.grad = None
                else:
                    param.grad = np.zeros_like(param.data)

    # -- the compiler's interface ------------------------------------------------------------

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The per-parameter state arrays that `update` reads and writes for this group, in
        order (each has the parameter's shape and dtype)."""
        raise NotImplementedError

    def init_state(self, param: Parameter) -> dict[str, np.ndarray]:
        """Fresh state of `param` for its group: zeros, as PyTorch initializes it lazily (to
        build example inputs for tracing). It registers nothing: `begin_step` and `step` create
        the state they use in `self.state` on a parameter's first step, which is how SGD knows
        a momentum buffer is new."""
        group = self._group_of(param)
        return {name: np.zeros_like(param.data) for name in self.state_names(group)}

    def begin_step(self) -> list[Scalars]:
        """Advance every parameter's step counter and return, per param group, the numbers
        this step's `update` uses (Python floats, computed in float64 from the group's current
        values, so assigning `group["lr"]` or running a scheduler takes effect).

        A group's parameters must be at the same step: a compiled step updates them together.
        A group without parameters gets an empty dict.
        """
        result = []
        for index, group in enumerate(self.param_groups):
            progress = {self._advance(group, param) for param in group["params"]}
            if len(progress) > 1:
                steps = sorted(step for step, _ in progress)
                raise EmberError(f"{type(self).__name__}: the parameters of param group {index} "
                                 f"are at different steps {steps} (or some have fresh state); "
                                 "a compiled step updates a group's parameters together")
            result.append(self._scalars(group, *progress.pop()) if progress else {})
        return result

    def update(self, param: Any, grad: Any, state: dict[str, Any],
               scalars: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """One parameter's update: `(new_param, new_state)`, pure arithmetic.

        `param`, `grad` and the arrays of `state` (named by `state_names`) are numpy arrays or
        traced tensors; `scalars` is one group's dict from `begin_step`, as Python floats
        (eager) or 0-d tensors of the parameter's dtype (traced). Nothing is modified in place.
        """
        raise NotImplementedError

    def _scalars(self, group: dict[str, Any], step: int, fresh: bool) -> Scalars:
        """The host numbers of one step of `group`: `step` is the step being taken (1 first),
        `fresh` says the state arrays were just created (SGD's first momentum step)."""
        raise NotImplementedError

    # -- eager step --------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a `grad` (numpy), in place, as PyTorch's step does.

        Parameters whose grad is None are skipped and their step counter does not advance.
        Returns `closure()` when one is given (evaluated first), else None.
        """
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = self._checked_grad(param)
                scalars = self._scalars(group, *self._advance(group, param))
                state = self.state[param]
                arrays = {name: state[name] for name in self.state_names(group)}
                new_param, new_state = self.update(param.data, grad, arrays, scalars)
                # In place, as PyTorch's step: views stay current, and 0-d arrays stay arrays
                # (numpy arithmetic on them gives scalars).
                param.data[...] = new_param
                for name, value in new_state.items():
                    state[name][...] = value
        return loss

    def _checked_grad(self, param: Parameter) -> np.ndarray:
        grad = np.asarray(param.grad)
        if grad.shape != param.data.shape:
            raise ShapeError(f"{type(self).__name__}.step: the grad of {param!r} has shape "
                             f"{list(grad.shape)}, expected {list(param.data.shape)}")
        return grad.astype(param.data.dtype, copy=False)

    def _advance(self, group: dict[str, Any], param: Parameter) -> tuple[int, bool]:
        """Create missing state (zeros), count one more step; return (step, fresh)."""
        state = self.state.setdefault(param, {})
        missing = [name for name in self.state_names(group) if name not in state]
        for name in missing:
            state[name] = np.zeros_like(param.data)
        state["step"] = state.get("step", 0) + 1
        return state["step"], bool(missing)

    def _group_of(self, param: Parameter) -> dict[str, Any]:
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group
        raise EmberError(f"{type(self).__name__}: {param!r} is in none of its param groups")

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's layout: {"state": {index: {name: array, "step": int}}, "param_groups":
        [{hyper-parameters..., "params": [index, ...]}]}, parameters numbered by position across
        the groups. Arrays are copies, so later steps do not change a saved dict."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for param in group["params"]:
                index.setdefault(id(param), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(param)]: {k: np.copy(v) if isinstance(v, np.ndarray) else v
                                    for k, v in values.items()}
                 for param, values in self.state.items() if id(param) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a `state_dict()` (this optimizer's or one in PyTorch's layout with numpy
        arrays): the saved hyper-parameters replace the groups' own, state arrays take each
        parameter's dtype."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(s["params"]) != len(g["params"])
               for s, g in zip(saved_groups, self.param_groups, strict=True)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
        pairs = zip(saved_groups, self.param_groups, strict=True)
        by_index = {index: param for saved, group in pairs
                    for index, param in zip(saved["params"], group["params"], strict=True)}
        self.state = {}
        for index, values in state_dict["state"].items():
            param = by_index[index]
            self.state[param] = {
                name: int(value) if name == "step"
                else np.array(value, dtype=param.data.dtype, copy=True)
                for name, value in values.items()}
        self.param_groups = [
            {**{k: copy.deepcopy(v) for k, v in saved.items() if k != "params"},
             "params": group["params"]}
            for saved, group in zip(saved_groups, self.param_groups, strict=True)]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join([*lines, ")"])
