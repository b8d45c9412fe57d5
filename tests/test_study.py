"""The Optuna study of a sweep, against SQLite and a real PostgreSQL (no Ray here)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import engines
import optuna
import pytest
from engines import tiny_config_file
from optuna.trial import TrialState

from search.bookkeeping import (
    find_reusable,
    find_running_twin,
    finish_trial,
    reconcile_interrupted,
    set_trial_attrs,
)
from search.errors import StudyLocked, StudyMismatch
from search.liveness import DriverRegistry, SqliteLock, database_now
from search.optuna_adapter import storage_trial_id
from search.presets import fixed_params
from search.samplers import make_sampler
from search.signature import budget_key, stored_config
from search.storage import resolve_storage_url
from search.study import open_study
from space import load_config
from space.names import STUDY_ATTR_CONFIG, STUDY_ATTR_OBJECTIVES, STUDY_ATTR_SPACE
from space.outcomes import Reason
from space.trial_attrs import (
    ATTR_BUDGET,
    ATTR_CANDIDATE_ID,
    ATTR_DRIVER,
    ATTR_KNOBS,
    ATTR_PRESET,
    ATTR_REASON,
    ATTR_RERUN_OF,
)

HOST = socket.gethostname()
PRESETS = ["rope", "nope", {"name": "swa", "knobs": {"global_every": 2, "local_window": 8}}]


def _config(tmp_path: Path, name: str = "sweep.yaml", **sections):
    path = tiny_config_file(tmp_path / name, **sections)
    return load_config(path), path.read_text()


def _waiting(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def test_study_storage_url_defaults_to_sqlite_in_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("ROPENOPE_HOME", raising=False)
    monkeypatch.delenv("ROPENOPE_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_storage_url(None) == f"sqlite:///{tmp_path.resolve()}/runs/optuna.db"
    monkeypatch.setenv("ROPENOPE_HOME", str(tmp_path / "elsewhere"))
    assert resolve_storage_url(None) == f"sqlite:///{tmp_path.resolve()}/elsewhere/optuna.db"
    assert resolve_storage_url("x.db") == f"sqlite:///{tmp_path.resolve()}/x.db"
    url = "postgresql+psycopg://u:p@h/db"
    assert resolve_storage_url(url) == url
    monkeypatch.setenv("ROPENOPE_STORAGE", url)  # a cluster node's default
    assert resolve_storage_url(None) == url


def test_study_create_records_signature_and_enqueues_presets_once(tmp_path, storage_url):
    config, text = _config(tmp_path, presets=PRESETS)
    opened = open_study(config, config_text=text, storage_url=storage_url)
    assert opened.created
    study = opened.study
    assert study.user_attrs[STUDY_ATTR_OBJECTIVES] == ["long_acc", "short_bpb", "kv_cache_bytes"]
    assert study.metric_names == ["long_acc", "short_bpb", "kv_cache_bytes"]
    assert set(study.user_attrs[STUDY_ATTR_SPACE]) == set(config.space)
    assert stored_config(study).space_signature() == config.space_signature()
    waiting = _waiting(study)
    assert [t.user_attrs[ATTR_PRESET] for t in waiting] == ["rope", "nope", "swa"]
    # The swa preset's searched knobs are recorded as its params; rope's base is not searched.
    assert waiting[2].system_attrs["fixed_params"] == {
        "global_every": 2,
        "global_position": "rope",
        "local_rope_base": 10000.0,
        "local_window": 8,
    }

    again = open_study(config, config_text=text, storage_url=storage_url)
    assert not again.created
    assert len(_waiting(again.study)) == 3  # presets are enqueued once per study


def test_study_refuses_other_directions_objectives_or_space(tmp_path, storage_url):
    config, text = _config(tmp_path, presets=PRESETS)
    open_study(config, config_text=text, storage_url=storage_url)

    flipped, _ = _config(
        tmp_path,
        "flipped.yaml",
        study={"objectives": [{"metric": "long_acc", "direction": "minimize"}]},
    )
    with pytest.raises(StudyMismatch, match="directions"):
        open_study(flipped, config_text=None, storage_url=storage_url)

    other, _ = _config(
        tmp_path,
        "other.yaml",
        study={
            "objectives": [
                {"metric": "acc_at_T", "direction": "maximize"},
                {"metric": "short_bpb", "direction": "minimize"},
                {"metric": "kv_cache_bytes", "direction": "minimize"},
            ]
        },
    )
    with pytest.raises(StudyMismatch, match="objectives"):
        open_study(other, config_text=None, storage_url=storage_url)

    space = {**config.space_signature()}
    assert "local_window" in space
    wider, wider_text = _config(
        tmp_path,
        "wider.yaml",
        space={
            "global_every": {"choice": [1, 2]},
            "global_position": {"choice": ["nope", "rope"]},
            "local_rope_base": {"log": [1000.0, 100000.0]},
            "local_window": {"choice": [8, 16, 24]},
        },
    )
    with pytest.raises(StudyMismatch, match=r"local_window.*--allow-space-change"):
        open_study(wider, config_text=wider_text, storage_url=storage_url)
    opened = open_study(
        wider, config_text=wider_text, storage_url=storage_url, allow_space_change=True
    )
    assert any("different space" in w for w in opened.warnings)
    assert stored_config(opened.study).space_signature() == wider.space_signature()


def test_study_refuses_a_foreign_study_with_trials(tmp_path, storage_url):
    config, text = _config(tmp_path)
    foreign = optuna.create_study(
        storage=storage_url, study_name="tiny", directions=config.directions()
    )
    foreign.enqueue_trial({"x": 1})
    with pytest.raises(StudyMismatch, match="not created by ropenope"):
        open_study(config, config_text=text, storage_url=storage_url)


def test_study_reconcile_closes_dead_drivers_trials_and_requeues_them(tmp_path, storage_url):
    config, text = _config(tmp_path, presets=PRESETS)
    opened = open_study(config, config_text=text, storage_url=storage_url)
    study, storage = opened.study, opened.storage

    # A driver that is gone: its process has exited on this host.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    study.set_user_attr(
        "ropenope:driver:dead",
        {"host": HOST, "pid": int(gone.stdout), "heartbeat": time.time(), "state": "running"},
    )
    me = DriverRegistry(study, "alive")
    me.register()

    orphan = study.ask()  # the rope preset, as the driver takes it: knobs from the queue
    knobs = config.preset_candidate("rope").knobs
    set_trial_attrs(storage, storage_trial_id(orphan), {ATTR_DRIVER: "dead", ATTR_KNOBS: knobs})
    mine = study.ask()
    set_trial_attrs(storage, storage_trial_id(mine), {ATTR_DRIVER: "alive"})

    closed = reconcile_interrupted(study, storage, me.dead_trial_check())
    assert [n for n, _ in closed] == [orphan.number]
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert by_number[orphan.number].state == TrialState.FAIL
    assert by_number[orphan.number].user_attrs[ATTR_REASON] == Reason.INTERRUPTED
    assert by_number[mine.number].state == TrialState.RUNNING
    rerun = [t for t in _waiting(study) if t.user_attrs.get(ATTR_RERUN_OF) == orphan.number]
    assert len(rerun) == 1
    assert rerun[0].user_attrs[ATTR_KNOBS] == knobs
    assert rerun[0].user_attrs[ATTR_PRESET] == "rope"
    queued = by_number[orphan.number].system_attrs["fixed_params"]
    assert rerun[0].system_attrs["fixed_params"] == queued
    me.close()  # stops its heartbeat thread


def test_study_two_pg_reconcilers_requeue_a_trial_once(tmp_path, postgres_server):
    # Parallel drivers are a PostgreSQL feature (SQLite admits one driver: SqliteLock).
    storage_url = engines.fresh_database(postgres_server)
    config, text = _config(tmp_path)
    opened = open_study(config, config_text=text, storage_url=storage_url)
    trial = opened.study.ask()
    set_trial_attrs(opened.storage, storage_trial_id(trial), {ATTR_KNOBS: {"global_every": 1}})

    results = []
    barrier = threading.Barrier(2)

    def reconcile():
        other = open_study(config, config_text=None, storage_url=storage_url)
        barrier.wait()
        results.append(reconcile_interrupted(other.study, other.storage, lambda t: True))

    threads = [threading.Thread(target=reconcile) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0, 1]
    reruns = [t for t in _waiting(opened.study) if t.user_attrs.get(ATTR_RERUN_OF) == trial.number]
    assert len(reruns) == 1


def test_study_finish_trial_reports_who_closed_it(tmp_path, storage_url):
    config, text = _config(tmp_path)
    opened = open_study(config, config_text=text, storage_url=storage_url)
    trial = opened.study.ask()
    assert finish_trial(
        opened.study, opened.storage, trial.number, TrialState.PRUNED, attrs={ATTR_REASON: "x"}
    )
    assert not finish_trial(opened.study, opened.storage, trial.number, TrialState.FAIL)
    frozen = opened.study.get_trials(deepcopy=False)[0]
    assert frozen.state == TrialState.PRUNED and frozen.user_attrs[ATTR_REASON] == "x"


def test_study_parallel_pg_askers_never_share_a_queued_trial(tmp_path, postgres_server):
    # SQLite ignores SELECT ... FOR UPDATE: there, two askers can pop the same queued
    # trial, which is why a SQLite study admits a single driver.
    storage_url = engines.fresh_database(postgres_server)
    config, text = _config(tmp_path)
    opened = open_study(config, config_text=text, storage_url=storage_url)
    for i in range(8):
        opened.study.enqueue_trial({}, user_attrs={"i": i})
    got: list[int] = []
    barrier = threading.Barrier(2)

    def ask_four():
        study = optuna.load_study(study_name="tiny", storage=storage_url)
        barrier.wait()
        for _ in range(4):
            got.append(study.ask().user_attrs["i"])

    threads = [threading.Thread(target=ask_four) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(8))


def test_study_find_reusable_needs_same_candidate_and_budget(tmp_path):
    config, _ = _config(tmp_path)
    longer, _ = _config(tmp_path, "longer.yaml", train={"steps": 60})
    threads, _ = _config(tmp_path, "threads.yaml", train={"threads": 2})
    assert budget_key(config) != budget_key(longer)
    assert budget_key(config) == budget_key(threads)

    study = optuna.create_study(directions=config.directions())
    for number, (cid, budget) in enumerate([("a", "b1"), ("a", "b2"), ("a", "b2")]):
        study.add_trial(
            optuna.trial.create_trial(
                values=[0.5, 1.0, float(number)],
                user_attrs={ATTR_CANDIDATE_ID: cid, ATTR_BUDGET: budget},
            )
        )
    trials = study.get_trials(deepcopy=False)
    assert find_reusable(trials, "a", "b2").number == 1
    assert find_reusable(trials, "a", "b3") is None
    assert find_reusable(trials, "c", "b1") is None


def test_study_a_trial_waits_only_for_an_earlier_running_twin():
    study = optuna.create_study()
    for _ in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.RUNNING,
                user_attrs={ATTR_CANDIDATE_ID: "a", ATTR_BUDGET: "b"},
            )
        )
    trials = study.get_trials(deepcopy=False)
    assert find_running_twin(trials, "a", "b", 2).number == 0  # the one training it
    assert find_running_twin(trials, "a", "b", 0) is None  # never a later one: no cycles
    assert find_running_twin(trials, "a", "other budget", 2) is None


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp", "random", "grid"])
def test_study_every_sampler_runs_ask_tell_past_its_space(tmp_path, sampler):
    config, text = _config(
        tmp_path,
        study={"sampler": sampler},
        space={
            "global_every": {"choice": [1, 2]},
            "global_position": {"choice": ["nope", "rope"]},
            "global_rope_base": {
                "choice": [10000.0, 500000.0],
                "when": {"global_position": "rope"},
            },
        },
        presets=["rope"],
    )
    opened = open_study(config, config_text=text, storage_url=f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(opened.study.sampler, type(make_sampler(config)))
    seen = set()
    for i in range(8):  # the grid has 2 x 2 x 2 points: go past it
        trial = opened.study.ask()
        knobs = config.suggest(trial)
        seen.add(config.candidate(knobs).id)
        opened.study.tell(trial, [0.1 * i, 1.0 / (i + 1), 1.0])
    assert len(opened.study.get_trials(states=(TrialState.COMPLETE,))) == 8
    assert len(seen) >= 2


def test_study_preset_outside_searched_domain_records_only_true_params(tmp_path):
    config, _ = _config(tmp_path)
    # global_every 4 is not in choice [1, 2]; local_window null is not in [8, 16].
    knobs = {"global_every": 2, "local_window": None}
    params = fixed_params(config, knobs)
    assert params == {"global_every": 2, "global_position": "rope", "local_rope_base": 10000.0}


def test_study_sqlite_lock_admits_one_driver_and_frees_on_sigkill(tmp_path):
    db = tmp_path / "optuna.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from search.liveness import SqliteLock;"
            f"SqliteLock(Path({str(db)!r}), 'tiny').acquire(); print('held', flush=True);"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StudyLocked, match=f"pid {holder.pid}"):
            SqliteLock(db, "tiny").acquire()
        SqliteLock(db, "other").acquire()  # another study in the same file is fine
    finally:
        holder.kill()
        holder.wait()
    with SqliteLock(db, "tiny"):
        pass


def test_study_registry_says_who_is_alive(tmp_path):
    study = optuna.create_study()
    me = DriverRegistry(study, "me", stale_after_s=5)
    me.register()
    host = HOST
    assert me.alive("me", None)
    # ages on the database's clock (an in-memory study's is this process's): fresh, then 60 s old
    now = database_now(study)
    fresh = {"host": "elsewhere", "pid": 1, "heartbeat": 0.0, "db_heartbeat": now}
    assert me.alive("x", {**fresh, "state": "running"})
    assert not me.alive("x", {**fresh, "db_heartbeat": now - 60, "state": "running"})
    assert not me.alive(
        "x", {"host": host, "pid": os.getpid(), "heartbeat": time.time(), "state": "ended"}
    )
    assert not me.alive(None, None)
    assert STUDY_ATTR_CONFIG not in study.user_attrs
    me.close()


def test_optuna_adapter_reads_what_this_optuna_stores(storage_url):
    # The two private Optuna fields ropenope reads live in search/optuna_adapter.py; if an
    # Optuna upgrade moves them, this fails here rather than a sweep failing later.
    from search.optuna_adapter import enqueued_params

    study = optuna.create_study(storage=storage_url, study_name="adapter")
    study.enqueue_trial({"x": 3})
    trial = study.ask()
    assert study._storage.get_trial(storage_trial_id(trial)).number == trial.number
    frozen = study.get_trials(deepcopy=False)[0]
    assert storage_trial_id(frozen) == storage_trial_id(trial)
    assert enqueued_params(frozen) == {"x": 3}
    sampled = study.ask()
    assert enqueued_params(study.get_trials(deepcopy=False)[sampled.number]) is None
    from search.optuna_adapter import link_finished_trial, rdb_storage, study_storage_id

    storage = rdb_storage(study)
    assert storage.get_study_id_from_name("adapter") == study_storage_id(study)
    study.tell(sampled, 1.0)
    link_finished_trial(storage, storage_trial_id(sampled), "mlflow_run_id", "r1")
    assert storage.get_trial(storage_trial_id(sampled)).user_attrs["mlflow_run_id"] == "r1"


def test_study_tpe_samples_after_pruned_trials_of_a_multi_objective_study():
    """Early stopping ends trials PRUNED with intermediate values (the scheduler metric):
    Optuna's TPE ranked them in the study's one direction, which a multi-objective study
    has not (RuntimeError at every ask past the startup trials: 13 of 24 trials FAIL in
    ``bench/early_stopping.py``). Ours reads them in ``scheduler.mode``."""
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "demo.yaml")
    assert len(config.study.objectives) == 3 and config.scheduler.mode == "min"
    study = optuna.create_study(
        directions=[o.direction for o in config.study.objectives], sampler=make_sampler(config)
    )
    storage = study._storage
    for i in range(16):  # past TPE's 10 startup trials
        trial = study.ask()
        config.suggest(trial)
        if i % 2:  # a pruned trial: its evaluations so far, none of the objectives
            for step in range(1 + i % 3):
                storage.set_trial_intermediate_value(
                    storage_trial_id(trial), 200 * (step + 1), 2.0 - 0.1 * i
                )
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, [0.05 * i, 2.0 - 0.05 * i, 1000.0 + i])
    for _ in range(3):
        trial = study.ask()
        assert config.suggest(trial)  # raised RuntimeError with Optuna's TPESampler
        study.tell(trial, [0.5, 1.5, 1000.0])
    # the pruned trials are read in the scheduler metric's direction (lower is better)
    view = study.sampler._view(study)
    assert view.direction == optuna.study.StudyDirection.MINIMIZE
    assert view.directions == study.directions
