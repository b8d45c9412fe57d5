"""A scale-ladder study as the report, ``ropenope status`` and the study's MLflow run show
it: its decision accuracy (:mod:`tracking.decision_accuracy`) computed from the study's
runs at every rung, each rung's hypotheses judged with that rung's sweep file."""

from __future__ import annotations

from typing import Any

from space.ladder import apply_rung
from tracking.aggregate import StudyAggregate
from tracking.decision_accuracy import DecisionAccuracy, ladder_accuracy
from tracking.hypotheses import Finding, evaluate, item_counts
from tracking.records import study_records
from tracking.sides import candidate_layers

__all__ = ["study_decision_accuracy"]


def study_decision_accuracy(study: Any, config: Any | None) -> DecisionAccuracy | None:
    """The decision accuracy of ``study`` (an ``optuna.Study``) under its sweep file
    ``config``; None when the sweep file has no ladder."""
    if config is None or config.ladder is None:
        return None
    read = study_records(study, rung=None)

    def judge(rung: int, agg: StudyAggregate) -> list[Finding]:
        at = apply_rung(config, rung)
        return evaluate(config.hypotheses, agg, candidate_layers(at), items=item_counts(at))

    return ladder_accuracy(
        read.records,
        read.objective_names or (),
        read.directions,
        judge if config.hypotheses else None,
        ladder_rungs=len(config.ladder.rungs),
    )
