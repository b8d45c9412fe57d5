"""The study's database: its URL, the Optuna storage on it, and one-line store errors.

The URL is ``--storage``, else the sweep file's ``study.storage``, else
``$ROPENOPE_STORAGE`` (a cluster's nodes have it), else ``runs/optuna.db`` (SQLite).
Opening a store that is locked, unreachable, refusing or corrupt raises
:class:`search.errors.StoreError` with one line that says which and where (the URL
redacted), never a driver traceback. Read-only commands open with ``create=False``: a
file that is not already an Optuna database is refused, never given Optuna's tables.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from search.errors import StoreError, StudyNotFound
from search.optuna_adapter import rdb_storage, study_storage_id
from space.paths import runs_dir
from space.secrets import is_redacted, redact_text, redact_url
from space.trial_attrs import ATTR_CLAIM_KEY, ATTR_CREATE_KEY, TrialAttrs, check_attrs

log = logging.getLogger("ropenope.storage")

STORAGE_ENV = "ROPENOPE_STORAGE"  # the storage URL when neither --storage nor the file gives one
DB_NAME = "optuna.db"
# A table every Optuna RDB schema has; a database without it is not an Optuna store.
_OPTUNA_TABLE = "studies"


def resolve_storage_url(url: str | None) -> str:
    """A SQLAlchemy URL. ``None`` is ``$ROPENOPE_STORAGE`` when set (a cluster's nodes
    have it, see docker-compose.yml), else the embedded default, ``runs/optuna.db``; a
    plain file path is taken as a SQLite file."""
    url = url or os.environ.get(STORAGE_ENV)
    if not url:
        return f"sqlite:///{runs_dir() / DB_NAME}"
    if is_redacted(url):
        raise StoreError(
            f"the storage URL {url} had its password removed (a study stores none): give the "
            f"real one with --storage or ${STORAGE_ENV}"
        )
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    return url


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, ``None`` for any other engine."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:":
        return None
    return Path(path.split("?", 1)[0])


def _check_sqlite_file(path: Path, create: bool) -> None:
    """A readable SQLite database (or, when ``create``, a place to make one)."""
    if not path.exists():
        if not create:
            raise StudyNotFound(f"no study database at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if path.is_dir():
        raise StoreError(f"storage {path} is a folder, not a SQLite database file")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as err:
        raise StoreError(f"storage {path} is not a usable SQLite database: {err}") from None
    if not create and _OPTUNA_TABLE not in tables:
        raise StoreError(
            f"storage {path} holds no Optuna study (no Optuna tables); read-only commands "
            "never create them: check --storage"
        )


def _server_has_tables(url: str) -> bool:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
    try:
        return _OPTUNA_TABLE in sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@contextlib.contextmanager
def store_errors(url: str, what: str = "open the study database") -> Iterator[None]:
    """Turn a database failure into one :class:`StoreError` line (URL redacted)."""
    import sqlalchemy.exc

    try:
        yield
    except (StoreError, StudyNotFound):
        raise
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, OSError) as err:
        text = str(getattr(err, "orig", None) or err).strip().splitlines()
        first = text[0] if text else type(err).__name__
        hint = ""
        if "locked" in first.lower():
            hint = " (another process holds a write lock on it; wait, or stop that process)"
        elif "connection" in first.lower() or "connect" in first.lower():
            hint = " (is the database server running and reachable?)"
        raise StoreError(
            redact_text(f"cannot {what} {redact_url(url)}: {first}{hint}")[:500]
        ) from None


# How long a sweep waits out a database that went away (a PostgreSQL restart, a network
# blip) before the operation fails for good.
OUTAGE_S = 180.0


def _connection_lost(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) says the connection to the database was lost
    or could not be made, as opposed to a statement the database refused."""
    import sqlalchemy.exc

    seen: BaseException | None = err
    while seen is not None:
        text = str(seen).lower()
        if isinstance(seen, sqlite3.OperationalError) or "sqlite" in text:
            # SQLite has no connection to lose: only a writer holding the file is transient
            if "locked" in text or "busy" in text:
                return True
        elif (
            isinstance(seen, sqlalchemy.exc.DBAPIError)
            and seen.connection_invalidated
            or isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
            or type(seen).__name__ in ("OperationalError", "InterfaceError")
            and type(seen).__module__.startswith("psycopg")
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class ResilientStorage(RDBStorage):
    """Optuna's RDB storage, waiting out a lost database connection (a PostgreSQL restart
    mid-sweep costs a pause, not the sweep), without ever doing a write twice.

    A lost connection is ambiguous: the commit may have applied before the answer was
    lost. So only idempotent calls (reads, and writes that set a value to what it already
    is) are retried blindly, with backoff, for up to :data:`OUTAGE_S` seconds. The others
    check what the database holds before trying again:

    - creating a trial (``study.ask``, ``enqueue_trial``) writes an idempotency key
      (``create_key``) in the same transaction; after a lost connection the trial holding
      that key is the one created, so no second (ghost) RUNNING row is made. Optuna's own
      retry of a failed creation is replaced by this one;
    - starting a queued trial (``ask`` claiming a WAITING trial) writes ``claim_key`` with
      the state change; a claim whose key is there was ours;
    - closing a trial (``tell``): a trial found closed after a lost connection with the
      state and values this call asked for was closed by it; another outcome is someone
      else's (Optuna's ``UpdateFinishedTrialError``).

    A statement the database refuses is not retried.
    """

    _RETRIED = [
        "check_trial_is_updatable",
        "create_new_study",
        "get_all_studies",
        "get_all_trials",
        "get_best_trial",
        "get_n_trials",
        "get_study_directions",
        "get_study_id_from_name",
        "get_study_name_from_id",
        "get_study_system_attrs",
        "get_study_user_attrs",
        "get_trial",
        "get_trial_id_from_study_id_trial_number",
        "get_trial_number_from_id",
        "get_trial_param",
        "get_trial_params",
        "get_trial_system_attrs",
        "get_trial_user_attrs",
        "set_study_system_attr",
        "set_study_user_attr",
        "set_trial_intermediate_value",
        "set_trial_param",
        "set_trial_system_attr",
        "set_trial_user_attr",
    ]

    def __init__(self, url: str, *, outage_s: float = OUTAGE_S, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._shown_url = redact_url(url)
        self._outage_s = outage_s
        for name in self._RETRIED:
            setattr(self, name, self._retrying(getattr(self, name), name))

    def _wait_or_raise(self, err: BaseException, name: str, deadline: float, delay: float) -> float:
        """After ``err``: raise it unless the connection was lost and time is left; else
        sleep and return the next delay."""
        if not _connection_lost(err) or time.monotonic() + delay > deadline:
            raise err
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.warning(
            "the study database %s is unreachable (%s); retrying %s in %.1f s",
            self._shown_url,
            redact_text(first)[:200],
            name,
            delay,
        )
        time.sleep(delay)
        return min(delay * 2, 10.0)

    def _retrying(self, fn: Any, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + self._outage_s
            delay = 0.5
            while True:
                try:
                    return fn(*args, **kwargs)
                except Exception as err:
                    delay = self._wait_or_raise(err, name, deadline, delay)

        call.__name__ = name
        return call

    def _until_answered(self, fn: Any, name: str) -> Any:
        """``fn()``, waiting out a lost connection: for the checks after an ambiguous
        failure (reads)."""
        return self._retrying(fn, name)()

    # -- creating a trial --------------------------------------------------------------

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        from optuna.storages._rdb.storage import _create_scoped_session

        key = _idempotency_key(ATTR_CREATE_KEY)
        if template_trial is None:
            template = FrozenTrial(
                number=-1,
                state=TrialState.RUNNING,
                value=None,
                datetime_start=datetime.now(),
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={ATTR_CREATE_KEY: key},
                system_attrs={},
                intermediate_values={},
                trial_id=-1,
            )
        else:
            template = copy.deepcopy(template_trial)
            template.user_attrs = {**template.user_attrs, ATTR_CREATE_KEY: key}
        deadline = time.monotonic() + self._outage_s
        delay = 0.5
        while True:
            try:
                with _create_scoped_session(self.scoped_session) as session:
                    # as Optuna does: the study row lock numbers trials one at a time
                    models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
                    trial_id = self._get_prepared_new_trial(study_id, template, session).trial_id
                return self.get_trial(trial_id)
            except Exception as err:
                delay = self._wait_or_raise(err, "create_new_trial", deadline, delay)
                found = self._until_answered(
                    lambda: self._trial_with_attr(study_id, ATTR_CREATE_KEY, key),
                    "create_new_trial (check)",
                )
                if found is not None:  # the commit had applied: that trial is ours
                    return self.get_trial(found)

    def _trial_with_attr(self, study_id: int, key: str, value: str) -> int | None:
        """The id of the trial of ``study_id`` whose user attribute ``key`` is ``value``."""
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session) as session:
            row = (
                session.query(models.TrialUserAttributeModel.trial_id)
                .join(models.TrialModel)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialUserAttributeModel.key == key)
                .filter(models.TrialUserAttributeModel.value_json == json.dumps(value))
                .first()
            )
        return None if row is None else int(row[0])

    # -- starting and closing a trial ----------------------------------------------------

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state == TrialState.RUNNING:
            return self._claim(trial_id)
        deadline = time.monotonic() + self._outage_s
        delay = 0.5
        while True:
            try:
                return super().set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                raise
            except Exception as err:
                delay = self._wait_or_raise(err, "set_trial_state_values", deadline, delay)
                stored = self._until_answered(
                    lambda: super(ResilientStorage, self).get_trial(trial_id),
                    "set_trial_state_values (check)",
                )
                if stored.state.is_finished():
                    if stored.state == state and _same_values(stored.values, values):
                        return True  # the commit had applied: the trial is closed as asked
                    raise UpdateFinishedTrialError(
                        f"trial {stored.number} was closed {stored.state.name} by another "
                        f"call while this one closing it {state.name} lost its connection"
                    ) from err

    def _claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING with a ``claim_key`` in one transaction; False when the
        trial is not WAITING (another driver started it). See the class docstring."""
        from optuna.storages._rdb.storage import _create_scoped_session

        key = _idempotency_key(ATTR_CLAIM_KEY)
        deadline = time.monotonic() + self._outage_s
        delay = 0.5
        while True:
            try:
                with _create_scoped_session(self.scoped_session) as session:
                    trial = models.TrialModel.find_or_raise_by_id(
                        trial_id, session, for_update=True
                    )
                    self.check_trial_is_updatable(trial_id, trial.state)
                    if trial.state != TrialState.WAITING:
                        return False
                    trial.state = TrialState.RUNNING
                    trial.datetime_start = datetime.now()
                    self._set_trial_attr_without_commit(
                        session, models.TrialUserAttributeModel, trial_id, ATTR_CLAIM_KEY, key
                    )
                return True
            except UpdateFinishedTrialError:
                raise
            except Exception as err:
                delay = self._wait_or_raise(err, "claim a queued trial", deadline, delay)
                attrs = self._until_answered(
                    lambda: super(ResilientStorage, self).get_trial_user_attrs(trial_id),
                    "claim a queued trial (check)",
                )
                if TrialAttrs.of(attrs).claim_key == key:
                    return True  # the commit had applied: the trial is ours


def _new_key() -> str:
    return uuid.uuid4().hex


def _idempotency_key(attr: str) -> str:
    """A fresh key for the idempotency attribute ``attr`` (``create_key``, ``claim_key``),
    checked against the trial-attribute table here: these two are written through Optuna's
    SQL models, past ``set_trial_attrs``, so a wrong type is refused before any row."""
    key = _new_key()
    check_attrs({attr: key})
    return key


def _same_values(stored: Sequence[float] | None, wanted: Sequence[float] | None) -> bool:
    if not stored or not wanted:
        return not stored and not wanted
    return len(stored) == len(wanted) and all(
        a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(stored, wanted, strict=True)
    )


# The class half of the advisory lock key of a study's scan-and-enqueue sections ("ROPN").
_LOCK_CLASS = 0x524F504E
_held = threading.local()


@contextlib.contextmanager
def scan_lock(study: optuna.Study) -> Iterator[None]:
    """Hold the study's scan-and-enqueue lock: read the trials, decide, enqueue, with no
    other driver doing the same in between (presets, re-queues of dead trials, adaptive
    seeds: each is enqueued once). PostgreSQL: a session advisory lock
    (``pg_advisory_lock``) on a connection of its own, not ``FOR UPDATE`` on the study row,
    which Optuna's trial creation takes inside the section. SQLite: nothing to do, one
    driver per study holds its file lock. Re-entrant within a thread."""
    storage = rdb_storage(study)
    engine = getattr(storage, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    import sqlalchemy

    study_id = study_storage_id(study)
    depth = getattr(_held, "depth", {})
    _held.depth = depth
    key = (str(engine.url), study_id)
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    args = {"a": _LOCK_CLASS, "b": study_id}
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:a, :b)"), args)
        conn.commit()
        depth[key] = 1
        try:
            yield
        finally:
            depth[key] = 0
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:a, :b)"), args)
                conn.commit()
            except sqlalchemy.exc.SQLAlchemyError as err:  # a lost connection frees it too
                log.warning("scan lock of study %s not released cleanly: %s", study_id, err)


def make_storage(url: str, *, create: bool = True) -> RDBStorage:
    """An Optuna RDB storage for ``url``. SQLite gets WAL (readers never block the driver)
    and a generous busy timeout; server engines get pre-ping (dropped connections).
    ``create=False`` (read-only commands) refuses a database without Optuna's tables
    instead of creating them."""
    path = sqlite_path(url)
    with store_errors(url):
        if path is not None:
            _check_sqlite_file(path, create)
            with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
        else:
            if not create and not _server_has_tables(url):
                raise StoreError(
                    f"{redact_url(url)} holds no Optuna study (no Optuna tables); read-only "
                    "commands never create them: check --storage"
                )
            engine_kwargs = {"pool_pre_ping": True}
        return ResilientStorage(url, engine_kwargs=engine_kwargs)


def study_names(storage: RDBStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(
    name: str, url: str, *, create_tables: bool = False
) -> tuple[optuna.Study, RDBStorage]:
    """Load study ``name``; raises StudyNotFound naming the studies that do exist."""
    storage = make_storage(url, create=create_tables)
    with store_errors(url, "read the study from"):
        try:
            study = optuna.load_study(storage=storage, study_name=name, sampler=None)
        except KeyError:
            names = study_names(storage)
            raise StudyNotFound(
                f"no study {name!r} in {redact_url(url)}; studies there: {names or 'none'}"
            ) from None
    return study, storage
