"""Loop IR's building helpers fold only what IEEE arithmetic allows: x * 0 and x + 0.0 stay
operations on floats (NaN * 0 is NaN, -0.0 + 0.0 is +0.0), and fold on integers."""

from __future__ import annotations

import numpy as np
import pytest

from ember.ir.types import DType
from ember.lower import loops


def float_var(dtype: DType = DType.F32) -> loops.Var:
    return loops.Var("x", dtype)


@pytest.mark.parametrize("dtype", [DType.F32, DType.F64])
def test_float_times_zero_is_not_folded(dtype: DType) -> None:
    x = float_var(dtype)
    assert isinstance(loops.mul(x, loops.imm(0, dtype)), loops.Binary)
    assert isinstance(loops.mul(loops.imm(0, dtype), x), loops.Binary)
    # What the fold would have lost: IEEE products with zero.
    with np.errstate(invalid="ignore"):
        assert np.isnan(np.float32(np.nan) * np.float32(0))
    assert np.signbit(np.float32(-2) * np.float32(0))


@pytest.mark.parametrize("dtype", [DType.F32, DType.F64])
def test_float_plus_positive_zero_is_not_folded_but_negative_zero_is(dtype: DType) -> None:
    x = float_var(dtype)
    assert isinstance(loops.add(x, loops.imm(0.0, dtype)), loops.Binary)
    assert loops.add(x, loops.imm(-0.0, dtype)) is x
    assert not np.signbit(np.float32(-0.0) + np.float32(0.0))


def test_integer_zeros_and_ones_fold() -> None:
    i = loops.Var("i", DType.I64)
    assert loops.mul(i, loops.index_imm(0)) == loops.index_imm(0)
    assert loops.mul(i, loops.index_imm(1)) is i
    assert loops.add(i, loops.index_imm(0)) is i
