"""Schedules: transformations of loop IR that decide how loops run.

    kernel = vectorize_innermost(kernel)   # innermost loops -> "vectorize"

Each schedule takes a `Kernel` and returns a new one (loop IR is immutable); codegen only
follows the marks.
"""

from __future__ import annotations

from dataclasses import replace

from ember.lower.loops import Kernel, Loop, is_innermost, map_loops

MIN_VECTOR_EXTENT = 4


def vectorize_innermost(kernel: Kernel) -> Kernel:
    """Mark every innermost loop of at least MIN_VECTOR_EXTENT iterations for vectorization."""

    def mark(loop: Loop, depth: int) -> Loop:
        if loop.kind == "serial" and is_innermost(loop) and loop.extent >= MIN_VECTOR_EXTENT:
            return replace(loop, kind="vectorize")
        return loop

    return replace(kernel, body=map_loops(kernel.body, mark))
