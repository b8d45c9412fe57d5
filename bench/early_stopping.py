"""Early stopping on a multi-objective study: Pareto hypervolume reached against wall time
with no early stopping, single-objective ASHA and MO-ASHA (issue 23).

    python bench/early_stopping.py                                  # configs/demo.yaml, 24 trials
    python bench/early_stopping.py --trials 4 --steps 50 --samples 2   # a smoke run (minutes)

Runs the same sweep file three times (one study per arm, same sampler seed, same trial
target, the corpus tokenized once before any arm): ``none``; ``asha``
(``scheduler: {kind: asha, metric: val_bpb, mode: min}``); ``mo_asha``
(``study.early_stopping: {scheduler: mo_asha}``, rung objectives by default). Both
schedulers use ``--grace-period`` and ``--reduction-factor``.

Hypervolume: the COMPLETE trials' objective values (each turned to lower-is-better),
every objective scaled to [0, 1] by its range over the COMPLETE trials of all arms, and
the reference point at 1.1 on each; so the three arms are measured on one scale. Time:
seconds from the arm's first trial start; the "hypervolume over time" rows give the
hypervolume of the trials COMPLETE by then. The target of issue 23: MO-ASHA reaches the
no-early-stopping final hypervolume within 5% in at most 60% of that arm's wall time.

Prints Markdown: one row per arm (wall time, trials by state, final hypervolume, when it
first reached 95% of the no-early-stopping final one), the issue's target met or not, the
hypervolume each arm held at fixed shares of the no-early-stopping arm's wall time, then
the trials each arm stopped (with their rung, and whether the no-early-stopping arm trained
the same candidate onto its Pareto front: a stop that cost the front), then the
hypervolume after each COMPLETE trial. Nothing is asserted.

``--sampler random`` gives every arm the same candidates in the same order (a random
sampler's draws do not depend on the results), so the arms differ only in what they stop;
the default keeps the sweep file's sampler (the demo's TPE adapts to what it has seen, as
in use).

The full benchmark of issue 23 (hours on 2 cores; 24 trials x 3 arms):

    python bench/early_stopping.py --trials 24
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ARMS = ("none", "asha", "mo_asha")
# The demo's evaluations per run (1000 steps, eval_every 200): --steps keeps that count.
EVALS_PER_RUN = 5


def arm_file(raw: dict[str, Any], arm: str, args: argparse.Namespace, folder: Path) -> Path:
    doc = copy.deepcopy(raw)
    doc["study"]["name"] = f"es-{arm}"
    doc["study"]["trials"] = args.trials
    if args.sampler is not None:
        doc["study"]["sampler"] = args.sampler
    if args.steps is not None:
        every = max(1, args.steps // EVALS_PER_RUN)
        doc["train"].update(
            steps=args.steps,
            eval_every=every,
            checkpoint_every=every,
            warmup_steps=min(doc["train"].get("warmup_steps", 0), max(1, args.steps // 10)),
        )
    if args.samples is not None:
        doc["score"]["samples"] = args.samples
    doc.setdefault("resources", {})["max_concurrent"] = args.concurrency
    doc["tracking"] = {"enabled": False}
    doc.pop("scheduler", None)
    if arm == "asha":
        doc["scheduler"] = {
            "kind": "asha",
            "metric": "val_bpb",
            "mode": "min",
            "grace_period": args.grace_period,
            "reduction_factor": args.reduction_factor,
        }
    elif arm == "mo_asha":
        doc["study"]["early_stopping"] = {
            "scheduler": "mo_asha",
            "grace_period": args.grace_period,
            "reduction_factor": args.reduction_factor,
        }
    path = folder / f"{arm}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def losses(values: list[float], directions: list[str]) -> list[float]:
    return [v if d == "minimize" else -v for v, d in zip(values, directions, strict=True)]


def hypervolume(points: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Of lower-is-better ``points`` scaled by [low, high] per objective, reference 1.1."""
    from optuna._hypervolume import compute_hypervolume  # the exact WFG algorithm

    if len(points) == 0:
        return 0.0
    span = np.where(high > low, high - low, 1.0)
    unit = np.where(high > low, (points - low) / span, 0.0)
    return float(compute_hypervolume(unit, np.full(points.shape[1], 1.1)))


def non_dominated(points: np.ndarray) -> list[int]:
    """Rows of lower-is-better ``points`` that no other row dominates."""
    return [
        i
        for i in range(len(points))
        if not any(
            np.all(points[j] <= points[i]) and np.any(points[j] < points[i])
            for j in range(len(points))
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--steps", type=int, help=f"training steps ({EVALS_PER_RUN} evaluations)")
    parser.add_argument("--samples", type=int, help="score.samples (retrieval prompts)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--reduction-factor", type=int, default=2)
    parser.add_argument("--arms", default=",".join(ARMS), help="a subset of none,asha,mo_asha")
    parser.add_argument(
        "--sampler",
        choices=("tpe", "random"),
        help="study.sampler for every arm (default: the sweep file's)",
    )
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    if any(a not in ARMS for a in arms):
        parser.error(f"--arms: each of {', '.join(ARMS)}")

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import optuna
    import ray
    from optuna.trial import TrialState

    from search.driver import run_sweep
    from space.paths import runs_dir
    from space.schema import load_config
    from space.trial_attrs import (
        ATTR_CANDIDATE_ID,
        ATTR_CANDIDATE_NAME,
        ATTR_RUNG,
        ATTR_RUNG_EVALS,
    )

    raw = yaml.safe_load(Path(args.config).read_text())
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ropenope-bench-es-") as tmp:
        home = Path(tmp) / "runs"
        os.environ["ROPENOPE_HOME"] = str(home)
        storage = f"sqlite:///{Path(tmp) / 'optuna.db'}"
        ray.init(
            address="local", num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False
        )
        try:
            for arm in arms:
                path = arm_file(raw, arm, args, Path(tmp))
                config = load_config(path)
                if not runs:  # the corpus cache is shared: no arm pays for it
                    from workers.corpus import prepare

                    prepare(config, runs_dir() / "cache", progress=False)
                summary = run_sweep(
                    config, config_text=path.read_text(), storage=storage, progress=False
                )
                study = optuna.load_study(study_name=f"es-{arm}", storage=storage)
                runs[arm] = {
                    "wall": summary.wall_seconds,
                    "trials": study.get_trials(),
                    "directions": [o.direction for o in config.study.objectives],
                }
        finally:
            ray.shutdown()

    complete_points = [
        losses(t.values, run["directions"])
        for run in runs.values()
        for t in run["trials"]
        if t.state == TrialState.COMPLETE
    ]
    if not complete_points:
        print("no COMPLETE trial in any arm: no hypervolume")
        return 1
    union = np.array(complete_points)
    low, high = union.min(axis=0), union.max(axis=0)

    def curve(run: dict[str, Any]) -> list[tuple[float, float]]:
        trials = run["trials"]
        t0 = min(t.datetime_start for t in trials if t.datetime_start is not None)
        done = sorted(
            (t for t in trials if t.state == TrialState.COMPLETE),
            key=lambda t: t.datetime_complete,
        )
        out = []
        for i, t in enumerate(done):
            points = np.array([losses(d.values, run["directions"]) for d in done[: i + 1]])
            seconds = (t.datetime_complete - t0).total_seconds()
            out.append((seconds, hypervolume(points, low, high)))
        return out

    curves = {arm: curve(run) for arm, run in runs.items()}
    reference = curves.get("none", [])
    target = 0.95 * reference[-1][1] if reference else None

    print(
        f"sweep: {Path(args.config).name}, {args.trials} trials per arm, "
        f"steps {args.steps or raw['train']['steps']}, concurrency {args.concurrency}, "
        f"grace {args.grace_period}, reduction factor {args.reduction_factor}, "
        f"sampler {args.sampler or raw['study'].get('sampler', 'tpe')}"
    )
    print()
    print(
        "| arm | wall s | COMPLETE | PRUNED | FAIL | final HV | HV / none's final | "
        "s to 95% of none's final HV | that / none's wall |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for arm, run in runs.items():
        states = [t.state for t in run["trials"]]
        final = curves[arm][-1][1] if curves[arm] else 0.0
        ratio = f"{final / reference[-1][1]:.3f}" if reference and reference[-1][1] else "-"
        reach = next((s for s, hv in curves[arm] if target is not None and hv >= target), None)
        reach_text = f"{reach:.1f}" if reach is not None else "never"
        share = f"{reach / runs['none']['wall']:.2f}" if reach is not None and reference else "-"
        print(
            f"| {arm} | {run['wall']:.1f} | {states.count(TrialState.COMPLETE)} | "
            f"{states.count(TrialState.PRUNED)} | {states.count(TrialState.FAIL)} | "
            f"{final:.4f} | {ratio} | {reach_text} | {share} |"
        )
    if reference and "mo_asha" in curves:
        wall = runs["none"]["wall"]
        reach = next((sec for sec, hv in curves["mo_asha"] if hv >= target), None)
        met = reach is not None and reach <= 0.6 * wall
        print()
        print(
            "issue 23's target (MO-ASHA within 5% of none's final HV in <= 60% of none's "
            f"wall time): {'met' if met else 'not met'}"
            + (f" ({reach:.0f} s of {wall:.0f} s)" if reach is not None else " (never reached)")
        )
    if reference:
        shares = (0.2, 0.4, 0.6, 0.8, 1.0)
        wall = runs["none"]["wall"]
        print()
        print("hypervolume held at a share of none's wall time (" + f"{wall:.0f} s):")
        print()
        print("| arm | " + " | ".join(f"{share:.0%}" for share in shares) + " |")
        print("| --- |" + " ---: |" * len(shares))
        for arm, points in curves.items():
            held = [
                max((hv for sec, hv in points if sec <= share * wall), default=0.0)
                for share in shares
            ]
            print(f"| {arm} | " + " | ".join(f"{hv:.4f}" for hv in held) + " |")

    front = set()  # candidates the no-early-stopping arm trained onto its Pareto front
    if "none" in runs:
        done = [t for t in runs["none"]["trials"] if t.state == TrialState.COMPLETE]
        points = np.array([losses(t.values, runs["none"]["directions"]) for t in done])
        front = {done[i].user_attrs.get(ATTR_CANDIDATE_ID) for i in non_dominated(points)}
    print()
    print("stopped trials (PRUNED), per arm (*: on none's Pareto front when trained in full):")
    for arm, run in runs.items():
        pruned = [t for t in run["trials"] if t.state == TrialState.PRUNED]
        items = []
        for t in pruned:
            where = (
                f"at rung {t.user_attrs[ATTR_RUNG]} ({t.user_attrs[ATTR_RUNG_EVALS]} evals)"
                if ATTR_RUNG in t.user_attrs
                else f"after {len(t.intermediate_values)} evals"
            )
            star = "*" if t.user_attrs.get(ATTR_CANDIDATE_ID) in front else ""
            name = t.user_attrs.get(ATTR_CANDIDATE_NAME, "?")
            items.append(f"#{t.number}{star} {name} {where}")
        print(f"- {arm}: {'; '.join(items) if items else 'none'}")
    print()
    print("hypervolume over time (s: HV after each COMPLETE trial):")
    for arm, points in curves.items():
        print(f"- {arm}: " + ", ".join(f"{s:.0f}s {hv:.4f}" for s, hv in points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
