"""`ropenope submit`, `ropenope resume` and `ropenope status`: run a sweep (here, or as a Ray
Job with ``--address http://HEAD:8265``), continue it, and show where it stands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from search.commands import remote
from search.commands.tracking import format_pareto

HELP = {
    "submit": "run a sweep: Optuna study in SQL, trials on Ray Tune",
    "resume": "continue a study after a crash or stop, or add trials to it",
    "status": "trial counts, running trials, best per objective, Pareto set",
}

# The exit status of a sweep that its failure budget stopped (resources.failures).
EXIT_FAILURE_BUDGET = 3


def add_parsers(sub: argparse._SubParsersAction) -> None:
    storage_help = (
        "SQLAlchemy URL of the Optuna storage, e.g. postgresql+psycopg://user@host/db "
        "(default: the sweep file's study.storage, else $ROPENOPE_STORAGE, else sqlite "
        "runs/optuna.db)"
    )
    p = sub.add_parser(
        "submit",
        help=HELP["submit"],
        description=HELP["submit"] + ". Example: ropenope submit configs/demo.yaml --trials 12",
    )
    p.add_argument("config", help="sweep file (YAML)")
    p.add_argument("--study", help="study name (default: the sweep file's study.name)")
    p.add_argument("--trials", type=int, help="target number of trials (default: study.trials)")
    p.add_argument("--storage", help=storage_help)
    p.add_argument(
        "--allow-space-change",
        action="store_true",
        help="continue an existing study although its search space differs from the file",
    )
    p.add_argument(
        "--no-dedup", action="store_true", help="train a candidate again even if already done"
    )
    p.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    p.add_argument("--quiet", action="store_true", help="no progress display")

    p = sub.add_parser(
        "resume",
        help=HELP["resume"],
        description=HELP["resume"] + ". Example: ropenope resume demo --trials 20",
    )
    p.add_argument("study", help="study name")
    p.add_argument("--trials", type=int, help="raise the study's target number of trials")
    p.add_argument("--storage", help=storage_help)
    p.add_argument(
        "--config", help="sweep file to continue with (default: the one stored in the study)"
    )
    p.add_argument(
        "--allow-space-change",
        action="store_true",
        help="with --config: accept a search space that differs from the study's",
    )
    p.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    p.add_argument("--quiet", action="store_true", help="no progress display")

    p = sub.add_parser(
        "status",
        help=HELP["status"],
        description=HELP["status"] + ". Example: ropenope status demo --json; "
        "on a cluster: ropenope status paper --address http://127.0.0.1:8265",
    )
    p.add_argument("study", help="study name, or the id of a sweep submitted as a Ray Job")
    p.add_argument("--storage", help=storage_help)
    p.add_argument(
        "--address",
        help="Ray Jobs API http://HEAD:8265: show the study's sweep job and read the study "
        "inside the cluster (default with a job id: $RAY_API_SERVER_ADDRESS)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _print_sweep_summary(summary) -> None:
    counts = "  ".join(f"{k} {v}" for k, v in summary.counts.items() if v)
    print(f"study {summary.study}: {counts}  (target {summary.target}, {summary.storage})")
    if summary.pareto is not None:
        print()
        print(format_pareto(summary.pareto))
    for warning in getattr(summary, "warnings", []):
        print(f"warning: {warning}")
    if summary.seed_plan is not None:
        from search.seed_rounds import format_decisions

        print()
        print("\n".join(format_decisions(summary.seed_plan, summary.runs)))
    if summary.decision_accuracy is not None:
        print()
        print("scale ladder, decision accuracy (95% bootstrap intervals over seeds):")
        print("\n".join(f"  {line}" for line in summary.decision_accuracy.lines()))
    if summary.ui:
        print()
        print(summary.ui)


def _run_sweep(start: Callable[..., object], first: str, **kwargs: object) -> int:
    """Run ``driver.submit`` or ``driver.resume``; print the summary; 130 if interrupted,
    3 (with the one line that says why) if the failure budget stopped it."""
    summary = start(first, **kwargs)
    _print_sweep_summary(summary)
    if summary.stopped:
        print(f"ropenope: {summary.stopped}", file=sys.stderr)
        return EXIT_FAILURE_BUDGET
    return 130 if summary.interrupted else 0


def run_submit(args: argparse.Namespace) -> int:
    from search import driver, jobs

    if jobs.is_jobs_address(args.address):  # http://HEAD:8265: submit as a Ray Job
        return remote.submit_job(args)
    return _run_sweep(
        driver.submit,
        args.config,
        study_name=args.study,
        storage=args.storage,
        trials=args.trials,
        allow_space_change=args.allow_space_change,
        dedup=False if args.no_dedup else None,
        address=args.address,
        progress=not args.quiet,
    )


def run_resume(args: argparse.Namespace) -> int:
    from search import driver

    return _run_sweep(
        driver.resume,
        args.study,
        storage=args.storage,
        config_path=args.config,
        trials=args.trials,
        allow_space_change=args.allow_space_change,
        address=args.address,
        progress=not args.quiet,
    )


def run_status(args: argparse.Namespace) -> int:
    from search import jobs
    from search.status import format_summary, summarize
    from search.study import load_existing

    if jobs.is_jobs_address(args.address) or args.study.startswith(jobs.JOB_ID_PREFIX):
        return remote.run_study_status(args)

    opened = load_existing(args.study, args.storage)
    data = summarize(opened.study)
    print(json.dumps(data, indent=2, default=str) if args.json else format_summary(data))
    return 0
