"""conv2d at opt_level 3 as an implicit GEMM (im2col + the generated GEMM), against PyTorch in
float64: strides, symmetric and asymmetric padding, dilation, bias, batches of one and more
(image chunks and GEMM row blocks on several threads), 1x1 convolutions without im2col, f64,
the fallback to the direct loops, and the loop IR showing the GEMM call."""

from __future__ import annotations

import numpy as np
import pytest

from ember.ir.graph import GraphBuilder
from ember.ir.types import DType, TensorType
from ember.lower.program import lower_graph
from ember.runtime import compile_native
from ember.target import Target

torch = pytest.importorskip("torch")
F = torch.nn.functional


def floats(shape: tuple[int, ...], seed: int, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def conv_graph(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, **attrs: object):
    builder = GraphBuilder("conv")
    arrays = [x, w] if bias is None else [x, w, bias]
    values = [builder.input(TensorType(DType.from_numpy(a.dtype), a.shape), f"x{i}")
              for i, a in enumerate(arrays)]
    return builder.build([builder.conv2d(*values, **attrs)]), arrays


def attributes(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1) -> dict:
    return {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


def reference(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, attrs: dict) -> np.ndarray:
    """PyTorch in float64; asymmetric padding (top, left, bottom, right) through F.pad."""
    top, left, bottom, right = attrs["padding"]
    padded = F.pad(torch.from_numpy(x.astype(np.float64)), (left, right, top, bottom))
    out = F.conv2d(padded, torch.from_numpy(w.astype(np.float64)),
                   None if bias is None else torch.from_numpy(bias.astype(np.float64)),
                   stride=attrs["stride"], dilation=attrs["dilation"], groups=attrs["groups"])
    return out.numpy()


def check(x_shape, w_shape, with_bias: bool, attrs: dict, dtype: type = np.float32,
          expect_gemm: bool = True, cores: int | None = None) -> str:
    """Compile one conv at opt_level 3, compare with PyTorch; return the loop IR text."""
    x = floats(x_shape, 1, dtype)
    w = floats(w_shape, 2, dtype)
    bias = floats((w_shape[0],), 3, dtype) if with_bias else None
    graph, arrays = conv_graph(x, w, bias, **attrs)
    target = Target.host().with_(cores=cores) if cores else None
    native = compile_native(graph, opt_level=3, target=target)
    text = str(native.program)
    assert ("ember_gemm_" in text) == expect_gemm, text
    actual = native(*arrays)[0]
    expected = reference(x, w, bias, attrs)
    assert actual.shape == expected.shape
    depth = w_shape[1] * w_shape[2] * w_shape[3]
    tolerance = (1e-5 if dtype == np.float32 else 1e-12) * np.sqrt(depth)
    scale = np.abs(expected).max() + 1.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale)
    return text


CASES = {
    "3x3_pad1": ((2, 5, 9, 11), (8, 5, 3, 3), attributes(padding=(1, 1, 1, 1))),
    "3x3_valid": ((2, 8, 10, 9), (9, 8, 3, 3), attributes()),
    "stride2_pad1": ((3, 8, 13, 12), (12, 8, 3, 3), attributes(stride=(2, 2),
                                                           padding=(1, 1, 1, 1))),
    "stride_2x3": ((2, 8, 15, 20), (16, 8, 3, 2), attributes(stride=(2, 3),
                                                          padding=(0, 1, 1, 0))),
    "asymmetric_pad": ((2, 3, 12, 10), (13, 3, 3, 3), attributes(padding=(2, 0, 1, 3))),
    "dilation2": ((2, 4, 14, 14), (6, 4, 3, 3), attributes(padding=(2, 2, 2, 2),
                                                         dilation=(2, 2))),
    "dilation_1x3_stride2": ((2, 6, 16, 19), (8, 6, 2, 3), attributes(
        stride=(2, 1), padding=(1, 2, 0, 1), dilation=(1, 3))),
    "5x5_pad_beyond_reach": ((2, 3, 8, 8), (12, 3, 5, 5), attributes(padding=(3, 3, 3, 3))),
    "1x1_direct": ((3, 24, 7, 9), (24, 24, 1, 1), attributes()),
    "1x1_stride2": ((2, 32, 12, 12), (30, 32, 1, 1), attributes(stride=(2, 2))),
    "1x1_padded": ((2, 32, 6, 6), (24, 32, 1, 1), attributes(padding=(1, 0, 0, 1))),
    "7x7_stride2_pad3": ((1, 3, 20, 20), (16, 3, 7, 7), attributes(stride=(2, 2),
                                                                padding=(3, 3, 3, 3))),
    "batch1_many_rows": ((1, 8, 12, 12), (40, 8, 3, 3), attributes(padding=(1, 1, 1, 1))),
    "batch1_1x1": ((1, 32, 8, 8), (30, 32, 1, 1), attributes()),
}


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("name", list(CASES))
def test_conv2d_gemm_matches_torch(name: str, with_bias: bool) -> None:
    x_shape, w_shape, attrs = CASES[name]
    check(x_shape, w_shape, with_bias, attrs)


@pytest.mark.parametrize("cpus", [1, 2, 4])
@pytest.mark.parametrize("batch", [1, 3, 5])
def test_conv2d_gemm_chunks_of_images_and_rows(monkeypatch, cpus: int, batch: int) -> None:
    """Image chunks that do not divide the batch (guarded), and row blocks for one image."""
    text = check((batch, 6, 10, 10), (26, 6, 3, 3), True, attributes(padding=(1, 1, 1, 1)),
                 cores=cpus)
    if cpus > 1:
        assert "parallel" in text, text


def test_conv2d_gemm_f64() -> None:
    check((2, 12, 9, 9), (16, 12, 3, 3), True, attributes(stride=(2, 1), padding=(1, 2, 1, 0)),
          dtype=np.float64)


def test_conv2d_gemm_padding_is_zero_not_stale_scratch() -> None:
    """Two images in one chunk: the second's padded windows must not see the first's values."""
    x = np.zeros((2, 4, 9, 9), np.float32)
    x[0] = 1000.0  # the first image fills the scratch with large numbers
    x[1] = floats((4, 9, 9), 5)
    w = floats((16, 4, 3, 3), 6)
    attrs = attributes(padding=(2, 2, 2, 2))
    graph, arrays = conv_graph(x, w, None, **attrs)
    actual = compile_native(graph, opt_level=3)(*arrays)[0]
    np.testing.assert_allclose(actual, reference(x, w, None, attrs), rtol=1e-5, atol=1e-2)


def test_loop_ir_shows_im2col_and_one_gemm_call_with_bias() -> None:
    # Stride 3 takes im2col (strides 1 and 2 pack the GEMM's panels from the image directly).
    text = check((2, 5, 32, 40), (8, 5, 3, 3), True, attributes(stride=(3, 3),
                                                                padding=(1, 1, 1, 1)))
    # M = 8 output channels, N = 11 * 14 pixels, K = 5 * 3 * 3
    calls = [line.strip() for line in text.splitlines() if "ember_gemm_" in line]
    assert len(calls) == 1, text
    assert calls[0].startswith("ember_gemm_f32_8x154x45_rowbias(&in1[0], &im2col"), calls
    assert calls[0].endswith(", &in2[0]);"), calls  # the bias pointer, for the epilogue


def test_loop_ir_1x1_conv_reads_the_input_as_the_gemm_operand() -> None:
    text = check((3, 24, 7, 9), (24, 24, 1, 1), False, attributes())
    assert "im2col" not in text, text
    calls = [line.strip() for line in text.splitlines() if "ember_gemm_" in line]
    assert len(calls) == 1 and calls[0].startswith("ember_gemm_f32_24x63x24(&in1[0], &in0["), calls


@pytest.mark.parametrize(("x_shape", "w_shape", "attrs"), [
    ((2, 8, 10, 10), (8, 4, 3, 3), attributes(padding=(1, 1, 1, 1), groups=2)),  # grouped
    ((2, 6, 10, 10), (6, 1, 3, 3), attributes(padding=(1, 1, 1, 1), groups=6)),  # depthwise
    ((2, 2, 6, 6), (3, 2, 3, 3), attributes()),  # tiny: 2*3*16*18 flops
    ((4, 64, 3, 3), (64, 64, 3, 3), attributes()),  # one output pixel per image
])
def test_unsupported_convs_fall_back_to_the_direct_loops(x_shape, w_shape, attrs) -> None:
    check(x_shape, w_shape, True, attrs, expect_gemm=False)


def test_opt_level_2_keeps_the_direct_loops() -> None:
    x_shape, w_shape, attrs = CASES["3x3_pad1"]
    graph, _ = conv_graph(floats(x_shape, 1), floats(w_shape, 2), None, **attrs)
    assert "ember_gemm_" not in str(lower_graph(graph, {"opt_level": 2}))
