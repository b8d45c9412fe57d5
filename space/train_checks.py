"""The training side of a sweep file, checked across sections: the budget, the task mix,
the data and its vocabulary, the tasks against the training length, and the stages
(their lengths, and knob overrides that keep every weight). Part of
:func:`space.checks.check_semantics`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from space.errors import ConfigError
from space.knobs import KNOB_DEFAULTS, KNOB_NAMES, check_value, knob_domain
from space.layers import rotary_problem
from space.stages import (
    LAYOUT_KNOBS,
    SHAPE_KNOBS,
    StagePlan,
    describe_layout_change,
    layout_changes,
    layout_knob_values,
)
from space.tasks import min_length, task_params

if TYPE_CHECKING:
    from space.schema import SweepConfig

_TOKEN_FILE_SUFFIXES = (".npy", ".bin")


def check_train(config: SweepConfig, problems: list) -> bool:
    """Every training-side check; False when the vocabulary cannot be known."""
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
    _check_lr_search(config, problems)
    return data_ok


def _check_lr_search(config: SweepConfig, problems: list) -> None:
    """``train.lr_search``: a pilot length shorter than the run, one trial process to run in."""
    t = config.train
    search = t.lr_search
    if search is None:
        return
    path = "train.lr_search"
    if (search.steps is None) == (search.fraction is None):
        problems.append((f"{path}.steps", "give the pilot's steps or its fraction, not both"))
        return
    if t.stages:
        problems.append((path, "not with train.stages: a pilot trains one stage"))
        return
    if t.steps is None and t.tokens is None:
        return  # no budget: reported on its own
    pilot = search.pilot_steps(t.total_steps)
    if pilot >= t.total_steps:
        problems.append(
            (
                f"{path}.steps" if search.steps is not None else f"{path}.fraction",
                f"a pilot of {pilot} steps must be shorter than the run's {t.total_steps}",
            )
        )
    elif pilot <= t.warmup_steps:
        problems.append(
            (
                f"{path}.steps" if search.steps is not None else f"{path}.fraction",
                f"a pilot of {pilot} steps ends inside train.warmup_steps={t.warmup_steps}: "
                "it would never train at the value it tries",
            )
        )
    r = config.resources
    for key, on in (
        ("parallel_seeds", r.parallel_seeds),
        ("workers_per_trial", r.workers_per_trial > 1),
    ):
        if on:
            problems.append(
                (f"resources.{key}", f"not with {path}: pilots train in the trial's own process")
            )


def check_parallel(config: SweepConfig, problems: list, warnings: list) -> None:
    """Several workers per trial: every stage's global batch must give each a row."""
    t, workers = config.train, config.resources.workers_per_trial
    if config.resources.parallel_seeds:
        _check_parallel_seeds(config, problems)
    if workers > 1:
        batches = [("train.batch_size", t.batch_size)]
        batches += [
            (f"train.stages[{i}].batch_size", stage.batch_size)
            for i, stage in enumerate(t.stages)
            if stage.batch_size is not None
        ]
        for path, rows in batches:
            if rows < workers:
                problems.append(
                    (
                        "resources.workers_per_trial",
                        f"{workers} workers share a global batch of {rows} rows ({path}): "
                        "each worker needs at least one row",
                    )
                )
    elif t.parallel == "fsdp":
        warnings.append(
            (
                "train.parallel",
                "fsdp shards across the workers of a trial; with resources.workers_per_trial: 1 "
                "the trial trains unsharded",
            )
        )
    if t.micro_batch_size is not None:
        largest = max([t.batch_size, *(s.batch_size or 0 for s in t.stages)])
        if t.micro_batch_size * workers >= largest:
            warnings.append(
                (
                    "train.micro_batch_size",
                    f"{t.micro_batch_size} rows per step on each of {workers} worker(s) cover "
                    f"the largest global batch ({largest}): no gradient accumulation happens",
                )
            )


def _check_parallel_seeds(config: SweepConfig, problems: list) -> None:
    """Seeds at once: one process per seed (workers.ray_seeds), and no early stopping, whose
    time axis counts a trial's evaluations with its seeds one after the other."""
    if config.resources.workers_per_trial > 1:
        problems.append(
            (
                "resources.parallel_seeds",
                "seeds train at once in one process each; with resources.workers_per_trial > 1 "
                "a trial's seeds train one after the other (set parallel_seeds: false)",
            )
        )
    if config.scheduler.kind != "none" or config.study.early_stopping is not None:
        problems.append(
            (
                "resources.parallel_seeds",
                "early stopping (scheduler, study.early_stopping) counts a trial's evaluations "
                "with its seeds one after the other; set parallel_seeds: false to use it",
            )
        )


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
    _check_score_params(config, problems)
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
                if name == "rope_fraction" and (problem := rotary_problem(checked, head_dim)):
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


def _check_score_params(config: SweepConfig, problems: list) -> None:
    """score.task_params (scoring-only parameters) and score.calibrate."""
    from space.presets import BUILTIN_PRESETS
    from space.tasks import DIFFICULTY

    t, s = config.train, config.score
    for task in s.task_params:
        try:
            params = task_params(task, **s.params_for(task, t.task_params))
        except ValueError as err:
            problems.append((f"score.task_params.{task}", str(err)))
            continue
        need = min_length(task, **params)
        if config.data.tokenizer.kind == "bytes" and need > t.final_seq_len:
            problems.append(
                (
                    f"score.task_params.{task}",
                    f"needs at least {need} tokens; scoring at 1x holds {t.final_seq_len}",
                )
            )
    c = s.calibrate
    if c is None:
        return
    for name in c.panel:
        if name not in config.presets and name not in BUILTIN_PRESETS:
            problems.append(("score.calibrate.panel", f"unknown preset {name!r}"))
    lo, hi = c.band
    if not 0.0 <= lo < hi <= 1.0:
        problems.append(("score.calibrate.band", f"need 0 <= low < high <= 1, got {list(c.band)}"))
    for task, levels in c.levels.items():
        path = f"score.calibrate.levels.{task}"
        if task not in s.families:
            problems.append((path, f"{task!r} is not scored; add it to score.tasks"))
            continue
        if not levels:
            problems.append((path, "name at least one difficulty"))
        for level in levels:
            try:
                task_params(task, **{**s.params_for(task, t.task_params), DIFFICULTY[task]: level})
            except ValueError as err:
                problems.append((path, str(err)))
                break
