"""The names other tools read: a golden file of what a tiny tracked sweep writes.

Optuna study and trial user attributes, MLflow tags, params, metrics and artifacts of the
study's run and of each kind of trial run (trained, reused, invalid), and the CLI's
commands. Values are not compared, only names: a rename or a lost key fails here, a new
key too, so every change to the interface is a visible change to
``tests/golden/interface.json`` (regenerate with ``ROPENOPE_UPDATE_GOLDEN=1``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
from engines import tiny_config_file
from mlflow import MlflowClient

from search import driver
from search.cli import build_parser
from space.names import STUDY_ATTR_DRIVER_PREFIX, TAG_OPTUNA_TRIAL, TAG_RUN_KIND
from space.trial_attrs import ATTR_REASON, ATTR_REUSED_FROM
from tracking.target import resolve_tracking_uri

GOLDEN = Path(__file__).parent / "golden" / "interface.json"
UPDATE_ENV = "ROPENOPE_UPDATE_GOLDEN"
# The names only the golden sweep's optional settings write (model.parametrization: mup and
# train.lr_search with values 1e-3 and 3e-3), by where they live; a sweep without them
# writes every other name.
OPTIONAL_NAMES: dict[str, frozenset[str]] = {
    "attrs": frozenset({"lr", "lr_search"}),
    "params": frozenset(
        {
            "model.parametrization",
            "model.base_d_model",
            "train.lr_search",
            "lr_search.chosen_lr",
        }
    ),
    "metrics": frozenset(
        {"lr_search/chosen_lr", "lr_search/val_bpb/lr_0.001", "lr_search/val_bpb/lr_0.003"}
    ),
}


def without_optional(names: list[str], where: str) -> list[str]:
    """``names`` (of ``where``: attrs, params, metrics, tags, artifacts) less the
    :data:`OPTIONAL_NAMES` there: what a sweep without those settings writes."""
    return [name for name in names if name not in OPTIONAL_NAMES.get(where, ())]


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(out)


def _trial_kind(trial: optuna.trial.FrozenTrial) -> str:
    if trial.user_attrs.get(ATTR_REUSED_FROM) is not None:
        return "reused"
    reason = trial.user_attrs.get(ATTR_REASON)
    return f"{trial.state.name.lower()}:{reason}" if reason else trial.state.name.lower()


def _run_names(client: MlflowClient, run: Any) -> dict[str, list[str]]:
    return {
        "tags": sorted(run.data.tags),
        "params": sorted(run.data.params),
        "metrics": sorted(run.data.metrics),
        "artifacts": _artifacts(client, run.info.run_id),
    }


def collect_interface(study: optuna.Study, tracking_uri: str) -> dict[str, Any]:
    """Every name a study and its MLflow experiment expose, grouped by where it lives."""
    study_attrs = sorted(
        STUDY_ATTR_DRIVER_PREFIX + "<driver_id>" if k.startswith(STUDY_ATTR_DRIVER_PREFIX) else k
        for k in study.user_attrs
    )
    trials: dict[str, list[str]] = {}
    for trial in study.get_trials(deepcopy=False):
        trials.setdefault(_trial_kind(trial), sorted(trial.user_attrs))
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(study.study_name)
    runs = client.search_runs([experiment.experiment_id])
    by_number = {t.number: _trial_kind(t) for t in study.get_trials(deepcopy=False)}
    mlflow_runs: dict[str, Any] = {}
    for run in runs:
        if run.data.tags.get(TAG_RUN_KIND) == "study":
            mlflow_runs["study"] = _run_names(client, run)
        else:
            kind = by_number[int(run.data.tags[TAG_OPTUNA_TRIAL])]
            mlflow_runs.setdefault(f"trial {kind}", _run_names(client, run))
    commands = sorted(build_parser()._subparsers._group_actions[0].choices)
    return {
        "commands": commands,
        "optuna_study_attrs": sorted(set(study_attrs)),
        "optuna_trial_attrs": dict(sorted(trials.items())),
        "mlflow_runs": dict(sorted(mlflow_runs.items())),
    }


def test_interface_names_match_the_golden_file(tmp_path, runs_home, ray_local):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "golden", "trials": 3},
        presets=[
            "rope",
            {"name": "rope_again", "extends": "rope"},  # the same candidate: reused
            # NoPE temperature on RoPE layers cannot be built: FAIL invalid_candidate
            {"name": "impossible", "knobs": {"global_temperature": "log"}},
        ],
        tracking={"enabled": True},
        # the optional settings whose names reach the trials and runs: µP, and the
        # learning-rate pilots (their choice is a user attr, a param and metrics)
        model={"parametrization": "mup", "base_d_model": 16},
        train={"lr_search": {"values": [1e-3, 3e-3], "steps": 10}},
    )
    summary = driver.submit(path, storage=url, address=ray_local, progress=False)
    assert summary.counts["COMPLETE"] == 2 and summary.counts["FAIL"] == 1
    study = optuna.load_study(study_name="golden", storage=url)
    found = collect_interface(study, resolve_tracking_uri(None, runs_home))
    if os.environ.get(UPDATE_ENV):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(found, indent=2) + "\n")
    assert found == json.loads(GOLDEN.read_text())
    # the list is not stale: each optional name is where it says
    trained = found["mlflow_runs"]["trial complete"]
    assert OPTIONAL_NAMES["attrs"] <= set(found["optuna_trial_attrs"]["complete"])
    assert OPTIONAL_NAMES["params"] <= set(trained["params"])
    assert OPTIONAL_NAMES["metrics"] <= set(trained["metrics"])
