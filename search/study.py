"""Open a sweep's Optuna study: create it (recording the sweep and enqueueing the presets)
or load it and check that it agrees with the sweep file."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.storages import RDBStorage

from search.errors import StudyError
from search.presets import enqueue_presets
from search.samplers import make_sampler
from search.signature import (
    check_compatible,
    record_config,
    set_target_trials,
    stored_config,
    target_trials,
)
from search.storage import load_study, make_storage, resolve_storage_url, scan_lock, store_errors
from space.schema import SweepConfig, load_config


@dataclass
class OpenedStudy:
    study: optuna.Study
    storage: RDBStorage
    url: str
    created: bool
    warnings: list[str]

    @property
    def name(self) -> str:
        return self.study.study_name


def open_study(
    config: SweepConfig,
    *,
    config_text: str | None,
    name: str | None = None,
    storage_url: str | None = None,
    allow_space_change: bool = False,
    target: int | None = None,
    seed_salt: int = 0,
) -> OpenedStudy:
    """Create the study named by the config (or ``name``), or load it and check it.

    The creator records the signature and the sweep file and enqueues the presets;
    a loader refuses a study whose directions, objectives or space differ.
    """
    url = resolve_storage_url(storage_url or config.study.storage)
    storage = make_storage(url)
    study_name = name or config.study.name
    created = True
    with store_errors(url, "create or load the study in"):
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=study_name,
                directions=config.directions(),
                sampler=make_sampler(config, 0, seed_salt),
                load_if_exists=False,
            )
        except optuna.exceptions.DuplicatedStudyError:
            created = False
            study = optuna.load_study(storage=storage, study_name=study_name, sampler=None)
            n = len(study.get_trials(deepcopy=False))
            study.sampler = make_sampler(config, n, seed_salt)
    found = (
        [] if created else check_compatible(study, config, allow_space_change=allow_space_change)
    )
    record_config(study, config, config_text)
    if created or target is not None or target_trials(study) is None:
        set_target_trials(study, target if target is not None else config.study.trials)
    with scan_lock(study):  # two drivers opening the study enqueue each preset once
        enqueue_presets(study, config)
    return OpenedStudy(study, storage, url, created, found)


def load_existing(name: str, storage_url: str | None = None) -> OpenedStudy:
    """Load a study by name (resume, status, report): never creates tables in the
    database it was pointed at. Raises StudyNotFound naming the studies there are."""
    url = resolve_storage_url(storage_url)
    study, storage = load_study(name, url)
    return OpenedStudy(study, storage, url, False, [])


def load_with_config(
    study_name: str, storage: str | None, config_path: str | None
) -> tuple[optuna.Study, SweepConfig | None]:
    """The study (read only: no tables are created) and its sweep file: ``config_path``,
    else the one stored in the study, else None (a study not made by ropenope: its
    objectives still rank)."""
    config = load_config(config_path) if config_path else None
    storage = storage or (config.study.storage if config else None)
    study = load_existing(study_name, storage).study
    if config is None:
        try:
            config = stored_config(study)
        except StudyError:
            config = None
    return study, config
