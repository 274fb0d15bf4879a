"""On-disk cache of compiled object code.

    EMBER_CACHE_DIR=/path   (default: $XDG_CACHE_HOME/ember or ~/.cache/ember)
    EMBER_CACHE=0           disables it

An object entry (`<key>.o`) is keyed by a hash of the LLVM module text, the host CPU name and
features, the optimization level, and Ember's and LLVM's versions. `ember.compile` also writes a
graph link (`<key>.link`), keyed by the optimized graph's text (constants by content digest),
the opt level, the CPU, the versions and a digest of Ember's own source files; it names the
object entry and the program's calling layout, so a second compile of the same model finds
its machine code before generating any LLVM IR.

Each file starts with a header line that names its kind and its key and carries the SHA-256 of
kind, key and payload together: an entry that is truncated, corrupt, edited, or copied over
another key's file is detected, removed and rebuilt, and so is one that is not a plain file
owned by the current user (a symlink, a FIFO). Entries are written to a temporary file and
renamed into place, so two processes compiling the same model at once both succeed and never
read a partial file.

Whoever can write the cache directory can make this process run any machine code, so the
directory and its shard folders must be owned by the current user and writable by no other
user; each parent must be owned by the user or root and writable by no other user unless it is
sticky (like /tmp). The user's private group (named after the user, no other members) counts
as the user's own. Ember creates missing directories with mode 0700. A directory that fails
the check is not used: Ember warns once (`CacheWarning`) and caches in a fresh private
temporary directory for the rest of the process.
The hashes detect accidents and copies, not forgery: anyone who can write the directory can
also compute a valid header (README, "The compile cache and what it trusts").
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"EMBER-OBJ 2"
OBJECT, LINK = ".o", ".link"  # the two kinds of entry, by file suffix


class CacheWarning(UserWarning):
    """The configured cache directory is not safe to run code from; a private one is used."""


def configured_dir() -> Path:
    """The cache directory the environment asks for (it may not exist yet)."""
    from ember import config

    return config.cache_dir()


def cache_dir() -> Path:
    """The directory in use: the configured one, created with mode 0700 where missing, if it
    and its parents pass the ownership and permission check; otherwise (after one warning) a
    private temporary directory of this process."""
    configured = configured_dir()
    problem = _check_directory(configured)
    return configured if problem is None else _fallback(configured, problem)


def _check_directory(directory: Path) -> str | None:
    """Why `directory` cannot be trusted with code, or None. A directory that cannot be made
    (a read-only disk) is not a problem: nothing can be read from it or written to it."""
    try:
        _make_private(directory)
        status = os.stat(directory)
    except OSError:
        return None
    problem = _not_private(directory, status)
    if problem is not None:
        return problem
    for parent in [*directory.parents, *directory.resolve().parents]:
        try:
            status = os.stat(parent)
        except OSError:
            continue
        if status.st_uid not in (os.getuid(), 0):
            return (f"its parent {parent} is owned by uid {status.st_uid}, "
                    f"not by uid {os.getuid()} or root")
        if _writable_by_others(status) and not status.st_mode & stat.S_ISVTX:
            return (f"its parent {parent} is writable by its group or others "
                    f"(mode {stat.S_IMODE(status.st_mode):o})")
    return None


def _not_private(path: Path, status: os.stat_result) -> str | None:
    """Why a directory (or an entry) is not private to the current user, or None."""
    if status.st_uid != os.getuid():
        return (f"{path} is owned by uid {status.st_uid}, "
                f"not by the current user (uid {os.getuid()})")
    if _writable_by_others(status):
        return f"{path} is writable by its group or others (mode {stat.S_IMODE(status.st_mode):o})"
    return None


def _writable_by_others(status: os.stat_result) -> bool:
    """Writable by another user: by others, or by a group other than the current user's
    private group (the group named after the user, with no other members, that systems with
    a umask of 002 give each user)."""
    if status.st_mode & 0o002:
        return True
    return bool(status.st_mode & 0o020) and not _private_group(status.st_gid)


@functools.cache
def _private_group(gid: int) -> bool:
    import grp
    import pwd

    try:
        group, user = grp.getgrgid(gid), pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return False
    return group.gr_name == user and set(group.gr_mem) <= {user}


def _make_private(directory: Path) -> None:
    """Create `directory` and its missing parents, each with mode 0700."""
    missing = [directory, *directory.parents]
    missing = [path for path in missing if not path.exists()]
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:  # made by another process meanwhile
            pass


@functools.cache
def _fallback(configured: Path, problem: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="ember-cache-"))  # mode 0700, owned by this user
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    warnings.warn(f"ember: not using the compile cache {configured}: {problem}; caching in "
                  f"the private directory {directory} for this process instead", CacheWarning)
    return directory


def enabled() -> bool:
    from ember import config

    return config.cache_enabled()


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


def _is_digest(text: str) -> bool:
    """A SHA-256 in hex, as every key is (so a key never names a path outside the cache)."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _path(key: str, suffix: str = OBJECT) -> Path:
    return cache_dir() / key[:2] / f"{key}{suffix}"


def _header(key: str, suffix: str, payload: bytes) -> bytes:
    """The first line of an entry: its kind, its key and the hash of all three parts, so an
    entry is valid only under its own key."""
    digest = hashlib.sha256(f"{suffix}\0{key}\0".encode() + payload).hexdigest()
    return b" ".join([MAGIC, suffix.encode(), key.encode(), digest.encode()])


def _read_entry(path: Path) -> bytes | None:
    """The bytes of an entry that is a plain file, owned by the current user and writable by
    nobody else, in a directory that is the same; None otherwise (a symlink is not followed,
    a FIFO not waited on). Raises FileNotFoundError where there is no entry."""
    if _not_private(path.parent, os.stat(path.parent)) is not None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError:  # ELOOP: a symlink
        return None
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode) or _not_private(path, status) is not None:
            return None
        return handle.read()


def load(key: str, suffix: str = OBJECT) -> bytes | None:
    """The cached object code for `key` (or a link, by suffix), or None. An entry that does
    not verify (corrupt, another key's, not a private plain file) is removed."""
    if not _is_digest(key):
        return None
    path = _path(key, suffix)
    try:
        blob = _read_entry(path)
    except OSError:  # no entry (or an unreadable directory)
        return None
    header, _, payload = (blob or b"").partition(b"\n")
    if blob is not None and header == _header(key, suffix, payload):
        return payload
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
    return None


def store(key: str, payload: bytes, suffix: str = OBJECT) -> None:
    """Save object code (or a link) atomically; failures to write (read-only disk) are
    ignored."""
    path = _path(key, suffix)
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        if _not_private(path.parent, os.stat(path.parent)) is not None:
            return
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as handle:
            handle.write(_header(key, suffix, payload) + b"\n" + payload)
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
        if len(parts) != 3 or not parts[1].isdigit() or not _is_digest(parts[0]):
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
        if path.suffix in (OBJECT, LINK, ".tmp"):  # .tmp: left by a process that was killed
            path.unlink(missing_ok=True)
            removed += path.suffix == OBJECT
    return removed
