"""A trial's folder on disk, the one home of its layout.

::

    <trial_dir>/seed_<n>/checkpoint.pt     the newest checkpoint of seed n (exact resume)
                         checkpoint.prev.pt  the one before it (a corrupt newest falls back)
                         scores.json       the seed's result once it ended (CandidateResult)
                         candidate.yaml    the resolved candidate and the seed
                         *.png             plots (NIAH heatmap, attention mass, loss curves)
    <trial_dir>/lr_search.json             train.lr_search: the pilots so far and their choice
    <trial_dir>/lr_search/lr_<v>/checkpoint.pt   the pilot at learning rate v (exact resume)

The trainer writes it (``workers.candidate``); the Ray adapter snapshots it into Tune
checkpoints and restores it (:func:`snapshot`, :func:`restore_into`); the driver picks the
newest snapshot to continue an interrupted trial (:func:`newest_snapshot`); tracking uploads
its files and reads each seed's result (:func:`seed_dirs`, :func:`read_result`).
Torch-free: every layer above ``workers`` may import it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workers.results import CandidateResult

SEED_DIR_PREFIX = "seed_"
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"
SCORES_FILE = "scores.json"
CANDIDATE_FILE = "candidate.yaml"
# Files of a seed folder that belong in the trial's MLflow run.
ARTIFACT_PATTERNS = (CANDIDATE_FILE, SCORES_FILE, "*.png")
# What resuming a seed needs; everything else is rebuilt.
_RESUME_FILES = (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, SCORES_FILE)
# train.lr_search (workers.lr_search): the record of the pilots, and their own folders.
LR_SEARCH_FILE = "lr_search.json"
LR_PILOTS_DIR = "lr_search"


def seed_dir(trial_dir: Path, seed: int) -> Path:
    return Path(trial_dir) / f"{SEED_DIR_PREFIX}{seed}"


def seed_of(folder: Path) -> int | None:
    """The seed a ``seed_<n>`` folder holds, or None for another name."""
    suffix = folder.name[len(SEED_DIR_PREFIX) :]
    if folder.name.startswith(SEED_DIR_PREFIX) and suffix.lstrip("-").isdigit():
        return int(suffix)
    return None


def seed_dirs(trial_dir: Path | str | None) -> list[Path]:
    """The trial's seed folders, by seed; ``[]`` when the folder is not there."""
    if not trial_dir or not Path(trial_dir).is_dir():
        return []
    found = [p for p in Path(trial_dir).glob(f"{SEED_DIR_PREFIX}*") if p.is_dir()]
    return sorted((p for p in found if seed_of(p) is not None), key=lambda p: seed_of(p))


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) never sees half a file:
    a unique temporary name in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_scores(folder: Path) -> dict[str, Any] | None:
    """A seed folder's ``scores.json`` as a dict; None when missing or unreadable."""
    try:
        data = json.loads((Path(folder) / SCORES_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished_seed(folder: Path) -> CandidateResult | None:
    """The result of a seed whose folder says it completed, else None."""
    data = read_scores(folder)
    if data is None or data.get("status") != "complete":
        return None
    return CandidateResult(
        status="complete",
        reason=None,
        scores={k: (math.nan if v is None else float(v)) for k, v in data["scores"].items()},
        niah=data.get("niah") or {},
        attention_mass=data.get("attention_mass"),
        history=data.get("history", []),
        candidate=data.get("candidate", {}),
        seed=data.get("seed", seed_of(Path(folder)) or 0),
        resumed_from_step=data.get("resumed_from_step"),
    )


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # checkpoints are replaced atomically: a hard link is a snapshot
    except OSError:
        shutil.copy2(src, dst)


def resume_files(trial_dir: Path | str) -> list[Path]:
    """What resuming the trial needs, relative to ``trial_dir``: each seed's checkpoints and
    the result of seeds already finished, and the learning-rate pilots' record and
    checkpoints."""
    root = Path(trial_dir)
    found = [
        f.relative_to(root)
        for d in seed_dirs(root)
        for f in (d / n for n in _RESUME_FILES)
        if f.is_file()
    ]
    if (root / LR_SEARCH_FILE).is_file():
        found.append(Path(LR_SEARCH_FILE))
    pilots = root / LR_PILOTS_DIR
    if pilots.is_dir():
        for folder in sorted(p for p in pilots.iterdir() if p.is_dir()):
            for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
                if (folder / name).is_file():
                    found.append((folder / name).relative_to(root))
    return found


def snapshot(trial_dir: Path, dest: Path) -> bool:
    """Gather what resuming needs (:func:`resume_files`) into ``dest``. Returns False when
    there is nothing to keep yet."""
    found = resume_files(trial_dir)
    for rel in found:
        _link_or_copy(Path(trial_dir) / rel, Path(dest) / rel)
    return bool(found)


def restore_into(source: Path, trial_dir: Path) -> bool:
    """Copy a snapshot (a Tune checkpoint or an earlier trial folder) into ``trial_dir``;
    files already there are newer and kept. Returns whether anything was restored."""
    restored = False
    for rel in resume_files(source):
        src, dst = Path(source) / rel, Path(trial_dir) / rel
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            restored = True
    return restored


def newest_write(folder: Path) -> float:
    """When resumable state under ``folder`` was last written (-1: there is none)."""
    if not Path(folder).is_dir():
        return -1.0
    files = [Path(folder) / rel for rel in resume_files(folder)]
    return max((f.stat().st_mtime for f in files), default=-1.0)


def newest_snapshot(candidates: Iterable[Path]) -> Path | None:
    """Of several folders holding snapshots (Tune checkpoints, trial folders), the one
    written last; None when none holds anything to resume from."""
    scored = [(p, newest_write(p)) for p in candidates if Path(p).is_dir()]
    scored = [(p, t) for p, t in scored if t >= 0]
    return max(scored, key=lambda pt: pt[1])[0] if scored else None
