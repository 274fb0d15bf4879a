"""Shared pytest options: `--update-golden` rewrites EXPECT blocks of golden IR files."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite the EXPECT blocks of tests/passes/golden/*.ir")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
