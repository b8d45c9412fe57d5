"""The sweep driver: Optuna asks, Ray Tune trains, Optuna is told exactly what happened.

We do not use Tune's ``OptunaSearch`` (DESIGN §7: it tells Optuna that a trial the
scheduler stopped is COMPLETE with its partial value, and merges unrelated sweeps
under one default study name). :class:`StudySearcher` is a Tune ``Searcher`` doing
ask/tell on the study itself:

- ``suggest`` asks Optuna (enqueued presets and re-runs first), samples the knobs,
  builds the candidate, and answers without Ray what needs no training: an impossible
  candidate is FAIL ``invalid_candidate``; a candidate already COMPLETE with the same
  budget is COMPLETE again with its values and ``reused_from`` (dedup); one being
  trained right now waits for its twin.
- every evaluation Tune receives is an Optuna intermediate value (the scheduler
  metric, keyed by training step).
- at the end, the trainable's last report holds its outcome (see
  ``workers.ray_trainable``): complete -> COMPLETE with all objective values;
  diverged -> FAIL ``diverged``; an exception -> FAIL ``error: <type>: <message>``.
  A trial that ends without an outcome was stopped by the scheduler -> PRUNED with
  its intermediate values. Every FAIL and PRUNED trial has a ``reason``.

Links go both ways: Optuna trials carry ``ray_trial_id``, ``ray_trial_dir``,
``candidate_id``/``candidate_name`` (and ``mlflow_run_id`` once tracking reports it);
each Ray trial's config and folder name carry the Optuna trial number.

After a crash, RUNNING trials of dead drivers are closed as FAIL ``interrupted`` and
their candidates enqueued again with the newest checkpoint found (the Ray trial's
last checkpoint, or the trial folder's), so the re-run continues from there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from search.progress import Progress
from search.status import saturation_warnings
from search.study import (
    DriverRegistry,
    OpenedStudy,
    SqliteLock,
    StudyError,
    budget_key,
    count_toward_target,
    find_reusable,
    find_running_twin,
    finish_trial,
    load_existing,
    open_study,
    reconcile_interrupted,
    redact,
    resolve_storage_url,
    runs_dir,
    set_trial_attrs,
    sqlite_path,
    storage_trial_id,
    stored_config,
    target_trials,
)
from space.errors import InvalidCandidate
from space.expand import Candidate
from space.names import (
    ATTR_BUDGET,
    ATTR_CANDIDATE_ID,
    ATTR_CANDIDATE_NAME,
    ATTR_DRIVER,
    ATTR_EVAL_METRIC,
    ATTR_KNOBS,
    ATTR_PRESET,
    ATTR_RAY_TRIAL_DIR,
    ATTR_RAY_TRIAL_ID,
    ATTR_REASON,
    ATTR_REASON_DETAIL,
    ATTR_REPEATS,
    ATTR_RESTORE_FROM,
    ATTR_REUSED_FROM,
    ATTR_SEED,
    ATTR_TRACKING_ERROR,
    ATTR_TRIAL_DIR,
    REASON_ERROR,
    REASON_INVALID,
    REASON_PRUNED,
    STEPS,
    TRAIN_SECONDS,
    VAL_BPB,
    is_score_name,
)
from space.schema import SweepConfig, load_config
from workers.ray_trainable import (
    EVALS_KEY,
    LINKS_KEY,
    OUTCOME_KEY,
    SEED_INDEX_KEY,
    TrialHooks,
    TrialOutcome,
    run_trial,
)

# Scores copied from a trial to a deduplicated one (besides every is_score_name key);
# not trial_seconds: that is what the trial itself cost, and a reused one cost nothing.
_EXTRA_SCORES = (VAL_BPB, TRAIN_SECONDS, STEPS)
_STUDY_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class SweepHooks:
    """Driver-side hook points for tracking; the default does nothing.

    ``trial_hooks()`` is shipped to every trial process (see ``TrialHooks``);
    ``on_trial_end`` runs in the driver after the trial's outcome is in Optuna (also
    for pruned, invalid, reused and interrupted trials, which never reach ``on_end``).
    """

    def trial_hooks(self) -> TrialHooks | None:
        return None

    def on_sweep_start(self, study: optuna.Study, config: SweepConfig) -> None:
        return None

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        return None

    def on_sweep_end(self, study: optuna.Study, config: SweepConfig, summary: SweepSummary) -> None:
        return None


@dataclass
class SweepSummary:
    study: str
    storage: str
    target: int
    counts: dict[str, int]
    wall_seconds: float
    ray_start_seconds: float = 0.0
    trained: int = 0  # trials this driver trained (not reused, not invalid)
    trial_seconds: float = 0.0  # sum of their own time (train + score)
    reconciled: list[int] = field(default_factory=list)
    experiment_dir: str | None = None
    interrupted: list[int] = field(default_factory=list)  # closed as interrupted by this run
    pareto: Any = None  # tracking.pareto.ParetoTable of the study's COMPLETE trials
    ui: str | None = None  # how to open the study's MLflow runs (None: tracking off)
    warnings: list[str] = field(default_factory=list)  # e.g. saturated objectives


def _ui_hint(config: SweepConfig, study_name: str) -> str | None:
    """The command that opens the MLflow UI on this study, or a tracking server's URL."""
    if not config.tracking.enabled:
        return None
    from tracking.mlflow_store import is_remote, tracking_target

    target = tracking_target(config, study_name)
    if is_remote(target.uri):
        return f"MLflow UI: {target.uri}  (experiment {target.experiment!r})"
    return f"MLflow UI: ropenope ui {study_name}  (then open http://127.0.0.1:5000)"


# -- checks and paths ----------------------------------------------------------------


def study_dir(study_name: str) -> Path:
    if not _STUDY_NAME.match(study_name):
        raise StudyError(f"study name {study_name!r}: use letters, digits, '_', '.', '-'")
    return runs_dir() / study_name


def evals_per_seed(config: SweepConfig) -> int:
    steps, every = config.train.total_steps, config.train.eval_every
    return steps // every + (1 if steps % every else 0)


def _newest(path: Path) -> float:
    files = [*path.glob("seed_*/checkpoint.pt"), *path.glob("seed_*/scores.json")]
    return max((f.stat().st_mtime for f in files), default=-1.0)


def find_restore(trial: FrozenTrial) -> Path | None:
    """The newest checkpoint an unfinished trial left: its Ray trial's last checkpoint
    (the Ray experiment folder), its own trial folder, or what it had restored from."""
    attrs = trial.user_attrs
    options: list[Path] = []
    ray_dir = attrs.get(ATTR_RAY_TRIAL_DIR)
    if ray_dir and Path(ray_dir).is_dir():
        options += sorted(Path(ray_dir).glob("checkpoint_*"), reverse=True)
    for key in (ATTR_TRIAL_DIR, ATTR_RESTORE_FROM):
        if attrs.get(key) and Path(attrs[key]).is_dir():
            options.append(Path(attrs[key]))
    scored = [(p, _newest(p)) for p in options]
    scored = [(p, t) for p, t in scored if t >= 0]
    if not scored:
        return None
    return max(scored, key=lambda pt: pt[1])[0]


def _error_reason(text: str | None) -> str:
    """``error: <Type>: <message>`` from a Ray error trace (its last informative line)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Failure #", "File ", "^", "~"))]
    last = lines[-1] if lines else "the Ray trial failed without an error message"
    return f"{REASON_ERROR}: {last[:300]}"


# -- the searcher --------------------------------------------------------------------


@dataclass
class _Ready:
    trial: optuna.Trial
    candidate: Candidate
    restore_from: str | None


@dataclass
class _Waiting:
    trial: optuna.Trial
    candidate: Candidate
    twin: int  # the trial number training the same candidate


@dataclass
class _Live:
    trial: optuna.Trial
    candidate: Candidate
    source: str
    evals: int = 0
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
        self.dedup = dedup
        self.progress = progress
        self.tracking_warned = False
        self.hooks = hooks
        self.budget = budget_key(config)
        self.seeds = [config.train.seed + i for i in range(config.study.repeats)]
        self.eval_metric = config.scheduler.metric
        self.total_steps = config.train.total_steps
        self.live: dict[str, _Live] = {}  # Tune trial id -> trial being trained
        self.waiting: dict[int, _Waiting] = {}  # Optuna number -> trial waiting on a twin
        self.errored: dict[str, _Live] = {}  # Tune reported an error; details follow
        self.trained: list[int] = []
        self.trial_seconds = 0.0
        self._idle_until = 0.0

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        return None  # the searcher's state is the Optuna study; nothing else to save

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its config into tuner.pkl for Tuner.restore, which we do not use:
        # resuming goes through the study (`ropenope resume`). Keep only the names.
        return {"study": self.study.study_name, "driver_id": self.driver_id}

    # -- asking ----------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self.live) >= self.config.resources.max_concurrent:
            return None
        if time.monotonic() < self._idle_until:
            return None
        self.registry.beat()
        ready = self._resolve_waiting()
        while ready is None:
            trials = self.study.get_trials(deepcopy=False)
            if count_toward_target(trials) >= self.target:
                if self.waiting:
                    self._idle_until = time.monotonic() + 1.0
                    return None
                return Searcher.FINISHED
            ready = self._prepare(self.study.ask())
        return self._launch(trial_id, ready)

    def _base_attrs(self) -> dict[str, Any]:
        return {
            ATTR_DRIVER: self.driver_id,
            ATTR_BUDGET: self.budget,
            ATTR_SEED: self.seeds[0],
            ATTR_REPEATS: len(self.seeds),
            ATTR_EVAL_METRIC: self.eval_metric,
        }

    def _replay_params(self, trial: optuna.Trial) -> None:
        """Suggest the enqueued params so Optuna records them as the trial's params."""
        frozen = self.storage.get_trial(storage_trial_id(trial))
        for name in frozen.system_attrs.get("fixed_params", {}):
            spec = self.config.space.get(name)
            if spec is not None and spec.searched:
                spec.suggest(trial)

    def _prepare(self, trial: optuna.Trial) -> _Ready | None:
        """Knobs -> candidate for a fresh trial. Returns it when it must be trained;
        closes it (invalid, reused) or parks it (twin running) otherwise."""
        tid = storage_trial_id(trial)
        set_trial_attrs(self.storage, tid, self._base_attrs())
        given = trial.user_attrs.get(ATTR_KNOBS)
        knobs: dict[str, Any] = {}
        try:
            if given is not None:
                self._replay_params(trial)
                knobs = dict(given)
            else:
                knobs = self.config.suggest(trial)
            candidate = self.config.candidate(knobs)
        except InvalidCandidate as err:
            self._close(
                trial.number,
                TrialState.FAIL,
                {ATTR_KNOBS: knobs, ATTR_REASON: REASON_INVALID, ATTR_REASON_DETAIL: str(err)},
            )
            return None
        except Exception as err:  # a malformed sampled value, a sampler bug: FAIL, go on
            self._close(
                trial.number,
                TrialState.FAIL,
                {
                    ATTR_REASON: f"{REASON_ERROR}: {type(err).__name__}: {err}",
                    ATTR_REASON_DETAIL: traceback.format_exc(limit=6)[-4000:],
                },
            )
            return None
        set_trial_attrs(
            self.storage,
            tid,
            {
                ATTR_CANDIDATE_ID: candidate.id,
                ATTR_CANDIDATE_NAME: candidate.name,
                ATTR_KNOBS: candidate.knobs,
            },
        )
        if self.dedup:
            # Read the study again now that this trial is tagged: a driver tagging the
            # same candidate at this moment then sees this trial, or this trial sees it.
            trials = self.study.get_trials(deepcopy=False)
            source = find_reusable(trials, candidate.id, self.budget)
            if source is not None:
                self._reuse(trial.number, source)
                return None
            twin = find_running_twin(trials, candidate.id, self.budget, trial.number)
            if twin is not None:
                self.waiting[trial.number] = _Waiting(trial, candidate, twin.number)
                self.progress.note(
                    f"#{trial.number} waits for #{twin.number} (same candidate): {candidate.name}"
                )
                return None
        return _Ready(trial, candidate, trial.user_attrs.get(ATTR_RESTORE_FROM))

    def _resolve_waiting(self) -> _Ready | None:
        """Waiting trials whose twin ended: reuse its result, or train them now."""
        if not self.waiting:
            return None
        trials = self.study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        for number, w in list(self.waiting.items()):
            twin = by_number.get(w.twin)
            if twin is not None and twin.state == TrialState.RUNNING:
                continue
            del self.waiting[number]
            source = find_reusable(trials, w.candidate.id, self.budget)
            if source is not None:
                self._reuse(number, source)
                continue
            other = find_running_twin(trials, w.candidate.id, self.budget, number)
            if other is not None:
                self.waiting[number] = _Waiting(w.trial, w.candidate, other.number)
                continue
            return _Ready(w.trial, w.candidate, w.trial.user_attrs.get(ATTR_RESTORE_FROM))
        return None

    def _reuse(self, number: int, source: FrozenTrial) -> None:
        origin = source.user_attrs.get(ATTR_REUSED_FROM, source.number)
        scores = {
            k: v for k, v in source.user_attrs.items() if is_score_name(k) or k in _EXTRA_SCORES
        }
        attrs = {**scores, ATTR_REUSED_FROM: origin}
        if ATTR_TRIAL_DIR in source.user_attrs:
            attrs[ATTR_TRIAL_DIR] = source.user_attrs[ATTR_TRIAL_DIR]
        self._close(number, TrialState.COMPLETE, attrs, values=list(source.values))

    def _launch(self, tune_id: str, ready: _Ready) -> dict[str, Any]:
        trial, number = ready.trial, ready.trial.number
        trial_dir = self.trials_dir / f"{number:05d}"
        attrs = {
            ATTR_RAY_TRIAL_ID: tune_id,
            ATTR_RAY_TRIAL_DIR: str(self.experiment_dir / trial_dirname(number, tune_id)),
            ATTR_TRIAL_DIR: str(trial_dir),
        }
        set_trial_attrs(self.storage, storage_trial_id(trial), attrs)
        source = describe_source(trial.user_attrs)
        self.live[tune_id] = _Live(trial, ready.candidate, source)
        return {
            "optuna_trial": number,
            "study": self.study.study_name,
            "knobs": ready.candidate.knobs,
            "seeds": list(self.seeds),
            "trial_dir": str(trial_dir),
            "restore_from": ready.restore_from,
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
        error = frozen.user_attrs.get(ATTR_TRACKING_ERROR)
        if error and not self.tracking_warned:  # once per sweep; every trial keeps its own
            self.tracking_warned = True
            self.progress.note(
                f"#{number} MLflow tracking failed ({error}); the sweep goes on and "
                f"`ropenope sync {self.study.study_name}` rebuilds the runs later"
            )
        try:
            self.hooks.on_trial_end(self.study, frozen)
        except Exception as err:  # tracking must not stop the sweep; say so
            self.progress.note(f"#{number} tracking hook failed: {type(err).__name__}: {err}")
        return frozen

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
            self._close(
                number,
                TrialState.PRUNED,
                {
                    ATTR_REASON: REASON_PRUNED,
                    ATTR_REASON_DETAIL: f"stopped by the {self.config.scheduler.kind} scheduler "
                    f"after {live.evals} evaluations",
                },
            )
            return
        outcome = TrialOutcome.from_json(result[OUTCOME_KEY])
        attrs = outcome.attrs()
        if outcome.status == "complete":
            self.trained.append(number)
            self.trial_seconds += outcome.trial_seconds
            values = [outcome.scores.get(m, math.nan) for m in self.config.objective_names()]
            bad = [
                m
                for m, v in zip(self.config.objective_names(), values, strict=True)
                if not math.isfinite(v)
            ]
            if bad:
                attrs[ATTR_REASON] = f"{REASON_ERROR}: objective {bad[0]} is not a finite number"
                self._close(number, TrialState.FAIL, attrs)
            else:
                self._close(number, TrialState.COMPLETE, attrs, values=values)
        elif outcome.status == "stopped":
            attrs.update(
                {ATTR_REASON: outcome.reason or REASON_PRUNED, ATTR_REASON_DETAIL: outcome.detail}
            )
            self._close(number, TrialState.PRUNED, attrs)
        else:  # diverged | error
            self.trained.append(number)
            self.trial_seconds += outcome.trial_seconds
            attrs.update({ATTR_REASON: outcome.reason, ATTR_REASON_DETAIL: outcome.detail})
            self._close(number, TrialState.FAIL, attrs)

    def on_trial_error(self, tune_id: str, error_text: str | None) -> None:
        live = self.errored.pop(tune_id, None)
        if live is None:
            return
        self._close(
            live.trial.number,
            TrialState.FAIL,
            {
                ATTR_REASON: _error_reason(error_text),
                ATTR_REASON_DETAIL: (error_text or "")[-4000:],
            },
        )

    def interrupt(self, live: _Live | _Waiting, detail: str) -> None:
        """Close a trial this driver cannot finish as FAIL ``interrupted`` and enqueue its
        candidate again, continuing from its newest checkpoint."""
        number = live.trial.number
        closed = reconcile_interrupted(
            self.study,
            self.storage,
            lambda t: t.number == number,
            restore_for=find_restore,
            detail=detail,
        )
        self.progress.note(f"#{number} interrupted ({detail}); re-queued")
        _notify_closed(self.study, self.hooks, [n for n, _ in closed], self.progress)

    def close_leftovers(self) -> list[int]:
        """After Tune returns: whatever this driver still holds was interrupted (Ctrl-C).
        Returns the numbers of the trials closed as interrupted."""
        for tune_id in list(self.errored):
            self.on_trial_error(tune_id, None)
        held = [*self.live.values(), *self.waiting.values()]
        for held_trial in held:
            self.interrupt(held_trial, "the sweep stopped before the trial ended")
        self.live.clear()
        self.waiting.clear()
        return [h.trial.number for h in held]


def describe_source(attrs: Mapping[str, Any]) -> str:
    if "rerun_of" in attrs:
        return f"re-run of #{attrs['rerun_of']}"
    if ATTR_PRESET in attrs:
        return f"preset {attrs[ATTR_PRESET]}"
    return "sampled"


def trial_dirname(number: int, tune_id: str) -> str:
    return f"trial_{number:05d}_{tune_id}"


class SweepCallback(tune.Callback):
    """Tune events the searcher does not see: every result (incl. the one a scheduler stop
    follows), error messages, trial starts, and a heartbeat on each controller step."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher

    def __getstate__(self) -> dict[str, Any]:
        return {}  # see StudySearcher.__getstate__

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.searcher.registry.beat()
        self.searcher.progress.tick(self.searcher.study)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        live = self.searcher.live.get(trial.trial_id)
        if live is not None:
            self.searcher.progress.started(live.trial.number, live.candidate.name, live.source)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.searcher.record_result(trial.trial_id, result)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        try:
            text = trial.get_error()
        except Exception as err:  # the error file itself is unreadable: say that instead
            text = f"{type(err).__name__}: {err}"
        self.searcher.on_trial_error(trial.trial_id, text)


# -- running a sweep -----------------------------------------------------------------


def default_hooks(config: SweepConfig, study_name: str) -> Any:
    """MLflow tracking (``tracking/``) when the sweep file enables it, else no hooks."""
    if not config.tracking.enabled:
        return SweepHooks()
    from tracking.hooks import MlflowSweepHooks

    return MlflowSweepHooks.from_config(config, study_name)


class _NoTunerRestoreHint(logging.Filter):
    """Tune suggests ``Tuner.restore`` after Ctrl-C; here one resumes with the study."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore" not in record.getMessage()


def _quiet_tune() -> None:
    """Our progress display replaces Tune's: the legacy output engine with ``verbose=0``
    prints nothing (the new engine prints its banner regardless). A forced experiment
    snapshot each ``num_to_keep`` checkpoints is expected here, not a problem."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    tune_logger = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoTunerRestoreHint) for f in tune_logger.filters):
        tune_logger.addFilter(_NoTunerRestoreHint())


def _start_ray(address: str | None) -> tuple[bool, float]:
    """Connect to ``address`` or start local Ray; returns (started here, seconds)."""
    _quiet_tune()
    if ray.is_initialized():
        return False, 0.0
    t0 = time.perf_counter()
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    return True, time.perf_counter() - t0


def _check_resources(config: SweepConfig) -> None:
    have = ray.cluster_resources()
    r = config.resources
    if r.cpus_per_trial > have.get("CPU", 0):
        raise StudyError(
            f"resources.cpus_per_trial={r.cpus_per_trial} but the Ray cluster has "
            f"{have.get('CPU', 0)} CPUs"
        )
    if r.gpus_per_trial > have.get("GPU", 0):
        raise StudyError(
            f"resources.gpus_per_trial={r.gpus_per_trial} but the Ray cluster has "
            f"{have.get('GPU', 0)} GPUs"
        )


def run_sweep(
    config: SweepConfig,
    *,
    config_text: str | None,
    study_name: str | None = None,
    storage: str | None = None,
    trials: int | None = None,
    allow_space_change: bool = False,
    dedup: bool | None = None,
    address: str | None = None,
    hooks: SweepHooks | None = None,
    runner: Any = None,
    progress: bool = True,
    resume_only: bool = False,
) -> SweepSummary:
    """Run (or continue) the sweep until the study holds ``trials`` counted trials.

    ``runner`` replaces ``workers.candidate.run_candidate`` in the trials (tests).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    name = study_name or config.study.name
    folder = study_dir(name)
    if hooks is None:
        hooks = default_hooks(config, name)
    url = resolve_storage_url(storage or config.study.storage)
    lock = None
    db = sqlite_path(url)
    if db is not None:
        lock = SqliteLock(db, name)
        lock.acquire()
    driver_id = uuid.uuid4().hex[:12]
    started_ray = False
    registry: DriverRegistry | None = None
    try:
        opened = open_study(
            config,
            config_text=config_text,
            name=name,
            storage_url=url,
            allow_space_change=allow_space_change,
            target=trials,
            # Drivers sharing a PostgreSQL study must not draw the same candidates; one
            # driver on SQLite stays reproducible from study.seed.
            seed_salt=0 if lock is not None else int(driver_id[:6], 16),
        )
        study = opened.study
        target = target_trials(study) or config.study.trials
        show = Progress(
            name,
            target,
            config.objective_names(),
            config.directions(),
            total_steps=config.train.total_steps,
            enabled=progress,
        )
        for w in opened.warnings:
            show.note(f"warning: {w}")
        show.note(
            f"study {name} in {redact(url)}: {'created' if opened.created else 'loaded'}, "
            f"target {target} trials, sampler {config.study.sampler}"
        )
        registry = DriverRegistry(study, driver_id)
        registry.register()
        hooks.on_sweep_start(study, config)
        # With the SQLite lock held, no other driver is alive: every RUNNING trial is orphaned.
        is_dead = (lambda t: True) if lock is not None else registry.dead_trial_check()
        closed = reconcile_interrupted(study, opened.storage, is_dead, restore_for=find_restore)
        for number, restore in closed:
            where = f", continuing from {restore}" if restore else ""
            show.note(
                f"#{number} was left RUNNING by a dead driver: FAIL interrupted, re-queued{where}"
            )
        _notify_closed(study, hooks, [n for n, _ in closed], show)
        summary = SweepSummary(
            name, redact(url), target, {}, 0.0, reconciled=[n for n, _ in closed]
        )
        if count_toward_target(study.get_trials(deepcopy=False)) >= target:
            show.note(f"study {name} already has {target} trials; raise the target with --trials N")
        else:
            corpus = _prepare_corpus(config, show, progress)
            started_ray, summary.ray_start_seconds = _start_ray(address)
            _check_resources(config)
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            experiment = f"{name}-{stamp}-{driver_id[:6]}"
            experiment_dir = folder / "ray" / experiment
            summary.experiment_dir = str(experiment_dir)
            searcher = StudySearcher(
                opened,
                config,
                target=target,
                driver_id=driver_id,
                registry=registry,
                experiment_dir=experiment_dir,
                trials_dir=folder / "trials",
                dedup=config.study.dedup if dedup is None else dedup,
                progress=show,
                hooks=hooks,
            )
            try:
                _fit(config, searcher, experiment, folder / "ray", hooks, runner, corpus)
            finally:
                summary.interrupted = searcher.close_leftovers()
            if summary.interrupted:
                show.note(f"stopped early: continue with `ropenope resume {name}`")
            summary.trained = len(searcher.trained)
            summary.trial_seconds = searcher.trial_seconds
        trials_now = study.get_trials(deepcopy=False)
        summary.counts = {s.name: sum(t.state == s for t in trials_now) for s in TrialState}
        summary.wall_seconds = time.perf_counter() - t_start
        from tracking.sync import pareto_rows_from_study

        summary.pareto = pareto_rows_from_study(study, config.objective_names())
        summary.warnings = saturation_warnings(trials_now, config.objective_names())
        summary.ui = _ui_hint(config, name)
        show.note(
            f"sweep done in {summary.wall_seconds:.1f} s; `ropenope status {name}` for the Pareto set"
        )
        hooks.on_sweep_end(study, config, summary)
        return summary
    finally:
        if registry is not None:
            registry.close()
        if started_ray:
            ray.shutdown()
        if lock is not None:
            lock.release()


def _prepare_corpus(config: SweepConfig, show: Progress, progress: bool) -> Any:
    """Tokenize the corpus once, before any trial, into the shared cache under the runs
    folder (issue 13); trials only open the handle read-only."""
    from workers.corpus import prepare
    from workers.data import DataError

    try:
        handle = prepare(config, runs_dir() / "cache", progress=progress)
    except DataError as err:
        raise StudyError(f"data: {err}") from None
    show.note(f"corpus: {handle.description} [{handle.tokenizer_kind}, cache {handle.key}]")
    return handle


def _notify_closed(
    study: optuna.Study, hooks: SweepHooks, numbers: list[int], progress: Progress
) -> None:
    """``on_trial_end`` for trials closed outside the searcher (reconciled ones)."""
    if not numbers:
        return
    for trial in study.get_trials(deepcopy=False):
        if trial.number in numbers:
            try:
                hooks.on_trial_end(study, trial)
            except Exception as err:  # tracking must not stop the sweep; say so
                progress.note(f"#{trial.number} tracking hook failed: {type(err).__name__}: {err}")


def _fit(
    config: SweepConfig,
    searcher: StudySearcher,
    experiment: str,
    storage_path: Path,
    hooks: SweepHooks,
    runner: Any,
    corpus: Any = None,
) -> None:
    scheduler = None
    s = config.scheduler
    if s.kind == "asha":
        total = evals_per_seed(config) * config.study.repeats
        # max_t beyond the last evaluation: ASHA must never stop a trial for reaching the
        # end (that would skip its scoring and mark a full-budget trial PRUNED).
        scheduler = ASHAScheduler(
            time_attr=EVALS_KEY,
            metric=s.metric,
            mode=s.mode,
            max_t=max(total + 1, s.grace_period),
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    r = config.resources
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, sweep=config, hooks=hooks.trial_hooks(), runner=runner, corpus=corpus
        ),
        {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=-1,
            # One process serves many trials: torch is imported and the corpus loaded once
            # per worker, not per trial. A stopped trial's thread exits at its next report.
            reuse_actors=True,
            trial_name_creator=lambda t: f"optuna_{t.config['optuna_trial']}",
            trial_dirname_creator=lambda t: trial_dirname(t.config["optuna_trial"], t.trial_id),
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=str(storage_path.resolve()),
            callbacks=[SweepCallback(searcher)],
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    tuner.fit()


def _read_config(path: str | Path) -> tuple[SweepConfig, str]:
    path = Path(path)
    config = load_config(path)
    return config, path.read_text()


def submit(config_path: str | Path, **options: Any) -> SweepSummary:
    """`ropenope submit CONFIG`: create or load the study and run the sweep."""
    config, text = _read_config(config_path)
    return run_sweep(config, config_text=text, **options)


def resume(
    study_name: str,
    *,
    storage: str | None = None,
    config_path: str | Path | None = None,
    trials: int | None = None,
    **options: Any,
) -> SweepSummary:
    """`ropenope resume STUDY`: reconcile what a dead driver left and continue, with the
    sweep file stored in the study (or ``config_path``)."""
    opened = load_existing(study_name, storage)
    if config_path is not None:
        config, text = _read_config(config_path)
    else:
        config, text = stored_config(opened.study), None
    current = target_trials(opened.study) or config.study.trials
    if trials is not None and trials < current:
        raise StudyError(f"--trials {trials} is below the study's target {current}")
    return run_sweep(
        config,
        config_text=text,
        study_name=study_name,
        storage=opened.url,
        trials=trials if trials is not None else current,
        **options,
    )


__all__ = [
    "StudySearcher",
    "SweepCallback",
    "SweepHooks",
    "SweepSummary",
    "find_restore",
    "resume",
    "run_sweep",
    "submit",
]
