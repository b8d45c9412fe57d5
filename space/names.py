"""Every metric, user-attribute and tag key, in one place (STYLE 11).

Optuna user attributes and MLflow tags/metrics use exactly these strings; other
tools read them, so they are part of the interface.
"""

from __future__ import annotations

from space.tasks import TASKS

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


def bucket_bpb(multiple: int) -> str:
    """Bits per byte of the validation text at positions (multiple/2, multiple] x T of a
    window of max(score.extrap) x T tokens (1: positions up to T); LongPPL's point: the
    loss past T, not diluted by the positions a model was trained on."""
    return f"bucket_bpb@{multiple}x"


def acc_at(multiple: int) -> str:
    return f"acc@{multiple}x"


# Graded retrieval scores (teacher forcing): they still rank candidates when exact-match
# accuracy is 1.0 (or 0.0) for all of them.
LONG_ANSWER_NLL = "long_answer_nll"  # mean answer_nll over lengths beyond T


def answer_nll_at(multiple: int) -> str:
    """Mean negative log-likelihood of the answer, nats per answer byte, at N x T."""
    return f"answer_nll@{multiple}x"


def token_acc_at(multiple: int) -> str:
    """Fraction of answer tokens the model predicts right under teacher forcing, at N x T."""
    return f"token_acc@{multiple}x"


# Per task family: ``<task>/<score>``, e.g. ``vartrack/long_acc``, ``multiquery/acc@4x``.
# The bare names (``acc@4x``, ``long_acc``, ...) keep their meaning: the primary family
# (``score.task``), and for long_acc / long_answer_nll the mean over ``score.long_tasks``.
TASK_SCORE_SEPARATOR = "/"


def task_score(task: str, name: str) -> str:
    return f"{task}{TASK_SCORE_SEPARATOR}{name}"


def split_task_score(name: str) -> tuple[str | None, str]:
    """``("vartrack", "acc@4x")`` for ``vartrack/acc@4x``; ``(None, name)`` for a bare name."""
    task, sep, base = name.partition(TASK_SCORE_SEPARATOR)
    if sep and task in TASKS:
        return task, base
    return None, name


# Scores usable as objectives (plus any extrap_bpb@Nx / acc@Nx / answer_nll@Nx /
# token_acc@Nx, and the per-family names).
OBJECTIVE_SCORES = (
    LONG_ACC,
    LONG_ANSWER_NLL,
    SHORT_BPB,
    KV_CACHE_BYTES,
    ACC_AT_T,
    PARAMS,
    TOKENS_PER_S,
    PEAK_MEMORY_BYTES,
    ATTN_FLOPS_PER_TOKEN,
)

# Scores computed from the layer layout alone, with no seed noise: one run of each
# candidate settles a comparison of them (a hypothesis's ``test: exact``).
LAYOUT_SCORES = (KV_CACHE_BYTES, PARAMS, ATTN_FLOPS_PER_TOKEN)


# What a trial reports at each evaluation, usable as the scheduler / intermediate metric.
EVAL_METRICS = (VAL_BPB, TRAIN_LOSS, TOKENS_PER_S)

# What an MO-ASHA rung can rank on (``study.early_stopping``): the evaluation metrics, and
# the layout scores the driver computes from a candidate before it trains.
RUNG_LAYOUT_METRICS = LAYOUT_SCORES
RUNG_METRICS = (*EVAL_METRICS, *RUNG_LAYOUT_METRICS)
# The evaluation metric that stands in at a rung for a final score: ``val_bpb`` is the
# validation bits per byte at the training length that ``short_bpb`` measures once more
# at the end on more windows.
RUNG_PROXIES = {SHORT_BPB: VAL_BPB}


def multiple_of(name: str, prefix: str) -> int | None:
    """``multiple_of("acc@4x", "acc@") == 4``; None for names not of that form."""
    if name.startswith(prefix) and name.endswith("x") and name[len(prefix) : -1].isdigit():
        return int(name[len(prefix) : -1])
    return None


# Scores one task family reports (bare for the primary family, ``<task>/...`` for each).
TASK_SCORES = (LONG_ACC, LONG_ANSWER_NLL, ACC_AT_T)
TASK_SCORE_PREFIXES = ("acc@", "answer_nll@", "token_acc@")

# Scores bounded to [0, 1] where 1 is best: the ones that saturate.
ACCURACY_SCORES = (LONG_ACC, ACC_AT_T)
ACCURACY_PREFIXES = ("acc@", "token_acc@")


def is_task_score(name: str) -> bool:
    """A retrieval score of one task family (bare or ``<task>/...``)."""
    _, base = split_task_score(name)
    return base in TASK_SCORES or any(multiple_of(base, p) is not None for p in TASK_SCORE_PREFIXES)


def is_accuracy_score(name: str) -> bool:
    """A score in [0, 1], higher is better (exact-match or token accuracy)."""
    _, base = split_task_score(name)
    return base in ACCURACY_SCORES or any(
        multiple_of(base, p) is not None for p in ACCURACY_PREFIXES
    )


def is_score_name(name: str) -> bool:
    task, base = split_task_score(name)
    if task is not None:
        return is_task_score(base)
    if name in OBJECTIVE_SCORES:
        return True
    prefixes = ("extrap_bpb@", "bucket_bpb@", *TASK_SCORE_PREFIXES)
    return any(multiple_of(name, prefix) is not None for prefix in prefixes)


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
# On the study's run, one tag per hypothesis: hypothesis.<name> = supported | ...
TAG_HYPOTHESIS_PREFIX = "hypothesis."

# Optuna trial user attributes: their keys and types are space/trial_attrs.py.

# Study user attributes written by the sweep driver.
STUDY_ATTR_SPACE = "ropenope:space"  # the space signature the study was created with
STUDY_ATTR_OBJECTIVES = "ropenope:objectives"  # objective metric names, in order
STUDY_ATTR_CONFIG = "ropenope:config"  # the sweep file text the study runs
STUDY_ATTR_TARGET = "ropenope:trials"  # how many trials the study aims at
STUDY_ATTR_PRESETS = "ropenope:presets_enqueued"  # preset names already enqueued
# the decision plan fixed at creation (looks, seed range, family alpha): tracking.decision_plan
STUDY_ATTR_DECISIONS = "ropenope:decisions"
STUDY_ATTR_CALIBRATION = "ropenope:calibration"  # score.calibrate's difficulty per family
STUDY_ATTR_DRIVER_PREFIX = "ropenope:driver:"  # + driver id: host, pid, heartbeat
# + rung: each hypothesis's predicted effect at that ladder rung, stated when it was promoted
STUDY_ATTR_LADDER_PREDICTIONS = "ropenope:ladder_predictions:"

# Tracking (MLflow) additions: the kind of run (one study run, one run per trial),
# whether the source tree had uncommitted changes, runs rebuilt from the study by
# `ropenope sync`, and the objectives (``name:direction,...``) on the study run.
TAG_RUN_KIND = "run_kind"
RUN_KIND_STUDY = "study"
RUN_KIND_TRIAL = "trial"
TAG_GIT_DIRTY = "git_dirty"
TAG_SYNCED = "synced_from_study"
TAG_OBJECTIVES = "objectives"
