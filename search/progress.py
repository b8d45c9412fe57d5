"""The live progress display of a sweep: one line per event, a summary after each trial.

Plain lines (no cursor tricks) so the output reads the same in a terminal, a log file
and CI. Nothing here imports ray.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.status import best_per_objective, count_states, format_value
from search.trials import adds_seeds
from space.outcomes import Reason
from space.trial_attrs import TrialAttrs


class Progress:
    """Prints what the sweep does. ``enabled=False`` keeps it silent (tests, benchmarks)."""

    def __init__(
        self,
        study_name: str,
        target: int,
        objectives: Sequence[str],
        directions: Sequence[str],
        *,
        total_steps: int | None = None,
        stream: TextIO | None = None,
        enabled: bool = True,
        summary_every_s: float = 60.0,
    ) -> None:
        self.study_name = study_name
        self.target = target
        self.objectives = list(objectives)
        self.directions = list(directions)
        self.total_steps = total_steps
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.summary_every_s = summary_every_s
        self._t0 = time.monotonic()
        self._last_summary = self._t0

    def _print(self, text: str) -> None:
        if self.enabled:
            elapsed = int(time.monotonic() - self._t0)
            stamp = f"{elapsed // 3600:02d}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
            print(f"[{stamp}] {text}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        self._print(text)

    def started(self, number: int, name: str, source: str) -> None:
        self._print(f"#{number} start  {name}  ({source})")

    def evaluated(self, number: int, step: float, metric: str, value: float) -> None:
        of = f"/{self.total_steps}" if self.total_steps else ""
        self._print(f"#{number} eval   step {int(step)}{of}  {metric} {format_value(value)}")

    def finished(self, trial: FrozenTrial, study: optuna.Study) -> None:
        attrs = TrialAttrs.of(trial.user_attrs)
        name = attrs.candidate_name or ""
        if trial.state == TrialState.COMPLETE:
            values = "  ".join(
                f"{m}={format_value(v)}"
                for m, v in zip(self.objectives, trial.values, strict=False)
            )
            note = f"  (reused #{attrs.reused_from})" if attrs.reused_from is not None else ""
            self._print(f"#{trial.number} COMPLETE  {values}{note}  {name}")
        else:
            reason = attrs.reason or ""
            if reason == Reason.INVALID:  # no candidate to name: say why it is impossible
                name = attrs.reason_detail or ""
            self._print(f"#{trial.number} {trial.state.name}  {reason}  {name}")
        self.summary(study)

    def summary(self, study: optuna.Study) -> None:
        self._last_summary = time.monotonic()
        trials = study.get_trials(deepcopy=False)
        self._print(summary_line(trials, self.target, self.objectives, self.directions))

    def tick(self, study: optuna.Study) -> None:
        if time.monotonic() - self._last_summary >= self.summary_every_s:
            self.summary(study)


def summary_line(
    trials: Sequence[FrozenTrial], target: int, objectives: Sequence[str], directions: Sequence[str]
) -> str:
    """``3/6 done · complete 2 · pruned 1 · failed 0 · running 2 · best long_acc 0.5 (#3)``;
    with adaptive seeds also ``· more seeds 1/3 trials`` (finished / asked for)."""
    c = count_states(trials)
    extra = count_states([t for t in trials if adds_seeds(t)])
    done = c["COMPLETE"] + c["PRUNED"] + c["FAIL"] - c["interrupted"]
    extra_done = extra["COMPLETE"] + extra["PRUNED"] + extra["FAIL"] - extra["interrupted"]
    parts = [
        f"{done - extra_done}/{target} done",
        f"complete {c['COMPLETE']}",
        f"pruned {c['PRUNED']}",
        f"failed {c['FAIL'] - c['interrupted']}",
        f"running {c['RUNNING']}",
    ]
    if c["interrupted"]:
        parts.append(f"interrupted {c['interrupted']}")
    asked = sum(extra.get(state.name, 0) for state in TrialState) - extra["interrupted"]
    if asked:
        parts.append(f"more seeds {extra_done}/{asked} trials")
    best = best_per_objective(trials, objectives, directions)
    if best:
        parts.append(
            "best "
            + ", ".join(f"{m} {format_value(b['value'])} (#{b['number']})" for m, b in best.items())
        )
    return " · ".join(parts)
