"""Scores that cannot rank: tie groups and signal-to-noise per objective. Pure (numpy).

A sweep that optimises a score on which candidates tie is a random search among them,
and a report that orders them on it orders noise. Two ways a group of candidates ties on
an objective:

- **at a bound**: an accuracy (``long_acc``, ``acc@4x``, ...) that two or more candidates
  score at 1.00 (or 0.00) on every seed; the paper sweep at the demo budget has five of
  ten candidates at ``long_acc`` 1.00;
- **inside each other's seed noise**: every pair of the group differs by at most
  :data:`TIE_Z` standard errors of the difference of their means,
  ``se = sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with each side's sample variance over seeds
  (a single-seed candidate borrows the objective's pooled seed variance). The candidates
  sorted by mean are cut into consecutive runs in which every pair ties; a candidate
  next to a run may still tie with some of its members (the Pareto front with
  uncertainty, :mod:`tracking.pareto`, uses the pairwise relation itself).

Scores computed from the layer layout (``kv_cache_bytes``, ``params``, attention FLOPs),
and any score with no seed spread in the study, have no noise to tie within: equal values
there are a true tie, not flagged.

Each group is flagged with the recorded score that would separate it: the quality score
(a task score, ``short_bpb``, ``key_token_bpb``, ``extrap_bpb@Nx``, ``bucket_bpb@Nx``) on which the most pairs of the group are
distinguishable, or, when none is, what to do instead (the graded score of the same family,
a harder task, more seeds).

Signal-to-noise per objective (after "Signal and Noise", AI2 2025): signal = the standard
deviation of the candidates' means, noise = the pooled standard deviation over seeds,
``sqrt(mean of the candidates' seed variances)`` (candidates with two or more seeds). Below
about 1 the objective cannot order the candidates; a ratio of infinity means no seed noise
was seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any, Literal, Protocol

import numpy as np

from space.names import (
    ACC_AT_T,
    KEY_TOKEN_BPB,
    LAYOUT_SCORES,
    LONG_ACC,
    LONG_ANSWER_NLL,
    SHORT_BPB,
    answer_nll_at,
    is_accuracy_score,
    is_task_score,
    multiple_of,
    split_task_score,
    task_score,
)
from tracking.stats import Spread

__all__ = [
    "TIE_Z",
    "SignalToNoise",
    "TieGroup",
    "graded_alternative",
    "pooled_noise",
    "separable",
    "signal_to_noise",
    "tie_groups",
    "tie_warning",
]

# Two candidates tie when their means differ by at most this many standard errors of the
# difference (about a 95% two-sided band for a normal difference).
TIE_Z = 2.0
_TOLERANCE = 1e-9


class ScoredCandidate(Protocol):
    """What this module reads of a candidate (``tracking.aggregate.CandidateSummary``)."""

    @property
    def name(self) -> str: ...

    @property
    def scores(self) -> Mapping[str, Spread]: ...


@dataclass(frozen=True)
class SignalToNoise:
    """One objective: the spread of the candidates' means over the spread over seeds."""

    objective: str
    signal: float  # std (ddof=1) of the candidates' means; NaN with fewer than 2
    noise: float  # pooled seed std; NaN when no candidate has 2 seeds
    candidates: int
    at_bound: int  # candidates at 0 or 1 on every seed (accuracy scores)

    @property
    def ratio(self) -> float:
        if not (math.isfinite(self.signal) and math.isfinite(self.noise)):
            return math.nan
        if self.noise == 0:
            return math.inf if self.signal > 0 else math.nan
        return self.signal / self.noise

    def ratio_text(self) -> str:
        r = self.ratio
        if math.isnan(r):
            return "-"
        return "inf (no seed noise)" if math.isinf(r) else f"{r:.2f}"

    def to_dict(self) -> dict[str, Any]:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "objective": self.objective,
            "signal": finite(self.signal),
            "noise": finite(self.noise),
            "ratio": finite(self.ratio),
            "ratio_text": self.ratio_text(),
            "candidates": self.candidates,
            "at_bound": self.at_bound,
        }


@dataclass(frozen=True)
class TieGroup:
    """Candidates ``members`` tie on ``objective``: at ``bound`` on every seed, or inside
    each other's seed noise (means ``low`` to ``high``)."""

    objective: str
    members: tuple[str, ...]
    kind: Literal["bound", "noise"]
    low: float
    high: float
    noise: float  # the objective's pooled seed std
    candidates: int  # candidates scored on the objective
    bound: float | None = None
    separated_by: str | None = None  # the recorded score that best separates the group
    separated_pairs: int = 0  # of the group's pairs, how many it tells apart

    @property
    def pairs(self) -> int:
        return len(self.members) * (len(self.members) - 1) // 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "kind": self.kind,
            "members": list(self.members),
            "bound": self.bound,
            "low": self.low,
            "high": self.high,
            "noise": self.noise if math.isfinite(self.noise) else None,
            "candidates": self.candidates,
            "separated_by": self.separated_by,
            "separated_pairs": self.separated_pairs,
            "pairs": self.pairs,
            "graded_alternative": graded_alternative(self.objective)
            if is_accuracy_score(self.objective)
            else None,
            "warning": tie_warning(self),
        }


# -- the statistics --------------------------------------------------------------------


def _present(candidates: Sequence[ScoredCandidate], score: str) -> list[tuple[str, Spread]]:
    out = []
    for c in candidates:
        s = c.scores.get(score)
        if s is not None and s.n > 0:
            out.append((c.name, s))
    return out


def at_bound(spread: Spread, score: str) -> float | None:
    """1.0 or 0.0 when an accuracy ``score`` sits at that bound on every seed, else None."""
    if not is_accuracy_score(score) or spread.n == 0:
        return None
    for bound in (1.0, 0.0):
        if all(abs(v - bound) <= _TOLERANCE for v in spread.values):
            return bound
    return None


def pooled_noise(spreads: Sequence[Spread]) -> float:
    """sqrt(mean of the seed variances) of the spreads with two or more values; NaN if none."""
    variances = [s.std**2 for s in spreads if s.n >= 2]
    return float(math.sqrt(np.mean(variances))) if variances else math.nan


def signal_to_noise(score: str, candidates: Sequence[ScoredCandidate]) -> SignalToNoise:
    """Signal (std of the candidates' means) and noise (pooled seed std) of ``score``."""
    present = _present(candidates, score)
    means = [s.mean for _, s in present]
    signal = float(np.std(means, ddof=1)) if len(means) >= 2 else math.nan
    return SignalToNoise(
        objective=score,
        signal=signal,
        noise=pooled_noise([s for _, s in present]),
        candidates=len(present),
        at_bound=sum(at_bound(s, score) is not None for _, s in present),
    )


def separable(a: Spread, b: Spread, noise: float) -> bool:
    """Do ``a`` and ``b`` differ by more than :data:`TIE_Z` standard errors of the
    difference? A side with one value borrows ``noise`` (the pooled seed std)."""

    def variance(s: Spread) -> float:
        return s.std**2 if s.n >= 2 else noise**2

    d = abs(a.mean - b.mean)
    se = math.sqrt(variance(a) / a.n + variance(b) / b.n)
    if not math.isfinite(se) or se == 0:
        return d > _TOLERANCE
    return d > TIE_Z * se


def _quality_score(name: str) -> bool:
    """Scores that measure the model (not the layout, not the hardware)."""
    return (
        is_task_score(name)
        or name in (SHORT_BPB, KEY_TOKEN_BPB)
        or any(multiple_of(name, p) is not None for p in ("extrap_bpb@", "bucket_bpb@"))
    )


def _separator(
    members: Sequence[str], objective: str, candidates: Sequence[ScoredCandidate]
) -> tuple[str | None, int]:
    """The quality score recorded for every member that tells the most pairs apart (ties
    broken by the group's signal-to-noise on it), and how many pairs; (None, 0) if none."""
    by_name = {c.name: c for c in candidates}
    group = [by_name[m] for m in members]
    names = [n for n in group[0].scores if n != objective and _quality_score(n)]
    best: tuple[int, float, str] | None = None
    for name in names:
        spreads = [c.scores.get(name) for c in group]
        if any(s is None or s.n == 0 for s in spreads):
            continue
        noise = pooled_noise([s for _, s in _present(candidates, name)])
        count = sum(separable(a, b, noise) for a, b in combinations(spreads, 2))
        ratio = signal_to_noise(name, group).ratio
        key = (count, ratio if math.isfinite(ratio) else 0.0, name)
        if count and (best is None or key[:2] > best[:2]):
            best = key
    return (best[2], best[0]) if best else (None, 0)


def tie_groups(objectives: Sequence[str], candidates: Sequence[ScoredCandidate]) -> list[TieGroup]:
    """Every group of two or more candidates that ties on one of ``objectives``."""
    out: list[TieGroup] = []
    for objective in objectives:
        present = _present(candidates, objective)
        noise = pooled_noise([s for _, s in present])
        found: list[TieGroup] = []
        for bound in (1.0, 0.0):
            members = [n for n, s in present if at_bound(s, objective) == bound]
            if len(members) >= 2:
                found.append(_group(objective, members, "bound", present, noise, bound))
        # No seed noise seen (or a layout score): equal values are a true tie, not noise.
        if objective not in LAYOUT_SCORES and math.isfinite(noise) and noise > 0:
            covered = [set(g.members) for g in found]
            for members in _noise_runs(present, noise):
                if not any(set(members) <= c for c in covered):
                    found.append(_group(objective, members, "noise", present, noise))
        for g in found:
            sep, count = _separator(g.members, objective, candidates)
            out.append(replace(g, separated_by=sep, separated_pairs=count))
    return out


def _group(
    objective: str,
    members: Sequence[str],
    kind: Literal["bound", "noise"],
    present: Sequence[tuple[str, Spread]],
    noise: float,
    bound: float | None = None,
) -> TieGroup:
    means = [s.mean for n, s in present if n in members]
    return TieGroup(
        objective=objective,
        members=tuple(members),
        kind=kind,
        low=float(min(means)),
        high=float(max(means)),
        noise=noise,
        candidates=len(present),
        bound=bound,
    )


def _noise_runs(present: Sequence[tuple[str, Spread]], noise: float) -> list[list[str]]:
    """The candidates sorted by mean, cut into consecutive runs in which every pair ties
    (each run as long as it can be, from the lowest mean up); runs of one are dropped."""
    ordered = sorted(present, key=lambda p: (p[1].mean, p[0]))
    runs: list[list[str]] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and not any(
            separable(ordered[k][1], ordered[j + 1][1], noise) for k in range(i, j + 1)
        ):
            j += 1
        if j > i:
            runs.append([n for n, _ in ordered[i : j + 1]])
        i = j + 1
    return runs


# -- the words -------------------------------------------------------------------------


def graded_alternative(objective: str) -> str:
    """The graded score of the same family and length: ``long_acc`` -> ``long_answer_nll``,
    ``acc@4x`` / ``token_acc@4x`` -> ``answer_nll@4x``, ``vartrack/long_acc`` ->
    ``vartrack/long_answer_nll``, ``acc_at_T`` -> ``answer_nll@1x``."""
    task, base = split_task_score(objective)
    if base == LONG_ACC:
        graded = LONG_ANSWER_NLL
    elif base == ACC_AT_T:
        graded = answer_nll_at(1)
    else:
        m = multiple_of(base, "acc@")
        if m is None:
            m = multiple_of(base, "token_acc@")
        graded = answer_nll_at(m) if m is not None else LONG_ANSWER_NLL
    return graded if task is None else task_score(task, graded)


def tie_warning(g: TieGroup) -> str:
    """One line: which candidates tie on which objective, and what would separate them."""
    names = ", ".join(g.members)
    k = len(g.members)
    if g.kind == "bound":
        head = (
            f"objective {g.objective} is saturated: {k} of {g.candidates} candidates "
            f"tie at {g.bound:.2f} on every seed ({names}), so it cannot rank them"
        )
    else:
        head = (
            f"objective {g.objective}: {k} of {g.candidates} candidates are inside each "
            f"other's seed noise ({names}: means {g.low:.4g} to {g.high:.4g}, seed std "
            f"{g.noise:.2g}), so their order on it is noise"
        )
    if g.separated_by is not None:
        tail = (
            f"{g.separated_by} separates {g.separated_pairs} of their {g.pairs} pairs"
            f"{'' if g.separated_pairs == g.pairs else ' (more seeds for the rest)'}"
        )
    elif g.kind == "noise":
        tail = "no recorded score separates them: more seeds, or a harder task"
    else:
        tail = "no recorded score separates them"
    if is_accuracy_score(g.objective):
        graded = graded_alternative(g.objective)
        if g.bound == 0.0:
            tail += (
                f"; use the graded score {graded} (minimize), a larger training budget, "
                "an easier task or shorter score.lengths"
            )
        else:
            tail += (
                f"; use the graded score {graded} (minimize), a harder task (raise its "
                "difficulty parameter, space.tasks.DIFFICULTY) or longer score.lengths"
            )
    return f"{head}; {tail}"
