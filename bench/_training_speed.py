"""Steady-state training speed of one candidate, shared by bench/throughput.py and
bench/data_parallel.py: ``workers.train.train`` itself (autocast, compile and its
fallback, micro-batches, data parallelism) on random tokens, timed from the end of the
warm-up steps (which compile, when compiling) to the end of the run. ``step_cpu_ms`` is
the training thread's CPU time per step over the same steps: on a machine shared with other
work it moves far less than the wall-clock figures (with one torch thread it is the step's
whole cost; with more, the main thread's share)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from space.schema import SweepConfig, load_config
from space.sections import TrainSection
from workers.candidate import build_model
from workers.distributed import Workers
from workers.model import HybridTransformer
from workers.train import train

MIB = 2**20


class ForcedBackend(nn.Module):
    """The model with every layer on one attention backend (``workers.attention.BACKENDS``)."""

    def __init__(self, model: HybridTransformer, backend: str) -> None:
        super().__init__()
        self.model = model
        self.backend = backend

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx, attn_backend=self.backend)


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def matmul_flops(model: HybridTransformer) -> int:
    """Weights every token multiplies by: every matrix, the tied embedding once (as the
    output head; the lookup is free). Training costs 6 FLOPs per weight and token."""
    return sum(p.numel() for p in model.parameters() if p.dim() == 2)


def measure(
    config_path: str,
    preset: str,
    *,
    device: str,
    backend: str | None,
    compile_model: bool,
    precision: str,
    steps: int,
    warmup: int,
    batch_size: int | None = None,
    seq_len: int | None = None,
    workers: Workers | None = None,
) -> dict[str, Any]:
    """Train ``steps`` steps; tokens/s over the steps after ``warmup``, peak memory."""
    config: SweepConfig = load_config(config_path)
    candidate = config.preset_candidate(preset)
    batch = batch_size or config.train.batch_size
    length = seq_len or config.train.seq_len
    dev = torch.device(device)
    model = build_model(candidate, 0)
    vocab = candidate.shape.vocab_size
    trained: nn.Module = model if backend is None else ForcedBackend(model, backend)

    def next_batch(rng, stage):
        x = torch.from_numpy(rng.integers(0, vocab - 8, (batch, length + 1)))
        return x[:, :-1], x[:, 1:], torch.ones(batch, length)

    settings = TrainSection(
        steps=steps,
        batch_size=batch,
        seq_len=length,
        warmup_steps=0,
        eval_every=steps,
        checkpoint_every=steps + 1,
        compile=compile_model,
        precision=precision,
    )
    stamps: list[float] = []
    cpu: list[float] = []  # this thread's CPU time at each step's end

    def on_step(step: int, loss: float, speed: float) -> None:
        stamps.append(time.perf_counter())
        cpu.append(time.thread_time())

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = status_kib("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    outcome = train(
        trained,
        settings,
        next_batch,
        lambda m, stage: {},
        seed=0,
        device=dev,
        on_step=on_step,
        workers=workers,
    )
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = status_kib("VmHWM") * 1024 - base
    if not stamps:  # not the main worker: it does not time the run
        return {"status": outcome.status}
    seconds = stamps[-1] - stamps[warmup - 1]
    return {
        "tokens_per_s": (len(stamps) - warmup) * batch * length / seconds,
        "step_ms": 1e3 * seconds / (len(stamps) - warmup),
        "step_cpu_ms": 1e3 * (cpu[-1] - cpu[warmup - 1]) / (len(cpu) - warmup),
        "peak_bytes": peak,
        "compiled": outcome.compiled,
        "compile_error": outcome.compile_error,
        "matmul_weights": matmul_flops(model),
        "status": outcome.status,
    }


def measure_minimal(
    config_path: str,
    preset: str,
    *,
    device: str,
    steps: int,
    warmup: int,
    batch_size: int | None = None,
    seq_len: int | None = None,
) -> dict[str, Any]:
    """The reference for the trainer's own overhead: the same model and random tokens in
    the shortest AdamW loop (fp32, eager, the sweep's attention backends; no schedule,
    clipping, loss weights or bookkeeping). Tokens/s over the steps after ``warmup``."""
    config: SweepConfig = load_config(config_path)
    candidate = config.preset_candidate(preset)
    batch = batch_size or config.train.batch_size
    length = seq_len or config.train.seq_len
    dev = torch.device(device)
    model = build_model(candidate, 0).to(dev)
    vocab = candidate.shape.vocab_size
    t = config.train
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=t.betas)
    rng = np.random.default_rng(0)
    stamps: list[float] = []
    cpu: list[float] = []
    for _ in range(steps):
        x = torch.from_numpy(rng.integers(0, vocab - 8, (batch, length + 1))).to(dev)
        logits = model(x[:, :-1])
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1)
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # the trainer reads its loss every step too
        stamps.append(time.perf_counter())
        cpu.append(time.thread_time())
    seconds = stamps[-1] - stamps[warmup - 1]
    return {
        "tokens_per_s": (len(stamps) - warmup) * batch * length / seconds,
        "step_ms": 1e3 * seconds / (len(stamps) - warmup),
        "step_cpu_ms": 1e3 * (cpu[-1] - cpu[warmup - 1]) / (len(cpu) - warmup),
        "matmul_weights": matmul_flops(model),
    }
