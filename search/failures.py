"""When a sweep gives up: the failure budget and the cap on re-runs of re-runs.

An infrastructure failure is a trial the cluster failed, not its candidate: its worker
process or node died more often than ``resources.max_retries`` allows (``worker_died``),
or its machine failed it (a full disk, an I/O error: ``infrastructure_failure``). Neither
counts toward the study's target, since its candidate runs again; so without a budget a
broken cluster would keep starting new trials forever.

- :class:`FailureBudget`: the sweep stops, with one line that says why, once
  ``resources.failures.max_consecutive`` trials in a row ended by an infrastructure
  failure, or once more than ``max_rate`` of the last ``window`` trials did.
- :func:`rerun_depth`: how many re-runs deep a trial is (``rerun_of`` links); a trial
  ``max_rerun_depth`` deep is not re-run again (:func:`close_capped`: FAIL
  ``rerun_limit``, which counts toward the target).
- :func:`infrastructure_text`: whether a Ray error trace says the machine failed the trial.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from search.bookkeeping import finish_trial
from space.outcomes import INFRASTRUCTURE_REASONS, Reason
from space.sections import FailuresSection
from space.trial_attrs import ATTR_REASON, ATTR_REASON_DETAIL, TrialAttrs

# What a trial's trace says when its machine, not its code, failed it: the trainable's own
# InfrastructureFailure (workers.ray_trainable), or the OS error anywhere else.
_INFRASTRUCTURE = re.compile(
    r"InfrastructureFailure|\[Errno (?:5|28|122)\]|No space left on device"
    r"|Input/output error|Disk quota exceeded"
)


def infrastructure_text(text: str | None) -> bool:
    """Whether a Ray error trace says a full disk or an I/O error failed the trial."""
    return bool(text) and _INFRASTRUCTURE.search(text) is not None


class FailureBudget:
    """The trials this driver ran on the cluster, judged as they end (see the module
    docstring). :meth:`record` returns the one line that stops the sweep, once."""

    def __init__(self, settings: FailuresSection, study_name: str) -> None:
        self.settings = settings
        self.study_name = study_name
        self.consecutive = 0
        self.recent: deque[bool] = deque(maxlen=settings.window)
        self.exhausted: str | None = None

    def record(self, number: int, reason: str | None) -> str | None:
        """Trial ``number`` ended with ``reason`` (None: COMPLETE). Returns the line that
        stops the sweep when this ending spends the budget, else None."""
        failed = reason in INFRASTRUCTURE_REASONS
        self.consecutive = self.consecutive + 1 if failed else 0
        self.recent.append(failed)
        if self.exhausted is not None:
            return None
        s = self.settings
        if self.consecutive >= s.max_consecutive:
            why = f"{self.consecutive} trials in a row"
        elif len(self.recent) == s.window and sum(self.recent) > s.max_rate * s.window:
            why = f"{sum(self.recent)} of the last {s.window} trials"
        else:
            return None
        self.exhausted = (
            f"sweep stopped: {why} ended by an infrastructure failure (worker_died or "
            f"infrastructure_failure; the last, #{number}: {reason}), over the failure "
            f"budget resources.failures; fix the cluster, then `ropenope resume {self.study_name}`"
        )
        return self.exhausted


def rerun_depth(trial: FrozenTrial, by_number: Mapping[int, FrozenTrial]) -> int:
    """How many re-runs deep ``trial`` is: 0 for a trial that re-runs nothing, 1 for the
    re-run of an interrupted trial, 2 for a re-run of that re-run, ..."""
    depth, seen = 0, {trial.number}
    origin = TrialAttrs.of(trial.user_attrs).rerun_of
    while origin is not None and origin not in seen:
        depth += 1
        seen.add(origin)
        parent = by_number.get(origin)
        origin = None if parent is None else TrialAttrs.of(parent.user_attrs).rerun_of
    return depth


def at_rerun_cap(
    trial: FrozenTrial, trials: Iterable[FrozenTrial], settings: FailuresSection
) -> bool:
    """Whether ``trial`` is as many re-runs deep as ``max_rerun_depth`` allows."""
    return rerun_depth(trial, {t.number: t for t in trials}) >= settings.max_rerun_depth


def rerun_limit_detail(depth: int, why: str, detail: str) -> str:
    return f"not re-run again after {depth} re-run(s); it ended {why}: {detail}"[:4000]


def close_capped(
    study: optuna.Study,
    storage: RDBStorage,
    is_dead: Callable[[FrozenTrial], bool],
    settings: FailuresSection,
    detail: str,
) -> list[int]:
    """Close the RUNNING trials of dead drivers that are ``max_rerun_depth`` re-runs deep
    as FAIL ``rerun_limit`` (not re-queued, unlike the others). Returns their numbers."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    closed = []
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        depth = rerun_depth(trial, by_number)
        if depth < settings.max_rerun_depth or not is_dead(trial):
            continue
        attrs = {
            ATTR_REASON: Reason.RERUN_LIMIT,
            ATTR_REASON_DETAIL: rerun_limit_detail(depth, Reason.INTERRUPTED, detail),
        }
        if finish_trial(study, storage, trial, TrialState.FAIL, attrs=attrs):
            closed.append(trial.number)
    return closed
