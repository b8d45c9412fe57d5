"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The engines every integration module shares, registered once for the whole session
# (one PostgreSQL server, one local Ray), whichever modules run.
from engines import (  # noqa: F401
    postgres_server,
    ray_local,
    runs_home,
    storage_url,
    template_db,
)

REPO = Path(__file__).resolve().parent.parent

# Tests run on 2 cores next to other work: one torch thread each keeps them predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    torch.set_num_threads(1)
    yield


# Engines a test starts make it slow whatever its module says: a local Ray, the PostgreSQL
# server (directly or as the postgresql variant of ``storage_url``), headless Chromium.
# `make test-fast` (pytest -m "not slow") then runs the SQLite variant of each storage test.
_ENGINE_FIXTURES = frozenset({"ray_local", "postgres_server", "template_db"})
_BROWSER_MODULES = frozenset({"test_pages", "test_mlflow_ui"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            _ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            or params.get("storage_url") == "postgresql"
            or item.module.__name__ in _BROWSER_MODULES
        ):
            item.add_marker(pytest.mark.slow)
