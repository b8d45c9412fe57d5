"""Full vs sliding-window vs chunked causal attention: forward+backward time and peak memory.

    python bench/attention.py                  # T = 1k..16k, window/chunk 256, current device
    python bench/attention.py --max-t 4096 --repeats 1
    python bench/attention.py --sinks          # the same with gpt-oss attention sinks

Each (T, window) runs in its own subprocess so that one measurement cannot inherit another's
memory high-water mark. Attention goes through ``workers.attention.attend`` with the automatic
backend choice (or ``--backend``), on q, k, v of shape (batch, heads, T, head_dim) in fp32.

What "peak memory" is:
- CUDA: ``torch.cuda.max_memory_allocated()`` during one forward+backward, minus what was
  allocated before it (the inputs).
- CPU: the process's peak resident set size (Linux ``VmHWM``), reset to the current resident
  size right before the forward (``echo 5 > /proc/self/clear_refs``), minus that resident size.
  It counts every page the forward+backward touched: scores, saved activations, gradients,
  allocator slack. PyTorch has no CPU allocator statistics and ``tracemalloc`` does not see
  its allocations, so the operating system's count is the honest number. The child runs with
  a fixed glibc mmap threshold so freed tensors leave the resident set.
Times are the best of ``--repeats`` runs after one warm-up run (which also compiles on CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from space.layers import WindowKind  # noqa: E402
from workers.attention import attend, choose_backend  # noqa: E402


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_one(
    args: argparse.Namespace, seq_len: int, window: int | None, kind: WindowKind
) -> dict:
    """Time and peak memory of one forward+backward at one (T, window, kind), in this process."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    shape_q = (args.batch, args.heads, seq_len, args.head_dim)
    shape_kv = (args.batch, args.kv_heads, seq_len, args.head_dim)
    q = torch.randn(shape_q, device=device, requires_grad=True)
    k = torch.randn(shape_kv, device=device, requires_grad=True)
    v = torch.randn(shape_kv, device=device, requires_grad=True)
    grad_out = torch.randn(shape_q, device=device)
    sinks = torch.zeros(args.heads, device=device, requires_grad=True) if args.sinks else None
    mask = {"window_kind": kind, "sinks": sinks}
    backend = args.backend or choose_backend(
        device, seq_len, window, window_kind=kind, sinks=sinks is not None
    )

    def step() -> None:
        out = attend(q, k, v, window, backend, **mask)
        out.backward(grad_out)
        q.grad = k.grad = v.grad = None
        if sinks is not None:
            sinks.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (and compile)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base_kib = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        step()
        peak = (_status_kib("VmHWM") - base_kib) * 1024
    return {"time_s": min(times), "peak_bytes": peak, "backend": backend}


def run_child(args: argparse.Namespace, seq_len: int, window: int | None, kind: WindowKind) -> dict:
    cmd = [sys.executable, __file__, "--one", str(seq_len), str(window or 0), kind.value]
    for name in ("device", "batch", "heads", "kv_heads", "head_dim", "repeats", "threads"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.backend:
        cmd += ["--backend", args.backend]
    if args.sinks:
        cmd += ["--sinks"]
    # A fixed mmap threshold makes glibc return every large freed block to the OS, so the
    # warm-up run's freed memory does not sit in the resident size and hide the next peak.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--min-t", type=int, default=1024)
    parser.add_argument("--max-t", type=int, default=16384)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--backend", choices=("dense", "blocked", "flex"), default=None)
    parser.add_argument("--sinks", action="store_true", help="a learned sink logit per head")
    parser.add_argument("--one", nargs=3, metavar=("T", "WINDOW", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        seq_len, window, kind = int(args.one[0]), int(args.one[1]), WindowKind(args.one[2])
        print(json.dumps(measure_one(args, seq_len, window or None, kind)))
        return

    mib = 2**20
    print(
        f"device={args.device} threads={args.threads} batch={args.batch} heads={args.heads} "
        f"kv_heads={args.kv_heads} head_dim={args.head_dim} fp32, forward+backward, "
        f"best of {args.repeats}; window/chunk W={args.window}; sinks={args.sinks}"
    )
    header = (
        f"{'T':>6} | {'full ms':>9} {'swa ms':>8} {'chunk ms':>8} | "
        f"{'full MiB':>9} {'swa MiB':>8} {'chunk MiB':>9} | backends"
    )
    print(header)
    print("-" * len(header))
    seq_len = args.min_t
    while seq_len <= args.max_t:
        full = run_child(args, seq_len, None, WindowKind.SLIDING)
        swa = run_child(args, seq_len, args.window, WindowKind.SLIDING)
        chunk = run_child(args, seq_len, args.window, WindowKind.CHUNKED)
        print(
            f"{seq_len:>6} | {full['time_s'] * 1e3:>9.1f} {swa['time_s'] * 1e3:>8.1f} "
            f"{chunk['time_s'] * 1e3:>8.1f} | "
            f"{full['peak_bytes'] / mib:>9.1f} {swa['peak_bytes'] / mib:>8.1f} "
            f"{chunk['peak_bytes'] / mib:>9.1f} | "
            f"{full['backend']}/{swa['backend']}/{chunk['backend']}",
            flush=True,
        )
        seq_len *= 2


if __name__ == "__main__":
    main()
