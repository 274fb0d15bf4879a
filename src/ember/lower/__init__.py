"""Lowering: scheduled graph -> loop IR (loop nests, loads, stores, vector math) and schedules.

Importing this package imports every `ops_*.py` module in it, listed here, and each registers
its rules in the tables of `ember.lower.rules`: once `ember.lower` is imported (`import ember`
does), every target-neutral lowering rule is there. Target rules come from the backends
(`ember.backend.cpu` registers the CPU's packed GEMM and convolution).
"""

from ember.lower import (  # noqa: F401  (each registers its rules)
    ops_elementwise,
    ops_grad,
    ops_layout,
    ops_linalg,
    ops_norm,
    ops_pool,
    ops_reduce,
    ops_remainder,
    ops_resample,
    ops_shape,
    ops_sort,
)
