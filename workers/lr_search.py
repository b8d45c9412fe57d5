"""A learning rate per candidate (``train.lr_search``): short pilots, then the full run at
the best value.

Before a trial's seeds train, one pilot per value of ``train.lr_search.values`` trains the
candidate on the sweep's first seed, ``train.seed`` (:func:`pilot_seed`; the same initial
weights and the same batches for every value, so only the learning rate differs), for
``pilot_steps`` steps: a whole short
run with the train section's warmup and its own cosine decay to the end, so the losses
compare at the end of a schedule rather than in the middle of one. The value with the
lowest final validation bits per byte (``val_bpb``) wins; a pilot that diverges, or whose
final loss is not finite, loses. Every seed of the trial then trains the full run at the
winner (:func:`with_lr`). When every pilot loses, the trial is DIVERGED.

The trial folder keeps the pilots: the record :data:`RECORD_FILE` is rewritten after each
pilot, and each pilot checkpoints in ``lr_search/lr_<value>/`` (``workers.trial_folder`` snapshots
and restores both with the seeds' checkpoints), so a trial killed mid-pilot, or after the
pilots, reruns no finished pilot and continues an unfinished one from its checkpoint.

Torch-free: the pilot itself is the caller's (``workers.candidate.run_pilot``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from space.outcomes import RunStatus
from space.schema import SweepConfig
from workers.trial_folder import LR_PILOTS_DIR, LR_SEARCH_FILE, write_atomic

RECORD_FILE = LR_SEARCH_FILE


@dataclass(frozen=True)
class Pilot:
    """One pilot's end: its status (a ``RunStatus`` value), its final validation bits per
    byte (None when it has none that is finite) and why it ended otherwise."""

    lr: float
    status: str
    val_bpb: float | None
    reason: str | None = None

    @property
    def finite(self) -> bool:
        return (
            self.status == RunStatus.COMPLETE
            and self.val_bpb is not None
            and math.isfinite(self.val_bpb)
        )


@dataclass
class LrChoice:
    """The pilots of one trial and the value they chose (None: every pilot lost)."""

    seed: int
    steps: int
    values: tuple[float, ...]
    pilots: list[Pilot] = field(default_factory=list)

    @property
    def chosen(self) -> float | None:
        finite = [p for p in self.pilots if p.finite]
        if len(self.pilots) < len(self.values) or not finite:
            return None
        # ties go to the smaller value: the safer learning rate
        return min(finite, key=lambda p: (p.val_bpb, p.lr)).lr

    @property
    def done(self) -> dict[float, Pilot]:
        return {p.lr: p for p in self.pilots}

    def to_dict(self) -> dict[str, Any]:
        """The record and the trial's ``lr_search`` user attribute (strict JSON)."""
        return {
            "seed": self.seed,
            "steps": self.steps,
            "values": list(self.values),
            "pilots": [asdict(p) for p in self.pilots],
            "chosen": self.chosen,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LrChoice:
        return cls(
            seed=int(data["seed"]),
            steps=int(data["steps"]),
            values=tuple(float(v) for v in data["values"]),
            pilots=[Pilot(**p) for p in data["pilots"]],
        )


def pilot_seed(config: SweepConfig) -> int:
    """The seed every pilot trains with: ``train.seed``, the first seed of every candidate,
    whatever seeds a trial trains. So the learning rate is the candidate's, not its seeds':
    a later round of adaptive seeds (a trial of seeds 2 and 3) repeats the first round's
    pilots and makes the same choice, rather than training its seeds at another value."""
    return config.train.seed


def pilot_dir(trial_dir: Path, lr: float) -> Path:
    """Where the pilot at ``lr`` checkpoints."""
    return Path(trial_dir) / LR_PILOTS_DIR / f"lr_{lr:g}"


def pilot_config(config: SweepConfig, lr: float) -> SweepConfig:
    """The sweep as a pilot at ``lr`` trains it: ``pilot_steps`` steps, no search of its own."""
    t = config.train
    search = t.lr_search
    if search is None:
        raise ValueError("the sweep has no train.lr_search")
    steps = search.pilot_steps(t.total_steps)
    train = t.model_copy(update={"lr": lr, "steps": steps, "tokens": None, "lr_search": None})
    return config.model_copy(update={"train": train})


def with_lr(config: SweepConfig, lr: float) -> SweepConfig:
    """The sweep as the trial's seeds train it once the pilots chose ``lr``."""
    return config.model_copy(update={"train": config.train.model_copy(update={"lr": lr})})


def read_record(trial_dir: Path) -> LrChoice | None:
    """The pilots recorded in the trial folder; None when there is no readable record."""
    try:
        data = json.loads((Path(trial_dir) / RECORD_FILE).read_text())
        return LrChoice.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def choose_lr(
    config: SweepConfig,
    trial_dir: Path,
    seed: int,
    pilot: Callable[[SweepConfig, float, Path], Pilot],
    *,
    fresh: bool = False,
) -> LrChoice:
    """Run the pilots not yet recorded in ``trial_dir`` (``pilot(pilot_config, lr, folder)``,
    in the order of ``values``), recording each as it ends; the choice they make.

    A record made with another seed, pilot length or set of values is not this search's
    and is started over, as is any record with ``fresh``."""
    search = config.train.lr_search
    if search is None:
        raise ValueError("the sweep has no train.lr_search")
    steps = search.pilot_steps(config.train.total_steps)
    new = LrChoice(seed=seed, steps=steps, values=tuple(search.values))
    found = None if fresh else read_record(trial_dir)
    same = found is not None and (found.seed, found.steps, found.values) == (
        new.seed,
        new.steps,
        new.values,
    )
    choice = found if same and found is not None else new
    done = choice.done
    for lr in search.values:
        if lr in done:
            continue
        choice.pilots.append(pilot(pilot_config(config, lr), lr, pilot_dir(trial_dir, lr)))
        write_atomic(Path(trial_dir) / RECORD_FILE, json.dumps(choice.to_dict(), indent=2))
    return choice


def describe(choice: LrChoice) -> str:
    """One line: every pilot's loss and the winner, e.g. ``lr 3e-3 (val_bpb 1e-3: 2.31,
    3e-3: 2.25, 1e-2: diverged)``."""
    parts = []
    for p in choice.pilots:
        parts.append(f"{p.lr:g}: {p.val_bpb:.4g}" if p.finite else f"{p.lr:g}: {p.status}")
    chosen = choice.chosen
    head = f"lr {chosen:g}" if chosen is not None else "no lr"
    return f"{head} (pilot val_bpb {', '.join(parts)})"
