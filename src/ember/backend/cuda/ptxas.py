"""NVIDIA's PTX assembler as a checker: is the PTX valid, and what does each kernel use?

    path = find_ptxas()                       # PATH, then the nvidia-cuda-nvcc pip package
    usage = check_ptx(ptx, "sm_90")           # {kernel: KernelUsage(registers, spills, ...)}

`check_ptx` runs `ptxas -arch=<arch> -v` on the text and parses its per-kernel report
(registers, spill stores and loads in bytes, stack frame, shared memory); a rejection is an
EmberError with ptxas's own messages. Without ptxas, `find_ptxas()` is None and callers skip
the check (the driver still JIT-compiles the PTX when the module is loaded).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ember.errors import EmberError

TIMEOUT_SECONDS = 300

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")
_SHARED = re.compile(r"(\d+) bytes smem")


@dataclass(frozen=True)
class KernelUsage:
    """What ptxas reports for one kernel."""

    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    stack_frame: int = 0  # bytes
    shared_memory: int = 0  # bytes of static shared memory


def find_ptxas() -> str | None:
    """The ptxas to use: $EMBER_PTXAS, then PATH, then `nvidia/cuda_nvcc/bin/ptxas` of the
    `nvidia-cuda-nvcc` package in any site-packages directory; None when there is none."""
    override = os.environ.get("EMBER_PTXAS")
    if override:
        return override if Path(override).is_file() else None
    found = shutil.which("ptxas")
    if found:
        return found
    for entry in sys.path:
        candidate = Path(entry) / "nvidia" / "cuda_nvcc" / "bin" / "ptxas"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def version(path: str | None = None) -> str:
    """ptxas's version line ("Cuda compilation tools, release 13.0, V13.0.88")."""
    path = path or find_ptxas()
    if path is None:
        raise EmberError("no ptxas found (PATH or the nvidia-cuda-nvcc package)")
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False,
                            timeout=60)
    lines = [line for line in result.stdout.splitlines() if "release" in line]
    return lines[-1].strip() if lines else result.stdout.strip()


def check_ptx(ptx: str, arch: str, path: str | None = None) -> dict[str, KernelUsage]:
    """Assemble `ptx` for `arch` with ptxas -v; per-kernel usage, or EmberError with ptxas's
    messages when it rejects the code."""
    path = path or find_ptxas()
    if path is None:
        raise EmberError("no ptxas found (install the nvidia-cuda-nvcc package or the CUDA "
                         "toolkit, or set EMBER_PTXAS)")
    with tempfile.TemporaryDirectory(prefix="ember-ptxas-") as folder:
        source = Path(folder) / "module.ptx"
        source.write_text(ptx)
        command = [path, f"-arch={arch}", "-v", str(source), "-o", str(Path(folder) / "m.cubin")]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False,
                                    timeout=TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise EmberError(f"ptxas ({path}) could not run: {err}") from None
    output = result.stdout + result.stderr
    if result.returncode != 0:
        errors = [line for line in output.splitlines() if "error" in line or "fatal" in line]
        raise EmberError(f"ptxas -arch={arch} rejected the PTX:\n" +
                         "\n".join(errors[:20] or output.splitlines()[:20]))
    return parse_report(output)


def parse_report(output: str) -> dict[str, KernelUsage]:
    """Per-kernel usage from ptxas -v output (entry functions only, in the order reported)."""
    usage: dict[str, KernelUsage] = {}
    current: str | None = None
    frame = (0, 0, 0)
    shared = 0
    for line in output.splitlines():
        if (entry := _ENTRY.search(line)) is not None:
            current, frame, shared = entry.group(1), (0, 0, 0), 0
        elif current is None:
            continue
        elif (match := _FRAME.search(line)) is not None:
            frame = tuple(int(g) for g in match.groups())  # type: ignore[assignment]
        elif (match := _REGISTERS.search(line)) is not None:
            if (memory := _SHARED.search(line)) is not None:
                shared = int(memory.group(1))
            usage[current] = KernelUsage(int(match.group(1)), frame[1], frame[2], frame[0],
                                         shared)
            current = None
    return usage
