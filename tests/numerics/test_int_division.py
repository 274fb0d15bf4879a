"""Integer division at every opt level: never a crash, never a wrong answer.

Ember's `div` on integers truncates toward zero (C and ONNX; numpy's `//` floors instead). A
zero divisor raises ExecutionError naming the op and where it came from at every level: the
compiled code checks it and reports through the kernel's status word, since x86's `idiv`
would kill the process with SIGFPE. INT_MIN / -1, which also faults in `idiv` (and in
PyTorch), wraps to INT_MIN, as numpy's two's complement arithmetic gives.

The models are tiny ONNX graphs (`Div` is how integer division reaches Ember: traced `/`
divides as real numbers), loaded with `ember.onnx.load`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ember

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

LEVELS = (0, 1, 2, 3)
ONNX_TYPES = {np.int32: TensorProto.INT32, np.int64: TensorProto.INT64}


def division_model(path: Path, dtype: type, size: int, fused: bool = False,
                   constant_divisor: np.ndarray | None = None) -> str:
    """y = a / b (or (a + a) / b when `fused`, so that levels 2 and 3 fuse the two), with b an
    input or a constant."""
    kind = ONNX_TYPES[dtype]
    nodes, initializers = [], []
    inputs = [helper.make_tensor_value_info("a", kind, [size])]
    numerator = "a"
    if fused:
        nodes.append(helper.make_node("Add", ["a", "a"], ["twice"], name="Twice"))
        numerator = "twice"
    if constant_divisor is None:
        inputs.append(helper.make_tensor_value_info("b", kind, [size]))
    else:
        initializers.append(numpy_helper.from_array(constant_divisor.astype(dtype), "b"))
    nodes.append(helper.make_node("Div", [numerator, "b"], ["y"], name="Quotient"))
    graph = helper.make_graph(nodes, "division", inputs,
                              [helper.make_tensor_value_info("y", kind, [size])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    file = path / f"division_{np.dtype(dtype).name}_{int(fused)}.onnx"
    onnx.save(model, file)
    return str(file)


def truncated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b rounded toward zero, exactly (Python integers), wrapped to the dtype."""
    bits = 8 * a.dtype.itemsize
    results = []
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        quotient = abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
        results.append((quotient + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1)))
    return np.array(results, dtype=a.dtype)


def operands(dtype: type) -> tuple[np.ndarray, np.ndarray]:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(5)
    a = rng.integers(-1000, 1000, 200).astype(dtype)
    b = rng.integers(1, 40, 200).astype(dtype) * rng.choice([-1, 1], 200).astype(dtype)
    # ... INT_MIN / -1, and INT_MIN / 2 (whose double, in the fused model, is INT_MIN) by -1
    edge_a = np.array([7, -7, 7, -7, 0, info.min, info.min, info.max, info.max, -1, 1, 6,
                       info.min // 2], dtype=dtype)
    edge_b = np.array([2, 2, -2, -2, 5, -1, 1, -1, info.min, info.min, info.max, 3, -1],
                      dtype=dtype)
    return np.concatenate([a, edge_a]), np.concatenate([b, edge_b])


@pytest.mark.parametrize("fused", [False, True], ids=["alone", "fused"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_div_truncates_and_int_min_by_minus_one_wraps_at_every_level(tmp_path, dtype,
                                                                             fused) -> None:
    a, b = operands(dtype)
    model = ember.onnx.load(division_model(tmp_path, dtype, a.size, fused))
    numerator = a + a if fused else a
    expected = truncated(numerator, b)
    assert expected[-8 if not fused else -1] == np.iinfo(dtype).min  # INT_MIN / -1
    for level in LEVELS:
        got = ember.compile(model, a, b, opt_level=level)(a, b)
        np.testing.assert_array_equal(got, expected, err_msg=f"level {level}")
        assert got.dtype == dtype


def test_integer_div_matches_onnx_runtime(tmp_path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    a, b = operands(np.int32)
    keep = ~((a == np.iinfo(np.int32).min) & (b == -1))  # faults in ONNX Runtime itself
    a, b = a[keep], b[keep]
    path = division_model(tmp_path, np.int32, a.size)
    (theirs,) = onnxruntime.InferenceSession(path).run(None, {"a": a, "b": b})
    got = ember.compile(ember.onnx.load(path), a, b)(a, b)
    np.testing.assert_array_equal(got, theirs)


@pytest.mark.parametrize("fused", [False, True], ids=["alone", "fused"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_division_by_zero_raises_naming_div_at_every_level(tmp_path, dtype,
                                                                   fused) -> None:
    a, b = operands(dtype)
    b[17] = 0
    path = division_model(tmp_path, dtype, a.size, fused)
    model = ember.onnx.load(path)
    for level in LEVELS:
        executable = ember.compile(model, a, b, opt_level=level)
        with pytest.raises(ember.ExecutionError) as caught:
            executable(a, b)
        message = str(caught.value)
        assert "div" in message and "integer division by zero" in message, (level, message)
        assert f"{Path(path).name}:Quotient" in message, (level, message)
        # the executable stays usable, and right, after the error
        b[17] = 1
        np.testing.assert_array_equal(executable(a, b), truncated(a + a if fused else a, b))
        b[17] = 0


@pytest.mark.parametrize("divisor", [np.array(0), np.array([3, 0, -2, 5])],
                         ids=["scalar", "vector"])
def test_integer_division_by_a_constant_zero_raises_at_every_level(tmp_path, divisor) -> None:
    a = np.array([6, -6, 9, 10], dtype=np.int32)
    model = ember.onnx.load(division_model(tmp_path, np.int32, 4, fused=True,
                                           constant_divisor=divisor))
    for level in LEVELS:
        executable = ember.compile(model, a, opt_level=level)
        with pytest.raises(ember.ExecutionError, match="integer division by zero"):
            executable(a)
