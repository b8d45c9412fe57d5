"""bench/calibration.py: the decision procedure replayed on disjoint seed splits of a
seed bank, here a small hand-made one (10 seeds each of rope and rnope_swa, numpy
draws with known truths); the real bank is a trained study (README)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tracking.records import TrialRecord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from calibration import bank_runs, calibrate, claim, format_rows, merge_banks, replay  # noqa: E402


def _bank(seeds: int = 10, truth: dict | None = None, rng_seed: int = 3) -> list[TrialRecord]:
    rng = np.random.default_rng(rng_seed)
    out = []
    truth = truth or {"rope": (0.10, 2.50), "rnope_swa": (0.95, 2.45)}  # long_acc, short_bpb
    for name, (long_acc, short) in truth.items():
        for s in range(seeds):
            scores = {
                "long_acc": float(np.clip(long_acc + rng.normal(0, 0.04), 0, 1)),
                "acc@1x": float(np.clip(0.97 + rng.normal(0, 0.02), 0, 1)),
                "short_bpb": short + float(rng.normal(0, 0.03)),
            }
            out.append(
                TrialRecord(
                    number=len(out),
                    state="COMPLETE",
                    candidate_id=f"id-{name}",
                    candidate_name=name,
                    preset=name,
                    seed=s,
                    knobs={},
                    scores=scores,
                    niah=None,
                    attention_mass=None,
                    reason=None,
                )  # fmt: skip
            )
    failed = TrialRecord(
        number=len(out), state="FAIL", candidate_id="id-rope", candidate_name="rope",
        preset="rope", seed=99, knobs={}, scores={}, niah=None, attention_mass=None,
        reason="diverged",
    )  # fmt: skip
    return [*out, failed]


def test_bank_runs_keeps_completed_seeds_per_candidate():
    bank = bank_runs(_bank())
    assert sorted(bank) == ["rnope_swa", "rope"]
    assert [r.seed for r in bank["rope"]] == list(range(10))  # the failed seed 99 is out


def test_replay_relabels_disjoint_seeds_and_runs_the_study_procedure():
    bank = bank_runs(_bank())
    h = claim("long_acc")
    a, b = bank["rnope_swa"][:5], bank["rope"][5:]
    # A known large effect: supported at the first look, fixed or adaptive.
    verdict, runs = replay(h, a, b, (3, 3))
    assert verdict.value == "supported" and runs == 6
    verdict, runs = replay(h, a, b, (3, 5))
    assert verdict.value == "supported" and runs == 6
    verdict, runs = replay(claim("long_acc", "less"), a, b, (3, 3))
    assert verdict.value == "contradicted" and runs == 6


def test_calibrate_on_a_hand_made_bank_gives_the_known_truths():
    bank = bank_runs(_bank())
    rows = calibrate(
        bank,
        same=["rope"],
        effects=[("rnope_swa", "rope", "long_acc", "greater")],
        count=40,
        quantities=("short_bpb", "long_acc"),
    )
    by = {(r.label, r.procedure): r for r in rows}
    for procedure in ("fixed 3", "adaptive {min: 3, max: 5}"):
        for gate in ("on", "off"):  # every seed here learns the task: the gate changes nothing
            effect = by[(f"effect rnope_swa vs rope long_acc (greater) [gate {gate}]", procedure)]
            assert effect.supported == 1.0 and effect.runs == 6.0  # decided at the first look
        for q in ("short_bpb", "long_acc [gate on]", "long_acc [gate off]"):
            aa = by[(f"A/A rope {q}", procedure)]
            assert aa.splits == 40 and aa.supported + aa.contradicted <= 0.1
            assert aa.supported + aa.contradicted + aa.undecided + aa.invalid == 1.0
    adaptive = by[("A/A rope short_bpb", "adaptive {min: 3, max: 5}")]
    assert 6.0 <= adaptive.runs <= 10.0
    assert format_rows(rows)[0].startswith("| row | procedure | splits |")


def test_a_second_bank_joins_with_a_suffix_and_its_graded_effect_is_found():
    # A second study of rope trained shorter (higher short_bpb by 0.15, seed sd 0.03):
    # its candidates join as rope@700, and "rope < rope@700 on short_bpb" is the
    # known graded effect of the calibration table.
    bank = bank_runs(_bank())
    short = bank_runs(_bank(truth={"rope": (0.10, 2.65)}, rng_seed=5))
    merged = merge_banks(bank, short, "@700")
    assert sorted(merged) == ["rnope_swa", "rope", "rope@700"]
    assert merged["rope@700"] is short["rope"] and merged["rope"] is bank["rope"]
    rows = calibrate(
        merged,
        same=[],
        effects=[("rope", "rope@700", "short_bpb", "less")],
        count=40,
    )
    for r in rows:
        assert r.supported >= 0.8 and r.contradicted == 0.0, r
    try:
        merge_banks(bank, short, "")
    except ValueError as e:
        assert "'rope' is in both banks" in str(e)
    else:
        raise AssertionError("a suffix that collides must be refused")


def test_a_baseline_that_learns_the_task_on_half_its_seeds_makes_the_effect_invalid():
    # The shape of the real seed bank at the demo budget: rope reaches acc@1x >= 0.9 on
    # half its seeds. With the default gate (0.9 on at least 75% of a side's seeds) a
    # 3-seed side is competent only when all three pass: C(5,3)/C(10,3) = 1/12 of the
    # splits; the others are invalid ("raise the budget"), never contradicted. With the
    # gate off the same splits support the effect.
    records = _bank()
    for r in records:
        if r.preset == "rope" and r.seed is not None and r.seed % 2:
            r.scores["acc@1x"] = 0.5
    bank = bank_runs(records)
    rows = calibrate(
        bank,
        same=[],
        effects=[("rnope_swa", "rope", "long_acc", "greater")],
        count=400,
        procedures=((3, 3),),
    )
    by = {r.label: r for r in rows}
    on = by["effect rnope_swa vs rope long_acc (greater) [gate on]"]
    off = by["effect rnope_swa vs rope long_acc (greater) [gate off]"]
    assert on.contradicted == 0.0 and abs(on.supported - 1 / 12) < 0.04
    assert abs(on.invalid + on.supported - 1.0) < 1e-12
    assert off.supported == 1.0
