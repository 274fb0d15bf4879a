"""Fold inference batch normalization into the convolution or linear layer before it.

With constant statistics and affine parameters, batch_norm is a per-channel affine map
`x * scale + shift` (scale = gamma / sqrt(var + eps), shift = beta - mean * scale), so it
folds into the weights of a producer whose output channels lie on axis 1.

Before:                                            After:
  %w = const() {...} : f32[8,3,3,3]                  %w2 = const() {...} : f32[8,3,3,3]
  %0 = conv2d(%x, %w, %b) {...} : f32[1,8,6,6]       %b2 = const() {...} : f32[8]
  %1 = batch_norm(%0, %m, %v, %g, %t) {...}          %1 = conv2d(%x, %w2, %b2) {...}

Rules, tried in order for each batch_norm whose four parameters are compile-time constants:
  conv2d(x, w[, b]) -> conv2d(x, w * scale, b * scale + shift)     (a conv without bias gets one)
  [add(] matmul(x, W) [, bias)] on [N, C] -> add(matmul(x, W * scale), bias * scale + shift)
  anything else -> add(mul(x, scale), shift), constants shaped [1, C, 1, ...] to broadcast on axis 1
The conv2d / matmul / add folded into must have the batch_norm as its only user (and not be a
graph output); otherwise the standalone rule applies. Folded constants are computed in float64
and cast to the input's dtype. Values with a layout are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from ember.passes._layout_folding import constant_array, drop_newly_dead, single_user

from ember.ir.attrs import Attrs, Const
from ember.ir.graph import Graph, Node, Value
from ember.pipeline import Pass


@dataclass(frozen=True)
class Affine:
    """The per-channel map `x * scale + shift` of one batch_norm, in float64."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class Fold:
    """One rewrite: nodes to remove, and the nodes that take the batch_norm's place."""

    removed: tuple[Node, ...]
    added: tuple[Node, ...]


@dataclass(frozen=True)
class FoldBatchNorm(Pass):
    """Fold inference batch_norm into the preceding conv2d or linear layer, or into mul/add."""

    name: ClassVar[str] = "fold-batchnorm"

    def run(self, graph: Graph) -> Graph:
        folds: dict[Node, Fold] = {}
        for node in graph.nodes:
            if node.op != "batch_norm" or node.inputs[0].type.layout:
                continue
            affine = batch_norm_affine(graph, node)
            if affine is None:
                continue
            for rule in RULES:
                if (fold := rule(graph, node, affine)) is not None:
                    folds[node] = fold
                    break
        if not folds:
            return graph
        removed = {n for fold in folds.values() for n in fold.removed}
        nodes: list[Node] = []
        for node in graph.nodes:
            if node in folds:
                nodes.extend(folds[node].added)
            elif node not in removed:
                nodes.append(node)
        return drop_newly_dead(graph, nodes, graph.outputs)


def batch_norm_affine(graph: Graph, node: Node) -> Affine | None:
    """scale and shift of a batch_norm whose parameters are constants, else None."""
    arrays = [constant_array(graph, value) for value in node.inputs[1:]]
    if any(array is None for array in arrays):
        return None
    mean, var, gamma, beta = (np.asarray(a, dtype=np.float64) for a in arrays)  # type: ignore[arg-type]
    scale = gamma / np.sqrt(var + float(node.attrs["eps"]))  # type: ignore[arg-type]
    narrow = scale.astype(node.output.type.dtype.numpy)
    if np.any((narrow == 0) & (gamma != 0)):
        # A scale below the dtype's range would turn an infinite input into inf * 0 = NaN;
        # batch_norm's own lowering takes such channels in the unfolded order.
        return None
    return Affine(scale, beta - mean * scale)


def const_node(array: np.ndarray, like: Value) -> Node:
    """A const node holding `array` cast to the dtype of `like`."""
    data = np.asarray(array, dtype=like.type.dtype.numpy)
    constant = Const(data)
    return Node("const", (), (Value(constant.type),), Attrs(value=constant))


def fold_into_conv(graph: Graph, node: Node, affine: Affine) -> Fold | None:
    # conv2d(x, w[, b]) -> conv2d(x, w * scale, b * scale + shift)
    conv = graph.producer(node.inputs[0])
    if conv is None or conv.op != "conv2d" or single_user(graph, conv.output) is not node:
        return None
    weight = constant_array(graph, conv.inputs[1])
    bias = constant_array(graph, conv.inputs[2]) if len(conv.inputs) == 3 else np.zeros(1)
    if weight is None or bias is None:
        return None
    new_weight = const_node(weight * affine.scale.reshape(-1, 1, 1, 1), conv.inputs[1])
    new_bias = const_node(bias.astype(np.float64) * affine.scale + affine.shift, conv.inputs[1])
    inputs = (conv.inputs[0], new_weight.output, new_bias.output)
    folded = conv.replace(inputs=inputs, outputs=node.outputs)
    return Fold((conv,), (new_weight, new_bias, folded))


def linear_parts(graph: Graph, value: Value) -> tuple[list[Node], Node, np.ndarray] | None:
    """The nodes of `[add(] matmul(x, W) [, bias)]` ending in `value`, the matmul and its bias."""
    producer = graph.producer(value)
    if producer is not None and producer.op == "matmul":
        return [producer], producer, np.zeros(1)
    if producer is None or producer.op != "add":
        return None
    for matmul_side, bias_side in ((0, 1), (1, 0)):
        matmul = graph.producer(producer.inputs[matmul_side])
        if matmul is None or matmul.op != "matmul" or matmul.output.type != value.type:
            continue
        bias = constant_array(graph, producer.inputs[bias_side])
        if bias is None or single_user(graph, matmul.output) is not producer:
            continue
        if bias.size not in (1, value.shape[-1]) or bias.ndim > 2:
            continue
        return [matmul, producer], matmul, bias.reshape(-1)
    return None


def fold_into_linear(graph: Graph, node: Node, affine: Affine) -> Fold | None:
    # add(matmul(x, W), bias) -> add(matmul(x, W * scale), bias * scale + shift), on [N, C]
    if node.inputs[0].type.ndim != 2 or single_user(graph, node.inputs[0]) is not node:
        return None
    parts = linear_parts(graph, node.inputs[0])
    if parts is None:
        return None
    removed, matmul, bias = parts
    weight = constant_array(graph, matmul.inputs[1])
    if weight is None or weight.ndim != 2 or matmul.inputs[0].type.ndim != 2:
        return None
    new_weight = const_node(weight * affine.scale.reshape(1, -1), matmul.inputs[1])
    product = matmul.replace(inputs=(matmul.inputs[0], new_weight.output),
                             outputs=(Value(matmul.output.type),))
    new_bias = const_node(bias.astype(np.float64) * affine.scale + affine.shift, node.inputs[0])
    add = Node("add", (product.output, new_bias.output), node.outputs, Attrs(), None, node.loc)
    return Fold(tuple(removed), (new_weight, product, new_bias, add))


def fold_standalone(graph: Graph, node: Node, affine: Affine) -> Fold | None:
    # batch_norm(x, ...) -> add(mul(x, scale), shift)
    source = node.inputs[0]
    shape = (1, -1) + (1,) * (source.type.ndim - 2)
    scale = const_node(affine.scale.reshape(shape), source)
    shift = const_node(affine.shift.reshape(shape), source)
    scaled = Node("mul", (source, scale.output), (Value(source.type),), Attrs(), None, node.loc)
    shifted = Node("add", (scaled.output, shift.output), node.outputs, Attrs(), None, node.loc)
    return Fold((), (scale, shift, scaled, shifted))


RULES: tuple[Callable[[Graph, Node, Affine], Fold | None], ...] = (
    fold_into_conv,
    fold_into_linear,
    fold_standalone,
)
