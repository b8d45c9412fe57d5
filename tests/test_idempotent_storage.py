"""Idempotent storage (issue 21 #4), one suite on SQLite and on a real PostgreSQL.

A commit that applies and then reports a lost connection (the answer lost on the way
back) is injected by wrapping SQLAlchemy's ``Session.commit``: the retry that follows
must not create a second trial, leave a claimed queued trial unrun, or report a trial
this driver closed as "closed by another driver". Two PostgreSQL drivers racing on the
scan-and-enqueue sections (presets, re-queues) enqueue each thing once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
import sqlalchemy.orm
from engines import fresh_database, tiny_config_file
from optuna.storages._rdb import models
from optuna.trial import TrialState

from search import driver
from search import presets as presets_module
from search.storage import make_storage
from search.study import open_study
from search.trials import (
    GhostReaper,
    finish_trial,
    reconcile_interrupted,
    requeue_worker_deaths,
    set_trial_attrs,
)
from space.schema import parse_config, parse_yaml
from space.trial_attrs import (
    ATTR_CLAIM_KEY,
    ATTR_CREATE_KEY,
    ATTR_DRIVER,
    ATTR_KNOBS,
    ATTR_PRESET,
    ATTR_REASON,
    ATTR_RERUN_OF,
)
from tracking.hooks import SweepHooks

REPO = Path(__file__).resolve().parent.parent


class LostAcks:
    """Make the next ``count`` commits that write a trial row (a new trial, a state
    change) apply and then raise a lost-connection error, as a database whose answer
    never came back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.left = count
        self.fired = 0
        real = sqlalchemy.orm.Session.commit
        lost = self

        def after_flush(session, _context) -> None:
            if any(isinstance(o, models.TrialModel) for o in (*session.new, *session.dirty)):
                session.info["trial_write"] = True

        def commit(session) -> None:
            real(session)
            if session.info.pop("trial_write", False) and lost.left > 0:
                lost.left -= 1
                lost.fired += 1
                raise sqlalchemy.exc.OperationalError(
                    "COMMIT",
                    None,
                    ConnectionError("server closed the connection unexpectedly"),
                    connection_invalidated=True,
                )

        sqlalchemy.event.listen(sqlalchemy.orm.Session, "after_flush", after_flush)
        monkeypatch.setattr(sqlalchemy.orm.Session, "commit", commit)
        self._listener = after_flush

    def remove(self) -> None:
        sqlalchemy.event.remove(sqlalchemy.orm.Session, "after_flush", self._listener)


@pytest.fixture
def lost_acks(monkeypatch):
    """``lost_acks(n)``: the next ``n`` trial-writing commits lose their answer."""
    lost = LostAcks(monkeypatch, 0)

    def arm(count: int) -> LostAcks:
        lost.left, lost.fired = count, 0
        return lost

    yield arm
    lost.remove()


def _study(url: str, name: str = "idem") -> optuna.Study:
    return optuna.create_study(storage=make_storage(url), study_name=name)


def test_storage_ask_after_a_lost_commit_creates_exactly_one_trial(storage_url, lost_acks):
    study = _study(storage_url)
    lost = lost_acks(2)
    first, second = study.ask(), study.ask()
    assert lost.fired == 2
    trials = optuna.load_study(study_name="idem", storage=storage_url).trials
    assert [t.number for t in trials] == [first.number, second.number] == [0, 1]
    assert [t.state for t in trials] == [TrialState.RUNNING] * 2  # no ghost
    assert len({t.user_attrs[ATTR_CREATE_KEY] for t in trials}) == 2


def test_storage_enqueue_then_claim_after_lost_commits_runs_the_queued_trial(
    storage_url, lost_acks
):
    study = _study(storage_url)
    lost = lost_acks(1)
    study.enqueue_trial({"x": 1.0}, user_attrs={ATTR_PRESET: "p"})
    assert lost.fired == 1
    lost = lost_acks(1)
    trial = study.ask()  # claims the queued trial; the claim's answer is lost
    assert lost.fired == 1
    assert trial.number == 0 and trial.suggest_float("x", 0, 2) == 1.0
    trials = optuna.load_study(study_name="idem", storage=storage_url).trials
    assert len(trials) == 1 and trials[0].state == TrialState.RUNNING
    assert trials[0].user_attrs[ATTR_PRESET] == "p" and trials[0].user_attrs[ATTR_CLAIM_KEY]


def test_storage_tell_after_a_lost_commit_is_this_drivers_close(storage_url, lost_acks):
    storage = make_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name="idem")
    trial = study.ask()
    lost = lost_acks(1)
    ok = finish_trial(study, storage, trial.number, TrialState.COMPLETE, values=[0.5])
    assert lost.fired == 1 and ok  # not "closed by another driver"
    (stored,) = optuna.load_study(study_name="idem", storage=storage_url).trials
    assert stored.state == TrialState.COMPLETE and stored.values == [0.5]
    # Another driver's close is still told apart: a different outcome is not ours.
    other = study.ask()
    finish_trial(study, storage, other.number, TrialState.FAIL, attrs={ATTR_REASON: "x"})
    assert not finish_trial(study, storage, other.number, TrialState.COMPLETE, values=[1.0])


def test_reaper_closes_ghosts_and_leaves_held_and_other_drivers_trials(storage_url):
    storage = make_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name="idem")
    held, mine, untagged, theirs = (study.ask() for _ in range(4))
    for trial, owner in ((held, "me"), (mine, "me"), (theirs, "other")):
        set_trial_attrs(storage, trial._trial_id, {ATTR_DRIVER: owner, ATTR_KNOBS: {"k": 1}})
    reaper = GhostReaper(study, storage, "me", single_driver=False, interval_s=0, grace_s=0)
    time.sleep(0.01)
    assert sorted(reaper.maybe_reap({held.number})) == [mine.number, untagged.number]
    trials = optuna.load_study(study_name="idem", storage=storage_url).trials
    states = {t.number: t.state for t in trials}
    assert states[held.number] == states[theirs.number] == TrialState.RUNNING
    assert states[mine.number] == states[untagged.number] == TrialState.FAIL
    # the ghost with a candidate runs again; the one never given knobs is only closed
    assert [t.user_attrs[ATTR_RERUN_OF] for t in trials if t.state == TrialState.WAITING] == [
        mine.number
    ]


class CountingHooks(SweepHooks):
    """Records every trial whose end hook ran (where MLflow closes its run)."""

    def __init__(self) -> None:
        self.ended: list[int] = []

    def on_trial_end(self, study, trial) -> None:
        self.ended.append(trial.number)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_with_lost_commit_answers_trains_exactly_the_target_and_ends_every_trial(
    storage_url, tmp_path, runs_home, ray_local, lost_acks
):
    """The first eight trial writes of a real sweep (preset enqueues, asks, claims, tells)
    apply and then lose their answer: the study holds exactly its target, no ghost and
    no queued leftover, and every trial's end hook ran once."""
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "lostacks", "trials": 3},
        presets=["rope", "nope"],
        train={"steps": 20, "eval_every": 10, "checkpoint_every": 10},
        resources={"max_concurrent": 1},
    )
    hooks = CountingHooks()
    lost = lost_acks(8)
    summary = driver.submit(
        path, storage=storage_url, address=ray_local, hooks=hooks, progress=False
    )
    assert lost.fired == 8
    trials = optuna.load_study(study_name="lostacks", storage=storage_url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, summary.counts
    assert sorted(t.user_attrs.get(ATTR_PRESET) or "" for t in trials) == ["", "nope", "rope"]
    assert sorted(hooks.ended) == [0, 1, 2]


# -- two PostgreSQL drivers racing on the scan-and-enqueue sections ------------------------


def _race(n: int, fn) -> list:
    barrier = threading.Barrier(n)
    out: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            out[i] = fn(i)
        except BaseException as err:  # reported by the test
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return out


@pytest.fixture
def pg_url(postgres_server) -> str:
    return fresh_database(postgres_server)


def test_two_postgres_drivers_enqueue_each_preset_once(pg_url, monkeypatch):
    text = (REPO / "tests" / "data" / "tiny.yaml").read_text()
    config = parse_config(parse_yaml(text), source="tiny.yaml")
    assert config.presets
    optuna.create_study(
        storage=make_storage(pg_url), study_name=config.study.name, directions=config.directions()
    )
    slow = presets_module.fixed_params

    def slowly(*args, **kwargs):
        time.sleep(0.2)  # widen the read-check-enqueue window
        return slow(*args, **kwargs)

    monkeypatch.setattr(presets_module, "fixed_params", slowly)
    _race(2, lambda i: open_study(config, config_text=text, storage_url=pg_url))
    trials = optuna.load_study(study_name=config.study.name, storage=pg_url).trials
    assert sorted(t.user_attrs[ATTR_PRESET] for t in trials) == sorted(config.presets)


def test_two_postgres_drivers_requeue_a_dead_trial_once(pg_url):
    storage = make_storage(pg_url)
    study = optuna.create_study(storage=storage, study_name="race")
    died, running = study.ask(), study.ask()
    for trial in (died, running):
        set_trial_attrs(storage, trial._trial_id, {ATTR_KNOBS: {"k": trial.number}})
    finish_trial(study, storage, died.number, TrialState.FAIL, attrs={ATTR_REASON: "worker_died"})

    def slow_restore(_trial):
        time.sleep(0.2)  # widen the read-check-enqueue window
        return None

    def one_driver(i: int) -> tuple:
        mine = optuna.load_study(study_name="race", storage=make_storage(pg_url))
        deaths = requeue_worker_deaths(mine, restore_for=slow_restore)
        closed = reconcile_interrupted(
            mine, mine._storage, lambda t: True, restore_for=slow_restore
        )
        return deaths, closed

    _race(2, one_driver)
    trials = optuna.load_study(study_name="race", storage=pg_url).trials
    reruns = sorted(t.user_attrs[ATTR_RERUN_OF] for t in trials if ATTR_RERUN_OF in t.user_attrs)
    assert reruns == [died.number, running.number]  # each once


def test_two_postgres_drivers_queue_each_adaptive_seed_once(pg_url, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from studies import BAD_ROPE, GOOD_HYBRID, paper_trials, study

    from search import seed_rounds
    from search.seed_rounds import SeedRounds, queued_seed_trials
    from space.schema import load_config

    text = (REPO / "configs" / "paper.yaml").read_text()
    path = tmp_path / "paper.yaml"
    path.write_text(text.replace("  repeats: 3\n", '  repeats: {"min": 2, "max": 4}\n'))
    config = load_config(path)
    trials = paper_trials(hybrid_acc=GOOD_HYBRID, rope_acc=BAD_ROPE, seeds=(0, 1))
    study(trials, storage=make_storage(pg_url), name="seeds")
    requests = seed_rounds.plan_for_study(
        optuna.load_study(study_name="seeds", storage=pg_url), config
    ).requests
    assert requests
    plan = seed_rounds.plan_for_study

    def slowly(*args, **kwargs):
        time.sleep(0.3)  # widen the read-plan-enqueue window
        return plan(*args, **kwargs)

    monkeypatch.setattr(seed_rounds, "plan_for_study", slowly)

    def one_driver(i: int) -> int:
        mine = optuna.load_study(study_name="seeds", storage=make_storage(pg_url))
        rounds = SeedRounds(mine, config, SimpleNamespace(note=lambda *a: None))
        return rounds.queue(mine.get_trials(deepcopy=False))

    assert sorted(_race(2, one_driver)) == [0, len(requests)]
    queued = queued_seed_trials(optuna.load_study(study_name="seeds", storage=pg_url).trials)
    assert len(queued) == len(requests)
