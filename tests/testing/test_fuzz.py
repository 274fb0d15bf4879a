"""The differential fuzzer: clean runs stay clean, planted bugs are found, crashes are contained."""

from __future__ import annotations

import os
import runpy

import numpy as np
import pytest

from ember.driver import Executable
from ember.testing import _oracle as O
from ember.testing import fuzz
from ember.testing._check import check_program

PLANTS = os.path.join(os.path.dirname(__file__), "fuzz_plants.py")


def test_fuzz_programs_at_a_fixed_seed_run_clean(tmp_path) -> None:
    summary = fuzz.run(11, programs=6, jobs=1, out=str(tmp_path), log=lambda _: None)
    assert summary.programs == 6
    assert summary.compiles >= 4 * 6 - 4 * sum(summary.refusals.values())
    assert summary.findings == []
    assert "fuzz: seed 11: 6 programs" in summary.line()


def test_fuzzing_another_target_compiles_every_level_for_it(monkeypatch) -> None:
    """`--target cpu:x86-64-v3`: every level is compiled for that target (no zmm anywhere)."""
    import ember

    seen = []
    compile_ = ember.compile

    def spy(*args, **kwargs):
        exe = compile_(*args, **kwargs)
        seen.append((kwargs.get("target"), exe.target.name, exe.opt_level))
        return exe

    monkeypatch.setattr(ember, "compile", spy)
    for index in range(3):
        outcome = check_program(fuzz.program_for(13, index), (0, 3), target="cpu:x86-64-v3")
        assert outcome.findings == []
    assert seen and all(t == "cpu:x86-64-v3" and name == "x86-64-v3" for t, name, _ in seen)
    with pytest.raises(SystemExit):
        fuzz.main(["--target", "cpu:pentium", "--programs", "1"])


def test_generated_programs_check_clean_in_process() -> None:
    # Same seed, same programs, every time; each passes its checks at two levels.
    for index in range(6, 10):
        program = fuzz.program_for(12, index)
        assert program.ember_source() == fuzz.program_for(12, index).ember_source()
        outcome = check_program(program, (0, 1))
        assert outcome.findings == [], (program.ember_source(), outcome.findings)


def test_fuzzer_reports_a_wrong_executable_and_writes_a_failing_reproducer(
        tmp_path, monkeypatch) -> None:
    summary = fuzz.run(13, programs=3, jobs=1, levels=(0, 2), out=str(tmp_path), minimize=1,
                       minimize_runs=12, initializer=f"{PLANTS}:wrong_level2",
                       log=lambda _: None)
    mismatches = [(f, path) for _, f, path in summary.findings if f.kind == "mismatch"]
    assert mismatches and all(f.levels == (2,) for f, _ in mismatches)
    assert f"{len(mismatches)} mismatches" in summary.line()
    _, path = mismatches[0]
    assert os.path.exists(path)
    # The reproducer fails while the bug is there and passes once it is gone.
    original = Executable.__call__
    monkeypatch.setattr(Executable, "__call__", original)  # restored after the test
    runpy.run_path(PLANTS)["wrong_level2"]()
    with pytest.raises(SystemExit) as failed:
        runpy.run_path(path, run_name="__main__")
    assert failed.value.code == 1
    monkeypatch.setattr(Executable, "__call__", original)
    with pytest.raises(SystemExit) as passed:
        runpy.run_path(path, run_name="__main__")
    assert passed.value.code == 0


def test_a_crashing_worker_is_reported_as_a_crash_and_the_run_goes_on(tmp_path) -> None:
    programs = 5
    summary = fuzz.run(14, programs=programs, jobs=1, levels=(0, 3), out=str(tmp_path),
                       minimize=0, initializer=f"{PLANTS}:segfault_level3_one_input",
                       log=lambda _: None)
    crashes = [(label, f) for label, f, _ in summary.findings if f.kind == "crash"]
    assert summary.programs == programs
    one_input = [i for i in range(programs)
                 if len([x for x in fuzz.program_for(14, i).inputs if not x.const]) == 1]
    assert one_input and len(one_input) < programs  # the seed has both kinds of program
    assert sorted(label for label, _ in crashes) == sorted(f"seed 14 program {i}"
                                                         for i in one_input)
    assert all("SIGSEGV" in f.detail and f.levels == (3,) for _, f in crashes)
    assert len(summary.findings) == len(crashes)  # the other programs ran clean


def test_oracle_comparison_checks_nan_positions_signed_zeros_and_tolerance() -> None:
    ref = np.array([1.0, np.nan, 0.0, np.inf])
    trials = [ref.copy()]
    good = np.array([1.0, np.nan, 0.0, np.inf], np.float32)
    assert O.compare(good, ref, trials, "f32", signed_zeros=True) == ""
    assert "differ" in O.compare(np.array([1.0, 2.0, 0.0, np.inf], np.float32), ref, trials,
                                 "f32", True)
    assert "differ" in O.compare(np.array([1.0, np.nan, -0.0, np.inf], np.float32), ref,
                                 trials, "f32", True)
    assert O.compare(np.array([1.0, np.nan, -0.0, np.inf], np.float32), ref, trials, "f32",
                     False) == ""
    assert "differ" in O.compare(np.array([1.001, np.nan, 0.0, np.inf], np.float32), ref,
                                 trials, "f32", False)
    assert "dtype" in O.compare(good.astype(np.float64), ref, trials, "f32", False)


def test_oracle_conv_and_pools_match_pytorch() -> None:
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    ours = O.conv2d(x, w, b, (2, 1), (1, 2, 1, 2), (2, 1), 2)
    theirs = tf.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=(2, 1),
                       padding=(1, 2), dilation=(2, 1), groups=2).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    for ceil in (False, True):
        ours = O.max_pool2d(x, (3, 2), (2, 2), (1, 1), (1, 1), ceil)
        theirs = tf.max_pool2d(torch.tensor(x), (3, 2), (2, 2), (1, 1), ceil_mode=ceil).numpy()
        np.testing.assert_array_equal(ours, theirs)
        for include in (False, True):
            ours = O.avg_pool2d(x, (3, 2), (2, 1), (1, 1), ceil, include)
            theirs = tf.avg_pool2d(torch.tensor(x), (3, 2), (2, 1), (1, 1), ceil_mode=ceil,
                                   count_include_pad=include).numpy()
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    ours = O.adaptive_avg_pool2d(x, (3, 4))
    theirs = tf.adaptive_avg_pool2d(torch.tensor(x), (3, 4)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_a_hanging_program_is_reported_as_a_timeout(tmp_path) -> None:
    summary = fuzz.run(15, programs=2, jobs=1, levels=(0, 1), out=str(tmp_path), minimize=0,
                       timeout=3, initializer=f"{PLANTS}:hang_level1", log=lambda _: None)
    assert summary.programs == 2
    kinds = [(f.kind, f.levels) for _, f, _ in summary.findings]
    assert kinds == [("timeout", (1,)), ("timeout", (1,))]


def test_an_underflowed_probability_is_judged_neither_way_after_log() -> None:
    """log(softmax(x)) where the softmax underflows is -inf op by op and finite through
    log_softmax (what `simplify` makes of it): the oracle's noisy trials keep such a
    probability at zero in even trials and at twice the smallest normal in odd ones, so the
    log is not judged there; probabilities in range are judged as before."""
    x = np.array([[0.0, -200.0, -1.0]])
    with O.noise(None):
        exact = np.log(O.rnd(O.softmax(x, 1, "f32"), "f32"))
    trials = []
    for seed in range(4):
        with O.noise(seed):
            trials.append(np.log(O.rnd(O.softmax(x, 1, "f32"), "f32")))
    assert np.isneginf(exact[0, 1]) and np.isfinite(trials[1][0, 1])
    finite = np.log(np.exp(x - np.log(np.exp(x).sum()))).astype(np.float32)  # log_softmax
    assert O.compare(finite, exact, trials, "f32", signed_zeros=False) == ""
    wrong = finite.copy()
    wrong[0, 2] += 0.5  # an in-range element is still judged
    assert "1 of 3 elements differ" in O.compare(wrong, exact, trials, "f32", signed_zeros=False)


def noiseless_and_noisy(reference, trials: int = 6):
    """A reference's result without noise, and its results in `trials` noisy runs (as
    `check_program` makes them)."""
    with O.noise(None):
        exact = reference()
    noisy = []
    for seed in range(trials):
        with O.noise(seed):
            noisy.append(reference())
    return exact, noisy


def test_what_follows_an_overflowing_sum_is_judged_neither_way() -> None:
    """A sum whose terms overflow f64 on the way has no defined result: 1e308 + 1e308 - 1e308
    is inf left to right and 1e308 in another order. Ember's conv2d may give the finite one,
    and a second conv2d mixes it with an infinity of one sign (-inf) where the reference's
    infinities of both signs give nan: the trials include the finite value, so neither the sum
    nor the next op's result is judged; a sum in range still is."""
    terms = np.array([[1e308, 1e308, -1e308], [1.0, 2.0, 3.0]])

    def reference():
        total = O.guard(terms.sum(axis=1), O.fin(terms).sum(axis=1), "f64")
        # the next ops: an infinity of either sign minus half itself is nan; 1e308 is not
        return total - 0.5 * total + np.array([-np.inf, 0.0])

    exact, trials = noiseless_and_noisy(reference)
    assert np.isnan(exact[0]) or np.isinf(exact[0])
    ember_order = np.array([-np.inf, 3.0])  # 1e308 from its order, then -inf
    assert O.compare(ember_order, exact, trials, "f64", signed_zeros=False) == ""
    assert "differ" in O.compare(np.array([-np.inf, 3.5]), exact, trials, "f64", False)


def test_a_product_that_may_underflow_on_the_way_is_judged_neither_way() -> None:
    """prod in f32 of factors whose partial products leave the range (fuzz seed 20261207
    program 3061): left to right it underflows to -0.0 (False as bool), in float64 it is
    -1.1e-11 (True); one trial in six takes the zero, so the bool is not judged; a product
    that stays in range still is."""
    x = np.array([3.5983980e-10, -3.5145792e-37, -1.1003629e28, -1.9836654e14, -5.3142057e12,
                  1.8366165e-07, -1.0766368e-29, 3.8135680e15], np.float32).astype(np.float64)
    safe = np.array([0.5, 2.0, 3.0], np.float64)

    def reference(values):
        product = O.guard(np.prod(values), O.prod_bound(values, None, False), "f32",
                          underflow=True)
        return O.cast(O.rnd(product, "f32", 1), "f32", "bool")

    for values, judged in ((x, False), (safe, True)):
        exact, trials = noiseless_and_noisy(lambda v=values: np.asarray(reference(v)))
        wrong = np.asarray(not bool(exact))
        assert (O.compare(wrong, exact, trials, "bool", False) != "") == judged


def test_batch_norm_with_a_subnormal_scale_allows_its_rounding_to_a_subnormal_step() -> None:
    """batch_norm folded as x * scale + (b - mean * scale) (Ember's and PyTorch's order) with a
    subnormal weight (fuzz seed 20261207 program 292): the scale is rounded to a subnormal step,
    which |mean| = 2.4e47 turns into a relative error of 5e-6 in a normal result; the oracle
    allows that step, and still rejects a result 1 % off."""
    x = np.ones((1, 1, 4))
    mean, variance, w, b = (np.array([v]) for v in (-2.42765e47, 1.0, -5e-320, 0.0))

    def reference():
        return O.rnd(O.batch_norm(x, mean, variance, w, b, 1e-5, "f64"), "f64", 4)

    exact, trials = noiseless_and_noisy(reference)
    scale = w / np.sqrt(variance + 1e-5)
    folded = x * scale + (b - mean * scale)
    assert abs(folded[0, 0, 0] / exact[0, 0, 0] - 1) > 1e-6  # the step shows
    assert O.compare(folded, exact, trials, "f64", signed_zeros=False) == ""
    assert "differ" in O.compare(folded * 1.01, exact, trials, "f64", signed_zeros=False)
