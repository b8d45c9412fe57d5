"""Sweep overhead: the wall time of a sweep against the trials' own time.

    python bench/sweep_overhead.py                      # 4 trials x 200 steps, 1 at a time
    python bench/sweep_overhead.py --trials 8 --steps 600 --concurrency 2
    python bench/sweep_overhead.py --storage postgresql+psycopg://user@host/db

Runs a real sweep (local Ray, Optuna, real training of a small model) in a temporary
runs folder and prints, in Markdown:

- Ray start: ``ray.init`` of a local cluster, paid once per sweep;
- sweep wall: from ``run_sweep`` entry to its return, Ray start excluded;
- trial time: each trial's own work, train + score, measured inside the trial
  (``trial_seconds``); with ``--concurrency c`` the trials overlap, so the busy time a
  sweep cannot avoid is their sum / c;
- overhead per trial = (sweep wall - sum(trial time) / c) / trials: scheduling, actor
  start-up, result and checkpoint reporting, storage writes, the study bookkeeping;
- per trial, the span Optuna saw (``datetime_start`` .. ``datetime_complete``) minus the
  trial's own time: what one trial pays around its training.

The last column relates the overhead per trial to a 1-minute trial (target: < 5%).
Nothing is asserted. Ray is started here with ``--concurrency`` CPUs, one per trial, and
torch uses one thread per trial.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sweep_file(path: Path, trials: int, steps: int, concurrency: int) -> Path:
    raw = {
        "study": {"name": "overhead", "trials": trials, "sampler": "random", "seed": 0},
        # Every sample is a new candidate (a continuous RoPE base on the local layers),
        # so dedup never skips a trial and each one trains.
        "space": {
            "global_every": 2,
            "global_position": {"choice": ["nope", "rope"]},
            "local_rope_base": {"log": [1000.0, 1000000.0]},
            "local_window": {"choice": [8, 16, 32]},
        },
        "model": {"layers": 2, "d_model": 64, "heads": 2, "mlp_hidden": 128},
        "train": {
            "seq_len": 32,
            "batch_size": 16,
            "steps": steps,
            "warmup_steps": 10,
            "eval_every": max(1, steps // 4),
            "checkpoint_every": max(1, steps // 4),
            "eval_windows": 4,
            "task_mix": {"passkey": 1.0},
        },
        "score": {
            "task": "passkey",
            "lengths": [1, 2],
            "depths": [0.0, 0.5, 1.0],
            "samples": 4,
            "extrap": [2],
            "val_windows": 4,
            "mass_lengths": [1],
            "mass_samples": 2,
        },
        "resources": {"cpus_per_trial": 1, "max_concurrent": concurrency},
        "tracking": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200, help="training steps per trial")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--storage", help="SQLAlchemy URL (default: SQLite in the temp folder)")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import optuna
    import ray

    from search.driver import run_sweep
    from space.names import TRAIN_SECONDS
    from space.schema import load_config
    from space.trial_attrs import ATTR_TRIAL_SECONDS

    with tempfile.TemporaryDirectory(prefix="ropenope-bench-") as tmp:
        home = Path(tmp) / "runs"
        os.environ["ROPENOPE_HOME"] = str(home)
        path = sweep_file(Path(tmp) / "sweep.yaml", args.trials, args.steps, args.concurrency)
        config = load_config(path)
        storage = args.storage or f"sqlite:///{home / 'optuna.db'}"

        t0 = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=args.concurrency,
            include_dashboard=False,
            log_to_driver=False,
        )
        ray_start = time.perf_counter() - t0
        try:
            summary = run_sweep(
                config, config_text=path.read_text(), storage=storage, progress=False
            )
        finally:
            ray.shutdown()
        study = optuna.load_study(study_name="overhead", storage=storage)
        trials = [t for t in study.get_trials() if t.state.is_finished()]

    own = [t.user_attrs.get(ATTR_TRIAL_SECONDS, 0.0) for t in trials]
    train = [t.user_attrs.get(TRAIN_SECONDS, 0.0) for t in trials]
    spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    around = [s - o for s, o in zip(spans, own, strict=True)]
    wall = summary.wall_seconds
    busy = sum(own) / args.concurrency
    per_trial = (wall - busy) / len(trials)
    states = ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v)

    print(
        f"sweep: {len(trials)} trials ({states}), {args.steps} steps each, "
        f"concurrency {args.concurrency}, storage {storage.split(':')[0]}"
    )
    print()
    print("| quantity | seconds |")
    print("| --- | ---: |")
    print(f"| Ray start (once per sweep) | {ray_start:.2f} |")
    print(f"| sweep wall, Ray start excluded | {wall:.2f} |")
    print(f"| sum of trial time (train + score) | {sum(own):.2f} |")
    print(f"| of which training steps | {sum(train):.2f} |")
    print(f"| mean trial time | {statistics.mean(own):.2f} |")
    print(f"| overhead per trial: (wall - sum/concurrency) / trials | {per_trial:.2f} |")
    print(f"| per trial, Optuna span - own time: mean | {statistics.mean(around):.2f} |")
    print(
        f"| per trial, Optuna span - own time: first, rest | "
        f"{around[0]:.2f}, {statistics.mean(around[1:]) if len(around) > 1 else 0:.2f} |"
    )
    print()
    print(
        f"overhead per trial = {per_trial:.2f} s = {100 * per_trial / 60:.1f}% of a 1-minute "
        f"trial; with Ray start amortised over the sweep: "
        f"{100 * (per_trial + ray_start / len(trials)) / 60:.1f}%"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
