"""Rebuild MLflow from the Optuna study, which is the source of truth.

``sync_study(view, tracker)`` gives every finished trial (COMPLETE, PRUNED, FAIL) its
child run under the study's run, complete: the run spec of :mod:`tracking.run_spec` (knobs
as params, the links as tags), the outcome and reason, the intermediate values and the
final scores as metrics, the artifacts still on disk, the run status of the outcome. Run
twice, it changes nothing the second time. The live tracker ends every trial with
:func:`sync_trial` too, so runs written live and rebuilt here agree.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.names import (
    STEPS,
    TAG_OPTUNA_TRIAL,
    TAG_OUTCOME,
    TAG_REASON,
    TAG_SYNCED,
    VAL_BPB,
    is_score_name,
)
from space.schema import load_config_text
from space.trial_attrs import TrialAttrs
from tracking.keys import MLFLOW_PARENT_RUN_ID, RUN_STATUS, lr_search_tracking, metric_key
from tracking.pareto import pareto_of_study
from tracking.run_spec import TrialRunSpec, spec_from_trial
from tracking.store import MlflowStore, TrackingError, now_ms
from tracking.study_view import StudyView, TrialLike
from tracking.tracker import Tracker
from workers.trial_folder import ARTIFACT_PATTERNS, CANDIDATE_FILE, read_scores, seed_dirs

if TYPE_CHECKING:
    from mlflow.entities import Run

    from space.schema import SweepConfig

CREATED = "created"
COMPLETED = "completed"
UNCHANGED = "unchanged"
SKIPPED = "skipped"


def study_config(study: StudyView) -> SweepConfig | None:
    """The sweep file the driver stored on the study, if any."""
    text = study.config_text
    return load_config_text(text, source=f"study {study.name}") if text else None


# -- a trial's folder as run contents --------------------------------------------------


def _series_dirs(trial_dir: Path | None) -> list[tuple[str | None, Path]]:
    """``(series, folder)`` of each seed a trial trained: with one seed its files go to the
    run's root, with several under ``seed_<n>/``. A folder without seed folders is taken
    as one seed."""
    folders = seed_dirs(trial_dir)
    if not folders:
        return [(None, trial_dir)] if trial_dir is not None and trial_dir.is_dir() else []
    if len(folders) == 1:
        return [(None, folders[0])]
    return [(p.name, p) for p in folders]


def trial_artifacts(trial_dir: Path | None) -> dict[str, Path]:
    """Artifact name -> file for what a trial wrote (candidate, scores, plots)."""
    files: dict[str, Path] = {}
    for series, folder in _series_dirs(trial_dir):
        for pattern in ARTIFACT_PATTERNS:
            for path in sorted(folder.glob(pattern)):
                if path.is_file():
                    files[f"{series}/{path.name}" if series else path.name] = path
    return files


def trial_histories(trial_dir: Path | None) -> list[tuple[str | None, list[Mapping[str, Any]]]]:
    """The training history of each seed (its ``scores.json``), with its series name."""
    out = []
    for series, folder in _series_dirs(trial_dir):
        data = read_scores(folder)
        if data is None:
            continue
        history = data.get("history")
        out.append((series, [row for row in history or [] if isinstance(row, dict)]))
    return out


# -- writing the runs ------------------------------------------------------------------


@dataclass
class SyncReport:
    """What ``sync_study`` did, by Optuna trial number."""

    study: str
    parent_run_id: str | None = None
    created: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # not finished (RUNNING, WAITING)
    run_ids: dict[int, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"sync {self.study}: {len(self.created)} runs created, {len(self.completed)} "
            f"completed, {len(self.unchanged)} already complete, {len(self.skipped)} "
            f"trials not finished (left alone)"
        )


def _ms(when: datetime | None) -> int | None:
    return int(when.timestamp() * 1000) if when is not None else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def sync_trial(
    trial: TrialLike,
    tracker: Tracker,
    objective_names: Sequence[str],
    config: SweepConfig | None = None,
    eval_metric: str = VAL_BPB,
) -> tuple[str, str | None]:
    """Make the child run of one finished trial complete; ``(what happened, run id)``.

    Raises :class:`TrackingError` (or MLflow's error) when MLflow fails, unlike the
    trial-time tracker.
    """
    state = trial.state.name
    if state not in RUN_STATUS:
        return SKIPPED, None
    store = tracker.store
    parent = tracker.parent_run_id or store.ensure_parent(reopen=False)[0]
    tracker.parent_run_id = parent
    attrs = TrialAttrs.of(trial.user_attrs)
    spec = spec_from_trial(trial, config)
    tags = {**spec.tags, TAG_OUTCOME: state, TAG_REASON: attrs.reason or ""}
    run, created = _child_run(trial, store, spec, tags, parent)
    run_id = run.info.run_id
    changes = store.log_params(run_id, spec.params, run.data.params)
    # train.lr_search: what the trial's pilots chose (a reused trial's are its source's)
    lr_params = lr_search_tracking(attrs.lr_search)[0]
    changes += store.log_params(run_id, lr_params, run.data.params)
    changes += store.set_tags(run_id, {**tags, MLFLOW_PARENT_RUN_ID: parent}, run.data.tags)
    trial_dir = Path(attrs.trial_dir) if attrs.trial_dir else None
    changes += _sync_metrics(trial, store, run, trial_dir, objective_names, eval_metric)
    changes += _sync_artifacts(store, run_id, trial_dir, spec.candidate_yaml)
    want = RUN_STATUS[state]
    if run.info.status != want:
        store.terminate(run_id, want, end_time=_ms(trial.datetime_complete))
        changes += 1
    if created:
        return CREATED, run_id
    return (COMPLETED if changes else UNCHANGED), run_id


def _child_run(
    trial: TrialLike, store: MlflowStore, spec: TrialRunSpec, tags: dict[str, str], parent: str
) -> tuple[Run, bool]:
    """The trial's child run: the linked one, else the one found by trial number and
    candidate, else a new one; ``(run, created)``."""
    linked = TrialAttrs.of(trial.user_attrs).mlflow_run_id
    run = store.get_run(linked) if linked else None
    if run is not None and run.data.tags.get(TAG_OPTUNA_TRIAL) not in (None, str(trial.number)):
        run = None  # a run id copied from another trial: never write into its run
    if run is None:
        run = store.find_child(trial.number, spec.candidate_id)
    if run is not None:
        return run, False
    run_id = store.create_child(
        parent,
        spec.run_name,
        {**tags, TAG_SYNCED: "true"},
        start_time=_ms(trial.datetime_start),
    )
    return store.client.get_run(run_id), True


def _sync_metrics(
    trial: TrialLike,
    store: MlflowStore,
    run: Run,
    trial_dir: Path | None,
    objective_names: Sequence[str],
    eval_metric: str,
) -> int:
    """Log the metrics the run lacks: the history (scores.json, else Optuna's intermediate
    values), then the final scores at the last step; the number logged."""
    from mlflow.entities import Metric

    attrs = trial.user_attrs
    read = TrialAttrs.of(attrs)
    logged = store.metric_steps(run)
    now = now_ms()
    new: list[Metric] = []

    def add(key: str, value: float, step: int) -> None:
        name = metric_key(key)
        if step in logged.setdefault(name, {}):
            return
        logged[name][step] = value
        new.append(Metric(name, value, now, step))

    for series, history in trial_histories(trial_dir):
        for row in history:
            step = _number(row.get("step"))
            if step is None:
                continue
            for key, value in row.items():
                if key not in ("step", "seed") and _number(value) is not None:
                    add(f"{series}/{key}" if series else key, float(value), int(step))
    # Optuna's intermediate values (the scheduler metric by training step) stand in for a
    # history nobody logged; next to a logged one they would only repeat it.
    metric = read.eval_metric or eval_metric
    if not logged.get(metric_key(metric)):
        for step, value in sorted(trial.intermediate_values.items()):
            add(metric, float(value), int(step))

    scores: dict[str, float] = dict(lr_search_tracking(read.lr_search)[1])
    for key, value in attrs.items():
        if is_score_name(key) and _number(value) is not None:
            scores[key] = float(value)
    for name, value in zip(objective_names, trial.values or [], strict=False):
        if _number(value) is not None:
            scores[name] = float(value)
    steps = [s for history in logged.values() for s in history]
    final_step = max(steps) if steps else int(read.scores.get(STEPS) or 0)
    for key, value in scores.items():
        name = metric_key(key)
        latest = run.data.metrics.get(name)
        if latest is not None and (latest == value or (math.isnan(latest) and math.isnan(value))):
            continue
        new = [m for m in new if not (m.key == name and m.step == final_step)]
        new.append(Metric(name, value, now, final_step))
    if new:
        store.log_metrics(run.info.run_id, new)
    return len(new)


def _sync_artifacts(
    store: MlflowStore, run_id: str, trial_dir: Path | None, candidate_yaml: str | None
) -> int:
    """Upload what the trial folder still has and the run lacks, and the resolved candidate
    when no copy of it is there; the number uploaded."""
    have = store.artifact_names(run_id)
    files = trial_artifacts(trial_dir)
    with tempfile.TemporaryDirectory(prefix="ropenope-sync-") as tmp:
        if candidate_yaml and not any(n.endswith(CANDIDATE_FILE) for n in (*files, *have)):
            files[CANDIDATE_FILE] = Path(tmp) / CANDIDATE_FILE
            files[CANDIDATE_FILE].write_text(candidate_yaml)
        return len(store.log_files(run_id, files, skip=have))


def sync_missed(
    study: StudyView,
    tracker: Tracker,
    config: SweepConfig | None = None,
    eval_metric: str = VAL_BPB,
) -> dict[int, str]:
    """Complete what live tracking missed: each finished trial with no linked run
    (``mlflow_run_id``), no run in the study's experiment, or a run whose status does not
    yet say how the trial ended (a driver killed between the trial's close and its sync),
    is synced with :func:`sync_trial`. Returns ``{trial number: run id}`` for the trials
    that have no ``mlflow_run_id`` yet (the driver records the link on the study).

    One search for the study's trial runs, then only the trials that need it: a sweep that
    tracked everything live costs one query. Raises as :func:`sync_trial` does.
    """
    finished = [t for t in study.trials if t.state.name in RUN_STATUS]
    if not finished:
        return {}
    status = tracker.store.trial_run_status()
    links: dict[int, str] = {}
    for trial in finished:
        linked = TrialAttrs.of(trial.user_attrs).mlflow_run_id
        if linked and status.get(trial.number) == RUN_STATUS[trial.state.name]:
            continue
        _, run_id = sync_trial(trial, tracker, study.objectives, config, eval_metric)
        if run_id is not None and not linked:
            links[trial.number] = run_id
    return links


def sync_study(
    study: StudyView,
    tracker: Tracker,
    *,
    config: SweepConfig | None = None,
    eval_metric: str = VAL_BPB,
    refresh: bool = True,
) -> SyncReport:
    """Create the missing child runs of ``study`` and complete the partial ones, then
    refresh the Pareto front on the study's run. Idempotent.

    ``config`` defaults to the sweep file stored on the study (its fixed settings become
    params); trials still RUNNING or WAITING are left alone (``resume`` closes a dead
    driver's trials first). Raises :class:`TrackingError` if MLflow fails.
    """
    if config is None:
        config = study_config(study)
    report = SyncReport(study=study.name)
    try:
        if config is not None:
            parent, created = tracker.open_study_run(config, reopen=False)
        else:
            parent, created = tracker.store.ensure_parent(reopen=False)
        tracker.parent_run_id = report.parent_run_id = parent
        for trial in study.trials:
            what, run_id = sync_trial(trial, tracker, study.objectives, config, eval_metric)
            getattr(report, what).append(trial.number)
            if run_id is not None:
                report.run_ids[trial.number] = run_id
        if refresh:
            tracker.publish_front(pareto_of_study(study))
        if created and not report.skipped:  # a study run made here for a finished study
            tracker.store.terminate(parent, "FINISHED")
    except TrackingError:
        raise
    except Exception as err:  # the CLI prints it in one line; the study is untouched
        raise TrackingError(
            f"sync of study {study.name!r} to {tracker.target.shown_uri} failed: "
            f"{type(err).__name__}: {err}"
        ) from err
    return report
