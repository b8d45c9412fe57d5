"""The adaptive paper sweep against the fixed one: does the adaptive study reach every
verdict of the fixed study, and with what share of its runs (issue 20's target: at most
60%)?

    ropenope submit configs/paper.yaml && ropenope submit configs/paper_adaptive.yaml
    python bench/adaptive_vs_fixed.py --storage sqlite:///runs/optuna.db \
        --fixed paper --adaptive paper-adaptive

Both studies are judged exactly as ``ropenope report`` judges them
(:func:`tracking.report.judge`, each with the sweep file stored in its study): the fixed
one on all its runs, the adaptive one at the look that decided each hypothesis (or its
last), each with Holm's correction across the family. A verdict here is supported,
contradicted or invalid; undecided is none.

Runs by look: the adaptive study's first round trains every candidate's first seeds
(``min``, or ``others``), and each later round the next seed of the candidates of still
undecided hypotheses; so the runs spent by the end of look L are the COMPLETE runs whose
seed is below ``train.seed + min + L - 1``. The adaptive study reached the fixed study's
verdicts at the latest look at which one of them was decided; the share is its runs then
over the fixed study's runs. Wall time: first trial start to last trial end of each
study (a resumed study counts its pause).

Prints Markdown; nothing is asserted here (tests/test_adaptive_vs_fixed.py checks the
counting on hand-made records).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracking.stats import Verdict  # noqa: E402

TARGET_SHARE = 0.6  # issue 20: every fixed verdict with at most 60% of the fixed runs


@dataclass(frozen=True)
class Judged:
    """One hypothesis as one study judged it: its verdict, Holm's verdict, and (adaptive)
    the look that decided it and the seeds per candidate then."""

    verdict: Verdict
    holm: Verdict
    look: int | None = None
    seeds: int | None = None


def runs_by_look(seed_offsets: Sequence[int], repeats_min: int, look: int) -> int:
    """The runs an adaptive study had spent by the end of ``look``: those whose seed
    offset (seed - train.seed) is below ``repeats_min + look - 1``."""
    return sum(1 for s in seed_offsets if s < repeats_min + look - 1)


def decided(v: Verdict) -> bool:
    return v is not Verdict.UNDECIDED


@dataclass(frozen=True)
class Comparison:
    reached: tuple[str, ...]  # fixed verdicts the adaptive study reached, equal
    differ: tuple[str, ...]  # fixed verdicts it reached otherwise or not at all
    extra: tuple[str, ...]  # adaptive verdicts where the fixed study has none
    last_look: int | None  # the look that reached the last of ``reached``
    runs_then: int | None
    share: float | None  # runs_then / fixed runs

    @property
    def target_met(self) -> bool:
        return not self.differ and self.share is not None and self.share <= TARGET_SHARE


def compare(
    fixed: Mapping[str, Judged],
    adaptive: Mapping[str, Judged],
    adaptive_seed_offsets: Sequence[int],
    repeats_min: int,
    fixed_runs: int,
) -> Comparison:
    """Which of the fixed study's verdicts the adaptive study reached, and at what cost."""
    reached, differ, extra, looks = [], [], [], []
    for name, f in fixed.items():
        a = adaptive.get(name)
        if decided(f.verdict):
            if a is not None and a.verdict is f.verdict:
                reached.append(name)
                looks.append(a.look or 1)
            else:
                differ.append(name)
        elif a is not None and decided(a.verdict):
            extra.append(name)
    if not reached:
        return Comparison((), tuple(differ), tuple(extra), None, None, None)
    last = max(looks)
    runs = runs_by_look(adaptive_seed_offsets, repeats_min, last)
    return Comparison(
        tuple(reached), tuple(differ), tuple(extra), last, runs, runs / max(fixed_runs, 1)
    )


def _judge_study(storage: str, name: str):  # noqa: ANN202
    import optuna

    from search.signature import stored_config
    from tracking.aggregate import aggregate
    from tracking.decision_plan import decision_plan
    from tracking.records import study_records
    from tracking.report import judge

    study = optuna.load_study(study_name=name, storage=storage)
    config = stored_config(study)
    read = study_records(study)
    agg = aggregate(read.records, read.objective_names, read.directions)
    findings, _, plan = judge(agg, config, study.user_attrs)
    states = {h.name: h for h in plan.hypotheses} if plan is not None else {}
    judged = {}
    for f in findings:
        s = states.get(f.key)
        judged[f.key] = Judged(
            f.verdict,
            f.family_verdict if f.family_verdict is not None else f.verdict,
            s.look if s is not None else None,
            s.seeds_per_candidate if s is not None else None,
        )
    complete = [r for r in read.records if r.state == "COMPLETE"]
    offsets = [r.seed - config.train.seed for r in complete if r.seed is not None]
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    decisions = decision_plan(study.user_attrs, config)  # the looks planned at creation
    repeats_min = decisions.repeats_min if decisions is not None and decisions.adaptive else None
    return repeats_min, judged, offsets, wall


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", default="sqlite:///runs/optuna.db")
    p.add_argument("--fixed", default="paper")
    p.add_argument("--adaptive", default="paper-adaptive")
    args = p.parse_args(argv)
    _, fixed, fixed_offsets, fixed_wall = _judge_study(args.storage, args.fixed)
    repeats_min, adaptive, offsets, adaptive_wall = _judge_study(args.storage, args.adaptive)
    if repeats_min is None:
        raise SystemExit(f"study {args.adaptive!r} does not use adaptive seeds")
    result = compare(fixed, adaptive, offsets, repeats_min, len(fixed_offsets))

    print(f"| hypothesis | {args.fixed} | Holm | {args.adaptive} | Holm | look | seeds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in [*fixed, *(k for k in adaptive if k not in fixed)]:
        f, a = fixed.get(name), adaptive.get(name)
        cells = [
            name,
            f.verdict.value if f else "-",
            f.holm.value if f else "-",
            a.verdict.value if a else "-",
            a.holm.value if a else "-",
            str(a.look) if a and a.look is not None else "-",
            str(a.seeds) if a and a.seeds is not None else "-",
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print(f"- {args.fixed}: {len(fixed_offsets)} runs, {_minutes(fixed_wall)} wall")
    print(f"- {args.adaptive}: {len(offsets)} runs, {_minutes(adaptive_wall)} wall")
    n_fixed = sum(decided(j.verdict) for j in fixed.values())
    print(
        f"- the fixed study's verdicts reached by the adaptive one: {len(result.reached)} "
        f"of {n_fixed}"
        + (f"; differ or missing: {', '.join(result.differ)}" if result.differ else "")
    )
    if result.extra:
        print(f"- adaptive verdicts the fixed study lacks: {', '.join(result.extra)}")
    if result.share is not None:
        print(
            f"- reached by look {result.last_look}, after {result.runs_then} runs = "
            f"{result.share:.0%} of the fixed study's runs"
        )
    print(
        f"- target (every fixed verdict with at most {TARGET_SHARE:.0%} of its runs): "
        + ("met" if result.target_met else "not met")
    )


if __name__ == "__main__":
    main()
