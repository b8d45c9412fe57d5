"""What the schema alone cannot see: checks across sections of a parsed sweep file (the
model against the knobs, the tasks against the training length, the objectives against
the scores, the data, RoPE knobs and training stages). Each problem is reported with the
dotted path of the key to fix; a legal but suspicious setting is a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from space.errors import ConfigError, InvalidCandidate
from space.hypothesis_files import check_hypotheses
from space.knobs import (
    KNOB_DEFAULTS,
    KNOB_NAMES,
    check_value,
    grid_size,
    knob_domain,
)
from space.names import (
    EVAL_METRICS,
    LONG_ACC,
    LONG_ANSWER_NLL,
    is_score_name,
    is_task_score,
    multiple_of,
    split_task_score,
)
from space.sections import MAX_GRID_POINTS, MAX_LENGTH_MULTIPLE
from space.stages import (
    LAYOUT_KNOBS,
    SHAPE_KNOBS,
    StagePlan,
    describe_layout_change,
    layout_changes,
    layout_knob_values,
)
from space.tasks import min_length, task_params
from space.yaml_io import echo

if TYPE_CHECKING:
    from space.schema import SweepConfig


def check_semantics(config: SweepConfig, problems: list, warnings: list) -> None:
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
    data_ok = _check_data(config, problems)
    _check_tasks(config, problems)
    _check_stages(config, problems)
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
    if not data_ok:
        return  # no vocabulary, hence no model shape to check candidates against
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
    if config.study.adaptive and not config.hypotheses:
        problems.append(
            (
                "study.repeats",
                "adaptive seeds ({min, max}) add seeds where a hypothesis is undecided: "
                "state hypotheses (hypotheses: or hypotheses_from:)",
            )
        )


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
