"""Drawing helpers shared by one candidate's plots (:mod:`workers.plots`) and the study
report's figures (:mod:`tracking.report.figures`): the NIAH heatmap cells, stacked
attention-mass bars, the segment colours, an off-screen figure.

matplotlib and numpy only: no torch (the report must not import it), no pyplot (no
global backend switch: each figure draws on its own Agg canvas).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from space.tasks import SEGMENTS

__all__ = ["SEGMENT_COLORS", "draw_niah_cells", "new_figure", "stacked_bars"]

SEGMENT_COLORS = {
    "begin": "#4c72b0",
    "needle": "#dd8452",
    "context": "#bfbfbf",
    "end": "#55a868",
}


def new_figure(width: float, height: float, layout: str | None = None) -> Any:
    """A matplotlib Figure on its own Agg canvas (``fig.savefig`` works, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def draw_niah_cells(
    ax: Any,
    acc: Sequence[Sequence[float]],
    lengths: Sequence[int],
    depths: Sequence[float],
    fontsize: float = 8,
) -> Any:
    """Accuracy by context length (rows) and needle depth (columns), each cell
    annotated with its value (``-`` for NaN); returns the image for a colour bar."""
    grid = np.asarray(acc, dtype=float)  # (lengths, depths)
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
    ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=fontsize)
    ax.set_yticks(range(len(lengths)), [str(n) for n in lengths], fontsize=fontsize)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j]
            ax.text(
                j,
                i,
                f"{v:.2f}" if math.isfinite(v) else "-",
                ha="center",
                va="center",
                color="black" if v > 0.5 else "white",
                fontsize=fontsize,
            )
    return image


def stacked_bars(
    ax: Any,
    labels: Sequence[str],
    rows: Sequence[Sequence[float]],
    errors: Sequence[Sequence[float]] | None = None,
    horizontal: bool = False,
    fontsize: float = 7,
) -> None:
    """One bar per label, stacked by segment (Begin / Needle / Context / End, in
    :data:`space.tasks.SEGMENTS` order); ``errors`` draws each segment's error bar."""
    values = np.asarray(rows, dtype=float).reshape(len(labels), len(SEGMENTS))
    errs = None if errors is None else np.asarray(errors, dtype=float).reshape(values.shape)
    base = np.zeros(len(labels))
    where = np.arange(len(labels))
    for k, seg in enumerate(SEGMENTS):
        style = {"color": SEGMENT_COLORS[seg], "label": seg.capitalize()}
        if errs is not None:
            key = "xerr" if horizontal else "yerr"
            style[key] = errs[:, k]
            style["error_kw"] = {"elinewidth": 0.7, "capsize": 1.5, "alpha": 0.6}
        if horizontal:
            ax.barh(where, values[:, k], left=base, **style)
        else:
            ax.bar(where, values[:, k], bottom=base, **style)
        base += values[:, k]
    if horizontal:
        ax.set_yticks(where, labels, fontsize=fontsize)
        ax.set_xlim(0.0, 1.0)
    else:
        ax.set_xticks(where, labels, fontsize=fontsize)
        ax.set_ylim(0.0, 1.0)
