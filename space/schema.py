"""The sweep file: a typed, frozen schema validated once at the boundary.

``load_config(path)`` returns a :class:`SweepConfig` or raises :class:`ConfigError`
listing every problem with the dotted path of the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from space.errors import ConfigError, InvalidCandidate
from space.expand import Candidate, build_candidate
from space.knobs import KNOB_NAMES, KnobSpec, knob_domain, parse_knob
from space.layers import ModelShape
from space.names import (
    EVAL_METRICS,
    KV_CACHE_BYTES,
    LONG_ACC,
    LONG_ANSWER_NLL,
    SHORT_BPB,
    is_score_name,
    is_task_score,
    multiple_of,
    split_task_score,
)
from space.presets import BUILTIN_PRESETS
from space.tasks import min_length, task_params
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
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

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
TaskName = Literal["passkey", "multikey", "multivalue", "multiquery", "vartrack", "commonwords"]


class Objective(_Section):
    metric: str
    direction: Literal["maximize", "minimize"]


DEFAULT_OBJECTIVES = (
    Objective(metric=LONG_ACC, direction="maximize"),
    Objective(metric=SHORT_BPB, direction="minimize"),
    Objective(metric=KV_CACHE_BYTES, direction="minimize"),
)


class StudySection(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    storage: str | None = None  # SQLAlchemy URL; None = sqlite file under runs/
    trials: int = Field(default=8, ge=1)
    sampler: Literal["tpe", "nsga2", "gp", "random", "grid"] = "tpe"
    seed: int = 0
    objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES
    dedup: bool = True
    repeats: int = Field(default=1, ge=1)  # seeds per candidate (train.seed, +1, ...)


class ModelSection(_Section):
    layers: int = Field(ge=1)
    d_model: int = Field(ge=2)
    heads: int = Field(ge=1)
    mlp_hidden: int = Field(ge=1)
    init_std: float = Field(default=0.02, gt=0)
    norm_eps: float = Field(default=1e-6, gt=0)
    vocab_size: int | None = Field(default=None, ge=2)  # None = the byte vocabulary


class TrainSection(_Section):
    seq_len: int = Field(ge=8)
    batch_size: int = Field(ge=1)
    steps: int | None = Field(default=None, ge=1)
    tokens: int | None = Field(default=None, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    warmup_steps: int = Field(default=50, ge=0)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    seed: int = 0
    eval_every: int = Field(default=100, ge=1)
    eval_windows: int = Field(default=16, ge=1)
    checkpoint_every: int = Field(default=100, ge=1)
    compile: bool = False
    task_mix: dict[TaskName, float] = Field(default_factory=lambda: {"multikey": 1.0})
    # Task parameters shared by training and scoring, e.g. {multikey: {n_needles: 2}}.
    task_params: dict[TaskName, dict[str, int | str]] = Field(default_factory=dict)
    lm_fraction: float = Field(default=0.5, ge=0, le=1)
    filler_weight: float = Field(default=0.1, ge=0)
    answer_weight: float = Field(default=1.0, ge=0)
    threads: int | None = Field(default=None, ge=1)  # torch threads; None = CPUs given to the trial

    @property
    def total_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, self.tokens // (self.batch_size * self.seq_len))


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


class ScoreSection(_Section):
    task: TaskName = "multikey"  # the primary family: the bare acc@Nx, answer_nll@Nx, ...
    # Families scored, each with its grid and ``<task>/...`` scores; None = [task].
    tasks: tuple[TaskName, ...] | None = None
    # Families averaged into long_acc and long_answer_nll; None = the primary family.
    long_tasks: tuple[TaskName, ...] | None = None
    lengths: tuple[int, ...] = (1, 2, 4, 8)  # multiples of train.seq_len
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    samples: int = Field(default=20, ge=1)
    extrap: tuple[int, ...] = (2, 4)
    val_windows: int = Field(default=32, ge=1)
    kv_context_tokens: int = Field(default=131072, ge=1)
    kv_dtype_bytes: int = Field(default=2, ge=1)
    attention_mass: bool = True
    mass_lengths: tuple[int, ...] = (1, 4)
    mass_samples: int = Field(default=8, ge=1)
    seed: int = 1234

    _added_fields = frozenset({"tasks", "long_tasks"})

    @property
    def families(self) -> tuple[str, ...]:
        """Every scored family, the primary first."""
        if self.tasks is None:
            return (self.task,)
        primary = self.primary_task
        return tuple(dict.fromkeys([primary, *self.tasks])) if primary else ()

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
    grace_period: int = Field(default=1, ge=1)  # in evaluations
    reduction_factor: int = Field(default=2, ge=2)


class ResourcesSection(_Section):
    cpus_per_trial: float = Field(default=1, gt=0)
    gpus_per_trial: float = Field(default=0, ge=0)
    max_concurrent: int = Field(default=2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class TrackingSection(_Section):
    enabled: bool = True
    experiment: str | None = None  # None = the study name
    uri: str | None = None  # None = $MLFLOW_TRACKING_URI or sqlite under runs/


class PresetEntry(_Section):
    name: str
    extends: str | None = None
    knobs: dict[str, Any] = Field(default_factory=dict)


class SweepConfig(_Section):
    study: StudySection
    space: dict[str, KnobSpec] = Field(default_factory=dict)
    model: ModelSection
    train: TrainSection
    data: DataSection = DataSection()
    score: ScoreSection = ScoreSection()
    scheduler: SchedulerSection = SchedulerSection()
    resources: ResourcesSection = ResourcesSection()
    tracking: TrackingSection = TrackingSection()
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)  # name -> knobs
    source: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    # -- derived views -------------------------------------------------------
    def vocabulary(self) -> Vocabulary:
        """The tokenizer's ids and the reserved control tokens (see space.vocab)."""
        return self.data.vocabulary()

    def base_shape(self) -> ModelShape:
        vocab = self.model.vocab_size
        if vocab is None:
            vocab = self.vocabulary().size
        return ModelShape(
            n_layers=self.model.layers,
            d_model=self.model.d_model,
            n_heads=self.model.heads,
            n_kv_heads=self.model.heads,
            mlp_hidden=self.model.mlp_hidden,
            vocab_size=vocab,
            init_std=self.model.init_std,
            norm_eps=self.model.norm_eps,
        )

    @property
    def searched(self) -> dict[str, KnobSpec]:
        return {k: v for k, v in self.space.items() if v.searched}

    @property
    def fixed(self) -> dict[str, KnobSpec]:
        return {k: v for k, v in self.space.items() if not v.searched}

    def knobs_for(self, sampled: Mapping[str, Any]) -> dict[str, Any]:
        """Fixed knobs plus sampled ones, dropping knobs whose condition is false."""
        knobs: dict[str, Any] = {}
        for name, spec in self.space.items():
            if not spec.searched:
                knobs[name] = spec.value
        knobs.update(sampled)
        # Conditions may chain; evaluate on the combined values, drop the inactive.
        return {
            name: value
            for name, value in knobs.items()
            if name not in self.space or self.space[name].applies(knobs)
        }

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample one candidate's knobs from an optuna-like trial (conditionals honoured)."""
        values: dict[str, Any] = {k: v.value for k, v in self.space.items() if not v.searched}
        pending = dict(self.searched)
        # Conditions refer to declared knobs; resolve in dependency order.
        while pending:
            progressed = False
            for name, spec in list(pending.items()):
                deps = [other for other, _ in spec.when if other in pending]
                if deps:
                    continue
                if spec.applies(values):
                    values[name] = spec.suggest(trial)
                del pending[name]
                progressed = True
            if not progressed:  # cycle: validated against at load time
                raise ConfigError.at("space", f"conditional knobs form a cycle: {sorted(pending)}")
        return self.knobs_for({k: v for k, v in values.items() if self.space[k].searched})

    def candidate(self, knobs: Mapping[str, Any], path: str = "knobs") -> Candidate:
        return build_candidate(knobs, self.base_shape(), self.train.seq_len, path)

    def preset_candidate(self, name: str) -> Candidate:
        return self.candidate(self.presets[name], path=f"presets.{name}")

    def directions(self) -> list[str]:
        return [o.direction for o in self.study.objectives]

    def objective_names(self) -> list[str]:
        return [o.metric for o in self.study.objectives]

    def space_signature(self) -> dict[str, Any]:
        """What a stored study must agree with to be resumed by this config."""
        return {name: spec.to_dict() for name, spec in sorted(self.space.items())}


# -- loading -----------------------------------------------------------------


def _pydantic_problems(err: ValidationError, prefix: str, model: type[BaseModel]) -> list:
    problems = []
    for e in err.errors():
        loc = [prefix, *[str(p) for p in e["loc"] if p != "[key]"]]  # a bad mapping key
        path = ".".join(p for p in loc if p)
        if e["type"] == "extra_forbidden":
            fields = _fields_at(model, e["loc"][:-1])
            msg = f"unknown key; expected one of {fields}" if fields else "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            got = e.get("input")
            msg = f"{e['msg']} (got {got!r})" if not isinstance(got, dict | list) else e["msg"]
        problems.append((path, msg))
    return problems


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
        args = getattr(current, "__args__", None)
        if args:
            current = next(
                (a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None
            )
            if current is None:
                return []
    return list(getattr(current, "model_fields", {}))


_SECTION_MODELS: dict[str, type[_Section]] = {
    "study": StudySection,
    "model": ModelSection,
    "train": TrainSection,
    "data": DataSection,
    "score": ScoreSection,
    "scheduler": SchedulerSection,
    "resources": ResourcesSection,
    "tracking": TrackingSection,
}
_REQUIRED = ("study", "model", "train")


def _tuples(value: Any) -> Any:
    """YAML lists become tuples (the schema is frozen and strict)."""
    if isinstance(value, Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e4`` and ``1.0e4`` as strings; researchers mean numbers."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_config(raw: Any, source: str | None = None) -> SweepConfig:
    """Validate a parsed YAML document. Raises ConfigError with every problem found."""
    if not isinstance(raw, Mapping):
        raise ConfigError([("", "a sweep file must be a mapping of sections")], source)
    problems: list[tuple[str, str]] = []
    for key in raw:
        if key not in SECTIONS:
            problems.append((str(key), f"unknown section; expected one of {list(SECTIONS)}"))
    sections: dict[str, Any] = {}
    for name, model in _SECTION_MODELS.items():
        if name not in raw:
            if name in _REQUIRED:
                problems.append((name, "required section is missing"))
            continue
        value = raw[name] if raw[name] is not None else {}
        if not isinstance(value, Mapping):
            problems.append((name, f"expected a mapping, got {type(value).__name__}"))
            continue
        try:
            sections[name] = model.model_validate(_tuples(value))
        except ValidationError as err:
            problems.extend(_pydantic_problems(err, name, model))

    space = _parse_space(raw.get("space"), problems)
    presets = _parse_presets(raw.get("presets"), problems)
    if problems:
        raise ConfigError(problems, source)

    config = SweepConfig(source=source, space=space, presets=presets, **sections)
    _check_semantics(config, problems)
    if problems:
        raise ConfigError(problems, source)
    return config


def _parse_space(raw: Any, problems: list) -> dict[str, KnobSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(("space", "expected a mapping {knob: value or domain}"))
        return {}
    space: dict[str, KnobSpec] = {}
    for name, value in raw.items():
        try:
            space[str(name)] = parse_knob(str(name), value, f"space.{name}")
        except ConfigError as err:
            problems.extend(err.problems)
    for name, spec in space.items():
        for i, (other, allowed) in enumerate(spec.when):
            if other not in space:
                problems.append(
                    (
                        f"space.{name}.when.{other}",
                        f"condition refers to knob {other!r}, which is not declared in space",
                    )
                )
            elif other == name:
                problems.append((f"space.{name}.when.{other}", "a knob cannot depend on itself"))
            else:
                domain = knob_domain(space[other])
                if domain and not set(map(repr, allowed)) & set(map(repr, domain)):
                    problems.append(
                        (
                            f"space.{name}.when.{other}",
                            f"no value in {list(allowed)} is possible for {other} ({list(domain)})",
                        )
                    )
            del i
    return space


def _parse_presets(raw: Any, problems: list) -> dict[str, dict[str, Any]]:
    """``presets:`` is a list of shipped names or {name, extends?, knobs?} mappings."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        problems.append(("presets", "expected a list of preset names or {name, extends, knobs}"))
        return {}
    out: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(raw):
        path = f"presets[{i}]"
        if isinstance(entry, str):
            if entry not in BUILTIN_PRESETS:
                problems.append(
                    (path, f"unknown preset {entry!r}; shipped: {list(BUILTIN_PRESETS)}")
                )
                continue
            name, knobs = entry, dict(BUILTIN_PRESETS[entry])
        elif isinstance(entry, Mapping):
            try:
                parsed = PresetEntry.model_validate(dict(entry))
            except ValidationError as err:
                problems.extend(_pydantic_problems(err, path, PresetEntry))
                continue
            base_name = parsed.extends
            if base_name is None and parsed.name in BUILTIN_PRESETS:
                base_name = parsed.name  # overriding a shipped preset's knobs
            if base_name is not None and base_name not in BUILTIN_PRESETS and base_name not in out:
                problems.append((f"{path}.extends", f"unknown preset {base_name!r}"))
                continue
            base = out.get(base_name) or dict(BUILTIN_PRESETS.get(base_name, {}))
            name, knobs = parsed.name, {**base, **parsed.knobs}
        else:
            problems.append((path, "expected a preset name or a mapping"))
            continue
        if name in out:
            problems.append((path, f"preset {name!r} listed twice"))
            continue
        bad = [k for k in knobs if k not in KNOB_NAMES]
        if bad:
            problems.append(
                (f"{path}.knobs.{bad[0]}", f"unknown knob; expected one of {list(KNOB_NAMES)}")
            )
            continue
        out[name] = knobs
    return out


def _check_semantics(config: SweepConfig, problems: list) -> None:
    m = config.model
    if m.d_model % m.heads:
        problems.append(("model.heads", f"heads={m.heads} must divide d_model={m.d_model}"))
    elif (m.d_model // m.heads) % 2:
        problems.append(("model.heads", f"head_dim={m.d_model // m.heads} must be even for RoPE"))
    # Fixed and searched knob values checked against the model where they can be.
    for name in ("global_every", "kv_heads"):
        spec = config.space.get(name)
        if spec is None:
            continue
        values = knob_domain(spec) or (spec.low, spec.high)
        for v in values:
            if v is None:
                continue
            if name == "global_every" and v > m.layers:
                problems.append(
                    (
                        f"space.{name}",
                        f"global_every={v} > model.layers={m.layers}; expected <= layers",
                    )
                )
                break
            if name == "kv_heads" and spec.domain == "fixed" and m.heads % v:
                problems.append(
                    (f"space.{name}", f"kv_heads={v} must divide model.heads={m.heads}")
                )
                break
    t = config.train
    if t.steps is None and t.tokens is None:
        problems.append(("train.steps", "give a budget: train.steps or train.tokens"))
    if t.steps is not None and t.tokens is not None:
        problems.append(("train.tokens", "give train.steps or train.tokens, not both"))
    if t.task_mix and any(v < 0 for v in t.task_mix.values()):
        problems.append(("train.task_mix", "mix weights must be >= 0"))
    if t.lm_fraction < 1 and not any(v > 0 for v in t.task_mix.values()):
        problems.append(
            ("train.task_mix", "lm_fraction < 1 needs at least one task with weight > 0")
        )
    for task, params in t.task_params.items():
        try:
            task_params(task, **params)
        except ValueError as err:
            problems.append((f"train.task_params.{task}", str(err)))
    data_ok = _check_data(config, problems)
    _check_tasks(config, problems)
    s = config.score
    for field in ("lengths", "extrap", "mass_lengths"):
        values = getattr(s, field)
        if any(v < 1 for v in values):
            problems.append((f"score.{field}", "multiples of train.seq_len must be >= 1"))
    if 1 not in s.lengths:
        problems.append(("score.lengths", "must include 1 (accuracy at the training length)"))
    if any(not 0 <= d <= 1 for d in s.depths):
        problems.append(("score.depths", "depths are fractions in [0, 1]"))
    for i, objective in enumerate(config.study.objectives):
        if not is_score_name(objective.metric):
            problems.append(
                (f"study.objectives[{i}].metric", f"unknown score {objective.metric!r}")
            )
    if len({o.metric for o in config.study.objectives}) != len(config.study.objectives):
        problems.append(("study.objectives", "each metric may appear once"))
    # An objective must be a score the configured scoring produces.
    for i, objective in enumerate(config.study.objectives):
        path, name = f"study.objectives[{i}].metric", objective.metric
        if is_score_name(name) and is_task_score(name):
            _check_task_objective(config, path, name, problems)
        bpb_m = multiple_of(name, "extrap_bpb@")
        if bpb_m is not None and bpb_m not in s.extrap:
            problems.append((path, f"{name} needs {bpb_m} in score.extrap"))
    if config.scheduler.metric not in EVAL_METRICS:
        problems.append(
            (
                "scheduler.metric",
                f"{config.scheduler.metric!r} is not reported during training; "
                f"use one of {list(EVAL_METRICS)}",
            )
        )
    if config.study.sampler == "grid":
        for name, spec in config.searched.items():
            try:
                spec.grid_values()
            except ConfigError as err:
                problems.extend(err.problems)
            del name
    if not data_ok:
        return  # no vocabulary, hence no model shape to check candidates against
    # Fixed-only combinations that can never form a model.
    fixed = {k: v.value for k, v in config.fixed.items() if not v.when}
    if not config.searched:
        try:
            config.candidate(fixed, path="space")
        except InvalidCandidate as err:
            problems.append(("space", f"impossible candidate: {err}"))
        except ConfigError as err:
            problems.extend(err.problems)
    for name, knobs in config.presets.items():
        try:
            config.candidate(knobs, path=f"presets.{name}")
        except ConfigError as err:
            problems.extend(err.problems)
        except InvalidCandidate:
            pass  # shown as impossible in `ropenope space`; the trial fails with a reason


_TOKEN_FILE_SUFFIXES = (".npy", ".bin")


def _check_data(config: SweepConfig, problems: list) -> bool:
    """Data checks; False when the vocabulary cannot be known (no model shape then)."""
    d, m = config.data, config.model
    if d.tokenizer.bpe is not None and d.tokenizer.file is not None:
        problems.append(("data.tokenizer", "give bpe or file, not both"))
        return False
    pretokenized = d.source is not None and d.source.lower().endswith(_TOKEN_FILE_SUFFIXES)
    if d.vocab_size is not None and not pretokenized:
        problems.append(
            ("data.vocab_size", "is for pre-tokenized .npy/.bin files; text gets data.tokenizer")
        )
    if d.vocab_size is not None and d.tokenizer.kind != "bytes":
        problems.append(
            ("data.vocab_size", "the tokenizer decides the vocabulary; leave data.vocab_size out")
        )
    if d.tokenizer.bpe is not None and pretokenized:
        problems.append(
            ("data.tokenizer.bpe", f"a BPE is trained on text; {d.source} is already tokens")
        )
    try:
        vocab = d.vocabulary()
    except ValueError as err:
        problems.append(("data.tokenizer.file", str(err)))
        return False
    if m.vocab_size is not None and m.vocab_size < vocab.size:
        problems.append(
            (
                "model.vocab_size",
                f"{m.vocab_size} is below the data's vocabulary of {vocab.size} "
                f"({vocab.text_size} tokenizer ids and the control tokens)",
            )
        )
    return True


def _check_tasks(config: SweepConfig, problems: list) -> None:
    t, s, d = config.train, config.score, config.data
    if s.tasks is not None:
        if len(set(s.tasks)) != len(s.tasks):
            problems.append(("score.tasks", "each task may appear once"))
        if "task" in s.model_fields_set and s.task not in s.tasks:
            problems.append(("score.task", f"{s.task!r} is not among score.tasks {list(s.tasks)}"))
    for task in s.long_tasks or ():
        if task not in s.families:
            problems.append(("score.long_tasks", f"{task!r} is not scored; add it to score.tasks"))
    if s.long_tasks is not None and not s.long_tasks and s.families:
        problems.append(("score.long_tasks", "name at least one scored task"))
    if not d.has_text_tokenizer:
        # Ids of an unknown tokenizer: no text (keys, values, words) can be rendered.
        if s.families:
            problems.append(
                (
                    "score.tasks",
                    "pre-tokenized data without a tokenizer cannot render task text; "
                    "set score.tasks: [] or give data.tokenizer: {file: tokenizer.json}",
                )
            )
        if t.lm_fraction < 1:
            problems.append(
                (
                    "train.lm_fraction",
                    "pre-tokenized data without a tokenizer trains on plain text only; "
                    "set train.lm_fraction: 1",
                )
            )
    if d.tokenizer.kind != "bytes":
        # Lengths in tokens of another tokenizer are known once it exists: checked when
        # the corpus is prepared (workers.corpus.prepare), before any trial.
        return
    for task in dict.fromkeys([*t.task_mix, *s.families]):
        try:
            need = min_length(task, **t.task_params.get(task, {}))
        except ValueError:
            continue
        if need > t.seq_len + 1:
            problems.append(
                (
                    "train.seq_len",
                    f"task {task!r} needs at least {need} tokens; seq_len={t.seq_len}",
                )
            )


def _check_task_objective(config: SweepConfig, path: str, name: str, problems: list) -> None:
    s = config.score
    task, base = split_task_score(name)
    if task is not None and task not in s.families:
        problems.append((path, f"{name} needs {task!r} in score.tasks"))
        return
    if task is None and base in (LONG_ACC, LONG_ANSWER_NLL):
        if not s.headline_tasks:
            problems.append((path, f"{name} needs a scored task (score.tasks is empty)"))
    elif task is None and s.primary_task is None:
        problems.append((path, f"{name} needs a scored task (score.tasks is empty)"))
    if base in (LONG_ACC, LONG_ANSWER_NLL) and not any(m > 1 for m in s.lengths):
        problems.append((path, f"{base} needs a score.lengths multiple beyond 1"))
    for prefix in ("acc@", "answer_nll@", "token_acc@"):
        m = multiple_of(base, prefix)
        if m is not None and m not in s.lengths:
            problems.append((path, f"{name} needs {m} in score.lengths"))


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file. Raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([("", f"no such file: {path}")], str(path))
    try:
        raw = parse_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError([("", f"not valid YAML: {err}")], str(path)) from None
    return parse_config(raw, source=str(path))
