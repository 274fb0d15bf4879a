"""Gradient rules of matmul, normalization, softmax and dropout.

Normalization and softmax backward are decompositions into reductions and elementwise ops
(layer norm recomputes its mean and reciprocal deviation), which the fusion pass merges into
the same few kernels as the forward. Dropout's mask is a hash of (seed, element index), so its
backward is dropout of the cotangent with the same seed: no mask is stored.
"""

from __future__ import annotations

from ember.autodiff.engine import GradientError, attrs_of, scalar, sum_to
from ember.ir.graph import GraphBuilder, Node, Value
from ember.ir.ops import set_rule

Cotangents = tuple[Value | None, ...]


def _swap_last(b: GraphBuilder, value: Value) -> Value:
    perm = (*range(value.ndim - 2), value.ndim - 1, value.ndim - 2)
    return b.transpose(value, perm=perm)


def _matmul(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    a, w = node.inputs
    # numpy's 1-D rules: a vector on the left is a row, on the right a column.
    a2 = b.reshape(a, shape=(1, a.shape[0])) if a.ndim == 1 else a
    w2 = b.reshape(w, shape=(w.shape[0], 1)) if w.ndim == 1 else w
    out = _matmul_shape(a2.shape, w2.shape)
    g2 = g if g.shape == out else b.reshape(g, shape=out)
    ga = sum_to(b, b.matmul(g2, _swap_last(b, w2)), a2.shape)
    if w.ndim == 2 and a.ndim == 2 and _is_swap(b, w):
        # w = W.T (a linear layer's x @ W.T): W's gradient is transpose(gw) = g.T @ a, so
        # give gw as transpose(g.T @ a): simplify cancels the two transposes, and only the
        # small g is transposed (not a, and not the weight-sized product).
        gw = b.transpose(b.matmul(_swap_last(b, g2), a2), perm=(1, 0))
    else:
        gw = sum_to(b, b.matmul(_swap_last(b, a2), g2), w2.shape)
    if a.ndim == 1:
        ga = b.reshape(ga, shape=a.shape)
    if w.ndim == 1:
        gw = b.reshape(gw, shape=w.shape)
    return ga, gw


def _is_swap(b: GraphBuilder, value: Value) -> bool:
    """True when `value` is a 2-D transpose made by an earlier node of `b`."""
    for node in reversed(b.nodes):
        if value in node.outputs:
            return node.op == "transpose" and tuple(node.attrs["perm"]) == (1, 0)
    return False


def _matmul_shape(a: tuple[int, ...], w: tuple[int, ...]) -> tuple[int, ...]:
    """Result shape of a matmul of two operands of rank >= 2 (batch axes broadcast)."""
    from ember.ir.ops import broadcast_shapes

    return (*broadcast_shapes(a[:-2], w[:-2]), a[-2], w[-1])


def _channel_shape(x: Value) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _batch_norm(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    # y = (x - mean) * weight / sqrt(var + eps) + bias, per channel (axis 1).
    (g,) = gys
    x, mean, var, weight, _ = node.inputs
    eps = attrs_of(node)["eps"]
    shape = _channel_shape(x)
    others = tuple(a for a in range(x.ndim) if a != 1)
    inv = b.rsqrt(b.add(var, scalar(b, eps, var.dtype)))
    scale = b.mul(weight, inv)
    centered = b.sub(x, b.reshape(mean, shape=shape))
    g_sum = b.sum(g, axes=others)
    g_centered = b.sum(b.mul(g, centered), axes=others)
    gx = b.mul(g, b.reshape(scale, shape=shape))
    gmean = b.neg(b.mul(g_sum, scale))
    gvar = b.mul(b.mul(g_centered, weight),
                 b.mul(scalar(b, -0.5, x.dtype), b.mul(b.mul(inv, inv), inv)))
    gweight = b.mul(g_centered, inv)
    return gx, gmean, gvar, gweight, g_sum


def _layer_norm(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    x, weight, _ = node.inputs
    eps = attrs_of(node)["eps"]
    axes = tuple(range(x.ndim - weight.ndim, x.ndim))
    leading = tuple(range(x.ndim - weight.ndim))
    mean = b.mean(x, axes=axes, keepdims=True)
    centered = b.sub(x, mean)
    var = b.mean(b.mul(centered, centered), axes=axes, keepdims=True)
    rstd = b.rsqrt(b.add(var, scalar(b, eps, x.dtype)))
    xhat = b.mul(centered, rstd)
    gxhat = b.mul(g, weight)
    mean_g = b.mean(gxhat, axes=axes, keepdims=True)
    mean_gx = b.mean(b.mul(gxhat, xhat), axes=axes, keepdims=True)
    gx = b.mul(rstd, b.sub(b.sub(gxhat, mean_g), b.mul(xhat, mean_gx)))
    gweight = b.sum(b.mul(g, xhat), axes=leading) if leading else b.mul(g, xhat)
    gbias = b.sum(g, axes=leading) if leading else g
    return gx, gweight, gbias


def _softmax(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    y = node.output
    axis = int(attrs_of(node)["axis"]) % max(y.ndim, 1)
    dot = b.sum(b.mul(g, y), axes=(axis,), keepdims=True)
    return (b.mul(y, b.sub(g, dot)),)


def _log_softmax(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    (g,) = gys
    y = node.output
    axis = int(attrs_of(node)["axis"]) % max(y.ndim, 1)
    total = b.sum(g, axes=(axis,), keepdims=True)
    return (b.sub(g, b.mul(b.exp(y), total)),)


def _dropout(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    # The same mask (a hash of the seed and the element index) applied to the cotangent.
    masked = b.op("dropout", gys[0], *node.inputs[1:], **attrs_of(node))
    return (masked, *(None for _ in node.inputs[1:]))  # the key has no gradient


def _after_autodiff(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    raise GradientError(f"{node.op}: layout ops are made by passes that run after autodiff; "
                        "differentiate the graph as traced")


def _matmul_nt(b: GraphBuilder, node: Node, gys: Cotangents) -> Cotangents:
    # y = a @ w.T: a's gradient is g @ w, w's is g.T @ a.
    (g,) = gys
    a, w = node.inputs
    return b.matmul(g, w), b.matmul(_swap_last(b, g), a)


set_rule("matmul", grad=_matmul)
set_rule("matmul_nt", grad=_matmul_nt)
set_rule("batch_norm", grad=_batch_norm)
set_rule("layer_norm", grad=_layer_norm)
set_rule("softmax", grad=_softmax)
set_rule("log_softmax", grad=_log_softmax)
set_rule("dropout", grad=_dropout)
for _name in ("layout_convert", "conv2d_nchwc", "max_pool2d_nchwc", "avg_pool2d_nchwc"):
    set_rule(_name, grad=_after_autodiff)
