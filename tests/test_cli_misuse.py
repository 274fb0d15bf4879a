"""Misuse of the `ember` command line: each case ends with exactly one `ember: error:` line on
stderr and exit status 2, never a traceback, never an unbounded read."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ember import cli

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

GOOD_IR = "graph @g(%x: f32[2]) -> (f32[2]) {\n  %0 = relu(%x) : f32[2]\n  return %0\n}\n"


def _onnx_file(path: Path, nodes: list, inputs: list, outputs: list[str],
               initializers: tuple = ()) -> str:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_empty_tensor_value_info(n) for n in outputs], list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return str(path)


def _file(path: Path, content: str | bytes) -> str:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return str(path)


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def _directory(path: Path) -> str:
    path.mkdir()
    return str(path)


def _relu_onnx(path: Path, dims: list) -> str:
    return _onnx_file(path, [helper.make_node("Relu", ["x"], ["y"])], [("x", dims)], ["y"])


def _constant_of_shape_bomb(path: Path) -> str:
    shape = numpy_helper.from_array(np.array([2**20, 2**20], np.int64), "shape")
    return _onnx_file(path, [helper.make_node("ConstantOfShape", ["shape"], ["c"], name="fill"),
                             helper.make_node("Add", ["c", "x"], ["y"])],
                      [("x", [1])], ["y"], [shape])


def _two_writers(path: Path) -> str:
    return _onnx_file(path, [helper.make_node("Relu", ["x"], ["y"], name="a"),
                             helper.make_node("Neg", ["x"], ["y"], name="b")],
                      [("x", [2])], ["y"])


TRACED_EXIT = ("import sys, numpy as np\n"
               "def model(x):\n    sys.exit(5)\n"
               "example_inputs = (np.ones(2, np.float32),)\n")

# (id, argv made in a temporary directory, what the error line says)
CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("pipeline with an unclosed brace",
     lambda d: ["opt", _file(d / "g.ir", GOOD_IR), "-p", "dce{"], "must end with '}'"),
    ("unknown pass", lambda d: ["opt", _file(d / "g.ir", GOOD_IR), "-p", "cse,nope"],
     "unknown pass 'nope'"),
    ("IR file not UTF-8", lambda d: ["opt", _file(d / "bad.ir", b"graph \xff\xfe")],
     r"bad.ir:1: not UTF-8 text \(byte 0xff at offset 6\)"),
    ("IR file is a character device", lambda d: ["opt", "/dev/zero"],
     "/dev/zero is a character device, not a file"),
    ("IR file is a directory", lambda d: ["opt", _directory(d / "dump")],
     "dump is a directory, not a file"),
    ("IR file is a FIFO", lambda d: ["opt", _fifo(d / "pipe.ir")],
     r"pipe.ir is a FIFO \(named pipe\), not a file"),
    ("IR file missing", lambda d: ["opt", str(d / "missing.ir")], "no such file: .*missing.ir"),
    ("IR file not IR", lambda d: ["opt", _file(d / "text.ir", "hello world\n")],
     r"text.ir:1:\d+: "),
    ("target is a directory", lambda d: ["ir", _directory(d / "pkg.py")],
     "pkg.py is a directory, not a file"),
    ("target is a FIFO", lambda d: ["ir", _fifo(d / "pipe.py")],
     r"pipe.py is a FIFO \(named pipe\), not a file"),
    ("ONNX target is a directory", lambda d: ["ir", _directory(d / "model.onnx")],
     "model.onnx is a directory, not a file"),
    ("ONNX target is a FIFO", lambda d: ["ir", _fifo(d / "model.onnx")],
     r"model.onnx is a FIFO \(named pipe\), not a file"),
    ("target calls sys.exit(3) on import",
     lambda d: ["ir", _file(d / "exits.py", "import sys\nsys.exit(3)\n")],
     r"exits.py called sys.exit\(3\) while being imported"),
    ("target calls sys.exit() on import",
     lambda d: ["ir", _file(d / "quits.py", "import sys\nsys.exit()\n")],
     r"quits.py called sys.exit\(None\) while being imported"),
    ("model calls sys.exit(5) while traced", lambda d: ["ir", _file(d / "m.py", TRACED_EXIT)],
     r"m.py called sys.exit\(5\) while being traced"),
    ("model calls sys.exit(5) while benchmarked",
     lambda d: ["bench", _file(d / "b.py", TRACED_EXIT), "--levels", "0", "--compare", ""],
     r"b.py called sys.exit\(5\) while being run"),
    ("target source not UTF-8", lambda d: ["ir", _file(d / "latin.py", b"x = '\xe9'\n")],
     "latin.py:1: syntax error"),
    ("target not a Python file", lambda d: ["ir", _file(d / "model.txt", "x = 1\n")],
     "expected a Python file"),
    ("ONNX input of 2^40 elements", lambda d: ["ir", _relu_onnx(d / "huge.onnx", [2**20, 2**20])],
     r"input 'x' of shape \[1048576, 1048576\] is 4 TiB of f32, beyond the 4 GiB"),
    ("ONNX ConstantOfShape of 2^40 elements",
     lambda d: ["ir", _constant_of_shape_bomb(d / "bomb.onnx")],
     r"ConstantOfShape 'fill'.*4 TiB, beyond the 4 GiB"),
    ("ONNX negative dimension", lambda d: ["ir", _relu_onnx(d / "neg.onnx", [2, -3])],
     "input 'x' dimension 1 is -3"),
    ("ONNX --shape negative", lambda d: ["ir", _relu_onnx(d / "n.onnx", ["N", 2]), "--shape",
                                         "N=-3"], r"shapes\['N'\] = \[-3\] has a negative size"),
    ("ONNX two nodes write one value", lambda d: ["ir", _two_writers(d / "twice.onnx")],
     r"value 'y' is written by node 'b' \(Neg\) and by node 'a' \(Relu\)"),
    ("ONNX file of random bytes", lambda d: ["ir", _file(d / "noise.onnx", bytes(range(256)))],
     "noise.onnx: not a valid ONNX model"),
    ("unknown command", lambda d: ["frobnicate"], "invalid choice: 'frobnicate'"),
]


def _one_error(code: int, out: str, err: str, message: str) -> None:
    import re

    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.startswith("ember: error:")]
    assert len(lines) == 1, err
    assert re.search(message, lines[0]), lines[0]
    assert code == 2


@pytest.mark.parametrize("argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_misuse_ends_in_one_error_line_and_status_2(argv, message, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(argv(tmp_path))
    captured = capsys.readouterr()
    _one_error(code, captured.out, captured.err, message)


def test_ir_file_over_the_size_limit_is_refused_without_reading_it_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "IR_FILE_LIMIT", 1024)
    path = _file(tmp_path / "big.ir", GOOD_IR + "// padding\n" * 200)
    _one_error(cli.main(["opt", path]), *capsys.readouterr(),
               message="big.ir is larger than 0 MiB, the limit for IR files")


class _EndlessZeros(io.RawIOBase):
    """stdin that never ends: `ember opt -` must stop reading at the limit."""

    def __init__(self) -> None:
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        buffer[:] = bytes(len(buffer))
        self.served += len(buffer)
        return len(buffer)


def test_endless_stdin_is_read_only_up_to_the_limit(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "IR_FILE_LIMIT", 4096)
    zeros = _EndlessZeros()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(zeros)))
    _one_error(cli.main(["opt", "-"]), *capsys.readouterr(),
               message="stdin is larger than 0 MiB, the limit for IR files")
    assert zeros.served <= 4096 + 1 + io.DEFAULT_BUFFER_SIZE


def test_well_formed_ir_still_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["opt", _file(tmp_path / "g.ir", GOOD_IR), "-p", "dce{}"]) == 0
    assert "relu(%x)" in capsys.readouterr().out


def test_sys_exit_in_a_target_through_the_real_entry_point(tmp_path: Path) -> None:
    path = _file(tmp_path / "exits.py", "import sys\nsys.exit(3)\n")
    result = subprocess.run([sys.executable, "-m", "ember.cli", "ir", path],
                            capture_output=True, text=True, timeout=120)
    _one_error(result.returncode, result.stdout, result.stderr,
               r"exits.py called sys.exit\(3\) while being imported")
