"""The Tune callback and stopper of a sweep: the events the searcher does not see, and
the end of a sweep that the cluster keeps failing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from search.searcher import StudySearcher

# Tune states of a trial that has ended: one still in the searcher's live set was dropped
# without a word to the searcher (see StudySearcher.tune_dropped).
_ENDED = (Trial.ERROR, Trial.TERMINATED)


class SweepCallback(tune.Callback):
    """Tune events the searcher does not see: every result (incl. the one a scheduler stop
    follows), error messages, trial starts, and a heartbeat on each controller step. On
    each step it also reconciles the searcher's live trials with Tune's trial states, and
    ``reaper`` (several workers per trial) frees the reservations of dead launchers."""

    def __init__(self, searcher: StudySearcher, reaper: Any = None) -> None:
        self.searcher = searcher
        self.reaper = reaper

    def __getstate__(self) -> dict[str, Any]:
        return {}  # see StudySearcher.__getstate__

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        live = self.searcher.live
        if live and self.searcher.stop_line is None:
            dropped = {
                t.trial_id: _error_text(t)
                for t in trials
                if t.trial_id in live and t.status in _ENDED
            }
            if dropped:
                self.searcher.tune_dropped(dropped)
        if self.reaper is not None:
            for note in self.reaper.tick():
                self.searcher.progress.note(note)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.searcher.progress.tick(self.searcher.study)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        live = self.searcher.live.get(trial.trial_id)
        if live is not None:
            self.searcher.progress.started(live.trial.number, live.candidate.name, live.source)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.searcher.record_result(trial.trial_id, result)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.on_trial_restart(trial.trial_id, _error_text(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.on_trial_error(trial.trial_id, _error_text(trial))


class FailureBudgetStop(tune.Stopper):
    """Stops every trial and the experiment once the searcher's failure budget is spent
    (:mod:`search.failures`); the driver then closes what was running as interrupted."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher

    def __getstate__(self) -> dict[str, Any]:
        return {}  # see StudySearcher.__getstate__

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False  # trials end by themselves; only the whole sweep stops here

    def stop_all(self) -> bool:
        return self.searcher.stop_line is not None


def _error_text(trial: Any) -> str | None:
    """The trace of the trial's latest failure. Tune appends each failure to an error file
    in the trial's local folder at once, and copies it to the experiment's storage later:
    ``Trial.get_error`` reads the copy, which a restart or an error event often precedes."""
    try:
        local = trial.error_file
        if local and Path(local).is_file():
            text = Path(local).read_text(errors="replace")
        else:
            text = trial.get_error()
    except Exception as err:  # the error file itself is unreadable: say that instead
        return f"{type(err).__name__}: {err}"
    if not text:
        return None
    latest = text.rfind("Failure # ")
    return text[latest:] if latest > 0 else text
