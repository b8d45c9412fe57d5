"""Adaptive seeds: which candidates need one more seed, and when a hypothesis is done.

The procedure (``study.repeats: {min: m, max: M}``): every candidate is trained with the
seeds ``train.seed + 0 .. m-1`` first; then, one round at a time, every candidate that
takes part in a still-undecided hypothesis gets the next seed, until each hypothesis is
decided or its candidates have ``M`` seeds. A hypothesis is looked at once per round,
when each of its candidates has the round's seeds ``train.seed + 0 .. n-1``
(``n = m, m+1, .., M``: ``K = M - m + 1`` looks at most), at the level its error budget
gives one look (:class:`tracking.stats.ErrorBudget`: confidence split evenly over the K
looks). A hypothesis decided at a look stays decided: seeds added later for other
hypotheses do not reopen it.

:func:`plan_seeds` is pure and stateless: it replays the looks from the per-seed records
(looks 1, 2, ... on the first m, m+1, ... seeds), so calling it again after any change
gives the same decisions, and a look is never taken twice. It runs on records alone (no
Optuna, no Ray): the sweep driver asks it after each round which seeds to train next.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from space.hypotheses import Hypothesis
from tracking.aggregate import CandidateSummary, StudyAggregate, aggregate
from tracking.hypotheses import Finding, ItemsOf, evaluate_hypothesis
from tracking.records import TrialRecord
from tracking.sides import LayersOf, select
from tracking.stats import Verdict, t_critical

__all__ = [
    "SETTLED",
    "HypothesisState",
    "SeedPlan",
    "SeedRequest",
    "format_open_hypotheses",
    "futility",
    "plan_for_study",
    "plan_seeds",
]

DECIDED = "decided"  # supported or contradicted at a look: no more seeds for it
OPEN = "open"  # undecided at its last look: its candidates get the next seed
WAITING = "waiting"  # a seed it needs is still training
EXHAUSTED = "exhausted"  # undecided at the last look (max seeds)
BLOCKED = "blocked"  # cannot be judged (a side selects nothing, a score is missing, ...)
FUTILE = "futile"  # undecided, and more seeds up to max would not decide it: none bought
SETTLED = (DECIDED, EXHAUSTED, BLOCKED, FUTILE)


@dataclass(frozen=True)
class SeedRequest:
    """Train ``candidate`` (its recorded knobs) with ``seeds`` next."""

    candidate_id: str
    name: str
    knobs: dict[str, Any]
    seeds: tuple[int, ...]
    hypotheses: tuple[str, ...]  # the open hypotheses that ask for it

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate_id": self.candidate_id,
            "name": self.name,
            "knobs": dict(self.knobs),
            "seeds": list(self.seeds),
            "hypotheses": list(self.hypotheses),
        }


@dataclass(frozen=True)
class HypothesisState:
    """Where one hypothesis stands: its finding at its latest look (None before the
    first), the look (1-based, of ``looks``), and what it asks for next."""

    name: str
    state: str  # DECIDED, OPEN, WAITING, EXHAUSTED, BLOCKED
    finding: Finding | None
    look: int
    looks: int
    seeds_per_candidate: int
    candidates: tuple[str, ...]
    requests: tuple[SeedRequest, ...] = ()
    runs_left: int = 0  # most runs it can still ask for, up to max seeds
    problem: str | None = None

    @property
    def verdict(self) -> Verdict:
        return self.finding.verdict if self.finding is not None else Verdict.UNDECIDED

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "verdict": self.verdict.value,
            "look": self.look,
            "looks": self.looks,
            "seeds_per_candidate": self.seeds_per_candidate,
            "candidates": list(self.candidates),
            "interval": None
            if self.finding is None or self.finding.interval is None
            else list(self.finding.interval),
            "next_runs": sum(len(r.seeds) for r in self.requests),
            "runs_left": self.runs_left,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class SeedPlan:
    """Every hypothesis's state and the seeds the next round trains (one request per
    candidate, whichever hypotheses ask for it)."""

    hypotheses: tuple[HypothesisState, ...]
    requests: tuple[SeedRequest, ...]

    @property
    def done(self) -> bool:
        """Nothing left to train or to wait for."""
        return all(h.state in SETTLED for h in self.hypotheses)

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "hypotheses": [h.to_dict() for h in self.hypotheses],
            "requests": [r.to_dict() for r in self.requests],
        }


def plan_seeds(
    hypotheses: Sequence[Hypothesis],
    records: Sequence[TrialRecord] | StudyAggregate,
    layers_of: LayersOf,
    *,
    repeats_min: int,
    repeats_max: int,
    base_seed: int = 0,
    items: ItemsOf | None = None,
) -> SeedPlan:
    """Replay the looks of every hypothesis on ``records`` and say which seeds the next
    round trains. See the module docstring for the procedure; ``items``
    (:func:`tracking.hypotheses.item_counts`) gives accuracy quantities their
    item-level variance floor."""
    if not 1 <= repeats_min <= repeats_max:
        raise ValueError(f"need 1 <= min <= max seeds, got {repeats_min}..{repeats_max}")
    agg = records if isinstance(records, StudyAggregate) else aggregate(records)
    everyone = (*agg.candidates, *agg.without_complete)
    looks = repeats_max - repeats_min + 1
    states = [
        _replay(h, agg, everyone, layers_of, repeats_min, looks, base_seed, items)
        for h in hypotheses
    ]
    merged: dict[str, SeedRequest] = {}
    for h in states:
        for r in h.requests:
            old = merged.get(r.candidate_id)
            if old is None:
                merged[r.candidate_id] = r
            else:
                seeds = tuple(sorted(set(old.seeds) | set(r.seeds)))
                merged[r.candidate_id] = SeedRequest(
                    r.candidate_id, r.name, r.knobs, seeds, (*old.hypotheses, *r.hypotheses)
                )
    return SeedPlan(tuple(states), tuple(merged.values()))


def _replay(
    h: Hypothesis,
    agg: StudyAggregate,
    everyone: Sequence[CandidateSummary],
    layers_of: LayersOf,
    repeats_min: int,
    looks: int,
    base_seed: int,
    items: ItemsOf | None = None,
) -> HypothesisState:
    chosen: dict[str, CandidateSummary] = {}
    for i, m in enumerate(h.measures):
        path = f"hypotheses.{h.name}" + (f".measures.{i}" if len(h.measures) > 1 else "")
        for which in ("a", "b"):
            found, problem = select(getattr(m, which), agg, layers_of, f"{path}.{which}")
            if problem:
                return HypothesisState(h.name, BLOCKED, None, 0, looks, 0, (), problem=problem)
            chosen.update({c.candidate_id: c for c in found})
    # The candidates as the whole study knows them (seeds still training included).
    by_id = {c.candidate_id: c for c in everyone}
    members = [by_id[cid] for cid in chosen]
    names = tuple(c.name for c in members)
    finding: Finding | None = None
    for look in range(1, looks + 1):
        n = repeats_min + look - 1
        round_seeds = [base_seed + i for i in range(n)]
        missing = {
            c.candidate_id: [s for s in round_seeds if s not in c.spent_seeds] for c in members
        }
        if any(missing.values()):
            busy = any(c.pending_seeds for c in members)
            requests = tuple(
                SeedRequest(c.candidate_id, c.name, dict(c.knobs), tuple(missing[c.candidate_id]), (h.name,))
                for c in members
                if missing[c.candidate_id] and not c.pending_seeds
            )  # fmt: skip
            state = WAITING if busy else OPEN
            left = sum(repeats_min + looks - 1 - len(c.spent_seeds) for c in members)
            return HypothesisState(
                h.name, state, finding, look - 1, looks, n - 1, names, requests, max(left, 0)
            )
        finding = evaluate_hypothesis(
            h, agg, layers_of, looks=looks, seeds=round_seeds, items=items
        )
        if finding.verdict is not Verdict.UNDECIDED:
            return HypothesisState(h.name, DECIDED, finding, look, looks, n, names)
        if finding.problems and len(finding.problems) == len(finding.measures):
            problem = finding.problems[0]
            return HypothesisState(h.name, BLOCKED, finding, look, looks, n, names, problem=problem)
        n_max = repeats_min + looks - 1
        if look < looks:
            why = futility(finding, n, n_max)
            if why is not None:
                return HypothesisState(h.name, FUTILE, finding, look, looks, n, names, problem=why)
    n_max = repeats_min + looks - 1
    return HypothesisState(h.name, EXHAUSTED, finding, looks, looks, n_max, names)


def futility(finding: Finding, n: int, n_max: int) -> str | None:
    """Why buying seeds up to ``n_max`` would not decide an undecided ``finding`` judged
    on ``n`` seeds per candidate, or None. Each measure must be futile:

    - its sides are tied at a bound: every run of both sides has the same value, 0 or 1
      (an accuracy every seed gets right, or none does): more seeds repeat it;
    - its interval can no longer exclude the margin at ``max``: with the spread as it is
      and the difference even one standard error further from the margin than now, the
      interval at ``n_max`` seeds (its standard error shrunk by ``sqrt(n / n_max)``, its
      degrees of freedom grown in proportion, the same level) would still hold the
      margin;
    - it is invalid (a side does not learn the task: seeds do not raise the budget).

    A measure with no interval yet (fewer than 2 runs) or one of zero width is not
    futile. Stopping for futility only ever leaves a hypothesis undecided, so it never
    raises the chance of a wrong verdict; it costs power where the estimate now is far
    below the true difference. The extra standard error keeps that cost small
    (bench/seed_error_rate.py, min 3 max 8, 200 studies: a 2-sd effect supported in
    0.775 of studies against 0.56 without it and 0.805 with no futility stop)."""
    reasons = []
    for m in finding.measures:
        if m.verdict is Verdict.INVALID:
            reasons.append("invalid")
            continue
        c = m.comparison
        values = set((m.a.values if m.a else ()) + (m.b.values if m.b else ()))
        if c is not None and len(values) == 1 and values <= {0.0, 1.0}:
            reasons.append(f"both sides tied at {values.pop():g} on every run")
            continue
        if c is None or m.margin is None or not c.se > 0 or c.kind == "exact":
            return None
        df = c.df * (n_max - 1) / max(n - 1, 1)
        half = t_critical(df, c.alpha) * c.se * math.sqrt(n / n_max)
        if abs(c.diff - m.margin) + c.se > half:
            return None
        reasons.append(
            f"at {n_max} seeds the interval would still hold the margin "
            f"(|{c.diff:.3g} - {m.margin:.3g}| + se {c.se:.3g} <= {half:.3g})"
        )
    if not reasons:
        return None
    label = [
        f"{m.label}: {r}" if m.label else r for m, r in zip(finding.measures, reasons, strict=True)
    ]
    return "futile: " + "; ".join(label)


def plan_for_study(study: Any, config: Any) -> SeedPlan | None:
    """:func:`plan_seeds` on an ``optuna.Study`` swept with ``config`` (its
    :class:`space.schema.SweepConfig`); None unless the sweep uses adaptive seeds. What
    the sweep driver asks after each round, and ``ropenope status`` shows."""
    if config is None:
        return None
    from tracking.decision_plan import decision_plan
    from tracking.hypotheses import item_counts
    from tracking.records import study_records  # the one read of the study
    from tracking.sides import candidate_layers

    # The looks planned when the study was created: a max raised on resume adds none.
    decisions = decision_plan(study.user_attrs, config)
    if not config.study.adaptive or not decisions.adaptive:
        return None
    read = study_records(study)
    return plan_seeds(
        config.hypotheses,
        aggregate(read.records, read.objective_names, read.directions),
        candidate_layers(config),
        repeats_min=decisions.repeats_min,
        repeats_max=decisions.repeats_max,
        base_seed=config.train.seed,
        items=item_counts(config),
    )


def format_open_hypotheses(plan: SeedPlan) -> list[str]:
    """One line per hypothesis not yet decided, for ``ropenope status``: its current
    interval and how many more runs it asks for."""
    lines = []
    for h in plan.hypotheses:
        if h.state == DECIDED:
            continue
        head = f"{h.name}: {h.state}"
        if h.look:
            head += f" at look {h.look}/{h.looks} ({h.seeds_per_candidate} seeds)"
        interval = h.finding.interval if h.finding is not None else None
        if interval is not None:
            head += f", interval [{interval[0]:.3g}, {interval[1]:.3g}]"
        if h.state == OPEN:
            runs = sum(len(r.seeds) for r in h.requests)
            who = ", ".join(r.name for r in h.requests)
            head += f"; asks {runs} more run{'s' if runs != 1 else ''} ({who})"
            head += f", at most {h.runs_left} up to max seeds"
        elif h.state == WAITING:
            head += "; waiting for seeds in training"
        elif h.state == EXHAUSTED:
            head += "; undecided at max seeds"
        elif h.state == FUTILE:
            head += f"; no more seeds ({h.problem})"
        elif h.problem:
            head += f"; {h.problem}"
        lines.append(head)
    return lines
