"""`ropenope report STUDY`: the study's comparison report (HTML + Markdown), its
hypotheses judged on the data, logged to the study's parent MLflow run (the files, and
one ``hypothesis.<name>`` tag per hypothesis)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from space.secrets import redact_text

HELP = "write a study's comparison report (HTML + Markdown) and judge its hypotheses"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help=HELP,
        description=f"{HELP[0].upper()}{HELP[1:]} (the sweep file's, else the paper's "
        "claims); the report is also logged to the study's parent MLflow run. "
        "Example: ropenope report paper --out runs/reports/paper",
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
        help="sweep file, for its hypotheses, storage and tracking settings "
        "(default: the one stored with the study)",
    )
    p.add_argument(
        "--no-mlflow", action="store_true", help="do not log the report to the MLflow run"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary (findings with intervals and rules, candidates, rank "
        "stability) as JSON on stdout; messages go to stderr",
    )


def run(args: argparse.Namespace) -> int:
    from search.errors import StudyError
    from search.signature import stored_config
    from search.study import load_existing
    from space.errors import ConfigError
    from space.names import TAG_HYPOTHESIS_PREFIX
    from space.paths import runs_dir
    from space.schema import load_config
    from tracking.report import SUMMARY_NAME, build_report

    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    config = load_config(args.config) if args.config else None
    storage = args.storage or (config.study.storage if config else None)
    study = load_existing(args.study, storage).study
    if config is None:
        try:
            config = stored_config(study)
        except StudyError:
            config = None  # a study not made by ropenope: report it, default tracking
        except ConfigError as err:  # stored by an older ropenope: still report the runs
            say(f"stored sweep file no longer valid ({err}); reporting without it")
            config = None
    out = args.out or runs_dir() / "reports" / study.study_name
    paths = build_report(study, out, config)
    data = json.loads(Path(paths[SUMMARY_NAME]).read_text())

    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_findings(data)
    say(f"report: {paths['report.html']}")
    say(f"        {paths['report.md']}")

    if args.no_mlflow or (config is not None and not config.tracking.enabled):
        return 0
    tags = {f"{TAG_HYPOTHESIS_PREFIX}{f['key']}": f["verdict"] for f in data["findings"]}
    return _log_to_mlflow(config, study.study_name, paths, tags, say)


def _print_findings(data: dict) -> None:
    print(f"study {data['study']}: {len(data['candidates'])} candidates with completed runs")
    print(f"hypotheses: {data['hypotheses_source']}")
    for f in data["findings"]:
        interval = f.get("interval")
        iv = (
            f"  [{interval[0]:.3g}, {interval[1]:.3g}]" if interval and None not in interval else ""
        )
        holm = f.get("holm")
        family = f"  Holm: {holm['verdict']}" if holm else ""
        print(f"  [{f['verdict'].upper():>12}] {f['key']}: {f['claim']}{iv}{family}")
    holm = next((f["holm"] for f in data["findings"] if f.get("holm")), None)
    if holm:
        print(
            f"Holm across {holm['family']} hypotheses at alpha {holm['alpha']:g} controls the "
            "family-wise error rate (the chance of any wrong verdict among them)"
        )


def _log_to_mlflow(config, study_name: str, paths: dict[str, Path], tags, say) -> int:  # noqa: ANN001
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
        run_id = log_study_artifacts(uri, experiment, study_name, paths, tags=tags)
    except Exception as err:  # noqa: BLE001 - the report is written; say why logging failed
        print(redact_text(f"mlflow: could not log the report to {uri}: {err}"), file=sys.stderr)
        return 1
    say(f"mlflow: logged to run {run_id} (experiment {experiment!r}) under report/")
    return 0
