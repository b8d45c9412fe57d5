"""Whether what a study found on its trained task families transfers to its held-out ones.

A study with ``score.held_out`` scores families it never trained on and records the mean
over them under ``held_out_<score>`` (``held_out_long_acc`` ...; :mod:`space.names`). Two
questions are answered here, for the report, ``report --json`` and ``ropenope status``:

- does the ranking transfer: Kendall's tau between the candidates' means on each
  headline score (``long_acc``, ``long_answer_nll``) and on its held-out counterpart;
- does each decided effect transfer: for every measure of a supported or contradicted
  hypothesis that reads a retrieval score, the same comparison (same sides, same
  competence gate) on the held-out counterpart of that score, and whether the difference
  ``a - b`` has the same sign there. A measure with no held-out counterpart (a loss, a
  cost, an attention mass) is listed as such, never counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from space.hypotheses import Hypothesis, Measure, Quantity
from space.names import (
    LONG_ACC,
    LONG_ANSWER_NLL,
    TASK_SCORE_PREFIXES,
    TASK_SCORES,
    held_out_score,
    multiple_of,
    split_held_out,
    split_task_score,
)
from tracking.aggregate import StudyAggregate
from tracking.hypotheses import Finding, ItemsOf, evaluate_hypothesis
from tracking.sides import LayersOf
from tracking.stats import Verdict, kendall_tau

__all__ = [
    "EffectTransfer",
    "HeldOutTransfer",
    "RankTransfer",
    "held_out_quantity",
    "held_out_transfer",
]

# The headline scores whose ranking is compared with their held-out counterparts.
HEADLINES = (LONG_ACC, LONG_ANSWER_NLL)
DECIDED = (Verdict.SUPPORTED, Verdict.CONTRADICTED)


@dataclass(frozen=True)
class RankTransfer:
    """The candidates' means on a trained headline score and on its held-out counterpart."""

    trained: str
    held_out: str
    candidates: tuple[str, ...]
    trained_means: tuple[float, ...]
    held_out_means: tuple[float, ...]
    tau: float  # Kendall's tau-b; NaN with fewer than two candidates or all tied

    def to_dict(self) -> dict[str, Any]:
        return {
            "trained": self.trained,
            "held_out": self.held_out,
            "kendall_tau": _finite(self.tau),
            "candidates": [
                {"name": n, "trained": _finite(t), "held_out": _finite(h)}
                for n, t, h in zip(
                    self.candidates, self.trained_means, self.held_out_means, strict=True
                )
            ],
        }


@dataclass(frozen=True)
class EffectTransfer:
    """One measure of a decided hypothesis, on the trained families and the held-out ones."""

    key: str  # the hypothesis
    label: str | None  # the measure's label
    verdict: str  # the hypothesis's verdict on the trained families
    quantity: str
    trained_diff: float  # a - b on the trained families
    held_out_quantity: str | None = None
    held_out_diff: float | None = None
    reason: str = ""  # why there is no held-out difference

    @property
    def same_sign(self) -> bool | None:
        """Whether a - b has the same sign on the held-out families (None: not measured)."""
        if self.held_out_diff is None or not math.isfinite(self.held_out_diff):
            return None
        if not math.isfinite(self.trained_diff):
            return None
        return math.copysign(1.0, self.trained_diff) == math.copysign(1.0, self.held_out_diff)

    def describe(self) -> str:
        name = f"`{self.key}`" + (f" ({self.label})" if self.label else "")
        if self.same_sign is None:
            return f"{name}: not measured on the held-out families ({self.reason})"
        word = "same sign" if self.same_sign else "OPPOSITE sign"
        return (
            f"{name} {self.verdict}: {word} on the held-out families "
            f"({self.quantity} a - b {self.trained_diff:+.3g}; "
            f"{self.held_out_quantity} {self.held_out_diff:+.3g})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "hypothesis": self.key,
            "label": self.label,
            "verdict": self.verdict,
            "quantity": self.quantity,
            "trained_difference": _finite(self.trained_diff),
            "held_out_quantity": self.held_out_quantity,
            "held_out_difference": None
            if self.held_out_diff is None
            else _finite(self.held_out_diff),
            "same_sign": self.same_sign,
            "reason": self.reason or None,
        }


@dataclass(frozen=True)
class HeldOutTransfer:
    """Rank and effect transfer to the held-out families of one study."""

    families: tuple[str, ...]  # the held-out families (empty when not known)
    ranks: tuple[RankTransfer, ...]
    effects: tuple[EffectTransfer, ...]

    @property
    def agreement(self) -> tuple[int, int]:
        """(effects with the same sign on the held-out families, effects measured there)."""
        measured = [e.same_sign for e in self.effects if e.same_sign is not None]
        return sum(measured), len(measured)

    def lines(self) -> list[str]:
        """The transfer in a few sentences (report bullets, status lines)."""
        which = ", ".join(self.families) if self.families else "the held-out families"
        out = []
        for r in self.ranks:
            tau = "n/a (fewer than two candidates, or all tied)"
            if math.isfinite(r.tau):
                tau = f"{r.tau:+.2f}"
            out.append(
                f"rank transfer {r.trained} -> {r.held_out} ({which}): Kendall's tau {tau} "
                f"over {len(r.candidates)} candidates"
            )
        same, measured = self.agreement
        if self.effects:
            out.append(
                f"decided effects with the same sign on {which}: {same} of {measured} measured"
                + (
                    f" ({len(self.effects) - measured} without a held-out counterpart)"
                    if measured < len(self.effects)
                    else ""
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        same, measured = self.agreement
        return {
            "families": list(self.families),
            "ranks": [r.to_dict() for r in self.ranks],
            "effects": [e.to_dict() for e in self.effects],
            "effects_same_sign": same,
            "effects_measured": measured,
        }


def held_out_quantity(q: Quantity) -> Quantity | None:
    """The held-out counterpart of a quantity: a retrieval score (bare or of one family)
    becomes the held-out mean of the same score; a difference of two such, their
    difference; anything else (a loss, a cost, a mass, a mean over lengths) has none."""
    if q.diff is not None:
        left, right = (held_out_quantity(x) for x in q.diff)
        return None if left is None or right is None else Quantity(diff=(left, right))
    if q.score is None or split_held_out(q.score) is not None:
        return None
    _, base = split_task_score(q.score)
    if base in TASK_SCORES or any(multiple_of(base, p) is not None for p in TASK_SCORE_PREFIXES):
        return Quantity(score=held_out_score(base))
    return None


def _held_out_measure(m: Measure) -> Measure | None:
    """``m`` on the held-out counterparts of its quantities, with the trained measure's
    competence gate (so the same runs are compared)."""
    update: dict[str, Any] = {"gate": m.effective_gate() or False}
    if m.quantity is not None:
        q = held_out_quantity(m.quantity)
        if q is None:
            return None
        update["quantity"] = q
    for side in ("a", "b"):
        own = getattr(m, side).quantity
        if own is not None:
            q = held_out_quantity(own)
            if q is None:
                return None
            update[side] = getattr(m, side).model_copy(update={"quantity": q})
    return m.model_copy(update=update)


def _effects(
    hypotheses: Sequence[Hypothesis],
    findings: Sequence[Finding],
    agg: StudyAggregate,
    layers_of: LayersOf,
    items: ItemsOf | None,
) -> list[EffectTransfer]:
    by_name = {h.name: h for h in hypotheses}
    out = []
    for f in findings:
        h = by_name.get(f.key)
        if h is None or f.verdict not in DECIDED:
            continue
        for m, result in zip(h.measures, f.measures, strict=False):
            if result.comparison is None:
                continue
            trained = EffectTransfer(
                key=f.key,
                label=m.label,
                verdict=f.verdict.value,
                quantity=m.quantity_of("a").describe(),
                trained_diff=result.comparison.diff,
            )
            held = _held_out_measure(m)
            if held is None:
                out.append(_with(trained, reason="no held-out counterpart of this quantity"))
                continue
            one = Hypothesis(name=h.name, statement=h.statement, measures=(held,))
            judged = evaluate_hypothesis(one, agg, layers_of, items=items).measures[0]
            described = held.quantity_of("a").describe()
            if judged.comparison is None:
                reason = judged.problem or "no comparison on the held-out families"
                out.append(_with(trained, held_out_quantity=described, reason=reason))
                continue
            out.append(
                _with(trained, held_out_quantity=described, held_out_diff=judged.comparison.diff)
            )
    return out


def _with(e: EffectTransfer, **changes: Any) -> EffectTransfer:
    return EffectTransfer(**{**e.__dict__, **changes})


def _ranks(agg: StudyAggregate) -> list[RankTransfer]:
    out = []
    for name in HEADLINES:
        held = held_out_score(name)
        rows = []
        for c in agg.candidates:
            t, h = c.spread(name), c.spread(held)
            if t is None or h is None or not t.n or not h.n:
                continue
            if math.isfinite(t.mean) and math.isfinite(h.mean):
                rows.append((c.name, t.mean, h.mean))
        if rows:
            names, trained, held_out = zip(*rows, strict=True)
            out.append(
                RankTransfer(
                    trained=name,
                    held_out=held,
                    candidates=tuple(names),
                    trained_means=tuple(trained),
                    held_out_means=tuple(held_out),
                    tau=kendall_tau(list(trained), list(held_out)),
                )
            )
    return out


def held_out_transfer(
    agg: StudyAggregate,
    *,
    families: Sequence[str] = (),
    hypotheses: Sequence[Hypothesis] = (),
    findings: Sequence[Finding] = (),
    layers_of: LayersOf | None = None,
    items: ItemsOf | None = None,
) -> HeldOutTransfer | None:
    """Rank and effect transfer to the held-out families of ``agg``; None for a study
    whose runs record no held-out score."""
    if not any(split_held_out(name) for c in agg.candidates for name in c.scores):
        return None
    effects = _effects(hypotheses, findings, agg, layers_of or (lambda c: None), items)
    return HeldOutTransfer(tuple(families), tuple(_ranks(agg)), tuple(effects))


def held_out_families(config: Any | None) -> tuple[str, ...]:
    """The sweep file's ``score.held_out`` (empty without a sweep file)."""
    return tuple(config.score.held_out) if config is not None else ()


def _finite(x: float) -> float | None:
    return x if isinstance(x, int | float) and math.isfinite(x) else None
