"""The MLflow UI a user lands on, rendered by a headless Chromium (Debian's ``chromium``, which
``make test`` installs when missing; driven by tests/browser.py), and the model registry on a
tracking server.

The study is made with the tracking API (an Optuna study with three COMPLETE trials, then
``sync_study``, as ``ropenope sync`` does); ``ropenope ui`` serves it and prints the address;
the browser renders that address and the page must show the runs table with every trial's
run, and the study's description above it. The same ``mlflow ui`` process is the tracking
server the registry test registers an exported model through.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from browser import distinct_colours, dump_dom, ink_fraction, screenshot
from engines import REPO, free_port
from mlflow import MlflowClient

from search.signature import record_config
from search.study_view import study_view
from space.names import KV_CACHE_BYTES, LONG_ACC, SHORT_BPB
from space.schema import parse_config, parse_yaml
from space.trial_attrs import ATTR_CANDIDATE_ID, ATTR_CANDIDATE_NAME, ATTR_KNOBS, ATTR_SEED
from tracking.runs_view import VIEW_KEY
from tracking.sync import sync_study
from tracking.tracker import Tracker

STUDY = "review"
TRIALS = [  # knobs, (long_acc, short_bpb, kv_cache_bytes)
    ({"global_every": 1}, (0.2, 2.3, 4e6)),
    ({"global_every": 2, "global_position": "nope", "local_window": 16}, (0.9, 2.4, 2e6)),
    ({"global_every": 2, "qk_norm": "pre_rope"}, (0.4, 2.2, 4e6)),
]


def _config_text() -> str:
    return (
        (REPO / "tests" / "data" / "tiny.yaml").read_text().replace("name: tiny", f"name: {STUDY}")
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The study in SQLite, its runs in MLflow on SQLite under runs/ (the embedded default)."""
    folder = tmp_path_factory.mktemp("ui-study")
    text = _config_text()
    config = parse_config(parse_yaml(text), source="tiny.yaml")
    url = f"sqlite:///{folder / 'optuna.db'}"
    study = optuna.create_study(
        storage=url, study_name=STUDY, directions=["maximize", "minimize", "minimize"]
    )
    record_config(study, config, text)
    for knobs, values in TRIALS:
        candidate = config.candidate(knobs)
        attrs = {
            ATTR_CANDIDATE_ID: candidate.id,
            ATTR_CANDIDATE_NAME: candidate.name,
            ATTR_KNOBS: candidate.knobs,
            ATTR_SEED: 0,
            **dict(zip((LONG_ACC, SHORT_BPB, KV_CACHE_BYTES), values, strict=True)),
        }
        study.add_trial(
            optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=list(values),
                                      user_attrs=attrs)
        )  # fmt: skip
    home = folder / "runs"
    uri = f"sqlite:///{home / 'mlflow.db'}"
    tracker = Tracker.for_study(STUDY, uri=uri, runs=home)
    report = sync_study(study_view(study), tracker, config=config)
    assert len(report.created) == len(TRIALS)
    return {"url": url, "home": home, "uri": uri, "config": config, "study": study}


@pytest.fixture(scope="module")
def ui(store):
    """`ropenope ui STUDY`: the printed address, and the server behind it."""
    port = free_port()
    env = {**os.environ, "ROPENOPE_HOME": str(store["home"])}
    env.pop("MLFLOW_TRACKING_URI", None)
    ropenope = str(Path(sys.executable).parent / "ropenope")
    proc = subprocess.Popen(
        [ropenope, "ui", STUDY, "--storage", store["url"], "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        seen = []
        while not (seen and seen[-1].startswith("MLflow UI")):
            line = proc.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        address = next(w for w in seen[-1].split() if w.startswith("http://"))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, "".join(seen)
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        yield {"address": address, "base": base}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own group: ropenope, mlflow, uvicorn
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_ui_opens_on_the_runs_table_with_every_trial_run(store, ui, tmp_path):
    address = ui["address"]
    assert address.startswith(ui["base"] + "/#/experiments/")
    assert "/runs?workflowType=machine_learning" in address and VIEW_KEY in address
    client = MlflowClient(tracking_uri=store["uri"])
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id])
    trial_runs = [r.info.run_name for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert len(trial_runs) == len(TRIALS)
    dom, budget = "", 0
    for attempt, budget in enumerate((20_000, 60_000)):  # a loaded machine renders slowly
        dom = dump_dom(address, tmp_path / f"profile{attempt}", budget)
        if all(name in dom for name in trial_runs):
            break
    missing = [name for name in trial_runs if name not in dom]
    assert not missing, f"trial runs not on the page: {missing}"
    assert 'role="grid"' in dom or 'role="treegrid"' in dom  # the runs table itself
    assert "COMPLETE trials ranked" in dom  # the study's description, above the table
    assert "Pareto front" in dom
    # The first screen as a person sees it: the page drew, not a blank or an error page.
    pixels = screenshot(address, tmp_path / "mlflow-ui.png", tmp_path / "shot", budget)
    assert ink_fraction(pixels) > 0.03 and distinct_colours(pixels) > 200


def test_registry_on_a_tracking_server_links_the_version_to_the_run(store, ui, tmp_path):
    import torch

    from tracking.registry import register_exported_model
    from tracking.target import TrackingTarget
    from workers.hf.export import PYFUNC_LOADER, export_candidate
    from workers.model import HybridTransformer

    config, study = store["config"], store["study"]
    trial = study.trials[1]
    candidate = config.candidate(trial.user_attrs[ATTR_KNOBS])
    torch.manual_seed(0)
    weights = HybridTransformer(candidate.shape, candidate.layers).state_dict()
    result = export_candidate(
        candidate, weights, tmp_path / "model", max_position_embeddings=96, card="# card\n"
    )
    server = ui["base"]
    client = MlflowClient(tracking_uri=server)
    run = next(
        r
        for r in client.search_runs([client.get_experiment_by_name(STUDY).experiment_id])
        if r.data.tags.get("optuna_trial_number") == "1"
    )
    version = register_exported_model(
        TrackingTarget(uri=server, experiment=STUDY, study=STUDY),
        "served-model",
        result.out_dir,
        loader_file=PYFUNC_LOADER,
        run_id=run.info.run_id,
        scores=dict(trial.user_attrs),
        facts={"study": STUDY, "trial": 1, "architecture": result.architecture},
    )
    got = client.get_model_version("served-model", version.version)
    assert got.run_id == run.info.run_id and got.status == "READY"
    assert float(got.tags[LONG_ACC]) == pytest.approx(0.9)
    assert got.tags["architecture"] == "SmolLM3ForCausalLM"
    assert client.get_logged_model(version.model_id).source_run_id == run.info.run_id
    files = {a.path for a in client.list_logged_model_artifacts(version.model_id)}
    assert {"MLmodel", "hf", "code"} <= files


# -- the page's pieces, on a fresh store ------------------------------------------------


def test_runs_view_marks_the_experiment_and_keeps_a_view_the_user_saved(tmp_path):
    import json

    from tracking.runs_view import EXPERIMENT_KIND_TAG, MODEL_TRAINING, ensure_view
    from tracking.store import MlflowStore
    from tracking.target import TrackingTarget

    target = TrackingTarget(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="e", study="e")
    store = MlflowStore(target)
    experiment_id = store.experiment_id()  # created as a model-training experiment
    client = store.client
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    assert ensure_view(client, experiment_id, [LONG_ACC, "acc@2x"], ["local_window"])
    key = f"mlflow.sharedViewState.{VIEW_KEY}"
    envelope = json.loads(client.get_experiment(experiment_id).tags[key])
    state = json.loads(envelope["state"])
    assert state["searchFilter"] == "tags.run_kind = 'trial'"  # flat: no trial hides
    assert state["orderByKey"] == "tags.`pareto_rank`" and state["orderByAsc"] is True
    assert "metrics.`acc_at_2x`" in state["selectedColumns"]  # MLflow's name for acc@2x
    assert "params.`local_window`" in state["selectedColumns"]
    mine = json.dumps({**envelope, "state": json.dumps({**state, "orderByKey": "x"})})
    client.set_experiment_tag(experiment_id, key, mine)
    assert not ensure_view(client, experiment_id, [LONG_ACC])
    assert client.get_experiment(experiment_id).tags[key] == mine


def test_study_note_describes_the_front_on_the_run_and_never_replaces_a_users_text(tmp_path):
    from tracking.pareto import pareto_table
    from tracking.runs_view import NOTE_TAG, set_study_note, study_note
    from tracking.store import MlflowStore
    from tracking.target import TrackingTarget

    rows = [
        {"trial": 0, "candidate": "A", LONG_ACC: 0.2, SHORT_BPB: 2.3},
        {"trial": 1, "candidate": "B", LONG_ACC: 0.9, SHORT_BPB: 2.4},
        {"trial": 2, "candidate": "C", LONG_ACC: 0.1, SHORT_BPB: 2.5},  # dominated by A
    ]
    table = pareto_table(rows, [LONG_ACC, SHORT_BPB], ["maximize", "minimize"])
    note = study_note(table, "s")
    headline = note.splitlines()[0]
    assert headline.startswith("**s**: 3 COMPLETE trials ranked; Pareto front: trial 0 `A`")
    assert "trial 1 `B`" in headline and "`C`" not in headline
    assert "| **0** | 0 | A |" in note and "| 2 | 1 | C |" in note

    target = TrackingTarget(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="s", study="s")
    store = MlflowStore(target)
    run_id, _ = store.ensure_parent()
    experiment_id = store.experiment_id()
    set_study_note(store.client, experiment_id, run_id, note)
    assert store.client.get_run(run_id).data.tags[NOTE_TAG] == note
    assert store.client.get_experiment(experiment_id).tags[NOTE_TAG] == note
    store.client.set_experiment_tag(experiment_id, NOTE_TAG, "our own description")
    later = study_note(pareto_table(rows[:1], [LONG_ACC, SHORT_BPB], ["max", "min"]), "s")
    set_study_note(store.client, experiment_id, run_id, later)
    assert store.client.get_run(run_id).data.tags[NOTE_TAG] == later
    assert store.client.get_experiment(experiment_id).tags[NOTE_TAG] == "our own description"
