"""tracking: MLflow runs and artifacts, the Pareto front, review in the MLflow UI.

The only package that imports mlflow (lazily, inside functions). The sweep driver makes
a :class:`Tracker` (``Tracker.from_config``), opens the study's run
(``start_study``), hands the tracker to each trial (it pickles) which calls
``trial_started`` / ``trial_evaluated`` / ``trial_finished``, and refreshes the front
with ``refresh_study(pareto_rows_from_study(study))``. ``sync_study`` rebuilds the
runs from the Optuna study; ``run_ui`` serves the MLflow UI on the store.
The driver's hook objects are in :mod:`tracking.hooks` (``MlflowSweepHooks``).
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
from tracking.saturation import Saturation, saturated_objectives, saturation_warning
from tracking.sync import SyncReport, pareto_rows_from_study, sync_study, sync_trial

__all__ = [
    "OUTCOME_COMPLETE",
    "OUTCOME_FAIL",
    "OUTCOME_PRUNED",
    "MlflowStore",
    "ParetoRanks",
    "ParetoTable",
    "Saturation",
    "SyncReport",
    "Tracker",
    "TrackingError",
    "TrackingTarget",
    "metric_key",
    "pareto_ranks",
    "pareto_rows_from_study",
    "pareto_table",
    "resolve_tracking_uri",
    "run_ui",
    "runs_dir",
    "saturated_objectives",
    "saturation_warning",
    "sync_study",
    "sync_trial",
    "tracking_target",
    "ui_command",
    "ui_env",
    "ui_url",
]
