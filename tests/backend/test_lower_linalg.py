"""matmul, conv2d, the pools and the blocked-layout ops through the LLVM backend, against numpy
in float64 and PyTorch: bigger shapes than the shared op tests, every attribute combination,
asymmetric padding, wide kernels (the column-tested path), integers, NaN, and the loop IR of a
kernel (no padding test inside the innermost loop)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ember.ir.graph import GraphBuilder
from ember.ir.types import DType, TensorType
from ember.lower.program import lower_graph
from ember.runtime import compile_native

torch = pytest.importorskip("torch")
F = torch.nn.functional


def floats(shape: tuple[int, ...], seed: int, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def build(op: str, types: list[TensorType], **attrs: object):
    builder = GraphBuilder(op)
    values = [builder.input(t, f"x{i}") for i, t in enumerate(types)]
    return builder.build([getattr(builder, op)(*values, **attrs)])


def run(op: str, inputs: list[np.ndarray], layouts: tuple[str, ...] = (), opt_level: int = 3,
        **attrs: object) -> np.ndarray:
    """One node of `op` compiled natively, run on `inputs`."""
    layouts = layouts or ("",) * len(inputs)
    types = [TensorType(DType.from_numpy(a.dtype), a.shape, layout)
             for a, layout in zip(inputs, layouts, strict=True)]
    return compile_native(build(op, types, **attrs), opt_level=opt_level)(*inputs)[0]


def kernel_text(op: str, types: list[TensorType], **attrs: object) -> str:
    return str(lower_graph(build(op, types, **attrs), {"opt_level": 2}))


def close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def torch64(array: np.ndarray):
    return torch.from_numpy(array.astype(np.float64))


# -- matmul -------------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((65, 33), (33, 17)),
    ((2, 3, 4), (4, 5)),
    ((4, 5), (3, 5, 2)),
    ((2, 1, 3, 4), (5, 4, 6)),
    ((7,), (7, 5)),
    ((5, 7), (7,)),
    ((7,), (7,)),
    ((9,), (2, 9, 3)),
    ((2, 4, 9), (9,)),
    ((1, 40), (40, 1)),
    ((3, 0), (0, 4)),
    ((70, 50), (50, 64)),
]


@pytest.mark.parametrize("opt_level", [2, 3])
@pytest.mark.parametrize(("a_shape", "b_shape"), MATMUL_SHAPES, ids=str)
def test_matmul_float32_matches_float64(a_shape, b_shape, opt_level):
    a, b = floats(a_shape, 1), floats(b_shape, 2)
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    actual = run("matmul", [a, b], opt_level=opt_level)
    assert actual.dtype == np.float32
    close(actual, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int64])
@pytest.mark.parametrize(("a_shape", "b_shape"), MATMUL_SHAPES[:9], ids=str)
def test_matmul_other_dtypes(a_shape, b_shape, dtype):
    rng = np.random.default_rng(3)
    if np.dtype(dtype).kind == "f":
        a, b = (rng.standard_normal(shape).astype(dtype) for shape in (a_shape, b_shape))
    else:
        a, b = (rng.integers(-50, 50, shape, dtype=dtype) for shape in (a_shape, b_shape))
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))  # exact for these ints
    actual = run("matmul", [a, b], opt_level=2)
    assert actual.dtype == dtype
    if np.dtype(dtype).kind == "f":
        close(actual, expected, rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_array_equal(actual, expected.astype(dtype))


def test_matmul_loop_ir_accumulates_rows_with_j_innermost():
    text = kernel_text("matmul", [TensorType(DType.F32, (3, 4)), TensorType(DType.F32, (4, 5))])
    lines = [line.strip() for line in text.splitlines()]
    # The k loop hoists A[i, k], then the innermost j loop updates the row of C from B's row.
    update = next(line for line in lines if line.startswith("out0[") and "in1[" in line)
    assert "in0[" not in update, text
    hoisted = lines.index(update) - 3
    assert lines[hoisted].startswith("const float") and "in0[" in lines[hoisted], text


# -- conv2d -------------------------------------------------------------------------------------


def torch_conv(x, w, b, stride, padding, dilation, groups):
    """PyTorch in float64; asymmetric (top, left, bottom, right) padding through F.pad."""
    top, left, bottom, right = padding
    padded = F.pad(torch64(x), (left, right, top, bottom))
    bias = None if b is None else torch64(b)
    out = F.conv2d(padded, torch64(w), bias, stride=stride, dilation=dilation, groups=groups)
    return out.numpy()


def conv_case(x_shape, out_channels, kernel, groups, bias, seed=0):
    x = floats(x_shape, seed)
    w = floats((out_channels, x_shape[1] // groups, *kernel), seed + 1)
    b = floats((out_channels,), seed + 2) if bias else None
    return x, w, b


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "bias"),
    list(itertools.product([(1, 1), (2, 2), (1, 3)], [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 2)],
                           [(1, 1), (2, 1)], [1, 2, 4], [False, True])),
    ids=str,
)
def test_conv2d_attribute_combinations(stride, padding, dilation, groups, bias):
    x, w, b = conv_case((2, 4, 9, 11), 8, (3, 3), groups, bias, seed=groups)
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    actual = run("conv2d", [v for v in (x, w, b) if v is not None], **attrs)
    close(actual, torch_conv(x, w, b, **attrs))


@pytest.mark.parametrize(
    ("x_shape", "out_channels", "kernel", "attrs"),
    [
        ((1, 3, 32, 32), 16, (3, 3), dict(stride=(2, 2), padding=(1, 1, 1, 1), dilation=(2, 2),
                                          groups=1)),
        ((1, 4, 32, 32), 16, (3, 3), dict(stride=(2, 2), padding=(1, 1, 1, 1), dilation=(2, 2),
                                          groups=2)),
        ((1, 8, 20, 20), 16, (3, 3), dict(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1),
                                          groups=8)),
        ((2, 6, 14, 14), 6, (5, 5), dict(stride=(1, 1), padding=(2, 2, 2, 2), dilation=(1, 1),
                                         groups=6)),
        ((1, 3, 16, 16), 4, (7, 7), dict(stride=(2, 2), padding=(3, 3, 3, 3), dilation=(1, 1),
                                         groups=1)),
        ((1, 8, 6, 6), 5, (1, 1), dict(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
                                       groups=1)),
        # wider than UNROLL_KERNEL_COLUMNS: the kw loop tests each column
        ((1, 2, 5, 50), 3, (3, 35), dict(stride=(1, 2), padding=(1, 3, 1, 4), dilation=(1, 1),
                                         groups=1)),
        # a kernel column that reaches no input column at all (padding wider than the reach)
        ((1, 1, 3, 3), 2, (3, 3), dict(stride=(1, 1), padding=(0, 0, 0, 3), dilation=(1, 2),
                                       groups=1)),
    ],
    ids=["3ch-16f-s2-p1-d2", "groups2", "depthwise", "depthwise-x2-5x5", "7x7-s2", "1x1",
         "wide-kernel", "empty-columns"],
)
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d_larger_shapes(x_shape, out_channels, kernel, attrs, bias):
    x, w, b = conv_case(x_shape, out_channels, kernel, attrs["groups"], bias, seed=5)
    actual = run("conv2d", [v for v in (x, w, b) if v is not None], **attrs)
    close(actual, torch_conv(x, w, b, **attrs))


def test_conv2d_float64_is_exact_to_rounding():
    x, w, b = conv_case((1, 4, 10, 10), 6, (3, 3), 2, True, seed=9)
    x, w, b = (v.astype(np.float64) for v in (x, w, b))
    attrs = dict(stride=(1, 2), padding=(1, 0, 2, 1), dilation=(2, 1), groups=2)
    close(run("conv2d", [x, w, b], **attrs), torch_conv(x, w, b, **attrs), rtol=1e-12, atol=1e-12)


def test_conv2d_loop_ir_tests_padding_per_row_not_per_pixel():
    text = kernel_text("conv2d", [TensorType(DType.F32, (1, 4, 8, 8)),
                                  TensorType(DType.F32, (6, 2, 3, 3))],
                       stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=2)
    lines = text.splitlines()
    ifs = [n for n, line in enumerate(lines) if line.strip().startswith("if (")]
    rows = [n for n in ifs if lines[n].strip().startswith("if (((ih")]
    assert len(rows) == 1, text  # one row test per (oh, kh)
    # the other tests are one per padded tap, on its weight * 0 (nonzero: an inf or NaN weight)
    assert all(lines[n].strip().startswith("if ((z") for n in ifs if n not in rows), text
    # inside the row test, three kernel-column loops of 7, 8 and 7 output columns (the static
    # ranges)
    orelse = next(n for n in range(rows[0], len(lines)) if lines[n].strip() == "} else {")
    extents = [line.split("<")[1].split(";")[0].strip() for line in lines[rows[0]:orelse]
               if line.strip().startswith("for (")]
    assert extents == ["7", "8", "7"], text


def test_conv2d_without_padding_has_no_tests():
    text = kernel_text("conv2d", [TensorType(DType.F32, (1, 2, 8, 8)),
                                  TensorType(DType.F32, (3, 2, 3, 3))],
                       stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    assert "if (" not in text, text


# -- pools --------------------------------------------------------------------------------------

POOL_COMBINATIONS = list(itertools.product(
    [(2, 2), (3, 3), (3, 2)], [(1, 1), (2, 2), (2, 1)], [0, 1], [False, True]))


@pytest.mark.parametrize(("kernel", "stride", "pad", "ceil_mode"), POOL_COMBINATIONS, ids=str)
@pytest.mark.parametrize("dilation", [(1, 1), (2, 2)])
def test_max_pool2d_matches_torch(kernel, stride, pad, ceil_mode, dilation):
    x = floats((2, 3, 10, 9), 11)
    expected = F.max_pool2d(torch64(x), kernel, stride, pad, dilation, ceil_mode=ceil_mode).numpy()
    actual = run("max_pool2d", [x], kernel=kernel, stride=stride, padding=(pad,) * 4,
                 dilation=dilation, ceil_mode=ceil_mode)
    close(actual, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("kernel", "stride", "pad", "ceil_mode"), POOL_COMBINATIONS, ids=str)
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avg_pool2d_matches_torch(kernel, stride, pad, ceil_mode, count_include_pad):
    x = floats((2, 3, 10, 9), 12)
    expected = F.avg_pool2d(torch64(x), kernel, stride, pad, ceil_mode=ceil_mode,
                            count_include_pad=count_include_pad).numpy()
    actual = run("avg_pool2d", [x], kernel=kernel, stride=stride, padding=(pad,) * 4,
                 ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    close(actual, expected, rtol=1e-6, atol=1e-6)


def loop_pool(x, kernel, stride, padding, out_hw, kind, count_include_pad=True):
    """Pooling by explicit loops over output positions (windows clipped to the input; the
    average divides by the window clipped to the padded input, or to the input)."""
    n, c, height, width = x.shape
    out = np.zeros((n, c, *out_hw), x.dtype if kind == "max" else np.float64)
    for i, j in itertools.product(range(out_hw[0]), range(out_hw[1])):
        top, left = i * stride[0] - padding[0], j * stride[1] - padding[1]
        bottom = min(top + kernel[0], height + padding[2])
        right = min(left + kernel[1], width + padding[3])
        window = x[:, :, max(top, 0):min(bottom, height), max(left, 0):min(right, width)]
        if kind == "max":
            out[:, :, i, j] = window.max(axis=(2, 3))
        else:
            count = ((bottom - top) * (right - left) if count_include_pad
                     else window.shape[2] * window.shape[3])
            out[:, :, i, j] = window.astype(np.float64).sum(axis=(2, 3)) / count
    return out


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pools_with_asymmetric_padding(ceil_mode, count_include_pad):
    x = floats((1, 2, 11, 8), 13)
    kernel, stride, padding = (4, 3), (3, 2), (2, 0, 1, 1)
    average = run("avg_pool2d", [x], kernel=kernel, stride=stride, padding=padding,
                  ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    close(average, loop_pool(x, kernel, stride, padding, average.shape[2:], "avg",
                             count_include_pad), rtol=1e-6, atol=1e-6)
    largest = run("max_pool2d", [x], kernel=kernel, stride=stride, padding=padding,
                  dilation=(1, 1), ceil_mode=ceil_mode)
    close(largest, loop_pool(x, kernel, stride, padding, largest.shape[2:], "max"), 0, 0)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_max_pool2d_integers(dtype):
    info = np.iinfo(dtype)
    x = np.random.default_rng(14).integers(info.min, info.max, (1, 2, 7, 7), dtype=dtype)
    x[0, 0, 0, 0] = info.min  # a corner window whose only input is the smallest value
    actual = run("max_pool2d", [x], kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1),
                 dilation=(1, 1), ceil_mode=True)
    expected = loop_pool(x, (3, 3), (2, 2), (1, 1, 1, 1), actual.shape[2:], "max")
    assert actual.dtype == dtype
    np.testing.assert_array_equal(actual, expected.astype(dtype))


def test_max_pool2d_propagates_nan():
    x = floats((1, 1, 6, 6), 15)
    x[0, 0, 2, 3] = np.nan
    actual = run("max_pool2d", [x], kernel=(2, 2), stride=(2, 2), padding=(0, 0, 0, 0),
                 dilation=(1, 1), ceil_mode=False)
    assert np.isnan(actual[0, 0, 1, 1])
    assert np.isnan(actual).sum() == 1
    expected = x.reshape(1, 1, 3, 2, 3, 2).max(axis=(3, 5))
    close(actual, expected, 0, 0)


@pytest.mark.parametrize(("in_hw", "out_hw"), [((7, 7), (3, 5)), ((14, 14), (7, 7)),
                                                ((5, 9), (1, 1)), ((10, 10), (4, 3)),
                                                ((3, 3), (5, 5)), ((13, 6), (13, 6))], ids=str)
def test_adaptive_avg_pool2d_matches_torch(in_hw, out_hw):
    x = floats((2, 3, *in_hw), 16)
    actual = run("adaptive_avg_pool2d", [x], output_size=out_hw)
    close(actual, F.adaptive_avg_pool2d(torch64(x), out_hw).numpy(), rtol=1e-6, atol=1e-6)


# -- blocked layouts ----------------------------------------------------------------------------


def blocked(x: np.ndarray, block: int) -> np.ndarray:
    """[N, C, H, W] -> [N, ceil(C/b), H, W, b], zero channels appended."""
    n, c, h, w = x.shape
    blocks = -(-c // block)
    padded = np.zeros((n, blocks * block, h, w), x.dtype)
    padded[:, :c] = x
    return np.ascontiguousarray(padded.reshape(n, blocks, block, h, w).transpose(0, 1, 3, 4, 2))


@pytest.mark.parametrize(("channels", "block"), [(13, 8), (8, 4), (16, 16), (3, 16), (5, 1)])
def test_layout_convert_round_trip(channels, block):
    x = floats((2, channels, 5, 6), 17)
    layout = f"nchw{block}c"
    packed = run("layout_convert", [x], layout=layout, channels=channels)
    np.testing.assert_array_equal(packed, blocked(x, block))
    back = run("layout_convert", [packed], layouts=(layout,), layout="", channels=channels)
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_layout_convert_nhwc(dtype):
    x = (floats((2, 5, 3, 4), 18) * 100).astype(dtype)
    nhwc = run("layout_convert", [x], layout="nhwc", channels=5)
    np.testing.assert_array_equal(nhwc, x.transpose(0, 2, 3, 1))
    back = run("layout_convert", [nhwc], layouts=("nhwc",), layout="", channels=5)
    np.testing.assert_array_equal(back, x)


def packed_weight(w: np.ndarray, in_block: int, out_block: int) -> np.ndarray:
    """OIHW -> [O/ob, I/ib, KH, KW, ib, ob] with zero channels appended."""
    o, i, kh, kw = w.shape
    ob, ib = -(-o // out_block), -(-i // in_block)
    padded = np.zeros((ob * out_block, ib * in_block, kh, kw), w.dtype)
    padded[:o, :i] = w
    return np.ascontiguousarray(
        padded.reshape(ob, out_block, ib, in_block, kh, kw).transpose(0, 2, 4, 5, 3, 1))


@pytest.mark.parametrize(
    ("block", "attrs"),
    [
        (16, dict(stride=(2, 2), padding=(1, 1, 1, 1), dilation=(2, 2))),
        (8, dict(stride=(1, 1), padding=(2, 0, 1, 1), dilation=(1, 1))),
        (4, dict(stride=(1, 2), padding=(0, 0, 0, 0), dilation=(1, 2))),
    ],
    ids=["b16-s2-p1-d2", "b8-asym", "b4-nopad"],
)
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d_nchwc_matches_torch(block, attrs, bias):
    x, w, b = conv_case((2, 20, 12, 11), 24, (3, 3), 1, bias, seed=19)
    inputs = [blocked(x, block), packed_weight(w, block, block)]
    if b is not None:
        inputs.append(np.concatenate([b, np.zeros(-len(b) % block, b.dtype)]).reshape(-1, block))
    actual = run("conv2d_nchwc", inputs, layouts=(f"nchw{block}c", "", "")[: len(inputs)], **attrs)
    expected = torch_conv(x, w, b, groups=1, **attrs)
    close(actual[:, :, :, :, :], blocked(expected, block))


@pytest.mark.parametrize("bias", [False, True])
def test_conv2d_nchwc_nhwc(bias):
    x, w, b = conv_case((1, 5, 9, 8), 7, (3, 3), 1, bias, seed=20)
    attrs = dict(stride=(2, 1), padding=(1, 1, 1, 1), dilation=(1, 1))
    inputs = [np.ascontiguousarray(x.transpose(0, 2, 3, 1)), packed_weight(w, 5, 7)]
    if b is not None:
        inputs.append(b.reshape(1, 7))
    actual = run("conv2d_nchwc", inputs, layouts=("nhwc", "", "")[: len(inputs)], **attrs)
    expected = torch_conv(x, w, b, groups=1, **attrs).transpose(0, 2, 3, 1)
    close(actual, expected)


def test_conv2d_nchwc_loop_ir_has_output_block_innermost():
    text = kernel_text("conv2d_nchwc", [TensorType(DType.F32, (1, 2, 6, 6, 16), "nchw16c"),
                                        TensorType(DType.F32, (2, 2, 3, 3, 16, 16))],
                       stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1))
    lines = text.splitlines()
    updates = [n for n, line in enumerate(lines) if line.strip().startswith("out0[") and "+" in
               line and "in1[" in line]
    assert updates, text
    for n in updates:  # each update sits directly in a loop of the block's 16 channels
        assert "< 16;" in lines[n - 1], text


@pytest.mark.parametrize("layout", ["nchw8c", "nhwc"])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_blocked_pools_match_torch(layout, ceil_mode):
    x = floats((2, 11, 9, 8), 21)
    if layout == "nhwc":
        packed, unpack = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), lambda y: y.transpose(
            0, 2, 3, 1)
    else:
        packed, unpack = blocked(x, 8), lambda y: blocked(y, 8)
    common = dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1), ceil_mode=ceil_mode)
    largest = run("max_pool2d_nchwc", [packed], layouts=(layout,), dilation=(1, 1), **common)
    expected = F.max_pool2d(torch64(x), 3, 2, 1, ceil_mode=ceil_mode).numpy()
    close(largest, unpack(expected), 0, 0)
    for include in (False, True):
        average = run("avg_pool2d_nchwc", [packed], layouts=(layout,),
                      count_include_pad=include, **common)
        expected = F.avg_pool2d(torch64(x), 3, 2, 1, ceil_mode=ceil_mode,
                                count_include_pad=include).numpy()
        close(average, unpack(expected), rtol=1e-6, atol=1e-6)


# -- a single outer iteration: the reduction loops must not be the parallel ones ---------------


def test_vector_matrix_product_is_not_split_over_k():
    a, b = floats((512,), 30), floats((512, 256), 31)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    for _ in range(3):  # threads racing on the row of C would lose updates at random
        close(run("matmul", [a, b]), expected)


def test_conv2d_of_one_output_row_is_not_split_over_channels():
    x, w, _ = conv_case((1, 256, 3, 130), 1, (3, 3), 1, False, seed=32)
    attrs = dict(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    expected = torch_conv(x, w, None, **attrs)
    for _ in range(3):
        close(run("conv2d", [x, w], **attrs), expected)


def test_max_pool2d_of_one_row_is_not_split_over_kernel_rows():
    x = floats((1, 1, 2, 40000), 33)
    expected = F.max_pool2d(torch64(x), (2, 3), (1, 1)).numpy()
    for _ in range(3):
        close(run("max_pool2d", [x], kernel=(2, 3), stride=(1, 1), padding=(0, 0, 0, 0),
                  dilation=(1, 1), ceil_mode=False), expected, 0, 0)
