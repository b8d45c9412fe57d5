"""Ray and Tune for a sweep: start or join Ray, check the resources, build and run the
Tuner around the study searcher.

What a trial costs: with one worker per trial, its Tune function trains and holds
``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs. With ``workers_per_trial: N > 1`` the
Tune function only launches and reports (no CPU or GPU; :data:`LAUNCHER_MEMORY_BYTES` of
memory, since Tune cannot schedule a trial that asks for nothing) and its N Ray Train
workers hold ``cpus_per_trial`` and ``gpus_per_trial`` each, in a placement group of their
own (Ray Train V2): :func:`trial_cost`. The resource check and the number of trials run at
once (:func:`concurrent_trials`) count the workers. A launcher that dies takes its Train
run's controller with it, and the workers' placement group would stay reserved until the
driver ends (Train's own cleaner asks the state API, which only the dashboard serves):
:class:`PlacementGroupReaper` frees it from the driver. With ``resources.parallel_seeds`` a
trial asks for a placement group: a launcher bundle with no CPU and one bundle per seed it
trains at once (``workers.ray_seeds.seeds_at_once``), and the count holds its seeds.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from search import mo_asha
from search.errors import StudyError
from search.searcher import StudySearcher, trial_dirname
from search.tune_callback import FailureBudgetStop, SweepCallback
from space.schema import SweepConfig
from tracking.hooks import SweepHooks
from workers.ray_seeds import seeds_at_once
from workers.ray_trainable import run_trial
from workers.trial import EVALS_KEY


def evals_per_seed(config: SweepConfig) -> int:
    """Evaluations one seed's training reports (every eval_every steps and at each stage's
    end): the scheduler's time axis."""
    return len(config.train.eval_steps())


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


def start_ray(address: str | None) -> tuple[bool, float]:
    """Connect to ``address`` or start local Ray; returns (started here, seconds)."""
    _quiet_tune()
    if ray.is_initialized():
        return False, 0.0
    t0 = time.perf_counter()
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    return True, time.perf_counter() - t0


# What the Tune function of a multi-worker trial reserves: it trains nothing, but Tune needs
# a trial to ask for some resource, and the process (torch, tracking) does use memory.
LAUNCHER_MEMORY_BYTES = 256 * 2**20


def trial_resources(
    config: SweepConfig, have: dict[str, float] | None = None
) -> dict[str, float] | tune.PlacementGroupFactory:
    """What the Tune function of one trial asks for (``tune.with_resources``); ``have``,
    the cluster's resources, bounds the seeds a trial trains at once."""
    r = config.resources
    seeds = seeds_at_once(config, have)
    if seeds > 1:
        seed_bundle = {"CPU": r.cpus_per_trial}
        if r.gpus_per_trial > 0:
            seed_bundle["GPU"] = r.gpus_per_trial
        launcher = {"CPU": 0, "memory": LAUNCHER_MEMORY_BYTES}
        return tune.PlacementGroupFactory([launcher] + [dict(seed_bundle)] * seeds)
    if r.workers_per_trial == 1:
        return {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial}
    return {"cpu": 0, "gpu": 0, "memory": LAUNCHER_MEMORY_BYTES}


def trial_cost(config: SweepConfig, have: dict[str, float] | None = None) -> dict[str, float]:
    """CPUs and GPUs one running trial holds, its workers (or its seeds at once) included."""
    r = config.resources
    units = r.workers_per_trial * seeds_at_once(config, have)
    return {"CPU": units * r.cpus_per_trial, "GPU": units * r.gpus_per_trial}


def concurrent_trials(config: SweepConfig, have: dict[str, float]) -> int:
    """How many trials run at once: ``resources.max_concurrent``, or, with several workers
    per trial, fewer when the cluster's CPUs or GPUs cannot hold that many trials with all
    their workers (1 at least: :func:`check_resources` refuses a trial that does not fit at
    all). One-worker trials wait in Tune's queue instead, as they always did."""
    cap = config.resources.max_concurrent
    if config.resources.workers_per_trial == 1 and seeds_at_once(config, have) == 1:
        return cap
    for key, need in trial_cost(config, have).items():
        if need > 0:
            cap = min(cap, int(have.get(key, 0) / need + 1e-9))
    return max(1, cap)


def _check_placement(config: SweepConfig, nodes: list[dict[str, float]]) -> None:
    """Several workers per trial: each worker on one node, the strict strategies' nodes."""
    r = config.resources
    fits = [
        n
        for n in nodes
        if n.get("CPU", 0) >= r.cpus_per_trial and n.get("GPU", 0) >= r.gpus_per_trial
    ]
    worker = f"{r.cpus_per_trial:g} CPU and {r.gpus_per_trial:g} GPU"
    if not fits:
        raise StudyError(
            f"resources: no node of the Ray cluster holds one worker ({worker}, "
            "cpus_per_trial and gpus_per_trial are per worker)"
        )
    n = r.workers_per_trial
    if r.placement == "strict_pack" and not any(
        node.get("CPU", 0) >= n * r.cpus_per_trial and node.get("GPU", 0) >= n * r.gpus_per_trial
        for node in nodes
    ):
        raise StudyError(
            f"resources.placement=strict_pack: no node holds all {n} workers ({worker} each)"
        )
    if r.placement == "strict_spread" and len(fits) < n:
        raise StudyError(
            f"resources.placement=strict_spread: {n} workers need {n} nodes holding "
            f"{worker} each; the cluster has {len(fits)}"
        )


def check_resources(config: SweepConfig) -> None:
    have = ray.cluster_resources()
    r = config.resources
    if r.workers_per_trial > 1:
        cost = trial_cost(config)
        for key, name in (("CPU", "cpus_per_trial"), ("GPU", "gpus_per_trial")):
            if cost[key] > have.get(key, 0):
                raise StudyError(
                    f"resources: a trial's {r.workers_per_trial} workers x {name}="
                    f"{getattr(r, name):g} need {cost[key]:g} {key}s but the Ray cluster "
                    f"has {have.get(key, 0):g}"
                )
        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        _check_placement(config, nodes)
        return
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


def orphaned_placement_groups(job_id: str) -> list[str]:
    """The placement groups of this Ray job (ids, hex) still reserved although the actor
    that made them is dead: the Ray Train controller of a trial whose launcher died.

    Ray frees an actor's placement group only when its job ends; Train V2 frees it through
    a detached cleaner that asks the state API, which needs the dashboard (local Ray runs
    without one). So this reads the GCS's placement group table itself. It is Ray's
    internal accessor (``ray._private.state``, the table's protobuf): public Ray offers no
    placement group's creator. ``tests/test_workers_per_trial.py`` kills a launcher and
    checks that its reservation is freed, so an upgrade that moves it fails there."""
    from ray._private import state
    from ray.core.generated.gcs_pb2 import PlacementGroupTableData as Table

    found = []
    for raw in state.state._connect_and_get_accessor().get_placement_group_table():
        pg = Table.FromString(raw)
        creator = pg.creator_actor_id
        if (
            pg.state != Table.REMOVED
            and not pg.is_detached
            and pg.creator_job_id.hex() == job_id
            and creator
            and not ray.ActorID(creator).is_nil()  # nil: made by the driver (Tune's own)
            and pg.creator_actor_dead
        ):
            found.append(pg.placement_group_id.hex())
    return found


class PlacementGroupReaper:
    """Frees, from the driver, the placement groups of dead launchers' Train runs
    (:func:`orphaned_placement_groups`), at most every ``every_s`` seconds."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self.job_id = ray.get_runtime_context().get_job_id()
        self.freed: list[str] = []
        self._next = 0.0

    def tick(self) -> list[str]:
        """Free what is orphaned now; returns one note per placement group freed."""
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        now = time.monotonic()
        if now < self._next:
            return []
        self._next = now + self.every_s
        notes = []
        for pg_id in orphaned_placement_groups(self.job_id):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
            self.freed.append(pg_id)
            notes.append(
                f"freed the reservation of a dead trial launcher's workers (placement group "
                f"{pg_id[:12]})"
            )
        return notes


def make_trainable(
    config: SweepConfig,
    hooks: SweepHooks,
    runner: Any = None,
    corpus: Any = None,
    have: dict[str, float] | None = None,
) -> Any:
    """The Tune trainable of the sweep's trials: :func:`workers.ray_trainable.run_trial`
    with the sweep's parameters, asking for :func:`trial_resources` (``have``: the
    cluster's resources, which bound the seeds a trial trains at once)."""
    return tune.with_resources(
        tune.with_parameters(
            run_trial, sweep=config, hooks=hooks.trial_hooks(), runner=runner, corpus=corpus
        ),
        trial_resources(config, have),
    )


def asha_scheduler(config: SweepConfig) -> ASHAScheduler | None:
    """Single-objective ASHA on the trial's evaluation count, with every rung strictly
    before the trial's last evaluation: a stop there would skip its scoring and mark a
    full-budget trial PRUNED. Ray places rungs at ``grace * rf**k`` for every one up to
    ``max_t`` (inclusive), so ``max_t`` is set half an evaluation short of the end, and
    ``stop_last_trials=False`` keeps ASHA from stopping a trial for reaching it. None when
    the grace period leaves no rung before the end (nothing could be stopped)."""
    s = config.scheduler
    total = evals_per_seed(config) * config.study.max_repeats  # the most seeds a trial trains
    if s.grace_period >= total:
        return None
    return ASHAScheduler(
        time_attr=EVALS_KEY,
        metric=s.metric,
        mode=s.mode,
        max_t=total - 0.5,
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
        stop_last_trials=False,
    )


def fit(
    config: SweepConfig,
    searcher: StudySearcher,
    experiment: str,
    storage_path: Path,
    hooks: SweepHooks,
    runner: Any,
    corpus: Any = None,
) -> None:
    scheduler: Any = None
    s = config.scheduler
    if config.study.early_stopping is not None:
        scheduler = mo_asha.sweep_scheduler(config)
        searcher.stop_attrs = functools.partial(mo_asha.stop_attrs, scheduler)
    elif s.kind == "asha":
        scheduler = asha_scheduler(config)
        if scheduler is None:
            searcher.progress.note(
                f"scheduler.grace_period={s.grace_period} leaves no ASHA rung before a trial's "
                "last evaluation: no trial is stopped early"
            )
    r = config.resources
    have = ray.cluster_resources()
    at_once = concurrent_trials(config, have)
    if r.parallel_seeds:
        seeds = seeds_at_once(config, have)
        searcher.progress.note(
            f"parallel seeds: {at_once} trial(s) at a time, each training up to {seeds} of its "
            f"seeds at once ({seeds} x {r.cpus_per_trial:g} CPU / {r.gpus_per_trial:g} GPU)"
        )
    elif at_once < r.max_concurrent:
        searcher.progress.note(
            f"{at_once} trial(s) at a time, not resources.max_concurrent={r.max_concurrent}: "
            f"each holds {r.workers_per_trial} worker(s) x {r.cpus_per_trial:g} CPU / "
            f"{r.gpus_per_trial:g} GPU"
        )
    searcher.max_concurrent = at_once
    several = r.workers_per_trial > 1
    tuner = tune.Tuner(
        make_trainable(config, hooks, runner, corpus, have),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=-1,
            # One process serves many one-worker trials: torch is imported and the corpus
            # loaded once per process, not per trial. A stopped trial's thread exits at its
            # next report; Tune waits for it (workers.ray_trainable.REUSE_WAIT_S), and a
            # trial it then gives up is re-queued (StudySearcher.tune_dropped). A launcher
            # of several workers is not reused: its Train run may still be winding down.
            reuse_actors=not several,
            trial_name_creator=lambda t: f"optuna_{t.config['optuna_trial']}",
            trial_dirname_creator=lambda t: trial_dirname(t.config["optuna_trial"], t.trial_id),
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=str(storage_path.resolve()),
            callbacks=[SweepCallback(searcher, PlacementGroupReaper() if several else None)],
            stop=FailureBudgetStop(searcher),
            verbose=0,
            # One snapshot is enough: it holds each seed's newest checkpoint and the one
            # before it (workers.trial_folder.snapshot), so a damaged newest still falls back.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=config.resources.max_retries),
        ),
    )
    tuner.fit()
