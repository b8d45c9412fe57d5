"""The MLflow adapter: one experiment per study, a parent run per study, a child run per trial.

Two layers:

- :class:`MlflowStore` is a thin wrapper over ``MlflowClient`` that raises on any
  failure. ``ropenope sync`` and the tests use it directly.
- :class:`Tracker` is what the sweep driver hands to each trial (it pickles: a URI, an
  experiment, a study and the parent run id). Its methods never raise for a tracking
  failure: the error is kept in :attr:`Tracker.error`, shown once per process, and the
  caller goes on training. Metrics that could not be sent are kept and sent again at
  :meth:`Tracker.trial_finished`; what still failed then, ``sync_study`` rebuilds from
  the Optuna study, which stays the source of truth.

Every client is built with an explicit tracking URI (``MlflowClient(tracking_uri=...)``):
no global ``mlflow.set_tracking_uri``, so trials in one process never interfere. Nesting
is MLflow's own ``mlflow.parentRunId`` tag, exactly what ``mlflow.start_run(parent_run_id=...)``
sets. Links: child runs carry the study, Optuna trial number, Ray trial id and candidate
id as tags; the driver stores the run id as the Optuna user attribute ``mlflow_run_id``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from space.names import (
    RUN_KIND_STUDY,
    RUN_KIND_TRIAL,
    STEPS,
    TAG_CANDIDATE_ID,
    TAG_CANDIDATE_NAME,
    TAG_CUDA_VERSION,
    TAG_DEVICE,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_OBJECTIVES,
    TAG_OPTUNA_TRIAL,
    TAG_OUTCOME,
    TAG_PARETO,
    TAG_PARETO_RANK,
    TAG_RAY_TRIAL_ID,
    TAG_REASON,
    TAG_RUN_KIND,
    TAG_STUDY,
    TAG_TORCH_VERSION,
)
from tracking.runs_view import (
    ensure_view,
    experiment_tags,
    open_study_page,
    runs_url,
    set_study_note,
    study_note,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Run

    from space.schema import SweepConfig
    from tracking.pareto import ParetoTable

log = logging.getLogger("ropenope.tracking")

HOME_ENV = "ROPENOPE_HOME"  # the runs folder (same meaning as in search/); default ./runs
DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
PARETO_ARTIFACT_PATH = "pareto"

# MLflow's own tags (UI columns and nesting).
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_SOURCE_NAME = "mlflow.source.name"

# Optuna trial states as outcomes, and the MLflow run status each one ends in.
OUTCOME_COMPLETE = "COMPLETE"
OUTCOME_PRUNED = "PRUNED"
OUTCOME_FAIL = "FAIL"
RUN_STATUS = {OUTCOME_COMPLETE: "FINISHED", OUTCOME_PRUNED: "KILLED", OUTCOME_FAIL: "FAILED"}
TERMINAL_STATUSES = frozenset(RUN_STATUS.values())

# A dead tracking server must not cost minutes per call: fewer retries than MLflow's
# default (7, exponential backoff: minutes). Only set where the user has not.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

_MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for params (and tags) in one log_batch
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAM_CHARS = 6000
_MAX_TAG_CHARS = 8000
_ERROR_CHARS = 500


class TrackingError(RuntimeError):
    """A tracking operation failed (raised by :class:`MlflowStore` and ``sync``)."""


# -- where runs go ---------------------------------------------------------------------


def runs_dir() -> Path:
    """The project-local runs folder: ``$ROPENOPE_HOME``, else ``./runs``."""
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser().resolve() if home else (Path.cwd() / "runs").resolve()


def _sqlite_file(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def resolve_tracking_uri(uri: str | None = None, runs: Path | None = None) -> str:
    """The tracking URI: ``uri`` (the config's), else ``$MLFLOW_TRACKING_URI``, else a SQLite
    file ``<runs>/mlflow.db`` (never the deprecated file store). Relative SQLite paths are
    made absolute, so Ray trials that change directory still write to the same file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None:
        return f"sqlite:///{(runs or runs_dir()) / DB_NAME}"
    path = _sqlite_file(uri)
    if path is not None and not path.is_absolute():
        query = uri.split("?", 1)[1] if "?" in uri else ""
        uri = f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")
    return uri


def is_remote(uri: str) -> bool:
    """A tracking server (REST API) rather than a database the client writes itself."""
    return uri.split(":", 1)[0] in ("http", "https", "databricks")


def artifact_location(uri: str, experiment: str, runs: Path | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: the server decides for a tracking server;
    next to the database for SQLite (``<dir>/mlartifacts/<experiment>``); under the runs
    folder for another database."""
    if is_remote(uri) or uri.startswith("file:") or "://" not in uri:
        return None
    path = _sqlite_file(uri)
    base = path.parent if path is not None else (runs or runs_dir())
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", experiment) or "experiment"
    return (base / ARTIFACTS_DIR / safe).resolve().as_uri()


def metric_key(name: str) -> str:
    """The MLflow metric name of a score: MLflow refuses ``@``, so ``acc@2x`` is logged as
    ``acc_at_2x`` and ``extrap_bpb@4x`` as ``extrap_bpb_at_4x``; other names unchanged."""
    return re.sub(r"[^/\w.\- :]", "_", name.replace("@", "_at_"))


def param_value(value: Any) -> str:
    """A parameter as MLflow stores it (text), spelled as in the YAML: null, true, 1e4."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = repr(value)
    elif hasattr(value, "value") and isinstance(value.value, str):  # an Enum
        text = value.value
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    return text[:_MAX_PARAM_CHARS]


def config_params(config: SweepConfig, sections: Sequence[str]) -> dict[str, str]:
    """Flat ``section.key`` parameters of the fixed settings of a sweep file."""
    out: dict[str, str] = {}
    for section in sections:
        dumped = getattr(config, section).model_dump(mode="json")
        for key, value in dumped.items():
            out[f"{section}.{key}"] = param_value(value)
    return out


# -- where a run came from (STYLE 11) ----------------------------------------------------

_PROVENANCE: dict[str, str] | None = None


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_tags() -> dict[str, str]:
    """Git commit (and whether the tree had uncommitted changes) of this code."""
    global _PROVENANCE
    if _PROVENANCE is None:
        commit = _git("rev-parse", "HEAD") or os.environ.get("ROPENOPE_GIT_COMMIT", "unknown")
        status = _git("status", "--porcelain", "--untracked-files=no")
        _PROVENANCE = {TAG_GIT_COMMIT: commit, MLFLOW_GIT_COMMIT: commit}
        if status is not None:
            _PROVENANCE[TAG_GIT_DIRTY] = "true" if status else "false"
    return dict(_PROVENANCE)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def environment_tags(device: str | None = None) -> dict[str, str]:
    """torch and CUDA versions and the device a trial runs on (``device``: ``cpu``,
    ``cuda``, ``cuda:1``; None = what torch would pick)."""
    import torch

    tags = {
        TAG_TORCH_VERSION: torch.__version__,
        TAG_CUDA_VERSION: torch.version.cuda or "none",
    }
    wanted = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.startswith("cuda") and torch.cuda.is_available():
        index = int(wanted.split(":", 1)[1]) if ":" in wanted else torch.cuda.current_device()
        tags[TAG_DEVICE] = f"{wanted}: {torch.cuda.get_device_name(index)}"
    else:
        tags[TAG_DEVICE] = f"cpu: {_cpu_name()}"
    return tags


# -- the picklable target --------------------------------------------------------------


@dataclass(frozen=True)
class TrackingTarget:
    """Where a study's runs go. Plain strings: it crosses process boundaries (Ray)."""

    uri: str
    experiment: str
    study: str
    artifact_location: str | None = None
    enabled: bool = True


def tracking_target(
    config: SweepConfig, study_name: str | None = None, runs: Path | None = None
) -> TrackingTarget:
    """The target a sweep file asks for (``tracking:`` section); ``study_name`` overrides
    the file's (``--study``); the experiment defaults to the study name."""
    study = study_name or config.study.name
    experiment = config.tracking.experiment or study
    uri = resolve_tracking_uri(config.tracking.uri, runs)
    return TrackingTarget(
        uri=uri,
        experiment=experiment,
        study=study,
        artifact_location=artifact_location(uri, experiment, runs),
        enabled=config.tracking.enabled,
    )


# -- the raising store -----------------------------------------------------------------


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _same_value(a: float, b: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def _sqlite_wal(path: Path) -> None:
    """Write-ahead logging on the SQLite file: trials write while the UI and the driver
    read (a setting of the file, not a schema change; MLflow's tables stay MLflow's)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


_T = TypeVar("_T")


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
            path = _sqlite_file(self.target.uri)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                _sqlite_wal(path)
            self._client = MlflowClient(tracking_uri=self.target.uri)
        return self._client

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
                **(tags or {}),
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
                **tags,
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
        new = [Param(k, v) for k, v in params.items() if k not in existing]
        for batch in _chunks(new, _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=batch, synchronous=True)
        return len(new)

    def set_tags(
        self, run_id: str, tags: Mapping[str, str], existing: Mapping[str, str] | None = None
    ) -> int:
        """Set tags that are missing or different; returns how many were written."""
        from mlflow.entities import RunTag

        existing = existing or {}
        new = [
            RunTag(k, str(v)[:_MAX_TAG_CHARS])
            for k, v in tags.items()
            if existing.get(k) != str(v)[:_MAX_TAG_CHARS]
        ]
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
        left out. Returns the names uploaded."""
        skip = set(skip)
        done: list[str] = []
        with tempfile.TemporaryDirectory(prefix="ropenope-artifacts-") as tmp:
            for name, local in files.items():
                local = Path(local)
                if name in skip or not local.is_file():
                    continue
                folder, _, base = name.rpartition("/")  # "seed_1/niah.png": a sub-folder
                if local.name != base:  # the artifact is named by its key
                    renamed = Path(tmp) / str(len(done)) / base
                    renamed.parent.mkdir(parents=True)
                    shutil.copyfile(local, renamed)
                    local = renamed
                where = "/".join(p for p in (artifact_path, folder) if p) or None
                self.client.log_artifact(run_id, str(local), where)
                done.append(name)
        return done

    def terminate(self, run_id: str, status: str, end_time: int | None = None) -> None:
        self.client.set_terminated(run_id, status=status, end_time=end_time)


# -- the soft tracker the driver hands to trials ---------------------------------------

_SHOWN: set[str] = set()


def _show_once(uri: str, message: str) -> None:
    if uri in _SHOWN:
        log.debug("tracking error: %s", message)
        return
    _SHOWN.add(uri)
    log.warning(
        "MLflow tracking at %s failed: %s. Training continues; the study keeps every "
        "result and `ropenope sync STUDY` rebuilds the missing runs.",
        uri,
        message,
    )


@dataclass
class _TrialState:
    """What one trial sent (or still has to send) to its child run."""

    trial_number: int
    run_name: str
    tags: dict[str, str]
    params: dict[str, str]
    start_files: dict[str, str]  # artifact name -> text (the resolved candidate)
    candidate_id: str | None
    known_run_id: str | None
    run_id: str | None = None
    started: bool = False
    resumed: bool = False
    logged: dict[str, dict[int, float]] = field(default_factory=dict)
    pending: list[Any] = field(default_factory=list)  # mlflow Metric objects
    last_step: int = 0


class Tracker:
    """MLflow tracking for one study, safe to hand to Ray trials (it pickles).

    Driver: ``tracker = Tracker.from_config(config)``, ``tracker.start_study(config)``,
    then ``tracker.refresh_study(table)`` as trials finish and ``tracker.end_study()``.
    Trial (its own copy): ``trial_started`` -> ``trial_evaluated`` per evaluation ->
    ``trial_finished``; then report ``tracker.run_id`` and the returned error.

    No method raises for a tracking failure: the first error of each call is kept in
    :attr:`error` (and :attr:`errors`), shown once per process, and later calls of the
    same trial skip the network for ``cooldown_s`` seconds while keeping their metrics to
    send at ``trial_finished``.
    """

    def __init__(
        self,
        target: TrackingTarget,
        parent_run_id: str | None = None,
        cooldown_s: float = 60.0,
    ) -> None:
        self.target = target
        self.parent_run_id = parent_run_id
        self.cooldown_s = cooldown_s
        self.errors: list[str] = []
        self._store: MlflowStore | None = None
        self._trial: _TrialState | None = None
        self._down_until = 0.0

    @classmethod
    def from_config(
        cls, config: SweepConfig, study_name: str | None = None, runs: Path | None = None
    ) -> Tracker:
        """No network here: the store is opened on first use."""
        return cls(tracking_target(config, study_name, runs))

    @classmethod
    def for_study(
        cls,
        study_name: str,
        uri: str | None = None,
        experiment: str | None = None,
        runs: Path | None = None,
    ) -> Tracker:
        """For commands that have a study name but no sweep file."""
        resolved = resolve_tracking_uri(uri, runs)
        experiment = experiment or study_name
        return cls(
            TrackingTarget(
                uri=resolved,
                experiment=experiment,
                study=study_name,
                artifact_location=artifact_location(resolved, experiment, runs),
            )
        )

    # -- pickling: a target and a parent run id, nothing live -----------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "parent_run_id": self.parent_run_id,
            "cooldown_s": self.cooldown_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["target"], state["parent_run_id"], state["cooldown_s"])

    def __repr__(self) -> str:
        return (
            f"Tracker(uri={self.target.uri!r}, experiment={self.target.experiment!r}, "
            f"study={self.target.study!r}, parent_run_id={self.parent_run_id!r})"
        )

    @property
    def enabled(self) -> bool:
        return self.target.enabled

    @property
    def store(self) -> MlflowStore:
        if self._store is None:
            self._store = MlflowStore(self.target)
        return self._store

    @property
    def error(self) -> str | None:
        """The first tracking error seen by this tracker, or None."""
        return self.errors[0] if self.errors else None

    @property
    def run_id(self) -> str | None:
        """The current trial's child run id (None before it could be created)."""
        return self._trial.run_id if self._trial is not None else None

    # -- failure handling ---------------------------------------------------------
    def _record(self, what: str, err: BaseException) -> str:
        message = f"{what}: {type(err).__name__}: {err}"[:_ERROR_CHARS]
        self.errors.append(message)
        self._down_until = time.monotonic() + self.cooldown_s
        _show_once(self.target.uri, message)
        return message

    def _soft(self, what: str, fn: Callable[[], _T], *, force: bool = False) -> _T | None:
        """Run ``fn``; a failure is recorded, never raised. Skipped while disabled, and
        during the cool-down after a failure unless ``force``."""
        if not self.enabled:
            return None
        if not force and time.monotonic() < self._down_until:
            return None
        try:
            return fn()
        except Exception as err:  # any client, HTTP or database error: training goes on
            self._record(what, err)
            return None

    # -- the study run (driver) ---------------------------------------------------
    def start_study(
        self,
        config: SweepConfig | None = None,
        *,
        storage: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str | None:
        """Find the study's parent run (a resumed study reuses it) or create it, log the
        sweep settings and file; returns the parent run id (None if tracking failed)."""

        def work() -> str:
            return self._start_study(config, storage, tags)[0]

        return self._soft("start the study run", work, force=True)

    def _start_study(
        self,
        config: SweepConfig | None,
        storage: str | None,
        tags: Mapping[str, str] | None,
        reopen: bool = True,
    ) -> tuple[str, bool]:
        extra = dict(tags or {})
        if storage:
            extra["optuna_storage"] = _redact(storage)
        if config is not None:
            extra[TAG_OBJECTIVES] = ",".join(
                f"{n}:{d}"
                for n, d in zip(config.objective_names(), config.directions(), strict=True)
            )
        run_id, created = self.store.ensure_parent(reopen=reopen)
        self.parent_run_id = run_id
        run = self.store.client.get_run(run_id)
        self.store.set_tags(run_id, extra, run.data.tags)
        if config is not None:
            params = config_params(
                config, ("study", "model", "train", "data", "score", "scheduler", "resources")
            )
            params.pop("study.trials", None)  # changes on resume (--trials); a tag instead
            params.pop("study.name", None)
            for name, spec in config.space.items():
                params[f"space.{name}"] = param_value(spec.to_dict())
            self.store.log_params(run_id, params, run.data.params)
            self.store.set_tags(run_id, {"study_trials": str(config.study.trials)}, run.data.tags)
            # the page `ropenope ui` opens: trials by Pareto rank, objectives and knobs shown
            ensure_view(
                self.store.client,
                self.store.experiment_id(),
                config.objective_names(),
                list(config.searched),
            )
            with tempfile.TemporaryDirectory(prefix="ropenope-study-") as tmp:
                sweep = Path(tmp) / "sweep.yaml"
                if config.source and Path(config.source).is_file():
                    shutil.copyfile(config.source, sweep)
                else:
                    import yaml

                    sweep.write_text(
                        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
                    )
                self.store.log_files(run_id, {"sweep.yaml": sweep})
        return run_id, created

    def log_study_metrics(self, metrics: Mapping[str, float], step: int = 0) -> str | None:
        """Numbers about the whole sweep (trial counts, wall time) on the study's run;
        returns the tracking error, or None."""
        from mlflow.entities import Metric

        if not metrics:
            return None
        now = _now_ms()
        batch = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]
        before = len(self.errors)
        self._soft(
            "log study metrics",
            lambda: self.store.log_metrics(self._ensure_parent(), batch),
            force=True,
        )
        return self.errors[-1] if len(self.errors) > before else None

    def end_study(self, status: str = "FINISHED") -> None:
        """Close the study's run (a later resume sets it RUNNING again)."""
        if self.parent_run_id is None:
            return
        self._soft(
            "end the study run",
            lambda: self.store.terminate(self.parent_run_id, status),
            force=True,
        )

    def _ensure_parent(self) -> str:
        if self.parent_run_id is None:
            self.parent_run_id, _ = self.store.ensure_parent()
        return self.parent_run_id

    # -- one trial (inside the trial process) --------------------------------------
    def trial_started(
        self,
        trial_number: int,
        ray_trial_id: str | None,
        candidate: Any,
        config: SweepConfig | None = None,
        *,
        seed: int | Sequence[int] | None = None,
        run_id: str | None = None,
        device: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Create (or, for a trial continued from a checkpoint, find again) the trial's
        child run and log its params, tags and resolved candidate; returns the run id.

        ``candidate`` is a :class:`space.Candidate` (``id``, ``name``, ``knobs``,
        ``to_dict()``); ``seed`` the seed (or seeds, for repeats) it trains; ``run_id`` is
        the ``mlflow_run_id`` the study already has for this trial, if any; ``tags`` are
        extra tags (e.g. ``preset``, ``reused_from``).
        """
        knobs = dict(getattr(candidate, "knobs", {}) or {})
        params = {name: param_value(value) for name, value in knobs.items()}
        if isinstance(seed, Sequence):
            seed = list(seed)[0] if len(seed) == 1 else ",".join(str(s) for s in seed)
        if seed is not None:
            params["seed"] = param_value(seed)
        if config is not None:
            params.update(config_params(config, ("model", "train", "data", "score")))
        candidate_id = getattr(candidate, "id", None)
        candidate_name = getattr(candidate, "name", None) or ""
        run_tags = {
            TAG_OPTUNA_TRIAL: str(trial_number),
            TAG_CANDIDATE_ID: str(candidate_id or ""),
            TAG_CANDIDATE_NAME: candidate_name,
            TAG_RAY_TRIAL_ID: str(ray_trial_id or ""),
            TAG_OUTCOME: "RUNNING",
            MLFLOW_SOURCE_NAME: "ropenope",
            **source_tags(),
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        try:
            run_tags.update(environment_tags(device))
        except Exception as err:  # no torch here: the run still gets its other tags
            log.debug("no environment tags: %s", err)
        start_files: dict[str, str] = {}
        if hasattr(candidate, "to_dict"):
            import yaml

            resolved = {**candidate.to_dict(), **({"seed": seed} if seed is not None else {})}
            start_files["candidate.yaml"] = yaml.safe_dump(resolved, sort_keys=False)
        self._trial = _TrialState(
            trial_number=int(trial_number),
            run_name=f"t{int(trial_number):03d} {candidate_name}".strip(),
            tags=run_tags,
            params=params,
            start_files=start_files,
            candidate_id=candidate_id,
            known_run_id=run_id,
        )
        self._down_until = 0.0
        self._soft("start the trial run", self._start_trial, force=True)
        return self.run_id

    def _start_trial(self) -> None:
        """Find or create the child run and send what is known at the start (idempotent)."""
        state = self._trial
        if state is None or state.started:
            return
        store = self.store
        parent = self._ensure_parent()
        run = store.get_run(state.known_run_id) if state.known_run_id else None
        if run is None:
            run = store.find_child(state.trial_number, state.candidate_id)
        if run is None:
            run_id = store.create_child(parent, state.run_name, state.tags)
            existing_params: dict[str, str] = {}
            existing_tags: dict[str, str] = {}
        else:
            run_id = run.info.run_id
            state.resumed = True
            existing_params, existing_tags = run.data.params, run.data.tags
            there = store.metric_steps(run)
            state.pending = [m for m in state.pending if m.step not in there.get(m.key, {})]
            for key, steps in there.items():
                state.logged.setdefault(key, {}).update(steps)
            if run.info.status != "RUNNING":
                store.client.update_run(run_id, status="RUNNING")
        state.run_id = run_id
        tags = dict(state.tags)
        tags[MLFLOW_PARENT_RUN_ID] = parent
        store.set_tags(run_id, tags, existing_tags)
        store.log_params(run_id, state.params, existing_params)
        with tempfile.TemporaryDirectory(prefix="ropenope-trial-") as tmp:
            files = {}
            for name, text in state.start_files.items():
                files[name] = Path(tmp) / name
                files[name].write_text(text)
            store.log_files(run_id, files)
        state.started = True

    def trial_evaluated(
        self, step: int, metrics: Mapping[str, float], series: str | None = None
    ) -> None:
        """Log one evaluation's metrics (train_loss, val_bpb, lr, ...) at ``step``.

        ``series`` prefixes the keys (``seed_1/val_bpb``: one curve per seed when a trial
        trains several). The ``step`` and ``seed`` keys of a history row are not metrics
        and are dropped; a (metric, step) already on a resumed run is not logged twice.
        """
        state = self._trial
        if state is None or not self.enabled:
            return
        from mlflow.entities import Metric

        step = int(step)
        state.last_step = max(state.last_step, step)
        now = _now_ms()
        for key, value in metrics.items():
            if key in ("step", "seed") or not isinstance(value, int | float):
                continue
            if isinstance(value, bool):
                continue
            name = metric_key(f"{series}/{key}" if series else key)
            if step in state.logged.get(name, {}):
                continue
            state.pending.append(Metric(name, float(value), now, step))
            state.logged.setdefault(name, {})[step] = float(value)
        self._soft("log metrics", self._flush)

    def _flush(self) -> None:
        state = self._trial
        if state is None:
            return
        self._start_trial()
        if state.pending:
            self.store.log_metrics(state.run_id, state.pending)
            state.pending = []

    def trial_finished(
        self,
        outcome: Any,
        reason: str | None = None,
        scores: Mapping[str, float] | None = None,
        artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
    ) -> str | None:
        """Log the final scores, the outcome (COMPLETE / PRUNED / FAIL, an Optuna state or
        its name) with its reason, upload ``artifacts`` (name -> file) and close the run.

        Sends again whatever earlier calls could not. Returns None when the run is
        complete in MLflow, else the tracking error to store on the Optuna trial
        (``tracking_error``); ``sync_study`` completes such runs later.
        """
        state = self._trial
        if state is None or not self.enabled:
            return None
        from mlflow.entities import Metric

        outcome_name = str(getattr(outcome, "name", outcome)).upper()
        if outcome_name not in RUN_STATUS:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {list(RUN_STATUS)}")
        scores = dict(scores or {})
        final_step = state.last_step or int(scores.get(STEPS) or 0)
        now = _now_ms()
        for key, value in scores.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            name = metric_key(key)
            if final_step in state.logged.get(name, {}) and _same_value(
                state.logged[name][final_step], float(value)
            ):
                continue
            state.pending.append(Metric(name, float(value), now, final_step))
            state.logged.setdefault(name, {})[final_step] = float(value)
        files = {name: Path(path) for name, path in (artifacts or {}).items()}
        end_tags = {TAG_OUTCOME: outcome_name, TAG_REASON: reason or ""}

        def finish() -> None:
            self._flush()
            store = self.store
            store.set_tags(state.run_id, end_tags)
            store.log_files(state.run_id, files)
            store.terminate(state.run_id, RUN_STATUS[outcome_name])

        before = len(self.errors)
        self._soft("finish the trial run", finish, force=True)
        if len(self.errors) > before or not state.started:
            return self.errors[-1] if self.errors else "the trial run was never created"
        return None

    def trial_closed(
        self,
        trial: Any,
        objective_names: Sequence[str] | None = None,
        config: SweepConfig | None = None,
    ) -> str | None:
        """In the driver, once Optuna has the trial's outcome: make its child run agree
        with the study (``sync_trial``), which also covers trials whose process never
        called ``trial_finished`` (pruned by the scheduler, invalid, reused, interrupted).
        Returns the tracking error, or None."""
        from tracking.sync import sync_trial

        if not objective_names:
            objective_names = (
                config.objective_names()
                if config is not None
                else [f"value_{i}" for i in range(len(trial.values or []))]
            )
        before = len(self.errors)
        self._soft(
            f"sync trial {trial.number}",
            lambda: sync_trial(trial, self, objective_names, config),
            force=True,
        )
        return self.errors[-1] if len(self.errors) > before else None

    # -- the Pareto front on the study run (driver) ---------------------------------
    def refresh_study(self, table: ParetoTable) -> str | None:
        """Upload the Pareto table (CSV, Markdown, JSON) and plots (PNG, HTML) to the
        study's run under ``pareto/`` and tag each child run with ``pareto_rank`` and
        ``pareto``; returns the tracking error, or None."""
        before = len(self.errors)
        self._soft("refresh the Pareto front", lambda: self._refresh(table), force=True)
        return self.errors[-1] if len(self.errors) > before else None

    def _refresh(self, table: ParetoTable) -> None:
        store = self.store
        parent = self._ensure_parent()
        with tempfile.TemporaryDirectory(prefix="ropenope-pareto-") as tmp:
            written = table.write(tmp)
            store.log_files(parent, written, PARETO_ARTIFACT_PATH)
        ranks = {str(row["trial"]): row["rank"] for row in table.rows}
        for child in store.children(parent):
            trial = child.data.tags.get(TAG_OPTUNA_TRIAL)
            if trial not in ranks:
                continue
            rank = ranks[trial]
            store.set_tags(
                child.info.run_id,
                {
                    TAG_PARETO_RANK: "none" if rank is None else str(rank),
                    TAG_PARETO: "true" if rank == 0 else "false",
                },
                child.data.tags,
            )
        front = [str(row["trial"]) for row in table.front]
        store.set_tags(parent, {"pareto_trials": ",".join(front)})
        from mlflow.entities import Metric

        n_ranked = sum(1 for row in table.rows if row["rank"] is not None)
        now = _now_ms()
        store.log_metrics(
            parent,
            [
                Metric("pareto_size", float(len(front)), now, n_ranked),
                Metric("trials_ranked", float(n_ranked), now, n_ranked),
            ],
        )
        # what the sweep found, as the study run's (and experiment's) description
        set_study_note(
            store.client,
            store.experiment_id(),
            parent,
            study_note(table, self.target.study),
            on_experiment=self.target.experiment == self.target.study,  # not a shared one
        )


def _redact(url: str) -> str:
    """A URL safe to record: the password, if any, is replaced."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


# -- the MLflow UI -----------------------------------------------------------------------


def ui_url(
    uri: str, host: str = "127.0.0.1", port: int = 5000, experiment_id: str | None = None
) -> str:
    """Where to open the UI: the server itself for a tracking server, else the local UI;
    with ``experiment_id``, the study's runs table (``tracking.runs_view``)."""
    base = uri.rstrip("/") if is_remote(uri) else f"http://{host}:{port}"
    return runs_url(base, experiment_id) if experiment_id else base


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str] | None:
    """The ``mlflow ui`` command line for a database store (None for a tracking server,
    which is its own UI). Run it with :func:`ui_env` as the environment."""
    if is_remote(uri):
        return None
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",  # one person's review: one worker is plenty, and light on a laptop
    ]


def ui_env() -> dict[str, str]:
    """The environment for :func:`ui_command`: no background job runner (MLflow 3 starts
    a pool of job consumers by default; the UI of a sweep does not need them)."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def run_ui(tracker: Tracker, host: str = "127.0.0.1", port: int = 5000) -> int:
    """``ropenope ui``: print the URL of the study's experiment and serve the MLflow UI on
    its store until Ctrl-C (for a tracking server, only print its URL)."""
    target = tracker.target
    experiment_id = None
    try:  # the experiment, with the saved view the link opens
        experiment_id = open_study_page(tracker.store)
    except Exception as err:  # the UI can still be opened; say why the link is generic
        print(f"ropenope ui: could not read {target.uri}: {err}", file=sys.stderr)
    url = ui_url(target.uri, host, port, experiment_id)
    argv = ui_command(target.uri, host, port)
    if argv is None:
        print(f"MLflow UI (tracking server): {url}", flush=True)
        return 0
    print(
        f"MLflow UI for study {target.study!r} on {target.uri}: {url}  (Ctrl-C to stop)",
        flush=True,  # before the server's own output, also into a pipe
    )
    proc = subprocess.Popen(argv, env=ui_env())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0
