"""One trial of a sweep, as the driver and the trial process both see it (no Ray here).

- :class:`TrialInfo`: what a trial trains (study, Optuna number, candidate, seeds, folder).
- :class:`TrialHooks`: callbacks inside the trial process (tracking plugs in here).
- :class:`TrialOutcome`: how the trial ended, as the driver tells Optuna; :func:`combine`
  makes it from the per-seed results.
- The keys of the results the Ray adapter (:mod:`workers.ray_trainable`) reports to Tune,
  which the driver reads.

Torch-free and Ray-free, so tracking and the driver import it without either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from space.expand import Candidate
from space.outcomes import Reason, RunStatus
from space.schema import SweepConfig
from space.trial_attrs import (
    ATTR_LR,
    ATTR_LR_SEARCH,
    ATTR_RESUMED_FROM_STEP,
    ATTR_SEEDS,
    ATTR_TRACKING_ERROR,
    ATTR_TRIAL_SECONDS,
)
from workers.device import choose_device

# Keys of the results this trainable reports to Tune (the driver reads them).
OUTCOME_KEY = "trial_outcome"  # JSON of TrialOutcome, only in the last report
EVALS_KEY = "evals"  # evaluations so far, across seeds: the scheduler's time axis
SEED_INDEX_KEY = "seed_index"
LINKS_KEY = "links"  # JSON {attr: value} from TrialHooks.on_start (e.g. mlflow_run_id)


@dataclass(frozen=True)
class TrialInfo:
    """What a hook knows about the trial it runs in."""

    study: str
    number: int  # the Optuna trial number
    ray_trial_id: str
    candidate: Candidate
    seeds: tuple[int, ...]
    out_dir: Path
    config: SweepConfig
    environment: Mapping[str, str] = field(default_factory=dict)  # device, torch version


class TrialHooks:
    """Callbacks inside the trial process; the default does nothing.

    Tracking subclasses this (it must pickle: Ray ships it to the worker). ``on_start``,
    ``on_eval`` and ``on_end`` may return links to record on the Optuna trial, e.g.
    ``{"mlflow_run_id": ...}`` (sent to the driver with the next report).
    An exception in a hook never fails the trial: it is recorded on the Optuna trial
    as ``tracking_error``. A trial stopped early by the scheduler is killed, so
    ``on_end`` is not called for it; the driver's ``SweepHooks.on_trial_end`` is.
    """

    def on_start(self, info: TrialInfo) -> Mapping[str, Any] | None:
        return None

    def on_eval(self, info: TrialInfo, metrics: Mapping[str, float]) -> Mapping[str, Any] | None:
        return None

    def on_end(self, info: TrialInfo, outcome: TrialOutcome) -> Mapping[str, Any] | None:
        return None


@dataclass
class TrialOutcome:
    """How a trial ended, as the driver tells Optuna.

    ``status``: a :class:`space.outcomes.RunStatus` value. ``scores`` are the mean over seeds
    of each score every seed produced. ``results`` (the per-seed ``CandidateResult``)
    stay in the trial process for hooks; the JSON form carries per-seed scores only.
    """

    status: str
    reason: str | None = None
    detail: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    seeds: list[dict[str, Any]] = field(default_factory=list)
    trial_seconds: float = 0.0
    resumed_from_step: int | None = None
    links: dict[str, Any] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list, repr=False)
    # train.lr_search: the pilots and the value chosen (workers.lr_search.LrChoice.to_dict)
    lr_search: dict[str, Any] | None = None

    def attrs(self) -> dict[str, Any]:
        """Scores and bookkeeping as Optuna user attributes."""
        out: dict[str, Any] = dict(self.scores)
        out[ATTR_TRIAL_SECONDS] = self.trial_seconds
        if self.seeds:
            out[ATTR_SEEDS] = self.seeds
        if self.resumed_from_step is not None:
            out[ATTR_RESUMED_FROM_STEP] = self.resumed_from_step
        if self.lr_search is not None:
            out[ATTR_LR_SEARCH] = _strict(self.lr_search)
            if self.lr_search.get("chosen") is not None:
                out[ATTR_LR] = self.lr_search["chosen"]
        out.update(self.links)
        return out

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("results")
        data["scores"] = {k: _finite_or_none(v) for k, v in self.scores.items()}  # strict JSON
        return json.dumps(data, default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> TrialOutcome:
        data = json.loads(text)
        data["scores"] = {k: (math.nan if v is None else v) for k, v in data["scores"].items()}
        return cls(**data)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _finite_or_none(value: float) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float as None (strict JSON, any database)."""
    if isinstance(value, float):
        return _finite_or_none(value)
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def trial_device(config: SweepConfig) -> str:
    """``auto`` means the GPU only when Ray gave this trial one: a trial without a GPU
    allocation must not take one Ray thinks is free."""
    return choose_device(config.resources.device, gpu_given=config.resources.gpus_per_trial > 0)


def trial_threads(config: SweepConfig) -> int:
    """Torch threads = the CPUs Ray gave the trial; more oversubscribes the cores that
    the other trials were given (two trials become ~10x slower)."""
    if config.train.threads is not None:
        return config.train.threads
    return max(1, int(config.resources.cpus_per_trial))


def combine(results: list[Any], seeds: list[int]) -> TrialOutcome:
    """One outcome from the per-seed results: any divergence or stop decides it."""
    per_seed = [
        {
            "seed": seed,
            "status": r.status,
            "reason": r.reason,
            "scores": {k: _finite_or_none(v) for k, v in r.scores.items()},
            "niah": _strict(getattr(r, "niah", None) or None),
            "attention_mass": _strict(getattr(r, "attention_mass", None) or None),
        }
        for seed, r in zip(seeds, results, strict=False)
    ]
    resumed = next((r.resumed_from_step for r in results if r.resumed_from_step), None)
    for r in results:
        if r.status == RunStatus.DIVERGED:
            return TrialOutcome(
                RunStatus.DIVERGED,
                Reason.DIVERGED,
                r.reason,
                dict(r.scores),
                per_seed,
                0.0,
                resumed,
            )
        if r.status == RunStatus.STOPPED:
            return TrialOutcome(
                RunStatus.STOPPED, Reason.PRUNED, r.reason, dict(r.scores), per_seed, 0.0, resumed
            )
    keys = set.intersection(*(set(r.scores) for r in results)) if results else set()
    scores = {k: sum(float(r.scores[k]) for r in results) / len(results) for k in sorted(keys)}
    return TrialOutcome(RunStatus.COMPLETE, None, None, scores, per_seed, 0.0, resumed)


def call_hook(links: dict[str, Any], fn: Any, *args: Any) -> Any:
    """Run a tracking hook; its failure never fails the trial: the first error is kept in
    ``links`` as ``tracking_error`` (recorded on the Optuna trial, STYLE 10)."""
    try:
        return fn(*args)
    except Exception as err:
        links.setdefault(ATTR_TRACKING_ERROR, f"{type(err).__name__}: {err}"[:500])
        return None
