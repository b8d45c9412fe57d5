"""A study's trials, grouped by candidate and summarised over seeds.

A run is one (candidate, seed) training. A trial is either one run (its user attributes
hold the seed, the scores, the NIAH grid and the attention mass) or, when the sweep
trains ``repeats`` seeds inside one trial, several runs whose per-seed results lie in
the trial's folder (:func:`seed_records`). :func:`aggregate` groups the COMPLETE runs
by ``candidate_id`` and gives, for every numeric score, a :class:`Spread`: the
per-seed values (keyed by seed, so two candidates or two layer kinds can be compared
seed by seed), their mean, sample standard deviation, min, max and count. NIAH grids
and attention-mass profiles are averaged cell by cell with the same :class:`Spread`.

Which trials count:
- only COMPLETE trials enter the statistics; FAIL / PRUNED / RUNNING ones are counted
  per candidate with their reasons (``CandidateSummary.not_complete``);
- a trial that reused another trial's result (``reused_from``) is the same run twice,
  not another seed: it is skipped, and so is a second COMPLETE trial of a
  (candidate, seed) already counted (the earlier trial number wins);
- a NaN or missing score is left out of that score's spread and counted in
  ``Spread.n_missing``.

:func:`aggregate` is pure: it reads :class:`TrialRecord` objects, or objects with
Optuna's ``FrozenTrial`` surface (``number``, ``state``, ``values``, ``user_attrs``), and
never touches storage, files or MLflow; :func:`aggregate_study` and :func:`seed_records`
read the study and the trial folders.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from space.knobs import KNOB_DEFAULTS
from space.names import (
    ATTR_ATTENTION_MASS,
    ATTR_CANDIDATE_ID,
    ATTR_CANDIDATE_NAME,
    ATTR_KNOBS,
    ATTR_NIAH,
    ATTR_PRESET,
    ATTR_REASON,
    ATTR_REPEATS,
    ATTR_RERUN_OF,
    ATTR_RESUMED_FROM_STEP,
    ATTR_REUSED_FROM,
    ATTR_SEED,
    ATTR_SEEDS,
    ATTR_TRIAL_DIR,
    STUDY_ATTR_OBJECTIVES,
    multiple_of,
)

__all__ = [
    "CandidateSummary",
    "NiahMean",
    "Spread",
    "StudyAggregate",
    "TrialRecord",
    "aggregate",
    "aggregate_study",
    "multiple_of",
    "seed_records",
]

SEED_DIR_PREFIX = "seed_"  # <trial_dir>/seed_<n>/ holds one seed's run
SEED_SCORES_FILE = "scores.json"
COMPLETE = "COMPLETE"

# Numeric user attributes that are bookkeeping, not scores.
_NOT_SCORES = frozenset(
    {ATTR_SEED, ATTR_REPEATS, ATTR_RESUMED_FROM_STEP, ATTR_RERUN_OF, ATTR_REUSED_FROM}
)


# -- one score over seeds --------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """One score over seeds: ``values[i]`` came from the run labelled ``keys[i]`` (its
    seed, or ``"trial N"`` when the trial recorded no seed).

    ``std`` is the sample standard deviation (ddof=1); with fewer than two values it is
    NaN, as is ``sem`` (std / sqrt(n)): one run says nothing about spread.
    """

    values: tuple[float, ...]
    keys: tuple[Any, ...] = ()
    n_missing: int = 0

    def __post_init__(self) -> None:
        if self.keys and len(self.keys) != len(self.values):
            raise ValueError(f"{len(self.keys)} keys for {len(self.values)} values")

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan

    @property
    def sem(self) -> float:
        return self.std / math.sqrt(self.n) if self.n >= 2 else math.nan

    @property
    def min(self) -> float:
        return float(min(self.values)) if self.values else math.nan

    @property
    def max(self) -> float:
        return float(max(self.values)) if self.values else math.nan

    def by_key(self) -> dict[Any, float]:
        keys = self.keys or tuple(range(self.n))
        return dict(zip(keys, self.values, strict=True))

    def to_dict(self) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "mean": clean(self.mean),
            "std": clean(self.std),
            "min": clean(self.min),
            "max": clean(self.max),
            "n": self.n,
            "n_missing": self.n_missing,
            "values": list(self.values),
            "keys": [str(k) for k in self.keys],
        }

    def format(self, spec: str = ".3g", *, range_: bool = False) -> str:
        """``0.91 ± 0.04`` (mean ± std), ``0.91 (n=1)`` for one run, ``-`` for none;
        ``range_`` appends ``[min, max]``."""
        if not self.values:
            return "-"
        if self.n == 1:
            return f"{self.mean:{spec}} (n=1)"
        text = f"{self.mean:{spec}} ± {self.std:{spec}}"
        if range_:
            text += f" [{self.min:{spec}}, {self.max:{spec}}]"
        return text


def _spread(pairs: Iterable[tuple[Any, Any]]) -> Spread:
    """A Spread from (key, value) pairs; missing/NaN/non-numeric values are counted."""
    keys, values, missing = [], [], 0
    for key, value in pairs:
        number = _as_float(value)
        if number is None or not math.isfinite(number):
            missing += 1
            continue
        keys.append(key)
        values.append(number)
    return Spread(tuple(values), tuple(keys), missing)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


# -- one trial -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """What the report needs from one trial, read from its user attributes."""

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

    @property
    def run_key(self) -> Any:
        """The label of this run among its candidate's runs: the seed if known."""
        return self.seed if self.seed is not None else f"trial {self.number}"

    @classmethod
    def from_trial(cls, trial: Any, objective_names: Sequence[str] | None = None) -> TrialRecord:
        """From an Optuna ``FrozenTrial`` (or anything with the same attributes).

        Scores are the numeric user attributes; an objective value with no user
        attribute of its name is added under that name.
        """
        attrs = dict(trial.user_attrs)
        state = getattr(trial.state, "name", str(trial.state))
        scores: dict[str, float] = {}
        for key, value in attrs.items():
            if key in _NOT_SCORES:
                continue
            number = _as_float(value)
            if number is not None:
                scores[key] = number
            elif value is None and _looks_like_score(key):
                scores[key] = math.nan  # NaN stored as JSON null
        values = getattr(trial, "values", None) or []
        for name, value in zip(objective_names or (), values, strict=False):
            scores.setdefault(name, float(value))
        candidate_id = attrs.get(ATTR_CANDIDATE_ID)
        candidate_name = attrs.get(ATTR_CANDIDATE_NAME)
        preset = attrs.get(ATTR_PRESET)
        has_id = candidate_id is not None
        if candidate_id is None:
            candidate_id = candidate_name or preset or f"trial-{trial.number}"
        seed = attrs.get(ATTR_SEED)
        knobs = attrs.get(ATTR_KNOBS)
        repeats = attrs.get(ATTR_REPEATS)
        return cls(
            number=int(trial.number),
            state=state,
            candidate_id=str(candidate_id),
            candidate_name=candidate_name,
            preset=preset,
            seed=int(seed) if _as_float(seed) is not None else None,
            knobs=dict(knobs) if isinstance(knobs, Mapping) else {},
            scores=scores,
            niah=attrs.get(ATTR_NIAH) if isinstance(attrs.get(ATTR_NIAH), Mapping) else None,
            attention_mass=(
                attrs.get(ATTR_ATTENTION_MASS)
                if isinstance(attrs.get(ATTR_ATTENTION_MASS), Mapping)
                else None
            ),
            reason=attrs.get(ATTR_REASON),
            reused_from=attrs.get(ATTR_REUSED_FROM),
            repeats=int(repeats) if _as_float(repeats) is not None else None,
            has_id=has_id,
        )


def seed_records(trial: Any, objective_names: Sequence[str] | None = None) -> list[TrialRecord]:
    """The runs behind one trial: one record per seed.

    A trial that trained several seeds (``repeats`` > 1) stores their mean as score
    attributes and each seed's own scores, NIAH grid and attention mass in the
    ``seeds`` attribute. Trials recorded without it are read from
    ``<trial_dir>/seed_<n>/scores.json`` (written by ``workers.candidate``) when that
    folder is readable; otherwise the trial is one record built from its attributes.
    """
    base = TrialRecord.from_trial(trial, objective_names)
    entries = trial.user_attrs.get(ATTR_SEEDS)
    if not (isinstance(entries, list) and entries):
        entries = _seed_files(trial.user_attrs.get(ATTR_TRIAL_DIR))
    records = []
    for data in entries:
        if not isinstance(data, Mapping):
            continue
        scores = {k: v for k, v in (data.get("scores") or {}).items() if _as_float(v) is not None}
        records.append(
            replace(
                base,
                seed=data.get("seed"),
                scores={k: float(v) for k, v in scores.items()},
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
    for path in sorted(Path(trial_dir).glob(f"{SEED_DIR_PREFIX}*/{SEED_SCORES_FILE}")):
        data = json.loads(path.read_text())
        if data.get("seed") is None:
            suffix = path.parent.name[len(SEED_DIR_PREFIX) :]
            data["seed"] = int(suffix) if suffix.lstrip("-").isdigit() else None
        out.append(data)
    return out


def _looks_like_score(key: str) -> bool:
    from space.names import is_score_name

    return is_score_name(key)


# -- one candidate ---------------------------------------------------------------------


@dataclass(frozen=True)
class NiahMean:
    """A NIAH grid averaged over seeds: ``acc[i][j]`` at ``lengths[i]`` tokens, depth
    ``depths[j]``; ``std`` the per-cell standard deviation (NaN with one run)."""

    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    acc: tuple[tuple[float, ...], ...]
    std: tuple[tuple[float, ...], ...]
    n: int

    def to_dict(self) -> dict[str, Any]:
        def clean(rows):
            return [[x if math.isfinite(x) else None for x in row] for row in rows]

        return {
            "lengths": list(self.lengths),
            "depths": list(self.depths),
            "acc": clean(self.acc),
            "std": clean(self.std),
            "n": self.n,
        }


@dataclass(frozen=True)
class CandidateSummary:
    """One candidate: its identity and every score as a :class:`Spread` over seeds.

    ``attention_mass[length]["per_kind"][kind][segment]`` and
    ``attention_mass[length]["per_layer"][i][segment]`` are Spreads too (length keys as
    stored: ``"1x"``, ``"4x"``); ``per_layer[i]`` also carries ``index`` and ``kind``.
    """

    candidate_id: str
    name: str  # display name: the preset name if any, else the candidate name
    candidate_name: str | None
    preset: str | None
    knobs: Mapping[str, Any]
    trials: tuple[int, ...]  # the COMPLETE trials counted, in run order
    seeds: tuple[Any, ...]  # their run keys (seeds)
    scores: Mapping[str, Spread]
    niah: NiahMean | None = None
    attention_mass: Mapping[str, Any] = field(default_factory=dict)
    not_complete: Mapping[str, int] = field(default_factory=dict)  # "FAIL: diverged" -> 2
    aliases: tuple[str, ...] = ()  # other preset names that resolved to the same candidate

    @property
    def n(self) -> int:
        return len(self.trials)

    def spread(self, score: str) -> Spread | None:
        return self.scores.get(score)

    def resolved_knobs(self) -> dict[str, Any]:
        """The knobs with defaults filled in for any the trial did not record."""
        return {**KNOB_DEFAULTS, **self.knobs}

    def by_multiple(self, prefix: str) -> dict[int, Spread]:
        """``{4: Spread}`` for scores named ``prefix + "4x"`` (``acc@``, ``extrap_bpb@``)."""
        out = {}
        for name, spread in self.scores.items():
            m = multiple_of(name, prefix)
            if m is not None:
                out[m] = spread
        return dict(sorted(out.items()))

    def mass(self, length: str, kind: str, segment: str) -> Spread | None:
        try:
            return self.attention_mass[length]["per_kind"][kind][segment]
        except KeyError:
            return None


@dataclass(frozen=True)
class StudyAggregate:
    """Every candidate with at least one COMPLETE run, in order of first trial; the
    ones without any, with their outcomes; trial counts by state; warnings."""

    candidates: tuple[CandidateSummary, ...]
    without_complete: tuple[CandidateSummary, ...] = ()
    state_counts: Mapping[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    objective_names: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()

    def get(self, name: str) -> CandidateSummary | None:
        """The candidate whose display name (or alias) is ``name``."""
        for c in self.candidates:
            if c.name == name or name in c.aliases:
                return c
        return None

    def multiples(self, prefix: str) -> list[int]:
        """Every length multiple any candidate has for ``prefix`` (``acc@``), sorted."""
        found = {m for c in self.candidates for m in c.by_multiple(prefix)}
        return sorted(found)

    def mass_lengths(self) -> list[str]:
        found = {k for c in self.candidates for k in c.attention_mass}
        return sorted(found, key=lambda k: (multiple_of("@" + k, "@") or 0, k))


# -- the grouping ----------------------------------------------------------------------


def aggregate(
    trials: Iterable[Any],
    objective_names: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
) -> StudyAggregate:
    """Group ``trials`` (Optuna FrozenTrials or :class:`TrialRecord`) by candidate and
    summarise each candidate's COMPLETE runs over seeds. Pure: no storage access."""
    records = [
        t if isinstance(t, TrialRecord) else TrialRecord.from_trial(t, objective_names)
        for t in trials
    ]
    records.sort(key=lambda r: r.number)
    notes: list[str] = []
    state_counts = Counter(r.state for r in records)
    groups: dict[str, list[TrialRecord]] = {}
    by_label: dict[str, str] = {}  # preset / candidate name -> candidate id
    for r in records:
        if r.has_id:
            groups.setdefault(r.candidate_id, []).append(r)
            for label in (r.preset, r.candidate_name):
                if label:
                    by_label.setdefault(label, r.candidate_id)
    for r in records:
        if not r.has_id:  # a queued preset has no id yet: join its candidate if known
            cid = by_label.get(r.preset or "") or by_label.get(r.candidate_name or "")
            groups.setdefault(cid or r.candidate_id, []).append(r)
    for group in groups.values():
        group.sort(key=lambda r: r.number)

    summaries: list[CandidateSummary] = []
    for cid, group in groups.items():
        summaries.append(_summarise(cid, group, notes))
    _disambiguate(summaries)
    with_runs = tuple(s for s in summaries if s.n > 0)
    without = tuple(s for s in summaries if s.n == 0)
    return StudyAggregate(
        candidates=with_runs,
        without_complete=without,
        state_counts=dict(state_counts),
        warnings=tuple(notes),
        objective_names=tuple(objective_names or ()),
        directions=tuple(str(d) for d in (directions or ())),
    )


def aggregate_study(study: Any) -> StudyAggregate:
    """:func:`aggregate` over an ``optuna.Study``, each trial expanded into its seeds'
    runs (:func:`seed_records`, which reads the trial folders); objective names come
    from the study (the sweep driver records them), directions from the study itself."""
    names = study.user_attrs.get(STUDY_ATTR_OBJECTIVES) or getattr(study, "metric_names", None)
    directions = [d.name.lower() for d in study.directions]
    if names is not None and len(names) != len(directions):
        names = None
    records = [r for t in study.get_trials(deepcopy=False) for r in seed_records(t, names)]
    return aggregate(records, names, directions)


def _summarise(cid: str, group: list[TrialRecord], notes: list[str]) -> CandidateSummary:
    presets = list(dict.fromkeys(r.preset for r in group if r.preset))
    names = [r.candidate_name for r in group if r.candidate_name]
    candidate_name = names[0] if names else None
    display = presets[0] if presets else (candidate_name or cid)
    knobs = next((r.knobs for r in group if r.knobs), {})

    used: list[TrialRecord] = []
    seen: dict[Any, int] = {}
    not_complete: Counter[str] = Counter()
    for r in group:
        if r.state != COMPLETE:
            label = r.state if not r.reason else f"{r.state}: {r.reason}"
            not_complete[label] += 1
            continue
        if r.reused_from is not None:
            notes.append(
                f"{display}: trial {r.number} reuses the result of trial {r.reused_from}; "
                "counted once"
            )
            continue
        if r.run_key in seen:
            notes.append(
                f"{display}: trial {r.number} repeats seed {r.seed} of trial "
                f"{seen[r.run_key]}; counted once (trial {seen[r.run_key]})"
            )
            continue
        seen[r.run_key] = r.number
        if r.repeats is not None and r.repeats > 1:
            notes.append(
                f"{display}: trial {r.number} reports the mean of {r.repeats} seeds without "
                "per-seed values; it counts as one run"
            )
        used.append(r)

    score_names = list(dict.fromkeys(k for r in used for k in r.scores))
    scores = {name: _spread((r.run_key, r.scores.get(name)) for r in used) for name in score_names}
    return CandidateSummary(
        candidate_id=cid,
        name=display,
        candidate_name=candidate_name,
        preset=presets[0] if presets else None,
        knobs=dict(knobs),
        trials=tuple(r.number for r in used),
        seeds=tuple(r.run_key for r in used),
        scores=scores,
        niah=_niah_mean(display, used, notes),
        attention_mass=_mass_mean(display, used, notes),
        not_complete=dict(not_complete),
        aliases=tuple(presets[1:]),
    )


def _disambiguate(summaries: list[CandidateSummary]) -> None:
    """Two candidates with one display name (a preset redefined between runs) get their
    id appended, so no table row or plot label stands for two models."""
    counts = Counter(s.name for s in summaries)
    for i, s in enumerate(summaries):
        if counts[s.name] > 1:
            summaries[i] = replace(s, name=f"{s.name} [{s.candidate_id[:6]}]")


def _niah_mean(display: str, used: list[TrialRecord], notes: list[str]) -> NiahMean | None:
    grids = [(r, r.niah) for r in used if r.niah and r.niah.get("acc")]
    if not grids:
        return None

    def shape(g: Mapping[str, Any]) -> tuple:
        return (tuple(int(x) for x in g["lengths"]), tuple(float(x) for x in g["depths"]))

    common, _ = Counter(shape(g) for _, g in grids).most_common(1)[0]
    kept = [g for _, g in grids if shape(g) == common]
    if len(kept) < len(grids):
        dropped = [r.number for r, g in grids if shape(g) != common]
        notes.append(
            f"{display}: NIAH grids of trials {dropped} have other lengths/depths; "
            "left out of the mean grid"
        )
    acc = np.array(
        [[[math.nan if a is None else float(a) for a in row] for row in g["acc"]] for g in kept]
    )  # (runs, lengths, depths)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN cell stays NaN
        mean = np.nanmean(acc, axis=0)
        std = np.nanstd(acc, axis=0, ddof=1) if len(kept) >= 2 else np.full(mean.shape, math.nan)
    lengths, depths = common
    return NiahMean(
        lengths=lengths,
        depths=depths,
        acc=tuple(tuple(float(x) for x in row) for row in mean),
        std=tuple(tuple(float(x) for x in row) for row in std),
        n=len(kept),
    )


def _mass_mean(display: str, used: list[TrialRecord], notes: list[str]) -> dict[str, Any]:
    """Per length: per-kind and per-layer Spreads of each segment's attention fraction."""
    out: dict[str, Any] = {}
    lengths = list(dict.fromkeys(k for r in used if r.attention_mass for k in r.attention_mass))
    for length in lengths:
        runs = [
            (r.run_key, r.attention_mass[length])
            for r in used
            if r.attention_mass and isinstance(r.attention_mass.get(length), Mapping)
        ]
        segments = list(dict.fromkeys(s for _, m in runs for s in m.get("segments", ()))) or list(
            dict.fromkeys(s for _, m in runs for k in m.get("per_kind", {}).values() for s in k)
        )
        kinds = list(dict.fromkeys(k for _, m in runs for k in m.get("per_kind", {})))
        per_kind = {
            kind: {
                seg: _spread((key, m.get("per_kind", {}).get(kind, {}).get(seg)) for key, m in runs)
                for seg in segments
            }
            for kind in kinds
        }
        layer_ids = list(
            dict.fromkeys(
                (e.get("index"), e.get("kind")) for _, m in runs for e in m.get("per_layer", ())
            )
        )
        per_layer = []
        for index, kind in layer_ids:
            entry: dict[str, Any] = {"index": index, "kind": kind}
            for seg in segments:
                entry[seg] = _spread((key, _layer_value(m, index, kind, seg)) for key, m in runs)
            per_layer.append(entry)
        if len(layer_ids) != len({i for i, _ in layer_ids}):
            notes.append(f"{display}: attention mass at {length}: layer kinds differ by run")
        out[length] = {"segments": segments, "per_kind": per_kind, "per_layer": per_layer}
    return out


def _layer_value(mass: Mapping[str, Any], index: Any, kind: Any, segment: str) -> Any:
    for e in mass.get("per_layer", ()):
        if e.get("index") == index and e.get("kind") == kind:
            return e.get(segment)
    return None
