"""`fmod(a, b)`: C's fmod of floats, the remainder of a / b truncated toward zero.

The result is exact (it takes the dividend's sign, |fmod(a, b)| < |b|): fmod(a, 0), fmod(inf, b)
and NaN operands give NaN, fmod(a, inf) is a for finite a, as numpy's np.fmod and torch.fmod
give. Operands share one float dtype and broadcast as numpy's; integer remainders are exact
with `div` already (the frontends write a - div(a, b) * b).
"""

from __future__ import annotations

import numpy as np

from ember.ir.ops import OpDef, register_op
from ember.ops.elementwise import FLOAT, binary_rule


def _fmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.fmod(a, b)


# NOTE: not `elementwise`: fusion would lower it through its scalar rule, frem, which the
# NVPTX backend computes inexactly (see ember.lower.ops_remainder).
register_op(OpDef("fmod", infer=binary_rule(FLOAT), reference=_fmod, arity=(2, 2),
                  doc="C's fmod: the remainder with the dividend's sign"))
