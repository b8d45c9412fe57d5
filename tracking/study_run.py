"""What the study's own MLflow run holds: its parameters, tags and sweep file, written
when a sweep starts (or ``ropenope sync`` rebuilds it), and the Pareto front, written
after each finished trial.

Both write through an :class:`~tracking.store.MlflowStore` and raise on a tracking
failure; :class:`tracking.tracker.Tracker` is what makes them soft.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from space.names import TAG_OBJECTIVES, TAG_OPTUNA_TRIAL, TAG_PARETO, TAG_PARETO_RANK
from space.secrets import redact_text, redact_url
from tracking.keys import STUDY_SECTIONS, config_params, param_value
from tracking.pareto_plots import write_pareto_files
from tracking.runs_view import ensure_view, set_study_note, study_note
from tracking.store import MlflowStore, now_ms

if TYPE_CHECKING:
    from space.schema import SweepConfig
    from tracking.pareto import ParetoTable
    from tracking.target import TrackingTarget

PARETO_ARTIFACT_PATH = "pareto"


def sweep_file_text(config: SweepConfig) -> str:
    """The sweep file as it may be stored (the study's MLflow run, the Optuna study): the
    file's own text when it has one, else the validated config as YAML; every URL in it
    redacted."""
    if config.source and Path(config.source).is_file():
        text = Path(config.source).read_text()
    else:
        import yaml

        # one line per value (no folding): redaction reads a URL within its line
        text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, width=1 << 30)
    return redact_text(text)


def write_study_run(
    store: MlflowStore,
    config: SweepConfig | None,
    storage: str | None,
    tags: Mapping[str, str] | None,
    reopen: bool = True,
) -> tuple[str, bool]:
    """Find (or create) the study's run and write what the sweep file says into it: the
    objectives, the non-searched sections as params, each searched knob's spec, the
    ``sweep.yaml`` artifact and the experiment's runs view. Returns ``(run id,
    created)``; ``reopen`` sets a finished run running again."""
    extra = dict(tags or {})
    if storage:
        extra["optuna_storage"] = redact_url(storage)
    if config is not None:
        extra[TAG_OBJECTIVES] = ",".join(
            f"{n}:{d}" for n, d in zip(config.objective_names(), config.directions(), strict=True)
        )
    run_id, created = store.ensure_parent(reopen=reopen)
    run = store.client.get_run(run_id)
    store.set_tags(run_id, extra, run.data.tags)
    if config is not None:
        params = config_params(config, STUDY_SECTIONS)
        params.pop("study.trials", None)  # changes on resume (--trials); a tag instead
        params.pop("study.name", None)
        for name, spec in config.space.items():
            params[f"space.{name}"] = param_value(spec.to_dict())
        store.log_params(run_id, params, run.data.params)
        store.set_tags(run_id, {"study_trials": str(config.study.trials)}, run.data.tags)
        # the page `ropenope ui` opens: trials by Pareto rank, objectives and knobs shown
        ensure_view(
            store.client, store.experiment_id(), config.objective_names(), list(config.searched)
        )
        with tempfile.TemporaryDirectory(prefix="ropenope-study-") as tmp:
            sweep = Path(tmp) / "sweep.yaml"
            sweep.write_text(sweep_file_text(config))
            store.log_files(run_id, {"sweep.yaml": sweep})
    return run_id, created


def write_front(
    store: MlflowStore, parent: str, table: ParetoTable, target: TrackingTarget
) -> None:
    """Publish a Pareto table: its files under the study run's ``pareto/``, each trial
    run's rank tags, the front's size as metrics and the study note (the run's
    description, and the experiment's when the experiment is the study's own)."""
    with tempfile.TemporaryDirectory(prefix="ropenope-pareto-") as tmp:
        written = write_pareto_files(table, tmp)
        store.log_files(parent, written, PARETO_ARTIFACT_PATH)
    ranks = {str(row["trial"]): row["rank"] for row in table.rows}
    for child in store.children(parent):
        trial = child.data.tags.get(TAG_OPTUNA_TRIAL)
        if trial not in ranks:
            continue
        rank = ranks[trial]
        store.set_tags(
            child.info.run_id,
            {
                TAG_PARETO_RANK: "none" if rank is None else str(rank),
                TAG_PARETO: "true" if rank == 0 else "false",
            },
            child.data.tags,
        )
    front = [str(row["trial"]) for row in table.front]
    store.set_tags(parent, {"pareto_trials": ",".join(front)})
    from mlflow.entities import Metric

    n_ranked = sum(1 for row in table.rows if row["rank"] is not None)
    now = now_ms()
    store.log_metrics(
        parent,
        [
            Metric("pareto_size", float(len(front)), now, n_ranked),
            Metric("trials_ranked", float(n_ranked), now, n_ranked),
        ],
    )
    set_study_note(
        store.client,
        store.experiment_id(),
        parent,
        study_note(table, target.study),
        on_experiment=target.experiment == target.study,  # not a shared one
    )
