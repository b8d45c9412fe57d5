"""The soft MLflow tracker: one study's runs, written without ever failing the sweep.

:class:`Tracker` is what the sweep driver and each trial process use (it pickles: a
target and a parent run id, nothing live). Its methods never raise for a tracking
failure: the first error of each call is kept in :attr:`Tracker.error` (and
:attr:`Tracker.errors`), shown once per process, and later calls of the same trial skip
the network for a cool-down while keeping their metrics to send at
:meth:`Tracker.trial_finished`; what still failed then, ``ropenope sync`` rebuilds from
the Optuna study, which stays the source of truth.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from space.names import (
    STEPS,
    TAG_OUTCOME,
    TAG_REASON,
)
from space.secrets import redact_text
from tracking.keys import (
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_SOURCE_NAME,
    RUN_STATUS,
    metric_key,
)
from tracking.provenance import source_tags
from tracking.run_spec import TrialRunSpec
from tracking.store import MlflowStore, now_ms, same_value
from tracking.study_run import write_front, write_study_run
from tracking.target import TrackingTarget, artifact_location, tracking_target

if TYPE_CHECKING:
    from space.schema import SweepConfig
    from tracking.pareto import ParetoTable

log = logging.getLogger("ropenope.tracking")

_ERROR_CHARS = 500
_T = TypeVar("_T")
_SHOWN: set[str] = set()


def _show_once(uri: str, message: str) -> None:
    if uri in _SHOWN:
        log.debug("tracking error: %s", message)
        return
    _SHOWN.add(uri)
    log.warning(
        "MLflow tracking at %s failed: %s. Training continues; the study keeps every "
        "result and `ropenope sync STUDY` rebuilds the missing runs.",
        uri,
        message,
    )


@dataclass
class _TrialState:
    """What one trial sent (or still has to send) to its child run."""

    spec: TrialRunSpec
    tags: dict[str, str]  # the spec's tags plus the live ones (outcome, provenance)
    known_run_id: str | None
    run_id: str | None = None
    started: bool = False
    resumed: bool = False
    logged: dict[str, dict[int, float]] = field(default_factory=dict)
    pending: list[Any] = field(default_factory=list)  # mlflow Metric objects
    last_step: int = 0


class Tracker:
    """MLflow tracking for one study, safe to hand to Ray trials (it pickles).

    Driver: ``tracker = Tracker.from_config(config)``, ``tracker.start_study(config)``,
    then ``tracker.refresh_study(table)`` as trials finish and ``tracker.end_study()``.
    Trial (its own copy): ``trial_started`` -> ``trial_evaluated`` per evaluation ->
    ``trial_finished``; then report ``tracker.run_id`` and the returned error.

    No method raises for a tracking failure: the first error of each call is kept in
    :attr:`error` (and :attr:`errors`), shown once per process, and later calls of the
    same trial skip the network for ``cooldown_s`` seconds while keeping their metrics to
    send at ``trial_finished``.
    """

    def __init__(
        self,
        target: TrackingTarget,
        parent_run_id: str | None = None,
        cooldown_s: float = 60.0,
    ) -> None:
        self.target = target
        self.parent_run_id = parent_run_id
        self.cooldown_s = cooldown_s
        self.errors: list[str] = []
        self._store: MlflowStore | None = None
        self._trial: _TrialState | None = None
        self._down_until = 0.0

    @classmethod
    def from_config(
        cls, config: SweepConfig, study_name: str | None = None, runs: Path | None = None
    ) -> Tracker:
        """No network here: the store is opened on first use."""
        return cls(tracking_target(config, study_name or config.study.name, runs))

    @classmethod
    def for_study(
        cls,
        study_name: str,
        uri: str | None = None,
        experiment: str | None = None,
        runs: Path | None = None,
    ) -> Tracker:
        """For commands that have a study name but no sweep file."""
        target = tracking_target(None, study_name, runs, uri=uri)
        if experiment:
            target = replace(
                target,
                experiment=experiment,
                artifact_location=artifact_location(target.uri, experiment, runs),
            )
        return cls(target)

    # -- pickling: a target and a parent run id, nothing live -----------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "parent_run_id": self.parent_run_id,
            "cooldown_s": self.cooldown_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["target"], state["parent_run_id"], state["cooldown_s"])

    def __repr__(self) -> str:
        return (
            f"Tracker(uri={self.target.shown_uri!r}, experiment={self.target.experiment!r}, "
            f"study={self.target.study!r}, parent_run_id={self.parent_run_id!r})"
        )

    @property
    def enabled(self) -> bool:
        return self.target.enabled

    @property
    def store(self) -> MlflowStore:
        if self._store is None:
            self._store = MlflowStore(self.target)
        return self._store

    @property
    def error(self) -> str | None:
        """The first tracking error seen by this tracker, or None."""
        return self.errors[0] if self.errors else None

    @property
    def run_id(self) -> str | None:
        """The current trial's child run id (None before it could be created)."""
        return self._trial.run_id if self._trial is not None else None

    # -- failure handling ---------------------------------------------------------
    def _record(self, what: str, err: BaseException) -> str:
        message = redact_text(f"{what}: {type(err).__name__}: {err}")[:_ERROR_CHARS]
        self.errors.append(message)
        self._down_until = time.monotonic() + self.cooldown_s
        _show_once(self.target.shown_uri, message)
        return message

    def attempt_value(self, what: str, fn: Callable[[], _T]) -> _T | None:
        """``fn()``, or None when it failed (the failure is recorded, never raised)."""
        return self._soft(what, fn, force=True)

    def attempt(self, what: str, fn: Callable[[], object]) -> str | None:
        """Run ``fn`` now (no cool-down); returns the tracking error it caused, or None."""
        before = len(self.errors)
        self._soft(what, fn, force=True)
        return self.errors[-1] if len(self.errors) > before else None

    def _soft(self, what: str, fn: Callable[[], _T], *, force: bool = False) -> _T | None:
        """Run ``fn``; a failure is recorded, never raised. Skipped while disabled, and
        during the cool-down after a failure unless ``force``."""
        if not self.enabled:
            return None
        if not force and time.monotonic() < self._down_until:
            return None
        try:
            return fn()
        except Exception as err:  # any client, HTTP or database error: training goes on
            self._record(what, err)
            return None

    # -- the study run (driver) ---------------------------------------------------
    def start_study(
        self,
        config: SweepConfig | None = None,
        *,
        storage: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str | None:
        """Find the study's parent run (a resumed study reuses it) or create it, log the
        sweep settings and file; returns the parent run id (None if tracking failed)."""

        def work() -> str:
            return self.open_study_run(config, storage, tags)[0]

        return self._soft("start the study run", work, force=True)

    def open_study_run(
        self,
        config: SweepConfig | None,
        storage: str | None = None,
        tags: Mapping[str, str] | None = None,
        reopen: bool = True,
    ) -> tuple[str, bool]:
        """Find or create the study's run and log the sweep on it (raises on failure);
        ``(run id, created)``. See :func:`tracking.study_run.write_study_run`."""
        run_id, created = write_study_run(self.store, config, storage, tags, reopen=reopen)
        self.parent_run_id = run_id
        return run_id, created

    def log_study_metrics(self, metrics: Mapping[str, float], step: int = 0) -> str | None:
        """Numbers about the whole sweep (trial counts, wall time) on the study's run;
        returns the tracking error, or None."""
        from mlflow.entities import Metric

        if not metrics:
            return None
        now = now_ms()
        batch = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]
        before = len(self.errors)
        self._soft(
            "log study metrics",
            lambda: self.store.log_metrics(self._ensure_parent(), batch),
            force=True,
        )
        return self.errors[-1] if len(self.errors) > before else None

    def end_study(self, status: str = "FINISHED") -> None:
        """Close the study's run (a later resume sets it RUNNING again)."""
        if self.parent_run_id is None:
            return
        self._soft(
            "end the study run",
            lambda: self.store.terminate(self.parent_run_id, status),
            force=True,
        )

    def _ensure_parent(self) -> str:
        if self.parent_run_id is None:
            self.parent_run_id, _ = self.store.ensure_parent()
        return self.parent_run_id

    # -- one trial (inside the trial process) --------------------------------------
    def trial_started(
        self,
        spec: TrialRunSpec,
        *,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Create (or, for a trial continued from a checkpoint, find again) the trial's
        child run and log its spec (params, tags, resolved candidate); returns the run id.

        ``run_id`` is the ``mlflow_run_id`` the study already has for this trial, if any;
        ``tags`` are live extras (the device and library versions of the trial process).
        """
        run_tags = {
            **spec.tags,
            TAG_OUTCOME: "RUNNING",
            MLFLOW_SOURCE_NAME: "ropenope",
            **source_tags(),
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        self._trial = _TrialState(spec=spec, tags=run_tags, known_run_id=run_id)
        self._down_until = 0.0
        self._soft("start the trial run", self._start_trial, force=True)
        return self.run_id

    def _start_trial(self) -> None:
        """Find or create the child run and send what is known at the start (idempotent)."""
        state = self._trial
        if state is None or state.started:
            return
        store = self.store
        parent = self._ensure_parent()
        run = store.get_run(state.known_run_id) if state.known_run_id else None
        if run is None:
            run = store.find_child(state.spec.number, state.spec.candidate_id)
        if run is None:
            run_id = store.create_child(parent, state.spec.run_name, state.tags)
            existing_params: dict[str, str] = {}
            existing_tags: dict[str, str] = {}
        else:
            run_id = run.info.run_id
            state.resumed = True
            existing_params, existing_tags = run.data.params, run.data.tags
            there = store.metric_steps(run)
            state.pending = [m for m in state.pending if m.step not in there.get(m.key, {})]
            for key, steps in there.items():
                state.logged.setdefault(key, {}).update(steps)
            if run.info.status != "RUNNING":
                store.client.update_run(run_id, status="RUNNING")
        state.run_id = run_id
        tags = dict(state.tags)
        tags[MLFLOW_PARENT_RUN_ID] = parent
        store.set_tags(run_id, tags, existing_tags)
        store.log_params(run_id, state.spec.params, existing_params)
        with tempfile.TemporaryDirectory(prefix="ropenope-trial-") as tmp:
            files = {}
            for name, text in state.spec.start_files().items():
                files[name] = Path(tmp) / name
                files[name].write_text(text)
            store.log_files(run_id, files)
        state.started = True

    def trial_evaluated(
        self, step: int, metrics: Mapping[str, float], series: str | None = None
    ) -> None:
        """Log one evaluation's metrics (train_loss, val_bpb, lr, ...) at ``step``.

        ``series`` prefixes the keys (``seed_1/val_bpb``: one curve per seed when a trial
        trains several). The ``step`` and ``seed`` keys of a history row are not metrics
        and are dropped; a (metric, step) already on a resumed run is not logged twice.
        """
        state = self._trial
        if state is None or not self.enabled:
            return
        from mlflow.entities import Metric

        step = int(step)
        state.last_step = max(state.last_step, step)
        now = now_ms()
        for key, value in metrics.items():
            if key in ("step", "seed") or not isinstance(value, int | float):
                continue
            if isinstance(value, bool):
                continue
            name = metric_key(f"{series}/{key}" if series else key)
            if step in state.logged.get(name, {}):
                continue
            state.pending.append(Metric(name, float(value), now, step))
            state.logged.setdefault(name, {})[step] = float(value)
        self._soft("log metrics", self._flush)

    def _flush(self) -> None:
        state = self._trial
        if state is None:
            return
        self._start_trial()
        if state.pending:
            self.store.log_metrics(state.run_id, state.pending)
            state.pending = []

    def trial_finished(
        self,
        outcome: Any,
        reason: str | None = None,
        scores: Mapping[str, float] | None = None,
        artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> str | None:
        """Log the final scores, the outcome (COMPLETE / PRUNED / FAIL, an Optuna state or
        its name) with its reason, upload ``artifacts`` (name -> file) and close the run.
        ``params`` are what only the trial's end knows (the learning rate its pilots chose).

        Sends again whatever earlier calls could not. Returns None when the run is
        complete in MLflow, else the tracking error to store on the Optuna trial
        (``tracking_error``); ``sync_study`` completes such runs later.
        """
        state = self._trial
        if state is None or not self.enabled:
            return None
        from mlflow.entities import Metric

        outcome_name = str(getattr(outcome, "name", outcome)).upper()
        if outcome_name not in RUN_STATUS:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {list(RUN_STATUS)}")
        scores = dict(scores or {})
        final_step = state.last_step or int(scores.get(STEPS) or 0)
        now = now_ms()
        for key, value in scores.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            name = metric_key(key)
            if final_step in state.logged.get(name, {}) and same_value(
                state.logged[name][final_step], float(value)
            ):
                continue
            state.pending.append(Metric(name, float(value), now, final_step))
            state.logged.setdefault(name, {})[final_step] = float(value)
        files = {name: Path(path) for name, path in (artifacts or {}).items()}
        end_tags = {TAG_OUTCOME: outcome_name, TAG_REASON: reason or ""}

        def finish() -> None:
            self._flush()
            store = self.store
            if params:
                store.log_params(state.run_id, params)
            store.set_tags(state.run_id, end_tags)
            store.log_files(state.run_id, files)
            store.terminate(state.run_id, RUN_STATUS[outcome_name])

        before = len(self.errors)
        self._soft("finish the trial run", finish, force=True)
        if len(self.errors) > before or not state.started:
            return self.errors[-1] if self.errors else "the trial run was never created"
        return None

    # -- the Pareto front on the study run (driver) ---------------------------------
    def refresh_study(self, table: ParetoTable) -> str | None:
        """Upload the Pareto table (CSV, Markdown, JSON) and plots (PNG, HTML) to the
        study's run under ``pareto/`` and tag each child run with ``pareto_rank`` and
        ``pareto``; returns the tracking error, or None."""
        before = len(self.errors)
        self._soft("refresh the Pareto front", lambda: self.publish_front(table), force=True)
        return self.errors[-1] if len(self.errors) > before else None

    def publish_front(self, table: ParetoTable) -> None:
        """The Pareto front on the study's run (raises on failure): see
        :func:`tracking.study_run.write_front`."""
        write_front(self.store, self._ensure_parent(), table, self.target)
