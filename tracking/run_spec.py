"""What a trial's MLflow run holds at its start, built in one place.

The live tracker (inside the trial process) and ``ropenope sync`` (from the study's records)
both describe a trial's run with :func:`trial_run_spec`: its name, tags (the links:
study, Optuna trial number, Ray trial id, candidate id and name, where the candidate came
from), params (the knobs with their YAML names, the seeds, the fixed settings of the sweep
file) and the resolved candidate (``candidate.yaml``). A run written live and a run rebuilt
by sync therefore agree key for key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from space.ladder import apply_rung
from space.names import TAG_CANDIDATE_ID, TAG_CANDIDATE_NAME, TAG_OPTUNA_TRIAL, TAG_RAY_TRIAL_ID
from space.trial_attrs import (
    ATTR_LADDER_ORIGIN,
    ATTR_LADDER_RUNG,
    ATTR_PRESET,
    ATTR_PROMOTED_FROM,
    ATTR_RERUN_OF,
    ATTR_REUSED_FROM,
    TrialAttrs,
)
from tracking.keys import TRIAL_SECTIONS, config_params, knob_params, param_value
from tracking.study_view import TrialLike

if TYPE_CHECKING:
    from space.expand import Candidate
    from space.schema import SweepConfig

# Trial user attributes that say where a trial's candidate came from; each becomes a tag.
SOURCE_ATTRS = (
    ATTR_PRESET,
    ATTR_REUSED_FROM,
    ATTR_RERUN_OF,
    ATTR_LADDER_RUNG,
    ATTR_PROMOTED_FROM,
    ATTR_LADDER_ORIGIN,
)


@dataclass(frozen=True)
class TrialRunSpec:
    number: int
    candidate_id: str | None
    run_name: str
    tags: dict[str, str]
    params: dict[str, str]
    candidate_yaml: str | None = None  # the resolved candidate and its seed(s)
    files: dict[str, str] = field(default_factory=dict)  # artifact name -> text

    def start_files(self) -> dict[str, str]:
        out = dict(self.files)
        if self.candidate_yaml is not None:
            out["candidate.yaml"] = self.candidate_yaml
        return out


def run_name(number: int, candidate_name: str | None) -> str:
    return f"t{int(number):03d} {candidate_name or ''}".strip()


def seed_param(seeds: Sequence[int]) -> str:
    """The seed of a run (``"0"``), or its seeds when it trains several (``"0,1,2"``)."""
    seeds = list(seeds)
    return param_value(seeds[0]) if len(seeds) == 1 else ",".join(str(s) for s in seeds)


def trial_run_spec(
    *,
    number: int,
    candidate_id: str | None,
    candidate_name: str | None,
    knobs: Mapping[str, Any],
    seeds: Sequence[int],
    ray_trial_id: str | None,
    config: SweepConfig | None,
    candidate: Candidate | Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
) -> TrialRunSpec:
    """The spec of trial ``number``'s run. ``candidate`` (a Candidate or its dict) gives the
    resolved ``candidate.yaml``; ``source`` the preset / reused_from / rerun_of links."""
    params = knob_params(dict(knobs))
    if seeds:
        params["seed"] = seed_param(seeds)
    if config is not None:
        params.update(config_params(config, TRIAL_SECTIONS))
    tags = {
        TAG_OPTUNA_TRIAL: str(number),
        TAG_CANDIDATE_ID: str(candidate_id or ""),
        TAG_CANDIDATE_NAME: candidate_name or "",
        TAG_RAY_TRIAL_ID: str(ray_trial_id or ""),
    }
    if config is not None and config.rung:  # a scale-ladder rung above 0 (space.ladder)
        tags[ATTR_LADDER_RUNG] = str(config.rung)
    for key, value in TrialAttrs.of(source or {}).pick(SOURCE_ATTRS).items():
        tags[key] = str(value)
    resolved = None
    if candidate is not None:
        as_dict = candidate if isinstance(candidate, Mapping) else candidate.to_dict()
        seed_value: Any = list(seeds)[0] if len(seeds) == 1 else list(seeds)
        resolved = yaml.safe_dump({**as_dict, "seed": seed_value}, sort_keys=False)
    return TrialRunSpec(
        number=int(number),
        candidate_id=candidate_id,
        run_name=run_name(number, candidate_name),
        tags=tags,
        params=params,
        candidate_yaml=resolved,
    )


def trained_seeds(attrs: Mapping[str, Any]) -> list[int]:
    """The seeds a trial trained: ``seed``, ``seed + 1``, ... for ``repeats`` seeds."""
    read = TrialAttrs.of(attrs)
    if read.seed is None:
        return []
    return [read.seed + i for i in range(read.repeats or 1)]


def spec_from_trial(trial: TrialLike, config: SweepConfig | None) -> TrialRunSpec:
    """The spec of a finished trial's run, from the study's records (``ropenope sync``)."""
    attrs = TrialAttrs.of(trial.user_attrs)
    knobs: Mapping[str, Any] = attrs.knobs if attrs.knobs is not None else dict(trial.params)
    candidate: Any = None
    if config is not None:
        config = apply_rung(config, attrs.ladder_rung or 0)  # the sweep file its rung trained with
        try:
            candidate = config.candidate(knobs)
        except (ValueError, KeyError):  # an invalid candidate has no layers: keep the knobs
            candidate = None
    if candidate is None:
        candidate = {
            "id": attrs.candidate_id,
            "name": attrs.candidate_name,
            "knobs": dict(knobs),
        }
    return trial_run_spec(
        number=trial.number,
        candidate_id=attrs.candidate_id,
        candidate_name=attrs.candidate_name,
        knobs=knobs,
        seeds=trained_seeds(trial.user_attrs),
        ray_trial_id=attrs.ray_trial_id,
        config=config,
        candidate=candidate,
        source=trial.user_attrs,
    )
