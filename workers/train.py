"""The training loop: AdamW, warmup + cosine decay, clipping, exact checkpoint/resume, stages.

The loop knows nothing of Ray or MLflow. It calls ``on_eval(metrics)`` at every
evaluation; returning ``True`` asks it to stop (a scheduler's early stop). A
non-finite loss or gradient ends the run with status ``diverged`` and the last
good metrics; it never raises for that.

A run is one or more stages (``TrainSettings.stages``), trained in order with one
optimizer, one step counter and one checkpoint: each stage has its own sequence length,
batch size and learning-rate schedule (warmup, then cosine decay over the stage), and the
caller switches data and model per stage (``begin_stage``). The AdamW moments carry over
from stage to stage, as when pretraining continues. The checkpoint records the stage and
the step, so a run killed in any stage resumes exactly.
"""

from __future__ import annotations

import itertools
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from space.outcomes import RunStatus
from workers import checkpoint

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x (B,T), y (B,T), weights (B,T)


@dataclass(frozen=True)
class StageSettings:
    """One stage: its steps, the rows it trains on and its learning-rate schedule."""

    steps: int
    seq_len: int
    batch_size: int
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50


@dataclass(frozen=True)
class TrainSettings:
    """``steps``, ``batch_size``, ``seq_len`` and the schedule are the one stage of a plain run;
    with ``stages`` they are the stages' and ``steps`` must be their sum."""

    steps: int
    batch_size: int
    seq_len: int
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.95)
    eval_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    compile: bool = False
    stages: tuple[StageSettings, ...] = ()

    def __post_init__(self) -> None:
        if self.stages and self.steps != sum(s.steps for s in self.stages):
            raise ValueError(f"steps={self.steps} is not the sum of the stages' steps")

    def plan(self) -> tuple[StageSettings, ...]:
        """The stages to train, in order (one for a plain run)."""
        if self.stages:
            return self.stages
        one = StageSettings(
            self.steps, self.seq_len, self.batch_size, self.lr, self.min_lr_ratio, self.warmup_steps
        )
        return (one,)


def lr_at(step: int, s: TrainSettings | StageSettings) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio``.

    ``step`` counts from the start of the stage ``s`` (a plain run is one stage)."""
    if s.warmup_steps and step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(1, s.steps - s.warmup_steps)
    progress = min(1.0, (step - s.warmup_steps) / span)
    floor = s.lr * s.min_lr_ratio
    return floor + (s.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def weighted_loss(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged with per-token weights (answers up-weighted, filler down)."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
    w = w.flatten().to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1e-8)


@dataclass
class TrainOutcome:
    status: str
    reason: str | None
    step: int  # optimizer steps done
    history: list[dict[str, float]] = field(default_factory=list)
    last_metrics: dict[str, float] = field(default_factory=dict)
    tokens_per_s: float = 0.0
    train_seconds: float = 0.0
    peak_memory_bytes: int = 0
    resumed_from_step: int | None = None
    stage: int = 0  # index of the stage the run was in when it ended
    stage_results: dict[int, dict[str, float]] = field(default_factory=dict)  # between stages


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on norms' gains (1-D); decay on matrices and the tied embedding.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def peak_memory_bytes(device: torch.device) -> int:
    """Peak CUDA allocation on GPU; on CPU the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(rss_kib) * 1024


def save_checkpoint(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    rng: np.random.Generator,
    history: list[dict[str, float]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Everything exact resume needs: weights, optimizer moments, step, both RNG states."""
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "history": history,
        "extra": extra or {},
    }
    checkpoint.save(path, state)  # atomic, the previous one kept: see workers.checkpoint


def train(
    model: nn.Module,
    settings: TrainSettings,
    next_batch: Callable[[np.random.Generator, int], Batch],
    evaluate: Callable[[nn.Module, int], dict[str, float]],
    *,
    device: torch.device,
    on_eval: Callable[[dict[str, float]], bool | None] | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    checkpoint_path: Path | None = None,
    resume: bool = True,
    begin_stage: Callable[[int], None] | None = None,
    between_stages: Callable[[int, nn.Module], dict[str, float]] | None = None,
) -> TrainOutcome:
    """Train ``model`` for ``settings.steps`` optimizer steps, stage after stage.

    ``next_batch(rng, stage)`` draws one batch of stage ``stage`` (0-based) from a numpy
    Generator whose state is checkpointed, so a resumed run sees exactly the batches an
    uninterrupted run would. ``evaluate(model, stage)`` returns validation metrics (e.g.
    ``val_bpb``); the loop evaluates every ``eval_every`` steps and at the end of each stage.
    ``begin_stage(stage)`` runs before a stage's first step (and before the rest of a stage a
    resumed run continues): the place to switch the model's layers. ``between_stages(stage,
    model)`` runs after every stage but the last (e.g. to score it); its result is kept in the
    checkpoint, and the torch RNG is restored after it, so training continues as if it had not
    run. ``on_step(step, loss, tokens_per_s)`` is for progress display only.
    """
    seed_everything(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model.to(device)
    opt = torch.optim.AdamW(
        _param_groups(model, settings.weight_decay), lr=settings.lr, betas=settings.betas
    )
    plan = settings.plan()
    ends = list(itertools.accumulate(stage.steps for stage in plan))
    starts = [0, *ends[:-1]]
    multi_stage = len(plan) > 1
    step = 0
    history: list[dict[str, float]] = []
    loss_sum, loss_count = 0.0, 0  # training loss since the last evaluation
    stage_results: dict[int, dict[str, float]] = {}
    resumed_from = None
    found = checkpoint.load_latest(checkpoint_path) if resume and checkpoint_path else None
    if found is not None:
        state, _ = found
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        history = list(state["history"])
        loss_sum, loss_count = state["extra"].get("loss_window", (0.0, 0))
        stage_results = {int(k): v for k, v in state["extra"].get("stage_results", {}).items()}
        resumed_from = step

    forward = torch.compile(model) if settings.compile else model
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    train_seconds = 0.0
    timed_tokens = 0
    last_metrics: dict[str, float] = dict(history[-1]) if history else {}
    current = 0

    def tokens_at(n_steps: int) -> int:
        """Training tokens seen after ``n_steps`` optimizer steps (stages differ in rows)."""
        return sum(
            min(max(n_steps - start, 0), stage.steps) * stage.batch_size * stage.seq_len
            for start, stage in zip(starts, plan, strict=True)
        )

    def speed() -> float:
        return timed_tokens / train_seconds if train_seconds else 0.0

    def finish(status: str, reason: str | None) -> TrainOutcome:
        return TrainOutcome(
            status=status,
            reason=reason,
            step=step,
            history=history,
            last_metrics=last_metrics,
            tokens_per_s=speed(),
            train_seconds=train_seconds,
            peak_memory_bytes=peak_memory_bytes(device),
            resumed_from_step=resumed_from,
            stage=current,
            stage_results=stage_results,
        )

    def save_now() -> None:
        if checkpoint_path is None:
            return
        extra = {"loss_window": (loss_sum, loss_count), "stage": current}
        if stage_results:
            extra["stage_results"] = stage_results
        save_checkpoint(checkpoint_path, model, opt, step, rng, history, extra=extra)

    def run_between(index: int) -> None:
        torch_rng = torch.get_rng_state()
        model.eval()
        stage_results[index] = dict(between_stages(index, model))
        model.train()
        torch.set_rng_state(torch_rng)
        save_now()

    model.train()
    for current, stage in enumerate(plan):
        last = current == len(plan) - 1
        if step >= ends[current]:  # trained before a resume; the between-stage work may be owed
            if between_stages is not None and not last and current not in stage_results:
                if begin_stage is not None:
                    begin_stage(current)
                run_between(current)
            continue
        if begin_stage is not None:
            begin_stage(current)
        tokens_per_step = stage.batch_size * stage.seq_len
        while step < ends[current]:
            t0 = time.perf_counter()
            x, y, w = (t.to(device, non_blocking=True) for t in next_batch(rng, current))
            lr = lr_at(step - starts[current], stage)
            for group in opt.param_groups:
                group["lr"] = lr
            with autocast:
                logits = forward(x)
            loss = weighted_loss(logits, y, w)
            if not torch.isfinite(loss):
                return finish(RunStatus.DIVERGED, f"non-finite loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            if not torch.isfinite(grad_norm):
                return finish(RunStatus.DIVERGED, f"non-finite gradient at step {step}")
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds += time.perf_counter() - t0
            timed_tokens += tokens_per_step
            step += 1
            loss_value = float(loss.detach())
            loss_sum += loss_value
            loss_count += 1
            if on_step is not None:
                on_step(step, loss_value, timed_tokens / max(train_seconds, 1e-9))

            at_eval = step % settings.eval_every == 0 or step == ends[current]
            if at_eval:
                model.eval()
                with torch.no_grad(), autocast:
                    val = evaluate(model, current)
                model.train()
                metrics = {
                    "step": float(step),
                    "tokens": float(tokens_at(step)),
                    "train_loss": loss_sum / max(1, loss_count),
                    "lr": lr,
                    "tokens_per_s": timed_tokens / max(train_seconds, 1e-9),
                    **({"stage": float(current + 1)} if multi_stage else {}),
                    **val,
                }
                loss_sum, loss_count = 0.0, 0
                if not all(math.isfinite(v) for v in metrics.values()):
                    return finish(
                        RunStatus.DIVERGED, f"non-finite validation metrics at step {step}"
                    )
                history.append(metrics)
                last_metrics = metrics
            if at_eval or step % settings.checkpoint_every == 0:
                save_now()
            if at_eval and on_eval is not None and on_eval(last_metrics) and step < ends[-1]:
                return finish(RunStatus.STOPPED, f"stopped by the caller at step {step}")
        if between_stages is not None and not last:
            run_between(current)
    return finish(RunStatus.COMPLETE, None)
