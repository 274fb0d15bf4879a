"""The training examples, shortened: a few epochs on the digits must reach an accuracy that only
working gradients reach. An untrained network scores about 10%; training only the last layer
(hidden layers without gradients) reaches 69% (MLP) and 91% (CNN) in four epochs, below the
95% asked here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import ember
from ember import cli

ROOT = Path(__file__).resolve().parent.parent


def load_example(name: str) -> ModuleType:
    """A fresh copy of examples/NAME.py (its model untrained), imported under its own name."""
    spec = importlib.util.spec_from_file_location(f"_train_example_{name}",
                                                  ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mlp_trains_to_high_accuracy_and_compiles_once(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    example = load_example("train_mlp")
    accuracy = example.main(epochs=4)
    out = capsys.readouterr().out
    assert accuracy >= 0.95, out
    assert "the step compiled 1 time(s): once = True" in out
    assert len([line for line in out.splitlines() if line.startswith("epoch ")]) == 4
    # The compiled inference of the trained weights agrees with a float64 numpy forward.
    reference = example.numpy_forward(example.x_test)
    predicted = reference.argmax(axis=1)
    assert np.mean(predicted == example.y_test) == pytest.approx(accuracy)


def test_cnn_trains_to_high_accuracy() -> None:
    example = load_example("train_cnn")
    accuracy = example.main(epochs=3, quiet=True)
    assert accuracy >= 0.95
    reference = example.numpy_forward(example.x_test)
    assert np.mean(reference.argmax(axis=1) == example.y_test) == pytest.approx(accuracy)


@pytest.mark.parametrize("name", ["train_mlp", "train_cnn"])
def test_data_falls_back_to_a_synthetic_set_without_sklearn(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example(name)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # the import raises ImportError
    x_train, y_train, x_test, y_test, source = example.load_data()
    assert source == "synthetic"
    assert len(x_train) + len(x_test) == 1797 and len(x_train) == int(0.8 * 1797)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.shape[1:] == example.x_train.shape[1:]
    assert set(np.unique(np.concatenate([y_train, y_test]))) == set(range(10))
    assert abs(float(x_train.mean())) < 1e-3 and abs(float(x_train.std()) - 1.0) < 0.05


@pytest.mark.parametrize("name", ["train_mlp", "train_cnn"])
def test_ember_ir_shows_the_train_step(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ir", str(ROOT / "examples" / f"{name}.py")]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    shape = "64,64" if name == "train_mlp" else "64,1,8,8"
    assert text.startswith(f"graph @sequential_train(%batch0: f32[{shape}], %batch1: i64[64], ")
    assert "%exp_avg_sq0: f32[" in text.splitlines()[0]  # the optimizer's state is an input
    assert str(ember.parse(text)) == text
