"""The study as tracking reads it: a :class:`tracking.study_view.StudyView` made from an
Optuna study (its trials are Optuna's own ``FrozenTrial`` objects, no copy)."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial

from tracking.study_view import StudyView, objective_names


def study_view(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> StudyView:
    """``study`` with its current trials (or ``trials``, already read)."""
    directions = tuple(d.name.lower() for d in study.directions)
    attrs = study.user_attrs
    return StudyView(
        name=study.study_name,
        objectives=objective_names(attrs, study.metric_names, len(directions)),
        directions=directions,
        trials=tuple(study.get_trials(deepcopy=False) if trials is None else trials),
        user_attrs=attrs,
    )
