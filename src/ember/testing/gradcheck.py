"""`gradcheck`: Ember's gradients against float64 finite differences.

    from ember.testing import gradcheck
    gradcheck(lambda x, w: (x @ w).tanh(), x, w)     # True, or GradcheckError

A function with a non-scalar result is checked through the transpose identity: with a random
output cotangent u, the scalar <fn(x), u> has the directional derivative <J v, u> along a random
direction v, measured by central differences, and Ember's backward gives <v, J^T u>; the two
must agree. Random directions check every entry of the Jacobian at once, in a handful of
forward runs instead of one per element.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.autodiff.engine import GradientError
from ember.driver import jit
from ember.train import grad


class GradcheckError(GradientError, AssertionError):
    """An analytic gradient that disagrees with finite differences (an AssertionError too, so
    test runners report it as a failed check)."""


def gradcheck(fn: Callable[..., Any], *inputs: Any, argnums: int | Sequence[int] | None = None,
              eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, directions: int = 3,
              seed: int = 0, opt_levels: Sequence[int] = (0,),
              raise_exception: bool = True) -> bool:
    """Check the gradient of `fn` (traced like `ember.grad`: one tensor result) at `inputs`.

    Floating-point inputs are cast to float64; integer inputs are passed through and never
    differentiated. `argnums` (default: every floating-point input) names the inputs checked.
    For each of `directions` draws, a random cotangent u of fn's result and, per input, a
    random unit direction v: the central difference of <fn(x + t v), u> at step `eps`
    (computed by the reference interpreter) must match <v, J^T u> from Ember's backward at
    every level in `opt_levels`, within `atol + rtol * |finite difference|`.

    Returns True when every check passes. Otherwise raises GradcheckError naming the input,
    the direction and both numbers, or returns False when `raise_exception` is False.

    Example:

        >>> import numpy as np
        >>> from ember.testing import gradcheck
        >>> x = np.random.default_rng(0).standard_normal((3, 4))
        >>> gradcheck(lambda x: (x * x).sum(axis=1).sqrt(), x)
        True

    Choose inputs away from kinks (relu at 0, ties of max), where finite differences see a
    one-sided slope that no gradient convention matches.
    """
    arrays = [_as_input(x) for x in inputs]
    nums = _checked_argnums(argnums, arrays)
    names = _input_names(fn, len(arrays))
    scalar_fn = _contracted(fn)
    forward = jit(scalar_fn, opt_level=0)
    out_shape = _result_shape(fn, arrays)
    rng = np.random.default_rng(seed)
    backwards = {level: grad(scalar_fn, argnums=tuple(nums), opt_level=level)
                 for level in opt_levels}
    for direction in range(directions):
        u = rng.standard_normal(out_shape)
        vs = {num: _unit(rng.standard_normal(arrays[num].shape)) for num in nums}
        measured = {num: _directional(forward, arrays, u, num, vs[num], eps) for num in nums}
        for level, backward in backwards.items():
            grads = backward(*arrays, u)
            for num, g in zip(nums, grads, strict=True):
                analytic = float(np.sum(np.asarray(g, dtype=np.float64) * vs[num]))
                numeric = measured[num]
                allowed = atol + rtol * abs(numeric)
                if abs(analytic - numeric) <= allowed:  # NaN fails here too
                    continue
                if not raise_exception:
                    return False
                raise GradcheckError(
                    f"gradcheck: input {num} ({names[num]}: {arrays[num].dtype}"
                    f"{list(arrays[num].shape)}), direction {direction} (seed {seed}), "
                    f"opt_level {level}: finite differences give <J v, u> = {numeric:.10g}, "
                    f"the backward gives <v, J^T u> = {analytic:.10g} (difference "
                    f"{abs(analytic - numeric):.3g}, allowed {allowed:.3g})")
    return True


def _as_input(value: Any) -> np.ndarray:
    """Floating-point inputs in float64; integer and boolean inputs as they are."""
    array = np.asarray(value)
    return array.astype(np.float64) if np.issubdtype(array.dtype, np.floating) else array


def _checked_argnums(argnums: int | Sequence[int] | None, arrays: list[np.ndarray]
                     ) -> list[int]:
    floats = [i for i, a in enumerate(arrays) if a.dtype == np.float64]
    if argnums is None:
        if not floats:
            raise GradientError("gradcheck: no floating-point input to differentiate")
        return floats
    wanted = [argnums] if isinstance(argnums, (int, np.integer)) else list(argnums)
    nums = []
    for num in wanted:
        if not -len(arrays) <= num < len(arrays):
            raise GradientError(f"gradcheck: argnums {num} is out of range for "
                                f"{len(arrays)} inputs")
        if num % len(arrays) not in floats:
            raise GradientError(f"gradcheck: input {num} is {arrays[num].dtype}, not "
                                "floating-point: only floating-point inputs are differentiated")
        nums.append(int(num) % len(arrays))
    return nums


def _input_names(fn: Callable[..., Any], count: int) -> list[str]:
    """Parameter names of `fn` for error messages (`arg<i>` where it has none)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"arg{i}" for i in range(count)]


def _contracted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The scalar <fn(*xs), u>, with the cotangent u as a last input (one compile serves every
    u drawn)."""

    def contracted(*args: Any) -> Any:
        *xs, u = args
        return (_single(fn(*xs)) * u).sum()

    return contracted


def _single(result: Any) -> Any:
    if isinstance(result, (tuple, list)):
        raise GradientError(f"gradcheck: the function returned {len(result)} results; it "
                            "must return one tensor")
    return result


def _result_shape(fn: Callable[..., Any], arrays: list[np.ndarray]) -> tuple[int, ...]:
    """The shape of fn's result, from a run of the reference interpreter."""
    result = jit(lambda *xs: _single(fn(*xs)), opt_level=0)(*arrays)
    result = np.asarray(result)
    if not np.issubdtype(result.dtype, np.floating):
        raise GradientError(f"gradcheck: the function returns {result.dtype}, which has no "
                            "gradient; it must return a floating-point tensor")
    return result.shape


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


def _directional(forward: Callable[..., Any], arrays: list[np.ndarray], u: np.ndarray,
                 num: int, v: np.ndarray, eps: float) -> float:
    """Central difference of <fn(x), u> along v in input `num`."""
    def at(step: float) -> float:
        moved = list(arrays)
        moved[num] = arrays[num] + step * v
        return float(np.asarray(forward(*moved, u), dtype=np.float64))

    return (at(eps) - at(-eps)) / (2 * eps)
