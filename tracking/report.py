"""The study report: what each variant is, the per-candidate table over seeds, the
curves, NIAH heatmaps, attention-mass profiles, the Pareto front and the paper's
claims checked on the data.

:func:`build_report` reads an Optuna study and writes ``report.html`` (self-contained:
images embedded as base64 PNG, no scripts or network), ``report.md`` (the same
content, images as PNG files beside it), ``summary.json`` (the aggregates and the
findings, for tools), the PNGs and the Pareto files. :func:`log_study_artifacts` puts
those files on the study's parent MLflow run.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from space.describe import describe_knobs
from space.names import (
    KV_CACHE_BYTES,
    LONG_ACC,
    SHORT_BPB,
    STUDY_ATTR_CONFIG,
    TOKENS_PER_S,
)
from space.presets import DESCRIPTIONS
from tracking.aggregate import CandidateSummary, Spread, StudyAggregate, aggregate_study
from tracking.claims import (
    DEGRADE_ACC_DROP,
    DEGRADE_BPB_RISE,
    FAR_MULTIPLE,
    KV_FAR_LESS_RATIO,
    LEARNED_ACC,
    MASS_LENGTH,
    SHORT_BPB_TOLERANCE,
    Finding,
    Verdict,
    check_claims,
)
from tracking.pareto import ParetoTable, pareto_table
from tracking.pareto_plots import plot_pareto_png

__all__ = ["build_report", "log_study_artifacts", "render_report"]

HTML_NAME = "report.html"
MD_NAME = "report.md"
SUMMARY_NAME = "summary.json"
FIG_CURVES = "accuracy_vs_length.png"
FIG_NIAH = "niah_heatmaps.png"
FIG_MASS = "attention_mass.png"
FIG_PARETO = "pareto.png"

SEGMENT_ORDER = ("begin", "needle", "context", "end")
SEGMENT_COLORS = {"begin": "#4c72b0", "needle": "#dd8452", "context": "#bfbfbf", "end": "#55a868"}

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


# -- number formatting -----------------------------------------------------------------


def _human_bytes(n: float) -> str:
    if not math.isfinite(n):
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _cell(s: Spread | None, score: str) -> tuple[str, str]:
    """(main text, range text) for a table cell."""
    if s is None or s.n == 0:
        return "-", ""
    if score == KV_CACHE_BYTES or score.endswith("_bytes"):
        main = _human_bytes(s.mean)
        if s.n > 1 and s.std > 0:
            main += f" ± {_human_bytes(s.std)}"
        return main, ""
    if score == TOKENS_PER_S:
        spec = ",.0f"
    elif score.startswith("acc") or score == LONG_ACC:
        spec = ".2f"
    else:
        spec = ".3f"
    if s.n == 1:
        return f"{s.mean:{spec}} (n=1)", ""
    return f"{s.mean:{spec}} ± {s.std:{spec}}", f"[{s.min:{spec}}, {s.max:{spec}}]"


# -- the table -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[list[tuple[str, str]]]  # (main, sub) per cell


def _score_columns(agg: StudyAggregate) -> list[tuple[str, str]]:
    """(score name, column label) in display order, only those some candidate has."""
    have = {name for c in agg.candidates for name in c.scores}
    cols = [(SHORT_BPB, "short_bpb ↓")]
    cols += [(f"acc@{m}x", f"acc@{m}x ↑") for m in agg.multiples("acc@")]
    cols += [(LONG_ACC, "long_acc ↑")]
    cols += [(f"extrap_bpb@{m}x", f"bpb@{m}x ↓") for m in agg.multiples("extrap_bpb@")]
    cols += [(KV_CACHE_BYTES, "KV cache ↓"), (TOKENS_PER_S, "tokens/s ↑")]
    return [(name, label) for name, label in cols if name in have]


def _candidate_table(agg: StudyAggregate) -> _Table:
    cols = _score_columns(agg)
    header = ["#", "candidate", "n", *[label for _, label in cols]]
    rows = []
    for i, c in enumerate(agg.candidates, start=1):
        row = [(str(i), ""), (c.name, c.candidate_name or ""), (str(c.n), _seeds(c))]
        row += [_cell(c.spread(name), name) for name, _ in cols]
        rows.append(row)
    return _Table(header, rows)


def _seeds(c: CandidateSummary) -> str:
    return "seeds " + ", ".join(str(s) for s in c.seeds)


def _mass_table(agg: StudyAggregate) -> _Table:
    header = ["candidate", "layer kind", "length", *[s.capitalize() for s in SEGMENT_ORDER]]
    rows = []
    for length in agg.mass_lengths():
        for c in agg.candidates:
            mass = c.attention_mass.get(length)
            if not mass:
                continue
            for kind, segs in mass["per_kind"].items():
                cells = [_cell(segs.get(s), "mass") for s in SEGMENT_ORDER]
                rows.append([(c.name, ""), (kind, ""), (length, ""), *cells])
    return _Table(header, rows)


# -- plots -----------------------------------------------------------------------------


def _figure(width: float, height: float, layout: str | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _styles(n: int) -> list[tuple[str, str, str]]:
    """(color, marker, linestyle) per candidate, distinct for up to 40 candidates."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    markers = "osD^vP*Xhp"
    lines = ["-", "--", ":", "-."]
    return [
        (cmap(i % 10), markers[(i // 10 + i) % len(markers)], lines[(i // 10) % len(lines)])
        for i in range(n)
    ]


def plot_curves(agg: StudyAggregate, path: Path, train_len: int | None) -> Path:
    """Accuracy vs context length (left) and bits/byte vs length (right), mean over seeds
    with error bars of one standard deviation, every candidate on the same axes."""
    fig = _figure(13, 5)
    ax_acc, ax_bpb = fig.subplots(1, 2)
    styles = _styles(len(agg.candidates))
    offsets = np.linspace(-0.06, 0.06, max(len(agg.candidates), 1))
    for (color, marker, ls), c, dx in zip(styles, agg.candidates, offsets, strict=False):
        acc = c.by_multiple("acc@")
        if acc:
            xs = np.array(list(acc)) * 2**dx  # a small dodge so error bars do not overlap
            ys = [s.mean for s in acc.values()]
            err = [s.std if s.n > 1 else 0.0 for s in acc.values()]
            ax_acc.errorbar(
                xs,
                ys,
                yerr=err,
                color=color,
                marker=marker,
                linestyle=ls,
                label=f"{c.name} (n={c.n})",
                capsize=3,
                markersize=5,
            )
        bpb = {}
        short = c.spread(SHORT_BPB)
        if short is not None and short.n:
            bpb[1] = short
        bpb.update(c.by_multiple("extrap_bpb@"))
        if bpb:
            xs = np.array(list(bpb)) * 2**dx
            ax_bpb.errorbar(
                xs,
                [s.mean for s in bpb.values()],
                yerr=[s.std if s.n > 1 else 0.0 for s in bpb.values()],
                color=color,
                marker=marker,
                linestyle=ls,
                label=c.name,
                capsize=3,
                markersize=5,
            )
    for ax, title, ylabel in (
        (ax_acc, "NIAH accuracy vs context length", "exact-match accuracy (mean ± std)"),
        (ax_bpb, "Bits per byte vs context length", "bits per byte (mean ± std)"),
    ):
        ax.set_xscale("log", base=2)
        ticks = sorted({m for c in agg.candidates for m in c.by_multiple("acc@")} | {1, 2, 4})
        ax.set_xticks(ticks)
        ax.set_xticklabels([_mult_label(m, train_len) for m in ticks], fontsize=8)
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("context length (multiple of the training length T)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    ax_acc.set_ylim(-0.03, 1.03)
    handles, labels = ax_acc.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _mult_label(m: int, train_len: int | None) -> str:
    return f"{m}x\n({m * train_len})" if train_len else f"{m}x"


def plot_niah(agg: StudyAggregate, path: Path) -> Path | None:
    """One NIAH heatmap per candidate (mean over seeds), side by side, shared colour scale."""
    with_grid = [c for c in agg.candidates if c.niah is not None]
    if not with_grid:
        return None
    cols = min(4, len(with_grid))
    rows = math.ceil(len(with_grid) / cols)
    first = with_grid[0].niah
    cell_w, cell_h = 0.62 * len(first.depths) + 1.4, 0.42 * len(first.lengths) + 1.3
    fig = _figure(cols * cell_w + 1.0, rows * cell_h + 0.6, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    for ax, c in zip(axes.flat, with_grid, strict=False):
        g = c.niah
        acc = np.array(g.acc, dtype=float)
        im = ax.imshow(acc, cmap="viridis", vmin=0, vmax=1, aspect="auto", origin="lower")
        ax.set_xticks(range(len(g.depths)), [f"{d:g}" for d in g.depths], fontsize=7)
        ax.set_yticks(range(len(g.lengths)), [str(n) for n in g.lengths], fontsize=7)
        for i in range(acc.shape[0]):
            for j in range(acc.shape[1]):
                v = acc[i, j]
                ax.text(
                    j,
                    i,
                    "-" if not math.isfinite(v) else f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if v > 0.5 else "white",
                )
        ax.set_title(f"{c.name} (n={g.n})", fontsize=9)
        ax.set_xlabel("needle depth", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("context (tokens)", fontsize=8)
    for ax in list(axes.flat)[len(with_grid) :]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=axes, label="exact-match accuracy", shrink=0.8)
    fig.suptitle("Needle in a haystack: accuracy by context length and depth (mean over seeds)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_mass(agg: StudyAggregate, path: Path, train_len: int | None) -> Path | None:
    """Figure-1 style: per layer kind, the fraction of the last prompt position's attention
    on Begin / Needle / Context / End; one panel per length (T, 4T), stacked bars."""
    lengths = agg.mass_lengths()
    bars: list[tuple[str, str]] = []  # (candidate, kind), in a fixed order for all panels
    for c in agg.candidates:
        for length in lengths:
            for kind in c.attention_mass.get(length, {}).get("per_kind", {}):
                if (c.name, kind) not in bars:
                    bars.append((c.name, kind))
    if not bars:
        return None
    by_name = {c.name: c for c in agg.candidates}
    fig = _figure(5.0 * len(lengths) + 1.5, 0.32 * len(bars) + 1.6)
    axes = fig.subplots(1, len(lengths), squeeze=False, sharey=True)[0]
    y = np.arange(len(bars))
    for ax, length in zip(axes, lengths, strict=True):
        left = np.zeros(len(bars))
        for seg in SEGMENT_ORDER:
            widths, errs = [], []
            for name, kind in bars:
                s = by_name[name].mass(length, kind, seg)
                widths.append(s.mean if s is not None and s.n else 0.0)
                errs.append(s.std if s is not None and s.n > 1 else 0.0)
            ax.barh(
                y,
                widths,
                left=left,
                color=SEGMENT_COLORS[seg],
                label=seg.capitalize(),
                xerr=errs,
                error_kw={"elinewidth": 0.7, "capsize": 1.5, "alpha": 0.6},
            )
            left += np.array(widths)
        ax.set_yticks(y, [f"{n} · {k}" for n, k in bars], fontsize=7)
        ax.set_xlim(0, 1.0)
        mult = length[:-1] if length.endswith("x") else length
        tokens = f" = {int(mult) * train_len} tokens" if train_len and mult.isdigit() else ""
        ax.set_title(f"context {length} T{tokens}", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].invert_yaxis()  # shared y: once, so the first candidate is on top
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.suptitle("Where the answering position looks, per layer kind (error bars: std over seeds)")
    fig.supxlabel("fraction of attention (mean over layers of the kind, then seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


# -- the Pareto front over candidates --------------------------------------------------


def candidate_pareto(agg: StudyAggregate) -> ParetoTable | None:
    """The Pareto front of candidate means (one point per candidate, not per seed run);
    ``trial`` is the candidate's row number in the report's table."""
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
    return pareto_table(rows, names, dirs, title="Pareto front of candidate means")


# -- rendering -------------------------------------------------------------------------


def _train_len(study: Any, agg: StudyAggregate) -> int | None:
    text = getattr(study, "user_attrs", {}).get(STUDY_ATTR_CONFIG) if study is not None else None
    if text:
        try:
            from space.schema import parse_config, parse_yaml

            return parse_config(parse_yaml(text)).train.seq_len
        except Exception:  # noqa: BLE001 - a stale stored config only loses axis labels
            pass
    for c in agg.candidates:
        if c.niah is not None and c.niah.lengths:
            return min(c.niah.lengths)
    return None


def build_report(study: Any, out_dir: str | Path) -> dict[str, Path]:
    """Aggregate ``study`` (an ``optuna.Study``), check the claims, write the report
    into ``out_dir``; returns file name -> path."""
    agg = aggregate_study(study)
    return render_report(
        agg,
        out_dir,
        study_name=study.study_name,
        train_len=_train_len(study, agg),
    )


def render_report(
    agg: StudyAggregate,
    out_dir: str | Path,
    *,
    study_name: str,
    train_len: int | None = None,
    findings: Sequence[Finding] | None = None,
) -> dict[str, Path]:
    """Write the report of an aggregate (see :func:`build_report`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    findings = list(findings) if findings is not None else check_claims(agg)
    paths: dict[str, Path] = {}
    figures: dict[str, Path | None] = {}
    if agg.candidates:
        figures[FIG_CURVES] = plot_curves(agg, out / FIG_CURVES, train_len)
        figures[FIG_NIAH] = plot_niah(agg, out / FIG_NIAH)
        figures[FIG_MASS] = plot_mass(agg, out / FIG_MASS, train_len)
    pareto = candidate_pareto(agg) if agg.candidates else None
    if pareto is not None and any(r["rank"] is not None for r in pareto.rows):
        figures[FIG_PARETO] = plot_pareto_png(pareto, out / FIG_PARETO)
        for name in ("csv", "json", "md"):
            p = out / f"pareto.{name}"
            p.write_text(
                {"csv": pareto.to_csv, "json": pareto.to_json, "md": pareto.to_markdown}[name]()
            )
            paths[p.name] = p
    for name, p in figures.items():
        if p is not None:
            paths[name] = p

    doc = _Document(agg, findings, pareto, figures, study_name, train_len)
    paths[MD_NAME] = out / MD_NAME
    paths[MD_NAME].write_text(doc.markdown())
    paths[HTML_NAME] = out / HTML_NAME
    paths[HTML_NAME].write_text(doc.html())
    paths[SUMMARY_NAME] = out / SUMMARY_NAME
    paths[SUMMARY_NAME].write_text(
        json.dumps(_summary(agg, findings, study_name), indent=2, allow_nan=False, default=str)
    )
    return paths


def _summary(agg: StudyAggregate, findings: Sequence[Finding], study_name: str) -> dict:
    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        return v

    candidates = []
    for c in agg.candidates:
        candidates.append(
            {
                "name": c.name,
                "candidate_id": c.candidate_id,
                "candidate_name": c.candidate_name,
                "preset": c.preset,
                "aliases": list(c.aliases),
                "knobs": {k: clean(v) for k, v in c.knobs.items()},
                "trials": list(c.trials),
                "seeds": [str(s) for s in c.seeds],
                "scores": {k: s.to_dict() for k, s in c.scores.items()},
                "niah": c.niah.to_dict() if c.niah else None,
                "not_complete": dict(c.not_complete),
            }
        )
    return {
        "study": study_name,
        "objectives": list(agg.objective_names),
        "directions": list(agg.directions),
        "state_counts": dict(agg.state_counts),
        "candidates": candidates,
        "without_complete": [
            {"name": c.name, "candidate_id": c.candidate_id, "not_complete": dict(c.not_complete)}
            for c in agg.without_complete
        ],
        "findings": [f.to_dict() for f in findings],
        "warnings": list(agg.warnings),
    }


_BADGE = {
    Verdict.SUPPORTED: ("supported", "#1a7f37"),
    Verdict.CONTRADICTED: ("contradicted", "#cf222e"),
    Verdict.UNDECIDED: ("undecided", "#6e7781"),
}

RULE_TEXT = (
    "How findings are decided: each check compares two sets of per-seed values by the "
    "difference of their means and its 95% confidence interval (Welch's t interval for two "
    "candidates; a paired t interval, matched by seed, for two measurements of the same runs). "
    "A claim is *supported* when the whole interval lies beyond the claim's margin, "
    "*contradicted* when it lies entirely on the other side, and *undecided* when the "
    "interval straddles the margin, when a side has fewer than two runs, or when a variant "
    "or score is missing. Margins: 'competitive' = short_bpb at most "
    f"{SHORT_BPB_TOLERANCE:.0%} above RoPE's; 'far less KV cache' = at most "
    f"{KV_FAR_LESS_RATIO:g}x RoPE's (computed from the layout, no noise); 'degrades past T' "
    f"= accuracy at >= {FAR_MULTIPLE}x T more than {DEGRADE_ACC_DROP:g} below acc@1x (only "
    f"judged when acc@1x >= {LEARNED_ACC:g}), or bits/byte at {FAR_MULTIPLE}x T more than "
    f"{DEGRADE_BPB_RISE:.0%} above short_bpb; attention-mass claims are judged at "
    f"{MASS_LENGTH} T."
)


class _Document:
    """The report's content, rendered to Markdown or HTML from one list of sections."""

    def __init__(
        self,
        agg: StudyAggregate,
        findings: Sequence[Finding],
        pareto: ParetoTable | None,
        figures: Mapping[str, Path | None],
        study_name: str,
        train_len: int | None,
    ) -> None:
        self.agg = agg
        self.findings = findings
        self.pareto = pareto
        self.figures = figures
        self.study_name = study_name
        self.train_len = train_len
        self.created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    # -- shared content --------------------------------------------------------------
    def _overview(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.agg.state_counts.items()))
        t = f"; training length T = {self.train_len} tokens" if self.train_len else ""
        return (
            f"{len(self.agg.candidates)} candidates with completed runs, "
            f"{sum(c.n for c in self.agg.candidates)} runs counted (trials: {counts or 'none'})"
            f"{t}. Every number is a mean over seeds ± the sample standard deviation, "
            "[min, max] below it; n is the number of seeds."
        )

    def _tally(self) -> str:
        counts = {v: sum(f.verdict is v for f in self.findings) for v in Verdict}
        return ", ".join(f"{n} {v.value}" for v, n in counts.items()) + f" of {len(self.findings)}"

    def _variants(self) -> list[tuple[str, str, str]]:
        """(name, layout name, sentence) per candidate."""
        out = []
        for c in (*self.agg.candidates, *self.agg.without_complete):
            sentence = describe_knobs(c.knobs) if c.knobs else "(knobs not recorded)"
            if c.preset in DESCRIPTIONS:
                sentence = f"{sentence} {DESCRIPTIONS[c.preset]}"
            if c.aliases:
                sentence += f" Same model as preset(s) {', '.join(c.aliases)}."
            out.append((c.name, c.candidate_name or "", sentence))
        return out

    def _notes(self) -> list[str]:
        notes = list(self.agg.warnings)
        for c in (*self.agg.candidates, *self.agg.without_complete):
            if c.not_complete:
                parts = ", ".join(f"{n} {label}" for label, n in c.not_complete.items())
                notes.append(f"{c.name}: runs not counted: {parts}")
        if self.pareto is not None:
            for r in self.pareto.rows:
                if r.get("excluded"):
                    notes.append(f"Pareto: {r['candidate']} left out ({r['excluded']})")
        return notes

    # -- Markdown --------------------------------------------------------------------
    def markdown(self) -> str:
        lines = [f"# Study `{self.study_name}`: RoPE / NoPE ablation report", ""]
        lines += [f"_Generated {self.created}._ {self._overview()}", ""]
        lines += ["## What the variants are", "", GLOSSARY, ""]
        for name, layout, sentence in self._variants():
            lines.append(
                f"- **{name}** (`{layout}`): {sentence}" if layout else f"- **{name}**: {sentence}"
            )
        lines += ["", "## Findings: the paper's claims on this study", "", f"{self._tally()}.", ""]
        for f in self.findings:
            lines.append(f"- **{f.verdict.value.upper()}** — {f.claim}  ")
            lines.append(f"  {f.detail}")
        lines += ["", f"_{RULE_TEXT}_", ""]
        lines += ["## Per-candidate scores (mean ± std over seeds)", ""]
        lines += _md_table(_candidate_table(self.agg))
        lines += ["", "## Accuracy and loss vs context length", ""]
        lines += self._md_figure(FIG_CURVES, "accuracy and bits/byte vs context length")
        lines += ["## Needle-in-a-haystack heatmaps (mean over seeds)", ""]
        lines += self._md_figure(FIG_NIAH, "NIAH heatmaps")
        lines += ["## Attention mass per layer kind (Begin / Needle / Context / End)", ""]
        lines += self._md_figure(FIG_MASS, "attention mass per layer kind")
        mass = _mass_table(self.agg)
        lines += _md_table(mass) if mass.rows else ["No attention-mass data in this study.", ""]
        lines += ["", "## Pareto front (candidate means)", ""]
        if self.pareto is None:
            lines += ["No objectives recorded on the study: no Pareto front.", ""]
        else:
            lines += [self.pareto.to_markdown().replace("| trial |", "| # |", 1), ""]
            lines += self._md_figure(FIG_PARETO, "Pareto front")
        lines += ["## Runs and notes", ""]
        notes = self._notes()
        lines += [f"- {n}" for n in notes] if notes else ["- every trial completed; no notes."]
        return "\n".join(lines) + "\n"

    def _md_figure(self, name: str, alt: str) -> list[str]:
        if self.figures.get(name) is None:
            return [f"No data for this figure ({alt}).", ""]
        return [f"![{alt}]({name})", ""]

    # -- HTML ------------------------------------------------------------------------
    def html(self) -> str:
        e = html.escape
        parts = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(self.study_name)} — ropenope report</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<h1>Study <code>{e(self.study_name)}</code>: RoPE / NoPE ablation report</h1>",
            f"<p class='meta'>Generated {e(self.created)}. {_inline(self._overview())}</p>",
            '<h2 id="variants">What the variants are</h2>',
            f"<p>{_inline(GLOSSARY)}</p><ul>",
        ]
        for name, layout, sentence in self._variants():
            lay = f" (<code>{e(layout)}</code>)" if layout else ""
            parts.append(f"<li><b>{e(name)}</b>{lay}: {e(sentence)}</li>")
        parts += ["</ul>", '<h2 id="findings">Findings: the paper\'s claims on this study</h2>']
        parts.append(f"<p>{html.escape(self._tally())}.</p>")
        parts.append('<ul class="findings">')
        for f in self.findings:
            label, color = _BADGE[f.verdict]
            parts.append(
                f'<li><span class="badge" style="background:{color}">{label}</span> '
                f"<b>{e(f.claim)}</b><br><span class='detail'>{e(f.detail)}</span></li>"
            )
        parts += ["</ul>", f"<p class='rule'>{e(RULE_TEXT)}</p>"]
        parts += ['<h2 id="table">Per-candidate scores (mean ± std over seeds)</h2>']
        parts.append(_html_table(_candidate_table(self.agg)))
        parts += ['<h2 id="curves">Accuracy and loss vs context length</h2>']
        parts.append(self._html_figure(FIG_CURVES, "accuracy and bits/byte vs context length"))
        parts += ['<h2 id="niah">Needle-in-a-haystack heatmaps (mean over seeds)</h2>']
        parts.append(self._html_figure(FIG_NIAH, "NIAH heatmaps"))
        parts += [
            '<h2 id="mass">Attention mass per layer kind (Begin / Needle / Context / End)</h2>'
        ]
        parts.append(self._html_figure(FIG_MASS, "attention mass per layer kind"))
        mass = _mass_table(self.agg)
        parts.append(_html_table(mass) if mass.rows else "<p>No attention-mass data.</p>")
        parts += ['<h2 id="pareto">Pareto front (candidate means)</h2>']
        if self.pareto is None:
            parts.append("<p>No objectives recorded on the study: no Pareto front.</p>")
        else:
            parts.append(_html_pareto(self.pareto))
            parts.append(self._html_figure(FIG_PARETO, "Pareto front"))
        parts += ['<h2 id="notes">Runs and notes</h2>', "<ul>"]
        notes = self._notes()
        parts += [f"<li>{e(n)}</li>" for n in notes] or ["<li>every trial completed.</li>"]
        parts += ["</ul>", "</body></html>"]
        return "\n".join(parts) + "\n"

    def _html_figure(self, name: str, alt: str) -> str:
        path = self.figures.get(name)
        if path is None:
            return f"<p>No data for this figure ({html.escape(alt)}).</p>"
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em;
       color: #1f2328; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f6f8fa; }
td.text { text-align: left; }
td small { color: #6e7781; display: block; }
code { background: #f6f8fa; padding: 0 3px; }
.badge { color: white; border-radius: 4px; padding: 1px 6px; font-size: 12px;
         font-variant: small-caps; }
.findings li { margin-bottom: 0.6em; }
.detail { color: #424a53; font-size: 13px; }
.rule, .meta { color: #57606a; font-size: 13px; }
figure { margin: 0.5em 0 1.5em; }
figure img { max-width: 100%; }
"""


def _inline(text: str) -> str:
    """Markdown ``**bold**`` and ``code`` spans to HTML, everything else escaped."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(t: _Table) -> list[str]:
    lines = [
        "| " + " | ".join(t.header) + " |",
        "| " + " | ".join("---" for _ in t.header) + " |",
    ]
    for row in t.rows:
        # Ranges ("[min, max]") follow the value; other sub-lines are HTML-only details.
        cells = [_md_escape(main + (f" {sub}" if sub.startswith("[") else "")) for main, sub in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _html_table(t: _Table) -> str:
    e = html.escape
    out = ["<table><thead><tr>", *[f"<th>{e(h)}</th>" for h in t.header], "</tr></thead><tbody>"]
    for row in t.rows:
        out.append("<tr>")
        for k, (main, sub) in enumerate(row):
            cls = ' class="text"' if k < 2 or not any(ch.isdigit() for ch in main) else ""
            small = f"<small>{e(sub)}</small>" if sub else ""
            out.append(f"<td{cls}>{e(main)}{small}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _html_pareto(p: ParetoTable) -> str:
    header = [
        "#",
        "rank",
        "candidate",
        "n",
        *[f"{n} ({d[:3]})" for n, d in zip(p.objective_names, p.directions, strict=True)],
    ]
    rows = []
    for r in p.rows:
        rank = "-" if r["rank"] is None else str(r["rank"])
        cells = [
            (str(r["trial"]), ""),
            (rank, ""),
            (str(r["candidate"]), ""),
            (str(r.get("n", "")), ""),
        ]
        for name in p.objective_names:
            v = r.get(name)
            if v is None:
                cells.append(("-", ""))
            elif name == KV_CACHE_BYTES or name.endswith("_bytes"):
                cells.append((_human_bytes(float(v)), ""))
            else:
                cells.append((f"{float(v):.4g}", ""))
        if r["rank"] == 0:
            cells[2] = (f"★ {cells[2][0]}", "")
        rows.append(cells)
    return (
        _html_table(_Table(header, rows))
        + "<p class='meta'>★ = on the Pareto front (rank 0) of the candidates' mean scores; # is the row in the table above.</p>"
    )


# -- MLflow ----------------------------------------------------------------------------


def log_study_artifacts(
    uri: str,
    experiment: str,
    study_name: str,
    paths: Mapping[str, Path] | Sequence[Path],
    artifact_path: str = "report",
) -> str:
    """Upload ``paths`` under ``artifact_path`` on the study's parent run; returns its id.

    The parent run is found the way the sweep's tracker finds it
    (:meth:`tracking.store.MlflowStore.ensure_parent`: the run tagged with the
    study and the study run kind); a study swept without tracking gets one, closed at once.
    """
    from tracking.store import MlflowStore
    from tracking.target import TrackingTarget, artifact_location

    store = MlflowStore(
        TrackingTarget(
            uri=uri,
            experiment=experiment,
            study=study_name,
            artifact_location=artifact_location(uri, experiment),
        )
    )
    run_id, created = store.ensure_parent(reopen=False)
    files = dict(paths) if isinstance(paths, Mapping) else {Path(p).name: p for p in paths}
    store.log_files(run_id, {name: Path(p) for name, p in files.items()}, artifact_path)
    if created:
        store.terminate(run_id, "FINISHED")
    return run_id
