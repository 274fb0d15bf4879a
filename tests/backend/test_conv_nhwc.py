"""Convolutions in the channels-last layout at opt_level 3 (the `layout{format=nhwc}` pass, then
`backend/cpu/lower_conv_nhwc`: a GEMM whose A rows are read in place from the image), against
PyTorch in float64: padding on every side and beyond the kernel, strides, the 7 x 7 stem's
three channels (window rows grouped into one depth block), window rows split into parts,
small images (49 pixel rows), output channels that do not fill a vector, fused chains (bias,
relu, residual, per-channel scale), batches on threads, f64, and inf / NaN / -0.0 inputs."""

from __future__ import annotations

import numpy as np
import pytest

from ember.backend.cpu import gemm, lower_conv_nhwc
from ember.driver import compile_graph
from ember.ir.graph import GraphBuilder
from ember.ir.types import DType, TensorType
from ember.target import Target

torch = pytest.importorskip("torch")
F = torch.nn.functional


def conv(builder, source, w, b=None, *, stride=1, padding=(0, 0, 0, 0), groups=1):
    operands = [source, builder.const(w)] + ([builder.const(b)] if b is not None else [])
    return builder.conv2d(*operands, stride=(stride, stride), padding=padding,
                          dilation=(1, 1), groups=groups)


def conv_graph(x_shape, w, b, *, stride, padding, dtype, chain=None):
    builder = GraphBuilder("conv")
    x = builder.input(TensorType(DType.from_numpy(np.dtype(dtype)), x_shape), "x")
    out = conv(builder, x, w, b, stride=stride, padding=padding)
    if chain is not None:
        out = chain(builder, out, x)
    return builder.build([out])


def reference(x, w, b, *, stride, padding):
    top, left, bottom, right = padding
    wide = torch.from_numpy(x.astype(np.float64))
    return F.conv2d(F.pad(wide, (left, right, top, bottom)), torch.from_numpy(
        w.astype(np.float64)), None if b is None else torch.from_numpy(b.astype(np.float64)),
        stride=stride).numpy()


def check(actual, expected, depth, dtype):
    assert actual.shape == expected.shape
    tolerance = (1e-5 if dtype == np.float32 else 1e-12) * np.sqrt(depth)
    np.testing.assert_allclose(actual, expected, rtol=0,
                               atol=tolerance * (np.abs(expected).max() + 1.0))


def compiled(graph, level=3, threads=1):
    target = Target.host().with_(cores=threads)
    return compile_graph(graph, target=target, opt_level=level, threads=threads)


def compile_checked(graph, x, level=3):
    executable = compiled(graph, level)
    if level == 3:
        text = str(executable.native.program)
        assert "ember_gemm_nhwc_" in text, text  # the path these tests are about
    return executable


CASES = {  # x shape, (out channels, kernel), stride, padding (top, left, bottom, right)
    "resnet_3x3": ((1, 16, 20, 20), (32, 3), 1, (1, 1, 1, 1)),
    "one_by_one": ((2, 24, 9, 11), (40, 1), 1, (0, 0, 0, 0)),
    "strided_one_by_one": ((1, 32, 14, 14), (48, 1), 2, (0, 0, 0, 0)),
    "stem_three_channels": ((1, 3, 40, 40), (64, 7), 2, (3, 3, 3, 3)),
    "strided_3x3": ((2, 8, 17, 15), (16, 3), 2, (1, 1, 1, 1)),
    "asymmetric_padding": ((1, 5, 10, 17), (13, 3), 1, (2, 0, 1, 3)),
    "padding_beyond_the_kernel": ((1, 3, 8, 17), (12, 5), 1, (3, 4, 3, 4)),
    "valid_3x3": ((1, 16, 12, 19), (20, 3), 1, (0, 0, 0, 0)),
    "small_image_many_channels": ((1, 64, 7, 7), (96, 3), 1, (1, 1, 1, 1)),  # 49 pixel rows
    "rows_split_in_parts": ((1, 2304, 3, 3), (16, 1), 1, (0, 0, 0, 0)),  # run 2304 > 2048
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("name", list(CASES))
def test_conv_matches_torch(name: str, bias: bool) -> None:
    x_shape, (out_channels, kernel), stride, padding = CASES[name]
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((out_channels, x_shape[1], kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(out_channels).astype(np.float32) if bias else None
    graph = conv_graph(x_shape, w, b, stride=stride, padding=padding, dtype=np.float32)
    executable = compile_checked(graph, x)
    check(executable(x), reference(x, w, b, stride=stride, padding=padding),
          x_shape[1] * kernel * kernel, np.float32)


def residual_block(builder, out, x):
    """relu(conv(x) * scale[c] + x): a per-channel column operand and a full one."""
    scale = builder.const(np.linspace(0.5, 1.5, 16, dtype=np.float32).reshape(1, 16, 1, 1))
    return builder.relu(builder.add(builder.mul(out, scale), x))


@pytest.mark.parametrize("level", [0, 2, 3])
def test_fused_residual_chain_at_every_level(level: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    graph = conv_graph(x.shape, w, b, stride=1, padding=(1, 1, 1, 1), dtype=np.float32,
                       chain=residual_block)
    executable = compile_checked(graph, x, level)
    if level == 3:
        text = str(executable.native.program)
        calls = [line for line in text.splitlines() if "ember_gemm_nhwc_" in line]
        assert calls and all("_ep" in line for line in calls), calls
    conv = reference(x, w, b, stride=1, padding=(1, 1, 1, 1))
    scale = np.linspace(0.5, 1.5, 16, dtype=np.float32).reshape(1, 16, 1, 1)
    check(executable(x), np.maximum(conv * scale + x, 0.0), 16 * 9, np.float32)


def test_f64_batches_on_two_threads() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 8, 10, 10))
    w = rng.standard_normal((24, 8, 3, 3))
    b = rng.standard_normal(24)
    graph = conv_graph(x.shape, w, b, stride=1, padding=(1, 1, 1, 1), dtype=np.float64)
    executable = compiled(graph, threads=2)
    assert "ember_gemm_nhwc_f64" in str(executable.native.program)
    check(executable(x), reference(x, w, b, stride=1, padding=(1, 1, 1, 1)), 72, np.float64)


def test_inf_nan_and_signed_zero_inputs() -> None:
    """inf and NaN spread to exactly the windows that see them, as in PyTorch; a window of
    -0.0 inputs with a bias of -0.0 gives +0.0, as PyTorch's sum does."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    x[0, 2, 4, 4], x[0, 5, 0, 8], x[0, 7, 8, 0] = np.inf, -np.inf, np.nan
    x[0, :, 0:3, 0:3] = -0.0
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    w[:, :, 0, 0] = np.abs(w[:, :, 0, 0])
    b = np.full(32, -0.0, dtype=np.float32)
    graph = conv_graph(x.shape, w, b, stride=1, padding=(1, 1, 1, 1), dtype=np.float32)
    executable = compile_checked(graph, x)
    actual = executable(x)
    expected = reference(x, w, b, stride=1, padding=(1, 1, 1, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=0, atol=1e-4 * 12)
    zeros = expected == 0
    np.testing.assert_array_equal(np.signbit(actual[zeros]), np.signbit(expected[zeros]))


def test_input_is_not_modified() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    graph = conv_graph(x.shape, w, None, stride=1, padding=(1, 1, 1, 1), dtype=np.float32)
    executable = compile_checked(graph, x)
    before = x.copy()
    executable(x)
    np.testing.assert_array_equal(x, before)


def test_depth_blocks() -> None:
    """Window rows group into blocks of at most MAX_DEPTH_BLOCK (a stem's seven rows of 21
    in one), longer rows split into equal parts."""
    assert lower_conv_nhwc.depth_block(21, 7) == (147, True)
    assert lower_conv_nhwc.depth_block(768, 3) == (1536, True)
    assert lower_conv_nhwc.depth_block(2304, 1) == (1152, False)


@pytest.mark.parametrize("cpu", ["host", "x86-64-v3"])
def test_pixel_rows_pad_no_more_than_the_matmul_tiles(cpu: str) -> None:
    """`blocking_for(every_row_count=True)`, the convolution's tiles: 49 pixel rows (a 7 x 7
    image) pad less than with the matmul's rule (4 x 64 on AVX-512), never more."""
    target = Target.host() if cpu == "host" else Target.cpu(cpu)
    lanes = target.f32_lanes

    def padded(b, n: int) -> int:
        return -(-49 // b.mr) * b.mr * -(-n // b.nr(lanes)) * b.nr(lanes)

    for n in (512, 2048):
        pixels = gemm.blocking_for(49, n, 512, "f32", lanes, target, every_row_count=True)
        plain = gemm.blocking_for(49, n, 512, "f32", lanes, target)
        assert padded(pixels, n) <= padded(plain, n)
        assert pixels.mc % pixels.mr == 0
        if target.vector_registers >= 32:
            assert padded(pixels, n) < padded(plain, n)


def test_concat_on_channels_stays_channels_last() -> None:
    """Two convolutions of one input, concatenated on channels (a fire module, a dense
    layer): the concat runs on the last axis in the region, one conversion out at the end."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 8, 10, 10)).astype(np.float32)
    w1 = rng.standard_normal((16, 8, 1, 1)).astype(np.float32)
    w3 = rng.standard_normal((32, 8, 3, 3)).astype(np.float32)
    builder = GraphBuilder("fire")
    source = builder.input(TensorType(DType.from_numpy(x.dtype), x.shape), "x")
    a = conv(builder, source, w1)
    b = conv(builder, source, w3, padding=(1, 1, 1, 1))
    out = builder.relu(builder.concat(a, b, axis=1))
    graph = builder.build([out])
    executable = compile_checked(graph, x)
    optimized = executable.stages["optimized"]
    assert optimized.count("layout_convert(") == 2, optimized  # in once, out once
    expected = np.maximum(np.concatenate([reference(x, w1, None, stride=1, padding=(0,) * 4),
                                          reference(x, w3, None, stride=1, padding=(1,) * 4)],
                                         axis=1), 0.0)
    check(executable(x), expected, 72, np.float32)


def test_grouped_convolutions_keep_the_graph_nchw() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    w = rng.standard_normal((32, 16, 1, 1)).astype(np.float32)
    depthwise = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
    builder = GraphBuilder("mobile")
    source = builder.input(TensorType(DType.from_numpy(x.dtype), x.shape), "x")
    out = conv(builder, conv(builder, source, w), depthwise, padding=(1, 1, 1, 1), groups=32)
    executable = compiled(builder.build([out]))
    assert "layout_convert" not in executable.stages["optimized"]
    expected = F.conv2d(torch.from_numpy(reference(x, w, None, stride=1, padding=(0,) * 4)),
                        torch.from_numpy(depthwise.astype(np.float64)), padding=1,
                        groups=32).numpy()
    check(executable(x), expected, 16 * 9, np.float32)
