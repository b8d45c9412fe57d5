"""How a run ends, in one vocabulary for the trainer, the trial, Optuna and MLflow.

- :class:`RunStatus`: how one training run (one seed) or one trial's work ended, as the
  worker reports it.
- :class:`Outcome`: the Optuna trial state that status becomes (also the MLflow run's
  ``outcome`` tag): a full-budget run is COMPLETE, a deliberate early stop PRUNED, anything
  else FAIL (DESIGN §7: never a stopped trial as COMPLETE).
- :class:`Reason`: why a trial is FAIL or PRUNED (the ``reason`` user attribute); an error's
  reason is ``error: <Type>: <message>`` (:func:`error_reason`).
"""

from __future__ import annotations

from enum import StrEnum

from space.secrets import redact_text


class RunStatus(StrEnum):
    COMPLETE = "complete"
    DIVERGED = "diverged"  # a non-finite loss, gradient or validation metric
    STOPPED = "stopped"  # stopped early by its caller (a scheduler)
    ERROR = "error"  # an exception in the candidate's own code


class Outcome(StrEnum):
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"


class Reason(StrEnum):
    INVALID = "invalid_candidate"  # an impossible knob combination, never trained
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"  # its driver or its worker died; the candidate runs again
    PRUNED = "pruned_by_scheduler"
    ERROR = "error"  # the prefix of "error: <Type>: <message>"
    WORKER_DIED = "worker_died"  # its process or node died more often than retries allow
    # Its machine failed it (a full disk, an I/O error) more often than retries allow.
    INFRASTRUCTURE = "infrastructure_failure"
    # Re-run (of a re-run ...) resources.failures.max_rerun_depth times, and not again.
    RERUN_LIMIT = "rerun_limit"


# Reasons of a FAIL trial whose candidate runs again (``ropenope resume``; interrupted ones
# at once): they do not count toward the study's target.
RERUN_REASONS = frozenset({Reason.INTERRUPTED, Reason.WORKER_DIED, Reason.INFRASTRUCTURE})

# Reasons that say the cluster, not the candidate, failed a trial: what the failure budget
# counts (search.failures).
INFRASTRUCTURE_REASONS = frozenset({Reason.WORKER_DIED, Reason.INFRASTRUCTURE})


OUTCOME_OF_STATUS: dict[RunStatus, Outcome] = {
    RunStatus.COMPLETE: Outcome.COMPLETE,
    RunStatus.STOPPED: Outcome.PRUNED,
    RunStatus.DIVERGED: Outcome.FAIL,
    RunStatus.ERROR: Outcome.FAIL,
}


def error_reason(message: str) -> str:
    """The ``reason`` of a trial that failed with ``message`` (``<Type>: <text>``), any
    URL password in it masked."""
    return f"{Reason.ERROR}: {redact_text(message)}"
