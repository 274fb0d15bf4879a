"""Node attributes: a small immutable, hashable mapping, and `Const`, a hashable numpy array.

Attribute values are `int | float | bool | str | tuple[AttrValue, ...] | Const`. Because `Attrs`
hashes by content (and `Const` by dtype, shape and digest), `(op, inputs, attrs)` is a valid key
for common-subexpression elimination.
"""

from __future__ import annotations

import hashlib
import math
import struct
import weakref
from collections.abc import Iterator, Mapping
from typing import Union

import numpy as np

from ember.ir.types import DType, TensorType

AttrValue = Union[int, float, bool, str, "Const", tuple["AttrValue", ...]]

# Every Const whose data is alive, by digest. The printer writes large constants as
# `dense_blob<...: sha1:...>`; the parser finds their data here, so `parse(print(g))` is the
# same graph within a process. Entries vanish when the last Const holding the data goes.
_BLOBS: weakref.WeakValueDictionary[str, _Blob] = weakref.WeakValueDictionary()


class _Blob:
    """Holder of one constant's array (numpy arrays themselves cannot be weakly referenced)."""

    __slots__ = ("__weakref__", "array")

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


class Const:
    """An immutable numpy array used as an attribute (weights, folded constants).

    The array is copied and made read-only, so nothing a user passed in is aliased or modified;
    `copy=False` adopts an array that nothing else writes (a folded result the caller has just
    computed, a view of another constant's read-only data) without that copy, where it already
    is C-contiguous. `data` is None only for a constant parsed from a `dense_blob` whose data
    is not in memory.
    """

    __slots__ = ("_blob", "digest", "type")

    def __init__(self, array: np.ndarray | None, type_: TensorType | None = None,
                 digest: str | None = None, *, copy: bool = True) -> None:
        if array is None:
            assert type_ is not None and digest is not None
            self.type, self.digest = type_, digest
            self._blob = _BLOBS.get(digest)
            return
        # (np.asarray keeps a 0-d array 0-d, where np.ascontiguousarray would make it 1-d)
        data = np.array(array, copy=True, order="C") if copy else np.asarray(array, order="C")
        if not data.dtype.isnative:  # byte order is storage, not content: store native
            data = data.astype(data.dtype.newbyteorder("="))
        data.flags.writeable = False
        self.type = TensorType.of(data)
        # sha1 of the bytes then the type, read through the buffer (no copy of the data)
        digest = hashlib.sha1(usedforsecurity=False)
        if data.size:
            digest.update(data.reshape(-1).view(np.uint8))
        digest.update(str(self.type).encode())
        self.digest = digest.hexdigest()
        self._blob = _BLOBS.get(self.digest)
        if self._blob is None:
            self._blob = _Blob(data)
            _BLOBS[self.digest] = self._blob

    @property
    def data(self) -> np.ndarray | None:
        return None if self._blob is None else self._blob.array

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Const) and other.digest == self.digest

    def __repr__(self) -> str:
        return f"Const({self.type}, sha1:{self.digest[:12]})"


def _as_tuples(value: object) -> object:
    """Lists become tuples (at any depth), so every attribute value is hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


def attr_key(value: object) -> object:
    """A key that is equal for two attribute values exactly when they print the same.

    Python says `1 == 1.0 == True` and `0.0 == -0.0`, but `nan != nan`; none of that is right
    for IR attributes, so values are compared by kind, and floats by bit pattern (any nan is
    the same nan).
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else struct.pack("<d", value))
    if isinstance(value, tuple):
        return ("list", tuple(attr_key(v) for v in value))
    return (type(value).__name__, value)


class Attrs(Mapping[str, AttrValue]):
    """An immutable, hashable, sorted mapping from attribute name to value.

    Two `Attrs` are equal (and hash equal) when they hold the same names with values of the
    same kind and content (see `attr_key`), so `(op, inputs, attrs)` is a sound CSE key.
    Compared with any other mapping, values compare as plain Python values.
    """

    __slots__ = ("_hash", "_items", "_key")

    def __init__(self, items: Mapping[str, AttrValue] | None = None, **kwargs: AttrValue) -> None:
        merged = dict(items or {}, **kwargs)
        self._items: tuple[tuple[str, AttrValue], ...] = tuple(
            (name, _as_tuples(value)) for name, value in sorted(merged.items())  # type: ignore[misc]
        )
        self._key = tuple((name, attr_key(value)) for name, value in self._items)
        self._hash = hash(self._key)

    def __getitem__(self, key: str) -> AttrValue:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Attrs):
            return self._key == other._key
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def replace(self, **changes: AttrValue) -> Attrs:
        """A copy with some attributes set."""
        return Attrs(dict(self._items), **changes)

    def without(self, *names: str) -> Attrs:
        """A copy without the named attributes."""
        return Attrs({k: v for k, v in self._items if k not in names})

    def __repr__(self) -> str:
        return "Attrs(" + ", ".join(f"{k}={v!r}" for k, v in self._items) + ")"
