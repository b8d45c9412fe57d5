"""Saturated objectives: found among COMPLETE candidates, named, and shown by `status`."""

from __future__ import annotations

import math

import optuna

from search.status import format_summary, saturation_warnings, summarize
from space.names import ATTR_CANDIDATE_ID, ATTR_REUSED_FROM, STUDY_ATTR_OBJECTIVES
from tracking.saturation import (
    Saturation,
    graded_alternative,
    saturated_objectives,
    saturation_warning,
)

OBJECTIVES = ["long_acc", "short_bpb", "vartrack/acc@4x"]


def test_saturated_objectives_finds_accuracies_at_one_bound_only():
    rows = [[1.0, 2.3, 0.0], [1.0, 2.1, 0.0], [1.0, 2.9, 0.0]]
    assert saturated_objectives(OBJECTIVES, rows) == [
        Saturation("long_acc", 1.0, 3),
        Saturation("vartrack/acc@4x", 0.0, 3),
    ]
    # One candidate off the bound, a loss (no bound), too few candidates: nothing.
    assert saturated_objectives(OBJECTIVES, [[1.0, 2.0, 0.5], [0.99, 2.0, 0.0]]) == []
    assert saturated_objectives(["short_bpb"], [[0.0], [0.0]]) == []
    assert saturated_objectives(["long_acc"], [[1.0]]) == []
    # Missing or NaN values do not count as candidates.
    assert saturated_objectives(["long_acc"], [[1.0], [math.nan], [None]]) == []


def test_saturation_warning_names_the_objective_and_the_graded_score():
    text = saturation_warning(Saturation("long_acc", 1.0, 6))
    assert "long_acc" in text and "all 6 COMPLETE candidates score 1.00" in text
    assert "long_answer_nll" in text and "longer score.lengths" in text
    low = saturation_warning(Saturation("vartrack/acc@4x", 0.0, 3))
    assert "vartrack/answer_nll@4x" in low and "0.00" in low
    assert graded_alternative("acc_at_T") == "answer_nll@1x"
    assert graded_alternative("token_acc@8x") == "answer_nll@8x"
    assert graded_alternative("multiquery/long_acc") == "multiquery/long_answer_nll"


def _study(values: list[tuple[list[float], dict]]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"])
    study.set_user_attr(STUDY_ATTR_OBJECTIVES, OBJECTIVES)
    for vals, attrs in values:
        trial = study.ask()
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        study.tell(trial, vals)
    return study


def test_status_warns_when_every_complete_candidate_saturates():
    study = _study(
        [
            ([1.0, 2.2, 0.3], {ATTR_CANDIDATE_ID: "a"}),
            ([1.0, 2.5, 0.1], {ATTR_CANDIDATE_ID: "b"}),
            ([1.0, 2.5, 0.1], {ATTR_CANDIDATE_ID: "b", ATTR_REUSED_FROM: 1}),  # a twin
        ]
    )
    trials = study.get_trials()
    warnings = saturation_warnings(trials, OBJECTIVES)
    assert len(warnings) == 1 and "objective long_acc is saturated" in warnings[0]
    assert "all 2 COMPLETE candidates" in warnings[0]  # the reused twin is not a candidate
    text = format_summary(summarize(study, target=3))
    assert "warning: objective long_acc is saturated" in text
    # A candidate that ranks differently lifts the warning.
    study.tell(study.ask(), [0.5, 2.0, 0.2])
    assert saturation_warnings(study.get_trials(), OBJECTIVES) == []
