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


def knob_params(knobs: dict[str, Any]) -> dict[str, str]:
    """A candidate's knobs as params (flat, the YAML names)."""
    return {name: param_value(value) for name, value in knobs.items()}
