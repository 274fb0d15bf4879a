"""The op rows. Importing this package registers every op in `ember.ir.ops.OPS`."""

from ember.ops import elementwise, grad, layout, neural, reduce, remainder, resample, shape, sort

__all__ = ["elementwise", "grad", "layout", "neural", "reduce", "remainder", "resample", "shape",
           "sort"]
