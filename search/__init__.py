"""search: the sweep driver and the ``ropenope`` command line.

- :func:`submit` / :func:`resume` / :func:`run_sweep` (``search.driver``): Optuna
  ask/tell around Ray Tune, with exact outcomes (COMPLETE / PRUNED / FAIL + reason),
  dedup, crash reconciliation, a failure budget (``search.failures``);
  ``tracking.hooks.SweepHooks`` is where tracking plugs in.
- :func:`open_study` / :func:`load_existing` (``search.study``): the Optuna study in a
  SQL database, refused when its directions or space differ from the sweep file.
- :func:`run_rungs` (``search.ladder``): a scale ladder's rungs above 0, promoted from the
  rung below as trials of the same study.
- :func:`summarize` (``search.status``): what ``ropenope status`` shows.
- :func:`main`: the ``ropenope`` command (``search.cli``).
- :class:`MOASHAScheduler` (``search.mo_asha``): multi-objective successive halving as a
  Ray Tune scheduler (``study.early_stopping``), usable on its own in any Tune run.

Names resolve on first use, so ``import search`` does not import ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "SweepSummary": "search.driver",
    "resume": "search.driver",
    "run_sweep": "search.driver",
    "submit": "search.driver",
    "CliError": "search.errors",
    "StudyError": "search.errors",
    "StudyMismatch": "search.errors",
    "StoreError": "search.errors",
    "load_existing": "search.study",
    "open_study": "search.study",
    "summarize": "search.status",
    "run_rungs": "search.ladder",
    "main": "search.cli",
    "MOASHAScheduler": "search.mo_asha",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
