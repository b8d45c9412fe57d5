"""The few things ropenope needs from Optuna that its public API does not offer.

Each is one small function here, and ``tests/test_study.py`` checks each against the
installed Optuna, so an Optuna upgrade that moves them fails loudly there, not silently
in a sweep.

- ``FrozenTrial._trial_id``: the storage id of a trial. Optuna's public surface numbers
  trials per study (``trial.number``); writing a user attribute through the storage (which
  the driver does for trials it holds, without a live ``optuna.Trial``) needs the id.
- the ``fixed_params`` system attribute: the params a trial was enqueued with
  (``Study.enqueue_trial``); re-queueing an interrupted trial enqueues the same params.
- asking for one particular queued trial: ``Study.ask`` takes the oldest WAITING trial,
  whichever it is; the sweep driver must start the seeds it queued, not a preset queued
  beyond the study's target. :func:`claim_waiting` does what ``ask`` does for one trial.
- the RDB storage under a study and the study's storage id (``Study._storage`` wraps the
  storage in a cache; ``Study._study_id``): the scan lock of ``search.storage`` is keyed
  by the study and taken on the storage's engine.
- a link on a finished trial: Optuna refuses user attributes once a trial is finished, but
  the MLflow run of a trial whose live tracking failed is only made at the sweep's end.
  :func:`link_finished_trial` writes that one user attribute in Optuna's own table, as
  ``set_trial_user_attr`` would (STYLE 8: no table of ours).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, Trial, TrialState

_FIXED_PARAMS = "fixed_params"


def storage_trial_id(trial: FrozenTrial | Trial) -> int:
    """The storage id of a trial (``Trial`` has it publicly, ``FrozenTrial`` privately)."""
    if isinstance(trial, Trial):
        return trial._trial_id
    return trial._trial_id


def enqueued_params(trial: FrozenTrial) -> dict[str, Any] | None:
    """The params ``trial`` was enqueued with; None for a trial the sampler proposed."""
    fixed = trial.system_attrs.get(_FIXED_PARAMS)
    return dict(fixed) if isinstance(fixed, Mapping) else None


def claim_waiting(study: optuna.Study, trial: FrozenTrial) -> Trial | None:
    """Start the queued (WAITING) ``trial`` as ``study.ask()`` would start the oldest one:
    RUNNING in the storage, then a live ``Trial`` (the sampler's ``before_trial`` runs).
    None if another process took or finished it first."""
    try:
        if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
            return None
    except UpdateFinishedTrialError:
        return None
    return Trial(study, trial._trial_id)


def rdb_storage(study: optuna.Study) -> Any:
    """The storage a study was opened on (an ``RDBStorage``), under Optuna's cache."""
    storage = study._storage
    return getattr(storage, "_backend", storage)


def study_storage_id(study: optuna.Study) -> int:
    """The storage id of a study (``Study`` keeps it privately)."""
    return study._study_id


def link_finished_trial(storage: Any, trial_id: int, key: str, value: Any) -> None:
    """Set user attribute ``key`` of a trial, finished or not, in Optuna's user-attribute
    table (``storage``: an ``RDBStorage``). Only for links found after a trial closed."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session, True) as session:
        row = (
            session.query(models.TrialUserAttributeModel)
            .filter_by(trial_id=trial_id, key=key)
            .one_or_none()
        )
        if row is None:
            session.add(
                models.TrialUserAttributeModel(
                    trial_id=trial_id, key=key, value_json=json.dumps(value)
                )
            )
        else:
            row.value_json = json.dumps(value)
