"""Trials on several Ray Train workers (issue 14) inside real sweeps, on the test's 2-CPU
local Ray: 2 workers x 1 CPU (gloo), the launching Tune function on no CPU.

- a 2-worker trial COMPLETEs with every user attribute and MLflow name a one-worker trial
  has (the golden file's), plus the one param that says how it ran;
- a 2-worker trial whose main worker is SIGKILLed mid-training restarts from its
  checkpoint (one worker restart, resumed past step 0) and COMPLETEs;
- so does one whose launcher is SIGKILLed: the driver frees the placement group its dead
  Train run left reserved (Ray runs without the dashboard Train's own cleaner needs);
- an exception in the candidate's code on the workers is a FAIL with its reason, never a
  restart;
- a trial the scheduler stops is PRUNED and its workers stop, so the next trial runs;
- the resource check and the number of trials at once count a trial's workers.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import optuna
import pytest
from engines import (
    failing_runner,
    handicap_runner,
    launcher_pid,
    pid_reporting_runner,
    sigkill_when_written,
    tiny_config_file,
)
from optuna.trial import TrialState
from test_interface import GOLDEN, collect_interface, without_optional

from search import driver
from search.errors import StudyError
from search.ray_runtime import (
    LAUNCHER_MEMORY_BYTES,
    _check_placement,
    concurrent_trials,
    orphaned_placement_groups,
    trial_cost,
    trial_resources,
)
from space.names import SHORT_BPB, VAL_BPB
from space.schema import load_config
from space.trial_attrs import ATTR_REASON, ATTR_RESUMED_FROM_STEP, ATTR_WORKER_RESTARTS
from tracking.target import resolve_tracking_uri

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TWO_WORKERS = {"cpus_per_trial": 1, "workers_per_trial": 2, "max_concurrent": 2}


def test_workers_per_trial_two_worker_trial_completes_with_every_attribute_and_its_run(
    tmp_path, runs_home, ray_local
):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "twoworkers", "trials": 1},
        presets=["rope"],
        resources=TWO_WORKERS,
        tracking={"enabled": True},
    )
    summary = driver.submit(path, storage=url, address=ray_local, progress=False)
    assert summary.counts["COMPLETE"] == 1, summary.counts
    study = optuna.load_study(study_name="twoworkers", storage=url)
    (trial,) = study.get_trials()
    assert trial.values is not None and all(v == v for v in trial.values)  # finite objectives
    assert trial.user_attrs[SHORT_BPB] > 0 and trial.user_attrs[VAL_BPB] > 0

    found = collect_interface(study, resolve_tracking_uri(None, runs_home))
    golden = json.loads(GOLDEN.read_text())  # less what only µP and lr_search write
    assert found["optuna_trial_attrs"]["complete"] == without_optional(
        golden["optuna_trial_attrs"]["complete"], "attrs"
    )
    mine, theirs = found["mlflow_runs"]["trial complete"], golden["mlflow_runs"]["trial complete"]
    for kind in ("tags", "metrics", "artifacts", "params"):
        assert mine[kind] == without_optional(theirs[kind], kind), kind
    # the study run's params: the sweep file's, plus the one that says how trials ran
    study_params = set(found["mlflow_runs"]["study"]["params"])
    golden_params = without_optional(golden["mlflow_runs"]["study"]["params"], "params")
    assert study_params == set(golden_params) | {"resources.workers_per_trial"}

    # rank 0 wrote the one-worker folder layout; the Train run's state stays aside; the
    # default retention (resources.keep: last) left the newest checkpoint of the seed only
    trial_dir = Path(trial.user_attrs["trial_dir"])
    seed_files = {p.name for p in (trial_dir / "seed_0").iterdir()}
    assert {"checkpoint.pt", "scores.json", "candidate.yaml"} <= seed_files
    assert "checkpoint.prev.pt" not in seed_files
    assert (trial_dir / ".ray_train").is_dir()


def test_workers_per_trial_killed_worker_resumes_from_its_checkpoint(
    tmp_path, runs_home, ray_local
):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "twokill", "trials": 1},
        presets=["rope"],
        train={"steps": 40, "eval_every": 10, "checkpoint_every": 10},
        resources={**TWO_WORKERS, "max_concurrent": 1, "max_retries": 2},
    )
    pid_file = tmp_path / "worker.pid"

    killer = sigkill_when_written(pid_file, wait_s=600)
    # The runner writes the pid of the worker that reports (rank 0) at its first evaluation.
    runner = functools.partial(pid_reporting_runner, pid_file=str(pid_file))
    summary = driver.submit(path, storage=url, address=ray_local, runner=runner, progress=False)
    killer.join(timeout=10)
    assert pid_file.exists()
    assert summary.counts["COMPLETE"] == 1 and summary.counts["FAIL"] == 0, summary.counts
    (trial,) = optuna.load_study(study_name="twokill", storage=url).get_trials()
    assert trial.user_attrs[ATTR_WORKER_RESTARTS] == 1
    assert trial.user_attrs[ATTR_RESUMED_FROM_STEP] >= 10  # not from step 0


def test_workers_per_trial_killed_launcher_frees_its_reservation_and_the_trial_restarts(
    tmp_path, runs_home, ray_local, capsys
):
    import ray

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "launcherkill", "trials": 1},
        presets=["rope"],
        train={"steps": 40, "eval_every": 10, "checkpoint_every": 10},
        resources={**TWO_WORKERS, "max_concurrent": 1, "max_retries": 2},
    )
    pid_file = tmp_path / "worker.pid"
    # At the main worker's first evaluation, SIGKILL the trial's launcher (the Tune function
    # that runs the Train run): its workers die with the Train controller, and their
    # placement group (both CPUs of the test's Ray) stays reserved by the dead controller.
    killer = sigkill_when_written(pid_file, wait_s=600, pid_of=launcher_pid)
    runner = functools.partial(pid_reporting_runner, pid_file=str(pid_file))
    summary = driver.submit(path, storage=url, address=ray_local, runner=runner, progress=True)
    killer.join(timeout=10)
    out = capsys.readouterr().out
    assert pid_file.exists()
    assert "freed the reservation of a dead trial launcher's workers" in out, out[-3000:]
    assert summary.counts["COMPLETE"] == 1 and summary.counts["FAIL"] == 0, summary.counts
    (trial,) = optuna.load_study(study_name="launcherkill", storage=url).get_trials()
    assert trial.user_attrs[ATTR_WORKER_RESTARTS] == 1
    assert trial.user_attrs[ATTR_RESUMED_FROM_STEP] >= 10  # not from step 0
    assert orphaned_placement_groups(ray.get_runtime_context().get_job_id()) == []


def test_workers_per_trial_candidate_error_is_a_fail_with_its_reason(
    tmp_path, runs_home, ray_local
):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "twofail", "trials": 1},
        presets=["nope"],  # failing_runner raises for the all-NoPE candidate
        resources=TWO_WORKERS,
    )
    summary = driver.submit(
        path, storage=url, address=ray_local, runner=failing_runner, progress=False
    )
    assert summary.counts["FAIL"] == 1, summary.counts
    (trial,) = optuna.load_study(study_name="twofail", storage=url).get_trials()
    assert trial.user_attrs[ATTR_REASON] == "error: RuntimeError: injected failure"
    assert ATTR_WORKER_RESTARTS not in trial.user_attrs


def test_workers_per_trial_scheduler_stop_prunes_and_frees_the_workers(
    tmp_path, runs_home, ray_local
):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "twoasha", "trials": 3},
        presets=["rope", "nope"],  # rope runs first; handicap_runner makes nope look worse
        scheduler={"kind": "asha", "metric": "val_bpb", "mode": "min", "grace_period": 1},
        resources={**TWO_WORKERS, "max_concurrent": 1},
    )
    summary = driver.submit(
        path, storage=url, address=ray_local, runner=handicap_runner, progress=False
    )
    rope, nope, third = optuna.load_study(study_name="twoasha", storage=url).get_trials()
    assert rope.state == TrialState.COMPLETE
    assert nope.state == TrialState.PRUNED and nope.values is None
    assert list(nope.intermediate_values) == [10]  # stopped at the first rung
    # the stopped trial's workers let go of both CPUs: the next trial ran to its end
    assert third.state in (TrialState.COMPLETE, TrialState.PRUNED), third.state
    assert summary.counts["FAIL"] == 0


def _config(tmp_path: Path, **resources) -> object:
    return load_config(tiny_config_file(tmp_path / "r.yaml", resources=resources))


def test_workers_per_trial_cost_counts_every_worker_and_caps_trials_at_once(tmp_path):
    one = _config(tmp_path, cpus_per_trial=2, gpus_per_trial=0.5, max_concurrent=4)
    assert trial_resources(one) == {"cpu": 2, "gpu": 0.5}
    assert concurrent_trials(one, {"CPU": 2}) == 4  # one-worker trials queue in Tune as before

    four = _config(
        tmp_path, cpus_per_trial=2, gpus_per_trial=0.5, workers_per_trial=4, max_concurrent=4
    )
    assert trial_resources(four) == {"cpu": 0, "gpu": 0, "memory": LAUNCHER_MEMORY_BYTES}
    assert trial_cost(four) == {"CPU": 8, "GPU": 2}
    assert concurrent_trials(four, {"CPU": 64, "GPU": 8}) == 4
    assert concurrent_trials(four, {"CPU": 20, "GPU": 8}) == 2  # CPUs: 20 // 8
    assert concurrent_trials(four, {"CPU": 64, "GPU": 3}) == 1  # GPUs: 3 // 2


def test_workers_per_trial_placement_is_checked_against_the_nodes(tmp_path):
    nodes = [{"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1}]
    _check_placement(_config(tmp_path, cpus_per_trial=4, workers_per_trial=2), nodes)
    with pytest.raises(StudyError, match="no node of the Ray cluster holds one worker"):
        _check_placement(_config(tmp_path, cpus_per_trial=6, workers_per_trial=2), nodes)
    with pytest.raises(StudyError, match="strict_pack: no node holds all 2 workers"):
        _check_placement(
            _config(tmp_path, cpus_per_trial=3, workers_per_trial=2, placement="strict_pack"),
            nodes,
        )
    with pytest.raises(StudyError, match="strict_spread: 3 workers need 3 nodes"):
        _check_placement(
            _config(tmp_path, cpus_per_trial=1, workers_per_trial=3, placement="strict_spread"),
            nodes,
        )


def test_workers_per_trial_refused_when_the_cluster_cannot_hold_one_trial(
    tmp_path, runs_home, ray_local
):
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "toolarge", "trials": 1},
        presets=["rope"],
        resources={"cpus_per_trial": 1, "workers_per_trial": 3},
    )
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(StudyError, match="3 workers x cpus_per_trial=1 need 3 CPUs"):
        driver.submit(path, storage=url, address=ray_local, progress=False)
