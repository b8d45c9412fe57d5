"""The sections of a sweep file as typed, frozen models: what each key means, its type,
its default and its bounds. Parsing and the checks across sections are in
:mod:`space.schema` and :mod:`space.checks`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from space.names import (
    KV_CACHE_BYTES,
    LONG_ACC,
    RUNG_METRICS,
    RUNG_PROXIES,
    SHORT_BPB,
)
from space.stages import (
    StagePlan,
    eval_steps,
)
from space.vocab import BYTES, Vocabulary, subword_vocabulary, tokenizer_file_text_size

SECTIONS = (
    "study",
    "space",
    "model",
    "train",
    "data",
    "score",
    "scheduler",
    "resources",
    "tracking",
    "presets",
    "hypotheses",
    "hypotheses_from",
    "ladder",
)


class _Section(BaseModel):
    # NaN and infinities are never a setting; strict: "10" is not 10, 1.0 is not true.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    # Fields added after studies were stored: dumped only when set away from their
    # default, so that a sweep file that does not use them dumps as before (the study's
    # budget key for dedup, the MLflow params of older runs).
    _added_fields: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _dump_without_unused_additions(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            fields = type(self).model_fields
            for name in self._added_fields:
                default = fields[name].get_default(call_default_factory=True)
                if name in data and getattr(self, name) == default:
                    del data[name]
        return data


# The task families (space.tasks.TASKS; a test keeps the two lists equal).
TaskName = Literal[
    "passkey",
    "multikey",
    "multivalue",
    "multiquery",
    "vartrack",
    "commonwords",
    "mqar",
    "aliaskey",
    "selcopy",
    "fuzzyrecall",
]


class Objective(_Section):
    metric: str
    direction: Literal["maximize", "minimize"]


DEFAULT_OBJECTIVES = (
    Objective(metric=LONG_ACC, direction="maximize"),
    Objective(metric=SHORT_BPB, direction="minimize"),
    Objective(metric=KV_CACHE_BYTES, direction="minimize"),
)


# Upper bounds: far beyond any real sweep, low enough that a typo (or an attack) is an error
# at validation, not an allocation of a billion layers or a loop of 10^30 steps.
MAX_TRIALS = 1_000_000
MAX_REPEATS = 1000
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_LAYERS = 1024
MAX_WIDTH = 65536
MAX_HEADS = 1024
MAX_VOCAB = 2**24
MAX_TOKENS_PER_SEQUENCE = 2**24
MAX_BATCH = 2**20
MAX_STEPS = 10**9
MAX_SAMPLES = 100_000
MAX_LENGTH_MULTIPLE = 1024
MAX_CPUS = 4096
MAX_GRID_POINTS = 100_000

_STUDY_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
STUDY_NAME_MAX_CHARS = 100


def study_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a study (it names a folder under the runs folder and an
    MLflow experiment), or None when it can."""
    if not name:
        return "a study name cannot be empty"
    if len(name) > STUDY_NAME_MAX_CHARS:
        return f"at most {STUDY_NAME_MAX_CHARS} characters, got {len(name)}"
    if not _STUDY_NAME.match(name):
        return "use letters, digits, '_', '.', '-' (no '/', spaces or other characters)"
    if set(name) == {"."}:
        return "'.' and '..' are not study names"
    return None


class EarlyStoppingSection(_Section):
    """``study.early_stopping``: multi-objective successive halving (MO-ASHA, see
    :mod:`search.mo_asha`). Rungs at ``grace_period * reduction_factor^k`` evaluations;
    at each, the top ``1 / reduction_factor`` by non-dominated sorting of ``objectives``
    go on and the others stop (PRUNED)."""

    scheduler: Literal["mo_asha"]
    grace_period: int = Field(default=1, ge=1, le=MAX_STEPS)  # in evaluations
    reduction_factor: int = Field(default=2, ge=2, le=1000)
    # What a rung ranks on; None: study.objectives as far as a rung can see them
    # (:meth:`rung_objectives`).
    objectives: tuple[Objective, ...] | None = Field(default=None, min_length=1, max_length=16)

    def rung_objectives(self, study_objectives: tuple[Objective, ...]) -> tuple[Objective, ...]:
        """The objectives a rung ranks on: ``objectives`` when given; else each study
        objective a rung can see (a layout score, an evaluation metric, or ``short_bpb``
        through its stand-in ``val_bpb``), in order, once each. Retrieval scores are
        measured only after training and are not among them."""
        if self.objectives is not None:
            return self.objectives
        out: dict[str, Objective] = {}
        for objective in study_objectives:
            metric = RUNG_PROXIES.get(objective.metric, objective.metric)
            if metric in RUNG_METRICS and metric not in out:
                out[metric] = Objective(metric=metric, direction=objective.direction)
        return tuple(out.values())


class StudySection(_Section):
    name: str
    storage: str | None = None  # SQLAlchemy URL; None = sqlite file under runs/
    trials: int = Field(default=8, ge=1, le=MAX_TRIALS)
    sampler: Literal["tpe", "nsga2", "gp", "random", "grid"] = "tpe"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    objectives: tuple[Objective, ...] = Field(
        default=DEFAULT_OBJECTIVES, min_length=1, max_length=16
    )
    dedup: bool = True
    repeats: int = Field(default=1, ge=1, le=MAX_REPEATS)  # seeds per candidate (seed, +1, ...)
    # ``repeats: {min, max}`` in YAML: ``repeats`` is the min, this the max; adaptive
    # seeds then add rounds up to it only where a hypothesis is still undecided.
    repeats_max: int | None = Field(default=None, ge=1, le=MAX_REPEATS)
    # ``repeats: {min, max, others}``: seeds of a candidate no hypothesis compares (None:
    # ``repeats``, like every other candidate).
    repeats_others: int | None = Field(default=None, ge=1, le=MAX_REPEATS)
    early_stopping: EarlyStoppingSection | None = None

    _added_fields = frozenset({"early_stopping"})

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        problem = study_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def max_repeats(self) -> int:
        return self.repeats if self.repeats_max is None else self.repeats_max

    @property
    def adaptive(self) -> bool:
        """Seeds beyond ``repeats`` go only where a hypothesis is still undecided."""
        return self.max_repeats > self.repeats

    @property
    def others_repeats(self) -> int:
        """Seeds of a candidate that no hypothesis compares (``repeats: {others: n}``)."""
        return self.repeats if self.repeats_others is None else self.repeats_others

    @property
    def looks(self) -> int:
        """Pre-planned looks at each hypothesis: one per round of seeds, min..max."""
        return self.max_repeats - self.repeats + 1


class ModelSection(_Section):
    layers: int = Field(ge=1, le=MAX_LAYERS)
    d_model: int = Field(ge=2, le=MAX_WIDTH)
    heads: int = Field(ge=1, le=MAX_HEADS)
    mlp_hidden: int = Field(ge=1, le=MAX_WIDTH * 8)
    init_std: float = Field(default=0.02, gt=0)
    norm_eps: float = Field(default=1e-6, gt=0)
    vocab_size: int | None = Field(default=None, ge=2, le=MAX_VOCAB)  # None = the byte vocabulary
    # standard: init_std and train.lr for every weight. mup: µP relative to base_d_model
    # (workers.model says which weights scale how), so an lr tuned at base_d_model holds at
    # other widths; base_d_model is then required.
    parametrization: Literal["standard", "mup"] = "standard"
    base_d_model: int | None = Field(default=None, ge=2, le=MAX_WIDTH)

    _added_fields = frozenset({"parametrization", "base_d_model"})


class StageSection(_Section):
    """One entry of ``train.stages``; what it leaves out comes from the train section."""

    steps: int = Field(ge=1)
    seq_len: int | None = Field(default=None, ge=8)
    batch_size: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    warmup_steps: int | None = Field(default=None, ge=0)
    min_lr_ratio: float | None = Field(default=None, ge=0, le=1)
    task_mix: dict[TaskName, float] | None = None
    lm_fraction: float | None = Field(default=None, ge=0, le=1)
    knobs: dict[str, Any] = Field(default_factory=dict)  # overrides, stage 2 on


class LrSearchSection(_Section):
    """``train.lr_search``: before its full run, each trial trains a short pilot at every
    value (on ``train.seed``, the first seed of every candidate) and trains its seeds at
    the value of the lowest final validation loss; a pilot that diverges or ends non-finite
    loses. The pilot's length is ``steps``, or ``fraction`` of the full run's steps
    (exactly one of the two)."""

    values: tuple[float, ...] = Field(min_length=1, max_length=64)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    fraction: float | None = Field(default=None, gt=0, lt=1)

    @field_validator("values")
    @classmethod
    def _positive_distinct(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if any(v <= 0 for v in values):
            raise ValueError(f"learning rates must be > 0, got {list(values)}")
        if len(set(values)) != len(values):
            raise ValueError(f"each value may appear once, got {list(values)}")
        return values

    def pilot_steps(self, total_steps: int) -> int:
        """The pilot's optimizer steps for a full run of ``total_steps``."""
        if self.steps is not None:
            return self.steps
        return max(1, round((self.fraction or 0.0) * total_steps))


class TrainSection(_Section):
    """``train:``, which is also what the training loop reads (``workers.train.train``): its
    defaults are the only training defaults; ``stage_plans()`` resolves its stages."""

    seq_len: int = Field(ge=8, le=MAX_TOKENS_PER_SEQUENCE)
    batch_size: int = Field(ge=1, le=MAX_BATCH)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    tokens: int | None = Field(default=None, ge=1, le=MAX_STEPS * MAX_BATCH)
    lr: float = Field(default=3e-3, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    warmup_steps: int = Field(default=50, ge=0, le=MAX_STEPS)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    eval_every: int = Field(default=100, ge=1, le=MAX_STEPS)
    eval_windows: int = Field(default=16, ge=1, le=MAX_SAMPLES)
    checkpoint_every: int = Field(default=100, ge=1, le=MAX_STEPS)
    # torch.compile of the model; a candidate that cannot compile trains eager (one message).
    compile: bool = False
    # Autocast precision, fp32 master weights and optimizer state either way; auto: bf16 on
    # CUDA, fp32 elsewhere (what every study before this field trained with).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Recompute each block's activations in the backward pass (less memory, ~1/3 more compute).
    activation_checkpointing: bool = False
    # With resources.workers_per_trial > 1: DDP (a full replica per worker) or FSDP2 (weights,
    # gradients and optimizer state sharded across the workers).
    parallel: Literal["ddp", "fsdp"] = "ddp"
    # Rows per forward/backward on one worker; a worker's share of the global batch beyond it
    # is gradient accumulation. None: the whole share at once.
    micro_batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)
    task_mix: dict[TaskName, float] = Field(default_factory=lambda: {"multikey": 1.0})
    # Task parameters shared by training and scoring, e.g. {multikey: {n_needles: 2}}.
    task_params: dict[TaskName, dict[str, int | str]] = Field(default_factory=dict)
    lm_fraction: float = Field(default=0.5, ge=0, le=1)
    filler_weight: float = Field(default=0.1, ge=0)
    answer_weight: float = Field(default=1.0, ge=0)
    threads: int | None = Field(
        default=None, ge=1, le=MAX_CPUS
    )  # torch threads; None = CPUs given to the trial
    # Several stages in one trial (e.g. a short stage, then a long one with a larger RoPE
    # base); empty: the fields above are the one stage.
    stages: tuple[StageSection, ...] = ()
    # A learning rate per candidate: short pilots at each value, the full run at the best.
    lr_search: LrSearchSection | None = None

    @property
    def total_steps(self) -> int:
        """Optimizer steps over every stage."""
        if self.stages:
            return sum(stage.steps for stage in self.stages)
        if self.steps is not None:
            return self.steps
        return max(1, self.tokens // (self.batch_size * self.seq_len))

    @property
    def final_seq_len(self) -> int:
        """T for scoring: the length the last stage trains at (``seq_len`` without stages).

        Score lengths are multiples of it in every stage's scores (so stages compare at the
        same absolute lengths), "beyond T" starts past it and the competence gate's
        ``acc@1x`` reads it: after a context-extension stage, T is the extended length.
        """
        return self.stage_plans()[-1].seq_len

    def stage_plans(self) -> tuple[StagePlan, ...]:
        """Every stage with its settings resolved; one stage when ``stages`` is not given."""
        if not self.stages:
            return (self._plan(StageSection(steps=self.total_steps)),)
        return tuple(self._plan(stage) for stage in self.stages)

    def _plan(self, stage: StageSection) -> StagePlan:
        """The stage's own settings, the train section's where it leaves one out (a stage
        and its plan have the same fields: tests/test_space.py keeps them equal)."""
        fields = {}
        for name in StageSection.model_fields:
            own = getattr(stage, name)
            fields[name] = getattr(self, name) if own is None else own
        return StagePlan(
            **{**fields, "task_mix": dict(fields["task_mix"]), "knobs": dict(stage.knobs)}
        )

    def eval_steps(self) -> tuple[int, ...]:
        """Global steps after which training evaluates (every ``eval_every``, each stage's end)."""
        return eval_steps(self.stage_plans(), self.eval_every)

    _added_fields = frozenset(
        {
            "stages",
            "precision",
            "activation_checkpointing",
            "parallel",
            "micro_batch_size",
            "lr_search",
        }
    )


class BpeSection(_Section):
    """A byte-level BPE trained on the corpus's training split (Hugging Face tokenizers)."""

    vocab_size: int = Field(ge=257)  # text tokens: the 256 bytes and the merges
    min_frequency: int = Field(default=2, ge=1)  # a merge must occur this often


class TokenizerSection(_Section):
    """``data.tokenizer``: ``bytes`` (the default), ``{bpe: {vocab_size: N}}`` or
    ``{file: PATH}`` (a ``tokenizer.json`` or a folder holding one)."""

    bpe: BpeSection | None = None
    file: str | None = None

    @property
    def kind(self) -> Literal["bytes", "bpe", "file"]:
        if self.bpe is not None:
            return "bpe"
        if self.file is not None:
            return "file"
        return "bytes"


class DataSection(_Section):
    source: str | None = None  # None = the Python standard library's source
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    # Pre-tokenized files: the element type of a .bin file, and the vocabulary of its
    # tokens when they are not bytes (ids < vocab_size).
    dtype: Literal["uint8", "uint16", "uint32"] | None = None
    vocab_size: int | None = Field(default=None, ge=2)
    text_field: str = Field(default="text", min_length=1)  # JSON Lines field / column
    tokenizer: TokenizerSection = TokenizerSection()
    # How much text (UTF-8 bytes) the corpus reads; null = all of it.
    max_text_bytes: int | None = Field(default=4_000_000, ge=1)

    _added_fields = frozenset({"vocab_size", "text_field", "tokenizer", "max_text_bytes"})

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer_forms(cls, value: Any) -> Any:
        if value == "bytes" or value is None:
            return TokenizerSection()
        if isinstance(value, str):
            raise ValueError(
                f"expected bytes, {{bpe: {{vocab_size: N}}}} or {{file: PATH}}, got {value!r}"
            )
        return value

    def vocabulary(self) -> Vocabulary:
        """The model's vocabulary for this data (reads a tokenizer file's JSON; no torch).
        Raises ValueError for a tokenizer file that cannot be read."""
        tok = self.tokenizer
        if tok.bpe is not None:
            return subword_vocabulary(tok.bpe.vocab_size)
        if tok.file is not None:
            return subword_vocabulary(tokenizer_file_text_size(tok.file))
        if self.vocab_size is not None:
            return subword_vocabulary(self.vocab_size)
        return BYTES

    @property
    def has_text_tokenizer(self) -> bool:
        """False for pre-tokenized ids of an unknown tokenizer: no task can be rendered."""
        return not (self.tokenizer.kind == "bytes" and self.vocab_size is not None)


class CalibrateSection(_Section):
    """``score.calibrate``: before the first trial, a short pilot trains each ``panel`` preset
    and picks, per scored family, the difficulty (``space.tasks.DIFFICULTY``) at which the
    panel's accuracies at T lie inside ``band``; the study records it and every trial,
    resumed ones included, scores with it."""

    panel: tuple[str, ...] = Field(min_length=1, max_length=64)  # preset names
    band: tuple[float, float] = (0.2, 0.9)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)  # None: the trials' budget
    samples: int = Field(default=8, ge=1, le=MAX_SAMPLES)  # per depth, at each difficulty
    # The difficulties tried, per family; a family left out tries 1, 2, 4, 8, ... (0 first
    # for prefix_distractors) while an example still fits in train.seq_len tokens.
    levels: dict[TaskName, tuple[int, ...]] = Field(default_factory=dict)


class ScoreSection(_Section):
    task: TaskName = "multikey"  # the primary family: the bare acc@Nx, answer_nll@Nx, ...
    # Families scored, each with its grid and ``<task>/...`` scores; None = [task].
    tasks: tuple[TaskName, ...] | None = None
    # Families averaged into long_acc and long_answer_nll; None = the primary family.
    long_tasks: tuple[TaskName, ...] | None = None
    lengths: tuple[int, ...] = Field(default=(1, 2, 4, 8), min_length=1, max_length=32)  # x T
    depths: tuple[float, ...] = Field(
        default=(0.0, 0.25, 0.5, 0.75, 1.0), min_length=1, max_length=64
    )
    samples: int = Field(default=20, ge=1, le=MAX_SAMPLES)
    extrap: tuple[int, ...] = Field(default=(2, 4), max_length=32)
    val_windows: int = Field(default=32, ge=1, le=MAX_SAMPLES)
    kv_context_tokens: int = Field(default=131072, ge=1, le=2**40)
    kv_dtype_bytes: int = Field(default=2, ge=1, le=16)
    attention_mass: bool = True
    mass_lengths: tuple[int, ...] = Field(default=(1, 4), max_length=32)
    # Prompts of the attention-mass profile per length (depths spread over [0, 1]).
    mass_samples: int = Field(default=32, ge=1, le=MAX_SAMPLES)
    seed: int = Field(default=1234, ge=0, le=MAX_SEED)
    # Which evaluation items a run scores: per_seed draws them from ``seed`` and the run's
    # own seed, so the spread across seeds (and every interval over it) covers the items as
    # well as the training; shared scores every run on the items of ``seed`` alone. Always
    # in the dump (never an _added_field): studies scored before per_seed existed have
    # another budget key, so dedup never mixes their trials with these.
    items: Literal["per_seed", "shared"] = "per_seed"

    # Score after every stage of train.stages too (keys "stage1/short_bpb", ...), not only
    # after the last one.
    after_each_stage: bool = False
    # Task parameters for scoring only, over train.task_params (e.g. a harder difficulty
    # than training saw); score.calibrate fills in the difficulty it picks.
    task_params: dict[TaskName, dict[str, int | str]] = Field(default_factory=dict)
    calibrate: CalibrateSection | None = None
    # Families scored but never trained on (not in any task_mix): each gets its grid and
    # ``<task>/...`` scores, and their means go under ``held_out_<score>`` (e.g.
    # ``held_out_long_acc``), apart from the trained families' headline.
    held_out: tuple[TaskName, ...] = Field(default=(), max_length=32)
    # key_token_bpb: the share of the validation targets past the short context (an eighth
    # of T) whose loss drops most with the full context (workers.key_tokens).
    key_token_fraction: float = Field(default=0.1, gt=0, le=1)

    _added_fields = frozenset(
        {
            "tasks",
            "long_tasks",
            "after_each_stage",
            "task_params",
            "calibrate",
            "held_out",
            "key_token_fraction",
        }
    )

    def params_for(self, task: str, train_params: dict[str, dict[str, int | str]]) -> dict:
        """The parameters ``task`` is scored with: train.task_params, then score.task_params."""
        return {**train_params.get(task, {}), **self.task_params.get(task, {})}

    @property
    def families(self) -> tuple[str, ...]:
        """Every scored family, the primary first, the held-out ones last."""
        if self.tasks is None:
            return tuple(dict.fromkeys([self.task, *self.held_out]))
        primary = self.primary_task
        return tuple(dict.fromkeys([primary, *self.tasks, *self.held_out])) if primary else ()

    @property
    def primary_task(self) -> str | None:
        """``score.task`` when given (or no ``tasks``), else the first of ``tasks``."""
        if self.tasks is None or "task" in self.model_fields_set:
            return self.task
        return self.tasks[0] if self.tasks else None

    @property
    def headline_tasks(self) -> tuple[str, ...]:
        """The families long_acc and long_answer_nll average."""
        if self.long_tasks is not None:
            return self.long_tasks
        primary = self.primary_task
        return (primary,) if primary else ()


class SchedulerSection(_Section):
    kind: Literal["none", "asha"] = "none"
    metric: str = "val_bpb"
    mode: Literal["min", "max"] = "min"
    grace_period: int = Field(default=1, ge=1, le=MAX_STEPS)  # in evaluations
    reduction_factor: int = Field(default=2, ge=2, le=1000)


class FailuresSection(_Section):
    """``resources.failures``: when a sweep gives up on a broken cluster, and how often one
    candidate is re-run (search.failures). An infrastructure failure is a trial that ended
    ``worker_died`` or ``infrastructure_failure`` (a full disk, an I/O error)."""

    # Stop the sweep once this many trials in a row ended by an infrastructure failure ...
    max_consecutive: int = Field(default=5, ge=1, le=MAX_TRIALS)
    # ... or once more than max_rate of the last `window` trials did.
    window: int = Field(default=20, ge=1, le=MAX_TRIALS)
    max_rate: float = Field(default=0.5, gt=0, le=1)
    # A trial this many re-runs deep (a re-run of a re-run ...) is not re-run again: it is
    # FAIL rerun_limit, and counts toward the target.
    max_rerun_depth: int = Field(default=5, ge=0, le=1000)


class ResourcesSection(_Section):
    cpus_per_trial: float = Field(default=1, gt=0, le=MAX_CPUS)
    gpus_per_trial: float = Field(default=0, ge=0, le=MAX_CPUS)
    max_concurrent: int = Field(default=2, ge=1, le=MAX_TRIALS)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # A trial whose worker process or node dies (SIGKILL, OOM, a node leaving) restarts
    # from its newest checkpoint up to this many times; then it is FAIL worker_died and
    # `ropenope resume` runs it again. An exception in the candidate's code is not retried.
    max_retries: int = Field(default=2, ge=0, le=100)
    # Data-parallel training workers per trial (Ray Train); cpus_per_trial and gpus_per_trial
    # are then per worker. 1: the trial trains in its own process, without Ray Train.
    workers_per_trial: int = Field(default=1, ge=1, le=MAX_CPUS)
    # Where a trial's workers go (a Ray placement group strategy): pack (fill a node first),
    # spread (one per node where possible), strict_pack (one node), strict_spread (one per node).
    placement: Literal["pack", "spread", "strict_pack", "strict_spread"] = "pack"
    # Checkpoints kept once a trial ends (search.retention): last (one per finished seed),
    # best (as last; `ropenope gc` then keeps only the Pareto front's), all (nothing removed).
    keep: Literal["last", "best", "all"] = "last"
    # The seeds of one trial train at the same time, one Ray task of cpus_per_trial /
    # gpus_per_trial each (workers.ray_seeds); the trial's request is sized for its seeds.
    parallel_seeds: bool = False
    failures: FailuresSection = FailuresSection()

    _added_fields = frozenset(
        {"workers_per_trial", "placement", "keep", "parallel_seeds", "failures"}
    )


class TrackingSection(_Section):
    enabled: bool = True
    experiment: str | None = None  # None = the study name
    uri: str | None = None  # None = $MLFLOW_TRACKING_URI or sqlite under runs/


class PresetEntry(_Section):
    name: str = Field(min_length=1, max_length=100)
    extends: str | None = None
    knobs: dict[str, Any] = Field(default_factory=dict)
