"""Frontends: tracing Python code into graphs (ONNX import lives in `ember.onnx`)."""

from ember.frontend.tensor import Tensor, concatenate, pad, split, stack, where
from ember.frontend.tracer import TensorSpec, trace

__all__ = ["Tensor", "TensorSpec", "concatenate", "pad", "split", "stack", "trace", "where"]
