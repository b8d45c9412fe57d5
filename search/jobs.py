"""The Ray Jobs API as the CLI uses it: the address, Ray's token authentication, a client,
the jobs' status and logs (``ropenope logs``, ``ropenope job-status``), as JSON-ready
dicts and text. Submitting a sweep is :mod:`search.commands.remote`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search.errors import RemoteError

ADDRESS_ENV = "RAY_API_SERVER_ADDRESS"  # Ray's own variable for the Jobs API address
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
JOBS_SCHEMES = ("http://", "https://")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
JOB_ID_PREFIX = "raysubmit_"  # the ids the Jobs API gives submissions


def is_jobs_address(address: str | None) -> bool:
    """An ``http(s)://`` address is the Jobs API (remote submission); anything else
    (``host:6379``, ``ray://``, ``auto``) is for ``ray.init`` in a local driver."""
    return bool(address) and address.startswith(JOBS_SCHEMES)


def resolve_address(address: str | None) -> str:
    address = (address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS).rstrip("/")
    if not is_jobs_address(address):
        raise RemoteError(f"expected the Jobs API address http://HOST:8265, got {address!r}")
    return address


def run_logs(args: argparse.Namespace) -> int:
    client = job_client(resolve_address(args.address))
    if not args.follow:
        sys.stdout.write(call(client.get_job_logs, args.job))
        return 0
    status = follow(client, args.job)
    return 0 if status == "SUCCEEDED" else 1


def run_job_status(args: argparse.Namespace) -> int:
    client = job_client(resolve_address(args.address))
    if args.job:
        info = job_dict(call(client.get_job_info, args.job))
        print(json.dumps(info, indent=2) if args.json else format_job(info))
        return 0
    jobs = sorted(
        (job_dict(j) for j in call(client.list_jobs)),
        key=lambda j: j.get("start_time") or 0,
    )
    if args.json:
        print(json.dumps(jobs, indent=2))
    elif not jobs:
        print("no jobs")
    else:
        for job in jobs:
            print(
                f"{job['job_id']:<28} {job['status']:<10} {when(job.get('start_time'))}  "
                f"{job.get('entrypoint', '')}"
            )
    return 0


def auth_headers(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Ray's token authentication, from ``$RAY_AUTH_TOKEN`` or ``$RAY_AUTH_TOKEN_PATH``."""
    token = environ.get("RAY_AUTH_TOKEN", "").strip()
    path = environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as err:
            raise RemoteError(f"cannot read RAY_AUTH_TOKEN_PATH {path}: {err}") from None
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers() or None)
    except Exception as err:  # connection refused, auth, version: the user must know which
        raise RemoteError(f"cannot reach the Ray Jobs API at {address}: {err}") from None


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except RuntimeError as err:  # the SDK's error for any non-200 answer (unknown job, ...)
        raise RemoteError(str(err).strip()) from None


def follow(client: Any, job_id: str) -> str:
    """Print the job's output as it comes until the job ends; returns its final status."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    call(client.get_job_status, job_id)  # an unknown job fails here, clearly
    asyncio.run(tail())
    # The log stream closes when the job ends; its status may lag a moment behind.
    for _ in range(30):
        status = str(call(client.get_job_status, job_id))
        if status in TERMINAL:
            break
        time.sleep(1)
    info = job_dict(call(client.get_job_info, job_id))
    print(f"job {job_id}: {info['status']}" + (f" ({info['message']})" if info["message"] else ""))
    return info["status"]


def job_dict(info: Any) -> dict[str, Any]:
    """The fields of a Ray ``JobDetails``/``JobInfo`` that matter here, JSON-ready."""
    status = getattr(info, "status", "")
    return {
        "job_id": getattr(info, "submission_id", None) or getattr(info, "job_id", None),
        "status": str(getattr(status, "value", status)),
        "message": getattr(info, "message", None) or "",
        "entrypoint": getattr(info, "entrypoint", ""),
        "start_time": getattr(info, "start_time", None),
        "end_time": getattr(info, "end_time", None),
        "metadata": dict(getattr(info, "metadata", None) or {}),
        "driver_job_id": getattr(getattr(info, "driver_info", None), "id", None),
        "driver_node_id": getattr(getattr(info, "driver_info", None), "node_id", None),
    }


def format_job(info: Mapping[str, Any]) -> str:
    lines = [f"job {info['job_id']}: {info['status']}"]
    if info["message"]:
        lines.append(f"  message:    {info['message']}")
    lines.append(f"  entrypoint: {info['entrypoint']}")
    lines.append(f"  started:    {when(info['start_time'])}")
    if info["end_time"]:
        lines.append(f"  ended:      {when(info['end_time'])}")
    for key, value in sorted(info["metadata"].items()):
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"
