"""The statistics behind every verdict (tracking/stats.py), against scipy where it has
the same thing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracking.stats import (
    ErrorBudget,
    Spread,
    Verdict,
    compare_exact,
    compare_independent,
    compare_paired,
    decide,
    kendall_tau,
    p_two_sided,
    proportion_floor,
    t_critical,
)

stats = pytest.importorskip("scipy.stats")


def test_t_critical_matches_student_t_at_fractional_df():
    for df in (1, 2, 3, 4, 7, 15, 30, 1000):
        assert t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-12)
    # Welch's degrees of freedom are used as they are, not rounded down.
    assert t_critical(2.9) == pytest.approx(stats.t.ppf(0.975, 2.9)) and t_critical(
        2.9
    ) < t_critical(2)
    assert t_critical(2, alpha=0.05 / 7) == pytest.approx(stats.t.ppf(1 - 0.05 / 14, 2))


def test_p_two_sided_is_the_level_at_which_the_interval_touches_the_margin():
    a, b = Spread((0.9, 0.8, 1.0, 0.95)), Spread((0.1, 0.4, 0.2))
    for margin in (0.0, 0.5, 0.6):
        p = p_two_sided(compare_independent(a, b), margin)
        c = compare_independent(a, b, alpha=p)
        assert min(abs(c.low - margin), abs(c.high - margin)) == pytest.approx(0, abs=1e-9)
    ref = stats.ttest_ind([0.9, 0.8, 1.0, 0.95], [0.1, 0.4, 0.2], equal_var=False)
    assert p_two_sided(compare_independent(a, b)) == pytest.approx(ref.pvalue)


def test_compare_independent_is_welchs_interval():
    a, b = [0.9, 0.8, 1.0, 0.95], [0.1, 0.4, 0.2]
    c = compare_independent(Spread(tuple(a)), Spread(tuple(b)))
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert c.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert c.df == pytest.approx(ref.df)
    assert c.diff / c.se == pytest.approx(ref.statistic)
    assert c.high - c.diff == pytest.approx(stats.t.ppf(0.975, ref.df) * c.se)
    assert compare_independent(Spread((1.0,)), Spread(tuple(b))) is None  # n < 2
    wider = compare_independent(Spread(tuple(a)), Spread(tuple(b)), alpha=0.01)
    assert wider.low < c.low and wider.high > c.high


def test_compare_paired_matches_runs_by_seed():
    a = Spread((0.9, 0.8, 0.7), keys=(0, 1, 2))
    b = Spread((0.1, 0.6), keys=(2, 1))
    c = compare_paired(a, b)
    assert c.paired and c.n_a == 2 and c.diff == pytest.approx(((0.8 - 0.6) + (0.7 - 0.1)) / 2)
    ref = stats.ttest_rel([0.8, 0.7], [0.6, 0.1])
    assert c.diff / c.se == pytest.approx(ref.statistic)


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
    # The margin moves the threshold: +0.85 clears 0.5 but not 0.95.
    c = compare_independent(hi, lo)
    assert decide(c, 0.5) is Verdict.SUPPORTED and decide(c, 1.5) is Verdict.CONTRADICTED


def test_compare_exact_decides_layout_scores_from_one_run():
    c = compare_exact(Spread((64.0,)), Spread((256.0,)))
    assert c.kind == "exact" and c.diff == -192.0 and c.low == c.high == -192.0
    assert decide(c.flipped(), 128.0) is Verdict.SUPPORTED  # 256 - 64 >= 128: at most half
    assert decide(c.flipped(), 192.0) is Verdict.SUPPORTED  # the boundary counts
    assert decide(c.flipped(), 200.0) is Verdict.CONTRADICTED
    assert compare_exact(Spread(()), Spread((1.0,))) is None


def test_error_budget_splits_alpha_over_looks_and_many_measures():
    assert ErrorBudget().per_test() == pytest.approx(0.05)
    assert ErrorBudget(0.95, looks=7).per_test() == pytest.approx(0.05 / 7)
    # Two measures ("one shows it, none shows the opposite") keep the full level: a wrong
    # verdict needs a wrong tail of one of them, each tail holds half of the level.
    assert ErrorBudget(0.95, looks=1).per_test(measures=2) == pytest.approx(0.05)
    assert ErrorBudget(0.95, looks=2).per_test(measures=4) == pytest.approx(0.05 / 2 / 2)
    with pytest.raises(ValueError):
        ErrorBudget(0.95, looks=0)


def test_kendall_tau_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 4, size=7).astype(float)
        y = rng.integers(0, 4, size=7).astype(float)
        ref = stats.kendalltau(x, y).statistic
        got = kendall_tau(list(x), list(y))
        assert (math.isnan(got) and math.isnan(ref)) or got == pytest.approx(ref)
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_spread_only_keeps_the_runs_asked_for():
    s = Spread((1.0, 2.0, 3.0), keys=(0, 1, 2))
    assert s.only([2, 0]).values == (1.0, 3.0) and s.only([2, 0]).keys == (0, 2)


def test_zero_spread_decides_nothing_and_the_item_floor_keeps_ties_undecided():
    # 2 seeds a side, accuracy over 100 items: (1.00, 1.00) vs (0.99, 0.99) from equal
    # truths. Without a floor the interval has zero width: no decision from it.
    top, below = Spread((1.0, 1.0)), Spread((0.99, 0.99))
    c = compare_independent(top, below)
    assert c.se == 0 and decide(c) is Verdict.UNDECIDED
    assert decide(compare_paired(Spread((1.0, 1.0), (0, 1)), Spread((0.99, 0.99), (0, 1)))) is (
        Verdict.UNDECIDED
    )
    # With the item-level floor (binomial, 100 items) the interval is wide enough.
    floored = [s.with_floor(proportion_floor(s.mean, 100)) for s in (top, below)]
    c = compare_independent(*floored)
    assert c.se > 0 and c.low < 0 < c.high and decide(c) is Verdict.UNDECIDED
    assert proportion_floor(1.0, 100) == pytest.approx((102 / 104) * (2 / 104) / 100)


def test_item_floor_holds_the_error_rate_of_discrete_scores_with_two_seeds():
    # Equal true accuracy 0.99, 100 items, 2 seeds a side: without a floor such pairs
    # are decided from zero-width intervals; with it, at most alpha of them are decided.
    rng = np.random.default_rng(7)
    wrong = 0
    studies = 4000
    for _ in range(studies):
        a, b = (Spread(tuple(rng.binomial(100, 0.99, size=2) / 100)) for _ in range(2))
        a, b = (s.with_floor(proportion_floor(s.mean, 100)) for s in (a, b))
        wrong += decide(compare_independent(a, b)) is not Verdict.UNDECIDED
    assert wrong / studies <= 0.05


def test_spread_scaled_scales_values_and_floor():
    s = Spread((1.0, 2.0), (0, 1), var_floor=0.5).scaled(2.0)
    assert s.values == (2.0, 4.0) and s.var_floor == 2.0 and s.keys == (0, 1)
