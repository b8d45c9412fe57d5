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
import math
from collections.abc import Callable
from dataclasses import dataclass
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
    KEY_TOKEN_BPB,
    KV_CACHE_BYTES,
    LONG_ACC,
    LONG_ANSWER_NLL,
    PARAMS,
    PEAK_MEMORY_BYTES,
    SHORT_BPB,
    STEPS,
    TOKENS_PER_S,
    TRAIN_SECONDS,
    VAL_BPB,
    acc_at,
    answer_nll_at,
    bucket_bpb,
    extrap_bpb,
    held_out_score,
    task_score,
    token_acc_at,
)
from space.outcomes import RunStatus
from space.schema import SweepConfig
from workers import attention_mass, key_tokens, plots, scores, serving_cost
from workers.batches import make_batch
from workers.corpus import CorpusHandle, PreparedCorpus, prepare
from workers.device import choose_device
from workers.distributed import Workers
from workers.examples import example_seed
from workers.lr_search import Pilot
from workers.model import HybridTransformer
from workers.results import CandidateResult
from workers.tasks import render, task_params
from workers.train import TrainOutcome, seed_everything, train
from workers.trial_folder import CANDIDATE_FILE, CHECKPOINT_FILE, SCORES_FILE, write_atomic


def pick_device(config: SweepConfig, device: str | None = None) -> torch.device:
    """The torch device of ``device`` or else ``resources.device`` (workers.device's rule)."""
    wanted = device or config.resources.device
    return torch.device(choose_device(wanted, gpu_given=torch.cuda.is_available()))


def stage_key(stage: int, score: str) -> str:
    """The key of a score taken after stage ``stage`` (0-based): ``stage1/short_bpb``."""
    return f"stage{stage + 1}/{score}"


def build_model(candidate: Candidate, seed: int) -> HybridTransformer:
    seed_everything(seed)  # weights depend on the seed only
    return HybridTransformer(candidate.shape, candidate.layers)


@dataclass
class CandidateRun:
    """What one seed of a candidate trains and scores with: the trainer's hooks (batches,
    validation, stage switches, scores between stages) over the prepared corpus."""

    config: SweepConfig
    candidate: Candidate
    seed: int
    out_dir: Path
    device: torch.device
    data: PreparedCorpus
    model: HybridTransformer

    def __post_init__(self) -> None:
        t = self.config.train
        self.plans = t.stage_plans()
        tasks = {task for plan in self.plans for task in plan.task_mix}
        self.params = {task: task_params(task, **t.task_params.get(task, {})) for task in tasks}

    @property
    def per_stage(self) -> bool:
        """Scored after every stage too (``score.after_each_stage`` with several stages)."""
        return self.config.score.after_each_stage and self.candidate.multi_stage

    def next_batch(self, rng: np.random.Generator, stage: int) -> Any:
        plan, t = self.plans[stage], self.config.train
        return make_batch(
            self.data.train,
            rng,
            plan.batch_size,
            plan.seq_len,
            plan.task_mix,
            plan.lm_fraction,
            t.filler_weight,
            t.answer_weight,
            task_params=self.params,
            tokenizer=self.data.tokenizer,
        )

    def evaluate(self, m: torch.nn.Module, stage: int) -> dict[str, float]:
        bpb = scores.bits_per_byte(
            m,
            self.data.val,
            self.plans[stage].seq_len,
            n_windows=self.config.train.eval_windows,
            batch_size=8,
            device=self.device,
            count_bytes=self.data.tokenizer.count_bytes,
            doc=self.data.vocab.doc,
        )
        return {VAL_BPB: bpb}

    def begin_stage(self, stage: int) -> None:
        if self.candidate.stages:
            self.model.set_layers(self.candidate.stages[stage].layers)

    def score_stage(self, stage: int, m: torch.nn.Module) -> dict[str, float]:
        """Every score of the model as it is after ``stage``, keyed ``stage<n>/...``."""
        folder = self.out_dir / f"stage{stage + 1}"
        folder.mkdir(exist_ok=True)
        interim = CandidateResult(status=RunStatus.COMPLETE, reason=None, seed=self.seed)
        layers = self.candidate.stages[stage].layers
        got = score_model(
            m, self.config, self.candidate, self.data, self.device, interim, folder, layers=layers
        )
        return {stage_key(stage, k): v for k, v in got.items()}

    def train(self, workers: Workers, **hooks: Any) -> TrainOutcome:
        """Train the model through every stage (``hooks``: ``on_eval``, ``on_step``,
        ``resume``, as :func:`workers.train.train` takes them)."""
        return train(
            self.model,
            self.config.train,
            self.next_batch,
            self.evaluate,
            seed=self.seed,
            device=self.device,
            checkpoint_path=self.out_dir / CHECKPOINT_FILE,
            begin_stage=self.begin_stage,
            between_stages=self.score_stage if self.per_stage else None,
            workers=workers,
            **hooks,
        )


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
    corpus: CorpusHandle | None = None,
    workers: Workers | None = None,
) -> CandidateResult:
    """Train ``candidate`` with ``seed`` and score it; artifacts go to ``out_dir``.

    Divergence is an outcome (status ``diverged``), not an exception; a stop
    requested by ``on_eval`` returns status ``stopped`` with the metrics so far;
    ``on_step(step, loss, tokens_per_s)`` feeds a progress display.
    ``resume`` continues from ``out_dir/checkpoint.pt`` when present. ``corpus`` is
    the prepared corpus (:func:`workers.corpus.prepare`); without it the corpus is
    prepared (or found) in the default cache first.

    ``workers`` trains data-parallel (``workers.distributed``): every worker calls this
    with the same arguments; the main worker writes the folder, scores and returns the
    result, the others return the training status alone (no scores, no files).
    """
    workers = workers or Workers()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    dev = pick_device(config, device)
    # The driver's prepared corpus; on a worker that does not share its runs folder, or
    # without one (`ropenope train`), prepared (or found) in this machine's cache.
    handle = corpus if corpus is not None and corpus.is_here() else prepare(config)
    data = handle.open()
    if workers.is_main:
        write_atomic(
            out_dir / CANDIDATE_FILE,
            yaml.safe_dump({**candidate.to_dict(), "seed": seed}, sort_keys=False),
        )
    model = build_model(candidate, seed)
    run = CandidateRun(config, candidate, seed, out_dir, dev, data, model)
    outcome = run.train(workers, on_eval=on_eval, on_step=on_step, resume=resume)
    whole = workers.plain_model(model)  # the main worker's ordinary model (FSDP gathers)
    if whole is None:  # not the main worker: it trained its share, the main one reports
        return CandidateResult(status=outcome.status, reason=outcome.reason, seed=seed)
    result = CandidateResult(
        status=outcome.status,
        reason=outcome.reason,
        history=outcome.history,
        candidate=candidate.to_dict(),
        seed=seed,
        resumed_from_step=outcome.resumed_from_step,
        corpus={
            "key": handle.key,
            "entry": handle.entry,
            "tokenizer": handle.tokenizer_kind,
            "description": handle.description,
        },
    )
    result.scores.update(cost_scores(config, candidate, whole, outcome))
    record_training(result, outcome, out_dir)
    if outcome.status == RunStatus.COMPLETE:
        whole.eval()
        final = score_model(whole, config, candidate, data, dev, result, out_dir)
        result.scores.update(final)
        if run.per_stage:  # the last stage's scores under its key too, for tables across stages
            last = len(candidate.stages) - 1
            result.scores.update({stage_key(last, k): v for k, v in final.items()})
    write_atomic(out_dir / SCORES_FILE, json.dumps(result.to_dict(), indent=2, default=str))
    result.artifacts[SCORES_FILE] = out_dir / SCORES_FILE
    return result


def run_pilot(
    config: SweepConfig,
    candidate: Candidate,
    *,
    lr: float,
    seed: int,
    out_dir: Path,
    device: str | None = None,
    threads: int | None = None,
    corpus: CorpusHandle | None = None,
    resume: bool = True,
    on_step: Callable[[int, float, float], None] | None = None,
) -> Pilot:
    """One ``train.lr_search`` pilot (``config`` is ``workers.lr_search.pilot_config``): train
    ``candidate`` with ``seed`` at ``lr``, checkpointing in ``out_dir`` (a killed pilot
    continues there unless ``resume`` is off), and return its final validation bits per
    byte; nothing is scored."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    dev = pick_device(config, device)
    handle = corpus if corpus is not None and corpus.is_here() else prepare(config)
    model = build_model(candidate, seed)
    run = CandidateRun(config, candidate, seed, out_dir, dev, handle.open(), model)
    outcome = run.train(Workers(), resume=resume, on_step=on_step)
    val = outcome.last_metrics.get(VAL_BPB) if outcome.status == RunStatus.COMPLETE else None
    finite = val is not None and math.isfinite(val)
    return Pilot(
        lr=lr,
        status=RunStatus(outcome.status).value,
        val_bpb=float(val) if finite else None,
        reason=outcome.reason if finite or val is None else f"non-finite val_bpb {val}",
    )


def cost_scores(
    config: SweepConfig, candidate: Candidate, model: HybridTransformer, outcome: TrainOutcome
) -> dict[str, float]:
    """What the candidate costs: parameters, KV cache and attention FLOPs of the layers the
    last stage trained (what scoring and serving use), and the measured training speed."""
    served = candidate.final_layers
    context = config.score.kv_context_tokens
    return {
        PARAMS: float(model.num_parameters()),
        KV_CACHE_BYTES: float(
            serving_cost.kv_cache_bytes(
                candidate.shape, served, context, config.score.kv_dtype_bytes
            )
        ),
        ATTN_FLOPS_PER_TOKEN: float(
            serving_cost.attention_flops_per_token(candidate.shape, served, context)
        ),
        TOKENS_PER_S: outcome.tokens_per_s,
        PEAK_MEMORY_BYTES: float(outcome.peak_memory_bytes),
        TRAIN_SECONDS: outcome.train_seconds,
        STEPS: float(outcome.step),
    }


def record_training(result: CandidateResult, outcome: TrainOutcome, out_dir: Path) -> None:
    """The training's own results into ``result``: the last validation score, the loss
    curves, the candidate file and the scores taken between stages."""
    if outcome.last_metrics:
        result.scores[VAL_BPB] = outcome.last_metrics.get(VAL_BPB, float("nan"))
    result.artifacts[CANDIDATE_FILE] = out_dir / CANDIDATE_FILE
    if outcome.history:
        result.artifacts["loss_curves.png"] = plots.plot_loss_curves(
            outcome.history, out_dir / "loss_curves.png"
        )
    for _, stage_scores in sorted(outcome.stage_results.items()):
        result.scores.update(stage_scores)


@torch.no_grad()
def score_model(
    model: torch.nn.Module,
    config: SweepConfig,
    candidate: Candidate,
    data: PreparedCorpus,
    dev: torch.device,
    result: CandidateResult,
    out_dir: Path,
    layers: tuple[LayerSpec, ...] | None = None,
) -> dict[str, float]:
    """Every score of a trained model (DESIGN §5); fills ``result`` niah/mass/artifacts.

    Each scored task family gets its grid and ``<task>/...`` scores; the bare names
    (``acc@Nx``, ``answer_nll@Nx`` ...) are the primary family's, and ``long_acc`` /
    ``long_answer_nll`` the mean over ``score.long_tasks``.

    ``layers`` are the specs the model runs with (default: the candidate's last stage's),
    for the per-layer attention mass. Lengths are multiples of ``train.final_seq_len`` (the
    length the last stage trains at) in every stage, so scores of stages and candidates
    compare at the same absolute lengths and "beyond T" is beyond what the model last saw.
    """
    layers = candidate.final_layers if layers is None else layers
    out = language_scores(model, config, data, dev)
    items = items_seed(config, result.seed)
    grids = retrieval_grids(model, config, data, dev, items)
    out.update(retrieval_scores(config, grids))
    title = f"{candidate.name}  (seed {result.seed})"
    primary = config.score.primary_task
    if primary is not None:
        record_retrieval(result, grids, primary, out_dir, title)
        if config.score.attention_mass:
            result.attention_mass = attention_masses(
                model, config, data, dev, layers, result, out_dir, title, items
            )
    return out


def language_scores(
    model: torch.nn.Module, config: SweepConfig, data: PreparedCorpus, dev: torch.device
) -> dict[str, float]:
    """Validation bits per byte at the training length, on its key tokens
    (``key_token_bpb``), at each extrapolation length and by position past T."""
    s, T = config.score, config.train.final_seq_len

    def bpb(length: int, windows: int, batch: int) -> float:
        return scores.bits_per_byte(
            model,
            data.val,
            length,
            n_windows=windows,
            batch_size=batch,
            device=dev,
            count_bytes=data.tokenizer.count_bytes,
            doc=data.vocab.doc,
        )

    out = {SHORT_BPB: bpb(T, s.val_windows, 8)}
    # The loss on the tokens that need the long context at T (LongPPL's key tokens).
    out[KEY_TOKEN_BPB] = key_tokens.key_tokens(
        model,
        data.val,
        T,
        fraction=s.key_token_fraction,
        n_windows=s.val_windows,
        device=dev,
        count_bytes=data.tokenizer.count_bytes,
        doc=data.vocab.doc,
    ).bpb
    for m in s.extrap:
        out[extrap_bpb(m)] = bpb(m * T, max(4, s.val_windows // m), 4)
    longest = max((m for m in s.extrap if m >= 2), default=None)
    if longest is not None:  # the loss past T, by position (bucket_bpb@Nx)
        by_position = scores.bits_per_byte_by_position(
            model,
            data.val,
            longest * T,
            T,
            n_windows=max(4, s.val_windows // longest),
            device=dev,
            count_bytes=data.tokenizer.count_bytes,
            doc=data.vocab.doc,
        )
        out.update({bucket_bpb(m): v for m, v in by_position.items()})
    return out


def items_seed(config: SweepConfig, run_seed: int | None) -> int:
    """The seed the run's evaluation items are drawn from: ``score.seed`` and the run's seed
    (``score.items: per_seed``), or ``score.seed`` alone (``shared``, or no run seed)."""
    s = config.score
    if s.items == "shared" or run_seed is None:
        return s.seed
    return example_seed(s.seed, int(run_seed))


def retrieval_grids(
    model: torch.nn.Module,
    config: SweepConfig,
    data: PreparedCorpus,
    dev: torch.device,
    items: int,
) -> dict[str, scores.NiahResult]:
    """The retrieval grid (lengths x depths) of every scored task family on the items drawn
    from seed ``items`` (:func:`items_seed`)."""
    s, t = config.score, config.train
    return {
        task: scores.niah_grid(
            model,
            data.val,
            task=task,
            lengths=[m * t.final_seq_len for m in s.lengths],
            depths=s.depths,
            samples=s.samples,
            seed=items,
            device=dev,
            task_params=s.params_for(task, t.task_params),
            tokenizer=data.tokenizer,
        )
        for task in s.families
    }


def retrieval_scores(config: SweepConfig, grids: dict[str, scores.NiahResult]) -> dict[str, float]:
    """Each family's ``<task>/...`` scores (with several families), the primary family's
    under the bare names, the headline means ``long_acc`` and ``long_answer_nll``, and
    with ``score.held_out`` the mean of each bare score over the held-out families
    (``held_out_long_acc``, ``held_out_acc@Nx`` ...)."""
    s, T = config.score, config.train.final_seq_len
    out: dict[str, float] = {}
    if len(s.families) > 1:  # one family: its scores are the bare names alone
        for task in s.families:
            for name, value in family_scores(grids[task], T, s.lengths).items():
                out[task_score(task, name)] = value
    primary = s.primary_task
    if primary is not None:
        out.update(family_scores(grids[primary], T, s.lengths))
    if s.held_out:  # the means over the held-out families, apart from the headline
        held = [family_scores(grids[task], T, s.lengths) for task in s.held_out]
        for name in held[0]:
            out[held_out_score(name)] = float(np.mean([h[name] for h in held]))
    headline = [grids[task] for task in s.headline_tasks]
    if headline:
        beyond = any(m > 1 for m in s.lengths)
        nan = float("nan")
        out[LONG_ACC] = float(np.mean([scores.long_acc(g, T) for g in headline])) if beyond else nan
        out[LONG_ANSWER_NLL] = (
            float(np.mean([scores.long_answer_nll(g, T) for g in headline])) if beyond else nan
        )
    return out


def record_retrieval(
    result: CandidateResult,
    grids: dict[str, scores.NiahResult],
    primary: str,
    out_dir: Path,
    title: str,
) -> None:
    """The grids into ``result.niah`` and one heatmap per family into ``out_dir``."""
    result.niah = {
        **grids[primary].to_dict(),
        "task": primary,
        "tasks": {task: g.to_dict() for task, g in grids.items()},
    }
    result.artifacts["niah.png"] = plots.plot_niah_heatmap(
        grids[primary], out_dir / "niah.png", f"{title}, {primary}"
    )
    for task, grid in grids.items():
        if task != primary:
            name = f"niah_{task}.png"
            result.artifacts[name] = plots.plot_niah_heatmap(
                grid, out_dir / name, f"{title}, {task}"
            )


def attention_masses(
    model: torch.nn.Module,
    config: SweepConfig,
    data: PreparedCorpus,
    dev: torch.device,
    layers: tuple[LayerSpec, ...],
    result: CandidateResult,
    out_dir: Path,
    title: str,
    items: int,
) -> dict[str, Any]:
    """The paper's attention-mass profile at each of ``score.mass_lengths`` on
    ``score.mass_samples`` prompts of the primary family drawn from seed ``items``, with
    one chart each (into ``result.artifacts``)."""
    s, t = config.score, config.train
    T, primary = t.final_seq_len, s.primary_task
    tparams = s.params_for(primary, t.task_params)
    mass: dict[str, Any] = {}
    for m in s.mass_lengths:
        examples = [
            render(
                primary,
                m * T,
                depth,
                items + 7919 * i,
                data.val,
                tokenizer=data.tokenizer,
                **tparams,
            )
            for i, depth in enumerate(np.linspace(0.0, 1.0, s.mass_samples))
        ]
        mass[f"{m}x"] = attention_mass.attention_mass(model, examples, layers, device=dev)
        name = f"attention_mass@{m}x.png"
        result.artifacts[name] = plots.plot_attention_mass(
            mass[f"{m}x"], out_dir / name, f"{title}, length {m}x{T}"
        )
    return mass


def family_scores(grid: scores.NiahResult, train_len: int, multiples: Any) -> dict[str, float]:
    """One family's scores by their bare names: accuracy, answer NLL and token accuracy
    at each length, at T, and their means beyond T."""
    out = {ACC_AT_T: scores.acc_at(grid, train_len)}
    for m in multiples:
        out[acc_at(m)] = scores.acc_at(grid, m * train_len)
        out[answer_nll_at(m)] = scores.answer_nll_at(grid, m * train_len)
        out[token_acc_at(m)] = scores.token_acc_at(grid, m * train_len)
    beyond = any(m > 1 for m in multiples)
    out[LONG_ACC] = scores.long_acc(grid, train_len) if beyond else float("nan")
    out[LONG_ANSWER_NLL] = scores.long_answer_nll(grid, train_len) if beyond else float("nan")
    return out
