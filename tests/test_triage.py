"""search/triage.py without Ray: what a started trial becomes (trained, closed, parked).

The searcher's own close is replaced by :func:`search.trials.finish_trial`, which is what
it calls underneath; the sweeps in test_sweep.py and test_adaptive_seeds.py cover the
same paths through Ray Tune."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from engines import tiny_config_file
from optuna.trial import TrialState

from search.progress import Progress
from search.signature import budget_key, sweep_seeds
from search.triage import Ready, Triage
from search.trials import finish_trial
from space import load_config
from space.outcomes import Reason
from space.trial_attrs import (
    ATTR_BUDGET,
    ATTR_CANDIDATE_ID,
    ATTR_KNOBS,
    ATTR_REASON,
    ATTR_REPEATS,
    ATTR_REQUESTED_SEEDS,
    ATTR_REUSED_FROM,
    ATTR_SEED,
)
from tracking.hooks import SweepHooks

HYBRID = {"global_every": 2, "global_position": "nope", "local_rope_base": 1e4, "local_window": 8}


@pytest.fixture
def setup(tmp_path):
    config = load_config(tiny_config_file(tmp_path / "t.yaml", study={"repeats": 2}))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    storage = study._storage

    def close(number: int, state: TrialState, attrs: Any, values: Any = None) -> None:
        finish_trial(study, storage, number, state, values=values, attrs=attrs)

    progress = Progress("t", 3, ["a", "b", "c"], ["maximize"] * 3, enabled=False)
    triage = Triage(
        study,
        storage,
        config,
        driver_id="d",
        dedup=True,
        progress=progress,
        hooks=SweepHooks(),
        close=close,
    )
    return config, study, triage


def _start(study: optuna.Study, knobs: dict[str, Any], **attrs: Any) -> optuna.Trial:
    study.enqueue_trial({}, user_attrs={ATTR_KNOBS: knobs, **attrs})
    return study.ask()


def _frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return study.get_trials(deepcopy=False)[number]


def test_triage_trains_a_new_candidate_with_the_sweep_seeds(setup):
    config, study, triage = setup
    ready = triage.prepare(_start(study, HYBRID))
    assert isinstance(ready, Ready)
    assert ready.seeds == sweep_seeds(config) == (0, 1)
    attrs = _frozen(study, 0).user_attrs
    assert (attrs[ATTR_SEED], attrs[ATTR_REPEATS]) == (0, 2)
    assert attrs[ATTR_BUDGET] == budget_key(config)
    assert attrs[ATTR_CANDIDATE_ID] == ready.candidate.id == config.candidate(HYBRID).id


def test_triage_reuses_a_complete_twin_but_never_for_other_seeds(setup):
    config, study, triage = setup
    first = triage.prepare(_start(study, HYBRID))
    assert first is not None
    finish_trial(study, study._storage, 0, TrialState.COMPLETE, values=[0.5, 2.0, 1.0])
    assert triage.prepare(_start(study, HYBRID)) is None
    reused = _frozen(study, 1)
    assert reused.state == TrialState.COMPLETE
    assert reused.user_attrs[ATTR_REUSED_FROM] == 0 and reused.values == [0.5, 2.0, 1.0]
    more = triage.prepare(_start(study, HYBRID, **{ATTR_REQUESTED_SEEDS: [2]}))
    assert more is not None and more.seeds == (2,)  # another result: trained, not copied
    attrs = _frozen(study, 2).user_attrs
    assert (attrs[ATTR_SEED], attrs[ATTR_REPEATS]) == (2, 1)
    assert attrs[ATTR_BUDGET] == budget_key(config, (2,)) != budget_key(config)


def test_triage_parks_a_trial_while_its_twin_trains_then_trains_it(setup):
    _, study, triage = setup
    assert triage.prepare(_start(study, HYBRID)) is not None  # #0 trains (RUNNING)
    assert triage.prepare(_start(study, HYBRID)) is None
    assert list(triage.waiting) == [1] and triage.waiting[1].twin == 0
    assert triage.resolve_waiting() is None  # the twin still trains
    finish_trial(study, study._storage, 0, TrialState.FAIL, attrs={ATTR_REASON: "diverged"})
    ready = triage.resolve_waiting()  # the twin left no result: train this one
    assert ready is not None and ready.trial.number == 1 and not triage.waiting


def test_triage_closes_an_impossible_candidate_as_invalid(setup):
    _, study, triage = setup
    assert triage.prepare(_start(study, {**HYBRID, "kv_heads": 3})) is None
    closed = _frozen(study, 0)
    assert closed.state == TrialState.FAIL
    assert closed.user_attrs[ATTR_REASON] == Reason.INVALID
