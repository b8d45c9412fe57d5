"""`ropenope report STUDY`: the study's comparison report (HTML + Markdown), its findings
on the paper's claims, logged to the study's parent MLflow run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from space.secrets import redact_text

HELP = "write a study's comparison report (HTML + Markdown) and check the paper's claims"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help=HELP,
        description=f"{HELP[0].upper()}{HELP[1:]}; the report is also logged to the study's "
        "parent MLflow run. Example: ropenope report paper --out runs/reports/paper",
    )
    p.add_argument("study", help="study name")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: runs/reports/STUDY)"
    )
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or SQLite file (default: the sweep file's, else runs/optuna.db)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="sweep file, for its storage and tracking settings "
        "(default: the one stored with the study)",
    )
    p.add_argument(
        "--no-mlflow", action="store_true", help="do not log the report to the MLflow run"
    )


def run(args: argparse.Namespace) -> int:
    from search.study import load_with_config
    from space.paths import runs_dir
    from tracking.report import build_report

    study, config = load_with_config(args.study, args.storage, args.config)
    out = args.out or runs_dir() / "reports" / study.study_name
    paths = build_report(study, out)

    from tracking.report import SUMMARY_NAME

    _print_findings(paths[SUMMARY_NAME])
    print(f"report: {paths['report.html']}")
    print(f"        {paths['report.md']}")

    if args.no_mlflow or (config is not None and not config.tracking.enabled):
        return 0
    return _log_to_mlflow(config, study.study_name, paths)


def _print_findings(summary_path: Path) -> None:
    import json

    data = json.loads(Path(summary_path).read_text())
    print(f"study {data['study']}: {len(data['candidates'])} candidates with completed runs")
    for f in data["findings"]:
        print(f"  [{f['verdict'].upper():>12}] {f['claim']}")


def _log_to_mlflow(config, study_name: str, paths: dict[str, Path]) -> int:  # noqa: ANN001
    from tracking.report import log_study_artifacts
    from tracking.target import resolve_tracking_uri

    configured = config.tracking.uri if config is not None else None
    uri = resolve_tracking_uri(configured)
    if not configured and not os.environ.get("MLFLOW_TRACKING_URI"):
        db = uri.removeprefix("sqlite:///")
        if not Path(db).exists():
            print(f"mlflow: no tracking store at {db}; report not logged", file=sys.stderr)
            return 0
    experiment = (config.tracking.experiment if config is not None else None) or study_name
    try:
        run_id = log_study_artifacts(uri, experiment, study_name, paths)
    except Exception as err:  # noqa: BLE001 - the report is written; say why logging failed
        print(redact_text(f"mlflow: could not log the report to {uri}: {err}"), file=sys.stderr)
        return 1
    print(f"mlflow: logged to run {run_id} (experiment {experiment!r}) under report/")
    return 0
