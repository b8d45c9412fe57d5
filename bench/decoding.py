"""Scoring time against evaluation length: greedy decoding with and without the KV cache.

    python bench/decoding.py                                   # configs/demo.yaml, 1x..32x T
    python bench/decoding.py --config configs/demo.yaml --preset rope --max-multiple 16
    python bench/decoding.py --presets rope rnope_swa --batch 8 --tokens 8

What one measurement is: greedy decoding of ``--tokens`` answer tokens from ``--batch``
needle prompts (the sweep's task, rendered at ``m x T`` tokens from the validation text)
with the preset's model (random weights: decoding costs the same whatever they learned),
once through ``workers.decoding.Decoder`` with the cache (prefill in chunks, then one step
per token) and once without it (the reference: the whole sequence per token). The scorer
stops a row once it is decided; this bench always decodes all ``--tokens``, the worst case.

Each (preset, length, path) runs in its own subprocesses. Time is the best of ``--repeats``
after a warm-up, with the default allocator (as a trial scores). Peak memory as in
``bench/attention.py``: on CUDA ``max_memory_allocated`` in the same process; on CPU, in a
second process with a fixed glibc mmap threshold (freed tensors leave the resident set; the
setting slows decoding by about half, hence not in the timed one), the resident-set
high-water mark of one decoding after a warm-up (``/proc/self/clear_refs``). Both minus
what was there before (the model and the prompts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from space.schema import load_config  # noqa: E402
from workers.candidate import build_model  # noqa: E402
from workers.corpus import prepare  # noqa: E402
from workers.decoding import Decoder  # noqa: E402
from workers.tasks import render  # noqa: E402


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_one(
    args: argparse.Namespace, preset: str, multiple: int, cached: bool, memory: bool
) -> dict:
    """Time (best of ``--repeats``) or, with ``memory`` on CPU, peak memory of one decoding;
    on CUDA both."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = load_config(args.config)
    candidate = config.preset_candidate(preset)
    model = build_model(candidate, 0).to(device).eval()
    data = prepare(config).open()
    length = multiple * config.train.seq_len
    task = config.score.primary_task or "passkey"
    prompts = np.stack(
        [
            render(task, length, 0.5, 100 + i, data.val, tokenizer=data.tokenizer).prompt
            for i in range(args.batch)
        ]
    ).astype(np.int64)
    prompts = torch.from_numpy(prompts).to(device)

    @torch.no_grad()
    def decode() -> None:
        decoder = Decoder(model, prompts, args.tokens, cached)
        logits = decoder.first()
        for _ in range(args.tokens - 1):
            logits = decoder.next(logits.argmax(-1))
        if device.type == "cuda":
            torch.cuda.synchronize()

    decode()  # warm-up
    out: dict = {"prompt_tokens": int(prompts.shape[1])}
    if not memory or device.type == "cuda":
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            decode()
            times.append(time.perf_counter() - start)
        out["time_s"] = min(times)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        decode()
        out["peak_bytes"] = torch.cuda.max_memory_allocated() - base
    elif memory:
        base_kib = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        decode()
        out["peak_bytes"] = (_status_kib("VmHWM") - base_kib) * 1024
    return out


# In the CPU memory run only: glibc returns every large freed block to the OS at once.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def _child(
    args: argparse.Namespace, preset: str, multiple: int, cached: bool, memory: bool
) -> dict:
    cmd = [sys.executable, __file__, "--one", preset, str(multiple), "1" if cached else "0"]
    cmd += ["--memory"] if memory else []
    for name in ("config", "device", "batch", "tokens", "repeats", "threads"):
        cmd += [f"--{name}", str(getattr(args, name))]
    env = {**os.environ, **(MEMORY_ENV if memory else {})}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(args: argparse.Namespace, preset: str, multiple: int, cached: bool) -> dict:
    """Time and peak memory of one (preset, length, path), each in a fresh process."""
    out = _child(args, preset, multiple, cached, memory=False)
    if "peak_bytes" not in out:  # CPU: the memory run
        out["peak_bytes"] = _child(args, preset, multiple, cached, memory=True)["peak_bytes"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--presets", nargs="+", default=["rope", "rnope_swa"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-multiple", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="prompts decoded together")
    parser.add_argument("--tokens", type=int, default=8, help="answer tokens decoded")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        preset, multiple, cached = args.one[0], int(args.one[1]), args.one[2] == "1"
        print(json.dumps(measure_one(args, preset, multiple, cached, args.memory)))
        return

    seq_len = load_config(args.config).train.seq_len
    mib = 2**20
    print(
        f"{args.config}: T={seq_len}, device={args.device}, threads={args.threads}, "
        f"{args.batch} prompts x {args.tokens} greedy tokens, best of {args.repeats}"
    )
    header = (
        f"{'preset':<12} {'length':>8} | {'uncached s':>10} {'cached s':>9} {'speed-up':>8} | "
        f"{'uncached MiB':>12} {'cached MiB':>10}"
    )
    print(header)
    print("-" * len(header))
    for preset in args.presets:
        multiple = 1
        while multiple <= args.max_multiple:
            plain = run_child(args, preset, multiple, cached=False)
            fast = run_child(args, preset, multiple, cached=True)
            length = f"{multiple}x={plain['prompt_tokens']}"
            print(
                f"{preset:<12} {length:>8} | "
                f"{plain['time_s']:>10.3f} {fast['time_s']:>9.3f} "
                f"{plain['time_s'] / fast['time_s']:>7.1f}x | "
                f"{plain['peak_bytes'] / mib:>12.1f} {fast['peak_bytes'] / mib:>10.1f}",
                flush=True,
            )
            multiple *= 2


if __name__ == "__main__":
    main()
