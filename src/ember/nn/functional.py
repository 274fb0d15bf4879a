"""`ember.nn.functional`: PyTorch's functional API (names, arguments, defaults) for traced code.

Each function records registry ops on traced tensors. Arguments that PyTorch writes in several
forms (an int or a pair, padding="same") are resolved here, so the graph always holds the
explicit form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.frontend import tracer
from ember.frontend.tensor import Tensor
from ember.ir.types import DType

__all__ = [
    "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "conv2d", "cross_entropy", "dropout",
    "embedding", "gelu", "layer_norm", "leaky_relu", "linear", "log_softmax", "max_pool2d",
    "mse_loss", "nll_loss", "one_hot", "pad", "relu", "sigmoid", "silu", "softmax", "tanh",
]


def _t(x: Any) -> Tensor:
    return tracer.as_tensor(x)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    pair = tuple(int(v) for v in value)
    if len(pair) == 1:
        return pair[0], pair[0]
    if len(pair) != 2:
        raise tracer._fail(f"{name} must be an int or a pair, got {value!r}")
    return pair  # type: ignore[return-value]


# -- activations --------------------------------------------------------------------------------


def relu(input: Any, inplace: bool = False) -> Tensor:
    return tracer.emit("relu", input)


def leaky_relu(input: Any, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return tracer.emit("leaky_relu", input, alpha=negative_slope)


def gelu(input: Any, approximate: str = "none") -> Tensor:
    return tracer.emit("gelu", input, approximate=approximate)


def sigmoid(input: Any) -> Tensor:
    return tracer.emit("sigmoid", input)


def tanh(input: Any) -> Tensor:
    return tracer.emit("tanh", input)


def silu(input: Any, inplace: bool = False) -> Tensor:
    return tracer.emit("silu", input)


def _softmax_dim(ndim: int, dim: int | None) -> int:
    if dim is not None:
        return dim
    return 0 if ndim in (0, 1, 3) else 1  # PyTorch's legacy implicit choice


def softmax(input: Any, dim: int | None = None, dtype: Any = None) -> Tensor:
    x = _t(input) if dtype is None else _t(input).astype(dtype)
    return x.ctx.emit("softmax", x, axis=_softmax_dim(x.ndim, dim) % max(x.ndim, 1))


def log_softmax(input: Any, dim: int | None = None, dtype: Any = None) -> Tensor:
    x = _t(input) if dtype is None else _t(input).astype(dtype)
    return x.ctx.emit("log_softmax", x, axis=_softmax_dim(x.ndim, dim) % max(x.ndim, 1))


# -- linear and convolution ---------------------------------------------------------------------


def linear(input: Any, weight: Any, bias: Any = None) -> Tensor:
    """y = x W^T + b, with W of shape [out_features, in_features]."""
    out = _t(input) @ _t(weight).T
    return out if bias is None else out + bias


def _conv_padding(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int],
                  stride: tuple[int, int]) -> tuple[int, int, int, int]:
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise tracer._fail("padding='same' is not supported for strided convolutions")
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        # PyTorch puts the odd extra element at the end (bottom, right).
        return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    pad_h, pad_w = _pair(padding, "padding")
    return (pad_h, pad_w, pad_h, pad_w)


def conv2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D convolution of an NCHW input with an OIHW weight."""
    x, w = tracer.binary_operands(input, weight)
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads = _conv_padding(padding, w.shape[2:] if w.ndim == 4 else (1, 1), dilation, stride)
    operands = [x, w] if bias is None else [x, w, tracer.as_tensor(bias, x.dtype_)]
    return x.ctx.emit("conv2d", *operands, stride=stride, padding=pads, dilation=dilation,
                      groups=groups)


# -- pooling ------------------------------------------------------------------------------------


def max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False
               ) -> Tensor:
    if return_indices:
        raise tracer._fail("max_pool2d(return_indices=True) is not supported")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride")
    pad_h, pad_w = _pair(padding, "padding")
    return tracer.emit("max_pool2d", input, kernel=kernel, stride=stride,
                       padding=(pad_h, pad_w, pad_h, pad_w), dilation=_pair(dilation, "dilation"),
                       ceil_mode=ceil_mode)


def avg_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    if divisor_override is not None:
        raise tracer._fail("avg_pool2d(divisor_override=...) is not supported")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride")
    pad_h, pad_w = _pair(padding, "padding")
    if pad_h > kernel[0] // 2 or pad_w > kernel[1] // 2:
        raise tracer._fail(f"padding ({pad_h}, {pad_w}) must be at most half the kernel {kernel}")
    return tracer.emit("avg_pool2d", input, kernel=kernel, stride=stride,
                       padding=(pad_h, pad_w, pad_h, pad_w), ceil_mode=ceil_mode,
                       count_include_pad=count_include_pad)


def adaptive_avg_pool2d(input: Any, output_size: Any) -> Tensor:
    x = _t(input)
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    resolved = tuple(x.shape[2 + i] if s is None else int(s) for i, s in enumerate(size))
    return x.ctx.emit("adaptive_avg_pool2d", x, output_size=resolved)


# -- normalization ------------------------------------------------------------------------------


def _ones_like_channels(x: Tensor, shape: tuple[int, ...], value: float) -> Tensor:
    return x.ctx.constant(np.full(shape, value, dtype=x.dtype))


def batch_norm(input: Any, running_mean: Any, running_var: Any, weight: Any = None,
               bias: Any = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch normalization over the channel axis 1. In training mode the batch's own
    statistics are used (running statistics are not updated in a traced graph)."""
    x = _t(input)
    channels = (x.shape[1],) if x.ndim > 1 else (1,)
    w = _ones_like_channels(x, channels, 1.0) if weight is None else tracer.as_tensor(weight)
    b = _ones_like_channels(x, channels, 0.0) if bias is None else tracer.as_tensor(bias)
    if training:
        axes = tuple(a for a in range(x.ndim) if a != 1)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) * (x - mean)).mean(axis=axes, keepdims=True)
        return (x - mean) / (var + eps).sqrt() * w.reshape(shape) + b.reshape(shape)
    return x.ctx.emit("batch_norm", x, tracer.as_tensor(running_mean),
                      tracer.as_tensor(running_var), w, b, eps=eps)


def layer_norm(input: Any, normalized_shape: Any, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Tensor:
    x = _t(input)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    w = _ones_like_channels(x, shape, 1.0) if weight is None else tracer.as_tensor(weight)
    b = _ones_like_channels(x, shape, 0.0) if bias is None else tracer.as_tensor(bias)
    if w.shape != shape:
        raise tracer._fail(f"layer_norm weight has shape {list(w.shape)}, expected "
                           f"normalized_shape {list(shape)}")
    return x.ctx.emit("layer_norm", x, w, b, eps=eps)


# -- other layers -------------------------------------------------------------------------------


def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    x = _t(input)
    if not training or p == 0:
        return x
    x.ctx.dropout_seed += 1
    return x.ctx.emit("dropout", x, p=p, training=True, seed=x.ctx.dropout_seed)


def embedding(input: Any, weight: Any, padding_idx: int | None = None) -> Tensor:
    """Rows of `weight` picked by the integer indices `input` (any shape)."""
    indices = _t(input)
    if not indices.dtype_.is_int:
        raise tracer._fail(f"embedding indices must be integers, got {indices.value.type}")
    return tracer.emit("gather", weight, indices, axis=0)


def pad(input: Any, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """PyTorch's pad: `pad` lists (before, after) pairs starting from the last dimension."""
    x = _t(input)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise tracer._fail(f"pad {list(pad)} must hold pairs for at most {x.ndim} dimensions")
    befores, afters = [0] * x.ndim, [0] * x.ndim
    for i in range(len(pad) // 2):
        befores[x.ndim - 1 - i], afters[x.ndim - 1 - i] = int(pad[2 * i]), int(pad[2 * i + 1])
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
    if mode not in modes:
        raise tracer._fail(f"pad mode {mode!r} is not supported ({', '.join(modes)})")
    return x.ctx.emit("pad", x, pads=tuple(befores + afters), mode=modes[mode], value=float(value))


def flatten(input: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return _t(input).flatten(start_dim, end_dim)


def one_hot(tensor: Any, num_classes: int) -> Tensor:
    """i64 one-hot encoding along a new last axis."""
    indices = _t(tensor)
    classes = indices.ctx.constant(np.arange(num_classes, dtype=indices.dtype))
    return (indices.expand_dims(-1) == classes).astype(DType.I64)


# -- losses -------------------------------------------------------------------------------------


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise tracer._fail(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nll_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices `target` under log-probabilities `input` [N, C]."""
    logp = _t(input)
    picked = one_hot(target, logp.shape[1]).astype(logp.dtype_)
    if logp.ndim > 2:  # [N, C, d...] with target [N, d...]: classes on axis 1
        picked = picked.transpose((0, picked.ndim - 1, *range(1, picked.ndim - 1)))
    return _reduce(-(logp * picked).sum(axis=1), reduction)


def cross_entropy(input: Any, target: Any, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy of logits [N, C] against class indices [N] (or probabilities)."""
    logits = _t(input)
    logp = log_softmax(logits, dim=1)
    target_t = _t(target)
    if target_t.dtype_.is_float:  # class probabilities
        return _reduce(-(logp * target_t).sum(axis=1), reduction)
    loss = nll_loss(logp, target_t, reduction="none")
    if label_smoothing:
        smooth = -logp.mean(axis=1)
        loss = loss * (1 - label_smoothing) + smooth * label_smoothing
    return _reduce(loss, reduction)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    diff = _t(input) - target
    return _reduce(diff * diff, reduction)

