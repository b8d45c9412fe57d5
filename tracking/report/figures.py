"""The report's figures over candidates (means over seeds, error bars of one standard
deviation): accuracy and bits/byte against context length, NIAH heatmaps side by side,
attention mass per layer kind. The heatmap cells and stacked bars are drawn by
:mod:`workers.drawing`, as in one candidate's own plots (:mod:`workers.plots`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from space.names import SHORT_BPB, multiple_of
from space.tasks import SEGMENTS
from tracking.aggregate import StudyAggregate
from workers.drawing import draw_niah_cells, new_figure, stacked_bars

__all__ = ["plot_curves", "plot_mass", "plot_niah"]


def _styles(n: int) -> list[tuple[object, str, str]]:
    """(color, marker, linestyle) per candidate, distinct for up to 40 candidates."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    markers = "osD^vP*Xhp"
    lines = ["-", "--", ":", "-."]
    return [
        (cmap(i % 10), markers[(i // 10 + i) % len(markers)], lines[(i // 10) % len(lines)])
        for i in range(n)
    ]


def _mult_label(m: int, train_len: int | None) -> str:
    return f"{m}x\n({m * train_len})" if train_len else f"{m}x"


def task_families(agg: StudyAggregate) -> list[str]:
    """The task families the study scored separately (scores named ``<family>/acc@Nx``);
    ``[]`` when it scored one family under the bare names."""
    found = {
        name.split("/", 1)[0]
        for c in agg.candidates
        for name in c.scores
        if "/" in name and multiple_of(name.split("/", 1)[1], "acc@") is not None
    }
    return sorted(found)


def plot_curves(agg: StudyAggregate, path: Path, train_len: int | None) -> Path:
    """Accuracy vs context length, one panel per task family, and bits/byte vs length
    (right), mean over seeds with error bars of one standard deviation, every candidate
    on the same axes."""
    families = task_families(agg)
    panels = [(f"{f}: accuracy vs context length", f"{f}/acc@") for f in families] or [
        ("NIAH accuracy vs context length", "acc@")
    ]
    fig = new_figure(6.5 * (len(panels) + 1), 5)
    axes = list(np.atleast_1d(fig.subplots(1, len(panels) + 1)))
    acc_axes, ax_bpb = axes[:-1], axes[-1]
    styles = _styles(len(agg.candidates))
    offsets = np.linspace(-0.06, 0.06, max(len(agg.candidates), 1))
    for (color, marker, ls), c, dx in zip(styles, agg.candidates, offsets, strict=False):
        style = {"color": color, "marker": marker, "linestyle": ls, "capsize": 3, "markersize": 5}
        for ax_acc, (_, prefix) in zip(acc_axes, panels, strict=True):
            acc = c.by_multiple(prefix)
            if acc:
                xs = np.array(list(acc)) * 2**dx  # a small dodge so error bars do not overlap
                ax_acc.errorbar(
                    xs,
                    [s.mean for s in acc.values()],
                    yerr=[s.std if s.n > 1 else 0.0 for s in acc.values()],
                    label=f"{c.name} (n={c.n})",
                    **style,
                )
        bpb = {}
        short = c.spread(SHORT_BPB)
        if short is not None and short.n:
            bpb[1] = short
        bpb.update(c.by_multiple("extrap_bpb@"))
        if bpb:
            ax_bpb.errorbar(
                np.array(list(bpb)) * 2**dx,
                [s.mean for s in bpb.values()],
                yerr=[s.std if s.n > 1 else 0.0 for s in bpb.values()],
                label=c.name,
                **style,
            )
    ticks = sorted(
        {m for c in agg.candidates for _, p in panels for m in c.by_multiple(p)} | {1, 2, 4}
    )
    titled = [
        (ax, title, "exact-match accuracy (mean ± std)")
        for ax, (title, _) in zip(acc_axes, panels, strict=True)
    ]
    titled.append((ax_bpb, "Bits per byte vs context length", "bits per byte (mean ± std)"))
    for ax, title, ylabel in titled:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.set_xticklabels([_mult_label(m, train_len) for m in ticks], fontsize=8)
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("context length (multiple of the training length T)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    for ax_acc in acc_axes:
        ax_acc.set_ylim(-0.03, 1.03)
    handles, labels = acc_axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_niah(agg: StudyAggregate, path: Path) -> Path | None:
    """One NIAH heatmap per candidate (mean over seeds), side by side, shared colour scale."""
    with_grid = [c for c in agg.candidates if c.niah is not None]
    if not with_grid:
        return None
    cols = min(4, len(with_grid))
    rows = math.ceil(len(with_grid) / cols)
    first = with_grid[0].niah
    cell_w, cell_h = 0.62 * len(first.depths) + 1.4, 0.42 * len(first.lengths) + 1.3
    fig = new_figure(cols * cell_w + 1.0, rows * cell_h + 0.6, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for ax, c in zip(axes.flat, with_grid, strict=False):
        g = c.niah
        image = draw_niah_cells(ax, g.acc, g.lengths, g.depths, fontsize=8)
        ax.set_title(f"{c.name} (n={g.n})", fontsize=9)
        ax.set_xlabel("needle depth", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("context (tokens)", fontsize=8)
    for ax in list(axes.flat)[len(with_grid) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes, label="exact-match accuracy", shrink=0.8)
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
    fig = new_figure(5.0 * len(lengths) + 1.5, 0.32 * len(bars) + 1.6)
    axes = fig.subplots(1, len(lengths), squeeze=False, sharey=True)[0]
    for ax, length in zip(axes, lengths, strict=True):
        values, errors = [], []
        for name, kind in bars:
            spreads = [by_name[name].mass(length, kind, seg) for seg in SEGMENTS]
            values.append([s.mean if s is not None and s.n else 0.0 for s in spreads])
            errors.append([s.std if s is not None and s.n > 1 else 0.0 for s in spreads])
        stacked_bars(ax, [f"{n} · {k}" for n, k in bars], values, errors, horizontal=True)
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
