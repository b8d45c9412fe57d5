"""Who runs a study: one driver per SQLite study (an OS file lock), several on PostgreSQL
(a registry of live drivers with heartbeats, as study user attributes)."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.errors import StoreError, StudyLocked
from search.optuna_adapter import rdb_storage, storage_trial_id
from space.names import STUDY_ATTR_DRIVER_PREFIX
from space.trial_attrs import TrialAttrs

log = logging.getLogger("ropenope.driver")


# Filesystems whose locks SQLite cannot rely on (its own documentation: "SQLite over a
# network filesystem" corrupts databases), nor can flock here: /proc/mounts type names.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph",
     "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.s3fs", "fuse.rclone", "lustre", "gpfs",
     "beegfs", "davfs", "fuse.davfs2", "fuse.cephfs"}
)  # fmt: skip
MOUNTS = Path("/proc/mounts")


def _unescape_mount(field: str) -> str:
    """/proc/mounts writes a space in a mount point as ``\\040`` (octal escapes)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: Path, mounts: Path | None = None) -> str | None:
    """The type of the filesystem holding ``path`` (the longest mount point above its real
    path in ``mounts``, default /proc/mounts), or None where that cannot be read."""
    try:
        lines = (mounts or MOUNTS).read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape_mount(fields[1])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


class SqliteLock:
    """One driver per study on SQLite: an OS lock on a file beside the database.

    ``flock`` is released by the kernel when the holder dies (SIGKILL included), so a
    lock that can be taken proves that no live driver runs the study. The lock sits beside
    the database's real path (symlinks and ``..`` resolved), so two spellings of one file
    share one lock; a database on a network filesystem is refused (neither SQLite's locks
    nor this one hold there).
    """

    def __init__(self, db_path: Path, study_name: str) -> None:
        real = Path(os.path.realpath(db_path))
        self.db = real
        self.path = real.with_name(f"{real.name}.{study_name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kind = filesystem_type(self.path.parent)
        if kind is not None and kind.lower() in NETWORK_FILESYSTEMS:
            raise StoreError(
                f"the SQLite database {self.db} is on a network filesystem ({kind}), where "
                "SQLite's locks do not hold and a second driver would corrupt it: put it on "
                "a local disk, or use PostgreSQL (--storage postgresql+psycopg://...)"
            )
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StudyLocked(
                f"another driver ({holder}) is running this study; SQLite allows one "
                f"driver per study: wait for it, stop it, or use PostgreSQL for parallel "
                f"drivers (lock: {self.path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SqliteLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def database_now(study: optuna.Study) -> float | None:
    """The clock of the database holding ``study``, in seconds since the epoch: one clock
    that every driver reads, whatever machine it runs on (PostgreSQL's
    ``clock_timestamp()``, MySQL's ``NOW(6)``; SQLite and the in-memory storage live on
    the one machine their single driver runs on, and read its clock). None where the
    storage has no clock or did not answer."""
    storage = rdb_storage(study)
    engine = getattr(storage, "engine", None)
    if engine is None:
        return time.time() if isinstance(storage, optuna.storages.InMemoryStorage) else None
    import sqlalchemy

    query = _CLOCK_QUERIES.get(engine.dialect.name)
    if query is None:
        return None
    try:
        with engine.connect() as conn:
            return float(conn.execute(sqlalchemy.text(query)).scalar_one())
    except sqlalchemy.exc.SQLAlchemyError as err:
        log.warning("the database clock could not be read: %s", err)
        return None


_CLOCK_QUERIES = {
    "postgresql": "SELECT EXTRACT(EPOCH FROM clock_timestamp())",
    "mysql": "SELECT UNIX_TIMESTAMP(NOW(6))",
    "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
}


class DriverRegistry:
    """Live drivers of a study, as study user attributes with a heartbeat.

    Each driver writes ``ropenope:driver:<id>`` = {host, pid, started, heartbeat,
    db_heartbeat, state}; its trials carry ``driver_id``. A driver is dead when it said it
    ended, when its pid is gone on this host, or when it has not beaten for
    ``stale_after`` seconds. That age is never the reader's clock minus the writer's
    (machines' clocks differ): ``db_heartbeat`` is the database's clock at the beat, and
    the reader compares it with the database's clock now (:func:`database_now`). Where
    the database has no clock (or a record has no ``db_heartbeat``), the age is how long
    this reader has seen the heartbeat unchanged, on its own monotonic clock: a driver
    first seen is given ``stale_after`` seconds to beat. ``heartbeat`` (the writer's wall
    clock) is only shown. The heartbeat runs on its own thread (:meth:`register` starts
    it): a driver whose loop is busy is still alive, and another driver never takes it
    for dead.
    """

    def __init__(
        self,
        study: optuna.Study,
        driver_id: str,
        *,
        heartbeat_s: float = 15.0,
        stale_after_s: float = 120.0,
    ) -> None:
        self.study = study
        self.driver_id = driver_id
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.host = socket.gethostname()
        self._last = 0.0
        self._started = datetime.now().isoformat(timespec="seconds")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        # Observed change, per driver: (the last heartbeat seen, monotonic time it was first seen).
        self._seen: dict[str, tuple[Any, float]] = {}
        # Untagged RUNNING trials, per trial id: the monotonic time first seen untagged.
        self._untagged: dict[int, float] = {}

    @property
    def key(self) -> str:
        return STUDY_ATTR_DRIVER_PREFIX + self.driver_id

    def _write(self, state: str) -> None:
        with self._write_lock:
            self._last = time.time()
            self.study.set_user_attr(
                self.key,
                {
                    "host": self.host,
                    "pid": os.getpid(),
                    "started": self._started,
                    "heartbeat": self._last,
                    "db_heartbeat": database_now(self.study),
                    "state": state,
                },
            )

    def register(self) -> None:
        """Say this driver runs, and keep saying so every ``heartbeat_s`` seconds."""
        self._write("running")
        self._thread = threading.Thread(
            target=self._beat_forever, name="ropenope-heartbeat", daemon=True
        )
        self._thread.start()

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._write("running")
            except Exception as err:  # a database hiccup: say so, beat again next time
                log.warning("heartbeat of driver %s not written: %s", self.driver_id, err)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._write("ended")

    def drivers(self) -> dict[str, dict[str, Any]]:
        attrs = self.study.user_attrs
        n = len(STUDY_ATTR_DRIVER_PREFIX)
        return {k[n:]: v for k, v in attrs.items() if k.startswith(STUDY_ATTR_DRIVER_PREFIX)}

    def alive(
        self,
        driver_id: str | None,
        info: Mapping[str, Any] | None,
        db_now: float | None = None,
    ) -> bool:
        """Is driver ``driver_id`` (its record ``info``) running? ``db_now``: the database's
        clock, when the caller has read it for several judgements (else read here)."""
        if driver_id == self.driver_id:
            return True
        if not driver_id or not info or info.get("state") != "running":
            return False
        if info.get("host") == self.host and not _pid_alive(int(info.get("pid", -1))):
            return False
        beat = info.get("db_heartbeat")
        if beat is not None:
            now = db_now if db_now is not None else database_now(self.study)
            if now is not None:
                return now - float(beat) < self.stale_after_s
        return self._unchanged_for(driver_id, (beat, info.get("heartbeat"))) < self.stale_after_s

    def _unchanged_for(self, driver_id: str, value: Any) -> float:
        """Seconds (this reader's monotonic clock) since ``value`` was first seen for
        ``driver_id``: zero when it just changed, or on first sight."""
        now = time.monotonic()
        seen = self._seen.get(driver_id)
        if seen is None or seen[0] != value:
            self._seen[driver_id] = (value, now)
            return 0.0
        return now - seen[1]

    def untagged_for(self, trial: FrozenTrial) -> float:
        """Seconds (this reader's monotonic clock) this RUNNING trial has been seen with no
        ``driver_id``; its ``datetime_start`` is its creator's clock, so not used."""
        now = time.monotonic()
        return now - self._untagged.setdefault(storage_trial_id(trial), now)

    def dead_trial_check(self) -> Callable[[FrozenTrial], bool]:
        """A predicate for :func:`reconcile_interrupted`: is this RUNNING trial orphaned?"""
        drivers = self.drivers()
        db_now = database_now(self.study)

        def is_dead(trial: FrozenTrial) -> bool:
            driver = TrialAttrs.of(trial.user_attrs).driver_id
            if driver is None:
                # Asked but not yet tagged: give its driver the grace period.
                return self.untagged_for(trial) >= self.stale_after_s
            return not self.alive(driver, drivers.get(driver), db_now)

        return is_dead


def driver_states(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """Every driver recorded on a study (for ``ropenope status``)."""
    n = len(STUDY_ATTR_DRIVER_PREFIX)
    return {k[n:]: v for k, v in study.user_attrs.items() if k.startswith(STUDY_ATTR_DRIVER_PREFIX)}
