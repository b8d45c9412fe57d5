"""Driver liveness never compares the clocks of two machines (issue 21, item 9).

A heartbeat's age is the database's clock now minus the database's clock at the beat
(``db_heartbeat``), or, where the database has no clock, how long this reader has seen the
heartbeat unchanged on its own monotonic clock. A driver whose wall clock is an hour off
either way is neither judged dead while it beats nor alive once it stopped. An untagged
RUNNING trial's age is how long this reader has seen it untagged, never its
``datetime_start`` (the asking driver's clock).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

import search.liveness
from search.bookkeeping import GhostReaper
from search.liveness import DriverRegistry, database_now
from search.storage import make_storage

HOUR = 3600.0
STALE = 1.0  # seconds without a beat before a driver is dead, in these tests


@contextlib.contextmanager
def _skewed(offset: float) -> Iterator[None]:
    """time.time() of a machine whose wall clock is ``offset`` seconds off."""
    real = time.time
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "time", lambda: real() + offset)
        yield


def _beat_once(study: optuna.Study, driver_id: str, monkeypatch, offset: float) -> DriverRegistry:
    """A driver on another machine whose clock is ``offset`` seconds off: it registers
    (one beat), and beats again only when the test says so."""
    writer = DriverRegistry(study, driver_id, heartbeat_s=HOUR, stale_after_s=STALE)
    writer.host = "another-machine"  # its pid cannot be checked from here
    with _skewed(offset):
        writer.register()
    return writer


def test_database_clock_is_one_clock_for_every_driver(storage_url, monkeypatch):
    study = optuna.create_study(storage=make_storage(storage_url), study_name="clock")
    before = database_now(study)
    with _skewed(-HOUR):  # a skewed machine reads the same database clock
        during = database_now(study)
    assert before is not None and during is not None
    assert abs(during - before) < 60  # the server's (or this machine's OS) clock, not Python's


@pytest.mark.parametrize("offset", [-HOUR, HOUR])
def test_driver_with_a_skewed_clock_is_alive_while_it_beats_and_dead_once_it_stops(
    storage_url, monkeypatch, offset
):
    study = optuna.create_study(storage=make_storage(storage_url), study_name="skew")
    observer = DriverRegistry(study, "observer", stale_after_s=STALE)
    writer = _beat_once(study, "writer", monkeypatch, offset)
    try:
        # Alive while it beats: the old rule (reader's time.time() minus the writer's) found
        # a clock an hour behind dead at once.
        assert observer.alive("writer", observer.drivers()["writer"])
        for _ in range(3):
            time.sleep(STALE / 2)
            with _skewed(offset):
                writer._write("running")
            assert observer.alive("writer", observer.drivers()["writer"])
        # ... and an observer whose own clock is off judges the same.
        with _skewed(-offset):
            assert observer.alive("writer", observer.drivers()["writer"])
        # Dead once it stops beating: the old rule found a clock an hour ahead alive for an
        # hour after its last beat.
        time.sleep(STALE * 1.5)
        assert not observer.alive("writer", observer.drivers()["writer"])
        with _skewed(-offset):
            assert not observer.alive("writer", observer.drivers()["writer"])
    finally:
        writer._stop.set()


def test_without_a_database_clock_liveness_is_observed_change(monkeypatch):
    monkeypatch.setattr(search.liveness, "database_now", lambda study: None)
    study = optuna.create_study()
    observer = DriverRegistry(study, "observer", stale_after_s=STALE)
    record = {"host": "another-machine", "pid": 1, "state": "running", "db_heartbeat": None}
    # A heartbeat an hour in the past or the future is just a value: first seen, it is
    # given STALE seconds; while it changes the driver is alive; unchanged, it is dead.
    for skew in (-HOUR, HOUR):
        name = f"d{skew:+.0f}"
        beat = time.time() + skew
        assert observer.alive(name, {**record, "heartbeat": beat})
        for _ in range(3):
            time.sleep(STALE / 2)
            beat += STALE / 2
            assert observer.alive(name, {**record, "heartbeat": beat})
        time.sleep(STALE * 1.2)
        assert not observer.alive(name, {**record, "heartbeat": beat})
    # A record of an older ropenope (no db_heartbeat at all) is judged the same way.
    old = {"host": "another-machine", "pid": 1, "state": "running", "heartbeat": 1.0}
    assert observer.alive("old", old)
    time.sleep(STALE * 1.2)
    assert not observer.alive("old", old)


def _running(trial_id: int, started: datetime) -> FrozenTrial:
    return FrozenTrial(
        number=trial_id,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=started,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=trial_id,
    )


def test_untagged_trial_age_is_observed_not_its_creators_clock():
    study = optuna.create_study()
    registry = DriverRegistry(study, "me", stale_after_s=STALE)
    reaper = GhostReaper(study, None, "me", single_driver=False, grace_s=STALE)
    # Asked by a driver whose clock is an hour ahead (a start in the future) or behind (a
    # start an hour ago, which the old rule reaped at once while its driver was tagging it).
    for trial in (_running(1, datetime.now() - timedelta(hours=1)),
                  _running(2, datetime.now() + timedelta(hours=1))):  # fmt: skip
        is_dead = registry.dead_trial_check()
        assert not is_dead(trial) and not reaper.is_ghost(trial, set())
        time.sleep(STALE * 1.2)
        assert is_dead(trial) and reaper.is_ghost(trial, set())
        assert registry.dead_trial_check()(trial)
