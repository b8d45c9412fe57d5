"""The Optuna study behind a sweep: storage, creation with a signature check, samplers,
presets, reconciliation after a crash, the single-driver lock and dedup lookups.

The study is the source of truth (DESIGN §7): everything a later driver, ``ropenope
status`` or optuna-dashboard needs is in Optuna's own tables, as study and trial user
attributes whose names live in :mod:`space.names` (no extra tables, STYLE 8).

Nothing here imports ray.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import socket
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from space.knobs import KnobSpec
from space.names import (
    ATTR_BUDGET,
    ATTR_CANDIDATE_ID,
    ATTR_DRIVER,
    ATTR_KNOBS,
    ATTR_PRESET,
    ATTR_REASON,
    ATTR_REASON_DETAIL,
    ATTR_RERUN_OF,
    ATTR_RESTORE_FROM,
    ATTR_REUSED_FROM,
    REASON_INTERRUPTED,
    STUDY_ATTR_CONFIG,
    STUDY_ATTR_DRIVER_PREFIX,
    STUDY_ATTR_OBJECTIVES,
    STUDY_ATTR_PRESETS,
    STUDY_ATTR_SPACE,
    STUDY_ATTR_TARGET,
)
from space.schema import SweepConfig, parse_config, parse_yaml

HOME_ENV = "ROPENOPE_HOME"  # the runs folder; default ./runs
STORAGE_ENV = "ROPENOPE_STORAGE"  # the storage URL when neither --storage nor the file gives one
DB_NAME = "optuna.db"


class StudyError(Exception):
    """A study cannot be used as asked; the message says why and what to do."""


class StudyMismatch(StudyError):
    """The stored study and the sweep file disagree (directions, objectives or space)."""


class StudyNotFound(StudyError):
    """No study of that name in that storage."""


class StudyLocked(StudyError):
    """Another driver is running this study on SQLite, which allows one driver."""


# -- storage -------------------------------------------------------------------------


def runs_dir() -> Path:
    """The project-local folder for studies, Ray experiments and artifacts."""
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser().resolve() if home else (Path.cwd() / "runs").resolve()


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


def redact(url: str) -> str:
    """A storage URL safe to print: the password, if any, is replaced."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        user, _ = creds.split(":", 1)
        return f"{scheme}://{user}:***@{host}"
    return url


def make_storage(url: str) -> RDBStorage:
    """An Optuna RDB storage for ``url``. SQLite gets WAL (readers never block the driver)
    and a generous busy timeout; server engines get pre-ping (dropped connections)."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    return RDBStorage(url, engine_kwargs=engine_kwargs)


# -- signatures and budget -----------------------------------------------------------


def _normal(value: Any) -> Any:
    """JSON round trip: what a value looks like after being stored as a user attribute."""
    return json.loads(json.dumps(value, sort_keys=True))


def budget_key(config: SweepConfig) -> str:
    """What "same budget" means for dedup: training, data, scoring and seeds.

    Two trials of the same candidate id are interchangeable only if they were trained
    and scored the same way; the thread count does not change a result.
    """
    blob = {
        "train": config.train.model_dump(mode="json", exclude={"threads"}),
        "data": config.data.model_dump(mode="json"),
        "score": config.score.model_dump(mode="json"),
        "repeats": config.study.repeats,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def _directions(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def check_compatible(
    study: optuna.Study, config: SweepConfig, *, allow_space_change: bool = False
) -> list[str]:
    """Refuse a stored study that disagrees with ``config``; return warnings otherwise.

    Directions and objectives can never change (the stored values would mean something
    else); the space may change only when the user asks for it.
    """
    attrs = study.user_attrs
    name = study.study_name
    if _directions(study) != config.directions():
        raise StudyMismatch(
            f"study {name!r} optimises directions {_directions(study)}, the sweep file asks "
            f"for {config.directions()}; an Optuna study's directions cannot change: "
            f"use another study name (--study)"
        )
    stored_objectives = attrs.get(STUDY_ATTR_OBJECTIVES) or study.metric_names
    if stored_objectives is None:
        if study.get_trials(deepcopy=False):
            raise StudyMismatch(
                f"study {name!r} exists but was not created by ropenope (no objectives "
                f"recorded); refusing to merge into it: use another study name (--study)"
            )
    elif list(stored_objectives) != config.objective_names():
        raise StudyMismatch(
            f"study {name!r} has objectives {list(stored_objectives)}, the sweep file "
            f"asks for {config.objective_names()}; use another study name (--study)"
        )
    stored_space = attrs.get(STUDY_ATTR_SPACE)
    current = _normal(config.space_signature())
    warnings_: list[str] = []
    if stored_space is not None and stored_space != current:
        changed = sorted(
            k for k in set(stored_space) | set(current) if stored_space.get(k) != current.get(k)
        )
        message = f"study {name!r} was created with a different space (knobs {changed} differ)"
        if not allow_space_change:
            raise StudyMismatch(
                message + "; pass --allow-space-change to continue it with the new space, "
                "or use another study name (--study)"
            )
        warnings_.append(message + "; continuing with the new space as asked")
    return warnings_


def record_config(study: optuna.Study, config: SweepConfig, config_text: str | None) -> None:
    """Store what the study runs, so `ropenope resume STUDY` needs no file."""
    study.set_user_attr(STUDY_ATTR_SPACE, _normal(config.space_signature()))
    study.set_user_attr(STUDY_ATTR_OBJECTIVES, config.objective_names())
    if study.metric_names is None:
        with warnings.catch_warnings():  # experimental since 3.2, read by optuna-dashboard
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(config.objective_names())
    if config_text is not None:
        study.set_user_attr(STUDY_ATTR_CONFIG, config_text)


def stored_config(study: optuna.Study) -> SweepConfig:
    """The sweep file a study was last submitted with. Raises StudyError if none."""
    text = study.user_attrs.get(STUDY_ATTR_CONFIG)
    if text is None:
        raise StudyError(
            f"study {study.study_name!r} has no stored sweep file (was it created by "
            f"ropenope?); pass --config FILE"
        )
    return parse_config(parse_yaml(text), source=f"study {study.study_name}")


def target_trials(study: optuna.Study) -> int | None:
    value = study.user_attrs.get(STUDY_ATTR_TARGET)
    return int(value) if value is not None else None


def set_target_trials(study: optuna.Study, n: int) -> None:
    study.set_user_attr(STUDY_ATTR_TARGET, int(n))


# -- samplers ------------------------------------------------------------------------


class AskTellGridSampler(optuna.samplers.GridSampler):
    """The grid sampler, minus its ``study.stop()`` on exhaustion.

    ``Study.stop`` only works inside ``study.optimize``; with ask/tell it raises, and the
    driver stops by its own trial count anyway. An exhausted grid re-proposes visited
    points, which dedup answers without training.
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001
        return None


def make_sampler(
    config: SweepConfig, n_existing: int = 0, salt: int = 0
) -> optuna.samplers.BaseSampler:
    """The sampler named in the config. On a resumed study the seed is offset by the
    number of existing trials so a fresh sampler does not replay the first run's draws;
    ``salt`` separates drivers that share a study (PostgreSQL), which would otherwise
    draw the same candidates."""
    kind = config.study.sampler
    seed = config.study.seed + n_existing + salt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "tpe":
            # constant_liar: running trials count as bad guesses, so parallel workers
            # do not all sample the same region; group: conditional knobs.
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True
            )
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if kind == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if kind == "grid":
            space = {name: spec.grid_values() for name, spec in config.searched.items()}
            return AskTellGridSampler(space, seed=config.study.seed)
    raise StudyError(f"unknown sampler {kind!r}")  # the schema makes this unreachable


# -- opening -------------------------------------------------------------------------


@dataclass
class OpenedStudy:
    study: optuna.Study
    storage: RDBStorage
    url: str
    created: bool
    warnings: list[str]

    @property
    def name(self) -> str:
        return self.study.study_name


def study_names(url: str) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(make_storage(url))]


def open_study(
    config: SweepConfig,
    *,
    config_text: str | None,
    name: str | None = None,
    storage_url: str | None = None,
    allow_space_change: bool = False,
    target: int | None = None,
    seed_salt: int = 0,
) -> OpenedStudy:
    """Create the study named by the config (or ``name``), or load it and check it.

    The creator records the signature and the sweep file and enqueues the presets;
    a loader refuses a study whose directions, objectives or space differ.
    """
    url = resolve_storage_url(storage_url or config.study.storage)
    storage = make_storage(url)
    study_name = name or config.study.name
    created = True
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=config.directions(),
            sampler=make_sampler(config, 0, seed_salt),
            load_if_exists=False,
        )
    except optuna.exceptions.DuplicatedStudyError:
        created = False
        study = optuna.load_study(storage=storage, study_name=study_name, sampler=None)
        n = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(config, n, seed_salt)
    found = (
        [] if created else check_compatible(study, config, allow_space_change=allow_space_change)
    )
    record_config(study, config, config_text)
    if created or target is not None or target_trials(study) is None:
        set_target_trials(study, target if target is not None else config.study.trials)
    enqueue_presets(study, config)
    return OpenedStudy(study, storage, url, created, found)


def load_existing(name: str, storage_url: str | None = None) -> OpenedStudy:
    """Load a study by name (resume, status). Raises StudyNotFound with the names there are."""
    url = resolve_storage_url(storage_url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise StudyNotFound(f"no study {name!r}: storage {path} does not exist")
    storage = make_storage(url)
    try:
        study = optuna.load_study(storage=storage, study_name=name, sampler=None)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise StudyNotFound(
            f"no study {name!r} in {redact(url)}; studies there: {names or 'none'}"
        ) from None
    return OpenedStudy(study, storage, url, False, [])


# -- presets -------------------------------------------------------------------------


def representable(spec: KnobSpec, value: Any) -> bool:
    """Whether ``value`` lies in the knob's searched domain (so Optuna can record it)."""
    if spec.domain == "choice":
        return any(value == c and type(value) is type(c) for c in spec.choices) or (
            value is None and None in spec.choices
        )
    if spec.domain == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        step = int(spec.step or 1)
        return spec.low <= value <= spec.high and (value - int(spec.low)) % step == 0
    if spec.domain in ("float", "log"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return spec.low <= float(value) <= spec.high
    return False


def fixed_params(config: SweepConfig, knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna params that describe ``knobs``: every active searched knob whose value the
    search domain can hold. A preset outside the searched domain keeps its full knobs in
    the trial's ``knobs`` attribute and records only the params that are true of it."""
    resolved = config.candidate(knobs).knobs
    params = {}
    for name, spec in config.searched.items():
        if spec.applies(resolved) and representable(spec, resolved[name]):
            params[name] = resolved[name]
    return params


def enqueue_presets(study: optuna.Study, config: SweepConfig) -> list[str]:
    """Enqueue the config's presets not enqueued before (each preset runs once)."""
    done = list(study.user_attrs.get(STUDY_ATTR_PRESETS, []))
    added = []
    for name, knobs in config.presets.items():
        if name in done:
            continue
        try:
            params = fixed_params(config, knobs)
        except Exception:  # an impossible preset still runs: it fails with its reason
            params = {}
        study.enqueue_trial(params, user_attrs={ATTR_PRESET: name, ATTR_KNOBS: dict(knobs)})
        added.append(name)
    if added:
        study.set_user_attr(STUDY_ATTR_PRESETS, done + added)
    return added


# -- trial bookkeeping ---------------------------------------------------------------


def storage_trial_id(trial: FrozenTrial) -> int:
    """The storage id of a trial (Optuna keeps it private; only needed for attributes)."""
    return trial._trial_id


def counts_toward_target(trial: FrozenTrial) -> bool:
    """Finished trials count, and running ones; an interrupted trial does not (its
    candidate is re-run), nor does a queued one until it is asked."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get(ATTR_REASON) != REASON_INTERRUPTED
    return False


def count_toward_target(trials: Iterable[FrozenTrial]) -> int:
    return sum(counts_toward_target(t) for t in trials)


def _clean(value: Any) -> Any:
    """User attributes are JSON: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def set_trial_attrs(storage: RDBStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, _clean(value))


def finish_trial(
    study: optuna.Study,
    storage: RDBStorage,
    trial: FrozenTrial | int,
    state: TrialState,
    *,
    values: list[float] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> bool:
    """Write ``attrs`` then close the trial. Attributes go first: Optuna refuses them on a
    finished trial. Returns False if someone else closed it first (PostgreSQL: two drivers
    reconciling the same trial), True if this call did."""
    frozen = trial if isinstance(trial, FrozenTrial) else _frozen(study, trial)
    tid = storage_trial_id(frozen)
    try:
        if attrs:
            set_trial_attrs(storage, tid, attrs)
        study.tell(frozen.number, values, state=state)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as err:
        current = storage.get_trial(tid)
        if current.state.is_finished():
            return False
        raise StudyError(f"could not close trial {frozen.number}: {err}") from err
    return True


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise StudyError(f"study {study.study_name!r} has no trial {number}")


def find_reusable(
    trials: Iterable[FrozenTrial], candidate_id: str, budget: str
) -> FrozenTrial | None:
    """The earliest COMPLETE trial of this candidate with this budget, if any."""
    best = None
    for t in trials:
        if (
            t.state == TrialState.COMPLETE
            and t.user_attrs.get(ATTR_CANDIDATE_ID) == candidate_id
            and t.user_attrs.get(ATTR_BUDGET) == budget
            and (best is None or t.number < best.number)
        ):
            best = t
    return best


def find_running_twin(
    trials: Iterable[FrozenTrial], candidate_id: str, budget: str, number: int
) -> FrozenTrial | None:
    """The lowest-numbered RUNNING trial before ``number`` with this candidate and budget.

    Only earlier trials count: when two drivers tag the same candidate at once, the later
    trial waits for the earlier one and never the other way round (no trial is trained
    twice, and no two trials wait for each other)."""
    twins = [
        t
        for t in trials
        if t.state == TrialState.RUNNING
        and t.number < number
        and t.user_attrs.get(ATTR_CANDIDATE_ID) == candidate_id
        and t.user_attrs.get(ATTR_BUDGET) == budget
    ]
    return min(twins, key=lambda t: t.number, default=None)


def reconcile_interrupted(
    study: optuna.Study,
    storage: RDBStorage,
    is_dead: Callable[[FrozenTrial], bool],
    *,
    restore_for: Callable[[FrozenTrial], Path | None] = lambda t: None,
    detail: str = "the driver running it stopped before the trial ended",
) -> list[tuple[int, Path | None]]:
    """Close RUNNING trials of dead drivers as FAIL ``interrupted`` and enqueue their
    candidates again, continuing from ``restore_for(trial)`` when it finds a checkpoint.

    Optuna's heartbeat does not cover ask/tell, so nothing else would ever close them
    (DESIGN §7). Returns ``(number, restore_from)`` for each trial this call closed.
    """
    closed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_dead(trial):
            continue
        restore = restore_for(trial)
        ok = finish_trial(
            study,
            storage,
            trial,
            TrialState.FAIL,
            attrs={ATTR_REASON: REASON_INTERRUPTED, ATTR_REASON_DETAIL: detail},
        )
        if not ok:
            continue  # another driver closed it and re-queued it
        knobs = trial.user_attrs.get(ATTR_KNOBS)
        if knobs is not None:
            rerun_attrs = {ATTR_KNOBS: knobs, ATTR_RERUN_OF: trial.number}
            if ATTR_PRESET in trial.user_attrs:
                rerun_attrs[ATTR_PRESET] = trial.user_attrs[ATTR_PRESET]
            if restore is not None:
                rerun_attrs[ATTR_RESTORE_FROM] = str(restore)
            params = trial.system_attrs.get("fixed_params", trial.params)
            study.enqueue_trial(dict(params), user_attrs=rerun_attrs)
        closed.append((trial.number, restore))
    return closed


# -- drivers: the SQLite lock and the liveness registry -------------------------------


class SqliteLock:
    """One driver per study on SQLite: an OS lock on a file beside the database.

    ``flock`` is released by the kernel when the holder dies (SIGKILL included), so a
    lock that can be taken proves that no live driver runs the study.
    """

    def __init__(self, db_path: Path, study_name: str) -> None:
        self.path = db_path.with_name(f"{db_path.name}.{study_name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
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


class DriverRegistry:
    """Live drivers of a study, as study user attributes with a heartbeat.

    Each driver writes ``ropenope:driver:<id>`` = {host, pid, started, heartbeat, state};
    its trials carry ``driver_id``. A driver is dead when it said it ended, when its pid
    is gone on this host, or when its heartbeat is older than ``stale_after`` seconds.
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

    @property
    def key(self) -> str:
        return STUDY_ATTR_DRIVER_PREFIX + self.driver_id

    def _write(self, state: str) -> None:
        self._last = time.time()
        self.study.set_user_attr(
            self.key,
            {
                "host": self.host,
                "pid": os.getpid(),
                "started": self._started,
                "heartbeat": self._last,
                "state": state,
            },
        )

    def register(self) -> None:
        self._write("running")

    def beat(self, force: bool = False) -> None:
        if force or time.time() - self._last >= self.heartbeat_s:
            self._write("running")

    def close(self) -> None:
        self._write("ended")

    def drivers(self) -> dict[str, dict[str, Any]]:
        attrs = self.study.user_attrs
        n = len(STUDY_ATTR_DRIVER_PREFIX)
        return {k[n:]: v for k, v in attrs.items() if k.startswith(STUDY_ATTR_DRIVER_PREFIX)}

    def alive(self, driver_id: str | None, info: Mapping[str, Any] | None) -> bool:
        if driver_id == self.driver_id:
            return True
        if not driver_id or not info or info.get("state") != "running":
            return False
        if info.get("host") == self.host and not _pid_alive(int(info.get("pid", -1))):
            return False
        return time.time() - float(info.get("heartbeat", 0)) < self.stale_after_s

    def dead_trial_check(self) -> Callable[[FrozenTrial], bool]:
        """A predicate for :func:`reconcile_interrupted`: is this RUNNING trial orphaned?"""
        drivers = self.drivers()
        now = datetime.now()

        def is_dead(trial: FrozenTrial) -> bool:
            driver = trial.user_attrs.get(ATTR_DRIVER)
            if driver is None:
                # Asked but not yet tagged: give its driver the grace period.
                started = trial.datetime_start or now
                return (now - started).total_seconds() > self.stale_after_s
            return not self.alive(driver, drivers.get(driver))

        return is_dead


def driver_states(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """Every driver recorded on a study (for ``ropenope status``)."""
    n = len(STUDY_ATTR_DRIVER_PREFIX)
    return {k[n:]: v for k, v in study.user_attrs.items() if k.startswith(STUDY_ATTR_DRIVER_PREFIX)}


def describe_trial_source(trial: FrozenTrial) -> str:
    """Where a trial's candidate came from: a preset, a re-run, reuse, or the sampler."""
    attrs = trial.user_attrs
    if ATTR_REUSED_FROM in attrs:
        return f"reused #{attrs[ATTR_REUSED_FROM]}"
    if ATTR_RERUN_OF in attrs:
        return f"re-run of #{attrs[ATTR_RERUN_OF]}"
    if ATTR_PRESET in attrs:
        return f"preset {attrs[ATTR_PRESET]}"
    return "sampled"


__all__ = [
    "AskTellGridSampler",
    "DriverRegistry",
    "OpenedStudy",
    "SqliteLock",
    "StudyError",
    "StudyLocked",
    "StudyMismatch",
    "StudyNotFound",
    "budget_key",
    "check_compatible",
    "count_toward_target",
    "counts_toward_target",
    "enqueue_presets",
    "find_reusable",
    "find_running_twin",
    "finish_trial",
    "fixed_params",
    "load_existing",
    "make_sampler",
    "make_storage",
    "open_study",
    "reconcile_interrupted",
    "resolve_storage_url",
    "runs_dir",
    "stored_config",
    "target_trials",
]
