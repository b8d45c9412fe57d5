"""MO-ASHA (search.mo_asha): the order at a rung, the scheduler's decisions on known
learning curves against a hand computation, and a real Ray Tune run with it.

Every expected decision below is worked out by hand in the comments, from the rules in
the module docstring: at a rung, the arriving trial joins the ``n - 1`` recorded there;
fronts of non-dominated sorting first, epsilon-net order inside a front (objectives scaled
by their range over the rung; first pick best on the first objective; then the farthest
from the nearest pick); the trial goes on iff its place is among the first ``ceil(n/eta)``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from engines import (
    REPO,
    SWEEP_SPACE,
    cli_driver,
    handicap_runner,
    kill_driver_when,
    tiny_config_file,
    trials_by_number,
)
from ray.tune.schedulers import TrialScheduler

from search.mo_asha import (
    MOASHAScheduler,
    RungObjective,
    evaluation_index,
    nondominated_fronts,
    promoted_count,
    rung_milestones,
    rung_order,
)

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP

# Learning curves of six trials: loss after evaluation t = 1, 2 (lower is better), and a
# KV-cache size known from the layout before training (lower is better).
CURVES = {
    "A": ([3.0, 2.5], 4.0),
    "B": ([2.0, 1.5], 8.0),
    "C": ([4.0, 3.9], 8.0),
    "D": ([1.0, 0.8], 2.0),
    "E": ([3.5, 3.0], 1.0),
    "F": ([1.5, 2.9], 3.0),
}


def test_mo_asha_fronts_put_dominated_points_after_their_dominators():
    points = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [3.0, 3.0], [1.0, 2.0]])
    # [1,2] and [2,1] and the repeat of [1,2] are dominated by none (equal rows share a
    # front); [2,2] is dominated by both; [3,3] by everything.
    assert nondominated_fronts(points) == [[0, 1, 4], [2], [3]]


def test_mo_asha_epsilon_net_prefers_the_far_point_of_a_front_over_the_near_one():
    # Rows (loss, kv), both minimised: D=(1, 2), W=(5, 10), Q=(3, 2.4), P=(1.2, 3).
    # Fronts: {D}; {Q, P} (D dominates both, neither dominates the other); {W}.
    # Scaled by the ranges loss 1..5 and kv 2..10: D=(0, 0), Q=(0.5, 0.05),
    # P=(0.05, 0.125). Distance to D: Q 0.502, P 0.135, so Q is picked before P although
    # P has the lower loss. Order D, Q, P, W; with eta 2, ceil(4/2) = 2 go on: D and Q.
    points = np.array([[1.0, 2.0], [5.0, 10.0], [3.0, 2.4], [1.2, 3.0]])
    assert rung_order(points) == [0, 2, 3, 1]
    assert promoted_count(4, 2) == 2


def test_mo_asha_rungs_stop_below_max_t():
    assert rung_milestones(1, 2, 4) == [1.0, 2.0]  # no rung at max_t: a full run goes on
    assert rung_milestones(1, 3, 28) == [1.0, 3.0, 9.0, 27.0]
    assert rung_milestones(2, 2, 2) == []


def _scheduler(**kwargs) -> MOASHAScheduler:
    return MOASHAScheduler(
        [RungObjective("loss", "min"), RungObjective("kv", "min")],
        max_t=4,
        grace_period=1,
        reduction_factor=2,
        time_attr="t",
        known_before_training=lambda trial: {"kv": trial.config["kv"]},
        **kwargs,
    )


def _add(scheduler: MOASHAScheduler, name: str) -> SimpleNamespace:
    trial = SimpleNamespace(trial_id=name, config={"kv": CURVES[name][1]})
    scheduler.on_trial_add(None, trial)
    return trial


def _report(scheduler: MOASHAScheduler, trial: SimpleNamespace, t: int) -> str:
    losses = CURVES[trial.trial_id][0]
    loss = losses[min(t, len(losses)) - 1]  # flat after the last point of the curve
    return scheduler.on_trial_result(None, trial, {"t": t, "loss": loss})


def test_mo_asha_promotes_exactly_the_hand_computed_trials():
    s = _scheduler()
    trials = {name: _add(s, name) for name in "ABCDE"}
    # Rung 0 (t = 1), arrivals A, B, C, D, E with (loss, kv):
    #  A (3, 4): alone, n=1, goes on.
    #  B (2, 8): {A, B} one front; first pick lowest loss B; B is 1st of ceil(2/2)=1: on.
    #  C (4, 8): A and B dominate C; C 3rd of 3, only ceil(3/2)=2 go on: STOP.
    #  D (1, 2): dominates all; 1st of 4, 2 go on: on.
    #  E (3.5, 1): the lowest kv, so front {D, E}; order D, E: 2nd of 5, 3 go on: on.
    assert [_report(s, trials[n], 1) for n in "ABCDE"] == [
        CONTINUE,
        CONTINUE,
        STOP,
        CONTINUE,
        CONTINUE,
    ]
    # Rung 1 (t = 2), arrivals D, B, E, A (the order finishing rung 0 work):
    #  D (0.8, 2): alone: on.
    #  B (1.5, 8): D dominates B; 2nd of 2, 1 goes on: STOP.
    #  E (3, 1): fronts {D, E}, {B}; order D, E, B: 2nd of 3, 2 go on: on.
    #  A (2.5, 4): D dominates A; fronts {D, E}, {B, A}. Scaled by loss 0.8..3 and kv
    #  1..8: D=(0, .143), E=(1, 0), B=(.318, 1), A=(.773, .429); nearest pick from D or
    #  E: B .914, A .485 -> B before A; A 4th of 4, 2 go on: STOP.
    assert [_report(s, trials[n], 2) for n in "DBEA"] == [CONTINUE, STOP, CONTINUE, STOP]
    # Past the last rung (max_t 4 has none) the survivors go on to the end.
    assert [_report(s, trials[n], t) for n in "DE" for t in (3, 4)] == [CONTINUE] * 4
    # A report for a rung already judged is not judged again.
    assert _report(s, trials["D"], 2) == CONTINUE
    stopped = {n: s.judged(n)[-1] for n in "ABCDE" if not s.judged(n)[-1].promoted}
    assert {n: (r.rung, r.milestone, r.position, r.recorded) for n, r in stopped.items()} == {
        "C": (0, 1.0, 2, 3),
        "B": (1, 2.0, 1, 2),
        "A": (1, 2.0, 3, 4),
    }
    assert stopped["A"].values == {"loss": 2.5, "kv": 4.0}
    assert s.num_stopped == 3


def test_mo_asha_maximised_objective_ranks_high_values_first():
    s = MOASHAScheduler([RungObjective("acc", "max")], max_t=4, grace_period=1, reduction_factor=2)
    low, high = SimpleNamespace(trial_id="low"), SimpleNamespace(trial_id="high")
    assert s.on_trial_result(None, low, {"training_iteration": 1, "acc": 0.2}) == CONTINUE
    # high (0.9) beats low (0.2): 1st of 2; a third, lower one is 3rd of 3 with 2 going on.
    assert s.on_trial_result(None, high, {"training_iteration": 1, "acc": 0.9}) == CONTINUE
    third = SimpleNamespace(trial_id="third")
    assert s.on_trial_result(None, third, {"training_iteration": 1, "acc": 0.1}) == STOP


def test_mo_asha_does_not_judge_a_report_without_every_objective():
    s = _scheduler()
    a, b = _add(s, "A"), _add(s, "B")
    assert _report(s, a, 1) == CONTINUE
    # B's report lacks the loss (and a NaN loss cannot rank either): not judged, goes on,
    # and it may still be judged at this rung by a later report that has it.
    assert s.on_trial_result(None, b, {"t": 1}) == CONTINUE
    assert s.on_trial_result(None, b, {"t": 1, "loss": float("nan")}) == CONTINUE
    assert s.judged("B") == []
    assert s.on_trial_result(None, b, {"t": 1, "loss": 9.0, "kv": 9.0}) == STOP


def test_mo_asha_resumed_trial_is_judged_where_it_stands_not_at_the_rungs_it_passed():
    # A trial that continues from a checkpoint (a driver restarted: a fresh scheduler)
    # reports its first result at evaluation 3: past rungs 0 and 1. It is judged at rung 1
    # only (the highest reached), and never at rung 0 again.
    s = _scheduler()
    d = _add(s, "D")
    assert s.on_trial_result(None, d, {"t": 3, "loss": 0.7}) == CONTINUE
    assert [(r.rung, r.milestone) for r in s.judged("D")] == [(1, 2.0)]
    assert s.on_trial_result(None, d, {"t": 4, "loss": 0.6}) == CONTINUE
    assert len(s.judged("D")) == 1


def test_mo_asha_evaluation_index_counts_from_the_first_seed():
    steps = (10, 20, 30)
    assert evaluation_index(steps, {"evals": 1, "step": 10.0}) == 1
    assert evaluation_index(steps, {"evals": 1, "step": 30.0, "seed_index": 1}) == 6
    # A trial restored at step 20 reports its next evaluation as its first (evals = 1):
    # the index still says it is the third.
    assert evaluation_index(steps, {"evals": 1, "step": 30.0}) == 3
    assert evaluation_index(steps, {"outcome": "{}"}) is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mo_asha_in_a_real_tune_run_stops_the_hand_computed_trials(tmp_path, ray_local):
    """A function trainable reports the CURVES above (no model); one trial at a time, in
    the order A..F, so every trial meets a rung after all earlier ones.

    Rung 0 (t=1): A, B on (as above); C STOP (as above); D on; E on (as above).
    F (1.5, 3): D dominates F; F dominates A and B; E and F do not dominate each other
    -> fronts {D, E}, {F}, {A, B}, {C}: F 3rd of 6, ceil(6/2)=3 go on: on.
    Rung 1 (t=2), arrivals A..F after each other (C absent):
     A (2.5, 4) alone: on. B (1.5, 8): {A, B} one front, B first (lowest loss): on.
     D (0.8, 2) dominates both: 1st of 3: on.
     E (3, 1): fronts {D, E}, {A, B}: 2nd of 4, 2 go on: on.
     F (2.9, 3): D dominates F; fronts {D, E}, {A, B, F}. Scaled by loss 0.8..3, kv 1..8:
     D=(0, .143), E=(1, 0), A=(.773, .429), B=(.318, 1), F=(.955, .286). Nearest pick
     (D or E): B .914, A .485, F .289 -> B; then (D, E or B): A .485, F .289 -> A; F 5th
     of 5, ceil(5/2)=3 go on: STOP.
    So C stops after evaluation 1, F after evaluation 2, the others run all 4."""
    from ray import tune

    def trainable(config: dict) -> None:
        losses, kv = CURVES[config["name"]]
        for t in range(1, 5):
            loss = losses[min(t, 2) - 1]
            tune.report({"t": t, "loss": loss, "kv": kv})

    scheduler = MOASHAScheduler(
        [RungObjective("loss", "min"), RungObjective("kv", "min")],
        max_t=4,
        grace_period=1,
        reduction_factor=2,
        time_attr="t",
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"name": tune.grid_search(list("ABCDEF"))},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="moasha", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    last = {r.config["name"]: r.metrics["t"] for r in results}
    assert last == {"A": 4, "B": 4, "C": 1, "D": 4, "E": 4, "F": 2}
    assert scheduler.num_stopped == 2


# Presets rope and nope: all layers global with full attention, so the same KV cache;
# handicap_runner adds 10 bits to nope's val_bpb, so at the first rung nope is dominated.


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mo_asha_sweep_stopped_trial_is_pruned_at_its_rung(tmp_path, runs_home, ray_local):
    from optuna.trial import TrialState

    from search import driver
    from space.names import KV_CACHE_BYTES, VAL_BPB
    from space.outcomes import Reason
    from space.trial_attrs import (
        ATTR_REASON,
        ATTR_REASON_DETAIL,
        ATTR_RUNG,
        ATTR_RUNG_EVALS,
        ATTR_RUNG_VALUES,
    )

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "moasha", "trials": 2, "early_stopping": {"scheduler": "mo_asha"}},
        space=SWEEP_SPACE,
        presets=["rope", "nope"],  # rope first, alone at every rung; then nope
        resources={"cpus_per_trial": 1, "max_concurrent": 1},
    )
    driver.submit(path, storage=url, runner=handicap_runner, progress=False)
    rope, nope = trials_by_number("moasha", url)
    # Rungs rank on (val_bpb, kv_cache_bytes), both minimised (the demo objectives as a
    # rung sees them). Rung 0 (1 evaluation): rope alone goes on; nope has the same KV
    # cache and a val_bpb 10 bits worse, so rope dominates it: 2nd of 2, ceil(2/2)=1 go
    # on: nope stops there.
    assert rope.state == TrialState.COMPLETE and len(rope.values) == 3
    assert nope.state == TrialState.PRUNED and nope.values is None
    assert nope.user_attrs[ATTR_REASON] == Reason.PRUNED
    assert (nope.user_attrs[ATTR_RUNG], nope.user_attrs[ATTR_RUNG_EVALS]) == (0, 1)
    assert "MO-ASHA at rung 0" in nope.user_attrs[ATTR_REASON_DETAIL]
    assert list(nope.intermediate_values) == [10]  # the rung's evaluation, at step 10
    rung = nope.user_attrs[ATTR_RUNG_VALUES]
    assert rung[VAL_BPB] == nope.intermediate_values[10]
    # The KV cache the driver computed from the layout is the one the trial reports.
    assert rung[KV_CACHE_BYTES] == rope.values[2] == rope.user_attrs[KV_CACHE_BYTES]
    assert ATTR_RUNG not in rope.user_attrs


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_mo_asha_resume_mid_rung_trains_no_step_twice(tmp_path, runs_home, ray_local):
    """The driver is killed while a trial is between rungs (past rungs 0 and 1: 3 of its
    10 evaluations, rungs at 1, 2, 4, 8); `resume` re-runs it from its newest checkpoint.
    As with ASHA, the resumed sweep's rungs start empty; the re-run is judged at the next
    rung it reaches (its evaluations are counted from its first seed's start), never again
    at the rungs it passed, and trains no step its interrupted trial had trained."""
    from optuna.trial import TrialState

    from search import driver
    from space.outcomes import Reason
    from space.trial_attrs import (
        ATTR_CANDIDATE_ID,
        ATTR_REASON,
        ATTR_RERUN_OF,
        ATTR_RESUMED_FROM_STEP,
        ATTR_RUNG_EVALS,
    )

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={
            "name": "moresume",
            "trials": 2,
            "early_stopping": {"scheduler": "mo_asha", "reduction_factor": 2},
        },
        space=SWEEP_SPACE,
        presets=["rope", "nope"],
        train={"steps": 150, "eval_every": 15, "checkpoint_every": 15},
        resources={"cpus_per_trial": 1, "max_concurrent": 1},
    )

    def past_second_rung():
        running = [t for t in trials_by_number("moresume", url) if t.state == TrialState.RUNNING]
        return any(len(t.intermediate_values) >= 3 for t in running)

    kill_driver_when(
        cli_driver("submit", str(path), storage=url, address=ray_local),
        runs_home,
        past_second_rung,
        timeout=200,
        what="a trial past its second rung",
    )

    driver.resume("moresume", storage=url, progress=False)
    trials = trials_by_number("moresume", url)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get(ATTR_REASON) == Reason.INTERRUPTED]
    assert interrupted
    for old in interrupted:
        (rerun,) = [t for t in trials if t.user_attrs.get(ATTR_RERUN_OF) == old.number]
        assert rerun.user_attrs[ATTR_CANDIDATE_ID] == old.user_attrs[ATTR_CANDIDATE_ID]
        assert rerun.state in (TrialState.COMPLETE, TrialState.PRUNED)
        resumed = rerun.user_attrs[ATTR_RESUMED_FROM_STEP]
        assert resumed >= 45  # the checkpoint of its third evaluation (or later)
        # No step trained twice: the re-run evaluates only after where it continued.
        assert min(rerun.intermediate_values) > resumed
        assert set(rerun.intermediate_values).isdisjoint(
            s for s in old.intermediate_values if s <= resumed
        )
        if rerun.state == TrialState.PRUNED:  # judged only at a rung beyond those passed
            assert rerun.user_attrs[ATTR_RUNG_EVALS] >= 4
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    ids = [t.user_attrs[ATTR_CANDIDATE_ID] for t in finished]
    assert len(ids) == len(set(ids)) == 2  # each candidate ends once


def test_mo_asha_rung_objectives_default_to_what_a_rung_sees_of_the_study(tmp_path):
    import yaml

    from space import load_config
    from space.names import KV_CACHE_BYTES, VAL_BPB
    from space.sections import Objective

    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["study"]["early_stopping"] = {"scheduler": "mo_asha"}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    es = config.study.early_stopping
    # long_acc (maximise) is measured after training only; short_bpb is seen as val_bpb.
    assert es.rung_objectives(config.study.objectives) == (
        Objective(metric=VAL_BPB, direction="minimize"),
        Objective(metric=KV_CACHE_BYTES, direction="minimize"),
    )
    assert config.stopping_scheduler == "mo_asha"
    (warning,) = [w for w in config.warnings if w[0] == "study.early_stopping"]
    assert "long_acc" in warning[1] and "val_bpb, kv_cache_bytes" in warning[1]


def test_mo_asha_layout_values_are_what_the_trial_reports():
    """The rung's layout objectives, computed in the driver before training, equal what
    run_candidate computes after it: the serving costs and the built model's parameters."""
    from search.mo_asha import layout_values
    from space import load_config
    from space.names import ATTN_FLOPS_PER_TOKEN, KV_CACHE_BYTES, PARAMS
    from workers import serving_cost
    from workers.candidate import build_model

    config = load_config(REPO / "configs" / "demo.yaml")
    for name in ("qknorm", "rnope_swa"):
        c = config.preset_candidate(name)
        got = layout_values(config, c.to_dict(), [KV_CACHE_BYTES, ATTN_FLOPS_PER_TOKEN, PARAMS])
        s = config.score
        assert got == {
            KV_CACHE_BYTES: serving_cost.kv_cache_bytes(
                c.shape, c.final_layers, s.kv_context_tokens, s.kv_dtype_bytes
            ),
            ATTN_FLOPS_PER_TOKEN: serving_cost.attention_flops_per_token(
                c.shape, c.final_layers, s.kv_context_tokens
            ),
            PARAMS: build_model(c, 0).num_parameters(),
        }
        assert layout_values(config, c.to_dict(), [KV_CACHE_BYTES]).keys() == {KV_CACHE_BYTES}
