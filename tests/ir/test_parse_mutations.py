"""Mutated IR text: `ember.parse` returns a graph or raises an EmberError, never anything else.

The corpus is every IR text in the golden files and the printed graphs of the examples and a
few more models, traced and optimized (regions, memory-plan attributes, large constants). Each mutant comes from one or
two random edits: characters deleted, inserted or duplicated, tokens swapped or replaced (op
names, huge and odd numbers, huge dimensions), lines swapped, the text truncated, lists nested
deeply, bytes flipped (invalid UTF-8). A mutant either parses into a graph, which then verifies
or raises IRVerifyError and, when it verifies, prints back canonically; or it raises
IRParseError. The mutants are seeded, so a failure reproduces.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pytest

import ember
from ember import nn
from ember.driver import optimize
from ember.ir.ops import OPS

GOLDEN = Path(__file__).parent.parent / "passes" / "golden"
EXAMPLES = Path(__file__).parent.parent.parent / "examples"
MUTANTS = 2500

_TOKEN = re.compile(r"%[A-Za-z0-9_.]+|[A-Za-z_][A-Za-z0-9_]*|[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?|\S")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_%.])\d+(?:\.\d+)?")
ODD_NUMBERS = ["9223372036854775807", "9223372036854775808", "-9223372036854775809",
               "18446744073709551616", "1" + "0" * 30, "9" * 5000, "1099511627776", "-1", "0",
               "1e400", "-1e400", "nan", "inf", "1e-400", "2147483648", "0.5", "+3", "00"]
HUGE_TYPES = ["f32[1099511627776]", "f32[1048576,1048576]", "f32[99999999999999999999]",
              "f32[0,9223372036854775807,9223372036854775807]", "i64[" + "9" * 5000 + "]"]


def _golden_texts() -> list[str]:
    texts = []
    for path in sorted(GOLDEN.glob("*.ir")):
        for case in path.read_text().split("// -----"):
            texts += [part for part in case.split("// EXPECT:") if "graph @" in part]
    return texts


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        y = nn.functional.relu(self.norm(self.conv(x)))
        y = nn.functional.max_pool2d(y, 2).flatten(1)
        return nn.functional.softmax(self.head(y), dim=-1)


def _model_texts() -> list[str]:
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    models = [
        (nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 2)), (x,)),
        (_Block().eval(), (image,)),
        (lambda a: (nn.functional.layer_norm(a, (8,)) @ a.T)[1:, None].sum(axis=0) / 3.0, (x,)),
        (lambda a: (ember.where(a > 0, a, -a).astype(np.int64), a.reshape(2, 16).max(1)), (x,)),
    ]
    for path in sorted(EXAMPLES.glob("*.py")):  # each defines `model` and `example_inputs`
        example = runpy.run_path(str(path))
        models.append((example["model"], example["example_inputs"]))
    texts = []
    for model, inputs in models:
        traced = ember.trace(model, *inputs)
        texts += [str(traced), str(optimize(traced, 3)), str(optimize(traced, 2))]
    return texts


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    texts = _golden_texts() + _model_texts()
    assert len(texts) > 20
    return texts


def _mutate(text: str, rng: np.random.Generator) -> str | bytes:
    choice = int(rng.integers(0, 12))
    at = int(rng.integers(0, len(text) + 1))
    if choice == 0:  # delete a few characters
        return text[:at] + text[at + int(rng.integers(1, 8)):]
    if choice == 1:  # insert a character of the IR's alphabet, or any character
        alphabet = "%@[](){}<>,:=^\"'\\/.-+e0123456789 \n\tafx_\x00é∞"
        return text[:at] + alphabet[int(rng.integers(0, len(alphabet)))] + text[at:]
    if choice == 2:  # duplicate a span
        span = text[at : at + int(rng.integers(1, 40))]
        return text[:at] + span + text[at:]
    if choice == 3:  # truncate
        return text[:at]
    tokens = list(_TOKEN.finditer(text))
    if choice == 4:  # swap two tokens
        a, b = sorted((tokens[int(i)] for i in rng.integers(0, len(tokens), 2)),
                      key=lambda m: m.start())
        if a.start() == b.start():
            return text
        return (text[: a.start()] + b.group() + text[a.end() : b.start()] + a.group()
                + text[b.end() :])
    if choice == 5:  # replace a word with an op name, a dtype or a keyword
        words = [t for t in tokens if t.group()[0].isalpha()]
        names = [*sorted(OPS), "f32", "i64", "bool", "fused", "graph", "return", "yield",
                 "dense", "dense_blob", "true", "nhwc", "const"]
        word = words[int(rng.integers(0, len(words)))]
        return text[: word.start()] + names[int(rng.integers(0, len(names)))] + text[word.end():]
    if choice == 6:  # replace a number with a huge or odd one
        numbers = list(_NUMBER.finditer(text))
        if not numbers:
            return text
        number = numbers[int(rng.integers(0, len(numbers)))]
        odd = ODD_NUMBERS[int(rng.integers(0, len(ODD_NUMBERS)))]
        return text[: number.start()] + odd + text[number.end() :]
    if choice == 7:  # replace a type with a huge one
        types = list(re.finditer(r"\b(?:f32|f64|i32|i64|bool)\[[0-9,]*\]", text))
        if not types:
            return text
        found = types[int(rng.integers(0, len(types)))]
        huge = HUGE_TYPES[int(rng.integers(0, len(HUGE_TYPES)))]
        return text[: found.start()] + huge + text[found.end() :]
    if choice == 8:  # nest an attribute value deeply, or open brackets without end
        depth = int(rng.choice([5, 31, 32, 33, 200, 1000, 5000]))
        opening = text.find("= [")
        if opening < 0 or rng.random() < 0.3:
            return text[:at] + "[" * depth + text[at:]
        return text[: opening + 2] + "[" * depth + text[opening + 2 :].replace(
            "]", "]" * (depth + 1), 1)
    if choice == 9:  # swap two lines
        lines = text.split("\n")
        i, j = (int(k) for k in rng.integers(0, len(lines), 2))
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines)
    if choice == 10:  # flip a byte: the text as bytes, often not UTF-8 any more
        data = bytearray(text.encode())
        if data:
            data[min(at, len(data) - 1)] ^= 1 << int(rng.integers(0, 8))
        return bytes(data)
    return text.encode()  # the text as UTF-8 bytes, unchanged


def _check(mutant: str | bytes) -> None:
    try:
        graph = ember.parse(mutant)
    except ember.IRParseError:
        return
    try:
        ember.verify(graph)
    except ember.IRVerifyError:
        return
    printed = str(graph)
    assert str(ember.parse(printed)) == printed


def test_mutated_ir_parses_or_raises_an_ember_error(corpus: list[str]) -> None:
    rng = np.random.default_rng(12)
    outcomes = {"parsed": 0, "rejected": 0}
    for index in range(MUTANTS):
        text = corpus[int(rng.integers(0, len(corpus)))]
        mutant: str | bytes = _mutate(text, rng)
        if rng.random() < 0.3 and isinstance(mutant, str):
            mutant = _mutate(mutant, rng)  # a second edit
        try:
            _check(mutant)
        except Exception as err:
            shown = mutant if len(mutant) < 3000 else mutant[:3000]
            raise AssertionError(f"mutant {index} raised {type(err).__name__}: {err}\n"
                                 f"{shown!r}") from err
        try:
            ember.parse(mutant)
            outcomes["parsed"] += 1
        except ember.IRParseError:
            outcomes["rejected"] += 1
    # The mutations reach both outcomes: the test is not only exercising the tokenizer.
    assert outcomes["parsed"] > MUTANTS // 20 and outcomes["rejected"] > MUTANTS // 5, outcomes


@pytest.mark.parametrize(("text", "message"), [
    ("graph @g() -> () {\n  %0 = const() {v = " + "[" * 1000 + "]" * 1000 + "} : f32[]\n"
     "  return\n}", "2:"),
    ("graph @g(%x: f32[1048576,1048576]) -> () {\n  return\n}", "1:18: shape [1048576, "),
    ("graph @g(%x: f32[9223372036854775808]) -> () {\n  return\n}", "does not fit in i64"),
    ("graph @g(%x: f32[4]) -> (f32[4]) {\n  %0 = reshape(%x) {shape = [" + "9" * 5000
     + "]} : f32[4]\n  return %0\n}", "out of range for i64"),
    ("graph @g() -> (f32[1]) {\n  %0 = const() {value = dense<f32[1]: " + "9" * 400
     + ">} : f32[1]\n  return %0\n}", "out of range for f32"),
    (b"graph @g() -> () {\n  return\n}\xff", "3:2: byte 0xff is not UTF-8"),
])
def test_bounds_are_parse_errors_at_the_offending_token(text: str | bytes, message: str) -> None:
    with pytest.raises(ember.IRParseError) as info:
        ember.parse(text)
    assert message in str(info.value)


def test_nesting_up_to_the_limit_parses() -> None:
    deep = "[" * 32 + "1" + "]" * 32
    graph = ember.parse("graph @g() -> () {\n  %0 = const() {v = " + deep + "} : f32[]\n"
                        "  return\n}")
    with pytest.raises(ember.IRVerifyError):  # `v` is no attribute of const
        ember.verify(graph)
    with pytest.raises(ember.IRParseError, match="nested more than 32 deep"):
        ember.parse("graph @g() -> () {\n  %0 = const() {v = [" + deep + "]} : f32[]\n"
                    "  return\n}")


def test_utf8_bytes_parse_like_text() -> None:
    x = np.ones((2, 3), np.float32)
    text = str(ember.trace(lambda a: (a * 2.0).sum(axis=1), x))
    graph = ember.parse(text.encode("utf-8"))
    assert str(graph) == text
    np.testing.assert_array_equal(ember.interpret(graph, x)[0], (x * 2.0).sum(axis=1))
    with pytest.raises(ember.IRParseError, match="expected the IR text as str or bytes"):
        ember.parse(None)  # type: ignore[arg-type]


def test_huge_example_inputs_are_trace_errors() -> None:
    with pytest.raises(ember.TraceError, match="example input 0: shape .* is too large"):
        ember.trace(lambda a: a + 1.0, ember.TensorSpec((2**20, 2**20)))
    with pytest.raises(ember.TraceError, match="broadcast_to: shape .* is too large"):
        ember.trace(lambda a: a.broadcast_to(2**21, 2**20), np.ones(1, np.float32))
