"""On-disk cache of compiled object code.

    EMBER_CACHE_DIR=/path   (default: $XDG_CACHE_HOME/ember or ~/.cache/ember)
    EMBER_CACHE=0           disables it

An entry is keyed by a hash of the LLVM module text (which follows from the optimized graph),
the host CPU name and features, the optimization level and Ember's version. Each file holds a
header line with the SHA-256 of its payload, so a truncated or corrupt entry is detected,
removed and rebuilt. Entries are written to a temporary file and renamed into place, so two
processes compiling the same model at once both succeed and never read a partial file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"EMBER-OBJ 1 "


def cache_dir() -> Path:
    configured = os.environ.get("EMBER_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ember"


def enabled() -> bool:
    return os.environ.get("EMBER_CACHE", "1") not in ("0", "")


def cache_key(llvm_ir: str, cpu: str, features: str, opt_level: int) -> str:
    from ember import __version__

    digest = hashlib.sha256()
    for part in (__version__, cpu, features, str(opt_level), llvm_ir):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _path(key: str) -> Path:
    return cache_dir() / key[:2] / f"{key}.o"


def load(key: str) -> bytes | None:
    """The cached object code for `key`, or None (a corrupt entry is removed)."""
    path = _path(key)
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    header, _, payload = blob.partition(b"\n")
    if header != MAGIC + hashlib.sha256(payload).hexdigest().encode():
        path.unlink(missing_ok=True)
        return None
    return payload


def store(key: str, payload: bytes) -> None:
    """Save object code atomically; failures to write (read-only disk) are ignored."""
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as handle:
            handle.write(header + payload)
            temporary = handle.name
        os.replace(temporary, path)
    except OSError:
        return


@dataclass(frozen=True)
class CacheInfo:
    directory: Path
    entries: int
    bytes: int

    def __str__(self) -> str:
        return f"{self.directory}: {self.entries} entries, {self.bytes / 2**20:.1f} MiB"


def info() -> CacheInfo:
    directory = cache_dir()
    files = list(directory.glob("*/*.o")) if directory.exists() else []
    return CacheInfo(directory, len(files), sum(f.stat().st_size for f in files))


def clear() -> int:
    """Remove every entry; returns how many were removed."""
    removed = 0
    for path in cache_dir().glob("*/*.o") if cache_dir().exists() else []:
        path.unlink(missing_ok=True)
        removed += 1
    return removed
