"""The Tune callback of a sweep: the events the searcher does not see."""

from __future__ import annotations

from typing import Any

from ray import tune

from search.searcher import StudySearcher


class SweepCallback(tune.Callback):
    """Tune events the searcher does not see: every result (incl. the one a scheduler stop
    follows), error messages, trial starts, and a heartbeat on each controller step."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher

    def __getstate__(self) -> dict[str, Any]:
        return {}  # see StudySearcher.__getstate__

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


def _error_text(trial: Any) -> str | None:
    try:
        return trial.get_error()
    except Exception as err:  # the error file itself is unreadable: say that instead
        return f"{type(err).__name__}: {err}"
