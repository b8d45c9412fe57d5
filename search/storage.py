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
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from search.errors import StoreError, StudyNotFound
from space.paths import runs_dir
from space.secrets import redact_text, redact_url

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
        return RDBStorage(url, engine_kwargs=engine_kwargs)


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
