"""The report as JSON (``summary.json`` and ``ropenope report --json``): every
candidate's aggregates, the findings with their intervals and rules, rank stability and,
for adaptive seeds, where each hypothesis stands."""

from __future__ import annotations

import math
from typing import Any

from tracking.report.content import ReportInput
from tracking.ties import tie_groups

__all__ = ["summary"]


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def summary(r: ReportInput) -> dict[str, Any]:
    agg = r.agg
    candidates = [
        {
            "name": c.name,
            "candidate_id": c.candidate_id,
            "candidate_name": c.candidate_name,
            "preset": c.preset,
            "aliases": list(c.aliases),
            "knobs": dict(c.knobs),
            "trials": list(c.trials),
            "seeds": [str(s) for s in c.seeds],
            "scores": {k: s.to_dict() for k, s in c.scores.items()},
            "niah": c.niah.to_dict() if c.niah else None,
            "not_complete": dict(c.not_complete),
            **({"lr_search": [dict(s) for s in c.lr_searches]} if c.lr_searches else {}),
        }
        for c in agg.candidates
    ]
    return _clean(
        {
            "study": r.study_name,
            "objectives": list(agg.objective_names),
            "directions": list(agg.directions),
            "state_counts": dict(agg.state_counts),
            "candidates": candidates,
            "without_complete": [
                {
                    "name": c.name,
                    "candidate_id": c.candidate_id,
                    "not_complete": dict(c.not_complete),
                }
                for c in agg.without_complete
            ],
            "hypotheses_source": r.hypotheses_source,
            "findings": [f.to_dict() for f in r.findings],
            "rank_stability": [s.to_dict() for s in r.stability],
            "signal_to_noise": [s.to_dict() for s in r.signal_noise],
            "tie_groups": [g.to_dict() for g in tie_groups(agg.objective_names, agg.candidates)],
            "held_out": None if r.held_out is None else r.held_out.to_dict(),
            "seed_plan": None if r.seed_plan is None else r.seed_plan.to_dict(),
            "decision_accuracy": None
            if r.decision_accuracy is None
            else r.decision_accuracy.to_dict(),
            "warnings": [*r.notes, *agg.warnings],
        }
    )
