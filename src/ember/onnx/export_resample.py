"""ONNX export of the resampling and sorting ops: resize -> Resize, grid_sample -> GridSample,
topk -> TopK, fmod -> Mod(fmod=1).

Registered in `ember.onnx.export.EXPORTERS` when imported; `ember.onnx.converters.resample`
(the import side of the same operators) imports it, so `import ember.onnx` brings both.
A node whose options ONNX cannot say at the opset asked for is an UnsupportedError naming it.
"""

from __future__ import annotations

import math

import numpy as np

from ember.errors import UnsupportedError
from ember.ir.graph import Node
from ember.onnx.export import ExportContext, exports


def _refuse(node: Node, why: str) -> UnsupportedError:
    return UnsupportedError(f"ONNX export of {node.op} ({node.outputs[0].type}): {why}")


def _resize_sizing(node: Node, context: ExportContext) -> tuple[str, str]:
    """The scales and sizes inputs: sizes where every scale is size / input size, else the
    scales when ONNX's floor(scale * size) gives the output's sizes."""
    shape = node.inputs[0].type.shape
    sizes = [int(s) for s in node.attrs["sizes"]]  # type: ignore[union-attr]
    scales = [float(s) for s in node.attrs["scales"]]  # type: ignore[union-attr]
    if all(n and math.isclose(s, out / n, rel_tol=1e-12)
           for n, out, s in zip(shape, sizes, scales, strict=True)):
        return "", context.ints(sizes, "sizes")
    single = np.asarray(scales, np.float32)
    if all(int(float(s) * n) == out for s, n, out in zip(single, shape, sizes, strict=True)):
        return context.initializer(single, "scales"), ""
    raise _refuse(node, f"scales {scales} and sizes {sizes} are not ONNX's pair (sizes = "
                        "floor(scales * input sizes), or scales = sizes / input sizes)")


@exports("resize")
def export_resize(node: Node, context: ExportContext) -> None:
    attrs = node.attrs
    if attrs["antialias"] and context.opset < 18:
        raise _refuse(node, f"antialias needs opset 18 or later, not {context.opset}")
    if attrs["coordinate_mode"] == "half_pixel_symmetric" and context.opset < 19:
        raise _refuse(node, f"half_pixel_symmetric needs opset 19 or later, not {context.opset}")
    scales, sizes = _resize_sizing(node, context)
    roi = ""
    if attrs["roi"]:
        roi = context.initializer(np.asarray(attrs["roi"], np.float32), "roi")
    extra = {"antialias": 1} if attrs["antialias"] else {}
    context.emit(
        "Resize", [context.name(node.inputs[0]), roi, scales, sizes],
        [context.name(node.outputs[0])], mode=str(attrs["mode"]),
        coordinate_transformation_mode=str(attrs["coordinate_mode"]),
        nearest_mode=str(attrs["nearest_mode"]), cubic_coeff_a=float(attrs["cubic_a"]),
        exclude_outside=int(bool(attrs["exclude_outside"])),
        extrapolation_value=float(attrs["extrapolation"]), **extra)


_GRID_MODES_16 = {"linear": "bilinear", "nearest": "nearest", "cubic": "bicubic"}


@exports("grid_sample")
def export_grid_sample(node: Node, context: ExportContext) -> None:
    attrs = node.attrs
    if attrs["convention"] == "torch" and attrs["mode"] == "cubic" and \
            attrs["padding"] != "zeros":
        raise _refuse(node, "PyTorch's bicubic sampling with border or reflection padding "
                            "moves only the taps inside, which ONNX's GridSample does not say")
    if context.opset < 16:
        raise _refuse(node, f"GridSample needs opset 16 or later, not {context.opset}")
    spatial = node.inputs[0].type.ndim - 2
    if spatial != 2 and context.opset < 20:
        raise _refuse(node, f"3-D sampling needs opset 20 or later, not {context.opset}")
    mode = str(attrs["mode"])
    context.emit("GridSample", [context.name(v) for v in node.inputs],
                 [context.name(node.outputs[0])],
                 mode=mode if context.opset >= 20 else _GRID_MODES_16[mode],
                 padding_mode=str(attrs["padding"]),
                 align_corners=int(bool(attrs["align_corners"])))


@exports("topk")
def export_topk(node: Node, context: ExportContext) -> None:
    k = int(node.attrs["k"])  # type: ignore[arg-type]
    context.emit("TopK", [context.name(node.inputs[0]), context.ints([k], "k")],
                 [context.name(v) for v in node.outputs], axis=int(node.attrs["axis"]),
                 largest=int(bool(node.attrs["largest"])), sorted=1)


@exports("fmod")
def export_fmod(node: Node, context: ExportContext) -> None:
    context.emit("Mod", [context.name(v) for v in node.inputs], [context.name(node.outputs[0])],
                 fmod=1)
