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

    Levels 2 and 3 run the same graph passes (level 3 differs in lowering: the scheduled rules,
    such as conv2d and matmul through the generated GEMM). Levels 0 and 1 run none. The `layout`
    pass (blocked NCHWc convolutions) is not in the default list: measured on the CNN and
    ResNet-block models, the implicit-GEMM conv2d on NCHW is 4-8x faster than the blocked form
    (benchmarks/NOTES.md); it stays available as `layout` in an explicit pipeline.
    """
    from ember.pipeline import parse_pipeline

    if opt_level < 2:
        return []
    fold = "fold-constants{matmul-transposes=false}"  # transpose-into-matmul reads them
    names = ["simplify", fold, "cse", "dce", "fold-batchnorm", fold, "simplify", "cse", "dce"]
    names += ["transpose-into-matmul", "dce", "fuse", "dce", "plan-memory"]
    return parse_pipeline(names)
