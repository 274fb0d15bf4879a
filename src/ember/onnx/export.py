"""ONNX export: an Ember graph (or executable) as an ONNX model that ONNX Runtime runs.

    ember.onnx.save(graph_or_executable, "model.onnx", opset=17)
    model = ember.onnx.to_model(graph)          # the onnx.ModelProto, without writing it

Each Ember op has one exporter in `EXPORTERS`, filled by `@exports("relu")`. An exporter has the
signature `(node, context) -> None` and emits ONNX nodes that define a name for each of the
node's outputs (`context.name(value)`), in the manner of the lowering tables. Named constants
(module weights) become initializers under their own names; graph inputs keep their hints.

Opset-dependent forms are chosen here, not left to the caller: reduction axes are attributes
before opset 18 and inputs from it on (ReduceSum from 13), `LayerNormalization` is used from
opset 17 and spelled out below it, `Gelu` is used from opset 20. Opsets below 13 are not
supported (their Softmax flattens to 2-D and Squeeze/Unsqueeze take attributes).

Every model passes `onnx.checker.check_model(full_check=True)`. NOTE: ONNX Runtime's CPU provider
has no float64 kernels for Erf (so f64 `erf` and exact `gelu`), Conv, AveragePool and
GlobalAveragePool; f64 graphs with those ops are valid ONNX that it refuses to run.

An executable exports its optimized graph with `fused` regions inlined back into plain nodes;
when that graph holds blocked-layout ops (`layout_convert`, `conv2d_nchwc`, ...), which ONNX
has no form for, the traced graph is exported instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ember.errors import EmberError, UnsupportedError
from ember.ir.graph import Graph, Node, Value
from ember.ir.types import DType

if TYPE_CHECKING:
    import onnx

    from ember.driver import Executable

MIN_OPSET = 13
INT64_MIN = -(2**63)

ExportFn = Callable[[Node, "ExportContext"], None]
EXPORTERS: dict[str, ExportFn] = {}


def exports(*ops: str) -> Callable[[ExportFn], ExportFn]:
    """Register the decorated function as the exporter of each op in `ops`."""

    def register(fn: ExportFn) -> ExportFn:
        for op in ops:
            EXPORTERS[op] = fn
        return fn

    return register


def _onnx_dtype(dtype: DType) -> int:
    from onnx import TensorProto

    return {
        DType.F32: TensorProto.FLOAT,
        DType.F64: TensorProto.DOUBLE,
        DType.F16: TensorProto.FLOAT16,
        DType.BF16: TensorProto.BFLOAT16,
        DType.I8: TensorProto.INT8,
        DType.I16: TensorProto.INT16,
        DType.I32: TensorProto.INT32,
        DType.I64: TensorProto.INT64,
        DType.U8: TensorProto.UINT8,
        DType.U16: TensorProto.UINT16,
        DType.U32: TensorProto.UINT32,
        DType.U64: TensorProto.UINT64,
        DType.BOOL: TensorProto.BOOL,
    }[dtype]


# ---------------------------------------------------------------------------------------------
# The export context: names, initializers and the growing list of ONNX nodes.


class ExportContext:
    """What exporters write into: ONNX nodes, initializers, and a name for every Ember value."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: dict[Value, str] = {}
        self.used: set[str] = set()
        self.scalars: dict[tuple[str, str], str] = {}  # (dtype, repr(value)) -> initializer
        self.current: Node | None = None  # the Ember node being exported (for doc strings)

    def fresh(self, hint: str) -> str:
        """A name no other value, initializer or node output of the model uses."""
        base = hint or "t"
        name, count = base, 0
        while name in self.used:
            count += 1
            name = f"{base}_{count}"
        self.used.add(name)
        return name

    def name(self, value: Value) -> str:
        """The ONNX name of an Ember value, given on first use."""
        if value not in self.names:
            self.names[value] = self.fresh(value.hint or f"v{len(self.names)}")
        return self.names[value]

    def emit(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str] | None = None,
             **attributes: object) -> str:
        """Add one ONNX node; returns its first output (a fresh name unless `outputs` given)."""
        from onnx import helper

        outputs = list(outputs) if outputs is not None else [self.fresh(op_type.lower())]
        node = helper.make_node(op_type, list(inputs), outputs,
                                name=self.fresh(f"{op_type}_{len(self.nodes)}"), **attributes)
        if self.current is not None and self.current.loc:
            node.doc_string = self.current.loc
        self.nodes.append(node)
        return outputs[0]

    def initializer(self, array: np.ndarray, hint: str) -> str:
        """Add `array` as an initializer under a fresh name built from `hint`."""
        from onnx import numpy_helper

        name = self.fresh(hint)
        # NOTE: not np.ascontiguousarray, which would turn a 0-d array into a 1-d one.
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def ints(self, values: Sequence[int], hint: str = "ints") -> str:
        """A 1-D int64 initializer (shapes, axes, pads, sizes)."""
        return self.initializer(np.asarray(values, dtype=np.int64).reshape(-1), hint)

    def scalar(self, value: float | int | bool, dtype: DType) -> str:
        """A 0-d initializer of `dtype`, shared by every use of the same value."""
        key = (dtype.value, repr(value))
        if key not in self.scalars:
            array = np.asarray(value).astype(dtype.numpy)
            self.scalars[key] = self.initializer(array, f"scalar_{dtype.value}")
        return self.scalars[key]

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool,
               output: str | None = None) -> str:
        """A Reduce* node; its axes are an attribute or an input, as the opset wants."""
        outputs = None if output is None else [output]
        axes_as_input = self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13)
        if axes_as_input:
            return self.emit(op_type, [x, self.ints(axes, "axes")], outputs,
                             keepdims=int(keepdims))
        return self.emit(op_type, [x], outputs, axes=list(axes), keepdims=int(keepdims))


def _inputs(node: Node, context: ExportContext) -> list[str]:
    return [context.name(v) for v in node.inputs]


def _out(node: Node, context: ExportContext) -> list[str]:
    return [context.name(node.outputs[0])]


# ---------------------------------------------------------------------------------------------
# Elementwise ops.

_UNARY = {
    "neg": "Neg", "abs": "Abs", "sign": "Sign", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
    "reciprocal": "Reciprocal", "sin": "Sin", "cos": "Cos", "floor": "Floor", "ceil": "Ceil",
    "round": "Round", "tanh": "Tanh", "sigmoid": "Sigmoid", "erf": "Erf", "logical_not": "Not",
}
_BINARY = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "maximum": "Max",
    "minimum": "Min", "eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
    "ge": "GreaterOrEqual", "logical_and": "And", "logical_or": "Or", "logical_xor": "Xor",
}


@exports(*_UNARY, *_BINARY)
def export_elementwise(node: Node, context: ExportContext) -> None:
    """One ONNX node of the same arity (ONNX broadcasts as numpy does)."""
    op_type = _UNARY.get(node.op) or _BINARY[node.op]
    context.emit(op_type, _inputs(node, context), _out(node, context))


@exports("ne")
def export_ne(node: Node, context: ExportContext) -> None:
    # ne(a, b) -> Not(Equal(a, b))
    equal = context.emit("Equal", _inputs(node, context))
    context.emit("Not", [equal], _out(node, context))


@exports("rsqrt")
def export_rsqrt(node: Node, context: ExportContext) -> None:
    # rsqrt(x) -> Reciprocal(Sqrt(x))
    root = context.emit("Sqrt", _inputs(node, context))
    context.emit("Reciprocal", [root], _out(node, context))


@exports("relu")
def export_relu(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    dtype = node.inputs[0].dtype
    if dtype.is_float:
        context.emit("Relu", [x], _out(node, context))
    else:  # integer relu(x) -> Max(x, 0): Relu takes integers only from opset 14
        context.emit("Max", [x, context.scalar(0, dtype)], _out(node, context))


@exports("silu")
def export_silu(node: Node, context: ExportContext) -> None:
    # silu(x) -> Mul(x, Sigmoid(x))
    (x,) = _inputs(node, context)
    context.emit("Mul", [x, context.emit("Sigmoid", [x])], _out(node, context))


@exports("leaky_relu")
def export_leaky_relu(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    alpha = float(node.attrs["alpha"])
    dtype = node.inputs[0].dtype
    if dtype.is_float:
        context.emit("LeakyRelu", [x], _out(node, context), alpha=alpha)
        return
    # Integers scale in float64 and truncate toward zero (the reference's rule):
    # leaky_relu(x) -> Where(x >= 0, x, Cast(Cast(x, f64) * alpha, int))
    wide = context.emit("Cast", [x], to=_onnx_dtype(DType.F64))
    scaled = context.emit("Mul", [wide, context.scalar(alpha, DType.F64)])
    narrow = context.emit("Cast", [scaled], to=_onnx_dtype(dtype))
    keep = context.emit("GreaterOrEqual", [x, context.scalar(0, dtype)])
    context.emit("Where", [keep, x, narrow], _out(node, context))


@exports("gelu")
def export_gelu(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    dtype = node.inputs[0].dtype
    approximate = str(node.attrs["approximate"])
    if context.opset >= 20:
        context.emit("Gelu", [x], _out(node, context), approximate=approximate)
        return
    half = context.emit("Mul", [x, context.scalar(0.5, dtype)])
    if approximate == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = context.emit("Mul", [x, context.emit("Mul", [x, x])])
        cubic = context.emit("Mul", [cube, context.scalar(0.044715, dtype)])
        inner = context.emit("Add", [x, cubic])
        scaled = context.emit("Mul", [inner, context.scalar(math.sqrt(2 / math.pi), dtype)])
        curve = context.emit("Tanh", [scaled])
    else:
        # 0.5 x (1 + erf(x / sqrt(2)))
        curve = context.emit("Erf", [context.emit("Div", [x, context.scalar(math.sqrt(2), dtype)])])
    one_plus = context.emit("Add", [curve, context.scalar(1.0, dtype)])
    context.emit("Mul", [half, one_plus], _out(node, context))


@exports("clip")
def export_clip(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    dtype = node.inputs[0].dtype
    bounds = [node.attrs.get("min"), node.attrs.get("max")]
    names = ["" if b is None else context.scalar(b, dtype) for b in bounds]
    while names and names[-1] == "":  # trailing optional inputs are left out
        names.pop()
    context.emit("Clip", [x, *names], _out(node, context))


@exports("cast")
def export_cast(node: Node, context: ExportContext) -> None:
    to = _onnx_dtype(DType(str(node.attrs["dtype"])))
    context.emit("Cast", _inputs(node, context), _out(node, context), to=to)


@exports("where")
def export_where(node: Node, context: ExportContext) -> None:
    context.emit("Where", _inputs(node, context), _out(node, context))


# ---------------------------------------------------------------------------------------------
# Reductions.

_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "prod": "ReduceProd", "max": "ReduceMax",
           "min": "ReduceMin"}


def _normalized(axes: Sequence[int], ndim: int) -> list[int]:
    return sorted({a + ndim if a < 0 else a for a in axes})


@exports(*_REDUCE)
def export_reduce(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    source = node.inputs[0]
    axes = _normalized(node.attrs["axes"], source.ndim)
    keepdims = bool(node.attrs["keepdims"])
    if not axes or source.ndim == 0:  # reduces nothing; ONNX would read no axes as "all axes"
        context.emit("Identity", [x], _out(node, context))
        return
    if source.dtype is DType.BOOL and context.opset < 20:
        # ReduceMax/Min take bool from opset 20: reduce 0/1 as int32 and cast back.
        as_int = context.emit("Cast", [x], to=_onnx_dtype(DType.I32))
        reduced = context.reduce(_REDUCE[node.op], as_int, axes, keepdims)
        context.emit("Cast", [reduced], _out(node, context), to=_onnx_dtype(DType.BOOL))
        return
    context.reduce(_REDUCE[node.op], x, axes, keepdims, _out(node, context)[0])


@exports("argmax", "argmin")
def export_arg(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    source = node.inputs[0]
    if source.ndim == 0:  # the position of a scalar is 0
        zero = context.initializer(np.zeros((), dtype=np.int64), "zero")
        context.emit("Identity", [zero], _out(node, context))
        return
    op_type = "ArgMax" if node.op == "argmax" else "ArgMin"
    axis = _normalized([int(node.attrs["axis"])], source.ndim)[0]
    # numpy returns the first of equal extremes: select_last_index=0.
    context.emit(op_type, [x], _out(node, context), axis=axis,
                 keepdims=int(bool(node.attrs["keepdims"])), select_last_index=0)


# ---------------------------------------------------------------------------------------------
# Neural-network ops.


@exports("matmul")
def export_matmul(node: Node, context: ExportContext) -> None:
    context.emit("MatMul", _inputs(node, context), _out(node, context))


@exports("matmul_nt")
def export_matmul_nt(node: Node, context: ExportContext) -> None:
    # a @ b.T of matrices (a linear layer, the weight as stored): Gemm with transB, no bias,
    # as PyTorch exports nn.Linear
    context.emit("Gemm", _inputs(node, context), _out(node, context), transB=1)


@exports("conv2d")
def export_conv2d(node: Node, context: ExportContext) -> None:
    weight = node.inputs[1]
    # NOTE: Ember's padding (top, left, bottom, right) is ONNX's (h_begin, w_begin, h_end, w_end).
    context.emit("Conv", _inputs(node, context), _out(node, context),
                 kernel_shape=list(weight.shape[2:]), strides=list(node.attrs["stride"]),
                 pads=list(node.attrs["padding"]), dilations=list(node.attrs["dilation"]),
                 group=int(node.attrs["groups"]))


@exports("max_pool2d")
def export_max_pool2d(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    dtype = node.inputs[0].dtype
    attributes = {
        "kernel_shape": list(node.attrs["kernel"]), "strides": list(node.attrs["stride"]),
        "pads": list(node.attrs["padding"]), "dilations": list(node.attrs["dilation"]),
        "ceil_mode": int(bool(node.attrs["ceil_mode"])),
    }
    if dtype.is_float:
        context.emit("MaxPool", [x], _out(node, context), **attributes)
        return
    if dtype is not DType.I32:  # int64 does not fit float64 exactly
        raise UnsupportedError(f"ONNX export of max_pool2d on {dtype} (MaxPool takes floats; "
                               "i32 is exported through f64)")
    # MaxPool has no int32 form; f64 holds every int32 exactly.
    wide = context.emit("Cast", [x], to=_onnx_dtype(DType.F64))
    pooled = context.emit("MaxPool", [wide], **attributes)
    context.emit("Cast", [pooled], _out(node, context), to=_onnx_dtype(dtype))


@exports("avg_pool2d")
def export_avg_pool2d(node: Node, context: ExportContext) -> None:
    context.emit("AveragePool", _inputs(node, context), _out(node, context),
                 kernel_shape=list(node.attrs["kernel"]), strides=list(node.attrs["stride"]),
                 pads=list(node.attrs["padding"]), ceil_mode=int(bool(node.attrs["ceil_mode"])),
                 count_include_pad=int(bool(node.attrs["count_include_pad"])))


@exports("adaptive_avg_pool2d")
def export_adaptive_avg_pool2d(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    height, width = node.inputs[0].shape[2:]
    out_height, out_width = node.attrs["output_size"]
    if (out_height, out_width) == (1, 1):
        context.emit("GlobalAveragePool", [x], _out(node, context))
        return
    if height % out_height or width % out_width:
        raise UnsupportedError(
            f"ONNX export of adaptive_avg_pool2d from {height}x{width} to "
            f"{out_height}x{out_width}: ONNX has no adaptive pooling, and the output size does "
            "not divide the input size (so no AveragePool is exact)")
    kernel = [height // out_height, width // out_width]
    context.emit("AveragePool", [x], _out(node, context), kernel_shape=kernel, strides=kernel)


@exports("batch_norm")
def export_batch_norm(node: Node, context: ExportContext) -> None:
    x, mean, var, weight, bias = _inputs(node, context)
    context.emit("BatchNormalization", [x, weight, bias, mean, var], _out(node, context),
                 epsilon=float(node.attrs["eps"]))


@exports("layer_norm")
def export_layer_norm(node: Node, context: ExportContext) -> None:
    x, weight, bias = _inputs(node, context)
    eps = float(node.attrs["eps"])
    count = node.inputs[1].ndim
    if context.opset >= 17:
        context.emit("LayerNormalization", [x, weight, bias], _out(node, context),
                     axis=-count, epsilon=eps)
        return
    # (x - mean) / sqrt(var + eps) * weight + bias, over the last `count` axes
    ndim, dtype = node.inputs[0].ndim, node.inputs[0].dtype
    axes = list(range(ndim - count, ndim))
    centered = context.emit("Sub", [x, context.reduce("ReduceMean", x, axes, True)])
    squares = context.emit("Mul", [centered, centered])
    var = context.reduce("ReduceMean", squares, axes, True)
    root = context.emit("Sqrt", [context.emit("Add", [var, context.scalar(eps, dtype)])])
    scaled = context.emit("Mul", [context.emit("Div", [centered, root]), weight])
    context.emit("Add", [scaled, bias], _out(node, context))


@exports("softmax", "log_softmax")
def export_softmax(node: Node, context: ExportContext) -> None:
    op_type = "Softmax" if node.op == "softmax" else "LogSoftmax"
    context.emit(op_type, _inputs(node, context), _out(node, context),
                 axis=int(node.attrs["axis"]))


@exports("dropout")
def export_dropout(node: Node, context: ExportContext) -> None:
    if node.attrs["training"] and float(node.attrs["p"]) > 0:
        raise UnsupportedError("ONNX export of dropout in training mode (its random mask has "
                               "no ONNX equivalent); export the model in eval mode")
    context.emit("Identity", _inputs(node, context), _out(node, context))


@exports("gather")
def export_gather(node: Node, context: ExportContext) -> None:
    context.emit("Gather", _inputs(node, context), _out(node, context),
                 axis=int(node.attrs["axis"]))


# ---------------------------------------------------------------------------------------------
# Shape ops and constants.


def _reshape_to(node: Node, context: ExportContext, shape: Sequence[int]) -> None:
    (x,) = _inputs(node, context)
    # NOTE: without allowzero, ONNX reads a 0 in the target shape as "copy this dimension".
    extra = {"allowzero": 1} if 0 in shape else {}
    context.emit("Reshape", [x, context.ints(shape, "shape")], _out(node, context), **extra)


@exports("reshape")
def export_reshape(node: Node, context: ExportContext) -> None:
    _reshape_to(node, context, node.attrs["shape"])


@exports("flatten")
def export_flatten(node: Node, context: ExportContext) -> None:
    # ONNX Flatten always makes 2-D; Ember's flatten(start, end) is a reshape to its result.
    _reshape_to(node, context, node.outputs[0].shape)


@exports("transpose")
def export_transpose(node: Node, context: ExportContext) -> None:
    context.emit("Transpose", _inputs(node, context), _out(node, context),
                 perm=list(node.attrs["perm"]))


@exports("broadcast_to")
def export_broadcast_to(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    shape = context.ints(node.attrs["shape"], "shape")
    context.emit("Expand", [x, shape], _out(node, context))


@exports("expand_dims")
def export_expand_dims(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    axes = _normalized(node.attrs["axes"], node.outputs[0].ndim)
    if not axes:
        context.emit("Identity", [x], _out(node, context))
        return
    context.emit("Unsqueeze", [x, context.ints(axes, "axes")], _out(node, context))


@exports("squeeze")
def export_squeeze(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    source = node.inputs[0]
    axes = _normalized(node.attrs["axes"], source.ndim) if source.ndim else []
    if not axes:  # ONNX Squeeze without axes would drop every size-1 dimension
        context.emit("Identity", [x], _out(node, context))
        return
    context.emit("Squeeze", [x, context.ints(axes, "axes")], _out(node, context))


@exports("concat")
def export_concat(node: Node, context: ExportContext) -> None:
    context.emit("Concat", _inputs(node, context), _out(node, context),
                 axis=int(node.attrs["axis"]))


@exports("split")
def export_split(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    sizes = context.ints(node.attrs["sizes"], "split")
    outputs = [context.name(v) for v in node.outputs]
    context.emit("Split", [x, sizes], outputs, axis=int(node.attrs["axis"]))


def onnx_slice_bounds(start: int, stop: int, step: int) -> tuple[int, int]:
    """ONNX (start, end) selecting exactly Python's `range(start, stop, step)` of indices.

    Ember's slice has no negative wraparound: a stop of -1 with a negative step means "through
    index 0". ONNX would read -1 as the last index, so the end is written from the last
    selected index instead, and "past index 0" becomes INT64_MIN.
    """
    selected = range(start, stop, step)
    if not selected:
        return 0, 0  # empty: ONNX clamps both to the same bound
    last = selected[-1]
    if step > 0:
        return selected[0], last + 1
    return selected[0], last - 1 if last > 0 else INT64_MIN


@exports("slice")
def export_slice(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    source = node.inputs[0]
    starts, ends, axes, steps = [], [], [], []
    for axis, (start, stop, step) in enumerate(zip(node.attrs["starts"], node.attrs["stops"],
                                                   node.attrs["steps"], strict=True)):
        if (start, stop, step) == (0, source.shape[axis], 1):
            continue  # the whole axis
        onnx_start, onnx_end = onnx_slice_bounds(start, stop, step)
        starts.append(onnx_start)
        ends.append(onnx_end)
        axes.append(axis)
        steps.append(step)
    if not axes:
        context.emit("Identity", [x], _out(node, context))
        return
    inputs = [x, context.ints(starts, "starts"), context.ints(ends, "ends"),
              context.ints(axes, "axes"), context.ints(steps, "steps")]
    context.emit("Slice", inputs, _out(node, context))


@exports("pad")
def export_pad(node: Node, context: ExportContext) -> None:
    (x,) = _inputs(node, context)
    mode = str(node.attrs["mode"])
    # Ember's pads (all befores, then all afters) are ONNX's order.
    inputs = [x, context.ints(node.attrs["pads"], "pads")]
    if mode == "constant":
        value = float(node.attrs["value"])
        inputs.append(context.scalar(value, node.inputs[0].dtype))
    context.emit("Pad", inputs, _out(node, context), mode=mode)


@exports("const")
def export_const(node: Node, context: ExportContext) -> None:
    """A constant becomes an initializer: a named one (a weight) keeps its name."""
    value = node.attrs["value"]
    data = value.data
    if data is None:
        raise UnsupportedError(f"ONNX export of constant {node.attrs.get('name') or ''!r}: its "
                               "data is not loaded (parsed from a dense_blob reference)")
    output = node.outputs[0]
    name = context.initializer(data, str(node.attrs.get("name") or output.hint or "const"))
    context.names[output] = name


# ---------------------------------------------------------------------------------------------
# Choosing and flattening the graph to export.


def _has_layout(graph: Graph) -> bool:
    values = [*graph.inputs, *(v for node in graph.nodes for v in node.outputs)]
    if any(value.type.layout for value in values):
        return True
    return any(node.body is not None and _has_layout(node.body) for node in graph.nodes)


def graph_to_export(graph_or_executable: Graph | Executable) -> Graph:
    """The plain graph an ONNX model is made from (see the module docstring)."""
    if isinstance(graph_or_executable, Graph):
        return graph_or_executable
    graph = getattr(graph_or_executable, "graph", None)
    traced = getattr(graph_or_executable, "traced", None)
    if not isinstance(graph, Graph) or not isinstance(traced, Graph):
        raise EmberError(f"ember.onnx.save takes an ember.Graph or an ember.Executable, got "
                         f"{type(graph_or_executable).__name__}")
    return traced if _has_layout(graph) else graph


def _flat_nodes(graph: Graph, rename: dict[Value, Value], fresh: bool = False) -> list[Node]:
    """The nodes of `graph` with every `fused` region inlined; `rename` maps region values.

    Inlined nodes get fresh output values (`fresh`), so a region body shared by two `fused`
    nodes still defines each ONNX name once.
    """
    flat: list[Node] = []
    for node in graph.nodes:
        node = node.with_inputs_renamed(rename)
        if node.body is None:
            if fresh:
                outputs = tuple(Value(v.type, v.hint) for v in node.outputs)
                rename.update(zip(node.outputs, outputs, strict=True))
                node = node.replace(outputs=outputs)
            flat.append(node)
            continue
        inner = dict(rename)
        inner.update(zip(node.body.inputs, node.inputs, strict=True))
        flat.extend(_flat_nodes(node.body, inner, fresh=True))
        for outer, result in zip(node.outputs, node.body.outputs, strict=True):
            rename[outer] = inner.get(result, result)
    return flat


def _node_text(node: Node) -> str:
    try:
        text = str(node)
    except Exception:  # a node the printer cannot show still gets named
        text = f"{node.op}(...)"
    return text.split("  //")[0].strip()


def _export_node(node: Node, context: ExportContext) -> None:
    exporter = EXPORTERS.get(node.op)
    where = f" (traced at {node.loc})" if node.loc else ""
    if exporter is None:
        raise UnsupportedError(f"ONNX export: no exporter for op '{node.op}' in "
                               f"`{_node_text(node)}`{where}")
    context.current = node
    try:
        exporter(node, context)
    except UnsupportedError as err:
        raise UnsupportedError(f"{err} in `{_node_text(node)}`{where}") from err


def _value_info(name: str, value: Value) -> onnx.ValueInfoProto:
    from onnx import helper

    return helper.make_tensor_value_info(name, _onnx_dtype(value.dtype), list(value.shape))


def _check_opset(opset: int) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UnsupportedError(f"ONNX export at opset {opset} (supported: {MIN_OPSET} to "
                               f"{newest}, the newest this onnx package knows)")


def to_model(graph_or_executable: Graph | Executable, opset: int = 17) -> onnx.ModelProto:
    """The ONNX model of a graph or executable (not checked; see `save`)."""
    from onnx import helper

    _check_opset(opset)
    graph = graph_to_export(graph_or_executable)
    context = ExportContext(opset)
    for index, value in enumerate(graph.inputs):
        context.names[value] = context.fresh(value.hint or f"input{index}")
    rename: dict[Value, Value] = {}
    for node in _flat_nodes(graph, rename):
        _export_node(node, context)
    outputs = _output_names(graph, rename, context)
    onnx_graph = helper.make_graph(
        context.nodes, graph.name or "main",
        [_value_info(context.names[v], v) for v in graph.inputs],
        [_value_info(name, v) for name, v in zip(outputs, graph.outputs, strict=True)],
        initializer=context.initializers)
    model = helper.make_model_gen_version(
        onnx_graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="ember")
    return model


def _output_names(graph: Graph, rename: dict[Value, Value], context: ExportContext) -> list[str]:
    """One distinct name per graph output, each defined by a node.

    An output that is a graph input, an initializer or an earlier output gets its own Identity.
    """
    inputs = {context.names[v] for v in graph.inputs}
    initializers = {t.name for t in context.initializers}
    names: list[str] = []
    context.current = None
    for index, value in enumerate(graph.outputs):
        name = context.name(rename.get(value, value))
        if name in inputs or name in initializers or name in names:
            name = context.emit("Identity", [name], [context.fresh(f"output{index}")])
        names.append(name)
    return names


def save(graph_or_executable: Graph | Executable, path: str | os.PathLike[str],
         opset: int = 17) -> onnx.ModelProto:
    """Write a graph or executable as an ONNX model file; returns the checked model.

    The model passes `onnx.checker.check_model(model, full_check=True)`. An op without an
    exporter raises UnsupportedError naming the op, the node and its source location.
    """
    import onnx

    model = to_model(graph_or_executable, opset)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.fspath(path))
    return model
