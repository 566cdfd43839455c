"""Shared fixtures: one phantom cache per test session, so phantoms are generated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def phantom_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point ``$MMBENCH_CACHE`` at a session folder (never the user's real cache)."""
    path = tmp_path_factory.mktemp("mmbench-cache")
    old = os.environ.get("MMBENCH_CACHE")
    os.environ["MMBENCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MMBENCH_CACHE", None)
    else:
        os.environ["MMBENCH_CACHE"] = old
