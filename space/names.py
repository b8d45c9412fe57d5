"""Every metric, user-attribute and tag key, in one place (STYLE 11).

Optuna user attributes and MLflow tags/metrics use exactly these strings; other
tools read them, so they are part of the interface.
"""

from __future__ import annotations

# Scores a trial reports (also MLflow metric names and Optuna user attributes).
SHORT_BPB = "short_bpb"
LONG_ACC = "long_acc"
ACC_AT_T = "acc_at_T"
KV_CACHE_BYTES = "kv_cache_bytes"
PARAMS = "params"
TOKENS_PER_S = "tokens_per_s"
PEAK_MEMORY_BYTES = "peak_memory_bytes"
ATTN_FLOPS_PER_TOKEN = "attn_flops_per_token"
TRAIN_LOSS = "train_loss"
VAL_BPB = "val_bpb"
TRAIN_SECONDS = "train_seconds"
STEPS = "steps"


def extrap_bpb(multiple: int) -> str:
    return f"extrap_bpb@{multiple}x"


def acc_at(multiple: int) -> str:
    return f"acc@{multiple}x"


# Scores usable as objectives (plus any extrap_bpb@Nx / acc@Nx).
OBJECTIVE_SCORES = (
    LONG_ACC,
    SHORT_BPB,
    KV_CACHE_BYTES,
    ACC_AT_T,
    PARAMS,
    TOKENS_PER_S,
    PEAK_MEMORY_BYTES,
    ATTN_FLOPS_PER_TOKEN,
)


def is_score_name(name: str) -> bool:
    if name in OBJECTIVE_SCORES:
        return True
    for prefix in ("extrap_bpb@", "acc@"):
        if name.startswith(prefix) and name.endswith("x") and name[len(prefix) : -1].isdigit():
            return True
    return False


# Optuna trial user attributes (interface: other tools read them).
ATTR_CANDIDATE_ID = "candidate_id"
ATTR_CANDIDATE_NAME = "candidate_name"
ATTR_RAY_TRIAL_ID = "ray_trial_id"
ATTR_MLFLOW_RUN_ID = "mlflow_run_id"
ATTR_REASON = "reason"
ATTR_REUSED_FROM = "reused_from"
ATTR_BUDGET = "budget"
ATTR_SEED = "seed"
ATTR_KNOBS = "knobs"
ATTR_PRESET = "preset"
ATTR_TRACKING_ERROR = "tracking_error"

# Outcome reasons.
REASON_INVALID = "invalid_candidate"
REASON_DIVERGED = "diverged"
REASON_INTERRUPTED = "interrupted"
REASON_PRUNED = "pruned_by_scheduler"
REASON_ERROR = "error"

# MLflow tags.
TAG_CANDIDATE_ID = "candidate_id"
TAG_CANDIDATE_NAME = "candidate_name"
TAG_OPTUNA_TRIAL = "optuna_trial_number"
TAG_RAY_TRIAL_ID = "ray_trial_id"
TAG_OUTCOME = "outcome"
TAG_REASON = "reason"
TAG_GIT_COMMIT = "git_commit"
TAG_TORCH_VERSION = "torch_version"
TAG_CUDA_VERSION = "cuda_version"
TAG_DEVICE = "device"
TAG_PARETO_RANK = "pareto_rank"
TAG_PARETO = "pareto"
TAG_STUDY = "study"

# Tracking (MLflow) additions: the kind of run (one study run, one run per trial),
# whether the source tree had uncommitted changes, runs rebuilt from the study by
# `ropenope sync`, and the objectives (``name:direction,...``) on the study run.
TAG_RUN_KIND = "run_kind"
RUN_KIND_STUDY = "study"
RUN_KIND_TRIAL = "trial"
TAG_GIT_DIRTY = "git_dirty"
TAG_SYNCED = "synced_from_study"
TAG_OBJECTIVES = "objectives"
