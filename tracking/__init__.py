"""tracking: MLflow runs and artifacts, the Pareto front, the study report, review in the UI.

The only package that imports mlflow (lazily, inside functions); no torch and no optuna:
the driver hands it a :class:`StudyView` (the study's name, objectives, directions and
trials). The driver makes :class:`MlflowSweepHooks` (``tracking.hooks``), which opens the
study's run, ships a :class:`Tracker` to each trial (``trial_started`` /
``trial_evaluated`` / ``trial_finished``) and refreshes the Pareto front as trials end;
:func:`sync_study` rebuilds the runs from the study; :func:`run_ui` serves the MLflow UI.

Modules: ``target`` (where runs go), ``keys`` (MLflow spelling of names), ``provenance``
(git), ``store`` (the raising client wrapper), ``tracker`` (the soft tracker),
``run_spec`` (a trial run's params/tags, shared by live tracking and sync), ``sync``,
``hooks``, ``pareto`` / ``pareto_plots``, ``ui``, ``study_view``, and the report
(``aggregate``, ``claims``, ``report``).
"""

from tracking.hooks import MlflowSweepHooks, MlflowTrialHooks, SweepHooks
from tracking.keys import metric_key
from tracking.pareto import ParetoRanks, ParetoTable, pareto_of_study, pareto_ranks, pareto_table
from tracking.store import MlflowStore, TrackingError
from tracking.study_view import StudyView, TrialLike
from tracking.sync import SyncReport, sync_study, sync_trial
from tracking.target import TrackingTarget, resolve_tracking_uri, tracking_target
from tracking.tracker import Tracker
from tracking.ui import run_ui, ui_command, ui_env, ui_url

__all__ = [
    "MlflowStore",
    "MlflowSweepHooks",
    "MlflowTrialHooks",
    "ParetoRanks",
    "ParetoTable",
    "StudyView",
    "SweepHooks",
    "SyncReport",
    "Tracker",
    "TrackingError",
    "TrackingTarget",
    "TrialLike",
    "metric_key",
    "pareto_of_study",
    "pareto_ranks",
    "pareto_table",
    "resolve_tracking_uri",
    "run_ui",
    "sync_study",
    "sync_trial",
    "tracking_target",
    "ui_command",
    "ui_env",
    "ui_url",
]
