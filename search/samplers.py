"""The Optuna samplers a sweep file can name, seeded reproducibly."""

from __future__ import annotations

import warnings

import optuna

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
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True
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
