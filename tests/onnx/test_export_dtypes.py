"""Graphs on the narrow and unsigned element types export to ONNX and run in ONNX Runtime
with numpy's results (integer wraparound included)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import ember  # noqa: E402
import ember.onnx  # noqa: E402

DTYPES = [np.float16, np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_export_of_narrow_and_unsigned_types_runs_in_onnxruntime(tmp_path, dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    top = int(info.max) if info is not None else 1000
    x = np.array([[0, 1, top // 2 + 3], [top, 7, 2]], dtype=dtype)

    def model(a):
        return a * a + a  # wraps around for the integer types, as numpy does

    path = tmp_path / "m.onnx"
    ember.onnx.save(ember.compile(model, x), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    with np.errstate(over="ignore"):
        want = x * x + x
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
