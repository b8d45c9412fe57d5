"""The MLflow UI on a study's store: the URL to open and the ``mlflow ui`` process.

For a tracking server the server is its own UI (only its URL is printed); for a database
store (the embedded SQLite default) ``ropenope ui`` serves ``mlflow ui`` on it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from space.secrets import redact_text, redact_url
from tracking.runs_view import open_study_page, runs_url
from tracking.target import is_remote
from tracking.tracker import Tracker


def ui_url(
    uri: str, host: str = "127.0.0.1", port: int = 5000, experiment_id: str | None = None
) -> str:
    """Where to open the UI: the server itself for a tracking server, else the local UI;
    with ``experiment_id``, the study's runs table (``tracking.runs_view``)."""
    base = uri.rstrip("/") if is_remote(uri) else f"http://{host}:{port}"
    return runs_url(base, experiment_id) if experiment_id else base


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str] | None:
    """The ``mlflow ui`` command line for a database store (None for a tracking server,
    which is its own UI). The store's URI is not on it (a process list would show a
    password): run it with :func:`ui_env` as the environment, which carries it."""
    if is_remote(uri):
        return None
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",  # one person's review: one worker is plenty, and light on a laptop
    ]


def ui_env(uri: str) -> dict[str, str]:
    """The environment for :func:`ui_command`: the store (``MLFLOW_BACKEND_STORE_URI``,
    which MLflow's server reads like its ``--backend-store-uri`` option) and no background
    job runner (MLflow 3 starts a pool of job consumers by default; the UI of a sweep does
    not need them)."""
    return {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def run_ui(tracker: Tracker, host: str = "127.0.0.1", port: int = 5000) -> int:
    """``ropenope ui``: print the URL of the study's experiment and serve the MLflow UI on
    its store until Ctrl-C (for a tracking server, only print its URL)."""
    target = tracker.target
    experiment_id = None
    try:  # the experiment, with the saved view the link opens
        experiment_id = open_study_page(tracker.store)
    except Exception as err:  # the UI can still be opened; say why the link is generic
        print(
            redact_text(f"ropenope ui: could not read {target.shown_uri}: {err}"), file=sys.stderr
        )
    url = ui_url(target.uri, host, port, experiment_id)
    argv = ui_command(target.uri, host, port)
    if argv is None:
        print(f"MLflow UI (tracking server): {redact_url(url)}", flush=True)
        return 0
    print(
        f"MLflow UI for study {target.study!r} on {target.shown_uri}: {url}  (Ctrl-C to stop)",
        flush=True,  # before the server's own output, also into a pipe
    )
    proc = subprocess.Popen(argv, env=ui_env(target.uri))
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
