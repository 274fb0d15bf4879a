"""benchmarks/bench_zoo.py and the SVG bar chart of `ember.bench` (`ember bench --plot`).

The smallest model of the suite (the Inception-v3 style network at 64x64) goes through the
suite's own code path: PyTorch module, torch.onnx.export, ember.onnx.load, a cold and a cached
compile, and the output check against ONNX Runtime. Nothing here asserts how fast anything runs.
"""

from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ember import cli
from ember.bench import chart_svg
from ember.errors import UnsupportedError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_zoo.py"
SVG = "{http://www.w3.org/2000/svg}"


def load_zoo():
    spec = importlib.util.spec_from_file_location("bench_zoo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_zoo"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def zoo():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    return load_zoo()


def bars(svg: str) -> list[tuple[str, str]]:
    root = ET.fromstring(svg)
    return [(rect.get("data-model"), rect.get("data-runner"))
            for rect in root.iter(f"{SVG}rect") if rect.get("class") == "bar"]


def test_smallest_model_matches_onnxruntime_through_the_suite(zoo, tmp_path):
    result = zoo.run_model("inception_v3_block", threads=1, rounds=3, warmup=1, size=64,
                           directory=tmp_path)
    assert result.failure == "", result.failure
    assert result.error is not None and result.error <= zoo.TOLERANCE
    assert result.ok and result.kernels and result.kernels > 10
    assert result.compile_cold_s > 0 and result.compile_cached_s > 0
    for side in (result.ember, result.onnxruntime, result.torch):
        assert side.calls == 3 and side.p10_ms <= side.median_ms <= side.p90_ms
    assert result.torch_error <= 1e-4  # the exported file computes what the module does
    text = zoo.table([result])
    assert "inception_v3_block" in text and "geomean ember/ort over the 1 correct model" in text


def test_a_refused_model_keeps_its_row_with_the_reason(zoo, tmp_path, monkeypatch):
    import ember

    def refuse(*args, **kwargs):
        raise UnsupportedError("onnx import: no converter for operator 'Frobnicate'")

    monkeypatch.setattr(ember, "compile", refuse)
    result = zoo.run_model("squeezenet1_1", threads=1, rounds=3, warmup=0, size=48,
                           directory=tmp_path)
    assert not result.ok and result.ember.median_ms is None and result.ratio is None
    assert result.onnxruntime.calls == 3  # the peers are still timed
    text = zoo.table([result])
    assert "does not compile: UnsupportedError: onnx import: no converter" in text
    assert "over the 0 correct models: -" in text


def test_the_error_is_relative_to_the_output_scale(zoo):
    want = np.array([100.0, -200.0, 50.0])
    assert zoo.relative_error(want + np.array([0.0, 0.02, 0.0]), want) == pytest.approx(1e-4)
    assert zoo.relative_error(np.array([np.nan, 0.0, 0.0]), want) == float("inf")
    assert zoo.relative_error(want[:2], want) == float("inf")


def test_chart_has_one_bar_per_model_and_runner(zoo):
    results = [zoo.ZooResult("a", 1), zoo.ZooResult("b<&>", 1)]
    for index, result in enumerate(results):
        result.ember.median_ms, result.onnxruntime.median_ms = 2.0 + index, 4.0
        result.torch.median_ms = 8.0
    results[1].torch.median_ms = None  # not run: labelled, no bar
    svg = chart_svg("zoo & co", zoo.chart_groups(results))
    assert bars(svg) == [("a", "ember"), ("a", "onnxruntime"), ("a", "torch"),
                         ("b<&>", "ember"), ("b<&>", "onnxruntime")]
    root = ET.fromstring(svg)
    widths = [float(r.get("width")) for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert widths[:3] == [pytest.approx(420 / 4), pytest.approx(420 / 2), pytest.approx(420)]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "torch: not run" in texts and "4.00 ms (2.00x ember)" in texts


def test_cli_bench_plot_writes_the_chart(tmp_path, capsys):
    target = tmp_path / "tiny.py"
    target.write_text("import numpy as np\n\ndef model(x):\n    return x * 2.0 + 1.0\n\n"
                      "example_inputs = (np.ones((4, 16), np.float32),)\n")
    chart = tmp_path / "bench.svg"
    status = cli.main(["bench", str(target), "--threads", "1", "--levels", "0,3", "--repeats",
                       "2", "--warmup", "0", "--compare", "", "--plot", str(chart)])
    capsys.readouterr()
    assert status == 0
    assert bars(chart.read_text()) == [(str(target), "level 3"), (str(target), "level 0")]
    assert cli.main(["bench", str(target), "--levels", "0", "--repeats", "1", "--compare", "",
                     "--plot", str(tmp_path / "missing" / "x.svg")]) == 2
    assert "cannot write" in capsys.readouterr().err
