"""Grouping a study's runs by candidate over seeds (tracking/aggregate.py) and reading
them from the study and trial folders (tracking/records.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from optuna.trial import TrialState, create_trial
from studies import DIRECTIONS, KNOBS, OBJECTIVES, attrs, complete, study

from space.trial_attrs import (
    ATTR_KNOBS,
    ATTR_PRESET,
    ATTR_REASON,
    ATTR_REPEATS,
    ATTR_REUSED_FROM,
    ATTR_SEEDS,
    ATTR_TRIAL_DIR,
)
from tracking.aggregate import aggregate, aggregate_study
from tracking.records import TrialRecord, seed_records


def agg_of(trials: list):
    return aggregate_study(study(trials))


# -- aggregation over seeds ------------------------------------------------------------


def test_aggregate_mean_and_spread_over_seeds():
    trials = [
        complete(attrs("rope", s, acc={1: 0.9, 2: a, 4: 0.0}))
        for s, a in enumerate([0.1, 0.2, 0.6])
    ]
    agg = agg_of(trials)
    (rope,) = agg.candidates
    assert rope.name == "rope" and rope.n == 3 and rope.seeds == (0, 1, 2)
    acc2 = rope.spread("acc@2x")
    assert acc2.mean == pytest.approx(0.3)
    assert acc2.std == pytest.approx(np.std([0.1, 0.2, 0.6], ddof=1))
    assert (acc2.min, acc2.max, acc2.n) == (0.1, 0.6, 3)
    assert acc2.sem == pytest.approx(acc2.std / math.sqrt(3))
    assert list(rope.by_multiple("acc@")) == [1, 2, 4]
    assert rope.spread("long_acc").mean == pytest.approx(np.mean([0.05, 0.1, 0.3]))
    assert rope.spread("tokens_per_s").values == (9000.0, 9100.0, 9200.0)
    assert "seed" not in rope.scores  # bookkeeping is not a score
    assert acc2.format(".2f", range_=True) == "0.30 ± 0.26 [0.10, 0.60]"


def test_aggregate_counts_only_complete_trials_and_names_candidates():
    rope = [complete(attrs("rope", s)) for s in range(2)]
    failed = create_trial(
        state=TrialState.FAIL, user_attrs={**attrs("rope", 2), ATTR_REASON: "diverged"}
    )
    pruned = create_trial(state=TrialState.PRUNED, user_attrs=attrs("nope", 0))
    unnamed = complete(attrs("custom", 0, preset=False))
    agg = agg_of([*rope, failed, pruned, unnamed])
    assert [c.name for c in agg.candidates] == ["rope", "L4 custom"]  # preset name, else name
    assert agg.get("rope").n == 2
    assert agg.get("rope").not_complete == {"FAIL: diverged": 1}
    assert [c.name for c in agg.without_complete] == ["nope"]
    assert agg.state_counts == {"COMPLETE": 3, "FAIL": 1, "PRUNED": 1}


def test_aggregate_puts_a_queued_preset_with_its_candidate():
    done = [complete(attrs("rope", s)) for s in range(2)]
    queued = create_trial(
        state=TrialState.WAITING, user_attrs={ATTR_PRESET: "rope", ATTR_KNOBS: KNOBS["rope"]}
    )
    agg = agg_of([*done, queued])
    assert [c.name for c in agg.candidates] == ["rope"] and not agg.without_complete
    assert agg.get("rope").not_complete == {"WAITING": 1}


def test_aggregate_counts_a_reused_result_and_a_repeated_seed_once():
    first = complete(attrs("rope", 0, short_bpb=2.0))
    reused = complete({**attrs("rope", 0, short_bpb=2.0), ATTR_REUSED_FROM: 0})
    again = complete(attrs("rope", 0, short_bpb=3.0))  # same seed, later trial
    other = complete(attrs("rope", 1, short_bpb=2.2))
    agg = agg_of([first, reused, again, other])
    rope = agg.get("rope")
    assert rope.n == 2 and rope.spread("short_bpb").values == (2.0, 2.2)
    assert len(agg.warnings) == 2


def test_aggregate_single_run_has_no_spread():
    agg = agg_of([complete(attrs("rope", 0))])
    s = agg.get("rope").spread("short_bpb")
    assert s.n == 1 and s.mean == 2.5 and math.isnan(s.std) and math.isnan(s.sem)
    assert s.format() == "2.5 (n=1)"


def test_aggregate_skips_nan_scores_and_counts_them():
    a = attrs("rope", 0)
    b = {**attrs("rope", 1), "long_acc": None}  # the driver stores NaN as null
    agg = agg_of(
        [
            complete(a),
            create_trial(state=TrialState.COMPLETE, values=[0.0, 2.5, 4e6], user_attrs=b),
        ]
    )
    s = agg.get("rope").spread("long_acc")
    assert s.n == 1 and s.n_missing == 1


def test_aggregate_averages_niah_grids_and_attention_mass():
    t0 = complete(attrs("rnope_swa", 0, acc={1: 1.0, 2: 0.8, 4: 0.6}, needle=0.5))
    t1 = complete(attrs("rnope_swa", 1, acc={1: 0.8, 2: 0.6, 4: 0.2}, needle=0.3))
    hybrid = agg_of([t0, t1]).get("rnope_swa")
    assert hybrid.niah.lengths == (64, 128, 256) and hybrid.niah.n == 2
    assert hybrid.niah.acc[2] == pytest.approx((0.4, 0.4, 0.4))
    assert hybrid.niah.std[2][0] == pytest.approx(np.std([0.6, 0.2], ddof=1))
    needle = hybrid.mass("1x", "global_nope", "needle")
    assert needle.mean == pytest.approx(0.4) and needle.n == 2
    assert hybrid.mass("4x", "local_rope", "end").mean == pytest.approx(0.6)
    layer3 = hybrid.attention_mass["1x"]["per_layer"][3]
    assert layer3["kind"] == "global_nope" and layer3["needle"].values == (0.5, 0.3)


def test_seed_records_reads_each_seed_of_a_repeated_trial(tmp_path):
    """The driver trains every seed of a candidate inside one trial and stores their mean;
    each seed's own result is in <trial_dir>/seed_<n>/scores.json."""
    for seed, short in ((0, 2.0), (1, 2.2), (2, 2.4)):
        folder = tmp_path / f"seed_{seed}"
        folder.mkdir()
        a = attrs("rope", seed, short_bpb=short)
        scores = {k: v for k, v in a.items() if isinstance(v, float)}
        (folder / "scores.json").write_text(
            json.dumps(
                {
                    "status": "complete",
                    "seed": seed,
                    "scores": scores,
                    "niah": a["niah"],
                    "attention_mass": a["attention_mass"],
                }
            )
        )
    mean_attrs = {
        **attrs("rope", 0, short_bpb=2.2),
        ATTR_REPEATS: 3,
        ATTR_TRIAL_DIR: str(tmp_path),
    }
    trial = complete(mean_attrs)
    records = seed_records(trial, OBJECTIVES)
    assert [r.seed for r in records] == [0, 1, 2]
    rope = agg_of([trial]).get("rope")
    assert rope.n == 3 and rope.spread("short_bpb").std == pytest.approx(0.2)
    # Without the folder the trial is one run, and the report says so.
    lone = complete({**mean_attrs, ATTR_TRIAL_DIR: str(tmp_path / "gone")})
    agg = agg_of([lone])
    assert agg.get("rope").n == 1 and "mean of 3 seeds" in agg.warnings[0]


def test_seed_records_prefer_the_seeds_attribute_so_remote_trial_folders_are_not_needed():
    """On a cluster the trial folder stays on the worker; the study row carries each seed."""
    entries = []
    for seed, short in ((0, 2.0), (1, 2.4)):
        a = attrs("rope", seed, short_bpb=short)
        scores = {k: v for k, v in a.items() if isinstance(v, float)}
        entries.append(
            {
                "seed": seed,
                "status": "complete",
                "scores": scores,
                "niah": a["niah"],
                "attention_mass": a["attention_mass"],
            }
        )
    trial = complete(
        {
            **attrs("rope", 0, short_bpb=2.2),
            ATTR_REPEATS: 2,
            ATTR_SEEDS: entries,
            ATTR_TRIAL_DIR: "/nowhere/on/this/machine",
        }
    )
    records = seed_records(trial, OBJECTIVES)
    assert [(r.seed, r.scores["short_bpb"]) for r in records] == [(0, 2.0), (1, 2.4)]
    assert all(r.niah == entries[0]["niah"] and r.attention_mass for r in records)
    agg = agg_of([trial])
    assert agg.get("rope").n == 2 and not agg.warnings


def test_aggregate_is_pure_over_records():
    r = TrialRecord(
        number=0,
        state="COMPLETE",
        candidate_id="x",
        candidate_name="X",
        preset=None,
        seed=0,
        knobs={},
        scores={"short_bpb": 1.0},
        niah=None,
        attention_mass=None,
        reason=None,
    )
    agg = aggregate([r], OBJECTIVES, DIRECTIONS)
    assert agg.get("X").spread("short_bpb").values == (1.0,)
