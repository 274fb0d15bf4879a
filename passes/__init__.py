"""Graph passes, one per file, imported as `ember.passes`.

`ALL_PASSES` maps each pass's pipeline name to its class.
"""

from __future__ import annotations

ALL_PASSES: dict[str, type] = {}
