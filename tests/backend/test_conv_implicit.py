"""conv2d packed straight from the image (stride 1 or 2, no im2col matrix) and with its weights
packed at compile time, against PyTorch in float64: pixel vectors across output-row breaks
(two rows, and up to four in images narrower than a vector), every padding edge, the last
partial panel, channel depth blocks, batches of one (row chunks) and more, f64, and weights as
constants or as run-time inputs."""

from __future__ import annotations

import numpy as np
import pytest

from ember.backend.cpu import conv_pack
from ember.backend.cpu.gemm import default_blocking
from ember.ir.graph import GraphBuilder
from ember.ir.types import DType, TensorType
from ember.runtime import compile_native
from ember.target import Target

torch = pytest.importorskip("torch")
F = torch.nn.functional


def run(x_shape, w_shape, padding, *, constant_weights: bool, bias: bool = True,
        dtype: type = np.float32, cores: int | None = None, stride: int = 1) -> str:
    """Compile one conv at opt_level 3, check it against PyTorch; return the loop IR text."""
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    builder = GraphBuilder("conv")
    kind = DType.from_numpy(np.dtype(dtype))
    x_value = builder.input(TensorType(kind, x.shape), "x")
    arrays = [x]
    if constant_weights:
        w_value = builder.const(w)
    else:
        w_value = builder.input(TensorType(kind, w.shape), "w")
        arrays.append(w)
    operands = [x_value, w_value]
    if bias:
        operands.append(builder.const(b))
    out = builder.conv2d(*operands, stride=(stride, stride), padding=padding, dilation=(1, 1),
                         groups=1)
    target = Target.host().with_(cores=cores) if cores else None
    native = compile_native(builder.build([out]), opt_level=3, target=target)
    actual = native(*arrays)[0]
    top, left, bottom, right = padding
    expected = F.conv2d(F.pad(torch.from_numpy(x.astype(np.float64)), (left, right, top, bottom)),
                        torch.from_numpy(w.astype(np.float64)),
                        torch.from_numpy(b.astype(np.float64)) if bias else None,
                        stride=stride).numpy()
    assert actual.shape == expected.shape
    depth = w_shape[1] * w_shape[2] * w_shape[3]
    tolerance = (1e-5 if dtype == np.float32 else 1e-12) * np.sqrt(depth)
    np.testing.assert_allclose(actual, expected, rtol=0,
                               atol=tolerance * (np.abs(expected).max() + 1.0))
    return str(native.program)


CASES = {  # x shape, w shape, padding (top, left, bottom, right)
    "resnet_like": ((2, 16, 20, 20), (24, 16, 3, 3), (1, 1, 1, 1)),
    "row_breaks_at_odd_lanes": ((2, 5, 9, 23), (8, 5, 3, 3), (1, 1, 1, 1)),
    "valid": ((2, 4, 12, 19), (6, 4, 3, 3), (0, 0, 0, 0)),
    "asymmetric_padding": ((1, 3, 10, 17), (13, 3, 3, 3), (2, 0, 1, 3)),
    "padding_beyond_the_kernel": ((2, 3, 8, 17), (12, 3, 5, 5), (3, 4, 3, 4)),
    "wide_kernel": ((2, 4, 6, 30), (7, 4, 1, 7), (0, 3, 0, 3)),
    "tall_kernel": ((2, 4, 30, 16), (7, 4, 7, 1), (3, 0, 3, 0)),
    "deep_channel_blocks": ((1, 130, 6, 16), (20, 130, 3, 3), (1, 1, 1, 1)),  # K = 1170
    "many_rows_one_image": ((1, 8, 12, 16), (40, 8, 3, 3), (1, 1, 1, 1)),
}


@pytest.mark.parametrize("constant_weights", [True, False], ids=["packed_weights", "weights_in"])
@pytest.mark.parametrize("name", list(CASES))
def test_conv_packed_from_the_image_matches_torch(name: str, constant_weights: bool) -> None:
    x_shape, w_shape, padding = CASES[name]
    text = run(x_shape, w_shape, padding, constant_weights=constant_weights)
    assert "_img" in text and "im2col" not in text, text  # no im2col matrix is formed
    assert ("_pa_img" in text) == constant_weights, text
    assert ("wpack" in text) == constant_weights, text  # the packed weights, a kernel buffer


def test_f64_and_no_bias() -> None:
    run((2, 6, 9, 12), (10, 6, 3, 3), (1, 1, 1, 1), constant_weights=True, bias=False,
        dtype=np.float64)


@pytest.mark.parametrize("cpus", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_row_chunks_and_image_chunks_on_threads(monkeypatch, cpus: int, batch: int) -> None:
    """Prepacked weights need every row chunk to start at a panel boundary."""
    run((batch, 8, 10, 18), (50, 8, 3, 3), (1, 1, 1, 1), constant_weights=True, cores=cpus)


NARROW_AND_STRIDED = {  # x shape, w shape, padding, stride
    "fourteen_wide": ((1, 32, 14, 14), (40, 32, 3, 3), (1, 1, 1, 1), 1),
    "seven_wide_four_rows_a_vector": ((2, 24, 7, 7), (30, 24, 3, 3), (1, 1, 1, 1), 1),
    "five_wide_valid": ((1, 16, 9, 7), (20, 16, 3, 3), (0, 0, 0, 0), 1),
    "narrow_1x1_with_padding": ((1, 20, 9, 9), (28, 20, 1, 1), (1, 2, 0, 1), 1),
    "stem_7x7_stride_2": ((1, 3, 64, 64), (16, 3, 7, 7), (3, 3, 3, 3), 2),
    "3x3_stride_2": ((2, 16, 30, 30), (24, 16, 3, 3), (1, 1, 1, 1), 2),
    "3x3_stride_2_odd_valid": ((1, 12, 33, 37), (20, 12, 3, 3), (0, 0, 0, 0), 2),
    "1x1_stride_2_narrow": ((1, 64, 28, 28), (48, 64, 1, 1), (0, 0, 0, 0), 2),
    "stride_2_asymmetric_padding": ((1, 8, 21, 40), (12, 8, 5, 5), (2, 0, 1, 3), 2),
    "stride_2_seven_wide": ((1, 40, 14, 14), (36, 40, 3, 3), (1, 1, 1, 1), 2),
}


@pytest.mark.parametrize("constant_weights", [True, False], ids=["packed_weights", "weights_in"])
@pytest.mark.parametrize("name", list(NARROW_AND_STRIDED))
def test_narrow_and_strided_convs_pack_from_the_image(name: str, constant_weights: bool) -> None:
    x_shape, w_shape, padding, stride = NARROW_AND_STRIDED[name]
    text = run(x_shape, w_shape, padding, constant_weights=constant_weights, stride=stride)
    assert "_img" in text and "im2col" not in text, text


def test_stride_2_f64_on_threads() -> None:
    run((1, 6, 19, 35), (10, 6, 3, 3), (1, 1, 1, 1), constant_weights=True, dtype=np.float64,
        stride=2, cores=2)


def test_very_narrow_images_take_im2col() -> None:
    """Output rows so narrow that a vector spans more than MAX_RUNS rows: im2col as before."""
    lanes = Target.host().f32_lanes
    out_w = -(-(lanes - 1) // conv_pack.MAX_RUNS) - 1  # one pixel too narrow
    text = run((2, 16, 40, out_w + 2), (8, 16, 3, 3), (0, 0, 0, 0), constant_weights=True)
    assert "im2col" in text and "_img" not in text, text


def test_stride_3_takes_im2col() -> None:
    text = run((1, 8, 50, 50), (16, 8, 3, 3), (1, 1, 1, 1), constant_weights=True, stride=3)
    assert "im2col" in text and "_img" not in text, text


@pytest.mark.parametrize("cpu", ["znver4", "sapphirerapids", "x86-64-v3"])
def test_depth_blocks_hold_whole_channels(cpu: str) -> None:
    """Depth blocks of whole 3x3 channels, no deeper than the GEMM's own depth limit (two of
    the target's default KC), whose packed panel fits the share of L2 it is given."""
    target = Target.cpu(cpu)
    lanes = target.f32_lanes
    blocking = conv_pack.conv_blocking(64, 3136, 2304, 9, "f32", lanes, 4, target)
    assert blocking.kc % 9 == 0
    assert blocking.kc <= 2 * default_blocking("f32", lanes, target).kc
    assert blocking.kc * blocking.nc * 4 <= conv_pack.l2_panel_bytes(target)


def test_compiling_prints_no_llvm_warning(monkeypatch, capfd) -> None:
    """A loop around a GEMM call per image is not marked for vectorization: LLVM would warn
    on stderr that it could not vectorize it."""
    monkeypatch.setenv("EMBER_CACHE", "0")
    capfd.readouterr()
    run((10, 4, 10, 18), (8, 4, 3, 3), (1, 1, 1, 1), constant_weights=True, cores=2)
    assert capfd.readouterr().err == ""
