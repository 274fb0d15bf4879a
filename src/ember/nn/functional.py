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
from ember.frontend.tensor import Tensor, expm1_in_dtype, log1p_in_dtype, where
from ember.ir.types import DType

__all__ = [
    "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "celu", "conv1d", "conv2d", "conv_transpose2d",
    "cross_entropy", "dropout", "elu", "embedding", "gelu", "grid_sample", "group_norm",
    "hardsigmoid",
    "hardswish", "hardtanh", "huber_loss", "instance_norm", "interpolate", "l1_loss",
    "layer_norm", "leaky_relu", "linear", "log_softmax", "logsigmoid", "max_pool2d", "mish",
    "mse_loss", "nll_loss", "normalize", "one_hot", "pad", "pixel_shuffle", "pixel_unshuffle",
    "relu", "relu6", "scaled_dot_product_attention", "selu", "sigmoid", "silu", "smooth_l1_loss",
    "softmax", "softplus", "softsign", "tanh", "topk",
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


def _softmax_dim(x: Tensor, dim: int | None, name: str) -> int:
    if dim is None:
        return 0 if x.ndim in (0, 1, 3) else 1  # PyTorch's legacy implicit choice
    rank = max(x.ndim, 1)
    if not -rank <= dim < rank:
        raise tracer._fail(f"{name}: dim {dim} is out of range for an input of shape "
                           f"{list(x.shape)}")
    return int(dim) % rank


def softmax(input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None
            ) -> Tensor:
    """exp(x) / sum(exp(x)) along `dim`; dim=None picks PyTorch's legacy implicit axis."""
    x = _t(input) if dtype is None else _t(input).astype(dtype)
    return x.ctx.emit("softmax", x, axis=_softmax_dim(x, dim, "softmax"))


def log_softmax(input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None
                ) -> Tensor:
    """log(softmax(x)) along `dim`, computed stably."""
    x = _t(input) if dtype is None else _t(input).astype(dtype)
    return x.ctx.emit("log_softmax", x, axis=_softmax_dim(x, dim, "log_softmax"))


# -- linear and convolution ---------------------------------------------------------------------


def linear(input: Any, weight: Any, bias: Any = None) -> Tensor:
    """y = x W^T + b, with W of shape [out_features, in_features]."""
    x, w = _t(input), _t(weight)
    if w.ndim not in (1, 2):
        raise tracer._fail(f"linear: weight must be 1-D or 2-D, got shape {list(w.shape)}")
    out = x @ w.T if w.ndim == 2 else x @ w
    return out if bias is None else out + bias


def _conv_padding(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int],
                  stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) for PyTorch's padding forms: int, pair, "valid", "same"."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise tracer._fail(f"conv2d: padding {padding!r} must be 'valid', 'same', an int "
                               "or a pair")
        if stride != (1, 1):
            raise tracer._fail("conv2d: padding='same' is not supported for strided convolutions")
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        # PyTorch puts the odd extra element at the end (bottom, right).
        return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    pad_h, pad_w = _pair(padding, "padding")
    return (pad_h, pad_w, pad_h, pad_w)


def _unbatched(x: Tensor, op: str, **attrs: Any) -> Tensor:
    """Run a spatial op on a CHW input as on a batch of one (PyTorch accepts both)."""
    if x.ndim != 3:
        return x.ctx.emit(op, x, **attrs)
    return x.ctx.emit(op, x.expand_dims(0), **attrs).squeeze(0)


def conv2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D convolution of an NCHW (or CHW) input with an OIHW weight."""
    x, w = tracer.binary_operands(input, weight)
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads = _conv_padding(padding, w.shape[2:] if w.ndim == 4 else (1, 1), dilation, stride)
    unbatched = x.ndim == 3
    if unbatched:
        x = x.expand_dims(0)
    operands = [x, w] if bias is None else [x, w, tracer.as_tensor(bias, x.dtype_)]
    out = x.ctx.emit("conv2d", *operands, stride=stride, padding=pads, dilation=dilation,
                     groups=groups)
    return out.squeeze(0) if unbatched else out


# -- pooling ------------------------------------------------------------------------------------


def _pool_stride(stride: Any, kernel: tuple[int, int]) -> tuple[int, int]:
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        return kernel
    return _pair(stride, "stride")


def max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False
               ) -> Tensor:
    """Maximum over sliding windows of an NCHW (or CHW) input; padding counts as -inf."""
    if return_indices:
        raise tracer._fail("max_pool2d(return_indices=True) is not supported")
    kernel = _pair(kernel_size, "kernel_size")
    pad_h, pad_w = _pair(padding, "padding")
    return _unbatched(_t(input), "max_pool2d", kernel=kernel,
                      stride=_pool_stride(stride, kernel), padding=(pad_h, pad_w, pad_h, pad_w),
                      dilation=_pair(dilation, "dilation"), ceil_mode=bool(ceil_mode))


def _window_sizes(size: int, out: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """Per-position window lengths that PyTorch divides by when count_include_pad is set."""
    starts = np.arange(out) * stride - pad
    return np.minimum(starts + kernel, size + pad) - starts


def avg_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """Mean over sliding windows of an NCHW (or CHW) input (PyTorch's divisor rules)."""
    kernel = _pair(kernel_size, "kernel_size")
    stride = _pool_stride(stride, kernel)
    pad_h, pad_w = _pair(padding, "padding")
    if pad_h > kernel[0] // 2 or pad_w > kernel[1] // 2:
        raise tracer._fail(f"avg_pool2d: padding ({pad_h}, {pad_w}) must be at most half the "
                           f"kernel {kernel}")
    x = _t(input)
    out = _unbatched(x, "avg_pool2d", kernel=kernel, stride=stride,
                     padding=(pad_h, pad_w, pad_h, pad_w), ceil_mode=bool(ceil_mode),
                     count_include_pad=True if divisor_override else count_include_pad)
    if not divisor_override:
        return out
    # The window sums are the padded-window means times the padded window sizes.
    rows = _window_sizes(x.shape[-2], out.shape[-2], kernel[0], stride[0], pad_h)
    cols = _window_sizes(x.shape[-1], out.shape[-1], kernel[1], stride[1], pad_w)
    scale = np.outer(rows, cols).astype(x.dtype) / np.asarray(divisor_override, x.dtype)
    return out * x.ctx.constant(scale)


def adaptive_avg_pool2d(input: Any, output_size: Any) -> Tensor:
    """Mean over the windows [floor(i*H/out), ceil((i+1)*H/out)) of an NCHW (or CHW) input."""
    x = _t(input)
    if x.ndim not in (3, 4):
        raise tracer._fail(f"adaptive_avg_pool2d: expected a CHW or NCHW input, got "
                           f"{x.value.type}")
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(size) != 2:
        raise tracer._fail(f"adaptive_avg_pool2d: output_size must be an int or a pair, got "
                           f"{output_size!r}")
    resolved = tuple(x.shape[x.ndim - 2 + i] if s is None else int(s) for i, s in enumerate(size))
    return _unbatched(x, "adaptive_avg_pool2d", output_size=resolved)


# -- normalization ------------------------------------------------------------------------------


def _filled(x: Tensor, shape: tuple[int, ...], value: float) -> Tensor:
    return x.ctx.constant(np.full(shape, value, dtype=x.dtype))


def _channel_param(x: Tensor, value: Any, name: str, fill: float) -> Tensor:
    """A per-channel vector of batch_norm, checked against the input's channel count."""
    channels = x.shape[1] if x.ndim > 1 else 1
    tensor = _filled(x, (channels,), fill) if value is None else tracer.as_tensor(value, x.dtype_)
    if tensor.shape != (channels,):
        raise tracer._fail(f"batch_norm: {name} has shape {list(tensor.shape)} but the input "
                           f"{x.value.type} has {channels} channels")
    return tensor


def batch_norm(input: Any, running_mean: Any, running_var: Any, weight: Any = None,
               bias: Any = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch normalization over the channel axis 1.

    In training mode the batch's own statistics (biased variance) are used; the running
    statistics are not updated, because a traced graph holds no state between calls.
    """
    x = _t(input)
    if x.ndim < 2:
        raise tracer._fail(f"batch_norm: expected an input of rank >= 2 (N, C, ...), got "
                           f"{x.value.type}")
    w = _channel_param(x, weight, "weight", 1.0)
    b = _channel_param(x, bias, "bias", 0.0)
    if training:
        axes = tuple(a for a in range(x.ndim) if a != 1)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        # Normalization is invariant to scaling a channel when eps scales with it: a channel
        # whose sums or squares could overflow (|x| above 1e15 in f32, 1e150 in f64) is
        # normalized as x / max |x|, with eps / max |x|^2. That eps may underflow, so the
        # variance is kept from 0 (only a channel of equal values has var 0 there: 0 / tiny).
        if x.dtype_.is_float:
            limit = 1e15 if x.dtype_ is DType.F32 else 1e150
            peak = abs(x).max(axis=axes, keepdims=True)
            scale = where((peak > limit) & (peak < np.inf), 1.0 / peak, 1.0)
            x = x * scale
        mean = x.mean(axis=axes, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=axes, keepdims=True)
        if running_mean is not None and running_var is not None and x.dtype_.is_float:
            _update_running_stats(x, running_mean, running_var, mean / scale,
                                  var / (scale * scale), momentum)
        if x.dtype_.is_float:
            tiny = float(np.finfo(x.dtype_.numpy).tiny)
            var = tracer.binary("maximum", var + eps * scale * scale, tiny)
        else:
            var = var + eps
        return centered / var.sqrt() * w.reshape(shape) + b.reshape(shape)
    if running_mean is None or running_var is None:
        raise tracer._fail("batch_norm: running_mean and running_var are needed when "
                           "training=False")
    mean = _channel_param(x, running_mean, "running_mean", 0.0)
    var = _channel_param(x, running_var, "running_var", 1.0)
    return x.ctx.emit("batch_norm", x, mean, var, w, b, eps=eps)


def _update_running_stats(x: Tensor, running_mean: Any, running_var: Any, mean: Tensor,
                          var: Tensor, momentum: float | None) -> None:
    """In a train step, record PyTorch's running-statistics update of a module's buffers:
    new = (1 - momentum) * old + momentum * batch statistic, with the unbiased variance."""
    ctx = x.ctx
    if ctx.updates is None:
        return  # a plain trace holds no state between calls: the buffers stay as they are
    if momentum is None:
        raise tracer._fail("batch_norm: momentum=None (a cumulative average) is not supported "
                           "in a train step; give a momentum")
    count = x.size // x.shape[1]
    unbiased = var.reshape(-1) * (count / max(count - 1, 1))
    for buffer, stat in ((running_mean, mean.reshape(-1)), (running_var, unbiased)):
        old = tracer.as_tensor(buffer, x.dtype_)
        ctx.record_update(buffer, old * (1.0 - momentum) + stat * momentum)


def layer_norm(input: Any, normalized_shape: Any, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Tensor:
    """Normalize over the last len(normalized_shape) dimensions, then scale and shift."""
    x = _t(input)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape) :] != shape or len(shape) > x.ndim:
        raise tracer._fail(f"layer_norm: normalized_shape {list(shape)} does not match the last "
                           f"dimensions of the input {x.value.type}")
    w = _filled(x, shape, 1.0) if weight is None else tracer.as_tensor(weight, x.dtype_)
    b = _filled(x, shape, 0.0) if bias is None else tracer.as_tensor(bias, x.dtype_)
    for name, param in (("weight", w), ("bias", b)):
        if param.shape != shape:
            raise tracer._fail(f"layer_norm: {name} has shape {list(param.shape)}, expected "
                               f"normalized_shape {list(shape)}")
    return x.ctx.emit("layer_norm", x, w, b, eps=eps)


# -- other layers -------------------------------------------------------------------------------


def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p); identity when not
    training."""
    if not 0 <= p <= 1:
        raise tracer._fail(f"dropout probability has to be between 0 and 1, but got {p}")
    x = _t(input)
    if not training or p == 0:
        return x
    x.ctx.dropout_seed += 1
    key = x.ctx.dropout_key()  # a run-time key in a train step: a fresh mask every call
    inputs = (x,) if key is None else (x, key)
    return x.ctx.emit("dropout", *inputs, p=float(p), training=True, seed=x.ctx.dropout_seed)


def embedding(input: Any, weight: Any, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of `weight` picked by the integer indices `input` (any shape)."""
    if max_norm is not None:
        raise tracer._fail("embedding(max_norm=...) is not supported (it rewrites the weight)")
    indices, table = _t(input), _t(weight)
    if not indices.dtype_.is_int:
        raise tracer._fail(f"embedding: indices must be integers, got {indices.value.type}")
    if table.ndim != 2:
        raise tracer._fail(f"embedding: weight must be 2-D, got {table.value.type}")
    return indices.ctx.emit("gather", table, indices, axis=0)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


def pad(input: Any, pad: Sequence[int], mode: str = "constant", value: float | None = None
        ) -> Tensor:
    """PyTorch's pad: `pad` lists (before, after) pairs starting from the last dimension.

    Negative amounts crop (constant mode); "circular" wraps around.
    """
    x = _t(input)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise tracer._fail(f"pad: {list(pad)} must hold pairs for at most {x.ndim} dimensions "
                           f"of the input {x.value.type}")
    befores, afters = [0] * x.ndim, [0] * x.ndim
    for i in range(len(pad) // 2):
        befores[x.ndim - 1 - i], afters[x.ndim - 1 - i] = int(pad[2 * i]), int(pad[2 * i + 1])
    if mode == "circular":
        return _pad_circular(x, befores, afters)
    if mode not in _PAD_MODES:
        raise tracer._fail(f"pad mode {mode!r} is not supported (constant, reflect, replicate, "
                           "circular)")
    if mode != "constant" and min(befores + afters) < 0:
        raise tracer._fail(f"pad: negative padding {list(pad)} needs mode='constant'")
    grow = tuple(max(v, 0) for v in befores + afters)
    out = x
    if any(grow):
        fill = 0.0 if value is None else float(value)
        out = x.ctx.emit("pad", x, pads=grow, mode=_PAD_MODES[mode], value=fill)
    return _crop(out, befores, afters)


def _crop(x: Tensor, befores: list[int], afters: list[int]) -> Tensor:
    """Remove -amount elements where an amount is negative."""
    if min(befores + afters) >= 0:
        return x
    index = tuple(slice(-min(b, 0), x.shape[i] + min(a, 0))
                  for i, (b, a) in enumerate(zip(befores, afters, strict=True)))
    return x[index]


def _pad_circular(x: Tensor, befores: list[int], afters: list[int]) -> Tensor:
    from ember.frontend.tensor import concatenate

    for axis, (before, after) in enumerate(zip(befores, afters, strict=True)):
        size = x.shape[axis]
        if before > size or after > size or before < 0 or after < 0:
            raise tracer._fail(f"pad: circular padding ({before}, {after}) of axis {axis} must "
                               f"be in [0, {size}]")
        if not before and not after:
            continue
        head = (slice(None),) * axis
        parts = [x[(*head, slice(size - before, size))]] if before else []
        parts.append(x)
        if after:
            parts.append(x[(*head, slice(0, after))])
        x = concatenate(parts, axis=axis)
    return x


def flatten(input: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dimensions start_dim..end_dim into one (torch.flatten)."""
    return _t(input).flatten(start_dim, end_dim)


def one_hot(tensor: Any, num_classes: int = -1) -> Tensor:
    """i64 one-hot encoding along a new last axis.

    num_classes must be given: inferring it from the largest index would make the output shape
    depend on the data, which a static graph cannot hold.
    """
    indices = _t(tensor)
    if num_classes is None or num_classes < 0:
        raise tracer._fail("one_hot: num_classes must be given (the output shape cannot depend "
                           "on the values of the indices)")
    if not indices.dtype_.is_int:
        raise tracer._fail(f"one_hot: indices must be integers, got {indices.value.type}")
    classes = indices.ctx.constant(np.arange(num_classes, dtype=indices.dtype))
    return (indices.expand_dims(-1) == classes).astype(DType.I64)


# -- losses -------------------------------------------------------------------------------------


def _reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """PyTorch's rule for the deprecated size_average / reduce arguments."""
    if size_average is None and reduce is None:
        if reduction not in ("mean", "sum", "none"):
            raise tracer._fail(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _classes_last_to_axis1(x: Tensor) -> Tensor:
    """[N, d..., C] -> [N, C, d...]."""
    if x.ndim <= 2:
        return x
    return x.transpose((0, x.ndim - 1, *range(1, x.ndim - 1)))


def _target_weights(logp: Tensor, target: Tensor, weight: Any, ignore_index: int,
                    op: str = "nll_loss") -> tuple[Tensor, Tensor]:
    """[N, C, d...] bool mask of each target's class (false where ignored), and the same mask
    holding weight[target] (0 where ignored)."""
    if target.shape != logp.shape[:1] + logp.shape[2:]:
        raise tracer._fail(f"{op}: target {target.value.type} does not fit input "
                           f"{logp.value.type} (expected target shape "
                           f"{[logp.shape[0], *logp.shape[2:]]})")
    if not target.dtype_.is_int:
        raise tracer._fail(f"{op}: target must hold class indices (integers), got "
                           f"{target.value.type}")
    hot = one_hot(target, logp.shape[1])
    selected = hot != 0
    picked = hot.astype(logp.dtype_)
    if weight is not None:
        w = tracer.as_tensor(weight, logp.dtype_)
        if w.shape != (logp.shape[1],):
            raise tracer._fail(f"{op}: weight has shape {list(w.shape)}, expected "
                               f"[{logp.shape[1]}] (one per class)")
        picked = picked * w
    if 0 <= ignore_index < logp.shape[1]:  # out-of-range indices already give a zero row
        keep = (target != ignore_index).astype(logp.dtype_)
        picked = picked * keep.expand_dims(-1)
        selected = selected & (target != ignore_index).expand_dims(-1)
    return _classes_last_to_axis1(selected), _classes_last_to_axis1(picked)


def _picked_nll(logp: Tensor, selected: Tensor, picked: Tensor) -> Tensor:
    """-weight[target] * logp[target] per sample: other classes (and ignored targets) are
    left out, not multiplied by 0, so an -inf log-probability there stays out of the sum."""
    return -where(selected, logp * picked, 0.0).sum(axis=1)


def _with_batch(logp: Tensor, target: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Unbatched inputs ([C] logits with a scalar target) as a batch of one."""
    if logp.ndim == 1:
        return logp.expand_dims(0), target.expand_dims(0), True
    return logp, target, False


def nll_loss(input: Any, target: Any, weight: Any = None, size_average: bool | None = None,
             ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean"
             ) -> Tensor:
    """Negative log-likelihood of class indices `target` under log-probabilities `input`.

    input is [N, C] or [N, C, d...] (or [C]); target is [N] or [N, d...] (or a scalar). With
    reduction="mean" the sum is divided by the total weight of the targets not ignored.
    """
    reduction = _reduction(size_average, reduce, reduction)
    logp, target_t, unbatched = _with_batch(_t(input), _t(target))
    selected, picked = _target_weights(logp, target_t, weight, ignore_index)
    loss = _picked_nll(logp, selected, picked)
    if reduction == "mean":
        return loss.sum() / picked.sum()
    if reduction == "none" and unbatched:
        return loss.squeeze(0)
    return _reduce(loss, reduction)


def cross_entropy(input: Any, target: Any, weight: Any = None, size_average: bool | None = None,
                  ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy of logits [N, C] (or [N, C, d...], or [C]) against class indices
    or class probabilities (a float target shaped like the input)."""
    reduction = _reduction(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise tracer._fail(f"cross_entropy: label_smoothing must be in [0, 1], got "
                           f"{label_smoothing}")
    logits, target_t, unbatched = _with_batch(_t(input), _t(target))
    logp = log_softmax(logits, dim=1)
    if target_t.dtype_.is_float:
        loss = _cross_entropy_probabilities(logp, target_t, weight, label_smoothing, reduction)
    else:
        loss = _cross_entropy_indices(logp, target_t, weight, ignore_index, label_smoothing,
                                      reduction)
    return loss.squeeze(0) if unbatched and reduction == "none" else loss


def _class_weights(logp: Tensor, weight: Any) -> Tensor | None:
    """The class weights shaped [C, 1, ...] to broadcast against [N, C, d...]."""
    if weight is None:
        return None
    w = tracer.as_tensor(weight, logp.dtype_)
    if w.shape != (logp.shape[1],):
        raise tracer._fail(f"cross_entropy: weight has shape {list(w.shape)}, expected "
                           f"[{logp.shape[1]}] (one per class)")
    return w.reshape((logp.shape[1],) + (1,) * (logp.ndim - 2))


def _cross_entropy_probabilities(logp: Tensor, target: Tensor, weight: Any,
                                 label_smoothing: float, reduction: str) -> Tensor:
    if target.shape != logp.shape:
        raise tracer._fail(f"cross_entropy: probability target {target.value.type} must have "
                           f"the input's shape {logp.value.type}")
    classes = logp.shape[1]
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / classes
    products = logp * target
    w = _class_weights(logp, weight)
    if w is not None:
        products = products * w
    loss = -products.sum(axis=1)
    if reduction == "mean":  # PyTorch divides by the number of samples, whatever the weights
        return loss.sum() / float(max(logp.size // classes, 1))
    return _reduce(loss, reduction)


def _cross_entropy_indices(logp: Tensor, target: Tensor, weight: Any, ignore_index: int,
                           label_smoothing: float, reduction: str) -> Tensor:
    selected, picked = _target_weights(logp, target, weight, ignore_index, "cross_entropy")
    nll = _picked_nll(logp, selected, picked)
    if not label_smoothing:
        return nll.sum() / picked.sum() if reduction == "mean" else _reduce(nll, reduction)
    # PyTorch: (1 - s) * nll + s / C * smooth, where smooth = -sum_c w_c logp_c on kept targets.
    classes = logp.shape[1]
    w = _class_weights(logp, weight)
    smooth = -(logp if w is None else logp * w).sum(axis=1)
    smooth = where(target != ignore_index, smooth, 0.0)
    if reduction == "mean":
        total = picked.sum()
        return (nll.sum() * (1 - label_smoothing) + smooth.sum() * (label_smoothing / classes)
                ) / total
    return _reduce(nll * (1 - label_smoothing) + smooth * (label_smoothing / classes), reduction)


def _loss_weight(weight: Any, loss: Tensor, op: str) -> Tensor:
    """An elementwise weight of the loss's shape, in the loss's dtype."""
    w = tracer.as_tensor(weight, loss.dtype_)
    if w.shape != loss.shape:
        raise tracer._fail(f"{op}: weight {w.value.type} must have the input's shape "
                           f"{list(loss.shape)}")
    return w if w.dtype_ is loss.dtype_ else w.astype(loss.dtype_)


def _pointwise_reduce(loss: Tensor, weight: Any, reduction: str, op: str,
                      mean_over_weights: bool = True) -> Tensor:
    """Weight a pointwise loss elementwise and reduce it. PyTorch's weighted mean divides by
    the sum of the weights for mse and l1, by the element count for huber."""
    if weight is None:
        return _reduce(loss, reduction)
    w = _loss_weight(weight, loss, op)
    weighted = loss * w
    if reduction == "mean" and mean_over_weights:
        return weighted.sum() / w.sum()
    return _reduce(weighted, reduction)


def mse_loss(input: Any, target: Any, size_average: bool | None = None,
             reduce: bool | None = None, reduction: str = "mean", weight: Any = None) -> Tensor:
    """(input - target)^2, optionally weighted elementwise, reduced by mean, sum or none."""
    reduction = _reduction(size_average, reduce, reduction)
    diff = _t(input) - target
    return _pointwise_reduce(diff * diff, weight, reduction, "mse_loss")


def l1_loss(input: Any, target: Any, size_average: bool | None = None,
            reduce: bool | None = None, reduction: str = "mean", weight: Any = None) -> Tensor:
    """|input - target|, optionally weighted elementwise, reduced by mean, sum or none."""
    reduction = _reduction(size_average, reduce, reduction)
    return _pointwise_reduce(abs(_t(input) - target), weight, reduction, "l1_loss")


def smooth_l1_loss(input: Any, target: Any, size_average: bool | None = None,
                   reduce: bool | None = None, reduction: str = "mean", beta: float = 1.0
                   ) -> Tensor:
    """0.5 z^2 / beta where z = |input - target| < beta, else z - 0.5 beta; beta=0 is l1."""
    reduction = _reduction(size_average, reduce, reduction)
    if beta < 0:
        raise tracer._fail(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    z = abs(_t(input) - target)
    if beta == 0:
        return _reduce(z, reduction)
    return _reduce(where(z < beta, 0.5 * z * z / beta, z - 0.5 * beta), reduction)


def huber_loss(input: Any, target: Any, reduction: str = "mean", delta: float = 1.0,
               weight: Any = None) -> Tensor:
    """0.5 z^2 where z = |input - target| < delta, else delta (z - 0.5 delta): smooth_l1 times
    delta. A weighted mean divides by the element count, as PyTorch's does."""
    reduction = _reduction(None, None, reduction)
    if delta <= 0:
        raise tracer._fail(f"huber_loss: delta must be > 0, got {delta}")
    z = abs(_t(input) - target)
    loss = where(z < delta, 0.5 * z * z, delta * (z - 0.5 * delta))
    return _pointwise_reduce(loss, weight, reduction, "huber_loss", mean_over_weights=False)


def _log_sigmoid(x: Tensor) -> Tensor:
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)), finite for every finite x."""
    return tracer.binary("minimum", x, 0.0) - log1p_in_dtype((-abs(x)).exp())


def _same_shape_target(x: Tensor, target: Any, op: str) -> Tensor:
    y = tracer.as_tensor(target, x.dtype_)
    if y.shape != x.shape:
        raise tracer._fail(f"{op}: target {y.value.type} must have the input's shape "
                           f"{x.value.type}")
    return y if y.dtype_ is x.dtype_ else y.astype(x.dtype_)


def _broadcast_weight(weight: Any, x: Tensor, op: str, name: str = "weight") -> Tensor:
    """A weight that broadcasts to the input's shape (and no further), in its dtype."""
    w = tracer.as_tensor(weight, x.dtype_)
    try:
        shape = np.broadcast_shapes(w.shape, x.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise tracer._fail(f"{op}: {name} {w.value.type} does not broadcast to the input's "
                           f"shape {x.value.type}")
    return w if w.dtype_ is x.dtype_ else w.astype(x.dtype_)


def binary_cross_entropy(input: Any, target: Any, weight: Any = None,
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> Tensor:
    """-w (y log(x) + (1 - y) log(1 - x)) for probabilities x, each log clamped at -100 as in
    PyTorch, so probabilities of exactly 0 and 1 give finite losses.

    PyTorch rejects x outside [0, 1] when it runs; a compiled graph cannot look at the values,
    so such inputs give nan instead.
    """
    reduction = _reduction(size_average, reduce, reduction)
    x = _t(input)
    y = _same_shape_target(x, target, "binary_cross_entropy")
    log_x = x.log().clip(min=-100.0)
    log_not_x = log1p_in_dtype(-x).clip(min=-100.0)
    loss = (y - 1.0) * log_not_x - y * log_x
    if weight is not None:
        loss = loss * _broadcast_weight(weight, x, "binary_cross_entropy")
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input: Any, target: Any, weight: Any = None,
                                     size_average: bool | None = None,
                                     reduce: bool | None = None, reduction: str = "mean",
                                     pos_weight: Any = None) -> Tensor:
    """binary_cross_entropy(sigmoid(x), y) without forming sigmoid(x): PyTorch's
    (1 - y) x - (1 + (pos_weight - 1) y) log_sigmoid(x), finite for logits of any size.

    Without pos_weight this is max(x, 0) - x y + log1p(exp(-|x|)).
    """
    reduction = _reduction(size_average, reduce, reduction)
    op = "binary_cross_entropy_with_logits"
    x = _t(input)
    y = _same_shape_target(x, target, op)
    log_sigmoid = _log_sigmoid(x)
    if pos_weight is not None:
        pw = _broadcast_weight(pos_weight, x, op, "pos_weight")
        log_sigmoid = log_sigmoid * ((pw - 1.0) * y + 1.0)
    loss = (1.0 - y) * x - log_sigmoid
    if weight is not None:
        loss = loss * _broadcast_weight(weight, x, op)
    return _reduce(loss, reduction)


# -- more activations ---------------------------------------------------------------------------


def _non_positive(x: Tensor) -> Tensor:
    """x where x <= 0 (keeping -0.0 and NaN), else 0: the argument of the exponential branch,
    kept from overflowing where the other branch is taken."""
    return where(x > 0.0, 0.0, x)


def _stable_softplus(z: Tensor) -> Tensor:
    """log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)): finite for every finite z."""
    return tracer.binary("maximum", z, 0.0) + log1p_in_dtype((-abs(z)).exp())


def softplus(input: Any, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as PyTorch)."""
    x = _t(input)
    z = x * beta if beta != 1.0 else x
    soft = _stable_softplus(z)
    return where(z > threshold, x, soft / beta if beta != 1.0 else soft)


def elu(input: Any, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x where x > 0, else alpha (exp(x) - 1)."""
    x = _t(input)
    return where(x > 0.0, x, expm1_in_dtype(_non_positive(x)) * alpha)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input: Any, inplace: bool = False) -> Tensor:
    """scale * elu(x, alpha) with the self-normalizing constants of Klambauer et al."""
    return elu(input, _SELU_ALPHA) * _SELU_SCALE


def celu(input: Any, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x where x > 0, else alpha (exp(x / alpha) - 1)."""
    if alpha == 0:
        raise tracer._fail("celu: alpha must not be 0 (ZeroDivisionError in PyTorch too)")
    x = _t(input)
    return where(x > 0.0, x, expm1_in_dtype(_non_positive(x) / alpha) * alpha)


def hardtanh(input: Any, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False
             ) -> Tensor:
    """x clamped to [min_val, max_val] (NaN and -0.0 stay), with PyTorch's gradient: 1
    strictly inside the bounds, 0 at and beyond them."""
    if min_val > max_val:
        raise tracer._fail(f"hardtanh: min_val {min_val} must not exceed max_val {max_val}")
    x = _t(input)
    out = where(x < min_val, min_val, where(x > max_val, max_val, x))
    for bound in (min_val, max_val):
        if np.isfinite(bound):  # x * 0 (+ bound) is x at the bound, without a gradient
            at_bound = x * 0.0 if bound == 0 else x * 0.0 + bound
            out = where(x == bound, at_bound, out)
    return out


def relu6(input: Any, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6)."""
    return hardtanh(input, 0.0, 6.0)


def hardsigmoid(input: Any, inplace: bool = False) -> Tensor:
    """relu6(x + 3) / 6."""
    return relu6(_t(input) + 3.0) / 6.0


def hardswish(input: Any, inplace: bool = False) -> Tensor:
    """x * relu6(x + 3) / 6."""
    x = _t(input)
    return x * relu6(x + 3.0) / 6.0


def mish(input: Any, inplace: bool = False) -> Tensor:
    """x * tanh(softplus(x)), with the softplus finite for every finite x."""
    x = _t(input)
    return x * _stable_softplus(x).tanh()


def logsigmoid(input: Any) -> Tensor:
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)), finite for every finite x."""
    return _log_sigmoid(_t(input))


def softsign(input: Any) -> Tensor:
    """x / (1 + |x|)."""
    x = _t(input)
    return x / (abs(x) + 1.0)


# -- normalization by statistics of the input ---------------------------------------------------


def normalize(input: Any, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None
              ) -> Tensor:
    """x / max(||x||_p, eps), the p-norm taken along `dim`."""
    if out is not None:
        raise tracer._fail("normalize(out=...) is not supported (traced code returns results)")
    x = _t(input)
    axis = _softmax_dim(x, dim, "normalize")
    if not p > 0:
        raise tracer._fail(f"normalize: p={p} is not supported (a positive p or inf)")
    magnitude = abs(x)
    peak = magnitude.max(axis=axis, keepdims=True)
    if p == np.inf:
        return x / tracer.binary("maximum", peak, float(eps))
    # x / max(||x||, eps) = (x / m) / max(||x / m||, eps / m) for the largest |x| = m, whose
    # powers neither overflow nor underflow (m = 1 for a zero or non-finite vector).
    m = where((peak > 0.0) & (peak < np.inf), peak, 1.0)
    scaled = x / m
    if p == 1:
        norm = abs(scaled).sum(axis=axis, keepdims=True)
    elif p == 2:
        norm = (scaled * scaled).sum(axis=axis, keepdims=True).sqrt()
    else:
        norm = (abs(scaled) ** float(p)).sum(axis=axis, keepdims=True) ** (1.0 / float(p))
    return scaled / tracer.binary("maximum", norm, float(eps) / m)


def _affine_channels(x: Tensor, weight: Any, bias: Any, op: str) -> Tensor:
    """x * weight[c] + bias[c] over the channel axis 1; either may be None."""
    channels = x.shape[1]
    shape = (1, channels) + (1,) * (x.ndim - 2)
    for name, value in (("weight", weight), ("bias", bias)):
        if value is None:
            continue
        param = tracer.as_tensor(value, x.dtype_)
        if param.shape != (channels,):
            raise tracer._fail(f"{op}: {name} has shape {list(param.shape)} but the input "
                               f"{x.value.type} has {channels} channels")
        x = x * param.reshape(shape) if name == "weight" else x + param.reshape(shape)
    return x


def _normalize_last(x: Tensor, eps: float) -> Tensor:
    """(x - mean) / sqrt(var + eps) over the last axis, with the biased variance.

    As in batch_norm, a row whose squares could overflow is normalized as x / max |x| with
    eps / max |x|^2 (the same value), its variance kept from 0 where that eps underflows.
    """
    scale: Any = 1.0
    if x.dtype_.is_float:
        limit = 1e15 if x.dtype_ is DType.F32 else 1e150
        peak = abs(x).max(axis=-1, keepdims=True)
        scale = where((peak > limit) & (peak < np.inf), 1.0 / peak, 1.0)
        x = x * scale
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True) + eps * scale * scale
    if x.dtype_.is_float:
        var = tracer.binary("maximum", var, float(np.finfo(x.dtype_.numpy).tiny))
    return centered / var.sqrt()


def group_norm(input: Any, num_groups: int, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Tensor:
    """Normalize each sample's channels in `num_groups` groups (over the group's channels and
    all spatial positions), then scale and shift per channel."""
    x = _t(input)
    if x.ndim < 2:
        raise tracer._fail(f"group_norm: expected an input of rank >= 2 (N, C, ...), got "
                           f"{x.value.type}")
    channels = x.shape[1]
    if num_groups <= 0 or channels % num_groups:
        raise tracer._fail(f"group_norm: {channels} channels of {x.value.type} do not split into "
                           f"num_groups={num_groups} equal groups")
    grouped = _normalize_last(x.reshape(x.shape[0], num_groups, -1), eps)
    return _affine_channels(grouped.reshape(x.shape), weight, bias, "group_norm")


def instance_norm(input: Any, running_mean: Any = None, running_var: Any = None,
                  weight: Any = None, bias: Any = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalize each sample's channels separately over their spatial positions.

    With use_input_stats=False the running statistics normalize instead (as batch_norm in
    eval mode). Updating running statistics from the input is not supported: a traced graph
    holds no state between calls.
    """
    x = _t(input)
    if x.ndim < 3:
        raise tracer._fail(f"instance_norm: expected an input of rank >= 3 (N, C, ...), got "
                           f"{x.value.type}")
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise tracer._fail("instance_norm: use_input_stats=False needs running_mean and "
                               "running_var")
        return batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    if running_mean is not None or running_var is not None:
        raise tracer._fail("instance_norm: updating running_mean / running_var from the input "
                           "is not supported; pass None (track_running_stats=False)")
    flat = _normalize_last(x.reshape(x.shape[0], x.shape[1], -1), eps)
    return _affine_channels(flat.reshape(x.shape), weight, bias, "instance_norm")


# -- more convolutions --------------------------------------------------------------------------


def _single(value: Any, name: str) -> int:
    if isinstance(value, (int, np.integer)):
        return int(value)
    items = tuple(int(v) for v in value)
    if len(items) != 1:
        raise tracer._fail(f"conv1d: {name} must be an int or a 1-tuple, got {value!r}")
    return items[0]


def conv1d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """1-D convolution of an NCL (or CL) input with an OIK weight: conv2d with a unit height."""
    x, w = tracer.binary_operands(input, weight)
    if w.ndim != 3 or x.ndim not in (2, 3):
        raise tracer._fail(f"conv1d: expected an NCL or CL input and an OIK weight, got "
                           f"{x.value.type} and {w.value.type}")
    pad = padding if isinstance(padding, str) else (0, _single(padding, "padding"))
    out = conv2d(x.expand_dims(-2), w.expand_dims(-2), bias, (1, _single(stride, "stride")),
                 pad, (1, _single(dilation, "dilation")), groups)
    return out.squeeze(-2)


def _spread_axis(x: Tensor, axis: int, stride: int) -> Tensor:
    """x with stride - 1 zeros between consecutive elements of `axis`: length (L - 1) s + 1."""
    if stride == 1:
        return x
    shape = x.shape
    cells = x.expand_dims(axis + 1)
    pads = [0] * (2 * cells.ndim)
    pads[cells.ndim + axis + 1] = stride - 1
    cells = x.ctx.emit("pad", cells, pads=tuple(pads), mode="constant", value=0.0)
    spread = cells.reshape(*shape[:axis], shape[axis] * stride, *shape[axis + 1:])
    index = (slice(None),) * axis + (slice(0, (shape[axis] - 1) * stride + 1),)
    return spread[index]


def conv_transpose2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                     dilation: Any = 1) -> Tensor:
    """Transposed 2-D convolution (the gradient of conv2d with respect to its input) of an
    NCHW (or CHW) input with a weight [C_in, C_out / groups, kH, kW].

    Computed as a stride-1 conv2d of the input spread by the stride (stride - 1 zeros between
    elements), padded by dilation (k - 1) - padding before and that plus output_padding after
    (cropped where negative), with the spatially flipped weight whose channel axes are swapped
    per group. Output extent: (H - 1) stride - 2 padding + dilation (k - 1) + output_padding + 1.
    """
    x, w = tracer.binary_operands(input, weight)
    if w.ndim != 4 or x.ndim not in (3, 4):
        raise tracer._fail(f"conv_transpose2d: expected an NCHW or CHW input and a weight "
                           f"[C_in, C_out/groups, kH, kW], got {x.value.type} and "
                           f"{w.value.type}")
    unbatched = x.ndim == 3
    if unbatched:
        x = x.expand_dims(0)
    strides, pads = _pair(stride, "stride"), _pair(padding, "padding")
    extra, dilations = _pair(output_padding, "output_padding"), _pair(dilation, "dilation")
    in_channels, group_out, kh, kw = w.shape
    if groups <= 0 or in_channels % groups or x.shape[1] != in_channels:
        raise tracer._fail(f"conv_transpose2d: input {x.value.type} and weight {w.value.type} "
                           f"do not fit groups={groups} (the input needs weight.shape[0] "
                           "channels, divisible by groups)")
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise tracer._fail(f"conv_transpose2d: stride {strides} and dilation {dilations} must "
                           f"be positive and padding {pads} non-negative")
    for axis in range(2):
        if not 0 <= extra[axis] < max(strides[axis], dilations[axis]):
            raise tracer._fail(f"conv_transpose2d: output_padding {extra} must be smaller than "
                               f"the stride {strides} or the dilation {dilations}")
    for axis in range(2):
        x = _spread_axis(x, 2 + axis, strides[axis])
    befores, afters = [], []
    for axis, k in enumerate((kh, kw)):
        reach = dilations[axis] * (k - 1)
        befores.append(reach - pads[axis])
        afters.append(reach - pads[axis] + extra[axis])
        if x.shape[2 + axis] + befores[-1] + afters[-1] < reach + 1:
            raise tracer._fail(f"conv_transpose2d: padding {pads} leaves no output for input "
                               f"{x.value.type} and kernel {(kh, kw)}")
    x = pad(x, [befores[1], afters[1], befores[0], afters[0]])
    split = w.reshape(groups, in_channels // groups, group_out, kh, kw)
    swapped = split.transpose((0, 2, 1, 3, 4)).reshape(groups * group_out, in_channels // groups,
                                                       kh, kw)
    flipped = swapped[:, :, ::-1, ::-1]
    out = conv2d(x, flipped, bias, 1, 0, dilations, groups)
    return out.squeeze(0) if unbatched else out


# -- rearrangement and resampling ---------------------------------------------------------------


def pixel_shuffle(input: Any, upscale_factor: int) -> Tensor:
    """[*, C r^2, H, W] -> [*, C, H r, W r]: each group of r^2 channels becomes an r x r block."""
    x, r = _t(input), int(upscale_factor)
    if x.ndim < 3 or r <= 0 or x.shape[-3] % (r * r):
        raise tracer._fail(f"pixel_shuffle: input {x.value.type} needs rank >= 3 and a channel "
                           f"count divisible by upscale_factor^2 = {r * r}")
    *lead, c, h, w = x.shape
    cells = x.reshape(*lead, c // (r * r), r, r, h, w)
    n = len(lead)
    cells = cells.transpose((*range(n), n, n + 3, n + 1, n + 4, n + 2))
    return cells.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input: Any, downscale_factor: int) -> Tensor:
    """[*, C, H r, W r] -> [*, C r^2, H, W], the inverse of pixel_shuffle."""
    x, r = _t(input), int(downscale_factor)
    if x.ndim < 3 or r <= 0 or x.shape[-2] % r or x.shape[-1] % r:
        raise tracer._fail(f"pixel_unshuffle: input {x.value.type} needs rank >= 3 and height "
                           f"and width divisible by downscale_factor = {r}")
    *lead, c, h, w = x.shape
    cells = x.reshape(*lead, c, h // r, r, w // r, r)
    n = len(lead)
    cells = cells.transpose((*range(n), n, n + 2, n + 4, n + 1, n + 3))
    return cells.reshape(*lead, c * r * r, h // r, w // r)


# mode -> (the input rank it needs (None: 3 to 5), resize mode); nearest modes gather instead.
_INTERPOLATE_MODES: dict[str, tuple[int | None, str]] = {
    "nearest": (None, "nearest"), "nearest-exact": (None, "nearest"), "linear": (3, "linear"),
    "bilinear": (4, "linear"), "bicubic": (4, "cubic"), "trilinear": (5, "linear")}


def _output_sizes(x: Tensor, size: Any, scale_factor: Any, recompute: bool | None
                  ) -> tuple[tuple[int, ...], tuple[float | None, ...]]:
    """The output's spatial sizes and the scales PyTorch's kernels use (None: input / output
    size)."""
    spatial = x.ndim - 2
    if (size is None) == (scale_factor is None):
        raise tracer._fail("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size,) * spatial
        if len(sizes) != spatial:
            raise tracer._fail(f"interpolate: size {size!r} needs {spatial} values for input "
                               f"{x.value.type}")
        return tuple(int(s) for s in sizes), (None,) * spatial
    factors = (scale_factor if isinstance(scale_factor, (tuple, list))
               else (scale_factor,) * spatial)
    if len(factors) != spatial or min(float(f) for f in factors) <= 0:
        raise tracer._fail(f"interpolate: scale_factor {scale_factor!r} must be a positive "
                           f"number or {spatial} of them")
    sizes = tuple(int(np.floor(float(n) * float(f)))
                  for n, f in zip(x.shape[2:], factors, strict=True))
    scales = (None,) * spatial if recompute else tuple(float(f) for f in factors)
    return sizes, scales


def _nearest_indices(size: int, out: int, scale: float | None, exact: bool) -> np.ndarray:
    """Source index of each output position, in PyTorch's float32 arithmetic. Its "nearest"
    copies when the size stays and halves the index when it doubles, whatever the scale."""
    if not exact and out in (size, 2 * size):
        return np.arange(out, dtype=np.int64) // (out // size)
    ratio = np.float32(1.0 / scale) if scale is not None else np.float32(size) / np.float32(out)
    positions = np.arange(out, dtype=np.float32) + (np.float32(0.5) if exact else np.float32(0))
    return np.minimum(np.floor(positions * ratio).astype(np.int64), size - 1)


def _check_interpolate(x: Tensor, mode: str, align_corners: bool | None, antialias: bool
                       ) -> None:
    if mode not in _INTERPOLATE_MODES:
        raise tracer._fail(f"interpolate: mode {mode!r} is not supported (one of "
                           f"{', '.join(_INTERPOLATE_MODES)})")
    rank = _INTERPOLATE_MODES[mode][0]
    if (rank is None and not 3 <= x.ndim <= 5) or (rank is not None and x.ndim != rank):
        wanted = "a 3-D, 4-D or 5-D" if rank is None else f"a {rank}-D"
        raise tracer._fail(f"interpolate: mode {mode!r} needs {wanted} (N, C, ...) input, got "
                           f"{x.value.type}")
    if antialias and mode not in ("bilinear", "bicubic"):
        raise tracer._fail(f"interpolate: antialias=True needs mode 'bilinear' or 'bicubic', "
                           f"not {mode!r}")
    if rank is None and align_corners is not None:
        raise tracer._fail(f"interpolate: align_corners can only be set with the interpolating "
                           f"modes (linear, bilinear, bicubic, trilinear), not {mode!r}")
    if rank is not None and not x.dtype_.is_float:
        raise tracer._fail(f"interpolate: {mode} needs a float input, got {x.value.type}")


def interpolate(input: Any, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """Resize the spatial axes of an (N, C, ...) input as PyTorch does: "nearest" and
    "nearest-exact" gather along each axis; "linear", "bilinear", "bicubic" and "trilinear"
    are one `resize` (half-pixel or align-corners coordinates, edge taps clamped; antialias
    widens the kernel when downsampling and drops the taps outside the input, with A = -0.5
    for bicubic, as PyTorch)."""
    x = _t(input)
    _check_interpolate(x, mode, align_corners, antialias)
    sizes, scales = _output_sizes(x, size, scale_factor, recompute_scale_factor)
    if min(sizes) <= 0 or 0 in x.shape[2:]:
        raise tracer._fail(f"interpolate: the input's spatial sizes {list(x.shape[2:])} and the "
                           f"output size {list(sizes)} must be positive")
    if _INTERPOLATE_MODES[mode][0] is None:
        for axis, (out, scale) in enumerate(zip(sizes, scales, strict=True)):
            if out == x.shape[2 + axis] and (mode == "nearest" or scale is None):
                continue
            index = _nearest_indices(x.shape[2 + axis], out, scale, mode == "nearest-exact")
            x = x.ctx.emit("gather", x, x.ctx.constant(index), axis=2 + axis)
        return x
    # PyTorch copies an axis whose size stays, whatever the scale factor; align_corners maps
    # corner to corner whatever the factor.
    factors = [1.0 if out == n else (out / n if scale is None or align_corners else scale)
               for n, out, scale in zip(x.shape[2:], sizes, scales, strict=True)]
    resize_mode = _INTERPOLATE_MODES[mode][1]
    return x.ctx.emit(
        "resize", x, sizes=(*x.shape[:2], *sizes), scales=(1.0, 1.0, *factors), mode=resize_mode,
        coordinate_mode="align_corners" if align_corners else "half_pixel",
        cubic_a=-0.5 if antialias else -0.75, antialias=bool(antialias),
        exclude_outside=bool(antialias))


# -- attention ----------------------------------------------------------------------------------


def scaled_dot_product_attention(query: Any, key: Any, value: Any, attn_mask: Any = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None, enable_gqa: bool = False
                                 ) -> Tensor:
    """softmax(q k^T * scale + mask) v over [..., L, E] queries and [..., S, E] keys.

    A boolean mask keeps the positions where it is True (the others get -inf); a float mask
    is added to the scores; is_causal keeps key positions at or before each query's. A query
    with every key masked out gives zeros, as PyTorch's.
    """
    q, k, v = _t(query), _t(key), _t(value)
    if dropout_p:
        raise tracer._fail(f"scaled_dot_product_attention: dropout_p={dropout_p} is not "
                           "supported (use dropout_p=0.0, or F.dropout on the weights)")
    if enable_gqa:
        raise tracer._fail("scaled_dot_product_attention: enable_gqa=True is not supported")
    if min(q.ndim, k.ndim, v.ndim) < 2 or q.shape[-1] != k.shape[-1] or \
            k.shape[-2] != v.shape[-2]:
        raise tracer._fail(f"scaled_dot_product_attention: query {q.value.type}, key "
                           f"{k.value.type} and value {v.value.type} must be [..., L, E], "
                           "[..., S, E] and [..., S, Ev]")
    if is_causal and attn_mask is not None:
        raise tracer._fail("scaled_dot_product_attention: give attn_mask or is_causal, not both")
    factor = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)
    key_t = k.transpose((*range(k.ndim - 2), k.ndim - 1, k.ndim - 2))
    scores = (q @ key_t) * factor
    length, source = q.shape[-2], k.shape[-2]
    if is_causal:  # every query keeps at least key 0
        causal = q.ctx.constant(np.tril(np.ones((length, source), dtype=bool)))
        return where(causal, scores, -np.inf).softmax(-1) @ v
    if attn_mask is None:
        return scores.softmax(-1) @ v
    mask = _t(attn_mask)
    if mask.dtype_ is DType.BOOL:
        scores = where(mask, scores, -np.inf)
    else:
        scores = scores + (mask if mask.dtype_ is scores.dtype_ else mask.astype(scores.dtype_))
    # A query whose keys are all masked out attends to nothing: PyTorch gives 0 there, not
    # the 0/0 of the softmax. Such rows are softmaxed as zeros and their weights zeroed.
    masked = scores.max(axis=-1, keepdims=True) == -np.inf
    weights = where(masked, 0.0, where(masked, 0.0, scores).softmax(-1))
    return weights @ v


# -- sampling and selection ---------------------------------------------------------------------

_GRID_MODES = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"}


def grid_sample(input: Any, grid: Any, mode: str = "bilinear", padding_mode: str = "zeros",
                align_corners: bool | None = None) -> Tensor:
    """Sample an (N, C, H, W) input at grid (N, H', W', 2) of normalized (x, y) coordinates in
    [-1, 1] (or (N, C, D, H, W) at (N, D', H', W', 3), bilinear and nearest), as PyTorch's
    grid_sample: "bilinear", "nearest" (half to even) or "bicubic" (A = -0.75), padding
    "zeros", "border" or "reflection"; align_corners defaults to False."""
    x, g = _t(input), _t(grid)
    if mode not in _GRID_MODES:
        raise tracer._fail(f"grid_sample: mode {mode!r} is not one of "
                           f"{', '.join(_GRID_MODES)}")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise tracer._fail(f"grid_sample: padding_mode {padding_mode!r} is not one of zeros, "
                           "border, reflection")
    if x.ndim not in (4, 5) or g.ndim != x.ndim or g.shape[-1] != x.ndim - 2 or \
            g.shape[0] != x.shape[0]:
        raise tracer._fail(f"grid_sample: expected input (N, C, H, W) with grid (N, H', W', 2), "
                           f"or (N, C, D, H, W) with (N, D', H', W', 3); got {x.value.type} "
                           f"and {g.value.type}")
    if mode == "bicubic" and x.ndim != 4:
        raise tracer._fail(f"grid_sample: bicubic needs a 4-D input, got {x.value.type}")
    if not x.dtype_.is_float:
        raise tracer._fail(f"grid_sample: needs a float input, got {x.value.type}")
    if g.dtype_ is not x.dtype_:
        g = g.astype(x.dtype_)
    return x.ctx.emit("grid_sample", x, g, mode=_GRID_MODES[mode], padding=padding_mode,
                      align_corners=bool(align_corners), convention="torch")


def topk(input: Any, k: int, dim: int = -1, largest: bool = True, sorted: bool = True
         ) -> tuple[Tensor, Tensor]:
    """torch.topk: the k largest (or smallest) values along `dim` and their int64 indices,
    ties to the lower index, NaN as the largest."""
    from ember.frontend.tensor import topk as tensor_topk

    return tensor_topk(input, k, dim, largest, sorted)
