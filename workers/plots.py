"""PNG plots of one candidate's scores (matplotlib, Agg backend: no display needed).

The heatmap cells and stacked bars are drawn by :mod:`workers.drawing`, which the
study report shares."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from space.tasks import SEGMENTS  # noqa: E402
from workers.drawing import draw_niah_cells, stacked_bars  # noqa: E402
from workers.scores import NiahResult  # noqa: E402


def _save(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_niah_heatmap(
    result: NiahResult | Mapping, path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Accuracy heatmap: one row per context length, one column per needle depth."""
    if not isinstance(result, NiahResult):
        result = NiahResult.from_dict(dict(result))
    acc = np.asarray(result.acc, dtype=float)  # (lengths, depths)
    fig, ax = plt.subplots(
        figsize=(1.2 + 0.9 * len(result.depths), 1.2 + 0.5 * len(result.lengths))
    )
    im = draw_niah_cells(ax, acc, result.lengths, result.depths)
    ax.set_xlabel("needle depth")
    ax.set_ylabel("context length (tokens)")
    fig.colorbar(im, ax=ax, label="exact-match accuracy")
    ax.set_title(title or f"{result.task}: accuracy by length and depth")
    return _save(fig, path)


def plot_attention_mass(mass: Mapping, path: str | os.PathLike[str], title: str = "") -> Path:
    """Stacked bars of Begin / Needle / Context / End attention fractions, per layer
    (left) and per layer kind (right); ``mass`` is :func:`workers.attention_mass.attention_mass`."""
    per_layer = list(mass["per_layer"])
    per_kind = dict(mass["per_kind"])
    fig, (ax_l, ax_k) = plt.subplots(
        1,
        2,
        figsize=(3 + 0.5 * len(per_layer) + 0.8 * len(per_kind), 3.8),
        gridspec_kw={"width_ratios": [max(len(per_layer), 1), max(len(per_kind), 1)]},
        sharey=True,
    )
    layer_labels = [f"{e['index']}\n{e['kind']}" for e in per_layer]
    stacked_bars(ax_l, layer_labels, [[e[s] for s in SEGMENTS] for e in per_layer])
    ax_l.set_title("per layer")
    ax_l.set_ylabel("fraction of attention (last prompt position)")
    stacked_bars(ax_k, list(per_kind), [[per_kind[k][s] for s in SEGMENTS] for k in per_kind])
    ax_k.set_title("per layer kind")
    ax_k.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    if title:
        fig.suptitle(title, y=1.02)
    return _save(fig, path)


def plot_loss_curves(history: Sequence[Mapping], path: str | os.PathLike[str]) -> Path:
    """Training loss against step, with validation bits per byte where recorded."""
    if not history:
        raise ValueError("plot_loss_curves needs at least one history entry")
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(steps, [h["train_loss"] for h in history], label="train loss")
    val = [(h["step"], h["val_bpb"]) for h in history if h.get("val_bpb") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation bits/byte")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
