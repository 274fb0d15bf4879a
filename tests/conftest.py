"""Shared pytest options: `--update-golden` rewrites EXPECT blocks of golden IR files."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite the EXPECT blocks of tests/passes/golden/*.ir")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True, scope="session")
def _private_compile_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compiled code of the test run goes to a private cache, never the user's."""
    import os

    os.environ.setdefault("EMBER_CACHE_DIR", str(tmp_path_factory.mktemp("ember-cache")))
