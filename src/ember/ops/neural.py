"""Neural-network ops: matmul, conv2d, pooling, normalization, softmax, dropout, gather.

Images are NCHW and conv weights OIHW, as in PyTorch. Padding attributes of the spatial ops
are explicit `(top, left, bottom, right)`; the tracer resolves "same" and symmetric forms.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ember.errors import ShapeError, UnsupportedError
from ember.ir.ops import Attr, OpDef, broadcast_shapes, normalize_axis, register_op
from ember.ir.types import DType, TensorType
from ember.ops.reduce import extreme


def _same_dtype(*types: TensorType, floats: bool = True) -> DType:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise ShapeError(f"operand dtypes differ ({', '.join(sorted(d.value for d in dtypes))})")
    dtype = types[0].dtype
    if floats and not dtype.is_float:
        raise ShapeError(f"dtype {dtype} is not supported (expected f32 or f64)")
    if dtype is DType.BOOL:
        raise ShapeError("dtype bool is not supported")
    return dtype


# ---------------------------------------------------------------------------------------------
# matmul: numpy semantics (1-D operands promoted and squeezed, batch dimensions broadcast).


def infer_matmul(a: TensorType, b: TensorType) -> TensorType:
    dtype = _same_dtype(a, b, floats=False)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("operands must have rank >= 1")
    a_shape = (1, *a.shape) if a.ndim == 1 else a.shape
    b_shape = (*b.shape, 1) if b.ndim == 1 else b.shape
    if a_shape[-1] != b_shape[-2]:
        raise ShapeError(f"inner dimensions differ ({a_shape[-1]} vs {b_shape[-2]})")
    batch = broadcast_shapes(a_shape[:-2], b_shape[:-2])
    shape = (*batch, a_shape[-2], b_shape[-1])
    if a.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if b.ndim == 1:
        shape = shape[:-1]
    return TensorType(dtype, shape)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind != "f":
        return np.matmul(a, b)
    # Accumulate in float64 so the reference is no less accurate than any compiled kernel.
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


register_op(OpDef("matmul", infer=infer_matmul, reference=_matmul, arity=(2, 2)))


def infer_matmul_nt(a: TensorType, b: TensorType) -> TensorType:
    dtype = _same_dtype(a, b)
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"operands must be matrices, got ranks {a.ndim} and {b.ndim}")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"inner dimensions differ ({a.shape[1]} vs {b.shape[1]})")
    return TensorType(dtype, (a.shape[0], b.shape[0]))


def _matmul_nt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(a.astype(np.float64), b.astype(np.float64).T).astype(a.dtype)


# matmul_nt(a [M, K], b [N, K]) = a @ b.T: made by the `transpose-into-matmul` pass from a matmul
# whose right operand is a transposed matrix (a linear layer's x @ W.T when W is a run-time
# input, as in training), so the GEMM reads W's rows instead of a transposed copy.
register_op(OpDef("matmul_nt", infer=infer_matmul_nt, reference=_matmul_nt, arity=(2, 2),
                  doc="a @ b.T for matrices"))

# ---------------------------------------------------------------------------------------------
# Spatial ops share one output-size rule.

PAIR = (1, 1)
NO_PAD = (0, 0, 0, 0)


def window_out(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int,
               ceil_mode: bool = False) -> int:
    """Output length of a sliding window (PyTorch's rule, ceil_mode included)."""
    span = dilation * (kernel - 1) + 1
    room = size + pad_lo + pad_hi - span
    if room < 0:
        raise ShapeError(f"window of extent {span} does not fit input extent {size} "
                         f"padded by ({pad_lo}, {pad_hi})")
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    # A last window that starts inside the right padding is dropped (PyTorch, ONNX).
    if ceil_mode and (out - 1) * stride >= size + pad_lo:
        out -= 1
    return out


def _check_spatial(x: TensorType, kernel: tuple[int, ...], stride: tuple[int, ...],
                   padding: tuple[int, ...], dilation: tuple[int, ...]) -> None:
    if x.ndim != 4:
        raise ShapeError(f"expected an NCHW input of rank 4, got rank {x.ndim}")
    if len(kernel) != 2 or len(stride) != 2 or len(dilation) != 2 or len(padding) != 4:
        raise ShapeError("kernel, stride and dilation take 2 values, padding 4 (t, l, b, r)")
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ShapeError(f"kernel {kernel}, stride {stride}, dilation {dilation} must be >= 1 "
                         f"and padding {padding} >= 0")


def spatial_out(x: TensorType, kernel: tuple[int, ...], stride: tuple[int, ...],
                padding: tuple[int, ...], dilation: tuple[int, ...], ceil_mode: bool = False
                ) -> tuple[int, int]:
    _check_spatial(x, kernel, stride, padding, dilation)
    height = window_out(x.shape[2], kernel[0], stride[0], padding[0], padding[2], dilation[0],
                        ceil_mode)
    width = window_out(x.shape[3], kernel[1], stride[1], padding[1], padding[3], dilation[1],
                       ceil_mode)
    return height, width


def _windows(x: np.ndarray, kernel: tuple[int, ...], stride: tuple[int, ...],
             dilation: tuple[int, ...], out_hw: tuple[int, int]) -> np.ndarray:
    """View of shape (N, C, OH, OW, KH, KW) over an already padded input."""
    span = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    view = sliding_window_view(x, span, axis=(2, 3))
    view = view[:, :, :: stride[0], :: stride[1], :: dilation[0], :: dilation[1]]
    return view[:, :, : out_hw[0], : out_hw[1]]


def _pad_for(x: np.ndarray, padding: tuple[int, ...], kernel: tuple[int, ...],
             stride: tuple[int, ...], dilation: tuple[int, ...], out_hw: tuple[int, int],
             value: float) -> np.ndarray:
    """Pad spatially by `padding`, plus whatever ceil_mode's last windows reach past it."""
    extra = []
    for axis in range(2):
        need = (out_hw[axis] - 1) * stride[axis] + dilation[axis] * (kernel[axis] - 1) + 1
        have = x.shape[2 + axis] + padding[axis] + padding[axis + 2]
        extra.append(max(0, need - have))
    widths = ((0, 0), (0, 0), (padding[0], padding[2] + extra[0]),
              (padding[1], padding[3] + extra[1]))
    return np.pad(x, widths, constant_values=value)


# ---------------------------------------------------------------------------------------------
# conv2d(x, w[, b]): NCHW input, OIHW weight, optional bias of shape [O].

CONV_ATTRS = {"stride": Attr("ints", PAIR), "padding": Attr("ints", NO_PAD),
              "dilation": Attr("ints", PAIR), "groups": Attr("int", 1)}


def infer_conv2d(x: TensorType, w: TensorType, b: TensorType | None = None, *,
                 stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
                 groups: int) -> TensorType:
    dtype = _same_dtype(*(t for t in (x, w, b) if t is not None))
    if x.ndim != 4:
        raise ShapeError(f"expected an NCHW input of rank 4, got rank {x.ndim}")
    if w.ndim != 4:
        raise ShapeError(f"weight must be OIHW (rank 4), got rank {w.ndim}")
    if groups < 1 or x.shape[1] % groups or w.shape[0] % groups:
        raise ShapeError(f"groups={groups} must divide input channels and output channels "
                         f"({x.shape[1]} and {w.shape[0]})")
    if x.shape[1] // groups != w.shape[1]:
        raise ShapeError(f"input has {x.shape[1]} channels but the weight expects "
                         f"{w.shape[1] * groups} ({w.shape[1]} per group x {groups} groups)")
    if b is not None and b.shape != (w.shape[0],):
        raise ShapeError(f"bias must have shape [{w.shape[0]}], got {list(b.shape)}")
    height, width = spatial_out(x, w.shape[2:], stride, padding, dilation)
    return TensorType(dtype, (x.shape[0], w.shape[0], height, width))


def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *,
            stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
            groups: int) -> np.ndarray:
    kernel = w.shape[2:]
    out_hw = spatial_out(TensorType.of(x), kernel, stride, padding, dilation)
    # Accumulate in float64 so the reference is no less accurate than any compiled kernel.
    padded = _pad_for(x.astype(np.float64), padding, kernel, stride, dilation, out_hw, 0.0)
    windows = _windows(padded, kernel, stride, dilation, out_hw)  # N, C, OH, OW, KH, KW
    per_group_in, per_group_out = w.shape[1], w.shape[0] // groups
    parts = []
    for g in range(groups):
        win = windows[:, g * per_group_in : (g + 1) * per_group_in]
        wg = w[g * per_group_out : (g + 1) * per_group_out]
        parts.append(np.tensordot(win, wg, axes=([1, 4, 5], [1, 2, 3])))  # N, OH, OW, O/G
    out = np.concatenate(parts, axis=3).transpose(0, 3, 1, 2)
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out, dtype=x.dtype)


register_op(OpDef("conv2d", infer=infer_conv2d, reference=_conv2d, attrs=CONV_ATTRS, arity=(2, 3)))

# ---------------------------------------------------------------------------------------------
# Pooling.

POOL_ATTRS = {"kernel": Attr("ints"), "stride": Attr("ints", PAIR), "padding": Attr("ints", NO_PAD),
              "dilation": Attr("ints", PAIR), "ceil_mode": Attr("bool", False)}


def infer_max_pool2d(x: TensorType, *, kernel: tuple[int, ...], stride: tuple[int, ...],
                     padding: tuple[int, ...], dilation: tuple[int, ...], ceil_mode: bool
                     ) -> TensorType:
    if x.dtype is DType.BOOL:
        raise ShapeError("dtype bool is not supported")
    height, width = spatial_out(x, kernel, stride, padding, dilation, ceil_mode)
    if max(padding[0], padding[2]) > kernel[0] // 2 or max(padding[1], padding[3]) > kernel[1] // 2:
        raise ShapeError(f"padding {list(padding)} must be at most half the kernel {list(kernel)}")
    return x.with_shape((*x.shape[:2], height, width))


def _max_pool2d(x: np.ndarray, *, kernel: tuple[int, ...], stride: tuple[int, ...],
                padding: tuple[int, ...], dilation: tuple[int, ...], ceil_mode: bool
                ) -> np.ndarray:
    out_hw = spatial_out(TensorType.of(x), kernel, stride, padding, dilation, ceil_mode)
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    padded = _pad_for(x, padding, kernel, stride, dilation, out_hw, lowest)
    windows = _windows(padded, kernel, stride, dilation, out_hw)
    return extreme(windows, axis=(4, 5)).astype(x.dtype)  # -0.0 < +0.0, as compiled code


register_op(OpDef("max_pool2d", infer=infer_max_pool2d, reference=_max_pool2d, attrs=POOL_ATTRS))

AVG_ATTRS = {"kernel": Attr("ints"), "stride": Attr("ints", PAIR), "padding": Attr("ints", NO_PAD),
             "ceil_mode": Attr("bool", False), "count_include_pad": Attr("bool", True)}


def infer_avg_pool2d(x: TensorType, *, kernel: tuple[int, ...], stride: tuple[int, ...],
                     padding: tuple[int, ...], ceil_mode: bool, count_include_pad: bool
                     ) -> TensorType:
    _same_dtype(x)
    height, width = spatial_out(x, kernel, stride, padding, PAIR, ceil_mode)
    # As in PyTorch: a window that lies wholly in the padding would have no divisor without it.
    if max(padding[0], padding[2]) > kernel[0] // 2 or max(padding[1], padding[3]) > kernel[1] // 2:
        raise ShapeError(f"padding {list(padding)} must be at most half the kernel {list(kernel)}")
    return x.with_shape((*x.shape[:2], height, width))


def _avg_divisors(size: int, out: int, kernel: int, stride: int, pad_lo: int, pad_hi: int,
                  count_include_pad: bool) -> np.ndarray:
    """Per-output-position window sizes along one axis (PyTorch's AvgPool rule)."""
    starts = np.arange(out) * stride - pad_lo
    ends = np.minimum(starts + kernel, size + pad_hi)
    if count_include_pad:
        return (ends - starts).astype(np.float64)
    return (np.minimum(ends, size) - np.maximum(starts, 0)).astype(np.float64)


def _avg_pool2d(x: np.ndarray, *, kernel: tuple[int, ...], stride: tuple[int, ...],
                padding: tuple[int, ...], ceil_mode: bool, count_include_pad: bool
                ) -> np.ndarray:
    out_hw = spatial_out(TensorType.of(x), kernel, stride, padding, PAIR, ceil_mode)
    padded = _pad_for(x.astype(np.float64), padding, kernel, stride, PAIR, out_hw, 0.0)
    sums = _windows(padded, kernel, stride, PAIR, out_hw).sum(axis=(4, 5))
    rows = _avg_divisors(x.shape[2], out_hw[0], kernel[0], stride[0], padding[0], padding[2],
                         count_include_pad)
    cols = _avg_divisors(x.shape[3], out_hw[1], kernel[1], stride[1], padding[1], padding[3],
                         count_include_pad)
    return (sums / np.outer(rows, cols)).astype(x.dtype)


register_op(OpDef("avg_pool2d", infer=infer_avg_pool2d, reference=_avg_pool2d, attrs=AVG_ATTRS))


def infer_adaptive_avg_pool2d(x: TensorType, *, output_size: tuple[int, ...]) -> TensorType:
    _same_dtype(x)
    if x.ndim != 4 or len(output_size) != 2 or min(output_size) < 1:
        raise ShapeError(f"expected an NCHW input and 2 output sizes >= 1, got {list(output_size)}")
    return x.with_shape((*x.shape[:2], *output_size))


def _adaptive_avg_pool2d(x: np.ndarray, *, output_size: tuple[int, ...]) -> np.ndarray:
    out = np.empty((*x.shape[:2], *output_size), dtype=np.float64)
    height, width = x.shape[2:]
    for i in range(output_size[0]):
        top, bottom = (i * height) // output_size[0], -(-((i + 1) * height) // output_size[0])
        for j in range(output_size[1]):
            left, right = (j * width) // output_size[1], -(-((j + 1) * width) // output_size[1])
            out[:, :, i, j] = x[:, :, top:bottom, left:right].mean(axis=(2, 3), dtype=np.float64)
    return out.astype(x.dtype)


register_op(OpDef("adaptive_avg_pool2d", infer=infer_adaptive_avg_pool2d,
                  reference=_adaptive_avg_pool2d, attrs={"output_size": Attr("ints")}))

# ---------------------------------------------------------------------------------------------
# Normalization.


def infer_batch_norm(x: TensorType, mean: TensorType, var: TensorType, weight: TensorType,
                     bias: TensorType, *, eps: float) -> TensorType:
    _same_dtype(x, mean, var, weight, bias)
    if x.ndim < 2:
        raise ShapeError(f"expected an input of rank >= 2 (N, C, ...), got rank {x.ndim}")
    channels = x.shape[1]
    for name, param in (("mean", mean), ("var", var), ("weight", weight), ("bias", bias)):
        if param.shape != (channels,):
            raise ShapeError(f"{name} must have shape [{channels}], got {list(param.shape)}")
    return x


def _batch_norm(x: np.ndarray, mean: np.ndarray, var: np.ndarray, weight: np.ndarray,
                bias: np.ndarray, *, eps: float) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x64 = x.astype(np.float64)
    scale = weight.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    out = (x64 - mean.reshape(shape)) * scale.reshape(shape) + bias.reshape(shape)
    return out.astype(x.dtype)


register_op(OpDef("batch_norm", infer=infer_batch_norm, reference=_batch_norm, arity=(5, 5),
                  attrs={"eps": Attr("float", 1e-5)}))


def infer_layer_norm(x: TensorType, weight: TensorType, bias: TensorType, *, eps: float
                     ) -> TensorType:
    _same_dtype(x, weight, bias)
    count = weight.ndim
    if count == 0 or x.shape[x.ndim - count :] != weight.shape or bias.shape != weight.shape:
        raise ShapeError(f"weight and bias of shape {list(weight.shape)} must match the last "
                         f"dimensions of the input {list(x.shape)}")
    return x


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, eps: float) -> np.ndarray:
    if x.size == 0:
        return x.copy()
    axes = tuple(range(x.ndim - weight.ndim, x.ndim))
    x64 = x.astype(np.float64)
    # Layer norm is invariant to scaling a row when eps scales with it, so a row whose squares
    # could overflow even in float64 (|x| above 1e100; never for f32 inputs) is normalized as
    # x / p with p = max |x| (not x * (1 / p): 1 / p is subnormal for p above 2^1022), with
    # eps / p^2. That eps underflows, so variance + eps is kept from 0 by min(eps, smallest
    # normal): where x equals the mean the result is bias (eps = 0 keeps 0 / 0 = NaN).
    peak = np.abs(x64).max(axis=axes, keepdims=True)
    divisor = np.where(np.isfinite(peak) & (peak > 1e100), peak, 1.0)
    x64 = x64 / divisor
    mean = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    floor = min(eps, float(np.finfo(np.float64).tiny))
    denominator = np.sqrt(np.maximum(var + eps / divisor / divisor, floor))
    return ((x64 - mean) / denominator * weight + bias).astype(x.dtype)


register_op(OpDef("layer_norm", infer=infer_layer_norm, reference=_layer_norm, arity=(3, 3),
                  attrs={"eps": Attr("float", 1e-5)}))

# ---------------------------------------------------------------------------------------------
# softmax, log_softmax, dropout.


def infer_softmax(x: TensorType, *, axis: int) -> TensorType:
    _same_dtype(x)
    if x.dtype.is_narrow_float:
        # Computed in f32 and rounded once, it lies within an ulp of the exact value, but up to
        # 2 ulps from ONNX's reference, which rounds after every step (attention_4d_causal_fp16).
        raise UnsupportedError(f"softmax of {x.dtype} is not supported yet: cast the input "
                               "to f32 (and the result back)")
    normalize_axis(axis, x.ndim)
    return x


def _softmax(x: np.ndarray, *, axis: int) -> np.ndarray:
    if x.size == 0:  # nothing to normalize (numpy's max has no identity to start from)
        return x.copy()
    x64 = x.astype(np.float64)
    shifted = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    return (shifted / shifted.sum(axis=axis, keepdims=True)).astype(x.dtype)


def _log_softmax(x: np.ndarray, *, axis: int) -> np.ndarray:
    if x.size == 0:
        return x.copy()
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis=axis, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))).astype(x.dtype)


register_op(OpDef("softmax", infer=infer_softmax, reference=_softmax,
                  attrs={"axis": Attr("int", -1)}))
register_op(OpDef("log_softmax", infer=infer_softmax, reference=_log_softmax,
                  attrs={"axis": Attr("int", -1)}))


def infer_dropout(x: TensorType, key: TensorType | None = None, *, p: float, training: bool,
                  seed: int) -> TensorType:
    _same_dtype(x)
    if key is not None and (key.dtype is not DType.I32 or key.shape != ()):
        raise ShapeError(f"the mask key must be an i32 scalar, got {key}")
    if not 0 <= p <= 1:
        raise ShapeError(f"probability p must be in [0, 1], got {p}")
    return x


def _dropout(x: np.ndarray, key: np.ndarray | None = None, *, p: float, training: bool,
             seed: int) -> np.ndarray:
    """Identity in inference; in training, a mask from a counter-based hash of (seed, flat
    index), kept elements scaled by dtype(1/(1-p)). A second input, an i32 scalar, is the key
    itself (given at run time, so a train step draws a fresh mask each call): `seed` is then
    unused.

    With murmur3's 32-bit finalizer fmix32 and all arithmetic mod 2^32:
    key = fmix32(low ^ high 32 bits of seed mod 2^64), h = fmix32(index * 0x9E3779B1 + key),
    and an element is kept when h / 2^32 >= p. Compiled kernels compute the same hash
    (ember/lower/ops_norm.py), so their masks are identical to this one.
    """
    if not training or p == 0:
        return x.copy()
    if p == 1:
        return np.zeros_like(x)

    def fmix32(h: np.ndarray) -> np.ndarray:
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))

    wide = seed & ((1 << 64) - 1)
    key = (fmix32(np.array([(wide & 0xFFFFFFFF) ^ (wide >> 32)], dtype=np.uint32))
           if key is None else np.asarray(key).astype(np.uint32).reshape(1))
    index = np.arange(x.size, dtype=np.uint64).astype(np.uint32)
    hashed = fmix32(index * np.uint32(0x9E3779B1) + key)
    keep = (hashed.astype(np.uint64) >= np.uint64(np.ceil(p * 2.0**32))).reshape(x.shape)
    scale = x.dtype.type(1 / (1 - p))
    with np.errstate(invalid="ignore"):  # an infinity dropped is nan, as in x * mask
        return x * np.where(keep, scale, x.dtype.type(0))


register_op(OpDef("dropout", infer=infer_dropout, reference=_dropout, pure=False, arity=(1, 2),
                  attrs={"p": Attr("float", 0.5), "training": Attr("bool", False),
                         "seed": Attr("int", 0)}))

# ---------------------------------------------------------------------------------------------
# gather(data, indices): numpy `take` along one axis (embedding lookups, ONNX Gather).


def infer_gather(data: TensorType, indices: TensorType, *, axis: int) -> TensorType:
    if not indices.dtype.is_int:
        raise ShapeError(f"indices must be i32 or i64, got {indices.dtype}")
    if data.ndim == 0:
        raise ShapeError("data must have rank >= 1, got a scalar")
    axis = normalize_axis(axis, data.ndim)
    return data.with_shape(data.shape[:axis] + indices.shape + data.shape[axis + 1 :])


def _gather(data: np.ndarray, indices: np.ndarray, *, axis: int) -> np.ndarray:
    size = data.shape[axis]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        bad = indices[(indices < -size) | (indices >= size)].flat[0]
        raise IndexError(f"index {bad} is out of range for axis {axis} of size {size}")
    return np.take(data, indices, axis=axis)


register_op(OpDef("gather", infer=infer_gather, reference=_gather, arity=(2, 2),
                  attrs={"axis": Attr("int", 0)}))
