"""Ask/tell on the Optuna study as a Ray Tune ``Searcher``: Optuna asks, Ray Tune trains,
Optuna is told exactly what happened.

We do not use Tune's ``OptunaSearch`` (DESIGN §7: it tells Optuna that a trial the
scheduler stopped is COMPLETE with its partial value, and merges unrelated sweeps under
one default study name). :class:`StudySearcher`:

- ``suggest`` starts the queued re-runs of interrupted trials first (so a resumed study
  trains what the uninterrupted sweep would have, and a finished one holds no queued
  re-run), then asks Optuna (enqueued presets first) and hands the trial to
  :class:`search.triage.Triage`, which samples the knobs, builds the candidate, and
  answers without Ray what needs no training: an impossible candidate is FAIL
  ``invalid_candidate``; a candidate already COMPLETE with the same budget is COMPLETE
  again with its values and ``reused_from`` (dedup); one being trained right now waits
  for its twin. The candidate goes to the trial serialised (``Candidate.to_dict``):
  validated once, there, with the seeds the trial trains.
- adaptive seeds (``study.repeats: {min, max}``): once the study holds its target,
  ``suggest`` starts the trials of seeds the planner asks for, queueing them first
  (:mod:`search.seed_rounds`), until every hypothesis is settled.
- every evaluation Tune receives is an Optuna intermediate value (the scheduler
  metric, keyed by training step).
- at the end, the trainable's last report holds its outcome (``workers.trial``):
  complete -> COMPLETE with all objective values; diverged -> FAIL ``diverged``; an
  exception -> FAIL ``error: <type>: <message>``. A trial that ends without an outcome
  was stopped by the scheduler -> PRUNED with its intermediate values. Every FAIL and
  PRUNED trial has a ``reason``.
- a trial Tune ended without telling anyone (a worker process it could not reuse) is
  found on the next controller step (:meth:`StudySearcher.tune_dropped`), closed as
  interrupted and re-queued; a trial too many re-runs deep is FAIL ``rerun_limit``
  instead, and the failure budget (:mod:`search.failures`) stops a sweep that the cluster
  keeps failing.

Links go both ways: Optuna trials carry ``ray_trial_id``, ``ray_trial_dir``,
``candidate_id``/``candidate_name`` (and ``mlflow_run_id`` once tracking reports it);
each Ray trial's config and folder name carry the Optuna trial number.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from search.bookkeeping import (
    GhostReaper,
    count_toward_target,
    finish_trial,
    reconcile_interrupted,
    set_trial_attrs,
)
from search.failures import FailureBudget, infrastructure_text, rerun_depth, rerun_limit_detail
from search.liveness import DriverRegistry
from search.optuna_adapter import claim_waiting, storage_trial_id
from search.optuna_view import study_view
from search.progress import Progress
from search.restore import find_restore
from search.retention import retain_trial
from search.seed_rounds import SeedRounds, queued_seed_trials, unsettled
from search.storage import sqlite_path
from search.study import OpenedStudy
from search.triage import Ready, Triage, Waiting
from space.expand import Candidate
from space.outcomes import RERUN_REASONS, Reason, RunStatus, error_reason
from space.schema import SweepConfig
from space.secrets import redact_tail, redact_text
from space.trial_attrs import (
    ATTR_RAY_TRIAL_DIR,
    ATTR_RAY_TRIAL_ID,
    ATTR_REASON,
    ATTR_REASON_DETAIL,
    ATTR_RESTART_REASON,
    ATTR_TRIAL_DIR,
    ATTR_WORKER_RESTARTS,
    TrialAttrs,
)
from tracking.hooks import SweepHooks
from workers.trial import EVALS_KEY, LINKS_KEY, OUTCOME_KEY, SEED_INDEX_KEY, TrialOutcome

# What Ray says when a trial's process or node died (rather than its code raising).
_WORKER_DEATH = re.compile(
    r"ActorDiedError|WorkerCrashedError|NodeDiedError|OutOfMemoryError|ActorUnavailableError"
    r"|RayActorError|died unexpectedly|SIGKILL|SIGSEGV|exited unexpectedly"
)


def worker_died(text: str | None) -> bool:
    """Whether a Ray error trace says the trial's worker process or node died."""
    return bool(text) and _WORKER_DEATH.search(text) is not None


def ray_error_reason(text: str | None) -> str:
    """``error: <Type>: <message>`` from a Ray error trace (its last informative line)."""
    # redacted before the cut below: a cut must not part a password from its URL
    lines = [ln.strip() for ln in redact_text(text or "").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Failure #", "File ", "^", "~"))]
    last = lines[-1] if lines else "the Ray trial failed without an error message"
    return error_reason(last[:300])


@dataclass
class _Live:
    trial: optuna.Trial
    candidate: Candidate
    source: str
    evals: int = 0
    restarts: int = 0
    links_seen: set[str] = field(default_factory=set)


class StudySearcher(Searcher):
    """Ask/tell on an Optuna study as a Tune ``Searcher`` (see the module docstring)."""

    def __init__(
        self,
        opened: OpenedStudy,
        config: SweepConfig,
        *,
        target: int,
        driver_id: str,
        registry: DriverRegistry,
        experiment_dir: Path,
        trials_dir: Path,
        dedup: bool,
        progress: Progress,
        hooks: SweepHooks,
    ) -> None:
        super().__init__(metric=None, mode=None)
        self.opened = opened
        self.study = opened.study
        self.storage = opened.storage
        self.config = config
        self.target = target
        self.driver_id = driver_id
        self.registry = registry
        self.experiment_dir = experiment_dir
        self.trials_dir = trials_dir
        self.progress = progress
        self.tracking_warned = False
        self.hooks = hooks
        # What a started trial becomes before Ray: trained, closed (invalid, reused), parked.
        self.triage = Triage(
            self.study,
            self.storage,
            config,
            driver_id=driver_id,
            dedup=dedup,
            progress=progress,
            hooks=hooks,
            close=self._close,
        )
        # Adaptive seeds: the rounds after the target (None for a fixed number of seeds).
        self.rounds = SeedRounds(self.study, config, progress) if config.study.adaptive else None
        self.eval_metric = config.scheduler.metric
        # What the scheduler knows of a trial it stopped (its rung, for MO-ASHA), by Tune
        # trial id: set by the Ray runtime with the scheduler.
        self.stop_attrs: Callable[[str], dict[str, Any]] = lambda tune_id: {}
        self.total_steps = config.train.total_steps
        # Trials run at once; the Ray runtime lowers it when the cluster holds fewer trials
        # with all their workers (search.ray_runtime.concurrent_trials).
        self.max_concurrent = config.resources.max_concurrent
        self.live: dict[str, _Live] = {}  # Tune trial id -> trial being trained
        self.errored: dict[str, _Live] = {}  # Tune reported an error; details follow
        self.trained: list[int] = []
        self.trial_seconds = 0.0
        self._idle_until = 0.0
        # Closes RUNNING trials no driver runs (search.bookkeeping.GhostReaper), now and then.
        self.reaper = GhostReaper(
            self.study,
            self.storage,
            driver_id,
            single_driver=sqlite_path(opened.url) is not None,
            restore_for=find_restore,
        )
        # Infrastructure failures this driver has seen; the line that stopped the sweep.
        self.failures = config.resources.failures
        self.budget = FailureBudget(self.failures, self.study.study_name)
        self.stop_line: str | None = None

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        return None  # the searcher's state is the Optuna study; nothing else to save

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its config into tuner.pkl for Tuner.restore, which we do not use:
        # resuming goes through the study (`ropenope resume`). Keep only the names.
        return {"study": self.study.study_name, "driver_id": self.driver_id}

    # -- asking ----------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.stop_line is not None:
            return Searcher.FINISHED
        if len(self.live) >= self.max_concurrent:
            return None
        if time.monotonic() < self._idle_until:
            return None
        self._reap(now=False)
        ready = self.triage.resolve_waiting()
        while ready is None:
            trials = self.study.get_trials(deepcopy=False)
            rerun = self._claim_rerun(trials)
            if rerun is not None:
                ready = self.triage.prepare(rerun)
                continue
            if count_toward_target(trials) >= self.target:
                if self.rounds is not None:
                    return self._seed_round(trial_id)
                if self.triage.waiting:
                    self._idle_until = time.monotonic() + 1.0
                    return None
                if self._reap(now=True):
                    continue  # a ghost counted toward the target: look again
                return Searcher.FINISHED
            ready = self.triage.prepare(self.study.ask())
        return self._launch(trial_id, ready)

    def _claim_rerun(self, trials: list[FrozenTrial]) -> optuna.Trial | None:
        """Re-runs first: start the oldest queued re-run of an interrupted trial before any
        other queued trial (a preset) or a sampled one. ``study.ask`` would take the oldest
        queued trial, and presets are queued when the study is made: a resumed study would
        train presets past its target in place of the candidates it was training, and
        leave their re-runs queued for ever."""
        for frozen in trials:
            rerun_of = TrialAttrs.of(frozen.user_attrs).rerun_of
            if frozen.state == TrialState.WAITING and rerun_of is not None:
                trial = claim_waiting(self.study, frozen)
                if trial is not None:  # None: another driver started it first
                    return trial
        return None

    def _reap(self, now: bool) -> bool:
        """Close RUNNING trials no driver runs (every ``reaper.interval_s``, or ``now``);
        whether any was closed."""
        held = {h.trial.number for h in (*self.live.values(), *self.errored.values())}
        held |= set(self.triage.waiting)
        reaped = self.reaper.reap(held) if now else self.reaper.maybe_reap(held)
        notify_closed(self.study, self.hooks, reaped, self.progress)
        return bool(reaped)

    def _seed_round(self, tune_id: str) -> dict[str, Any] | str | None:
        """Past the target of an adaptive study: start the next queued trial of seeds
        (queueing the planner's requests when none is queued); FINISHED once every
        hypothesis is settled and nothing runs; None to wait for running seeds."""
        assert self.rounds is not None
        while True:
            trials = self.study.get_trials(deepcopy=False)
            queued = queued_seed_trials(trials)
            for frozen in queued:
                trial = claim_waiting(self.study, frozen)
                if trial is None:
                    continue  # another driver started it
                ready = self.triage.prepare(trial)
                if ready is not None:
                    return self._launch(tune_id, ready)
            if queued:
                continue  # each was started, closed or parked: look at the study again
            if not self.rounds.queue(trials):
                break
        plan = self.rounds.plan(trials)
        if (
            self.live
            or self.triage.waiting
            or (not plan.done and any(t.state == TrialState.RUNNING for t in trials))
        ):
            self._idle_until = time.monotonic() + 1.0
            return None
        if not plan.done:
            waiting = unsettled(plan)
            why = (
                "seeds it asked for ended without a result"
                if self.rounds.stuck
                else "they wait for seeds no driver trains"
            )
            self.progress.note(
                f"adaptive seeds stop with hypotheses {', '.join(waiting)} open: {why}; "
                f"`ropenope status {self.study.study_name}` shows where each stands"
            )
        return Searcher.FINISHED

    def _launch(self, tune_id: str, ready: Ready) -> dict[str, Any]:
        trial, number = ready.trial, ready.trial.number
        trial_dir = self.trials_dir / f"{number:05d}"
        attrs = {
            ATTR_RAY_TRIAL_ID: tune_id,
            ATTR_RAY_TRIAL_DIR: str(self.experiment_dir / trial_dirname(number, tune_id)),
            ATTR_TRIAL_DIR: str(trial_dir),
        }
        set_trial_attrs(self.storage, storage_trial_id(trial), attrs)
        read = TrialAttrs.of(trial.user_attrs)
        source = describe_source(read)
        self.live[tune_id] = _Live(trial, ready.candidate, source)
        return {
            "optuna_trial": number,
            "study": self.study.study_name,
            "candidate": ready.candidate.to_dict(),
            "seeds": list(ready.seeds),
            "trial_dir": str(trial_dir),
            "restore_from": ready.restore_from,
            # A trial handed its learning rate (a promoted ladder trial under µP) trains
            # at it; with train.lr_search in its sweep file the pilots choose instead.
            "lr": read.lr if self.config.train.lr_search is None else None,
        }

    # -- telling ---------------------------------------------------------------------

    def _close(
        self,
        number: int,
        state: TrialState,
        attrs: Mapping[str, Any],
        values: list[float] | None = None,
    ) -> FrozenTrial | None:
        ok = finish_trial(self.study, self.storage, number, state, values=values, attrs=attrs)
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)
        if not ok:
            self.progress.note(f"#{number} was closed by another driver ({frozen.state.name})")
            return frozen
        self.progress.finished(frozen, self.study)
        error = TrialAttrs.of(frozen.user_attrs).tracking_error
        if error and not self.tracking_warned:  # once per sweep; every trial keeps its own
            self.tracking_warned = True
            self.progress.note(
                f"#{number} MLflow tracking failed ({error}); the sweep goes on and "
                f"`ropenope sync {self.study.study_name}` rebuilds the runs later"
            )
        notify_trial_end(self.study, self.hooks, [frozen], self.progress)
        retain_trial(frozen, self.study.get_trials(deepcopy=False), self.config.resources.keep)
        return frozen

    def _judge(self, number: int, reason: str | None) -> None:
        """A trial this driver ran on the cluster ended with ``reason`` (None: COMPLETE):
        spend the failure budget; past it, the sweep stops (:attr:`stop_line`)."""
        line = self.budget.record(number, reason)
        if line is not None and self.stop_line is None:
            self.stop_line = line

    def record_result(self, tune_id: str, result: Mapping[str, Any]) -> None:
        """An evaluation: the scheduler metric as an intermediate value, and links."""
        live = self.live.get(tune_id)
        if live is None:
            return
        tid = storage_trial_id(live.trial)
        links = result.get(LINKS_KEY)
        if links:
            new = {k: v for k, v in json.loads(links).items() if k not in live.links_seen}
            if new:
                set_trial_attrs(self.storage, tid, new)
                live.links_seen.update(new)
        if EVALS_KEY not in result or self.eval_metric not in result:
            return
        step = int(result.get("step", 0)) + int(result.get(SEED_INDEX_KEY, 0)) * self.total_steps
        value = float(result[self.eval_metric])
        if int(result[EVALS_KEY]) > live.evals:
            live.evals = int(result[EVALS_KEY])
            self.storage.set_trial_intermediate_value(tid, step, value)
            self.progress.evaluated(
                live.trial.number, result.get("step", step), self.eval_metric, value
            )

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        return None  # the callback records every result, including the one a stop follows

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        live = self.live.pop(trial_id, None)
        if live is None:
            return
        if error:
            self.errored[trial_id] = live  # SweepCallback.on_trial_error has the message
            return
        if result is None:
            self.interrupt(live, "Tune removed the trial before it reported")
            return
        self.record_result(trial_id, result)
        number = live.trial.number
        if OUTCOME_KEY not in result or not result[OUTCOME_KEY]:
            attrs = {
                ATTR_REASON: Reason.PRUNED,
                ATTR_REASON_DETAIL: f"stopped by the {self.config.stopping_scheduler} "
                f"scheduler after {live.evals} evaluations",
            }
            attrs.update(self.stop_attrs(trial_id))
            self._close(number, TrialState.PRUNED, attrs)
            self._judge(number, Reason.PRUNED)
            return
        outcome = TrialOutcome.from_json(result[OUTCOME_KEY])
        self._judge(number, outcome.reason)
        attrs = outcome.attrs()
        if outcome.status == RunStatus.COMPLETE:
            self.trained.append(number)
            self.trial_seconds += outcome.trial_seconds
            values = [outcome.scores.get(m, math.nan) for m in self.config.objective_names()]
            bad = [
                m
                for m, v in zip(self.config.objective_names(), values, strict=True)
                if not math.isfinite(v)
            ]
            if bad:
                attrs[ATTR_REASON] = error_reason(f"objective {bad[0]} is not a finite number")
                self._close(number, TrialState.FAIL, attrs)
            else:
                self._close(number, TrialState.COMPLETE, attrs, values=values)
        elif outcome.status == RunStatus.STOPPED:
            attrs.update(
                {ATTR_REASON: outcome.reason or Reason.PRUNED, ATTR_REASON_DETAIL: outcome.detail}
            )
            self._close(number, TrialState.PRUNED, attrs)
        else:  # diverged | error
            self.trained.append(number)
            self.trial_seconds += outcome.trial_seconds
            attrs.update({ATTR_REASON: outcome.reason, ATTR_REASON_DETAIL: outcome.detail})
            self._close(number, TrialState.FAIL, attrs)

    def on_trial_restart(self, tune_id: str, error_text: str | None) -> None:
        """Tune restarts a trial whose worker died (or whose machine failed it: a full
        disk, an I/O error), from its last checkpoint: count it on the trial and say so."""
        live = self.live.get(tune_id)
        if live is None:
            return
        live.restarts += 1
        why = ray_error_reason(error_text).removeprefix(f"{Reason.ERROR}: ")
        set_trial_attrs(
            self.storage,
            storage_trial_id(live.trial),
            {ATTR_WORKER_RESTARTS: live.restarts, ATTR_RESTART_REASON: why},
        )
        what = "its machine failed it" if infrastructure_text(error_text) else "its worker died"
        self.progress.note(
            f"#{live.trial.number} {what} ({why[:120]}); restarting from its "
            f"newest checkpoint (restart {live.restarts} of {self.config.resources.max_retries})"
        )

    def on_trial_error(self, tune_id: str, error_text: str | None) -> None:
        live = self.errored.pop(tune_id, None)
        if live is None:
            return
        if infrastructure_text(error_text):
            reason = Reason.INFRASTRUCTURE
        elif worker_died(error_text):
            reason = Reason.WORKER_DIED
        else:
            reason = ray_error_reason(error_text)
        detail = redact_tail(error_text or "", 4000)
        number = live.trial.number
        depth = self._rerun_depth(number)
        if reason in RERUN_REASONS and depth >= self.failures.max_rerun_depth:
            attrs = {
                ATTR_REASON: Reason.RERUN_LIMIT,
                ATTR_REASON_DETAIL: rerun_limit_detail(depth, reason, detail),
            }
        else:
            attrs = {ATTR_REASON: reason, ATTR_REASON_DETAIL: detail}
        self._close(number, TrialState.FAIL, attrs)
        self._judge(number, reason)

    def tune_dropped(self, ended: Mapping[str, str | None]) -> None:
        """Trials Tune ended without telling the searcher or any callback, by Tune trial id
        -> its error text. Tune does so when it cannot reuse a worker process for a trial
        (``reset_config`` returns False: ``TuneController._on_trial_reset`` marks the trial
        ERROR and tells no one); the trial would stay in :attr:`live`, and with it full,
        ``suggest`` would wait for ever. Each is closed as interrupted and re-queued (it
        never trained: Tune gave it no process)."""
        for tune_id, error_text in ended.items():
            live = self.live.pop(tune_id, None)
            if live is None:
                continue
            why = ray_error_reason(error_text).removeprefix(f"{Reason.ERROR}: ")
            self.interrupt(live, f"Ray Tune ended it without a result: {why}")

    def _rerun_depth(self, number: int) -> int:
        by_number = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        return rerun_depth(by_number[number], by_number)

    def interrupt(self, live: _Live | Waiting, detail: str) -> None:
        """Close a trial this driver cannot finish as FAIL ``interrupted`` and enqueue its
        candidate again, continuing from its newest checkpoint; one already
        ``max_rerun_depth`` re-runs deep is FAIL ``rerun_limit`` instead, not re-queued."""
        number = live.trial.number
        depth = self._rerun_depth(number)
        if depth >= self.failures.max_rerun_depth:
            self._close(
                number,
                TrialState.FAIL,
                {
                    ATTR_REASON: Reason.RERUN_LIMIT,
                    ATTR_REASON_DETAIL: rerun_limit_detail(depth, Reason.INTERRUPTED, detail),
                },
            )
            return
        closed = reconcile_interrupted(
            self.study,
            self.storage,
            lambda t: t.number == number,
            restore_for=find_restore,
            detail=detail,
        )
        self.progress.note(f"#{number} interrupted ({detail}); re-queued")
        notify_closed(self.study, self.hooks, [n for n, _ in closed], self.progress)

    def close_leftovers(self) -> list[int]:
        """After Tune returns: whatever this driver still holds was interrupted (Ctrl-C).
        Returns the numbers of the trials closed as interrupted."""
        for tune_id in list(self.errored):
            self.on_trial_error(tune_id, None)
        held = [*self.live.values(), *self.triage.waiting.values()]
        for held_trial in held:
            self.interrupt(held_trial, "the sweep stopped before the trial ended")
        self.live.clear()
        self.triage.waiting.clear()
        return [h.trial.number for h in held]


def describe_source(attrs: TrialAttrs) -> str:
    if attrs.rerun_of is not None:
        return f"re-run of #{attrs.rerun_of}"
    if attrs.requested_for is not None:
        seeds = ", ".join(str(s) for s in attrs.requested_seeds or ())
        return f"seeds {seeds} for {', '.join(attrs.requested_for)}"
    if attrs.preset is not None:
        return f"preset {attrs.preset}"
    return "sampled"


def trial_dirname(number: int, tune_id: str) -> str:
    return f"trial_{number:05d}_{tune_id}"


def notify_trial_end(
    study: optuna.Study, hooks: SweepHooks, trials: list[FrozenTrial], progress: Progress
) -> None:
    """``on_trial_end`` for trials whose outcome is now in the study; a hook that fails
    is reported, never stops the sweep."""
    view = study_view(study)
    for trial in trials:
        try:
            hooks.on_trial_end(view, trial)
        except Exception as err:  # tracking must not stop the sweep; say so
            progress.note(f"#{trial.number} tracking hook failed: {type(err).__name__}: {err}")


def notify_closed(
    study: optuna.Study, hooks: SweepHooks, numbers: list[int], progress: Progress
) -> None:
    """``on_trial_end`` for trials closed outside the searcher (reconciled ones)."""
    if numbers:
        closed = [t for t in study.get_trials(deepcopy=False) if t.number in numbers]
        notify_trial_end(study, hooks, closed, progress)
