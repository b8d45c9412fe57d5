"""The `ropenope` command line. Every command is shown in the README with an example."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence

from search import dashboard, export_cmd, gc_cmd, report_cmd, tracking_cmd
from search.errors import CliError
from space.errors import ConfigError, InvalidCandidate
from space.secrets import RedactedStream


def _cmd_space(args: argparse.Namespace) -> int:
    from space.report import describe_space, format_space
    from space.schema import load_config

    config = load_config(args.config)
    for path, message in config.warnings:
        print(f"ropenope space: warning: {path}: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps(describe_space(config), indent=2, default=str))
    else:
        print(format_space(config))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from search import train_cmd

    return train_cmd.run(args)


# -- sweeps: submit, resume, status --------------------------------------------------


def _print_sweep_summary(summary) -> None:
    counts = "  ".join(f"{k} {v}" for k, v in summary.counts.items() if v)
    print(f"study {summary.study}: {counts}  (target {summary.target}, {summary.storage})")
    if summary.pareto is not None:
        print()
        print(tracking_cmd.format_pareto(summary.pareto))
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


# The exit status of a sweep that its failure budget stopped (resources.failures).
EXIT_FAILURE_BUDGET = 3


def _run_sweep(start: Callable[..., object], first: str, **kwargs: object) -> int:
    """Run ``driver.submit`` or ``driver.resume``; print the summary; 130 if interrupted,
    3 (with the one line that says why) if the failure budget stopped it."""
    summary = start(first, **kwargs)
    _print_sweep_summary(summary)
    if summary.stopped:
        print(f"ropenope: {summary.stopped}", file=sys.stderr)
        return EXIT_FAILURE_BUDGET
    return 130 if summary.interrupted else 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from search import driver, jobs, remote

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


def _cmd_resume(args: argparse.Namespace) -> int:
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


def _cmd_status(args: argparse.Namespace) -> int:
    from search import jobs, remote
    from search.status import format_summary, summarize
    from search.study import load_existing

    if jobs.is_jobs_address(args.address) or args.study.startswith(jobs.JOB_ID_PREFIX):
        return remote.run_study_status(args)

    opened = load_existing(args.study, args.storage)
    data = summarize(opened.study)
    print(json.dumps(data, indent=2, default=str) if args.json else format_summary(data))
    return 0


def _add_sweep_parsers(sub: argparse._SubParsersAction) -> None:
    storage_help = (
        "SQLAlchemy URL of the Optuna storage, e.g. postgresql+psycopg://user@host/db "
        "(default: the sweep file's study.storage, else $ROPENOPE_STORAGE, else sqlite "
        "runs/optuna.db)"
    )
    p = sub.add_parser(
        "submit",
        help=COMMANDS["submit"][1],
        description=COMMANDS["submit"][1]
        + ". Example: ropenope submit configs/demo.yaml --trials 12",
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
        help=COMMANDS["resume"][1],
        description=COMMANDS["resume"][1] + ". Example: ropenope resume demo --trials 20",
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
        help=COMMANDS["status"][1],
        description=COMMANDS["status"][1] + ". Example: ropenope status demo --json; "
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


def _cmd_remote(args: argparse.Namespace) -> int:
    from search import remote

    return remote.run(args)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "space": (_cmd_space, "validate a sweep file and show its knobs and preset layer tables"),
    "train": (_cmd_train, "train and score one candidate locally"),
    "submit": (_cmd_submit, "run a sweep: Optuna study in SQL, trials on Ray Tune"),
    "resume": (_cmd_resume, "continue a study after a crash or stop, or add trials to it"),
    "status": (_cmd_status, "trial counts, running trials, best per objective, Pareto set"),
    "logs": (_cmd_remote, "print or follow the output of a sweep submitted as a Ray Job"),
    "job-status": (_cmd_remote, "status of a sweep submitted as a Ray Job (all jobs without JOB)"),
    "report": (report_cmd.run, report_cmd.HELP),
    "export": (export_cmd.run, export_cmd.HELP),
    "gc": (gc_cmd.run, gc_cmd.HELP),
    "dashboard": (dashboard.run, dashboard.HELP),
    **{name: (fn, tracking_cmd.HELP[name]) for name, fn in tracking_cmd.COMMANDS.items()},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ropenope",
        description="Architecture search and ablation for long-context attention.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("space", help=COMMANDS["space"][1], description=COMMANDS["space"][1])
    p.add_argument("config", help="sweep file (YAML)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")

    from search import train_cmd

    train_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    export_cmd.add_parser(sub)
    gc_cmd.add_parser(sub)
    dashboard.add_parser(sub)
    tracking_cmd.add_parsers(sub)  # pareto, sync, ui
    _add_sweep_parsers(sub)
    from search import remote

    remote.add_parser(sub)  # logs, job-status; submit --address http://... as a Ray Job
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command][0]
    # Every line the command prints passes the one redaction (no URL password on screen).
    shown_out, shown_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactedStream(shown_out), RedactedStream(shown_err)
    try:
        return _run(args, handler)
    finally:
        with contextlib.suppress(BrokenPipeError):  # the reader left: nothing more to show
            sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = shown_out, shown_err


def _run(args: argparse.Namespace, handler: Callable[[argparse.Namespace], int]) -> int:
    try:
        return handler(args)
    except (ConfigError, InvalidCandidate, CliError) as err:
        print(f"ropenope {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ropenope {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ropenope space x.yaml | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
