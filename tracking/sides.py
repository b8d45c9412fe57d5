"""The runs behind one side of a hypothesis's comparison: which candidates the side
selects (by preset, else by a predicate on their layers) and its quantity per run
(a score, a mean over lengths, an attention mass over chosen layers, a difference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from space.errors import ConfigError, InvalidCandidate
from space.hypotheses import Quantity, Side
from space.layers import LayerSpec, layer_kind
from tracking.aggregate import CandidateSummary, StudyAggregate
from tracking.stats import Spread

__all__ = ["LayersOf", "candidate_layers", "run_values", "select"]

# A candidate's per-layer specs, or None when they cannot be known (no sweep file).
LayersOf = Callable[[CandidateSummary], "tuple[LayerSpec, ...] | None"]


def candidate_layers(config: Any | None) -> LayersOf:
    """Expand each candidate's recorded knobs with the study's sweep file (its model
    shape and training length); without one, layers are unknown."""
    cache: dict[str, tuple[LayerSpec, ...] | None] = {}

    def layers_of(c: CandidateSummary) -> tuple[LayerSpec, ...] | None:
        if config is None or not c.knobs:
            return None
        if c.candidate_id not in cache:
            try:
                cache[c.candidate_id] = config.candidate(c.knobs).layers
            except (ConfigError, InvalidCandidate):
                cache[c.candidate_id] = None  # knobs this sweep file cannot build
        return cache[c.candidate_id]

    return layers_of


# -- selecting candidates --------------------------------------------------------------


def select(
    side: Side, agg: StudyAggregate, layers_of: LayersOf, field_path: str
) -> tuple[list[CandidateSummary], str | None]:
    """The candidates of one side, or a problem naming ``field_path``."""
    if side.preset is not None:
        found = agg.get(side.preset)
        if found is not None:
            return [found], None
        if any(c.name == side.preset or side.preset in c.aliases for c in agg.without_complete):
            # no stand-in for a variant that was tried and failed
            return [], f"{field_path}.preset: variant {side.preset!r} ran but has no completed run"
        if side.where is None:
            return [], (
                f"{field_path}.preset: variant {side.preset!r} has no completed run in this study"
            )
    matches = []
    unknown = []
    for c in agg.candidates:
        layers = layers_of(c)
        if layers is None:
            unknown.append(c.name)
        elif side.where.matches(layers):
            matches.append(c)
    if not matches:
        what = f"no preset {side.preset!r} and no" if side.preset else "no"
        why = f" (layers unknown for {', '.join(unknown)})" if unknown else ""
        return [], f"{field_path}.where: {what} completed candidate fits{why}"
    if len(matches) > 1 and side.candidates == "one":
        names = ", ".join(c.name for c in matches)
        lead = f"no preset {side.preset!r} and several" if side.preset else "several"
        return [], (
            f"{field_path}.where: {lead} candidates fit the role ({names}); "
            "name a preset, narrow where, or say candidates: every | mean"
        )
    return matches, None


# -- reading a quantity per run --------------------------------------------------------


def run_values(
    q: Quantity,
    c: CandidateSummary,
    layers: Sequence[LayerSpec] | None,
    side: Side,
) -> tuple[Spread | None, str | None]:
    """The quantity per run of ``c`` (keyed by seed), or why it cannot be read."""
    if q.score is not None:
        s = c.spread(q.score)
        if s is None or s.n == 0:
            return None, f"no run of {c.name} reports {q.score}"
        return s, None
    if q.mean is not None:
        low, high = q.multiple_range()
        parts = {m: s for m, s in c.by_multiple(f"{q.mean}@").items() if m >= low}
        parts = {m: s for m, s in parts.items() if high is None or m <= high}
        if not parts:
            return None, f"no run of {c.name} reports {q.mean}@Nx at {low}x or beyond"
        maps = [s.by_key() for s in parts.values()]
        keys = [k for k in maps[0] if all(k in m for m in maps[1:])]
        return Spread(tuple(float(np.mean([m[k] for m in maps])) for k in keys), tuple(keys)), None
    if q.mass is not None:
        return _mass(q, c, layers, side)
    left, err = run_values(q.diff[0], c, layers, side)
    if left is None:
        return None, err
    right, err = run_values(q.diff[1], c, layers, side)
    if right is None:
        return None, err
    r = right.by_key()
    pairs = [(k, v - r[k]) for k, v in left.by_key().items() if k in r]
    return Spread(tuple(v for _, v in pairs), tuple(k for k, _ in pairs)), None


def _mass(
    q: Quantity, c: CandidateSummary, layers: Sequence[LayerSpec] | None, side: Side
) -> tuple[Spread | None, str | None]:
    recorded = c.attention_mass.get(q.at)
    if not recorded:
        return None, f"no attention mass of {c.name} at {q.at}"
    if layers is None:
        if side.layers is not None:
            return None, f"layers of {c.name} unknown (no sweep file to expand its knobs)"
        indices = [e["index"] for e in recorded.get("per_layer", ())]
    else:
        indices = [s.index for s in layers if side.layers is None or side.layers.matches(s)]
        if not indices:
            return None, f"no layer of {c.name} is {side.layers.describe()}"
        labels = {layer_kind(layers[i]) for i in indices}
        if len(labels) == 1:  # exactly one recorded kind: its mean, as the trial stored it
            (label,) = labels
            if indices == [s.index for s in layers if layer_kind(s) == label]:
                s = c.mass(q.at, label, q.mass)
                if s is not None and s.n:
                    return s, None
    s = c.layer_mass(q.at, indices, q.mass)
    if s is None or s.n == 0:
        return None, f"no {q.mass} mass of {c.name} at {q.at} for layers {indices}"
    return s, None
