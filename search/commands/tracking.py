"""`ropenope pareto`, `ropenope sync` and `ropenope ui`: the study's Pareto front and its
MLflow view. The Optuna study is the source of truth; MLflow is rebuilt from it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from search.errors import CliError

HELP = {
    "pareto": "the COMPLETE trials of a study by Pareto rank, with objectives and names",
    "sync": "create or complete the MLflow runs of a study from its Optuna records",
    "ui": "serve the MLflow UI on a study's tracking store and print its URL",
}

_STORAGE_HELP = (
    "Optuna storage URL or SQLite file (default: $ROPENOPE_STORAGE, else runs/optuna.db)"
)
_CONFIG_HELP = (
    "sweep file, for its storage and tracking settings (default: the one stored with the study)"
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pareto",
        help=HELP["pareto"],
        description=f"Print {HELP['pareto']}. "
        "Example: ropenope pareto demo --json  |  ropenope pareto demo --plot front.html",
    )
    p.add_argument("study", help="study name")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON list, one object per trial")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="also draw the front: interactive HTML for .html, else a PNG",
    )
    p.add_argument("--storage", help=_STORAGE_HELP)
    p.add_argument("--config", help=_CONFIG_HELP)

    p = sub.add_parser(
        "sync",
        help=HELP["sync"],
        description=f"{HELP['sync'][0].upper()}{HELP['sync'][1:]} (after MLflow was "
        "down, or into a new tracking server); running it twice changes nothing. "
        "Example: ropenope sync demo --tracking-uri http://127.0.0.1:5000",
    )
    p.add_argument("study", help="study name")
    p.add_argument("--storage", help=_STORAGE_HELP)
    p.add_argument("--config", help=_CONFIG_HELP)
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: the sweep file's, else $MLFLOW_TRACKING_URI, "
        "else runs/mlflow.db)",
    )

    p = sub.add_parser(
        "ui",
        help=HELP["ui"],
        description=f"{HELP['ui'][0].upper()}{HELP['ui'][1:]}; for a tracking server, "
        "print its URL. Example: ropenope ui demo --port 5000",
    )
    p.add_argument("study", nargs="?", help="study name (default: the sweep file's study.name)")
    p.add_argument("--storage", help=_STORAGE_HELP)
    p.add_argument("--config", help=_CONFIG_HELP)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default as for sync)")
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on")
    p.add_argument("--port", type=int, default=5000, help="port to serve on")


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from search.study import load_with_config

    return load_with_config(args.study, args.storage, args.config)


def _tracker(study_name: str, config: Any, uri: str | None) -> Any:
    from tracking.target import tracking_target
    from tracking.tracker import Tracker

    return Tracker(tracking_target(config, study_name, uri=uri))


def run_pareto(args: argparse.Namespace) -> int:
    from search.study_view import study_view
    from tracking.pareto import pareto_of_study
    from tracking.pareto_plots import plot_pareto

    study, _ = _open(args)
    table = pareto_of_study(study_view(study))
    if args.json:
        print(table.to_json())
    elif args.csv:
        sys.stdout.write(table.to_csv())
    else:
        print(format_pareto(table))
    if args.plot is not None:
        if not table.rows:
            raise CliError(f"study {args.study!r} has no COMPLETE trial to plot")
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        path = plot_pareto(table, args.plot)
        print(f"plot: {path}", file=sys.stderr if (args.json or args.csv) else sys.stdout)
    return 0


def format_pareto(table: Any) -> str:
    """The table as aligned text: rank 0 is the front; excluded trials last."""
    if not table.rows:
        return f"{table.title}: no COMPLETE trials yet"
    arrows = {
        n: "(max)" if d == "maximize" else "(min)"
        for n, d in zip(table.objective_names, table.directions, strict=True)
    }
    cols = ["trial", "rank", *table.objective_names, "candidate"]
    excluded = any(row.get("excluded") for row in table.rows)
    if excluded:
        cols.append("excluded")
    head = [f"{c} {arrows[c]}" if c in arrows else c for c in cols]
    body = []
    for row in table.rows:
        cells = []
        for c in cols:
            value = row.get(c)
            if c == "rank":
                cells.append("-" if value is None else ("0 *" if value == 0 else str(value)))
            elif isinstance(value, float):
                cells.append(
                    str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
                )
            else:
                cells.append("" if value is None else str(value))
        body.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    lines = [f"{table.title} ({len(table.front)} on the front, * = rank 0)"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    for cells in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(lines)


def run_sync(args: argparse.Namespace) -> int:
    from search.study_view import study_view
    from tracking.store import TrackingError
    from tracking.sync import sync_study

    study, config = _open(args)
    tracker = _tracker(study.study_name, config, args.tracking_uri)
    try:
        report = sync_study(study_view(study), tracker, config=config)
    except TrackingError as err:
        raise CliError(str(err)) from None
    print(f"{report}  ({tracker.target.shown_uri}, experiment {tracker.target.experiment!r})")
    return 0


def run_ui(args: argparse.Namespace) -> int:
    from space.schema import load_config
    from tracking.ui import run_ui as serve

    config = load_config(args.config) if args.config else None
    if args.study is None:
        if config is None:
            raise CliError("name the study, or give --config FILE to take its study.name")
        args.study = config.study.name
    try:
        _, config = _open(args)
    except CliError as err:  # no study here yet: the UI still opens on the tracking store
        if config is None:
            print(f"ropenope ui: {err}; opening the default tracking store", file=sys.stderr)
    return serve(_tracker(args.study, config, args.tracking_uri), host=args.host, port=args.port)
