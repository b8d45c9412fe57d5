"""The retrieval tasks' names and parameters: the rules a sweep file is validated against.

Pure (no numpy, no torch): the schema checks ``train.task_params`` and that ``seq_len`` can
hold a task's example with these; :mod:`workers.tasks` renders the examples themselves.
"""

from __future__ import annotations

TASKS = ("passkey", "multikey", "multivalue")

# The parts of a retrieval prompt whose share of attention the attention-mass score
# reports (the paper's Begin / Needle / Context / End).
SEGMENTS = ("begin", "needle", "context", "end")

# Keys are single upper-case ASCII letters: at most this many distinct keys in one example.
N_KEYS = 26

_COMMON_DEFAULTS: dict[str, int] = {"value_len": 4, "begin_tokens": 4, "query_gap_tokens": 8}
TASK_DEFAULTS: dict[str, dict[str, int]] = {
    "passkey": dict(_COMMON_DEFAULTS),
    "multikey": {"n_needles": 4, **_COMMON_DEFAULTS},
    "multivalue": {"n_values": 4, **_COMMON_DEFAULTS},
}
_MINIMUM = {"begin_tokens": 1, "query_gap_tokens": 0}  # every other parameter: >= 1


def task_params(task: str, **overrides: int) -> dict[str, int]:
    """Defaults of ``task`` overlaid with ``overrides``; unknown names or bad values raise
    ValueError."""
    if task not in TASK_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    defaults = TASK_DEFAULTS[task]
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r} for task {task!r}; expected one of {sorted(defaults)}"
        )
    for name, value in overrides.items():
        if isinstance(value, bool) or not _is_int(value):
            raise ValueError(f"task {task!r}: {name} must be an integer, got {value!r}")
    params = {**defaults, **{k: int(v) for k, v in overrides.items()}}
    for name, value in params.items():
        lowest = _MINIMUM.get(name, 1)
        if value < lowest:
            raise ValueError(f"task {task!r}: {name} must be >= {lowest}, got {value}")
    if params.get("n_needles", 1) > N_KEYS:
        raise ValueError(f"task {task!r}: n_needles must be <= {N_KEYS} distinct keys")
    return params


def _is_int(value: object) -> bool:
    # numpy integers count too, without importing numpy here
    return isinstance(value, int) or type(value).__name__.startswith(("int", "uint"))


def needle_count(task: str, params: dict[str, int]) -> int:
    """How many needles an example of ``task`` holds."""
    if task == "multikey":
        return params["n_needles"]
    if task == "multivalue":
        return params["n_values"]
    return 1


def queried_count(task: str, params: dict[str, int]) -> int:
    """How many values the answer holds."""
    return params["n_values"] if task == "multivalue" else 1


def answer_len(task: str, **overrides: int) -> int:
    """Number of answer tokens of ``task`` (digits plus one NEEDLE_CLOSE per value)."""
    p = task_params(task, **overrides)
    return queried_count(task, p) * (p["value_len"] + 1)


def min_length(task: str, **overrides: int) -> int:
    """The shortest example length (tokens) that ``task`` with these parameters fits in."""
    p = task_params(task, **overrides)
    needle_len = p["value_len"] + 3
    query_len = 2
    return (
        1  # DOC
        + (p["begin_tokens"] - 1)  # filler inside the Begin segment
        + needle_count(task, p) * needle_len
        + p["query_gap_tokens"]
        + query_len
        + answer_len(task, **overrides)
    )
