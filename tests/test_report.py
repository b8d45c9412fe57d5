"""The study report: aggregation over seeds, the paper's claims as checks, the rendered
report, `ropenope report`, and logging to the study's MLflow run."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from space.describe import describe_knobs
from space.names import (
    ATTR_CANDIDATE_ID,
    ATTR_CANDIDATE_NAME,
    ATTR_KNOBS,
    ATTR_PRESET,
    ATTR_REASON,
    ATTR_REPEATS,
    ATTR_REUSED_FROM,
    ATTR_SEED,
    ATTR_SEEDS,
    ATTR_TRIAL_DIR,
    STUDY_ATTR_OBJECTIVES,
)
from tracking.aggregate import Spread, TrialRecord, aggregate, aggregate_study, seed_records
from tracking.claims import (
    CLAIMS,
    Verdict,
    check_claims,
    compare_independent,
    compare_paired,
    decide,
    resolve_roles,
    t_critical,
)
from tracking.report import build_report

OBJECTIVES = ("long_acc", "short_bpb", "kv_cache_bytes")
DIRECTIONS = ("maximize", "minimize", "minimize")
SEGMENTS = ("begin", "needle", "context", "end")

KNOBS = {
    "rope": {"global_every": 1, "global_position": "rope"},
    "qknorm": {"global_every": 1, "global_position": "rope", "qk_norm": "pre_rope"},
    "nope": {"global_every": 1, "global_position": "nope"},
    "rnope_swa": {"global_every": 4, "global_position": "nope", "local_window": 32},
}
KINDS = {
    "rope": ["global_rope"] * 4,
    "qknorm": ["global_rope"] * 4,
    "nope": ["global_nope"] * 4,
    "rnope_swa": ["local_rope", "local_rope", "local_rope", "global_nope"],
}


def _mass(kinds: list[str], profile: dict[str, tuple[float, ...]]) -> dict:
    """An attention-mass dict shaped like ``workers.scores.attention_mass``."""
    per_layer = []
    for i, kind in enumerate(kinds):
        per_layer.append(
            {"index": i, "kind": kind, **dict(zip(SEGMENTS, profile[kind], strict=True))}
        )
    per_kind = {
        kind: {s: float(np.mean([e[s] for e in per_layer if e["kind"] == kind])) for s in SEGMENTS}
        for kind in dict.fromkeys(kinds)
    }
    return {"segments": list(SEGMENTS), "per_layer": per_layer, "per_kind": per_kind}


def _attrs(
    name: str,
    seed: int,
    *,
    acc: dict[int, float] | None = None,
    short_bpb: float = 2.5,
    extrap: dict[int, float] | None = None,
    kv: float = 4.0e6,
    needle: float = 0.3,
    end: float = 0.3,
    preset: bool = True,
) -> dict:
    acc = acc or {1: 0.9, 2: 0.5, 4: 0.2, 8: 0.1}
    extrap = extrap or {2: short_bpb + 0.1, 4: short_bpb + 0.4}
    long = [v for m, v in acc.items() if m > 1]
    scores = {
        "short_bpb": short_bpb,
        "long_acc": float(np.mean(long)),
        "acc_at_T": acc[1],
        "kv_cache_bytes": kv,
        "tokens_per_s": 9000.0 + 100 * seed,
        "params": 1.0e6,
        **{f"acc@{m}x": v for m, v in acc.items()},
        **{f"extrap_bpb@{m}x": v for m, v in extrap.items()},
    }
    rest = (1.0 - needle - end) / 2
    profile = {k: (rest, needle, rest, end) for k in ("global_rope", "global_nope", "local_rope")}
    if name.startswith("rnope"):  # windowed RoPE layers barely see the needle
        profile["local_rope"] = (0.05, 0.05, 0.3, 0.6)
    kinds = KINDS.get(name, KINDS["rope"])
    lengths = [64 * m for m in acc]
    attrs = {
        ATTR_CANDIDATE_ID: f"id-{name}",
        ATTR_CANDIDATE_NAME: f"L4 {name}",
        ATTR_SEED: seed,
        ATTR_KNOBS: KNOBS.get(name, {}),
        **scores,
        "niah": {
            "lengths": lengths,
            "depths": [0.0, 0.5, 1.0],
            "acc": [[v, v, v] for v in acc.values()],
        },
        "attention_mass": {"1x": _mass(kinds, profile), "4x": _mass(kinds, profile)},
    }
    if preset:
        attrs[ATTR_PRESET] = name
    return attrs


def _complete(attrs: dict) -> optuna.trial.FrozenTrial:
    values = [attrs[m] for m in OBJECTIVES]
    return create_trial(state=TrialState.COMPLETE, values=values, user_attrs=attrs)


def _study(trials: list, storage: str | None = None, name: str = "tiny") -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, directions=list(DIRECTIONS))
    study.set_user_attr(STUDY_ATTR_OBJECTIVES, list(OBJECTIVES))
    for t in trials:
        study.add_trial(t)
    return study


def _agg(trials: list):
    return aggregate_study(_study(trials))


# -- aggregation over seeds ------------------------------------------------------------


def test_aggregate_mean_and_spread_over_seeds():
    trials = [
        _complete(_attrs("rope", s, acc={1: 0.9, 2: a, 4: 0.0}))
        for s, a in enumerate([0.1, 0.2, 0.6])
    ]
    agg = _agg(trials)
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
    rope = [_complete(_attrs("rope", s)) for s in range(2)]
    failed = create_trial(
        state=TrialState.FAIL, user_attrs={**_attrs("rope", 2), ATTR_REASON: "diverged"}
    )
    pruned = create_trial(state=TrialState.PRUNED, user_attrs=_attrs("nope", 0))
    unnamed = _complete(_attrs("custom", 0, preset=False))
    agg = _agg([*rope, failed, pruned, unnamed])
    assert [c.name for c in agg.candidates] == ["rope", "L4 custom"]  # preset name, else name
    assert agg.get("rope").n == 2
    assert agg.get("rope").not_complete == {"FAIL: diverged": 1}
    assert [c.name for c in agg.without_complete] == ["nope"]
    assert agg.state_counts == {"COMPLETE": 3, "FAIL": 1, "PRUNED": 1}


def test_aggregate_puts_a_queued_preset_with_its_candidate():
    done = [_complete(_attrs("rope", s)) for s in range(2)]
    queued = create_trial(
        state=TrialState.WAITING, user_attrs={ATTR_PRESET: "rope", ATTR_KNOBS: KNOBS["rope"]}
    )
    agg = _agg([*done, queued])
    assert [c.name for c in agg.candidates] == ["rope"] and not agg.without_complete
    assert agg.get("rope").not_complete == {"WAITING": 1}


def test_aggregate_counts_a_reused_result_and_a_repeated_seed_once():
    first = _complete(_attrs("rope", 0, short_bpb=2.0))
    reused = _complete({**_attrs("rope", 0, short_bpb=2.0), ATTR_REUSED_FROM: 0})
    again = _complete(_attrs("rope", 0, short_bpb=3.0))  # same seed, later trial
    other = _complete(_attrs("rope", 1, short_bpb=2.2))
    agg = _agg([first, reused, again, other])
    rope = agg.get("rope")
    assert rope.n == 2 and rope.spread("short_bpb").values == (2.0, 2.2)
    assert len(agg.warnings) == 2


def test_aggregate_single_run_has_no_spread():
    agg = _agg([_complete(_attrs("rope", 0))])
    s = agg.get("rope").spread("short_bpb")
    assert s.n == 1 and s.mean == 2.5 and math.isnan(s.std) and math.isnan(s.sem)
    assert s.format() == "2.5 (n=1)"


def test_aggregate_skips_nan_scores_and_counts_them():
    a = _attrs("rope", 0)
    b = {**_attrs("rope", 1), "long_acc": None}  # the driver stores NaN as null
    agg = _agg(
        [
            _complete(a),
            create_trial(state=TrialState.COMPLETE, values=[0.0, 2.5, 4e6], user_attrs=b),
        ]
    )
    s = agg.get("rope").spread("long_acc")
    assert s.n == 1 and s.n_missing == 1


def test_aggregate_averages_niah_grids_and_attention_mass():
    t0 = _complete(_attrs("rnope_swa", 0, acc={1: 1.0, 2: 0.8, 4: 0.6}, needle=0.5))
    t1 = _complete(_attrs("rnope_swa", 1, acc={1: 0.8, 2: 0.6, 4: 0.2}, needle=0.3))
    hybrid = _agg([t0, t1]).get("rnope_swa")
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
        a = _attrs("rope", seed, short_bpb=short)
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
        **_attrs("rope", 0, short_bpb=2.2),
        ATTR_REPEATS: 3,
        ATTR_TRIAL_DIR: str(tmp_path),
    }
    trial = _complete(mean_attrs)
    records = seed_records(trial, OBJECTIVES)
    assert [r.seed for r in records] == [0, 1, 2]
    rope = _agg([trial]).get("rope")
    assert rope.n == 3 and rope.spread("short_bpb").std == pytest.approx(0.2)
    # Without the folder the trial is one run, and the report says so.
    lone = _complete({**mean_attrs, ATTR_TRIAL_DIR: str(tmp_path / "gone")})
    agg = _agg([lone])
    assert agg.get("rope").n == 1 and "mean of 3 seeds" in agg.warnings[0]


def test_seed_records_prefer_the_seeds_attribute_so_remote_trial_folders_are_not_needed():
    """On a cluster the trial folder stays on the worker; the study row carries each seed."""
    entries = []
    for seed, short in ((0, 2.0), (1, 2.4)):
        a = _attrs("rope", seed, short_bpb=short)
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
    trial = _complete(
        {
            **_attrs("rope", 0, short_bpb=2.2),
            ATTR_REPEATS: 2,
            ATTR_SEEDS: entries,
            ATTR_TRIAL_DIR: "/nowhere/on/this/machine",
        }
    )
    records = seed_records(trial, OBJECTIVES)
    assert [(r.seed, r.scores["short_bpb"]) for r in records] == [(0, 2.0), (1, 2.4)]
    assert all(r.niah == entries[0]["niah"] and r.attention_mass for r in records)
    agg = _agg([trial])
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


# -- the statistics behind the claims --------------------------------------------------


def test_t_critical_matches_student_t():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 7, 15, 30):
        assert t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-3)
    assert t_critical(2.9) == t_critical(2)  # rounded down: conservative
    assert t_critical(1000) == 1.96


def test_compare_independent_is_welchs_interval():
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.9, 0.8, 1.0, 0.95], [0.1, 0.4, 0.2]
    c = compare_independent(Spread(tuple(a)), Spread(tuple(b)))
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert c.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert c.df == pytest.approx(ref.df)
    assert c.diff / c.se == pytest.approx(ref.statistic)
    assert compare_independent(Spread((1.0,)), Spread(tuple(b))) is None  # n < 2


def test_compare_paired_matches_runs_by_seed():
    a = Spread((0.9, 0.8, 0.7), keys=(0, 1, 2))
    b = Spread((0.1, 0.6), keys=(2, 1))
    c = compare_paired(a, b)
    assert c.paired and c.n_a == 2 and c.diff == pytest.approx(((0.8 - 0.6) + (0.7 - 0.1)) / 2)


def test_decide_supported_contradicted_undecided():
    hi = Spread((0.9, 0.95, 1.0))
    lo = Spread((0.0, 0.05, 0.1))
    noisy = Spread((0.1, 0.9, 0.5))
    assert decide(compare_independent(hi, lo)) is Verdict.SUPPORTED
    assert decide(compare_independent(lo, hi)) is Verdict.CONTRADICTED
    assert decide(compare_independent(noisy, Spread((0.4, 0.6, 0.5)))) is Verdict.UNDECIDED
    assert decide(None) is Verdict.UNDECIDED
    tie = compare_independent(Spread((1.0, 1.0)), Spread((1.0, 1.0)))
    assert decide(tie) is Verdict.UNDECIDED  # identical, no spread: nothing separates them


# -- the claims on hand-made studies ---------------------------------------------------


def _paper_study(*, hybrid_acc, rope_acc, seeds=(0, 1, 2), **overrides):
    """rope / qknorm / nope / rnope_swa with per-seed accuracy rows (one per seed)."""
    trials = []
    for i, s in enumerate(seeds):
        trials.append(
            _complete(
                _attrs(
                    "rope",
                    s,
                    acc=rope_acc[i],
                    extrap={4: overrides.get("rope_bpb4", 3.3) + 0.01 * i},
                    needle=0.1,
                    end=0.6,
                    kv=8.0e6,
                    short_bpb=2.50 + 0.01 * i,
                )
            )
        )
        trials.append(
            _complete(
                _attrs(
                    "rnope_swa",
                    s,
                    acc=hybrid_acc[i],
                    extrap={4: 2.45 + 0.01 * i},
                    kv=2.5e6,
                    short_bpb=overrides.get("hybrid_bpb", 2.45) + 0.01 * i,
                    needle=0.5,
                )
            )
        )
        trials.append(
            _complete(
                _attrs(
                    "nope",
                    s,
                    acc={1: 0.3, 4: 0.25 + 0.02 * i},
                    extrap={4: 3.0 + 0.01 * i},
                    short_bpb=2.9,
                    needle=0.5 + 0.02 * i,
                    end=0.2,
                )
            )
        )
        trials.append(
            _complete(
                _attrs(
                    "qknorm",
                    s,
                    acc=overrides.get("qk_acc", rope_acc)[i],
                    needle=0.05 + 0.01 * i,
                    end=0.3,
                )
            )
        )
    return _agg(trials)


def _findings(agg):
    return {f.key: f for f in check_claims(agg)}


GOOD_HYBRID = [{1: 1.0, 4: 0.95, 8: 0.9}, {1: 1.0, 4: 0.9, 8: 0.85}, {1: 0.95, 4: 1.0, 8: 0.9}]
BAD_ROPE = [{1: 0.9, 4: 0.05, 8: 0.0}, {1: 0.95, 4: 0.0, 8: 0.0}, {1: 0.85, 4: 0.1, 8: 0.05}]


def test_claims_supported_on_a_study_that_reproduces_the_paper():
    worse_qk = [{1: 0.6, 4: 0.0, 8: 0.0}, {1: 0.5, 4: 0.0, 8: 0.0}, {1: 0.7, 4: 0.0, 8: 0.0}]
    f = _findings(_paper_study(hybrid_acc=GOOD_HYBRID, rope_acc=BAD_ROPE, qk_acc=worse_qk))
    for key in (
        "hybrid_beats_rope_long",
        "hybrid_short_competitive",
        "hybrid_less_kv",
        "rope_fails_extrapolation",
        "nope_needle_mass",
        "rope_recency_bias",
        "qknorm_flattens_attention",
        "hybrid_division_of_labour",
    ):
        assert f[key].verdict is Verdict.SUPPORTED, (key, f[key].detail)
    assert "95% CI" in f["hybrid_beats_rope_long"].detail
    assert "n=3" in f["hybrid_beats_rope_long"].detail
    assert len(f) == len(CLAIMS)


FLAT_ROPE = [{1: 1.0, 4: 1.0, 8: 0.95}, {1: 0.95, 4: 0.95, 8: 0.95}, {1: 1.0, 4: 0.95, 8: 1.0}]


def test_claims_contradicted_when_the_data_says_the_opposite():
    # Retrieval roles swapped, the hybrid much worse on short context, RoPE flat past T in
    # accuracy and in loss (2.50 -> 2.51 at 4x).
    agg = _paper_study(hybrid_acc=BAD_ROPE, rope_acc=FLAT_ROPE, hybrid_bpb=2.9, rope_bpb4=2.51)
    f = _findings(agg)
    assert f["hybrid_beats_rope_long"].verdict is Verdict.CONTRADICTED
    assert f["hybrid_short_competitive"].verdict is Verdict.CONTRADICTED
    assert f["rope_fails_extrapolation"].verdict is Verdict.CONTRADICTED
    assert "accuracy" in f["rope_fails_extrapolation"].detail
    # NoPE: never retrieves at T (accuracy not judged), loss 2.9 -> 3.0 (within 5%).
    assert f["nope_degrades_past_T"].verdict is Verdict.CONTRADICTED
    assert "does not retrieve at T" in f["nope_degrades_past_T"].detail


def test_extrapolation_claim_undecided_when_accuracy_and_loss_disagree():
    # Flat accuracy (contradicts) but loss up 2.50 -> 3.30 at 4x (supports): not forced.
    f = _findings(_paper_study(hybrid_acc=GOOD_HYBRID, rope_acc=FLAT_ROPE))
    assert f["rope_fails_extrapolation"].verdict is Verdict.UNDECIDED
    assert "disagree" in f["rope_fails_extrapolation"].detail


def test_claims_undecided_within_noise_with_one_seed_or_without_a_variant():
    noisy_h = [{1: 0.9, 4: 0.9, 8: 0.1}, {1: 0.9, 4: 0.1, 8: 0.9}, {1: 0.9, 4: 0.5, 8: 0.2}]
    noisy_r = [{1: 0.9, 4: 0.6, 8: 0.2}, {1: 0.9, 4: 0.2, 8: 0.7}, {1: 0.9, 4: 0.4, 8: 0.3}]
    f = _findings(_paper_study(hybrid_acc=noisy_h, rope_acc=noisy_r))
    assert f["hybrid_beats_rope_long"].verdict is Verdict.UNDECIDED
    assert "CI" in f["hybrid_beats_rope_long"].detail

    one = _findings(_paper_study(hybrid_acc=GOOD_HYBRID, rope_acc=BAD_ROPE, seeds=(0,)))
    assert one["hybrid_beats_rope_long"].verdict is Verdict.UNDECIDED
    assert "fewer than 2 runs" in one["hybrid_beats_rope_long"].detail
    assert one["hybrid_less_kv"].verdict is Verdict.SUPPORTED  # layout-only: no noise

    only_rope = _agg([_complete(_attrs("rope", s)) for s in range(3)])
    f = _findings(only_rope)
    assert f["hybrid_beats_rope_long"].verdict is Verdict.UNDECIDED
    assert "rnope_swa" in f["hybrid_beats_rope_long"].detail
    assert all(
        x.verdict is Verdict.UNDECIDED for x in f.values() if x.key != "rope_fails_extrapolation"
    )


def test_roles_fall_back_to_knobs_only_when_unambiguous():
    hybrid = [_complete(_attrs("rnope_swa", s, preset=False)) for s in range(2)]
    roles = resolve_roles(_agg(hybrid))
    assert roles["hybrid"].name == "L4 rnope_swa"
    two = hybrid + [
        _complete(
            {
                **_attrs("rnope_swa", s, preset=False),
                ATTR_CANDIDATE_ID: "other",
                ATTR_CANDIDATE_NAME: "L4 other",
            }
        )
        for s in range(2)
    ]
    assert "several candidates" in resolve_roles(_agg(two))["hybrid"]


def test_roles_have_no_stand_in_for_a_variant_whose_runs_all_failed():
    failed = create_trial(
        state=TrialState.FAIL, user_attrs={**_attrs("rnope_swa", 0), ATTR_REASON: "diverged"}
    )
    stand_in = [_complete(_attrs("rnope_swa16", s, preset=False)) for s in range(2)]
    for t in stand_in:
        t.user_attrs[ATTR_KNOBS] = {**KNOBS["rnope_swa"], "local_window": 16}
    roles = resolve_roles(_agg([failed, *stand_in]))
    assert roles["hybrid"] == "variant 'rnope_swa' ran but has no completed run"


def test_findings_serialise_to_json():
    f = check_claims(_paper_study(hybrid_acc=GOOD_HYBRID, rope_acc=BAD_ROPE))
    text = json.dumps([x.to_dict() for x in f], allow_nan=False)
    assert '"verdict": "supported"' in text


# -- the report ------------------------------------------------------------------------


def _tiny_sqlite_study(tmp_path, name="tiny"):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    trials = []
    for s in range(2):
        trials += [
            _complete(_attrs("rope", s, acc=BAD_ROPE[s], kv=8e6)),
            _complete(_attrs("qknorm", s, acc=BAD_ROPE[s], kv=8e6, needle=0.05)),
            _complete(_attrs("nope", s, acc={1: 0.3, 4: 0.3, 8: 0.25}, kv=8e6, short_bpb=2.9)),
            _complete(_attrs("rnope_swa", s, acc=GOOD_HYBRID[s], kv=2.5e6, needle=0.6)),
        ]
    trials.append(
        create_trial(
            state=TrialState.FAIL, user_attrs={**_attrs("rope", 9), ATTR_REASON: "diverged"}
        )
    )
    return _study(trials, url, name), url


def test_report_renders_every_section(tmp_path):
    study, _ = _tiny_sqlite_study(tmp_path)
    paths = build_report(study, tmp_path / "report")
    for name in (
        "report.html",
        "report.md",
        "summary.json",
        "accuracy_vs_length.png",
        "niah_heatmaps.png",
        "attention_mass.png",
        "pareto.png",
        "pareto.csv",
    ):
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name
    page = paths["report.html"].read_text()
    for section in ("variants", "findings", "table", "curves", "niah", "mass", "pareto", "notes"):
        assert f'id="{section}"' in page, section
    # Self-contained: every image inline, no scripts, nothing fetched.
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in page and "http://" not in page and "https://" not in page
    # The variants explained, the table over seeds, the findings, the failed run.
    assert "sliding window" in page and "No positional" in page.replace(
        "no positional", "No positional"
    )
    assert "0.93 ± 0.04" in page  # rope acc@1x over 2 seeds: (0.9, 0.95)
    assert "diverged" in page
    md = paths["report.md"].read_text()
    for heading in (
        "## What the variants are",
        "## Findings",
        "## Per-candidate scores",
        "## Accuracy and loss vs context length",
        "## Needle-in-a-haystack heatmaps",
        "## Attention mass per layer kind",
        "## Pareto front",
    ):
        assert heading in md, heading
    assert "![NIAH heatmaps](niah_heatmaps.png)" in md
    summary = json.loads(paths["summary.json"].read_text())
    assert len(summary["findings"]) == len(CLAIMS)
    assert {c["name"] for c in summary["candidates"]} == {"rope", "qknorm", "nope", "rnope_swa"}
    rnope = next(c for c in summary["candidates"] if c["name"] == "rnope_swa")
    assert rnope["scores"]["acc@1x"]["n"] == 2
    verdicts = {f["key"]: f["verdict"] for f in summary["findings"]}
    assert verdicts["hybrid_beats_rope_long"] == "supported"
    pareto = (tmp_path / "report" / "pareto.csv").read_text()
    assert "rnope_swa" in pareto


def test_report_of_an_empty_study_says_so(tmp_path):
    study = _study([], f"sqlite:///{tmp_path / 'e.db'}", "empty")
    paths = build_report(study, tmp_path / "out")
    page = paths["report.html"].read_text()
    assert "0 candidates with completed runs" in page
    assert json.loads(paths["summary.json"].read_text())["findings"][0]["verdict"] == "undecided"


def test_describe_knobs_reads_without_the_paper():
    assert describe_knobs(KNOBS["rnope_swa"]) == (
        "3 of every 4 layers: RoPE (base 10000) with a 32-token sliding window; "
        "every 4th layer: no positional encoding (NoPE) with full causal attention."
    )
    assert "QK-norm" in describe_knobs(
        {**KNOBS["rnope_swa"], "qk_norm": "pre_rope", "qk_norm_layers": "local"}
    )
    assert describe_knobs(KNOBS["rope"]).startswith("Every layer: RoPE")


def test_cli_report_writes_and_logs_to_the_study_run(tmp_path, monkeypatch, capsys):
    from search.cli import main

    monkeypatch.setenv("ROPENOPE_HOME", str(tmp_path / "runs"))
    _, url = _tiny_sqlite_study(tmp_path, name="cli")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "rep"
    assert main(["report", "cli", "--storage", url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SUPPORTED" in printed and str(out / "report.html") in printed
    assert (out / "report.md").is_file()

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("cli")
    (run,) = client.search_runs([exp.experiment_id])
    names = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/summary.json"} <= names
    # Again: the same parent run, not a second one.
    assert main(["report", "cli", "--storage", url, "--out", str(out)]) == 0
    assert len(client.search_runs([exp.experiment_id])) == 1


def test_cli_report_unknown_study_is_a_user_error(tmp_path, capsys):
    from search.cli import main

    url = f"sqlite:///{tmp_path / 'none.db'}"
    _study([], url, "other")
    assert main(["report", "missing", "--storage", url, "--no-mlflow"]) == 2
    assert "missing" in capsys.readouterr().err
