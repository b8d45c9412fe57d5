"""Training tokens/s and decoding memory per token mixer, on this machine.

    .venv/bin/python bench/mixers.py                     # CPU, T = 64 ... 1024
    .venv/bin/python bench/mixers.py --device cuda --lengths 64 256 1024 4096

For each preset (softmax attention only: ``rnope_swa``; Gated DeltaNet : gated attention:
``qwen3_next_like``; Mamba2 : NoPE attention 7:1: ``jamba_like``; Mamba2 and sliding-window
attention alternating: ``swax_w8``; KDA : NoPE attention 3:1: ``kimi_linear_like``) at the model size of ``configs/mixers.yaml``: training
tokens/s of a forward and backward pass at each length T, and the bytes a KV cache holds
after decoding T tokens (measured on the cache; equal to ``kv_cache_bytes`` of the layers).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from space import load_config
from workers.model import HybridTransformer

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mixers.yaml"


def tokens_per_second(model: HybridTransformer, batch: int, length: int, device: str) -> float:
    x = torch.randint(0, 256, (batch, length + 1), device=device)

    def step() -> None:
        logits = model(x[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start, repeats = time.perf_counter(), 3
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * length * repeats / (time.perf_counter() - start)


def decode_bytes(model: HybridTransformer, length: int, device: str) -> int:
    cache = model.new_cache(1, length, device=device)
    with torch.no_grad():
        model.step(torch.randint(0, 256, (1, length), device=device), cache)
    return cache.nbytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["rnope_swa", "qwen3_next_like", "jamba_like", "swax_w8", "kimi_linear_like"],
    )
    args = parser.parse_args()
    config = load_config(CONFIG)
    print(f"device {args.device}, batch {args.batch}, model of {CONFIG.name}")
    print(f"{'preset':<18} {'T':>6} {'train tok/s':>12} {'decode bytes':>14}")
    for name in args.presets:
        candidate = config.preset_candidate(name)
        torch.manual_seed(0)
        model = HybridTransformer(candidate.shape, candidate.layers).to(args.device)
        for length in args.lengths:
            speed = tokens_per_second(model, args.batch, length, args.device)
            held = decode_bytes(model.eval(), length, args.device)
            model.train()
            print(f"{name:<18} {length:>6} {speed:>12.0f} {held:>14,}")


if __name__ == "__main__":
    main()
