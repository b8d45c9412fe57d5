"""`ropenope gc STUDY`: remove the checkpoints and snapshots a study no longer needs
(:mod:`search.retention`), or with ``--dry-run`` list them with their bytes."""

from __future__ import annotations

import argparse
import sys

HELP = "remove the checkpoints and Tune snapshots a study no longer needs (--dry-run lists them)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gc",
        help=HELP,
        description=f"{HELP[0].upper()}{HELP[1:]}. Finished trials keep their newest checkpoint "
        "per seed (resources.keep: last), only the Pareto front's (best), or every checkpoint "
        "(all); Tune's snapshots and half-written temporaries go in every case; a trial "
        "waiting for its re-run keeps everything. Example: ropenope gc demo --dry-run",
    )
    p.add_argument("study", help="study name")
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or SQLite file (default: $ROPENOPE_STORAGE, else runs/optuna.db)",
    )
    p.add_argument(
        "--keep",
        choices=["last", "best", "all"],
        default=None,
        help="what finished trials keep (default: the study's resources.keep)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be removed, remove nothing"
    )


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def run(args: argparse.Namespace) -> int:
    from search.retention import plan_study
    from search.signature import stored_config
    from search.study import load_existing
    from search.study_view import study_view
    from tracking.pareto import pareto_of_study

    opened = load_existing(args.study, args.storage)
    keep = args.keep
    if keep is None:
        keep = stored_config(opened.study).resources.keep
    trials = opened.study.get_trials(deepcopy=False)
    front = {int(row["trial"]) for row in pareto_of_study(study_view(opened.study)).front}
    removal = plan_study(trials, keep, front)
    verb = "would remove" if args.dry_run else "removed"
    for path in removal.paths:
        print(f"{verb} {path}")
    if not args.dry_run:
        removal.apply()
    print(
        f"gc {args.study} (keep {keep}): {verb} {len(removal.paths)} paths, "
        f"{human_bytes(removal.bytes)} ({removal.bytes} bytes)",
        file=sys.stdout,
    )
    return 0
