"""The sweep driver: ``ropenope submit`` and ``ropenope resume`` from start to summary.

:func:`run_sweep` takes the study's lock (SQLite) or registers as one of its drivers
(PostgreSQL), opens the study (:mod:`search.study`), closes what a dead driver left
RUNNING and re-queues it from its newest checkpoint (:mod:`search.bookkeeping`,
:mod:`search.restore`), then lets Ray Tune train trials that the study searcher
(:mod:`search.searcher`) asks Optuna for, until the study holds its target, and ends with
the Pareto front. With adaptive seeds (``study.repeats: {min, max}``) the searcher then
adds seeds where a hypothesis is undecided (:mod:`search.seed_rounds`), and ``resume``
continues those rounds too. Tracking plugs in through :class:`tracking.hooks.SweepHooks`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.trial import TrialState

from search.bookkeeping import (
    adds_seeds,
    count_toward_target,
    reconcile_interrupted,
    record_run_links,
    requeue_worker_deaths,
)
from search.calibration import calibrated
from search.errors import StudyError
from search.failures import close_capped
from search.ladder import LadderRun, refuse_growth_past_promotion, run_rungs
from search.liveness import DriverRegistry, SqliteLock
from search.optuna_view import study_view
from search.progress import Progress
from search.ray_runtime import check_resources, fit, start_ray
from search.restore import find_restore
from search.searcher import StudySearcher, notify_closed
from search.seed_rounds import rounds_left, study_runs
from search.signature import stored_config, target_trials
from search.status import tie_warnings
from search.storage import resolve_storage_url, sqlite_path
from search.study import OpenedStudy, load_existing, open_study
from space.ladder import rung_of
from space.paths import runs_dir
from space.schema import SweepConfig, load_config
from space.secrets import redact_url
from space.sections import study_name_problem
from tracking.decision_accuracy import DecisionAccuracy
from tracking.hooks import MlflowSweepHooks, SweepHooks
from tracking.ladder_view import study_decision_accuracy
from tracking.pareto import ParetoTable, pareto_of_study
from tracking.seed_plan import SeedPlan, plan_for_study


@dataclass
class SweepSummary:
    study: str
    storage: str  # redacted
    target: int
    counts: dict[str, int]
    wall_seconds: float
    ray_start_seconds: float = 0.0
    trained: int = 0  # trials this driver trained (not reused, not invalid)
    trial_seconds: float = 0.0  # sum of their own time (train + score)
    reconciled: list[int] = field(default_factory=list)
    experiment_dir: str | None = None
    interrupted: list[int] = field(default_factory=list)  # closed as interrupted by this run
    pareto: ParetoTable | None = None  # the study's COMPLETE trials by Pareto rank
    ui: str | None = None  # how to open the study's MLflow runs (set by tracking; None: off)
    warnings: list[str] = field(default_factory=list)  # e.g. tie groups on an objective
    seed_plan: SeedPlan | None = None  # adaptive seeds: where each hypothesis ended
    runs: int | None = None  # adaptive seeds: completed runs (candidate x seed) in the study
    stopped: str | None = None  # the line of the failure budget, when it stopped the sweep
    decision_accuracy: DecisionAccuracy | None = None  # a scale ladder's, between its rungs


def study_dir(study_name: str) -> Path:
    """The study's folder under the runs folder (trial folders, Ray experiments)."""
    problem = study_name_problem(study_name)
    if problem:
        raise StudyError(f"study name {study_name[:80]!r}: {problem}")
    return runs_dir() / study_name


def default_hooks(config: SweepConfig, study_name: str) -> SweepHooks:
    """MLflow tracking when the sweep file enables it, else no hooks."""
    if not config.tracking.enabled:
        return SweepHooks()
    return MlflowSweepHooks.from_config(config, study_name)


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
    lock = _sqlite_lock(url, name)
    driver_id = uuid.uuid4().hex[:12]
    started_ray = False
    registry: DriverRegistry | None = None
    try:
        if config.ladder is not None and trials is not None:
            refuse_growth_past_promotion(url, name, trials)
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
        show = _open_progress(config, opened, name, url, target, progress)
        registry = DriverRegistry(study, driver_id)
        registry.register()
        hooks.on_sweep_start(study_view(study), config)
        # With the SQLite lock held, no other driver is alive: every RUNNING trial is orphaned.
        is_dead = (lambda t: True) if lock is not None else registry.dead_trial_check()
        closed = _close_dead_trials(opened, config, hooks, show, is_dead)
        summary = SweepSummary(name, redact_url(url), target, {}, 0.0, reconciled=closed)
        corpus: Any = None
        if not _target_reached(study, config, target, show):
            corpus = prepare_corpus(config, show, progress)
            config = calibrated(study, config, folder / "calibration", corpus, show.note)
            started_ray, summary.ray_start_seconds = start_ray(address)
            check_resources(config)
            _train(
                opened,
                config,
                summary,
                folder=folder,
                driver_id=driver_id,
                registry=registry,
                dedup=dedup,
                show=show,
                hooks=hooks,
                runner=runner,
                corpus=corpus,
            )
        if config.ladder is not None and summary.stopped is None and not summary.interrupted:
            rungs = LadderRun(
                opened,
                config,
                folder,
                driver_id,
                registry,
                hooks,
                show,
                dedup=dedup if dedup is not None else config.study.dedup,
                address=address,
                runner=runner,
                progress=progress,
                prepare_corpus=prepare_corpus,
                corpus=corpus,
                started_ray=started_ray,
            )
            started_ray = _climb(rungs, summary)
        return _finish(opened, config, summary, hooks, show, t_start)
    finally:
        if registry is not None:
            registry.close()
        if started_ray:
            ray.shutdown()
        if lock is not None:
            lock.release()


def _sqlite_lock(url: str, name: str) -> SqliteLock | None:
    """The held file lock of a SQLite study (one driver at a time); None on PostgreSQL."""
    db = sqlite_path(url)
    if db is None:
        return None
    lock = SqliteLock(db, name)
    lock.acquire()
    return lock


def _target_reached(study: optuna.Study, config: SweepConfig, target: int, show: Progress) -> bool:
    """Whether the study already has its target trials (and, with adaptive seeds, every
    hypothesis settled): then nothing trains, and the user is told how to raise it."""
    if count_toward_target(study.get_trials(deepcopy=False)) < target or rounds_left(study, config):
        return False
    settled = " and every hypothesis settled" if config.study.adaptive else ""
    show.note(
        f"study {study.study_name} already has {target} trials{settled}; raise the target "
        "with --trials N"
    )
    return True


def _open_progress(
    config: SweepConfig, opened: OpenedStudy, name: str, url: str, target: int, progress: bool
) -> Progress:
    """The sweep's progress display, opened with the sweep file's and the study's warnings."""
    show = Progress(
        name,
        target,
        config.objective_names(),
        config.directions(),
        total_steps=config.train.total_steps,
        enabled=progress,
    )
    for path, message in config.warnings:
        show.note(f"warning: {path}: {message}")
    for w in opened.warnings:
        show.note(f"warning: {w}")
    show.note(
        f"study {name} in {redact_url(url)}: {'created' if opened.created else 'loaded'}, "
        f"target {target} trials, sampler {config.study.sampler}"
    )
    return show


def _close_dead_trials(
    opened: OpenedStudy,
    config: SweepConfig,
    hooks: SweepHooks,
    show: Progress,
    is_dead: Callable[[Any], bool],
) -> list[int]:
    """Close what dead drivers left RUNNING (FAIL rerun_limit past the re-run cap, else FAIL
    interrupted and re-queued from the newest checkpoint) and re-queue trials ended by an
    infrastructure failure; the numbers closed as interrupted."""
    study = opened.study
    failures = config.resources.failures
    gone = "the driver running it stopped before the trial ended"
    capped = close_capped(study, opened.storage, is_dead, failures, gone)
    for number in capped:
        show.note(
            f"#{number} was left RUNNING by a dead driver, {failures.max_rerun_depth} "
            "re-run(s) deep: FAIL rerun_limit, not re-queued"
        )
    notify_closed(study, hooks, capped, show)
    closed = reconcile_interrupted(study, opened.storage, is_dead, restore_for=find_restore)
    for number, restore in closed:
        where = f", continuing from {restore}" if restore else ""
        show.note(
            f"#{number} was left RUNNING by a dead driver: FAIL interrupted, re-queued{where}"
        )
    notify_closed(study, hooks, [n for n, _ in closed], show)
    for number, restore in requeue_worker_deaths(study, restore_for=find_restore):
        where = f", continuing from {restore}" if restore else ""
        show.note(f"#{number} ended by an infrastructure failure: re-queued{where}")
    return [n for n, _ in closed]


def _train(
    opened: OpenedStudy,
    config: SweepConfig,
    summary: SweepSummary,
    *,
    folder: Path,
    driver_id: str,
    registry: DriverRegistry,
    dedup: bool | None,
    show: Progress,
    hooks: SweepHooks,
    runner: Any,
    corpus: Any,
) -> None:
    """Let Ray Tune train the trials the study searcher asks Optuna for, until the target;
    what this driver trained, interrupted or was stopped by goes into ``summary``."""
    name = summary.study
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    experiment = f"{name}-{stamp}-{driver_id[:6]}"
    experiment_dir = folder / "ray" / experiment
    summary.experiment_dir = str(experiment_dir)
    searcher = StudySearcher(
        opened,
        config,
        target=summary.target,
        driver_id=driver_id,
        registry=registry,
        experiment_dir=experiment_dir,
        trials_dir=folder / "trials",
        dedup=config.study.dedup if dedup is None else dedup,
        progress=show,
        hooks=hooks,
    )
    try:
        fit(config, searcher, experiment, folder / "ray", hooks, runner, corpus)
    finally:
        summary.interrupted = searcher.close_leftovers()
    summary.stopped = searcher.stop_line
    if summary.interrupted and summary.stopped is None:
        show.note(f"stopped early: continue with `ropenope resume {name}`")
    summary.trained = len(searcher.trained)
    summary.trial_seconds = searcher.trial_seconds


def _climb(rungs: LadderRun, summary: SweepSummary) -> bool:
    """Train the ladder's rungs above 0 (promoting as each ends) into ``summary``; whether
    Ray is now started by this driver (a rung may start it)."""
    try:
        summary.interrupted = run_rungs(rungs)
    finally:
        started = rungs.started_ray
    summary.stopped = rungs.stopped
    summary.trained += rungs.trained
    summary.trial_seconds += rungs.trial_seconds
    return started


def _finish(
    opened: OpenedStudy,
    config: SweepConfig,
    summary: SweepSummary,
    hooks: SweepHooks,
    show: Progress,
    t_start: float,
) -> SweepSummary:
    """Count the study's trials, rank the Pareto front, complete the MLflow runs live
    tracking missed, and tell the hooks the sweep ended."""
    study = opened.study
    name = summary.study
    view = study_view(study)
    summary.counts = {s.name: sum(t.state == s for t in view.trials) for s in TrialState}
    summary.wall_seconds = time.perf_counter() - t_start
    # One row per candidate, as in `ropenope status`: trials of more seeds repeat one.
    # Rung 0 of a ladder: objectives compare within a rung (decision_accuracy has the rest).
    first = [t for t in view.trials if not adds_seeds(t) and rung_of(t.user_attrs) == 0]
    summary.pareto = pareto_of_study(study_view(study, first))
    rung0 = [t for t in view.trials if rung_of(t.user_attrs) == 0]
    summary.warnings = tie_warnings(rung0, config.objective_names())
    summary.decision_accuracy = study_decision_accuracy(study, config)
    if config.study.adaptive:
        summary.seed_plan = plan_for_study(study, config)
        summary.runs = study_runs(study)
    show.note(
        f"sweep done in {summary.wall_seconds:.1f} s; `ropenope status {name}` for the Pareto set"
    )
    # What live tracking missed (a busy store, a driver killed before a run closed)
    # is completed now, so the MLflow UI shows every trial without `ropenope sync`.
    links = hooks.complete_runs(view)
    if links:
        record_run_links(study, opened.storage, links)
        view = study_view(optuna.load_study(study_name=name, storage=opened.storage))
    hooks.on_sweep_end(view, config, summary)
    return summary


def prepare_corpus(config: SweepConfig, show: Progress, progress: bool) -> Any:
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


__all__ = ["SweepSummary", "resume", "run_sweep", "submit"]
