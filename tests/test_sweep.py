"""Sweeps on real engines: local Ray Tune, Optuna on SQLite and PostgreSQL, real training.

Trials are tiny (2 layers, d_model 32, 30 steps) so each takes seconds. Two trials
inject a fault through the driver's ``runner`` hook (see ``engines``): one raises,
one reports a worse validation loss so the ASHA scheduler's decision is known.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import engines
import optuna
import pytest
from engines import (
    SWEEP_SPACE,
    cli_driver,
    failing_runner,
    handicap_runner,
    kill_driver_when,
    start_driver,
    tiny_config_file,
    trials_by_number,
)
from optuna.trial import TrialState

from search import driver, ray_runtime
from search.cli import main as cli_main
from search.failures import FailureBudget, close_capped, infrastructure_text, rerun_depth
from search.trials import requeue_worker_deaths
from space import load_config
from space.errors import ConfigError
from space.names import KV_CACHE_BYTES
from space.outcomes import Reason
from space.sections import FailuresSection
from space.trial_attrs import (
    ATTR_CANDIDATE_ID,
    ATTR_CANDIDATE_NAME,
    ATTR_KNOBS,
    ATTR_PRESET,
    ATTR_RAY_TRIAL_DIR,
    ATTR_RAY_TRIAL_ID,
    ATTR_REASON,
    ATTR_REASON_DETAIL,
    ATTR_RERUN_OF,
    ATTR_RESUMED_FROM_STEP,
    ATTR_REUSED_FROM,
    ATTR_SEEDS,
    ATTR_TRIAL_DIR,
)
from workers import serving_cost
from workers.layout import finished_seed, restore_into, snapshot
from workers.results import CandidateResult
from workers.trial import TrialOutcome, combine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

OBJECTIVES = ["long_acc", "short_bpb", "kv_cache_bytes"]
SPACE = SWEEP_SPACE  # sampled candidates never collide with the presets below


# -- the pieces, without engines -------------------------------------------------------


def test_sweep_outcome_of_seeds_is_their_mean_or_the_first_failure():
    a = CandidateResult("complete", None, scores={"short_bpb": 2.0, "long_acc": 0.5})
    b = CandidateResult("complete", None, scores={"short_bpb": 4.0, "long_acc": 0.0, "x": 1.0})
    both = combine([a, b], [0, 1])
    assert both.status == "complete"
    assert both.scores == {"long_acc": 0.25, "short_bpb": 3.0}  # keys every seed has
    bad = CandidateResult("diverged", "non-finite loss at step 7", scores={"steps": 7.0})
    worse = combine([a, bad], [0, 1])
    assert (worse.status, worse.reason, worse.detail) == (
        "diverged",
        "diverged",
        "non-finite loss at step 7",
    )
    # Each seed's own grid travels with the outcome into the study (ATTR_SEEDS).
    a.niah = {"lengths": [64], "depths": [0.5], "acc": [[float("nan")]]}
    kept = combine([a, b], [3, 4])
    assert [s["seed"] for s in kept.attrs()[ATTR_SEEDS]] == [3, 4]
    assert kept.seeds[0]["niah"] == {"lengths": [64], "depths": [0.5], "acc": [[None]]}
    assert kept.seeds[1]["scores"]["x"] == 1.0 and kept.seeds[1]["niah"] is None
    assert TrialOutcome.from_json(kept.to_json()).seeds == kept.seeds
    text = TrialOutcome("complete", scores={"long_acc": float("nan")}).to_json()
    assert json.loads(text)["scores"] == {"long_acc": None}  # strict JSON: NaN is null
    back = TrialOutcome.from_json(text)
    assert back.status == "complete" and back.scores["long_acc"] != back.scores["long_acc"]


def test_sweep_snapshot_restores_checkpoints_and_finished_seeds(tmp_path):
    run = tmp_path / "run"
    (run / "seed_0").mkdir(parents=True)
    (run / "seed_0" / "scores.json").write_text(
        json.dumps({"status": "complete", "scores": {"short_bpb": 3.5}, "seed": 0})
    )
    (run / "seed_1").mkdir()
    (run / "seed_1" / "checkpoint.pt").write_bytes(b"step 40")
    (run / "seed_1" / "niah.png").write_bytes(b"not needed to resume")
    assert snapshot(run, tmp_path / "ckpt")
    assert sorted(
        p.relative_to(tmp_path / "ckpt").as_posix() for p in (tmp_path / "ckpt").rglob("*.*")
    ) == [
        "seed_0/scores.json",
        "seed_1/checkpoint.pt",
    ]
    fresh = tmp_path / "rerun"
    assert restore_into(tmp_path / "ckpt", fresh)
    assert (fresh / "seed_1" / "checkpoint.pt").read_bytes() == b"step 40"
    assert finished_seed(fresh / "seed_0").scores == {"short_bpb": 3.5}
    assert finished_seed(fresh / "seed_1") is None
    (fresh / "seed_1" / "checkpoint.pt").write_bytes(b"step 60")  # newer: kept
    assert not restore_into(tmp_path / "ckpt", fresh)
    assert (fresh / "seed_1" / "checkpoint.pt").read_bytes() == b"step 60"


def test_schema_rejects_what_a_sweep_cannot_report(tmp_path):
    # One validation: what submit would reject, loading the file (and `ropenope space`) does.
    with pytest.raises(ConfigError, match="scheduler.metric"):
        load_config(
            tiny_config_file(tmp_path / "a.yaml", scheduler={"kind": "asha", "metric": "long_acc"})
        )
    with pytest.raises(ConfigError, match="long_acc needs"):
        load_config(tiny_config_file(tmp_path / "b.yaml", score={"lengths": [1]}))
    load_config(tiny_config_file(tmp_path / "c.yaml"))


def test_schema_failure_budget_is_checked_with_its_key_path(tmp_path):
    config = load_config(
        tiny_config_file(
            tmp_path / "a.yaml",
            resources={"failures": {"max_consecutive": 2, "window": 8, "max_rate": 0.25}},
        )
    )
    assert config.resources.failures.max_consecutive == 2
    assert config.resources.failures.max_rerun_depth == 5  # the default
    bad = {
        "max_consecutive": 0,
        "max_rate": 1.5,
        "max_rerun_depth": -1,
        "window": "ten",
        "windows": 3,
    }
    for key, value in bad.items():
        with pytest.raises(ConfigError, match=rf"resources\.failures\.{key}"):
            load_config(
                tiny_config_file(tmp_path / f"{key}.yaml", resources={"failures": {key: value}})
            )


def test_sweep_failure_budget_stops_after_k_in_a_row_or_too_many_in_its_window():
    in_a_row = FailureBudget(FailuresSection(max_consecutive=2), "s")
    assert in_a_row.record(0, Reason.WORKER_DIED) is None
    assert in_a_row.record(1, None) is None  # a COMPLETE trial ends the run of failures
    assert in_a_row.record(2, "error: ValueError: x") is None  # the candidate's: not counted
    assert in_a_row.record(3, Reason.INFRASTRUCTURE) is None
    line = in_a_row.record(4, Reason.WORKER_DIED)
    assert line is not None and line.startswith("sweep stopped: 2 trials in a row")
    assert "#4: worker_died" in line and "`ropenope resume s`" in line
    assert in_a_row.record(5, Reason.WORKER_DIED) is None  # said once

    rate = FailureBudget(FailuresSection(max_consecutive=5, window=4, max_rate=0.5), "s")
    ends = [Reason.WORKER_DIED, None, Reason.WORKER_DIED, None]
    assert [rate.record(n, r) for n, r in enumerate(ends)] == [None] * 4  # 2 of 4: not over
    assert rate.record(4, Reason.INFRASTRUCTURE) is None  # still 2 of the last 4
    line = rate.record(5, Reason.WORKER_DIED)  # 3 of the last 4
    assert line is not None and "3 of the last 4 trials" in line


def test_sweep_rerun_depth_follows_rerun_links_and_infrastructure_texts_are_known():
    study = optuna.create_study()
    for origin in (None, 0, 1, 7):
        attrs = {} if origin is None else {ATTR_RERUN_OF: origin}
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs))
    trials = study.get_trials()
    by_number = {t.number: t for t in trials}
    assert [rerun_depth(t, by_number) for t in trials] == [0, 1, 2, 1]  # #7 is not here
    assert infrastructure_text("workers.ray_trainable.InfrastructureFailure: ENOSPC while")
    assert infrastructure_text("OSError: [Errno 28] No space left on device: '/x'")
    assert infrastructure_text("OSError: [Errno 5] Input/output error")
    assert not infrastructure_text("RuntimeError: injected failure")
    assert not infrastructure_text(None)


def test_sweep_trial_as_many_reruns_deep_as_allowed_is_not_rerun_again():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))  # 0
    study.add_trial(
        optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={ATTR_RERUN_OF: 0})
    )  # 1
    for origin in (1, 0):  # 2: two re-runs deep; 3: one
        study.enqueue_trial({}, user_attrs={ATTR_RERUN_OF: origin})
        study.ask()
    closed = close_capped(
        study, study._storage, lambda t: True, FailuresSection(max_rerun_depth=2), "gone"
    )
    assert closed == [2]
    capped, other = study.get_trials()[2:]
    assert capped.state == TrialState.FAIL
    assert capped.user_attrs[ATTR_REASON] == Reason.RERUN_LIMIT
    assert capped.user_attrs[ATTR_REASON_DETAIL].startswith("not re-run again after 2 re-run(s)")
    assert other.state == TrialState.RUNNING  # one re-run deep: re-queued as usual


def test_sweep_resume_reruns_infrastructure_failures_but_not_the_candidates_own():
    study = optuna.create_study()
    for reason in (Reason.INFRASTRUCTURE, Reason.WORKER_DIED, "error: ValueError: x"):
        attrs = {ATTR_REASON: reason, ATTR_KNOBS: {"global_every": 1}}
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs))
    assert [n for n, _ in requeue_worker_deaths(study)] == [0, 1]
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[ATTR_RERUN_OF] for t in queued] == [0, 1]
    assert requeue_worker_deaths(study) == []  # each once


# -- real sweeps -----------------------------------------------------------------------


def test_sweep_outcomes_are_exact_in_the_study(tmp_path, runs_home, ray_local, storage_url):
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "outcomes", "trials": 5},
        space=SPACE,
        presets=[
            "rope",
            {"name": "rope_again", "extends": "rope"},  # the same model: dedup reuses it
            {"name": "impossible", "knobs": {"global_temperature": "log"}},  # needs NoPE
            "nope",  # failing_runner raises for it
        ],
    )
    summary = driver.submit(path, storage=storage_url, runner=failing_runner, progress=False)
    assert summary.counts["COMPLETE"] == 3 and summary.counts["FAIL"] == 2

    rope, again, impossible, nope, sampled = trials_by_number("outcomes", storage_url)
    config = load_config(path)
    states = [t.state for t in (rope, again, impossible, nope, sampled)]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] * 2 + [TrialState.COMPLETE]

    # A full-budget trial: every objective value, the scores as attributes, the links.
    expected = config.preset_candidate("rope")
    assert rope.user_attrs[ATTR_CANDIDATE_ID] == expected.id
    assert rope.user_attrs[ATTR_CANDIDATE_NAME] == expected.name
    assert rope.values == [rope.user_attrs[m] for m in OBJECTIVES]
    kv = serving_cost.kv_cache_bytes(
        expected.shape,
        expected.layers,
        config.score.kv_context_tokens,
        config.score.kv_dtype_bytes,
    )
    assert rope.user_attrs[KV_CACHE_BYTES] == kv
    assert 0.0 <= rope.user_attrs["long_acc"] <= 1.0 and rope.user_attrs["short_bpb"] > 0
    assert sorted(rope.intermediate_values) == [10, 20, 30]  # val_bpb at each evaluation
    assert (Path(rope.user_attrs[ATTR_TRIAL_DIR]) / "seed_0" / "scores.json").is_file()

    # Each Ray trial knows its Optuna trial number, and the other way round.
    ray_dir = Path(rope.user_attrs[ATTR_RAY_TRIAL_DIR])
    assert ray_dir.name == f"trial_{rope.number:05d}_{rope.user_attrs[ATTR_RAY_TRIAL_ID]}"
    assert json.loads((ray_dir / "params.json").read_text())["optuna_trial"] == rope.number

    assert again.user_attrs[ATTR_REUSED_FROM] == rope.number
    assert again.values == rope.values
    assert again.user_attrs[ATTR_CANDIDATE_ID] == expected.id
    assert ATTR_RAY_TRIAL_ID not in again.user_attrs  # nothing was trained for it

    assert impossible.user_attrs[ATTR_REASON] == Reason.INVALID
    assert "global_temperature" in impossible.user_attrs[ATTR_REASON_DETAIL]
    assert nope.user_attrs[ATTR_REASON] == "error: RuntimeError: injected failure"
    assert ATTR_RAY_TRIAL_ID in nope.user_attrs

    assert sampled.user_attrs[ATTR_CANDIDATE_ID] not in {
        expected.id,
        nope.user_attrs[ATTR_CANDIDATE_ID],
    }
    assert sampled.values == [sampled.user_attrs[m] for m in OBJECTIVES]

    # Another process reads the same study with plain Optuna.
    code = (
        "import json, optuna;"
        f"s = optuna.load_study(study_name='outcomes', storage={storage_url!r});"
        "print(json.dumps([[t.state.name, t.user_attrs.get('reason')] for t in s.trials]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [
        ["COMPLETE", None],
        ["COMPLETE", None],
        ["FAIL", Reason.INVALID],
        ["FAIL", "error: RuntimeError: injected failure"],
        ["COMPLETE", None],
    ]


def test_sweep_status_shows_counts_best_and_pareto(tmp_path, runs_home, ray_local, capsys):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "status", "trials": 2},
        space=SPACE,
        presets=["rope"],
    )
    assert cli_main(["submit", str(path), "--storage", url, "--quiet"]) == 0
    capsys.readouterr()
    assert cli_main(["status", "status", "--storage", url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["COMPLETE"] == 2 and status["target"] == 2
    assert set(status["best"]) == set(OBJECTIVES)
    assert 1 <= len(status["pareto"]) <= 2 and not status["running"]
    assert cli_main(["status", "status", "--storage", url]) == 0
    assert "pareto set" in capsys.readouterr().out


def test_sweep_asha_stopped_trial_is_pruned_not_complete(tmp_path, runs_home, ray_local):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "asha", "trials": 2},
        space=SPACE,
        presets=["rope", "nope"],  # rope runs first; handicap_runner makes nope look worse
        scheduler={"kind": "asha", "metric": "val_bpb", "mode": "min", "grace_period": 1},
        resources={"cpus_per_trial": 1, "max_concurrent": 1},
    )
    driver.submit(path, storage=url, runner=handicap_runner, progress=False)
    rope, nope = trials_by_number("asha", url)
    assert rope.state == TrialState.COMPLETE and len(rope.values) == 3
    assert nope.state == TrialState.PRUNED
    assert nope.values is None  # never a partial value posing as a result
    assert nope.user_attrs[ATTR_REASON] == Reason.PRUNED
    assert list(nope.intermediate_values) == [10]  # stopped at the first rung
    assert nope.intermediate_values[10] > rope.intermediate_values[10] + 5


@pytest.mark.parametrize(
    ("steps", "eval_every", "repeats", "grace", "rf"),
    [(40, 10, 1, 1, 2), (30, 10, 1, 1, 3), (80, 10, 1, 2, 2), (40, 10, 2, 1, 2), (90, 10, 1, 3, 3)],
)
def test_sweep_asha_has_no_rung_at_a_trials_last_evaluation(
    tmp_path, steps, eval_every, repeats, grace, rf
):
    # 4 evaluations with rungs at 1, 2, 4 put the last rung on the last evaluation: a trial
    # cut there never gets scored and a full-budget run would end PRUNED.
    from search.ray_runtime import asha_scheduler, evals_per_seed

    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "asha", "trials": 2, "repeats": repeats},
        train={"steps": steps, "eval_every": eval_every},
        scheduler={
            "kind": "asha",
            "metric": "val_bpb",
            "mode": "min",
            "grace_period": grace,
            "reduction_factor": rf,
        },
    )
    config = load_config(path)
    total = evals_per_seed(config) * config.study.max_repeats
    milestones = [m for bracket in asha_scheduler(config)._brackets for m, _ in bracket._rungs]
    assert milestones and max(milestones) < total
    assert min(milestones) == grace  # the first rung is where the user put it


def test_sweep_asha_with_grace_at_the_end_stops_nothing(tmp_path):
    from search.ray_runtime import asha_scheduler

    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        train={"steps": 30, "eval_every": 10},
        scheduler={"kind": "asha", "metric": "val_bpb", "mode": "min", "grace_period": 3},
    )
    assert asha_scheduler(load_config(path)) is None


def test_sweep_refuses_a_study_with_another_space(tmp_path, runs_home, capsys):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = tiny_config_file(tmp_path / "a.yaml", study={"name": "s", "trials": 1}, space=SPACE)
    from search.study import open_study

    open_study(load_config(first), config_text=first.read_text(), storage_url=url)
    changed = tiny_config_file(
        tmp_path / "b.yaml",
        study={"name": "s", "trials": 1},
        space={**SPACE, "local_window": {"choice": [8, 16, 32]}},
    )
    assert cli_main(["submit", str(changed), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "different space" in err and "--allow-space-change" in err


def test_sweep_resumes_after_the_driver_is_killed(tmp_path, runs_home, ray_local):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "crash", "trials": 3, "seed": 3},
        space=SPACE,
        train={"steps": 150, "eval_every": 15, "checkpoint_every": 15},
    )

    def mid_trial():
        running = [t for t in trials_by_number("crash", url) if t.state == TrialState.RUNNING]
        return any(len(t.intermediate_values) >= 2 for t in running)

    kill_driver_when(
        cli_driver("submit", str(path), storage=url, address=ray_local),
        runs_home,
        mid_trial,
        timeout=150,
        what="a trial to pass its second evaluation",
    )

    study = optuna.load_study(study_name="crash", storage=url)
    left_running = [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]
    assert left_running  # what a dead driver leaves behind

    summary = driver.resume("crash", storage=url, progress=False)
    assert summary.reconciled == left_running

    trials = trials_by_number("crash", url)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    ids = [t.user_attrs[ATTR_CANDIDATE_ID] for t in complete]
    assert len(set(ids)) == len(ids)  # no candidate trained twice
    interrupted = [t for t in trials if t.user_attrs.get(ATTR_REASON) == Reason.INTERRUPTED]
    assert [t.number for t in interrupted] == left_running
    for t in interrupted:
        (rerun,) = [r for r in trials if r.user_attrs.get(ATTR_RERUN_OF) == t.number]
        assert rerun.state == TrialState.COMPLETE
        assert rerun.user_attrs[ATTR_CANDIDATE_ID] == t.user_attrs[ATTR_CANDIDATE_ID]
    # The trial that had passed two evaluations continued from its checkpoint, not step 0.
    resumed = [r.user_attrs.get(ATTR_RESUMED_FROM_STEP) or 0 for r in complete]
    assert max(resumed) >= 30

    # A finished study takes more trials when the target is raised.
    more = driver.resume("crash", storage=url, trials=4, progress=False)
    assert more.counts["COMPLETE"] == 4 and more.counts["RUNNING"] == 0


def test_sweep_two_drivers_share_a_postgres_study(tmp_path, runs_home, ray_local, postgres_server):
    url = engines.fresh_database(postgres_server)
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "shared", "trials": 4},
        space=SPACE,
        presets=["rope", "nope"],
        resources={"cpus_per_trial": 1, "max_concurrent": 1},
    )
    from search.study import open_study

    open_study(load_config(path), config_text=path.read_text(), storage_url=url)
    command = cli_driver("resume", "shared", storage=url, address=ray_local)
    drivers = [start_driver(command, runs_home, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in drivers:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err

    trials = trials_by_number("shared", url)
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    # Drivers asking at the same instant may each start one trial past the target.
    assert 4 <= len(trials) <= 5
    presets = [t.user_attrs.get("preset") for t in trials if t.user_attrs.get("preset")]
    assert sorted(presets) == ["nope", "rope"]  # each queued trial was taken once
    trained = [t for t in trials if ATTR_REUSED_FROM not in t.user_attrs]
    ids = [t.user_attrs[ATTR_CANDIDATE_ID] for t in trained]
    assert len(ids) == len(set(ids))  # no candidate trained twice


@pytest.mark.timeout(200)  # a hang fails, never hangs
def test_sweep_completes_every_trial_when_tune_cannot_reuse_a_process(
    tmp_path, runs_home, ray_local, monkeypatch
):
    # Tune gives a trial up without a word to the searcher when the process it meant to
    # reuse refuses (reset_config False): with one trial at a time the sweep used to wait
    # for ever on a searcher whose live set stayed full.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "noreuse", "trials": 3},
        space=SPACE,
        presets=["rope", "nope"],
        resources={"cpus_per_trial": 1, "max_concurrent": 1},
    )
    build = ray_runtime.make_trainable
    monkeypatch.setattr(
        ray_runtime, "make_trainable", lambda *a, **k: engines.refusing_reuse(build(*a, **k))
    )
    summary = driver.submit(path, storage=url, address=ray_local, progress=False)
    assert summary.counts["COMPLETE"] == 3, summary.counts
    trials = trials_by_number("noreuse", url)
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.FAIL}
    dropped = [t for t in trials if t.state == TrialState.FAIL]
    assert dropped, "Tune never refused a process: the test did not test anything"
    for t in dropped:
        assert t.user_attrs[ATTR_REASON] == Reason.INTERRUPTED
        assert "Ray Tune ended it without a result" in t.user_attrs[ATTR_REASON_DETAIL]
        (rerun,) = [r for r in trials if r.user_attrs.get(ATTR_RERUN_OF) == t.number]
        assert rerun.state == TrialState.COMPLETE
        assert rerun.user_attrs[ATTR_CANDIDATE_ID] == t.user_attrs[ATTR_CANDIDATE_ID]


def test_sweep_resumed_after_a_kill_trains_the_candidates_the_whole_sweep_would(
    tmp_path, runs_home, ray_local
):
    # Four presets, three trials: the fourth preset stays queued, as it does in the
    # uninterrupted sweep. The re-run of the trial the kill interrupted must run before
    # it, not after the study is full.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    swa = {"global_every": 2, "global_position": "nope", "local_window": 16}

    def sweep_file(name: str) -> Path:
        return tiny_config_file(
            tmp_path / f"{name}.yaml",
            study={"name": name, "trials": 3},
            space=SPACE,
            presets=["rope", "qknorm", "nope", {"name": "swa", "knobs": swa}],
            train={"steps": 30, "eval_every": 10, "checkpoint_every": 10},
            resources={"cpus_per_trial": 1, "max_concurrent": 1},
        )

    whole = driver.submit(sweep_file("whole"), storage=url, address=ray_local, progress=False)
    assert whole.counts["COMPLETE"] == 3, whole.counts

    def first_done_next_running():
        states = {t.number: t.state for t in trials_by_number("killed", url)}
        return states.get(0) == TrialState.COMPLETE and TrialState.RUNNING in states.values()

    kill_driver_when(
        cli_driver("submit", str(sweep_file("killed")), storage=url, address=ray_local),
        runs_home,
        first_done_next_running,
        timeout=180,
        what="trial 0 to complete and the next to start",
    )

    resumed = driver.resume("killed", storage=url, address=ray_local, progress=False)
    assert resumed.reconciled, "the kill left no trial running: nothing was tested"

    def outcome(name: str) -> tuple[set, list]:
        trials = trials_by_number(name, url)
        done = {t.user_attrs[ATTR_CANDIDATE_ID] for t in trials if t.state == TrialState.COMPLETE}
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        assert not [t.number for t in waiting if ATTR_RERUN_OF in t.user_attrs]
        return done, [t.user_attrs.get(ATTR_PRESET) for t in waiting]

    assert outcome("killed") == outcome("whole")
    assert outcome("whole")[1] == ["swa"]  # the one trial past the target, in both
