"""The sweep file: a typed, frozen schema validated once at the boundary.

``load_config(path)`` returns a :class:`SweepConfig` or raises :class:`ConfigError`
listing every problem with the dotted path of the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from space.errors import ConfigError, InvalidCandidate
from space.expand import Candidate, build_candidate
from space.hypotheses import Hypothesis
from space.hypothesis_files import check_hypotheses, sweep_hypotheses
from space.knobs import (
    KNOB_NAMES,
    KnobSpec,
    check_value,
    domain_holds,
    grid_size,
    knob_domain,
    parse_knob,
)
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
from space.tasks import min_length, task_params
from space.vocab import VOCAB_SIZE as BYTE_VOCAB_SIZE
from space.yaml_io import echo, parse_yaml, read_yaml_file

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
)


class _Section(BaseModel):
    # NaN and infinities are never a setting; strict: "10" is not 10, 1.0 is not true.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


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


class TrainSection(_Section):
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
    threads: int | None = Field(
        default=None, ge=1, le=MAX_CPUS
    )  # torch threads; None = CPUs given to the trial

    @property
    def total_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, self.tokens // (self.batch_size * self.seq_len))


class DataSection(_Section):
    source: str | None = None  # None = the Python standard library's source
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    dtype: Literal["uint8", "uint16"] | None = None  # for pre-tokenized files


class ScoreSection(_Section):
    task: Literal["passkey", "multikey", "multivalue"] = "multikey"
    lengths: tuple[int, ...] = Field(default=(1, 2, 4, 8), min_length=1, max_length=32)  # x seq_len
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
    mass_samples: int = Field(default=8, ge=1, le=MAX_SAMPLES)
    seed: int = Field(default=1234, ge=0, le=MAX_SEED)


class SchedulerSection(_Section):
    kind: Literal["none", "asha"] = "none"
    metric: str = "val_bpb"
    mode: Literal["min", "max"] = "min"
    grace_period: int = Field(default=1, ge=1, le=MAX_STEPS)  # in evaluations
    reduction_factor: int = Field(default=2, ge=2, le=1000)


class ResourcesSection(_Section):
    cpus_per_trial: float = Field(default=1, gt=0, le=MAX_CPUS)
    gpus_per_trial: float = Field(default=0, ge=0, le=MAX_CPUS)
    max_concurrent: int = Field(default=2, ge=1, le=MAX_TRIALS)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # A trial whose worker process or node dies (SIGKILL, OOM, a node leaving) restarts
    # from its newest checkpoint up to this many times; then it is FAIL worker_died and
    # `ropenope resume` runs it again. An exception in the candidate's code is not retried.
    max_retries: int = Field(default=2, ge=0, le=100)


class TrackingSection(_Section):
    enabled: bool = True
    experiment: str | None = None  # None = the study name
    uri: str | None = None  # None = $MLFLOW_TRACKING_URI or sqlite under runs/


class PresetEntry(_Section):
    name: str = Field(min_length=1, max_length=100)
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
    hypotheses: tuple[Hypothesis, ...] = ()  # the file's own, or those of hypotheses_from
    hypotheses_from: str | None = None  # the file they came from, as written
    source: str | None = None
    # (dotted path, message): legal but probably not what was meant; shown by `ropenope
    # space` and `submit`, never silenced.
    warnings: tuple[tuple[str, str], ...] = ()

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
        loc = [prefix, *[str(p) for p in e["loc"]]]
        path = ".".join(p for p in loc if p)
        if e["type"] == "extra_forbidden":
            fields = _fields_at(model, e["loc"][:-1])
            msg = f"unknown key; expected one of {fields}" if fields else "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            got = e.get("input")
            msg = (
                e["msg"]
                if isinstance(got, dict | list | tuple)
                else f"{e['msg']} (got {echo(got)})"
            )
        problems.append((path, msg[:300]))
    # One line per key: a union type reports one error per member; keep the first.
    return list(dict((path, msg) for path, msg in reversed(problems)).items())[::-1]


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


def parse_config(
    raw: Any, source: str | None = None, base_dir: str | Path | None = None
) -> SweepConfig:
    """Validate a parsed YAML document. Raises ConfigError with every problem found.

    ``base_dir`` is the sweep file's folder, where ``hypotheses_from`` is looked up
    first; a sweep file read back from a study has none (see
    :func:`space.hypotheses.resolve_hypotheses_file`)."""
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
        if name == "study":
            value = _split_repeats(value, problems)
        try:
            sections[name] = model.model_validate(_tuples(value))
        except ValidationError as err:
            problems.extend(_pydantic_problems(err, name, model))

    space = _parse_space(raw.get("space"), problems)
    presets = _parse_presets(raw.get("presets"), problems)
    hypotheses = sweep_hypotheses(raw, Path(base_dir) if base_dir else None, problems)
    if problems:
        raise ConfigError(problems, source)

    config = SweepConfig(
        source=source,
        space=space,
        presets=presets,
        hypotheses=hypotheses,
        hypotheses_from=raw.get("hypotheses_from"),
        **sections,
    )
    warnings: list[tuple[str, str]] = []
    _check_semantics(config, problems, warnings)
    if problems:
        raise ConfigError(problems, source)
    return config.model_copy(update={"warnings": tuple(warnings)}) if warnings else config


def _split_repeats(study: Mapping[str, Any], problems: list) -> dict[str, Any]:
    """``repeats: {min: 2, max: 8}`` -> ``repeats: 2, repeats_max: 8`` (and ``others: 1``
    -> ``repeats_others: 1``); a plain integer stays as it is (every candidate gets that
    many seeds)."""
    out = dict(study)
    for key in ("repeats_max", "repeats_others"):
        if out.get(key) is not None:  # null: a dumped config read back
            problems.append((f"study.{key}", "unknown key; write repeats: {min: 2, max: 8}"))
        out.pop(key, None)
    value = out.get("repeats")
    if not isinstance(value, Mapping):
        return out
    unknown = sorted(set(value) - {"min", "max", "others"})
    if unknown:
        problems.append((f"study.repeats.{unknown[0]}", "unknown key; expected min, max, others"))
    for key in ("min", "max"):
        v = value.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            problems.append((f"study.repeats.{key}", f"expected a whole number >= 1, got {v!r}"))
            out.pop("repeats", None)
            return out
    if value["max"] < value["min"]:
        problems.append(("study.repeats.max", f"max {value['max']} is below min {value['min']}"))
    elif value["max"] > value["min"] and value["min"] < 2:
        problems.append(
            (
                "study.repeats.min",
                "adaptive seeds judge spreads: every candidate needs min >= 2 seeds first",
            )
        )
    out["repeats"], out["repeats_max"] = value["min"], value["max"]
    others = value.get("others")
    if others is not None:
        if isinstance(others, bool) or not isinstance(others, int) or others < 1:
            problems.append(
                ("study.repeats.others", f"expected a whole number >= 1, got {others!r}")
            )
        elif others > value["max"]:
            problems.append(
                ("study.repeats.others", f"others {others} is above max {value['max']}")
            )
        else:
            out["repeats_others"] = others
    return out


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
        for other, allowed in spec.when:
            if other not in space:
                problems.append(
                    (
                        f"space.{name}.when.{other}",
                        f"condition refers to knob {other!r}, which is not declared in space",
                    )
                )
            elif other == name:
                problems.append((f"space.{name}.when.{other}", "a knob cannot depend on itself"))
            elif not any(domain_holds(space[other], value) for value in allowed):
                problems.append(
                    (
                        f"space.{name}.when.{other}",
                        f"no value in {echo(list(allowed))} is possible for {other} "
                        f"({space[other].describe()[:80]})",
                    )
                )
    cycle = _condition_cycle(space)
    if cycle:
        problems.append(
            (f"space.{cycle[0]}.when", "conditions form a cycle: " + " -> ".join(cycle))
        )
    return space


def _condition_cycle(space: Mapping[str, KnobSpec]) -> list[str] | None:
    """A cycle of ``when`` conditions (a -> b -> a), as the knob names along it."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for other, _ in space[name].when:
            if other not in space or other == name:
                continue  # reported on its own
            if state.get(other) == 1:
                return [*path[path.index(other) :], other] if other in path else [name, other]
            if other not in state:
                found = visit(other, [*path, other])
                if found:
                    return found
        state[name] = 2
        return None

    for name in space:
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None


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
        own = knobs if isinstance(entry, str) else (entry.get("knobs") or {})
        try:
            for knob, value in own.items():
                check_value(knob, value, f"{path}.knobs.{knob}")
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        out[name] = knobs
    return out


def _check_semantics(config: SweepConfig, problems: list, warnings: list) -> None:
    m = config.model
    if m.d_model % m.heads:
        problems.append(("model.heads", f"heads={m.heads} must divide d_model={m.d_model}"))
    elif (m.d_model // m.heads) % 2:
        problems.append(("model.heads", f"head_dim={m.d_model // m.heads} must be even for RoPE"))
    # Fixed and searched knob values checked against the model where they can be.
    every = config.space.get("global_every")
    if every is not None:
        if every.domain == "int":
            highest = int(every.high)
        else:
            highest = max((v for v in knob_domain(every) if v is not None), default=None)
        if highest is not None and highest > m.layers:
            problems.append(
                (
                    "space.global_every",
                    f"global_every={echo(highest)} > model.layers={m.layers}; expected <= layers",
                )
            )
    kv = config.space.get("kv_heads")
    if kv is not None and kv.domain in ("fixed", "choice", "int"):
        values = knob_domain(kv)
        # Divisors of heads are at most heads: a huge int range is never walked past it.
        small = (
            values
            if not isinstance(values, range)
            else range(values.start, min(values.stop, m.heads + 1), values.step)
        )
        dividing = [v for v in small if v is None or (v > 0 and m.heads % v == 0)]
        if not dividing:
            what = (
                f"kv_heads={echo(kv.value)} must divide"
                if kv.domain == "fixed"
                else f"no value of kv_heads ({kv.describe()[:60]}) divides"
            )
            problems.append(("space.kv_heads", f"{what} model.heads={m.heads}"))
        elif kv.domain == "choice" and len(dividing) < len(values):
            bad = [v for v in values if v not in dividing]
            warnings.append(
                (
                    "space.kv_heads",
                    f"kv_heads {echo(bad)} do not divide model.heads={m.heads}: those "
                    "candidates fail as invalid_candidate",
                )
            )
    for name in ("local_window", "global_window"):
        spec = config.space.get(name)
        if spec is None:
            continue
        domain = knob_domain(spec)
        top = (
            spec.high
            if spec.domain == "int"
            else max((v for v in domain if v is not None), default=None)
        )
        if top is not None and top >= config.train.seq_len:
            warnings.append(
                (
                    f"space.{name}",
                    f"a window of {echo(top)} tokens is not smaller than train.seq_len="
                    f"{config.train.seq_len}: such a layer attends fully during training and "
                    "is windowed only past the training length",
                )
            )
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
    s = config.score
    for field in ("lengths", "extrap", "mass_lengths"):
        values = getattr(s, field)
        if any(v < 1 for v in values):
            problems.append((f"score.{field}", "multiples of train.seq_len must be >= 1"))
        elif any(v > MAX_LENGTH_MULTIPLE for v in values):
            problems.append(
                (f"score.{field}", f"multiples of train.seq_len must be <= {MAX_LENGTH_MULTIPLE}")
            )
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
        points = 1
        for name, spec in config.searched.items():
            size = grid_size(spec)
            if size is None:
                problems.append(
                    (
                        f"space.{name}",
                        "the grid sampler needs a finite domain (choice, int, or float with step)",
                    )
                )
                continue
            points *= size
            if points > MAX_GRID_POINTS:
                problems.append(
                    (f"space.{name}", f"the grid has more than {MAX_GRID_POINTS:,} points")
                )
                break
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
    where = f"{config.hypotheses_from}: hypotheses" if config.hypotheses_from else "hypotheses"
    problems.extend(
        check_hypotheses(
            config.hypotheses,
            presets=list(config.presets),
            lengths=s.lengths,
            extrap=s.extrap,
            mass_lengths=s.mass_lengths,
            attention_mass=s.attention_mass,
            path=where,
        )
    )
    if config.study.repeats_others is not None and not config.hypotheses:
        problems.append(
            (
                "study.repeats.others",
                "others sets the seeds of candidates no hypothesis compares: state "
                "hypotheses (hypotheses: or hypotheses_from:)",
            )
        )
    if config.study.adaptive and not config.hypotheses:
        problems.append(
            (
                "study.repeats",
                "adaptive seeds ({min, max}) add seeds where a hypothesis is undecided: "
                "state hypotheses (hypotheses: or hypotheses_from:)",
            )
        )


def load_config_text(text: str, source: str | None = None) -> SweepConfig:
    """Validate a sweep file's text (e.g. the one a study stored). Raises ConfigError."""
    return parse_config(parse_yaml(text, source), source=source)


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file. Raises ConfigError (never anything else for a bad
    file: see :mod:`space.yaml_io` for what is refused before validation)."""
    raw, _ = read_yaml_file(path)
    return parse_config(raw, source=str(path), base_dir=Path(path).parent)
