"""What a trial Optuna just started becomes before Ray sees it: trained, closed or parked.

:class:`Triage` takes a trial the study searcher (:mod:`search.searcher`) started (asked,
claimed from the queue or re-queued) and decides, without Ray, what needs no training:

- its seeds: the sweep's own, ``requested_seeds`` for a trial of more seeds, or
  ``others`` for a candidate no hypothesis compares (:func:`search.seed_rounds.trial_seeds`);
  the trial carries them as ``seed``/``repeats`` with the budget key they imply.
- its candidate: the enqueued knobs (a preset, a re-run, seeds asked for) replayed as the
  trial's params, or knobs the sampler suggests; an impossible candidate is FAIL
  ``invalid_candidate``, a knob that cannot be read FAIL ``error: ...``.
- dedup: a candidate already COMPLETE with the same budget (seeds included) is COMPLETE
  again with its values and ``reused_from``; one being trained with the same budget right
  now parks the trial until its twin ends (:meth:`Triage.resolve_waiting`).

What is left is :class:`Ready` to train. Closing goes through the searcher's own close (it
reports progress and tells tracking), handed in as ``close``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.bookkeeping import find_reusable, find_running_twin, set_trial_attrs
from search.optuna_adapter import enqueued_params, storage_trial_id
from search.optuna_view import study_view
from search.progress import Progress
from search.seed_rounds import trial_seeds
from search.signature import budget_key, sweep_seeds
from space.errors import InvalidCandidate
from space.expand import Candidate
from space.names import STEPS, TRAIN_SECONDS, VAL_BPB, is_score_name
from space.outcomes import Outcome, Reason, error_reason
from space.schema import SweepConfig
from space.secrets import redact_tail
from space.trial_attrs import (
    ATTR_BUDGET,
    ATTR_CANDIDATE_ID,
    ATTR_CANDIDATE_NAME,
    ATTR_DRIVER,
    ATTR_EVAL_METRIC,
    ATTR_KNOBS,
    ATTR_LR,
    ATTR_LR_SEARCH,
    ATTR_REASON,
    ATTR_REASON_DETAIL,
    ATTR_REPEATS,
    ATTR_REUSED_FROM,
    ATTR_SEED,
    ATTR_TRIAL_DIR,
    TrialAttrs,
)
from tracking.hooks import SweepHooks
from tracking.study_view import TrialSnapshot

# Scores copied from a trial to a deduplicated one (besides every is_score_name key);
# not trial_seconds: that is what the trial itself cost, and a reused one cost nothing.
_EXTRA_SCORES = (VAL_BPB, TRAIN_SECONDS, STEPS)

# What the trial's training chose, copied with its scores: the pilots of train.lr_search
# are part of the trial (the budget key holds lr_search), and the scores are the chosen lr's.
_TRAINING_CHOICES = (ATTR_LR, ATTR_LR_SEARCH)

# The searcher's close: (number, state, user attrs, values) -> the closed trial.
Close = Callable[..., FrozenTrial | None]


@dataclass
class Ready:
    """A trial to train: its candidate, its seeds, and the checkpoint it continues from."""

    trial: optuna.Trial
    candidate: Candidate
    restore_from: str | None
    seeds: tuple[int, ...]


@dataclass
class Waiting:
    """A trial parked until its twin (same candidate, same budget) ends."""

    trial: optuna.Trial
    candidate: Candidate
    twin: int  # the trial number training the same candidate with the same seeds
    seeds: tuple[int, ...]
    budget: str


class Triage:
    """Started trials -> :class:`Ready`, or closed (invalid, reused), or parked in
    :attr:`waiting` (see the module docstring)."""

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        config: SweepConfig,
        *,
        driver_id: str,
        dedup: bool,
        progress: Progress,
        hooks: SweepHooks,
        close: Close,
    ) -> None:
        self.study = study
        self.storage = storage
        self.config = config
        self.driver_id = driver_id
        self.dedup = dedup
        self.progress = progress
        self.hooks = hooks
        self.close = close
        self.seeds = sweep_seeds(config)
        self.eval_metric = config.scheduler.metric
        self.waiting: dict[int, Waiting] = {}  # Optuna number -> trial waiting on a twin

    def base_attrs(self, seeds: tuple[int, ...]) -> dict[str, Any]:
        """What every trial this driver starts carries: its driver, budget and seeds."""
        return {
            ATTR_DRIVER: self.driver_id,
            ATTR_BUDGET: budget_key(self.config, seeds),
            ATTR_SEED: seeds[0],
            ATTR_REPEATS: len(seeds),
            ATTR_EVAL_METRIC: self.eval_metric,
        }

    def _replay_params(self, trial: optuna.Trial) -> None:
        """Suggest the enqueued params so Optuna records them as the trial's params."""
        frozen = self.storage.get_trial(storage_trial_id(trial))
        for name in enqueued_params(frozen) or {}:
            spec = self.config.space.get(name)
            if spec is not None and spec.searched:
                spec.suggest(trial)

    def prepare(self, trial: optuna.Trial) -> Ready | None:
        """Knobs -> candidate for a fresh trial. Returns it when it must be trained;
        closes it (invalid, reused) or parks it (twin running) otherwise."""
        tid = storage_trial_id(trial)
        requested = TrialAttrs.of(trial.user_attrs).requested_seeds
        seeds = tuple(int(s) for s in requested) if requested else self.seeds
        set_trial_attrs(self.storage, tid, self.base_attrs(seeds))
        given = TrialAttrs.of(trial.user_attrs).knobs
        knobs: dict[str, Any] = {}
        try:
            if given is not None:
                self._replay_params(trial)
                knobs = dict(given)
            else:
                knobs = self.config.suggest(trial)
            candidate = self.config.candidate(knobs)
        except InvalidCandidate as err:
            self.close(
                trial.number,
                TrialState.FAIL,
                {ATTR_KNOBS: knobs, ATTR_REASON: Reason.INVALID, ATTR_REASON_DETAIL: str(err)},
            )
            return None
        except Exception as err:  # a malformed sampled value, a sampler bug: FAIL, go on
            self.close(
                trial.number,
                TrialState.FAIL,
                {
                    ATTR_REASON: error_reason(f"{type(err).__name__}: {err}"),
                    ATTR_REASON_DETAIL: redact_tail(traceback.format_exc(limit=6), 4000),
                },
            )
            return None
        tagged = {
            ATTR_CANDIDATE_ID: candidate.id,
            ATTR_CANDIDATE_NAME: candidate.name,
            ATTR_KNOBS: candidate.knobs,
        }
        chosen = trial_seeds(self.config, trial.user_attrs, candidate)
        if chosen != seeds:  # repeats.others: a candidate no hypothesis compares
            seeds = chosen
            tagged.update(self.base_attrs(seeds))
        budget = budget_key(self.config, seeds)
        set_trial_attrs(self.storage, tid, tagged)
        if self.dedup:
            # Read the study again now that this trial is tagged: a driver tagging the
            # same candidate at this moment then sees this trial, or this trial sees it.
            trials = self.study.get_trials(deepcopy=False)
            source = find_reusable(trials, candidate.id, budget)
            if source is not None:
                self._reuse(trial.number, source)
                return None
            twin = find_running_twin(trials, candidate.id, budget, trial.number)
            if twin is not None:
                self.waiting[trial.number] = Waiting(trial, candidate, twin.number, seeds, budget)
                self.progress.note(
                    f"#{trial.number} waits for #{twin.number} (same candidate): {candidate.name}"
                )
                return None
        return Ready(trial, candidate, TrialAttrs.of(trial.user_attrs).restore_from, seeds)

    def resolve_waiting(self) -> Ready | None:
        """Waiting trials whose twin ended: reuse its result, or train them now."""
        if not self.waiting:
            return None
        trials = self.study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        for number, w in list(self.waiting.items()):
            twin = by_number.get(w.twin)
            if twin is not None and twin.state == TrialState.RUNNING:
                continue
            del self.waiting[number]
            source = find_reusable(trials, w.candidate.id, w.budget)
            if source is not None:
                self._reuse(number, source)
                continue
            other = find_running_twin(trials, w.candidate.id, w.budget, number)
            if other is not None:
                self.waiting[number] = Waiting(
                    w.trial, w.candidate, other.number, w.seeds, w.budget
                )
                continue
            restore_from = TrialAttrs.of(w.trial.user_attrs).restore_from
            return Ready(w.trial, w.candidate, restore_from, w.seeds)
        return None

    def _reuse(self, number: int, source: FrozenTrial) -> None:
        read = TrialAttrs.of(source.user_attrs)
        origin = read.reused_from if read.reused_from is not None else source.number
        scores = {
            k: v
            for k, v in source.user_attrs.items()
            if is_score_name(k) or k in _EXTRA_SCORES or k in _TRAINING_CHOICES
        }
        attrs: dict[str, Any] = {**scores, ATTR_REUSED_FROM: origin}
        attrs.update(read.pick((ATTR_TRIAL_DIR,)))
        # Its MLflow run is made now, so the run id is on the trial before Optuna closes it
        # (Optuna refuses attributes on a finished trial).
        listed = next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)
        current = self.storage.get_trial(storage_trial_id(listed))
        snapshot = TrialSnapshot(
            number=number,
            state=Outcome.COMPLETE,
            values=list(source.values),
            params=current.params,
            user_attrs={**current.user_attrs, **attrs},
            datetime_start=current.datetime_start,
        )
        attrs.update(self.hooks.link_trial(study_view(self.study), snapshot))
        self.close(number, TrialState.COMPLETE, attrs, values=list(source.values))
