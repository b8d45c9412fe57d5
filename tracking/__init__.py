"""tracking: MLflow runs and artifacts, the Pareto front, review in the MLflow UI.

The only package that imports mlflow (lazily, inside functions). The sweep driver makes
a :class:`Tracker` (``Tracker.from_config``), opens the study's run
(``start_study``), hands the tracker to each trial (it pickles) which calls
``trial_started`` / ``trial_evaluated`` / ``trial_finished``, and refreshes the front
with ``refresh_study(pareto_rows_from_study(study))``. ``sync_study`` rebuilds the
runs from the Optuna study; ``run_ui`` serves the MLflow UI on the store, opening on the
page :mod:`tracking.runs_view` prepares (runs table, trials by Pareto rank, the study's
description). ``register_exported_model`` puts an exported Hugging Face folder in the
MLflow Model Registry. The driver's hook objects are in :mod:`tracking.hooks`
(``MlflowSweepHooks``).
"""

from tracking.mlflow_store import (
    OUTCOME_COMPLETE,
    OUTCOME_FAIL,
    OUTCOME_PRUNED,
    MlflowStore,
    Tracker,
    TrackingError,
    TrackingTarget,
    metric_key,
    resolve_tracking_uri,
    run_ui,
    runs_dir,
    tracking_target,
    ui_command,
    ui_env,
    ui_url,
)
from tracking.pareto import ParetoRanks, ParetoTable, pareto_ranks, pareto_table
from tracking.registry import RegisteredVersion, RegistryError, register_exported_model
from tracking.runs_view import ensure_view, runs_url, set_study_note, study_note
from tracking.sync import SyncReport, pareto_rows_from_study, sync_study, sync_trial

__all__ = [
    "OUTCOME_COMPLETE",
    "OUTCOME_FAIL",
    "OUTCOME_PRUNED",
    "MlflowStore",
    "ParetoRanks",
    "ParetoTable",
    "RegisteredVersion",
    "RegistryError",
    "SyncReport",
    "Tracker",
    "TrackingError",
    "TrackingTarget",
    "ensure_view",
    "metric_key",
    "pareto_ranks",
    "pareto_rows_from_study",
    "pareto_table",
    "register_exported_model",
    "resolve_tracking_uri",
    "run_ui",
    "runs_dir",
    "runs_url",
    "set_study_note",
    "study_note",
    "sync_study",
    "sync_trial",
    "tracking_target",
    "ui_command",
    "ui_env",
    "ui_url",
]
