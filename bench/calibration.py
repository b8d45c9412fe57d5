"""Calibrate the verdicts on known truths: replay the exact decision procedure on disjoint
seed splits of a seed bank (a study with many seeds of a few candidates).

    python bench/calibration.py --storage sqlite:///runs/optuna.db --study seed-bank
    python bench/calibration.py ... --splits 200 --effect rnope_swa:rope
    python bench/calibration.py ... --also seed-bank-700:@700 \
        --effect rnope_swa:rope --effect rope:rope@700:short_bpb:less

The seed bank is a study in which each candidate was trained with many seeds (at least
12 each of ``rope`` and ``rnope_swa`` at the demo budget; see the README for the command
that builds it). For each split, a candidate's seeds are shuffled and dealt into
disjoint sets, one per side, and relabelled 0, 1, ... so the sides pair by position; the
hypothesis is then judged exactly as a study would judge it
(:func:`tracking.hypotheses.evaluate_hypothesis`), either on ``--fixed`` seeds at one
look or with adaptive seeds (``{min, max}``: :func:`tracking.seed_plan.plan_seeds`,
revealing the next seeds of the split as the planner asks for them).

- A/A: a candidate against itself (disjoint seeds) on each quantity: any verdict is
  wrong; the stated rate is at most 1 - confidence (0.05).
- a known effect (``--effect A:B``, e.g. rnope_swa vs rope on long_acc): the share
  supported at the first look (fixed) and at any look (adaptive), and contradicted.
- a known graded effect across two banks (``--also STUDY:SUFFIX`` adds that study's
  candidates with the suffix, e.g. ``rope@700`` from ``configs/seed_bank_700.yaml``; then
  ``--effect rope:rope@700:short_bpb:less``: 1000 steps give a lower short_bpb than 700).

Prints a Markdown table; nothing is asserted here (tests/test_calibration.py checks the
procedure on a small hand-made bank).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from space.hypothesis_files import parse_hypotheses  # noqa: E402
from tracking.aggregate import aggregate  # noqa: E402
from tracking.hypotheses import evaluate_hypothesis  # noqa: E402
from tracking.records import TrialRecord  # noqa: E402
from tracking.seed_plan import plan_seeds  # noqa: E402
from tracking.stats import Verdict  # noqa: E402

AA_QUANTITIES: tuple[object, ...] = (
    "long_acc",
    "acc@1x",
    "short_bpb",
    {"mass": "needle", "at": "1x"},
    {"mass": "end", "at": "1x"},
)


@dataclass(frozen=True)
class Row:
    label: str
    procedure: str
    splits: int
    supported: float
    contradicted: float
    undecided: float
    invalid: float
    runs: float  # mean runs per split (both sides)


def bank_runs(records: Sequence[TrialRecord]) -> dict[str, list[TrialRecord]]:
    """The completed runs of each candidate (by preset, else name), one per seed."""
    out: dict[str, dict[int, TrialRecord]] = {}
    for r in records:
        if r.state != "COMPLETE" or r.seed is None:
            continue
        name = r.preset or r.candidate_name or r.candidate_id
        out.setdefault(name, {})[r.seed] = r
    return {k: [v[s] for s in sorted(v)] for k, v in out.items()}


def merge_banks(
    bank: dict[str, list[TrialRecord]], other: dict[str, list[TrialRecord]], suffix: str
) -> dict[str, list[TrialRecord]]:
    """``bank`` plus ``other``'s candidates renamed ``name + suffix``; a name that is
    already in ``bank`` is an error rather than a silent overwrite."""
    out = dict(bank)
    for name, runs in other.items():
        key = f"{name}{suffix}"
        if key in out:
            raise ValueError(f"candidate {key!r} is in both banks; give --also another suffix")
        out[key] = runs
    return out


def _relabel(runs: Sequence[TrialRecord], side: str) -> list[TrialRecord]:
    return [
        replace(r, number=i, candidate_id=side, candidate_name=side, preset=side, seed=i)
        for i, r in enumerate(runs)
    ]


def claim(
    quantity: object, direction: str = "greater", test: str = "welch", gate: bool | None = None
):
    """The one-measure hypothesis "A vs B"; ``gate`` None is the default competence gate
    (on for scores beyond T), False turns it off, as ``gate: false`` in a hypothesis file."""
    spec = {
        "name": "calibration",
        "statement": "A vs B on disjoint seeds.",
        "a": {"preset": "A"},
        "b": {"preset": "B"},
        "quantity": quantity,
        "direction": direction,
        "test": test,
    }
    if gate is not None:
        spec["gate"] = gate
    (h,) = parse_hypotheses([spec])
    return h


def gated(h) -> bool:
    """Whether the hypothesis's measure applies a competence gate."""
    return any(m.effective_gate() is not None for m in h.measures)


def replay(
    h, side_a: Sequence[TrialRecord], side_b: Sequence[TrialRecord], procedure: tuple[int, int]
) -> tuple[Verdict, int]:
    """One split judged by the procedure ``(min, max)`` seeds: fixed when equal (one
    look on ``min`` seeds), adaptive otherwise. Returns the verdict and the runs used."""
    lo, hi = procedure
    deck = {"A": _relabel(side_a[:hi], "A"), "B": _relabel(side_b[:hi], "B")}
    shown = {"A": lo, "B": lo}
    if lo == hi:
        records = deck["A"][:lo] + deck["B"][:lo]
        f = evaluate_hypothesis(h, aggregate(records), lambda c: None)
        return f.verdict, 2 * lo
    while True:
        records = deck["A"][: shown["A"]] + deck["B"][: shown["B"]]
        plan = plan_seeds([h], records, lambda c: None, repeats_min=lo, repeats_max=hi)
        if not plan.requests:
            return plan.hypotheses[0].verdict, shown["A"] + shown["B"]
        for r in plan.requests:
            shown[r.name] = max(shown[r.name], max(r.seeds) + 1)


def splits(
    bank: dict[str, list[TrialRecord]], a: str, b: str, n: int, count: int, seed: int
) -> list[tuple[list[TrialRecord], list[TrialRecord]]]:
    """``count`` splits of ``n`` seeds a side; for A/A (``a == b``) the two sides are
    disjoint seeds of the one candidate."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        if a == b:
            order = rng.permutation(len(bank[a]))
            out.append(([bank[a][i] for i in order[:n]], [bank[a][i] for i in order[n : 2 * n]]))
        else:
            ia, ib = rng.permutation(len(bank[a]))[:n], rng.permutation(len(bank[b]))[:n]
            out.append(([bank[a][i] for i in ia], [bank[b][i] for i in ib]))
    return out


def row(
    label: str,
    h,
    pairs: Sequence[tuple[list[TrialRecord], list[TrialRecord]]],
    procedure: tuple[int, int],
) -> Row:
    verdicts, runs = [], []
    for side_a, side_b in pairs:
        v, n = replay(h, side_a, side_b, procedure)
        verdicts.append(v)
        runs.append(n)
    total = len(verdicts)
    share: Callable[[Verdict], float] = lambda v: verdicts.count(v) / total  # noqa: E731
    lo, hi = procedure
    name = f"fixed {lo}" if lo == hi else f"adaptive {{min: {lo}, max: {hi}}}"
    return Row(
        label, name, total, share(Verdict.SUPPORTED), share(Verdict.CONTRADICTED),
        share(Verdict.UNDECIDED), share(Verdict.INVALID), float(np.mean(runs)),
    )  # fmt: skip


def calibrate(
    bank: dict[str, list[TrialRecord]],
    *,
    same: Sequence[str],
    effects: Sequence[tuple[str, str, object, str]],
    count: int,
    procedures: Sequence[tuple[int, int]] = ((3, 3), (3, 5)),
    quantities: Sequence[object] = AA_QUANTITIES,
    seed: int = 0,
) -> list[Row]:
    """A/A rows for each candidate in ``same`` and quantity, and a row per known effect
    ``(a, b, quantity, direction)``, under each procedure."""
    rows = []
    for procedure in procedures:
        n = procedure[1]
        for name in same:
            if len(bank.get(name, ())) < 2 * n:
                raise ValueError(f"A/A needs {2 * n} seeds of {name}, the bank has "
                                 f"{len(bank.get(name, ()))}")  # fmt: skip
            pairs = splits(bank, name, name, n, count, seed)
            for q in quantities:
                label = f"A/A {name} {_describe(q)}"
                rows.extend(_rows(label, q, "greater", pairs, procedure))
        for a, b, q, direction in effects:
            pairs = splits(bank, a, b, n, count, seed)
            label = f"effect {a} vs {b} {_describe(q)} ({direction})"
            rows.extend(_rows(label, q, direction, pairs, procedure))
    return rows


def _rows(label: str, q: object, direction: str, pairs, procedure: tuple[int, int]) -> list[Row]:
    """The row of the claim as a study judges it; for a gated quantity a second row with
    the gate off, so the decision rule and the gate are calibrated apart."""
    h = claim(q, direction)
    out = [row(label + (" [gate on]" if gated(h) else ""), h, pairs, procedure)]
    if gated(h):
        out.append(row(label + " [gate off]", claim(q, direction, gate=False), pairs, procedure))
    return out


def _describe(q: object) -> str:
    if isinstance(q, dict):
        return f"{q['mass']} mass at {q['at']}"
    return str(q)


def format_rows(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| row | procedure | splits | supported | contradicted | undecided | invalid | runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.procedure} | {r.splits} | {r.supported:.3f} | "
            f"{r.contradicted:.3f} | {r.undecided:.3f} | {r.invalid:.3f} | {r.runs:.1f} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", required=True, help="Optuna storage URL of the seed bank")
    p.add_argument("--study", required=True, help="the seed bank's study name")
    p.add_argument("--splits", type=int, default=200)
    p.add_argument("--same", default="rope,rnope_swa", help="candidates for the A/A rows")
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="STUDY:SUFFIX",
        help="a second bank in the same storage whose candidates get SUFFIX (e.g. seed-bank-700:@700)",
    )
    p.add_argument(
        "--effect",
        action="append",
        default=[],
        help="A:B[:quantity[:direction]] a known effect (default rnope_swa:rope:long_acc)",
    )
    args = p.parse_args(argv)
    import optuna  # the bench reads a study; tracking stays free of it

    from tracking.records import study_records

    study = optuna.load_study(study_name=args.study, storage=args.storage)
    bank = bank_runs(study_records(study).records)
    for spec in args.also:
        name, sep, suffix = spec.partition(":")
        if not sep or not suffix:
            p.error(f"--also {spec!r}: expected STUDY:SUFFIX, e.g. seed-bank-700:@700")
        other = optuna.load_study(study_name=name, storage=args.storage)
        bank = merge_banks(bank, bank_runs(study_records(other).records), suffix)
    effects = []
    for spec in args.effect or ["rnope_swa:rope:long_acc:greater"]:
        parts = spec.split(":")
        a, b = parts[0], parts[1]
        q = parts[2] if len(parts) > 2 else "long_acc"
        effects.append((a, b, q, parts[3] if len(parts) > 3 else "greater"))
    sizes = ", ".join(f"{k} {len(v)}" for k, v in bank.items())
    print(f"seed bank {args.study}: seeds per candidate: {sizes}; {args.splits} splits\n")
    started = time.perf_counter()
    same = [s for s in args.same.split(",") if s]
    rows = calibrate(bank, same=same, effects=effects, count=args.splits)
    print("\n".join(format_rows(rows)))
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
