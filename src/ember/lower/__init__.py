"""Lowering: scheduled graph -> loop IR (loop nests, loads, stores, vector math) and schedules.

Importing this package imports every `ops_*.py` module in it, and each registers its rules in
the tables of `ember.lower.rules`: once `ember.lower` is imported (`import ember` does), every
lowering rule is there.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if _module.name.startswith("ops_"):
        importlib.import_module(f"{__name__}.{_module.name}")
