"""MLflow tracking plugged into the sweep driver's hook points.

The driver (``search.driver``) calls a ``SweepHooks`` object in the driver process and
ships ``SweepHooks.trial_hooks()`` (a ``workers.ray_trainable.TrialHooks``) to every
trial process. :class:`MlflowSweepHooks` and :class:`MlflowTrialHooks` implement those
two interfaces (the driver's by duck typing, so this module imports neither ray nor the
driver) on top of :class:`tracking.mlflow_store.Tracker`:

- sweep start: the study's parent run is found again (resume) or created;
- trial start (trial process): the child run is created, or found again for a trial
  continued from a checkpoint; its id goes back to the driver as ``mlflow_run_id``;
- each evaluation: train_loss, val_bpb, ... by training step (one curve per seed when
  a trial trains several: ``seed_<n>/val_bpb``);
- trial end (trial process): final scores, outcome, reason, artifacts, run closed;
- trial end (driver, outcome now in Optuna): the run is made to agree with the study
  (covers pruned, invalid, reused and interrupted trials), and the Pareto front on the
  parent run and the ``pareto_rank`` / ``pareto`` tags of the children are refreshed;
- sweep end: a last refresh, the parent run closed.

A tracking failure never fails a trial: it is shown once and recorded on the Optuna
trial as ``tracking_error``; ``ropenope sync STUDY`` completes the runs later.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from space.names import ATTR_MLFLOW_RUN_ID
from tracking.mlflow_store import (
    OUTCOME_COMPLETE,
    OUTCOME_FAIL,
    OUTCOME_PRUNED,
    Tracker,
    TrackingError,
)
from tracking.runs_view import ui_hint
from tracking.sync import pareto_rows_from_study, trial_artifacts
from workers.ray_trainable import TrialHooks

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from space.schema import SweepConfig
    from workers.ray_trainable import TrialInfo, TrialOutcome

# TrialOutcome.status -> the Optuna state the driver tells (and the run's outcome tag).
OUTCOME_OF_STATUS = {
    "complete": OUTCOME_COMPLETE,
    "stopped": OUTCOME_PRUNED,
    "diverged": OUTCOME_FAIL,
    "error": OUTCOME_FAIL,
}


class MlflowTrialHooks(TrialHooks):
    """The trial-process half: one child run per trial. Pickles (a :class:`Tracker`)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_start(self, info: TrialInfo) -> Mapping[str, Any] | None:
        run_id = self.tracker.trial_started(
            info.number,
            info.ray_trial_id,
            info.candidate,
            info.config,
            seed=list(info.seeds),
            device=_device(info.config),
        )
        # Not created yet (MLflow down): trial_finished tries again; only what is still
        # missing then becomes the trial's tracking_error.
        return {ATTR_MLFLOW_RUN_ID: run_id} if run_id else None

    def on_eval(self, info: TrialInfo, metrics: Mapping[str, float]) -> None:
        step = metrics.get("step")
        if step is None:
            return
        series = None
        if len(info.seeds) > 1 and "seed" in metrics:
            series = f"seed_{int(metrics['seed'])}"
        self.tracker.trial_evaluated(int(step), metrics, series=series)

    def on_end(self, info: TrialInfo, outcome: TrialOutcome) -> Mapping[str, Any] | None:
        error = self.tracker.trial_finished(
            OUTCOME_OF_STATUS.get(outcome.status, OUTCOME_FAIL),
            outcome.reason,
            outcome.scores,
            trial_artifacts(info.out_dir),
        )
        if error is not None:
            raise TrackingError(error)  # the trainable records it as tracking_error
        run_id = self.tracker.run_id
        return {ATTR_MLFLOW_RUN_ID: run_id} if run_id else None


def _device(config: SweepConfig) -> str | None:
    try:
        from workers.ray_trainable import trial_device

        return trial_device(config)
    except Exception:  # an older driver without the helper: let torch say
        return None


class MlflowSweepHooks:
    """The driver half (``search.driver.SweepHooks`` interface, by duck typing).

    ``refresh_interval_s`` limits how often the Pareto artifacts are rebuilt while
    trials finish (0 = after every trial); the sweep's end always refreshes.
    """

    def __init__(self, tracker: Tracker, refresh_interval_s: float = 0.0) -> None:
        self.tracker = tracker
        self.refresh_interval_s = refresh_interval_s
        self._objectives: list[str] = []
        self._directions: list[str] = []
        self._config: SweepConfig | None = None
        self._last_refresh = -float("inf")

    @classmethod
    def from_config(cls, config: SweepConfig, study_name: str | None = None) -> MlflowSweepHooks:
        return cls(Tracker.from_config(config, study_name))

    @property
    def errors(self) -> list[str]:
        return self.tracker.errors

    def trial_hooks(self) -> TrialHooks | None:
        if not self.tracker.enabled:
            return None
        # A fresh copy carrying the parent run id (the driver's tracker keeps its errors).
        return MlflowTrialHooks(Tracker(self.tracker.target, self.tracker.parent_run_id))

    def on_sweep_start(self, study: optuna.Study, config: SweepConfig) -> None:
        self._config = config
        self._objectives = config.objective_names()
        self._directions = config.directions()
        self.tracker.start_study(config)

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not self.tracker.enabled:
            return
        self.tracker.trial_closed(trial, self._objectives or None, self._config)
        if time.monotonic() - self._last_refresh >= self.refresh_interval_s:
            self._refresh(study)

    def on_sweep_end(self, study: optuna.Study, config: SweepConfig, summary: Any) -> None:
        if not self.tracker.enabled:
            return
        self._refresh(study)
        numbers = {
            f"trials_{state.lower()}": float(count)
            for state, count in (getattr(summary, "counts", None) or {}).items()
        }
        if getattr(summary, "wall_seconds", None) is not None:
            numbers["sweep_wall_seconds"] = float(summary.wall_seconds)
        self.tracker.log_study_metrics(numbers)
        self.tracker.end_study()
        # the runs table's address (the id is known since the study started: no network)
        experiment_id = self.tracker._soft("find the experiment", self.tracker.store.experiment_id)
        if experiment_id is not None and hasattr(summary, "ui"):
            summary.ui = ui_hint(self.tracker.target, experiment_id)

    def _refresh(self, study: optuna.Study) -> None:
        self._last_refresh = time.monotonic()
        table = pareto_rows_from_study(study, self._objectives or None, self._directions or None)
        self.tracker.refresh_study(table)


__all__ = ["OUTCOME_OF_STATUS", "MlflowSweepHooks", "MlflowTrialHooks"]
