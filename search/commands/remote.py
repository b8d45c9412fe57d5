"""Sweeps on a Ray cluster through the Ray Jobs API.

``ropenope submit CONFIG --address http://HEAD:8265`` sends the sweep to the cluster as
a Ray Job instead of running the driver here. The job's entrypoint is the same
``ropenope submit CONFIG ...`` without ``--address``: Ray's job supervisor runs it on
the head node, where ``ray.init()`` attaches to the cluster through ``RAY_ADDRESS``.

What runs there is this project folder, uploaded as the job's ``working_dir`` (less
``.git``, ``.venv``, ``runs``, ``.env`` and caches), so the cluster runs exactly the code
and sweep files you submit; Ray puts the folder first on ``PYTHONPATH``, ahead of the
copy installed in the image. The sweep file must lie inside that folder.

The stores come from the cluster's environment (docker-compose.yml sets
``ROPENOPE_STORAGE`` and ``MLFLOW_TRACKING_URI`` on every Ray node). ``--storage URL``,
or either variable set in your shell, is passed to the job instead and overrides them.
Ray's token authentication: ``$RAY_AUTH_TOKEN`` (or the file ``$RAY_AUTH_TOKEN_PATH``)
is sent with every request.

``ropenope logs JOB [--follow]`` prints (or follows) a job's output and
``ropenope job-status [JOB]`` shows one job or lists them. ``ropenope status STUDY
--address http://HEAD:8265`` (or ``status JOB``) shows the study's latest sweep job and
the study itself, read inside the cluster by a short ``ropenope status --json`` job, so
the cluster's database need not be reachable from here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search.errors import RemoteError
from search.jobs import (
    ADDRESS_ENV,
    DEFAULT_ADDRESS,
    JOB_ID_PREFIX,
    TERMINAL,
    call,
    follow,
    format_job,
    is_jobs_address,
    job_client,
    job_dict,
    resolve_address,
    run_job_status,
    run_logs,
)
from space.secrets import contains_secret, redact_url

STORAGE_ENV = "ROPENOPE_STORAGE"  # the study's SQLAlchemy URL (read by search/study.py)
TRACKING_ENV = "MLFLOW_TRACKING_URI"
GIT_COMMIT_ENV = "ROPENOPE_GIT_COMMIT"  # the uploaded folder has no .git (tracking/ reads it)

# Never uploaded: version control, environments, local results, secrets, caches.
WORKING_DIR_EXCLUDES = (
    ".git",
    ".venv",
    "venv",
    "runs",
    ".env",
    "**/__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
)
META_STUDY = "ropenope_study"
META_QUERY = "ropenope_query"  # set on the short jobs `status` runs, not on sweeps
QUERY_TIMEOUT_S = 120.0

# Options of `ropenope submit` that concern the submission, not the sweep: not
# forwarded to the job's own `ropenope submit`.
_NOT_FORWARDED = {"help", "config", "address", "storage", "working_dir", "follow", "submit_parser"}


# -- the CLI ---------------------------------------------------------------------------


def add_submit_options(p: argparse.ArgumentParser) -> None:
    """Options of ``ropenope submit`` that only a remote submission uses."""
    for action in p._actions:
        if action.dest == "address":
            action.help = (
                "Ray cluster: http://HEAD:8265 submits the sweep as a Ray Job (the Jobs API; "
                "see `ropenope logs`); HOST:PORT or ray://... runs the driver here against "
                "that cluster (default: start Ray locally)"
            )
    p.add_argument(
        "--working-dir",
        type=Path,
        help="with --address http://...: the folder uploaded as the job's code "
        "(default: the project folder holding the sweep file)",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="with --address http://...: print the job's output until it ends",
    )
    p.set_defaults(submit_parser=p)  # submit_job forwards this parser's sweep options


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``ropenope logs`` and ``ropenope job-status``; the remote options of ``submit``."""
    if "submit" in sub.choices:
        add_submit_options(sub.choices["submit"])
    address_help = f"Ray Jobs API address (default: ${ADDRESS_ENV}, else {DEFAULT_ADDRESS})"
    p = sub.add_parser(
        "logs",
        help="print or follow the output of a sweep submitted as a Ray Job",
        description="Print the output of a Ray Job. Example: "
        "ropenope logs raysubmit_XYZ --address http://127.0.0.1:8265 --follow",
    )
    p.add_argument("job", help="job id, as printed by `ropenope submit --address`")
    p.add_argument("--address", help=address_help)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")

    p = sub.add_parser(
        "job-status",
        help="status of a sweep submitted as a Ray Job (all jobs without JOB)",
        description="Show a Ray Job's status, or list the cluster's jobs. Example: "
        "ropenope job-status raysubmit_XYZ --address http://127.0.0.1:8265",
    )
    p.add_argument("job", nargs="?", help="job id (default: list every job)")
    p.add_argument("--address", help=address_help)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    """``ropenope logs`` or ``ropenope job-status``."""
    return run_logs(args) if args.command == "logs" else run_job_status(args)


def submit_job(args: argparse.Namespace) -> int:
    """``ropenope submit CONFIG --address http://HEAD:8265``: submit, print how to follow."""
    from space.schema import load_config

    address = resolve_address(args.address)
    config = Path(args.config).expanduser().resolve()
    if not config.is_file():
        raise RemoteError(f"no sweep file {args.config}")
    root = (args.working_dir or project_root(config)).expanduser().resolve()
    try:
        relative = config.relative_to(root)
    except ValueError:
        raise RemoteError(
            f"the sweep file {config} is outside the uploaded folder {root}: "
            "move it inside, or pass --working-dir"
        ) from None
    sweep = load_config(config)  # a bad file fails here, before anything is uploaded
    study = args.study or sweep.study.name

    options = forwarded(args, args.submit_parser)
    entrypoint = shlex.join(["ropenope", "submit", relative.as_posix(), *options])
    env_vars, notes = job_env(args.storage, os.environ, root)
    runtime_env = {
        "working_dir": str(root),
        "excludes": list(WORKING_DIR_EXCLUDES),
        "env_vars": env_vars,
    }
    client = job_client(address)
    job_id = call(
        client.submit_job,
        entrypoint=entrypoint,
        runtime_env=runtime_env,
        metadata={META_STUDY: study, "ropenope_config": relative.as_posix()},
    )
    print(f"submitted study {study} as Ray job {job_id} to {address}")
    print(f"  code: {root} -> `{entrypoint}`")
    for note in notes:
        print(f"  {note}")
    flag = f" --address {address}"
    print(f"  follow:  ropenope logs {job_id}{flag} --follow")
    print(f"  status:  ropenope status {study}{flag}")
    sys.stdout.flush()
    if not args.follow:
        return 0
    return 0 if follow(client, job_id) == "SUCCEEDED" else 1


def run_study_status(args: argparse.Namespace) -> int:
    """``ropenope status STUDY|JOB --address http://HEAD:8265``: the study's latest sweep
    job, then the study as the cluster sees it (its own storage and environment)."""
    from search.status import format_summary

    client = job_client(resolve_address(args.address))
    job = sweep_job(client, args.study)
    study = job["metadata"].get(META_STUDY) if job else args.study
    if not study:
        raise RemoteError(f"job {args.study} is not a ropenope sweep (no {META_STUDY} metadata)")
    summary, problem = query_study(client, study, args.storage)
    if args.json:
        print(json.dumps({"job": job, "study": summary, "error": problem}, indent=2, default=str))
    else:
        if job:
            print(format_job(job))
        else:
            print(f"no sweep job for study {study} on this cluster")
        print(format_summary(summary) if summary else f"study {study}: {problem}")
    return 0 if summary else 1


def sweep_job(client: Any, study_or_job: str) -> dict[str, Any] | None:
    """The job itself when given a job id, else the latest sweep job of that study."""
    if study_or_job.startswith(JOB_ID_PREFIX):
        return job_dict(call(client.get_job_info, study_or_job))
    jobs = [
        job
        for job in map(job_dict, call(client.list_jobs))
        if job["metadata"].get(META_STUDY) == study_or_job and META_QUERY not in job["metadata"]
    ]
    return max(jobs, key=lambda j: j.get("start_time") or 0) if jobs else None


def query_study(
    client: Any, study: str, storage: str | None, timeout_s: float = QUERY_TIMEOUT_S
) -> tuple[dict[str, Any] | None, str | None]:
    """Run ``ropenope status STUDY --json`` as a short job on the cluster (its installed
    ropenope, its stores, unless ``--storage`` or the shell's ``$ROPENOPE_STORAGE``
    names another) and return the parsed summary, or None and why not. The job is
    deleted afterwards so it does not clutter ``job-status``."""
    command = ["ropenope", "status", study, "--json"]
    env, _ = job_env(storage, os.environ, root=None)  # no code is uploaded: no commit
    job_id = call(
        client.submit_job,
        entrypoint=shlex.join(command),
        runtime_env={"env_vars": env} if env else None,
        metadata={META_STUDY: study, META_QUERY: "status"},
    )
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        status = str(call(client.get_job_status, job_id))
        if status in TERMINAL:
            break
        time.sleep(0.5)
    logs = call(client.get_job_logs, job_id)
    if status in TERMINAL:
        with contextlib.suppress(Exception):  # a leftover query job is harmless
            client.delete_job(job_id)
    else:
        return None, f"the status job {job_id} did not finish in {timeout_s:.0f} s"
    summary = parse_json_object(logs)
    if status == "SUCCEEDED" and summary is not None:
        return summary, None
    tail = logs.strip().splitlines()[-3:]
    return None, f"the status job {job_id} {status}: " + " | ".join(tail)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object that starts a line of ``text`` (job logs may hold other
    lines before it, e.g. warnings)."""
    decoder = json.JSONDecoder()
    start = 0
    for line in text.splitlines(keepends=True):
        if line.startswith("{"):
            try:
                value, _ = decoder.raw_decode(text[start:])
            except json.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                return value
        start += len(line)
    return None


# -- pieces ----------------------------------------------------------------------------


def project_root(config: Path) -> Path:
    """The nearest folder above the sweep file that holds ``pyproject.toml`` (this
    project's checkout), else the current folder."""
    for folder in config.parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd()


def forwarded(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The sweep options given to this ``submit``, as arguments for the job's own
    ``ropenope submit``: every option of the parser whose value is not its default,
    except those about the submission itself."""
    out: list[str] = []
    for action in parser._actions:
        if action.dest in _NOT_FORWARDED or not action.option_strings:
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default or value is None:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            out.append(flag)
        elif isinstance(value, list):
            for item in value:
                out += [flag, str(item)]
        else:
            out += [flag, str(value)]
    return out


def job_env(
    storage: str | None, environ: Mapping[str, str], root: Path | None
) -> tuple[dict[str, str], list[str]]:
    """Variables for the job (and every trial it starts) plus notes for the user: the
    storage from ``--storage`` or the shell, the tracking URI from the shell, the commit
    of the uploaded code under ``root`` (None: nothing uploaded). Unset ones are left to
    the cluster's own environment."""
    env: dict[str, str] = {}
    notes: list[str] = []
    # A job's environment is shown by the Jobs API and the Ray dashboard: a URL with a
    # password is never sent (the cluster's nodes hold their own, see docker-compose.yml).
    if storage and contains_secret(storage):
        raise RemoteError(
            f"--storage {redact_url(storage)} holds a password, which a Ray job would show "
            f"to anyone who can list jobs: leave it to the cluster's {STORAGE_ENV} (set on "
            "its nodes), or use a URL without a password (a pgpass file on the nodes)"
        )
    if storage:
        env[STORAGE_ENV] = storage
        notes.append(f"{STORAGE_ENV} from --storage (overrides the cluster's)")
    else:
        _forward_shell_store(STORAGE_ENV, environ, env, notes)
    _forward_shell_store(TRACKING_ENV, environ, env, notes)
    if not env:
        notes.append(f"stores: the cluster's {STORAGE_ENV} and {TRACKING_ENV}")
    for name in (STORAGE_ENV, TRACKING_ENV):
        host = _url_host(env.get(name, ""))
        if host in ("127.0.0.1", "localhost", "::1"):
            notes.append(
                f"warning: {name} points at {host}, which each Ray node resolves to itself"
            )
    commit = git_commit(root) if root is not None else None
    if commit:
        env[GIT_COMMIT_ENV] = commit
    return env, notes


def _forward_shell_store(
    name: str, environ: Mapping[str, str], env: dict[str, str], notes: list[str]
) -> None:
    """A store URL set in the user's shell goes to the job, unless it holds a password."""
    value = environ.get(name)
    if not value:
        return
    if contains_secret(value):
        notes.append(f"{name} of your shell holds a password: not sent, the cluster's is used")
    else:
        env[name] = value
        notes.append(f"{name} from your environment (overrides the cluster's)")


def git_commit(root: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def _url_host(url: str) -> str | None:
    if "://" not in url:
        return None
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


__all__ = [
    "RemoteError",
    "add_parser",
    "add_submit_options",
    "is_jobs_address",
    "run",
    "run_job_status",
    "run_logs",
    "run_study_status",
    "submit_job",
]
