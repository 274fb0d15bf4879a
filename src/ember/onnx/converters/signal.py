"""Converters of ONNX signal operators: DFT as one matmul with a known real matrix.

A DFT along one axis (forward or inverse, full or one-sided) is linear over the reals in the
input's real and imaginary parts, so it is a real matrix from (n, parts in) to (m, parts out).
The importer builds that matrix in float64 by transforming each basis signal with numpy's FFT
and applies it with a float64 `matmul`.
"""

from __future__ import annotations

import numpy as np

from ember.ir.types import DType
from ember.onnx.converters.base import NodeContext, Outputs, converter, normalize_axis


def _transform(signal: np.ndarray, length: int, inverse: bool, onesided: bool) -> np.ndarray:
    """ONNX DFT of complex signals along axis 1, as [batch, m, parts] real arrays."""
    if inverse and onesided:  # a half spectrum to a real signal
        return np.fft.irfft(signal, n=length, axis=1)[..., None]
    result = np.fft.ifft(signal, n=length, axis=1) if inverse else np.fft.fft(
        signal, n=length, axis=1)
    if onesided:
        result = result[:, : length // 2 + 1]
    return np.stack([result.real, result.imag], axis=-1)


def dft_matrix(size: int, parts: int, length: int, inverse: bool, onesided: bool
               ) -> np.ndarray:
    """The [size * parts, m * parts_out] real matrix of the transform of `size` samples with
    `parts` (1 real, 2 complex) components."""
    basis = np.eye(size * parts).reshape(size * parts, size, parts)
    signal = basis[..., 0] + (1j * basis[..., 1] if parts == 2 else 0)
    return _transform(signal, length, inverse, onesided).reshape(size * parts, -1)


@converter("DFT", versions=(17, 20))
def dft(node: NodeContext) -> Outputs:
    """Forward or inverse, full or one-sided DFT along a known axis: a matmul with the
    transform's real matrix (`dft_length` known at import time)."""
    x = node.tensor(0)
    parts = x.shape[-1]
    if x.ndim < 3 or parts not in (1, 2):
        raise node.error(f"input of shape {list(x.shape)}; DFT takes [batch, ..., 1 or 2]")
    if node.opset >= 20:
        axis = int(node.static(2, "axis").reshape(-1)[0]) if node.has(2) else -2
    else:
        axis = int(node.attr("axis", 1))
    axis = normalize_axis(axis, x.ndim - 1, node)
    if axis == 0:
        raise node.error("the DFT axis cannot be the batch axis")
    inverse, onesided = bool(node.attr("inverse", 0)), bool(node.attr("onesided", 0))
    size = x.shape[axis]
    if node.has(1):
        length = int(node.static(1, "dft_length").reshape(-1)[0])
    else:
        length = 2 * (size - 1) if inverse and onesided else size
    if length < 1:
        raise node.error(f"dft_length {length} must be positive")
    matrix = dft_matrix(size, parts, length, inverse, onesided)
    # [..., n, ..., parts] -> [rest, n * parts] @ matrix -> [rest, m, parts out] -> back
    order = [a for a in range(x.ndim - 1) if a != axis] + [axis, x.ndim - 1]
    moved = x if order == list(range(x.ndim)) else node.emit("transpose", x, perm=tuple(order))
    rest = moved.shape[:-2]
    flat = moved.reshape(int(np.prod(rest)), size * parts)
    # In f64, then rounded once: near-zero outputs (the imaginary part of a real signal's
    # inverse) keep an absolute error far below f32's rounding of the whole sum.
    wide = flat.astype(DType.F64) if flat.dtype_ is DType.F32 else flat
    product = node.emit("matmul", wide, node.const(matrix, like=wide)).astype(x.dtype_)
    parts_out = 1 if inverse and onesided else 2
    result = product.reshape(*rest, matrix.shape[1] // parts_out, parts_out)
    back = tuple(int(np.argsort(order)[a]) for a in range(x.ndim))
    return [result if back == tuple(range(x.ndim)) else node.emit("transpose", result,
                                                                  perm=back)]
