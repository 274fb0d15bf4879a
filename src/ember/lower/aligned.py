"""64-byte aligned numpy arrays: the base of a program's arena and of every constant a kernel
reads with aligned vector loads (packed GEMM panels).

    data = aligned_empty(count, np.float32)            # uninitialized, 1-D
    arena = aligned_empty(nbytes, np.uint8, zeroed=True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

ALIGNMENT = 64  # bytes: one cache line, one zmm vector


def aligned_empty(count: int, dtype: Any, *, zeroed: bool = False) -> np.ndarray:
    """A 1-D array of `count` elements whose first one is ALIGNMENT-byte aligned (zeros when
    `zeroed`, else uninitialized)."""
    size = count * np.dtype(dtype).itemsize
    raw = (np.zeros if zeroed else np.empty)(size + ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start : start + size].view(dtype)


def is_aligned(data: np.ndarray) -> bool:
    """Whether `data` is C-contiguous with its first element ALIGNMENT-byte aligned."""
    return bool(data.flags.c_contiguous) and data.ctypes.data % ALIGNMENT == 0
