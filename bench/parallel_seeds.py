"""Seeds in parallel: the wall time of one study with its trials' seeds one after the other
and at the same time (``resources.parallel_seeds``), and whether they score the same.

    python bench/parallel_seeds.py                        # 3 candidates x 2 seeds, 2 CPUs
    python bench/parallel_seeds.py --trials 3 --repeats 2 --steps 600 --cpus 2

Runs the same real sweep (bench/sweep_overhead.py's small model, local Ray with ``--cpus``
CPUs, one per seed, ``max_concurrent: --cpus``) twice in temporary runs folders:
sequential seeds, then parallel seeds. Prints each sweep's wall time (Ray start excluded),
their ratio, the machine's load average around each (the CPUs are shared), and whether
every trial's objectives are equal to the last digit between the two. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweep_overhead import sweep_file  # noqa: E402


def one_study(
    tmp: Path, args: argparse.Namespace, parallel: bool
) -> tuple[float, dict, str, float]:
    """(wall seconds, {candidate id: objectives}, load averages before/after, mean seconds
    a seed trained)."""
    import optuna
    import ray

    from search.driver import run_sweep
    from space.names import TRAIN_SECONDS
    from space.schema import load_config
    from space.trial_attrs import ATTR_CANDIDATE_ID
    from workers.ray_seeds import INTERVAL_FILE

    home = tmp / ("parallel" if parallel else "sequential")
    home.mkdir()
    os.environ["ROPENOPE_HOME"] = str(home)
    path = sweep_file(home / "sweep.yaml", args.trials, args.steps, args.cpus)
    raw = yaml.safe_load(path.read_text())
    raw["study"]["repeats"] = args.repeats
    raw["resources"]["parallel_seeds"] = parallel
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(path)
    storage = f"sqlite:///{home / 'optuna.db'}"
    before = os.getloadavg()[0]
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        summary = run_sweep(config, config_text=path.read_text(), storage=storage, progress=False)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    load = f"{before:.2f} -> {os.getloadavg()[0]:.2f}"
    study = optuna.load_study(study_name="overhead", storage=storage)
    trials = study.get_trials()
    values = {t.user_attrs.get(ATTR_CANDIDATE_ID, t.number): tuple(t.values or ()) for t in trials}
    # A seed's own training time (the mean over a trial's seeds): longer when the seeds that
    # run at once compete for the cores with other work on the machine.
    train = statistics.mean(float(t.user_attrs.get(TRAIN_SECONDS, math.nan)) for t in trials)
    states = ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v)
    print(f"{'parallel' if parallel else 'sequential'} seeds: {states}", flush=True)
    for t in trials:  # where a trial's time goes: its span in Optuna, its seed tasks
        span = (t.datetime_complete - t.datetime_start).total_seconds()
        line = f"  trial {t.number}: Optuna span {span:.1f} s"
        if parallel:
            folder = Path(t.user_attrs["trial_dir"])
            runs = [json.loads(p.read_text()) for p in sorted(folder.glob(f"*/{INTERVAL_FILE}"))]
            if runs:
                first = min(r["started"] for r in runs)
                tasks = ", ".join(
                    f"{r['started'] - first:.1f}..{r['ended'] - first:.1f}" for r in runs
                )
                line += f"; seed tasks (train + score) from the first start: {tasks} s"
        print(line, flush=True)
    return wall, values, load, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="seeds per trial")
    parser.add_argument("--steps", type=int, default=600, help="training steps per seed")
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs (one per seed)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    with tempfile.TemporaryDirectory(prefix="ropenope-bench-") as tmp:
        seq_wall, seq_values, seq_load, seq_train = one_study(Path(tmp), args, parallel=False)
        par_wall, par_values, par_load, par_train = one_study(Path(tmp), args, parallel=True)

    same = seq_values == par_values and len(seq_values) == args.trials
    print()
    print(
        f"{args.trials} candidates x {args.repeats} seeds, {args.steps} steps per seed, "
        f"{args.cpus} CPUs (max_concurrent {args.cpus}, 1 CPU per seed)"
    )
    print()
    print("| seeds | sweep wall s | mean seed training s | load average (1 min) before -> after |")
    print("| --- | ---: | ---: | --- |")
    print(f"| one after the other | {seq_wall:.1f} | {seq_train:.1f} | {seq_load} |")
    print(f"| at the same time | {par_wall:.1f} | {par_train:.1f} | {par_load} |")
    print()
    print(f"parallel / sequential wall = {par_wall / seq_wall:.2f}")
    print(f"every trial's objectives equal to the last digit: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
