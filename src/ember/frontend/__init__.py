"""Frontends: tracing Python code into graphs (ONNX import lives in `ember.onnx`)."""

from ember.frontend.tracer import TensorSpec, trace  # first: tensor.py imports it back
from ember.frontend.tensor import Tensor, concatenate, pad, split, stack, where  # noqa: I001

__all__ = ["Tensor", "TensorSpec", "concatenate", "pad", "split", "stack", "trace", "where"]
