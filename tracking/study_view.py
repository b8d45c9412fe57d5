"""What tracking reads of an Optuna study, typed, without importing optuna.

The sweep driver (``search/``) owns the study; tracking gets a :class:`StudyView`: the
study's name, objectives, directions and user attributes, and its trials as
:class:`TrialLike` objects (Optuna's ``FrozenTrial`` satisfies the protocol as it is, so
no copy is made). Functions here and in :mod:`tracking.pareto` / :mod:`tracking.sync`
take these types, never ``optuna.Study``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from space.names import STUDY_ATTR_CONFIG, STUDY_ATTR_OBJECTIVES
from space.outcomes import Outcome


class StateLike(Protocol):
    @property
    def name(self) -> str: ...


class TrialLike(Protocol):
    """The surface of an Optuna ``FrozenTrial`` that tracking reads."""

    @property
    def number(self) -> int: ...
    @property
    def state(self) -> StateLike: ...
    @property
    def values(self) -> Sequence[float] | None: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def user_attrs(self) -> Mapping[str, Any]: ...
    @property
    def intermediate_values(self) -> Mapping[int, float]: ...
    @property
    def datetime_start(self) -> datetime | None: ...
    @property
    def datetime_complete(self) -> datetime | None: ...


FINISHED_STATES = frozenset(o.value for o in Outcome)  # COMPLETE, PRUNED, FAIL


@dataclass(frozen=True)
class TrialSnapshot:
    """A trial as it is about to be recorded (the driver describes a trial it will close
    this way, before Optuna has it). ``state`` is an :class:`Outcome` (its ``name`` is the
    Optuna state name)."""

    number: int
    state: Outcome
    values: Sequence[float] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    user_attrs: Mapping[str, Any] = field(default_factory=dict)
    intermediate_values: Mapping[int, float] = field(default_factory=dict)
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None


def is_finished(trial: TrialLike) -> bool:
    return trial.state.name in FINISHED_STATES


@dataclass(frozen=True)
class StudyView:
    """A study as tracking sees it. ``directions`` are ``minimize``/``maximize``."""

    name: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    trials: tuple[TrialLike, ...] = ()
    user_attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.objectives) != len(self.directions):
            raise ValueError(
                f"{len(self.objectives)} objective names for {len(self.directions)} directions"
            )

    @property
    def config_text(self) -> str | None:
        """The sweep file the driver stored on the study (redacted), if any."""
        return self.user_attrs.get(STUDY_ATTR_CONFIG)

    def complete(self) -> list[TrialLike]:
        return [t for t in self.trials if t.state.name == Outcome.COMPLETE]


def objective_names(
    user_attrs: Mapping[str, Any], metric_names: Sequence[str] | None, n_objectives: int
) -> tuple[str, ...]:
    """The one rule for a study's objective names: what ropenope recorded, else Optuna's
    metric names, else ``value_0, value_1, ...``."""
    names = user_attrs.get(STUDY_ATTR_OBJECTIVES) or metric_names
    if names and len(names) == n_objectives:
        return tuple(str(n) for n in names)
    return tuple(f"value_{i}" for i in range(n_objectives))
