"""deploy/mlflow.sh with MLflow's basic-auth app, for real (issue 21: MLflow ran
unauthenticated with job execution on). The script runs as compose runs it, with a SQLite
backend instead of PostgreSQL: every request but /health needs the admin's password, the
sweeps' client logs in through MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, and the
server runs with job execution off."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from engines import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ADMIN_PASSWORD = "adm1n-pw/with space"


def _status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow
def test_deploy_mlflow_requires_a_login_and_runs_no_jobs(tmp_path, template_db, monkeypatch):
    from mlflow import MlflowClient

    db = tmp_path / "mlflow.db"
    shutil.copyfile(template_db, db)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ROPENOPE_"))} | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{db}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-test-secret-key",
        "MLFLOW_AUTH_DIR": str(tmp_path / "auth"),
    }
    log = (tmp_path / "mlflow.log").open("wb")
    proc = subprocess.Popen(
        ["bash", str(DEPLOY / "mlflow.sh")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not (_listening(port) and _status(f"{base}/health") == 200):
            assert proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "mlflow.log").read_text()[-3000:]
            time.sleep(0.5)
        api = f"{base}/api/2.0/mlflow/experiments/search?max_results=5"
        assert _status(api) == 401
        assert _status(api, "admin", "wrong") == 401
        assert _status(api, "admin", ADMIN_PASSWORD) == 200

        # The sweeps' client: credentials from the environment, never in the URL.
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        client = MlflowClient(tracking_uri=base)
        experiment = client.create_experiment("auth-check")
        assert client.get_experiment(experiment).name == "auth-check"

        config = tmp_path / "auth" / "basic_auth.ini"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert ADMIN_PASSWORD not in config.read_text()  # it stays in the environment
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert b"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in environ
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"basic-auth" in cmdline
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
