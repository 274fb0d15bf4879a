"""What the compiler knows about the machine it compiles for: one frozen value, passed everywhere.

    Target.host()                    # the CPU this process runs on
    Target.cpu("x86-64-v3")          # any x86-64 with AVX2 and FMA (no AVX-512 code)
    Target.cpu("znver4", cores=4)    # a named CPU: ISA, registers, FMA units, caches from a table
    Target.cuda("sm_90")             # an NVIDIA GPU by compute capability
    Target.parse("cpu:sapphirerapids")

Passes, lowering, schedules, code generation and the compile cache read a `Target`; nothing
reads the host behind its back. `Target.host()` is the only place that looks at the machine
(LLVM's view of the CPU's name and features, the affinity mask, the cache sizes in /sys).

Vector widths count bits: `vector_bits` is the widest float vector register (512 with
AVX-512, 256 with AVX2, 128 otherwise), `prefer_vector_bits` the width the auto-vectorized
loops (elementwise, reductions) use, which may be narrower where the wide registers clock
lower. Hand-written kernels (the packed GEMM) always use `vector_bits`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ember.errors import EmberError, UnsupportedError

X86_TRIPLE = "x86_64-unknown-linux-gnu"
NVPTX_TRIPLE = "nvptx64-nvidia-cuda"

KIB, MIB = 1024, 1024 * 1024


@dataclass(frozen=True)
class _CpuFacts:
    """A CPU model's defaults: widest vectors, FMAs per cycle at that width, caches per core."""

    vector_bits: int
    fma_per_cycle: int
    l1d: int = 48 * KIB
    l2: int = 1 * MIB
    l3: int = 32 * MIB
    fma: bool = True
    prefer_vector_bits: int = 0  # auto-vectorized loops' width; 0 = vector_bits


# LLVM CPU names Ember knows. FMA counts are per core and cycle at `vector_bits` (Zen 4 runs
# AVX-512 on 256-bit units: one 512-bit FMA per cycle; Intel server cores have two 512-bit FMA
# ports). Caches are per core for L1d and L2, per chip for L3 (typical parts).
# Loop vector width: 512 bits wherever AVX-512 is there, measured on Zen 4 (transcendental
# chains 1.25-1.36x faster than at 256, memory-bound loops even; benchmarks/NOTES.md), and on
# Ice Lake and later Intel servers, whose 512-bit frequency penalty is small (LLVM's own tuning
# would give them 256-bit loops); Skylake-SP and Cascade Lake keep 256 (their AVX-512 licence
# lowers the clock of the whole core).
_CPUS: dict[str, _CpuFacts] = {
    "x86-64": _CpuFacts(128, 2, 32 * KIB, 256 * KIB, 8 * MIB, fma=False),
    "x86-64-v2": _CpuFacts(128, 2, 32 * KIB, 256 * KIB, 8 * MIB, fma=False),
    "x86-64-v3": _CpuFacts(256, 2, 32 * KIB, 256 * KIB, 8 * MIB),
    "x86-64-v4": _CpuFacts(512, 1, 48 * KIB, 1 * MIB, 32 * MIB),
    "haswell": _CpuFacts(256, 2, 32 * KIB, 256 * KIB, 8 * MIB),
    "skylake": _CpuFacts(256, 2, 32 * KIB, 256 * KIB, 8 * MIB),
    "skylake-avx512": _CpuFacts(512, 2, 32 * KIB, 1 * MIB, 32 * MIB, prefer_vector_bits=256),
    "cascadelake": _CpuFacts(512, 2, 32 * KIB, 1 * MIB, 32 * MIB, prefer_vector_bits=256),
    "icelake-server": _CpuFacts(512, 2, 48 * KIB, 1280 * KIB, 48 * MIB),
    "sapphirerapids": _CpuFacts(512, 2, 48 * KIB, 2 * MIB, 105 * MIB),
    "emeraldrapids": _CpuFacts(512, 2, 48 * KIB, 2 * MIB, 320 * MIB),
    "graniterapids": _CpuFacts(512, 2, 48 * KIB, 2 * MIB, 480 * MIB),
    "znver2": _CpuFacts(256, 2, 32 * KIB, 512 * KIB, 16 * MIB),
    "znver3": _CpuFacts(256, 2, 32 * KIB, 512 * KIB, 32 * MIB),
    "znver4": _CpuFacts(512, 1, 32 * KIB, 1 * MIB, 32 * MIB),
    "znver5": _CpuFacts(512, 2, 48 * KIB, 1 * MIB, 32 * MIB),
}

CUDA_ARCHES = ("sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_90a", "sm_100")


@dataclass(frozen=True)
class Target:
    """A compilation target. Build it with `host()`, `cpu(name)`, `cuda(arch)` or `parse`.

    kind: "cpu" or "cuda". name: LLVM's CPU name ("znver4", "x86-64-v3") or the GPU arch
    ("sm_90"). features: LLVM's feature string ("+avx2,-avx512f,...", "" for the CPU's own
    defaults). cores: threads that parallel loops may use. Caches are per core (L1d, L2) and
    per chip (L3), in bytes.
    """

    kind: str
    name: str
    triple: str
    features: str = ""
    vector_bits: int = 128
    prefer_vector_bits: int = 128
    fma_per_cycle: int = 1
    vector_registers: int = 16
    cores: int = 1
    l1d_bytes: int = 32 * KIB
    l2_bytes: int = 256 * KIB
    l3_bytes: int = 8 * MIB
    has_fma: bool = False
    # Estimated work (`ember.lower.schedule.estimated_work`, cheap-op units) below which a
    # loop stays on one thread: measured on Zen 4, where a parallel region costs 0.5-8 us.
    min_parallel_work: int = 500_000
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "cuda"):
            raise EmberError(f"unknown target kind {self.kind!r} (expected 'cpu' or 'cuda')")
        if self.vector_bits not in (128, 256, 512) or self.prefer_vector_bits not in (
                128, 256, 512) or self.prefer_vector_bits > self.vector_bits:
            raise EmberError(f"target {self.name}: vector widths must be 128, 256 or 512 bits "
                             f"(preferred <= widest), got {self.prefer_vector_bits} and "
                             f"{self.vector_bits}")
        if self.cores < 1:
            raise EmberError(f"target {self.name}: cores must be at least 1, got {self.cores}")

    # -- constructors ------------------------------------------------------------------------

    @staticmethod
    def host() -> Target:
        """The CPU this process runs on (detected once per process)."""
        return _host()

    @staticmethod
    def cpu(name: str, *, cores: int | None = None, features: str = "",
            prefer_vector_bits: int | None = None) -> Target:
        """A named x86-64 CPU (LLVM's names). `cores` defaults to the CPUs this process may
        use; `features` adds to or removes from the model's ("+avx512f,-avx512bw")."""
        facts = _CPUS.get(name)
        if facts is None:
            raise UnsupportedError(f"unknown CPU {name!r} (known: {', '.join(sorted(_CPUS))})")
        vector_bits = facts.vector_bits
        if "-avx512f" in features.split(","):
            vector_bits = min(vector_bits, 256)
        prefer = prefer_vector_bits or facts.prefer_vector_bits or vector_bits
        return Target(
            kind="cpu", name=name, triple=X86_TRIPLE, features=features,
            vector_bits=vector_bits, prefer_vector_bits=min(prefer, vector_bits),
            fma_per_cycle=facts.fma_per_cycle,
            vector_registers=32 if vector_bits == 512 else 16,
            cores=cores if cores is not None else available_cpus(),
            l1d_bytes=facts.l1d, l2_bytes=facts.l2, l3_bytes=facts.l3, has_fma=facts.fma)

    @staticmethod
    def cuda(arch: str = "sm_90") -> Target:
        """An NVIDIA GPU of compute capability `arch` ("sm_80", "sm_90", "sm_90a", ...)."""
        if arch not in CUDA_ARCHES:
            raise UnsupportedError(f"unknown CUDA arch {arch!r} (known: "
                                   f"{', '.join(CUDA_ARCHES)})")
        return Target(kind="cuda", name=arch, triple=NVPTX_TRIPLE, vector_bits=128,
                      prefer_vector_bits=128, fma_per_cycle=1, vector_registers=255, cores=1,
                      has_fma=True)

    @staticmethod
    def parse(text: str | Target) -> Target:
        """"cpu" (the host), "cuda" (sm_90), "cpu:NAME", "cuda:ARCH", or a Target as is."""
        if isinstance(text, Target):
            return text
        if not isinstance(text, str):
            raise EmberError(f"target must be 'cpu', 'cuda' or an ember.Target, got "
                             f"{type(text).__name__}")
        kind, _, name = text.strip().partition(":")
        if kind == "cpu":
            return Target.cpu(name) if name and name != "host" else Target.host()
        if kind == "cuda":
            return Target.cuda(name or "sm_90")
        raise UnsupportedError(f"unknown target {text!r} (expected 'cpu', 'cuda', 'cpu:NAME' "
                               "or 'cuda:ARCH')")

    def with_(self, **changes: object) -> Target:
        """A copy with some fields changed: `Target.host().with_(cores=1)`."""
        return replace(self, **changes)  # type: ignore[arg-type]

    # -- facts derived from the fields --------------------------------------------------------

    def lanes(self, itemsize: int = 4) -> int:
        """Elements of `itemsize` bytes in one of the widest vectors."""
        return self.vector_bits // (8 * itemsize)

    @property
    def f32_lanes(self) -> int:
        return self.lanes(4)

    @property
    def prefers_blocked_layout(self) -> bool:
        """True when convolutions should run in the blocked NCHW[b]c layout (wide vectors)."""
        return self.f32_lanes >= 8

    @property
    def key(self) -> str:
        """Everything code generation depends on, as text for cache keys."""
        return (f"{self.kind}:{self.name}:{self.triple}:{self.features}:{self.vector_bits}:"
                f"{self.prefer_vector_bits}:{self.fma_per_cycle}:{self.vector_registers}:"
                f"{self.cores}:{self.l1d_bytes}:{self.l2_bytes}:{self.l3_bytes}:"
                f"{self.min_parallel_work}")

    def describe(self) -> str:
        if self.kind == "cuda":
            return f"cuda {self.name}"
        isa = {512: "AVX-512", 256: "AVX2", 128: "SSE"}[self.vector_bits]
        fma = ", FMA" if self.has_fma else ""
        wide = (f", {self.prefer_vector_bits}-bit loops"
                if self.prefer_vector_bits != self.vector_bits else "")
        return f"{self.name} ({isa}{fma}{wide}), {self.cores} cores"

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def __repr__(self) -> str:  # the feature string alone is a thousand characters
        return (f"Target({self.kind}:{self.name}, {self.vector_bits}-bit vectors, "
                f"{self.prefer_vector_bits}-bit loops, {self.cores} cores)")

    def missing_on_host(self) -> list[str]:
        """ISA extensions this target's code may use that the host lacks ([] when the code
        runs here). Only the vector ISA is checked, which is what Ember's code generation
        chooses by; a CUDA target is never runnable as CPU code."""
        if self.kind != "cpu":
            return ["cpu"]
        host = Target.host()
        missing = []
        if self.vector_bits > host.vector_bits:
            missing.append(f"{self.vector_bits}-bit vectors")
        if self.has_fma and not host.has_fma:
            missing.append("fma")
        return missing


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which a container may restrict)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # not Linux
        return max(os.cpu_count() or 1, 1)


@functools.cache
def _host() -> Target:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    name = str(llvm.get_host_cpu_name())
    features = llvm.get_host_cpu_features()
    enabled = {key for key, on in features.items() if on}
    name = _server_core(name, enabled)
    vector_bits = 512 if "avx512f" in enabled else 256 if "avx2" in enabled else 128
    facts = _CPUS.get(name, _CpuFacts(vector_bits, 1 if vector_bits == 512 else 2))
    l1d, l2, l3 = _host_caches(facts)
    return Target(
        kind="cpu", name=name, triple=str(llvm.get_process_triple()),
        features=features.flatten(), vector_bits=vector_bits,
        prefer_vector_bits=min(facts.prefer_vector_bits or vector_bits, vector_bits),
        fma_per_cycle=facts.fma_per_cycle,
        vector_registers=32 if vector_bits == 512 else 16, cores=available_cpus(),
        l1d_bytes=l1d, l2_bytes=l2, l3_bytes=l3, has_fma="fma" in enabled,
        description="host")


# Client cores that LLVM names from the CPUID model number alone. A hypervisor may report
# a client model number for a server part (seen: Emerald Rapids guests reported as model 167,
# which LLVM calls "rocketlake"); AMX is only on Sapphire Rapids and later server cores, whose
# two 512-bit FMA ports the GEMM's register tile is sized for (measured on such a guest: the
# 1024^3 matmul at 149 GFLOP/s with the server blocking against 137 with the client one).
_CLIENT_CORES = ("rocketlake", "icelake-client", "tigerlake", "alderlake", "raptorlake",
                 "meteorlake", "arrowlake", "lunarlake", "cannonlake")


def _server_core(name: str, enabled: set[str]) -> str:
    """LLVM's name for the host's core, corrected where features prove a server part."""
    if name in _CLIENT_CORES and "amx-tile" in enabled:
        return "sapphirerapids"
    return name


def _host_caches(facts: _CpuFacts) -> tuple[int, int, int]:
    """L1d and L2 per core, L3 per chip, from /sys (the table's figures where it is absent)."""
    sizes = {"1": facts.l1d, "2": facts.l2, "3": facts.l3}
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in root.glob("index*"):
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            if kind == "Instruction":
                continue
            text = (index / "size").read_text().strip().upper()
            scale = {"K": KIB, "M": MIB}.get(text[-1:], 1)
            sizes[level] = int(text.rstrip("KMG")) * scale
    except (OSError, ValueError):
        pass
    return sizes["1"], sizes["2"], sizes["3"]
