"""Ember: a deep-learning framework built around an optimizing compiler.

    g = ember.trace(model, x)        # static graph IR; print(g) gives the text form
    exe = ember.compile(model, x)    # an executable: exe(x) -> numpy
    g2 = ember.parse(str(g))         # the text form parses back
"""

# Importing `ember.ops` registers every op row, `ember.lower` every target-neutral lowering
# rule and `ember.backend` every backend's target rules: the registries are complete once
# `import ember` returns; nothing fills them on first use.
from ember import autodiff, backend, lower, nn, ops, optim  # noqa: F401
from ember.driver import Executable, compile, jit
from ember.errors import (
    EmberError,
    ExecutionError,
    IRParseError,
    IRVerifyError,
    LoweringError,
    PassFailed,
    ShapeError,
    TraceError,
    UnsupportedError,
)
from ember.frontend.tensor import Tensor, concatenate, pad, split, stack, where
from ember.frontend.tracer import TensorSpec, trace
from ember.interpreter import interpret
from ember.ir.graph import Graph, GraphBuilder, Node, Value
from ember.ir.parser import parse_graph
from ember.ir.printer import print_graph
from ember.ir.types import DType, TensorType
from ember.ir.verify import verify
from ember.nn.init import manual_seed
from ember.target import Target
from ember.train import TrainStep, grad, train_step, value_and_grad

__version__ = "0.1.0"

parse = parse_graph

__all__ = [
    "DType", "EmberError", "Executable", "ExecutionError", "Graph", "GraphBuilder",
    "IRParseError", "IRVerifyError", "LoweringError", "Node", "PassFailed", "ShapeError",
    "Target", "Tensor", "TrainStep", "TensorSpec", "TensorType", "TraceError", "UnsupportedError", "Value",
    "__version__", "compile", "concatenate", "grad", "interpret", "jit", "manual_seed", "nn", "onnx", "pad",
    "parse", "parse_graph", "print_graph", "split", "stack", "trace", "train_step", "value_and_grad", "verify", "where",
]


def __getattr__(name: str) -> object:
    # `ember.onnx` is imported on first use: it needs the optional `onnx` package.
    if name == "onnx":
        import importlib

        return importlib.import_module("ember.onnx")
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
