"""Plots are written as valid, non-trivial PNG images."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from workers.plots import plot_attention_mass, plot_loss_curves, plot_niah_heatmap
from workers.scores import NiahResult
from workers.tasks import SEGMENTS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path, min_width: int = 200) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    height, width = image.shape[:2]
    assert width >= min_width and height >= 150
    # Non-trivial: many distinct colours, not a blank canvas.
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 20


def test_plot_niah_heatmap_writes_png(tmp_path):
    result = NiahResult(
        lengths=(64, 128, 256),
        depths=(0.0, 0.25, 0.5, 0.75, 1.0),
        acc=((1, 1, 1, 1, 1), (1, 0.8, 0.5, 0.3, 0.2), (0.9, 0.2, 0, 0, 0)),
    )
    out = plot_niah_heatmap(result, tmp_path / "sub" / "niah.png", "RoPE")
    _assert_png(out)
    # The JSON form is accepted as well.
    _assert_png(plot_niah_heatmap(result.to_dict(), tmp_path / "niah2.png", "from dict"))


def test_plot_attention_mass_writes_png(tmp_path):
    fractions = [
        (0.7, 0.1, 0.1, 0.1),
        (0.2, 0.5, 0.2, 0.1),
        (0.1, 0.1, 0.6, 0.2),
        (0.05, 0.8, 0.1, 0.05),
    ]
    kinds = ["local_rope"] * 3 + ["global_nope"]
    per_layer = [
        {"index": i, "kind": k, **dict(zip(SEGMENTS, f, strict=True))}
        for i, (k, f) in enumerate(zip(kinds, fractions, strict=True))
    ]
    per_kind = {
        "local_rope": dict(zip(SEGMENTS, np.mean(fractions[:3], axis=0).tolist(), strict=True)),
        "global_nope": dict(zip(SEGMENTS, fractions[3], strict=True)),
    }
    mass = {"segments": list(SEGMENTS), "per_layer": per_layer, "per_kind": per_kind}
    _assert_png(plot_attention_mass(mass, tmp_path / "mass.png", "attention mass at 4T"))


def test_plot_loss_curves_writes_png(tmp_path):
    history = [
        {
            "step": s,
            "train_loss": 3.0 * np.exp(-s / 300) + 1.5,
            "val_bpb": (2.5 - s / 1000) if s % 100 == 0 else None,
        }
        for s in range(0, 1000, 10)
    ]
    _assert_png(plot_loss_curves(history, tmp_path / "loss.png"))
    with pytest.raises(ValueError, match="at least one"):
        plot_loss_curves([], tmp_path / "empty.png")
