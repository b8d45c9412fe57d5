"""Reading a study into per-seed run records: the only I/O behind the report.

A run is one (candidate, seed) training. A trial is either one run (its user attributes
hold the seed, the scores, the NIAH grid and the attention mass) or, when the sweep
trains several seeds inside one trial, several runs: each seed's own result is in the
trial's ``seeds`` user attribute, or, for trials recorded before it existed, in
``<trial_dir>/seed_<n>/scores.json``. :func:`study_records` reads a whole study;
:func:`seed_records` one trial. Which user attributes are scores is decided by
:func:`space.names.is_score_name` alone.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from space.ladder import rung_of
from space.names import STUDY_ATTR_OBJECTIVES, is_score_name
from space.trial_attrs import TrialAttrs
from workers.trial_folder import SCORES_FILE, SEED_DIR_PREFIX, seed_of

__all__ = [
    "COMPLETE",
    "FINISHED_STATES",
    "StudyRecords",
    "TrialRecord",
    "as_float",
    "seed_records",
    "study_records",
]

COMPLETE = "COMPLETE"
# A run in one of these states will not change: its seed has been spent.
FINISHED_STATES = frozenset({"COMPLETE", "FAIL", "PRUNED"})


def as_float(value: Any) -> float | None:
    """A real number as float (booleans are not numbers here); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


@dataclass(frozen=True)
class TrialRecord:
    """One run, read from a trial's user attributes (or one seed's entry of them)."""

    number: int
    state: str  # Optuna's TrialState name: COMPLETE, FAIL, PRUNED, RUNNING, WAITING
    candidate_id: str
    candidate_name: str | None
    preset: str | None
    seed: int | None
    knobs: Mapping[str, Any]
    scores: Mapping[str, float]
    niah: Mapping[str, Any] | None
    attention_mass: Mapping[str, Any] | None
    reason: str | None
    reused_from: Any = None
    repeats: int | None = None
    has_id: bool = True  # False: no candidate_id recorded (a queued preset, a foreign trial)
    rung: int = 0  # the scale-ladder rung it trained at (space.ladder)
    ladder_origin: int | None = None  # above rung 0: the candidate's rung-0 trial number
    # train.lr_search: the trial's pilots and their choice ({seed, steps, values, pilots,
    # chosen}, workers.lr_search), shared by the trial's seeds; None without a search.
    lr_search: Mapping[str, Any] | None = None

    @property
    def run_key(self) -> Any:
        """The label of this run among its candidate's runs: the seed if known."""
        return self.seed if self.seed is not None else f"trial {self.number}"

    @classmethod
    def from_trial(cls, trial: Any, objective_names: Sequence[str] | None = None) -> TrialRecord:
        """From an Optuna ``FrozenTrial`` (or anything with the same attributes).

        Scores are the user attributes that :func:`space.names.is_score_name` names
        (NaN where the driver stored null); an objective value with no user attribute of
        its name is added under that name.
        """
        attrs = TrialAttrs.of(trial.user_attrs)
        state = getattr(trial.state, "name", str(trial.state))
        scores = _scores(trial.user_attrs)
        values = getattr(trial, "values", None) or []
        for name, value in zip(objective_names or (), values, strict=False):
            scores.setdefault(name, float(value))
        has_id = attrs.candidate_id is not None
        candidate_id = attrs.candidate_id
        if candidate_id is None:
            candidate_id = attrs.candidate_name or attrs.preset or f"trial-{trial.number}"
        return cls(
            number=int(trial.number),
            state=state,
            candidate_id=candidate_id,
            candidate_name=attrs.candidate_name,
            preset=attrs.preset,
            seed=attrs.seed,
            knobs=dict(attrs.knobs or {}),
            scores=scores,
            niah=attrs.niah,
            attention_mass=attrs.attention_mass,
            reason=attrs.reason,
            reused_from=attrs.reused_from,
            repeats=attrs.repeats,
            has_id=has_id,
            rung=attrs.ladder_rung or 0,
            ladder_origin=attrs.ladder_origin,
            lr_search=attrs.lr_search,
        )


def _scores(attrs: Mapping[str, Any]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for key, value in attrs.items():
        if not is_score_name(key):
            continue
        number = as_float(value)
        if number is not None:
            scores[key] = number
        elif value is None:
            scores[key] = math.nan  # NaN stored as JSON null
    return scores


def seed_records(trial: Any, objective_names: Sequence[str] | None = None) -> list[TrialRecord]:
    """The runs behind one trial: one record per seed.

    A trial that trained several seeds (``repeats`` > 1) stores their mean as score
    attributes and each seed's own scores, NIAH grid and attention mass in the
    ``seeds`` attribute. Trials recorded without it are read from
    ``<trial_dir>/seed_<n>/scores.json`` (written by ``workers.candidate``) when that
    folder is readable; otherwise the trial is one record built from its attributes.
    """
    base = TrialRecord.from_trial(trial, objective_names)
    attrs = TrialAttrs.of(trial.user_attrs)
    entries = attrs.seeds
    if not entries:
        entries = _seed_files(attrs.trial_dir)
    records = []
    for data in entries:
        if not isinstance(data, Mapping):
            continue
        scores = {
            k: float(v)
            for k, v in (data.get("scores") or {}).items()
            if is_score_name(k) and as_float(v) is not None
        }
        records.append(
            replace(
                base,
                seed=data.get("seed"),
                scores=scores,
                niah=data.get("niah") or None,
                attention_mass=data.get("attention_mass") or None,
                repeats=None,
            )
        )
    return records or [base]


def _seed_files(trial_dir: str | None) -> list[dict[str, Any]]:
    if not trial_dir:
        return []
    out = []
    for path in sorted(Path(trial_dir).glob(f"{SEED_DIR_PREFIX}*/{SCORES_FILE}")):
        data = json.loads(path.read_text())
        if data.get("seed") is None:
            data["seed"] = seed_of(path.parent)
        out.append(data)
    return out


@dataclass(frozen=True)
class StudyRecords:
    """Every run of a study, with the study's objective names and directions."""

    records: tuple[TrialRecord, ...]
    objective_names: tuple[str, ...] | None
    directions: tuple[str, ...]


def study_records(study: Any, rung: int | None = 0) -> StudyRecords:
    """Every trial of an ``optuna.Study`` expanded into its seeds' runs
    (:func:`seed_records`, which may read the trial folders); objective names come from
    the study (the sweep driver records them), directions from the study itself.

    ``rung``: only the trials of that scale-ladder rung (objectives compare within a
    rung; rung 0 is every trial of a study without a ladder); None: every trial."""
    names = study.user_attrs.get(STUDY_ATTR_OBJECTIVES) or getattr(study, "metric_names", None)
    directions = tuple(d.name.lower() for d in study.directions)
    if names is not None and len(names) != len(directions):
        names = None
    trials = study.get_trials(deepcopy=False)
    if rung is not None:
        trials = [t for t in trials if rung_of(t.user_attrs) == rung]
    records = tuple(r for t in trials for r in seed_records(t, names))
    return StudyRecords(records, tuple(names) if names is not None else None, directions)
