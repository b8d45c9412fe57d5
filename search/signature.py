"""What a stored study must agree with to be continued by a sweep file, and what the
study records about the sweep (its file, objectives, space signature, trial target)."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from typing import Any

import optuna

from search.errors import StudyError, StudyMismatch
from space.names import (
    STUDY_ATTR_CONFIG,
    STUDY_ATTR_DECISIONS,
    STUDY_ATTR_OBJECTIVES,
    STUDY_ATTR_SPACE,
    STUDY_ATTR_TARGET,
)
from space.schema import SweepConfig, load_config_text
from space.secrets import redact_text
from tracking.decision_plan import plan_of_config


def _normal(value: Any) -> Any:
    """JSON round trip: what a value looks like after being stored as a user attribute."""
    return json.loads(json.dumps(value, sort_keys=True))


def sweep_seeds(config: SweepConfig) -> tuple[int, ...]:
    """The seeds a trial trains unless told otherwise: ``train.seed`` + 0 .. repeats-1."""
    return tuple(config.train.seed + i for i in range(config.study.repeats))


def budget_key(config: SweepConfig, seeds: Sequence[int] | None = None) -> str:
    """What "same budget" means for dedup: training, data, scoring and seeds.

    Two trials of the same candidate id are interchangeable only if they were trained
    and scored the same way; the thread count does not change a result. ``seeds``: the
    seeds the trial trains, when they are not the sweep's own (:func:`sweep_seeds`):
    adaptive seeds train a candidate again with other seeds, which is another result,
    never a copy of the first. The sweep's own seeds keep the key they always had; a
    ladder rung above 0 adds its rung and model.
    """
    blob: dict[str, Any] = {
        "train": config.train.model_dump(mode="json", exclude={"threads"}),
        "data": config.data.model_dump(mode="json"),
        "score": config.score.model_dump(mode="json"),
        "repeats": config.study.repeats,
    }
    if seeds is not None and tuple(seeds) != sweep_seeds(config):
        blob["seeds"] = [int(s) for s in seeds]
    if config.rung:  # a ladder rung above 0: another model, never a rung-0 result
        blob["rung"] = config.rung
        blob["model"] = config.model.model_dump(mode="json")
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def _directions(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def check_compatible(
    study: optuna.Study, config: SweepConfig, *, allow_space_change: bool = False
) -> list[str]:
    """Refuse a stored study that disagrees with ``config``; return warnings otherwise.

    Directions and objectives can never change (the stored values would mean something
    else); the space may change only when the user asks for it.
    """
    attrs = study.user_attrs
    name = study.study_name
    if _directions(study) != config.directions():
        raise StudyMismatch(
            f"study {name!r} optimises directions {_directions(study)}, the sweep file asks "
            f"for {config.directions()}; an Optuna study's directions cannot change: "
            f"use another study name (--study)"
        )
    stored_objectives = attrs.get(STUDY_ATTR_OBJECTIVES) or study.metric_names
    if stored_objectives is None:
        if study.get_trials(deepcopy=False):
            raise StudyMismatch(
                f"study {name!r} exists but was not created by ropenope (no objectives "
                f"recorded); refusing to merge into it: use another study name (--study)"
            )
    elif list(stored_objectives) != config.objective_names():
        raise StudyMismatch(
            f"study {name!r} has objectives {list(stored_objectives)}, the sweep file "
            f"asks for {config.objective_names()}; use another study name (--study)"
        )
    stored_space = attrs.get(STUDY_ATTR_SPACE)
    current = _normal(config.space_signature())
    warnings_: list[str] = []
    if stored_space is not None and stored_space != current:
        changed = sorted(
            k for k in set(stored_space) | set(current) if stored_space.get(k) != current.get(k)
        )
        message = f"study {name!r} was created with a different space (knobs {changed} differ)"
        if not allow_space_change:
            raise StudyMismatch(
                message + "; pass --allow-space-change to continue it with the new space, "
                "or use another study name (--study)"
            )
        warnings_.append(message + "; continuing with the new space as asked")
    return warnings_


def record_config(study: optuna.Study, config: SweepConfig, config_text: str | None) -> None:
    """Store what the study runs, so `ropenope resume STUDY` needs no file."""
    study.set_user_attr(STUDY_ATTR_SPACE, _normal(config.space_signature()))
    study.set_user_attr(STUDY_ATTR_OBJECTIVES, config.objective_names())
    if STUDY_ATTR_DECISIONS not in study.user_attrs:  # fixed at creation, never rewritten
        study.set_user_attr(STUDY_ATTR_DECISIONS, plan_of_config(config).to_dict())
    if study.metric_names is None:
        with warnings.catch_warnings():  # experimental since 3.2, read by optuna-dashboard
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(config.objective_names())
    if config_text is not None:
        # The file as written, with every URL's password masked: the real URLs come from
        # the command line or the environment when the study is continued.
        study.set_user_attr(STUDY_ATTR_CONFIG, redact_text(config_text))


def stored_config(study: optuna.Study) -> SweepConfig:
    """The sweep file a study was last submitted with. Raises StudyError if none."""
    text = study.user_attrs.get(STUDY_ATTR_CONFIG)
    if text is None:
        raise StudyError(
            f"study {study.study_name!r} has no stored sweep file (was it created by "
            f"ropenope?); pass --config FILE"
        )
    return load_config_text(text, source=f"study {study.study_name}")


def target_trials(study: optuna.Study) -> int | None:
    value = study.user_attrs.get(STUDY_ATTR_TARGET)
    return int(value) if value is not None else None


def set_target_trials(study: optuna.Study, n: int) -> None:
    study.set_user_attr(STUDY_ATTR_TARGET, int(n))
