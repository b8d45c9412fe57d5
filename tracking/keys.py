"""How ropenope's names are spelled in MLflow: metric keys, parameter values, MLflow's own
tags, and the run status each trial outcome ends in."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from space.outcomes import Outcome
from space.secrets import redact_text

if TYPE_CHECKING:
    from space.schema import SweepConfig

# MLflow's own tags (UI columns and nesting).
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_SOURCE_NAME = "mlflow.source.name"

# The MLflow run status each trial outcome ends in; a run still RUNNING is not terminal.
RUN_STATUS: dict[str, str] = {
    Outcome.COMPLETE: "FINISHED",
    Outcome.PRUNED: "KILLED",
    Outcome.FAIL: "FAILED",
}

MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 8000

# The sweep-file sections recorded as params: all of them on the study run; on a trial
# run, what shapes one candidate's training and scoring.
STUDY_SECTIONS = ("study", "model", "train", "data", "score", "scheduler", "resources")
TRIAL_SECTIONS = ("model", "train", "data", "score")


def metric_key(name: str) -> str:
    """The MLflow metric name of a score: MLflow refuses ``@``, so ``acc@2x`` is logged as
    ``acc_at_2x`` and ``extrap_bpb@4x`` as ``extrap_bpb_at_4x``; other names unchanged."""
    return re.sub(r"[^/\w.\- :]", "_", name.replace("@", "_at_"))


def param_value(value: Any) -> str:
    """A parameter as MLflow stores it (text), spelled as in the YAML: null, true, 1e4.
    Any URL in it is redacted (no password ever lands in a param)."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = redact_text(value)
    elif isinstance(value, int | float):
        text = repr(value)
    elif hasattr(value, "value") and isinstance(value.value, str):  # an Enum
        text = value.value
    else:
        text = redact_text(json.dumps(value, sort_keys=True, default=str))
    return text[:MAX_PARAM_CHARS]


def config_params(config: SweepConfig, sections: Sequence[str]) -> dict[str, str]:
    """Flat ``section.key`` parameters of the fixed settings of a sweep file."""
    out: dict[str, str] = {}
    for section in sections:
        dumped = getattr(config, section).model_dump(mode="json")
        for key, value in dumped.items():
            out[f"{section}.{key}"] = param_value(value)
    return out


# train.lr_search on a trial run: the learning rate the pilots chose (a param and a metric)
# and each pilot's final validation loss (a metric per value; none for a pilot that lost).
PARAM_LR_CHOSEN = "lr_search.chosen_lr"
METRIC_LR_CHOSEN = "lr_search/chosen_lr"


def pilot_metric(lr: float) -> str:
    """The MLflow metric of the pilot at ``lr``: ``lr_search/val_bpb/lr_0.003``."""
    return f"lr_search/val_bpb/lr_{lr:g}"


def lr_search_tracking(record: Any) -> tuple[dict[str, str], dict[str, float]]:
    """The params and metrics of a trial's ``lr_search`` record (``{}`` and ``{}`` without)."""
    if not record:
        return {}, {}
    metrics = {
        pilot_metric(p["lr"]): float(p["val_bpb"])
        for p in record.get("pilots", [])
        if p.get("val_bpb") is not None
    }
    chosen = record.get("chosen")
    if chosen is None:
        return {PARAM_LR_CHOSEN: "null"}, metrics
    return {PARAM_LR_CHOSEN: param_value(chosen)}, {**metrics, METRIC_LR_CHOSEN: float(chosen)}


def knob_params(knobs: dict[str, Any]) -> dict[str, str]:
    """A candidate's knobs as params (flat, the YAML names)."""
    return {name: param_value(value) for name, value in knobs.items()}
