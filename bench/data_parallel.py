"""Data-parallel training on one machine's CPUs: 2 workers x 1 thread against 1 worker x 2
threads, the same candidate and global batch (tokens/s of the whole trial).

    python bench/data_parallel.py                        # configs/demo.yaml, rnope_swa, DDP
    python bench/data_parallel.py --preset rope --parallel ddp fsdp --steps 40

The workers are ``torch.multiprocessing`` processes in a gloo group, each running
``workers.train.train`` with a ``workers.distributed.DataParallel`` (what a sweep's Ray
Train workers run, without Ray's start-up); one worker is the same loop alone with two
torch threads. Tokens/s counts the global batch over the steps after ``--warmup``, on the
main worker's clock. Each configuration runs in fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _training_speed import measure  # noqa: E402

from workers.distributed import DataParallel  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, kind: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads_per_worker)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = measure(
            args.config,
            args.preset,
            device="cpu",
            backend=None,
            compile_model=False,
            precision="fp32",
            steps=args.steps,
            warmup=args.warmup,
            workers=DataParallel(kind),
        )
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _alone(args: argparse.Namespace, threads: int, out: str) -> None:
    torch.set_num_threads(threads)
    result = measure(
        args.config,
        args.preset,
        device="cpu",
        backend=None,
        compile_model=False,
        precision="fp32",
        steps=args.steps,
        warmup=args.warmup,
    )
    Path(out).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--preset", default="rnope_swa")
    parser.add_argument("--parallel", nargs="+", choices=("ddp", "fsdp"), default=["ddp"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    threads = args.workers * args.threads_per_worker
    print(
        f"{args.config} preset {args.preset}, fp32 eager, {args.steps} steps "
        f"(tokens/s over the last {args.steps - args.warmup}), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    header = f"{'run':<28} | {'tokens/s':>9} {'step ms':>8} | {'vs alone':>8}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "alone.json")
        ctx = mp.get_context("spawn")
        p = ctx.Process(target=_alone, args=(args, threads, out))
        p.start()
        p.join()
        alone = json.loads(Path(out).read_text())
        print(
            f"{f'1 worker x {threads} threads':<28} | {alone['tokens_per_s']:>9.0f} "
            f"{alone['step_ms']:>8.1f} | {1.0:>7.2f}x",
            flush=True,
        )
        for kind in args.parallel:
            out = str(Path(tmp) / f"{kind}.json")
            mp.spawn(_rank, args=(args.workers, _free_port(), args, kind, out), nprocs=args.workers)
            r = json.loads(Path(out).read_text())
            name = f"{args.workers} workers x {args.threads_per_worker} thread ({kind})"
            print(
                f"{name:<28} | {r['tokens_per_s']:>9.0f} {r['step_ms']:>8.1f} | "
                f"{r['tokens_per_s'] / alone['tokens_per_s']:>7.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
