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
