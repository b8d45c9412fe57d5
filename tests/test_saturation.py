"""Tie groups (at a bound, or inside each other's seed noise) and signal-to-noise per
objective: found among COMPLETE candidates, named with what separates them, and shown by
`ropenope status`, the report and `report --json`."""

from __future__ import annotations

import json
import math

import optuna
from studies import study
from tie_studies import paper_sweep_trials, separated_trials

from search.status import format_summary, summarize, tie_warnings
from space.names import STUDY_ATTR_OBJECTIVES
from space.trial_attrs import ATTR_CANDIDATE_ID, ATTR_REUSED_FROM
from tracking.aggregate import aggregate
from tracking.records import study_records
from tracking.stats import Spread
from tracking.ties import (
    TieGroup,
    graded_alternative,
    separable,
    signal_to_noise,
    tie_groups,
    tie_warning,
)

WINDOWED = {
    "rnope_swa",
    "rnope_swa16",
    "rnope_swa_qk_all",
    "rnope_swa_qk_local",
    "rnope_swa_qk_global",
}


def _candidates(trials):
    s = study(trials)
    read = study_records(s)
    return aggregate(read.records, read.objective_names, read.directions)


def test_tie_groups_flag_the_five_windowed_hybrids_at_one_in_the_paper_sweep():
    agg = _candidates(paper_sweep_trials())
    assert len(agg.candidates) == 10
    groups = tie_groups(agg.objective_names, agg.candidates)
    bound = [g for g in groups if g.kind == "bound"]
    assert len(bound) == 1
    (g,) = bound
    assert g.objective == "long_acc" and g.bound == 1.0 and set(g.members) == WINDOWED
    assert g.candidates == 10
    text = tie_warning(g)
    assert "5 of 10 candidates tie at 1.00 on every seed" in text
    assert "long_answer_nll" in text  # the graded score that would separate them
    # Only the model's own scores may separate them (never the layout or the hardware).
    assert g.separated_by is None or g.separated_by.startswith(("short_bpb", "extrap_bpb"))
    # Inside the rest, rope / rnope / qknorm are within each other's seed noise on long_acc.
    noise = [g for g in groups if g.kind == "noise" and g.objective == "long_acc"]
    assert any({"rope", "rnope"} <= set(n.members) for n in noise)
    assert not any(set(n.members) & WINDOWED for n in noise if len(n.members) > 2)
    # KV cache ties are exact (computed from the layout): never flagged.
    assert not [g for g in groups if g.objective == "kv_cache_bytes"]


def test_tie_groups_stay_silent_on_a_study_without_ties():
    agg = _candidates(separated_trials())
    assert tie_groups(agg.objective_names, agg.candidates) == []
    snr = signal_to_noise("long_acc", agg.candidates)
    assert snr.candidates == 4 and snr.at_bound == 0 and snr.ratio > 10


def test_signal_to_noise_is_the_spread_of_means_over_the_seed_spread():
    class C:
        def __init__(self, name, values):
            self.name, self.scores = name, {"long_acc": Spread(tuple(values))}

    cands = [C("a", [0.1, 0.3]), C("b", [0.5, 0.7]), C("c", [0.9, 0.9])]
    s = signal_to_noise("long_acc", cands)
    means = [0.2, 0.6, 0.9]
    signal = math.sqrt(sum((m - 17 / 30) ** 2 for m in means) / 2)
    noise = math.sqrt((0.02 + 0.02 + 0.0) / 3)  # seed variances 0.02, 0.02, 0
    assert math.isclose(s.signal, signal) and math.isclose(s.noise, noise)
    assert math.isclose(s.ratio, signal / noise)
    assert s.at_bound == 0
    one_seed = signal_to_noise("long_acc", [C("a", [0.2]), C("b", [0.4])])
    assert math.isnan(one_seed.noise) and one_seed.ratio_text() == "-"


def test_separable_uses_the_standard_error_of_the_difference():
    a, b = Spread((0.50, 0.60, 0.70)), Spread((0.80, 0.90, 1.00))
    # d = 0.3, se = sqrt(0.01/3 + 0.01/3) = 0.0816: 0.3 > 2 * 0.0816
    assert separable(a, b, math.nan)
    c = Spread((0.55, 0.75, 0.95))  # d = 0.15 from a, se = sqrt(0.01/3 + 0.04/3) = 0.129
    assert not separable(a, c, math.nan)
    # A single run borrows the pooled noise; without any, only exact equality ties.
    assert not separable(Spread((0.6,)), a, 0.1)
    assert separable(Spread((0.6,)), Spread((0.7,)), math.nan)


def test_tie_warning_words_each_kind():
    low = TieGroup("vartrack/acc@4x", ("a", "b"), "bound", 0.0, 0.0, 0.0, 3, bound=0.0)
    text = tie_warning(low)
    assert "2 of 3 candidates tie at 0.00" in text and "vartrack/answer_nll@4x" in text
    assert "larger training budget" in text
    noisy = TieGroup(
        "short_bpb", ("a", "b", "c"), "noise", 2.21, 2.26, 0.03, 10, separated_by="acc@8x",
        separated_pairs=2,
    )  # fmt: skip
    text = tie_warning(noisy)
    assert (
        "inside each other's seed noise" in text and "acc@8x separates 2 of their 3 pairs" in text
    )
    assert graded_alternative("acc_at_T") == "answer_nll@1x"
    assert graded_alternative("token_acc@8x") == "answer_nll@8x"
    assert graded_alternative("multiquery/long_acc") == "multiquery/long_answer_nll"


def test_status_shows_tie_groups_and_signal_to_noise_of_the_paper_sweep():
    s = study(paper_sweep_trials())
    summary = summarize(s, target=10)
    ties = [w for w in summary["warnings"] if "tie at 1.00" in w]
    assert len(ties) == 1 and "5 of 10" in ties[0]
    by_objective = {r["objective"]: r for r in summary["signal_to_noise"]}
    assert by_objective["long_acc"]["at_bound"] == 5 and by_objective["long_acc"]["ratio"] > 0
    text = format_summary(summary)
    assert "signal-to-noise" in text and "5 of 10 at a bound" in text
    assert "warning: objective long_acc is saturated" in text
    quiet = summarize(study(separated_trials(), name="quiet"), target=12)
    assert quiet["warnings"] == []


def _study(values: list[tuple[list[float], dict]]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(directions=["maximize", "minimize"])
    s.set_user_attr(STUDY_ATTR_OBJECTIVES, ["long_acc", "short_bpb"])
    for vals, attrs in values:
        trial = s.ask()
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        s.tell(trial, vals)
    return s


def test_status_counts_a_reused_twin_once():
    s = _study(
        [
            ([1.0, 2.2], {ATTR_CANDIDATE_ID: "a"}),
            ([1.0, 2.5], {ATTR_CANDIDATE_ID: "b"}),
            ([1.0, 2.5], {ATTR_CANDIDATE_ID: "b", ATTR_REUSED_FROM: 1}),  # a twin
        ]
    )
    (warning,) = tie_warnings(s.get_trials(), ["long_acc", "short_bpb"])
    assert "2 of 2 candidates tie at 1.00" in warning  # the twin is not a candidate
    # A third candidate off the bound does not lift it (the old rule needed every one at 1).
    s.tell(s.ask(), [0.5, 2.0])
    (warning,) = tie_warnings(s.get_trials(), ["long_acc", "short_bpb"])
    assert "2 of 3 candidates tie at 1.00 on every seed (a, b)" in warning


def test_report_json_carries_signal_to_noise_and_the_tie_warning(tmp_path):
    from tracking.report import build_report

    paths = build_report(study(paper_sweep_trials()), tmp_path)
    data = json.loads(paths["summary.json"].read_text())
    by_objective = {r["objective"]: r for r in data["signal_to_noise"]}
    assert set(by_objective) == {"long_acc", "short_bpb", "kv_cache_bytes"}
    assert by_objective["long_acc"]["at_bound"] == 5
    assert any("5 of 10 candidates tie at 1.00" in w for w in data["warnings"])
    (bound,) = [g for g in data["tie_groups"] if g["kind"] == "bound"]
    assert set(bound["members"]) == WINDOWED and bound["graded_alternative"] == "long_answer_nll"
    md = paths["report.md"].read_text()
    assert "Signal and noise per objective" in md
