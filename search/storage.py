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
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from search.errors import StoreError, StudyNotFound
from space.paths import runs_dir
from space.secrets import is_redacted, redact_text, redact_url

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
    """Optuna's RDB storage, waiting out a lost database connection: every public call
    that fails because the connection was lost is retried, with backoff, for up to
    :data:`OUTAGE_S` seconds (a PostgreSQL restart mid-sweep costs a pause, not the sweep).
    A statement the database refuses is not retried."""

    _RETRIED = [
        "check_trial_is_updatable",
        "create_new_study",
        "create_new_trial",
        "delete_study",
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
        "set_trial_state_values",
        "set_trial_system_attr",
        "set_trial_user_attr",
    ]

    def __init__(self, url: str, *, outage_s: float = OUTAGE_S, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._shown_url = redact_url(url)
        self._outage_s = outage_s
        for name in self._RETRIED:
            setattr(self, name, self._retrying(getattr(self, name), name))

    def _retrying(self, fn: Any, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + self._outage_s
            delay = 0.5
            while True:
                try:
                    return fn(*args, **kwargs)
                except Exception as err:
                    if not _connection_lost(err) or time.monotonic() + delay > deadline:
                        raise
                    log.warning(
                        "the study database %s is unreachable (%s); retrying %s in %.1f s",
                        self._shown_url,
                        redact_text(str(err).splitlines()[0] if str(err) else type(err).__name__)[
                            :200
                        ],
                        name,
                        delay,
                    )
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)

        call.__name__ = name
        return call


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
