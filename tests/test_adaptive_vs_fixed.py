"""bench/adaptive_vs_fixed.py: the runs an adaptive study had spent by a look, and which of
the fixed study's verdicts it reached (issue 20's target), on hand-made judgements."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from adaptive_vs_fixed import Judged, compare, runs_by_look  # noqa: E402

from tracking.stats import Verdict  # noqa: E402

S, C, U, INV = Verdict.SUPPORTED, Verdict.CONTRADICTED, Verdict.UNDECIDED, Verdict.INVALID

# Four claim candidates with min 3 seeds, two ablations with 1; then one round gave two
# of the claim candidates a 4th seed and one of them a 5th.
OFFSETS = [0, 1, 2] * 4 + [0, 0] + [3, 3] + [4]


def test_runs_by_look_counts_the_seeds_each_round_had_given():
    assert runs_by_look(OFFSETS, 3, 1) == 14  # the first round: 4 x 3 + 2 x 1
    assert runs_by_look(OFFSETS, 3, 2) == 16
    assert runs_by_look(OFFSETS, 3, 3) == 17
    assert runs_by_look(OFFSETS, 2, 1) == 4 * 2 + 2  # with min 2, look 1 sees seeds 0, 1


def test_compare_reaches_every_fixed_verdict_at_the_last_deciding_look():
    fixed = {"a": Judged(S, S), "b": Judged(INV, INV), "c": Judged(U, U), "d": Judged(C, U)}
    adaptive = {
        "a": Judged(S, S, look=1, seeds=3),
        "b": Judged(INV, INV, look=1, seeds=3),
        "c": Judged(S, U, look=3, seeds=5),  # decided only by the adaptive study
        "d": Judged(C, C, look=2, seeds=4),
    }
    r = compare(fixed, adaptive, OFFSETS, 3, fixed_runs=30)
    assert r.reached == ("a", "b", "d") and r.differ == () and r.extra == ("c",)
    # The last fixed verdict ("d") came at look 2: 16 runs, 16 / 30 of the fixed runs.
    assert (r.last_look, r.runs_then) == (2, 16)
    assert abs(r.share - 16 / 30) < 1e-12 and r.target_met


def test_compare_misses_the_target_on_a_different_verdict_or_too_many_runs():
    fixed = {"a": Judged(S, S), "b": Judged(S, S)}
    other = {"a": Judged(S, S, look=1, seeds=3), "b": Judged(U, U, look=3, seeds=5)}
    r = compare(fixed, other, OFFSETS, 3, fixed_runs=30)
    assert r.reached == ("a",) and r.differ == ("b",) and not r.target_met
    late = {"a": Judged(S, S, look=1, seeds=3), "b": Judged(S, S, look=3, seeds=5)}
    r = compare(fixed, late, OFFSETS, 3, fixed_runs=20)
    assert r.runs_then == 17 and r.share == 17 / 20 and not r.target_met  # 85% > 60%
    nothing = compare(fixed, {}, OFFSETS, 3, fixed_runs=20)
    assert nothing.share is None and nothing.differ == ("a", "b") and not nothing.target_met
