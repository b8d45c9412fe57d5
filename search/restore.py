"""Where an interrupted trial continues from: the newest checkpoint it left."""

from __future__ import annotations

from pathlib import Path

from optuna.trial import FrozenTrial

from space.trial_attrs import ATTR_RAY_TRIAL_DIR, ATTR_RESTORE_FROM, ATTR_TRIAL_DIR
from workers.layout import newest_snapshot


def find_restore(trial: FrozenTrial) -> Path | None:
    """The newest checkpoint an unfinished trial left: its Ray trial's last checkpoint
    (the Ray experiment folder), its own trial folder, or what it had restored from."""
    attrs = trial.user_attrs
    options: list[Path] = []
    ray_dir = attrs.get(ATTR_RAY_TRIAL_DIR)
    if ray_dir and Path(ray_dir).is_dir():
        options += sorted(Path(ray_dir).glob("checkpoint_*"), reverse=True)
    for key in (ATTR_TRIAL_DIR, ATTR_RESTORE_FROM):
        if attrs.get(key) and Path(attrs[key]).is_dir():
            options.append(Path(attrs[key]))
    return newest_snapshot(options)
