"""The decision plan of a study: how many looks each hypothesis gets, over which seed
range, and the family's error level. Fixed when the study is created and stored in it
(``ropenope:decisions``), then read back at every look and report.

Why stored: the error budget of a hypothesis is split over its pre-planned looks
(:class:`tracking.stats.ErrorBudget`). If the count were read from the sweep file at
report time, raising ``repeats.max`` on resume would re-judge every earlier look at a
level it was never planned at. A study created before the plan was stored falls back
to its sweep file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from space.names import STUDY_ATTR_DECISIONS

__all__ = ["DecisionPlan", "decision_plan", "plan_of_config"]


@dataclass(frozen=True)
class DecisionPlan:
    """``looks`` looks per hypothesis, at seeds ``repeats_min .. repeats_max``; ``alpha``
    the family-wise error level (Holm across the study's hypotheses)."""

    repeats_min: int
    repeats_max: int
    alpha: float

    @property
    def looks(self) -> int:
        return self.repeats_max - self.repeats_min + 1

    @property
    def adaptive(self) -> bool:
        return self.repeats_max > self.repeats_min

    def to_dict(self) -> dict[str, Any]:
        return {
            "repeats_min": self.repeats_min,
            "repeats_max": self.repeats_max,
            "looks": self.looks,
            "alpha": self.alpha,
        }


def plan_of_config(config: Any) -> DecisionPlan:
    """The plan a sweep file (:class:`space.schema.SweepConfig`) asks for: its seed
    range, and the strictest error level of its hypotheses as the family's."""
    alphas = [1.0 - h.confidence for h in config.hypotheses] or [0.05]
    return DecisionPlan(config.study.repeats, config.study.max_repeats, min(alphas))


def decision_plan(attrs: Mapping[str, Any], config: Any | None) -> DecisionPlan | None:
    """The plan stored in a study's user attributes, else the sweep file's (a study
    created before plans were stored); None with neither."""
    stored = attrs.get(STUDY_ATTR_DECISIONS)
    keys = ("repeats_min", "repeats_max", "alpha")
    if isinstance(stored, Mapping) and all(isinstance(stored.get(k), int | float) for k in keys):
        return DecisionPlan(
            int(stored["repeats_min"]), int(stored["repeats_max"]), float(stored["alpha"])
        )
    return plan_of_config(config) if config is not None else None
