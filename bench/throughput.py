"""Training throughput of one candidate on the current device: tokens/s, peak memory and
model FLOPs utilisation (MFU), per attention backend, with and without torch.compile.

    python bench/throughput.py                                    # configs/demo.yaml, rnope_swa
    python bench/throughput.py --config configs/gpu.yaml --preset rnope_swa --precision bf16
    python bench/throughput.py --backends blocked --compile on off --precision fp32 bf16 --threads 2

Each row trains ``--steps`` steps through ``workers.train.train`` (the sweep's own loop)
on random tokens in a subprocess of its own; tokens/s counts the steps after ``--warmup``
(compilation happens there). Backends: ``auto`` (the sweep's choice per layer: SDPA's
causal kernel for full attention, FlexAttention on CUDA and the blocked path elsewhere
for windows) or one forced on every layer; ``flex`` has no backward on CPU.

The trainer's own overhead: ``--reference-pairs`` back-to-back pairs of the trainer's
eager fp32 run (``auto`` backends) and the shortest AdamW loop on the same model and
tokens (no schedule, clipping, loss weights or bookkeeping;
``_training_speed.measure_minimal``), which one runs first alternating from pair to pair,
and the median of their tokens/s ratios; also the ratio of their CPU time per step (the
training thread's), which a shared machine's load moves far less. Only that comparison:

    python bench/throughput.py --backends auto --compile off --precision fp32 --threads 1 \
        --reference-pairs 8 --only-reference

What the trainer's step runs beyond that loop, from the profiler's operator counts (which
load does not move): every operator whose calls per step differ, and both loops' self CPU
per step:

    python bench/throughput.py --threads 1 --steps 20 --op-diff

MFU = model FLOPs per second / peak FLOPs per second. Model FLOPs per training token:
6 x the weights a token multiplies by (every matrix; the tied embedding once, as the
output head) + 3 x the attention score FLOPs of the candidate's layers at this length
(``workers.serving_cost.attention_flops_per_token``: windows and chunks count only the keys they
see). Peak: on CUDA the device's dense bf16 tensor-core peak from its data sheet (or
``--peak-tflops``); on CPU a measured one, the best of a few square matmuls of the
precision's dtype on the same threads.

Peak memory as in bench/attention.py: on CUDA ``max_memory_allocated`` of the timed run; on
CPU the resident-set high-water mark of a second, short run (``--warmup`` + 2 steps) in a
child with a fixed glibc mmap threshold, so that freed tensors leave the resident set. That
setting makes every large allocation a system call and halves CPU training speed, so the
timed run keeps the default allocator, as a sweep's trial does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _training_speed import MIB, measure, measure_minimal  # noqa: E402

from space.schema import load_config  # noqa: E402
from workers.serving_cost import attention_flops_per_token  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets.
CUDA_BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}


def cuda_peak_flops() -> tuple[float, str]:
    name = torch.cuda.get_device_name()
    for key, tflops in CUDA_BF16_PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12, f"{name}: data-sheet dense bf16 peak"
    return matmul_peak_flops("bf16", torch.device("cuda")), f"{name}: measured bf16 matmul"


def matmul_peak_flops(precision: str, device: torch.device, size: int = 2048) -> float:
    """The best FLOP/s of a few ``size`` x ``size`` matmuls in the precision's dtype."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


# The reference row: the same model in the shortest AdamW loop (fp32, eager).
MINIMAL = "minimal"


def measure_one(args: argparse.Namespace, backend: str, compiled: bool, precision: str) -> dict:
    torch.set_num_threads(args.threads)
    if backend == MINIMAL:
        result = measure_minimal(
            args.config,
            args.preset,
            device=args.device,
            steps=args.steps,
            warmup=args.warmup,
            batch_size=args.batch,
            seq_len=args.seq_len,
        )
        result.update(peak_bytes=float("nan"), compiled=False)
    else:
        result = measure(
            args.config,
            args.preset,
            device=args.device,
            backend=None if backend == "auto" else backend,
            compile_model=compiled,
            precision=precision,
            steps=args.steps,
            warmup=args.warmup,
            batch_size=args.batch,
            seq_len=args.seq_len,
        )
    device = torch.device(args.device)
    if args.peak_tflops:
        result["peak_flops"], result["peak_source"] = args.peak_tflops * 1e12, "--peak-tflops"
    elif device.type == "cuda":
        result["peak_flops"], result["peak_source"] = cuda_peak_flops()
    else:
        result["peak_flops"] = matmul_peak_flops(precision, device)
        result["peak_source"] = f"measured {precision} matmul, {args.threads} thread(s)"
    return result


# In the CPU memory run only: glibc returns every large freed block to the OS at once.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def run_child(
    args: argparse.Namespace, backend: str, compiled: bool, precision: str, memory: bool = False
) -> dict:
    """One measurement in a fresh process: the timed run, or (``memory``) the CPU memory run."""
    cmd = [sys.executable, __file__, "--one", backend, "1" if compiled else "0", precision]
    steps = args.warmup + 2 if memory else args.steps
    for name, value in (("steps", steps), ("config", args.config), ("preset", args.preset)):
        cmd += [f"--{name}", str(value)]
    for name in ("device", "warmup", "threads"):
        cmd += [f"--{name}", str(getattr(args, name))]
    for name in ("batch", "seq_len", "peak_tflops"):
        if getattr(args, name):
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = {**os.environ, **(MEMORY_ENV if memory else {})}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--preset", default="rnope_swa")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backends", nargs="+", default=["auto", "dense", "blocked", "flex"])
    parser.add_argument("--compile", nargs="+", choices=("off", "on"), default=["off", "on"])
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="default: the config's")
    parser.add_argument("--seq-len", type=int, default=None, help="default: the config's")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the peak")
    parser.add_argument(
        "--reference-pairs",
        type=int,
        default=3,
        help="back-to-back runs of the trainer and a minimal AdamW loop (0: none)",
    )
    parser.add_argument(
        "--only-reference",
        action="store_true",
        help="only the trainer vs minimal AdamW loop pairs (no backend table)",
    )
    parser.add_argument(
        "--op-diff",
        action="store_true",
        help="only the operators the trainer runs per step beyond the minimal loop (profiler)",
    )
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        backend, compiled, precision = args.one[0], args.one[1] == "1", args.one[2]
        print(json.dumps(measure_one(args, backend, compiled, precision)))
        return

    if args.op_diff:
        op_diff(args)
        return
    precisions = args.precision or (
        ["bf16"] if args.device.startswith("cuda") else ["fp32", "bf16"]
    )
    config = load_config(args.config)
    candidate = config.preset_candidate(args.preset)
    seq_len = args.seq_len or config.train.seq_len
    batch = args.batch or config.train.batch_size
    attention = 3 * attention_flops_per_token(candidate.shape, candidate.layers, seq_len)
    print(
        f"{args.config} preset {args.preset} ({candidate.name}): batch {batch} x T {seq_len}, "
        f"device={args.device}, threads={args.threads}, {args.steps} steps "
        f"(tokens/s over the last {args.steps - args.warmup})"
    )
    if not args.only_reference:
        table(args, precisions, attention)
    reference_pairs(args)


def table(args: argparse.Namespace, precisions: list[str], attention: float) -> None:
    """One row per backend, compile setting and precision."""
    header = (
        f"{'backend':<8} {'compile':<7} {'prec':<5} | {'tokens/s':>9} {'step ms':>8} "
        f"{'peak MiB':>9} | {'TFLOP/s':>8} {'peak':>8} {'MFU':>6}"
    )
    print(header)
    print("-" * len(header))
    source = ""
    for backend in args.backends:
        for compiled in (c == "on" for c in args.compile):
            for precision in precisions:
                row = f"{backend:<8} {'on' if compiled else 'off':<7} {precision:<5} | "
                if backend == "flex" and args.device == "cpu":
                    print(row + "n/a: FlexAttention has no backward on CPU")
                    continue
                r = run_child(args, backend, compiled, precision)
                if "error" not in r and not args.device.startswith("cuda"):
                    mem = run_child(args, backend, compiled, precision, memory=True)
                    r["peak_bytes"] = mem.get("peak_bytes", float("nan"))
                if "error" in r:
                    print(row + f"failed: {r['error']}")
                    continue
                flops = (6 * r["matmul_weights"] + attention) * r["tokens_per_s"]
                note = "" if r["compiled"] or not compiled else "  (fell back to eager)"
                print(
                    row + f"{r['tokens_per_s']:>9.0f} {r['step_ms']:>8.1f} "
                    f"{r['peak_bytes'] / MIB:>9.1f} | {flops / 1e12:>8.4f} "
                    f"{r['peak_flops'] / 1e12:>8.3f} {flops / r['peak_flops']:>6.1%}{note}",
                    flush=True,
                )
                source = r["peak_source"]
    print(f"peak: {source}")


def reference_pairs(args: argparse.Namespace) -> None:
    """The trainer's own overhead: its eager fp32 run against the shortest AdamW loop, in
    back-to-back pairs (a shared machine's load drifts between runs), which runs first
    alternating from pair to pair; the median ratio of tokens/s, and of CPU time per step."""
    ratios, cpu_ratios = [], []
    for pair in range(args.reference_pairs):
        order = ("auto", MINIMAL) if pair % 2 == 0 else (MINIMAL, "auto")
        done = {kind: run_child(args, kind, False, "fp32") for kind in order}
        trainer, ref = done["auto"], done[MINIMAL]
        if "error" in trainer or "error" in ref:
            print(f"minimal AdamW loop: failed: {trainer.get('error') or ref.get('error')}")
            return
        ratios.append(trainer["tokens_per_s"] / ref["tokens_per_s"])
        cpu_ratios.append(ref["step_cpu_ms"] / trainer["step_cpu_ms"])
        print(
            f"ropenope train (auto, eager, fp32) {trainer['tokens_per_s']:.0f} tokens/s, "
            f"minimal AdamW loop {ref['tokens_per_s']:.0f} tokens/s: {ratios[-1]:.3f} "
            f"(CPU ms per step {trainer['step_cpu_ms']:.1f} vs {ref['step_cpu_ms']:.1f}: "
            f"{cpu_ratios[-1]:.3f})",
            flush=True,
        )
    if ratios:
        print(
            f"ropenope train / minimal AdamW loop, median of pairs: {statistics.median(ratios):.3f}"
            f" (tokens/s); {statistics.median(cpu_ratios):.3f} (CPU time per step)"
        )


def op_profile(args: argparse.Namespace, kind: str) -> tuple[dict[str, tuple[float, float]], float]:
    """Per step: each operator's calls and self CPU microseconds (torch.profiler) over a
    whole eager fp32 run of the trainer (``auto``) or the minimal loop; and the training
    thread's CPU ms per step of an unprofiled run just before (Python included)."""
    from _training_speed import measure, measure_minimal
    from torch.profiler import ProfilerActivity, profile

    kw = dict(device=args.device, steps=args.steps, warmup=args.warmup)
    kw.update(batch_size=args.batch, seq_len=args.seq_len)

    def run() -> dict:
        if kind == MINIMAL:
            return measure_minimal(args.config, args.preset, **kw)
        return measure(args.config, args.preset, backend=None, compile_model=False,
                       precision="fp32", **kw)  # fmt: skip

    step_cpu_ms = run()["step_cpu_ms"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    ops = {
        e.key: (e.count / args.steps, e.self_cpu_time_total / args.steps)
        for e in prof.key_averages()
    }
    return ops, step_cpu_ms


def _mean_ops(profiles: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    keys = set().union(*profiles)
    zero = (0.0, 0.0)
    return {
        k: tuple(statistics.mean(p.get(k, zero)[i] for p in profiles) for i in (0, 1)) for k in keys
    }


def op_diff(args: argparse.Namespace) -> None:
    """What the trainer's step runs beyond the minimal loop's, read from the profiler's
    operator counts, which the machine's load does not move (their times it does): every
    operator whose calls per step differ, the extra calls priced at the trainer's time per
    call, and both loops' self CPU per step summed over all operators (model building
    included, spread over the steps). Two profiles each, in the order trainer, minimal,
    minimal, trainer, averaged."""
    torch.set_num_threads(args.threads)
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {"auto": [], MINIMAL: []}
    cpu: dict[str, list[float]] = {"auto": [], MINIMAL: []}
    for kind in ("auto", MINIMAL, MINIMAL, "auto"):  # each first once: load drifts
        ops, step_cpu_ms = op_profile(args, kind)
        runs[kind].append(ops)
        cpu[kind].append(step_cpu_ms)
    trainer, minimal = (_mean_ops(runs[k]) for k in ("auto", MINIMAL))
    print("| operator | trainer calls/step | minimal calls/step | trainer self CPU ms/step |")
    print("| --- | ---: | ---: | ---: |")
    for key in sorted(trainer.keys() | minimal.keys()):
        (tc, tt), (mc, _) = trainer.get(key, (0.0, 0.0)), minimal.get(key, (0.0, 0.0))
        if abs(tc - mc) >= 0.5:
            print(f"| {key} | {tc:.1f} | {mc:.1f} | {tt / 1e3:.3f} |")
    # The extra calls priced at the trainer's own time per call of that operator: what the
    # trainer's step costs beyond the minimal loop's, free of the drift in shared ops' times.
    extra = (
        sum(
            (tc - minimal.get(key, (0.0, 0.0))[0]) * tt / tc
            for key, (tc, tt) in trainer.items()
            if tc > 0 and not key.startswith("autograd::engine")  # its children count
        )
        / 1e3
    )
    total_t = sum(t for _, t in trainer.values()) / 1e3
    total_m = sum(t for _, t in minimal.values()) / 1e3
    print(
        f"\nthe extra calls at the trainer's time per call: {extra:.2f} ms per step "
        f"({extra / total_t:.2%} of its operators' self CPU)\n"
        f"self CPU per step over all operators: trainer {total_t:.1f} ms, minimal "
        f"{total_m:.1f} ms; the training thread's CPU per step unprofiled (Python "
        f"included): trainer {statistics.mean(cpu['auto']):.1f} ms, minimal "
        f"{statistics.mean(cpu[MINIMAL]):.1f} ms (these move with the machine's load)"
    )


if __name__ == "__main__":
    main()
