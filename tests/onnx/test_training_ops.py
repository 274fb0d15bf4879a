"""ONNX's ai.onnx.preview.training optimizers (Adagrad, Adam, Momentum) imported by Ember,
against float64 numpy written from the operator specifications, over several steps T
(T = 0 takes the first-step forms) and two tensors per node."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402

import ember  # noqa: E402
import ember.onnx  # noqa: E402

DOMAIN = "ai.onnx.preview.training"
RNG = np.random.default_rng(11)
SHAPES = ((3,), (2, 4))


def _model(op: str, groups: int, **attrs: object) -> onnx.ModelProto:
    names = [f"{group}{i}" for group in "XGVH"[:groups] for i in range(len(SHAPES))]
    if op == "Adagrad":
        names = [n.replace("V", "H") for n in names]
    inputs = [helper.make_tensor_value_info("R", TensorProto.FLOAT, []),
              helper.make_tensor_value_info("T", TensorProto.INT64, [])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, SHAPES[int(n[1:])])
               for n in names]
    outputs = [f"{n}_new" for n in names if not n.startswith("G")]
    node = helper.make_node(op, ["R", "T", *names], outputs, domain=DOMAIN, **attrs)
    graph = helper.make_graph([node], op.lower(), inputs, [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(DOMAIN, 1)])


def _tensors(groups: int) -> list[np.ndarray]:
    arrays = [RNG.standard_normal(shape).astype(np.float32) for _ in range(groups)
              for shape in SHAPES]
    n = len(SHAPES)
    for index in range(2 * n, len(arrays)):  # states: the last is a sum of squares
        arrays[index] = np.abs(arrays[index]) if index >= (groups - 1) * n else arrays[index]
    return arrays


def _run(model: onnx.ModelProto, rate: float, step: int, tensors: list[np.ndarray],
         opt_level: int) -> list[np.ndarray]:
    loaded = ember.onnx.load(model)
    args = [np.array(rate, np.float32), np.array(step, np.int64), *tensors]
    return list(ember.compile(loaded, *args, opt_level=opt_level)(*args))


def _check(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for ours, theirs in zip(got, want, strict=True):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("opt_level", [0, 3])
@pytest.mark.parametrize("step", [0, 3])
def test_adagrad(opt_level: int, step: int) -> None:
    tensors = _tensors(3)
    rate, decay, eps, norm = 0.1, 0.2, 1e-3, 0.01
    model = _model("Adagrad", 3, decay_factor=decay, epsilon=eps, norm_coefficient=norm)
    n = len(SHAPES)
    xs, gs, hs = (tensors[k * n:(k + 1) * n] for k in range(3))
    want_x, want_h = [], []
    for x, g, h in zip(xs, gs, hs, strict=True):
        x, g, h = (a.astype(np.float64) for a in (x, g, h))
        reg = norm * x + g
        h_new = h + reg * reg
        want_x.append(x - rate / (1 + step * decay) * reg / (np.sqrt(h_new) + eps))
        want_h.append(h_new)
    _check(_run(model, rate, step, tensors, opt_level), want_x + want_h)


@pytest.mark.parametrize("opt_level", [0, 3])
@pytest.mark.parametrize("step", [0, 1, 5])
def test_adam(opt_level: int, step: int) -> None:
    tensors = _tensors(4)
    rate, alpha, beta, eps, norm, post = 0.05, 0.9, 0.99, 1e-2, 0.01, 0.02
    model = _model("Adam", 4, alpha=alpha, beta=beta, epsilon=eps, norm_coefficient=norm,
                   norm_coefficient_post=post)
    n = len(SHAPES)
    groups = [tensors[k * n:(k + 1) * n] for k in range(4)]
    want = [[], [], []]
    for x, g, v, h in zip(*groups, strict=True):
        x, g, v, h = (a.astype(np.float64) for a in (x, g, v, h))
        reg = norm * x + g
        v_new = alpha * v + (1 - alpha) * reg
        h_new = beta * h + (1 - beta) * reg * reg
        r = rate * np.sqrt(1 - beta**step) / (1 - alpha**step) if step > 0 else rate
        want[0].append((1 - post) * (x - r * v_new / (np.sqrt(h_new) + eps)))
        want[1].append(v_new)
        want[2].append(h_new)
    _check(_run(model, rate, step, tensors, opt_level), want[0] + want[1] + want[2])


@pytest.mark.parametrize("opt_level", [0, 3])
@pytest.mark.parametrize("mode", ["standard", "nesterov"])
@pytest.mark.parametrize("step", [0, 2])
def test_momentum(opt_level: int, mode: str, step: int) -> None:
    tensors = _tensors(3)
    rate, alpha, beta, norm = 0.1, 0.9, 0.5, 0.01
    model = _model("Momentum", 3, alpha=alpha, beta=beta, norm_coefficient=norm, mode=mode)
    n = len(SHAPES)
    xs, gs, vs = (tensors[k * n:(k + 1) * n] for k in range(3))
    want_x, want_v = [], []
    for x, g, v in zip(xs, gs, vs, strict=True):
        x, g, v = (a.astype(np.float64) for a in (x, g, v))
        reg = norm * x + g
        v_new = alpha * v + (beta if step > 0 else 1.0) * reg
        want_x.append(x - rate * (v_new if mode == "standard" else reg + alpha * v_new))
        want_v.append(v_new)
    _check(_run(model, rate, step, tensors, opt_level), want_x + want_v)


def test_bad_mode_and_group_counts_are_clear_errors() -> None:
    x = np.zeros(3, np.float32)
    args = [np.array(0.1, np.float32), np.array(1, np.int64)]
    model = ember.onnx.load(_model("Momentum", 3, alpha=0.9, beta=0.5, norm_coefficient=0.0,
                                   mode="sideways"))
    with pytest.raises(ember.EmberError, match="mode 'sideways' is not one of"):
        ember.compile(model, *args, *_tensors(3), opt_level=0)
    node = helper.make_node("Adagrad", ["R", "T", "X", "G"], ["X_new"], domain=DOMAIN)
    graph = helper.make_graph([node], "odd", [
        helper.make_tensor_value_info("R", TensorProto.FLOAT, []),
        helper.make_tensor_value_info("T", TensorProto.INT64, []),
        helper.make_tensor_value_info("X", TensorProto.FLOAT, [3]),
        helper.make_tensor_value_info("G", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("X_new", TensorProto.FLOAT, None)])
    odd = ember.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid(DOMAIN, 1)]))
    with pytest.raises(ember.EmberError, match="takes R, T and 3 groups of n tensors; got 2"):
        ember.compile(odd, *args, x, x, opt_level=0)
