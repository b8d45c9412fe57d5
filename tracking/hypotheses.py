"""Hypotheses (:mod:`space.hypotheses`) evaluated on a study's aggregate.

For each hypothesis and each of its measures: select the candidates of side ``a`` and
side ``b`` (preset, else the candidates whose layers fit ``where``), read the quantity
per run, leave out the runs the competence gate rejects (naming them), and compare the
sides with the test the hypothesis asks for (:mod:`tracking.stats`), at the level the
error budget gives one measure at one look. The measures' verdicts combine into the
hypothesis's as its ``combine`` says: ``any`` (supported when one supports, contradicted
only when all contradict) or ``all`` (supported only when all support, contradicted when
one contradicts).

What needs the study is checked here, not in the schema: a selector that matches no
candidate, a score no run reports, a paired test over candidates without common seeds.
Each is a *finding*, not an exception: the measure is undecided and its ``problem``
names the hypothesis and the field (``hypotheses.<name>.a.preset: ...``), because a
study still running, or the shipped paper hypotheses applied to a study that never ran
one of the paper's variants, lack them legitimately.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from space.hypotheses import Hypothesis, Measure, Quantity
from space.names import ACC_AT_T, LONG_ACC, multiple_of, split_task_score
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
    p_two_sided,
    proportion_floor,
)

__all__ = [
    "Finding",
    "ItemsOf",
    "MeasureResult",
    "combine",
    "evaluate",
    "evaluate_hypothesis",
    "family_verdicts",
    "item_counts",
    "with_family",
]

# How many evaluation items one run's value of a quantity is a proportion over (None:
# not a proportion, or unknown): the item-level variance floor of its intervals.
ItemsOf = Callable[[Quantity], "int | None"]


def item_counts(config: Any | None) -> ItemsOf:
    """Items per run behind each accuracy quantity of a study swept with ``config``:
    ``acc@Nx`` (and ``acc_at_T``) is a proportion over ``samples x depths`` prompts of
    its family, ``long_acc`` over those of every length beyond 1x and every headline
    family, a mean over lengths over those of its lengths. Unknown without a sweep
    file."""

    def items(q: Quantity) -> int | None:
        if config is None:
            return None
        score = config.score
        per_length = score.samples * len(score.depths)
        beyond = sum(1 for m in score.lengths if m > 1)
        if q.mean == "acc":
            low, high = q.multiple_range()
            n = sum(1 for m in score.lengths if m >= low and (high is None or m <= high))
            return per_length * n or None
        if q.score is None:
            return None
        task, name = split_task_score(q.score)
        if name == ACC_AT_T or multiple_of(name, "acc@") is not None:
            return per_length
        if name == LONG_ACC:
            families = 1 if task is not None else max(len(score.headline_tasks), 1)
            return per_length * beyond * families or None
        return None

    return items


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
    gate_passes: tuple[tuple[str, int, int], ...] = ()  # (candidate, passed, runs) at T

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
            "gate_passes": [
                {"candidate": name, "passed": k, "runs": n} for name, k, n in self.gate_passes
            ],
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
    # The smallest error level (before any family-wise correction) at which this
    # hypothesis would be decided, and the verdict it would get there: what Holm's
    # procedure across a study's hypotheses reads (:func:`family_verdicts`).
    p_value: float = 1.0
    p_verdict: Verdict = Verdict.UNDECIDED
    # The verdict under Holm's correction across the study's hypotheses, its level and
    # the family's size (None until :func:`with_family` sets them).
    family_verdict: Verdict | None = None
    family_alpha: float | None = None
    family_size: int = 0

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
            "p_value": _finite(self.p_value),
            "holm": None
            if self.family_verdict is None
            else {
                "verdict": self.family_verdict.value,
                "alpha": self.family_alpha,
                "family": self.family_size,
                "controls": "family-wise error rate: the chance of any wrong verdict "
                "among the study's hypotheses",
            },
            "measures": [m.to_dict() for m in self.measures],
        }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:{spec}}"


# -- judging ---------------------------------------------------------------------------


INVALID_WHY = "the baseline does not learn the task at this budget; raise the budget"


def _side_values(
    m: Measure,
    which: str,
    chosen: list[CandidateSummary],
    layers_of: LayersOf,
    seeds: Collection[Any] | None,
    path: str,
    items: ItemsOf | None = None,
) -> tuple[Spread | None, list[str], str | None, list[tuple[str, int, int]]]:
    """One side's runs (``candidates: mean``: one mean per candidate), the runs a
    per-run gate left out,
    a problem, and the gate's pass count per candidate ``(name, passed, runs)``.
    ``seeds`` restricts the runs to those keys (a look of adaptive seeds); ``items``
    gives the side its item-level variance floor."""
    q = m.quantity_of(which)
    side = getattr(m, which)
    gate = m.effective_gate()
    keys: list[Any] = []
    values: list[float] = []
    excluded: list[str] = []
    passes: list[tuple[str, int, int]] = []
    for c in chosen:
        s, err = run_values(q, c, layers_of(c), side)
        if s is None:
            field_name = "quantity" if side.quantity is None else f"{which}.quantity"
            return None, excluded, f"{path}.{field_name}: {err}", passes
        if seeds is not None:
            s = s.only(seeds)
        runs = s.by_key()
        if gate is not None:
            at_t = (c.spread(gate.score) or Spread(())).by_key()
            failing = [k for k in runs if not (at_t.get(k) is not None and at_t[k] >= gate.min)]
            passes.append((c.name, len(runs) - len(failing), len(runs)))
            if gate.runs == "passing":  # the explicit per-run filter
                for k in failing:
                    v = at_t.get(k)
                    got = "not reported" if v is None else _fmt(v, ".2f")
                    excluded.append(f"{c.name} seed {k} ({gate.score} {got})")
                    del runs[k]
        if side.candidates == "mean":  # the group on average: one value per candidate
            if runs:
                keys.append(c.name)
                values.append(sum(runs.values()) / len(runs))
            continue
        for k, v in runs.items():
            keys.append(k if len(chosen) == 1 else (c.name, k))
            values.append(v)
    out = Spread(tuple(values), tuple(keys))
    n_items = items(q) if items is not None and side.candidates != "mean" else None
    if n_items and out.n:
        out = out.with_floor(proportion_floor(out.mean, n_items))
    return out, excluded, None, passes


def _gate_failures(m: Measure, passes: Sequence[tuple[str, int, int]]) -> list[str]:
    """The candidates that pass the gate on fewer than its share of their seeds."""
    gate = m.effective_gate()
    if gate is None:
        return []
    return [
        f"{name} passes on {k} of {n} seeds" for name, k, n in passes if n and k / n < gate.share
    ]


def _judge(
    h: Hypothesis,
    m: Measure,
    index: int,
    agg: StudyAggregate,
    layers_of: LayersOf,
    budget: ErrorBudget,
    seeds: Collection[Any] | None,
    items: ItemsOf | None = None,
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
    alpha = budget.per_test(len(h.measures))
    split = {w: picked[w] if getattr(m, w).candidates == "every" else [picked[w]] for w in "ab"}
    if any(len(groups) > 1 for groups in split.values()):
        return _judge_every(m, path, split, layers_of, alpha, seeds, items)
    return _judge_chosen(m, path, picked, layers_of, alpha, seeds, items)


def _judge_every(
    m: Measure,
    path: str,
    split: Mapping[str, Sequence[Any]],
    layers_of: LayersOf,
    alpha: float,
    seeds: Collection[Any] | None,
    items: ItemsOf | None,
) -> MeasureResult:
    """``candidates: every``: the claim for each selected candidate (against the other
    side), an intersection-union test: supported only if every comparison supports it,
    contradicted if one contradicts it. Each comparison spends ``alpha * min(1, 2/k)``
    (as the measures of an ``all`` claim do)."""
    pairs = [
        {"a": a if isinstance(a, list) else [a], "b": b if isinstance(b, list) else [b]}
        for a in split["a"]
        for b in split["b"]
    ]
    level = alpha * min(1.0, 2.0 / len(pairs))
    results = [_judge_chosen(m, path, p, layers_of, level, seeds, items) for p in pairs]
    verdict = combine([r.verdict for r in results], "all")
    deciding = _weakest(results, verdict)
    detail = "every candidate: " + " | ".join(r.detail for r in results)
    detail += f"; every candidate -> {verdict.value}"
    problems = [r.problem for r in results if r.problem]
    return replace(
        deciding,
        label=m.label,
        verdict=verdict,
        detail=(f"{m.label}: " if m.label else "") + detail,
        problem=problems[0] if problems and verdict is Verdict.UNDECIDED else None,
        excluded=tuple(dict.fromkeys(x for r in results for x in r.excluded)),
        gate_passes=tuple(dict.fromkeys(x for r in results for x in r.gate_passes)),
    )


def _weakest(results: Sequence[MeasureResult], verdict: Verdict) -> MeasureResult:
    """The comparison that carries an intersection-union verdict: for supported, the
    one whose interval comes closest to the margin; otherwise the first with that
    verdict, else the first."""
    if verdict is Verdict.SUPPORTED:

        def room(r: MeasureResult) -> float:
            c = r.comparison
            if c is None or r.margin is None:
                return math.inf
            return c.low - r.margin if r.direction == "greater" else r.margin - c.high

        return min(results, key=room)
    return next((r for r in results if r.verdict is verdict), results[0])


def _judge_chosen(
    m: Measure,
    path: str,
    picked: Mapping[str, list[CandidateSummary]],
    layers_of: LayersOf,
    alpha: float,
    seeds: Collection[Any] | None,
    items: ItemsOf | None,
) -> MeasureResult:
    """One comparison of the candidates ``picked`` for each side."""
    undecided = Verdict.UNDECIDED

    def stop(problem: str, **kw: Any) -> MeasureResult:
        return MeasureResult(m.label, undecided, None, None, m.direction, problem=problem,
                             detail=problem.split(": ", 1)[-1], **kw)  # fmt: skip

    sa, ex_a, problem, pass_a = _side_values(m, "a", picked["a"], layers_of, seeds, path, items)
    if problem:
        return stop(problem)
    sb, ex_b, problem, pass_b = _side_values(m, "b", picked["b"], layers_of, seeds, path, items)
    if problem:
        return stop(problem)
    excluded = tuple(dict.fromkeys(ex_a + ex_b))
    passes = tuple(dict.fromkeys(pass_a + pass_b))
    names = {w: _side_name(m, w, picked[w]) for w in ("a", "b")}
    same = [c.candidate_id for c in picked["a"]] == [c.candidate_id for c in picked["b"]]
    # A relative margin is tested exactly, per run: "a - b > r * b" is "a - (1 + r) b > 0"
    # and "a - b > r * a" is "(1 - r) a - b > 0" (the estimated mean is no constant).
    margin = m.margin.value
    ta, tb = sa, sb
    if m.margin.relative_to == "b":
        tb, margin = sb.scaled(1.0 + m.margin.value), 0.0
    elif m.margin.relative_to == "a":
        ta, margin = sa.scaled(1.0 - m.margin.value), 0.0

    gate = m.effective_gate()
    failures = _gate_failures(m, passes)
    if failures:
        why = (
            f"competence gate {gate.score} >= {gate.min:g} at T on at least "
            f"{gate.share:.0%} of seeds: {', '.join(failures)}: {INVALID_WHY} (invalid)"
        )
        detail = _detail(m, names, sa, sb, None, margin, Verdict.INVALID, why, excluded, passes)
        return MeasureResult(
            m.label, Verdict.INVALID, None, margin, m.direction, sa, sb, excluded, None, detail,
            passes,
        )  # fmt: skip
    learned = f" that learned the task at T ({gate.score} >= {gate.min:g})" if gate else ""
    if m.test == "exact":
        c = compare_exact(ta, tb)
    elif m.test == "paired":
        if not same and sa.n and sb.n and not set(sa.keys) & set(sb.keys):
            return stop(
                f"{path}.test: paired by seed, but {names['a']} and {names['b']} "
                "have no seed in common",
                a=sa, b=sb, excluded=excluded,
            )  # fmt: skip
        c = compare_paired(ta, tb, alpha)
    else:
        c = compare_independent(ta, tb, alpha)
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
    detail = _detail(m, names, sa, sb, c, margin, verdict, why, excluded, passes)
    return MeasureResult(
        m.label, verdict, c, margin, m.direction, sa, sb, excluded, None, detail, passes
    )


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
    passes: Sequence[tuple[str, int, int]] = (),
) -> str:
    q_a, q_b = m.quantity_of("a"), m.quantity_of("b")
    parts = [f"{_describe(names['a'], q_a, sa)} vs {_describe(names['b'], q_b, sb)}"]
    gate = m.effective_gate()
    if gate is not None and passes:
        counts = ", ".join(f"{name} {k}/{n}" for name, k, n in passes)
        parts.append(f"learned the task at T ({gate.score} >= {gate.min:g}): {counts} seeds")
    if excluded:
        parts.append(f"left out by the competence gate: {', '.join(excluded)}")
    sign = ">" if m.direction == "greater" else "<"
    if c is None:
        parts.append(why or "no interval (undecided)")
    else:
        what = _tested(m)
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
            elif c.se == 0:
                parts.append(
                    "the runs agree exactly and no item-level floor is known: "
                    "no decision from a zero-width interval"
                )
        bound = human_bytes(margin) if is_bytes_score(q_a.score or "") else _fmt(margin)
        parts.append(f"claim {what} {sign} {bound} -> {verdict.value}")
    label = f"{m.label}: " if m.label else ""
    return label + "; ".join(parts)


def _tested(m: Measure) -> str:
    """What the interval is of: ``a - b``, or with a relative margin ``a - 1.02 b``."""
    r = m.margin.value
    if m.margin.relative_to == "b":
        return f"a - {1.0 + r:.4g} b"
    if m.margin.relative_to == "a":
        return f"{1.0 - r:.4g} a - b"
    return "a - b"


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
            text += (
                f", invalid unless each side has {gate.score} >= {gate.min:g} on at least "
                f"{gate.share:.0%} of its seeds"
            )
            if gate.runs == "passing":
                text += f", then only runs with {gate.score} >= {gate.min:g}"
        parts.append(f"{m.label}: {text}" if m.label else text)
    how = (
        "supported if the interval lies wholly on the claimed side of the margin, "
        "contradicted if wholly on the other, undecided otherwise"
    )
    if k > 1 and h.combine == "any":
        how += (
            "; over the measures (any): supported if one supports, contradicted if all contradict"
        )
    elif k > 1:
        how += (
            "; over the measures (all): supported if all support, contradicted if one contradicts"
        )
    return f"{'; '.join(parts)}. {how.capitalize()} ({level})."


def combine(verdicts: Sequence[Verdict], how: str | None) -> Verdict:
    """The verdict of a hypothesis from its measures' verdicts. ``any`` (a claim with
    "or"): supported if one measure supports, contradicted only if every measure
    contradicts. ``all`` (a claim with "and"): supported only if every measure supports,
    contradicted if one contradicts. One measure: its verdict."""
    verdicts = list(verdicts)
    if len(verdicts) == 1:
        return verdicts[0]
    if how not in ("any", "all"):
        raise ValueError(f"combine must be 'any' or 'all', got {how!r}")
    claimed, opposite = Verdict.SUPPORTED, Verdict.CONTRADICTED
    if how == "all":  # "A and B" fails when one fails: the mirror image of "any"
        claimed, opposite = opposite, claimed
    if claimed in verdicts:
        return claimed
    if all(v is opposite for v in verdicts):
        return opposite
    # An invalid measure (a side that does not learn the task) decides nothing; what the
    # valid measures cannot settle without it is invalid, not merely undecided.
    return Verdict.INVALID if Verdict.INVALID in verdicts else Verdict.UNDECIDED


def evaluate_hypothesis(
    h: Hypothesis,
    agg: StudyAggregate,
    layers_of: LayersOf,
    *,
    looks: int = 1,
    seeds: Collection[Any] | None = None,
    items: ItemsOf | None = None,
) -> Finding:
    """Judge ``h`` on ``agg``: its confidence split over ``looks`` pre-planned looks
    (:class:`tracking.stats.ErrorBudget`), on the runs whose seed is in ``seeds`` (all
    runs when None); ``items`` (:func:`item_counts`) gives accuracy quantities their
    item-level variance floor."""
    budget = ErrorBudget(h.confidence, looks)
    results = tuple(
        _judge(h, m, i, agg, layers_of, budget, seeds, items) for i, m in enumerate(h.measures)
    )
    verdict = combine([r.verdict for r in results], h.combine)
    detail = "; ".join(r.detail for r in results)
    if len(results) > 1:
        detail += f"; {h.combine} of the measures -> {verdict.value}"
    p, p_verdict = _p_value(h, results, looks)
    return Finding(h.name, h.statement, verdict, detail, _rule(h, budget), results, p, p_verdict)


def _p_value(h: Hypothesis, results: Sequence[MeasureResult], looks: int) -> tuple[float, Verdict]:
    """The smallest whole-budget ``alpha`` at which ``h`` gets a decided verdict, and
    that verdict. A measure's interval excludes its margin at the level
    ``alpha * min(1, 2/k) / looks`` exactly when that level exceeds its two-sided
    p-value, so each measure decides from ``alpha > q = p * looks / min(1, 2/k)`` on
    the side its estimate lies; ``any`` needs one measure on the claimed side (the
    smallest q), or every measure on the other (the largest); ``all`` the mirror."""
    k = len(results)
    scale = looks / min(1.0, 2.0 / k)
    qs: list[tuple[float, int]] = []  # (q, +1 claimed side / -1 other side / 0 none)
    for r in results:
        c = r.comparison
        if c is None or r.margin is None or not math.isfinite(r.margin):
            qs.append((1.0, 0))
            continue
        above = c.diff - r.margin
        side = 0 if above == 0 else (1 if above > 0 else -1)
        if r.direction == "less":
            side = -side
        if c.kind == "exact":
            side = 1 if r.verdict is Verdict.SUPPORTED else -1
        qs.append((min(1.0, p_two_sided(c, r.margin) * scale), side))
    how = h.combine or "any"
    one, every = (1, -1) if how == "any" else (-1, 1)
    p_one = min((q for q, side in qs if side == one), default=1.0)
    p_every = max(q for q, _ in qs) if all(side == every for _, side in qs) else 1.0
    verdict_one = Verdict.SUPPORTED if one == 1 else Verdict.CONTRADICTED
    verdict_every = Verdict.SUPPORTED if every == 1 else Verdict.CONTRADICTED
    if p_one <= p_every:
        return p_one, verdict_one if p_one < 1.0 else Verdict.UNDECIDED
    return p_every, verdict_every


def with_family(findings: Sequence[Finding], alpha: float) -> list[Finding]:
    """``findings`` with their Holm verdicts (:func:`family_verdicts`) set."""
    verdicts = family_verdicts(findings, alpha)
    n = len(findings)
    return [
        replace(f, family_verdict=v, family_alpha=alpha, family_size=n)
        for f, v in zip(findings, verdicts, strict=True)
    ]


def family_verdicts(findings: Sequence[Finding], alpha: float) -> list[Verdict]:
    """Holm's step-down procedure over a study's hypotheses (statsmodels'
    ``multipletests``): the chance that *any* hypothesis of the family is wrongly
    decided stays at most ``alpha`` (family-wise error rate, strong control). A
    hypothesis keeps its decided verdict when Holm rejects its null, else it is
    undecided family-wise; an invalid hypothesis stays invalid."""
    from statsmodels.stats.multitest import multipletests  # heavy: only when reporting

    if not findings:
        return []
    reject = multipletests([f.p_value for f in findings], alpha=alpha, method="holm")[0]
    out = []
    for f, r in zip(findings, reject, strict=True):
        if f.verdict not in (Verdict.SUPPORTED, Verdict.CONTRADICTED):
            out.append(f.verdict)
        else:
            out.append(f.verdict if r else Verdict.UNDECIDED)
    return out


def evaluate(
    hypotheses: Sequence[Hypothesis],
    agg: StudyAggregate,
    layers_of: LayersOf,
    *,
    looks: int = 1,
    items: ItemsOf | None = None,
) -> list[Finding]:
    """Every hypothesis judged on all runs of ``agg`` (one look, or the last of
    ``looks``)."""
    return [evaluate_hypothesis(h, agg, layers_of, looks=looks, items=items) for h in hypotheses]
