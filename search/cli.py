"""The `ropenope` command line: the parser and one lazy dispatch table.

Each command lives in a module of :mod:`search.commands` that defines its arguments
(``add_parser``) and its handler. :data:`COMMANDS` maps a command to its handler as
``"module:function"``; :func:`main` imports that handler only when the command runs, and
the command modules import the engines (torch, Ray, MLflow, Optuna) only inside their
handlers, so ``ropenope --help`` and the parser load none of them. Every command is shown
in the README with an example.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from search.commands import dashboard, export, gc, remote, report, space, sweep, tracking, train
from search.errors import CliError
from space.errors import ConfigError, InvalidCandidate
from space.secrets import RedactedStream

# command -> its handler, "module:function", imported when the command runs.
COMMANDS: dict[str, str] = {
    "space": "search.commands.space:run",
    "train": "search.commands.train:run",
    "submit": "search.commands.sweep:run_submit",
    "resume": "search.commands.sweep:run_resume",
    "status": "search.commands.sweep:run_status",
    "logs": "search.commands.remote:run",
    "job-status": "search.commands.remote:run",
    "report": "search.commands.report:run",
    "export": "search.commands.export:run",
    "gc": "search.commands.gc:run",
    "dashboard": "search.commands.dashboard:run",
    "pareto": "search.commands.tracking:run_pareto",
    "sync": "search.commands.tracking:run_sync",
    "ui": "search.commands.tracking:run_ui",
}


def handler(command: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs ``command``, imported now."""
    module, _, function = COMMANDS[command].partition(":")
    return getattr(importlib.import_module(module), function)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ropenope",
        description="Architecture search and ablation for long-context attention.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    space.add_parser(sub)
    train.add_parser(sub)
    report.add_parser(sub)
    export.add_parser(sub)
    gc.add_parser(sub)
    dashboard.add_parser(sub)
    tracking.add_parsers(sub)  # pareto, sync, ui
    sweep.add_parsers(sub)  # submit, resume, status
    remote.add_parser(sub)  # logs, job-status; submit --address http://... as a Ray Job
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = handler(args.command)
    # Every line the command prints passes the one redaction (no URL password on screen).
    shown_out, shown_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactedStream(shown_out), RedactedStream(shown_err)
    try:
        return _run(args, run)
    finally:
        with contextlib.suppress(BrokenPipeError):  # the reader left: nothing more to show
            sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = shown_out, shown_err


def _run(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    try:
        return run(args)
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
