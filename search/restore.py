"""Where an interrupted trial continues from: the newest checkpoint it left."""

from __future__ import annotations

from pathlib import Path

from optuna.trial import FrozenTrial

from space.trial_attrs import TrialAttrs
from workers.trial_folder import newest_snapshot


def find_restore(trial: FrozenTrial) -> Path | None:
    """The newest checkpoint an unfinished trial left: its Ray trial's last checkpoint
    (the Ray experiment folder), its own trial folder, or what it had restored from."""
    attrs = TrialAttrs.of(trial.user_attrs)
    options: list[Path] = []
    ray_dir = attrs.ray_trial_dir
    if ray_dir and Path(ray_dir).is_dir():
        options += sorted(Path(ray_dir).glob("checkpoint_*"), reverse=True)
    for folder in (attrs.trial_dir, attrs.restore_from):
        if folder and Path(folder).is_dir():
            options.append(Path(folder))
    return newest_snapshot(options)
