"""Class-index losses with -inf log-probabilities on classes other than the target, against
PyTorch at every opt level (the target's term is picked, not taken as a sum with 0 * -inf)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import ember
import ember.nn.functional as F

LEVELS = [0, 1, 2, 3]

LOGITS = np.array([[1.0, -np.inf, 2.0], [0.5, 1.0, -np.inf], [-np.inf, 0.25, -1.0],
                   [3.0, -np.inf, -np.inf]])
TARGETS = np.array([0, 2, 1, 0], np.int64)  # row 1's target is itself -inf: an inf loss

OPTIONS = [{}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 2},
           {"ignore_index": 2, "reduction": "none"}, {"weight": [0.5, 2.0, 1.5]},
           {"weight": [0.5, 2.0, 1.5], "reduction": "none"},
           {"label_smoothing": 0.1, "reduction": "none"},
           {"label_smoothing": 0.1, "ignore_index": 2, "reduction": "none"}]


def torch_kwargs(kwargs: dict, dtype: type) -> dict:
    out = dict(kwargs)
    if "weight" in out:
        out["weight"] = torch.tensor(out["weight"], dtype=torch.float64 if dtype is np.float64
                                     else torch.float32)
    return out


def check(ember_fn, torch_fn, logits: np.ndarray, targets: np.ndarray, level: int) -> None:
    expected = torch_fn(torch.from_numpy(logits), torch.from_numpy(targets)).numpy()
    actual = np.asarray(ember.compile(ember_fn, logits, targets, opt_level=level)(logits, targets))
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", OPTIONS, ids=str)
@pytest.mark.parametrize("level", LEVELS)
def test_cross_entropy_with_minus_inf_logit_of_another_class_matches_torch(
        level: int, kwargs: dict, dtype: type) -> None:
    weight = kwargs.get("weight")
    ember_kwargs = dict(kwargs, weight=np.array(weight, dtype)) if weight else kwargs
    check(lambda x, t: F.cross_entropy(x, t, **ember_kwargs),
          lambda x, t: TF.cross_entropy(x, t, **torch_kwargs(kwargs, dtype)),
          LOGITS.astype(dtype), TARGETS, level)


@pytest.mark.parametrize("kwargs", [o for o in OPTIONS if "label_smoothing" not in o], ids=str)
@pytest.mark.parametrize("level", LEVELS)
def test_nll_loss_with_minus_inf_log_probability_of_another_class_matches_torch(
        level: int, kwargs: dict) -> None:
    logp = torch.log_softmax(torch.from_numpy(LOGITS.astype(np.float32)), 1).numpy()
    weight = kwargs.get("weight")
    ember_kwargs = dict(kwargs, weight=np.array(weight, np.float32)) if weight else kwargs
    check(lambda x, t: F.nll_loss(x, t, **ember_kwargs),
          lambda x, t: TF.nll_loss(x, t, **torch_kwargs(kwargs, np.float32)), logp, TARGETS,
          level)


@pytest.mark.parametrize("level", LEVELS)
def test_cross_entropy_spatial_targets_with_minus_inf_logits_match_torch(level: int) -> None:
    # [N, C, d] logits: the class axis is 1, -inf on classes that are not the target.
    logits = np.transpose(np.stack([LOGITS, LOGITS[::-1]]), (0, 2, 1)).astype(np.float32)
    targets = np.array([[0, 2, 1, 0], [0, 1, 2, 0]], np.int64)
    check(lambda x, t: F.cross_entropy(x, t, reduction="none"),
          lambda x, t: TF.cross_entropy(x, t, reduction="none"), logits, targets, level)
