"""The sweep's hook points, and MLflow tracking plugged into them.

The driver (``search.driver``) calls a :class:`SweepHooks` object in the driver process
and ships :meth:`SweepHooks.trial_hooks` (a ``workers.trial.TrialHooks``) to every trial
process. :class:`MlflowSweepHooks` and :class:`MlflowTrialHooks` implement both halves
on top of :class:`tracking.tracker.Tracker`:

- sweep start: the study's parent run is found again (resume) or created;
- trial start (trial process): the child run is created, or found again for a trial
  continued from a checkpoint; its id goes back to the driver as ``mlflow_run_id``;
- each evaluation: train_loss, val_bpb, ... by training step (one curve per seed when
  a trial trains several: ``seed_<n>/val_bpb``);
- trial end (trial process): final scores, outcome, reason, artifacts, run closed;
- trial end (driver, outcome now in Optuna): the run is made to agree with the study
  (:func:`tracking.sync.sync_trial`; covers pruned, invalid, reused and interrupted
  trials), and the Pareto front on the parent run and the ``pareto_rank`` / ``pareto``
  tags of the children are refreshed;
- sweep end: a last refresh, the parent run closed.

A tracking failure never fails a trial: it is shown once and recorded on the Optuna
trial as ``tracking_error``; ``ropenope sync STUDY`` completes the runs later.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from space.names import ATTR_MLFLOW_RUN_ID
from space.outcomes import OUTCOME_OF_STATUS, Outcome, RunStatus
from tracking.pareto import pareto_of_study
from tracking.run_spec import trial_run_spec
from tracking.store import TrackingError
from tracking.study_view import StudyView, TrialLike
from tracking.sync import sync_trial, trial_artifacts
from tracking.tracker import Tracker
from workers.trial import TrialHooks

if TYPE_CHECKING:
    from space.schema import SweepConfig
    from workers.trial import TrialInfo, TrialOutcome


class SweepHooks:
    """Driver-side hook points; the default does nothing.

    ``trial_hooks()`` is shipped to every trial process (see ``TrialHooks``);
    ``on_trial_end`` runs in the driver after the trial's outcome is in Optuna (also
    for pruned, invalid, reused and interrupted trials, which never reach ``on_end``).
    """

    def trial_hooks(self) -> TrialHooks | None:
        return None

    def on_sweep_start(self, study: StudyView, config: SweepConfig) -> None:
        return None

    def on_trial_end(self, study: StudyView, trial: TrialLike) -> None:
        return None

    def on_sweep_end(self, study: StudyView, config: SweepConfig, summary: Any) -> None:
        return None


class MlflowTrialHooks(TrialHooks):
    """The trial-process half: one child run per trial. Pickles (a :class:`Tracker`)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_start(self, info: TrialInfo) -> Mapping[str, Any] | None:
        spec = trial_run_spec(
            number=info.number,
            candidate_id=info.candidate.id,
            candidate_name=info.candidate.name,
            knobs=info.candidate.knobs,
            seeds=info.seeds,
            ray_trial_id=info.ray_trial_id,
            config=info.config,
            candidate=info.candidate,
        )
        run_id = self.tracker.trial_started(spec, tags=info.environment)
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
            OUTCOME_OF_STATUS.get(RunStatus(outcome.status), Outcome.FAIL),
            outcome.reason,
            outcome.scores,
            trial_artifacts(info.out_dir),
        )
        if error is not None:
            raise TrackingError(error)  # the trainable records it as tracking_error
        run_id = self.tracker.run_id
        return {ATTR_MLFLOW_RUN_ID: run_id} if run_id else None


class MlflowSweepHooks(SweepHooks):
    """The driver half.

    ``refresh_interval_s`` limits how often the Pareto artifacts are rebuilt while
    trials finish (0 = after every trial); the sweep's end always refreshes.
    """

    def __init__(self, tracker: Tracker, refresh_interval_s: float = 0.0) -> None:
        self.tracker = tracker
        self.refresh_interval_s = refresh_interval_s
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

    def on_sweep_start(self, study: StudyView, config: SweepConfig) -> None:
        self._config = config
        self.tracker.start_study(config)

    def on_trial_end(self, study: StudyView, trial: TrialLike) -> None:
        if not self.tracker.enabled:
            return
        self.tracker.attempt(
            f"sync trial {trial.number}",
            lambda: sync_trial(trial, self.tracker, study.objectives, self._config),
        )
        if time.monotonic() - self._last_refresh >= self.refresh_interval_s:
            self._refresh(study)

    def on_sweep_end(self, study: StudyView, config: SweepConfig, summary: Any) -> None:
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

    def _refresh(self, study: StudyView) -> None:
        self._last_refresh = time.monotonic()
        self.tracker.refresh_study(pareto_of_study(study))


__all__ = ["MlflowSweepHooks", "MlflowTrialHooks", "SweepHooks"]
