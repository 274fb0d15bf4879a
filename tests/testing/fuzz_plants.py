"""Bugs that tests/testing/test_fuzz.py plants in the fuzzer's worker processes."""

from __future__ import annotations

import os
import signal

from ember.driver import Executable

_call = Executable.__call__


def wrong_level2() -> None:
    """Level 2 adds 1 to every floating-point result."""

    def call(self, *args):
        results = _call(self, *args)
        if self.opt_level != 2:
            return results
        fix = lambda r: r + r.dtype.type(1) if r.dtype.kind == "f" else r  # noqa: E731
        return tuple(fix(r) for r in results) if isinstance(results, tuple) else fix(results)

    Executable.__call__ = call


def segfault_level3_one_input() -> None:
    """Level 3 dies of SIGSEGV on graphs with exactly one input."""

    def call(self, *args):
        if self.opt_level == 3 and len(self.graph.inputs) == 1:
            os.kill(os.getpid(), signal.SIGSEGV)
        return _call(self, *args)

    Executable.__call__ = call


def hang_level1() -> None:
    """Level 1 never returns."""
    import time

    def call(self, *args):
        while self.opt_level == 1:
            time.sleep(0.05)
        return _call(self, *args)

    Executable.__call__ = call
