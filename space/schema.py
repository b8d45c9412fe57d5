"""The sweep file: a typed, frozen schema validated once at the boundary.

``load_config(path)`` returns a :class:`SweepConfig` or raises :class:`ConfigError`
listing every problem with the dotted path of the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from space.errors import ConfigError, InvalidCandidate
from space.expand import Candidate, build_candidate
from space.knobs import KNOB_DEFAULTS, KNOB_NAMES, KnobSpec, check_value, knob_domain, parse_knob
from space.layers import ModelShape
from space.names import (
    EVAL_METRICS,
    KV_CACHE_BYTES,
    LONG_ACC,
    SHORT_BPB,
    is_score_name,
    multiple_of,
)
from space.presets import BUILTIN_PRESETS
from space.stages import (
    LAYOUT_KNOBS,
    SHAPE_KNOBS,
    StagePlan,
    describe_layout_change,
    eval_steps,
    layout_changes,
    layout_knob_values,
)
from space.tasks import min_length, task_params
from space.vocab import VOCAB_SIZE as BYTE_VOCAB_SIZE

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


TaskName = Literal["passkey", "multikey", "multivalue"]


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
    task_mix: dict[Literal["passkey", "multikey", "multivalue"], float] = Field(
        default_factory=lambda: {"multikey": 1.0}
    )
    # Task parameters shared by training and scoring, e.g. {multikey: {n_needles: 2}}.
    task_params: dict[Literal["passkey", "multikey", "multivalue"], dict[str, int]] = Field(
        default_factory=dict
    )
    lm_fraction: float = Field(default=0.5, ge=0, le=1)
    filler_weight: float = Field(default=0.1, ge=0)
    answer_weight: float = Field(default=1.0, ge=0)
    threads: int | None = Field(default=None, ge=1)  # torch threads; None = CPUs given to the trial
    # Several stages in one trial (e.g. a short stage, then a long one with a larger RoPE
    # base); empty: the fields above are the one stage.
    stages: tuple[StageSection, ...] = ()

    @property
    def total_steps(self) -> int:
        """Optimizer steps over every stage."""
        if self.stages:
            return sum(stage.steps for stage in self.stages)
        if self.steps is not None:
            return self.steps
        return max(1, self.tokens // (self.batch_size * self.seq_len))

    def stage_plans(self) -> tuple[StagePlan, ...]:
        """Every stage with its settings resolved; one stage when ``stages`` is not given."""
        if not self.stages:
            return (self._plan(StageSection(steps=self.total_steps)),)
        return tuple(self._plan(stage) for stage in self.stages)

    def _plan(self, stage: StageSection) -> StagePlan:
        def pick(name: str) -> Any:
            own = getattr(stage, name)
            return getattr(self, name) if own is None else own

        return StagePlan(
            steps=stage.steps,
            seq_len=pick("seq_len"),
            batch_size=pick("batch_size"),
            lr=pick("lr"),
            warmup_steps=pick("warmup_steps"),
            min_lr_ratio=pick("min_lr_ratio"),
            task_mix=dict(pick("task_mix")),
            lm_fraction=pick("lm_fraction"),
            knobs=dict(stage.knobs),
        )

    def eval_steps(self) -> tuple[int, ...]:
        """Global steps after which training evaluates (every ``eval_every``, each stage's end)."""
        return eval_steps(self.stage_plans(), self.eval_every)

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        return _without_later_defaults(self, handler(self), {"stages": ()})


class DataSection(_Section):
    source: str | None = None  # None = the Python standard library's source
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    dtype: Literal["uint8", "uint16"] | None = None  # for pre-tokenized files


class ScoreSection(_Section):
    task: Literal["passkey", "multikey", "multivalue"] = "multikey"
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
    # Score after every stage of train.stages too (keys "stage1/short_bpb", ...), not only
    # after the last one.
    after_each_stage: bool = False

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        return _without_later_defaults(self, handler(self), {"after_each_stage": False})


def _without_later_defaults(
    section: BaseModel, dumped: dict[str, Any], later_defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """A section's dump without the fields added after the first release while they hold
    their default: what hashes it (the dedup budget) and the MLflow params logged from it
    stay what they were for every sweep file that does not use them."""
    for name, default in later_defaults.items():
        if getattr(section, name) == default:
            dumped.pop(name, None)
    return dumped


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
    def base_shape(self) -> ModelShape:
        vocab = self.model.vocab_size
        if vocab is None:
            vocab = BYTE_VOCAB_SIZE
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
        stages = self.train.stage_plans() if self.train.stages else ()
        return build_candidate(knobs, self.base_shape(), self.train.seq_len, path, stages)

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
        path = prefix
        for part in e["loc"]:  # list items as [i], like every other path we report
            path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
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
        if isinstance(part, int):  # an item of a list section (train.stages[1])
            continue
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
    _check_rope_knobs(config, problems)
    t = config.train
    if t.stages:
        for name in ("steps", "tokens"):
            if getattr(t, name) is not None:
                problems.append(
                    (f"train.{name}", "with train.stages, each stage gives its own steps")
                )
    elif t.steps is None and t.tokens is None:
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
    for task in {*t.task_mix, config.score.task}:
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
    _check_stages(config, problems)
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
        if name == LONG_ACC and not any(m > 1 for m in s.lengths):
            problems.append((path, "long_acc needs a score.lengths multiple beyond 1"))
        acc_m, bpb_m = multiple_of(name, "acc@"), multiple_of(name, "extrap_bpb@")
        if acc_m is not None and acc_m not in s.lengths:
            problems.append((path, f"{name} needs {acc_m} in score.lengths"))
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
    # Fixed-only combinations that can never form a model.
    fixed = {k: v.value for k, v in config.fixed.items() if not v.when}
    stage_problem = any(p.startswith("train.stages") for p, _ in problems)
    if not config.searched and not stage_problem:
        try:
            config.candidate(fixed, path="space")
        except InvalidCandidate as err:
            problems.append(("space", f"impossible candidate: {err}"))
        except ConfigError as err:
            problems.extend(err.problems)
    for name, knobs in config.presets.items():
        try:
            config.candidate(knobs, path=f"presets.{name}")
        except ConfigError as err:  # a stage's own problems are reported once, above
            problems.extend(p for p in err.problems if not p[0].startswith("train.stages"))
        except InvalidCandidate:
            pass  # shown as impossible in `ropenope space`; the trial fails with a reason


def _rotary_problem(fraction: float, head_dim: int) -> str | None:
    dims = int(head_dim * fraction)
    if dims >= 2 and dims % 2 == 0:
        return None
    return (
        f"rope_fraction={fraction:g} rotates int({head_dim} x {fraction:g}) = {dims} of "
        f"head_dim {head_dim} dimensions; RoPE needs an even number >= 2"
    )


def _check_rope_knobs(config: SweepConfig, problems: list) -> None:
    """Partial rotary against the head size, and a factor wherever a RoPE scaling is set."""
    m = config.model
    if m.d_model % m.heads:
        return
    head_dim = m.d_model // m.heads
    spec = config.space.get("rope_fraction")
    if spec is not None:
        for value in knob_domain(spec):
            problem = _rotary_problem(value, head_dim)
            if problem:
                problems.append(("space.rope_fraction", problem))
                break
    scaling = config.space.get("rope_scaling")
    if (
        scaling is not None
        and "rope_scaling_factor" not in config.space
        and any(v != "none" for v in knob_domain(scaling))
    ):
        problems.append(
            (
                "space.rope_scaling_factor",
                "required when rope_scaling can be linear, ntk or yarn (a factor >= 1)",
            )
        )


def _check_stages(config: SweepConfig, problems: list) -> None:
    """``train.stages``: each stage's data fits its length, and its knob overrides are values
    that keep every weight (a stage may change how layers attend, not which weights exist)."""
    t = config.train
    if not t.stages:
        return
    plans = t.stage_plans()
    head_dim = config.model.d_model // config.model.heads
    if t.stages[0].knobs:
        problems.append(
            (
                "train.stages[0].knobs",
                "the first stage trains the candidate's own knobs; fix them in space:",
            )
        )
    for i, plan in enumerate(plans):
        path = f"train.stages[{i}]"
        if any(v < 0 for v in plan.task_mix.values()):
            problems.append((f"{path}.task_mix", "mix weights must be >= 0"))
        if plan.lm_fraction < 1 and not any(v > 0 for v in plan.task_mix.values()):
            problems.append(
                (f"{path}.task_mix", "lm_fraction < 1 needs at least one task with weight > 0")
            )
        for task in plan.task_mix:
            try:
                need = min_length(task, **t.task_params.get(task, {}))
            except ValueError:
                continue
            if need > plan.seq_len + 1:
                problems.append(
                    (
                        f"{path}.seq_len",
                        f"task {task!r} needs at least {need} tokens; seq_len={plan.seq_len}",
                    )
                )
        if i == 0:
            continue
        for name, value in plan.knobs.items():
            where = f"{path}.knobs.{name}"
            if name not in KNOB_NAMES:
                problems.append((where, f"unknown knob; expected one of {list(KNOB_NAMES)}"))
            elif isinstance(value, Mapping):
                problems.append((where, "a stage fixes knob values; search them in space:"))
            elif name in SHAPE_KNOBS:
                problems.append((where, "a stage cannot change parameter shapes"))
            else:
                try:
                    checked = check_value(name, value, where)
                except ConfigError as err:
                    problems.extend(err.problems)
                    continue
                if name == "rope_fraction" and (problem := _rotary_problem(checked, head_dim)):
                    problems.append((where, problem))
    if any(p.startswith("train.stages") for p, _ in problems):
        return
    _check_stage_layouts(config, plans, problems)


def _check_stage_layouts(config: SweepConfig, plans: tuple[StagePlan, ...], problems: list) -> None:
    """No override may add or drop QK-norm weights or sink logits on any layer, for any
    candidate the space or a preset can make (the candidate's own check is the backstop)."""
    n_layers = config.model.layers
    domains: dict[str, tuple[Any, ...]] = {}
    for name in LAYOUT_KNOBS:
        spec = config.space.get(name)
        values = knob_domain(spec) if spec is not None else ()
        if spec is None or spec.when:  # inactive conditional knobs keep their default
            values = (*values, KNOB_DEFAULTS[name])
        domains[name] = tuple(dict.fromkeys(values))
    bases = [{**KNOB_DEFAULTS, **combo} for combo in layout_knob_values(domains) or []]
    bases += [{**KNOB_DEFAULTS, **knobs} for knobs in config.presets.values()]
    overrides: dict[str, Any] = {}
    for i, plan in enumerate(plans[1:], start=1):
        overrides.update(plan.knobs)
        if not set(overrides) & set(LAYOUT_KNOBS):
            continue
        for base in bases:
            try:
                changed = layout_changes(base, overrides, n_layers)
            except ValueError:  # a preset with a malformed value: reported on its own
                continue
            if changed:
                key = changed[0]
                where = f"train.stages[{i}].knobs" + ("" if key == "*" else f".{key}")
                layout = ", ".join(f"{k}={base[k]}" for k in LAYOUT_KNOBS)
                problems.append(
                    (
                        where,
                        "changes parameter shapes, so the weights cannot carry over: with "
                        f"{layout}, {describe_layout_change(base, overrides, n_layers)}",
                    )
                )
                break


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
