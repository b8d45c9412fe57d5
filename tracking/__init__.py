"""tracking: MLflow runs and artifacts, the Pareto front, the study report, review in the UI.

The only package that imports mlflow (lazily, inside functions); no torch and no optuna:
the driver hands it a :class:`StudyView` (the study's name, objectives, directions and
trials). The driver makes :class:`MlflowSweepHooks` (``tracking.hooks``), which opens the
study's run, ships a :class:`Tracker` to each trial (``trial_started`` /
``trial_evaluated`` / ``trial_finished``) and refreshes the Pareto front as trials end,
all on a background thread; :func:`sync_study` rebuilds the runs from the study;
:func:`run_ui` serves the MLflow UI. The study report (:func:`build_report`) judges the
sweep's hypotheses (:func:`evaluate`); with adaptive seeds, :func:`plan_seeds` /
:func:`plan_for_study` say which candidates need one more seed. With a scale ladder,
:func:`study_decision_accuracy` says whether rung 0's rankings and effects held at the
larger rungs (:func:`ladder_accuracy`, pure).

Two halves (an import-linter contract keeps the second free of mlflow and of the first):

- the MLflow adapter: ``target`` (where runs go), ``keys`` (MLflow spelling of names),
  ``provenance`` (git), ``store`` (the raising client wrapper), ``tracker`` (the soft
  tracker), ``background`` (calls off the caller's path), ``run_spec`` (a trial run's
  params/tags, shared by live tracking and sync), ``sync``, ``hooks``, ``study_run``,
  ``ui``, ``runs_view`` (the page the UI opens on), ``registry`` (exported models in the
  MLflow Model Registry), ``report.upload``;
- the pure analysis: ``study_view``, ``records``, ``stats``, ``aggregate``, ``sides``,
  ``hypotheses``, ``decision_plan``, ``seed_plan``, ``stability``, ``ties``,
  ``decision_accuracy`` / ``ladder_view`` (a scale ladder's rungs), ``pareto`` /
  ``pareto_plots``, and the report's pages (``report/`` but ``upload``).

Names resolve on first use, so importing one module does not import them all.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "MlflowSweepHooks": "tracking.hooks",
    "MlflowTrialHooks": "tracking.hooks",
    "SweepHooks": "tracking.hooks",
    "DecisionAccuracy": "tracking.decision_accuracy",
    "ladder_accuracy": "tracking.decision_accuracy",
    "study_decision_accuracy": "tracking.ladder_view",
    "Finding": "tracking.hypotheses",
    "evaluate": "tracking.hypotheses",
    "metric_key": "tracking.keys",
    "ParetoRanks": "tracking.pareto",
    "ParetoTable": "tracking.pareto",
    "pareto_of_study": "tracking.pareto",
    "pareto_ranks": "tracking.pareto",
    "pareto_table": "tracking.pareto",
    "build_report": "tracking.report",
    "SignalToNoise": "tracking.ties",
    "TieGroup": "tracking.ties",
    "signal_to_noise": "tracking.ties",
    "tie_groups": "tracking.ties",
    "tie_warning": "tracking.ties",
    "SeedPlan": "tracking.seed_plan",
    "format_open_hypotheses": "tracking.seed_plan",
    "plan_for_study": "tracking.seed_plan",
    "plan_seeds": "tracking.seed_plan",
    "MlflowStore": "tracking.store",
    "TrackingError": "tracking.store",
    "StudyView": "tracking.study_view",
    "TrialLike": "tracking.study_view",
    "SyncReport": "tracking.sync",
    "sync_study": "tracking.sync",
    "sync_trial": "tracking.sync",
    "TrackingTarget": "tracking.target",
    "resolve_tracking_uri": "tracking.target",
    "tracking_target": "tracking.target",
    "Tracker": "tracking.tracker",
    "RegisteredVersion": "tracking.registry",
    "RegistryError": "tracking.registry",
    "register_exported_model": "tracking.registry",
    "ensure_view": "tracking.runs_view",
    "runs_url": "tracking.runs_view",
    "set_study_note": "tracking.runs_view",
    "study_note": "tracking.runs_view",
    "run_ui": "tracking.ui",
    "ui_command": "tracking.ui",
    "ui_env": "tracking.ui",
    "ui_url": "tracking.ui",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tracking' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
