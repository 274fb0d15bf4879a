"""Bad inputs to every op family: a ShapeError whose message names the op and the input types.

Building a node with GraphBuilder runs the op's attribute schema and shape rule, so each case
is one `builder.op(...)` call and the exact message it must raise. Runtime failures of the
reference interpreter (integer division by zero, an index out of range) are ExecutionErrors
that name the op and where it was traced.
"""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.ops  # registers every op
from ember.ir.graph import GraphBuilder
from ember.ir.ops import OPS
from ember.ir.types import TensorType, boolean, f32, f64, i32, i64

# (op, input types, attributes, the exact message)
SHAPE_ERRORS: list[tuple[str, list[TensorType], dict[str, object], str]] = [
    # elementwise
    (
        "exp",
        [i32[3]],
        {},
        "exp: dtype i32 is not supported here (expected a float dtype (f16, bf16, f32, f64)); "
        "inputs i32[3]",
    ),
    (
        "neg",
        [boolean[2]],
        {},
        "neg: dtype bool is not supported here (expected a numeric dtype); inputs bool[2]",
    ),
    (
        "logical_not",
        [f32[2]],
        {},
        "logical_not: dtype f32 is not supported here (expected bool); inputs f32[2]",
    ),
    (
        "add",
        [f32[2, 3], f32[4]],
        {},
        "add: shapes [2, 3] and [4] do not broadcast (axis -1: sizes [3, 4]); "
        "inputs f32[2,3], f32[4]",
    ),
    (
        "mul",
        [f32[7, 3, 13], f32[2, 13]],
        {},
        "mul: shapes [7, 3, 13] and [2, 13] do not broadcast (axis -2: sizes [2, 3])"
        "; inputs f32[7,3,13], f32[2,13]",
    ),
    (
        "sub",
        [f32[2], i32[2]],
        {},
        "sub: operand dtypes differ (f32 vs i32); cast one first; inputs f32[2], i32[2]",
    ),
    (
        "lt",
        [boolean[2], boolean[2]],
        {},
        "lt: dtype bool is not supported here (expected a numeric dtype); inputs bool[2], bool[2]",
    ),
    (
        "logical_or",
        [f32[2], f32[2]],
        {},
        "logical_or: dtype f32 is not supported here (expected bool); inputs f32[2], f32[2]",
    ),
    (
        "where",
        [f32[2], f32[2], f32[2]],
        {},
        "where: condition must be bool, got f32; inputs f32[2], f32[2], f32[2]",
    ),
    (
        "where",
        [boolean[2], f32[2], f64[2]],
        {},
        "where: branch dtypes differ (f32 vs f64); cast one first; inputs bool[2], f32[2], f64[2]",
    ),
    (
        "gelu",
        [f32[2]],
        {"approximate": "fast"},
        "gelu: approximate must be 'none' or 'tanh', got 'fast'; inputs f32[2]",
    ),
    (
        "gelu",
        [i32[2]],
        {},
        "gelu: dtype i32 is not supported here (expected a float dtype (f16, bf16, f32, f64)); "
        "inputs i32[2]",
    ),
    (
        "clip",
        [boolean[2]],
        {"min": 0.0},
        "clip: dtype bool is not supported here (expected a numeric dtype); inputs bool[2]",
    ),
    # reductions
    ("sum", [f32[2, 3]], {"axes": (2,)}, "sum: axis 2 is out of range for rank 2; inputs f32[2,3]"),
    ("sum", [f32[2, 3]], {"axes": (0, -2)}, "sum: repeated axis in [0, -2]; inputs f32[2,3]"),
    (
        "sum",
        [boolean[2]],
        {"axes": (0,)},
        "sum: dtype bool is not supported; cast to a numeric dtype first; inputs bool[2]",
    ),
    (
        "mean",
        [i32[4]],
        {"axes": (0,)},
        "mean: dtype i32 is not supported (expected f32 or f64); inputs i32[4]",
    ),
    (
        "max",
        [f32[0, 3]],
        {"axes": (0,)},
        "max: reduction over an axis of size 0 has no identity; inputs f32[0,3]",
    ),
    (
        "argmax",
        [f32[2, 3]],
        {"axis": -3},
        "argmax: axis -3 is out of range for rank 2; inputs f32[2,3]",
    ),
    (
        "argmin",
        [f32[3, 0]],
        {"axis": 1},
        "argmin: axis 1 has size 0: no position to return; inputs f32[3,0]",
    ),
    (
        "argmax",
        [boolean[3]],
        {"axis": 0},
        "argmax: dtype bool is not supported; cast to a numeric dtype first; inputs bool[3]",
    ),
    # shape ops
    (
        "reshape",
        [f32[2, 3]],
        {"shape": (4, 2)},
        "reshape: cannot reshape 6 elements [2, 3] into [4, 2] (8 elements); inputs f32[2,3]",
    ),
    (
        "reshape",
        [f32[2, 3]],
        {"shape": (-1, 3)},
        "reshape: target shape [-1, 3] has a negative dimension; inputs f32[2,3]",
    ),
    (
        "transpose",
        [f32[2, 3]],
        {"perm": (0, 0)},
        "transpose: perm [0, 0] is not a permutation of 2 axes; inputs f32[2,3]",
    ),
    (
        "broadcast_to",
        [f32[2, 3]],
        {"shape": (3, 3)},
        "broadcast_to: cannot broadcast [2, 3] to [3, 3]; inputs f32[2,3]",
    ),
    (
        "broadcast_to",
        [f32[3]],
        {"shape": ()},
        "broadcast_to: cannot broadcast [3] to []; inputs f32[3]",
    ),
    (
        "expand_dims",
        [f32[2, 3]],
        {"axes": (3,)},
        "expand_dims: axis 3 is out of range for rank 3; inputs f32[2,3]",
    ),
    (
        "squeeze",
        [f32[2, 3]],
        {"axes": (1,)},
        "squeeze: cannot squeeze axis 1 of size 3; inputs f32[2,3]",
    ),
    (
        "flatten",
        [f32[2, 3, 4]],
        {"start_dim": 2, "end_dim": 1},
        "flatten: start_dim 2 comes after end_dim 1; inputs f32[2,3,4]",
    ),
    (
        "concat",
        [f32[2, 3], f32[2, 4]],
        {"axis": 0},
        "concat: shapes [2, 3] and [2, 4] differ outside axis 0; inputs f32[2,3], f32[2,4]",
    ),
    (
        "concat",
        [f32[2], i32[2]],
        {"axis": 0},
        "concat: operand dtypes differ (f32 vs i32); inputs f32[2], i32[2]",
    ),
    (
        "concat",
        [f32[2, 3], f32[3]],
        {"axis": 0},
        "concat: shapes [2, 3] and [3] differ outside axis 0; inputs f32[2,3], f32[3]",
    ),
    (
        "concat",
        [f32.scalar(), f32.scalar()],
        {"axis": 0},
        "concat: expected an input of rank >= 1, got a scalar; inputs f32[], f32[]",
    ),
    (
        "split",
        [f32[3, 5]],
        {"axis": 1, "sizes": (2, 2)},
        "split: sizes [2, 2] do not add up to axis 1 of size 5; inputs f32[3,5]",
    ),
    (
        "split",
        [f32[4]],
        {"axis": 0, "sizes": (5, -1)},
        "split: sizes [5, -1] do not add up to axis 0 of size 4; inputs f32[4]",
    ),
    (
        "slice",
        [f32[5]],
        {"starts": (0,), "stops": (6,), "steps": (1,)},
        "slice: slice 0:6:1 is out of range for axis 0 of size 5; inputs f32[5]",
    ),
    (
        "slice",
        [f32[5]],
        {"starts": (5,), "stops": (-1,), "steps": (-1,)},
        "slice: slice 5:-1:-1 is out of range for axis 0 of size 5; inputs f32[5]",
    ),
    (
        "slice",
        [f32[5]],
        {"starts": (0,), "stops": (3,), "steps": (0,)},
        "slice: slice 0:3:0 is out of range for axis 0 of size 5; inputs f32[5]",
    ),
    (
        "slice",
        [f32[2, 3]],
        {"starts": (0,), "stops": (1,), "steps": (1,)},
        "slice: slice needs one start, stop and step per dimension (2); inputs f32[2,3]",
    ),
    (
        "pad",
        [f32[2, 3]],
        {"pads": (1, 1), "mode": "constant"},
        "pad: pads [1, 1] must hold 4 non-negative values (all befores, then all afters); "
        "inputs f32[2,3]",
    ),
    (
        "pad",
        [f32[2, 3]],
        {"pads": (0, 0, 0, 0), "mode": "wrap"},
        "pad: mode 'wrap' is not one of constant, reflect, edge; inputs f32[2,3]",
    ),
    (
        "pad",
        [f32[2, 3]],
        {"pads": (2, 0, 0, 0), "mode": "reflect"},
        "pad: reflect padding [2, 0, 0, 0] must be smaller than the dimensions [2, 3]; "
        "inputs f32[2,3]",
    ),
    (
        "pad",
        [f32[0, 3]],
        {"pads": (1, 0, 0, 0), "mode": "edge"},
        "pad: edge padding [1, 0, 0, 0] cannot extend an empty dimension of [0, 3]; "
        "inputs f32[0,3]",
    ),
    # neural ops
    (
        "matmul",
        [f32[2, 3], f32[4, 5]],
        {},
        "matmul: inner dimensions differ (3 vs 4); inputs f32[2,3], f32[4,5]",
    ),
    (
        "matmul",
        [f32[3], f32[4]],
        {},
        "matmul: inner dimensions differ (3 vs 4); inputs f32[3], f32[4]",
    ),
    (
        "matmul",
        [f32.scalar(), f32[3]],
        {},
        "matmul: operands must have rank >= 1; inputs f32[], f32[3]",
    ),
    (
        "matmul",
        [f32[2, 3, 4], f32[3, 4, 5]],
        {},
        "matmul: shapes [2] and [3] do not broadcast (axis -1: sizes [2, 3]); "
        "inputs f32[2,3,4], f32[3,4,5]",
    ),
    (
        "matmul",
        [f32[2, 3], i32[3, 2]],
        {},
        "matmul: operand dtypes differ (f32, i32); inputs f32[2,3], i32[3,2]",
    ),
    (
        "conv2d",
        [f32[1, 3, 5, 5], f32[4, 2, 3, 3]],
        {},
        "conv2d: input has 3 channels but the weight expects 2 (2 per group x 1 groups); "
        "inputs f32[1,3,5,5], f32[4,2,3,3]",
    ),
    (
        "conv2d",
        [f32[1, 3, 5, 5], f32[4, 1, 3, 3]],
        {"groups": 2},
        "conv2d: groups=2 must divide input channels and output channels (3 and 4); "
        "inputs f32[1,3,5,5], f32[4,1,3,3]",
    ),
    (
        "conv2d",
        [f32[1, 3, 5, 5], f32[4, 3, 3, 3], f32[3]],
        {},
        "conv2d: bias must have shape [4], got [3]; inputs f32[1,3,5,5], f32[4,3,3,3], f32[3]",
    ),
    (
        "conv2d",
        [f32[3, 5, 5], f32[4, 3, 3, 3]],
        {},
        "conv2d: expected an NCHW input of rank 4, got rank 3; inputs f32[3,5,5], f32[4,3,3,3]",
    ),
    (
        "conv2d",
        [f32[1, 1, 2, 2], f32[1, 1, 3, 3]],
        {},
        "conv2d: window of extent 3 does not fit input extent 2 padded by (0, 0); "
        "inputs f32[1,1,2,2], f32[1,1,3,3]",
    ),
    (
        "conv2d",
        [f32[1, 1, 5, 5], f32[1, 1, 3, 3]],
        {"padding": (1, 1)},
        "conv2d: kernel, stride and dilation take 2 values, padding 4 (t, l, b, r); "
        "inputs f32[1,1,5,5], f32[1,1,3,3]",
    ),
    (
        "conv2d",
        [i32[1, 1, 5, 5], i32[1, 1, 3, 3]],
        {},
        "conv2d: dtype i32 is not supported (expected f32 or f64); "
        "inputs i32[1,1,5,5], i32[1,1,3,3]",
    ),
    (
        "max_pool2d",
        [f32[1, 1, 8, 8]],
        {"kernel": (3, 3), "padding": (2, 2, 2, 2)},
        "max_pool2d: padding [2, 2, 2, 2] must be at most half the kernel [3, 3]; "
        "inputs f32[1,1,8,8]",
    ),
    (
        "max_pool2d",
        [f32[1, 8, 8]],
        {"kernel": (2, 2)},
        "max_pool2d: expected an NCHW input of rank 4, got rank 3; inputs f32[1,8,8]",
    ),
    (
        "avg_pool2d",
        [i32[1, 1, 4, 4]],
        {"kernel": (2, 2)},
        "avg_pool2d: dtype i32 is not supported (expected f32 or f64); inputs i32[1,1,4,4]",
    ),
    (
        "avg_pool2d",
        [f32[1, 1, 8, 8]],
        {"kernel": (2, 2), "padding": (0, 2, 0, 0)},
        "avg_pool2d: padding [0, 2, 0, 0] must be at most half the kernel [2, 2]; "
        "inputs f32[1,1,8,8]",
    ),
    (
        "adaptive_avg_pool2d",
        [f32[1, 1, 4, 4]],
        {"output_size": (0, 2)},
        "adaptive_avg_pool2d: expected an NCHW input and 2 output sizes >= 1, got [0, 2]; "
        "inputs f32[1,1,4,4]",
    ),
    (
        "batch_norm",
        [f32[2, 3, 4], f32[4], f32[3], f32[3], f32[3]],
        {},
        "batch_norm: mean must have shape [3], got [4]; "
        "inputs f32[2,3,4], f32[4], f32[3], f32[3], f32[3]",
    ),
    (
        "batch_norm",
        [f32[3], f32[3], f32[3], f32[3], f32[3]],
        {},
        "batch_norm: expected an input of rank >= 2 (N, C, ...), got rank 1; "
        "inputs f32[3], f32[3], f32[3], f32[3], f32[3]",
    ),
    (
        "layer_norm",
        [f32[2, 3], f32[4], f32[4]],
        {},
        "layer_norm: weight and bias of shape [4] must match the last dimensions of the input "
        "[2, 3]; inputs f32[2,3], f32[4], f32[4]",
    ),
    (
        "softmax",
        [f32[2, 3]],
        {"axis": 2},
        "softmax: axis 2 is out of range for rank 2; inputs f32[2,3]",
    ),
    (
        "log_softmax",
        [i32[3]],
        {},
        "log_softmax: dtype i32 is not supported (expected f32 or f64); inputs i32[3]",
    ),
    (
        "dropout",
        [f32[3]],
        {"p": 1.5},
        "dropout: probability p must be in [0, 1], got 1.5; inputs f32[3]",
    ),
    (
        "gather",
        [f32[4, 3], f32[2]],
        {},
        "gather: indices must be i32 or i64, got f32; inputs f32[4,3], f32[2]",
    ),
    (
        "gather",
        [f32[4, 3], i64[2]],
        {"axis": 2},
        "gather: axis 2 is out of range for rank 2; inputs f32[4,3], i64[2]",
    ),
    (
        "gather",
        [f32.scalar(), i64[2]],
        {},
        "gather: data must have rank >= 1, got a scalar; inputs f32[], i64[2]",
    ),
    # blocked layouts
    (
        "layout_convert",
        [f32[2, 3, 4]],
        {"layout": "nchw4c", "channels": 3},
        "layout_convert: converting to nchw4c needs an NCHW value of rank 4, got f32[2,3,4]; "
        "inputs f32[2,3,4]",
    ),
    (
        "layout_convert",
        [f32[1, 6, 2, 2]],
        {"layout": "nchw4c", "channels": 5},
        "layout_convert: channels=5 differs from the input's 6; inputs f32[1,6,2,2]",
    ),
    (
        "max_pool2d_nchwc",
        [f32[1, 2, 4, 4]],
        {"kernel": (2, 2)},
        "max_pool2d_nchwc: expected a blocked value (nchw<b>c of rank 5 or nhwc of rank 4), got "
        "f32[1,2,4,4]; inputs f32[1,2,4,4]",
    ),
    # The backward ops of training (ember/ops/grad.py).
    (
        "scatter_add", [f32[4, 3], f32[4]], {"size": 5},
        "scatter_add: indices must be i32 or i64, got f32; inputs f32[4,3], f32[4]",
    ),
    (
        "max_pool2d_grad", [f32[1, 1, 6, 6], f32[1, 1, 3, 2]], {"kernel": (2, 2), "stride": (2, 2)},
        "max_pool2d_grad: cotangent shape [1, 1, 3, 2] differs from the forward output's "
        "[1, 1, 3, 3]; inputs f32[1,1,6,6], f32[1,1,3,2]",
    ),
    (
        "avg_pool2d_grad", [f32[1, 1, 3, 2]],
        {"input_shape": (1, 1, 6, 6), "kernel": (2, 2), "stride": (2, 2)},
        "avg_pool2d_grad: cotangent shape [1, 1, 3, 2] differs from the forward output's "
        "[1, 1, 3, 3]; inputs f32[1,1,3,2]",
    ),
    (
        "adaptive_avg_pool2d_grad", [f32[1, 1, 3]], {"input_shape": (1, 1, 6, 6)},
        "adaptive_avg_pool2d_grad: expected an NCHW cotangent of rank 4, got rank 3; "
        "inputs f32[1,1,3]",
    ),
    # resample
    (
        "resize",
        [f32[1, 1, 4, 4]],
        {"sizes": (1, 1, 8), "scales": (1.0, 1.0, 2.0)},
        "resize: sizes [1, 1, 8] and scales [1.0, 1.0, 2.0] need one entry per axis of the "
        "rank-4 input; inputs f32[1,1,4,4]",
    ),
    (
        "resize",
        [i64[1, 1, 4, 4]],
        {"sizes": (1, 1, 8, 8), "scales": (1.0, 1.0, 2.0, 2.0), "mode": "linear"},
        "resize: linear resizing needs a float input, got i64; inputs i64[1,1,4,4]",
    ),
    (
        "grid_sample",
        [f32[1, 1, 4, 4], f32[1, 2, 2, 3]],
        {},
        "grid_sample: expected x [N, C, H, W] with grid [N, H', W', 2] (or 3-D with "
        "[N, D', H', W', 3]), got x f32[1,1,4,4] and grid f32[1,2,2,3]; "
        "inputs f32[1,1,4,4], f32[1,2,2,3]",
    ),
    # sort
    (
        "topk",
        [f32[3, 4]],
        {"k": 5, "axis": 1},
        "topk: k=5 is outside [0, 4] (the size of axis 1); inputs f32[3,4]",
    ),
]

# (op, input types, attributes, the exact message): attribute schema errors name the op and
# the attribute; they come before any input is looked at.
ATTRIBUTE_ERRORS: list[tuple[str, list[TensorType], dict[str, object], str]] = [
    (
        "conv2d",
        [f32[1, 1, 5, 5], f32[1, 1, 3, 3]],
        {"strides": (1, 1)},
        "conv2d: unknown attribute 'strides' (known: dilation, groups, padding, stride)",
    ),
    ("relu", [f32[2]], {"alpha": 0.1}, "relu: unknown attribute 'alpha' (known: none)"),
    (
        "argmax",
        [f32[2]],
        {"axes": (0,)},
        "argmax: unknown attribute 'axes' (known: axis, keepdims)",
    ),
    ("sum", [f32[2]], {}, "sum: missing required attribute 'axes'"),
    ("reshape", [f32[2]], {}, "reshape: missing required attribute 'shape'"),
    ("max_pool2d", [f32[1, 1, 4, 4]], {}, "max_pool2d: missing required attribute 'kernel'"),
    ("cast", [f32[2]], {}, "cast: missing required attribute 'dtype'"),
    ("const", [], {}, "const: missing required attribute 'value'"),
    (
        "sum",
        [f32[2]],
        {"axes": (0,), "keepdims": "yes"},
        "sum: attribute 'keepdims': expected true or false, got 'yes'",
    ),
    (
        "leaky_relu",
        [f32[2]],
        {"alpha": "small"},
        "leaky_relu: attribute 'alpha': expected a number, got 'small'",
    ),
    (
        "transpose",
        [f32[2, 3]],
        {"perm": (1.0, 0.0)},
        "transpose: attribute 'perm': expected an integer, got 1.0",
    ),
    (
        "gelu",
        [f32[2]],
        {"approximate": True},
        "gelu: attribute 'approximate': expected a string, got True",
    ),
    (
        "cast",
        [f32[2]],
        {"dtype": "x8"},
        "cast: attribute 'dtype': expected a dtype (f16, bf16, f32, f64, i8, i16, i32, i64, u8, "
        "u16, u32, u64, bool), got 'x8'",
    ),
]

ARITY_ERRORS: list[tuple[str, list[TensorType], dict[str, object], str]] = [
    ("add", [f32[2]], {}, "add: expected 2 inputs, got 1"),
    ("relu", [f32[2], f32[2]], {}, "relu: expected 1 inputs, got 2"),
    ("conv2d", [f32[1, 1, 4, 4]], {}, "conv2d: expected 2 to 3 inputs, got 1"),
    ("concat", [], {"axis": 0}, "concat: expected 1 to any inputs, got 0"),
    ("batch_norm", [f32[2, 3], f32[3]], {}, "batch_norm: expected 5 inputs, got 2"),
]


def _build(op: str, types: list[TensorType], attrs: dict[str, object]) -> None:
    builder = GraphBuilder("bad")
    values = [builder.input(t) for t in types]
    builder.op(op, *values, **attrs)  # type: ignore[arg-type]


def _case_id(case: tuple) -> str:
    return f"{case[0]}-" + ",".join(str(t) for t in case[1])


@pytest.mark.parametrize("case", SHAPE_ERRORS, ids=[_case_id(c) for c in SHAPE_ERRORS])
def test_bad_inputs_raise_shape_error_naming_op_and_types(case: tuple) -> None:
    op, types, attrs, message = case
    with pytest.raises(ember.ShapeError) as info:
        _build(op, types, attrs)
    assert str(info.value) == message
    # The suffix lists the input types in order, as the printer writes them.
    assert str(info.value).endswith("; inputs " + ", ".join(str(t) for t in types))


@pytest.mark.parametrize("case", ATTRIBUTE_ERRORS, ids=[_case_id(c) for c in ATTRIBUTE_ERRORS])
def test_bad_attributes_raise_shape_error_naming_op_and_attribute(case: tuple) -> None:
    op, types, attrs, message = case
    with pytest.raises(ember.ShapeError) as info:
        _build(op, types, attrs)
    assert str(info.value) == message


@pytest.mark.parametrize("case", ARITY_ERRORS, ids=[_case_id(c) for c in ARITY_ERRORS])
def test_wrong_input_count_raises_shape_error(case: tuple) -> None:
    op, types, attrs, message = case
    with pytest.raises(ember.ShapeError) as info:
        _build(op, types, attrs)
    assert str(info.value) == message


def test_unknown_op_raises_shape_error() -> None:
    with pytest.raises(ember.ShapeError, match=r"^unknown op 'softplus'$"):
        _build("softplus", [f32[2]], {})


def _family(op: str) -> str:
    """The module of `ember.ops` whose row defines `op` (its shape rule lives there)."""
    return OPS[op].infer.__module__.rsplit(".", 1)[-1]


def test_every_op_family_has_bad_input_cases() -> None:
    """Each module of op rows has shape-rule error cases here; a new family needs some too."""
    families = {_family(op) for op in OPS}
    covered = {_family(op) for op, *_ in SHAPE_ERRORS}
    assert families - covered == set(), f"op families without error cases: {families - covered}"


# ---------------------------------------------------------------------------------------------
# Runtime failures of the reference interpreter.


def _interpret_one(op: str, arrays: list[np.ndarray], attrs: dict[str, object]) -> None:
    builder = GraphBuilder("bad")
    builder.loc = "model.py:12"  # what the tracer records for the user's line
    values = [builder.input(TensorType.of(a)) for a in arrays]
    output = builder.op(op, *values, **attrs)  # type: ignore[arg-type]
    ember.interpret(builder.build([output]), *arrays)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("op", "arrays", "attrs", "message"),
    [
        (
            "div",
            [np.array([1, 2], np.int32), np.array([1, 0], np.int32)],
            {},
            "div failed (traced at model.py:12): integer division by zero",
        ),
        (
            "pow",
            [np.array([2], np.int64), np.array([-1], np.int64)],
            {},
            "pow failed (traced at model.py:12): integer power with a negative exponent",
        ),
        (
            "gather",
            [np.zeros((4, 2), np.float32), np.array([1, 4], np.int64)],
            {},
            "gather failed (traced at model.py:12): index 4 is out of range for axis 0 of size 4",
        ),
        (
            "gather",
            [np.zeros((4, 2), np.float32), np.array([-5], np.int32)],
            {"axis": 0},
            "gather failed (traced at model.py:12): index -5 is out of range for axis 0 of size 4",
        ),
    ],
    ids=["int-div-by-zero", "int-pow-negative", "gather-too-large", "gather-too-negative"],
)
def test_runtime_errors_name_op_and_location(
    op: str, arrays: list[np.ndarray], attrs: dict[str, object], message: str
) -> None:
    with pytest.raises(ember.ExecutionError) as info:
        _interpret_one(op, arrays, attrs)
    assert str(info.value) == message
