"""Hypotheses (:mod:`space.hypotheses`) evaluated on a study's aggregate.

For each hypothesis and each of its measures: select the candidates of side ``a`` and
side ``b`` (preset, else the candidates whose layers fit ``where``), read the quantity
per run, leave out the runs the competence gate rejects (naming them), and compare the
sides with the test the hypothesis asks for (:mod:`tracking.stats`), at the level the
error budget gives one measure at one look. The measures' verdicts combine into the
hypothesis's: supported when one supports and none contradicts, contradicted in the
mirror case, undecided otherwise.

What needs the study is checked here, not in the schema: a selector that matches no
candidate, a score no run reports, a paired test over candidates without common seeds.
Each is a *finding*, not an exception: the measure is undecided and its ``problem``
names the hypothesis and the field (``hypotheses.<name>.a.preset: ...``), because a
study still running, or the shipped paper hypotheses applied to a study that never ran
one of the paper's variants, lack them legitimately.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from space.hypotheses import Hypothesis, Measure, Quantity
from space.units import human_bytes, is_bytes_score
from tracking.aggregate import CandidateSummary, StudyAggregate
from tracking.sides import LayersOf, run_values, select
from tracking.stats import (
    Comparison,
    ErrorBudget,
    Spread,
    Verdict,
    compare_exact,
    compare_independent,
    compare_paired,
    decide,
)

__all__ = ["Finding", "MeasureResult", "evaluate", "evaluate_hypothesis"]


@dataclass(frozen=True)
class MeasureResult:
    """One comparison of a hypothesis, as judged."""

    label: str | None
    verdict: Verdict
    comparison: Comparison | None  # a - b, whatever the direction
    margin: float | None
    direction: str
    a: Spread | None = None
    b: Spread | None = None
    excluded: tuple[str, ...] = ()  # runs the competence gate left out, named
    problem: str | None = None  # what kept it from being judged, with the field path
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "label": self.label,
            "verdict": self.verdict.value,
            "interval": None if c is None else [_finite(c.low), _finite(c.high)],
            "difference": None if c is None else _finite(c.diff),
            "margin": None if self.margin is None else _finite(self.margin),
            "direction": self.direction,
            "test": None if c is None else c.kind,
            "confidence": None if c is None else 1.0 - c.alpha,
            "a": None if self.a is None else self.a.to_dict(),
            "b": None if self.b is None else self.b.to_dict(),
            "excluded": list(self.excluded),
            "problem": self.problem,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Finding:
    """A hypothesis judged on a study: the verdict, the measures behind it, the rule."""

    key: str  # the hypothesis's name
    claim: str  # its statement
    verdict: Verdict
    detail: str
    rule: str
    measures: tuple[MeasureResult, ...] = ()

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(m.problem for m in self.measures if m.problem)

    @property
    def excluded(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(x for m in self.measures for x in m.excluded))

    @property
    def interval(self) -> tuple[float, float] | None:
        """The interval of the measure that decided (else of the first judged one)."""
        judged = [m for m in self.measures if m.comparison is not None]
        deciding = [m for m in judged if m.verdict is self.verdict] or judged
        if not deciding:
            return None
        c = deciding[0].comparison
        return (c.low, c.high)

    def to_dict(self) -> dict[str, Any]:
        interval = self.interval
        return {
            "key": self.key,
            "claim": self.claim,
            "verdict": self.verdict.value,
            "interval": None if interval is None else [_finite(x) for x in interval],
            "rule": self.rule,
            "detail": self.detail,
            "excluded": list(self.excluded),
            "problems": list(self.problems),
            "measures": [m.to_dict() for m in self.measures],
        }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:{spec}}"


# -- judging ---------------------------------------------------------------------------


def _side_values(
    m: Measure,
    which: str,
    chosen: list[CandidateSummary],
    layers_of: LayersOf,
    seeds: Collection[Any] | None,
    path: str,
) -> tuple[Spread | None, list[str], str | None]:
    """One side's runs (pooled over its candidates), the runs the gate left out, or a
    problem. ``seeds`` restricts the runs to those keys (a look of adaptive seeds)."""
    q = m.quantity_of(which)
    side = getattr(m, which)
    gate = m.effective_gate()
    keys: list[Any] = []
    values: list[float] = []
    excluded: list[str] = []
    for c in chosen:
        s, err = run_values(q, c, layers_of(c), side)
        if s is None:
            field_name = "quantity" if side.quantity is None else f"{which}.quantity"
            return None, excluded, f"{path}.{field_name}: {err}"
        if seeds is not None:
            s = s.only(seeds)
        learned = s.by_key()
        if gate is not None:
            at_t = (c.spread(gate.score) or Spread(())).by_key()
            for k in list(learned):
                v = at_t.get(k)
                if v is None or not v >= gate.min:
                    got = "not reported" if v is None else _fmt(v, ".2f")
                    excluded.append(f"{c.name} seed {k} ({gate.score} {got})")
                    del learned[k]
        for k, v in learned.items():
            keys.append(k if len(chosen) == 1 else (c.name, k))
            values.append(v)
    return Spread(tuple(values), tuple(keys)), excluded, None


def _judge(
    h: Hypothesis,
    m: Measure,
    index: int,
    agg: StudyAggregate,
    layers_of: LayersOf,
    budget: ErrorBudget,
    seeds: Collection[Any] | None,
) -> MeasureResult:
    path = f"hypotheses.{h.name}" + (f".measures.{index}" if len(h.measures) > 1 else "")
    undecided = Verdict.UNDECIDED

    def stop(problem: str, **kw: Any) -> MeasureResult:
        return MeasureResult(m.label, undecided, None, None, m.direction, problem=problem,
                             detail=problem.split(": ", 1)[-1], **kw)  # fmt: skip

    picked = {}
    for which in ("a", "b"):
        chosen, problem = select(getattr(m, which), agg, layers_of, f"{path}.{which}")
        if problem:
            return stop(problem)
        picked[which] = chosen
    sa, ex_a, problem = _side_values(m, "a", picked["a"], layers_of, seeds, path)
    if problem:
        return stop(problem)
    sb, ex_b, problem = _side_values(m, "b", picked["b"], layers_of, seeds, path)
    if problem:
        return stop(problem)
    excluded = tuple(dict.fromkeys(ex_a + ex_b))
    names = {w: _side_name(m, w, picked[w]) for w in ("a", "b")}
    same = [c.candidate_id for c in picked["a"]] == [c.candidate_id for c in picked["b"]]
    if m.margin.relative_to is None:
        margin = m.margin.value
    else:
        of = sa if m.margin.relative_to == "a" else sb
        margin = m.margin.value * of.mean if of.n else math.nan
    alpha = budget.per_test(len(h.measures))

    gate = m.effective_gate()
    learned = f" that learned the task at T ({gate.score} >= {gate.min:g})" if gate else ""
    if m.test == "exact":
        c = compare_exact(sa, sb)
    elif m.test == "paired":
        if not same and sa.n and sb.n and not set(sa.keys) & set(sb.keys):
            return stop(
                f"{path}.test: paired by seed, but {names['a']} and {names['b']} "
                "have no seed in common",
                a=sa, b=sb, excluded=excluded,
            )  # fmt: skip
        c = compare_paired(sa, sb, alpha)
    else:
        c = compare_independent(sa, sb, alpha)
    if c is None:
        verdict = undecided
        if gate is not None and excluded and (sa.n == 0 or sb.n == 0):
            who = names["a"] if sa.n == 0 else names["b"]
            why = (
                f"{who} has no run{learned}: it does not retrieve at T, so behaviour past T "
                "cannot be judged (undecided)"
            )
        elif m.test == "paired":
            why = f"fewer than 2 runs on a side{learned} to pair by seed, no interval (undecided)"
        else:
            why = f"fewer than 2 runs on a side{learned}, no interval (undecided)"
    else:
        verdict = _decide(c, margin, m.direction)
        why = None
    detail = _detail(m, names, sa, sb, c, margin, verdict, why, excluded)
    return MeasureResult(m.label, verdict, c, margin, m.direction, sa, sb, excluded, None, detail)


def _decide(c: Comparison, margin: float, direction: str) -> Verdict:
    """``greater``: a - b > margin; ``less``: a - b < margin, i.e. b - a > -margin."""
    if not math.isfinite(margin):
        return Verdict.UNDECIDED
    if direction == "greater":
        return decide(c, margin)
    return decide(c.flipped(), -margin)


def _side_name(m: Measure, which: str, chosen: Sequence[CandidateSummary]) -> str:
    name = "+".join(c.name for c in chosen)
    layers = getattr(m, which).layers
    if layers is not None and _reads_mass(m.quantity_of(which)):
        name += f" [{layers.describe()}]"
    return name


def _reads_mass(q: Quantity) -> bool:
    return q.mass is not None or (q.diff is not None and any(_reads_mass(x) for x in q.diff))


def _describe(name: str, q: Quantity, s: Spread) -> str:
    what = q.describe()
    if s.n == 0:
        return f"{name} {what}: no run"
    if q.score is not None and is_bytes_score(q.score):
        spread = f" ± {human_bytes(s.std)}" if s.n > 1 and s.std > 0 else ""
        return f"{name} {what} {human_bytes(s.mean)}{spread} (n={s.n})"
    if s.n == 1:
        return f"{name} {what} {s.format()}"
    return f"{name} {what} {s.format(range_=True)} (n={s.n})"


def _detail(
    m: Measure,
    names: Mapping[str, str],
    sa: Spread,
    sb: Spread,
    c: Comparison | None,
    margin: float,
    verdict: Verdict,
    why: str | None,
    excluded: Sequence[str],
) -> str:
    q_a, q_b = m.quantity_of("a"), m.quantity_of("b")
    parts = [f"{_describe(names['a'], q_a, sa)} vs {_describe(names['b'], q_b, sb)}"]
    if excluded:
        parts.append(f"left out by the competence gate: {', '.join(excluded)}")
    sign = ">" if m.direction == "greater" else "<"
    if c is None:
        parts.append(why or "no interval (undecided)")
    else:
        what = "a - b"
        if c.kind == "exact":
            ratio = f", ratio {sa.mean / sb.mean:.3g}" if sb.mean else ""
            in_bytes = is_bytes_score(q_a.score or "")
            diff = human_bytes(c.diff) if in_bytes else _fmt(c.diff, "+.3g")
            parts.append(f"{what} {diff}{ratio} (computed from the layer layout, no seed noise)")
        else:
            kind = "paired by seed" if c.paired else "Welch"
            level = f"{100 * (1 - c.alpha):.3g}%"
            parts.append(
                f"{what} {_fmt(c.diff, '+.3g')}, {level} CI [{_fmt(c.low)}, {_fmt(c.high)}] "
                f"({kind})"
            )
            if c.se == 0 and c.diff == margin:
                parts.append("both sides identical with no spread: the task does not separate them")
        bound = human_bytes(margin) if is_bytes_score(q_a.score or "") else _fmt(margin)
        parts.append(f"claim a - b {sign} {bound} -> {verdict.value}")
    label = f"{m.label}: " if m.label else ""
    return label + "; ".join(parts)


def _rule(h: Hypothesis, budget: ErrorBudget) -> str:
    k = len(h.measures)
    level = budget.describe(k)
    parts = []
    for m in h.measures:
        sign = ">" if m.direction == "greater" else "<"
        test = {"welch": "Welch", "paired": "paired by seed", "exact": "exact, no interval"}[m.test]
        text = f"a - b {sign} {m.margin.describe()} ({test})"
        gate = m.effective_gate()
        if gate is not None:
            text += f", only runs with {gate.score} >= {gate.min:g}"
        parts.append(f"{m.label}: {text}" if m.label else text)
    how = (
        "supported if the interval lies wholly on the claimed side of the margin, "
        "contradicted if wholly on the other, undecided otherwise"
    )
    if k > 1:
        how += "; over the measures: supported if one supports and none contradicts"
    return f"{'; '.join(parts)}. {how.capitalize()} ({level})."


def _combine(results: Sequence[MeasureResult]) -> Verdict:
    verdicts = [r.verdict for r in results]
    sup, con = Verdict.SUPPORTED in verdicts, Verdict.CONTRADICTED in verdicts
    if sup and not con:
        return Verdict.SUPPORTED
    if con and not sup:
        return Verdict.CONTRADICTED
    return Verdict.UNDECIDED


def evaluate_hypothesis(
    h: Hypothesis,
    agg: StudyAggregate,
    layers_of: LayersOf,
    *,
    looks: int = 1,
    seeds: Collection[Any] | None = None,
) -> Finding:
    """Judge ``h`` on ``agg``: its confidence split over ``looks`` pre-planned looks
    (:class:`tracking.stats.ErrorBudget`), on the runs whose seed is in ``seeds`` (all
    runs when None)."""
    budget = ErrorBudget(h.confidence, looks)
    results = tuple(
        _judge(h, m, i, agg, layers_of, budget, seeds) for i, m in enumerate(h.measures)
    )
    verdict = _combine(results)
    detail = "; ".join(r.detail for r in results)
    both = {Verdict.SUPPORTED, Verdict.CONTRADICTED} <= {r.verdict for r in results}
    if verdict is Verdict.UNDECIDED and both:
        detail += "; the measures disagree (undecided)"
    return Finding(h.name, h.statement, verdict, detail, _rule(h, budget), results)


def evaluate(
    hypotheses: Sequence[Hypothesis],
    agg: StudyAggregate,
    layers_of: LayersOf,
    *,
    looks: int = 1,
) -> list[Finding]:
    """Every hypothesis judged on all runs of ``agg`` (one look, or the last of
    ``looks``)."""
    return [evaluate_hypothesis(h, agg, layers_of, looks=looks) for h in hypotheses]
