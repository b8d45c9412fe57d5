"""``score.calibrate`` in a sweep: the pilot runs once per study, before its first trial
(:func:`workers.calibrate.pilot`); its choice is stored in the study's user attributes and
read back by every later driver, so a resumed study scores with the difficulty the first
run picked, and never runs the pilot again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.names import STUDY_ATTR_CALIBRATION
from space.schema import SweepConfig

if TYPE_CHECKING:  # torch only when a sweep calibrates
    from workers.calibrate import Calibration


def calibrated(
    study: Any,
    config: SweepConfig,
    out_dir: Path,
    corpus: Any = None,
    note: Callable[[str], None] = print,
    *,
    run_pilot: Callable[..., dict[str, Calibration]] | None = None,
) -> SweepConfig:
    """``config`` with each calibrated family's difficulty in ``score.task_params``: the
    one stored in ``study``, or, the first time, the pilot's (``run_pilot``, default
    :func:`workers.calibrate.pilot`; then stored). Without ``score.calibrate``, ``config``
    itself."""
    if config.score.calibrate is None:
        return config
    from workers.calibrate import Calibration, pilot

    run_pilot = run_pilot or pilot
    stored = study.user_attrs.get(STUDY_ATTR_CALIBRATION)
    if stored:
        found = {task: Calibration.from_dict(d) for task, d in stored.items()}
        note(f"score.calibrate: the study's difficulty: {describe(found)}")
    else:
        note(f"score.calibrate: pilot of {', '.join(config.score.calibrate.panel)}")
        found = run_pilot(config, out_dir=out_dir, corpus=corpus)
        study.set_user_attr(STUDY_ATTR_CALIBRATION, {t: c.to_dict() for t, c in found.items()})
        note(f"score.calibrate: picked {describe(found)}")
    return with_calibration(config, found)


def with_calibration(config: SweepConfig, found: Mapping[str, Calibration]) -> SweepConfig:
    """``config`` scoring each family of ``found`` at its calibrated level."""
    s = config.score
    params = {task: dict(p) for task, p in s.task_params.items()}
    for task, c in found.items():
        params.setdefault(task, {})[c.parameter] = c.level
    return config.model_copy(update={"score": s.model_copy(update={"task_params": params})})


def describe(found: Mapping[str, Calibration]) -> str:
    parts = []
    for task, c in found.items():
        where = "inside the band" if c.inside else "closest to the band, none inside"
        parts.append(f"{task} {c.parameter}={c.level} ({where})")
    return "; ".join(parts) or "no family to calibrate"
