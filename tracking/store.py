"""A thin, raising wrapper over ``MlflowClient`` for one study's experiment.

One experiment per study, a parent run per study, a child run per trial. Every client is
built with an explicit tracking URI (``MlflowClient(tracking_uri=...)``): no global
``mlflow.set_tracking_uri``, so trials in one process never interfere. Nesting is MLflow's
own ``mlflow.parentRunId`` tag, exactly what ``mlflow.start_run(parent_run_id=...)`` sets.
Every failure raises (:class:`TrackingError` or MLflow's own); the soft, never-raising
layer is :class:`tracking.tracker.Tracker`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from space.names import (
    RUN_KIND_STUDY,
    RUN_KIND_TRIAL,
    TAG_CANDIDATE_ID,
    TAG_OPTUNA_TRIAL,
    TAG_RUN_KIND,
    TAG_STUDY,
)
from space.secrets import redact_text
from tracking.keys import MAX_TAG_CHARS, MLFLOW_PARENT_RUN_ID
from tracking.provenance import source_tags
from tracking.runs_view import experiment_tags
from tracking.target import TrackingTarget, is_remote, sqlite_file

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Run

# A dead tracking server must not cost minutes per call: fewer retries than MLflow's
# default (7, exponential backoff: minutes), and a short timeout. Only set where the user
# has not.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # MLflow prints each run's address when it ends: noise in a sweep's output, and the
    # address would carry a tracking URI's password.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

# Artifacts read as text and redacted before upload (a sweep file, a report, a log); other
# files (plots, checkpoints) hold no URL and go up as they are.
_TEXT_ARTIFACTS = (".yaml", ".yml", ".json", ".txt", ".md", ".log", ".csv", ".html")
_MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for params (and tags) in one log_batch
_MAX_METRICS_PER_BATCH = 1000


class TrackingError(RuntimeError):
    """A tracking operation failed (raised by :class:`MlflowStore` and ``sync``)."""


log = logging.getLogger(__name__)


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _sqlite_wal(path: Path) -> None:
    """Write-ahead logging on the SQLite file: trials write while the UI and the driver
    read (a setting of the file, not a schema change; MLflow's tables stay MLflow's)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def mend_interrupted_migration(path: Path) -> str | None:
    """Repair what a process killed inside MLflow's schema migration leaves in a SQLite
    store, and say what was done (None when the file needed nothing).

    Alembic alters a SQLite table by copying it into ``_alembic_tmp_<table>`` and
    renaming; a SIGKILL in between leaves the copy, and every later open of the store
    fails with "table _alembic_tmp_... already exists" (seen in crash torture: a driver
    killed while it created ``mlflow.db``). A store that holds no run yet is only a
    half-made file: it is removed and MLflow makes it again. One with runs keeps them:
    a leftover copy is dropped where its table still exists (the copy is the partial
    one) and renamed back where the kill fell between drop and rename, so the upgrade
    resumes from the version the store records. Called under :func:`_init_lock`."""
    import sqlite3

    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
        if not leftovers:
            return None
        runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
        if runs:
            for tmp in leftovers:
                base = tmp.removeprefix("_alembic_tmp_")
                if base in tables:
                    conn.execute(f'DROP TABLE "{tmp}"')
                else:
                    conn.execute(f'ALTER TABLE "{tmp}" RENAME TO "{base}"')
            conn.commit()
            return f"mended an interrupted schema migration of {path} ({', '.join(leftovers)})"
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"removed {path}, left half-created by a killed process (it held no run)"


@contextlib.contextmanager
def _init_lock(path: Path) -> Iterator[None]:
    """One process at a time opens (creates, migrates, mends) a SQLite store."""
    import fcntl

    with open(f"{path}.init.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class MlflowStore:
    """Thin, raising wrapper over ``MlflowClient`` for one :class:`TrackingTarget`."""

    def __init__(self, target: TrackingTarget) -> None:
        self.target = target
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None

    # -- connection ---------------------------------------------------------------
    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            if is_remote(self.target.uri):
                for key, value in HTTP_ENV_DEFAULTS.items():
                    os.environ.setdefault(key, value)
            path = sqlite_file(self.target.uri)
            if path is None:
                self._client = MlflowClient(tracking_uri=self.target.uri)
                return self._client
            path.parent.mkdir(parents=True, exist_ok=True)
            with _init_lock(path):
                mended = mend_interrupted_migration(path)
                if mended is not None:
                    log.warning("MLflow store: %s", mended)
                _sqlite_wal(path)
                client = MlflowClient(tracking_uri=self.target.uri)
                client.search_experiments(max_results=1)  # creates or migrates the tables now
            self._client = client
        return self._client

    @property
    def known_experiment_id(self) -> str | None:
        """The experiment's id if this store has looked it up already (no network)."""
        return self._experiment_id

    def experiment_id(self) -> str:
        """The study's experiment, created on first use (with our artifact location)."""
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            name = self.target.experiment
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                try:
                    self._experiment_id = self.client.create_experiment(
                        name,
                        artifact_location=self.target.artifact_location,
                        tags=experiment_tags(),  # model training: the UI's runs table
                    )
                except MlflowException:  # created meanwhile by another process
                    experiment = self.client.get_experiment_by_name(name)
                    if experiment is None:
                        raise
                    self._experiment_id = experiment.experiment_id
            else:
                if experiment.lifecycle_stage == "deleted":
                    self.client.restore_experiment(experiment.experiment_id)
                self._experiment_id = experiment.experiment_id
        return self._experiment_id

    # -- reading ------------------------------------------------------------------
    def get_run(self, run_id: str) -> Run | None:
        """The run, or None if it does not exist here (or belongs to another experiment)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        if run.info.experiment_id != self.experiment_id() or run.info.lifecycle_stage != "active":
            return None
        return run

    def search(self, filter_string: str, order_by: list[str] | None = None) -> list[Run]:
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id()],
                filter_string=filter_string,
                max_results=1000,
                order_by=order_by or ["attributes.start_time ASC"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def find_parent(self) -> Run | None:
        """The study's run; the oldest if concurrent drivers made two."""
        found = self.search(
            f"tags.{TAG_STUDY} = {_quote(self.target.study)} "
            f"AND tags.{TAG_RUN_KIND} = {_quote(RUN_KIND_STUDY)}"
        )
        return min(found, key=lambda r: (r.info.start_time, r.info.run_id)) if found else None

    def children(self, parent_run_id: str) -> list[Run]:
        return self.search(f"tags.`{MLFLOW_PARENT_RUN_ID}` = {_quote(parent_run_id)}")

    def find_child(self, trial_number: int, candidate_id: str | None) -> Run | None:
        """The run of Optuna trial ``trial_number`` of this study (and this candidate)."""
        query = (
            f"tags.{TAG_STUDY} = {_quote(self.target.study)} "
            f"AND tags.{TAG_RUN_KIND} = {_quote(RUN_KIND_TRIAL)} "
            f"AND tags.{TAG_OPTUNA_TRIAL} = {_quote(str(trial_number))}"
        )
        if candidate_id:
            query += f" AND tags.{TAG_CANDIDATE_ID} = {_quote(candidate_id)}"
        found = self.search(query)
        return min(found, key=lambda r: (r.info.start_time, r.info.run_id)) if found else None

    def trial_run_status(self) -> dict[int, str]:
        """``{Optuna trial number: run status}`` of this study's trial runs (the oldest run
        of a trial, as :meth:`find_child` picks), in one search."""
        found = self.search(
            f"tags.{TAG_STUDY} = {_quote(self.target.study)} "
            f"AND tags.{TAG_RUN_KIND} = {_quote(RUN_KIND_TRIAL)}",
            order_by=["attributes.start_time DESC"],
        )
        status: dict[int, str] = {}
        for run in found:  # newest first: the oldest run of a trial is written last
            number = run.data.tags.get(TAG_OPTUNA_TRIAL, "")
            if number.isdigit():
                status[int(number)] = run.info.status
        return status

    def metric_steps(self, run: Run) -> dict[str, dict[int, float]]:
        """Every logged (metric, step) of a run, for not logging a point twice."""
        return {
            key: {m.step: m.value for m in self.client.get_metric_history(run.info.run_id, key)}
            for key in run.data.metrics
        }

    def artifact_names(self, run_id: str) -> set[str]:
        """Every artifact file of a run, as paths relative to its root."""
        names: set[str] = set()
        folders: list[str | None] = [None]
        while folders:
            for item in self.client.list_artifacts(run_id, folders.pop()):
                if item.is_dir:
                    folders.append(item.path)
                else:
                    names.add(item.path)
        return names

    # -- writing ------------------------------------------------------------------
    def ensure_parent(
        self, tags: Mapping[str, str] | None = None, reopen: bool = True
    ) -> tuple[str, bool]:
        """The study's run id, created if missing; ``(run_id, created)``. ``reopen`` sets
        a finished study run RUNNING again (a resumed sweep)."""
        found = self.find_parent()
        if found is not None:
            if reopen and found.info.status != "RUNNING":
                self.client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id, False
        run = self.client.create_run(
            self.experiment_id(),
            run_name=self.target.study,
            tags={
                TAG_STUDY: self.target.study,
                TAG_RUN_KIND: RUN_KIND_STUDY,
                **source_tags(),
                **{k: redact_text(str(v)) for k, v in (tags or {}).items()},
            },
        )
        # Two drivers (PostgreSQL) may race here: keep the oldest, drop ours.
        oldest = self.find_parent()
        if oldest is not None and oldest.info.run_id != run.info.run_id:
            self.client.delete_run(run.info.run_id)
            return oldest.info.run_id, False
        return run.info.run_id, True

    def create_child(
        self,
        parent_run_id: str,
        run_name: str,
        tags: Mapping[str, str],
        start_time: int | None = None,
    ) -> str:
        run = self.client.create_run(
            self.experiment_id(),
            start_time=start_time,
            run_name=run_name,
            tags={
                MLFLOW_PARENT_RUN_ID: parent_run_id,
                TAG_STUDY: self.target.study,
                TAG_RUN_KIND: RUN_KIND_TRIAL,
                **{k: redact_text(str(v)) for k, v in tags.items()},
            },
        )
        return run.info.run_id

    def log_params(
        self, run_id: str, params: Mapping[str, str], existing: Mapping[str, str] | None = None
    ) -> int:
        """Log the params not yet on the run (MLflow params are write-once); returns how
        many were logged. A param already logged with another value is left as it was."""
        from mlflow.entities import Param

        existing = existing or {}
        new = [Param(k, redact_text(str(v))) for k, v in params.items() if k not in existing]
        for batch in _chunks(new, _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=batch, synchronous=True)
        return len(new)

    def set_tags(
        self, run_id: str, tags: Mapping[str, str], existing: Mapping[str, str] | None = None
    ) -> int:
        """Set tags that are missing or different; returns how many were written."""
        from mlflow.entities import RunTag

        existing = existing or {}
        shown = {k: redact_text(str(v))[:MAX_TAG_CHARS] for k, v in tags.items()}
        new = [RunTag(k, v) for k, v in shown.items() if existing.get(k) != v]
        for batch in _chunks(new, _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=batch, synchronous=True)
        return len(new)

    def log_metrics(self, run_id: str, metrics: Sequence[Metric]) -> None:
        for batch in _chunks(list(metrics), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=batch, synchronous=True)

    def log_files(
        self,
        run_id: str,
        files: Mapping[str, str | os.PathLike[str]],
        artifact_path: str | None = None,
        skip: Iterable[str] = (),
    ) -> list[str]:
        """Upload ``name -> local file`` (the artifact gets ``name``, which may hold a
        sub-folder: ``seed_1/niah.png``); missing local files and names in ``skip`` are
        left out. Text files are uploaded redacted (no URL password reaches an artifact).
        Returns the names uploaded."""
        skip = set(skip)
        done: list[str] = []
        with tempfile.TemporaryDirectory(prefix="ropenope-artifacts-") as tmp:
            for name, local in files.items():
                local = Path(local)
                if name in skip or not local.is_file():
                    continue
                folder, _, base = name.rpartition("/")  # "seed_1/niah.png": a sub-folder
                text = _redacted_text(local)
                if local.name != base or text is not None:  # the artifact is named by its key
                    renamed = Path(tmp) / str(len(done)) / base
                    renamed.parent.mkdir(parents=True)
                    if text is None:
                        shutil.copyfile(local, renamed)
                    else:
                        renamed.write_text(text)
                    local = renamed
                where = "/".join(p for p in (artifact_path, folder) if p) or None
                self.client.log_artifact(run_id, str(local), where)
                done.append(name)
        return done

    def terminate(self, run_id: str, status: str, end_time: int | None = None) -> None:
        self.client.set_terminated(run_id, status=status, end_time=end_time)


def _redacted_text(path: Path) -> str | None:
    """The redacted text of a text artifact whose redaction changes it, else None."""
    if path.suffix.lower() not in _TEXT_ARTIFACTS:
        return None
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        return None
    shown = redact_text(text)
    return None if shown == text else shown


def now_ms() -> int:
    return int(time.time() * 1000)


def same_value(a: float, b: float) -> bool:
    """Equal, or both NaN, or equal to nine digits."""
    if math.isnan(a) and math.isnan(b):
        return True
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
