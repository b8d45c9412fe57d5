"""Saturated objectives: an accuracy every candidate scores at the same bound cannot rank.

Measured on the shipped budget, every windowed hybrid retrieves at 1.00 to 8x, so a
sweep cannot tell them apart on ``long_acc``. This module finds such objectives among
the COMPLETE candidates of a study and words the warning that ``ropenope status``, the
end-of-sweep summary and the report show, pointing to the graded score of the same
family (the answer's negative log-likelihood, which still separates them) or to longer
lengths. Pure: no optuna, no mlflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from space.names import (
    ACC_AT_T,
    LONG_ACC,
    LONG_ANSWER_NLL,
    answer_nll_at,
    is_accuracy_score,
    multiple_of,
    split_task_score,
    task_score,
)

_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Saturation:
    """``objective`` is at ``bound`` (1.0 best, 0.0 worst) for all ``candidates``."""

    objective: str
    bound: float
    candidates: int


def saturated_objectives(
    objectives: Sequence[str], rows: Sequence[Sequence[float | None]], *, min_candidates: int = 2
) -> list[Saturation]:
    """The accuracy objectives on which every row (one per distinct COMPLETE candidate,
    values in ``objectives`` order) sits at 0 or at 1. Other scores (losses, bytes) have
    no bound to saturate at. Needs ``min_candidates`` rows with a finite value."""
    out = []
    for i, name in enumerate(objectives):
        if not is_accuracy_score(name):
            continue
        values = [
            float(row[i])
            for row in rows
            if i < len(row) and row[i] is not None and math.isfinite(float(row[i]))
        ]
        if len(values) < min_candidates:
            continue
        for bound in (1.0, 0.0):
            if all(abs(v - bound) <= _TOLERANCE for v in values):
                out.append(Saturation(name, bound, len(values)))
    return out


def graded_alternative(objective: str) -> str:
    """The graded score of the same family and length: ``long_acc`` -> ``long_answer_nll``,
    ``acc@4x`` / ``token_acc@4x`` -> ``answer_nll@4x``, ``vartrack/long_acc`` ->
    ``vartrack/long_answer_nll``, ``acc_at_T`` -> ``answer_nll@1x``."""
    task, base = split_task_score(objective)
    if base == LONG_ACC:
        graded = LONG_ANSWER_NLL
    elif base == ACC_AT_T:
        graded = answer_nll_at(1)
    else:
        m = multiple_of(base, "acc@")
        if m is None:
            m = multiple_of(base, "token_acc@")
        graded = answer_nll_at(m) if m is not None else LONG_ANSWER_NLL
    return graded if task is None else task_score(task, graded)


def saturation_warning(s: Saturation) -> str:
    """One line naming the objective and what to use instead."""
    graded = graded_alternative(s.objective)
    if s.bound == 1.0:
        return (
            f"objective {s.objective} is saturated: all {s.candidates} COMPLETE candidates "
            f"score 1.00, so it cannot rank them; use the graded score {graded} (minimize) "
            f"as the objective, or longer score.lengths"
        )
    return (
        f"objective {s.objective} is saturated: all {s.candidates} COMPLETE candidates score "
        f"0.00 (the task is not learned at this budget), so it cannot rank them; use the "
        f"graded score {graded} (minimize), a larger training budget or shorter score.lengths"
    )
