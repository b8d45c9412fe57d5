"""Building the report of a study: read and aggregate its runs, judge the hypotheses
(the sweep file's, else the paper's), rank stability, figures, then write
``report.html`` (self-contained), ``report.md`` (images beside it), ``summary.json``,
the PNGs and the Pareto files of candidate means."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from space.hypothesis_files import PAPER_FILE, shipped_hypotheses
from space.names import STUDY_ATTR_TARGET
from tracking.aggregate import CandidateSummary, StudyAggregate, aggregate
from tracking.decision_accuracy import DecisionAccuracy
from tracking.decision_plan import decision_plan
from tracking.hypotheses import Finding, evaluate, item_counts, with_family
from tracking.ladder_view import study_decision_accuracy
from tracking.pareto import ParetoTable, pareto_ranks_within_noise, pareto_table
from tracking.pareto_plots import plot_pareto_png
from tracking.records import FINISHED_STATES, study_records
from tracking.report.content import (
    FIG_CURVES,
    FIG_MASS,
    FIG_NIAH,
    FIG_PARETO,
    ReportInput,
    sections,
)
from tracking.report.figures import plot_curves, plot_mass, plot_niah
from tracking.report.html import render_html
from tracking.report.markdown import render_markdown
from tracking.report.summary import summary
from tracking.seed_plan import SeedPlan, plan_seeds
from tracking.sides import candidate_layers
from tracking.stability import rank_stability
from tracking.ties import TIE_Z, pooled_noise, signal_to_noise, tie_groups, tie_warning

__all__ = ["HTML_NAME", "MD_NAME", "SUMMARY_NAME", "build_report", "judge", "render_report"]

HTML_NAME = "report.html"
MD_NAME = "report.md"
SUMMARY_NAME = "summary.json"


def judge(
    agg: StudyAggregate, config: Any | None, attrs: Mapping[str, Any] | None = None
) -> tuple[list[Finding], str, SeedPlan | None]:
    """The findings on ``agg``, where the hypotheses came from, and (adaptive seeds) the
    seed plan whose looks decided them.

    The sweep file's hypotheses, else (a study whose file states none, or no file) the
    shipped paper hypotheses. With adaptive seeds each hypothesis is reported at the
    look that decided it (or its latest), at the level the error budget gives a look,
    with the look count stored in the study at creation (``attrs``: its user
    attributes; :mod:`tracking.decision_plan`); otherwise on all runs at the
    hypothesis's confidence. Each finding also carries its verdict under Holm's
    correction across all of them (family-wise error rate at the plan's alpha).
    """
    layers_of = candidate_layers(config)
    items = item_counts(config)
    if config is not None and config.hypotheses:
        hypotheses = config.hypotheses
        source = f"{config.hypotheses_from}" if config.hypotheses_from else "the sweep file"
    else:
        hypotheses = shipped_hypotheses()
        source = f"configs/{PAPER_FILE} (the paper's claims: the sweep file states none)"
    decisions = decision_plan(attrs or {}, config)
    alpha = (
        decisions.alpha if decisions is not None else min(1.0 - h.confidence for h in hypotheses)
    )
    if config is None or not config.study.adaptive or decisions is None or not decisions.adaptive:
        findings = evaluate(hypotheses, agg, layers_of, items=items)
        return with_family(findings, alpha), source, None
    plan = plan_seeds(
        hypotheses,
        agg,
        layers_of,
        repeats_min=decisions.repeats_min,
        repeats_max=decisions.repeats_max,
        base_seed=config.train.seed,
        items=items,
    )
    by_name = {h.name: h.finding for h in plan.hypotheses}
    findings = [
        by_name.get(h.name) or evaluate([h], agg, layers_of, looks=decisions.looks, items=items)[0]
        for h in hypotheses
    ]
    return with_family(findings, alpha), source, plan


def build_report(study: Any, out_dir: str | Path, config: Any | None = None) -> dict[str, Path]:
    """Aggregate ``study`` (an ``optuna.Study``), judge its hypotheses, write the report
    into ``out_dir``; returns file name -> path. ``config`` is the study's sweep file
    (:class:`space.schema.SweepConfig`; None: a study without one)."""
    read = study_records(study)  # rung 0 of a ladder: objectives compare within a rung
    agg = aggregate(read.records, read.objective_names, read.directions)
    findings, source, plan = judge(agg, config, study.user_attrs)
    interim = interim_look(agg, config, study.user_attrs)
    if interim:
        source += f"; {interim}"
    train_len = config.train.final_seq_len if config is not None else None
    stages = config.train.stage_plans() if config is not None else ()
    return render_report(
        agg,
        out_dir,
        study_name=study.study_name,
        train_len=train_len,
        findings=findings,
        hypotheses_source=source,
        seed_plan=plan,
        stages=tuple(stages) if len(stages) > 1 else (),
        decision_accuracy=study_decision_accuracy(study, config),
    )


def interim_look(agg: StudyAggregate, config: Any | None, attrs: Mapping[str, Any]) -> str | None:
    """What to say when a study with a fixed seed count is reported before it is done:
    its one planned look is at the end, so a report before that is an interim look,
    not counted in any error budget. None when done, or for adaptive seeds (whose looks
    are planned per round)."""
    if config is None or config.study.adaptive:
        return None
    running = sum(agg.state_counts.get(s, 0) for s in ("RUNNING", "WAITING"))
    finished = sum(agg.state_counts.get(s, 0) for s in FINISHED_STATES)
    target = attrs.get(STUDY_ATTR_TARGET) or config.study.trials
    if not running and finished >= target:
        return None
    return (
        f"interim look: {finished} of {target} trials finished, {running} running or queued; "
        "these verdicts are not final and this look is outside the error budget, which is "
        "planned for the one look at the end"
    )


def tie_notes(agg: StudyAggregate) -> list[str]:
    """A warning for each group of candidates that ties on an objective, at a bound or
    inside each other's seed noise, naming what would separate them (tracking.ties)."""
    return [tie_warning(g) for g in tie_groups(agg.objective_names, agg.candidates)]


def _train_len_from_niah(agg: StudyAggregate) -> int | None:
    lengths = [min(c.niah.lengths) for c in agg.candidates if c.niah is not None and c.niah.lengths]
    return min(lengths) if lengths else None


def candidate_pareto(agg: StudyAggregate) -> ParetoTable | None:
    """The Pareto front of candidate means (one point per candidate, not per seed run);
    ``trial`` is the candidate's row number in the report's table. Each row also has
    ``rank_within_noise`` (the rank when a candidate dominates another only beyond their
    seed noise, :func:`tracking.pareto.pareto_ranks_within_noise`) and
    ``indistinguishable_from``, the rows no objective tells it apart from."""
    names, dirs = agg.objective_names, agg.directions
    if not names or len(names) != len(dirs):
        return None
    rows = []
    for i, c in enumerate(agg.candidates, start=1):
        row: dict[str, Any] = {"trial": i, "candidate": c.name, "n": c.n}
        for name in names:
            s = c.spread(name)
            row[name] = s.mean if s is not None and s.n else None
        rows.append(row)
    noisy = pareto_ranks_within_noise(
        [[row[n] for n in names] for row in rows],
        [[_standard_error(agg, c, n) for n in names] for c in agg.candidates],
        dirs,
        names,
        z=TIE_Z,
    )
    for k, row in enumerate(rows):
        row["rank_within_noise"] = noisy.ranks[k]
        row["indistinguishable_from"] = [rows[j]["trial"] for j in noisy.alike(k)]
    return pareto_table(rows, names, dirs, title="Pareto front of candidate means")


def _standard_error(agg: StudyAggregate, c: CandidateSummary, score: str) -> float:
    """The standard error of ``c``'s mean ``score``: its own over seeds, or for a single
    run the score's pooled seed noise (0 when no seed noise was seen)."""
    s = c.spread(score)
    if s is None or s.n == 0:
        return math.nan
    if s.n >= 2:
        return s.sem
    noise = pooled_noise([x.scores[score] for x in agg.candidates if score in x.scores])
    return noise / math.sqrt(s.n) if math.isfinite(noise) else 0.0


def render_report(
    agg: StudyAggregate,
    out_dir: str | Path,
    *,
    study_name: str,
    train_len: int | None = None,
    findings: Sequence[Finding] | None = None,
    hypotheses_source: str = "",
    seed_plan: SeedPlan | None = None,
    stages: Sequence[Any] = (),
    decision_accuracy: DecisionAccuracy | None = None,
) -> dict[str, Path]:
    """Write the report of an aggregate (see :func:`build_report`); without
    ``findings``, the shipped paper hypotheses are judged (by preset name only)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if findings is None:
        findings, hypotheses_source, seed_plan = judge(agg, None)
    train_len = train_len or _train_len_from_niah(agg)
    paths: dict[str, Path] = {}
    figures: dict[str, Path | None] = {}
    if agg.candidates:
        figures[FIG_CURVES] = plot_curves(agg, out / FIG_CURVES, train_len)
        figures[FIG_NIAH] = plot_niah(agg, out / FIG_NIAH)
        figures[FIG_MASS] = plot_mass(agg, out / FIG_MASS, train_len)
    pareto = candidate_pareto(agg) if agg.candidates else None
    if pareto is not None and any(r["rank"] is not None for r in pareto.rows):
        figures[FIG_PARETO] = plot_pareto_png(pareto, out / FIG_PARETO)
        for kind, text in (
            ("csv", pareto.to_csv()),
            ("json", pareto.to_json()),
            ("md", pareto.to_markdown()),
        ):
            p = out / f"pareto.{kind}"
            p.write_text(text)
            paths[p.name] = p
    paths.update({name: p for name, p in figures.items() if p is not None})

    report = ReportInput(
        notes=tuple(tie_notes(agg)),
        signal_noise=tuple(signal_to_noise(o, agg.candidates) for o in agg.objective_names),
        stages=stages,
        agg=agg,
        study_name=study_name,
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        findings=tuple(findings),
        hypotheses_source=hypotheses_source,
        train_len=train_len,
        pareto=pareto,
        figures=figures,
        stability=tuple(rank_stability(agg)),
        seed_plan=seed_plan,
        decision_accuracy=decision_accuracy,
    )
    content = sections(report)
    paths[MD_NAME] = out / MD_NAME
    paths[MD_NAME].write_text(render_markdown(report, content))
    paths[HTML_NAME] = out / HTML_NAME
    paths[HTML_NAME].write_text(render_html(report, content))
    paths[SUMMARY_NAME] = out / SUMMARY_NAME
    paths[SUMMARY_NAME].write_text(
        json.dumps(summary(report), indent=2, allow_nan=False, default=str)
    )
    return paths
