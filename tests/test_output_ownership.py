"""Every level returns arrays the caller owns, and leaves the caller's arrays as they were.

No output shares memory with an input or with another output (also when the function returns
an input, a reshape of one, or the same value twice), and no input is modified by a call.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ember
from ember.nn import functional as F

OPT_LEVELS = (0, 1, 2, 3)


def _views(x, y):
    return x.reshape(-1), x[None], x.T, y.squeeze(0), x


def _repeats(x, y):
    z = x * 2.0
    return z, z, x, x


def _expanded(x, y):
    return x.expand_dims(0).broadcast_to(3, 4, 5), y.reshape(5, 1)[:, 0], y


def _in_place_candidates(x, y):
    # Ops whose result the memory plan may place over their input's storage.
    return F.relu(x) + 1.0, (x.exp() * y.reshape(1, 5)).sum(axis=1), -y


FUNCTIONS = {"views": _views, "repeats": _repeats, "expanded": _expanded,
             "in_place_candidates": _in_place_candidates}
NUMPY = {
    "views": _views,
    "repeats": _repeats,
    "expanded": lambda x, y: (np.broadcast_to(x[None], (3, 4, 5)), y.reshape(5, 1)[:, 0], y),
    "in_place_candidates": lambda x, y: (np.maximum(x, 0) + 1, (np.exp(x) * y).sum(axis=1), -y),
}


def _assert_owned(outputs, inputs) -> None:
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    for index, out in enumerate(outputs):
        assert isinstance(out, np.ndarray)
        for position, array in enumerate(inputs):
            assert not np.shares_memory(out, array), f"output {index} aliases input {position}"
    for (i, a), (j, b) in itertools.combinations(enumerate(outputs), 2):
        assert not np.shares_memory(a, b), f"outputs {i} and {j} share memory"


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_outputs_never_alias_inputs_or_each_other(name: str, opt_level: int) -> None:
    fn = FUNCTIONS[name]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y = rng.standard_normal((1, 5)).astype(np.float32)
    x_before, y_before = x.copy(), y.copy()
    exe = ember.compile(fn, x, y, opt_level=opt_level)
    expected = [np.array(a) for a in NUMPY[name](x, y)]
    for _ in range(2):  # the second call too: nothing is reused from the first
        got = exe(x, y)
        _assert_owned(got, (x, y))
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_array_equal(y, y_before)
        for out, want in zip(got, expected, strict=True):
            np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    # Writing into one output changes nothing else the caller holds.
    first, second = exe(x, y), exe(x, y)
    for out in first:
        out[...] = 7
    for out, want in zip(second, expected, strict=True):
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_single_output_that_is_the_input_is_a_copy(opt_level: int) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = ember.compile(lambda t: t.reshape(3, 2), x, opt_level=opt_level)(x)
    assert not np.shares_memory(out, x)
    np.testing.assert_array_equal(out, x.reshape(3, 2))
    same = ember.compile(lambda t: t, x, opt_level=opt_level)(x)
    assert not np.shares_memory(same, x)
    np.testing.assert_array_equal(same, x)


def test_interpret_returns_owned_arrays() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    graph = ember.trace(lambda t: (t, t.reshape(3, 2), t), x)
    outputs = ember.interpret(graph, x)
    _assert_owned(outputs, (x,))
    np.testing.assert_array_equal(outputs[1], x.reshape(3, 2))


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_model_call_leaves_inputs_unchanged(opt_level: int) -> None:
    model = ember.nn.Sequential(ember.nn.Linear(5, 5), ember.nn.ReLU())
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    before = x.copy()
    weight_before = model.state_dict()["0.weight"].copy()
    out = ember.compile(model, x, opt_level=opt_level)(x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(model.state_dict()["0.weight"], weight_before)
    w, b = model.state_dict()["0.weight"], model.state_dict()["0.bias"]
    np.testing.assert_allclose(out, np.maximum(x @ w.T + b, 0), rtol=1e-5, atol=1e-6)


class _ReturnsItsWeight(ember.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = ember.nn.Linear(3, 2)

    def forward(self, x):
        return self.linear(x), self.linear.weight, self.linear.weight.reshape(-1)


@pytest.mark.parametrize("opt_level", OPT_LEVELS)
def test_returned_constants_and_parameters_are_copies(opt_level: int) -> None:
    table = np.arange(4, dtype=np.float32)
    x = np.ones((2, 3), np.float32)
    outputs = ember.compile(lambda t: (t * 1.0, ember.where(True, table, table) * 1.0, table),
                            x, opt_level=opt_level)(x)
    _assert_owned(outputs, (x, table))
    outputs[2][...] = -1
    np.testing.assert_array_equal(table, np.arange(4, dtype=np.float32))

    model = _ReturnsItsWeight()
    weight = model.linear.weight.data
    before = weight.copy()
    exe = ember.compile(model, x, opt_level=opt_level)
    out, returned, flat = exe(x)
    _assert_owned((out, returned, flat), (x, weight))
    returned[...] = 0
    flat[...] = 0
    np.testing.assert_array_equal(weight, before)
    np.testing.assert_array_equal(exe(x)[1], before)
