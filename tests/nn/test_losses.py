"""The losses of ember.nn.functional and their nn modules against torch.nn.functional.

Each test compiles one graph that returns every variant (reduction, weights, options) at once,
so that opt level 3 stays cheap; inputs hold the edge values where a naive formula overflows
or takes log(0) and PyTorch stays finite.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import nn

torch = pytest.importorskip("torch")
TF = torch.nn.functional

LEVELS = [0, 3]
DTYPES = [np.float32, np.float64]
REDUCTIONS = [{"reduction": r} for r in ("mean", "sum", "none")]
RTOL = {np.float32: 1e-5, np.float64: 1e-10}
# Below the smallest normal number: compiled code may flush a subnormal result to zero.
ATOL = {np.float32: 1e-37, np.float64: 1e-300}


def to_torch(kwargs: dict) -> dict:
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def assert_matches(actual: np.ndarray, expected: np.ndarray, dtype: type, what: object) -> None:
    actual = np.asarray(actual)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=ATOL[dtype],
                               err_msg=str(what))


def check_variants(ember_loss: Callable, torch_loss: Callable, variants: list[dict],
                   inputs: list[np.ndarray], level: int, dtype: type) -> None:
    """Compile all variants of a loss as one graph and compare each output with PyTorch."""
    def losses(*args: object) -> tuple:
        return tuple(ember_loss(*args, **kwargs) for kwargs in variants)

    outputs = ember.compile(losses, *inputs, opt_level=level)(*inputs)
    tensors = [torch.from_numpy(a) for a in inputs]
    for kwargs, actual in zip(variants, outputs, strict=True):
        assert_matches(actual, torch_loss(*tensors, **to_torch(kwargs)).numpy(), dtype, kwargs)


def with_reductions(options: list[dict]) -> list[dict]:
    return [dict(o, **r) for o in options for r in REDUCTIONS]


def regression_inputs(dtype: type) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 6)) * 2).astype(dtype)
    y = rng.standard_normal((4, 6)).astype(dtype)
    # differences at and around the thresholds 0.5, 1 and 2, zero, and large ones
    x[0] = y[0] + np.array([0.0, 0.5, -1.0, 2.0, 1e4, -3e4], dtype)
    return [x, y]


def weight_like(x: np.ndarray, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.25, 2.0, x.shape).astype(x.dtype)


# -- regression losses --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", LEVELS)
def test_l1_and_mse_loss_match_torch(level: int, dtype: type) -> None:
    inputs = regression_inputs(dtype)
    variants = with_reductions([{}, {"weight": weight_like(inputs[0])}])
    check_variants(F.l1_loss, TF.l1_loss, variants, inputs, level, dtype)
    check_variants(F.mse_loss, TF.mse_loss, variants, inputs, level, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", LEVELS)
def test_smooth_l1_loss_matches_torch(level: int, dtype: type) -> None:
    variants = with_reductions([{}, {"beta": 0.5}, {"beta": 2.0}, {"beta": 0.0}])
    check_variants(F.smooth_l1_loss, TF.smooth_l1_loss, variants, regression_inputs(dtype), level,
                   dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", LEVELS)
def test_huber_loss_matches_torch(level: int, dtype: type) -> None:
    inputs = regression_inputs(dtype)
    variants = with_reductions([{}, {"delta": 0.5}, {"delta": 2.0},
                                {"delta": 0.5, "weight": weight_like(inputs[0])}])
    check_variants(F.huber_loss, TF.huber_loss, variants, inputs, level, dtype)


def test_regression_losses_of_infinite_inputs_match_torch() -> None:
    x = np.array([np.inf, -np.inf, np.inf, 1.0, np.nan], np.float32)
    y = np.array([0.0, 1.0, np.inf, -np.inf, 0.0], np.float32)
    for ember_loss, torch_loss in [(F.l1_loss, TF.l1_loss), (F.smooth_l1_loss, TF.smooth_l1_loss),
                                   (F.huber_loss, TF.huber_loss), (F.mse_loss, TF.mse_loss)]:
        check_variants(ember_loss, torch_loss, [{"reduction": "none"}], [x, y], 3, np.float32)


# -- binary cross-entropy -----------------------------------------------------------------------


def probability_inputs(dtype: type) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.0, 1.0, (4, 6)).astype(dtype)
    y = rng.uniform(0.0, 1.0, (4, 6)).astype(dtype)
    # log(0) clamps at -100 in PyTorch: probabilities of exactly 0 and 1, against 0, 1 and 0.5
    p[0] = [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    y[0] = [0.0, 1.0, 0.0, 1.0, 0.5, 0.5]
    p[1] = [1e-30, 1e-8, 1 - 1e-7, 0.5, 1e-45, 0.999]
    y[1] = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    return [p, y]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", LEVELS)
def test_binary_cross_entropy_matches_torch(level: int, dtype: type) -> None:
    inputs = probability_inputs(dtype)
    row_weight = np.linspace(0.5, 2.0, 6).astype(dtype)  # broadcast over the batch
    variants = with_reductions([{}, {"weight": weight_like(inputs[0])}, {"weight": row_weight}])
    check_variants(F.binary_cross_entropy, TF.binary_cross_entropy, variants, inputs, level,
                   dtype)


def logit_inputs(dtype: type) -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4, 6)) * 3).astype(dtype)
    y = rng.uniform(0.0, 1.0, (4, 6)).astype(dtype)
    # sigmoid(+-100) rounds to 1 or 0, so log(sigmoid) or log(1 - sigmoid) would be -inf; at
    # +-30 the loss is exp(-30) ~ 1e-13, which log(1 + exp(-|x|)) would round to 0
    x[0] = [100.0, -100.0, 100.0, -100.0, 1e4, -1e4]
    y[0] = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    x[1] = [30.0, -30.0, 20.0, -17.0, 0.0, 1e-7]
    y[1] = [1.0, 0.0, 1.0, 0.0, 0.5, 1.0]
    return [x, y]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", LEVELS)
def test_binary_cross_entropy_with_logits_matches_torch(level: int, dtype: type) -> None:
    inputs = logit_inputs(dtype)
    pos_weight = np.linspace(0.5, 3.0, 6).astype(dtype)
    variants = with_reductions([{}, {"weight": weight_like(inputs[0])},
                                {"pos_weight": pos_weight},
                                {"weight": weight_like(inputs[0], 5), "pos_weight": pos_weight}])
    check_variants(F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits,
                   variants, inputs, level, dtype)


def test_binary_cross_entropy_with_infinite_logits_matches_torch() -> None:
    """+-inf logits give inf or nan exactly where PyTorch does."""
    x = np.array([np.inf, np.inf, -np.inf, -np.inf, np.inf], np.float64)
    y = np.array([0.0, 1.0, 0.0, 1.0, 0.5], np.float64)
    check_variants(F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits,
                   [{"reduction": "none"}, {"reduction": "none", "pos_weight": np.full(5, 2.0)}],
                   [x, y], 3, np.float64)


# -- cross-entropy and nll_loss -----------------------------------------------------------------


def class_inputs(shape: tuple[int, ...], dtype: type) -> list[np.ndarray]:
    """Logits, targets with an entry of the default ignore_index -100, and targets in range."""
    rng = np.random.default_rng(5)
    classes = shape[1] if len(shape) > 1 else shape[0]
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    logits = (rng.standard_normal(shape) * 2).astype(dtype)
    in_range = rng.integers(0, classes, target_shape).astype(np.int64)
    in_range.flat[0] = 1  # at least one target of ignore_index=1
    with_ignored = in_range.copy()
    with_ignored.flat[-1] = -100
    return [logits, with_ignored, in_range]


CLASS_SHAPES = [(5, 4), (3, 4, 2, 3), (4,)]
CLASS_WEIGHT = np.array([0.5, 2.0, 1.0, 1.5])


def class_variants(dtype: type, smoothing: bool, level: int) -> list[dict]:
    """Every combination of weight, ignore_index (and label_smoothing) with each reduction; at
    opt level 3 none of them and all of them together."""
    weight = CLASS_WEIGHT.astype(dtype)
    everything = {"weight": weight, "ignore_index": 1} | (
        {"label_smoothing": 0.2} if smoothing else {})
    if level:
        return with_reductions([{}, everything])
    options = [{}, {"weight": weight}]
    options += [dict(o, ignore_index=1) for o in options]
    if smoothing:
        options += [dict(o, label_smoothing=0.2) for o in options]
    return with_reductions(options)


def on_targets(loss: Callable) -> Callable:
    """The loss on the targets with -100 (default ignore_index) or on those in range."""
    def call(x: object, with_ignored: object, in_range: object, **kwargs: object) -> object:
        target = in_range if kwargs.get("ignore_index", -100) != -100 else with_ignored
        return loss(x, target, **kwargs)

    return call


# Opt level 3 compiles cost most: there the class losses run in float32 (training's dtype) on
# [N, C] and [N, C, d1, d2]; the interpreter runs every shape in both dtypes.
CLASS_RUNS = [(0, dtype, shape) for dtype in DTYPES for shape in CLASS_SHAPES] + [
    (3, np.float32, (5, 4)), (3, np.float32, (3, 4, 2, 3))]


def run_id(run: tuple) -> str:
    return f"O{run[0]}-{np.dtype(run[1]).name}-{run[2]}"


@pytest.mark.parametrize("level, dtype, shape", CLASS_RUNS, ids=[run_id(r) for r in CLASS_RUNS])
def test_cross_entropy_with_class_indices_matches_torch(level: int, dtype: type, shape: tuple
                                                        ) -> None:
    inputs = class_inputs(shape, dtype)
    if not inputs[1].ndim:  # an unbatched target is one class: none of them ignored
        inputs[1] = inputs[2]
    check_variants(on_targets(F.cross_entropy), on_targets(TF.cross_entropy),
                   class_variants(dtype, True, level), inputs, level, dtype)


@pytest.mark.parametrize("level, dtype, shape", CLASS_RUNS[:-1],
                         ids=[run_id(r) for r in CLASS_RUNS[:-1]])
def test_nll_loss_matches_torch(level: int, dtype: type, shape: tuple) -> None:
    inputs = class_inputs(shape, dtype)
    if not inputs[1].ndim:
        inputs[1] = inputs[2]
    axis = 1 if len(shape) > 1 else 0
    inputs[0] = torch.log_softmax(torch.from_numpy(inputs[0]), axis).numpy()
    check_variants(on_targets(F.nll_loss), on_targets(TF.nll_loss),
                   class_variants(dtype, False, level), inputs, level, dtype)


@pytest.mark.parametrize("level, shape", [(0, s) for s in CLASS_SHAPES] + [(3, (3, 4, 2, 3))],
                         ids=str)
def test_cross_entropy_with_probabilities_matches_torch(level: int, shape: tuple) -> None:
    dtype = np.float64
    rng = np.random.default_rng(6)
    logits = rng.standard_normal(shape).astype(dtype)
    axis = 1 if len(shape) > 1 else 0
    probabilities = np.moveaxis(rng.dirichlet(np.ones(shape[axis]),
                                              size=shape[:axis] + shape[axis + 1:]), -1, axis)
    options = [{}, {"weight": CLASS_WEIGHT, "label_smoothing": 0.1}]
    if not level:
        options += [{"weight": CLASS_WEIGHT}, {"label_smoothing": 0.3}]
    check_variants(F.cross_entropy, TF.cross_entropy, with_reductions(options),
                   [logits, probabilities], level, dtype)


def test_cross_entropy_mean_of_only_ignored_targets_is_nan_like_torch() -> None:
    logits = np.random.default_rng(7).standard_normal((3, 4))
    targets = np.array([-100, -100, -100], np.int64)
    check_variants(F.cross_entropy, TF.cross_entropy, [{}, {"label_smoothing": 0.1}],
                   [logits, targets], 0, np.float64)


@pytest.mark.parametrize("legacy", [{"size_average": False}, {"reduce": False},
                                    {"size_average": True, "reduce": True}], ids=str)
def test_legacy_size_average_and_reduce_match_torch(legacy: dict) -> None:
    x, y = regression_inputs(np.float64)
    logits, _, targets = class_inputs((5, 4), np.float64)
    p, t = probability_inputs(np.float64)
    cases = [(F.l1_loss, TF.l1_loss, [x, y]), (F.smooth_l1_loss, TF.smooth_l1_loss, [x, y]),
             (F.binary_cross_entropy, TF.binary_cross_entropy, [p, t]),
             (F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits, [x, t]),
             (F.cross_entropy, TF.cross_entropy, [logits, targets])]
    with pytest.warns(UserWarning):  # PyTorch's deprecation warning
        for ember_loss, torch_loss, inputs in cases:
            check_variants(ember_loss, torch_loss, [legacy], inputs, 0, np.float64)


# -- modules ------------------------------------------------------------------------------------


def module_pairs() -> list[tuple[nn.Module, torch.nn.Module, str]]:
    w4, w6 = np.array([0.5, 2.0, 1.0, 1.5]), np.linspace(0.5, 2.0, 6)
    tw4, tw6 = torch.from_numpy(w4), torch.from_numpy(w6)
    return [
        (nn.CrossEntropyLoss(w4, None, 1, None, "sum", 0.1),
         torch.nn.CrossEntropyLoss(tw4, None, 1, None, "sum", 0.1), "classes"),
        (nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss(), "classes"),
        (nn.NLLLoss(w4, ignore_index=2, reduction="none"),
         torch.nn.NLLLoss(tw4, ignore_index=2, reduction="none"), "classes"),
        (nn.MSELoss(reduction="sum"), torch.nn.MSELoss(reduction="sum"), "regression"),
        (nn.L1Loss(None, False), torch.nn.L1Loss(None, False), "regression"),
        (nn.SmoothL1Loss(beta=0.5), torch.nn.SmoothL1Loss(beta=0.5), "regression"),
        (nn.HuberLoss("sum", 2.0), torch.nn.HuberLoss("sum", 2.0), "regression"),
        (nn.BCELoss(w6), torch.nn.BCELoss(tw6), "probabilities"),
        (nn.BCEWithLogitsLoss(w6, pos_weight=w6[::-1].copy()),
         torch.nn.BCEWithLogitsLoss(tw6, pos_weight=torch.from_numpy(w6[::-1].copy())),
         "logits"),
    ]


def test_loss_modules_match_torch_modules() -> None:
    inputs = {"regression": regression_inputs(np.float64),
              "probabilities": probability_inputs(np.float64),
              "logits": logit_inputs(np.float64),
              "classes": class_inputs((5, 4), np.float64)[::2]}
    with pytest.warns(UserWarning):  # L1Loss's legacy reduce=False
        pairs = module_pairs()
    for module, torch_module, kind in pairs:
        args = inputs[kind]
        expected = torch_module(*(torch.from_numpy(a) for a in args)).numpy()
        actual = ember.compile(module, *args, opt_level=0)(*args)
        assert_matches(actual, expected, np.float64, type(module).__name__)


def test_loss_modules_keep_weights_as_buffers_like_torch() -> None:
    weight = np.array([1.0, 2.0, 3.0])
    for ember_loss, torch_loss in [
        (nn.CrossEntropyLoss(weight), torch.nn.CrossEntropyLoss(torch.from_numpy(weight))),
        (nn.BCEWithLogitsLoss(pos_weight=weight),
         torch.nn.BCEWithLogitsLoss(pos_weight=torch.from_numpy(weight))),
        (nn.BCELoss(), torch.nn.BCELoss()),
    ]:
        assert list(ember_loss.state_dict()) == list(torch_loss.state_dict())
        assert ember_loss.reduction == torch_loss.reduction
    np.testing.assert_array_equal(nn.NLLLoss(weight).state_dict()["weight"], weight)


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda x: F.binary_cross_entropy(x, x[:, :2]),
     r"binary_cross_entropy: target f32\[3,2\] must have the input's shape f32\[3,4\]"),
    (lambda x: F.binary_cross_entropy_with_logits(x, x, pos_weight=np.ones(3, np.float32)),
     r"pos_weight f32\[3\] does not broadcast to the input's shape f32\[3,4\]"),
    (lambda x: F.l1_loss(x, x, weight=np.ones(4, np.float32)),
     r"l1_loss: weight f32\[4\] must have the input's shape \[3, 4\]"),
    (lambda x: F.smooth_l1_loss(x, x, beta=-1.0), "smooth_l1_loss: beta must be >= 0"),
    (lambda x: F.huber_loss(x, x, delta=0.0), "huber_loss: delta must be > 0"),
    (lambda x: F.huber_loss(x, x, reduction="avg"), "reduction must be 'mean', 'sum' or 'none'"),
])
def test_losses_reject_bad_arguments_naming_op_and_shapes(call: Callable, message: str) -> None:
    with pytest.raises(ember.TraceError, match=message):
        ember.trace(call, np.zeros((3, 4), np.float32))
