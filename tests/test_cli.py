"""The `ember` command line: `ember ir` output, `--format dot`, and one-line user errors."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

import ember
from ember import cli

TINY = '''\
import numpy as np
from ember.nn import functional as F

def model(x, y):
    return F.relu(x @ y) + 1.0

def product(x, y):
    return x @ y

def square(x):
    return x * x

example_inputs = (np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
'''

# Written by hand from the source above: one node per operation, each at its line of tiny.py.
TINY_IR = '''\
graph @tiny(%x: f32[2,3], %y: f32[3,4]) -> (f32[2,4]) {
  %0 = matmul(%x, %y) : f32[2,4]  // tiny.py:5
  %1 = relu(%0) : f32[2,4]  // tiny.py:5
  %2 = const() {value = dense<f32[]: 1.0>} : f32[]  // tiny.py:5
  %3 = add(%1, %2) : f32[2,4]  // tiny.py:5
  return %3
}
'''


def write(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_ir_prints_the_traced_graph_of_model(tmp_path: Path, capsys) -> None:
    status, out, err = run(["ir", write(tmp_path, "tiny.py", TINY)], capsys)
    assert (status, err) == (0, "")
    assert out == TINY_IR


def test_ir_target_with_name_traces_that_function(tmp_path: Path, capsys) -> None:
    status, out, _ = run(["ir", write(tmp_path, "tiny.py", TINY) + ":product"], capsys)
    assert status == 0
    assert out == (
        "graph @product(%x: f32[2,3], %y: f32[3,4]) -> (f32[2,4]) {\n"
        "  %0 = matmul(%x, %y) : f32[2,4]  // tiny.py:8\n"
        "  return %0\n"
        "}\n"
    )


def test_ir_output_file_holds_the_same_text(tmp_path: Path, capsys) -> None:
    target = write(tmp_path, "tiny.py", TINY)
    out_file = tmp_path / "tiny.ir"
    status, out, err = run(["ir", target, "-o", str(out_file)], capsys)
    assert (status, out, err) == (0, "", "")
    assert out_file.read_text() == TINY_IR


def test_file_is_imported_without_running_its_script_part(tmp_path: Path, capsys) -> None:
    source = TINY + '\nif __name__ == "__main__":\n    raise SystemExit("script part ran")\n'
    status, out, _ = run(["ir", write(tmp_path, "tiny.py", source)], capsys)
    assert status == 0 and out == TINY_IR


def test_stage_table_is_a_dict_of_stage_functions() -> None:
    assert list(cli.STAGES)[:2] == ["traced", "optimized"]
    assert all(callable(fn) for fn in cli.STAGES.values())


def test_version_prints_the_package_version(capsys) -> None:
    status, out, _ = run(["--version"], capsys)
    assert status == 0 and out.strip() == f"ember {ember.__version__}"


def test_help_lists_the_ir_command(capsys) -> None:
    status, out, _ = run(["--help"], capsys)
    assert status == 0 and "ir" in out and "usage: ember" in out
    status, out, _ = run(["ir", "--help"], capsys)
    assert status == 0 and "--stage" in out and "--format" in out and "TARGET" in out


# -- Graphviz --------------------------------------------------------------------------------


def check_dot(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    """Structural check of dot text; returns the declared node ids and the edges."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # drop quoted strings
    assert '"' not in unquoted.replace('""', ""), "unbalanced quotes"
    depth = 0
    for char in unquoted:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0, "a '}' closes nothing"
    assert depth == 0, "unbalanced braces"
    assert unquoted.startswith("digraph ") and unquoted.rstrip().endswith("}")
    declared = set(re.findall(r"^\s*(\w+) \[", unquoted, re.MULTILINE)) - {"node", "edge"}
    edges = re.findall(r"^\s*(\w+) -> (\w+)", unquoted, re.MULTILINE)
    assert edges, "no edges"
    for source, target in edges:
        assert source in declared and target in declared, f"undeclared endpoint {source}->{target}"
    for line in unquoted.splitlines()[1:-1]:
        assert line.rstrip().endswith(";"), f"statement without ';': {line}"
    return declared, edges


def test_dot_format_is_well_formed_graphviz(tmp_path: Path, capsys) -> None:
    status, out, _ = run(["ir", write(tmp_path, "tiny.py", TINY), "--format", "dot"], capsys)
    assert status == 0
    declared, edges = check_dot(out)
    # 2 inputs, 4 nodes, 1 output; matmul has 2 operands, relu 1, add 2, return 1.
    assert declared == {"in0", "in1", "n0", "n1", "n2", "n3", "out0"}
    assert sorted(edges) == sorted([("in0", "n0"), ("in1", "n0"), ("n0", "n1"), ("n1", "n3"),
                                    ("n2", "n3"), ("n3", "out0")])
    assert "{matmul|f32[2,4]}" in out and "f32[2,3]" in out
    # Edge labels are the operand names of the text form.
    assert 'in0 -> n0 [label="%x"];' in out and 'n2 -> n3 [label="%2"];' in out


def test_dot_of_the_cnn_example_declares_every_endpoint(capsys) -> None:
    example = str(Path(__file__).parent.parent / "examples" / "cnn.py")
    status, out, _ = run(["ir", example, "--format", "dot"], capsys)
    assert status == 0
    declared, edges = check_dot(out)
    graph = ember.trace(*_load(example))
    assert len(declared) == len(graph.inputs) + len(graph.nodes) + len(graph.outputs)
    uses = sum(len(node.inputs) for node in graph.nodes) + len(graph.outputs)
    assert len(edges) == uses
    assert "dense" not in out, "weights must be summarized by type, not printed"


def test_dot_parses_with_pydot_when_installed(tmp_path: Path, capsys) -> None:
    pydot = pytest.importorskip("pydot")
    _, out, _ = run(["ir", write(tmp_path, "tiny.py", TINY), "--format", "dot"], capsys)
    (parsed,) = pydot.graph_from_dot_data(out)
    assert len(parsed.get_edges()) == 6


def _load(path: str) -> tuple[object, ...]:
    target = cli.load_target(path)
    return (target.model, *target.example_inputs)


# -- user errors: one line on stderr, exit status 2 ------------------------------------------

ERROR_CASES = {
    "missing_file": (None, "", r"no such file: .*nowhere\.py$"),
    "no_model": ("import numpy as np\nexample_inputs = (np.ones(2),)\n", "",
                 r"does not define `model`"),
    "no_example_inputs": ("def model(x):\n    return x\n", "", r"does not define `example_inputs`"),
    "bad_example_inputs": ("def model(x):\n    return x\nexample_inputs = 3\n", "",
                           r"`example_inputs` must be a tuple or list of numpy arrays, not int"),
    "bad_name": (TINY, ":nothing", r"has no function or module named 'nothing'"),
    "name_not_callable": (TINY, ":example_inputs", r"example_inputs is a tuple, not a function"),
    "syntax_error": ("def model(:\n    pass\n", "", r"model\.py:1: syntax error"),
    "import_error": ("import numpy as np\nraise RuntimeError('broken setup')\n", "",
                     r"while importing .*model\.py: .*model\.py:2: RuntimeError: broken setup$"),
    "trace_error": ("import numpy as np\n\ndef model(x):\n    if x.sum() > 0:\n        return x\n"
                    "    return -x\n\nexample_inputs = (np.ones(3, np.float32),)\n", "",
                    r"cannot trace .*model\.py: .*model\.py:4: bool\(\) of a traced tensor"),
    "shape_error": ("import numpy as np\n\ndef model(x):\n    return x @ x\n\n"
                    "example_inputs = (np.ones((2, 3), np.float32),)\n", "",
                    r"model\.py:4: matmul: inner dimensions differ \(3 vs 2\)"),
    "user_code_raises": ("import numpy as np\n\ndef model(x):\n    return x.no_such_method()\n\n"
                         "example_inputs = (np.ones(3, np.float32),)\n", "",
                         r"cannot trace .*model\.py: .*model\.py:4: AttributeError"),
    "wrong_arity": (TINY, ":square", r"cannot trace .*:square: TypeError: square\(\) takes 1"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_user_error_is_one_line_and_exit_status_2(case: str, tmp_path: Path, capsys) -> None:
    source, suffix, pattern = ERROR_CASES[case]
    path = str(tmp_path / "nowhere.py") if source is None else write(tmp_path, "model.py", source)
    status, out, err = run(["ir", path + suffix], capsys)
    assert status == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ember: error: ") and "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("argv", [["ir", "x.py", "--stage", "nonsense"],
                                  ["ir", "x.py", "--format", "svg"], ["frobnicate"], ["ir"]])
def test_usage_error_is_one_line_and_exit_status_2(argv: list[str], capsys) -> None:
    status, out, err = run(argv, capsys)
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("ember: error: "), err


# -- --remarks ---------------------------------------------------------------------------------

# `scaled` is one elementwise loop; argmax keeps the index of the best value so far, which the
# loop vectorizer does not recognize as a reduction.
REMARKS_MODEL = '''\
import numpy as np

def model(x):
    scaled = x * 3.0 + 1.0
    best = x.argmax(axis=1)
    return scaled, best

example_inputs = (np.ones((64, 999), np.float32),)
'''


def remark_groups(text: str, comment: str) -> dict[str, list[str]]:
    """The remark section's lines by group header (a kernel or a library function)."""
    section = text.split(f"{comment} LLVM loop-vectorize remarks by kernel", 1)[1]
    groups: dict[str, list[str]] = {}
    header = ""
    for line in section.splitlines()[1:]:
        assert line.startswith(comment), f"not a comment line: {line!r}"
        body = line[len(comment) + 1:]
        if body.startswith("  "):
            groups[header].append(body.strip())
        else:
            header = body
            groups[header] = []
    return groups


@pytest.mark.parametrize(("stage", "comment"), [("llvm", ";"), ("asm", "#")])
def test_remarks_say_which_kernel_loops_vectorized_and_why_not(
        stage: str, comment: str, tmp_path: Path, capsys) -> None:
    target = write(tmp_path, "model.py", REMARKS_MODEL)
    status, out, err = run(["ir", target, "--stage", stage, "--remarks"], capsys)
    assert (status, err) == (0, "")
    groups = remark_groups(out, comment)
    (fused,) = [h for h in groups if "= fused(" in h]
    assert fused.endswith("model.py:4")  # the kernel's graph statement and source line
    assert any(line.startswith("+ vectorized loop (vectorization width: ") for line in
               groups[fused])
    (argmax,) = [h for h in groups if "= argmax(" in h]
    assert argmax.endswith("model.py:5")
    reasons = [line for line in groups[argmax] if line.startswith("- loop not vectorized: ")]
    assert any("reduction" in line for line in reasons), groups[argmax]
    assert not any(line.startswith("+") for line in groups[argmax])


def test_remarks_output_is_still_valid_llvm_ir(tmp_path: Path, capsys) -> None:
    import llvmlite.binding as llvm

    target = write(tmp_path, "model.py", REMARKS_MODEL)
    status, out, _ = run(["ir", target, "--stage", "llvm", "--remarks"], capsys)
    assert status == 0
    llvm.parse_assembly(out).verify()


def test_remarks_need_a_code_stage(tmp_path: Path, capsys) -> None:
    status, out, err = run(["ir", write(tmp_path, "tiny.py", TINY), "--remarks"], capsys)
    assert status == 2 and out == ""
    assert err.startswith("ember: error: --remarks goes with --stage llvm")


def test_help_documents_remarks(capsys) -> None:
    status, out, _ = run(["ir", "--help"], capsys)
    assert status == 0 and "--remarks" in out
    assert "not vectorized and why" in " ".join(out.split())


def test_ir_target_option_builds_for_that_cpu(tmp_path: Path, capsys) -> None:
    """`--target cpu:x86-64-v3` gives AVX2-only assembly; a bad name is one error line naming
    the known CPUs."""
    model = write(tmp_path, "tiny.py", TINY)
    status, out, _ = run(["ir", model, "--stage", "asm", "--target", "cpu:x86-64-v3"], capsys)
    assert status == 0 and "ymm" in out and not re.search(r"%zmm\d", out)
    status, _, err = run(["ir", model, "--stage", "asm", "--target", "cpu:pentium"], capsys)
    assert status == 2 and "unknown CPU 'pentium'" in err and "x86-64-v3" in err
