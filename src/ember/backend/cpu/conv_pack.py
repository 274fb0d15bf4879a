"""Packing the B panels of a convolution's GEMM straight from the image (no im2col matrix).

A stride-1 convolution of image x [C, H, W] is the GEMM `out[O, OH*OW] = W[O, C*KH*KW] @ B`
with `B[(c*KH + kh)*KW + kw, oh*OW + ow] = x[c, oh + kh - pad_top, ow + kw - pad_left]` (zero
in the padding). `image_packer(geometry)` returns a `gemm.BPacker` that writes the GEMM's
packed panels of B directly from x, so the [C*KH*KW, OH*OW] matrix is never written to memory
and read back: for each micro-panel of NR output pixels, each vector of `lanes` pixels covers
at most two output rows (OW >= lanes), so for one kernel offset (kh, kw) its values are two
contiguous runs of x: two masked loads, whose masks (the padding, the row break, the last
pixel) depend on (kh, kw) and not on the channel. The channel loop is innermost: two masked
loads, a select and an aligned store per vector.

Depth blocks must hold whole channels (`kc` a multiple of KH*KW): `conv_blocking` picks such
blocks, and a column block `nc` whose packed panel (kc x nc) stays in the L2 cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from ember.backend.cpu.gemm import (
    BPacker,
    CountedLoop,
    GemmBlocking,
    GemmEmitter,
    blocking_for,
    masked_load,
    splat,
)
from ember.target import Target

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
# The packed B panel (kc x nc) of a convolution takes half of the target's L2: packing it from
# the image costs more than a matmul's copy, so it is packed once per column block and must
# stay in L2 while every row block of A passes over it.
L2_PANEL_SHARE = 2


def l2_panel_bytes(target: Target | None = None) -> int:
    """Bytes the packed B panel of a convolution may take: half of the L2 of `target`."""
    return (target or Target.host()).l2_bytes // L2_PANEL_SHARE


@dataclass(frozen=True)
class ImageGeometry:
    """A stride-1, dilation-1 convolution of one image."""

    channels: int
    height: int
    width: int
    kernel_h: int
    kernel_w: int
    out_h: int
    out_w: int
    pad_top: int
    pad_left: int

    @property
    def tag(self) -> str:
        """A short name for symbols: two geometries with the same tag pack the same way."""
        return (f"c{self.channels}h{self.height}w{self.width}k{self.kernel_h}x{self.kernel_w}"
                f"o{self.out_h}x{self.out_w}p{self.pad_top}x{self.pad_left}")


def supports(geometry: ImageGeometry, lanes: int) -> bool:
    """Whether every vector of output pixels spans at most two output rows."""
    return geometry.out_w >= lanes


def conv_blocking(m: int, n: int, k: int, taps: int, dtype: str, lanes: int,
                  element_size: int, target: Target | None = None) -> GemmBlocking:
    """`blocking_for` with depth blocks of whole channels and a column block whose packed
    panel fills half of the target's L2."""
    base = blocking_for(m, n, k, dtype, lanes, target)
    channels = k // taps
    blocks = -(-k // base.kc)
    kc = -(-channels // blocks) * taps
    nr = base.nr(lanes)
    nc = max(nr, l2_panel_bytes(target) // (kc * element_size) // nr * nr)
    return GemmBlocking(mr=base.mr, nr_vectors=base.nr_vectors, kc=kc, mc=base.mc,
                        nc=min(nc, -(-n // nr) * nr))


def image_packer(g: ImageGeometry) -> BPacker:
    """The `BPacker` of a stride-1 convolution whose GEMM's B argument is the image."""

    def pack(e: GemmEmitter, jc: ir.Value, pc: ir.Value, nc: ir.Value, kc: ir.Value) -> None:
        builder, plan = e.builder, e.plan
        lanes, taps = plan.lanes, g.kernel_h * g.kernel_w
        pixels = g.out_h * g.out_w
        iota = ir.Constant(ir.VectorType(I32, lanes), [ir.Constant(I32, i) for i in range(lanes)])

        def i32(value: int | ir.Value) -> ir.Value:
            if isinstance(value, int):
                return ir.Constant(I32, value)
            return builder.trunc(value, I32)

        def lanes_of(value: ir.Value) -> ir.Value:
            return splat(builder, value, lanes)

        def inside(vector: ir.Value, low: int, high: int) -> ir.Value:
            """low <= vector < high, lane by lane."""
            return builder.and_(builder.icmp_signed(">=", vector, lanes_of(i32(low))),
                                builder.icmp_signed("<", vector, lanes_of(i32(high))))

        first_channel = builder.udiv(pc, e.const(taps))
        last_channel = builder.udiv(builder.add(pc, kc), e.const(taps))
        with CountedLoop(builder, e.const(0), nc, plan.nr, "pack_img.jr") as jr:
            panel = builder.gep(e.packed_b, [builder.mul(jr, kc)], inbounds=True)
            vectors = []  # per vector: first pixel's row and column, and the lanes in that row
            for v in range(e.nv):
                column = builder.add(builder.add(jc, jr), e.const(v * lanes))
                row = i32(builder.udiv(column, e.const(g.out_w)))
                col = i32(builder.urem(column, e.const(g.out_w)))
                split = builder.sub(i32(g.out_w), col)  # lanes before the row break
                real = builder.icmp_signed("<", builder.add(lanes_of(i32(column)), iota),
                                           lanes_of(i32(pixels)))
                before = builder.and_(builder.icmp_signed("<", iota, lanes_of(split)), real)
                after = builder.and_(builder.icmp_signed(">=", iota, lanes_of(split)), real)
                vectors.append((row, col, split, before, after))
            for kh in range(g.kernel_h):
                for kw in range(g.kernel_w):
                    runs = []
                    for row, col, split, before, after in vectors:
                        shift = kw - g.pad_left
                        first = builder.add(row, i32(kh - g.pad_top))  # input row, first run
                        second = builder.add(first, i32(1))
                        mask_a = builder.and_(before, inside(
                            builder.add(lanes_of(builder.add(col, i32(shift))), iota), 0, g.width))
                        mask_a = builder.and_(mask_a, lanes_of(_between(builder, first, g.height)))
                        mask_b = builder.and_(after, inside(
                            builder.add(lanes_of(builder.sub(i32(shift), split)), iota), 0,
                            g.width))
                        mask_b = builder.and_(mask_b, lanes_of(_between(builder, second, g.height)))
                        # lane l of run a reads x[first, col + shift + l]; of run b,
                        # x[second, shift + l - split]
                        start_a = builder.add(builder.mul(first, i32(g.width)),
                                              builder.add(col, i32(shift)))
                        start_b = builder.add(builder.mul(second, i32(g.width)),
                                              builder.sub(i32(shift), split))
                        runs.append((builder.sext(start_a, I64), mask_a,
                                     builder.sext(start_b, I64), mask_b))
                    tap = kh * g.kernel_w + kw
                    with CountedLoop(builder, first_channel, last_channel, 1,
                                     f"pack_img.c{tap}") as c:
                        plane = builder.gep(e.b, [builder.mul(c, e.const(g.height * g.width))])
                        depth = builder.add(builder.mul(builder.sub(c, first_channel),
                                                        e.const(taps)), e.const(tap))
                        target = builder.gep(panel, [builder.mul(depth, e.const(plan.nr))],
                                             inbounds=True)
                        for v, (start_a, mask_a, start_b, mask_b) in enumerate(runs):
                            value_a = masked_load(builder, builder.gep(plane, [start_a]), mask_a,
                                                  e.vector)
                            value_b = masked_load(builder, builder.gep(plane, [start_b]), mask_b,
                                                  e.vector)
                            e.store_vector(builder.select(mask_a, value_a, value_b),
                                           builder.gep(target, [e.const(v * lanes)]), align=64)

    return pack


def _between(builder: ir.IRBuilder, value: ir.Value, high: int) -> ir.Value:
    """0 <= value < high for an i32 scalar."""
    return builder.and_(builder.icmp_signed(">=", value, ir.Constant(I32, 0)),
                        builder.icmp_signed("<", value, ir.Constant(I32, high)))
