"""MLflow tracking against real engines: MLflow on SQLite, and a real `mlflow server`.

The Optuna studies here are small fakes built with ``create_trial`` carrying the user
attributes the sweep driver writes; no Ray is needed. The end-to-end sweep + tracking
tests live with the driver's tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from engines import MlflowServer, free_port, tiny_config_file
from mlflow import MlflowClient

from search import driver
from search.cli import main as cli_main
from search.study_view import study_view
from space.names import KV_CACHE_BYTES, LONG_ACC, SHORT_BPB, acc_at, is_score_name
from space.schema import parse_config, parse_yaml
from space.trial_attrs import (
    ATTR_CANDIDATE_ID,
    ATTR_CANDIDATE_NAME,
    ATTR_EVAL_METRIC,
    ATTR_KNOBS,
    ATTR_MLFLOW_RUN_ID,
    ATTR_RAY_TRIAL_ID,
    ATTR_REASON,
    ATTR_SEED,
    ATTR_TRACKING_ERROR,
    ATTR_TRIAL_DIR,
)
from tracking import tracker as tracker_module
from tracking.hooks import MlflowSweepHooks, MlflowTrialHooks
from tracking.keys import metric_key, param_value
from tracking.pareto import pareto_of_study, pareto_ranks
from tracking.run_spec import trial_run_spec
from tracking.store import MlflowStore
from tracking.study_view import StudyView
from tracking.sync import sync_study, trial_artifacts
from tracking.target import resolve_tracking_uri
from tracking.tracker import Tracker
from tracking.ui import ui_command, ui_env
from workers.provenance import environment_tags
from workers.trial import TrialInfo, TrialOutcome

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
OBJECTIVES = [LONG_ACC, SHORT_BPB, KV_CACHE_BYTES]
DIRECTIONS = ["maximize", "minimize", "minimize"]
CHILD_TAGS = (
    "candidate_id",
    "candidate_name",
    "optuna_trial_number",
    "ray_trial_id",
    "outcome",
    "reason",
    "git_commit",
    "torch_version",
    "cuda_version",
    "device",
    "study",
)
TRIAL_ARTIFACTS = {
    "candidate.yaml",
    "scores.json",
    "niah.png",
    "attention_mass@1x.png",
    "loss_curves.png",
}


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def sqlite_uri(tmp_path, template_db) -> str:
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copyfile(template_db, runs / "mlflow.db")
    return f"sqlite:///{runs / 'mlflow.db'}"


@pytest.fixture(scope="module")
def config():
    text = (REPO / "tests" / "data" / "tiny.yaml").read_text()
    return parse_config(parse_yaml(text), source="tiny.yaml")


def _tracker(uri: str, study: str = "tiny", **kwargs) -> Tracker:
    return Tracker.for_study(study, uri=uri, runs=_runs_of(uri), **kwargs)


def _runs_of(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]).parent if uri.startswith("sqlite:///") else None


def _fake_trial_dir(folder: Path, seeds=(0,), steps=(10, 20), candidate=None) -> Path:
    """What ``run_candidate`` leaves per seed: candidate, scores (with history), plots."""
    for seed in seeds:
        out = folder / f"seed_{seed}"
        out.mkdir(parents=True, exist_ok=True)
        out.joinpath("candidate.yaml").write_text(f"name: {candidate or 'x'}\nseed: {seed}\n")
        history = [
            {"step": float(s), "train_loss": 3.0 - s / 100, "val_bpb": 2.5 - s / 100 - seed / 10}
            for s in steps
        ]
        out.joinpath("scores.json").write_text(json.dumps({"history": history, "scores": {}}))
        for name in ("niah.png", "attention_mass@1x.png", "loss_curves.png"):
            out.joinpath(name).write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode())
    return folder


def _scores(acc: float, bpb: float, kv: float) -> dict[str, float]:
    return {
        LONG_ACC: acc,
        SHORT_BPB: bpb,
        KV_CACHE_BYTES: kv,
        acc_at(2): acc,
        "steps": 20.0,
    }


def _start(tracker, number, ray_id, candidate, config, *, seed=None, run_id=None):
    """What the trial hooks do at a trial's start: its run spec, the environment tags."""
    spec = trial_run_spec(
        number=number,
        candidate_id=candidate.id,
        candidate_name=candidate.name,
        knobs=candidate.knobs,
        seeds=[] if seed is None else [seed],
        ray_trial_id=ray_id,
        config=config,
        candidate=candidate,
    )
    return tracker.trial_started(spec, run_id=run_id, tags=environment_tags("cpu"))


def _log_trial(tracker, number, candidate, config, trial_dir, outcome="COMPLETE", scores=None):
    run_id = _start(tracker, number, f"ray_{number}", candidate, config, seed=0)
    for step in (10, 20):
        tracker.trial_evaluated(step, {"step": float(step), "train_loss": 3.0, "val_bpb": 2.0})
    error = tracker.trial_finished(
        outcome,
        None if outcome == "COMPLETE" else "pruned_by_scheduler",
        scores or _scores(0.5, 2.0, 1e6),
        {name: trial_dir / "seed_0" / name for name in TRIAL_ARTIFACTS},
    )
    return run_id, error


def _children(client: MlflowClient, parent_run_id: str, experiment_id: str):
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


# -- resolution ----------------------------------------------------------------------------


def test_resolve_tracking_uri_config_then_env_then_sqlite_under_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ROPENOPE_HOME", str(tmp_path / "home"))
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri() == "http://tracking:5000"
    assert resolve_tracking_uri("http://other:1") == "http://other:1"
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///rel/m.db") == f"sqlite:///{tmp_path / 'rel' / 'm.db'}"
    target = Tracker.for_study("s", uri=None, runs=tmp_path / "r").target
    assert target.uri == "http://tracking:5000" and target.artifact_location is None
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    target = Tracker.for_study("s", runs=tmp_path / "r").target
    assert target.artifact_location == (tmp_path / "r" / "mlartifacts" / "s").as_uri()
    assert metric_key("acc@2x") == "acc_at_2x" and metric_key("val_bpb") == "val_bpb"


def test_ui_command_opens_the_store_given_in_its_environment():
    # The store comes through the environment, never the command line (`ps` shows that).
    uri = "postgresql+psycopg://u:s3cret@db/mlflow"
    argv = ui_command(uri, port=5077)
    assert argv[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert not any("s3cret" in a or "postgresql" in a for a in argv)
    assert ui_env(uri)["MLFLOW_BACKEND_STORE_URI"] == uri
    assert argv[argv.index("--port") + 1] == "5077"
    assert argv[argv.index("--workers") + 1] == "1"
    assert ui_command("http://server:5000") is None


# -- MLflow on SQLite ------------------------------------------------------------------------


def test_tracker_nests_one_child_per_trial_under_the_study_run(sqlite_uri, config, tmp_path):
    tracker = _tracker(sqlite_uri)
    parent = tracker.start_study(config, storage="postgresql+psycopg://u:secret@db/optuna")
    assert parent is not None and tracker.error is None
    rope, swa = config.preset_candidate("rope"), config.preset_candidate("rnope_swa")
    folder = _fake_trial_dir(tmp_path / "t0")
    # Ray ships a pickled copy to each trial process.
    trial_tracker = pickle.loads(pickle.dumps(tracker))
    run0, err0 = _log_trial(trial_tracker, 0, rope, config, folder)
    trial_tracker = pickle.loads(pickle.dumps(tracker))
    run1, err1 = _log_trial(
        trial_tracker, 1, swa, config, folder, outcome="PRUNED", scores={"val_bpb": 2.4}
    )
    assert err0 is None and err1 is None and run0 != run1

    client = MlflowClient(tracking_uri=sqlite_uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.artifact_location.startswith(Path(sqlite_uri[10:]).parent.as_uri())
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3
    study_run = client.get_run(parent)
    assert study_run.data.tags["run_kind"] == "study"
    assert study_run.data.tags["optuna_storage"] == "postgresql+psycopg://u:***@db/optuna"
    assert study_run.data.params["model.d_model"] == "32"
    assert "sweep.yaml" in _artifact_paths(client, parent)

    children = {r.info.run_id: r for r in _children(client, parent, experiment.experiment_id)}
    assert set(children) == {run0, run1}
    child = children[run0]
    for tag in CHILD_TAGS:
        assert tag in child.data.tags, tag
    assert child.data.tags["candidate_id"] == rope.id
    assert child.data.tags["candidate_name"] == rope.name
    assert child.data.tags["optuna_trial_number"] == "0"
    assert child.data.tags["ray_trial_id"] == "ray_0"
    assert child.data.tags["outcome"] == "COMPLETE" and child.data.tags["reason"] == ""
    assert child.data.tags["device"].startswith("cpu")
    assert child.info.status == "FINISHED"
    # Params: every knob with its YAML name, the seed, the fixed settings.
    for knob, value in rope.knobs.items():
        assert child.data.params[knob] == param_value(value)
    assert child.data.params["local_window"] == "null"
    assert child.data.params["seed"] == "0"
    assert child.data.params["train.seq_len"] == "48"
    # Metrics over steps, and the final scores.
    history = client.get_metric_history(run0, "val_bpb")
    assert sorted(m.step for m in history) == [10, 20]
    assert client.get_metric_history(run0, "train_loss")[0].value == 3.0
    assert child.data.metrics[LONG_ACC] == 0.5
    assert child.data.metrics["acc_at_2x"] == 0.5
    assert child.data.metrics[KV_CACHE_BYTES] == 1e6
    assert _artifact_paths(client, run0) == TRIAL_ARTIFACTS
    pruned = children[run1]
    assert pruned.info.status == "KILLED"
    assert pruned.data.tags["outcome"] == "PRUNED"
    assert pruned.data.tags["reason"] == "pruned_by_scheduler"


def test_tracker_resume_reuses_study_run_and_trial_run(sqlite_uri, config, tmp_path):
    first = _tracker(sqlite_uri)
    parent = first.start_study(config)
    first.end_study()
    trial = _tracker(sqlite_uri)
    trial.parent_run_id = parent
    rope = config.preset_candidate("rope")
    run_id = _start(trial, 3, "ray_3", rope, config, seed=0)
    for step in (10, 20):
        trial.trial_evaluated(step, {"step": step, "val_bpb": 2.0 + step})
    # The process dies here (no trial_finished). The driver is restarted: resume.
    again = _tracker(sqlite_uri)
    assert again.start_study(config) == parent
    client = MlflowClient(tracking_uri=sqlite_uri)
    assert client.get_run(parent).info.status == "RUNNING"
    # Ray restores the trial from its checkpoint at step 10: same trial, same candidate.
    restored = pickle.loads(pickle.dumps(again))
    assert _start(restored, 3, "ray_3", rope, config, seed=0) == run_id
    for step in (20, 30):  # step 20 is evaluated again after the restore
        restored.trial_evaluated(step, {"step": step, "val_bpb": 2.0 + step})
    final = {**_scores(0.4, 2.1, 2e6), "val_bpb": 32.0}  # the last evaluation's value
    assert restored.trial_finished("COMPLETE", None, final, {}) is None

    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2  # one study run, one trial run
    history = client.get_metric_history(run_id, "val_bpb")
    assert sorted(m.step for m in history) == [10, 20, 30]  # 20 not logged twice
    assert client.get_run(run_id).info.status == "FINISHED"
    # Also found by its recorded run id (the study's mlflow_run_id), even by another study
    # tracker copy with no parent id known yet.
    other = _tracker(sqlite_uri)
    assert _start(other, 3, "ray_3b", rope, config, run_id=run_id) == run_id


def test_tracking_failure_does_not_raise_and_is_shown_once(monkeypatch, caplog, config):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(tracker_module, "_SHOWN", set())
    port = free_port()  # nobody listens on it
    tracker = _tracker(f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="ropenope.tracking"):
        assert tracker.start_study(config) is None
        assert _start(tracker, 0, "r", config.preset_candidate("rope"), config) is None
        for step in (10, 20):
            tracker.trial_evaluated(step, {"step": step, "val_bpb": 2.0})  # no raise
        error = tracker.trial_finished("COMPLETE", None, {LONG_ACC: 0.1}, {})
        assert tracker.refresh_study(
            pareto_of_study(StudyView("tiny", tuple(OBJECTIVES), tuple(DIRECTIONS)))
        )
    assert error is not None and f"127.0.0.1:{port}" in error
    assert tracker.error.startswith("start the study run")
    shown = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(shown) == 1 and "ropenope sync" in shown[0].getMessage()


def test_tracker_sends_buffered_metrics_after_a_transient_failure(sqlite_uri, config, monkeypatch):
    tracker = _tracker(sqlite_uri)
    tracker.start_study(config)
    calls = {"n": 0}
    real = MlflowStore.log_metrics

    def flaky(self, run_id, metrics):
        calls["n"] += 1
        raise ConnectionError("server restarting")

    trial = pickle.loads(pickle.dumps(tracker))
    run_id = _start(trial, 0, "r0", config.preset_candidate("rope"), config)
    with monkeypatch.context() as patch:
        patch.setattr(MlflowStore, "log_metrics", flaky)
        for step in (10, 20, 30):  # 10 fails; 20 and 30 wait out the cool-down
            trial.trial_evaluated(step, {"step": step, "val_bpb": 1.0 * step})
    assert MlflowStore.log_metrics is real
    assert calls["n"] == 1 and "server restarting" in trial.error
    assert trial.trial_finished("COMPLETE", None, _scores(0.2, 2.0, 1.0), {}) is None
    client = MlflowClient(tracking_uri=sqlite_uri)
    history = client.get_metric_history(run_id, "val_bpb")
    assert sorted((m.step, m.value) for m in history) == [(10, 10.0), (20, 20.0), (30, 30.0)]


def test_refresh_study_uploads_the_front_and_tags_children(sqlite_uri, config, tmp_path):
    study = optuna.create_study(directions=DIRECTIONS, study_name="tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(OBJECTIVES)
    tracker = _tracker(sqlite_uri)
    parent = tracker.start_study(config)
    points = [(0.5, 2.0, 1e6), (0.2, 1.9, 1e6), (0.1, 2.5, 4e6)]
    for number, values in enumerate(points):
        trial_tracker = pickle.loads(pickle.dumps(tracker))
        candidate = config.preset_candidate("rope")
        run_id, _ = _log_trial(
            trial_tracker, number, candidate, config, _fake_trial_dir(tmp_path / "t")
        )
        study.add_trial(
            optuna.trial.create_trial(
                values=list(values),
                user_attrs={ATTR_CANDIDATE_NAME: f"c{number}", ATTR_MLFLOW_RUN_ID: run_id},
            )
        )
    table = pareto_of_study(study_view(study))
    assert tracker.refresh_study(table) is None
    client = MlflowClient(tracking_uri=sqlite_uri)
    pareto_files = {p for p in _artifact_paths(client, parent) if p.startswith("pareto/")}
    assert pareto_files == {f"pareto/pareto.{ext}" for ext in ("csv", "md", "json", "png", "html")}
    experiment = client.get_experiment_by_name("tiny")
    tags = {
        r.data.tags["optuna_trial_number"]: (r.data.tags["pareto_rank"], r.data.tags["pareto"])
        for r in _children(client, parent, experiment.experiment_id)
    }
    assert tags == {"0": ("0", "true"), "1": ("0", "true"), "2": ("1", "false")}
    assert client.get_run(parent).data.tags["pareto_trials"] == "0,1"


def test_trial_hooks_log_each_seed_as_its_own_curve(sqlite_uri, config, tmp_path):
    sweep_hooks = MlflowSweepHooks(_tracker(sqlite_uri))
    study = optuna.create_study(directions=DIRECTIONS, study_name="tiny")
    sweep_hooks.on_sweep_start(study_view(study), config)
    hooks = pickle.loads(pickle.dumps(sweep_hooks.trial_hooks()))
    assert isinstance(hooks, MlflowTrialHooks)
    folder = _fake_trial_dir(tmp_path / "t0", seeds=(0, 1))
    info = TrialInfo(
        study="tiny",
        number=0,  # the first trial of the study below
        ray_trial_id="ray_0",
        candidate=config.preset_candidate("rope"),
        seeds=(0, 1),
        out_dir=folder,
        config=config,
    )
    # Tracking runs beside training: the run id comes back with a later report.
    assert hooks.on_start(info) is None
    links = {}
    for seed in (0, 1):
        for step in (10, 20):
            got = hooks.on_eval(info, {"step": float(step), "val_bpb": 2.0 + seed, "seed": seed})
            links.update(got or {})
    outcome = TrialOutcome("complete", scores=_scores(0.3, 2.5, 1e6))
    end_links = hooks.on_end(info, outcome)
    run_id = end_links[ATTR_MLFLOW_RUN_ID]
    assert links in ({}, end_links)  # the same run id whenever it was first reported

    client = MlflowClient(tracking_uri=sqlite_uri)
    run = client.get_run(run_id)
    assert run.data.params["seed"] == "0,1"
    assert [m.value for m in client.get_metric_history(run_id, "seed_1/val_bpb")] == [3.0, 3.0]
    assert run.data.metrics[SHORT_BPB] == 2.5
    # The resolved candidate at the root, each seed's files in its folder.
    expected = {"candidate.yaml"} | {f"seed_{s}/{n}" for s in (0, 1) for n in TRIAL_ARTIFACTS}
    assert _artifact_paths(client, run_id) == expected
    # The driver side, once Optuna has the outcome: the run already agrees; the front is
    # refreshed on the parent run.
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.3, 2.5, 1e6],
            user_attrs={ATTR_MLFLOW_RUN_ID: run_id, ATTR_CANDIDATE_ID: info.candidate.id},
        )
    )
    sweep_hooks.on_trial_end(study_view(study), study.trials[-1])
    summary = SimpleNamespace(counts={"COMPLETE": 1, "FAIL": 0}, wall_seconds=12.5)
    sweep_hooks.on_sweep_end(study_view(study), config, summary)
    assert sweep_hooks.errors == []
    assert client.get_run(run_id).data.tags["pareto"] == "true"
    study_run = client.get_run(sweep_hooks.tracker.parent_run_id)
    assert study_run.info.status == "FINISHED"
    assert study_run.data.metrics["trials_complete"] == 1.0
    assert study_run.data.metrics["sweep_wall_seconds"] == 12.5


# -- sync from the study ---------------------------------------------------------------------


def _fake_study(storage: str, name: str, config, folder: Path) -> optuna.Study:
    """Trials as the sweep driver records them: knobs as params, links and scores as user
    attributes, the scheduler metric as intermediate values."""
    study = optuna.create_study(storage=storage, study_name=name, directions=DIRECTIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(OBJECTIVES)
    dist = {
        "global_every": optuna.distributions.CategoricalDistribution([1, 2, 4]),
        "local_window": optuna.distributions.CategoricalDistribution([16, 32, None]),
    }
    rows = [
        ("COMPLETE", {"global_every": 1, "local_window": None}, (0.5, 2.0, 1e6), None),
        ("COMPLETE", {"global_every": 4, "local_window": 16}, (0.3, 1.8, 2.5e5), None),
        ("COMPLETE", {"global_every": 2, "local_window": 32}, (0.2, 2.2, 5e5), None),
        ("PRUNED", {"global_every": 2, "local_window": 16}, None, "pruned_by_scheduler"),
        ("FAIL", {"global_every": 4, "local_window": None}, None, "diverged"),
        ("RUNNING", {"global_every": 1, "local_window": 32}, None, None),
    ]
    for number, (state, params, values, reason) in enumerate(rows):
        candidate = config.candidate(params)
        trial_dir = _fake_trial_dir(folder / f"{number:05d}", candidate=candidate.name)
        attrs = {
            ATTR_CANDIDATE_ID: candidate.id,
            ATTR_CANDIDATE_NAME: candidate.name,
            ATTR_RAY_TRIAL_ID: f"ray_{number}",
            ATTR_KNOBS: candidate.knobs,
            ATTR_SEED: 0,
            ATTR_TRIAL_DIR: str(trial_dir),
            ATTR_EVAL_METRIC: "val_bpb",
        }
        if reason:
            attrs[ATTR_REASON] = reason
        if values:
            attrs.update({acc_at(2): values[0], "params": 1234.0})
        study.add_trial(
            optuna.trial.create_trial(
                state=getattr(optuna.trial.TrialState, state),
                values=list(values) if values else None,
                params=params,
                distributions=dist,
                user_attrs=attrs,
                intermediate_values={10: 2.3, 20: 2.2} if state != "RUNNING" else {},
            )
        )
    return study


def test_sync_study_creates_missing_runs_and_is_idempotent(sqlite_uri, config, tmp_path):
    study = _fake_study(f"sqlite:///{tmp_path / 'optuna.db'}", "tiny", config, tmp_path / "t")
    tracker = _tracker(sqlite_uri)
    # Trial 1 was tracked halfway (started, one evaluation) before MLflow went away.
    candidate = config.candidate(study.trials[1].params)
    partial = _start(tracker, 1, "ray_1", candidate, config, seed=0)
    tracker.trial_evaluated(10, {"step": 10, "val_bpb": 2.3})

    report = sync_study(study_view(study), _tracker(sqlite_uri))
    assert report.created == [0, 2, 3, 4] and report.completed == [1]
    assert report.skipped == [5] and report.run_ids[1] == partial
    again = sync_study(study_view(study), _tracker(sqlite_uri))
    assert again.unchanged == [0, 1, 2, 3, 4] and not again.created and not again.completed

    client = MlflowClient(tracking_uri=sqlite_uri)
    experiment = client.get_experiment_by_name("tiny")
    children = _children(client, report.parent_run_id, experiment.experiment_id)
    by_trial = {int(r.data.tags["optuna_trial_number"]): r for r in children}
    assert sorted(by_trial) == [0, 1, 2, 3, 4]
    status = {n: (r.info.status, r.data.tags["outcome"]) for n, r in by_trial.items()}
    assert status == {
        0: ("FINISHED", "COMPLETE"),
        1: ("FINISHED", "COMPLETE"),
        2: ("FINISHED", "COMPLETE"),
        3: ("KILLED", "PRUNED"),
        4: ("FAILED", "FAIL"),
    }
    assert by_trial[4].data.tags["reason"] == "diverged"
    assert by_trial[0].data.tags["synced_from_study"] == "true"
    assert by_trial[1].data.params["global_every"] == "4"
    assert by_trial[1].data.params["model.layers"] == "4"
    assert by_trial[1].data.metrics[SHORT_BPB] == 1.8
    assert by_trial[1].data.metrics["acc_at_2x"] == 0.3
    # The partial run keeps its one point at step 10 and gains step 20 from scores.json.
    assert sorted(m.step for m in client.get_metric_history(partial, "val_bpb")) == [10, 20]
    assert _artifact_paths(client, by_trial[3].info.run_id) == TRIAL_ARTIFACTS
    assert by_trial[0].data.tags["pareto"] == "true"  # the front was refreshed too


def test_pareto_rows_from_study_agree_with_brute_force(tmp_path, config):
    study = _fake_study(f"sqlite:///{tmp_path / 'o.db'}", "p", config, tmp_path / "t")
    table = pareto_of_study(study_view(study))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert [row["trial"] for row in table] == [0, 1, 2]  # 2 is dominated by 1
    ranks = {row["trial"]: row["rank"] for row in table}
    sign = [-1, 1, 1]

    def dominates(a, b):
        a = [s * v for s, v in zip(sign, a, strict=True)]
        b = [s * v for s, v in zip(sign, b, strict=True)]
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    for t in complete:
        dominated = any(dominates(o.values, t.values) for o in complete if o is not t)
        assert (ranks[t.number] == 0) == (not dominated)
    assert ranks == dict(
        zip([0, 1, 2], pareto_ranks([t.values for t in complete], DIRECTIONS).ranks, strict=True)
    )
    records = json.loads(table.to_json())
    assert set(records[0]) >= {"trial", "rank", "candidate", *OBJECTIVES}
    assert records[0]["candidate"] == complete[0].user_attrs[ATTR_CANDIDATE_NAME]


# -- a real MLflow tracking server -------------------------------------------------------------


def _history(trial) -> list[dict]:
    folder = Path(trial.user_attrs[ATTR_TRIAL_DIR]) / "seed_0"
    return json.loads((folder / "scores.json").read_text())["history"]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


@pytest.fixture(scope="module")
def server(tmp_path_factory, template_db):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), template_db)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _by_kind(runs: list[dict]):
    parents = [r for r in runs if _tags(r).get("run_kind") == "study"]
    children = [r for r in runs if _tags(r).get("run_kind") == "trial"]
    return parents, children


def test_server_rest_api_shows_one_study_run_and_one_child_per_trial(server, config, tmp_path):
    tracker = Tracker.for_study("served", uri=server.url)
    parent = tracker.start_study(config)
    candidates = [config.preset_candidate("rope"), config.preset_candidate("rnope_swa")]
    run_ids = []
    for number, candidate in enumerate(candidates):
        folder = _fake_trial_dir(tmp_path / f"t{number}", candidate=candidate.name)
        run_id, error = _log_trial(
            pickle.loads(pickle.dumps(tracker)), number, candidate, config, folder
        )
        assert error is None
        run_ids.append(run_id)
    # A resumed driver on another machine finds the same study run.
    assert Tracker.for_study("served", uri=server.url).start_study(config) == parent

    parents, children = _by_kind(server.runs("served"))
    assert [p["info"]["run_id"] for p in parents] == [parent]
    assert sorted(c["info"]["run_id"] for c in children) == sorted(run_ids)
    for child, candidate in zip(
        sorted(children, key=lambda c: _tags(c)["optuna_trial_number"]), candidates, strict=True
    ):
        tags = _tags(child)
        assert tags["mlflow.parentRunId"] == parent
        for key in CHILD_TAGS:
            assert key in tags, key
        assert tags["candidate_id"] == candidate.id
        assert tags["outcome"] == "COMPLETE"
        assert _metrics(child)[LONG_ACC] == 0.5
        assert child["info"]["status"] == "FINISHED"
        history = server.api(
            "GET", f"metrics/get-history?run_id={child['info']['run_id']}&metric_key=val_bpb"
        )
        assert sorted(int(m["step"]) for m in history["metrics"]) == [10, 20]
        run_id = child["info"]["run_id"]
        assert server.artifacts(run_id) == TRIAL_ARTIFACTS
        assert server.download(run_id, "niah.png").startswith(b"\x89PNG")
        assert candidate.name in server.download(run_id, "candidate.yaml").decode()


def test_server_down_mid_sweep_then_sync_completes_the_runs(server, config, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while it is down
    monkeypatch.setattr(tracker_module, "_SHOWN", set())
    study = _fake_study(f"sqlite:///{tmp_path / 'optuna.db'}", "outage", config, tmp_path / "t")
    tracker = Tracker.for_study("outage", uri=server.url)
    assert tracker.start_study(config) is not None
    # Trial 0 is tracked while the server is up.
    first = pickle.loads(pickle.dumps(tracker))
    trial0 = study.trials[0]
    run0 = _start(first, 0, "ray_0", config.candidate(trial0.params), config, seed=0)
    for row in _history(trial0):
        first.trial_evaluated(int(row["step"]), row)
    scores = {k: v for k, v in trial0.user_attrs.items() if is_score_name(k)}
    scores.update(zip(OBJECTIVES, trial0.values, strict=True))
    artifacts = trial_artifacts(Path(trial0.user_attrs[ATTR_TRIAL_DIR]))
    assert first.trial_finished("COMPLETE", None, scores, artifacts) is None
    # Trial 1 starts, then the server goes down halfway through it.
    second = pickle.loads(pickle.dumps(tracker))
    trial1 = study.trials[1]
    run1 = _start(second, 1, "ray_1", config.candidate(trial1.params), config, seed=0)
    assert run1 is not None
    second.trial_evaluated(10, _history(trial1)[0])
    server.stop()
    started = time.monotonic()
    second.trial_evaluated(20, _history(trial1)[1])
    error1 = second.trial_finished("COMPLETE", None, {SHORT_BPB: 1.8}, {})
    # Trial 2 runs entirely while the server is down: the trial goes on regardless.
    third = pickle.loads(pickle.dumps(tracker))
    assert _start(third, 2, "ray_2", config.candidate(study.trials[2].params), config) is None
    third.trial_evaluated(10, {"step": 10, "val_bpb": 2.3})
    error2 = third.trial_finished("COMPLETE", None, {SHORT_BPB: 2.2}, {})
    assert time.monotonic() - started < 30  # failing softly is also failing fast
    assert error1 and error2  # what the driver stores as the trial's tracking_error
    assert ATTR_TRACKING_ERROR == "tracking_error"

    server.start()
    report = sync_study(study_view(study), Tracker.for_study("outage", uri=server.url))
    assert report.created == [2, 3, 4] and report.completed == [1]
    assert report.unchanged == [0] and report.skipped == [5]
    assert report.run_ids[0] == run0 and report.run_ids[1] == run1

    parents, children = _by_kind(server.runs("outage"))
    assert len(parents) == 1
    by_trial = {int(_tags(c)["optuna_trial_number"]): c for c in children}
    assert sorted(by_trial) == [0, 1, 2, 3, 4]  # one child per finished trial
    for number, child in by_trial.items():
        trial = study.trials[number]
        tags = _tags(child)
        assert tags["outcome"] == trial.state.name
        assert tags["mlflow.parentRunId"] == parents[0]["info"]["run_id"]
        assert child["info"]["status"] in ("FINISHED", "KILLED", "FAILED")
        if trial.values:
            metrics = _metrics(child)
            for name, value in zip(OBJECTIVES, trial.values, strict=True):
                assert math.isclose(metrics[name], value)
        assert server.artifacts(child["info"]["run_id"]) >= TRIAL_ARTIFACTS
    pareto = server.artifacts(parents[0]["info"]["run_id"], "pareto")
    assert "pareto/pareto.html" in pareto
    assert not sync_study(study_view(study), Tracker.for_study("outage", uri=server.url)).completed


# -- the commands: ropenope pareto, sync; real sweeps --------------------------------------


def _brute_force_ranks(points: list[list[float]], signs: list[int]) -> list[int]:
    """Peel fronts one by one: rank r = non-dominated once ranks < r are removed."""
    left = {i: [s * v for s, v in zip(signs, p, strict=True)] for i, p in enumerate(points)}
    ranks = [-1] * len(points)
    rank = 0
    while left:
        front = [
            i
            for i, a in left.items()
            if not any(
                all(x <= y for x, y in zip(b, a, strict=True)) and b != a
                for j, b in left.items()
                if j != i
            )
        ]
        for i in front:
            ranks[i] = rank
            del left[i]
        rank += 1
    return ranks


def test_cli_pareto_agrees_with_an_independent_computation(tmp_path, config, capsys):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = _fake_study(url, "front", config, tmp_path / "t")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    expected = dict(
        zip(
            [t.number for t in complete],
            _brute_force_ranks([t.values for t in complete], [-1, 1, 1]),
            strict=True,
        )
    )

    assert cli_main(["pareto", "front", "--storage", url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["trial"]: r["rank"] for r in rows} == expected  # only COMPLETE trials
    for row in rows:
        trial = study.trials[row["trial"]]
        assert row["candidate"] == trial.user_attrs[ATTR_CANDIDATE_NAME]
        assert [row[name] for name in OBJECTIVES] == trial.values
        assert row["pareto"] == (row["rank"] == 0)

    assert cli_main(["pareto", "front", "--storage", url, "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",")[:7] == ["trial", "rank", "pareto", "candidate", *OBJECTIVES]
    assert len(lines) == 1 + len(complete)

    plot = tmp_path / "front.html"
    assert cli_main(["pareto", "front", "--storage", url, "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert plot.is_file() and "<html" in plot.read_text().lower()
    for trial in complete:
        assert trial.user_attrs[ATTR_CANDIDATE_NAME] in text
    assert cli_main(["pareto", "nosuch", "--storage", url]) == 2
    assert "no study 'nosuch'" in capsys.readouterr().err


def _tracked_sweep(path: Path, name: str, uri: str | None, **sections) -> Path:
    return tiny_config_file(
        path,
        study={"name": name, "trials": 3},
        presets=["rope", "nope"],
        tracking={"enabled": True, **({"uri": uri} if uri else {})},
        **sections,
    )


def test_sweep_on_local_ray_logs_one_child_per_trial_to_sqlite(tmp_path, runs_home, ray_local):
    """The embedded default (make demo): runs made inside Ray trials, MLflow on SQLite."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = _tracked_sweep(tmp_path / "sweep.yaml", "local", None)
    summary = driver.submit(path, storage=url, address=ray_local, progress=False)
    assert summary.counts["COMPLETE"] == 3
    assert [r["trial"] for r in summary.pareto.rows] and summary.ui.startswith("MLflow UI")

    study = optuna.load_study(study_name="local", storage=url)
    uri = resolve_tracking_uri(None, runs_home)
    assert uri == f"sqlite:///{runs_home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("local")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("run_kind") == "study"]
    assert len(parents) == 1
    children = _children(client, parents[0].info.run_id, experiment.experiment_id)
    assert len(children) == 3
    ranks = {row["trial"]: row["rank"] for row in summary.pareto.rows}
    for trial in study.trials:
        assert ATTR_TRACKING_ERROR not in trial.user_attrs
        run = client.get_run(trial.user_attrs[ATTR_MLFLOW_RUN_ID])
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["optuna_trial_number"] == str(trial.number)
        assert tags["ray_trial_id"] == trial.user_attrs[ATTR_RAY_TRIAL_ID]
        assert tags["pareto_rank"] == str(ranks[trial.number])
        assert run.data.params["global_every"] == str(trial.user_attrs[ATTR_KNOBS]["global_every"])
        for name, value in zip(OBJECTIVES, trial.values, strict=True):
            assert math.isclose(run.data.metrics[name], value)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_bpb")]
        assert sorted(steps) == [10, 20, 30]
        assert {"niah.png", "candidate.yaml"} <= _artifact_paths(client, run.info.run_id)
    pareto = _artifact_paths(client, parents[0].info.run_id, "pareto")
    assert {"pareto/pareto.csv", "pareto/pareto.md", "pareto/pareto.html"} <= pareto


def test_sweep_completes_with_the_server_down_midway_then_cli_sync_mends_mlflow(
    tmp_path, runs_home, ray_local, server, capsys
):
    """The server stops after the first trial; the rest train and reach Optuna with the
    error recorded; `ropenope sync` then gives every trial its complete run."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = _tracked_sweep(
        tmp_path / "sweep.yaml", "midway", server.url, resources={"max_concurrent": 1}
    )
    stopped = threading.Event()

    def stop_after_first_trial() -> None:
        # Plain SQL, read-only: opening an Optuna storage here would race the driver's
        # creation of the schema.
        db = tmp_path / "optuna.db"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
                    done = c.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'")
                    if done.fetchone()[0] > 0:
                        server.stop()
                        stopped.set()
                        return
            except sqlite3.Error:
                pass  # no database or no table yet
            time.sleep(0.2)

    watcher = threading.Thread(target=stop_after_first_trial, daemon=True)
    watcher.start()
    try:
        summary = driver.submit(path, storage=url, address=ray_local, progress=False)
    finally:
        watcher.join(timeout=5)
        if stopped.is_set():
            server.start()
    assert stopped.is_set()
    assert summary.counts["COMPLETE"] == 3  # the sweep did not notice beyond the note

    study = optuna.load_study(study_name="midway", storage=url)
    first, *later = study.trials
    assert ATTR_TRACKING_ERROR not in first.user_attrs
    assert all(t.user_attrs.get(ATTR_TRACKING_ERROR) for t in later)

    capsys.readouterr()
    assert cli_main(["sync", "midway", "--storage", url]) == 0
    assert "runs created" in capsys.readouterr().out
    parents, children = _by_kind(server.runs("midway"))
    assert len(parents) == 1
    by_trial = {int(_tags(c)["optuna_trial_number"]): c for c in children}
    assert sorted(by_trial) == [0, 1, 2]  # one child per trial, none twice
    for number, child in by_trial.items():
        trial = study.trials[number]
        assert child["info"]["status"] == "FINISHED"
        assert _tags(child)["mlflow.parentRunId"] == parents[0]["info"]["run_id"]
        metrics = _metrics(child)
        for name, value in zip(OBJECTIVES, trial.values, strict=True):
            assert math.isclose(metrics[name], value)
        assert "niah.png" in server.artifacts(child["info"]["run_id"])
    assert cli_main(["sync", "midway", "--storage", url]) == 0
    assert "0 runs created, 0 completed, 3 already complete" in capsys.readouterr().out


def test_cli_ui_serves_the_study_store_and_prints_its_url(tmp_path, config, server):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _fake_study(url, "review", config, tmp_path / "t")
    env = {**os.environ, "ROPENOPE_HOME": str(tmp_path / "runs")}
    ropenope = str(Path(sys.executable).parent / "ropenope")
    # A tracking server is its own UI: the command only says where.
    shown = subprocess.run(
        [ropenope, "ui", "review", "--storage", url, "--tracking-uri", server.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert shown.returncode == 0 and server.url in shown.stdout, shown.stderr
    # A SQLite store: `mlflow ui` on it until stopped, at the printed address.
    port = free_port()
    proc = subprocess.Popen(
        [ropenope, "ui", "review", "--storage", url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        seen = []  # MLflow's own log lines come first; ours is printed before serving
        while not (seen and seen[-1].startswith("MLflow UI")):
            line = proc.stdout.readline()
            assert line, "".join(seen)  # it exited without saying where
            seen.append(line)
        assert f"http://127.0.0.1:{port}" in seen[-1] and "runs/mlflow.db" in seen[-1], seen
        deadline = time.monotonic() + 120
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None and not healthy:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    healthy = r.status == 200
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        assert healthy, proc.poll()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own group: ropenope, mlflow, uvicorn
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_background_calls_a_silent_server_stuck_sooner_than_a_slow_one(monkeypatch):
    """A call in flight is "stuck" after FIRST_ANSWER_STUCK_AFTER_S while nothing has come
    back in this process (a server that never answered), after STUCK_AFTER_S once one call
    has (a server known to answer, maybe slowly)."""
    from tracking import background

    monkeypatch.setattr(background, "FIRST_ANSWER_STUCK_AFTER_S", 0.2)
    monkeypatch.setattr(background, "STUCK_AFTER_S", 1.0)
    release = threading.Event()

    silent = background.Background("test-silent")
    hung = silent.submit(release.wait)
    time.sleep(0.4)
    assert silent.stuck and not hung.done()
    started = time.monotonic()
    assert silent.drain(timeout_s=30) is False  # gives up at once, not after 30 s
    assert time.monotonic() - started < 0.5
    release.set()
    assert hung.result(timeout=5) is True and silent.drain(timeout_s=5)

    release.clear()
    slow = background.Background("test-slow")
    assert slow.wait(slow.submit(lambda: "answered"), timeout_s=5) == "answered"
    late = slow.submit(release.wait)
    time.sleep(0.4)
    assert not slow.stuck  # a server that answered before gets the longer grace
    time.sleep(0.8)
    assert slow.stuck and slow.wait(late, timeout_s=30) is None
    release.set()
    assert late.result(timeout=5) is True


def test_background_on_a_local_store_is_never_judged_silent(monkeypatch, tmp_path):
    """A SQLite store busy at its first call (another writer, tables being created) is
    waited for up to the timeout, never given up on as a silent server (issue 21 #7)."""
    from tracking import background
    from tracking.target import tracking_target

    monkeypatch.setattr(background, "FIRST_ANSWER_STUCK_AFTER_S", 0.05)
    monkeypatch.setattr(background, "STUCK_AFTER_S", 0.1)
    release = threading.Event()
    local = background.Background("test-local", remote=False)
    busy = local.submit(release.wait)
    time.sleep(0.3)
    assert not local.stuck and not busy.done()
    started = time.monotonic()
    assert local.drain(timeout_s=0.6) is False
    assert time.monotonic() - started >= 0.6  # the whole timeout, not an early give-up
    release.set()
    assert busy.result(timeout=5) is True and local.drain(timeout_s=5)

    # The hooks pick the rule from the store, and a trial's pickled copy keeps it.
    sqlite = tracking_target(None, "s", uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    server = tracking_target(None, "s", uri="http://127.0.0.1:5000")
    for target, remote in ((sqlite, False), (server, True)):
        hooks = pickle.loads(pickle.dumps(MlflowTrialHooks(Tracker(target))))
        assert hooks._background.remote is remote
        assert MlflowSweepHooks(Tracker(target))._background.remote is remote


def test_sweep_end_completes_and_links_the_runs_tracking_missed(sqlite_uri, config, tmp_path):
    """The sweep's end (and resume's) gives every finished trial its complete run and its
    ``mlflow_run_id`` without `ropenope sync` (issue 21 #7); a second pass finds nothing."""
    from search.storage import make_storage
    from search.trials import record_run_links

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = _fake_study(url, "tiny", config, tmp_path / "t")
    # Trial 1 was tracked live (its run linked) but its driver died before closing the run.
    candidate = config.candidate(study.trials[1].params)
    live = _start(_tracker(sqlite_uri), 1, "ray_1", candidate, config, seed=0)
    storage = make_storage(url)
    record_run_links(study, storage, {1: live})

    hooks = MlflowSweepHooks(_tracker(sqlite_uri))
    links = hooks.complete_runs(study_view(optuna.load_study(study_name="tiny", storage=url)))
    assert sorted(links) == [0, 2, 3, 4]  # trial 1 is linked already; 5 is RUNNING
    record_run_links(study, storage, links)

    trials = optuna.load_study(study_name="tiny", storage=url).trials
    client = MlflowClient(tracking_uri=sqlite_uri)
    want = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    for trial in trials[:5]:
        run = client.get_run(trial.user_attrs[ATTR_MLFLOW_RUN_ID])
        assert run.data.tags["optuna_trial_number"] == str(trial.number)
        assert run.info.status == want[trial.state.name]
    assert trials[1].user_attrs[ATTR_MLFLOW_RUN_ID] == live
    assert ATTR_MLFLOW_RUN_ID not in trials[5].user_attrs
    again = MlflowSweepHooks(_tracker(sqlite_uri))
    assert again.complete_runs(study_view(optuna.load_study(study_name="tiny", storage=url))) == {}


def _store_with_leftover(tmp_path, *, with_run: bool, between_drop_and_rename: bool = False):
    """A real MLflow SQLite store as a SIGKILL inside alembic's copy-and-rename of a
    table leaves it: ``_alembic_tmp_endpoints`` next to (or instead of) ``endpoints``."""
    import sqlite3

    from tracking.store import MlflowStore
    from tracking.target import TrackingTarget

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    target = TrackingTarget(uri=uri, experiment="e", study="s")
    store = MlflowStore(target)
    experiment = store.experiment_id()  # creates the store's tables
    if with_run:
        store.client.create_run(experiment)
    with contextlib.closing(sqlite3.connect(tmp_path / "mlflow.db")) as conn:
        if between_drop_and_rename:
            conn.execute("ALTER TABLE endpoints RENAME TO _alembic_tmp_endpoints")
        else:
            conn.execute("CREATE TABLE _alembic_tmp_endpoints AS SELECT * FROM endpoints")
        conn.commit()
    return target


def _tables(path) -> set[str]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.mark.parametrize("between_drop_and_rename", [False, True])
def test_store_mends_a_migration_a_kill_interrupted_and_keeps_its_runs(
    tmp_path, between_drop_and_rename
):
    from tracking.store import MlflowStore

    target = _store_with_leftover(
        tmp_path, with_run=True, between_drop_and_rename=between_drop_and_rename
    )
    store = MlflowStore(target)
    assert len(store.client.search_runs([store.experiment_id()])) == 1  # the run is kept
    tables = _tables(tmp_path / "mlflow.db")
    assert "endpoints" in tables and "_alembic_tmp_endpoints" not in tables


def test_store_half_created_by_a_killed_process_is_made_again(tmp_path):
    from tracking.store import MlflowStore, mend_interrupted_migration

    target = _store_with_leftover(tmp_path, with_run=False)
    store = MlflowStore(target)
    run = store.client.create_run(store.experiment_id())  # a working store again
    assert store.client.get_run(run.info.run_id).info.status == "RUNNING"
    assert "_alembic_tmp_endpoints" not in _tables(tmp_path / "mlflow.db")
    assert mend_interrupted_migration(tmp_path / "mlflow.db") is None  # nothing left to mend
