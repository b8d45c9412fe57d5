"""The report on the study's MLflow run: its files under ``report/`` and one tag per
hypothesis (``space.names.TAG_HYPOTHESIS_PREFIX`` + name = supported | contradicted |
undecided)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["log_study_artifacts"]


def log_study_artifacts(
    uri: str,
    experiment: str,
    study_name: str,
    paths: Mapping[str, Path] | Sequence[Path],
    artifact_path: str = "report",
    tags: Mapping[str, str] | None = None,
) -> str:
    """Upload ``paths`` under ``artifact_path`` on the study's parent run and set
    ``tags`` on it; returns its id.

    The parent run is found the way the sweep's tracker finds it
    (:meth:`tracking.store.MlflowStore.ensure_parent`: the run tagged with the
    study and the study run kind); a study swept without tracking gets one, closed at once.
    """
    from tracking.store import MlflowStore
    from tracking.target import TrackingTarget, artifact_location

    store = MlflowStore(
        TrackingTarget(
            uri=uri,
            experiment=experiment,
            study=study_name,
            artifact_location=artifact_location(uri, experiment),
        )
    )
    run_id, created = store.ensure_parent(reopen=False)
    files = dict(paths) if isinstance(paths, Mapping) else {Path(p).name: p for p in paths}
    store.log_files(run_id, {name: Path(p) for name, p in files.items()}, artifact_path)
    if tags:
        store.set_tags(run_id, dict(tags))
    if created:
        store.terminate(run_id, "FINISHED")
    return run_id
