"""Rank stability: would another set of seeds rank the candidates the same way?

For each objective, each candidate's runs are split into two disjoint halves of its
seeds (alternate seeds in seed order: 1st, 3rd, 5th, ... against 2nd, 4th, ...), the
candidates are ranked by their mean in each half, and Kendall's tau-b compares the two
rankings: 1 = the same order, 0 = unrelated, -1 = reversed. Candidates with fewer than
two runs of the objective cannot be split and are left out (named).

What it means: each half is an independent replication with half the seeds, so tau
estimates how reproducible a ranking from ``n/2`` seeds is; the ranking the report
shows (the mean over all ``n`` seeds) is more stable than that. With fewer than 4 seeds
a half holds a single seed: tau then says how well one seed's ranking predicts
another's, a lower bound. Layout-only objectives (KV cache, parameters) have no seed
noise: their tau is 1, or undefined where candidates tie.

Tau rests on ``pairs = k (k - 1) / 2`` candidate pairs, few with few candidates, and on
one split of few seeds; its 95% interval is a bootstrap (each candidate's runs dealt into
two disjoint halves at random and each half resampled with replacement, then ranked as
above, :data:`BOOTSTRAP` times, the 2.5 and 97.5 percentiles of tau).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracking.aggregate import StudyAggregate
from tracking.stats import kendall_tau

__all__ = ["RankStability", "rank_stability"]


@dataclass(frozen=True)
class RankStability:
    objective: str
    direction: str
    tau: float | None  # None: fewer than 2 candidates, or a half where all tie
    candidates: int  # candidates ranked
    seeds: int  # the fewest runs of a ranked candidate (each half has at least seeds // 2)
    left_out: tuple[str, ...]  # candidates with fewer than 2 runs
    interval: tuple[float, float] | None = None  # bootstrap 95% interval of tau

    @property
    def pairs(self) -> int:
        """The candidate pairs tau compares."""
        return self.candidates * (self.candidates - 1) // 2

    @property
    def meaning(self) -> str:
        if self.tau is None:
            if self.candidates < 2:
                return "fewer than 2 candidates with 2 or more seeds: nothing to rank"
            return "undefined: every candidate ties in a half"
        pairs = f" ({self.pairs} candidate pair{'s' if self.pairs != 1 else ''})"
        if self.seeds < 4:
            return "one seed per half: how well a single seed's ranking predicts another's" + pairs
        return f"rankings from {self.seeds // 2}+ seeds each agree this well" + pairs

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "direction": self.direction,
            "tau": self.tau,
            "candidates": self.candidates,
            "seeds": self.seeds,
            "left_out": list(self.left_out),
            "pairs": self.pairs,
            "interval": None if self.interval is None else list(self.interval),
            "meaning": self.meaning,
        }


def _seed_order(key: Any) -> tuple:
    return (0, key, "") if isinstance(key, int | float) else (1, 0, str(key))


BOOTSTRAP = 200  # resamples behind tau's interval


def _halves(runs: list[float]) -> tuple[float, float]:
    """The means of alternate runs (1st, 3rd, ... against 2nd, 4th, ...)."""
    return float(np.mean(runs[0::2])), float(np.mean(runs[1::2]))


def _tau(halves: list[tuple[float, float]]) -> float | None:
    value = kendall_tau([h[0] for h in halves], [h[1] for h in halves])
    return value if math.isfinite(value) else None


def _interval(per_candidate: list[list[float]], seed: int = 0) -> tuple[float, float] | None:
    """Each resample deals every candidate's runs into two disjoint halves at random, then
    resamples each half with replacement; tau of the half means. A run is never in both
    halves: drawing the runs with replacement first and then splitting would put the same
    run on both sides and push tau towards 1 (an interval above its own estimate)."""
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(BOOTSTRAP):
        halves = []
        for runs in per_candidate:
            order = rng.permutation(len(runs))
            sides = ([runs[i] for i in order[0::2]], [runs[i] for i in order[1::2]])
            a, b = (float(np.mean(rng.choice(side, size=len(side)))) for side in sides)
            halves.append((a, b))
        tau = _tau(halves)
        if tau is not None:
            taus.append(tau)
    if len(taus) < BOOTSTRAP // 2:  # mostly ties: no interval worth the name
        return None
    low, high = np.percentile(taus, [2.5, 97.5])
    return float(low), float(high)


def rank_stability(agg: StudyAggregate) -> list[RankStability]:
    """Kendall's tau between rankings from disjoint halves of the seeds, per objective,
    with its bootstrap interval."""
    out = []
    for objective, direction in zip(agg.objective_names, agg.directions, strict=False):
        per_candidate: list[list[float]] = []
        left_out, counts = [], []
        for c in agg.candidates:
            s = c.spread(objective)
            if s is None or s.n < 2:
                left_out.append(c.name)
                continue
            runs = sorted(s.by_key().items(), key=lambda kv: _seed_order(kv[0]))
            per_candidate.append([v for _, v in runs])
            counts.append(s.n)
        halves = [_halves(runs) for runs in per_candidate]
        tau = interval = None
        if len(halves) >= 2:
            tau = _tau(halves)
            interval = _interval(per_candidate) if tau is not None else None
        out.append(
            RankStability(
                objective,
                direction,
                tau,
                len(halves),
                min(counts) if counts else 0,
                tuple(left_out),
                interval,
            )
        )
    return out
