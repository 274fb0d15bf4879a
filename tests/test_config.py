"""`ember.config`: every EMBER_* variable read in one place, bad values named."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import ember
from ember import config


def test_every_variable_is_read_by_a_function() -> None:
    env = {"EMBER_NUM_THREADS": "3", "EMBER_CACHE": "0", "EMBER_CACHE_DIR": "/tmp/x",
           "EMBER_PRINT_AFTER": "cse, dce", "EMBER_DUMP_DIR": "/tmp/d",
           "EMBER_CHECK_PASSES": "1", "EMBER_VERIFY": "0", "EMBER_COMPILE_THREADS": "2"}
    assert set(env) == set(config.VARIABLES)
    assert config.num_threads(env) == 3
    assert config.compile_threads(env) == 2
    assert not config.cache_enabled(env)
    assert config.cache_dir(env) == Path("/tmp/x")
    assert config.print_after(env) == ["cse", "dce"]
    assert config.dump_dir(env) == "/tmp/d"
    assert config.check_passes(env) and not config.verify_passes(env)
    assert config.unknown(env) == []


def test_defaults_when_unset() -> None:
    env = {"XDG_CACHE_HOME": "/tmp/xdg"}
    assert config.num_threads(env) is None and config.cache_enabled(env)
    assert config.compile_threads(env) is None
    assert config.cache_dir(env) == Path("/tmp/xdg/ember")
    assert config.print_after(env) is None and config.dump_dir(env) is None
    assert not config.check_passes(env) and config.verify_passes(env)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_thread_counts_name_the_variable(value: str) -> None:
    with pytest.raises(ember.EmberError, match=f"EMBER_NUM_THREADS .*'{value}'"):
        config.num_threads({"EMBER_NUM_THREADS": value})
    with pytest.raises(ember.EmberError, match=f"EMBER_COMPILE_THREADS .*'{value}'"):
        config.compile_threads({"EMBER_COMPILE_THREADS": value})


def test_a_misspelled_variable_is_warned_about_once(monkeypatch) -> None:
    monkeypatch.setenv("EMBER_NUM_THREAD", "1")
    monkeypatch.setattr(config, "_warned", set())
    x = np.ones(4, np.float32)
    with pytest.warns(UserWarning, match="EMBER_NUM_THREAD .*known: EMBER_NUM_THREADS"):
        ember.compile(lambda a: a + 1, x, opt_level=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ember.compile(lambda a: a + 1, x, opt_level=0)
