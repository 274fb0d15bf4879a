"""A blocked, packed matrix multiply generated as LLVM IR (the GotoBLAS / BLIS structure).

    module = ir.Module("mm")
    emit_gemm(module, "mm", m, n, k)          # void mm(A, B, C, row_begin, row_end, scratch)
    gemm = compile_ir(module).function("mm", None, [c_void_p] * 3 + [c_int64] * 2 + [c_void_p])

The function computes `C[row_begin:row_end, :] = A[row_begin:row_end, :] @ B` for row-major
A [M, K], B [K, N] and C [M, N]. Shapes are static, so every stride and block count is a
constant. The loop nest, outermost first:

    for jc in 0..N step NC:                   # B panel columns
      for pc in 0..K step KC:                 # depth block: a KC x NC panel of B fits in L2
        pack B[pc:pc+kc, jc:jc+nc]  -> Bp     # NR-wide micro-panels, zero-padded on the right
        for ic in row_begin..row_end step MC:
          pack A[ic:ic+mc, pc:pc+kc] -> Ap    # MR-tall micro-panels, zero-padded at the bottom
          for jr in 0..nc step NR:            # one KC x NR micro-panel of B stays in L1
            for ir in 0..mc step MR:
              micro-kernel: an MR x NR tile of C held in MR * NR / lanes vector registers,
              one broadcast of A and NR / lanes vector loads of B per step of k, all FMAs

Edge tiles are computed at full size from the zero-padded panels; the store masks the columns
past N (masked vector stores) and skips the rows past `row_end`. The first depth block stores
the tile, later ones add to it, and the last one passes each vector through the epilogue.

`scratch` holds the packed panels: `gemm_scratch_bytes(m, n, k)` bytes, 64-byte aligned, one
slice per thread that calls the function at the same time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ember.lower.aligned import aligned_empty
from ember.target import Target

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
_ELEMENT_TYPES = {"f32": (ir.FloatType(), 4), "f64": (ir.DoubleType(), 8)}
# The tiles of C's last, partial NR columns multiply only the vectors they need (off: every tile
# is NR wide, the zero columns of the B panel multiplied too).
NARROW_EDGE = True
EDGE_ACCUMULATORS = 12  # fewest accumulators of a narrower edge tile
EDGE_SAVING = 0.05  # least share of a row's vectors it must save
ARGUMENT_COUNT = 6  # A, B, C, row_begin, row_end, scratch; extra arguments follow

# (builder, vector, row_index, col_index) -> vector; row/col are i64 values of the first element.
Epilogue = Callable[[ir.IRBuilder, ir.Value, ir.Value, ir.Value], ir.Value]
# (emitter, jc, pc, nc, kc) -> None: writes the packed B panel of columns jc..jc+nc and depth
# pc..pc+kc into `emitter.packed_b` (the layout `pack_b` makes), in place of `pack_b`.
BPacker = Callable[["GemmEmitter", ir.Value, ir.Value, ir.Value, ir.Value], None]
# (emitter, first_row, pc) -> MR pointers, pointer r at A[first_row + r, pc]: A read in place,
# each row's depth block contiguous (an NHWC image's window rows); no packing of A. Rows at or
# past row_end must still point at readable memory (their results are never stored).
ARows = Callable[["GemmEmitter", ir.Value, ir.Value], list[ir.Value]]


@dataclass(frozen=True)
class GemmBlocking:
    """Register and cache block sizes. `nr_vectors` vectors of `lanes` elements make NR."""

    mr: int
    nr_vectors: int
    kc: int
    mc: int
    nc: int

    def nr(self, lanes: int) -> int:
        return self.nr_vectors * lanes


# The register tile and cache blocks come from the Target's fields; the constants below are
# the few facts a Target does not carry.
FMA_LATENCY_CYCLES = 4  # a vector FMA's latency on Zen 4 and on Intel's server cores
# B bytes per cycle the micro-kernel may stream from L2: the B micro-panel (KC x NR) is re-read
# by every MR-row sliver of the A block and does not stay in L1 at a useful depth.
L2_STREAM_BYTES_PER_CYCLE = 16
# Row slivers of the A block that re-read one B micro-panel from L2 after its fetch from L3.
A_SLIVERS_PER_BLOCK = 30
# MC is a multiple of every row count `blocking_for` may narrow the tile to (4, 6, 8, 12)
# where the A block allows.
MC_ROW_MULTIPLE = 24


def register_tile(target: Target, vector_bytes: int) -> tuple[int, int]:
    """(MR rows, NR vectors) of the micro-kernel's tile of C held in registers.

    NR is `vector_registers // 8` vectors (4 with 32 registers, 2 with 16); the registers
    left after the NR loaded B vectors and one broadcast of A are the accumulator budget.
    MR is the fewest rows that
    - keep 2 x latency x fma_per_cycle accumulators in flight (the FMA pipes never wait on a
      chain, with room for the loads of the next step), and
    - draw at most L2_STREAM_BYTES_PER_CYCLE bytes of B per cycle (each B vector feeds MR
      FMAs, and the units retire fma_per_cycle of them a cycle),
    capped by the budget. Zen 4 (32 registers, 1 zmm FMA/cycle): 4 x 4; Intel server cores
    (2 FMA/cycle): 6 x 4; AVX2 (16 registers, 2 FMA/cycle): 6 x 2.

    Measured on Zen 4 (benchmarks/NOTES.md): 4 x 64 f32 against 6 x 64 in the models, A/B in
    one process both ways round: MLP 0.95 vs 0.98 ms, transformer 19.8 vs 20.6, ResNet block
    38.4 vs 39.6 (a 64-row M needs no padded rows), 1024^3 level; earlier 6 x 64 beat 14 x 32,
    12 x 32, 8 x 32 and 4 x 96 by up to 5 %.
    """
    registers, fmas = target.vector_registers, target.fma_per_cycle
    nr_vectors = max(1, registers // 8)
    budget = registers - nr_vectors - 1
    cover_rows = -(-2 * FMA_LATENCY_CYCLES * fmas // nr_vectors)
    stream_rows = -(-fmas * vector_bytes // L2_STREAM_BYTES_PER_CYCLE)
    return max(1, min(max(cover_rows, stream_rows), budget // nr_vectors)), nr_vectors


def default_blocking(dtype: str = "f32", lanes: int | None = None,
                     target: Target | None = None) -> GemmBlocking:
    """Register tile and cache blocks for `target` (the host by default), from its fields.

    - MR x NR: `register_tile`.
    - KC, a power of two: the B micro-panel (KC x NR) in an eighth of L2, from where each
      sliver of the A block re-reads it (`blocking_for` may double it). Not sized for L1:
      measured on Zen 4 (benchmarks/NOTES.md), KC 512-1024 beat 128-256 in f32 and 256 in
      f64; a KC whose B micro-panel and A sliver fit L1 (about 120 at 4 x 64) reloads and
      stores the C tile too often.
    - MC: A_SLIVERS_PER_BLOCK slivers of MR rows, so that one fetch of a B micro-panel from
      L3 serves 30 micro-kernel calls, with the A block (MC x KC) at most half of L2.
      Measured on Zen 4: f32 MC 120 ran the transformer 2-3 % faster than 240 (1024^3 and
      2048^3 within noise of each other); f64 MC 48 lost 8 % to 96-120 at 1024^3.
    - NC: the B panel (KC x NC) in a share of L3, an eighth of it (Zen 4's L3 serves an
      8-core complex) and at most 4 x L2 (Intel's large L3s are shared by many more cores).

    f32: Zen 4 4 x 64, KC 512, MC 120, NC 2048 (the measured best); Sapphire Rapids 6 x 64,
    KC 1024, MC 168, NC 2048; x86-64-v3 6 x 16, KC 512, MC 48, NC 512.
    """
    target = target or Target.host()
    size = _ELEMENT_TYPES[dtype][1]
    lanes = lanes or target.lanes(size)
    mr, nr_vectors = register_tile(target, lanes * size)
    nr = nr_vectors * lanes
    kc = _power_of_two_at_most(target.l2_bytes // 8 // (nr * size))
    rows = min(target.l2_bytes // 2 // (kc * size), A_SLIVERS_PER_BLOCK * mr)
    # a multiple of 24 where that fits, else of MR and 4 (the small-M tile), else one sliver
    steps = [step for step in (_lcm(MC_ROW_MULTIPLE, mr), _lcm(4, mr)) if step <= rows]
    mc = rows // steps[0] * steps[0] if steps else mr
    panel_bytes = min(target.l3_bytes // 8, 4 * target.l2_bytes)
    nc = max(nr, _power_of_two_at_most(panel_bytes // (kc * size)) // nr * nr)
    return GemmBlocking(mr=mr, nr_vectors=nr_vectors, kc=kc, mc=mc, nc=nc)


def blocking_for(m: int, n: int, k: int, dtype: str = "f32", lanes: int | None = None,
                 target: Target | None = None, every_row_count: bool = False) -> GemmBlocking:
    """Block sizes for one problem: the target's default, narrowed and deepened to fit it.

    - Narrow outputs (N below the default NR) take as many vectors across as N needs, and 8
      rows: N = 10 runs an 8 x 16 tile, not a 4 x 64 tile that would multiply zeros in 54 of
      its 64 columns (8 x 16 measured 40 GFLOP/s at 16x10x2048, 12 x 16 17, 16 x 16 23).
    - Few rows that MR-row tiles would pad by more than 5 % (M = 16, 32 with 6-row tiles)
      take 4-row tiles.
    - Otherwise a tile of fewer vectors and more rows where it pads C less
      (`_least_padded_tile`: N = 196 as 12 x 32 tiles on Intel, not 6 x 64).
      `every_row_count`: any row count the budget allows is a candidate, the 4-row tile
      among them: for rows that are an image's pixels, where M = 49 pads to 54 in 6-row
      tiles and to 52 in 4-row ones, and 10 x 32 or 7 x 48 tiles pad 1 or none. Measured on
      Intel Xeon, one thread, ResNet-50 channels-last: 55.4-56.7 ms with the 4 x 64 tiles
      of its 7 x 7 layers, 53.4-55.2 with 10 x 32 and 7 x 48 (benchmarks/NOTES.md).
    - Depth up to 2 x KC is one block (no reload of the C tile between depth blocks; KC 1024
      measured at least as fast as 512 at 1024^3); deeper K is split into equal blocks of at
      most 2 x KC (2048 as 2 x 1024, measured faster than 4 x 512), so that no thin last
      block (K = 2100 as 1024 + 1024 + 52) pays a full C pass.
    """
    target = target or Target.host()
    size = _ELEMENT_TYPES[dtype][1]
    lanes = lanes or target.lanes(size)
    base = default_blocking(dtype, lanes, target)
    nr_vectors = min(base.nr_vectors, -(-n // lanes))
    mr = base.mr
    if nr_vectors < base.nr_vectors:
        accumulators = target.vector_registers - nr_vectors - 1
        mr = min(8, accumulators // nr_vectors)  # 8 rows measured 1.4-2.3x faster than 12
        while base.mc % mr:
            mr -= 1
    else:
        # 16 or 32 rows: 4-row tiles waste none (measured 5-10 % faster than 6 x 64)
        four_rows = (_round_up(m, mr) > 1.05 * m and _round_up(m, 4) < _round_up(m, mr)
                     and base.mc % 4 == 0)
        if four_rows and not every_row_count:
            mr = 4
        else:
            also = [(4, nr_vectors)] if four_rows else []
            mr, nr_vectors = _least_padded_tile(m, n, lanes, base, target, every_row_count,
                                                also)
    deepest = 2 * base.kc
    kc = k if k <= deepest else -(-k // -(-k // deepest))
    return GemmBlocking(mr=mr, nr_vectors=nr_vectors, kc=kc, mc=base.mc // mr * mr,
                        nc=_round_up(base.nc, nr_vectors * lanes))


# A narrower tile than the target's default must pad this much less of C to be taken.
NARROW_TILE_MARGIN = 1.03


def _least_padded_tile(m: int, n: int, lanes: int, base: GemmBlocking, target: Target,
                       every_row_count: bool = False, also: Sequence[tuple[int, int]] = ()
                       ) -> tuple[int, int]:
    """(MR, NR vectors) computing the fewest padded elements of C: the default tile, or one of
    fewer vectors across (down to half of them) and as many rows as the accumulator budget
    allows, or the multiple of 4 below that (`every_row_count`: any row count up to the
    budget), that still keeps `register_tile`'s 2 x latency x fma_per_cycle accumulators in
    flight, or one of `also`; a tile other than the default must pad NARROW_TILE_MARGIN less.

    The padded tiles of an N = 196 output (a 14 x 14 image) cost 31 % more FMAs at 64 columns
    (256) than the 196 needed, 14 % at 32; measured on Intel Xeon, one thread (benchmarks/
    NOTES.md), a 3x3 convolution of 256 channels at 14 x 14 ran 141 GFLOP/s with 6 x 64 tiles
    and 157 with 12 x 32, a 1x1 one of 256 -> 1024 channels 144 and 162."""
    def padded(rows: int, vectors: int) -> int:
        return _round_up(m, rows) * _round_up(n, vectors * lanes)

    in_flight = 2 * FMA_LATENCY_CYCLES * target.fma_per_cycle
    tiles = [(base.mr, base.nr_vectors)]
    for vectors in range(-(-base.nr_vectors // 2), base.nr_vectors):
        most = (target.vector_registers - vectors - 1) // vectors
        counts = range(most, 0, -1) if every_row_count else (most, most // 4 * 4)
        tiles += [(rows, vectors) for rows in counts
                  if rows * vectors >= in_flight and rows <= base.mc]
    tiles += also

    def cost(tile: tuple[int, int]) -> tuple[float, int, int]:
        margin = 1.0 if tile == tiles[0] else NARROW_TILE_MARGIN
        return padded(*tile) * margin, -tile[1], tile[0]  # ties: more vectors, fewer rows

    return min(tiles, key=cost)


def rows_per_thread(m: int, threads: int, mr: int) -> int:
    """Rows of C per thread: a multiple of the micro-kernel's `mr` rows where that still
    splits (no thread gets a partial tile, and a prepacked A needs every range to start at a
    panel boundary), else all of them."""
    rows = -(-m // max(threads, 1))
    return max(mr, -(-rows // mr) * mr) if m >= 2 * mr else m


def _default_lanes(dtype: str) -> int:
    return Target.host().lanes(_ELEMENT_TYPES[dtype][1])


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _power_of_two_at_most(value: int) -> int:
    return 1 << (max(value, 1).bit_length() - 1)


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


@dataclass(frozen=True)
class _Plan:
    """Block sizes clipped to one problem, and the scratch layout they need."""

    m: int
    n: int
    k: int
    lanes: int
    mr: int
    nr: int
    kc: int
    mc: int
    nc: int
    element_size: int

    @property
    def packed_b_elements(self) -> int:
        return self.kc * self.nc

    @property
    def packed_a_offset(self) -> int:  # in elements, 64-byte aligned
        return _round_up(self.packed_b_elements * self.element_size, 64) // self.element_size

    @property
    def scratch_bytes(self) -> int:
        return self.packed_a_offset * self.element_size + self.mc * self.kc * self.element_size


def _plan(m: int, n: int, k: int, dtype: str, lanes: int | None,
          blocking: GemmBlocking | None) -> _Plan:
    if dtype not in _ELEMENT_TYPES:
        raise ValueError(f"gemm: dtype must be one of {sorted(_ELEMENT_TYPES)}, got {dtype!r}")
    if min(m, n, k) < 1:
        raise ValueError(f"gemm: sizes must be positive, got m={m}, n={n}, k={k}")
    lanes = lanes or _default_lanes(dtype)
    blocking = blocking or blocking_for(m, n, k, dtype, lanes)
    mr, nr = blocking.mr, blocking.nr(lanes)
    if blocking.mc % mr or blocking.nc % nr:
        raise ValueError(f"gemm: mc={blocking.mc} must be a multiple of mr={mr} and "
                         f"nc={blocking.nc} a multiple of nr={nr}")
    return _Plan(m, n, k, lanes, mr, nr, kc=min(blocking.kc, k),
                 mc=min(blocking.mc, _round_up(m, mr)), nc=min(blocking.nc, _round_up(n, nr)),
                 element_size=_ELEMENT_TYPES[dtype][1])


def pack_a_constant(a: np.ndarray, n: int, *, lanes: int | None = None,
                    blocking: GemmBlocking | None = None) -> np.ndarray:
    """A constant A [m, k] packed ahead of time for `emit_gemm(..., a_packed=True)`.

    The layout is the one `pack_a` makes, for every depth block and row panel at once: depth
    block `pc` (of depth `kc`) starts at element `pc * round_up(m, MR)`, its row panel `i`
    (rows i*MR..) at `i * MR * kc` within it, and holds `[p][r] = A[i*MR + r, pc + p]`, zero
    for rows past m.
    """
    m, k = a.shape
    dtype = _dtype_name(a)
    plan = _plan(m, n, k, dtype, lanes, blocking)
    mr = plan.mr
    rows = _round_up(m, mr)
    whole = m // mr * mr  # rows in whole panels
    packed = aligned_empty(rows * k, a.dtype)  # each block written once, straight from A
    offset = 0
    for pc in range(0, k, plan.kc):
        depth = min(plan.kc, k - pc)
        panels = packed[offset : offset + rows * depth].reshape(rows // mr, depth, mr)
        if whole:
            panels[: whole // mr] = a[:whole, pc : pc + depth].reshape(
                whole // mr, mr, depth).transpose(0, 2, 1)
        if whole < rows:  # the last panel: its rows past m are zeros
            panels[whole // mr, :, : m - whole] = a[whole:, pc : pc + depth].T
            panels[whole // mr, :, m - whole :] = 0
        offset += rows * depth
    return packed


PACK_TILE_DEPTH = 256  # steps of depth per tile when B is transposed


def pack_b_constant(b: np.ndarray, m: int, *, lanes: int | None = None,
                    blocking: GemmBlocking | None = None) -> np.ndarray:
    """A constant B [k, n] packed ahead of time for `emit_gemm(..., b_packed=True)`.

    Block (jc, pc) (columns jc.., depth pc..) starts at element `jc * k + pc * round_up(nc,
    NR)` and holds the panels `pack_b` makes for it: panel j at `j * NR * kc`, `[p][c] =
    B[pc + p, jc + j*NR + c]`, zero past column n.
    """
    k, n = b.shape
    dtype = _dtype_name(b)
    plan = _plan(m, n, k, dtype, lanes, blocking)
    nr = plan.nr
    # Each block is copied once, straight from B into its panels in the result (a weight of
    # 100 M elements: one pass over it, not three through padded and concatenated copies).
    total = sum(_round_up(min(plan.nc, n - jc), nr) for jc in range(0, n, plan.nc)) * k
    packed = aligned_empty(total, b.dtype)
    # A transposed B (a Linear weight [n, k] read as B = W.T) is copied in tiles of
    # PACK_TILE_DEPTH steps of depth by one panel: each tile's source rows stay in cache while
    # the tile is written, where whole blocks read one element per cache line (VGG-16's 25088
    # x 4096 weight: 1.1 s -> 0.2 s).
    transposed = b.strides[0] < b.strides[1]
    offset = 0
    for jc in range(0, n, plan.nc):
        width = min(plan.nc, n - jc)
        whole = width // nr * nr  # columns in whole panels
        padded_width = _round_up(width, nr)
        for pc in range(0, k, plan.kc):
            depth = min(plan.kc, k - pc)
            panels = packed[offset : offset + depth * padded_width].reshape(
                padded_width // nr, depth, nr)
            source = b[pc : pc + depth, jc : jc + width]
            if whole and transposed:
                for j in range(whole // nr):
                    for d in range(0, depth, PACK_TILE_DEPTH):
                        panels[j, d : d + PACK_TILE_DEPTH] = source[d : d + PACK_TILE_DEPTH,
                                                                    j * nr : (j + 1) * nr]
            elif whole:
                panels[: whole // nr] = source[:, :whole].reshape(depth, whole // nr,
                                                                  nr).transpose(1, 0, 2)
            if whole < width:  # the last panel: its columns past n are zeros
                panels[whole // nr, :, : width - whole] = source[:, whole:]
                panels[whole // nr, :, width - whole :] = 0
            offset += depth * padded_width
    return packed


def pack_b_transposed(emitter: GemmEmitter, jc: ir.Value, pc: ir.Value, nc: ir.Value,
                      kc: ir.Value) -> None:
    """A `BPacker` for a B given as its transpose Bt [n, k] (row-major): the panels `pack_b`
    makes, `Bp[jr / NR][p][c] = Bt[jc + jr + c, pc + p]`, zero past column n, so no
    transposed copy of B is ever made.

    Square blocks of `lanes` columns by `lanes` steps of depth move through registers: one
    vector load from each of `lanes` rows of Bt, a transpose in `lanes * log2(lanes)` two-input
    shuffles (`transpose_vectors`), one aligned store per depth step into the panel, where a
    scalar copy would store each element alone at the panel's stride of NR elements (the
    first layer of the MLP train step, x @ W.T with W [512, 1024]: 1.98 ms scalar). Depth past
    the last whole block is copied element by element."""
    plan, builder = emitter.plan, emitter.builder
    const, lanes = emitter.const, plan.lanes
    zero = ir.Constant(emitter.element, 0.0)
    zero_vector = ir.Constant(emitter.vector, None)
    whole = builder.mul(builder.udiv(kc, const(lanes)), const(lanes))  # depth in whole blocks
    with CountedLoop(builder, const(0), nc, plan.nr, "packt.jr") as jr:
        panel = builder.gep(emitter.packed_b, [builder.mul(jr, kc)], inbounds=True)
        first = builder.add(jc, jr)
        rows = []  # per column of the panel: (column exists, its row of Bt from depth pc on)
        for c in range(plan.nr):
            column = builder.add(first, const(c))
            valid = builder.icmp_signed("<", column, const(plan.n))
            clamped = builder.select(valid, column, first)  # a column that exists
            rows.append((valid, builder.gep(emitter.b, [builder.add(
                builder.mul(clamped, const(plan.k)), pc)], inbounds=True)))
        with builder.if_then(builder.icmp_signed(">", whole, const(0))), \
                CountedLoop(builder, const(0), whole, lanes, "packt.p") as p0:
            for v in range(plan.nr // lanes):
                loaded = []
                for valid, row in rows[v * lanes:(v + 1) * lanes]:
                    vector = emitter.load_vector(builder.gep(row, [p0], inbounds=True), align=4)
                    loaded.append(builder.select(valid, vector, zero_vector))
                for step, vector in enumerate(transpose_vectors(builder, loaded)):
                    offset = builder.add(builder.mul(builder.add(p0, const(step)),
                                                     const(plan.nr)), const(v * lanes))
                    emitter.store_vector(vector, builder.gep(panel, [offset], inbounds=True),
                                         align=64)
        with builder.if_then(builder.icmp_signed("<", whole, kc)), \
                CountedLoop(builder, whole, kc, 1, "packt.rest") as p:
            for c, (valid, row) in enumerate(rows):
                value = builder.load(builder.gep(row, [p], inbounds=True))
                target = builder.gep(panel, [builder.add(builder.mul(p, const(plan.nr)),
                                                         const(c))], inbounds=True)
                builder.store(builder.select(valid, value, zero), target)


def transpose_vectors(builder: ir.IRBuilder, rows: Sequence[ir.Value]) -> list[ir.Value]:
    """The transpose of a square block held as `len(rows)` vectors of as many elements (a
    power of two): element j of result i is element i of `rows[j]`.

    Each stage swaps one bit of the row index with the same bit of the column index, pairing
    rows that differ in that bit: with b the bit's value, the lower row takes its own elements
    where the column's bit is clear and its partner's element b columns to the left where it
    is set; the upper row the partner's element b to the right, or its own. log2(n) stages of
    n two-input shuffles, which x86 does as unpack or permute instructions."""
    count = len(rows)
    if count & (count - 1) or any(row.type.count != count for row in rows):
        raise ValueError(f"transpose_vectors: need n vectors of n elements, n a power of two; "
                         f"got {count} of {[row.type.count for row in rows]}")
    rows = list(rows)
    bit = 1
    while bit < count:
        low_mask = [j if not j & bit else count + j - bit for j in range(count)]
        high_mask = [j + bit if not j & bit else count + j for j in range(count)]
        for low in range(count):
            if low & bit:
                continue
            high = low | bit
            rows[low], rows[high] = (
                builder.shuffle_vector(rows[low], rows[high],
                                       ir.Constant(ir.VectorType(I32, count), low_mask)),
                builder.shuffle_vector(rows[low], rows[high],
                                       ir.Constant(ir.VectorType(I32, count), high_mask)))
        bit *= 2
    return rows


def _dtype_name(array: np.ndarray) -> str:
    names = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
    if array.dtype not in names:
        raise ValueError(f"gemm: packed operands are float32 or float64, got {array.dtype}")
    return names[array.dtype]


def gemm_scratch_bytes(m: int, n: int, k: int, *, dtype: str = "f32", lanes: int | None = None,
                       blocking: GemmBlocking | None = None) -> int:
    """Bytes of scratch one call of `emit_gemm(..., m, n, k)` needs (per concurrent thread)."""
    return _plan(m, n, k, dtype, lanes, blocking).scratch_bytes


def extra_arguments(builder: ir.IRBuilder) -> tuple[ir.Argument, ...]:
    """Inside an epilogue: the gemm function's extra arguments (those given as `extra_args`)."""
    return tuple(builder.function.args[ARGUMENT_COUNT:])


def column_mask(builder: ir.IRBuilder, col_index: ir.Value, n: int, lanes: int) -> ir.Value:
    """`<lanes x i1>`: which lanes of a vector starting at column `col_index` lie inside [0, n).

    An epilogue that loads a length-n vector (a bias) uses it for a masked load at the last
    columns, where the stored lanes are masked the same way.
    """
    offsets = ir.Constant(ir.VectorType(I64, lanes), [ir.Constant(I64, i) for i in range(lanes)])
    columns = builder.add(splat(builder, col_index, lanes), offsets)
    return builder.icmp_signed("<", columns, splat(builder, ir.Constant(I64, n), lanes))


def masked_load(builder: ir.IRBuilder, pointer: ir.Value, mask: ir.Value,
                vector_type: ir.VectorType) -> ir.Value:
    """`llvm.masked.load`: lanes outside the mask read nothing and come back as zero."""
    function = _masked_intrinsic(builder.module, "load", vector_type)
    vector_pointer = builder.bitcast(pointer, vector_type.as_pointer())
    return builder.call(function, [vector_pointer, ir.Constant(I32, 4), mask,
                                   ir.Constant(vector_type, None)])


def masked_store(builder: ir.IRBuilder, value: ir.Value, pointer: ir.Value,
                 mask: ir.Value) -> None:
    """`llvm.masked.store`: only the lanes inside the mask are written."""
    function = _masked_intrinsic(builder.module, "store", value.type)
    vector_pointer = builder.bitcast(pointer, value.type.as_pointer())
    builder.call(function, [value, vector_pointer, ir.Constant(I32, 4), mask])


def emit_gemm(module: ir.Module, name: str, m: int, n: int, k: int, *, dtype: str = "f32",
              epilogue: Epilogue | None = None, lanes: int | None = None,
              extra_args: Sequence[ir.Type] = (),
              blocking: GemmBlocking | None = None, a_packed: bool = False,
              b_packed: bool = False, b_packer: BPacker | None = None,
              a_rows: ARows | None = None, a_segments: tuple[int, int] | None = None,
              prefetch_b: bool = False) -> ir.Function:
    """Add `void name(A, B, C, i64 row_begin, i64 row_end, scratch, *extra)` to `module`.

    It computes `C[row_begin:row_end] = A[row_begin:row_end] @ B` (row-major, A [m, k],
    B [k, n], C [m, n]); `scratch` must hold `gemm_scratch_bytes(m, n, k)` bytes, 64-byte
    aligned. `epilogue(builder, vector, row_index, col_index)` rewrites each output vector
    (row `row_index`, columns `col_index` onwards) just before its final store; it reaches the
    function's extra arguments through `extra_arguments(builder)`, and lanes past column n are
    discarded (see `column_mask` for loads). `lanes` is the vector width in elements (16 f32
    for AVX-512, 8 for AVX2); `blocking` overrides the register and cache block sizes.
    `a_rows` reads A in place through row pointers instead of packing it (see `ARows`);
    `a_segments` = (run, stride): A's depth block is runs of `run` elements `stride` apart
    from each row pointer. `prefetch_b`: each micro-kernel call fetches part of the next
    micro-panel of B into L2 (for a prepacked B that comes from memory: a convolution's
    weights used by few rows).
    """
    plan = _plan(m, n, k, dtype, lanes, blocking)
    element = _ELEMENT_TYPES[dtype][0]
    pointer = element.as_pointer()
    function_type = ir.FunctionType(ir.VoidType(), [pointer, pointer, pointer, I64, I64, pointer,
                                                    *extra_args])
    function = ir.Function(module, function_type, name)
    for index, arg_name in enumerate(("A", "B", "C", "row_begin", "row_end", "scratch")):
        function.args[index].name = arg_name
    for index in (0, 1, 2):
        function.args[index].add_attribute("noalias")
    function.args[5].add_attribute("noalias")
    GemmEmitter(function, plan, element, epilogue, a_packed, b_packer, b_packed, a_rows,
                a_segments, prefetch_b).emit()
    return function


def splat(builder: ir.IRBuilder, scalar: ir.Value, lanes: int) -> ir.Value:
    """A vector of `lanes` copies of `scalar` (insertelement + zero shuffle: a broadcast)."""
    vector_type = ir.VectorType(scalar.type, lanes)
    single = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar,
                                    ir.Constant(I32, 0))
    return builder.shuffle_vector(single, ir.Constant(vector_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))


def _masked_intrinsic(module: ir.Module, kind: str, vector_type: ir.VectorType) -> ir.Function:
    element = "f32" if isinstance(vector_type.element, ir.FloatType) else "f64"
    name = f"llvm.masked.{kind}.v{vector_type.count}{element}.p0"
    if name in module.globals:
        return module.globals[name]
    mask_type = ir.VectorType(I1, vector_type.count)
    if kind == "load":
        signature = ir.FunctionType(vector_type, [vector_type.as_pointer(), I32, mask_type,
                                                  vector_type])
    else:
        signature = ir.FunctionType(ir.VoidType(), [vector_type, vector_type.as_pointer(), I32,
                                                    mask_type])
    return ir.Function(module, signature, name)


class CountedLoop:
    """A counted loop `for index in range(start, stop, step)` with the body built in between.

        with CountedLoop(builder, start, stop, step, "jc") as index: ...body...
    `start < stop` must hold (every loop here runs at least once), so the test is at the bottom.
    """

    def __init__(self, builder: ir.IRBuilder, start: ir.Value, stop: ir.Value, step: int,
                 name: str) -> None:
        self.builder, self.start, self.stop, self.step, self.name = builder, start, stop, step, name

    def __enter__(self) -> ir.Value:
        builder = self.builder
        self.preheader = builder.block
        self.body = builder.append_basic_block(f"{self.name}.body")
        builder.branch(self.body)
        builder.position_at_end(self.body)
        self.index = builder.phi(I64, name=self.name)
        self.index.add_incoming(self.start, self.preheader)
        return self.index

    def __exit__(self, *exc: object) -> None:
        builder = self.builder
        following = builder.add(self.index, ir.Constant(I64, self.step), name=f"{self.name}.next")
        self.index.add_incoming(following, builder.block)
        done = builder.append_basic_block(f"{self.name}.done")
        builder.cbranch(builder.icmp_signed("<", following, self.stop), self.body, done)
        builder.position_at_end(done)


class GemmEmitter:
    """Emits one GEMM function; a `BPacker` gets it to reach the builder, plan and buffers."""

    def __init__(self, function: ir.Function, plan: _Plan, element: ir.Type,
                 epilogue: Epilogue | None, a_packed: bool = False,
                 b_packer: BPacker | None = None, b_packed: bool = False,
                 a_rows: ARows | None = None, a_segments: tuple[int, int] | None = None,
                 prefetch_b: bool = False) -> None:
        self.function, self.plan, self.element, self.epilogue = function, plan, element, epilogue
        self.a_packed, self.b_packer, self.b_packed = a_packed, b_packer, b_packed
        self.a_rows = a_rows
        self.a_segments = a_segments
        self.prefetch_next_panel = prefetch_b
        self.vector = ir.VectorType(element, plan.lanes)
        self.nv = plan.nr // plan.lanes
        self.builder = ir.IRBuilder(function.append_basic_block("entry"))
        self.fma = module_fma(function.module, self.vector)

    def const(self, value: int) -> ir.Constant:
        return ir.Constant(I64, value)

    def emit(self) -> None:
        plan, builder = self.plan, self.builder
        a, b, c, row_begin, row_end, scratch = self.function.args[:ARGUMENT_COUNT]
        self.a, self.b, self.c, self.row_end = a, b, c, row_end
        self.packed_b = self.b_block = scratch
        self.packed_a = builder.gep(scratch, [self.const(plan.packed_a_offset)], inbounds=True)
        done = self.function.append_basic_block("return")
        work = self.function.append_basic_block("work")
        builder.cbranch(builder.icmp_signed("<", row_begin, row_end), work, done)
        builder.position_at_end(work)
        with CountedLoop(builder, self.const(0), self.const(plan.n), plan.nc, "jc") as jc:
            nc = self.minimum(self.const(plan.nc), builder.sub(self.const(plan.n), jc))
            with CountedLoop(builder, self.const(0), self.const(plan.k), plan.kc, "pc") as pc:
                kc = self.minimum(self.const(plan.kc), builder.sub(self.const(plan.k), pc))
                if self.b_packed:  # block (jc, pc) of the prepacked B
                    width = builder.mul(builder.udiv(builder.add(nc, self.const(plan.nr - 1)),
                                                     self.const(plan.nr)), self.const(plan.nr))
                    start = builder.add(builder.mul(jc, self.const(plan.k)),
                                        builder.mul(pc, width))
                    self.b_block = builder.gep(b, [start], inbounds=True)
                elif self.b_packer is None:
                    self.pack_b(jc, pc, nc, kc)
                else:
                    self.b_packer(self, jc, pc, nc, kc)
                first = builder.icmp_signed("==", pc, self.const(0))
                last = builder.icmp_signed("==", builder.add(pc, kc), self.const(plan.k))
                with CountedLoop(builder, row_begin, row_end, plan.mc, "ic") as ic:
                    mc = self.minimum(self.const(plan.mc), builder.sub(row_end, ic))
                    if self.a_rows is not None:  # read in place by `micro_tile`
                        a_block = None
                    elif self.a_packed:  # this depth block of the prepacked A, from row ic on
                        block = builder.mul(pc, self.const(_round_up(plan.m, plan.mr)))
                        a_block = builder.gep(self.a, [builder.add(block, builder.mul(ic, kc))],
                                              inbounds=True)
                    else:
                        self.pack_a(ic, pc, mc, kc)
                        a_block = self.packed_a
                    edge = self.edge_vectors()
                    if not edge:
                        with (CountedLoop(builder, self.const(0), nc, plan.nr, "jr") as jr,
                              CountedLoop(builder, self.const(0), mc, plan.mr, "ir") as ir_):
                            self.micro_tile(a_block, ic, ir_, jc, jr, pc, kc, first, last,
                                            self.nv)
                    else:
                        self.tiles_with_edge(a_block, ic, jc, nc, mc, pc, kc, first, last, edge)
        builder.branch(done)
        builder.position_at_end(done)
        builder.ret_void()

    def edge_vectors(self) -> int:
        """Vectors of the narrower tiles of C's last, partial NR columns, or 0 for tiles all NR
        wide. Narrower only where that saves 5 % of the multiplies and leaves at least
        EDGE_ACCUMULATORS accumulators: a tile of fewer waits on its FMAs' latency and on L2
        (an 8 x 1 edge tile of a 28 x 28 convolution made it 10 % slower; a 12 x 1 one of a
        14 x 14 convolution, 13 vectors a row instead of 14, 6-12 % faster; benchmarks/NOTES.md)."""
        plan = self.plan
        edge = -(-(plan.n % plan.nr) // plan.lanes) % self.nv
        if not NARROW_EDGE or not edge or plan.mr * edge < EDGE_ACCUMULATORS:
            return 0
        vectors = -(-plan.n // plan.nr) * self.nv
        return edge if (self.nv - edge) >= EDGE_SAVING * vectors else 0

    def tiles_with_edge(self, a_block: ir.Value | None, ic: ir.Value, jc: ir.Value,
                        nc: ir.Value, mc: ir.Value, pc: ir.Value, kc: ir.Value,
                        first: ir.Value, last: ir.Value, edge: int) -> None:
        """The tiles of a (jc, ic) block: NR wide up to the last whole NR columns, then (in the
        last jc block, whose nc is not a multiple of NR) `edge` vectors wide."""
        plan, builder = self.plan, self.builder
        full = builder.mul(builder.udiv(nc, self.const(plan.nr)), self.const(plan.nr))
        with (builder.if_then(builder.icmp_signed(">", full, self.const(0))),
              CountedLoop(builder, self.const(0), full, plan.nr, "jr") as jr,
              CountedLoop(builder, self.const(0), mc, plan.mr, "ir") as ir_):
            self.micro_tile(a_block, ic, ir_, jc, jr, pc, kc, first, last, self.nv)
        with (builder.if_then(builder.icmp_signed("<", full, nc)),
              CountedLoop(builder, self.const(0), mc, plan.mr, "ir.edge") as ir_):
            self.micro_tile(a_block, ic, ir_, jc, full, pc, kc, first, last, edge)

    def minimum(self, left: ir.Value, right: ir.Value) -> ir.Value:
        return self.builder.select(self.builder.icmp_signed("<", left, right), left, right)

    def pack_b(self, jc: ir.Value, pc: ir.Value, nc: ir.Value, kc: ir.Value) -> None:
        """Bp[jr / NR][p][0:NR] = B[pc + p, jc + jr : jc + jr + NR], zero past column n."""
        plan, builder = self.plan, self.builder
        with CountedLoop(builder, self.const(0), nc, plan.nr, "pack_b.jr") as jr:
            panel = builder.gep(self.packed_b, [builder.mul(jr, kc)], inbounds=True)
            column = builder.add(jc, jr)
            masks = [column_mask(builder, builder.add(column, self.const(v * plan.lanes)),
                                 plan.n, plan.lanes) for v in range(self.nv)]
            with CountedLoop(builder, self.const(0), kc, 1, "pack_b.p") as p:
                row = builder.mul(builder.add(pc, p), self.const(plan.n))
                source = builder.gep(self.b, [builder.add(row, column)], inbounds=True)
                target = builder.gep(panel, [builder.mul(p, self.const(plan.nr))], inbounds=True)
                for v in range(self.nv):
                    offset = self.const(v * plan.lanes)
                    value = masked_load(builder, builder.gep(source, [offset]), masks[v],
                                        self.vector)
                    self.store_vector(value, builder.gep(target, [offset]), align=64)

    def pack_a(self, ic: ir.Value, pc: ir.Value, mc: ir.Value, kc: ir.Value) -> None:
        """Ap[ir / MR][p][r] = A[ic + ir + r, pc + p], zero for rows at or past row_end."""
        plan, builder = self.plan, self.builder
        zero = ir.Constant(self.element, 0.0)
        with CountedLoop(builder, self.const(0), mc, plan.mr, "pack_a.ir") as ir_:
            panel = builder.gep(self.packed_a, [builder.mul(ir_, kc)], inbounds=True)
            first_row = builder.add(ic, ir_)
            rows = []
            for r in range(plan.mr):
                row = builder.add(first_row, self.const(r))
                valid = builder.icmp_signed("<", row, self.row_end)
                clamped = builder.select(valid, row, first_row)  # a row that exists
                start = builder.gep(self.a, [builder.add(builder.mul(clamped, self.const(plan.k)),
                                                         pc)], inbounds=True)
                rows.append((valid, start))
            with CountedLoop(builder, self.const(0), kc, 1, "pack_a.p") as p:
                target = builder.gep(panel, [builder.mul(p, self.const(plan.mr))], inbounds=True)
                for r, (valid, start) in enumerate(rows):
                    value = builder.load(builder.gep(start, [p], inbounds=True))
                    builder.store(builder.select(valid, value, zero),
                                  builder.gep(target, [self.const(r)], inbounds=True))

    def store_vector(self, value: ir.Value, pointer: ir.Value, align: int) -> None:
        vector_pointer = self.builder.bitcast(pointer, self.vector.as_pointer())
        self.builder.store(value, vector_pointer, align=align)

    def load_vector(self, pointer: ir.Value, align: int) -> ir.Value:
        vector_pointer = self.builder.bitcast(pointer, self.vector.as_pointer())
        return self.builder.load(vector_pointer, align=align)

    def micro_tile(self, a_block: ir.Value | None, ic: ir.Value, ir_: ir.Value,
                   jc: ir.Value, jr: ir.Value, pc: ir.Value, kc: ir.Value, first: ir.Value,
                   last: ir.Value, vectors: int) -> None:
        """One MR x (`vectors` x lanes) tile of C: the FMA loop over kc, then the (masked)
        store. `vectors` is NR / lanes but at the edge of C, where the zero columns of the
        B panel past `vectors` are not multiplied. A comes from the packed block `a_block`,
        or through `a_rows` (then `a_block` is None); with `a_segments` (runs of `run`
        elements, `stride` apart) the loop over kc is a loop over its runs around a loop over
        each run."""
        plan, builder = self.plan, self.builder
        if self.a_rows is None:
            a_source: ir.Value | list[ir.Value] = builder.gep(
                a_block, [builder.mul(ir_, kc)], inbounds=True)
        else:
            a_source = self.a_rows(self, builder.add(ic, ir_), pc)
        b_panel = builder.gep(self.b_block, [builder.mul(jr, kc)], inbounds=True)
        zero = ir.Constant(self.vector, None)
        initial = [[zero] * vectors for _ in range(plan.mr)]
        if self.a_rows is None or self.a_segments is None:
            updated = self.depth_loop(a_source, b_panel, ir_, kc, kc, initial)
        else:
            run, stride = self.a_segments
            outer, segment, carried = self.loop_header("kernel.s", "s", initial, "a")
            shifted = [builder.gep(row, [builder.mul(segment, self.const(stride))],
                                   inbounds=True) for row in a_source]
            b_run = builder.gep(b_panel, [builder.mul(segment, self.const(run * plan.nr))],
                                inbounds=True)
            updated = self.depth_loop(shifted, b_run, ir_, self.const(run), kc, carried)
            following = builder.add(segment, self.const(1))
            segment.add_incoming(following, builder.block)
            self.add_incoming(carried, updated, builder.block)
            done = builder.append_basic_block("kernel.s.done")
            builder.cbranch(builder.icmp_signed("<", builder.mul(following, self.const(run)), kc),
                            outer, done)
            builder.position_at_end(done)
        self.store_tile(updated, builder.add(ic, ir_), builder.add(jc, jr), first, last)

    def loop_header(self, name: str, index_name: str, initial: list[list[ir.Value]],
                    prefix: str) -> tuple[ir.Block, ir.Instruction, list[list[ir.Instruction]]]:
        """A new loop block entered from the current one: (block, its index phi from 0, one
        accumulator phi per value of `initial`, entered with it); the caller adds the back
        edges."""
        builder = self.builder
        preheader = builder.block
        block = builder.append_basic_block(name)
        builder.branch(block)
        builder.position_at_end(block)
        index = builder.phi(I64, name=index_name)
        index.add_incoming(self.const(0), preheader)
        phis = [[builder.phi(self.vector, name=f"{prefix}{r}_{v}") for v in range(len(row))]
                for r, row in enumerate(initial)]
        self.add_incoming(phis, initial, preheader)
        return block, index, phis

    @staticmethod
    def add_incoming(phis: list[list[ir.Instruction]], values: list[list[ir.Value]],
                     block: ir.Block) -> None:
        for phi_row, value_row in zip(phis, values, strict=True):
            for phi, value in zip(phi_row, value_row, strict=True):
                phi.add_incoming(value, block)

    def depth_loop(self, a_source: ir.Value | list[ir.Value], b_panel: ir.Value,
                   ir_: ir.Value, steps: ir.Value, kc: ir.Value,
                   initial: list[list[ir.Value]]) -> list[list[ir.Value]]:
        """The FMA loop over `steps` steps of depth from the accumulators `initial`: B from
        `b_panel` (NR a step), A from the packed sliver `a_source` or through its row pointers;
        returns the accumulators after it. `kc` is the depth block's (the micro-panel's)
        depth."""
        plan, builder = self.plan, self.builder
        vectors = len(initial[0])
        loop, p, accumulators = self.loop_header("kernel.p", "p", initial, "c")
        b_step = builder.gep(b_panel, [builder.mul(p, self.const(plan.nr))], inbounds=True)
        b_vectors = [self.load_vector(builder.gep(b_step, [self.const(v * plan.lanes)]), 64)
                     for v in range(vectors)]
        if self.prefetch_next_panel:
            # One line of the next micro-panel of B per k step, into L2: the tile's row sliver
            # picks which of the step's `vectors` lines, so the slivers of a panel share the
            # fetch of the next one between them.
            sliver = builder.udiv(ir_, self.const(plan.mr))
            which = builder.urem(builder.add(p, sliver), self.const(vectors))
            ahead = builder.gep(b_step, [builder.add(builder.mul(kc, self.const(plan.nr)),
                                                     builder.mul(which, self.const(plan.lanes)))])
            builder.call(_prefetch_intrinsic(builder.module),
                         [builder.bitcast(ahead, ir.IntType(8).as_pointer()), ir.Constant(I32, 0),
                          ir.Constant(I32, 2), ir.Constant(I32, 1)])
        if isinstance(a_source, list):  # row pointers: A[r, p] at rows[r] + p
            a_pointers = [builder.gep(row, [p], inbounds=True) for row in a_source]
        else:  # the packed sliver: A[r, p] at p * MR + r
            a_step = builder.gep(a_source, [builder.mul(p, self.const(plan.mr))], inbounds=True)
            a_pointers = [builder.gep(a_step, [self.const(r)], inbounds=True)
                          for r in range(plan.mr)]
        updated = []
        for r in range(plan.mr):
            a_value = builder.load(a_pointers[r])
            broadcast = splat(builder, a_value, plan.lanes)
            updated.append([builder.call(self.fma, [broadcast, b_vectors[v], accumulators[r][v]])
                            for v in range(vectors)])
        following = builder.add(p, self.const(1))
        p.add_incoming(following, loop)
        self.add_incoming(accumulators, updated, loop)
        after = builder.append_basic_block("kernel.after")
        builder.cbranch(builder.icmp_signed("<", following, steps), loop, after)
        builder.position_at_end(after)
        return updated

    def store_tile(self, tile: list[list[ir.Value]], row0: ir.Value, col0: ir.Value,
                   first: ir.Value, last: ir.Value) -> None:
        """C[row0 + r, col0 + v * lanes ...] = tile (+ C unless first), epilogue if last.

        One store path per case, picked by branches on loop invariants: the first depth block
        stores without reading C (a read of lines that are not cached yet), later ones add to
        it, and the last one passes each vector through the epilogue.
        """
        plan, builder = self.plan, self.builder
        columns = [builder.add(col0, self.const(v * plan.lanes)) for v in range(len(tile[0]))]
        masks = [column_mask(builder, column, plan.n, plan.lanes) for column in columns]
        dispatch = builder.block
        finish = self.function.append_basic_block("tile.done")
        entries = []
        for accumulate in (False, True):
            kind = "add" if accumulate else "set"
            if self.epilogue is None:
                paths = {False: self.function.append_basic_block(f"tile.{kind}")}
                entries.append(paths[False])
            else:
                entry = self.function.append_basic_block(f"tile.{kind}")
                paths = {final: self.function.append_basic_block(
                    f"tile.{kind}.{'final' if final else 'partial'}") for final in (False, True)}
                builder.position_at_end(entry)
                builder.cbranch(last, paths[True], paths[False])
                entries.append(entry)
            for final, block in paths.items():
                builder.position_at_end(block)
                self.store_rows(tile, row0, columns, masks, accumulate, final)
                builder.branch(finish)
        builder.position_at_end(dispatch)
        builder.cbranch(first, entries[0], entries[1])
        builder.position_at_end(finish)

    def store_rows(self, tile: list[list[ir.Value]], row0: ir.Value, columns: list[ir.Value],
                   masks: list[ir.Value], accumulate: bool, final: bool) -> None:
        """The masked stores of the tile's rows before `row_end` (adding C, epilogue)."""
        plan, builder = self.plan, self.builder
        for r in range(plan.mr):
            row = builder.add(row0, self.const(r))
            row_block = self.function.append_basic_block(f"tile.row{r}")
            next_block = self.function.append_basic_block(f"tile.after_row{r}")
            builder.cbranch(builder.icmp_signed("<", row, self.row_end), row_block, next_block)
            builder.position_at_end(row_block)
            row_start = builder.mul(row, self.const(plan.n))
            for v in range(len(columns)):
                pointer = builder.gep(self.c, [builder.add(row_start, columns[v])],
                                      inbounds=True)
                value = tile[r][v]
                if accumulate:
                    value = builder.fadd(value, masked_load(builder, pointer, masks[v],
                                                            self.vector))
                if final:
                    value = self.epilogue(builder, value, row, columns[v])
                masked_store(builder, value, pointer, masks[v])
            builder.branch(next_block)
            builder.position_at_end(next_block)


def _prefetch_intrinsic(module: ir.Module) -> ir.Function:
    name = "llvm.prefetch.p0"
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), I32,
                                                               I32, I32]), name)


def module_fma(module: ir.Module, vector_type: ir.VectorType) -> ir.Function:
    """The `llvm.fma` intrinsic for a vector type, declared once per module."""
    element = "f32" if isinstance(vector_type.element, ir.FloatType) else "f64"
    name = f"llvm.fma.v{vector_type.count}{element}"
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, ir.FunctionType(vector_type, [vector_type] * 3), name)
