"""Real engines for the study and sweep tests: PostgreSQL and local Ray.

PostgreSQL comes from the ``pgserver`` package (dev extras): its bundled ``initdb`` /
``pg_ctl`` start a private server on a Unix socket in a temporary folder, so the
tests need no system package and are never skipped. Each test gets a fresh database.

The fixtures are registered for every test module in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


_PORTS_GIVEN: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now and not given out before in this session: the kernel
    may hand the same port to two successive probes once the first socket is closed (it
    once gave the MLflow server and the Ray head's GCS of the loopback cluster the same
    port, and MLflow could not bind). Also a port nobody listens on."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session; yields its psycopg SQLAlchemy URL.

    The data folder is a fresh temporary folder outside pytest's (which is private to
    its user): run as root, pgserver runs postgres as its own system user.
    """
    import pgserver

    pgdata = Path(tempfile.mkdtemp(prefix="ropenope-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    try:
        yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    dsn = server_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, sep, query = server_url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}{sep}{query}"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The storage-facing suite runs once per backend (STYLE 7)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return fresh_database(request.getfixturevalue("postgres_server"))


@pytest.fixture(scope="session")
def ray_local():
    """Local Ray on 127.0.0.1 with 2 CPUs for the session; yields its address."""
    import ray
    import ray.cloudpickle

    # Ship this module's runners to Ray workers by value (tests/ is not a package).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(
        address="local",  # a fresh cluster, never one another test started
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level="WARNING",
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def runs_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private runs folder (ROPENOPE_HOME) for the test."""
    home = tmp_path / "runs"
    monkeypatch.setenv("ROPENOPE_HOME", str(home))
    return home


# A model and budget small enough that one trial takes a few seconds on one core.
TINY: dict[str, Any] = {
    "study": {"name": "tiny", "trials": 3, "sampler": "random", "seed": 0},
    "space": {
        "global_every": {"choice": [1, 2]},
        "global_position": {"choice": ["nope", "rope"]},
        "local_rope_base": {"log": [1000.0, 100000.0]},
        "local_window": {"choice": [8, 16]},
    },
    "model": {"layers": 2, "d_model": 32, "heads": 2, "mlp_hidden": 64},
    "train": {
        "seq_len": 32,
        "batch_size": 8,
        "steps": 30,
        "warmup_steps": 5,
        "eval_every": 10,
        "checkpoint_every": 10,
        "eval_windows": 2,
        "lm_fraction": 0.5,
        "task_mix": {"passkey": 1.0},
    },
    "score": {
        "task": "passkey",
        "lengths": [1, 2],
        "depths": [0.0, 1.0],
        "samples": 2,
        "extrap": [2],
        "val_windows": 2,
        "mass_lengths": [1],
        "mass_samples": 2,
    },
    "resources": {"cpus_per_trial": 1, "max_concurrent": 2},
    "tracking": {"enabled": False},
}


# A space whose sampled candidates always have local layers, so none collides with the
# presets the sweep tests enqueue (rope, nope, qknorm: all layers global).
SWEEP_SPACE: dict[str, Any] = {
    "global_every": 2,
    "global_position": {"choice": ["nope", "rope"]},
    "local_rope_base": {"log": [1000.0, 100000.0]},
    "local_window": {"choice": [8, 16]},
}


def tiny_config_file(path: Path, **sections: Any) -> Path:
    """Write the tiny sweep with ``sections`` merged over it (one level deep; ``space``
    and ``presets`` are replaced whole)."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for key, value in sections.items():
        if key != "space" and isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# Runners the driver can use instead of run_candidate (its ``runner`` hook): the real
# pipeline, with one fault injected where a test needs a known outcome.


def _is_all_nope(candidate: Any) -> bool:
    return candidate.knobs["global_position"] == "nope" and candidate.knobs["global_every"] == 1


def failing_runner(config: Any, candidate: Any, **kwargs: Any) -> Any:
    """run_candidate, except that the all-NoPE candidate raises (an injected bug)."""
    from workers.candidate import run_candidate

    if _is_all_nope(candidate):
        raise RuntimeError("injected failure")
    return run_candidate(config, candidate, **kwargs)


def leaky_runner(config: Any, candidate: Any, *, secret_text: str, **kwargs: Any) -> Any:
    """run_candidate, except that the all-NoPE candidate raises an error whose message
    holds ``secret_text`` (a URL with its password, as a driver's error would)."""
    from workers.candidate import run_candidate

    if _is_all_nope(candidate):
        raise RuntimeError(f"could not reach {secret_text}")
    return run_candidate(config, candidate, **kwargs)


def handicap_runner(config: Any, candidate: Any, **kwargs: Any) -> Any:
    """run_candidate; the all-NoPE candidate reports a val_bpb 10 bits worse, so which
    trial the ASHA scheduler stops is known in advance."""
    from workers.candidate import run_candidate

    on_eval = kwargs.pop("on_eval")
    if _is_all_nope(candidate):
        inner = on_eval

        def on_eval(metrics: dict) -> Any:
            return inner({**metrics, "val_bpb": metrics["val_bpb"] + 10.0})

    return run_candidate(config, candidate, on_eval=on_eval, **kwargs)


def slow_seeds_runner(
    config: Any,
    candidate: Any,
    *,
    slow_seeds: tuple[int, ...],
    pause_s: float = 20.0,
    **kwargs: Any,
) -> Any:
    """run_candidate; a seed in ``slow_seeds`` pauses ``pause_s`` after each evaluation (its
    checkpoint saved and the evaluation reported), so a test can kill what runs it then.
    The pause changes no number."""
    from workers.candidate import run_candidate

    if kwargs["seed"] in slow_seeds:
        inner = kwargs.pop("on_eval")

        def on_eval(metrics: dict) -> Any:
            out = inner(metrics)
            time.sleep(pause_s)
            return out

        kwargs["on_eval"] = on_eval
    return run_candidate(config, candidate, **kwargs)


# Per seed, the gap between the all-NoPE candidate's extrap_bpb@2x and its short_bpb under
# seed_effect_runner: about zero over seeds 0-2 (a hypothesis with no effect), but seeds 0
# and 1 agree on a lead that a third seed could still confirm (not futile), which seed 2
# undoes: the hypothesis asks for seed 2 and ends undecided at max.
NULL_GAP_BY_SEED = {0: 0.21, 1: 0.19, 2: -0.5, 3: -0.03, 4: 0.01}
NOPE_SHORT_BPB_HANDICAP = 100.0  # bits per byte: a large effect, decided at the first look


def seed_effect_runner(
    config: Any, candidate: Any, *, slow_seeds: tuple[int, ...] = (), **kwargs: Any
) -> Any:
    """run_candidate with two known effects on the all-NoPE candidate's scores: short_bpb
    ``NOPE_SHORT_BPB_HANDICAP`` bits worse (large), and extrap_bpb@2x equal to that
    short_bpb plus ``NULL_GAP_BY_SEED[seed]`` (none). A seed in ``slow_seeds`` sleeps
    after each evaluation (its checkpoint is saved), so a test can kill the driver
    while it trains."""
    from workers.layout import SCORES_FILE, write_atomic

    seed = kwargs["seed"]
    result = slow_seeds_runner(config, candidate, slow_seeds=slow_seeds, **kwargs)
    if result.status == "complete" and _is_all_nope(candidate):
        short = result.scores["short_bpb"] + NOPE_SHORT_BPB_HANDICAP
        result.scores = {
            **result.scores,
            "short_bpb": short,
            "extrap_bpb@2x": short + NULL_GAP_BY_SEED[seed],
        }
        out_dir = kwargs["out_dir"]
        write_atomic(out_dir / SCORES_FILE, json.dumps(result.to_dict(), default=str))
    return result


# -- MLflow -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """An initialised MLflow SQLite database; tests copy it (creating one takes seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite backend and proxied artifacts.

    Started in its own process group so that stopping it (by its PID) also stops the
    uvicorn worker it spawns; the job runner is off (it would start a pool of consumers).
    """

    def __init__(self, folder: Path, template_db: Path) -> None:
        self.folder = folder
        self.db = folder / "server.db"
        shutil.copyfile(template_db, self.db)  # skips the schema migration at start
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - closed by the process end
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.db}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout_s}s: {self._log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own group: the server and its worker
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # The uvicorn worker may outlive its parent by a moment: wait until the port is free.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self._listening():
            time.sleep(0.2)
        self.proc = None

    def _listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def _log_tail(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")[-3000:]

    # -- the REST API, read without the MLflow client ------------------------------------
    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def runs(self, experiment: str) -> list[dict]:
        exp = self.api("GET", f"experiments/get-by-name?experiment_name={experiment}")
        found = self.api(
            "POST",
            "runs/search",
            {"experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 1000},
        )
        return found.get("runs", [])

    def artifacts(self, run_id: str, path: str = "") -> set[str]:
        listing = self.api("GET", f"artifacts/list?run_id={run_id}&path={path}")
        out: set[str] = set()
        for item in listing.get("files", []):
            if item.get("is_dir"):
                out |= self.artifacts(run_id, item["path"])
            else:
                out.add(item["path"])
        return out

    def download(self, run_id: str, path: str) -> bytes:
        url = f"{self.url}/get-artifact?path={urllib.parse.quote(path)}&run_uuid={run_id}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()


def pid_reporting_runner(config: Any, candidate: Any, *, pid_file: str, **kwargs: Any) -> Any:
    """run_candidate, except that at the first evaluation of the first attempt it writes its
    process id to ``pid_file`` and pauses, so a test can kill the worker mid-training."""
    from workers.candidate import run_candidate

    inner = kwargs.pop("on_eval")

    def on_eval(metrics: dict) -> Any:
        stop = inner(metrics)
        marker = Path(pid_file)
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(30)  # killed here; a restart finds the marker and does not wait
        return stop

    return run_candidate(config, candidate, on_eval=on_eval, **kwargs)


def sigkill_when_written(pid_file: Path, wait_s: float, pid_of: Any = None) -> Any:
    """A started daemon thread that waits (at most ``wait_s``) for ``pid_file``, which
    :func:`pid_reporting_runner` writes at its first evaluation, and SIGKILLs that process
    (or the one ``pid_of()`` names then); ``join`` it after the sweep."""
    import contextlib
    import threading

    def kill() -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not pid_file.exists():
            time.sleep(0.2)
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()) if pid_of is None else pid_of(), signal.SIGKILL)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    return killer


def launcher_pid() -> int:
    """The process id of the one live Tune function trainable (the launcher of a trial of
    several workers), from the GCS actor table (Ray's state API needs the dashboard)."""
    from ray._private.state import actors

    (pid,) = [
        info["Pid"]
        for info in actors(actor_state_name="ALIVE").values()
        if info["ActorClassName"] == "ImplicitFunc"
    ]
    return int(pid)


def refusing_reuse(trainable: Any) -> Any:
    """``trainable`` (a Tune function trainable) as a Tune class whose process is never
    reused for a next trial: its ``reset_config`` refuses, as Tune's own does when a
    finished trial's thread outlives Tune's wait."""
    from ray.tune.trainable.function_trainable import wrap_function

    class RefusesReuse(wrap_function(trainable)):
        def reset_config(self, new_config: dict) -> bool:
            return False

    return RefusesReuse


def dying_runner(config: Any, candidate: Any, **kwargs: Any) -> Any:
    """A trial whose process is SIGKILLed as it starts (a broken node: the OOM killer, a
    bad driver), every time."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # the signal lands first


def disk_full_runner(config: Any, candidate: Any, *, marker: str, **kwargs: Any) -> Any:
    """run_candidate; on its first attempt (no ``marker`` yet) the second checkpoint write
    fails with ENOSPC, as on a full disk, and writes ``marker``."""
    import errno
    from unittest import mock

    from workers import checkpoint
    from workers.candidate import run_candidate

    if Path(marker).exists():
        return run_candidate(config, candidate, **kwargs)
    real = checkpoint.save
    calls: list[Path] = []

    def save(path: Path, state: dict) -> None:
        calls.append(path)
        if len(calls) == 2:
            Path(marker).write_text(str(path))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, state)

    with mock.patch.object(checkpoint, "save", save):
        return run_candidate(config, candidate, **kwargs)


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: what a hung
    tracking server looks like to a client."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.5)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self._held.append(conn)  # read nothing, answer nothing, close nothing

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self.sock.close()


# -- drivers killed and resumed ------------------------------------------------------------


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    """``predicate()``'s first truthy value, polled every 0.2 s; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def trials_by_number(study_name: str, storage: str) -> list:
    """The study's trials in the order they were asked (an unknown study has none)."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return []
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def cli_driver(*args: str, storage: str, address: str) -> list[str]:
    """The command line of a ``ropenope`` driver (``submit FILE`` or ``resume NAME``) that
    joins the test's Ray cluster at ``address``: its trials die with it, as on a crash."""
    head = [sys.executable, "-m", "search", *args, "--storage", storage]
    return [*head, "--address", address, "--quiet"]


def runner_driver(call: str) -> list[str]:
    """The command line of a driver started from Python, for a test runner of this module:
    ``call`` is an expression of ``driver`` (search.driver), ``engines`` and ``functools``,
    e.g. ``driver.submit(PATH, ..., runner=engines.slow_seeds_runner)``."""
    code = (
        "import functools, sys; sys.path.insert(0, 'tests'); import engines, ray.cloudpickle;"
        "ray.cloudpickle.register_pickle_by_value(engines); from search import driver;" + call
    )
    return [sys.executable, "-c", code]


def start_driver(command: list[str], runs_home: Path, stderr: Any = subprocess.DEVNULL) -> Any:
    """``command`` (:func:`cli_driver`, :func:`runner_driver`) in its own session, in the
    repository, with the test's runs folder; stop it with :func:`kill_driver`."""
    return subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "ROPENOPE_HOME": str(runs_home)},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )


def kill_driver(proc: Any) -> bool:
    """SIGKILL the driver if it still runs, as a crash would (its session too, should it
    not die); returns whether it was still running."""
    running = proc.poll() is None
    if running:
        os.kill(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return running


def kill_driver_when(
    command: list[str], runs_home: Path, ready: Any, *, timeout: float, what: str
) -> Any:
    """Start the driver ``command``, SIGKILL it as soon as ``ready()`` is truthy, and return
    that value; fails when the driver ended before (its error output in the message)."""
    log = runs_home.parent / f"driver-{uuid.uuid4().hex[:8]}.log"
    with open(log, "wb") as err:
        proc = start_driver(command, runs_home, stderr=err)
        try:
            value = wait_for(ready, timeout, what)
        finally:
            kill_driver(proc)
    tail = log.read_text(errors="replace")[-2000:]
    assert proc.returncode == -signal.SIGKILL, f"the driver ended by itself: {tail}"
    return value


def kill_at_random_moments(
    path: Path,
    study: str,
    *,
    storage: str,
    address: str,
    runs_home: Path,
    times: int,
    seed: int,
    within: tuple[float, float],
) -> int:
    """``times`` drivers in turn, ``submit`` then ``resume``, each SIGKILLed at a moment
    drawn uniformly ``within`` (seconds after its start: start-up, training, the end) unless
    it ended before; returns how many kills landed."""
    import random

    rng = random.Random(seed)
    kills = 0
    for attempt in range(times):
        args = ["submit", str(path)] if attempt == 0 else ["resume", study]
        proc = start_driver(cli_driver(*args, storage=storage, address=address), runs_home)
        try:
            time.sleep(rng.uniform(*within))
        finally:
            kills += kill_driver(proc)
    return kills
