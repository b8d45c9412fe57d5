"""A study's trials as sweep bookkeeping: which count toward the target, closing a trial
with its attributes, dedup lookups, and re-queueing what a dead driver left RUNNING."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from search.errors import StudyError
from search.optuna_adapter import enqueued_params, link_finished_trial, storage_trial_id
from search.storage import scan_lock
from space.outcomes import INFRASTRUCTURE_REASONS, RERUN_REASONS, Reason
from space.secrets import redact_text
from space.trial_attrs import (
    ATTR_CANDIDATE_ID,
    ATTR_KNOBS,
    ATTR_LADDER_ORIGIN,
    ATTR_LADDER_RUNG,
    ATTR_MLFLOW_RUN_ID,
    ATTR_PRESET,
    ATTR_PROMOTED_FROM,
    ATTR_REASON,
    ATTR_REASON_DETAIL,
    ATTR_REPEATS,
    ATTR_REQUESTED_FOR,
    ATTR_REQUESTED_SEEDS,
    ATTR_RERUN_OF,
    ATTR_RESTORE_FROM,
    ATTR_SEED,
    TrialAttrs,
    check_attrs,
)


def adds_seeds(trial: FrozenTrial) -> bool:
    """Whether ``trial`` trains more seeds of a candidate for undecided hypotheses
    (adaptive seeds) rather than a candidate of the study's target."""
    return TrialAttrs.of(trial.user_attrs).requested_for is not None


def counts_toward_target(trial: FrozenTrial) -> bool:
    """Finished trials count, and running ones; an interrupted trial or one whose worker
    died does not (its candidate runs again), nor does a queued one until it is asked,
    nor one that adds seeds to a candidate or trains it at a ladder rung above 0
    (``study.trials`` counts candidates)."""
    attrs = TrialAttrs.of(trial.user_attrs)
    if adds_seeds(trial) or attrs.ladder_rung is not None:
        return False
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    if trial.state == TrialState.FAIL:
        return attrs.reason not in RERUN_REASONS
    return False


def count_toward_target(trials: Iterable[FrozenTrial]) -> int:
    return sum(counts_toward_target(t) for t in trials)


def _clean(value: Any) -> Any:
    """User attributes are JSON: NaN and infinities become null; every text is redacted
    (the one choke point for what a trial stores: reasons, tracebacks, links)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def set_trial_attrs(storage: RDBStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Write ``attrs`` on a trial, cleaned and checked against the trial attributes'
    table (:mod:`space.trial_attrs`)."""
    cleaned = check_attrs({key: _clean(value) for key, value in attrs.items()})
    for key, value in cleaned.items():
        storage.set_trial_user_attr(trial_id, key, value)


def finish_trial(
    study: optuna.Study,
    storage: RDBStorage,
    trial: FrozenTrial | int,
    state: TrialState,
    *,
    values: list[float] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> bool:
    """Write ``attrs`` then close the trial. Attributes go first: Optuna refuses them on a
    finished trial. Returns False if someone else closed it first (PostgreSQL: two drivers
    reconciling the same trial), True if this call did."""
    frozen = trial if isinstance(trial, FrozenTrial) else _frozen(study, trial)
    tid = storage_trial_id(frozen)
    try:
        if attrs:
            set_trial_attrs(storage, tid, attrs)
        study.tell(frozen.number, values, state=state)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as err:
        current = storage.get_trial(tid)
        if current.state.is_finished():
            # Someone else closed it: a close of ours whose commit applied and whose answer
            # was lost is recognised as ours by the storage (search.storage).
            return False
        raise StudyError(f"could not close trial {frozen.number}: {err}") from err
    return True


def record_run_links(study: optuna.Study, storage: RDBStorage, links: Mapping[int, str]) -> None:
    """Record ``mlflow_run_id`` on trials (finished ones included) whose MLflow run was
    completed after they closed (``SweepHooks.complete_runs`` at the sweep's end)."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, run_id in links.items():
        if number in by_number:
            check_attrs({ATTR_MLFLOW_RUN_ID: run_id})
            link_finished_trial(
                storage, storage_trial_id(by_number[number]), ATTR_MLFLOW_RUN_ID, run_id
            )


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise StudyError(f"study {study.study_name!r} has no trial {number}")


def find_reusable(
    trials: Iterable[FrozenTrial], candidate_id: str, budget: str
) -> FrozenTrial | None:
    """The earliest COMPLETE trial of this candidate with this budget, if any."""
    best = None
    for t in trials:
        if (
            t.state == TrialState.COMPLETE
            and _same_run(t, candidate_id, budget)
            and (best is None or t.number < best.number)
        ):
            best = t
    return best


def find_running_twin(
    trials: Iterable[FrozenTrial], candidate_id: str, budget: str, number: int
) -> FrozenTrial | None:
    """The lowest-numbered RUNNING trial before ``number`` with this candidate and budget.

    Only earlier trials count: when two drivers tag the same candidate at once, the later
    trial waits for the earlier one and never the other way round (no trial is trained
    twice, and no two trials wait for each other)."""
    twins = [
        t
        for t in trials
        if t.state == TrialState.RUNNING
        and t.number < number
        and _same_run(t, candidate_id, budget)
    ]
    return min(twins, key=lambda t: t.number, default=None)


def _same_run(trial: FrozenTrial, candidate_id: str, budget: str) -> bool:
    """Whether ``trial`` trains this candidate with this budget."""
    attrs = TrialAttrs.of(trial.user_attrs)
    return attrs.candidate_id == candidate_id and attrs.budget == budget


def reconcile_interrupted(
    study: optuna.Study,
    storage: RDBStorage,
    is_dead: Callable[[FrozenTrial], bool],
    *,
    restore_for: Callable[[FrozenTrial], Path | None] = lambda t: None,
    detail: str = "the driver running it stopped before the trial ended",
) -> list[tuple[int, Path | None]]:
    """Close RUNNING trials of dead drivers as FAIL ``interrupted`` and enqueue their
    candidates again, continuing from ``restore_for(trial)`` when it finds a checkpoint.

    Optuna's heartbeat does not cover ask/tell, so nothing else would ever close them
    (DESIGN §7). Returns ``(number, restore_from)`` for each trial this call closed.
    """
    closed = []
    with scan_lock(study):  # two drivers never re-queue the same dead trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not is_dead(trial):
                continue
            restore = restore_for(trial)
            ok = finish_trial(
                study,
                storage,
                trial,
                TrialState.FAIL,
                attrs={ATTR_REASON: Reason.INTERRUPTED, ATTR_REASON_DETAIL: detail},
            )
            if not ok:
                continue  # another driver closed it and re-queued it
            _requeue(study, trial, restore)
            closed.append((trial.number, restore))
    return closed


def _requeue(study: optuna.Study, trial: FrozenTrial, restore: Path | None) -> None:
    """Enqueue ``trial``'s candidate again (``rerun_of``), continuing from ``restore``."""
    attrs = TrialAttrs.of(trial.user_attrs)
    if attrs.knobs is None:
        return
    rerun_attrs = {ATTR_KNOBS: attrs.knobs, ATTR_RERUN_OF: trial.number}
    # The candidate id while queued: the seed planner then sees its seeds as on their way.
    # A re-run of seeds the planner asked for trains the same seeds for the same reason.
    # A promoted trial keeps its ladder rung and links.
    carried = [ATTR_PRESET, ATTR_CANDIDATE_ID, ATTR_LADDER_RUNG, ATTR_PROMOTED_FROM]
    carried += [ATTR_LADDER_ORIGIN]
    if adds_seeds(trial):
        carried += [ATTR_REQUESTED_SEEDS, ATTR_REQUESTED_FOR, ATTR_SEED, ATTR_REPEATS]
    rerun_attrs.update(attrs.pick(carried))
    if restore is not None:
        rerun_attrs[ATTR_RESTORE_FROM] = str(restore)
    params = enqueued_params(trial)
    study.enqueue_trial(
        dict(trial.params) if params is None else params, user_attrs=check_attrs(rerun_attrs)
    )


def requeue_worker_deaths(
    study: optuna.Study, *, restore_for: Callable[[FrozenTrial], Path | None] = lambda t: None
) -> list[tuple[int, Path | None]]:
    """Re-run the candidates of FAIL ``worker_died`` and ``infrastructure_failure`` trials
    that no trial re-runs yet (``ropenope resume``), from their newest checkpoint."""
    queued = []
    with scan_lock(study):  # read, decide and enqueue with no other driver in between
        trials = study.get_trials(deepcopy=False)
        rerun = {TrialAttrs.of(t.user_attrs).rerun_of for t in trials}
        for trial in trials:
            if (
                trial.state == TrialState.FAIL
                and TrialAttrs.of(trial.user_attrs).reason in INFRASTRUCTURE_REASONS
                and trial.number not in rerun
            ):
                restore = restore_for(trial)
                _requeue(study, trial, restore)
                queued.append((trial.number, restore))
    return queued


class GhostReaper:
    """Closes, every ``interval_s`` seconds, RUNNING trials that no driver is running.

    A ghost is a RUNNING trial that this driver tagged (``driver_id``) but does not hold,
    one no driver tagged within ``grace_s`` of its start (asked, then lost), or, with one
    driver per study (SQLite), any RUNNING trial this driver does not hold. Each is closed
    FAIL ``interrupted`` and its candidate re-queued when it has one
    (:func:`reconcile_interrupted`); a trial never given knobs is only closed. A safety net:
    idempotent trial creation (``search.storage``) makes none in normal operation.
    """

    def __init__(
        self,
        study: optuna.Study,
        storage: RDBStorage,
        driver_id: str,
        *,
        single_driver: bool,
        interval_s: float = 60.0,
        grace_s: float = 120.0,
        restore_for: Callable[[FrozenTrial], Path | None] = lambda t: None,
    ) -> None:
        self.study = study
        self.storage = storage
        self.driver_id = driver_id
        self.single_driver = single_driver
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.restore_for = restore_for
        self._next = time.monotonic() + interval_s
        self._untagged: dict[int, float] = {}  # trial id -> monotonic time first seen untagged

    def is_ghost(self, trial: FrozenTrial, held: set[int]) -> bool:
        if trial.number in held:
            return False
        if self.single_driver:
            return True
        driver = TrialAttrs.of(trial.user_attrs).driver_id
        if driver is not None:
            return driver == self.driver_id
        # Untagged for ``grace_s`` of this driver's monotonic clock: ``datetime_start`` was
        # written by the asking driver's clock, which need not agree with this one's.
        now = time.monotonic()
        return now - self._untagged.setdefault(storage_trial_id(trial), now) >= self.grace_s

    def reap(self, held: Iterable[int]) -> list[int]:
        """Close the ghosts now; returns their numbers."""
        held = set(held)
        closed = reconcile_interrupted(
            self.study,
            self.storage,
            lambda t: self.is_ghost(t, held),
            restore_for=self.restore_for,
            detail="a ghost: RUNNING in the study but run by no driver",
        )
        return [n for n, _ in closed]

    def maybe_reap(self, held: Iterable[int]) -> list[int]:
        """:meth:`reap` when ``interval_s`` has passed since the last time."""
        if time.monotonic() < self._next:
            return []
        self._next = time.monotonic() + self.interval_s
        return self.reap(held)
