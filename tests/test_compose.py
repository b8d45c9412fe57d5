"""docker-compose.yml, read as data, and the deploy scripts its services run.

No Docker here: the file is parsed with yaml and its ``${VAR}`` references resolved
the way Compose does (``${VAR:-default}``, ``${VAR:?message}``), from .env.example.
The scripts themselves run for real in tests/test_cluster.py; the GPU claim of
deploy/ray-worker.sh runs here with a stand-in for `ray`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DEPLOY = REPO / "deploy"
SERVICES = ("postgres", "mlflow", "ray-head", "ray-worker", "optuna-dashboard")
# Where compose finds the repository's deploy/ folder inside a container.
DEPLOY_IN_CONTAINER = "/opt/ropenope/deploy/"
VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution (the subset this file uses)."""

    def one(match: re.Match) -> str:
        name, op, arg = match.groups()
        value = env.get(name)
        if op in (":-", "-"):
            return value if value else (arg or "")
        if op in (":?", "?"):
            if not value:
                raise KeyError(f"{name}: {arg}")
            return value
        return value or ""

    return VAR.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return []


def service_command(service: dict) -> list[str]:
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if value:
            return value if isinstance(value, list) else value.split()
    return []


def test_compose_has_every_service():
    assert set(SERVICES) <= set(compose()["services"])


def test_compose_each_service_runs_a_deploy_script_the_cluster_test_runs():
    cluster_test = (REPO / "tests" / "test_cluster.py").read_text()
    for name in SERVICES:
        command = service_command(compose()["services"][name])
        assert command, f"{name} has no command"
        assert command[0].startswith(DEPLOY_IN_CONTAINER), (name, command)
        script = DEPLOY / command[0].removeprefix(DEPLOY_IN_CONTAINER)
        assert script.is_file() and os.access(script, os.X_OK), script
        assert f'"{script.name}"' in cluster_test, f"{script.name} is not run by test_cluster.py"


def test_compose_scripts_reach_postgres_container_through_a_read_only_mount():
    mounts = compose()["services"]["postgres"]["volumes"]
    assert f"./deploy:{DEPLOY_IN_CONTAINER.rstrip('/')}:ro" in mounts


def test_compose_image_holds_the_deploy_scripts():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^WORKDIR /opt/ropenope$", dockerfile, re.M)
    assert re.search(r"^COPY deploy \./deploy$", dockerfile, re.M)
    assert re.search(r"^ARG BASE_IMAGE=\S*cuda", dockerfile, re.M)  # GPU workers


@pytest.mark.parametrize("env", ["defaults", "env_example"])
def test_compose_published_ports_bind_to_loopback(env):
    values = {} if env == "defaults" else env_example()
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: use HOST:PUBLISHED:TARGET strings"
            parts = interpolate(port, values).split(":")
            assert len(parts) == 3 and parts[0] == "127.0.0.1", (name, port)


def test_compose_data_lives_on_named_volumes():
    data = compose()
    named = set(data["volumes"])
    for name, service in data["services"].items():
        for mount in service.get("volumes", []):
            source, target, *mode = mount.split(":")
            if source.startswith((".", "/")):
                # The only bind mount: the scripts, read-only. No data on the host path.
                assert source == "./deploy" and mode == ["ro"], (name, mount)
            else:
                assert source in named, (name, mount)
    mounted = {m.split(":")[1] for s in data["services"].values() for m in s.get("volumes", [])}
    for folder in (
        "/var/lib/postgresql/data",
        "/data/mlflow-artifacts",
        "/data/runs",
        "/data/gpu-claims",
    ):
        assert folder in mounted


def test_compose_services_point_data_folders_at_their_volumes():
    services = compose()["services"]
    pgdata = services["postgres"]["environment"]["PGDATA"]
    assert pgdata.startswith("/var/lib/postgresql/data")
    mlflow = services["mlflow"]["environment"]
    assert mlflow["MLFLOW_ARTIFACTS_DESTINATION"] == "/data/mlflow-artifacts"
    for name in ("ray-head", "ray-worker"):
        assert services[name]["environment"]["ROPENOPE_HOME"] == "/data/runs"


def test_compose_worker_reserves_gpus_and_scales():
    worker = compose()["services"]["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    # `--scale ray-worker=N` needs no fixed name and no published port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["RAY_GPU_CLAIM_DIR"] == "/data/gpu-claims"


def test_compose_nodes_get_the_sweep_environment():
    services = compose()["services"]
    for name in ("ray-head", "ray-worker"):
        env = services[name]["environment"]
        assert env["ROPENOPE_STORAGE"].startswith("postgresql+psycopg://")
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["RAY_AUTH_MODE"] == "token"
    assert services["ray-worker"]["environment"]["RAY_HEAD_ADDRESS"] == "ray-head:6379"
    backend = services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert backend.startswith("postgresql+psycopg://") and backend.endswith("${MLFLOW_DB:-mlflow}")


def test_compose_postgres_has_a_health_check_the_others_wait_for():
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in ("mlflow", "ray-head", "optuna-dashboard"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"


SECRET_KEY = re.compile(r"PASSWORD|TOKEN|SECRET", re.I)
URL_CREDENTIALS = re.compile(r"://[^/@\s]*:([^/@\s]+)@")


def test_compose_writes_no_secret():
    data = compose()
    for name, service in data["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_KEY.search(key):
                assert VAR.fullmatch(str(value)), f"{name}.{key} must be a ${{VAR}} reference"
    for text in strings(data):
        for password in URL_CREDENTIALS.findall(text):
            assert VAR.fullmatch(password), f"a password written in {text!r}"
    raw = COMPOSE.read_text()
    for key, value in env_example().items():
        if SECRET_KEY.search(key):
            assert value not in raw


def test_compose_env_example_defines_every_variable_and_env_is_ignored():
    used = set(VAR.findall(COMPOSE.read_text()))
    defined = env_example()
    missing = sorted({name for name, _, _ in used} - set(defined))
    assert not missing, f".env.example lacks {missing}"
    # Every required variable resolves from the example alone.
    interpolate(COMPOSE.read_text(), defined)
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
    assert ".env" in (REPO / ".dockerignore").read_text().splitlines()


# -- the scripts ---------------------------------------------------------------------


def run_script(name: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(DEPLOY / name)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("script", "needs"),
    [
        ("postgres.sh", "PGDATA POSTGRES_USER POSTGRES_PASSWORD"),
        ("mlflow.sh", "MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION"),
        ("ray-worker.sh", "RAY_HEAD_ADDRESS"),
        ("optuna-dashboard.sh", "ROPENOPE_STORAGE"),
    ],
)
def test_deploy_script_names_the_settings_it_lacks(script, needs):
    done = run_script(script, {})
    assert done.returncode == 1
    assert f"set {needs}" in done.stderr


@pytest.fixture
def fake_ray(tmp_path: Path) -> Path:
    """A `ray` that reports what it was started with, then waits like `ray start --block`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ray = bin_dir / "ray"
    ray.write_text(
        '#!/bin/bash\necho "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES ray $*"\nsleep 60\n'
    )
    ray.chmod(0o755)
    return bin_dir


def start_worker(fake_ray: Path, claims: Path, per_worker: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", str(DEPLOY / "ray-worker.sh")],
        env={
            "PATH": f"{fake_ray}:{os.environ['PATH']}",
            "RAY_HEAD_ADDRESS": "head:6379",
            "RAY_GPU_COUNT": "4",
            "RAY_GPUS_PER_WORKER": per_worker,
            "RAY_GPU_CLAIM_DIR": str(claims),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_deploy_workers_claim_distinct_gpus_until_none_is_left(fake_ray, tmp_path):
    claims = tmp_path / "claims"
    workers = []
    try:
        seen = []
        for _ in range(2):
            worker = start_worker(fake_ray, claims, "2")
            workers.append(worker)
            seen.append(worker.stdout.readline().split())
        assert seen == [
            ["CUDA_VISIBLE_DEVICES=0,1", "ray", "start", "--block", "--disable-usage-stats",
             "--address", "head:6379", "--num-gpus", "2"],
            ["CUDA_VISIBLE_DEVICES=2,3", "ray", "start", "--block", "--disable-usage-stats",
             "--address", "head:6379", "--num-gpus", "2"],
        ]  # fmt: skip
        third = start_worker(fake_ray, claims, "2")
        workers.append(third)
        assert third.wait(timeout=30) == 1
        assert "every GPU of this host is taken" in third.stderr.read()

        # A worker that stops frees its GPUs for the next one: no stale claim.
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait(timeout=10)
        fourth = start_worker(fake_ray, claims, "2")
        workers.append(fourth)
        assert fourth.stdout.readline().startswith("CUDA_VISIBLE_DEVICES=0,1 ")
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)


def test_deploy_worker_with_all_gpus_leaves_them_to_ray(fake_ray, tmp_path):
    worker = start_worker(fake_ray, tmp_path / "claims", "all")
    try:
        line = worker.stdout.readline().split()
        assert line[0] == "CUDA_VISIBLE_DEVICES="
        assert "--num-gpus" not in line
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)


def test_compose_every_service_has_a_health_check():
    for name, service in compose()["services"].items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"


def test_compose_services_run_as_a_non_root_user():
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.M)
    assert users and users[-1] not in ("root", "0")  # the image's services
    for name, service in compose()["services"].items():
        user = service.get("user")
        if "image" in service and "build" not in service:  # a third-party image: say who
            assert user and user not in ("root", "0"), f"{name} runs as root"
        else:  # the ropenope image: its USER, unless overridden
            assert user not in ("root", "0"), f"{name} runs as root"


@pytest.mark.parametrize(
    ("script", "variable", "env"),
    [
        ("postgres.sh", "POSTGRES_PASSWORD", {"PGDATA": "/nonexistent", "POSTGRES_USER": "u"}),
        ("ray-head.sh", "RAY_AUTH_TOKEN", {}),
        ("ray-worker.sh", "RAY_AUTH_TOKEN", {"RAY_HEAD_ADDRESS": "head:6379"}),
    ],
)
def test_deploy_scripts_refuse_the_placeholder_secrets_of_env_example(script, variable, env):
    placeholder = env_example()[variable]
    assert "change-me" in placeholder
    done = run_script(script, {**env, variable: placeholder})
    assert done.returncode == 1
    assert variable in done.stderr and ".env" in done.stderr


@pytest.mark.parametrize("script", ["mlflow.sh", "optuna-dashboard.sh"])
def test_deploy_scripts_refuse_a_placeholder_password_inside_a_store_url(script, tmp_path):
    url = f"postgresql+psycopg://u:{env_example()['POSTGRES_PASSWORD']}@db:5432/x"
    env = {"MLFLOW_BACKEND_STORE_URI": url, "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path)}
    env["ROPENOPE_STORAGE"] = url
    done = run_script(script, env)
    assert done.returncode == 1 and "placeholder" in done.stderr


def test_deploy_scripts_never_put_a_store_url_on_a_command_line():
    # `ps` shows every process's arguments to every user of the host.
    for name in ("mlflow.sh", "optuna-dashboard.sh"):
        text = (DEPLOY / name).read_text()
        for line in text.splitlines():
            if line.lstrip().startswith("exec "):
                assert "STORE_URI" not in line and "ROPENOPE_STORAGE" not in line, line


_PG_ENV = {
    "PGDATA": "/nonexistent",
    "POSTGRES_USER": "boot",
    "POSTGRES_PASSWORD": "x",
    "OPTUNA_DB_USER": "o",
    "OPTUNA_DB_PASSWORD": "x",
    "MLFLOW_DB_USER": "m",
    "MLFLOW_DB_PASSWORD": "x",
    "DASHBOARD_DB_USER": "d",
    "DASHBOARD_DB_PASSWORD": "x",
}
_MLFLOW_ENV = {"MLFLOW_BACKEND_STORE_URI": "sqlite:///x.db", "MLFLOW_ARTIFACTS_DESTINATION": "a"}
_RUN_MARKER = "$(touch {marker})"


@pytest.mark.parametrize(
    ("script", "env", "message"),
    [
        (
            "ray-worker.sh",
            {
                "RAY_HEAD_ADDRESS": "h:1",
                "RAY_GPU_COUNT": "4",
                "RAY_GPUS_PER_WORKER": "PATH[" + _RUN_MARKER + "]",
            },
            "RAY_GPUS_PER_WORKER=",
        ),
        (
            "ray-worker.sh",
            {
                "RAY_HEAD_ADDRESS": "h:1",
                "RAY_GPUS_PER_WORKER": "1",
                "RAY_GPU_COUNT": "PATH[" + _RUN_MARKER + "]",
            },
            "RAY_GPU_COUNT=",
        ),
        ("ray-head.sh", {"RAY_GCS_PORT": "6379" + _RUN_MARKER}, "RAY_GCS_PORT="),
        ("postgres.sh", {**_PG_ENV, "POSTGRES_PORT": "5432" + _RUN_MARKER}, "POSTGRES_PORT="),
        ("postgres.sh", {**_PG_ENV, "POSTGRES_PORT": "70000"}, "not a port number"),
        (
            "postgres.sh",
            {**_PG_ENV, "OPTUNA_DB": 'optuna"; DROP DATABASE mlflow; --'},
            "OPTUNA_DB=",
        ),
        ("postgres.sh", {**_PG_ENV, "DASHBOARD_DB_USER": "d' OR '1"}, "DASHBOARD_DB_USER="),
        ("postgres.sh", {**_PG_ENV, "OPTUNA_DB_USER": "boot"}, "must all differ"),
        ("postgres.sh", {**_PG_ENV, "MLFLOW_DB": "optuna"}, "must differ"),
        ("mlflow.sh", {**_MLFLOW_ENV, "MLFLOW_PORT": "5000 --app-name x"}, "MLFLOW_PORT="),
        ("mlflow.sh", {**_MLFLOW_ENV, "MLFLOW_WORKERS": "2" + _RUN_MARKER}, "MLFLOW_WORKERS="),
        (
            "optuna-dashboard.sh",
            {"ROPENOPE_STORAGE": "sqlite:///x.db", "OPTUNA_DASHBOARD_PORT": "0"},
            "OPTUNA_DASHBOARD_PORT=",
        ),
    ],
)
def test_deploy_scripts_refuse_bad_numbers_and_names_from_env_before_using_them(
    script, env, message, tmp_path
):
    """Issue 21: .env values went into bash arithmetic (which runs ``x[$(command)]``) and
    into SQL. Each script now checks them first and stops with one line."""
    marker = tmp_path / "pwned"
    env = {k: v.replace("{marker}", str(marker)) for k, v in env.items()}
    done = run_script(script, env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert message in done.stderr and "error:" in done.stderr, done.stderr
    assert not marker.exists()


def test_compose_gives_each_service_its_own_database_role():
    """The superuser bootstraps; the sweeps, MLflow and optuna-dashboard each connect as
    their own role (deploy/roles.sql); MLflow runs its basic-auth app, job execution off."""
    services = compose()["services"]
    users = {
        "ray-head": services["ray-head"]["environment"]["ROPENOPE_STORAGE"],
        "ray-worker": services["ray-worker"]["environment"]["ROPENOPE_STORAGE"],
        "mlflow": services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"],
        "optuna-dashboard": services["optuna-dashboard"]["environment"]["ROPENOPE_STORAGE"],
    }
    role = {k: re.match(r"postgresql\+psycopg://\$\{(\w+)", v).group(1) for k, v in users.items()}
    assert role == {
        "ray-head": "OPTUNA_DB_USER",
        "ray-worker": "OPTUNA_DB_USER",
        "mlflow": "MLFLOW_DB_USER",
        "optuna-dashboard": "DASHBOARD_DB_USER",
    }
    assert (
        "POSTGRES_PASSWORD" not in COMPOSE.read_text().split("services:")[1].split("mlflow:")[1]
    )  # no service but postgres itself gets the superuser's password
    mlflow_env = services["mlflow"]["environment"]
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in mlflow_env
    script = (DEPLOY / "mlflow.sh").read_text()
    assert (
        "--app-name basic-auth" in script and "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in script
    )
    for node in ("ray-head", "ray-worker"):
        assert "MLFLOW_TRACKING_PASSWORD" in services[node]["environment"]
