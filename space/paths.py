"""Where ropenope keeps things on disk: the runs folder, the one home of that fact.

``$ROPENOPE_HOME`` (default ``./runs``) holds the embedded stores (``optuna.db``,
``mlflow.db`` and its artifacts), each study's trial folders and Ray experiments, and the
tokenized-corpus cache. On a cluster every node gets the same ``ROPENOPE_HOME`` on a shared
volume (docker-compose.yml).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "ROPENOPE_HOME"


def runs_dir() -> Path:
    """The project-local runs folder: ``$ROPENOPE_HOME``, else ``./runs`` (absolute)."""
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser().resolve() if home else (Path.cwd() / "runs").resolve()
