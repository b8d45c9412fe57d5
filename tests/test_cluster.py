"""A loopback cluster from the deploy scripts that docker-compose.yml runs.

The fixture starts, on this machine and without Docker, what the compose file starts:
PostgreSQL (deploy/postgres.sh, with the binaries of the `pgserver` pip package or a
system PostgreSQL), an MLflow server on it (deploy/mlflow.sh), a Ray head
(deploy/ray-head.sh) and one more Ray worker node (deploy/ray-worker.sh), one CPU
each, so a sweep of two concurrent one-CPU trials must use both nodes, and
optuna-dashboard (deploy/optuna-dashboard.sh). The nodes get the
environment compose gives them (storage URL, tracking URI, runs folder, Ray token).

A tiny sweep is then submitted with `ropenope submit --address http://...` through the
Jobs API, exactly as a user would, and the test checks where its results landed.
Everything started here is stopped by its PID at the end, even on failure.

Ray replaces 127.0.0.1 as a node address with the machine's outward address, so the
two nodes take the other loopback addresses 127.0.0.2 and 127.0.0.3; the services and
the dashboard listen on 127.0.0.1. Nothing leaves the loopback interface.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from engines import free_port  # on 127.0.0.1, LOCAL

from space.names import RUN_KIND_TRIAL, TAG_RUN_KIND
from space.trial_attrs import ATTR_MLFLOW_RUN_ID, ATTR_RAY_TRIAL_DIR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent
CONFIG = "tests/data/cluster.yaml"
STUDY = "cluster"
TRIALS = 3
LOCAL = "127.0.0.1"
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
DB_USER = "ropenope"  # the superuser: bootstraps the roles below, used by no service
# One role per database (deploy/roles.sql), as docker-compose.yml sets them up.
ROLES = {
    "OPTUNA_DB_USER": "rn_optuna",
    "MLFLOW_DB_USER": "rn_mlflow",
    "DASHBOARD_DB_USER": "rn_dash",
}


def postgres_bin() -> str:
    """The bundled binaries of `pgserver` (a dev extra, so CI always has them), else a
    system PostgreSQL."""
    try:
        import pgserver

        folder = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if (folder / "initdb").is_file():
            return str(folder)
    except ImportError:
        pass
    found = shutil.which("initdb")
    if found is None:
        pytest.fail("no PostgreSQL: install the dev extras (pgserver) or a system PostgreSQL")
    return str(Path(found).parent)


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    stop_signal: int


@dataclass
class Cluster:
    base: Path
    token: str
    pg_port: int
    mlflow_port: int
    dashboard_port: int
    gcs_port: int
    optuna_dashboard_port: int = 0
    services: list[Service] = field(default_factory=list)

    @property
    def storage(self) -> str:
        return self.database_url(ROLES["OPTUNA_DB_USER"], "optuna")

    def database_url(self, role: str, database: str) -> str:
        return f"postgresql+psycopg://{role}:{self.password}@{LOCAL}:{self.pg_port}/{database}"

    password: str = field(default_factory=lambda: secrets.token_hex(12))

    @property
    def mlflow_uri(self) -> str:
        return f"http://{LOCAL}:{self.mlflow_port}"

    @property
    def mlflow_uri_with_password(self) -> str:
        """How a tracking server behind basic auth is addressed: the nodes use this one, so
        the sweep carries a password in its tracking URI too (the server ignores it)."""
        return f"http://{DB_USER}:{self.password}@{LOCAL}:{self.mlflow_port}"

    @property
    def jobs_address(self) -> str:
        return f"http://{LOCAL}:{self.dashboard_port}"

    # -- processes ---------------------------------------------------------------
    def start(self, name: str, script: str, env: dict[str, str], stop_signal: int) -> Service:
        log = self.base / f"{name}.log"
        proc = subprocess.Popen(
            ["bash", str(DEPLOY / script)],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped by our PID alone
        )
        service = Service(name, proc, log, stop_signal)
        self.services.append(service)
        return service

    def stop_all(self) -> None:
        """Each service, last started first: its stop signal to our PID (postgres: fast
        shutdown; `ray start --block`: stops the Ray processes it started), then SIGKILL
        to what is left of that PID's own process group."""
        for service in reversed(self.services):
            proc = service.proc
            if proc.poll() is None:
                proc.send_signal(service.stop_signal)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=45)
            with contextlib.suppress(ProcessLookupError):  # the group is gone: all stopped
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=10)

    def logs(self) -> str:
        parts = []
        for service in self.services:
            text = service.log.read_text(errors="replace") if service.log.exists() else ""
            parts.append(f"----- {service.name} (last 3000 chars) -----\n{text[-3000:]}")
        return "\n".join(parts)

    # -- waiting -----------------------------------------------------------------
    def wait_until(self, what: str, check, timeout: float, service: Service) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                pytest.fail(f"{service.name} exited ({service.proc.returncode})\n{self.logs()}")
            try:
                if check():
                    return
            except Exception as err:  # not up yet: keep the last reason for the failure
                last = err
            time.sleep(0.5)
        pytest.fail(f"{what}: not ready after {timeout:.0f} s ({last})\n{self.logs()}")

    def ray_get(self, path: str) -> dict:
        request = urllib.request.Request(
            self.jobs_address + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def alive_nodes(self) -> dict[str, str]:
        """node id -> node IP of the cluster's alive nodes (Ray's state API)."""
        data = self.ray_get("/api/v0/nodes?limit=100")
        rows = data["data"]["result"]["result"]
        return {r["node_id"]: r["node_ip"] for r in rows if r["state"] == "ALIVE"}


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "MLFLOW_", "ROPENOPE_", "PG"))
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        import aiohttp_cors  # noqa: F401  (one of ray[default]'s packages)
    except ImportError:
        pytest.fail("the Ray dashboard and Jobs API need ray[default]: pip install -e '.[dev]'")
    # A short base folder: Ray's socket paths under its temp dir have a length limit.
    base = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
    base.chmod(0o755)  # PostgreSQL runs as another user when the tests run as root
    c = Cluster(
        base=base,
        token=secrets.token_hex(16),
        pg_port=free_port(),
        mlflow_port=free_port(),
        dashboard_port=free_port(),
        gcs_port=free_port(),
    )
    try:
        env = base_env()
        # What docker-compose.yml gives every Ray node (x-sweep-env).
        sweep_env = {
            **env,
            "ROPENOPE_STORAGE": c.storage,
            "MLFLOW_TRACKING_URI": c.mlflow_uri_with_password,
            "ROPENOPE_HOME": str(base / "runs"),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": c.token,
            "RAY_NUM_CPUS": "1",
            "RAY_NUM_GPUS": "0",
        }
        pg_env = {
            **env,
            "PGDATA": str(base / "pg"),
            "POSTGRES_USER": DB_USER,
            "POSTGRES_PASSWORD": c.password,
            **ROLES,
            **{name.replace("_USER", "_PASSWORD"): c.password for name in ROLES},
            "POSTGRES_HOST": LOCAL,
            "POSTGRES_PORT": str(c.pg_port),
            "PG_BIN": postgres_bin(),
        }
        if os.geteuid() == 0:
            pg_env["PG_RUN_AS"] = "postgres" if _user_exists("postgres") else "nobody"
        pg = c.start("postgres", "postgres.sh", pg_env, signal.SIGINT)
        head = c.start(
            "ray-head",
            "ray-head.sh",
            {
                **sweep_env,
                "RAY_NODE_IP": HEAD_IP,
                "RAY_GCS_PORT": str(c.gcs_port),
                "RAY_DASHBOARD_HOST": LOCAL,
                "RAY_DASHBOARD_PORT": str(c.dashboard_port),
                "RAY_TEMP_DIR": str(base / "ray"),
                "RAY_CLIENT_SERVER_PORT": str(free_port()),
                "RAY_DASHBOARD_AGENT_LISTEN_PORT": str(free_port()),
            },
            signal.SIGTERM,
        )

        import psycopg

        def pg_ready() -> bool:
            for db in ("optuna", "mlflow"):
                url = f"postgresql://{DB_USER}:{c.password}@{LOCAL}:{c.pg_port}/{db}"
                with psycopg.connect(url, connect_timeout=3):
                    pass
            return True

        c.wait_until("postgres", pg_ready, 90, pg)
        mlflow = c.start(
            "mlflow",
            "mlflow.sh",
            {
                **env,
                "MLFLOW_BACKEND_STORE_URI": c.database_url(ROLES["MLFLOW_DB_USER"], "mlflow"),
                "MLFLOW_ARTIFACTS_DESTINATION": str(base / "mlflow-artifacts"),
                "MLFLOW_HOST": LOCAL,
                "MLFLOW_PORT": str(c.mlflow_port),
                "MLFLOW_WORKERS": "1",
            },
            signal.SIGTERM,
        )
        c.optuna_dashboard_port = free_port()
        c.start(
            "optuna-dashboard",
            "optuna-dashboard.sh",
            {
                **env,
                "ROPENOPE_STORAGE": c.database_url(ROLES["DASHBOARD_DB_USER"], "optuna"),
                "OPTUNA_DASHBOARD_HOST": LOCAL,
                "OPTUNA_DASHBOARD_PORT": str(c.optuna_dashboard_port),
            },
            signal.SIGTERM,
        )
        c.wait_until("ray head", lambda: c.ray_get("/api/version")["ray_version"], 120, head)
        worker = c.start(
            "ray-worker",
            "ray-worker.sh",
            {
                **sweep_env,
                "RAY_HEAD_ADDRESS": f"{HEAD_IP}:{c.gcs_port}",
                "RAY_NODE_IP": WORKER_IP,
                # Its own folder, as on a real second machine: a node deletes the job's
                # unpacked code from its folder when its last trial there ends.
                "RAY_TEMP_DIR": str(base / "rayw"),
                "RAY_DASHBOARD_AGENT_LISTEN_PORT": str(free_port()),
            },
            signal.SIGTERM,
        )
        c.wait_until("both ray nodes", lambda: len(c.alive_nodes()) == 2, 120, worker)
        c.wait_until("mlflow", lambda: _http_ok(f"{c.mlflow_uri}/health"), 180, mlflow)
        yield c
    finally:
        c.stop_all()
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.status == 200


def ropenope(cluster: Cluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: the Ray token in the environment, no store settings
    (the cluster's own environment provides them)."""
    env = {**base_env(), "RAY_AUTH_TOKEN": cluster.token}
    return subprocess.run(
        [str(VENV_BIN / "ropenope"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cluster_sweep_submitted_as_ray_job_lands_in_postgres_mlflow_and_both_nodes(cluster):
    import optuna
    from mlflow import MlflowClient

    address = cluster.jobs_address
    nodes = cluster.alive_nodes()
    assert sorted(nodes.values()) == [HEAD_IP, WORKER_IP]

    # Every process's command line, sampled while the sweep runs: `ps` is what any user of
    # the host sees; the password must never be there.
    command_lines: list[str] = []
    sampling = threading.Event()

    def sample_ps() -> None:
        while not sampling.is_set():
            done = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
            command_lines.extend(done.stdout.splitlines())
            sampling.wait(1.0)

    sampler = threading.Thread(target=sample_ps, daemon=True)
    sampler.start()
    try:
        submitted = ropenope(cluster, "submit", CONFIG, "--address", address)
        assert submitted.returncode == 0, submitted.stderr + cluster.logs()
        job_id = re.search(r"as Ray job (\S+) to", submitted.stdout).group(1)
        assert f"ropenope logs {job_id} --address {address} --follow" in submitted.stdout
        followed = ropenope(cluster, "logs", job_id, "--address", address, "--follow", timeout=420)
    finally:
        sampling.set()
        sampler.join(timeout=10)
    status = ropenope(cluster, "job-status", job_id, "--address", address, "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    context = f"--- job output ---\n{followed.stdout[-6000:]}\n{followed.stderr[-2000:]}"
    assert info["status"] == "SUCCEEDED", f"{info}\n{context}\n{cluster.logs()}"
    assert followed.returncode == 0
    assert f"job {job_id}: SUCCEEDED" in followed.stdout

    # The study is in PostgreSQL, every trial COMPLETE.
    study = optuna.load_study(study_name=STUDY, storage=cluster.storage)
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == TRIALS, (states, context)

    # Its runs are in the MLflow server: one per trial, linked both ways.
    client = MlflowClient(tracking_uri=cluster.mlflow_uri)
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.{TAG_RUN_KIND} = '{RUN_KIND_TRIAL}'"
    )
    assert len(runs) == TRIALS
    assert {t.user_attrs[ATTR_MLFLOW_RUN_ID] for t in trials} == {r.info.run_id for r in runs}

    # The trials ran on both Ray nodes. Each trial's Tune results (in the runs folder the
    # nodes share, as the compose services share a volume) carry the IP of the node that
    # ran it; here each node has its own loopback address.
    ran_on = {}
    for t in trials:
        lines = (Path(t.user_attrs[ATTR_RAY_TRIAL_DIR]) / "result.json").read_text().splitlines()
        ran_on[t.number] = {json.loads(line)["node_ip"] for line in lines if line.strip()}
    assert all(len(ips) == 1 for ips in ran_on.values()), ran_on
    assert set().union(*ran_on.values()) == {HEAD_IP, WORKER_IP}, (ran_on, context)

    # `ropenope status` follows the sweep from here: its job, and the study read inside
    # the cluster (this shell has no ROPENOPE_STORAGE; the nodes do).
    shown = ropenope(cluster, "status", STUDY, "--address", address, "--json", timeout=180)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    seen = json.loads(shown.stdout)
    assert seen["job"]["job_id"] == job_id and seen["job"]["status"] == "SUCCEEDED"
    assert seen["study"]["counts"]["COMPLETE"] == TRIALS
    text = ropenope(cluster, "status", job_id, "--address", address, timeout=180)
    assert text.returncode == 0, text.stdout + text.stderr
    assert f"job {job_id}: SUCCEEDED" in text.stdout and f"study {STUDY}" in text.stdout
    listed_run = ropenope(cluster, "job-status", "--address", address, "--json")
    listed = json.loads(listed_run.stdout)
    assert job_id in [j["job_id"] for j in listed]
    assert not [j for j in listed if "ropenope_query" in j["metadata"]]  # queries deleted

    # No password anywhere (issue 11): the storage URL and the tracking URI both hold
    # one; search every printed line, the Ray jobs' metadata, `ps`, both databases, every
    # artifact and every file in the runs folder.
    secret = cluster.password
    printed = [submitted, followed, status, shown, text, listed_run]
    for done in printed:
        assert secret not in done.stdout + done.stderr, done.args
    assert command_lines and not [line for line in command_lines if secret in line]
    leaks = [
        f"{db}.{where}" for db in ("optuna", "mlflow") for where in _rows_with(cluster, db, secret)
    ]
    assert not leaks, leaks
    folders = [cluster.base / "runs", cluster.base / "mlflow-artifacts"]
    leaked_files = [
        str(path)
        for folder in folders
        for path in folder.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]
    assert not leaked_files, leaked_files


def _rows_with(cluster: Cluster, database: str, needle: str) -> list[str]:
    """``table`` names of every table of ``database`` holding ``needle`` in any column."""
    import psycopg

    url = f"postgresql://{DB_USER}:{cluster.password}@{LOCAL}:{cluster.pg_port}/{database}"
    found = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
        for (table,) in tables:
            hit = conn.execute(
                f'SELECT count(*) FROM "{table}" AS t WHERE t::text LIKE %s', (f"%{needle}%",)
            ).fetchone()[0]
            if hit:
                found.append(table)
    return found


def test_cluster_optuna_dashboard_reads_the_study_database(cluster):
    import optuna

    url = f"http://{LOCAL}:{cluster.optuna_dashboard_port}/api/studies"
    service = next(s for s in cluster.services if s.name == "optuna-dashboard")
    cluster.wait_until("optuna-dashboard", lambda: _http_ok(url), 60, service)
    with urllib.request.urlopen(url, timeout=10) as answer:
        shown = {s["study_name"] for s in json.loads(answer.read())["study_summaries"]}
    stored = {s.study_name for s in optuna.get_all_study_summaries(cluster.storage)}
    assert shown == stored


def test_cluster_job_commands_name_an_unknown_job(cluster):
    for command in ("logs", "job-status"):
        done = ropenope(cluster, command, "raysubmit_nosuchjob", "--address", cluster.jobs_address)
        assert done.returncode == 2
        assert "raysubmit_nosuchjob" in done.stderr
