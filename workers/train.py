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

Speed and scale (``TrainSettings``): ``precision`` (autocast to bf16, fp32 master weights
and optimizer state), ``compile`` (``torch.compile``; a model that cannot compile trains
eager after one warning, never a failed run), ``activation_checkpointing``,
``micro_batch_size`` (gradient accumulation), and data parallelism through a
``workers.distributed.Workers``: with several workers each trains on its share of the
same global batch and only the main worker writes checkpoints and reports.
"""

from __future__ import annotations

import itertools
import logging
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
from workers.distributed import Workers

log = logging.getLogger("ropenope.train")

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
    precision: str = "auto"  # auto (bf16 on CUDA, else fp32) | fp32 | bf16
    activation_checkpointing: bool = False
    micro_batch_size: int | None = None  # rows per forward/backward; None: a worker's share

    def __post_init__(self) -> None:
        if self.stages and self.steps != sum(s.steps for s in self.stages):
            raise ValueError(f"steps={self.steps} is not the sum of the stages' steps")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")

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
    return weighted_sum(logits, y, w) / total_weight(w)


def weighted_sum(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed with per-token weights (the numerator of ``weighted_loss``)."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
    return (ce * w.flatten().to(ce.dtype)).sum()


def total_weight(w: torch.Tensor) -> torch.Tensor:
    """The denominator of ``weighted_loss``: the batch's weight sum (never 0)."""
    return w.flatten().to(torch.float32).sum().clamp_min(1e-8)


def autocast_for(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of a precision: bf16 autocast for ``bf16`` (and for ``auto`` on
    CUDA); weights, gradients and optimizer state stay fp32 either way."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def compile_model(module: nn.Module) -> nn.Module:
    """``torch.compile`` of the module to train through (one place, for tests to swap)."""
    return torch.compile(module)


def compile_failure(err: BaseException) -> str:
    """The one-line message of a model that trains eager because it cannot compile: the
    error and the one that caused it (what the compiler's backend raised)."""
    root = err
    while (getattr(root, "inner_exception", None) or root.__cause__) is not None:
        root = getattr(root, "inner_exception", None) or root.__cause__
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    kind = type(err).__name__ if root is err else f"{type(err).__name__}: {type(root).__name__}"
    return (
        f"train.compile: torch.compile cannot compile this model "
        f"({kind}: {lines[0][:300] if lines else ''}); training eager"
    )


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
    compiled: bool = False  # trained through torch.compile (False also after a fallback)
    compile_error: str | None = None  # why it fell back to eager


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
    model: nn.Module | dict[str, Any],
    opt: torch.optim.Optimizer | dict[str, Any],
    step: int,
    rng: np.random.Generator,
    history: list[dict[str, float]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Everything exact resume needs: weights, optimizer moments, step, both RNG states.
    ``model`` and ``opt`` are the modules or their state dicts."""
    state = {
        "model": model if isinstance(model, dict) else model.state_dict(),
        "optimizer": opt if isinstance(opt, dict) else opt.state_dict(),
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
    workers: Workers | None = None,
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

    ``workers`` (default: this process alone) trains data-parallel: every worker calls
    ``train`` with the same arguments; each draws the same global batch and trains on its
    share (see ``workers.distributed``). Only the main worker writes the checkpoint and
    calls ``on_eval``, ``on_step`` and ``between_stages``; a stop it asks for, or a
    divergence, ends every worker at the same step.
    """
    workers = workers or Workers()
    main = workers.is_main
    seed_everything(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model.to(device)
    if settings.activation_checkpointing:
        if not hasattr(model, "activation_checkpointing"):
            raise ValueError(f"{type(model).__name__} has no activation checkpointing")
        model.activation_checkpointing = True
    wrapped = workers.wrap(model, device)  # the module to train through; ``model`` to evaluate
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
        workers.load_state(model, opt, state["model"], state["optimizer"])
        step = int(state["step"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        history = list(state["history"])
        loss_sum, loss_count = state["extra"].get("loss_window", (0.0, 0))
        stage_results = {int(k): v for k, v in state["extra"].get("stage_results", {}).items()}
        resumed_from = step
    highest, lowest = workers.all_max(float(step)), -workers.all_max(-float(step))
    if highest != lowest:  # every worker must continue from the same step
        raise RuntimeError(
            f"the workers of this run found different checkpoints at {checkpoint_path} "
            f"(steps {lowest:.0f} to {highest:.0f}): "
            "several workers per trial need the runs folder on storage that every node of "
            "the trial sees"
        )

    forward = compile_model(wrapped) if settings.compile else wrapped
    compile_error: str | None = None
    autocast = autocast_for(device, settings.precision)
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
            peak_memory_bytes=int(workers.all_max(float(peak_memory_bytes(device)))),
            resumed_from_step=resumed_from,
            stage=current,
            stage_results=stage_results,
            compiled=forward is not wrapped,
            compile_error=compile_error,
        )

    def save_now() -> None:
        if checkpoint_path is None:
            return
        states = workers.state_dicts(model, opt)  # every worker takes part (FSDP gathers)
        if states is None:
            return
        extra = {"loss_window": (loss_sum, loss_count), "stage": current}
        if stage_results:
            extra["stage_results"] = stage_results
        save_checkpoint(checkpoint_path, *states, step, rng, history, extra=extra)

    def run_between(index: int) -> None:
        torch_rng = torch.get_rng_state()
        model.eval()
        whole = workers.plain_model(model)
        stage_results[index] = dict(between_stages(index, whole)) if main else {}
        del whole
        workers.barrier()  # the others wait while the main worker scores
        model.train()
        torch.set_rng_state(torch_rng)
        save_now()

    def gradients(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Backward passes over this worker's rows of the global batch; returns the rows'
        weighted cross-entropy sum (detached). Scaled so that the workers' averaged
        gradient is the gradient of the global batch's weighted mean."""
        share = workers.rows(x.shape[0])
        xs, ys, ws = x[share], y[share], w[share]
        total = total_weight(w)  # the global batch's: every worker drew all of it
        size = settings.micro_batch_size or xs.shape[0]
        firsts = range(0, xs.shape[0], size)
        local = torch.zeros((), device=device)
        for k, first in enumerate(firsts):
            rows = slice(first, first + size)
            with workers.gradient_sync(wrapped, enabled=k == len(firsts) - 1):
                with autocast:
                    logits = forward(xs[rows])
                part = weighted_sum(logits, ys[rows], ws[rows])
                (part / total * workers.world_size).backward()
            local = local + part.detach()
        return workers.all_sum(local) / total

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
            opt.zero_grad(set_to_none=True)
            try:
                loss = gradients(x, y, w)
            except Exception as err:  # compiled: eager from now on; eager: a real error
                if forward is wrapped:
                    raise
                compile_error = compile_failure(err)
                if main:
                    log.warning(compile_error)
                forward = wrapped
                opt.zero_grad(set_to_none=True)
                loss = gradients(x, y, w)
            if not torch.isfinite(loss):
                return finish(RunStatus.DIVERGED, f"non-finite loss at step {step}")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor holding the global norm
                grad_norm = grad_norm.full_tensor()
            if not torch.isfinite(grad_norm):
                return finish(RunStatus.DIVERGED, f"non-finite gradient at step {step}")
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds += time.perf_counter() - t0
            timed_tokens += tokens_per_step
            step += 1
            loss_value = float(loss)
            loss_sum += loss_value
            loss_count += 1
            if on_step is not None and main:
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
                if workers.agree(not all(math.isfinite(v) for v in metrics.values())):
                    return finish(
                        RunStatus.DIVERGED, f"non-finite validation metrics at step {step}"
                    )
                history.append(metrics)
                last_metrics = metrics
            if at_eval or step % settings.checkpoint_every == 0:
                save_now()
            if at_eval:
                asked = bool(on_eval(last_metrics)) if main and on_eval is not None else False
                if workers.agree(asked) and step < ends[-1]:
                    return finish(RunStatus.STOPPED, f"stopped by the caller at step {step}")
        if between_stages is not None and not last:
            run_between(current)
    return finish(RunStatus.COMPLETE, None)
