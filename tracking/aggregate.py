"""A study's runs grouped by candidate and summarised over seeds. Pure: no storage,
no files, no MLflow (:mod:`tracking.records` reads the study).

:func:`aggregate` groups the COMPLETE runs (:class:`tracking.records.TrialRecord`, one
per seed) by ``candidate_id`` and gives, for every score, a
:class:`tracking.stats.Spread`: the per-seed values keyed by seed (so two candidates or
two layer kinds can be compared seed by seed), their mean, sample standard deviation,
min, max and count. NIAH grids and attention-mass profiles are averaged cell by cell
with the same Spread.

Which runs count:
- only COMPLETE runs enter the statistics; FAIL / PRUNED / RUNNING ones are counted per
  candidate with their reasons (``CandidateSummary.not_complete``);
- a trial that reused another trial's result (``reused_from``) is the same run twice,
  not another seed: it is skipped, and so is a second COMPLETE run of a
  (candidate, seed) already counted (the earlier trial number wins);
- a NaN or missing score is left out of that score's spread and counted in
  ``Spread.n_missing``.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from space.names import multiple_of
from space.outcomes import RERUN_REASONS
from tracking.records import COMPLETE, FINISHED_STATES, TrialRecord, as_float, study_records
from tracking.stats import Spread

__all__ = [
    "CandidateSummary",
    "NiahMean",
    "StudyAggregate",
    "aggregate",
    "aggregate_study",
]


def _spread(pairs: Iterable[tuple[Any, Any]]) -> Spread:
    """A Spread from (key, value) pairs; missing/NaN/non-numeric values are counted."""
    keys, values, missing = [], [], 0
    for key, value in pairs:
        number = as_float(value)
        if number is None or not math.isfinite(number):
            missing += 1
            continue
        keys.append(key)
        values.append(number)
    return Spread(tuple(values), tuple(keys), missing)


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
    spent_seeds: tuple[Any, ...] = ()  # run keys of finished runs, complete or not (not
    # those a dead driver or worker ended: they run again)
    pending_seeds: tuple[Any, ...] = ()  # run keys of runs still queued or running
    # train.lr_search of each counted trial (once per trial): {seed, steps, values, pilots,
    # chosen}, workers.lr_search; empty without a search
    lr_searches: tuple[Mapping[str, Any], ...] = ()

    @property
    def chosen_lrs(self) -> tuple[float | None, ...]:
        """The learning rate each counted trial's pilots chose (None: every pilot lost)."""
        return tuple(s.get("chosen") for s in self.lr_searches)

    @property
    def n(self) -> int:
        return len(self.trials)

    def spread(self, score: str) -> Spread | None:
        return self.scores.get(score)

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

    def layer_mass(self, length: str, indices: Sequence[int], segment: str) -> Spread | None:
        """Per run, the mean fraction of attention on ``segment`` over the layers
        ``indices`` at ``length`` (runs that recorded all of them); None if any layer
        has no record at that length."""
        layers = {e["index"]: e for e in self.attention_mass.get(length, {}).get("per_layer", ())}
        if not indices or any(i not in layers or segment not in layers[i] for i in indices):
            return None
        per_layer = [layers[i][segment].by_key() for i in indices]
        keys = [k for k in per_layer[0] if all(k in m for m in per_layer[1:])]
        values = tuple(float(np.mean([m[k] for m in per_layer])) for k in keys)
        return Spread(values, tuple(keys))


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
    """:func:`aggregate` over an ``optuna.Study``, read by
    :func:`tracking.records.study_records` (each trial expanded into its seeds' runs)."""
    read = study_records(study)
    return aggregate(read.records, read.objective_names, read.directions)


def _summarise(cid: str, group: list[TrialRecord], notes: list[str]) -> CandidateSummary:
    presets = list(dict.fromkeys(r.preset for r in group if r.preset))
    names = [r.candidate_name for r in group if r.candidate_name]
    candidate_name = names[0] if names else None
    display = presets[0] if presets else (candidate_name or cid)
    knobs = next((r.knobs for r in group if r.knobs), {})

    used: list[TrialRecord] = []
    seen: dict[Any, int] = {}
    not_complete: Counter[str] = Counter()
    # A run that ended because its driver or worker died is not spent: its seed runs
    # again (a re-run, or the seed planner asks for it).
    spent = [
        r.run_key
        for r in group
        if r.state in FINISHED_STATES and not (r.state == "FAIL" and r.reason in RERUN_REASONS)
    ]
    pending = [r.run_key for r in group if r.state not in FINISHED_STATES]
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
        spent_seeds=tuple(dict.fromkeys(spent)),
        pending_seeds=tuple(dict.fromkeys(pending)),
        lr_searches=tuple(
            {r.number: r.lr_search for r in used if r.lr_search is not None}.values()
        ),
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
