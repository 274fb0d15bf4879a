"""One converter per ONNX operator, registered in `CONVERTERS` with the opsets it supports.

Importing this package registers every converter; the families live in `elementwise`, `shape`,
`indexing`, `reduce`, `nn`, `recurrent`, `signal` and `training` (ONNX's
optimizers).
"""

from ember.onnx.converters import (
    elementwise,
    indexing,
    nn,
    recurrent,
    reduce,
    resample,
    shape,
    signal,
    training,
)
from ember.onnx.converters.base import (
    CONVERTERS,
    Converter,
    NodeContext,
    Slot,
    converter,
    materialize,
    onnx_dtype,
)

__all__ = [
    "CONVERTERS", "Converter", "NodeContext", "Slot", "converter", "elementwise", "indexing",
    "materialize", "nn", "onnx_dtype", "recurrent", "reduce", "resample", "shape", "signal",
    "training",
]
