"""What the report says, as one list of sections of typed blocks; the Markdown and HTML
renderers (:mod:`tracking.report.markdown`, :mod:`tracking.report.html`) only lay it out.

Text blocks may use ``**bold**``, ``*italic*`` and ```code``` spans; everything else is
plain text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from space.describe import describe_knobs
from space.presets import DESCRIPTIONS
from space.units import human_bytes, is_bytes_score
from tracking.aggregate import StudyAggregate
from tracking.decision_accuracy import DecisionAccuracy, HypothesisTrend
from tracking.held_out import HeldOutTransfer
from tracking.hypotheses import Finding
from tracking.pareto import MAXIMIZE, ParetoTable, direction_arrow
from tracking.report.tables import (
    Table,
    candidate_table,
    held_out_table,
    mass_table,
    pareto_rows,
    seed_plan_table,
    signal_noise_table,
    stability_table,
)
from tracking.seed_plan import SeedPlan
from tracking.stability import RankStability
from tracking.stats import Verdict
from tracking.ties import SignalToNoise

__all__ = [
    "FIG_CURVES",
    "FIG_MASS",
    "FIG_NIAH",
    "FIG_PARETO",
    "Bullets",
    "Figure",
    "Findings",
    "ReportInput",
    "Section",
    "TableBlock",
    "Text",
    "sections",
]

FIG_CURVES = "accuracy_vs_length.png"
FIG_NIAH = "niah_heatmaps.png"
FIG_MASS = "attention_mass.png"
FIG_PARETO = "pareto.png"

GLOSSARY = (
    "Every variant is a decoder-only transformer whose layers differ only in how attention "
    "sees positions. **RoPE** (rotary position embedding) rotates queries and keys by an "
    "angle proportional to their position, so attention scores depend on relative distance; "
    "it is the usual Llama-style choice. **NoPE** uses no positional signal at all: the "
    "causal mask alone lets the model infer order. A **sliding window** (SWA) lets a layer "
    "attend only to the last W tokens, so its KV cache holds W tokens instead of the whole "
    "context. **QK-norm** applies an RMSNorm to queries and keys before attention. "
    'The paper ("Rope to Nope and Back Again", Yang et al. 2025) proposes **RNoPE-SWA**: '
    "three of every four layers use RoPE with a sliding window (local context), every "
    "fourth layer uses NoPE with full attention (long-range retrieval). Scores: "
    "`short_bpb` is bits per byte on held-out text at the training length T (lower is "
    "better); `acc@Nx` is needle-in-a-haystack exact-match accuracy with a context of N x T "
    "tokens; `long_acc` is the mean accuracy beyond T; `extrap_bpb@Nx` is bits per byte at "
    "N x T; `kv_cache_bytes` is the KV cache at the target context, from the layer layout; "
    "`tokens_per_s` is measured training throughput."
)

RULE_TEXT = (
    "How findings are decided: each comparison takes the difference of means a - b and its "
    "confidence interval (Welch's t interval with fractional degrees of freedom for two "
    "candidates; a paired t interval, matched by seed, for two measurements of the same "
    "runs or candidates trained with the same seeds; scores computed from the layer layout "
    "are compared exactly). A hypothesis is *supported* when the whole interval lies on its "
    "claimed side of the margin, *contradicted* when it lies wholly on the other side, and "
    "*undecided* when it straddles the margin, when a side has fewer than two runs, when "
    "the interval has zero width (seeds that agree exactly are no evidence of zero "
    "variance: a proportion over N items is given at least its binomial variance), or when "
    "a candidate or score is missing (the finding names the hypothesis and field). A claim "
    "over several measures says how they combine: *any* (supported when one supports, "
    "contradicted only when all contradict) or *all* (supported only when all support); "
    "each measure spends its share of the error budget. Comparisons of retrieval beyond T "
    "first ask whether each side learned the task at T (the competence gate, acc@1x >= 0.9 "
    "of the same family on at least 75% of a side's seeds unless the hypothesis says "
    "otherwise): a side that fails makes the hypothesis *invalid* (the baseline does not "
    "learn the task at this budget; raise the budget); otherwise every run is analysed "
    "(intention to treat) unless the hypothesis asks for passing runs only. Holm's "
    "correction across the study's hypotheses is printed next to each verdict: it controls "
    "the chance of any wrong verdict in the family."
)

SIGNAL_NOISE_TEXT = (
    "Per objective: signal = the standard deviation of the candidates' means, noise = the "
    "pooled standard deviation over seeds. Below about 1 the objective cannot order these "
    "candidates and a search on it is close to random; candidates at a bound (accuracy 1.00 "
    "or 0.00 on every seed) cannot be ordered at all. Tie groups are named in the notes."
)

HELD_OUT_TEXT = (
    "Families scored but never trained on (score.held_out), reported apart from the trained "
    "families' headline: does the ranking on the trained families transfer (Kendall's tau "
    "between the candidates' means, 1 = the same order), and does each decided hypothesis "
    "keep the sign of its effect a - b when the same comparison (same sides, same gate) reads "
    "the held-out families' mean of the same score. Measures of a loss, a cost or an "
    "attention mass have no held-out counterpart and are not counted."
)

STABILITY_TEXT = (
    "Kendall's tau between the candidate rankings from two disjoint halves of each "
    "candidate's seeds (alternate seeds), per objective: 1 = the same order, 0 = "
    "unrelated, -1 = reversed. Each half is an independent replication with half the "
    "seeds, so the ranking by the mean of all seeds (the table above) is more stable than "
    "tau says. With fewer than 4 seeds each half is a single seed: tau is then how well one "
    "seed's ranking predicts another's."
)


@dataclass(frozen=True)
class Text:
    text: str
    style: str = ""  # "" (a paragraph), "meta" or "rule" (small print)


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class TableBlock:
    table: Table
    empty: str = "No data."


@dataclass(frozen=True)
class Figure:
    name: str
    alt: str
    path: Path | None


@dataclass(frozen=True)
class Findings:
    findings: tuple[Finding, ...]


Block = Text | Bullets | TableBlock | Figure | Findings


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class ReportInput:
    """Everything the report shows."""

    agg: StudyAggregate
    study_name: str
    created: str
    findings: Sequence[Finding] = ()
    hypotheses_source: str = ""
    train_len: int | None = None
    pareto: ParetoTable | None = None
    figures: Mapping[str, Path | None] = field(default_factory=dict)
    stability: Sequence[RankStability] = ()
    seed_plan: SeedPlan | None = None
    notes: Sequence[str] = ()
    stages: Sequence[Any] = ()  # the sweep's train.stage_plans() when it has several
    signal_noise: Sequence[SignalToNoise] = ()  # per objective
    held_out: HeldOutTransfer | None = None  # a study with score.held_out
    decision_accuracy: DecisionAccuracy | None = None  # a scale ladder's (rung 0 above)


def overview(r: ReportInput) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(r.agg.state_counts.items()))
    t = f"; training length T = {r.train_len} tokens" if r.train_len else ""
    return (
        f"{len(r.agg.candidates)} candidates with completed runs, "
        f"{sum(c.n for c in r.agg.candidates)} runs counted (trials: {counts or 'none'}){t}. "
        "Every number is a mean over seeds ± the sample standard deviation, [min, max] below "
        "it; n is the number of seeds."
    )


def tally(findings: Sequence[Finding]) -> str:
    counts = {v: sum(f.verdict is v for f in findings) for v in Verdict}
    return ", ".join(f"{n} {v.value}" for v, n in counts.items()) + f" of {len(findings)}"


def _value(name: str, v: float) -> str:
    return human_bytes(v) if is_bytes_score(name) else f"{v:.3g}"


def _names(names: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(f"**{n}**" for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def headline(r: ReportInput) -> tuple[str, ...]:
    """What the sweep found, in a few lines: the Pareto front of candidate means, the best
    candidate on each objective, and the verdicts on the hypotheses."""
    if not r.agg.candidates:
        return ("No candidate has a completed run yet: nothing to compare.",)
    lines = []
    if r.pareto is not None:
        names, dirs = r.pareto.objective_names, r.pareto.directions
        ranked = [row for row in r.pareto.rows if row["rank"] is not None]
        front = [row for row in ranked if row["rank"] == 0]
        if front:
            described = [
                f"**{row['candidate']}** ("
                + ", ".join(f"{n} {_value(n, float(row[n]))}" for n in names)
                + ")"
                for row in front[:5]
            ]
            more = f" and {len(front) - 5} more" if len(front) > 5 else ""
            lines.append(
                f"Pareto front of candidate means ({len(front)} of {len(ranked)} candidates, "
                f"nothing beats them on every objective at once): "
                + "; ".join(described)
                + more
                + "."
            )
        best = []
        for name, direction in zip(names, dirs, strict=True):
            values = [(float(row[name]), row["candidate"]) for row in ranked]
            if not values:
                continue
            top = (max if direction == MAXIMIZE else min)(v for v, _ in values)
            leaders = [c for v, c in values if v == top]
            tie = " (tied)" if len(leaders) > 1 else ""
            best.append(
                f"{name} {direction_arrow(direction)}: {_names(leaders)} {_value(name, top)}{tie}"
            )
        if best:
            lines.append("Best candidate per objective: " + "; ".join(best) + ".")
    if r.findings:
        by_verdict = {v: [f.key for f in r.findings if f.verdict is v] for v in Verdict}
        named = "; ".join(
            f"{v.value}: " + ", ".join(f"`{k}`" for k in keys)
            for v, keys in by_verdict.items()
            if keys and v is not Verdict.UNDECIDED
        )
        lines.append(
            f"Hypotheses: {tally(r.findings)}"
            + (f" ({named})" if named else "")
            + "; see Findings."
        )
    return tuple(lines)


def _variants(r: ReportInput) -> tuple[str, ...]:
    out = []
    for c in (*r.agg.candidates, *r.agg.without_complete):
        sentence = describe_knobs(c.knobs, r.stages) if c.knobs else "(knobs not recorded)"
        if c.preset in DESCRIPTIONS:
            sentence = f"{sentence} {DESCRIPTIONS[c.preset]}"
        if c.aliases:
            sentence += f" Same model as preset(s) {', '.join(c.aliases)}."
        layout = f" (`{c.candidate_name}`)" if c.candidate_name else ""
        out.append(f"**{c.name}**{layout}: {sentence}")
    return tuple(out)


def _notes(r: ReportInput) -> tuple[str, ...]:
    notes = [*r.notes, *r.agg.warnings]
    for c in (*r.agg.candidates, *r.agg.without_complete):
        if c.not_complete:
            parts = ", ".join(f"{n} {label}" for label, n in c.not_complete.items())
            notes.append(f"{c.name}: runs not counted: {parts}")
    if r.pareto is not None:
        for row in r.pareto.rows:
            if row.get("excluded"):
                notes.append(f"Pareto: {row['candidate']} left out ({row['excluded']})")
    return tuple(notes) or ("every trial completed; no notes.",)


def sections(r: ReportInput) -> list[Section]:
    """The report, top to bottom."""
    findings_intro = f"{tally(r.findings)}."
    if r.hypotheses_source:
        findings_intro += f" Hypotheses: {r.hypotheses_source}."
    out = [
        Section("found", "What the sweep found", (Bullets(headline(r)),)),
        Section(
            "variants",
            "What the variants are",
            (Text(GLOSSARY), Bullets(_variants(r))),
        ),
        Section(
            "findings",
            "Findings: the hypotheses on this study",
            (Text(findings_intro), Findings(tuple(r.findings)), Text(RULE_TEXT, "rule")),
        ),
    ]
    if r.seed_plan is not None:
        out.append(_seeds_section(r.seed_plan))
    if r.decision_accuracy is not None:
        out.append(ladder_section(r.decision_accuracy))
    out += [
        Section(
            "table",
            "Per-candidate scores (mean ± std over seeds)",
            (TableBlock(candidate_table(r.agg), "No completed runs."),),
        ),
        Section(
            "stability",
            "Rank stability across seeds",
            (Text(STABILITY_TEXT), TableBlock(stability_table(r.stability), "No objectives.")),
        ),
        Section(
            "signal",
            "Signal and noise per objective",
            (
                Text(SIGNAL_NOISE_TEXT),
                TableBlock(signal_noise_table(r.signal_noise), "No objectives."),
            ),
        ),
    ]
    if r.held_out is not None:
        effects = tuple(e.describe() for e in r.held_out.effects)
        out.append(
            Section(
                "held_out",
                "Held-out families: does the ranking transfer?",
                (
                    Text(HELD_OUT_TEXT),
                    Bullets(tuple(r.held_out.lines()) + effects),
                    TableBlock(held_out_table(r.agg), "No held-out scores."),
                ),
            )
        )
    out += [
        Section(
            "curves",
            "Accuracy and loss vs context length",
            (_figure(r, FIG_CURVES, "accuracy and bits/byte vs context length"),),
        ),
        Section(
            "niah",
            "Needle-in-a-haystack heatmaps (mean over seeds)",
            (_figure(r, FIG_NIAH, "NIAH heatmaps"),),
        ),
        Section(
            "mass",
            "Attention mass per layer kind (Begin / Needle / Context / End)",
            (
                _figure(r, FIG_MASS, "attention mass per layer kind"),
                TableBlock(mass_table(r.agg), "No attention-mass data in this study."),
            ),
        ),
    ]
    out += [
        Section("pareto", "Pareto front (candidate means)", _pareto_blocks(r)),
        Section("notes", "Runs and notes", (Bullets(_notes(r)),)),
    ]
    return out


def _seeds_section(plan: Any) -> Section:
    """Adaptive seeds: where each hypothesis stands, and how seeds were given."""
    return Section(
        "seeds",
        "Adaptive seeds: where each hypothesis stands",
        (
            Text(
                "Seeds went to the candidates of undecided hypotheses, one round at a "
                "time; each hypothesis is judged once per round, its confidence split "
                "evenly over the planned rounds (Bonferroni), and stays decided once "
                "decided."
            ),
            TableBlock(seed_plan_table(plan)),
        ),
    )


def _pareto_blocks(r: ReportInput) -> tuple[Block, ...]:
    """The Pareto front's table, how to read it, and its figure."""
    if r.pareto is None:
        return (Text("No objectives recorded on the study: no Pareto front."),)
    return (
        TableBlock(pareto_rows(r.pareto)),
        Text(
            "★ = on the Pareto front (rank 0) of the candidates' mean scores; # is the "
            "row in the table of scores. Rank within noise: the same sorting when a "
            "candidate dominates another only if it is better by more than 2 standard "
            "errors of the difference in one objective and worse by no more than that in "
            "any (seed spread; scores computed from the layout have none), so the front "
            "does not rank candidates on noise. ≈ #k: statistically indistinguishable from "
            "row k on every objective.",
            "meta",
        ),
        _figure(r, FIG_PARETO, "Pareto front"),
    )


def _figure(r: ReportInput, name: str, alt: str) -> Figure:
    return Figure(name, alt, r.figures.get(name))


LADDER_TEXT = (
    "The tables above are rung 0's. Between rungs: agreement is the share of candidate pairs "
    "ordered the same way at both rungs (a tie counts 1/2), tau is Kendall's tau-b of the two "
    "orders, each with a 95% percentile bootstrap interval over seeds. Each hypothesis's "
    "effect is a - b at every rung with its own test's interval; the prediction for a rung is "
    "made from the rungs below it only (constant from one rung, a weighted line from two or "
    "more) and checked once that rung has run."
)


def ladder_section(d: DecisionAccuracy) -> Section:
    """The scale ladder: rank agreement between rungs, hypotheses' effects across rungs."""
    pairs = Table(
        ["rungs", "objective", "candidates", "agreement", "Kendall tau"],
        [
            [
                (f"{p.low} -> {p.high}", ""),
                (p.objective, ""),
                (str(len(p.candidates)), f"{p.pairs} pairs"),
                (_num(p.agreement), _iv(p.agreement_interval)),
                (_num(p.tau), _iv(p.tau_interval)),
            ]
            for p in d.pairs
        ],
    )
    trends = Table(
        ["hypothesis", "rung", "effect (a - b)", "predicted from below", "inside"],
        [
            [
                (h.hypothesis + (f" [{h.measure}]" if h.measure else ""), ""),
                (str(rung), ""),
                _effect_cell(h, rung),
                _prediction_cell(h, rung),
                (_inside(h, rung), ""),
            ]
            for h in d.hypotheses
            for rung in sorted({e.rung for e in h.effects} | {p.rung for p in h.predictions})
        ],
    )
    blocks: tuple[Block, ...] = (
        Text(LADDER_TEXT),
        TableBlock(pairs, "No two rungs with completed runs yet."),
        TableBlock(trends, "No hypotheses to follow across rungs."),
    )
    if d.notes:
        blocks += (Bullets(d.notes),)
    return Section("ladder", "Scale ladder: decision accuracy", blocks)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _iv(x: tuple[float, float] | None) -> str:
    return "" if x is None else f"[{x[0]:.3g}, {x[1]:.3g}]"


def _effect_cell(h: HypothesisTrend, rung: int) -> tuple[str, str]:
    e = next((e for e in h.effects if e.rung == rung), None)
    if e is None:
        return "-", ""
    return _num(e.diff), _iv(e.interval)


def _prediction_cell(h: HypothesisTrend, rung: int) -> tuple[str, str]:
    p = next((p for p in h.predictions if p.rung == rung), None)
    if p is None:
        return "-", ""
    return _num(p.value), f"{_iv((p.low, p.high))} {p.method}"


def _inside(h: HypothesisTrend, rung: int) -> str:
    p = next((p for p in h.predictions if p.rung == rung), None)
    if p is None:
        return "-"
    return "not yet run" if p.inside is None else ("yes" if p.inside else "no")
