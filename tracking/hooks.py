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
- sweep end (also the end of ``ropenope resume``): the runs live tracking missed are
  completed from the study (:func:`tracking.sync.sync_missed`) and their ids linked on the
  trials, then a last refresh, the parent run closed.

A tracking failure never fails a trial: it is shown once and recorded on the Optuna
trial as ``tracking_error``; ``ropenope sync STUDY`` completes the runs later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from space.outcomes import OUTCOME_OF_STATUS, Outcome, RunStatus
from space.trial_attrs import ATTR_MLFLOW_RUN_ID
from tracking.background import Background
from tracking.keys import lr_search_tracking
from tracking.pareto import pareto_of_study
from tracking.run_spec import trial_run_spec
from tracking.runs_view import ui_hint
from tracking.store import TrackingError
from tracking.study_view import StudyView, TrialLike
from tracking.sync import sync_missed, sync_trial, trial_artifacts
from tracking.tracker import Tracker
from workers.trial import TrialHooks

log = logging.getLogger("ropenope.tracking")

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

    def link_trial(self, study: StudyView, trial: TrialLike) -> Mapping[str, Any]:
        """Links (e.g. ``mlflow_run_id``) to record on a trial the driver is about to close
        itself; ``trial`` is the trial as it will be."""
        return {}

    def on_trial_end(self, study: StudyView, trial: TrialLike) -> None:
        return None

    def complete_runs(self, study: StudyView) -> Mapping[int, str]:
        """At the sweep's end: complete what tracking missed; returns ``{trial number:
        run id}`` to record as ``mlflow_run_id`` on finished trials that lack it."""
        return {}

    def on_sweep_end(self, study: StudyView, config: SweepConfig, summary: Any) -> None:
        return None


class MlflowTrialHooks(TrialHooks):
    """The trial-process half: one child run per trial. Pickles (a :class:`Tracker`).

    Every MLflow call runs on a background thread (:mod:`tracking.background`): training
    never waits for the tracking server. The run id reaches the driver with the next
    evaluation's links; at the trial's end the calls still queued get a bounded wait
    (none once the server is found not answering), and what is missing becomes the
    trial's ``tracking_error`` for ``ropenope sync`` to mend.
    """

    def __init__(self, tracker: Tracker, end_timeout_s: float = 120.0) -> None:
        self.tracker = tracker
        self.end_timeout_s = end_timeout_s
        self._background = Background("ropenope-trial-tracking", remote=not tracker.target.local)

    def _links(self) -> Mapping[str, Any] | None:
        run_id = self.tracker.run_id
        return {ATTR_MLFLOW_RUN_ID: run_id} if run_id else None

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
        self._background.submit(lambda: self.tracker.trial_started(spec, tags=info.environment))
        return None  # the run id goes back with the next evaluation

    def on_eval(self, info: TrialInfo, metrics: Mapping[str, float]) -> Mapping[str, Any] | None:
        step = metrics.get("step")
        if step is not None:
            series = None
            if len(info.seeds) > 1 and "seed" in metrics:
                series = f"seed_{int(metrics['seed'])}"
            values = dict(metrics)
            self._background.submit(
                lambda: self.tracker.trial_evaluated(int(step), values, series=series)
            )
        return self._links()

    def on_end(self, info: TrialInfo, outcome: TrialOutcome) -> Mapping[str, Any] | None:
        artifacts = trial_artifacts(info.out_dir)
        lr_params, lr_metrics = lr_search_tracking(outcome.lr_search)
        future = self._background.submit(
            lambda: self.tracker.trial_finished(
                OUTCOME_OF_STATUS.get(RunStatus(outcome.status), Outcome.FAIL),
                outcome.reason,
                {**outcome.scores, **lr_metrics},
                artifacts,
                params=lr_params,
            )
        )
        error = self._background.wait(future, self.end_timeout_s)
        if not future.done():
            error = (
                f"the tracking server at {self.tracker.target.shown_uri} did not answer "
                "before the trial ended"
                if self._background.remote
                else f"the tracking store {self.tracker.target.shown_uri} stayed busy for "
                f"{self.end_timeout_s:g} s at the trial's end"
            )
        if error is not None:
            raise TrackingError(error)  # the trainable records it as tracking_error
        return self._links()


class MlflowSweepHooks(SweepHooks):
    """The driver half. Every MLflow call runs on a background thread, in order: the
    sweep's loop (and with it the driver's heartbeat) never waits for the server.

    ``refresh_interval_s`` limits how often the Pareto artifacts are rebuilt while
    trials finish (0 = after every trial); the sweep's end always refreshes, then waits
    at most ``end_timeout_s`` for the calls still queued (none once the server is found
    not answering). ``link_timeout_s`` bounds the wait for the run of a trial the driver
    closes itself (a reused result), whose run id must be on the trial before Optuna
    closes it.
    """

    def __init__(
        self,
        tracker: Tracker,
        refresh_interval_s: float = 0.0,
        end_timeout_s: float = 120.0,
        link_timeout_s: float = 30.0,
    ) -> None:
        self.tracker = tracker
        self.refresh_interval_s = refresh_interval_s
        self.end_timeout_s = end_timeout_s
        self.link_timeout_s = link_timeout_s
        self._config: SweepConfig | None = None
        self._last_refresh = -float("inf")
        self._background = Background("ropenope-sweep-tracking", remote=not tracker.target.local)
        self._latest: StudyView | None = None
        self._refresh_queued = False

    @classmethod
    def from_config(cls, config: SweepConfig, study_name: str | None = None) -> MlflowSweepHooks:
        return cls(Tracker.from_config(config, study_name))

    @property
    def errors(self) -> list[str]:
        return self.tracker.errors

    def trial_hooks(self) -> TrialHooks | None:
        if not self.tracker.enabled:
            return None
        # A fresh copy carrying the parent run id if known yet (a trial finds the study's
        # run by its tags otherwise); the driver's tracker keeps its own errors.
        return MlflowTrialHooks(Tracker(self.tracker.target, self.tracker.parent_run_id))

    def on_sweep_start(self, study: StudyView, config: SweepConfig) -> None:
        self._config = config
        if self.tracker.enabled:
            self._background.submit(lambda: self.tracker.start_study(config))

    def link_trial(self, study: StudyView, trial: TrialLike) -> Mapping[str, Any]:
        """Create the run of a trial the driver is about to close (``trial`` as it will
        be), so its id goes on the trial first; ``{}`` when tracking cannot say in time."""
        if not self.tracker.enabled or self._background.stuck:
            return {}

        def link() -> str | None:
            _, run_id = sync_trial(trial, self.tracker, study.objectives, self._config)
            return run_id

        try:
            run_id = self._background.wait(
                self._background.submit(
                    lambda: self.tracker.attempt_value(f"link trial {trial.number}", link)
                ),
                self.link_timeout_s,
            )
        except Exception as err:  # recorded by the tracker; the trial closes unlinked
            log.debug("link of trial %s failed: %s", trial.number, err)
            return {}
        return {ATTR_MLFLOW_RUN_ID: run_id} if run_id else {}

    def on_trial_end(self, study: StudyView, trial: TrialLike) -> None:
        if not self.tracker.enabled:
            return
        self._background.submit(
            lambda: self.tracker.attempt(
                f"sync trial {trial.number}",
                lambda: sync_trial(trial, self.tracker, study.objectives, self._config),
            )
        )
        self._latest = study
        if time.monotonic() - self._last_refresh >= self.refresh_interval_s:
            self._queue_refresh()

    def complete_runs(self, study: StudyView) -> Mapping[int, str]:
        """Wait for the queued calls, then sync the finished trials whose run is missing,
        unlinked or not closed (:func:`tracking.sync.sync_missed`): a trial whose tracking
        failed, or whose driver was killed before its run was closed, gets its complete
        run without a manual ``ropenope sync``. Skipped (``{}``) for a server found silent;
        a failure is recorded on the tracker, never raised."""
        if not self.tracker.enabled:
            return {}
        self._background.drain(self.end_timeout_s)
        if self._background.stuck:
            return {}
        future = self._background.submit(
            lambda: self.tracker.attempt_value(
                "complete the runs tracking missed",
                lambda: sync_missed(study, self.tracker, self._config),
            )
        )
        try:
            links = self._background.wait(future, self.end_timeout_s)
        except Exception as err:  # attempt_value records it; nothing to link
            log.debug("completing the missed runs failed: %s", err)
            return {}
        return dict(links or {})

    def _queue_refresh(self) -> None:
        if self._refresh_queued:
            return  # one refresh in the queue reads the newest study view when it runs
        self._refresh_queued = True
        self._last_refresh = time.monotonic()

        def refresh() -> None:
            self._refresh_queued = False
            if self._latest is not None:
                self.tracker.refresh_study(pareto_of_study(self._latest))

        self._background.submit(refresh)

    def on_sweep_end(self, study: StudyView, config: SweepConfig, summary: Any) -> None:
        if not self.tracker.enabled:
            return
        self._latest = study
        self._queue_refresh()
        numbers = {
            f"trials_{state.lower()}": float(count)
            for state, count in (getattr(summary, "counts", None) or {}).items()
        }
        if getattr(summary, "wall_seconds", None) is not None:
            numbers["sweep_wall_seconds"] = float(summary.wall_seconds)
        accuracy = getattr(summary, "decision_accuracy", None)  # a scale ladder's
        if accuracy is not None:
            numbers.update(accuracy.metrics())
        self._background.submit(lambda: self.tracker.log_study_metrics(numbers))
        self._background.submit(self.tracker.end_study)
        self._background.drain(self.end_timeout_s)
        # the runs table's address: the experiment id is known once the study run was
        # opened (no network here); without it, the generic way in
        summary.ui = ui_hint(self.tracker.target, self.tracker.store.known_experiment_id)


__all__ = ["MlflowSweepHooks", "MlflowTrialHooks", "SweepHooks"]
