"""Rebuild MLflow from the Optuna study, which is the source of truth.

``sync_study(study, tracker)`` gives every finished trial (COMPLETE, PRUNED, FAIL) its
child run under the study's run, complete: knobs as params, the links and the outcome as
tags, the intermediate values and the final scores as metrics, the artifacts still on
disk, the run status of the outcome. Run twice, it changes nothing the second time.
``pareto_rows_from_study`` ranks the COMPLETE trials for ``ropenope pareto``.

Both take an ``optuna.Study`` or a list of ``FrozenTrial`` (then say the objectives and
directions), so the CLI wiring is one call each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.names import (
    ATTR_CANDIDATE_ID,
    ATTR_CANDIDATE_NAME,
    ATTR_EVAL_METRIC,
    ATTR_KNOBS,
    ATTR_MLFLOW_RUN_ID,
    ATTR_PRESET,
    ATTR_RAY_TRIAL_ID,
    ATTR_REASON,
    ATTR_RERUN_OF,
    ATTR_REUSED_FROM,
    ATTR_SEED,
    ATTR_TRIAL_DIR,
    STEPS,
    STUDY_ATTR_CONFIG,
    STUDY_ATTR_OBJECTIVES,
    TAG_CANDIDATE_ID,
    TAG_CANDIDATE_NAME,
    TAG_OPTUNA_TRIAL,
    TAG_OUTCOME,
    TAG_RAY_TRIAL_ID,
    TAG_REASON,
    TAG_SYNCED,
    VAL_BPB,
    is_score_name,
)
from tracking.mlflow_store import (
    MLFLOW_PARENT_RUN_ID,
    RUN_STATUS,
    Tracker,
    TrackingError,
    config_params,
    metric_key,
    param_value,
)
from tracking.pareto import ParetoTable, normalize_direction, pareto_table

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from space.schema import SweepConfig

# Files of a trial folder that belong in its run (what workers/candidate.py writes).
ARTIFACT_PATTERNS = ("candidate.yaml", "scores.json", "*.png")

CREATED = "created"
COMPLETED = "completed"
UNCHANGED = "unchanged"
SKIPPED = "skipped"


# -- reading the study -----------------------------------------------------------------


def _trials(study_or_trials: Any) -> list[FrozenTrial]:
    if hasattr(study_or_trials, "get_trials"):
        return list(study_or_trials.get_trials(deepcopy=False))
    return list(study_or_trials)


def study_objectives(study: Any, n_values: int | None = None) -> list[str]:
    """The objective names of a study: its metric names, else the names ropenope stored,
    else ``value_0, value_1, ...``."""
    names = getattr(study, "metric_names", None)
    if not names:
        names = (getattr(study, "user_attrs", None) or {}).get(STUDY_ATTR_OBJECTIVES)
    if names:
        return list(names)
    directions = getattr(study, "directions", None)
    count = len(directions) if directions else (n_values or 1)
    return [f"value_{i}" for i in range(count)]


def study_config(study: Any) -> SweepConfig | None:
    """The sweep file the driver stored on the study, if any."""
    text = (getattr(study, "user_attrs", None) or {}).get(STUDY_ATTR_CONFIG)
    if not text:
        return None
    from space.schema import parse_config, parse_yaml

    return parse_config(parse_yaml(text), source=f"study {study.study_name}")


def pareto_rows_from_study(
    study: Any,
    objective_names: Sequence[str] | None = None,
    directions: Sequence[Any] | None = None,
) -> ParetoTable:
    """The COMPLETE trials of ``study`` ranked by Pareto front (an ``optuna.Study``, or a
    list of ``FrozenTrial`` with ``objective_names`` and ``directions``)."""
    if directions is None:
        if not hasattr(study, "directions"):
            raise ValueError("pass directions with a list of trials")
        directions = [d.name.lower() for d in study.directions]
    directions = [normalize_direction(d) for d in directions]
    names = list(objective_names) if objective_names else study_objectives(study, len(directions))
    if len(names) != len(directions):
        raise ValueError(f"{len(names)} objective names for {len(directions)} directions")
    rows = []
    for trial in _trials(study):
        if trial.state.name != "COMPLETE":
            continue
        values = list(trial.values or [])
        row: dict[str, Any] = {
            "trial": trial.number,
            "candidate": trial.user_attrs.get(ATTR_CANDIDATE_NAME, ""),
        }
        for i, name in enumerate(names):
            row[name] = values[i] if i < len(values) else None
        row["candidate_id"] = trial.user_attrs.get(ATTR_CANDIDATE_ID, "")
        if trial.user_attrs.get(ATTR_MLFLOW_RUN_ID):
            row[ATTR_MLFLOW_RUN_ID] = trial.user_attrs[ATTR_MLFLOW_RUN_ID]
        rows.append(row)
    title = f"Pareto front of {study.study_name}" if hasattr(study, "study_name") else None
    return pareto_table(rows, names, directions, title=title or "Pareto front")


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


def _seed_dirs(trial_dir: Path | None) -> list[tuple[str | None, Path]]:
    """``(series, folder)`` of each seed a trial trained: the driver's trial folder holds
    one ``seed_<n>`` folder per seed; with one seed its files go to the run's root, with
    several under ``seed_<n>/``. A folder without seed folders is taken as one seed."""
    if trial_dir is None or not trial_dir.is_dir():
        return []
    seeds = sorted(p for p in trial_dir.glob("seed_*") if p.is_dir())
    if not seeds:
        return [(None, trial_dir)]
    if len(seeds) == 1:
        return [(None, seeds[0])]
    return [(p.name, p) for p in seeds]


def trial_artifacts(trial_dir: Path | None) -> dict[str, Path]:
    """Artifact name -> file for what a trial wrote (candidate, scores, plots)."""
    files: dict[str, Path] = {}
    for series, folder in _seed_dirs(trial_dir):
        for pattern in ARTIFACT_PATTERNS:
            for path in sorted(folder.glob(pattern)):
                if path.is_file():
                    files[f"{series}/{path.name}" if series else path.name] = path
    return files


def trial_histories(trial_dir: Path | None) -> list[tuple[str | None, list[Mapping[str, Any]]]]:
    """The training history of each seed (its ``scores.json``), with its series name."""
    import json

    out = []
    for series, folder in _seed_dirs(trial_dir):
        try:
            data = json.loads((folder / "scores.json").read_text())
        except (OSError, ValueError):
            continue
        history = data.get("history") if isinstance(data, dict) else None
        out.append((series, [row for row in history or [] if isinstance(row, dict)]))
    return out


def _candidate_yaml(
    trial: FrozenTrial, knobs: Mapping[str, Any], config: SweepConfig | None, folder: Path
) -> Path:
    """The resolved candidate, rebuilt from the trial's knobs (and the sweep file's model)."""
    import yaml

    attrs = trial.user_attrs
    resolved: dict[str, Any] | None = None
    if config is not None:
        try:
            resolved = config.candidate(knobs).to_dict()
        except Exception:  # an invalid candidate has no layers: keep the knobs
            resolved = None
    if resolved is None:
        resolved = {
            "id": attrs.get(ATTR_CANDIDATE_ID),
            "name": attrs.get(ATTR_CANDIDATE_NAME),
            "knobs": dict(knobs),
        }
    if attrs.get(ATTR_SEED) is not None:
        resolved["seed"] = attrs[ATTR_SEED]
    path = folder / "candidate.yaml"
    path.write_text(yaml.safe_dump(resolved, sort_keys=False))
    return path


def sync_trial(
    trial: FrozenTrial,
    tracker: Tracker,
    objective_names: Sequence[str],
    config: SweepConfig | None = None,
    eval_metric: str = VAL_BPB,
) -> tuple[str, str | None]:
    """Make the child run of one finished trial complete; ``(what happened, run id)``.

    Raises :class:`TrackingError` when MLflow fails (unlike the trial-time tracker).
    """
    import tempfile

    from mlflow.entities import Metric

    state = trial.state.name
    if state not in RUN_STATUS:
        return SKIPPED, None
    store = tracker.store
    parent = tracker.parent_run_id or store.ensure_parent(reopen=False)[0]
    tracker.parent_run_id = parent
    attrs = trial.user_attrs
    candidate_id = attrs.get(ATTR_CANDIDATE_ID)
    candidate_name = attrs.get(ATTR_CANDIDATE_NAME) or ""

    run = store.get_run(attrs[ATTR_MLFLOW_RUN_ID]) if attrs.get(ATTR_MLFLOW_RUN_ID) else None
    if run is not None and run.data.tags.get(TAG_OPTUNA_TRIAL) not in (None, str(trial.number)):
        run = None  # a run id copied from another trial: never write into its run
    if run is None:
        run = store.find_child(trial.number, candidate_id)
    created = run is None
    tags = {
        TAG_OPTUNA_TRIAL: str(trial.number),
        TAG_CANDIDATE_ID: str(candidate_id or ""),
        TAG_CANDIDATE_NAME: candidate_name,
        TAG_RAY_TRIAL_ID: str(attrs.get(ATTR_RAY_TRIAL_ID) or ""),
        TAG_OUTCOME: state,
        TAG_REASON: str(attrs.get(ATTR_REASON) or ""),
    }
    for key in (ATTR_PRESET, ATTR_REUSED_FROM, ATTR_RERUN_OF):
        if attrs.get(key) is not None:
            tags[key] = str(attrs[key])
    if created:
        run_id = store.create_child(
            parent,
            f"t{trial.number:03d} {candidate_name}".strip(),
            {**tags, TAG_SYNCED: "true"},
            start_time=_ms(trial.datetime_start),
        )
        run = store.client.get_run(run_id)
    run_id = run.info.run_id
    changes = 0

    # Params: every knob (flat, YAML names), the seed, the fixed settings.
    knobs = attrs.get(ATTR_KNOBS)
    if not isinstance(knobs, Mapping):
        knobs = dict(trial.params)
    params = {name: param_value(value) for name, value in knobs.items()}
    if attrs.get(ATTR_SEED) is not None:
        params["seed"] = param_value(attrs[ATTR_SEED])
    if config is not None:
        params.update(config_params(config, ("model", "train", "data", "score")))
    changes += store.log_params(run_id, params, run.data.params)
    changes += store.set_tags(run_id, {**tags, MLFLOW_PARENT_RUN_ID: parent}, run.data.tags)

    # Metrics: the history (scores.json, else Optuna's intermediate values), final scores.
    trial_dir = Path(attrs[ATTR_TRIAL_DIR]) if attrs.get(ATTR_TRIAL_DIR) else None
    logged = store.metric_steps(run)
    now = int(datetime.now().timestamp() * 1000)
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
    metric = str(attrs.get(ATTR_EVAL_METRIC) or eval_metric)
    if not logged.get(metric_key(metric)):
        for step, value in sorted(trial.intermediate_values.items()):
            add(metric, float(value), int(step))

    scores: dict[str, float] = {}
    for key, value in attrs.items():
        if is_score_name(key) and _number(value) is not None:
            scores[key] = float(value)
    for name, value in zip(objective_names, trial.values or [], strict=False):
        if _number(value) is not None:
            scores[name] = float(value)
    steps = [s for history in logged.values() for s in history]
    final_step = max(steps) if steps else int(_number(attrs.get(STEPS)) or 0)
    for key, value in scores.items():
        name = metric_key(key)
        latest = run.data.metrics.get(name)
        if latest is not None and (latest == value or (math.isnan(latest) and math.isnan(value))):
            continue
        if any(m.key == name and m.step == final_step for m in new):
            new = [m for m in new if not (m.key == name and m.step == final_step)]
        new.append(Metric(name, value, now, final_step))
    if new:
        store.log_metrics(run_id, new)
        changes += len(new)

    # Artifacts: what the trial folder still has, and the resolved candidate.
    have = store.artifact_names(run_id)
    files = trial_artifacts(trial_dir)
    with tempfile.TemporaryDirectory(prefix="ropenope-sync-") as tmp:
        if not any(n.endswith("candidate.yaml") for n in (*files, *have)):
            files["candidate.yaml"] = _candidate_yaml(trial, knobs, config, Path(tmp))
        changes += len(store.log_files(run_id, files, skip=have))

    want = RUN_STATUS[state]
    if run.info.status != want:
        store.terminate(run_id, want, end_time=_ms(trial.datetime_complete))
        changes += 1
    if created:
        return CREATED, run_id
    return (COMPLETED if changes else UNCHANGED), run_id


def sync_study(
    study: optuna.Study | Sequence[FrozenTrial],
    tracker: Tracker,
    *,
    objective_names: Sequence[str] | None = None,
    directions: Sequence[Any] | None = None,
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
    study_name = getattr(study, "study_name", tracker.target.study)
    if config is None and hasattr(study, "user_attrs"):
        config = study_config(study)
    trials = _trials(study)
    if directions is None and hasattr(study, "directions"):
        directions = [d.name.lower() for d in study.directions]
    n_values = len(directions) if directions else None
    names = list(objective_names) if objective_names else study_objectives(study, n_values)
    report = SyncReport(study=study_name)
    try:
        if config is not None:
            parent, created = tracker._start_study(config, None, None, reopen=False)
        else:
            parent, created = tracker.store.ensure_parent(reopen=False)
        tracker.parent_run_id = report.parent_run_id = parent
        for trial in trials:
            what, run_id = sync_trial(trial, tracker, names, config, eval_metric)
            getattr(report, what).append(trial.number)
            if run_id is not None:
                report.run_ids[trial.number] = run_id
        if refresh and directions is not None:
            tracker._refresh(pareto_rows_from_study(study, names, directions))
        if created and not report.skipped:  # a study run made here for a finished study
            tracker.store.terminate(parent, "FINISHED")
    except TrackingError:
        raise
    except Exception as err:  # the CLI prints it; the study is untouched
        raise TrackingError(
            f"sync of study {study_name!r} to {tracker.target.uri} failed: "
            f"{type(err).__name__}: {err}"
        ) from err
    return report
