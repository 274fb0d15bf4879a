"""What the compiler knows about the machine it compiles for.

    Target.host()               # the CPU this process runs on: vector width from its features
    Target(vector_width=8)      # a fixed description, for tests and cross-compilation

The vector width counts f32 lanes of the widest vector unit: 16 with AVX-512, 8 with AVX2,
4 otherwise (SSE, NEON). Passes read it to choose block sizes, such as the channel block of the
`layout` pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@cache
def host_vector_width() -> int:
    """f32 lanes of the host CPU's widest vector unit, from LLVM's view of its features."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if features.get("avx512f", False):
        return 16
    if features.get("avx2", False):
        return 8
    return 4


@cache
def host_cpu_name() -> str:
    """LLVM's name of the host CPU (`znver4`, `skylake-avx512`, ...)."""
    import llvmlite.binding as llvm

    return str(llvm.get_host_cpu_name())


@dataclass(frozen=True)
class Target:
    """A compilation target: its name and the facts passes choose by.

    `vector_width` 0 means "detect from the host CPU"; any other value is taken as given, so a
    test can describe an AVX2 machine with `Target(vector_width=8)` wherever it runs.
    """

    name: str = "cpu"
    vector_width: int = 0

    def __post_init__(self) -> None:
        if self.name != "cpu":
            raise ValueError(f"unknown target {self.name!r} (expected 'cpu')")
        if self.vector_width < 0:
            raise ValueError(f"vector_width must be >= 0, got {self.vector_width}")
        if self.vector_width == 0:
            object.__setattr__(self, "vector_width", host_vector_width())

    @property
    def prefers_blocked_layout(self) -> bool:
        """True when convolutions should run in the blocked NCHW[b]c layout (wide vectors)."""
        return self.vector_width >= 8

    @staticmethod
    def host() -> Target:
        """The CPU this process runs on."""
        return Target("cpu")
