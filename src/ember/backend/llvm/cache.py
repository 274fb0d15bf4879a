"""On-disk cache of compiled object code.

    EMBER_CACHE_DIR=/path   (default: $XDG_CACHE_HOME/ember or ~/.cache/ember)
    EMBER_CACHE=0           disables it

An object entry (`<key>.o`) is keyed by a hash of the LLVM module text, the host CPU name and
features, the optimization level, and Ember's and LLVM's versions. `ember.compile` also writes a
graph link (`<key>.link`), keyed by the optimized graph's text (constants by content digest),
the opt level, the CPU, the versions and a digest of Ember's own source files; it names the
object entry and the program's calling layout, so a second compile of the same model finds
its machine code before generating any LLVM IR.

Each file holds a header line with the SHA-256 of its payload, so a truncated or corrupt entry
is detected, removed and rebuilt. Entries are written to a temporary file and renamed into
place, so two processes compiling the same model at once both succeed and never read a
partial file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"EMBER-OBJ 1 "
OBJECT, LINK = ".o", ".link"  # the two kinds of entry, by file suffix


def cache_dir() -> Path:
    configured = os.environ.get("EMBER_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ember"


def enabled() -> bool:
    return os.environ.get("EMBER_CACHE", "1") not in ("0", "")


def _digest(*parts: str) -> str:
    import llvmlite.binding as llvm

    from ember import __version__

    digest = hashlib.sha256()
    for part in (__version__, ".".join(map(str, llvm.llvm_version_info)), *parts):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def cache_key(llvm_ir: str, cpu: str, features: str, opt_level: int) -> str:
    """The key of the object code of one LLVM module."""
    return _digest(cpu, features, str(opt_level), llvm_ir)


def graph_key(graph_text: str, cpu: str, features: str, opt_level: int) -> str:
    """The key of a graph link: the optimized graph's text and everything else that decides
    the machine code made from it (Ember's source: lowering and code generation)."""
    return _digest("graph", source_digest(), cpu, features, str(opt_level), graph_text)


@functools.cache
def source_digest() -> str:
    """SHA-256 of Ember's Python source (each file's path and bytes), read once per process:
    an edit to the lowering or the code generator misses the graph links made before it."""
    root = Path(__file__).resolve().parents[2]  # the `ember` package
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _path(key: str, suffix: str = OBJECT) -> Path:
    return cache_dir() / key[:2] / f"{key}{suffix}"


def load(key: str, suffix: str = OBJECT) -> bytes | None:
    """The cached object code for `key` (or a link, by suffix), or None (a corrupt entry is
    removed)."""
    path = _path(key, suffix)
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    header, _, payload = blob.partition(b"\n")
    if header != MAGIC + hashlib.sha256(payload).hexdigest().encode():
        path.unlink(missing_ok=True)
        return None
    return payload


def store(key: str, payload: bytes, suffix: str = OBJECT) -> None:
    """Save object code (or a link) atomically; failures to write (read-only disk) are
    ignored."""
    path = _path(key, suffix)
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


@dataclass(frozen=True)
class Link:
    """What a graph key leads to: an object entry and the program it was compiled from."""

    object_key: str  # the key of the object entry
    opt_level: int  # LLVM's optimization level of that object code
    layout: str  # digest of the program's calling layout (kernels, slots, constants, arena)

    def encode(self) -> bytes:
        return f"{self.object_key} {self.opt_level} {self.layout}".encode()

    @staticmethod
    def decode(payload: bytes) -> Link | None:
        parts = payload.decode(errors="replace").split()
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return Link(parts[0], int(parts[1]), parts[2])


def load_link(key: str) -> Link | None:
    """The link stored under a graph key, or None."""
    payload = load(key, LINK)
    return Link.decode(payload) if payload is not None else None


def store_link(key: str, link: Link) -> None:
    store(key, link.encode(), LINK)


def info() -> CacheInfo:
    """The cache's directory, its object entries and the bytes of all its files."""
    directory = cache_dir()
    files = list(directory.glob("*/*.o")) if directory.exists() else []
    links = list(directory.glob(f"*/*{LINK}")) if directory.exists() else []
    return CacheInfo(directory, len(files), sum(f.stat().st_size for f in files + links))


def clear() -> int:
    """Remove every entry (and every graph link); returns how many object entries were
    removed."""
    removed = 0
    directory = cache_dir()
    for path in directory.glob("*/*") if directory.exists() else []:
        if path.suffix in (OBJECT, LINK):
            path.unlink(missing_ok=True)
            removed += path.suffix == OBJECT
    return removed
