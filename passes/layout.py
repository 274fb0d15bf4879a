"""Run convolution regions in a blocked channel layout, NCHW[b]c, with b the target's vector width.

In NCHW[b]c a vector of b channels of one pixel is contiguous, so a convolution kernel
broadcasts one input value against a vector of b output channels. The layout is part of each
value's type: `f32[N, C/b, H, W, b]{nchw8c}`. With `format=nhwc` the regions run channels-last
instead (`f32[N, H, W, C]{nhwc}`, one block holding every channel).

Before (block=4):
  %0 = conv2d(%x, %w, %b) {...} : f32[1,4,6,6]
  %1 = relu(%0) : f32[1,4,6,6]
  %2 = max_pool2d(%1) {...} : f32[1,4,3,3]
  return %2
After:
  %0 = layout_convert(%x) {channels = 4, layout = "nchw4c"} : f32[1,1,6,6,4]{nchw4c}
  %1 = const() {...} : f32[1,1,3,3,4,4]
  %2 = const() {...} : f32[1,4]
  %3 = conv2d_nchwc(%0, %1, %2) {...} : f32[1,1,6,6,4]{nchw4c}
  %4 = relu(%3) : f32[1,1,6,6,4]{nchw4c}
  %5 = max_pool2d_nchwc(%4) {...} : f32[1,1,3,3,4]{nchw4c}
  %6 = layout_convert(%5) {channels = 4, layout = ""} : f32[1,4,3,3]
  return %6

What runs blocked:
  conv2d, groups == 1, constant weight and bias: the region seeds; weights are packed at
      compile time into new constants OIHW[ib][ob] = [O/ob, I/ib, KH, KW, ib, ob], bias [O/ob, ob].
  relu, leaky_relu, sigmoid, tanh, gelu, silu, clip, neg, abs on a blocked value.
  add, sub, mul, div, maximum, minimum with a blocked operand whose other operand is blocked,
      a constant broadcasting per channel (packed into the blocked shape; a scalar stays as is),
      or an NCHW value of the full shape (converted on entry). div only with a blocked dividend.
  max_pool2d, avg_pool2d -> max_pool2d_nchwc, avg_pool2d_nchwc.
  concat on the channel axis -> concat on the last axis (nhwc only), other operands converted.
Everything else (batch_norm, reshape, reductions, impure ops, graph outputs) reads the NCHW form,
converted back right before its first reader. Channels that do not fill a block are zero-padded
on entry and cropped on exit; the ops above keep padded channels finite and never mix them into
real ones. Back-to-back conversions (to blocked and back, or back and to blocked) are cancelled.
Run after `fold-batchnorm`, so that batch norms do not cut regions; weights must be constants.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ember.passes._layout_folding import drop_newly_dead
from ember.passes._layout_regions import RegionBuilder

from ember.errors import EmberError
from ember.ir.graph import Graph, Node, Value
from ember.ops.layout import logical_shape
from ember.pipeline import Pass
from ember.target import Target

FORMATS = ("nchwc", "nhwc")


@dataclass(frozen=True)
class ConvertLayout(Pass):
    """Move convolution regions into the blocked NCHW[b]c (or NHWC) layout."""

    name: ClassVar[str] = "layout"
    block: int = 0  # channels per block; 0 = the target's vector width in f32 lanes
    format: str = "nchwc"  # nchwc | nhwc

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise EmberError(f"layout: format must be one of {', '.join(FORMATS)}, "
                             f"got {self.format!r}")
        if self.block < 0:
            raise EmberError(f"layout: block must be >= 0, got {self.block}")

    @property
    def layout(self) -> str:
        """The layout name regions run in: "nhwc" or "nchw<b>c"."""
        if self.format == "nhwc":
            return "nhwc"
        return f"nchw{self.block or Target.host().f32_lanes}c"

    def for_target(self, target: Target) -> ConvertLayout:
        """This pass with the target's channel block when none was given."""
        return self if self.block else dataclasses.replace(self, block=target.f32_lanes)

    def run(self, graph: Graph) -> Graph:
        if self.format == "nhwc" and any(n.op == "conv2d" and n.attrs["groups"] != 1
                                         for n in graph.nodes):
            # Grouped and depthwise convolutions have no channels-last kernel yet: each would
            # cut its network's regions in two (MobileNetV2 8.2 -> 11.7 ms at one thread,
            # benchmarks/NOTES.md), so such a graph stays NCHW.
            return graph
        blocked = RegionBuilder(graph, self.layout).rewrite()
        return cancel_conversions(blocked)


def cancel_conversions(graph: Graph) -> Graph:
    """Drop `layout_convert` pairs that undo each other."""
    rename: dict[Value, Value] = {}
    producers: dict[Value, Node] = {}
    kept: list[Node] = []
    for node in graph.nodes:
        node = node.with_inputs_renamed(rename)
        source = cancelled_source(node, producers, graph.outputs)
        if source is not None:
            rename[node.output] = source
            continue
        kept.append(node)
        producers.update((value, node) for value in node.outputs)
    if not rename:
        return graph
    outputs = tuple(rename.get(value, value) for value in graph.outputs)
    return drop_newly_dead(graph, kept, outputs)


def cancelled_source(node: Node, producers: dict[Value, Node],
                     outputs: tuple[Value, ...]) -> Value | None:
    # layout_convert(layout_convert(x)) -> x, when the pair gives back x's type
    if node.op != "layout_convert":
        return None
    first = producers.get(node.inputs[0])
    if first is None or first.op != "layout_convert":
        return None
    source = first.inputs[0]
    if source.type != node.output.type or first.attrs["channels"] != node.attrs["channels"]:
        return None
    padded = source.type.layout and logical_shape(source.type)[1] != node.attrs["channels"]
    if padded and node.output in outputs:
        return None  # the blocked source's padded channels may hold values the pair zeroes
    return source
