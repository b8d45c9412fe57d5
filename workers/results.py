"""What one training run of a candidate produced (one seed): status, scores, grids, files.

Torch-free, so the trial adapter, the checkpoint layout and tracking can read a result
without importing the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class CandidateResult:
    status: str  # complete | diverged | stopped
    reason: str | None
    scores: dict[str, float] = field(default_factory=dict)
    niah: dict[str, Any] = field(default_factory=dict)
    attention_mass: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    candidate: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    resumed_from_step: int | None = None
    corpus: dict[str, Any] = field(default_factory=dict)  # which prepared corpus it used

    def to_dict(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "status": self.status,
            "reason": self.reason,
            "scores": self.scores,
            "niah": self.niah,
            "attention_mass": self.attention_mass,
            "history": self.history,
            "artifacts": {k: str(v) for k, v in self.artifacts.items()},
            "candidate": self.candidate,
            "seed": self.seed,
            "resumed_from_step": self.resumed_from_step,
        }
