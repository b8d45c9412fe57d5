"""The computed budget of a scale ladder (``ladder:``): per rung, the training FLOPs of one
run of a preset, the runs the rung trains, and the time at a stated MFU.

    python bench/ladder_budget.py configs/gpu_ladder.yaml --preset rnope_swa \
        --peak-tflops 989 --gpus 4 --mfu 0.4

Training FLOPs per token: 6 per weight every token multiplies by (every matrix, the tied
embedding once) plus 3x the forward attention-score FLOPs at the training length
(``workers.serving_cost.attention_flops_per_token``: windows count only their keys), as
``bench/throughput.py`` counts them. Runs: rung 0 trains ``study.trials`` candidates, each
rung above ``promote.top_k`` plus the presets a hypothesis names that are not among them
(an upper bound), times the rung's seeds. Scoring and evaluation are not counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from space.ladder import apply_rung  # noqa: E402
from space.schema import load_config  # noqa: E402
from workers.model import HybridTransformer  # noqa: E402
from workers.serving_cost import attention_flops_per_token  # noqa: E402


def _named_presets(config) -> set[str]:  # noqa: ANN001
    return {
        side.preset
        for h in config.hypotheses
        for m in h.measures
        for side in (m.a, m.b)
        if side.preset is not None
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--preset", required=True, help="the candidate whose cost is counted")
    parser.add_argument("--peak-tflops", type=float, required=True, help="per device, dense")
    parser.add_argument("--gpus", type=int, default=1, help="devices one run trains on")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation")
    args = parser.parse_args()

    config = load_config(args.config)
    if config.ladder is None:
        raise SystemExit(f"{args.config} has no ladder: section")
    rate = args.peak_tflops * 1e12 * args.gpus * args.mfu
    named = len(_named_presets(config))
    total_hours = 0.0
    print(f"{args.config}, preset {args.preset}, {args.gpus} x {args.peak_tflops:g} TFLOP/s")
    print(f"at {args.mfu:.0%} MFU ({rate / 1e12:.0f} TFLOP/s per run)")
    for rung in range(len(config.ladder.rungs)):
        at = apply_rung(config, rung)
        candidate = at.preset_candidate(args.preset)
        with torch.device("meta"):
            model = HybridTransformer(candidate.shape, candidate.layers)
        weights = sum(p.numel() for p in model.parameters() if p.dim() == 2)
        seq_len = at.train.seq_len
        attention = 3 * attention_flops_per_token(candidate.shape, candidate.layers, seq_len)
        per_token = 6 * weights + attention
        tokens = at.train.total_steps * at.train.batch_size * seq_len
        candidates = config.study.trials if rung == 0 else config.ladder.promote.top_k + named
        runs = candidates * at.study.repeats
        hours = runs * tokens * per_token / rate / 3600
        total_hours += hours
        print(
            f"rung {rung}: {weights / 1e6:.1f}M matmul weights, {per_token / 1e9:.3f} GFLOP/token"
            f" at T={seq_len}; {tokens / 1e6:.0f}M tokens/run = {tokens * per_token:.2e} FLOP"
            f" ({tokens * per_token / rate / 60:.1f} min); {runs} runs (<= {candidates} "
            f"candidates x {at.study.repeats} seeds): {hours:.2f} h of training"
        )
    print(f"total: {total_hours:.2f} h of training, one run at a time (scoring not counted)")


if __name__ == "__main__":
    main()
