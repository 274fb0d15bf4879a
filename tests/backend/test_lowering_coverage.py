"""Every op of the registry lowers to loop IR: no op falls back to numpy at opt_level >= 1."""

from __future__ import annotations

import pytest

from ember.ir.ops import OPS, get_op
from ember.lower.rules import lowering_for

get_op("add")  # loads the registry


@pytest.mark.parametrize("op", sorted(o for o in OPS if o != "const"))
def test_op_has_a_cpu_lowering(op: str) -> None:
    assert lowering_for(op) is not None, f"op {op!r} has no CPU lowering"
