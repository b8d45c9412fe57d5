"""Decision accuracy of a scale ladder: do rankings and effects at a small rung hold at a
larger one? Pure: no storage, no files, no MLflow (:func:`ladder_accuracy` takes the
study's run records, :func:`tracking.records.study_records` with ``rung=None``).

Per pair of rungs (low, high) and per objective, over the candidates both rungs trained
(a promoted candidate is the same candidate at every rung: its rung-0 trial's id):

- **agreement**: the share of candidate pairs whose order (by mean over seeds) is the same
  at both rungs; a pair tied at either rung counts one half (DataDecide's decision
  accuracy, arXiv 2504.11393);
- **Kendall's tau** (tau-b, ``scipy.stats.kendalltau``) of the two orders;
- each with a 95% percentile **bootstrap interval over seeds**: every resample draws each
  candidate's seeds with replacement at each rung, independently, and recomputes both.
  With one seed per candidate there is nothing to resample and the interval is None.

Per hypothesis and measure, its **effect** (a - b, with the interval the hypothesis's own
test gives: :func:`tracking.hypotheses.evaluate`) at every rung, and for each rung above
0 a **prediction interval** made from the rungs below it only: from one rung, the effect
stays (``constant``: the value, with the variance of two measurements of it); from two
or more, a straight line in the rung index weighted by 1/se² (``linear``), its variance
at the next rung plus the last rung's own. The quantile is Student's t at the smallest
Welch df of the rungs used (normal without one). The prediction is stated for the rung
above the last one measured and checked (``inside``) where that rung exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from tracking.aggregate import CandidateSummary, StudyAggregate, aggregate
from tracking.hypotheses import Finding
from tracking.records import COMPLETE, TrialRecord

__all__ = [
    "CONFIDENCE",
    "DecisionAccuracy",
    "Effect",
    "HypothesisTrend",
    "Prediction",
    "RungPair",
    "hypothesis_trends",
    "kendall_tau",
    "ladder_accuracy",
    "order_agreement",
    "predict_next",
    "rung_pairs",
    "rung_values",
]

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000

# A rung's runs: candidate key -> score -> per-seed values.
RungValues = Mapping[str, Mapping[str, Sequence[float]]]


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def order_agreement(low: Mapping[str, float], high: Mapping[str, float]) -> float | None:
    """The share of pairs of the candidates in both mappings ordered the same way (a tie
    at either rung counts 1/2); None with fewer than two shared candidates."""
    keys = sorted(set(low) & set(high))
    pairs = list(combinations(keys, 2))
    if not pairs:
        return None
    score = 0.0
    for i, j in pairs:
        a, b = np.sign(low[i] - low[j]), np.sign(high[i] - high[j])
        score += 0.5 if a == 0 or b == 0 else float(a == b)
    return score / len(pairs)


def kendall_tau(low: Mapping[str, float], high: Mapping[str, float]) -> float | None:
    """Kendall's tau-b of the two orders over the shared candidates (None: undefined)."""
    keys = sorted(set(low) & set(high))
    if len(keys) < 2:
        return None
    x, y = [low[k] for k in keys], [high[k] for k in keys]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return _finite(float(stats.kendalltau(x, y).statistic))


@dataclass(frozen=True)
class RungPair:
    """Rank agreement of one objective between two rungs."""

    low: int
    high: int
    objective: str
    candidates: tuple[str, ...]  # the candidates both rungs trained, by display name
    pairs: int
    agreement: float | None
    agreement_interval: tuple[float, float] | None
    tau: float | None
    tau_interval: tuple[float, float] | None
    seeds: tuple[int, int]  # the fewest seeds of a candidate at (low, high)

    def to_dict(self) -> dict[str, Any]:
        return {
            "low_rung": self.low,
            "high_rung": self.high,
            "objective": self.objective,
            "candidates": list(self.candidates),
            "pairs": self.pairs,
            "agreement": self.agreement,
            "agreement_interval": _pair(self.agreement_interval),
            "tau": self.tau,
            "tau_interval": _pair(self.tau_interval),
            "min_seeds": list(self.seeds),
        }


def _pair(x: tuple[float, float] | None) -> list[float] | None:
    return None if x is None else [float(x[0]), float(x[1])]


def _means(values: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in values.items() if len(v)}


def _percentile(samples: list[float]) -> tuple[float, float] | None:
    finite = [s for s in samples if s is not None and math.isfinite(s)]
    if len(finite) < len(samples) / 2:  # undefined in most resamples: no interval
        return None
    tail = 100 * (1 - CONFIDENCE) / 2
    return float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))


def _bootstrap(
    low: Mapping[str, Sequence[float]],
    high: Mapping[str, Sequence[float]],
    resamples: int,
    rng: np.random.Generator,
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """Percentile intervals of (agreement, tau) over seed resamples at both rungs."""
    if all(len(v) < 2 for v in (*low.values(), *high.values())):
        return None, None
    agree: list[float] = []
    taus: list[float] = []
    keys = sorted(low)
    for _ in range(resamples):
        lo = {k: float(np.mean(rng.choice(low[k], size=len(low[k])))) for k in keys}
        hi = {k: float(np.mean(rng.choice(high[k], size=len(high[k])))) for k in keys}
        a = order_agreement(lo, hi)
        t = kendall_tau(lo, hi)
        agree.append(math.nan if a is None else a)
        taus.append(math.nan if t is None else t)
    return _percentile(agree), _percentile(taus)


def rung_pairs(
    per_rung: Mapping[int, RungValues],
    objectives: Sequence[str],
    *,
    names: Mapping[str, str] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> list[RungPair]:
    """Agreement and tau for every pair of rungs (low < high) and every objective."""
    names = names or {}
    out = []
    for low, high in combinations(sorted(per_rung), 2):
        for objective in objectives:
            lo = {k: v[objective] for k, v in per_rung[low].items() if len(v.get(objective, ()))}
            hi = {k: v[objective] for k, v in per_rung[high].items() if len(v.get(objective, ()))}
            shared = sorted(set(lo) & set(hi))
            lo, hi = {k: lo[k] for k in shared}, {k: hi[k] for k in shared}
            rng = np.random.default_rng(seed)
            a_int, t_int = _bootstrap(lo, hi, resamples, rng) if len(shared) >= 2 else (None,) * 2
            out.append(
                RungPair(
                    low=low,
                    high=high,
                    objective=objective,
                    candidates=tuple(names.get(k, k) for k in shared),
                    pairs=len(shared) * (len(shared) - 1) // 2,
                    agreement=order_agreement(_means(lo), _means(hi)),
                    agreement_interval=a_int,
                    tau=kendall_tau(_means(lo), _means(hi)),
                    tau_interval=t_int,
                    seeds=(
                        min((len(v) for v in lo.values()), default=0),
                        min((len(v) for v in hi.values()), default=0),
                    ),
                )
            )
    return out


# -- hypotheses across rungs ---------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """One measure of a hypothesis at one rung: a - b and its interval."""

    rung: int
    diff: float
    se: float | None
    low: float | None
    high: float | None
    df: float | None
    verdict: str

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rung": self.rung,
            "effect": _finite(self.diff),
            "se": _finite(self.se),
            "interval": None if self.low is None else [_finite(self.low), _finite(self.high)],
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Prediction:
    """The effect expected at ``rung`` from the rungs below it, and what it turned out."""

    rung: int
    from_rungs: tuple[int, ...]
    method: str  # constant | linear
    value: float
    low: float
    high: float
    observed: float | None = None  # the effect measured at ``rung``, once it exists
    inside: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rung": self.rung,
            "from_rungs": list(self.from_rungs),
            "method": self.method,
            "predicted": self.value,
            "interval": [self.low, self.high],
            "confidence": CONFIDENCE,
            "observed": self.observed,
            "inside": self.inside,
        }


@dataclass(frozen=True)
class HypothesisTrend:
    """One measure of a hypothesis across the ladder."""

    hypothesis: str
    measure: str | None
    effects: tuple[Effect, ...]
    predictions: tuple[Prediction, ...]
    problem: str | None = None  # why an effect or a prediction is missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "hypothesis": self.hypothesis,
            "measure": self.measure,
            "effects": [e.to_dict() for e in self.effects],
            "predictions": [p.to_dict() for p in self.predictions],
            "problem": self.problem,
        }


def _quantile(dfs: Sequence[float | None]) -> float:
    known = [d for d in dfs if d is not None and math.isfinite(d) and d > 0]
    tail = 1 - (1 - CONFIDENCE) / 2
    return float(stats.t.ppf(tail, min(known))) if known else float(stats.norm.ppf(tail))


def predict_next(effects: Sequence[Effect], rung: int) -> Prediction | None:
    """The prediction interval for the effect at ``rung`` from ``effects`` (rungs below
    it); None when an effect has no standard error (one seed, an exact score)."""
    used = [e for e in effects if e.rung < rung]
    if not used or any(e.se is None or not e.se > 0 for e in used):
        return None
    q = _quantile([e.df for e in used])
    last = max(used, key=lambda e: e.rung)
    if len(used) == 1:
        value, var, method = last.diff, 2 * last.se**2, "constant"
    else:
        x = np.array([[1.0, e.rung] for e in used])
        w = np.diag([1.0 / e.se**2 for e in used])
        cov = np.linalg.inv(x.T @ w @ x)
        beta = cov @ x.T @ w @ np.array([e.diff for e in used])
        at = np.array([1.0, float(rung)])
        value = float(at @ beta)
        var, method = float(at @ cov @ at) + last.se**2, "linear"
    half = q * math.sqrt(var)
    return Prediction(rung, tuple(e.rung for e in used), method, value, value - half, value + half)


def hypothesis_trends(
    findings: Mapping[int, Sequence[Finding]], next_rung: int | None = None
) -> list[HypothesisTrend]:
    """Each measure's effect at every rung of ``findings`` (rung -> the findings there),
    each rung above 0 predicted from the ones below and checked, and ``next_rung`` (the
    rung after the last measured, when the ladder has one) predicted."""
    rungs = sorted(findings)
    out = []
    if not rungs:
        return out
    for h_index, finding in enumerate(findings[rungs[0]]):
        for m_index, result in enumerate(finding.measures):
            effects, problems = [], []
            for rung in rungs:
                at = findings[rung][h_index].measures[m_index]
                c = at.comparison
                if c is None:
                    problems.append(f"rung {rung}: {at.problem or 'no comparison'}")
                    continue
                se = _finite(c.se)
                effects.append(
                    Effect(
                        rung, c.diff, se, _finite(c.low), _finite(c.high), c.df, at.verdict.value
                    )
                )
            predictions = []
            targets = [r for r in rungs if r > rungs[0]]
            if next_rung is not None and next_rung not in targets:
                targets.append(next_rung)
            measured = {e.rung: e for e in effects}
            for rung in targets:
                p = predict_next(effects, rung)
                if p is None:
                    problems.append(f"rung {rung}: no prediction (an effect below has no spread)")
                    continue
                seen = measured.get(rung)
                if seen is not None:
                    p = Prediction(
                        p.rung, p.from_rungs, p.method, p.value, p.low, p.high,
                        seen.diff, p.low <= seen.diff <= p.high,
                    )  # fmt: skip
                predictions.append(p)
            out.append(
                HypothesisTrend(
                    finding.key,
                    result.label,
                    tuple(effects),
                    tuple(predictions),
                    "; ".join(problems) or None,
                )
            )
    return out


# -- one study -----------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionAccuracy:
    """A ladder study's decision accuracy: rank agreement per rung pair and objective,
    and each hypothesis's effect across rungs with its predictions."""

    rungs: tuple[int, ...]  # the rungs with completed runs
    pairs: tuple[RungPair, ...]
    hypotheses: tuple[HypothesisTrend, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rungs": list(self.rungs),
            "resamples": BOOTSTRAP_RESAMPLES,
            "confidence": CONFIDENCE,
            "pairs": [p.to_dict() for p in self.pairs],
            "hypotheses": [h.to_dict() for h in self.hypotheses],
            "notes": list(self.notes),
        }

    def metrics(self) -> dict[str, float]:
        """Numbers for the study's MLflow run: ``ladder.r0_r1.<objective>.agreement`` (and
        ``_low``/``_high``, ``tau``...), ``ladder.<hypothesis>.r1.inside`` (1 or 0)."""
        out: dict[str, float] = {}
        for p in self.pairs:
            head = f"ladder.r{p.low}_r{p.high}.{p.objective}"
            for name, value, iv in (
                ("agreement", p.agreement, p.agreement_interval),
                ("tau", p.tau, p.tau_interval),
            ):
                if value is not None:
                    out[f"{head}.{name}"] = value
                if iv is not None:
                    out[f"{head}.{name}_low"], out[f"{head}.{name}_high"] = iv
        for h in self.hypotheses:
            head = f"ladder.{h.hypothesis}" + (f".{h.measure}" if h.measure else "")
            for e in h.effects:
                out[f"{head}.r{e.rung}.effect"] = e.diff
            for pr in h.predictions:
                if pr.inside is not None:
                    out[f"{head}.r{pr.rung}.inside"] = float(pr.inside)
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def lines(self) -> list[str]:
        """What ``ropenope status`` prints: one line per rung pair and objective, one per
        hypothesis measure."""
        out = []
        for p in self.pairs:
            out.append(
                f"rung {p.low} -> {p.high} {p.objective}: agreement {_fmt(p.agreement)} "
                f"{_interval(p.agreement_interval)}, tau {_fmt(p.tau)} "
                f"{_interval(p.tau_interval)} ({len(p.candidates)} candidates, {p.pairs} pairs)"
            )
        for h in self.hypotheses:
            label = h.hypothesis + (f" [{h.measure}]" if h.measure else "")
            effects = ", ".join(
                f"rung {e.rung} {_fmt(e.diff)} {_interval(e.interval)}" for e in h.effects
            )
            out.append(f"{label}: effect {effects or 'none'}")
            for p in h.predictions:
                check = (
                    "not yet run"
                    if p.inside is None
                    else f"observed {_fmt(p.observed)}: {'inside' if p.inside else 'OUTSIDE'}"
                )
                out.append(
                    f"  rung {p.rung} predicted {_fmt(p.value)} [{_fmt(p.low)}, {_fmt(p.high)}] "
                    f"({p.method} from rungs {', '.join(map(str, p.from_rungs))}); {check}"
                )
        return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _interval(x: tuple[float, float] | None) -> str:
    return "[no interval]" if x is None else f"[{x[0]:.3g}, {x[1]:.3g}]"


def _origin_keys(records: Sequence[TrialRecord]) -> dict[int, str]:
    """Rung-0 trial number -> its candidate id (the key of a candidate at every rung)."""
    return {r.number: r.candidate_id for r in records if r.rung == 0}


def rung_values(agg: StudyAggregate, key_of: Callable[[CandidateSummary], str]) -> RungValues:
    """Candidate key -> score -> per-seed values, from one rung's aggregate."""
    return {key_of(c): {s: tuple(v.values) for s, v in c.scores.items()} for c in agg.candidates}


def ladder_accuracy(
    records: Sequence[TrialRecord],
    objective_names: Sequence[str],
    directions: Sequence[str],
    judge: Callable[[int, StudyAggregate], Sequence[Finding]] | None = None,
    *,
    ladder_rungs: int | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> DecisionAccuracy:
    """Decision accuracy from every run of a ladder study (all rungs). ``judge(rung,
    aggregate)`` gives the hypotheses' findings at a rung (None: no hypotheses);
    ``ladder_rungs``: how many rungs the ladder has (the next one is predicted)."""
    origins = _origin_keys(records)
    by_rung: dict[int, list[TrialRecord]] = {}
    for r in records:
        by_rung.setdefault(r.rung, []).append(r)
    aggs = {rung: aggregate(rs, objective_names, directions) for rung, rs in by_rung.items()}
    aggs = {rung: a for rung, a in sorted(aggs.items()) if a.candidates}
    notes: list[str] = []
    per_rung: dict[int, RungValues] = {}
    names: dict[str, str] = {}
    for rung, agg in aggs.items():
        numbers = {r.candidate_id: r for r in by_rung[rung] if r.state == COMPLETE}

        def key_of(c: CandidateSummary, rung: int = rung, numbers: Mapping = numbers) -> str:
            if rung == 0:
                return c.candidate_id
            origin = numbers[c.candidate_id].ladder_origin
            return origins.get(origin, f"trial-{origin}")

        per_rung[rung] = rung_values(agg, key_of)
        for c in agg.candidates:
            names.setdefault(key_of(c), c.name)
    pairs = rung_pairs(per_rung, objective_names, names=names, resamples=resamples)
    trends: list[HypothesisTrend] = []
    if judge is not None and aggs:
        findings = {rung: judge(rung, agg) for rung, agg in aggs.items()}
        last = max(aggs)
        nxt = last + 1 if ladder_rungs is not None and last + 1 < ladder_rungs else None
        trends = hypothesis_trends(findings, nxt)
    if len(aggs) < 2:
        notes.append("one rung has completed runs: no rung pair to compare yet")
    return DecisionAccuracy(tuple(aggs), tuple(pairs), tuple(trends), tuple(notes))
