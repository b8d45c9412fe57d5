"""The scale ladder in the sweep driver (``ladder:``, :mod:`space.ladder`): after rung 0,
promote candidates to the next rung and train them there, as trials of the same study.

Rung 0 is the sweep as :func:`search.driver.run_sweep` runs it. Then, rung by rung,
:func:`queue_promotions` picks from the rung below the ``promote.top_k`` candidates best
by ``promote.by`` (ties: the earlier trial), plus every candidate a hypothesis compares,
and enqueues one trial each, with the candidate's knobs (and the rung's ``knobs``),
``ladder_rung``, ``promoted_from`` (the trial one rung below) and ``ladder_origin`` (its
rung-0 trial), and records in the study each hypothesis's effect predicted for the rung
from the rungs below (:func:`state_predictions`). :class:`RungSearcher` trains exactly those queued trials with the rung's
sweep file (:func:`space.ladder.apply_rung`): the rung's model, training and seeds.

Nothing lives only in memory. A rung is promoted once, under the study's scan lock, and
only when the rung below has nothing running or queued; its trials never count toward
``study.trials``; their budget key holds the rung (:func:`search.signature.budget_key`), so
dedup never hands a rung-0 result to a rung-1 trial; an interrupted rung-1 trial is
re-queued with its ladder links (:func:`search.bookkeeping.reconcile_interrupted`). So a driver
killed between rungs or inside one resumes at that rung and trains no rung-0 trial again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from search.bookkeeping import adds_seeds, count_toward_target
from search.calibration import calibrated
from search.errors import StudyError
from search.optuna_adapter import claim_waiting
from search.presets import fixed_params
from search.progress import Progress
from search.ray_runtime import check_resources, fit, start_ray
from search.searcher import StudySearcher
from search.seed_rounds import compares
from search.storage import scan_lock, sqlite_path
from search.study import OpenedStudy
from space.errors import ConfigError, InvalidCandidate
from space.ladder import apply_rung, promote_direction, rung_of, transfers_lr
from space.names import STUDY_ATTR_LADDER_PREDICTIONS
from space.schema import SweepConfig
from space.trial_attrs import (
    ATTR_CANDIDATE_NAME,
    ATTR_KNOBS,
    ATTR_LADDER_ORIGIN,
    ATTR_LADDER_RUNG,
    ATTR_LR,
    ATTR_PRESET,
    ATTR_PROMOTED_FROM,
    TrialAttrs,
    check_attrs,
)
from tracking.hooks import SweepHooks
from tracking.ladder_view import study_decision_accuracy


@dataclass(frozen=True)
class Promotion:
    """A candidate of one rung chosen for the next: its trial there, and why."""

    trial: FrozenTrial
    value: float  # its promote.by value at the rung below
    why: str  # "top 2 by short_bpb" or "hypothesis <name>"


def _rung_results(trials: Sequence[FrozenTrial], rung: int) -> list[FrozenTrial]:
    """The COMPLETE trials of ``rung``, one per candidate (the earliest)."""
    out: dict[str, FrozenTrial] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.state != TrialState.COMPLETE or adds_seeds(t) or rung_of(t.user_attrs) != rung:
            continue
        cid = TrialAttrs.of(t.user_attrs).candidate_id
        if cid is not None and cid not in out:
            out[cid] = t
    return list(out.values())


def promotions(config: SweepConfig, trials: Sequence[FrozenTrial], rung: int) -> list[Promotion]:
    """Which candidates of ``rung`` train at ``rung + 1``, best first, then those only a
    hypothesis asks for (pure: a function of the study's trials)."""
    ladder = config.ladder
    if ladder is None:
        return []
    by = ladder.promote.by
    index = config.objective_names().index(by)
    sign = 1.0 if promote_direction(config) == "minimize" else -1.0
    results = _rung_results(trials, rung)
    ranked = sorted(results, key=lambda t: (sign * t.values[index], t.number))
    top = ranked[: ladder.promote.top_k]
    chosen = [Promotion(t, t.values[index], f"top {ladder.promote.top_k} by {by}") for t in top]
    at_rung = apply_rung(config, rung)
    for t in ranked[ladder.promote.top_k :]:
        attrs = TrialAttrs.of(t.user_attrs)
        try:
            layers = at_rung.candidate(attrs.knobs or {}).layers
        except (ConfigError, InvalidCandidate):
            continue
        if compares(config.hypotheses, layers, attrs.preset):
            chosen.append(Promotion(t, t.values[index], "a hypothesis compares it"))
    return chosen


def queue_promotions(study: optuna.Study, config: SweepConfig, rung: int) -> list[Promotion]:
    """Enqueue the promotions from ``rung - 1`` to ``rung``, unless the rung has trials
    already (it was promoted before: a resumed driver). Returns what was queued."""
    ladder = config.ladder
    if ladder is None or not 1 <= rung < len(ladder.rungs):
        return []
    with scan_lock(study):  # two drivers never promote the same rung twice
        trials = study.get_trials(deepcopy=False)
        if any(rung_of(t.user_attrs) == rung for t in trials):
            return []
        upper = apply_rung(config, rung)
        chosen = promotions(config, trials, rung - 1)
        for p in chosen:
            below = TrialAttrs.of(p.trial.user_attrs)
            knobs = {**(below.knobs or {}), **ladder.rungs[rung].knobs}
            try:
                params = fixed_params(upper, knobs)
            except (ConfigError, InvalidCandidate):  # still queued: it fails with the reason
                params = {}
            attrs: dict[str, Any] = {
                ATTR_KNOBS: knobs,
                ATTR_LADDER_RUNG: rung,
                ATTR_PROMOTED_FROM: p.trial.number,
                ATTR_LADDER_ORIGIN: (
                    below.ladder_origin if below.ladder_origin is not None else p.trial.number
                ),
            }
            attrs.update(below.pick((ATTR_PRESET, ATTR_CANDIDATE_NAME)))
            if transfers_lr(config, rung) and below.lr is not None:
                attrs[ATTR_LR] = below.lr  # µP: the learning rate rung 0 chose
            study.enqueue_trial(params, user_attrs=check_attrs(attrs))
        state_predictions(study, config, rung)
        return chosen


def state_predictions(study: optuna.Study, config: SweepConfig, rung: int) -> None:
    """Record, before ``rung`` trains, each hypothesis's effect predicted for it from the
    rungs below (:mod:`tracking.decision_accuracy`): the report checks the same numbers."""
    accuracy = study_decision_accuracy(study, config)
    if accuracy is None:
        return
    stated = {
        h.hypothesis + (f" [{h.measure}]" if h.measure else ""): p.to_dict()
        for h in accuracy.hypotheses
        for p in h.predictions
        if p.rung == rung
    }
    study.set_user_attr(f"{STUDY_ATTR_LADDER_PREDICTIONS}{rung}", stated)


def queued_rung_trials(trials: Sequence[FrozenTrial], rung: int) -> list[FrozenTrial]:
    """Trials of ``rung`` waiting to start (promotions and their re-runs), oldest first."""
    waiting = [t for t in trials if t.state == TrialState.WAITING and rung_of(t.user_attrs) == rung]
    return sorted(waiting, key=lambda t: t.number)


def rung_busy(trials: Sequence[FrozenTrial], rung: int) -> bool:
    """Whether ``rung`` still has trials running or queued."""
    return any(
        t.state in (TrialState.RUNNING, TrialState.WAITING) and rung_of(t.user_attrs) == rung
        for t in trials
    )


class RungSearcher(StudySearcher):
    """Trains the queued trials of one rung above 0, with that rung's sweep file; asks
    Optuna for nothing new."""

    def __init__(self, *args: Any, rung: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rung = rung

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.stop_line is not None:
            return Searcher.FINISHED
        if len(self.live) >= self.max_concurrent or time.monotonic() < self._idle_until:
            return None
        self._reap(now=False)
        ready = self.triage.resolve_waiting()
        while ready is None:
            queued = queued_rung_trials(self.study.get_trials(deepcopy=False), self.rung)
            if not queued:
                if self.triage.waiting:
                    self._idle_until = time.monotonic() + 1.0
                    return None
                return Searcher.FINISHED
            trial = claim_waiting(self.study, queued[0])
            if trial is not None:  # None: another driver started it first
                ready = self.triage.prepare(trial)
        return self._launch(trial_id, ready)


@dataclass
class LadderRun:
    """What the driver hands the rung loop: the study, its sweep file (rung 0), and the
    engines it has (or has not yet) started."""

    opened: OpenedStudy
    config: SweepConfig
    folder: Path
    driver_id: str
    registry: Any
    hooks: SweepHooks
    show: Progress
    dedup: bool
    address: str | None
    runner: Any
    progress: bool
    prepare_corpus: Callable[[SweepConfig, Progress, bool], Any]  # the driver's
    corpus: Any = None
    started_ray: bool = False
    trained: int = 0
    trial_seconds: float = 0.0
    stopped: str | None = None


def run_rungs(run: LadderRun) -> list[int]:
    """Promote and train rung by rung, from the first rung that is not finished; returns
    the trials closed as interrupted (a stop). Stops at a rung whose rung below is still
    busy (another driver trains it) or when a rung's sweep stopped early."""
    ladder = run.config.ladder
    if ladder is None:
        return []
    study = run.opened.study
    config = run.config
    for rung in range(1, len(ladder.rungs)):
        trials = study.get_trials(deepcopy=False)
        if rung_busy(trials, rung - 1):
            run.show.note(f"ladder: rung {rung - 1} is still training; rung {rung} waits")
            return []
        for p in queue_promotions(study, config, rung):
            name = TrialAttrs.of(p.trial.user_attrs).candidate_name
            name = name if name is not None else f"#{p.trial.number}"
            run.show.note(
                f"ladder: {name} (#{p.trial.number}, {p.value:.4g}) promoted to rung {rung}: "
                f"{p.why}"
            )
        if not queued_rung_trials(study.get_trials(deepcopy=False), rung):
            continue  # trained before this driver started
        if run.corpus is None:
            run.corpus = run.prepare_corpus(config, run.show, run.progress)
            config = calibrated(
                study, config, run.folder / "calibration", run.corpus, run.show.note
            )
        if not run.started_ray:
            run.started_ray, _ = start_ray(run.address)
        upper = apply_rung(config, rung)
        check_resources(upper)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        experiment = f"{study.study_name}-rung{rung}-{stamp}-{run.driver_id[:6]}"
        run.show.note(f"ladder: rung {rung} trains {_describe(upper)}")
        searcher = RungSearcher(
            run.opened,
            upper,
            target=0,
            driver_id=run.driver_id,
            registry=run.registry,
            experiment_dir=run.folder / "ray" / experiment,
            trials_dir=run.folder / "trials",
            dedup=run.dedup,
            progress=run.show,
            hooks=run.hooks,
            rung=rung,
        )
        try:
            fit(upper, searcher, experiment, run.folder / "ray", run.hooks, run.runner, run.corpus)
        finally:
            interrupted = searcher.close_leftovers()
        run.trained += len(searcher.trained)
        run.trial_seconds += searcher.trial_seconds
        if searcher.stop_line is not None or interrupted:
            run.stopped = searcher.stop_line
            return interrupted
    return []


def _describe(config: SweepConfig) -> str:
    m, t = config.model, config.train
    return (
        f"L{m.layers} d{m.d_model} T{t.seq_len}, {t.total_steps} steps, "
        f"{config.study.repeats} seed(s)"
    )


def refuse_growth_past_promotion(url: str, name: str, target: int) -> None:
    """A ladder study whose rung 0 was promoted cannot take more rung-0 candidates: rung 1
    was chosen from the ones it had (and a rung-0 driver would claim its queued trials).
    Checked before the study is opened, which records the target asked for."""
    db = sqlite_path(url)
    if db is not None and not db.exists():
        return  # a new store, hence a new study
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:  # a new study
        return
    trials = study.get_trials(deepcopy=False)
    if count_toward_target(trials) < target and any(rung_of(t.user_attrs) for t in trials):
        raise StudyError(
            f"study {study.study_name!r} promoted its rung-0 candidates to rung 1 already; "
            "its target of rung-0 trials cannot grow (submit a new study to rank more)"
        )


__all__ = [
    "LadderRun",
    "Promotion",
    "RungSearcher",
    "promotions",
    "queue_promotions",
    "queued_rung_trials",
    "run_rungs",
    "refuse_growth_past_promotion",
]
