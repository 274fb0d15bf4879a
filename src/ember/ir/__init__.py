"""The graph IR: types, values, nodes, graphs, the op registry, printer, parser and verifier."""

from ember.ir.attrs import Attrs, Const
from ember.ir.graph import Graph, GraphBuilder, Node, Value
from ember.ir.ops import OPS, OpDef, get_op, register_op
from ember.ir.parser import parse_graph
from ember.ir.printer import print_graph
from ember.ir.types import DType, TensorType, f32, f64, i32, i64
from ember.ir.verify import verify

__all__ = [
    "OPS", "Attrs", "Const", "DType", "Graph", "GraphBuilder", "Node", "OpDef", "TensorType",
    "Value", "f32", "f64", "get_op", "i32", "i64", "parse_graph", "print_graph", "register_op",
    "verify",
]
