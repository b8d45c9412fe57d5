"""Wall time of one trial's scoring against its training, today's families and the new ones.

    python bench/scoring_time.py                          # configs/demo.yaml, rnope_swa
    python bench/scoring_time.py --steps 300 --threads 1

Trains one candidate of the demo sweep through ``workers.candidate.run_candidate`` (the
sweep's own trial) with ``passkey`` and the associative-recall families in its task mix,
then times ``workers.candidate.score_model`` on the trained model twice: with the demo's
score section (``passkey`` alone: today's scoring) and with ``score.tasks`` holding
``passkey`` and the new families (``mqar``, ``aliaskey``, ``selcopy``). Prints one JSON line:
training seconds, each scoring's seconds and its share of the trial (training + scoring).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workers.candidate as trial  # noqa: E402
from search.commands.train import resolve_candidate  # noqa: E402
from space.schema import load_config, parse_config  # noqa: E402
from space.yaml_io import read_yaml_file  # noqa: E402

NEW_FAMILIES = ("mqar", "aliaskey", "selcopy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--preset", default="rnope_swa")
    p.add_argument("--steps", type=int, default=None, help="default: the config's")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a trial's CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    raw, _ = read_yaml_file(args.config)
    train = raw["train"]
    train["task_mix"] = {"passkey": 1.0, **{task: 0.5 for task in NEW_FAMILIES}}
    # aliaskey's default 4 keys and their bindings need 82 tokens; the demo trains at 64.
    train["task_params"] = {**train.get("task_params", {}), "aliaskey": {"n_needles": 2}}
    if args.steps is not None:
        train["steps"] = args.steps
    today = load_config(args.config)
    raw["score"]["tasks"] = ["passkey", *NEW_FAMILIES]
    after = parse_config(raw, source=args.config)
    candidate = resolve_candidate(after, args.preset, {})

    captured: dict = {}
    original = trial.score_model

    def keep(model, config, cand, data, dev, result, out_dir, layers=None):
        captured.update(model=model, data=data, dev=dev, result=result, out_dir=out_dir)
        return {}  # scored below, each way, on the same model

    trial.score_model = keep
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = trial.run_candidate(after, candidate, seed=0, out_dir=Path(tmp))
        trained = time.perf_counter() - started
        timings = {}
        for label, config in (("today", today), ("with_new_families", after)):
            t0 = time.perf_counter()
            scores = original(
                captured["model"],
                config,
                candidate,
                captured["data"],
                captured["dev"],
                captured["result"],
                Path(tmp),
            )
            timings[label] = time.perf_counter() - t0
            timings[f"{label}_long_acc"] = scores.get("long_acc")
            for task in NEW_FAMILIES:
                if f"{task}/acc_at_T" in scores:
                    timings[f"{task}/acc_at_T"] = scores[f"{task}/acc_at_T"]
    trial.score_model = original
    out = {
        "config": args.config,
        "preset": args.preset,
        "steps": result.scores.get("steps"),
        "threads": args.threads,
        "train_and_setup_seconds": round(trained, 1),
        "train_seconds": round(result.scores["train_seconds"], 1),
        "score_today_seconds": round(timings["today"], 1),
        "score_with_new_families_seconds": round(timings["with_new_families"], 1),
        "score_today_share_of_trial": round(timings["today"] / (trained + timings["today"]), 3),
        "score_with_new_families_share_of_trial": round(
            timings["with_new_families"] / (trained + timings["with_new_families"]), 3
        ),
        **{k: v for k, v in timings.items() if "/" in k or k.endswith("long_acc")},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
