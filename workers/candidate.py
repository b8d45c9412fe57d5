"""Train and score one candidate: the whole per-trial pipeline, with no Ray and no MLflow.

``run_candidate`` builds the model from the candidate's layer specs, trains it
on the configured data and task mix (stage after stage when ``train.stages`` has
several, switching the layers a stage's knob overrides change), then computes every
score of DESIGN §5 and writes the artifacts (resolved candidate, NIAH heatmap,
attention-mass charts, loss curves, scores.json) to ``out_dir``. With
``score.after_each_stage`` the stages before the last are scored too, their scores
keyed ``stage1/short_bpb``, ... and their charts in ``out_dir/stage1/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from space.expand import Candidate
from space.layers import LayerSpec
from space.names import (
    ACC_AT_T,
    ATTN_FLOPS_PER_TOKEN,
    KV_CACHE_BYTES,
    LONG_ACC,
    PARAMS,
    PEAK_MEMORY_BYTES,
    SHORT_BPB,
    STEPS,
    TOKENS_PER_S,
    TRAIN_SECONDS,
    VAL_BPB,
    acc_at,
    extrap_bpb,
)
from space.schema import SweepConfig
from workers import plots, scores
from workers.batches import make_batch
from workers.data import Corpus, load_corpus
from workers.model import HybridTransformer
from workers.tasks import render, task_params
from workers.train import STATUS_COMPLETE, StageSettings, TrainSettings, seed_everything, train

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class CandidateResult:
    status: str  # complete | diverged | stopped
    reason: str | None
    scores: dict[str, float] = field(default_factory=dict)
    niah: dict[str, Any] = field(default_factory=dict)
    attention_mass: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    candidate: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    resumed_from_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "scores": self.scores,
            "niah": self.niah,
            "attention_mass": self.attention_mass,
            "history": self.history,
            "artifacts": {k: str(v) for k, v in self.artifacts.items()},
            "candidate": self.candidate,
            "seed": self.seed,
            "resumed_from_step": self.resumed_from_step,
        }


@lru_cache(maxsize=4)
def _corpus(source: str | None, val_fraction: float, dtype: str | None) -> Corpus:
    # One load per process: trials reuse the corpus (Ray reuses worker processes).
    return load_corpus(source, val_fraction=val_fraction, dtype=dtype)


def corpus_for(config: SweepConfig) -> Corpus:
    d = config.data
    return _corpus(d.source, d.val_fraction, d.dtype)


def pick_device(config: SweepConfig, device: str | None = None) -> torch.device:
    wanted = device or config.resources.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(wanted)


def stage_key(stage: int, score: str) -> str:
    """The key of a score taken after stage ``stage`` (0-based): ``stage1/short_bpb``."""
    return f"stage{stage + 1}/{score}"


def train_settings(config: SweepConfig, seed: int) -> TrainSettings:
    t = config.train
    stages = ()
    if t.stages:
        stages = tuple(
            StageSettings(
                steps=p.steps,
                seq_len=p.seq_len,
                batch_size=p.batch_size,
                lr=p.lr,
                min_lr_ratio=p.min_lr_ratio,
                warmup_steps=p.warmup_steps,
            )
            for p in t.stage_plans()
        )
    return TrainSettings(
        steps=t.total_steps,
        batch_size=t.batch_size,
        seq_len=t.seq_len,
        lr=t.lr,
        min_lr_ratio=t.min_lr_ratio,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        grad_clip=t.grad_clip,
        betas=tuple(t.betas),
        eval_every=t.eval_every,
        checkpoint_every=t.checkpoint_every,
        seed=seed,
        compile=t.compile,
        stages=stages,
    )


def build_model(candidate: Candidate, seed: int) -> HybridTransformer:
    seed_everything(seed)  # weights depend on the seed only
    return HybridTransformer(candidate.shape, candidate.layers)


def run_candidate(
    config: SweepConfig,
    candidate: Candidate,
    *,
    seed: int,
    out_dir: Path,
    on_eval: Callable[[dict[str, float]], bool | None] | None = None,
    resume: bool = True,
    device: str | None = None,
    threads: int | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
) -> CandidateResult:
    """Train ``candidate`` with ``seed`` and score it; artifacts go to ``out_dir``.

    Divergence is an outcome (status ``diverged``), not an exception; a stop
    requested by ``on_eval`` returns status ``stopped`` with the metrics so far;
    ``on_step(step, loss, tokens_per_s)`` feeds a progress display.
    ``resume`` continues from ``out_dir/checkpoint.pt`` when present.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    dev = pick_device(config, device)
    corpus = corpus_for(config)
    t = config.train
    settings = train_settings(config, seed)
    plans = t.stage_plans()
    tasks = {task for plan in plans for task in plan.task_mix}
    params = {task: task_params(task, **t.task_params.get(task, {})) for task in tasks}

    (out_dir / "candidate.yaml").write_text(
        yaml.safe_dump({**candidate.to_dict(), "seed": seed}, sort_keys=False)
    )
    model = build_model(candidate, seed)

    def next_batch(rng: np.random.Generator, stage: int):
        plan = plans[stage]
        return make_batch(
            corpus.train,
            rng,
            plan.batch_size,
            plan.seq_len,
            plan.task_mix,
            plan.lm_fraction,
            t.filler_weight,
            t.answer_weight,
            task_params=params,
        )

    def evaluate(m: torch.nn.Module, stage: int) -> dict[str, float]:
        bpb = scores.bits_per_byte(
            m, corpus.val, plans[stage].seq_len, n_windows=t.eval_windows, batch_size=8, device=dev
        )
        return {VAL_BPB: bpb}

    def begin_stage(stage: int) -> None:
        if candidate.stages:
            model.set_layers(candidate.stages[stage].layers)

    def score_stage(stage: int, m: torch.nn.Module) -> dict[str, float]:
        """Every score of the model as it is after ``stage``, keyed ``stage<n>/...``."""
        folder = out_dir / f"stage{stage + 1}"
        folder.mkdir(exist_ok=True)
        interim = CandidateResult(status=STATUS_COMPLETE, reason=None, seed=seed)
        layers = candidate.stages[stage].layers
        got = score_model(m, config, candidate, corpus, dev, interim, folder, layers=layers)
        return {stage_key(stage, k): v for k, v in got.items()}

    per_stage = config.score.after_each_stage and candidate.multi_stage

    outcome = train(
        model,
        settings,
        next_batch,
        evaluate,
        device=dev,
        on_eval=on_eval,
        on_step=on_step,
        checkpoint_path=out_dir / CHECKPOINT_NAME,
        resume=resume,
        begin_stage=begin_stage,
        between_stages=score_stage if per_stage else None,
    )
    result = CandidateResult(
        status=outcome.status,
        reason=outcome.reason,
        history=outcome.history,
        candidate=candidate.to_dict(),
        seed=seed,
        resumed_from_step=outcome.resumed_from_step,
    )
    served = candidate.final_layers  # the layers the last stage trained and scoring uses
    cost = {
        PARAMS: float(model.num_parameters()),
        KV_CACHE_BYTES: float(
            scores.kv_cache_bytes(
                candidate.shape,
                served,
                config.score.kv_context_tokens,
                config.score.kv_dtype_bytes,
            )
        ),
        ATTN_FLOPS_PER_TOKEN: float(
            scores.attention_flops_per_token(
                candidate.shape, served, config.score.kv_context_tokens
            )
        ),
        TOKENS_PER_S: outcome.tokens_per_s,
        PEAK_MEMORY_BYTES: float(outcome.peak_memory_bytes),
        TRAIN_SECONDS: outcome.train_seconds,
        STEPS: float(outcome.step),
    }
    result.scores.update(cost)
    if outcome.last_metrics:
        result.scores[VAL_BPB] = outcome.last_metrics.get(VAL_BPB, float("nan"))
    result.artifacts["candidate.yaml"] = out_dir / "candidate.yaml"
    if outcome.history:
        result.artifacts["loss_curves.png"] = plots.plot_loss_curves(
            outcome.history, out_dir / "loss_curves.png"
        )
    for _, stage_scores in sorted(outcome.stage_results.items()):
        result.scores.update(stage_scores)
    if outcome.status == STATUS_COMPLETE:
        model.eval()
        final = score_model(model, config, candidate, corpus, dev, result, out_dir)
        result.scores.update(final)
        if per_stage:  # the last stage's scores under its key too, for tables across stages
            last = len(candidate.stages) - 1
            result.scores.update({stage_key(last, k): v for k, v in final.items()})
    (out_dir / "scores.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    result.artifacts["scores.json"] = out_dir / "scores.json"
    return result


@torch.no_grad()
def score_model(
    model: torch.nn.Module,
    config: SweepConfig,
    candidate: Candidate,
    corpus: Corpus,
    dev: torch.device,
    result: CandidateResult,
    out_dir: Path,
    layers: tuple[LayerSpec, ...] | None = None,
) -> dict[str, float]:
    """Every score of a trained model (DESIGN §5); fills ``result`` niah/mass/artifacts.

    ``layers`` are the specs the model runs with (default: the candidate's last stage's),
    for the per-layer attention mass. Lengths are multiples of ``train.seq_len`` in every
    stage, so scores of stages and candidates compare at the same absolute lengths.
    """
    s, t = config.score, config.train
    layers = candidate.final_layers if layers is None else layers
    T = t.seq_len
    out: dict[str, float] = {}
    out[SHORT_BPB] = scores.bits_per_byte(
        model, corpus.val, T, n_windows=s.val_windows, batch_size=8, device=dev
    )
    for m in s.extrap:
        out[extrap_bpb(m)] = scores.bits_per_byte(
            model, corpus.val, m * T, n_windows=max(4, s.val_windows // m), batch_size=4, device=dev
        )
    tparams = t.task_params.get(s.task, {})
    niah = scores.niah_grid(
        model,
        corpus.val,
        task=s.task,
        lengths=[m * T for m in s.lengths],
        depths=s.depths,
        samples=s.samples,
        seed=s.seed,
        device=dev,
        task_params=tparams,
    )
    result.niah = niah.to_dict()
    out[ACC_AT_T] = scores.acc_at(niah, T)
    out[LONG_ACC] = scores.long_acc(niah, T) if any(m > 1 for m in s.lengths) else float("nan")
    for m in s.lengths:
        out[acc_at(m)] = scores.acc_at(niah, m * T)
    title = f"{candidate.name}  (seed {result.seed})"
    result.artifacts["niah.png"] = plots.plot_niah_heatmap(niah, out_dir / "niah.png", title)
    if s.attention_mass:
        mass: dict[str, Any] = {}
        for m in s.mass_lengths:
            examples = [
                render(s.task, m * T, depth, s.seed + 7919 * i, corpus.val, **tparams)
                for i, depth in enumerate(np.linspace(0.0, 1.0, s.mass_samples))
            ]
            mass[f"{m}x"] = scores.attention_mass(model, examples, layers, device=dev)
            name = f"attention_mass@{m}x.png"
            result.artifacts[name] = plots.plot_attention_mass(
                mass[f"{m}x"], out_dir / name, f"{title}, length {m}x{T}"
            )
        result.attention_mass = mass
    return out
