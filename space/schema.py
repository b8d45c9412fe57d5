"""The sweep file: a typed, frozen schema validated once at the boundary.

``load_config(path)`` returns a :class:`SweepConfig` or raises :class:`ConfigError`
listing every problem with the dotted path of the offending key. The sections are
:mod:`space.sections`; the checks across sections :mod:`space.checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from space.checks import check_semantics
from space.errors import ConfigError
from space.expand import Candidate, build_candidate
from space.hypotheses import Hypothesis
from space.hypothesis_files import sweep_hypotheses
from space.knobs import (
    KNOB_NAMES,
    KnobSpec,
    check_value,
    domain_holds,
    parse_knob,
)
from space.ladder import LadderSection, apply_rung, check_ladder
from space.layers import ModelShape, Parametrization
from space.presets import BUILTIN_PRESETS
from space.sections import (
    SECTIONS,
    DataSection,
    ModelSection,
    PresetEntry,
    ResourcesSection,
    SchedulerSection,
    ScoreSection,
    StudySection,
    TrackingSection,
    TrainSection,
    _Section,
)
from space.vocab import Vocabulary
from space.yaml_io import echo, frozen, parse_yaml, read_yaml_file


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
    ladder: LadderSection | None = None  # a scale ladder (space.ladder)
    # The ladder rung this config trains (space.ladder.apply_rung); 0 without a ladder.
    rung: int = 0
    source: str | None = None
    # (dotted path, message): legal but probably not what was meant; shown by `ropenope
    # space` and `submit`, never silenced.
    warnings: tuple[tuple[str, str], ...] = ()

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    _added_fields = frozenset({"ladder", "rung"})

    # -- derived views -------------------------------------------------------
    @property
    def stopping_scheduler(self) -> str:
        """Which scheduler stops trials early: ``mo_asha`` (``study.early_stopping``),
        ``asha`` (``scheduler.kind``) or ``none``."""
        es = self.study.early_stopping
        return es.scheduler if es is not None else self.scheduler.kind

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
            parametrization=Parametrization(self.model.parametrization),
            base_d_model=self.model.base_d_model,
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
    errors = err.errors()
    for e in errors:
        # A list whose only items failed is also "too short": say what is wrong with them.
        if e["type"] == "too_short" and any(
            o["loc"][: len(e["loc"])] == e["loc"] and len(o["loc"]) > len(e["loc"]) for o in errors
        ):
            continue
        path = prefix
        for part in e["loc"]:  # list items as [i], like every other path we report
            if part == "[key]":
                continue  # a bad mapping key: the path names the mapping
            path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
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
    "ladder": LadderSection,
}
_REQUIRED = ("study", "model", "train")


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
            sections[name] = model.model_validate(frozen(value))
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
    if config.ladder is not None:
        config = _ladder_rung_zero(config, config.ladder, raw, problems)
        if problems:
            raise ConfigError(problems, source)
    warnings: list[tuple[str, str]] = []
    check_semantics(config, problems, warnings)
    if problems:
        raise ConfigError(problems, source)
    if config.ladder is not None:
        _check_upper_rungs(config, config.ladder, problems)
        if problems:
            raise ConfigError(problems, source)
    return config.model_copy(update={"warnings": tuple(warnings)}) if warnings else config


def _ladder_rung_zero(
    config: SweepConfig, ladder: LadderSection, raw: Mapping[str, Any], problems: list
) -> SweepConfig:
    """The ladder's own checks, then ``config`` as rung 0 trains it (its overrides are the
    sweep's model and training: :mod:`space.ladder`)."""
    check_ladder(ladder, raw, problems)
    if ladder.promote.by not in config.objective_names():
        problems.append(
            (
                "ladder.promote.by",
                f"not an objective of the study; expected one of {config.objective_names()}",
            )
        )
    if config.study.adaptive:
        problems.append(
            ("study.repeats", "a ladder sets seeds per rung (ladder.seeds), not {min, max}")
        )
    if problems:
        return config
    try:
        return apply_rung(config, 0)
    except ConfigError as err:
        problems.extend(err.problems)
        return config


def _check_upper_rungs(config: SweepConfig, ladder: LadderSection, problems: list) -> None:
    """Every check across sections again for each rung above 0, as that rung trains."""
    for rung in range(1, len(ladder.rungs)):
        path = f"ladder.rungs[{rung}]"
        try:
            upper = apply_rung(config, rung)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        found: list[tuple[str, str]] = []
        check_semantics(upper, found, [])
        problems.extend((path, f"at this rung, {key}: {message}") for key, message in found)


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


def load_config_text(text: str, source: str | None = None) -> SweepConfig:
    """Validate a sweep file's text (e.g. the one a study stored). Raises ConfigError."""
    return parse_config(parse_yaml(text, source), source=source)


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file. Raises ConfigError (never anything else for a bad
    file: see :mod:`space.yaml_io` for what is refused before validation)."""
    raw, _ = read_yaml_file(path)
    return parse_config(raw, source=str(path), base_dir=Path(path).parent)
