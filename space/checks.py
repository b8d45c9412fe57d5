"""What the schema alone cannot see: checks across sections of a parsed sweep file. Here:
the model against the knobs, the objectives against the scores, the grid, the presets and
fixed knobs as candidates, the hypotheses; the training side (budget, data, tasks,
stages) is :mod:`space.train_checks`. Each problem is reported with the dotted path of
the key to fix; a legal but suspicious setting is a warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from space.errors import ConfigError, InvalidCandidate
from space.expand import recurrent_option_problems
from space.hypothesis_files import check_hypotheses
from space.knobs import KNOB_DEFAULTS, grid_size, knob_domain
from space.layers import layout_problem, proportional_problem, rotary_problem
from space.names import (
    EVAL_METRICS,
    LONG_ACC,
    LONG_ANSWER_NLL,
    RUNG_METRICS,
    RUNG_PROXIES,
    is_score_name,
    is_task_score,
    multiple_of,
    split_held_out,
    split_task_score,
)
from space.sections import MAX_GRID_POINTS, MAX_LENGTH_MULTIPLE
from space.train_checks import check_parallel, check_train
from space.yaml_io import echo

if TYPE_CHECKING:
    from space.schema import SweepConfig


def check_semantics(config: SweepConfig, problems: list, warnings: list) -> None:
    """Every check across sections, in the order a reader fixes them."""
    _check_model_knobs(config, problems, warnings)
    shape_ok = _check_parametrization(config, problems)
    _check_rope_knobs(config, problems)
    data_ok = check_train(config, problems) and shape_ok
    check_parallel(config, problems, warnings)
    _check_score(config, problems)
    _check_early_stopping(config, problems, warnings)
    _check_grid(config, problems)
    if data_ok:  # else no vocabulary, hence no model shape to check candidates against
        _check_candidates(config, problems)
    _check_hypotheses(config, problems)


def _check_parametrization(config: SweepConfig, problems: list) -> bool:
    """``model.parametrization`` and its ``base_d_model``; False when no model shape can be
    built from the section."""
    m = config.model
    before = len(problems)
    if m.parametrization == "mup":
        if m.base_d_model is None:
            problems.append(
                (
                    "model.base_d_model",
                    "parametrization: mup needs the base width its learning rates are tuned at",
                )
            )
        elif m.base_d_model % m.heads:
            problems.append(
                (
                    "model.base_d_model",
                    f"heads={m.heads} must divide base_d_model={m.base_d_model}",
                )
            )
    elif m.base_d_model is not None:
        problems.append(("model.base_d_model", "only read with parametrization: mup"))
    return len(problems) == before


def _check_model_knobs(config: SweepConfig, problems: list, warnings: list) -> None:
    """The model's shape, and fixed and searched knob values against it where they can be."""
    m = config.model
    if m.d_model % m.heads:
        problems.append(("model.heads", f"heads={m.heads} must divide d_model={m.d_model}"))
    elif (m.d_model // m.heads) % 2:
        problems.append(("model.heads", f"head_dim={m.d_model // m.heads} must be even for RoPE"))
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
    _check_layout(config, problems)
    _check_recurrent(config, problems)
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
            warnings.append((f"space.{name}", _wide_window(top, config.train.seq_len)))
    # A preset is a candidate the sweep runs first: the same warning for its windows.
    for i, (preset, knobs) in enumerate(config.presets.items()):
        for name in ("local_window", "global_window"):
            window = knobs.get(name)
            if isinstance(window, int) and window >= config.train.seq_len:
                warnings.append(
                    (
                        f"presets[{i}].knobs.{name}",
                        f"preset {preset!r}: {_wide_window(window, config.train.seq_len)}",
                    )
                )


def _wide_window(window: Any, seq_len: int) -> str:
    return (
        f"a window of {echo(window)} tokens is not smaller than train.seq_len={seq_len}: such "
        "a layer attends fully during training and is windowed only past the training length"
    )


def _check_layout(config: SweepConfig, problems: list) -> None:
    """Each layout places exactly ``model.layers`` layers; a fixed layout leaves no role to
    ``global_every``, so setting both is refused rather than silently ignored."""
    spec = config.space.get("layout")
    if spec is None:
        return
    values = knob_domain(spec)
    for i, value in enumerate(values):
        problem = None if value is None else layout_problem(value, config.model.layers)
        if problem is not None:
            where = "space.layout" if spec.domain == "fixed" else f"space.layout.choice[{i}]"
            problems.append((where, problem))
            return
    if None not in values and not spec.when and "global_every" in config.space:
        problems.append(
            ("space.global_every", "has no effect: space.layout places every global layer")
        )


def _check_recurrent(config: SweepConfig, problems: list) -> None:
    """Where the local layers can only be recurrent, a window, a RoPE base or an attention
    option placed on them alone is a mistake: refused at its key."""
    mixer = config.space.get("local_mixer")
    if mixer is None or "softmax" in knob_domain(mixer) or mixer.when:
        return
    fixed = {k: v.value for k, v in config.fixed.items() if not v.when}
    knobs = {**KNOB_DEFAULTS, **fixed, "local_mixer": knob_domain(mixer)[0]}
    why = f"the local layers are {knobs['local_mixer']} (local_mixer), which take no "
    if "local_rope_base" in config.space:
        problems.append(("space.local_rope_base", why + "RoPE"))
    for name in ("local_window", "local_attention"):
        spec = config.space.get(name)
        if spec is not None and spec.domain != "fixed":
            problems.append((f"space.{name}", why + "window"))
    problems.extend((f"space.{name}", text) for name, text in recurrent_option_problems(knobs))


def _check_rope_knobs(config: SweepConfig, problems: list) -> None:
    """Partial rotary against the head size, and a factor wherever a RoPE scaling is set."""
    m = config.model
    if m.d_model % m.heads:
        return
    head_dim = m.d_model // m.heads
    spec = config.space.get("rope_fraction")
    rope_type = config.space.get("rope_type")
    neox = rope_type is None or "neox" in knob_domain(rope_type)
    if spec is not None:
        for value in knob_domain(spec):
            problem = (
                rotary_problem(value, head_dim) if neox else proportional_problem(value, head_dim)
            )
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


def _check_score(config: SweepConfig, problems: list) -> None:
    """Score lengths and depths; objectives that are scores the scoring produces."""
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
    _check_held_out(config, problems)
    if config.scheduler.metric not in EVAL_METRICS:
        problems.append(
            (
                "scheduler.metric",
                f"{config.scheduler.metric!r} is not reported during training; "
                f"use one of {list(EVAL_METRICS)}",
            )
        )


def _check_early_stopping(config: SweepConfig, problems: list, warnings: list) -> None:
    """``study.early_stopping``: one scheduler per study, and rung objectives a rung can
    see, at least one of them measured during training (else the ranking is fixed before
    any training and no rung learns anything)."""
    es = config.study.early_stopping
    if es is None:
        return
    path = "study.early_stopping"
    if config.scheduler.kind != "none":
        problems.append(
            (
                f"{path}.scheduler",
                f"scheduler.kind is {config.scheduler.kind!r}: a study has one early-stopping "
                "scheduler; remove one of the two",
            )
        )
    for i, objective in enumerate(es.objectives or ()):
        if objective.metric not in RUNG_METRICS:
            problems.append(
                (
                    f"{path}.objectives[{i}].metric",
                    f"{objective.metric!r} is not known at a rung; use one of {list(RUNG_METRICS)}",
                )
            )
    if es.objectives is not None and len({o.metric for o in es.objectives}) != len(es.objectives):
        problems.append((f"{path}.objectives", "each metric may appear once"))
    rung = es.rung_objectives(config.study.objectives)
    if not any(o.metric in EVAL_METRICS for o in rung):
        where = f"{path}.objectives" if es.objectives is not None else "study.objectives"
        problems.append(
            (
                f"{path}.objectives",
                f"none of {where} is measured during training (one of {list(EVAL_METRICS)}"
                f"{', or short_bpb' if es.objectives is None else ''}); list the rung "
                "objectives",
            )
        )
        return
    if es.objectives is None:
        seen = {o.metric for o in rung}
        unseen = [
            o.metric
            for o in config.study.objectives
            if RUNG_PROXIES.get(o.metric, o.metric) not in seen
        ]
        if unseen:
            warnings.append(
                (
                    path,
                    f"rungs rank on {', '.join(o.metric for o in rung)}; "
                    f"{', '.join(unseen)}: measured only after training, no part in stopping",
                )
            )


def _check_held_out(config: SweepConfig, problems: list) -> None:
    """``score.held_out``: families scored but never trained on, so none is in a task_mix
    (train's or a stage's), the headline (``score.long_tasks``) or the primary family."""
    s, t = config.score, config.train
    if s.held_out and s.primary_task is None:
        problems.append(("score.held_out", "needs a scored task (score.tasks is empty)"))
        return
    mixes = [("train.task_mix", t.task_mix)]
    mixes += [
        (f"train.stages[{k}].task_mix", stage.task_mix)
        for k, stage in enumerate(t.stages)
        if stage.task_mix is not None
    ]
    for i, task in enumerate(s.held_out):
        path = f"score.held_out[{i}]"
        if s.held_out.index(task) != i:
            problems.append((path, f"{task!r} is listed twice"))
            continue
        trained = [where for where, mix in mixes if mix.get(task, 0.0) > 0]
        if trained:
            problems.append(
                (
                    path,
                    f"{task!r} is also in {trained[0]}: a held-out family must not be trained "
                    "on; remove it from one of the two",
                )
            )
        if task == s.primary_task:
            problems.append(
                (path, f"{task!r} is the primary family (score.task); pick another as primary")
            )
        elif task in s.headline_tasks:
            problems.append(
                (
                    path,
                    f"{task!r} is in score.long_tasks: held-out families are reported apart "
                    "(held_out_long_acc), not in the headline",
                )
            )


def _check_task_objective(config: SweepConfig, path: str, name: str, problems: list) -> None:
    s = config.score
    held = split_held_out(name)
    if held is not None:
        if not s.held_out:
            problems.append((path, f"{name} needs score.held_out (families scored, not trained)"))
        name = held
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


def _check_grid(config: SweepConfig, problems: list) -> None:
    """The grid sampler needs finite domains and a grid of bounded size."""
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


def _check_candidates(config: SweepConfig, problems: list) -> None:
    """Fixed-only combinations and presets that can never form a model."""
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


def _check_hypotheses(config: SweepConfig, problems: list) -> None:
    s = config.score
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
            families=s.families,
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
