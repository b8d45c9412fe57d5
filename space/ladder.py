"""The ``ladder:`` section: a scale ladder of rungs, what moves up, and the sweep file each
rung trains with.

::

    ladder:
      rungs:
        - {d_model: 32, layers: 2, seq_len: 32, steps: 30}      # rung 0: the sweep itself
        - {d_model: 64, layers: 2, seq_len: 64, steps: 60}      # rung 1: the promoted ones
      promote: {top_k: 2, by: short_bpb}
      seeds: [3, 2]                                           # per rung

A rung's keys override the ``model:`` and ``train:`` sections (one flat mapping: the two
sections share no key name); rung 0's overrides *are* the sweep's model and training, so
``model:``/``train:`` hold what every rung shares. ``knobs`` (rung 1 on) fixes knobs of
every promoted candidate at that rung, checked through :data:`space.knobs.KNOBS`.
``seeds`` is the number of seeds per rung (rung 0's replaces ``study.repeats``).
:func:`rung_config` is the sweep file of one rung; the driver's rung loop is
:mod:`search.ladder`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError

from space.errors import ConfigError
from space.knobs import KNOB_NAMES, check_value
from space.sections import (
    MAX_BATCH,
    MAX_HEADS,
    MAX_LAYERS,
    MAX_REPEATS,
    MAX_STEPS,
    MAX_TOKENS_PER_SEQUENCE,
    MAX_TRIALS,
    MAX_WIDTH,
    ModelSection,
    TrainSection,
    _Section,
)
from space.trial_attrs import TrialAttrs

if TYPE_CHECKING:
    from space.schema import SweepConfig

# Which section each override of a rung goes to.
MODEL_OVERRIDES = ("layers", "d_model", "heads", "mlp_hidden", "init_std")
TRAIN_OVERRIDES = (
    "seq_len",
    "batch_size",
    "steps",
    "tokens",
    "lr",
    "warmup_steps",
    "eval_every",
    "checkpoint_every",
    "micro_batch_size",
)


class RungSection(_Section):
    """One rung: model and training overrides (None: as the sections below it say)."""

    layers: int | None = Field(default=None, ge=1, le=MAX_LAYERS)
    d_model: int | None = Field(default=None, ge=2, le=MAX_WIDTH)
    heads: int | None = Field(default=None, ge=1, le=MAX_HEADS)
    mlp_hidden: int | None = Field(default=None, ge=1, le=MAX_WIDTH * 8)
    init_std: float | None = Field(default=None, gt=0)
    seq_len: int | None = Field(default=None, ge=8, le=MAX_TOKENS_PER_SEQUENCE)
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    tokens: int | None = Field(default=None, ge=1, le=MAX_STEPS * MAX_BATCH)
    lr: float | None = Field(default=None, gt=0)
    warmup_steps: int | None = Field(default=None, ge=0, le=MAX_STEPS)
    eval_every: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    checkpoint_every: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    micro_batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)
    knobs: dict[str, Any] = Field(default_factory=dict)

    def overrides(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class PromoteSection(_Section):
    """Which candidates of a rung train at the next one: the ``top_k`` best by objective
    ``by`` (its direction is the study's), plus every candidate a hypothesis compares."""

    top_k: int = Field(ge=1, le=MAX_TRIALS)
    by: str


class LadderSection(_Section):
    rungs: tuple[RungSection, ...] = Field(min_length=2, max_length=16)
    promote: PromoteSection
    # Seeds per rung; None: study.repeats at every rung.
    seeds: tuple[int, ...] | None = None

    def rung_seeds(self, rung: int, default: int) -> int:
        return default if self.seeds is None else self.seeds[rung]


def check_ladder(ladder: LadderSection, raw_config: Any, problems: list) -> None:
    """What the section alone cannot say, with the path of the key to fix."""
    if ladder.seeds is not None:
        if len(ladder.seeds) != len(ladder.rungs):
            problems.append(
                (
                    "ladder.seeds",
                    f"one number of seeds per rung: {len(ladder.rungs)} rungs, "
                    f"{len(ladder.seeds)} numbers",
                )
            )
        for i, n in enumerate(ladder.seeds):
            if isinstance(n, bool) or not 1 <= n <= MAX_REPEATS:
                problems.append((f"ladder.seeds[{i}]", f"expected 1..{MAX_REPEATS}, got {n!r}"))
    if ladder.rungs[0].knobs:
        problems.append(
            ("ladder.rungs[0].knobs", "rung 0 samples its knobs from space:; fix them there")
        )
    for i, rung in enumerate(ladder.rungs):
        for name, value in rung.knobs.items():
            path = f"ladder.rungs[{i}].knobs.{name}"
            if name not in KNOB_NAMES:
                problems.append((path, f"unknown knob; expected one of {list(KNOB_NAMES)}"))
                continue
            try:
                check_value(name, value, path)
            except ConfigError as err:
                problems.extend(err.problems)
    train = raw_config.get("train") if hasattr(raw_config, "get") else None
    if isinstance(train, dict) and train.get("stages"):
        problems.append(("ladder", "a ladder scales one training stage; train.stages is set"))


def apply_rung(config: SweepConfig, rung: int) -> SweepConfig:
    """``config`` as rung ``rung`` trains it: the rung's model and training overrides and
    its seeds (``config`` itself when there is no ladder). Raises ConfigError with the
    rung's path when the overrides make an invalid section."""
    ladder = config.ladder
    if ladder is None:
        return config
    spec = ladder.rungs[rung]
    path = f"ladder.rungs[{rung}]"
    train_over = spec.overrides(TRAIN_OVERRIDES)
    if transfers_lr(config, rung):  # µP: rung 0's pilots chose it for every width
        train_over["lr_search"] = None
    if "steps" in train_over:
        train_over["tokens"] = None
    elif "tokens" in train_over:
        train_over["steps"] = None
    try:
        model = ModelSection.model_validate(
            {**config.model.model_dump(), **spec.overrides(MODEL_OVERRIDES)}
        )
        train = TrainSection.model_validate({**_train_fields(config.train), **train_over})
    except ValidationError as err:
        raise ConfigError([(path, e["msg"]) for e in err.errors()]) from None
    study = config.study.model_copy(
        update={"repeats": ladder.rung_seeds(rung, config.study.repeats)}
    )
    return config.model_copy(update={"model": model, "train": train, "study": study, "rung": rung})


def transfers_lr(config: SweepConfig, rung: int) -> bool:
    """Whether rung ``rung`` trains each candidate at the learning rate rung 0's
    ``train.lr_search`` pilots chose for it instead of searching again: with
    ``model.parametrization: mup`` the best learning rate holds across widths, so the
    larger rungs reuse it (with the standard parametrization each rung searches its own)."""
    return rung > 0 and config.train.lr_search is not None and config.model.parametrization == "mup"


def _train_fields(train: TrainSection) -> dict[str, Any]:
    """Every field of ``train`` as it is set (the dump leaves out unused additions)."""
    return {name: getattr(train, name) for name in TrainSection.model_fields}


def promote_direction(config: SweepConfig) -> str:
    """``maximize`` or ``minimize``: the study's direction of ``promote.by``."""
    by = config.ladder.promote.by if config.ladder is not None else None
    return next(o.direction for o in config.study.objectives if o.metric == by)


def rung_of(attrs: Mapping[str, Any]) -> int:
    """The ladder rung of a trial, from its user attributes (0: not promoted)."""
    return TrialAttrs.of(attrs).ladder_rung or 0


__all__ = [
    "LadderSection",
    "PromoteSection",
    "RungSection",
    "apply_rung",
    "check_ladder",
    "promote_direction",
    "rung_of",
]
