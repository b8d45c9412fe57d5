"""The seeds of one trial at the same time (issue 23, ``resources.parallel_seeds``).

- a 2-seed trial on the test's 2-CPU Ray trains its seeds at once (the training intervals
  its seed folders record overlap) and gives the scores of the same trial run with its
  seeds one after the other, to the last digit, with the same Optuna attributes and MLflow
  runs;
- a trial's request is sized for its seeds, and the number of trials at once counts them;
- the sweep file refuses parallel seeds where they would change a result's meaning;
- faults: the driver killed while a seed trains, then `resume`, and one seed's process
  killed: the trial ends with the numbers of the same trial never interrupted, and a seed
  that had finished is not trained again.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import optuna
import pytest
from engines import (
    kill_driver_when,
    pid_reporting_runner,
    runner_driver,
    sigkill_when_written,
    tiny_config_file,
    trials_by_number,
)
from optuna.trial import TrialState
from test_interface import collect_interface

from search import driver
from search.ray_runtime import LAUNCHER_MEMORY_BYTES, concurrent_trials, trial_cost, trial_resources
from space.errors import ConfigError
from space.names import PEAK_MEMORY_BYTES, SHORT_BPB, TOKENS_PER_S, TRAIN_SECONDS, VAL_BPB
from space.outcomes import Reason
from space.schema import load_config
from space.trial_attrs import (
    ATTR_REASON,
    ATTR_RERUN_OF,
    ATTR_RESTART_REASON,
    ATTR_RESUMED_FROM_STEP,
    ATTR_TRIAL_DIR,
    ATTR_WORKER_RESTARTS,
)
from tracking.target import resolve_tracking_uri
from workers.layout import CHECKPOINT_FILE, finished_seed, read_scores, seed_dir
from workers.ray_seeds import INTERVAL_FILE, seeds_at_once


def _one_trial(
    tmp_path: Path, name: str, ray_local: str, parallel: bool
) -> tuple[optuna.Study, optuna.FrozenTrial]:
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    path = tiny_config_file(
        tmp_path / f"{name}.yaml",
        study={"name": name, "trials": 1, "repeats": 2, "sampler": "random", "seed": 0},
        presets=["rope"],
        resources={"cpus_per_trial": 1, "max_concurrent": 1, "parallel_seeds": parallel},
        tracking={"enabled": True},
    )
    summary = driver.submit(path, storage=url, address=ray_local, progress=False)
    assert summary.counts["COMPLETE"] == 1, summary.counts
    study = optuna.load_study(study_name=name, storage=url)
    (trial,) = study.get_trials()
    return study, trial


# What a seed's scores measure of the machine (and of its load), not of the model.
MEASURED = {TOKENS_PER_S, PEAK_MEMORY_BYTES, TRAIN_SECONDS}


def _model_scores(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k not in MEASURED}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_parallel_seeds_overlap_and_match_the_sequential_scores(tmp_path, runs_home, ray_local):
    study, together = _one_trial(tmp_path, "together", ray_local, parallel=True)
    apart_study, apart = _one_trial(tmp_path, "apart", ray_local, parallel=False)

    # the two seeds trained at the same time: each started before the other ended
    trial_dir = Path(together.user_attrs["trial_dir"])
    spans = [json.loads((seed_dir(trial_dir, s) / INTERVAL_FILE).read_text()) for s in (0, 1)]
    assert [s["seed"] for s in spans] == [0, 1]
    assert max(s["started"] for s in spans) < min(s["ended"] for s in spans), spans
    # the sequential trial trained them without this module
    apart_dir = Path(apart.user_attrs["trial_dir"])
    assert not (seed_dir(apart_dir, 0) / INTERVAL_FILE).exists()

    # same seeds, same numbers: every seed's learning curve, every score (but the machine's
    # measurements of speed and memory) and the trial's objectives, to the last digit
    for seed in (0, 1):
        mine, theirs = (
            read_scores(seed_dir(trial_dir, seed)),
            read_scores(seed_dir(apart_dir, seed)),
        )
        curves = [[_model_scores(e) for e in r["history"]] for r in (mine, theirs)]
        assert curves[0] == curves[1] and len(curves[0]) == 3
        assert all("train_loss" in e and VAL_BPB in e for e in curves[0])
        mine, theirs = _model_scores(mine["scores"]), _model_scores(theirs["scores"])
        assert SHORT_BPB in mine and VAL_BPB in mine
        assert mine == theirs, (seed, mine, theirs)
    assert together.values == apart.values
    assert together.params == apart.params

    # the trial's attributes and MLflow runs (names, nesting) are the sequential trial's
    uri = resolve_tracking_uri(None, runs_home)
    found, seq = collect_interface(study, uri), collect_interface(apart_study, uri)
    assert found["optuna_trial_attrs"] == seq["optuna_trial_attrs"]
    assert set(found["mlflow_runs"]) == set(seq["mlflow_runs"])
    assert {"study", "trial complete"} <= set(found["mlflow_runs"])
    for run, mine in found["mlflow_runs"].items():
        for part in ("tags", "metrics", "artifacts", "params"):
            if run == "study" and part == "params":
                assert set(mine[part]) - set(seq["mlflow_runs"][run][part]) == {
                    "resources.parallel_seeds"
                }
            else:
                assert mine[part] == seq["mlflow_runs"][run][part], (run, part)


def _config(tmp_path: Path, **sections) -> object:
    return load_config(tiny_config_file(tmp_path / "p.yaml", **sections))


def test_parallel_seeds_trial_request_holds_its_seeds_and_caps_trials_at_once(tmp_path):
    three = _config(
        tmp_path,
        study={"repeats": 3},
        resources={"cpus_per_trial": 2, "max_concurrent": 4, "parallel_seeds": True},
    )
    assert seeds_at_once(three) == 3
    assert seeds_at_once(three, {"CPU": 4}) == 2  # the cluster holds two seeds of 2 CPUs
    pg = trial_resources(three, {"CPU": 64})
    assert pg.bundles == [{"memory": LAUNCHER_MEMORY_BYTES}] + [{"CPU": 2}] * 3
    assert trial_cost(three, {"CPU": 64}) == {"CPU": 6, "GPU": 0}
    assert concurrent_trials(three, {"CPU": 64}) == 4
    assert concurrent_trials(three, {"CPU": 12}) == 2  # 12 CPUs // 6 per trial
    assert concurrent_trials(three, {"CPU": 4}) == 1  # two seeds at once fill the cluster

    # off by default: the one-process trial asks for what it always did
    sequential = _config(tmp_path, study={"repeats": 3}, resources={"cpus_per_trial": 2})
    assert seeds_at_once(sequential, {"CPU": 64}) == 1
    assert trial_resources(sequential, {"CPU": 64}) == {"cpu": 2, "gpu": 0}
    # one seed: nothing to run at once
    single = _config(tmp_path, resources={"parallel_seeds": True})
    assert trial_resources(single, {"CPU": 2}) == {"cpu": 1, "gpu": 0}


@pytest.mark.parametrize(
    ("sections", "says"),
    [
        ({"scheduler": {"kind": "asha"}}, "early stopping"),
        ({"resources": {"workers_per_trial": 2}}, "workers_per_trial"),
    ],
)
def test_parallel_seeds_refused_with_early_stopping_or_several_workers(tmp_path, sections, says):
    resources = {"parallel_seeds": True, **sections.pop("resources", {})}
    path = tiny_config_file(tmp_path / "bad.yaml", resources=resources, **sections)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "resources.parallel_seeds" in str(info.value)
    assert says in str(info.value)


# -- faults: the driver killed, a seed's process killed -------------------------------------


def _three_seeds(tmp_path: Path, name: str) -> Path:
    """One trial of the rope preset with 3 seeds at once: the test's 2-CPU Ray holds two
    seed bundles, so two seeds train together and the third waits for a free bundle."""
    return tiny_config_file(
        tmp_path / f"{name}.yaml",
        study={"name": name, "trials": 1, "repeats": 3},
        presets=["rope"],
        resources={"cpus_per_trial": 1, "max_concurrent": 1, "parallel_seeds": True},
    )


def _seed_scores(trial: optuna.trial.FrozenTrial, seed: int) -> dict:
    return read_scores(seed_dir(Path(trial.user_attrs[ATTR_TRIAL_DIR]), seed))


def _same_numbers(trial: optuna.trial.FrozenTrial, twin: optuna.trial.FrozenTrial, seeds) -> None:
    """``trial`` has ``twin``'s objectives and, seed by seed, its learning curve and every
    score but the machine's measurements, to the last digit."""
    assert trial.values == twin.values
    for seed in seeds:
        mine, theirs = _seed_scores(trial, seed), _seed_scores(twin, seed)
        assert [_model_scores(e) for e in mine["history"]] == [
            _model_scores(e) for e in theirs["history"]
        ], seed
        assert _model_scores(mine["scores"]) == _model_scores(theirs["scores"]), seed


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_parallel_seeds_driver_killed_mid_trial_resumes_to_the_uninterrupted_scores(
    tmp_path, runs_home, ray_local
):
    """The driver is SIGKILLed while the trial's third seed trains (the first two are
    done); `resume` re-runs the trial from its folder: the finished seeds are not trained
    again (their results are carried over as they were), the third continues from its
    checkpoint, and the trial ends with the numbers of the same trial never interrupted."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    whole = driver.submit(
        _three_seeds(tmp_path, "whole"), storage=url, address=ray_local, progress=False
    )
    assert whole.counts["COMPLETE"] == 1, whole.counts
    (twin,) = trials_by_number("whole", url)

    path = _three_seeds(tmp_path, "killed")
    command = runner_driver(
        f"driver.submit({str(path)!r}, storage={url!r}, address={ray_local!r}, progress=False,"
        " runner=functools.partial(engines.slow_seeds_runner, slow_seeds=(2,)))"
    )

    def third_seed_training():
        for t in trials_by_number("killed", url):
            folder = t.user_attrs.get(ATTR_TRIAL_DIR)
            if t.state != TrialState.RUNNING or not folder:
                continue
            done = [finished_seed(seed_dir(Path(folder), s)) is not None for s in (0, 1, 2)]
            started = (seed_dir(Path(folder), 2) / CHECKPOINT_FILE).is_file()
            if done == [True, True, False] and started:
                return t
        return None

    killed = kill_driver_when(
        command, runs_home, third_seed_training, timeout=400, what="the third seed to train"
    )
    before = {s: read_scores(seed_dir(Path(killed.user_attrs[ATTR_TRIAL_DIR]), s)) for s in (0, 1)}

    summary = driver.resume("killed", storage=url, address=ray_local, progress=False)
    assert summary.reconciled == [killed.number]
    trials = trials_by_number("killed", url)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    dead, rerun = trials
    assert dead.user_attrs[ATTR_REASON] == Reason.INTERRUPTED
    assert rerun.user_attrs[ATTR_RERUN_OF] == dead.number

    rerun_dir = Path(rerun.user_attrs[ATTR_TRIAL_DIR])
    for seed in (0, 1):  # finished before the kill: carried over, never trained again
        assert read_scores(seed_dir(rerun_dir, seed)) == before[seed]
        assert not (seed_dir(rerun_dir, seed) / INTERVAL_FILE).exists()
    third = read_scores(seed_dir(rerun_dir, 2))
    assert third["resumed_from_step"] >= 10  # from its checkpoint, not from step 0
    _same_numbers(rerun, twin, (0, 1, 2))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_parallel_seeds_seed_process_killed_restarts_the_trial_with_the_same_scores(
    tmp_path, runs_home, ray_local
):
    """One seed task's process is SIGKILLed at its first evaluation: the trial restarts
    from its newest checkpoint (one worker restart, never a FAIL) and ends with the
    numbers of the same trial never interrupted."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def two_seeds(name: str) -> Path:
        return tiny_config_file(
            tmp_path / f"{name}.yaml",
            study={"name": name, "trials": 1, "repeats": 2},
            presets=["rope"],
            resources={
                "cpus_per_trial": 1,
                "max_concurrent": 1,
                "max_retries": 2,
                "parallel_seeds": True,
            },
        )

    whole = driver.submit(two_seeds("whole"), storage=url, address=ray_local, progress=False)
    assert whole.counts["COMPLETE"] == 1, whole.counts
    (twin,) = trials_by_number("whole", url)

    pid_file = tmp_path / "seed.pid"
    killer = sigkill_when_written(pid_file, wait_s=300)
    runner = functools.partial(pid_reporting_runner, pid_file=str(pid_file))
    summary = driver.submit(
        two_seeds("seedkill"), storage=url, address=ray_local, runner=runner, progress=False
    )
    killer.join(timeout=10)
    assert pid_file.exists()
    assert summary.counts["COMPLETE"] == 1 and summary.counts["FAIL"] == 0, summary.counts
    (trial,) = trials_by_number("seedkill", url)
    assert trial.user_attrs[ATTR_WORKER_RESTARTS] == 1
    assert "seed task" in trial.user_attrs[ATTR_RESTART_REASON]
    assert trial.user_attrs[ATTR_RESUMED_FROM_STEP] >= 10  # not from step 0
    _same_numbers(trial, twin, (0, 1))
