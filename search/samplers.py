"""The Optuna samplers a sweep file can name, seeded reproducibly."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.study import StudyDirection

from search.errors import StudyError
from space.schema import SweepConfig


class AskTellGridSampler(optuna.samplers.GridSampler):
    """The grid sampler, minus its ``study.stop()`` on exhaustion.

    ``Study.stop`` only works inside ``study.optimize``; with ask/tell it raises, and the
    driver stops by its own trial count anyway. An exhausted grid re-proposes visited
    points, which dedup answers without training.
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001
        return None


class _IntermediateDirection:
    """A study as TPE reads it, whose ``direction`` is that of its intermediate values."""

    def __init__(self, study: optuna.Study, direction: StudyDirection) -> None:
        self._study = study
        self._direction = direction

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    @property
    def direction(self) -> StudyDirection:
        return self._direction


class PrunedAwareTPESampler(optuna.samplers.TPESampler):
    """TPE that reads a PRUNED trial of a multi-objective study by its intermediate values.

    Our trials report one intermediate value per evaluation, the scheduler metric
    (``scheduler.metric``, in ``scheduler.mode``), and early stopping (ASHA, MO-ASHA) ends
    trials PRUNED with them. Optuna's TPE ranks pruned trials by their last intermediate
    value in the study's single ``direction``, which a multi-objective study does not have:
    the first sample after a pruned trial, once TPE is past its startup trials, raised
    ``RuntimeError`` and failed the trial (13 of 24 trials of ``configs/demo.yaml`` with
    either scheduler). Here a multi-objective study's intermediate values are read in the
    scheduler metric's direction; a single-objective study is left as it is.
    """

    def __init__(self, *, intermediate_direction: StudyDirection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._intermediate_direction = intermediate_direction

    def _view(self, study: optuna.Study) -> Any:
        if len(study.directions) <= 1:
            return study
        return _IntermediateDirection(study, self._intermediate_direction)

    def sample_relative(self, study, trial, search_space):  # noqa: ANN001, ANN201
        return super().sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):  # noqa: ANN001, ANN201
        return super().sample_independent(self._view(study), trial, param_name, param_distribution)


def make_sampler(
    config: SweepConfig, n_existing: int = 0, salt: int = 0
) -> optuna.samplers.BaseSampler:
    """The sampler named in the config. On a resumed study the seed is offset by the
    number of existing trials so a fresh sampler does not replay the first run's draws;
    ``salt`` separates drivers that share a study (PostgreSQL), which would otherwise
    draw the same candidates."""
    kind = config.study.sampler
    seed = config.study.seed + n_existing + salt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "tpe":
            # constant_liar: running trials count as bad guesses, so parallel workers
            # do not all sample the same region; group: conditional knobs.
            return PrunedAwareTPESampler(
                intermediate_direction=(
                    StudyDirection.MINIMIZE
                    if config.scheduler.mode == "min"
                    else StudyDirection.MAXIMIZE
                ),
                seed=seed,
                multivariate=True,
                group=True,
                constant_liar=True,
            )
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if kind == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if kind == "grid":
            space = {name: spec.grid_values() for name, spec in config.searched.items()}
            return AskTellGridSampler(space, seed=config.study.seed)
    raise StudyError(f"unknown sampler {kind!r}")  # the schema makes this unreachable
