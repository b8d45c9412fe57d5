"""Adaptive seeds in the sweep driver (``study.repeats: {min, max}``): which seeds a trial
trains, and the trials that add seeds where a hypothesis is still undecided.

First every candidate trains in one trial with its first seeds (:func:`first_seeds`:
``min``, or ``others`` for a candidate no hypothesis compares). Once the study holds its
target of candidates, :class:`SeedRounds` asks the planner
(:func:`tracking.seed_plan.plan_for_study`) which candidates need which seeds next and
queues one trial per request: the candidate's knobs, ``candidate_id`` and ``preset`` (as a
re-run carries them), the seeds (``requested_seeds``) and the hypotheses that asked
(``requested_for``). These trials never count toward ``study.trials`` (which counts
candidates), and their budget key includes their seeds
(:func:`search.signature.budget_key`), so dedup never passes one seed's result off as
another's.

Nothing lives only in memory: the queued trials are in the study, and the planner replays
every look from the study's records, so ``ropenope resume`` after a crash makes the same
plan again; seeds queued or running are pending and never asked for twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.bookkeeping import adds_seeds
from search.errors import StudyError
from search.presets import fixed_params
from search.signature import sweep_seeds
from search.storage import scan_lock
from space.errors import ConfigError, InvalidCandidate
from space.expand import Candidate
from space.hypotheses import Hypothesis
from space.layers import LayerSpec
from space.schema import SweepConfig
from space.trial_attrs import (
    ATTR_CANDIDATE_ID,
    ATTR_CANDIDATE_NAME,
    ATTR_KNOBS,
    ATTR_PRESET,
    ATTR_REPEATS,
    ATTR_REQUESTED_FOR,
    ATTR_REQUESTED_SEEDS,
    ATTR_SEED,
    TrialAttrs,
    check_attrs,
)
from tracking.aggregate import aggregate_study
from tracking.seed_plan import (
    BLOCKED,
    DECIDED,
    EXHAUSTED,
    FUTILE,
    SETTLED,
    HypothesisState,
    SeedPlan,
    SeedRequest,
    plan_for_study,
)

if TYPE_CHECKING:  # annotation only: progress -> status -> seed_rounds at run time
    from search.progress import Progress

__all__ = [
    "SeedRounds",
    "compares",
    "describe_state",
    "first_seeds",
    "format_decisions",
    "queue_requests",
    "queued_seed_trials",
    "rounds_left",
    "study_runs",
    "trial_seeds",
    "unsettled",
]

_SETTLED = SETTLED


def compares(
    hypotheses: Sequence[Hypothesis], layers: Sequence[LayerSpec], preset: str | None
) -> bool:
    """Whether some hypothesis compares this candidate: a side names its preset, or a
    side without a preset selects by ``where`` and its layers fit. (A side naming a
    preset selects that preset's candidate: the sweep file must list it.)"""
    for h in hypotheses:
        for m in h.measures:
            for side in (m.a, m.b):
                if side.preset is not None:
                    if side.preset == preset:
                        return True
                elif side.where is not None and side.where.matches(layers):
                    return True
    return False


def first_seeds(config: SweepConfig, candidate: Candidate, preset: str | None) -> tuple[int, ...]:
    """The seeds of a candidate's first trial: the sweep's ``repeats`` (``min``), or
    ``repeats.others`` for a candidate no hypothesis compares."""
    study = config.study
    if study.repeats_others is None or compares(config.hypotheses, candidate.layers, preset):
        return sweep_seeds(config)
    return tuple(config.train.seed + i for i in range(study.others_repeats))


def trial_seeds(
    config: SweepConfig, attrs: Mapping[str, Any], candidate: Candidate
) -> tuple[int, ...]:
    """The seeds a trial trains: the ones the planner asked for, else the first seeds."""
    read = TrialAttrs.of(attrs)
    if read.requested_seeds:
        return tuple(int(s) for s in read.requested_seeds)
    return first_seeds(config, candidate, read.preset)


def queued_seed_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials of requested seeds waiting to start, oldest first."""
    waiting = [t for t in trials if t.state == TrialState.WAITING and adds_seeds(t)]
    return sorted(waiting, key=lambda t: t.number)


def _contiguous(seeds: Sequence[int]) -> list[tuple[int, ...]]:
    """``[1, 2, 4]`` -> ``[(1, 2), (4,)]``: a trial's seeds are ``seed``, ``seed + 1``, ...
    (``seed`` and ``repeats`` describe them to every reader of the study)."""
    blocks: list[list[int]] = []
    for s in sorted(set(seeds)):
        if blocks and s == blocks[-1][-1] + 1:
            blocks[-1].append(s)
        else:
            blocks.append([s])
    return [tuple(b) for b in blocks]


def queue_requests(
    study: optuna.Study,
    config: SweepConfig,
    requests: Sequence[SeedRequest],
    trials: Sequence[FrozenTrial],
) -> list[tuple[SeedRequest, tuple[int, ...]]]:
    """Enqueue one trial per request (per run of consecutive seeds) with the links a
    re-run has; returns what was queued."""
    known: dict[str, TrialAttrs] = {}
    for t in sorted(trials, key=lambda t: t.number):
        read = TrialAttrs.of(t.user_attrs)
        cid = read.candidate_id
        if cid is not None and (cid not in known or known[cid].preset is None):
            known[cid] = read
    queued = []
    for r in requests:
        try:
            params = fixed_params(config, r.knobs)
        except (ConfigError, InvalidCandidate):  # still queued: its trial fails with the reason
            params = {}
        earlier = known.get(r.candidate_id, TrialAttrs())
        for block in _contiguous(r.seeds):
            attrs: dict[str, Any] = {
                ATTR_KNOBS: dict(r.knobs),
                ATTR_CANDIDATE_ID: r.candidate_id,
                ATTR_REQUESTED_SEEDS: list(block),
                ATTR_REQUESTED_FOR: list(r.hypotheses),
                ATTR_SEED: block[0],
                ATTR_REPEATS: len(block),
            }
            attrs.update(earlier.pick((ATTR_PRESET, ATTR_CANDIDATE_NAME)))
            study.enqueue_trial(params, user_attrs=check_attrs(attrs))
            queued.append((r, block))
    return queued


def rounds_left(study: optuna.Study, config: SweepConfig) -> bool:
    """Whether an adaptive study still has seeds to train: queued ones, or a hypothesis
    the planner has not settled (decided, at max seeds, or unable to be judged)."""
    if not config.study.adaptive:
        return False
    if queued_seed_trials(study.get_trials(deepcopy=False)):
        return True
    plan = plan_for_study(study, config)
    return plan is not None and not plan.done


def unsettled(plan: SeedPlan) -> list[str]:
    """The hypotheses that still ask for seeds or wait for seeds in training."""
    return [h.name for h in plan.hypotheses if h.state not in _SETTLED]


def _runs(h: HypothesisState) -> int:
    return h.seeds_per_candidate * len(h.candidates)


def _interval(h: HypothesisState) -> str:
    interval = h.finding.interval if h.finding is not None else None
    if interval is None:
        return ""
    return f", interval [{interval[0]:.3g}, {interval[1]:.3g}]"


def describe_state(h: HypothesisState) -> str:
    """``name: supported at look 1/3 (3 seeds x 2 candidates = 6 runs), interval [a, b]``:
    the runs are those of the look that decided it (before the competence gate)."""
    if h.state == BLOCKED:
        return f"{h.name}: cannot be judged ({h.problem})"
    if h.state == DECIDED:
        what = f"{h.verdict.value} at look {h.look}/{h.looks}"
    elif h.state == EXHAUSTED:
        what = f"undecided at max seeds, look {h.look}/{h.looks}"
    elif h.state == FUTILE:
        what = f"undecided, no more seeds after look {h.look}/{h.looks} ({h.problem})"
    else:
        what = f"{h.state} after look {h.look}/{h.looks}"
    n = len(h.candidates)
    runs = f"{h.seeds_per_candidate} seeds x {n} candidate{'s' if n != 1 else ''} = {_runs(h)} runs"
    return f"{h.name}: {what} ({runs}){_interval(h)}"


def format_decisions(plan: SeedPlan, runs: int | None = None) -> list[str]:
    """The end-of-sweep lines: every hypothesis, decided or not, with the runs it took."""
    decided = sum(h.state == DECIDED for h in plan.hypotheses)
    head = f"hypotheses: {decided} of {len(plan.hypotheses)} decided"
    if runs is not None:
        head += f", {runs} runs in the study"
    return [head] + [f"  {describe_state(h)}" for h in plan.hypotheses]


class SeedRounds:
    """The adaptive-seed rounds of one driver: the latest plan, made again whenever the
    study's trials change state, and the requests it queued (the study holds them; this
    only remembers what this driver asked for, so a request that comes back although
    its trial ended is not queued forever)."""

    def __init__(self, study: optuna.Study, config: SweepConfig, progress: Progress) -> None:
        self.study = study
        self.config = config
        self.progress = progress
        self._key: tuple | None = None
        self._plan: SeedPlan | None = None
        self._states: dict[str, str] = {}
        self._asked: set[tuple[str, int]] = set()
        self.stuck: list[SeedRequest] = []

    def plan(self, trials: Sequence[FrozenTrial]) -> SeedPlan:
        key = tuple((t.number, t.state) for t in trials)
        if self._plan is None or key != self._key:
            plan = plan_for_study(self.study, self.config)
            if plan is None:
                raise StudyError("adaptive seed rounds need study.repeats: {min, max}")
            self._plan, self._key = plan, key
            busy = any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
            self._say_what_changed(plan, busy)
        return self._plan

    def queue(self, trials: Sequence[FrozenTrial]) -> int:
        """Queue the plan's requests that this driver has not queued before; returns the
        number of trials queued. Under the study's scan lock, planned on the trials read
        again inside it: two drivers never queue the same seeds (``trials`` is stale)."""
        with scan_lock(self.study):
            return self._queue(self.study.get_trials(deepcopy=False))

    def _queue(self, trials: Sequence[FrozenTrial]) -> int:
        plan = self.plan(trials)
        fresh = [r for r in plan.requests if not self._asked.issuperset(self._pairs(r))]
        self.stuck = [r for r in plan.requests if r not in fresh]
        if not fresh:
            return 0
        queued = queue_requests(self.study, self.config, fresh, trials)
        for r, block in queued:
            self._asked.update((r.candidate_id, s) for s in block)
            seeds = ", ".join(str(s) for s in block)
            self.progress.note(
                f"adaptive seeds: {r.name} gets seed{'s' if len(block) > 1 else ''} {seeds} "
                f"for {', '.join(r.hypotheses)}"
            )
        return len(queued)

    @staticmethod
    def _pairs(r: SeedRequest) -> set[tuple[str, int]]:
        return {(r.candidate_id, s) for s in r.seeds}

    def _say_what_changed(self, plan: SeedPlan, busy: bool) -> None:
        for h in plan.hypotheses:
            if busy and h.state == BLOCKED:
                continue  # a candidate still training has no completed run yet
            if h.state in _SETTLED and self._states.get(h.name) != h.state:
                self.progress.note(f"hypothesis {describe_state(h)}")
            self._states[h.name] = h.state


def study_runs(study: optuna.Study) -> int:
    """Completed runs (candidate x seed) in the study, each counted once."""
    agg = aggregate_study(study)
    return sum(c.n for c in agg.candidates)
