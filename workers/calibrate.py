"""The pilot behind ``score.calibrate``: the difficulty at which a panel's scores rank.

A family every candidate solves (or none does) cannot rank them. Before the first trial,
:func:`pilot` trains each panel preset for ``score.calibrate.steps`` steps (the trial's own
loop, :func:`workers.candidate.run_candidate`), then scores it at the training length T on
a ladder of the family's difficulty parameter (:data:`space.tasks.DIFFICULTY`; the
ladder is :func:`ladder`), and :func:`pick_level` chooses the level at which every panel
member's accuracy lies inside ``score.calibrate.band``. The sweep driver records the
choice in the study (``search.calibration``) and every trial scores with it through
``score.task_params``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from space.expand import Candidate
from space.schema import SweepConfig
from space.tasks import (
    BYTE_BOUNDS,
    DIFFICULTY,
    TokenBounds,
    lowest_level,
    min_length,
    task_params,
)
from workers import scores
from workers.candidate import build_model, pick_device, run_candidate
from workers.checkpoint import load_latest
from workers.corpus import CorpusHandle, prepare
from workers.trial_folder import CHECKPOINT_FILE

# Levels tried when score.calibrate.levels leaves a family out: 0 (prefix distractors
# and noise_chars only), then powers of two while an example still fits.
_MAX_LEVEL = 1024


@dataclass(frozen=True)
class Calibration:
    """One family's choice: ``parameter`` = ``level``; ``inside`` when every panel
    member's accuracy at T lay inside the band there; ``accuracy[preset][level]``."""

    task: str
    parameter: str
    level: int
    inside: bool
    accuracy: Mapping[str, Mapping[int, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "parameter": self.parameter,
            "level": self.level,
            "inside": self.inside,
            "accuracy": {
                p: {str(k): v for k, v in by_level.items()} for p, by_level in self.accuracy.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        return cls(
            task=str(d["task"]),
            parameter=str(d["parameter"]),
            level=int(d["level"]),
            inside=bool(d["inside"]),
            accuracy={
                p: {int(k): float(v) for k, v in by_level.items()}
                for p, by_level in (d.get("accuracy") or {}).items()
            },
        )


def ladder(
    task: str, params: Mapping[str, Any], seq_len: int, bounds: TokenBounds = BYTE_BOUNDS
) -> tuple[int, ...]:
    """The difficulty levels of ``task`` to try: 0 (for prefix_distractors and
    noise_chars, :func:`space.tasks.lowest_level`) or 1, then powers of two, each valid
    with ``params`` and fitting in ``seq_len`` tokens."""
    name = DIFFICULTY[task]
    level = lowest_level(task)
    levels = []
    while level <= _MAX_LEVEL:
        try:
            need = min_length(task, bounds, **task_params(task, **{**params, name: level}))
        except ValueError:  # e.g. fewer needles than queries: the next level may do
            need = None
        if need is not None:
            if need > seq_len:
                break
            levels.append(level)
        level = 1 if level == 0 else 2 * level
    return tuple(levels)


def pick_level(
    accuracy: Mapping[str, Mapping[int, float]], band: tuple[float, float]
) -> tuple[int, bool]:
    """The level at which every panel member's accuracy (``accuracy[preset][level]``) lies
    inside ``band``; among several, the one with the widest spread across the panel (the
    one that separates it most), then the easier. With none inside: the level whose
    accuracies lie least far outside the band in total, then the easier. Returns the
    level and whether it was inside."""
    lo, hi = band
    levels = sorted(set.intersection(*(set(by_level) for by_level in accuracy.values())))
    if not levels:
        raise ValueError("the panel has no difficulty level scored for every member")

    def values(level: int) -> list[float]:
        return [float(by_level[level]) for by_level in accuracy.values()]

    inside = [lv for lv in levels if all(lo <= a <= hi for a in values(lv))]
    if inside:
        return max(inside, key=lambda lv: (np.ptp(values(lv)), -lv)), True

    def outside(level: int) -> float:
        return sum(max(lo - a, 0.0, a - hi) for a in values(level))

    return min(levels, key=lambda lv: (outside(lv), lv)), False


# Runs one panel member: trains it and returns its accuracy at T per level and family.
PanelScorer = Callable[[str, Candidate, Mapping[str, Sequence[int]]], dict[str, dict[int, float]]]


def pilot(
    config: SweepConfig,
    *,
    out_dir: Path,
    corpus: CorpusHandle | None = None,
    device: str | None = None,
    scorer: PanelScorer | None = None,
) -> dict[str, Calibration]:
    """Calibrate every scored family of ``config`` on its ``score.calibrate`` panel.

    ``scorer(preset, candidate, levels)`` trains one panel member and scores it at T on
    each family's levels (default: :func:`train_and_score`, in ``out_dir/<preset>``).
    """
    c = config.score.calibrate
    if c is None:
        raise ValueError("the sweep file has no score.calibrate")
    t, s = config.train, config.score
    handle = corpus if corpus is not None and corpus.is_here() else prepare(config)
    bounds = _bounds(handle)
    levels = {}
    for task in s.families:
        tried = c.levels.get(task) or ladder(
            task, s.params_for(task, t.task_params), t.final_seq_len, bounds
        )
        if tried:
            levels[task] = tuple(tried)
    if scorer is None:

        def scorer(preset, candidate, wanted):
            return train_and_score(
                config, candidate, wanted, out_dir=out_dir / preset, corpus=handle, device=device
            )

    accuracy: dict[str, dict[str, dict[int, float]]] = {task: {} for task in levels}
    for preset in c.panel:
        got = scorer(preset, config.preset_candidate(preset), levels)
        for task in levels:
            accuracy[task][preset] = got[task]
    out = {}
    for task, by_preset in accuracy.items():
        level, inside = pick_level(by_preset, c.band)
        out[task] = Calibration(task, DIFFICULTY[task], level, inside, by_preset)
    return out


def _bounds(handle: CorpusHandle) -> TokenBounds:
    if handle.tokenizer_kind in ("bytes", "none"):
        return BYTE_BOUNDS
    from workers.tasks import token_bounds

    return token_bounds(handle.open().tokenizer)


def train_and_score(
    config: SweepConfig,
    candidate: Candidate,
    levels: Mapping[str, Sequence[int]],
    *,
    out_dir: Path,
    corpus: CorpusHandle,
    device: str | None = None,
) -> dict[str, dict[int, float]]:
    """Train ``candidate`` for the pilot's steps, then its greedy accuracy at T on each
    family's ``levels`` (``score.calibrate.samples`` per depth)."""
    c = config.score.calibrate
    t, s = config.train, config.score
    steps = c.steps if c is not None and c.steps is not None else t.total_steps
    pilot_config = config.model_copy(
        update={
            "train": t.model_copy(update={"steps": steps, "tokens": None, "stages": ()}),
            "score": s.model_copy(
                update={"lengths": (1,), "extrap": (), "attention_mass": False, "samples": 1,
                        "val_windows": 1, "calibrate": None}
            ),
        }
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = t.seed
    run_candidate(pilot_config, candidate, seed=seed, out_dir=out_dir, corpus=corpus)
    found = load_latest(out_dir / CHECKPOINT_FILE)
    if found is None:
        raise RuntimeError(f"the pilot of {candidate.name} left no checkpoint in {out_dir}")
    model = build_model(candidate, seed)
    model.load_state_dict(found[0]["model"])
    dev = pick_device(config, device)
    model.to(dev).eval()
    data = corpus.open()
    out: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        for task, wanted in levels.items():
            base = s.params_for(task, t.task_params)
            out[task] = {}
            for level in wanted:
                grid = scores.niah_grid(
                    model,
                    data.val,
                    task=task,
                    lengths=[t.final_seq_len],
                    depths=s.depths,
                    samples=c.samples if c is not None else 1,
                    seed=s.seed,
                    device=dev,
                    task_params={**base, DIFFICULTY[task]: level},
                    tokenizer=data.tokenizer,
                    graded=False,
                )
                acc = scores.acc_at(grid, t.final_seq_len)
                out[task][level] = acc if math.isfinite(acc) else 0.0
    return out
