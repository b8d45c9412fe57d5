"""Ray and Tune for a sweep: start or join Ray, check the resources, build and run the
Tuner around the study searcher."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from search.errors import StudyError
from search.searcher import StudySearcher, trial_dirname
from search.tune_callback import SweepCallback
from space.schema import SweepConfig
from tracking.hooks import SweepHooks
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


def check_resources(config: SweepConfig) -> None:
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


def fit(
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
        total = evals_per_seed(config) * config.study.max_repeats  # the most seeds a trial trains
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
            failure_config=tune.FailureConfig(max_failures=config.resources.max_retries),
        ),
    )
    tuner.fit()
