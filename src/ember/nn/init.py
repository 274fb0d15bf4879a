"""Parameter initialization, drawn from one seedable generator (`ember.manual_seed`)."""

from __future__ import annotations

import numpy as np

_RNG = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed the generator that initializes new layers' parameters."""
    global _RNG
    _RNG = np.random.default_rng(seed)


def uniform(shape: tuple[int, ...], bound: float) -> np.ndarray:
    """U(-bound, bound) as float32 (PyTorch's default for Linear and Conv2d)."""
    return _RNG.uniform(-bound, bound, size=shape).astype(np.float32)


def normal(shape: tuple[int, ...], std: float = 1.0) -> np.ndarray:
    """N(0, std^2) as float32 (PyTorch's default for Embedding)."""
    return (_RNG.standard_normal(size=shape) * std).astype(np.float32)
