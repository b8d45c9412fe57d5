"""The trial attributes: every Optuna user attribute a ropenope trial carries, in one table.

A trial's user attributes are its record in the study database (STYLE 8: no table of
ours): the candidate it trains, the links to Ray and MLflow, its outcome and reason, the
sweep's bookkeeping, and its scores. Several writers fill it at different moments (the
preset and seed-round planners enqueue it, triage starts it, the searcher closes it with
what the worker reported, MO-ASHA stops it, resume re-queues it) and the status, report,
export, sync and retention read it. This module is the one owner of its keys and types:

- :data:`TRIAL_ATTRS`: key -> :class:`AttrSpec` (its JSON type and what it means); every
  key that is not in the table is a score (a number, or null for a non-finite one);
- :func:`check_attrs`: what a writer is about to store, checked against the table (the
  writers' choke points call it: ``search.bookkeeping.set_trial_attrs``, each enqueue,
  and ``search.storage`` for the idempotency keys it writes through Optuna's SQL models);
- :class:`TrialAttrs`: a trial's attributes read back as one typed object. Every reader
  goes through it (``tests/test_trial_attrs.py`` fails on a raw read by key elsewhere):
  an absent key, a null and a value of the wrong type all read as None.

The key names are part of the interface (``tests/golden/interface.json``): other tools
read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The candidate.
ATTR_CANDIDATE_ID = "candidate_id"
ATTR_CANDIDATE_NAME = "candidate_name"
ATTR_KNOBS = "knobs"
ATTR_PRESET = "preset"
ATTR_BUDGET = "budget"
ATTR_SEED = "seed"
ATTR_REPEATS = "repeats"
ATTR_EVAL_METRIC = "eval_metric"
# Links to the other systems.
ATTR_RAY_TRIAL_ID = "ray_trial_id"
ATTR_MLFLOW_RUN_ID = "mlflow_run_id"
ATTR_TRACKING_ERROR = "tracking_error"
ATTR_DRIVER = "driver_id"
ATTR_TRIAL_DIR = "trial_dir"
ATTR_RAY_TRIAL_DIR = "ray_trial_dir"
# The outcome.
ATTR_REASON = "reason"
ATTR_REASON_DETAIL = "reason_detail"
ATTR_REUSED_FROM = "reused_from"
ATTR_TRIAL_SECONDS = "trial_seconds"
# Each seed's own result ([{seed, status, reason, scores, niah, attention_mass}]): the
# study database holds everything a report needs even when trial folders stay on
# worker machines. ``niah`` and ``attention_mass`` are keys of those entries, and trial
# attributes of single-seed trials recorded before the entries existed (still read).
ATTR_SEEDS = "seeds"
ATTR_NIAH = "niah"
ATTR_ATTENTION_MASS = "attention_mass"
# Crash recovery.
ATTR_RERUN_OF = "rerun_of"
ATTR_RESTORE_FROM = "restore_from"
ATTR_RESUMED_FROM_STEP = "resumed_from_step"
# train.lr_search (workers.lr_search): the learning rate the pilots chose, the one the
# seeds trained at, and the pilots' record.
ATTR_LR = "lr"
ATTR_LR_SEARCH = "lr_search"
ATTR_WORKER_RESTARTS = "worker_restarts"
ATTR_RESTART_REASON = "restart_reason"
# MO-ASHA.
ATTR_RUNG = "rung"
ATTR_RUNG_EVALS = "rung_evals"
ATTR_RUNG_VALUES = "rung_values"
# Adaptive seeds (study.repeats: {min, max}): a trial that trains more seeds of a
# candidate for the hypotheses still undecided. It does not count toward study.trials.
ATTR_REQUESTED_SEEDS = "requested_seeds"
ATTR_REQUESTED_FOR = "requested_for"
# Scale ladder (``ladder:``): a trial of a candidate promoted to a larger rung. Rung 0 is
# every trial without it; a promoted one does not count toward study.trials.
ATTR_LADDER_RUNG = "ladder_rung"
ATTR_PROMOTED_FROM = "promoted_from"
ATTR_LADDER_ORIGIN = "ladder_origin"
# Idempotency keys (search.storage): a call whose commit may have applied before the
# connection was lost finds its own trial by them instead of making a second one.
ATTR_CREATE_KEY = "create_key"
ATTR_CLAIM_KEY = "claim_key"

# The JSON types a value may have once stored (null is allowed for every key: a
# non-finite number is stored as null, and a detail may be absent).
TEXT: tuple[type, ...] = (str,)
INT: tuple[type, ...] = (int,)
NUMBER: tuple[type, ...] = (int, float)
LIST: tuple[type, ...] = (list, tuple)
DICT: tuple[type, ...] = (dict,)


@dataclass(frozen=True)
class AttrSpec:
    """One trial user attribute: its key, the JSON types of its value, what it means."""

    key: str
    types: tuple[type, ...]
    meaning: str

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        if isinstance(value, bool):  # a bool is an int to isinstance; never a count here
            return bool in self.types
        return isinstance(value, self.types)


TRIAL_ATTRS: dict[str, AttrSpec] = {
    a.key: a
    for a in (
        AttrSpec(ATTR_CANDIDATE_ID, TEXT, "the candidate's stable id (its canonical hash)"),
        AttrSpec(ATTR_CANDIDATE_NAME, TEXT, "the candidate's readable name"),
        AttrSpec(ATTR_KNOBS, DICT, "the candidate's knob values, {knob: value}"),
        AttrSpec(ATTR_PRESET, TEXT, "the preset the trial was enqueued for"),
        AttrSpec(ATTR_BUDGET, TEXT, "what 'same budget' means for dedup"),
        AttrSpec(ATTR_SEED, INT, "the first seed the trial trains"),
        AttrSpec(ATTR_REPEATS, INT, "seeds trained for this candidate (scores: their mean)"),
        AttrSpec(ATTR_EVAL_METRIC, TEXT, "the metric stored as the intermediate values"),
        AttrSpec(ATTR_RAY_TRIAL_ID, TEXT, "the Ray Tune trial id"),
        AttrSpec(ATTR_MLFLOW_RUN_ID, TEXT, "the trial's MLflow run"),
        AttrSpec(ATTR_TRACKING_ERROR, TEXT, "why live tracking of the trial failed"),
        AttrSpec(ATTR_DRIVER, TEXT, "the driver process that asked the trial"),
        AttrSpec(ATTR_TRIAL_DIR, TEXT, "where the trial's artifacts and checkpoints live"),
        AttrSpec(ATTR_RAY_TRIAL_DIR, TEXT, "the Ray Tune trial folder (its checkpoints)"),
        AttrSpec(ATTR_REASON, TEXT, "why the trial is FAIL or PRUNED (space.outcomes)"),
        AttrSpec(ATTR_REASON_DETAIL, TEXT, "the human-readable cause behind the reason"),
        AttrSpec(ATTR_REUSED_FROM, INT, "the trial whose result this one reuses"),
        AttrSpec(ATTR_TRIAL_SECONDS, NUMBER, "wall time of the trial's work (train + score)"),
        AttrSpec(ATTR_SEEDS, LIST, "each seed's own result, one entry per seed"),
        AttrSpec(ATTR_NIAH, DICT, "an older single-seed trial's NIAH grid (now per seed)"),
        AttrSpec(ATTR_ATTENTION_MASS, DICT, "an older trial's attention mass (now per seed)"),
        AttrSpec(ATTR_RERUN_OF, INT, "the interrupted trial whose candidate this re-runs"),
        AttrSpec(ATTR_RESTORE_FROM, TEXT, "the checkpoint folder a re-run continues from"),
        AttrSpec(ATTR_RESUMED_FROM_STEP, INT, "optimizer step the training continued from"),
        AttrSpec(ATTR_LR, NUMBER, "train.lr_search: the learning rate the seeds trained at"),
        AttrSpec(ATTR_LR_SEARCH, DICT, "train.lr_search: {seed, steps, values, pilots, chosen}"),
        AttrSpec(ATTR_WORKER_RESTARTS, INT, "times its worker died and it restarted"),
        AttrSpec(ATTR_RESTART_REASON, TEXT, "why it last restarted (the Ray error's line)"),
        AttrSpec(ATTR_RUNG, INT, "MO-ASHA: the rung (0 = the first) that stopped it"),
        AttrSpec(ATTR_RUNG_EVALS, INT, "that rung's place on the time axis, in evaluations"),
        AttrSpec(ATTR_RUNG_VALUES, DICT, "the trial's rung objectives there, {metric: value}"),
        AttrSpec(ATTR_REQUESTED_SEEDS, LIST, "the seeds this trial trains, as planned"),
        AttrSpec(ATTR_REQUESTED_FOR, LIST, "the hypotheses that asked for those seeds"),
        AttrSpec(ATTR_LADDER_RUNG, INT, "the ladder rung (0 = the first) this trial trains at"),
        AttrSpec(ATTR_PROMOTED_FROM, INT, "the trial number one rung below it"),
        AttrSpec(ATTR_LADDER_ORIGIN, INT, "the candidate's rung-0 trial number"),
        AttrSpec(ATTR_CREATE_KEY, TEXT, "the call that created the trial (ask, enqueue)"),
        AttrSpec(ATTR_CLAIM_KEY, TEXT, "the call that started the queued trial"),
    )
}

# Any other key is a score or a result number (short_bpb, acc@2x, steps, ...).
SCORE = AttrSpec("<score>", NUMBER, "a score or result number of the trial")


class TrialAttrError(TypeError):
    """A writer passed a trial attribute of the wrong type: a bug in the writer."""


def attr_of(key: str) -> AttrSpec:
    """The table's row for ``key``; a score for any other key."""
    return TRIAL_ATTRS.get(key, SCORE)


def check_attrs(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    """``attrs``, after checking each value against its key's type; raises
    :class:`TrialAttrError` naming the first wrong one."""
    for key, value in attrs.items():
        attr = attr_of(key)
        if not attr.accepts(value):
            wanted = " or ".join(t.__name__ for t in attr.types)
            raise TrialAttrError(
                f"trial attribute {key!r}: a {type(value).__name__}, expected {wanted} or null"
            )
    return attrs


@dataclass(frozen=True)
class TrialAttrs:
    """A trial's user attributes as one typed object (absent ones None; a value of the
    wrong type, written by an older version, reads as None). Field names are the keys."""

    candidate_id: str | None = None
    candidate_name: str | None = None
    knobs: dict[str, Any] | None = None
    preset: str | None = None
    budget: str | None = None
    seed: int | None = None
    repeats: int | None = None
    eval_metric: str | None = None
    ray_trial_id: str | None = None
    mlflow_run_id: str | None = None
    tracking_error: str | None = None
    driver_id: str | None = None
    trial_dir: str | None = None
    ray_trial_dir: str | None = None
    reason: str | None = None
    reason_detail: str | None = None
    reused_from: int | None = None
    trial_seconds: float | None = None
    seeds: list[dict[str, Any]] | None = None
    niah: dict[str, Any] | None = None
    attention_mass: dict[str, Any] | None = None
    rerun_of: int | None = None
    restore_from: str | None = None
    resumed_from_step: int | None = None
    lr: float | None = None
    lr_search: dict[str, Any] | None = None
    worker_restarts: int | None = None
    restart_reason: str | None = None
    rung: int | None = None
    rung_evals: int | None = None
    rung_values: dict[str, float] | None = None
    requested_seeds: list[int] | None = None
    requested_for: list[str] | None = None
    ladder_rung: int | None = None
    promoted_from: int | None = None
    ladder_origin: int | None = None
    create_key: str | None = None
    claim_key: str | None = None
    scores: dict[str, float] = field(default_factory=dict)  # every other numeric key

    @classmethod
    def of(cls, attrs: Mapping[str, Any]) -> TrialAttrs:
        known: dict[str, Any] = {}
        scores: dict[str, float] = {}
        for key, value in attrs.items():
            attr = TRIAL_ATTRS.get(key)
            if attr is not None:
                known[key] = value if attr.accepts(value) else None
            elif value is not None and SCORE.accepts(value):
                scores[key] = float(value)
        return cls(**known, scores=scores)

    def pick(self, keys: Iterable[str]) -> dict[str, Any]:
        """Those of ``keys`` that have a value, ``{key: value}``: what a trial queued from
        this one carries over (a re-run, a promotion, more seeds of its candidate)."""
        return {key: getattr(self, key) for key in keys if getattr(self, key) is not None}
