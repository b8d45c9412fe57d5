"""What a trial keeps on disk once it ends (``resources.keep``), and what ``ropenope gc``
removes from a study.

While it trains, each seed of a trial keeps two checkpoints (``checkpoint.pt`` and
``checkpoint.prev.pt``, :mod:`workers.trial_folder`) and Tune keeps one snapshot of both in the
Ray trial folder (``checkpoint_NNNNNN``). Weights plus AdamW moments are 12 bytes per
parameter, so that is about 48 bytes per parameter per seed until the trial ends. Then:

- ``keep: last`` (the default): each seed keeps its newest checkpoint, nothing else: the
  previous checkpoint, Tune's snapshots and stale temporaries go (12 bytes per parameter
  per seed);
- ``keep: best``: as ``last`` when a trial ends; ``ropenope gc`` then keeps checkpoints
  only for the trials on the study's Pareto front;
- ``keep: all``: nothing is removed when a trial ends.

A trial that runs again (FAIL ``interrupted`` or ``worker_died``, :data:`RERUN_REASONS`)
keeps everything until its re-run has finished: the re-run continues from it. After that
nothing of it is needed. ``ropenope gc`` applies the same rules to every trial of a study,
Tune snapshots and temporaries included whatever ``keep`` says (they are copies).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from optuna.trial import FrozenTrial, TrialState

from space.outcomes import RERUN_REASONS
from space.trial_attrs import TrialAttrs
from workers.trial_folder import (
    CHECKPOINT_FILE,
    LR_PILOTS_DIR,
    PREVIOUS_CHECKPOINT_FILE,
    seed_dirs,
)

log = logging.getLogger("ropenope.retention")

Keep = Literal["last", "best", "all"]
# Tune's checkpoint folders inside a Ray trial folder.
TUNE_SNAPSHOT_GLOB = "checkpoint_*"
# What a crash can leave half-written in a trial folder: a checkpoint's temporary file
# (workers.checkpoint.save), a snapshot being staged for Tune (workers.ray_trainable).
_TEMPORARY_GLOBS = (".*.tmp", ".snapshot-*")


@dataclass
class Removal:
    """Paths to remove (files or folders) and the bytes they hold on disk."""

    paths: list[Path] = field(default_factory=list)
    bytes: int = 0
    _seen: set[tuple[int, int]] = field(default_factory=set, repr=False)

    def add(self, path: Path) -> None:
        if path in self.paths or not (path.is_file() or path.is_dir()):
            return
        self.paths.append(path)
        self.bytes += self._size(path)

    def _size(self, path: Path) -> int:
        """Bytes of a file or folder, a hard-linked file counted once."""
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total = 0
        for f in files:
            st = f.stat()
            if (st.st_dev, st.st_ino) not in self._seen:
                self._seen.add((st.st_dev, st.st_ino))
                total += st.st_size
        return total

    def apply(self) -> int:
        """Remove every path; returns the bytes freed."""
        for path in self.paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return self.bytes


def _folder(value: str | None) -> Path | None:
    return Path(value) if value and Path(value).is_dir() else None


def runs_again(trial: FrozenTrial, trials: Iterable[FrozenTrial]) -> bool:
    """Whether ``trial`` ended for a re-run whose own trial has not finished yet."""
    if (
        trial.state != TrialState.FAIL
        or TrialAttrs.of(trial.user_attrs).reason not in RERUN_REASONS
    ):
        return False
    reruns = [t for t in trials if TrialAttrs.of(t.user_attrs).rerun_of == trial.number]
    return not any(t.state.is_finished() for t in reruns)


def plan_trial(
    trial: FrozenTrial,
    trials: Iterable[FrozenTrial],
    keep: Keep,
    *,
    collect: bool = False,
    front: set[int] | None = None,
    into: Removal | None = None,
) -> Removal:
    """What ``keep`` removes of a finished ``trial`` (``trials``: the whole study, to see
    its re-runs). ``collect``: ``ropenope gc`` (Tune snapshots go whatever ``keep`` says,
    and with ``best`` every checkpoint of a trial not in ``front``, the Pareto front)."""
    removal = into if into is not None else Removal()
    trials = list(trials)
    if not trial.state.is_finished() or runs_again(trial, trials):
        return removal
    if keep == "all" and not collect:
        return removal
    attrs = TrialAttrs.of(trial.user_attrs)
    superseded = trial.state == TrialState.FAIL and attrs.reason in RERUN_REASONS
    drop_all = superseded or (collect and keep == "best" and trial.number not in (front or set()))
    ray_dir = _folder(attrs.ray_trial_dir)
    if ray_dir is not None:
        for snap in sorted(ray_dir.glob(TUNE_SNAPSHOT_GLOB)):
            if snap.is_dir():
                removal.add(snap)
    trial_dir = _folder(attrs.trial_dir)
    if trial_dir is None:
        return removal
    for pattern in _TEMPORARY_GLOBS:
        for stale in trial_dir.rglob(pattern):
            removal.add(stale)
    for folder in seed_dirs(trial_dir):
        if keep != "all" or drop_all:
            removal.add(folder / PREVIOUS_CHECKPOINT_FILE)
        if drop_all:
            removal.add(folder / CHECKPOINT_FILE)
    if keep != "all" or drop_all:  # train.lr_search's pilots: their record is what stays
        for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
            for stale in (trial_dir / LR_PILOTS_DIR).glob(f"*/{name}"):
                removal.add(stale)
    return removal


def retain_trial(trial: FrozenTrial, trials: Iterable[FrozenTrial], keep: Keep) -> int:
    """Apply ``keep`` to a trial that just ended, and to the interrupted trial it re-ran
    (now superseded); returns the bytes freed. A failure to remove is logged, never
    raised: disk policy must not fail a sweep."""
    trials = list(trials)
    removal = plan_trial(trial, trials, keep)
    rerun_of = TrialAttrs.of(trial.user_attrs).rerun_of
    for earlier in trials:
        if earlier.number == rerun_of:
            plan_trial(earlier, trials, keep, into=removal)
    try:
        return removal.apply()
    except OSError as err:
        log.warning("retention of trial %s: %s", trial.number, err)
        return 0


def plan_study(trials: list[FrozenTrial], keep: Keep, front: set[int]) -> Removal:
    """What ``ropenope gc`` removes from a study (see the module docstring)."""
    removal = Removal()
    for trial in trials:
        plan_trial(trial, trials, keep, collect=True, front=front, into=removal)
    return removal


def disk_bytes(paths: Iterable[Path]) -> int:
    """Bytes under ``paths`` (files or folders), hard links counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in paths:
        if not Path(top).exists():
            continue
        for root, _dirs, files in os.walk(top):
            for name in files:
                st = os.stat(os.path.join(root, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total
