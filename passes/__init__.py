"""Graph passes, one per file, imported as `ember.passes`.

Every module in this package that defines a `Pass` subclass with a `name` registers it: adding
a pass is adding a file. `ALL_PASSES` maps pipeline names to classes; `default_pipeline` is the
list `ember.compile` runs.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from ember.pipeline import Pass


def _discover() -> dict[str, type[Pass]]:
    found: dict[str, type[Pass]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Pass) and cls.__module__ == module.__name__ and "name" in vars(cls):
                if cls.name in found:
                    raise ValueError(f"two passes are named {cls.name!r}")
                found[cls.name] = cls
    return dict(sorted(found.items()))


ALL_PASSES: dict[str, type[Pass]] = _discover()


def default_pipeline(opt_level: int = 3) -> list[Pass]:
    """The passes `ember.compile` runs at an opt level, as one flat list.

    Levels 2 and 3 run the same graph passes but one: level 3 moves convolution regions into
    the channels-last layout (`layout{format=nhwc}`), where its conv2d is a GEMM with the
    output channels along the vector and A read in place from the image
    (`backend/cpu/lower_conv_nhwc`); level 2 lowers every op by its general loops, and the
    NCHW direct loops are its faster convolution. Levels 0 and 1 run none.
    """
    from ember.pipeline import parse_pipeline

    if opt_level < 2:
        return []
    fold = "fold-constants{matmul-transposes=false}"  # transpose-into-matmul reads them
    names = ["simplify", fold, "cse", "dce", "fold-batchnorm"]
    if opt_level >= 3:
        names += ["layout{format=nhwc}"]
    names += [fold, "simplify", "cse", "dce"]
    names += ["transpose-into-matmul", "dce", "fuse", "dce", "plan-memory"]
    return parse_pipeline(names)
