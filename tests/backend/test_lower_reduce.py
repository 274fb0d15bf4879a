"""Reductions, softmax, normalization and dropout compiled to native code, against numpy.

The shared op tests (tests/numerics) cover small shapes; these use shapes big enough to reach
the blocked and parallel paths, every axis combination, NaN and ties, and check the loop
order of the kernels.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ember.ir.graph import GraphBuilder
from ember.ir.types import DType, TensorType
from ember.lower.loops import Loop, format_kernel
from ember.lower.program import lower_graph
from ember.runtime import compile_native
from ember.runtime.native import schedule_program
from ember.target import Target


def one_op(op: str, *arrays: np.ndarray, **attrs: object):
    builder = GraphBuilder(op)
    values = [builder.input(TensorType(DType.from_numpy(a.dtype), a.shape), f"x{i}")
              for i, a in enumerate(arrays)]
    return builder.build([builder.op(op, *values, **attrs)])


def run(op: str, *arrays: np.ndarray, **attrs: object) -> np.ndarray:
    (result,) = compile_native(one_op(op, *arrays, **attrs))(*arrays)
    return result


def uniform(*shape: int, seed: int = 0, low: float = -1.0, high: float = 1.0,
            dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def assert_sum_close(actual: np.ndarray, x: np.ndarray, axes: tuple[int, ...],
                     keepdims: bool, mean: bool = False) -> None:
    """Against a float64 sum; a float32 sum of n terms may be off by ~n * eps * sum|x|."""
    expected = np.sum(x.astype(np.float64), axis=axes, keepdims=keepdims)
    bound = np.sum(np.abs(x.astype(np.float64)), axis=axes, keepdims=keepdims)
    count = math.prod(x.shape[a] for a in axes)
    if mean:
        expected, bound = expected / count, bound / count
    assert actual.shape == expected.shape and actual.dtype == x.dtype
    tolerance = 4 * max(count, 1) * np.finfo(x.dtype).eps * bound + 1e-30
    error = np.abs(actual.astype(np.float64) - expected)
    assert np.all(error <= tolerance), f"max error {error.max()} over axes {axes}"


# -- sum, mean, prod, max, min --------------------------------------------------------------------


def test_sum_over_leading_axis_of_a_tall_matrix() -> None:
    # 257 columns: four blocks of 64 and a remainder of one; 1000 rows accumulated per block.
    x = uniform(1000, 257)
    assert_sum_close(run("sum", x, axes=(0,)), x, (0,), False)


def test_sum_over_leading_axis_with_few_columns_is_not_a_parallel_race() -> None:
    # A reduced loop outermost would be split over threads and lose updates.
    x = uniform(20000, 3, seed=1)
    for _ in range(3):
        assert_sum_close(run("sum", x, axes=(0,), keepdims=True), x, (0,), True)


def test_sum_and_mean_over_last_axis_of_large_rows() -> None:
    x = uniform(64, 4099, seed=2)
    assert_sum_close(run("sum", x, axes=(1,)), x, (1,), False)
    assert_sum_close(run("mean", x, axes=(-1,), keepdims=True), x, (1,), True, mean=True)


RANK4 = (3, 4, 1, 5)
ALL_AXES = [axes for count in range(5) for axes in itertools.combinations(range(4), count)]


@pytest.mark.parametrize("axes", ALL_AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_every_axis_combination(axes: tuple[int, ...], keepdims: bool) -> None:
    x = uniform(*RANK4, seed=3, low=0.5, high=1.5)
    x64 = x.astype(np.float64)
    graph_results = {op: run(op, x, axes=axes, keepdims=keepdims)
                     for op in ("sum", "mean", "prod", "max", "min")}
    expected = {"sum": np.sum(x64, axis=axes, keepdims=keepdims),
                "mean": np.mean(x64, axis=axes, keepdims=keepdims),
                "prod": np.prod(x64, axis=axes, keepdims=keepdims),
                "max": np.max(x64, axis=axes, keepdims=keepdims),
                "min": np.min(x64, axis=axes, keepdims=keepdims)}
    for op, actual in graph_results.items():
        assert actual.shape == expected[op].shape, op
        np.testing.assert_allclose(actual, expected[op], rtol=1e-5, err_msg=f"{op} {axes}")


@pytest.mark.parametrize("axes", [(0,), (1,), (0, 2), (1, 2), (0, 1, 2)], ids=str)
def test_integer_sum_and_prod_wrap_like_numpy(axes: tuple[int, ...]) -> None:
    x = np.random.default_rng(4).integers(-50, 50, (6, 70, 5)).astype(np.int32)
    wide = x.astype(np.int64)
    np.testing.assert_array_equal(run("sum", x, axes=axes),
                                  np.sum(wide, axis=axes).astype(np.int32))
    # Products overflow: both sides keep the low 32 bits of the exact product.
    np.testing.assert_array_equal(run("prod", x, axes=axes),
                                  np.prod(wide, axis=axes).astype(np.int32))
    np.testing.assert_array_equal(run("max", x, axes=axes), np.max(wide, axis=axes))
    np.testing.assert_array_equal(run("min", x, axes=axes), np.min(wide, axis=axes))


@pytest.mark.parametrize("axes", [(0,), (1,)], ids=str)
@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_propagate_nan_and_handle_infinities(op: str, axes: tuple[int, ...]) -> None:
    x = uniform(9, 130, seed=5)
    x[2, 7] = np.nan  # column 7 and row 2
    x[4, 100] = np.nan  # column 100 and row 4, after other values
    x[:, 0] = -np.inf
    x[:, 1] = np.inf
    x[6, :] = -np.inf
    x[7, :] = np.inf
    expected = getattr(np, op)(x.astype(np.float64), axis=axes)
    np.testing.assert_array_equal(run(op, x, axes=axes), expected.astype(np.float32))


@pytest.mark.parametrize("axes", [(0,), (1,)], ids=str)
def test_empty_reductions_give_the_identity(axes: tuple[int, ...]) -> None:
    x = np.zeros((0, 5), np.float32) if axes == (0,) else np.zeros((5, 0), np.float32)
    np.testing.assert_array_equal(run("sum", x, axes=axes), np.zeros(5, np.float32))
    np.testing.assert_array_equal(run("prod", x, axes=axes), np.ones(5, np.float32))
    assert np.isnan(run("mean", x, axes=axes)).all()


# -- argmax, argmin -----------------------------------------------------------------------------


def first_index(rows: np.ndarray, pick: str) -> np.ndarray:
    """Per row, the first index of the extreme; a NaN counts as the extreme (Python loop)."""
    result = []
    for row in rows.tolist():
        nans = [i for i, v in enumerate(row) if v != v]
        if nans:
            result.append(nans[0])
        else:
            best = max(row) if pick == "argmax" else min(row)
            result.append(row.index(best))
    return np.array(result, np.int64)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_argmin_ties_and_nan(op: str, axis: int) -> None:
    rng = np.random.default_rng(6)
    x = rng.integers(0, 4, (5, 37, 70)).astype(np.float32)  # many ties
    x[1, 3, 5] = np.nan
    x[2, 10, 20] = np.nan
    x[2, 11, 20] = np.nan  # a second NaN along axis 1: the first one wins
    x[3, :, :] = np.nan
    x[4, 7, :] = -np.inf
    rows = np.moveaxis(x, axis, -1)
    expected = first_index(rows.reshape(-1, rows.shape[-1]), op).reshape(rows.shape[:-1])
    actual = run(op, x, axis=axis)
    assert actual.dtype == np.int64
    np.testing.assert_array_equal(actual, expected)
    kept = run(op, x, axis=axis, keepdims=True)
    np.testing.assert_array_equal(kept, np.expand_dims(expected, axis))


def test_argmax_of_integers_keeps_the_first_tie() -> None:
    x = np.array([[3, 7, 7, 1], [-2, -2, -5, -2]], np.int64)
    np.testing.assert_array_equal(run("argmax", x, axis=1), [1, 0])
    np.testing.assert_array_equal(run("argmin", x, axis=0), [1, 1, 1, 1])


# -- softmax, log_softmax -------------------------------------------------------------------------


def softmax64(x: np.ndarray, axis: int) -> np.ndarray:
    x = x.astype(np.float64)
    exps = np.exp(x - x.max(axis=axis, keepdims=True))
    return exps / exps.sum(axis=axis, keepdims=True)


def test_softmax_over_rows_of_a_large_matrix() -> None:
    x = uniform(128, 1000, seed=7, low=-8, high=8)
    actual = run("softmax", x, axis=-1)
    np.testing.assert_allclose(actual, softmax64(x, 1), rtol=2e-5, atol=1e-9)
    np.testing.assert_allclose(actual.sum(axis=1, dtype=np.float64), 1, rtol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax_and_log_softmax_over_any_axis(axis: int) -> None:
    x = uniform(6, 50, 33, seed=8, low=-20, high=20)
    expected = softmax64(x, axis)
    np.testing.assert_allclose(run("softmax", x, axis=axis), expected, rtol=2e-5, atol=1e-12)
    np.testing.assert_allclose(run("log_softmax", x, axis=axis), np.log(expected),
                               rtol=2e-5, atol=2e-5)


def test_softmax_of_huge_logits_and_nan() -> None:
    x = uniform(4, 300, seed=9, low=1e4, high=1.1e4)
    np.testing.assert_allclose(run("softmax", x, axis=1), softmax64(x, 1), rtol=2e-5, atol=1e-12)
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis=1, keepdims=True)
    log_expected = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(run("log_softmax", x, axis=1), log_expected, rtol=2e-5, atol=1e-3)
    x[1, 5] = np.nan
    for op in ("softmax", "log_softmax"):
        result = run(op, x, axis=1)
        assert np.isnan(result[1]).all() and not np.isnan(result[[0, 2, 3]]).any(), op


def test_softmax_f64_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    x = uniform(3, 40, 17, seed=10, low=-5, high=5, dtype=np.float64)
    for op in ("softmax", "log_softmax"):
        expected = getattr(torch, op)(torch.from_numpy(x), dim=1).numpy()
        np.testing.assert_allclose(run(op, x, axis=1), expected, rtol=1e-12, atol=1e-14)


# -- layer_norm, batch_norm -----------------------------------------------------------------------


def layer_norm64(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    axes = tuple(range(x.ndim - weight.ndim, x.ndim))
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


@pytest.mark.parametrize("normalized", [(256,), (128, 256)], ids=str)
def test_layer_norm_large(normalized: tuple[int, ...]) -> None:
    x = uniform(8, 128, 256, seed=11, low=-3, high=5)
    weight, bias = uniform(*normalized, seed=12), uniform(*normalized, seed=13)
    actual = run("layer_norm", x, weight, bias, eps=1e-5)
    np.testing.assert_allclose(actual, layer_norm64(x, weight, bias, 1e-5), rtol=1e-4, atol=2e-5)


def test_layer_norm_of_a_constant_row_is_the_bias() -> None:
    x = np.full((3, 64), 1000.5, np.float32)
    weight, bias = uniform(64, seed=14), uniform(64, seed=15)
    np.testing.assert_allclose(run("layer_norm", x, weight, bias, eps=1e-5),
                               np.broadcast_to(bias, (3, 64)), atol=1e-6)


@pytest.mark.parametrize("shape", [(4, 16, 9, 9), (32, 48), (2, 3, 1000)], ids=str)
def test_batch_norm(shape: tuple[int, ...]) -> None:
    channels = shape[1]
    x = uniform(*shape, seed=16, low=-4, high=4)
    mean, weight, bias = (uniform(channels, seed=s) for s in (17, 18, 19))
    var = uniform(channels, seed=20, low=0.1, high=3)
    view = (1, -1) + (1,) * (len(shape) - 2)
    expected = ((x.astype(np.float64) - mean.reshape(view)) / np.sqrt(var.reshape(view) + 1e-3)
                * weight.reshape(view) + bias.reshape(view))
    actual = run("batch_norm", x, mean, var, weight, bias, eps=1e-3)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=2e-6)


# -- dropout ------------------------------------------------------------------------------------


def fmix32(value: int) -> int:
    """murmur3's 32-bit finalizer in Python integers (an independent statement of the hash)."""
    value ^= value >> 16
    value = (value * 0x85EBCA6B) % 2**32
    value ^= value >> 13
    value = (value * 0xC2B2AE35) % 2**32
    return value ^ (value >> 16)


def keep_bits(size: int, p: float, seed: int) -> np.ndarray:
    wide = seed % 2**64
    key = fmix32((wide % 2**32) ^ (wide >> 32))
    threshold = p * 2**32
    return np.array([fmix32((i * 0x9E3779B1 + key) % 2**32) >= threshold for i in range(size)])


@pytest.mark.parametrize(("p", "seed"), [(0.5, 0), (0.1, 7), (0.9, -3), (0.3, 2**40 + 5)])
def test_training_dropout_mask_is_the_documented_hash(p: float, seed: int) -> None:
    x = uniform(37, 29, seed=21, low=1, high=2)
    keep = keep_bits(x.size, p, seed).reshape(x.shape)
    expected = np.where(keep, x * np.float32(1 / (1 - p)), np.float32(0))
    np.testing.assert_array_equal(run("dropout", x, p=p, training=True, seed=seed), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_dropout_compiled_equals_the_reference_bit_for_bit(dtype: type) -> None:
    from ember.ops.neural import _dropout

    x = uniform(300, 301, seed=22, dtype=dtype)
    x[0, :4] = [np.nan, -0.0, np.inf, -np.inf]
    for p, seed in ((0.25, 1), (0.75, 123456789)):
        actual = run("dropout", x, p=p, training=True, seed=seed)
        expected = _dropout(x, p=p, training=True, seed=seed)
        np.testing.assert_array_equal(actual, expected)
        assert actual.dtype == dtype
        dropped = (actual == 0) & (x != 0)
        assert abs(dropped.mean() - p) < 0.01  # 90000 draws: std of the mean < 0.0015


def test_dropout_masks_differ_between_seeds_and_are_not_periodic() -> None:
    x = np.ones(4096, np.float32)
    first = run("dropout", x, p=0.5, training=True, seed=1) == 0
    second = run("dropout", x, p=0.5, training=True, seed=2) == 0
    assert 0.4 < (first != second).mean() < 0.6
    # Neighbouring elements are independent: pairs agree about half the time.
    assert 0.45 < (first[1:] == first[:-1]).mean() < 0.55


# -- loop order ---------------------------------------------------------------------------------


def scheduled_kernel(op: str, shape: tuple[int, ...], **attrs: object):
    target = Target.host().with_(cores=2)  # parallel loops however many CPUs this test has
    program = schedule_program(lower_graph(one_op(op, np.zeros(shape, np.float32), **attrs),
                                           target=target))
    (call,) = program.calls
    return call.kernel


def test_sum_over_last_axis_accumulates_in_a_register_over_a_contiguous_loop() -> None:
    kernel = scheduled_kernel("sum", (4096, 300), axes=(1,))  # enough work for two threads
    text = format_kernel(kernel)
    assert "float acc0 = 0.0f;" in text
    assert "acc0 = (acc0 + in0[(base0 + r0)]);" in text
    (outer,) = kernel.body
    assert isinstance(outer, Loop) and outer.kind == "parallel" and outer.extent == 4096


def test_sum_over_leading_axis_blocks_columns_outermost() -> None:
    kernel = scheduled_kernel("sum", (100, 257), axes=(0,))
    text = format_kernel(kernel)
    # four blocks of 64 and one remainder column, each accumulating rows into the output
    assert [(loop.var.name, loop.extent) for loop in kernel.body] == [("b0", 4), ("b1", 1)]
    assert "out0[(obase0 + j1)] = (out0[(obase0 + j1)] + in0[(row0 + j1)]);" in text
    assert "for (int64_t j1 = 0; j1 < 64; j1++) {  // vectorize" in text
    assert "for (int64_t r0 = 0; r0 < 100; r0++) {" in text


def test_sum_over_many_rows_reads_whole_pages() -> None:
    """Over 256 rows or more, blocks of 1024 columns: each row is read 4 KiB at a time."""
    kernel = scheduled_kernel("sum", (1000, 2100), axes=(0,))
    assert [(loop.var.name, loop.extent) for loop in kernel.body] == [("b0", 2), ("b1", 1)]
    assert "j1 < 1024; j1++) {  // vectorize" in format_kernel(kernel)
    x = np.random.default_rng(5).standard_normal((1000, 2100)).astype(np.float32)
    got = compile_native(one_op("sum", x, axes=(0,)))(x)[0]
    np.testing.assert_allclose(got, x.astype(np.float64).sum(axis=0), rtol=1e-4, atol=1e-3)
