"""ONNX import and export.

Both need the optional `onnx` package (`pip install "ember[onnx]"`). Without it this package
still imports, and `load`, `save` and `OnnxModel` raise one EmberError that says how to install
it.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ember.errors import EmberError

INSTALL_HINT = 'pip install "ember[onnx]"'


def _onnx_installed() -> bool:
    try:
        import onnx  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name != "onnx":  # onnx is there but one of its own imports failed
            raise
        return False
    return True


def missing_onnx(what: str) -> NoReturn:
    """Raise the EmberError for `what` needing the onnx package that is not installed."""
    raise EmberError(f"{what} needs the onnx package, which is not installed; install it with: "
                     f"{INSTALL_HINT}")


if _onnx_installed():
    from ember.onnx.export import save as save
    from ember.onnx.loader import OnnxModel as OnnxModel
    from ember.onnx.loader import load as load
else:

    def load(*args: Any, **kwargs: Any) -> NoReturn:
        """Import an ONNX model: needs the onnx package."""
        missing_onnx("ember.onnx.load")

    def save(*args: Any, **kwargs: Any) -> NoReturn:
        """Export an ONNX model: needs the onnx package."""
        missing_onnx("ember.onnx.save")

    class OnnxModel:
        """An imported ONNX graph: needs the onnx package."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            missing_onnx("ember.onnx.OnnxModel")
