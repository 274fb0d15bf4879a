"""conv2d's gradient rule against torch.autograd in float64 (and float32 with a tolerance),
through the reference interpreter and compiled at opt_level 1 and 3."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ember  # noqa: E402
import ember.autodiff.rules_conv  # noqa: E402  (registers the rule)
from ember.ir.ops import get_op  # noqa: E402
from ember.ir.types import DType, TensorType  # noqa: E402
from ember.runtime import compile_native  # noqa: E402

# (N, C, H, W), (O, KH, KW), stride, padding (t, l, b, r), dilation, groups, bias
CASES = {
    "3x3-pad1": ((2, 3, 7, 6), (4, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    "stride2-asym": ((1, 4, 9, 8), (6, 3, 3), (2, 2), (0, 2, 1, 0), (1, 1), 2, True),
    "stride3-dil2": ((2, 3, 11, 10), (2, 3, 2), (3, 2), (2, 0, 0, 1), (2, 1), 1, False),
    "depthwise-5x5": ((1, 4, 9, 7), (4, 5, 5), (1, 2), (2, 1, 3, 2), (1, 2), 4, True),
    "1x1-stride2": ((3, 6, 5, 7), (4, 1, 1), (2, 3), (0, 0, 1, 0), (1, 1), 2, True),
    "big-padding": ((1, 2, 3, 4), (3, 2, 2), (1, 1), (4, 3, 0, 5), (1, 2), 1, False),
    "windows-miss": ((1, 2, 2, 3), (2, 1, 1), (5, 1), (3, 0, 0, 0), (1, 1), 1, True),
}


def _torch_grads(x, w, bias, gy, stride, padding, dilation, groups):
    """torch's cotangents; its conv pads symmetrically, so the input is padded first."""
    tx, tw, tgy = (torch.from_numpy(a).requires_grad_(True) for a in (x, w, gy))
    params = [tx, tw]
    tb = None
    if bias is not None:
        tb = torch.from_numpy(bias).requires_grad_(True)
        params.append(tb)
    top, left, bottom, right = padding
    padded = torch.nn.functional.pad(tx, (left, right, top, bottom))
    out = torch.nn.functional.conv2d(padded, tw, tb, stride=stride, dilation=dilation,
                                     groups=groups)
    assert out.shape == tgy.shape
    return [g.numpy() for g in torch.autograd.grad(out, params, tgy)]


def _problem(case: str, dtype: np.dtype):
    shape, (out_channels, kh, kw), stride, padding, dilation, groups, has_bias = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((out_channels, shape[1] // groups, kh, kw)).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype) if has_bias else None
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    b = ember.GraphBuilder("conv_grad")
    values = [b.input(TensorType.of(x), "x"), b.input(TensorType.of(w), "w")]
    if bias is not None:
        values.append(b.input(TensorType.of(bias), "b"))
    y = b.op("conv2d", *values, **attrs)
    gy_value = b.input(y.type, "gy")
    gy = rng.standard_normal(y.type.shape).astype(dtype)
    node = b.nodes.pop()  # the gradient graph does not need the forward result
    grads = get_op("conv2d").grad(b, node, (gy_value,))
    for value, grad in zip(values, grads, strict=True):
        assert grad.type == value.type
    graph = b.build(grads)
    arrays = [x, w] + ([bias] if bias is not None else []) + [gy]
    expected = _torch_grads(x, w, bias, gy, stride, padding, dilation, groups)
    return graph, arrays, expected


def _check(case: str, got: tuple[np.ndarray, ...], expected: list[np.ndarray], how: str,
           tolerance: float) -> None:
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=tolerance, atol=tolerance,
                                   err_msg=f"{case}, {how}, input {index}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_conv2d_grad_interpreted_matches_torch(case: str) -> None:
    graph, arrays, expected = _problem(case, np.float64)
    _check(case, ember.interpret(graph, *arrays), expected, "interpret", 1e-10)


# Each compile is seconds of LLVM time, so the compiled runs take the cases that cover the
# rule's paths: stride spreading, negative crops, both dw formulations, flipped 5x5 kernels.
COMPILED = [("stride3-dil2", 1), ("windows-miss", 1), ("stride2-asym", 3), ("depthwise-5x5", 3)]


@pytest.mark.parametrize(("case", "level"), COMPILED)
def test_conv2d_grad_compiled_matches_torch_f64(case: str, level: int) -> None:
    graph, arrays, expected = _problem(case, np.float64)
    _check(case, compile_native(graph, opt_level=level)(*arrays), expected,
           f"opt_level {level}", 1e-10)


def test_conv2d_grad_compiled_matches_torch_f32() -> None:
    graph, arrays, expected = _problem("1x1-stride2", np.float32)
    _check("1x1-stride2", compile_native(graph, opt_level=3)(*arrays), expected, "f32", 1e-4)


def test_no_cotangent_gives_no_gradients() -> None:
    b = ember.GraphBuilder("conv_grad")
    x = b.input(TensorType(DType.F32, (1, 2, 5, 5)))
    w = b.input(TensorType(DType.F32, (3, 2, 3, 3)))
    b.op("conv2d", x, w)
    assert get_op("conv2d").grad(b, b.nodes[-1], (None,)) == (None, None)
