"""Converters of ONNX neural-network operators: Gemm, MatMul, Conv, ConvTranspose, pooling,
normalization, Softmax.

Ember's spatial ops are 2-D (NCHW). 1-D convolutions and pools run as 2-D ones over a height of
1; 3-D ones fold the depth axis into the batch (convolution: one 2-D convolution per kernel
depth, summed) or into the channels (pooling: a 2-D pool, then a window over depth).
"""

from __future__ import annotations

import itertools

import numpy as np

from ember.frontend import tracer
from ember.frontend.tensor import Tensor
from ember.onnx.converters.base import (
    ByFunction,
    NodeContext,
    Outputs,
    converter,
    normalize_axis,
)
from ember.ops.neural import window_out

# -- matrix products ----------------------------------------------------------------------------


@converter("MatMul", versions=(1, 9, 13))
def matmul(node: NodeContext) -> Outputs:
    """`matmul` with numpy's broadcasting of batch dimensions."""
    return [node.emit("matmul", *tracer.binary_operands(node.tensor(0), node.tensor(1)))]


@converter("Gemm", versions=(1, 6, 7, 9, 11, 13))
def gemm(node: NodeContext) -> Outputs:
    """alpha * A' @ B' + beta * C, with A' and B' transposed as `transA` / `transB` say."""
    a, b = node.tensor(0), node.tensor(1)
    if node.attr("transA", 0):
        a = node.emit("transpose", a, perm=(1, 0))
    if node.attr("transB", 0):
        b = node.emit("transpose", b, perm=(1, 0))
    result = node.emit("matmul", a, b)
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    if alpha != 1.0:
        result = result * node.const(alpha, like=result)
    if node.has(2) and beta != 0.0:
        c = node.tensor(2)
        if beta != 1.0:
            c = c * node.const(beta, like=c)
        result = result + c
    return [result]


# -- window geometry ----------------------------------------------------------------------------


def spatial_pads(node: NodeContext, sizes: tuple[int, ...], kernel: tuple[int, ...],
                 strides: tuple[int, ...], dilations: tuple[int, ...]
                 ) -> tuple[list[int], list[int]]:
    """(befores, afters) per spatial axis from `pads` or `auto_pad`."""
    count = len(sizes)
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        befores, afters = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            befores.append(small if auto_pad == "SAME_UPPER" else large)
            afters.append(large if auto_pad == "SAME_UPPER" else small)
        return befores, afters
    if auto_pad == "VALID":
        return [0] * count, [0] * count
    if auto_pad != "NOTSET":
        raise node.error(f"auto_pad {auto_pad!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, "
                         "VALID")
    pads = list(node.attr("pads", [0] * (2 * count)))
    return pads[:count], pads[count:]


def _geometry(node: NodeContext, x: Tensor, kernel: tuple[int, ...]) -> dict[str, list[int]]:
    """Strides, dilations and pads of a spatial node, one value per spatial axis."""
    count = x.ndim - 2
    if count not in (1, 2, 3):
        raise node.error(f"expected an input of rank 3, 4 or 5 (N, C, spatial...), got shape "
                         f"{list(x.shape)}")
    strides = tuple(node.attr("strides", [1] * count))
    dilations = tuple(node.attr("dilations", [1] * count))
    befores, afters = spatial_pads(node, x.shape[2:], kernel, strides, dilations)
    return {"strides": list(strides), "dilations": list(dilations), "befores": befores,
            "afters": afters}


def _take(node: NodeContext, x: Tensor, axis: int, start: int, count: int, step: int) -> Tensor:
    """`count` entries of `axis` from `start`, `step` apart."""
    starts, stops, steps = [0] * x.ndim, list(x.shape), [1] * x.ndim
    starts[axis], stops[axis], steps[axis] = start, start + (count - 1) * step + 1, step
    return node.emit("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


def pad_axis(node: NodeContext, x: Tensor, axis: int, before: int, after: int,
             value: float = 0.0) -> Tensor:
    """Pad (or, for negative amounts, crop) one axis."""
    if before < 0 or after < 0:
        x = _take(node, x, axis, max(-before, 0), x.shape[axis] - max(-before, 0)
                  - max(-after, 0), 1)
        before, after = max(before, 0), max(after, 0)
    if not before and not after:
        return x
    pads = [0] * (2 * x.ndim)
    pads[axis], pads[x.ndim + axis] = before, after
    return node.emit("pad", x, pads=tuple(pads), mode="constant", value=value)


# -- convolution --------------------------------------------------------------------------------


def _conv2d(node: NodeContext, x: Tensor, w: Tensor, bias: Tensor | None,
            geometry: dict[str, list[int]], groups: int) -> Tensor:
    g = geometry
    padding = (g["befores"][0], g["befores"][1], g["afters"][0], g["afters"][1])
    operands = [x, w] if bias is None else [x, w, bias]
    return node.emit("conv2d", *operands, stride=tuple(g["strides"]), padding=padding,
                     dilation=tuple(g["dilations"]), groups=groups)


def _as_2d(geometry: dict[str, list[int]], fill: tuple[int, int, int, int]
           ) -> dict[str, list[int]]:
    """A 1-D geometry as a 2-D one over a height of 1 (stride, dilation, before, after)."""
    keys = ("strides", "dilations", "befores", "afters")
    return {key: [extra, *geometry[key]] for key, extra in zip(keys, fill, strict=True)}


def _conv3d(node: NodeContext, x: Tensor, w: Tensor, bias: Tensor | None,
            geometry: dict[str, list[int]], groups: int) -> Tensor:
    """Sum over kernel depths of 2-D convolutions of depth-strided slices (depth in batch)."""
    g = geometry
    x = pad_axis(node, x, 2, g["befores"][0], g["afters"][0])
    batch, channels, depth = x.shape[:3]
    kernel_depth, stride, dilation = w.shape[2], g["strides"][0], g["dilations"][0]
    out_depth = window_out(depth, kernel_depth, stride, 0, 0, dilation)
    plane = {key: values[1:] for key, values in g.items()}
    total = None
    for k in range(kernel_depth):
        part = _take(node, x, 2, k * dilation, out_depth, stride)  # N, C, D', H, W
        part = node.emit("transpose", part, perm=(0, 2, 1, 3, 4))
        part = part.reshape(batch * out_depth, channels, *x.shape[3:])
        out = _conv2d(node, part, w[:, :, k], None, plane, groups)
        total = out if total is None else total + out
    assert total is not None
    total = total.reshape(batch, out_depth, *total.shape[1:])
    total = node.emit("transpose", total, perm=(0, 2, 1, 3, 4))
    return total if bias is None else total + bias.reshape(-1, 1, 1, 1)


@converter("Conv", versions=(1, 11, 22))
def conv(node: NodeContext) -> Outputs:
    """1-D, 2-D and 3-D convolution with groups, dilation and auto_pad."""
    x, w = node.tensor(0), node.tensor(1)
    bias = node.optional_tensor(2)
    kernel = tuple(node.attr("kernel_shape", w.shape[2:]))
    geometry = _geometry(node, x, kernel)
    groups = int(node.attr("group", 1))
    if x.ndim == 4:
        return [_conv2d(node, x, w, bias, geometry, groups)]
    if x.ndim == 3:
        flat = _conv2d(node, x.expand_dims(2), w.expand_dims(2), bias,
                       _as_2d(geometry, (1, 1, 0, 0)), groups)
        return [flat.squeeze(axis=2)]
    return [_conv3d(node, x, w, bias, geometry, groups)]


def _dilate(node: NodeContext, x: Tensor, strides: list[int]) -> Tensor:
    """Insert `stride - 1` zeros between neighbours along H and W (N, C, H, W input)."""
    if strides == [1, 1]:
        return x
    n, c, h, w = x.shape
    spread = x.reshape(n, c, h, 1, w, 1)
    pads = (0, 0, 0, 0, 0, 0, 0, 0, 0, strides[0] - 1, 0, strides[1] - 1)
    spread = node.emit("pad", spread, pads=pads, mode="constant", value=0.0)
    spread = spread.reshape(n, c, h * strides[0], w * strides[1])
    return node.emit("slice", spread, starts=(0, 0, 0, 0),
                     stops=(n, c, (h - 1) * strides[0] + 1, (w - 1) * strides[1] + 1),
                     steps=(1, 1, 1, 1))


def _transpose_pads(node: NodeContext, sizes: tuple[int, ...], kernel: tuple[int, ...],
                    strides: list[int], dilations: list[int], extra: list[int]
                    ) -> tuple[list[int], list[int]]:
    """ConvTranspose's (befores, afters): from `pads`, or from `output_shape` / auto_pad."""
    count = len(sizes)
    output_shape = node.attr("output_shape")
    auto_pad = node.attr("auto_pad", "NOTSET")
    if output_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [size * s for size, s in zip(sizes, strides, strict=True)]
    if output_shape is None:
        if auto_pad == "VALID":
            return [0] * count, [0] * count
        pads = list(node.attr("pads", [0] * (2 * count)))
        return pads[:count], pads[count:]
    output_shape = list(output_shape)[-count:]
    befores, afters = [], []
    for i in range(count):
        full = strides[i] * (sizes[i] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1
        total = full - output_shape[i]
        small, large = total // 2, total - total // 2
        befores.append(small if auto_pad == "SAME_UPPER" else large)
        afters.append(large if auto_pad == "SAME_UPPER" else small)
    return befores, afters


def _conv_transpose2d(node: NodeContext, x: Tensor, w: Tensor, bias: Tensor | None,
                      attrs: dict[str, list[int]], groups: int) -> Tensor:
    """A transposed convolution as a convolution of the zero-dilated input with the flipped,
    regrouped kernel."""
    kernel = w.shape[2:]
    x = _dilate(node, x, attrs["strides"])
    for axis in range(2):
        reach = attrs["dilations"][axis] * (kernel[axis] - 1)
        x = pad_axis(node, x, 2 + axis, reach - attrs["befores"][axis],
                     reach - attrs["afters"][axis] + attrs["extra"][axis])
    flipped = node.emit("slice", w, starts=(0, 0, kernel[0] - 1, kernel[1] - 1),
                        stops=(w.shape[0], w.shape[1], -1, -1), steps=(1, 1, -1, -1))
    # [C_in, C_out/g, kh, kw] -> [g, C_in/g, C_out/g, kh, kw] -> [C_out, C_in/g, kh, kw]
    c_in, c_out_group = w.shape[:2]
    regrouped = flipped.reshape(groups, c_in // groups, c_out_group, *kernel)
    regrouped = node.emit("transpose", regrouped, perm=(0, 2, 1, 3, 4))
    regrouped = regrouped.reshape(groups * c_out_group, c_in // groups, *kernel)
    plane = {"strides": [1, 1], "dilations": attrs["dilations"], "befores": [0, 0],
             "afters": [0, 0]}
    return _conv2d(node, x, regrouped, bias, plane, groups)


@converter("ConvTranspose", versions=(1, 11, 22))
def conv_transpose(node: NodeContext) -> Outputs:
    """1-D and 2-D transposed convolution (pads, output_padding, output_shape, groups)."""
    x, w = node.tensor(0), node.tensor(1)
    bias = node.optional_tensor(2)
    if x.ndim not in (3, 4):
        raise node.error(f"only 1-D and 2-D transposed convolutions are supported, got input "
                         f"shape {list(x.shape)}")
    count = x.ndim - 2
    kernel = tuple(node.attr("kernel_shape", w.shape[2:]))
    strides = list(node.attr("strides", [1] * count))
    dilations = list(node.attr("dilations", [1] * count))
    extra = list(node.attr("output_padding", [0] * count))
    befores, afters = _transpose_pads(node, x.shape[2:], kernel, strides, dilations, extra)
    attrs = {"strides": strides, "dilations": dilations, "befores": befores, "afters": afters,
             "extra": extra}
    groups = int(node.attr("group", 1))
    if count == 2:
        return [_conv_transpose2d(node, x, w, bias, attrs, groups)]
    flat = {key: [1 if key in ("strides", "dilations") else 0, *v] for key, v in attrs.items()}
    out = _conv_transpose2d(node, x.expand_dims(2), w.expand_dims(2), bias, flat, groups)
    return [out.squeeze(axis=2)]


# -- pooling ------------------------------------------------------------------------------------


def _pool2d(node: NodeContext, op: str, x: Tensor, kernel: tuple[int, ...],
            g: dict[str, list[int]]) -> Tensor:
    padding = (g["befores"][0], g["befores"][1], g["afters"][0], g["afters"][1])
    attrs = {"kernel": kernel, "stride": tuple(g["strides"]), "padding": padding,
             "ceil_mode": bool(node.attr("ceil_mode", 0))}
    if op == "max_pool2d":
        attrs["dilation"] = tuple(g["dilations"])
    else:
        attrs["count_include_pad"] = bool(node.attr("count_include_pad", 0))
    return node.emit(op, x, **attrs)


def _depth_divisors(node: NodeContext, depth: int, out: int, kernel: int, stride: int,
                    before: int, after: int) -> np.ndarray:
    """Per-depth window sizes of an average pool (PyTorch's rule, as in `avg_pool2d`)."""
    starts = np.arange(out) * stride - before
    ends = np.minimum(starts + kernel, depth + after)
    if not node.attr("count_include_pad", 0):
        ends, starts = np.minimum(ends, depth), np.maximum(starts, 0)
    return (ends - starts).astype(np.float64)


def _pool3d(node: NodeContext, op: str, x: Tensor, kernel: tuple[int, ...],
            g: dict[str, list[int]]) -> Tensor:
    """A 2-D pool over (H, W) with depth folded into channels, then a window over depth."""
    n, c, depth = x.shape[:3]
    plane = {key: values[1:] for key, values in g.items()}
    flat = _pool2d(node, op, x.reshape(n, c * depth, *x.shape[3:]), kernel[1:], plane)
    y = flat.reshape(n, c, depth, *flat.shape[2:])
    stride, dilation = g["strides"][0], g["dilations"][0]
    out = window_out(depth, kernel[0], stride, g["befores"][0], g["afters"][0], dilation,
                     bool(node.attr("ceil_mode", 0)))
    reach = (out - 1) * stride + dilation * (kernel[0] - 1) + 1
    after = reach - depth - g["befores"][0]  # ceil_mode may need more than `pads`
    fill = float(np.finfo(y.dtype).min) if op == "max_pool2d" else 0.0
    y = pad_axis(node, y, 2, g["befores"][0], after, fill)
    parts = [_take(node, y, 2, k * dilation, out, stride) for k in range(kernel[0])]
    combine = "maximum" if op == "max_pool2d" else "add"
    total = parts[0]
    for part in parts[1:]:
        total = node.emit(combine, total, part)
    if op == "max_pool2d":
        return total
    divisors = _depth_divisors(node, depth, out, kernel[0], stride, g["befores"][0],
                               g["afters"][0])
    return total / node.const(divisors.reshape(-1, 1, 1), like=total)


def _window_sum(node: NodeContext, x: Tensor | np.ndarray, kernel: tuple[int, ...],
                g: dict[str, list[int]], combine: str, fill: float,
                out: list[int]) -> Tensor | np.ndarray:
    """Combine (add or maximum) every kernel tap's strided slice of x padded with `fill`: a
    window op over any number of spatial axes, dilation and padding. A numpy x (a mask of
    counts) is combined with numpy."""
    spatial = range(2, 2 + len(kernel))
    for i, axis in enumerate(spatial):
        reach = (out[i] - 1) * g["strides"][i] + g["dilations"][i] * (kernel[i] - 1) + 1
        after = max(reach - x.shape[axis] - g["befores"][i], 0)  # ceil_mode reaches further
        if isinstance(x, np.ndarray):
            widths = [(0, 0)] * x.ndim
            widths[axis] = (g["befores"][i], after)
            x = np.pad(x, widths, constant_values=fill)
        else:
            x = pad_axis(node, x, axis, g["befores"][i], after, fill)
    total: Tensor | np.ndarray | None = None
    for taps in itertools.product(*(range(k) for k in kernel)):
        index = [slice(None)] * x.ndim
        for i, (axis, tap) in enumerate(zip(spatial, taps, strict=True)):
            start = tap * g["dilations"][i]
            index[axis] = slice(start, start + (out[i] - 1) * g["strides"][i] + 1,
                                g["strides"][i])
        if isinstance(x, np.ndarray):
            part = x[tuple(index)]
            total = part if total is None else total + part
            continue
        starts = tuple(0 if s.start is None else s.start for s in index)
        stops = tuple(x.shape[a] if s.stop is None else s.stop for a, s in enumerate(index))
        steps = tuple(1 if s.step is None else s.step for s in index)
        part = node.emit("slice", x, starts=starts, stops=stops, steps=steps)
        total = part if total is None else node.emit(combine, total, part)
    assert total is not None
    return total


def _pool_by_slices(node: NodeContext, op: str, x: Tensor, kernel: tuple[int, ...],
                    g: dict[str, list[int]], include_pad: bool) -> Tensor:
    """A max, average or Lp (sum) pool as a window of slices: for the forms the pool ops do
    not take (average pooling with dilations, pads beyond half the kernel, LpPool)."""
    ceil_mode = bool(node.attr("ceil_mode", 0))
    out = [window_out(size, k, s, before, after, d, ceil_mode) for size, k, s, before, after, d
           in zip(x.shape[2:], kernel, g["strides"], g["befores"], g["afters"],
                  g["dilations"], strict=True)]
    if op == "max":
        return _window_sum(node, x, kernel, g, "maximum", float(np.finfo(x.dtype).min), out)
    total = _window_sum(node, x, kernel, g, "add", 0.0, out)
    if op == "sum":
        return total
    # Divisors: the taps inside the input, or inside the padded extent `pads` gives.
    ones = np.ones((1, 1, *x.shape[2:]))
    if include_pad:
        widths = [(0, 0), (0, 0), *zip(g["befores"], g["afters"], strict=True)]
        ones = np.pad(ones, widths, constant_values=1.0)
        shifted = {**g, "befores": [0] * len(kernel)}
        counts = _window_sum(node, ones, kernel, shifted, "add", 0.0, out)
    else:
        counts = _window_sum(node, ones, kernel, g, "add", 0.0, out)
    return total / node.const(np.maximum(counts, 1.0).reshape(counts.shape[2:]), like=total)


def _fits_pool_op(kernel: tuple[int, ...], g: dict[str, list[int]], op: str) -> bool:
    """Whether Ember's pool ops take this geometry (pads at most half the kernel; no
    dilations for average pooling)."""
    if op == "avg_pool2d" and any(d != 1 for d in g["dilations"]):
        return False
    return all(max(before, after) <= k // 2 for k, before, after
               in zip(kernel, g["befores"], g["afters"], strict=True))


def _pool(node: NodeContext, op: str) -> Tensor:
    x = node.tensor(0)
    kernel = tuple(node.attr("kernel_shape"))
    g = _geometry(node, x, kernel)
    if node.output_used(1):
        raise node.error("the Indices output is not supported")
    if not _fits_pool_op(kernel, g, op):
        include_pad = bool(node.attr("count_include_pad", 0))
        return _pool_by_slices(node, "max" if op == "max_pool2d" else "avg", x, kernel, g,
                               include_pad)
    if x.ndim == 4:
        return _pool2d(node, op, x, kernel, g)
    if x.ndim == 3:
        flat = _pool2d(node, op, x.expand_dims(2), (1, *kernel), _as_2d(g, (1, 1, 0, 0)))
        return flat.squeeze(axis=2)
    return _pool3d(node, op, x, kernel, g)


@converter("MaxPool", versions=(1, 8, 10, 11, 12, 22))
def max_pool(node: NodeContext) -> Outputs:
    """1-D, 2-D and 3-D max pooling (pads, auto_pad, dilations, ceil_mode)."""
    return [_pool(node, "max_pool2d")]


@converter("AveragePool", versions=(1, 7, 10, 11, 19, 22))
def average_pool(node: NodeContext) -> Outputs:
    """1-D, 2-D and 3-D average pooling (pads, auto_pad, ceil_mode, count_include_pad)."""
    return [_pool(node, "avg_pool2d")]


@converter("LpPool", versions=(2, 11, 18, 22))
def lp_pool(node: NodeContext) -> Outputs:
    """(sum of |x| ** p over each window, zero padding) ** (1 / p), as a window of slices."""
    x = node.tensor(0)
    kernel = tuple(node.attr("kernel_shape"))
    g = _geometry(node, x, kernel)
    p = int(node.attr("p", 2))
    if p < 1:
        raise node.error(f"p = {p} must be positive")
    magnitude = x.abs()
    powered = magnitude if p == 1 else node.emit("pow", magnitude, node.const(p, like=x))
    total = _pool_by_slices(node, "sum", powered, kernel, g, include_pad=True)
    if p == 1:
        return [total]
    return [node.emit("pow", total, node.const(1.0 / p, like=x))]


@converter("GlobalAveragePool", versions=(1, 22))
def global_average_pool(node: NodeContext) -> Outputs:
    """Mean over every spatial axis, kept as size 1."""
    x = node.tensor(0)
    return [node.emit("mean", x, axes=tuple(range(2, x.ndim)), keepdims=True)]


@converter("GlobalMaxPool", versions=(1, 22))
def global_max_pool(node: NodeContext) -> Outputs:
    """Max over every spatial axis, kept as size 1."""
    x = node.tensor(0)
    return [node.emit("max", x, axes=tuple(range(2, x.ndim)), keepdims=True)]


# -- normalization and softmax ------------------------------------------------------------------


@converter("BatchNormalization", versions=(1, 6, 7, 9, 14, 15))
def batch_normalization(node: NodeContext) -> Outputs:
    """Inference batch normalization with the running statistics; from version 14, training
    mode with the batch's statistics and the updated running ones."""
    if node.opset >= 14 and node.attr("training_mode", 0):
        return _batch_norm_training(node)
    if node.attr("training_mode", 0) or any(node.output_used(i) for i in range(1, 5)):
        raise node.error("training mode (batch statistics outputs) is not supported before "
                         "version 14")
    if not node.attr("spatial", 1):
        raise node.error("spatial=0 is not supported")
    x = node.tensor(0)
    scale, bias, mean, var = (node.tensor(i).astype(x.dtype_) for i in range(1, 5))
    return [node.emit("batch_norm", x, mean, var, scale, bias,
                      eps=float(node.attr("epsilon", 1e-5)))]


def _batch_norm_training(node: NodeContext) -> Outputs:
    """Normalize by the batch's mean and (population) variance over every axis but 1; the
    running statistics move toward them by 1 - momentum."""
    x = node.tensor(0)
    scale, bias, mean, var = (node.tensor(i).astype(x.dtype_) for i in range(1, 5))
    axes = tuple(a for a in range(x.ndim) if a != 1)
    shape = (-1,) + (1,) * (x.ndim - 2)
    batch_mean = node.emit("mean", x, axes=axes, keepdims=True)
    centered = x - batch_mean
    batch_var = node.emit("mean", centered * centered, axes=axes, keepdims=True)
    eps = node.const(float(node.attr("epsilon", 1e-5)), like=x)
    y = centered / (batch_var + eps).sqrt() * scale.reshape(*shape) + bias.reshape(*shape)
    momentum = float(node.attr("momentum", 0.9))
    keep, take = node.const(momentum, like=x), node.const(1.0 - momentum, like=x)
    running_mean = mean * keep + batch_mean.reshape(-1) * take
    running_var = var * keep + batch_var.reshape(-1) * take
    return [y, running_mean, running_var]


@converter("LRN", versions=(1, 13))
def lrn(node: NodeContext) -> Outputs:
    """x / (bias + alpha / size * sum of squares over `size` neighbouring channels) ** beta,
    the window a sum of shifted slices of the zero-padded squares."""
    x = node.tensor(0)
    if x.ndim < 3:
        raise node.error(f"input of shape {list(x.shape)}; LRN takes (N, C, D1, ...)")
    size = int(node.attr("size"))
    if size < 1:
        raise node.error(f"size {size} must be positive")
    alpha, beta = float(node.attr("alpha", 1e-4)), float(node.attr("beta", 0.75))
    bias = float(node.attr("bias", 1.0))
    channels = x.shape[1]
    squares = pad_axis(node, x * x, 1, (size - 1) // 2, size // 2)
    total = None
    for start in range(size):
        part = _take(node, squares, 1, start, channels, 1)
        total = part if total is None else total + part
    assert total is not None
    base = total * node.const(alpha / size, like=x) + node.const(bias, like=x)
    return [x / node.emit("pow", base, node.const(beta, like=x))]


@converter("InstanceNormalization", versions=(1, 6, 22))
def instance_normalization(node: NodeContext) -> Outputs:
    """(x - mean) / sqrt(var + eps) * scale + bias over each sample's spatial axes."""
    x, scale, bias = node.tensor(0), node.tensor(1), node.tensor(2)
    axes = tuple(range(2, x.ndim))
    centered = x - node.emit("mean", x, axes=axes, keepdims=True)
    var = node.emit("mean", centered * centered, axes=axes, keepdims=True)
    eps = node.const(float(node.attr("epsilon", 1e-5)), like=x)
    shape = (-1,) + (1,) * (x.ndim - 2)
    return [centered / (var + eps).sqrt() * scale.reshape(*shape) + bias.reshape(*shape)]


@converter("LayerNormalization", versions=(17,))
def layer_normalization(node: NodeContext) -> Outputs:
    """`layer_norm` over the axes from `axis` on (with the Mean / InvStdDev outputs: the ONNX
    function body)."""
    if node.output_used(1) or node.output_used(2):
        raise ByFunction
    x = node.tensor(0)
    axis = normalize_axis(node.attr("axis", -1), x.ndim, node)
    normalized = x.shape[axis:]
    scale = node.tensor(1)
    bias = node.tensor(2) if node.has(2) else node.const(np.zeros(normalized), like=x)
    scale, bias = (t if t.shape == normalized else t.broadcast_to(normalized)
                   for t in (scale, bias))
    return [node.emit("layer_norm", x, scale, bias, eps=float(node.attr("epsilon", 1e-5)))]


def _softmax(node: NodeContext, op: str) -> Tensor:
    x = node.tensor(0)
    if node.opset >= 13:
        return node.emit(op, x, axis=normalize_axis(node.attr("axis", -1), x.ndim, node))
    # Before opset 13: flatten to 2-D at `axis`, normalize each row, restore the shape.
    axis = normalize_axis(node.attr("axis", 1), x.ndim, node)
    if axis == x.ndim - 1:
        return node.emit(op, x, axis=axis)
    rows = int(np.prod(x.shape[:axis]))
    flat = x.reshape(rows, int(np.prod(x.shape[axis:])))
    return node.emit(op, flat, axis=1).reshape(*x.shape)


@converter("Softmax", versions=(1, 11, 13))
def softmax(node: NodeContext) -> Outputs:
    """`softmax` (before opset 13 over the flattened axes from `axis` on)."""
    return [_softmax(node, "softmax")]


@converter("LogSoftmax", versions=(1, 11, 13))
def log_softmax(node: NodeContext) -> Outputs:
    """`log_softmax` (before opset 13 over the flattened axes from `axis` on)."""
    return [_softmax(node, "log_softmax")]


@converter("Hardmax", versions=(1, 11, 13))
def hardmax(node: NodeContext) -> Outputs:
    """1 at the first maximum along `axis` (before version 13: of the flattened axes from
    `axis` on), 0 elsewhere: `argmax` compared with a known range."""
    x = node.tensor(0)
    if node.opset >= 13:
        axis = normalize_axis(node.attr("axis", -1), x.ndim, node)
        flat = x
    else:
        axis = normalize_axis(node.attr("axis", 1), x.ndim, node)
        flat = x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))
        axis = 1
    if flat.size == 0:
        return [x]
    first = node.emit("argmax", flat, axis=axis, keepdims=True)
    shape = [1] * flat.ndim
    shape[axis] = flat.shape[axis]
    positions = node.const(np.arange(flat.shape[axis]).reshape(shape), like=first)
    ones = node.emit("eq", first, positions).astype(x.dtype_)
    return [ones.reshape(*x.shape)]


@converter("LpNormalization", versions=(1, 22))
def lp_normalization(node: NodeContext) -> Outputs:
    """x / ||x||_p along `axis` (p 1 or 2), 0 where the norm is 0."""
    x = node.tensor(0)
    axis = normalize_axis(node.attr("axis", -1), x.ndim, node)
    p = int(node.attr("p", 2))
    if p not in (1, 2):
        raise node.error(f"p = {p}; the norm is L1 or L2")
    if p == 1:
        norm = node.emit("sum", x.abs(), axes=(axis,), keepdims=True)
    else:
        norm = node.emit("sum", x * x, axes=(axis,), keepdims=True).sqrt()
    zero = node.const(0, like=x)
    return [tracer.emit("where", node.emit("eq", norm, zero), zero, x / norm)]


# -- einsum --------------------------------------------------------------------------------------


def _einsum_terms(node: NodeContext, equation: str, count: int) -> tuple[list[str], str]:
    equation = equation.replace(" ", "")
    if "." in equation:
        raise node.error(f"equation {equation!r}: ellipses are not supported")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != count or any(len(set(t)) != len(t) for t in terms):
        raise node.error(f"equation {equation!r}: expected {count} terms without repeated "
                         "letters (diagonals are not supported)")
    if not arrow:  # implicit output: the letters used once, sorted
        letters = "".join(terms)
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    return terms, output


def _sum_out(node: NodeContext, x: Tensor, term: str, keep: str) -> tuple[Tensor, str]:
    """Sum the letters of `term` that are not in `keep`."""
    axes = tuple(i for i, c in enumerate(term) if c not in keep)
    if not axes:
        return x, term
    return node.emit("sum", x, axes=axes, keepdims=False), "".join(c for c in term if c in keep)


def _permute(node: NodeContext, x: Tensor, term: str, order: str) -> Tensor:
    perm = tuple(term.index(c) for c in order)
    return x if perm == tuple(range(len(perm))) else node.emit("transpose", x, perm=perm)


@converter("Einsum", versions=(12, 28))
def einsum(node: NodeContext) -> Outputs:
    """One or two operands without ellipses or diagonals: sums, a transpose and a batched
    matmul over (shared, left-only, contracted, right-only) letters."""
    terms, output = _einsum_terms(node, node.attr("equation"), node.input_count)
    if len(terms) == 1:
        x, term = _sum_out(node, node.tensor(0), terms[0], output)
        return [_permute(node, x, term, output)]
    if len(terms) != 2:
        raise node.error("only one or two operands are supported")
    (a, left), (b, right) = (_sum_out(node, node.tensor(i), terms[i], output + terms[1 - i])
                             for i in range(2))
    sizes = {c: d for term, t in ((left, a), (right, b)) for c, d in zip(term, t.shape,
                                                                         strict=True)}
    batch = "".join(c for c in left if c in right and c in output)
    contracted = "".join(c for c in left if c in right and c not in output)
    left_only = "".join(c for c in left if c not in right)
    right_only = "".join(c for c in right if c not in left)

    def size(letters: str) -> int:
        return int(np.prod([sizes[c] for c in letters]))

    a = _permute(node, a, left, batch + left_only + contracted)
    a = a.reshape(size(batch), size(left_only), size(contracted))
    b = _permute(node, b, right, batch + contracted + right_only)
    b = b.reshape(size(batch), size(contracted), size(right_only))
    product = node.emit("matmul", *tracer.binary_operands(a, b))
    product = product.reshape(*(sizes[c] for c in batch + left_only + right_only))
    return [_permute(node, product, batch + left_only + right_only, output)]
