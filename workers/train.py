"""The training loop: AdamW, warmup + cosine decay, clipping, exact checkpoint/resume, stages.

The loop knows nothing of Ray or MLflow. It calls ``on_eval(metrics)`` at every
evaluation; returning ``True`` asks it to stop (a scheduler's early stop). A
non-finite loss or gradient ends the run with status ``diverged`` and the last
good metrics; it never raises for that.

A run is one or more stages (``TrainSection.stage_plans()``: one ``space.stages.StagePlan``
each), trained in order with one optimizer, one step counter and one checkpoint: each stage
has its own sequence length, batch size and learning-rate schedule (warmup, then cosine
decay over the stage), and the caller switches data and model per stage (``begin_stage``).
The AdamW moments carry over from stage to stage, as when pretraining continues. The
checkpoint records the stage and the step (:class:`RunState` says what else), so a run
killed in any stage resumes exactly.

The settings are the sweep file's train section itself (``space.sections.TrainSection``):
its defaults are the only ones. Speed and scale: ``precision`` (autocast to bf16, fp32
master weights and optimizer state), ``compile`` (``torch.compile``; a model that cannot
compile trains eager after one warning, never a failed run), ``activation_checkpointing``,
``micro_batch_size`` (gradient accumulation), and data parallelism through a
``workers.distributed.Workers``: with several workers each trains on its share of the
same global batch and only the main worker writes checkpoints and reports.
"""

from __future__ import annotations

import contextlib
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
from space.sections import TrainSection
from space.stages import StagePlan
from workers import checkpoint
from workers.distributed import Workers

log = logging.getLogger("ropenope.train")

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x (B,T), y (B,T), weights (B,T)


def lr_at(step: int, s: StagePlan) -> float:
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


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a precision: bf16 autocast for ``bf16`` (and for ``auto`` on
    CUDA); weights, gradients and optimizer state stay fp32 either way. In fp32 no context
    at all: a disabled ``torch.autocast`` still costs its entry and exit every step."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


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


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups: no decay on norms' gains (1-D); decay on matrices and the
    tied embedding. A model with ``lr_scales()`` (µP, ``workers.model``) gets a group per
    scale whose ``lr_scale`` multiplies the schedule's learning rate; its weight decay is
    divided by the same scale, so that the decay per step (lr x weight_decay) stays the
    same, as the ``mup`` package's MuAdamW does."""
    scales = model.lr_scales() if hasattr(model, "lr_scales") else {}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((scales.get(name, 1.0), p.dim() >= 2), []).append(p)
    return [
        {
            "params": params,
            "weight_decay": weight_decay / scale if decay else 0.0,
            "lr_scale": scale,
        }
        for (scale, decay), params in sorted(
            groups.items(), key=lambda kv: (kv[0][0] != 1.0, not kv[0][1])
        )
    ]


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's learning rate on every group, times the group's ``lr_scale`` (µP)."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


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


@dataclass(frozen=True)
class Hooks:
    """The caller's side of a run (see :func:`train`)."""

    next_batch: Callable[[np.random.Generator, int], Batch]
    evaluate: Callable[[nn.Module, int], dict[str, float]]
    on_eval: Callable[[dict[str, float]], bool | None] | None = None
    on_step: Callable[[int, float, float], None] | None = None
    begin_stage: Callable[[int], None] | None = None
    between_stages: Callable[[int, nn.Module], dict[str, float]] | None = None


@dataclass
class RunState:
    """What a run carries from step to step. ``to_checkpoint``/``restore`` are the one place
    that says what a checkpoint keeps of it (the speed counters are this process's own)."""

    step: int = 0  # optimizer steps done, counting on across stages
    stage: int = 0  # the stage being trained
    history: list[dict[str, float]] = field(default_factory=list)
    loss_sum: float = 0.0  # training loss since the last evaluation
    loss_count: int = 0
    stage_results: dict[int, dict[str, float]] = field(default_factory=dict)
    resumed_from: int | None = None
    train_seconds: float = 0.0  # not saved: speed is measured per process
    timed_tokens: int = 0

    def checkpoint_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"loss_window": (self.loss_sum, self.loss_count)}
        extra["stage"] = self.stage
        if self.stage_results:
            extra["stage_results"] = self.stage_results
        return extra

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``step``, ``history`` and ``extra``."""
        self.step = int(saved["step"])
        self.history = list(saved["history"])
        self.loss_sum, self.loss_count = saved["extra"].get("loss_window", (0.0, 0))
        self.stage_results = {int(k): v for k, v in saved["extra"].get("stage_results", {}).items()}
        self.resumed_from = self.step

    @property
    def last_metrics(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    def speed(self) -> float:
        return self.timed_tokens / max(self.train_seconds, 1e-9)


class _Run:
    """One call of :func:`train`: the model, optimizer, data RNG and :class:`RunState`, and
    the parts of the loop as named steps."""

    def __init__(
        self,
        model: nn.Module,
        settings: TrainSection,
        seed: int,
        device: torch.device,
        workers: Workers,
        checkpoint_path: Path | None,
        hooks: Hooks,
    ) -> None:
        self.model, self.settings, self.device, self.workers = model, settings, device, workers
        self.checkpoint_path = checkpoint_path
        self.hooks = hooks
        self.main = workers.is_main
        seed_everything(seed)
        self.rng = np.random.default_rng(seed)
        model.to(device)
        if settings.activation_checkpointing:
            if not hasattr(model, "activation_checkpointing"):
                raise ValueError(f"{type(model).__name__} has no activation checkpointing")
            model.activation_checkpointing = True
        self.wrapped = workers.wrap(model, device)  # the module to train through
        self.opt = torch.optim.AdamW(
            param_groups(model, settings.weight_decay), lr=settings.lr, betas=settings.betas
        )
        self.plan = settings.stage_plans()
        self.ends = list(itertools.accumulate(stage.steps for stage in self.plan))
        self.starts = [0, *self.ends[:-1]]
        self.state = RunState()
        self.forward: nn.Module = self.wrapped  # compiled by :meth:`compile`
        self.compile_error: str | None = None
        self.autocast = autocast_for(device, settings.precision)

    def compile(self) -> None:
        if self.settings.compile:
            self.forward = compile_model(self.wrapped)

    # -- checkpoints ---------------------------------------------------------------------

    def restore(self, resume: bool) -> None:
        """Continue from the newest checkpoint (weights, moments, RNGs, state) when there is
        one; every worker must find the same step."""
        path = self.checkpoint_path
        found = checkpoint.load_latest(path) if resume and path else None
        if found is not None:
            saved, _ = found
            self.workers.load_state(self.model, self.opt, saved["model"], saved["optimizer"])
            self.rng.bit_generator.state = saved["numpy_rng"]
            torch.set_rng_state(saved["torch_rng"])
            self.state.restore(saved)
        step = float(self.state.step)
        highest, lowest = self.workers.all_max(step), -self.workers.all_max(-step)
        if highest != lowest:  # every worker must continue from the same step
            raise RuntimeError(
                f"the workers of this run found different checkpoints at {path} "
                f"(steps {lowest:.0f} to {highest:.0f}): "
                "several workers per trial need the runs folder on storage that every node of "
                "the trial sees"
            )

    def save(self) -> None:
        if self.checkpoint_path is None:
            return
        states = self.workers.state_dicts(self.model, self.opt)  # all take part (FSDP gathers)
        if states is None:
            return
        st = self.state
        save_checkpoint(
            self.checkpoint_path, *states, st.step, self.rng, st.history, st.checkpoint_extra()
        )

    # -- stages ----------------------------------------------------------------------------

    def stages(self) -> TrainOutcome:
        """Every stage in order, from where the state is; the outcome of the run."""
        between = self.hooks.between_stages
        self.model.train()
        for index, stage in enumerate(self.plan):
            self.state.stage = index
            last = index == len(self.plan) - 1
            if self.state.step >= self.ends[index]:  # trained before a resume
                if between is not None and not last and index not in self.state.stage_results:
                    self.begin(index)  # the between-stage work is still owed
                    self.run_between(index)
                continue
            self.begin(index)
            ended = self.stage(index, stage)
            if ended is not None:
                return ended
            if between is not None and not last:
                self.run_between(index)
        return self.finish(RunStatus.COMPLETE, None)

    def begin(self, index: int) -> None:
        if self.hooks.begin_stage is not None:
            self.hooks.begin_stage(index)

    def run_between(self, index: int) -> None:
        """The caller's work between two stages, as if it had not run: the torch RNG is
        restored after it and its result checkpointed."""
        torch_rng = torch.get_rng_state()
        self.model.eval()
        whole = self.workers.plain_model(self.model)
        between = self.hooks.between_stages
        self.state.stage_results[index] = dict(between(index, whole)) if self.main else {}
        del whole
        self.workers.barrier()  # the others wait while the main worker scores
        self.model.train()
        torch.set_rng_state(torch_rng)
        self.save()

    def stage(self, index: int, stage: StagePlan) -> TrainOutcome | None:
        """Train one stage to its end; an outcome when the run ends inside it."""
        st = self.state
        while st.step < self.ends[index]:
            lr = lr_at(st.step - self.starts[index], stage)
            problem = self.optimizer_step(index, lr, stage.batch_size * stage.seq_len)
            if problem is not None:
                return self.finish(RunStatus.DIVERGED, problem)
            at_eval = st.step % self.settings.eval_every == 0 or st.step == self.ends[index]
            if at_eval and not self.evaluate(index, lr):
                return self.finish(
                    RunStatus.DIVERGED, f"non-finite validation metrics at step {st.step}"
                )
            if at_eval or st.step % self.settings.checkpoint_every == 0:
                self.save()
            if at_eval and self.stop_asked():
                return self.finish(RunStatus.STOPPED, f"stopped by the caller at step {st.step}")
        return None

    # -- one step ------------------------------------------------------------------------------

    def optimizer_step(self, index: int, lr: float, tokens_per_step: int) -> str | None:
        """One optimizer step of stage ``index``; why the run diverged, or None."""
        st = self.state
        t0 = time.perf_counter()
        batch = self.hooks.next_batch(self.rng, index)
        x, y, w = (t.to(self.device, non_blocking=True) for t in batch)
        set_lr(self.opt, lr)
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_and_gradients(x, y, w)
        params = self.model.parameters()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.settings.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor holding the global norm
            grad_norm = grad_norm.full_tensor()
        # One read of the device per step (a sync on a GPU) for both checks and the loss
        # curve; a non-finite loss makes a non-finite gradient, which is clipped but never
        # applied: the run ends here before the optimizer steps.
        loss_value, norm_value = torch.stack((loss.float(), grad_norm.float())).tolist()
        if not math.isfinite(loss_value):
            return f"non-finite loss at step {st.step}"
        if not math.isfinite(norm_value):
            return f"non-finite gradient at step {st.step}"
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        st.train_seconds += time.perf_counter() - t0
        st.timed_tokens += tokens_per_step
        st.step += 1
        st.loss_sum += loss_value
        st.loss_count += 1
        if self.hooks.on_step is not None and self.main:
            self.hooks.on_step(st.step, loss_value, st.speed())
        return None

    def loss_and_gradients(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """:meth:`gradients` through the compiled model; a model that cannot compile falls
        back to eager once (one warning), and an eager error is a real one."""
        try:
            return self.gradients(x, y, w)
        except Exception as err:
            if self.forward is self.wrapped:
                raise
            self.compile_error = compile_failure(err)
            if self.main:
                log.warning(self.compile_error)
            self.forward = self.wrapped
            self.opt.zero_grad(set_to_none=True)
            return self.gradients(x, y, w)

    def gradients(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Backward passes over this worker's rows of the global batch; returns the rows'
        weighted cross-entropy sum (detached). Scaled so that the workers' averaged
        gradient is the gradient of the global batch's weighted mean."""
        workers = self.workers
        share = workers.rows(x.shape[0])
        xs, ys, ws = x[share], y[share], w[share]
        total = total_weight(w)  # the global batch's: every worker drew all of it
        size = self.settings.micro_batch_size or xs.shape[0]
        firsts = range(0, xs.shape[0], size)
        parts = []
        for k, first in enumerate(firsts):
            rows = slice(first, first + size)
            with workers.gradient_sync(self.wrapped, enabled=k == len(firsts) - 1):
                with self.autocast:
                    logits = self.forward(xs[rows])
                part = weighted_sum(logits, ys[rows], ws[rows])
                scaled = part / total
                if workers.world_size > 1:  # times 1 is exact: one worker skips the op
                    scaled = scaled * workers.world_size
                scaled.backward()
            parts.append(part.detach())
        local = parts[0]  # the micro-batches' sums added in order, with no 0 to start from
        for more in parts[1:]:
            local = local + more
        return workers.all_sum(local) / total

    # -- evaluation and stopping -----------------------------------------------------------

    def evaluate(self, index: int, lr: float) -> bool:
        """Validation metrics into the history; False when any is not finite."""
        st = self.state
        self.model.eval()
        with torch.no_grad(), self.autocast:
            val = self.hooks.evaluate(self.model, index)
        self.model.train()
        metrics = {
            "step": float(st.step),
            "tokens": float(self.tokens_at(st.step)),
            "train_loss": st.loss_sum / max(1, st.loss_count),
            "lr": lr,
            "tokens_per_s": st.speed(),
            **({"stage": float(index + 1)} if len(self.plan) > 1 else {}),
            **val,
        }
        st.loss_sum, st.loss_count = 0.0, 0
        if self.workers.agree(not all(math.isfinite(v) for v in metrics.values())):
            return False
        st.history.append(metrics)
        return True

    def stop_asked(self) -> bool:
        """Whether the caller's ``on_eval`` asks to stop before the run's last step."""
        on_eval = self.hooks.on_eval
        asked = (
            bool(on_eval(self.state.last_metrics)) if self.main and on_eval is not None else False
        )
        return self.workers.agree(asked) and self.state.step < self.ends[-1]

    def tokens_at(self, n_steps: int) -> int:
        """Training tokens seen after ``n_steps`` optimizer steps (stages differ in rows)."""
        return sum(
            min(max(n_steps - start, 0), stage.steps) * stage.batch_size * stage.seq_len
            for start, stage in zip(self.starts, self.plan, strict=True)
        )

    def finish(self, status: str, reason: str | None) -> TrainOutcome:
        st = self.state
        return TrainOutcome(
            status=status,
            reason=reason,
            step=st.step,
            history=st.history,
            last_metrics=st.last_metrics,
            tokens_per_s=st.timed_tokens / st.train_seconds if st.train_seconds else 0.0,
            train_seconds=st.train_seconds,
            peak_memory_bytes=int(self.workers.all_max(float(peak_memory_bytes(self.device)))),
            resumed_from_step=st.resumed_from,
            stage=st.stage,
            stage_results=st.stage_results,
            compiled=self.forward is not self.wrapped,
            compile_error=self.compile_error,
        )


def train(
    model: nn.Module,
    settings: TrainSection,
    next_batch: Callable[[np.random.Generator, int], Batch],
    evaluate: Callable[[nn.Module, int], dict[str, float]],
    *,
    seed: int,
    device: torch.device,
    on_eval: Callable[[dict[str, float]], bool | None] | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    checkpoint_path: Path | None = None,
    resume: bool = True,
    begin_stage: Callable[[int], None] | None = None,
    between_stages: Callable[[int, nn.Module], dict[str, float]] | None = None,
    workers: Workers | None = None,
) -> TrainOutcome:
    """Train ``model`` through ``settings.stage_plans()``, stage after stage, from ``seed``.

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
    hooks = Hooks(next_batch, evaluate, on_eval, on_step, begin_stage, between_stages)
    run = _Run(model, settings, seed, device, workers or Workers(), checkpoint_path, hooks)
    run.restore(resume)
    run.compile()
    return run.stages()
