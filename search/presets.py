"""Which candidates a study runs first: the sweep file's presets, enqueued once per study
with the Optuna params that describe them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from space.errors import ConfigError, InvalidCandidate
from space.knobs import KnobSpec
from space.names import STUDY_ATTR_PRESETS
from space.schema import SweepConfig
from space.trial_attrs import ATTR_KNOBS, ATTR_PRESET, check_attrs


def representable(spec: KnobSpec, value: Any) -> bool:
    """Whether ``value`` lies in the knob's searched domain (so Optuna can record it)."""
    if spec.domain == "choice":
        return any(value == c and type(value) is type(c) for c in spec.choices) or (
            value is None and None in spec.choices
        )
    if spec.domain == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        step = int(spec.step or 1)
        return spec.low <= value <= spec.high and (value - int(spec.low)) % step == 0
    if spec.domain in ("float", "log"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return spec.low <= float(value) <= spec.high
    return False


def fixed_params(config: SweepConfig, knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna params that describe ``knobs``: every active searched knob whose value the
    search domain can hold. A preset outside the searched domain keeps its full knobs in
    the trial's ``knobs`` attribute and records only the params that are true of it."""
    resolved = config.candidate(knobs).knobs
    params = {}
    for name, spec in config.searched.items():
        if spec.applies(resolved) and representable(spec, resolved[name]):
            params[name] = resolved[name]
    return params


def enqueue_presets(study: optuna.Study, config: SweepConfig) -> list[str]:
    """Enqueue the config's presets not enqueued before (each preset runs once)."""
    done = list(study.user_attrs.get(STUDY_ATTR_PRESETS, []))
    added = []
    for name, knobs in config.presets.items():
        if name in done:
            continue
        try:
            params = fixed_params(config, knobs)
        except (ConfigError, InvalidCandidate):  # still runs: its trial fails with the reason
            params = {}
        study.enqueue_trial(
            params, user_attrs=check_attrs({ATTR_PRESET: name, ATTR_KNOBS: dict(knobs)})
        )
        added.append(name)
    if added:
        study.set_user_attr(STUDY_ATTR_PRESETS, done + added)
    return added
