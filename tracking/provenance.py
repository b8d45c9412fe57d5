"""Where a run's code came from (STYLE 11): the git commit and whether the tree was dirty.

The device and library versions are the trial process's business
(:mod:`workers.provenance`); this module needs no torch.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

from space.names import TAG_GIT_COMMIT, TAG_GIT_DIRTY
from tracking.keys import MLFLOW_GIT_COMMIT

GIT_COMMIT_ENV = "ROPENOPE_GIT_COMMIT"  # set by `submit --address` (the upload has no .git)


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git here: the commit comes from the environment instead
    return done.stdout.strip() if done.returncode == 0 else None


@cache
def _source_tags() -> tuple[tuple[str, str], ...]:
    commit = _git("rev-parse", "HEAD") or os.environ.get(GIT_COMMIT_ENV, "unknown")
    status = _git("status", "--porcelain", "--untracked-files=no")
    tags = {TAG_GIT_COMMIT: commit, MLFLOW_GIT_COMMIT: commit}
    if status is not None:
        tags[TAG_GIT_DIRTY] = "true" if status else "false"
    return tuple(tags.items())


def source_tags() -> dict[str, str]:
    """Git commit (and whether the tree had uncommitted changes) of this code."""
    return dict(_source_tags())
