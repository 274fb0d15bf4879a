"""Packing the B panels of a convolution's GEMM straight from the image (no im2col matrix).

A convolution of image x [C, H, W] with stride s is the GEMM `out[O, OH*OW] = W[O, C*KH*KW] @
B` with `B[(c*KH + kh)*KW + kw, oh*OW + ow] = x[c, oh*s + kh - pad_top, ow*s + kw - pad_left]`
(zero in the padding). `image_packer(geometry)` returns a `gemm.BPacker` that writes the GEMM's
packed panels of B directly from x, so the [C*KH*KW, OH*OW] matrix is never written to memory
and read back: for each micro-panel of NR output pixels, each vector of `lanes` pixels covers a
few output rows (two when OW >= lanes, up to MAX_RUNS for narrower images), so for one kernel
offset (kh, kw) its values are one run of x per output row, each contiguous at stride 1 (one
masked load) or every other element of a contiguous span at stride 2 (two masked loads and an
even-lane shuffle). The masks (the padding, the row breaks, the last pixel) depend on (kh, kw)
and not on the channel, so the channel loop is innermost: the masked loads, selects between
the runs and one aligned store per vector.

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
    stride: int = 1

    @property
    def tag(self) -> str:
        """A short name for symbols: two geometries with the same tag pack the same way."""
        return (f"c{self.channels}h{self.height}w{self.width}k{self.kernel_h}x{self.kernel_w}"
                f"o{self.out_h}x{self.out_w}p{self.pad_top}x{self.pad_left}"
                + (f"s{self.stride}" if self.stride != 1 else ""))

    def runs(self, lanes: int) -> int:
        """Output rows one vector of `lanes` consecutive pixels may touch."""
        return -(-(lanes - 1) // self.out_w) + 1


# Output rows a vector of pixels may span, each one masked load (two at stride 2) per channel:
# 16 lanes over 7-pixel rows touch 4; narrower images take the im2col matrix.
MAX_RUNS = 4
STRIDES = (1, 2)


def supports(geometry: ImageGeometry, lanes: int) -> bool:
    """Whether the packer handles this convolution: stride 1 or 2 (the same both ways, the
    caller checks dilation 1) and every vector of output pixels within MAX_RUNS rows."""
    return geometry.stride in STRIDES and geometry.runs(lanes) <= MAX_RUNS


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
    """The `BPacker` of a convolution (stride 1 or 2) whose GEMM's B argument is the image."""

    def pack(e: GemmEmitter, jc: ir.Value, pc: ir.Value, nc: ir.Value, kc: ir.Value) -> None:
        builder, plan = e.builder, e.plan
        lanes, taps, stride = plan.lanes, g.kernel_h * g.kernel_w, g.stride
        pixels = g.out_h * g.out_w
        runs = g.runs(lanes)
        lane_type = ir.VectorType(I32, lanes)
        iota = ir.Constant(lane_type, [ir.Constant(I32, i) for i in range(lanes)])

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
            vectors = []  # per vector: first pixel's row and column, each lane's output column,
            for v in range(e.nv):  # and per run the lanes in that output row
                column = builder.add(builder.add(jc, jr), e.const(v * lanes))
                row = i32(builder.udiv(column, e.const(g.out_w)))
                col = i32(builder.urem(column, e.const(g.out_w)))
                real = builder.icmp_signed("<", builder.add(lanes_of(i32(column)), iota),
                                           lanes_of(i32(pixels)))
                along = builder.add(lanes_of(col), iota)  # col + lane
                offset = builder.udiv(along, lanes_of(i32(g.out_w)))  # the lane's row - row
                out_col = builder.sub(along, builder.mul(offset, lanes_of(i32(g.out_w))))
                members = [builder.and_(real, builder.icmp_signed(
                    "==", offset, lanes_of(i32(r)))) for r in range(runs)]
                vectors.append((row, col, out_col, members))
            # The kernel taps are loops, not unrolled: a 7 x 7 kernel's 49 copies of the mask
            # setup made the stem's GEMM the slowest function to compile.
            with CountedLoop(builder, e.const(0), e.const(g.kernel_h), 1, "pack_img.kh") as kh, \
                    CountedLoop(builder, e.const(0), e.const(g.kernel_w), 1, "pack_img.kw") as kw:
                shift = builder.sub(i32(kw), i32(g.pad_left))
                top = builder.sub(i32(kh), i32(g.pad_top))
                loads = []
                for row, col, out_col, members in vectors:
                    # lane l of run r reads x[(row + r)*s + kh - pad_top, out_col[l]*s + shift]
                    in_columns = inside(builder.add(builder.mul(out_col, lanes_of(i32(stride))),
                                                    lanes_of(shift)), 0, g.width)
                    vector_runs = []
                    for r, member in enumerate(members):
                        in_row = builder.add(builder.mul(builder.add(row, i32(r)), i32(stride)),
                                             top)
                        mask = builder.and_(builder.and_(member, in_columns),
                                            lanes_of(_between(builder, in_row, g.height)))
                        start = builder.add(
                            builder.mul(in_row, i32(g.width)),
                            builder.add(builder.mul(builder.sub(col, i32(r * g.out_w)),
                                                    i32(stride)), shift))
                        vector_runs.append((builder.sext(start, I64), mask))
                    loads.append(vector_runs)
                tap = builder.add(builder.mul(kh, e.const(g.kernel_w)), kw)
                with CountedLoop(builder, first_channel, last_channel, 1, "pack_img.c") as c:
                    plane = builder.gep(e.b, [builder.mul(c, e.const(g.height * g.width))])
                    depth = builder.add(builder.mul(builder.sub(c, first_channel),
                                                    e.const(taps)), tap)
                    target = builder.gep(panel, [builder.mul(depth, e.const(plan.nr))],
                                         inbounds=True)
                    for v, vector_runs in enumerate(loads):
                        value = None
                        for start, mask in reversed(vector_runs):
                            loaded = _strided_load(e, builder.gep(plane, [start]), mask, stride)
                            value = loaded if value is None else builder.select(mask, loaded,
                                                                                 value)
                        e.store_vector(value, builder.gep(target, [e.const(v * lanes)]),
                                       align=64)

    return pack


def _strided_load(e: GemmEmitter, pointer: ir.Value, mask: ir.Value, stride: int) -> ir.Value:
    """Lanes l = 0.. of `pointer[l * stride]` where `mask`, zero elsewhere (stride 1 or 2).

    Stride 2: the span of 2 x lanes elements as two masked loads that read only the even
    positions of lanes in the mask, then the even elements of both (one two-input shuffle)."""
    builder, lanes = e.builder, e.plan.lanes
    if stride == 1:
        return masked_load(builder, pointer, mask, e.vector)
    assert stride == 2, stride  # `supports` admits STRIDES only
    off = ir.Constant(ir.VectorType(I1, lanes), None)
    halves = []
    for half in range(2):
        # position j of this half is lane (half * lanes + j) / 2 where even; index `lanes`
        # picks the first lane of `off` (false) for the odd positions
        picks = [(half * lanes + j) // 2 if j % 2 == 0 else lanes for j in range(lanes)]
        half_mask = builder.shuffle_vector(mask, off, ir.Constant(
            ir.VectorType(I32, lanes), picks))
        halves.append(masked_load(builder, builder.gep(pointer, [ir.Constant(I64, half * lanes)]),
                                  half_mask, e.vector))
    return builder.shuffle_vector(halves[0], halves[1], ir.Constant(
        ir.VectorType(I32, lanes), [2 * lane for lane in range(lanes)]))


def _between(builder: ir.IRBuilder, value: ir.Value, high: int) -> ir.Value:
    """0 <= value < high for an i32 scalar."""
    return builder.and_(builder.icmp_signed(">=", value, ir.Constant(I32, 0)),
                        builder.icmp_signed("<", value, ir.Constant(I32, high)))
