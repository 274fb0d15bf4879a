"""Every `EMBER_*` environment variable, read in one place.

    EMBER_NUM_THREADS=N      threads of parallel loops (default: every CPU this process may use)
    EMBER_COMPILE_THREADS=N  threads compiling a model's parts (default: every CPU, at most 8)
    EMBER_CACHE=0            disables the on-disk compile cache (default: on)
    EMBER_CACHE_DIR=path     where the cache lives (default: $XDG_CACHE_HOME/ember, ~/.cache/ember)
    EMBER_PRINT_AFTER=all|p,q  print the graph after every pass, or after the named ones
    EMBER_DUMP_DIR=path      write the graph after every pass to numbered files
    EMBER_CHECK_PASSES=1     run the graph after every pass and name the first that changes it
    EMBER_VERIFY=0           skip the IR verifier between passes (default: verify)

Each function reads the environment when called (so a test or a benchmark may change it), and
a malformed value is an EmberError naming the variable. `unknown()` lists EMBER_* variables
that none of these reads, which is most often a misspelling; `ember.compile` warns once about
them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from ember.errors import EmberError

VARIABLES = {
    "EMBER_NUM_THREADS": "threads of parallel loops (default: every CPU this process may use)",
    "EMBER_COMPILE_THREADS": "threads LLVM compiles a model's parts on (default: every CPU, <= 8)",
    "EMBER_CACHE": "0 disables the on-disk compile cache",
    "EMBER_CACHE_DIR": "the compile cache's directory",
    "EMBER_PRINT_AFTER": "print the graph after all passes (all) or the named ones (cse,dce)",
    "EMBER_DUMP_DIR": "write the graph after every pass to numbered files in this directory",
    "EMBER_CHECK_PASSES": "1 runs the graph after every pass and names the first that changes it",
    "EMBER_VERIFY": "0 skips the IR verifier between passes",
}


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _flag(name: str, default: bool, environ: Mapping[str, str] | None) -> bool:
    text = _env(environ).get(name, "").strip()
    if not text:
        return default
    if text not in ("0", "1"):
        raise EmberError(f"{name} must be 0 or 1, got {text!r}")
    return text == "1"


def num_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """EMBER_NUM_THREADS, or None when unset."""
    return _positive("EMBER_NUM_THREADS", environ)


def _positive(name: str, environ: Mapping[str, str] | None) -> int | None:
    text = _env(environ).get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise EmberError(f"{name} must be a positive integer, got {text!r}")
    return int(text)


def compile_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """EMBER_COMPILE_THREADS, or None when unset."""
    return _positive("EMBER_COMPILE_THREADS", environ)


def cache_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """False when EMBER_CACHE is 0 (or empty)."""
    return _env(environ).get("EMBER_CACHE", "1").strip() not in ("0", "")


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The cache directory asked for (it may not exist yet)."""
    env = _env(environ)
    configured = env.get("EMBER_CACHE_DIR")
    if configured:
        return Path(configured).absolute()
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).absolute() / "ember"


def print_after(environ: Mapping[str, str] | None = None) -> list[str] | str | None:
    """EMBER_PRINT_AFTER: "all", a list of pass names, or None."""
    text = _env(environ).get("EMBER_PRINT_AFTER", "").strip()
    if not text:
        return None
    return "all" if text == "all" else [name.strip() for name in text.split(",") if name.strip()]


def dump_dir(environ: Mapping[str, str] | None = None) -> str | None:
    return _env(environ).get("EMBER_DUMP_DIR") or None


def check_passes(environ: Mapping[str, str] | None = None) -> bool:
    return _env(environ).get("EMBER_CHECK_PASSES", "0").strip() not in ("", "0")


def verify_passes(environ: Mapping[str, str] | None = None) -> bool:
    return _env(environ).get("EMBER_VERIFY", "1").strip() != "0"


def unknown(environ: Mapping[str, str] | None = None) -> list[str]:
    """EMBER_* variables that Ember does not read (misspellings, most often)."""
    return sorted(name for name in _env(environ)
                  if name.startswith("EMBER_") and name not in VARIABLES)


_warned: set[str] = set()


def warn_unknown(environ: Mapping[str, str] | None = None) -> None:
    """One warning per process for each EMBER_* variable Ember does not read."""
    names = [name for name in unknown(environ) if name not in _warned]
    if names:
        _warned.update(names)
        warnings.warn(f"ember: unknown environment variable(s) {', '.join(names)} (known: "
                      f"{', '.join(VARIABLES)})", stacklevel=3)
