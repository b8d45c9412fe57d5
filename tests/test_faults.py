"""Faults injected into real sweeps (issue 11): nothing is lost, nothing runs twice.

- the driver SIGKILLed at random moments, five times, each followed by `ropenope resume`;
- a trial's worker process SIGKILLed mid-training: it continues from its checkpoint;
- an MLflow "server" that accepts connections and never answers: the sweep does not wait
  for it, and `ropenope sync` completes the runs once a real server is up;
- PostgreSQL restarted mid-sweep: the sweep waits it out and completes;
- a full disk (ENOSPC) at a checkpoint write: the trial restarts from its checkpoint;
- a cluster that kills every trial: the failure budget stops the sweep with one line.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import optuna
import pytest
from engines import (
    MlflowServer,
    SilentServer,
    disk_full_runner,
    dying_runner,
    kill_at_random_moments,
    pid_reporting_runner,
    sigkill_when_written,
    tiny_config_file,
)
from mlflow import MlflowClient
from optuna.trial import TrialState

from search import driver
from search.cli import main as cli_main
from space.names import RUN_KIND_TRIAL, TAG_OPTUNA_TRIAL, TAG_RUN_KIND
from space.outcomes import Reason
from space.trial_attrs import (
    ATTR_CANDIDATE_ID,
    ATTR_MLFLOW_RUN_ID,
    ATTR_REASON,
    ATTR_RESTART_REASON,
    ATTR_RESUMED_FROM_STEP,
    ATTR_REUSED_FROM,
    ATTR_TRACKING_ERROR,
    ATTR_WORKER_RESTARTS,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SPACE = {
    "global_every": {"choice": [1, 2]},
    "global_position": {"choice": ["nope", "rope"]},
    "local_window": {"choice": [8, 16]},
}


def _integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _trial_runs(uri: str, study: str) -> dict[int, list[str]]:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.{TAG_RUN_KIND} = '{RUN_KIND_TRIAL}'"
    )
    out: dict[int, list[str]] = {}
    for run in runs:
        out.setdefault(int(run.data.tags[TAG_OPTUNA_TRIAL]), []).append(run.info.status)
    return out


def test_faults_driver_killed_five_times_then_resumed_loses_nothing(tmp_path, runs_home, ray_local):
    db = tmp_path / "optuna.db"
    url = f"sqlite:///{db}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "torture", "trials": 4, "sampler": "random", "seed": 7},
        space=SPACE,
        presets=["rope"],
        train={"steps": 60, "eval_every": 10, "checkpoint_every": 10},
        tracking={"enabled": True},
    )
    kills = kill_at_random_moments(
        path,
        "torture",
        storage=url,
        address=ray_local,
        runs_home=runs_home,
        times=5,
        seed=20261130,
        within=(3.0, 14.0),  # a random moment: start-up, training, ends
    )
    assert kills >= 5, f"only {kills} kills landed before the sweep ended"

    summary = driver.resume("torture", storage=url, address=ray_local, progress=False)
    assert summary.counts["RUNNING"] == 0
    study = optuna.load_study(study_name="torture", storage=url)
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4, [(t.number, t.state.name) for t in trials]
    trained = [t for t in complete if ATTR_REUSED_FROM not in t.user_attrs]
    ids = [t.user_attrs[ATTR_CANDIDATE_ID] for t in trained]
    assert len(ids) == len(set(ids)), "a candidate was trained to completion twice"

    # MLflow: after `ropenope sync`, exactly one finished run per trial.
    assert cli_main(["sync", "torture", "--storage", url]) == 0
    mlflow_uri = f"sqlite:///{runs_home / 'mlflow.db'}"
    runs = _trial_runs(mlflow_uri, "torture")
    finished = [t.number for t in trials if t.state.is_finished()]
    assert sorted(runs) == sorted(finished)
    assert all(len(statuses) == 1 for statuses in runs.values()), runs
    assert all(s[0] in ("FINISHED", "FAILED", "KILLED") for s in runs.values()), runs
    for t in complete:
        assert t.user_attrs.get(ATTR_MLFLOW_RUN_ID) or t.user_attrs.get(ATTR_TRACKING_ERROR)
    assert _integrity(db) == "ok"
    assert _integrity(runs_home / "mlflow.db") == "ok"


def test_faults_driver_kills_end_with_an_mlflow_run_linked_to_every_complete_trial(
    tmp_path, runs_home, ray_local
):
    """Issue 21 #7: on the embedded default, a sweep whose driver is SIGKILLed three times
    (each followed by `ropenope resume`) ends with every COMPLETE trial linked
    (``mlflow_run_id``) to its own finished MLflow run, without `ropenope sync`."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "linked", "trials": 4, "sampler": "random", "seed": 3},
        space=SPACE,
        presets=["rope"],
        train={"steps": 40, "eval_every": 10, "checkpoint_every": 10},
        tracking={"enabled": True},
    )
    kill_at_random_moments(
        path,
        "linked",
        storage=url,
        address=ray_local,
        runs_home=runs_home,
        times=3,
        seed=20261207,
        within=(4.0, 12.0),
    )

    driver.resume("linked", storage=url, address=ray_local, progress=False)
    trials = optuna.load_study(study_name="linked", storage=url).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4, [(t.number, t.state.name) for t in trials]
    client = MlflowClient(tracking_uri=f"sqlite:///{runs_home / 'mlflow.db'}")
    for trial in complete:
        run = client.get_run(trial.user_attrs[ATTR_MLFLOW_RUN_ID])  # linked, no sync run
        assert run.data.tags[TAG_OPTUNA_TRIAL] == str(trial.number)
        assert run.info.status == "FINISHED", (trial.number, run.info.status)
    runs = _trial_runs(f"sqlite:///{runs_home / 'mlflow.db'}", "linked")
    assert sorted(runs) == sorted(t.number for t in trials if t.state.is_finished())


def test_faults_worker_killed_mid_training_continues_from_its_checkpoint(
    tmp_path, runs_home, ray_local
):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "workerkill", "trials": 1},
        presets=["rope"],
        train={"steps": 40, "eval_every": 10, "checkpoint_every": 10},
        resources={"max_concurrent": 1, "max_retries": 2},
    )
    pid_file = tmp_path / "worker.pid"

    killer = sigkill_when_written(pid_file, wait_s=300)
    runner = functools.partial(pid_reporting_runner, pid_file=str(pid_file))
    summary = driver.submit(path, storage=url, address=ray_local, runner=runner, progress=False)
    killer.join(timeout=10)
    assert pid_file.exists()
    assert summary.counts["COMPLETE"] == 1 and summary.counts["FAIL"] == 0
    (trial,) = optuna.load_study(study_name="workerkill", storage=url).get_trials()
    assert trial.user_attrs[ATTR_WORKER_RESTARTS] == 1
    assert trial.user_attrs[ATTR_RESUMED_FROM_STEP] >= 10  # not from step 0


def test_faults_full_disk_at_a_checkpoint_write_reruns_the_trial(tmp_path, runs_home, ray_local):
    # A full disk is not the candidate's failure: the trial restarts from its newest
    # checkpoint, never FAIL with an error reason.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "diskfull", "trials": 1},
        presets=["rope"],
        train={"steps": 40, "eval_every": 10, "checkpoint_every": 10},
        resources={"max_concurrent": 1, "max_retries": 2},
    )
    marker = tmp_path / "disk.full"
    runner = functools.partial(disk_full_runner, marker=str(marker))
    summary = driver.submit(path, storage=url, address=ray_local, runner=runner, progress=False)
    assert marker.exists()  # the second checkpoint write failed with ENOSPC
    assert summary.counts["COMPLETE"] == 1 and summary.counts["FAIL"] == 0, summary.counts
    (trial,) = optuna.load_study(study_name="diskfull", storage=url).get_trials()
    assert trial.user_attrs[ATTR_WORKER_RESTARTS] == 1
    assert "ENOSPC" in trial.user_attrs[ATTR_RESTART_REASON]
    assert trial.user_attrs[ATTR_RESUMED_FROM_STEP] >= 10  # from its checkpoint


def test_faults_consecutive_worker_deaths_stop_the_sweep_with_one_line(
    tmp_path, runs_home, ray_local, monkeypatch, capsys
):
    # Every trial's process is killed as it starts: worker deaths do not count toward the
    # target, so without a budget the sweep would start new trials for ever.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "broken", "trials": 6},
        space=SPACE,
        resources={"max_concurrent": 1, "max_retries": 0, "failures": {"max_consecutive": 2}},
    )
    monkeypatch.setattr(driver, "submit", functools.partial(driver.submit, runner=dying_runner))
    code = cli_main(["submit", str(path), "--storage", url, "--address", ray_local, "--quiet"])
    out, err = capsys.readouterr()
    said = [line for line in (out + err).splitlines() if "sweep stopped" in line]
    assert code == 3, (out, err)
    assert len(said) == 1, said
    assert "2 trials in a row ended by an infrastructure failure" in said[0]
    assert "`ropenope resume broken`" in said[0]
    trials = optuna.load_study(study_name="broken", storage=url).get_trials()
    assert [(t.state, t.user_attrs[ATTR_REASON]) for t in trials] == [
        (TrialState.FAIL, Reason.WORKER_DIED)
    ] * 2


def _tiny_sweep(tmp_path: Path, name: str, tracking: dict) -> Path:
    return tiny_config_file(
        tmp_path / f"{name}.yaml",
        study={"name": name, "trials": 2},
        presets=["rope", "nope"],
        train={"steps": 30, "eval_every": 10, "checkpoint_every": 10},
        tracking=tracking,
    )


def test_faults_silent_tracking_server_never_stalls_the_sweep(
    tmp_path, runs_home, ray_local, template_db, monkeypatch
):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    started = time.monotonic()
    baseline = driver.submit(
        _tiny_sweep(tmp_path, "untracked", {"enabled": False}),
        storage=url,
        address=ray_local,
        progress=False,
    )
    without = time.monotonic() - started
    assert baseline.counts["COMPLETE"] == 2

    silent = SilentServer()
    try:
        started = time.monotonic()
        summary = driver.submit(
            _tiny_sweep(tmp_path, "silent", {"enabled": True, "uri": silent.url}),
            storage=url,
            address=ray_local,
            progress=False,
        )
        with_silent = time.monotonic() - started
    finally:
        silent.close()
    assert summary.counts["COMPLETE"] == 2
    print(f"silent tracking server: {with_silent:.1f} s; without tracking: {without:.1f} s")
    # The bound: within 1.5x of the same sweep without tracking.
    assert with_silent <= 1.5 * without, (with_silent, without)
    study = optuna.load_study(study_name="silent", storage=url)
    assert all(t.user_attrs.get(ATTR_TRACKING_ERROR) for t in study.trials)

    # A real server comes up: `ropenope sync` gives every trial its complete run.
    (tmp_path / "server").mkdir()
    server = MlflowServer(tmp_path / "server", template_db)
    server.start()
    try:
        assert cli_main(["sync", "silent", "--storage", url, "--tracking-uri", server.url]) == 0
        runs = _trial_runs(server.url, "silent")
        assert sorted(runs) == [0, 1] and all(s == ["FINISHED"] for s in runs.values())
    finally:
        server.stop()


def test_faults_postgres_restarted_mid_sweep_loses_nothing(tmp_path, runs_home, ray_local):
    import pgserver
    from pgserver.postgres_server import pg_ctl

    folder = Path(tempfile_dir())
    server = pgserver.get_server(folder / "pg", cleanup_mode="delete")
    try:
        url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
        path = tiny_config_file(
            tmp_path / "sweep.yaml",
            study={"name": "pgrestart", "trials": 2},
            presets=["rope", "nope"],
            train={"steps": 60, "eval_every": 10, "checkpoint_every": 10},
            resources={"max_concurrent": 1},
        )
        trials_dir = runs_home / "pgrestart" / "trials"
        restarted = threading.Event()

        def restart_when_training() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if list(trials_dir.glob("*/seed_*/checkpoint.pt")):
                    pg_ctl(
                        ["-w", "-m", "fast", "restart"],
                        pgdata=server.pgdata,
                        user=server.system_user,
                        timeout=60,
                    )
                    restarted.set()
                    return
                time.sleep(0.2)

        watcher = threading.Thread(target=restart_when_training, daemon=True)
        watcher.start()
        summary = driver.submit(path, storage=url, address=ray_local, progress=False)
        watcher.join(timeout=60)
        assert restarted.is_set()
        assert summary.counts["COMPLETE"] == 2, summary.counts
        study = optuna.load_study(study_name="pgrestart", storage=url)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def tempfile_dir() -> str:
    """A fresh folder outside pytest's (private to its user): run as root, pgserver runs
    postgres as its own system user (see engines.postgres_server)."""
    import tempfile

    return tempfile.mkdtemp(prefix="ropenope-pgr-")
