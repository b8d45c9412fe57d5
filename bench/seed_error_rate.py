"""Adaptive seeds on synthetic studies: how often a hypothesis is wrongly decided, how
many runs it takes, and at which look a real effect is decided.

    python bench/seed_error_rate.py                       # 400 studies per row
    python bench/seed_error_rate.py --studies 1000 --min 3 --max 8

A fake trainable replaces training: candidate ``c`` run with seed ``s`` reports
``mean[c] + noise`` (numpy, deterministic per study), so a study takes milliseconds and
the truth is known. Each study has two candidates, A and B, and one hypothesis
"A - B > 0" (Welch, or paired by seed with a shared per-seed component), planned by
:func:`tracking.seed_plan.plan_seeds`: every candidate gets ``min`` seeds, then one
seed per round while the hypothesis is undecided, up to ``max``.

Noise models: ``normal`` (sd 1), ``bounded`` (an accuracy-like score: a normal draw
with sd 0.15 around 0.8 clipped to [0, 1], so a good candidate piles up at 1.0 with no
spread, as retrieval accuracy does), ``skewed`` (lognormal, sd 1 after centring). With a zero effect any decision is wrong; the stated rate is
``1 - confidence`` (0.05). The last column repeats the zero-effect studies with a naive
procedure that looks at every round at the full 95% (no split of the error budget), to
show what repeated looks cost. Prints a Markdown table; nothing is asserted.

A second table (``--rules-studies``, default 4000 per row) checks the decision rules of
issue 20 on fixed designs, each through the real evaluation code
(:func:`tracking.hypotheses.evaluate`): a discrete accuracy over 100 items with 2 seeds
(equal truths near 1, with and without the item-level variance floor), "or" / "and"
claims of two measures (``combine: any | all``) under mixed truths, a family of 10
null hypotheses under Holm, a relative margin at its boundary, and K = 3 looks of
adaptive seeds. "wrong" is the share of studies with a wrong verdict: for a claim at its
boundary or false, any decision in the wrong direction.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from space.hypothesis_files import parse_hypotheses  # noqa: E402
from tracking.aggregate import aggregate  # noqa: E402
from tracking.hypotheses import evaluate, evaluate_hypothesis, with_family  # noqa: E402
from tracking.records import TrialRecord  # noqa: E402
from tracking.seed_plan import DECIDED, plan_seeds  # noqa: E402
from tracking.stats import Verdict  # noqa: E402

SCORE = "short_bpb"  # any score: no competence gate applies to it


def hypothesis(test: str = "welch", name: str = "a_beats_b", a: str = "A", b: str = "B"):
    (h,) = parse_hypotheses(
        [
            {
                "name": name,
                "statement": f"{a} scores higher than {b}.",
                "a": {"preset": a},
                "b": {"preset": b},
                "quantity": SCORE,
                "direction": "greater",
                "margin": 0,
                "test": test,
            }
        ]
    )
    return h


def noise_model(kind: str) -> Callable[[np.random.Generator, float, float], float]:
    """(rng, mean, shared per-seed part) -> one run's score."""
    if kind == "normal":
        return lambda rng, mean, shared: mean + shared + rng.normal()
    if kind == "bounded":
        return lambda rng, mean, shared: float(
            np.clip(0.8 + mean + 0.15 * (shared + rng.normal()), 0.0, 1.0)
        )
    if kind == "skewed":
        sd = float(np.sqrt((np.e - 1) * np.e))  # of a standard lognormal
        centre = float(np.exp(0.5))
        return lambda rng, mean, shared: mean + shared + (rng.lognormal() - centre) / sd
    raise ValueError(f"unknown noise model {kind!r}")


@dataclass
class Outcome:
    verdicts: dict[str, Verdict]
    decided_at: dict[str, int]  # look at which each decided hypothesis was decided
    runs: dict[str, int]  # runs per candidate
    naive_wrong: bool = False  # whether looking at 95% every round decided (zero effect)


def simulate(
    hypotheses: Sequence,
    means: dict[str, float],
    *,
    seed: int,
    repeats_min: int,
    repeats_max: int,
    noise: str = "normal",
    shared_sd: float = 0.0,
    naive: bool = False,
) -> Outcome:
    """One synthetic study run through the adaptive procedure to its end."""
    rng = np.random.default_rng(seed)
    draw = noise_model(noise)
    shared = rng.normal(0.0, shared_sd, size=repeats_max) if shared_sd else np.zeros(repeats_max)
    records: list[TrialRecord] = []

    def train(name: str, s: int) -> None:
        value = draw(rng, means[name], float(shared[s]))
        records.append(
            TrialRecord(
                number=len(records),
                state="COMPLETE",
                candidate_id=name,
                candidate_name=name,
                preset=name,
                seed=s,
                knobs={},
                scores={SCORE: value},
                niah=None,
                attention_mass=None,
                reason=None,
            )
        )

    for name in means:
        for s in range(repeats_min):
            train(name, s)
    decided_at: dict[str, int] = {}
    naive_wrong = False
    while True:
        plan = plan_seeds(
            hypotheses,
            records,
            lambda c: None,
            repeats_min=repeats_min,
            repeats_max=repeats_max,
        )
        for h in plan.hypotheses:
            if h.state == DECIDED:
                decided_at.setdefault(h.name, h.look)
        if naive and not naive_wrong:
            agg = aggregate(records)
            n = min(len(c.spent_seeds) for c in agg.candidates)
            f = evaluate_hypothesis(hypotheses[0], agg, lambda c: None, seeds=range(n))
            naive_wrong = f.verdict is not Verdict.UNDECIDED
        if not plan.requests:
            break
        for r in plan.requests:
            for s in r.seeds:
                train(r.name, s)
    runs = {name: sum(r.candidate_id == name for r in records) for name in means}
    verdicts = {h.name: h.verdict for h in plan.hypotheses}
    return Outcome(verdicts, decided_at, runs, naive_wrong)


def row(
    effect: float, noise: str, test: str, studies: int, repeats_min: int, repeats_max: int
) -> dict:
    h = hypothesis(test)
    scale = 0.15 if noise == "bounded" else 1.0  # effects are in units of the noise sd
    means = {"A": effect * scale, "B": 0.0}
    wrong = correct = naive_wrong = 0
    runs, looks = [], []
    for i in range(studies):
        out = simulate(
            [h],
            means,
            seed=i,
            repeats_min=repeats_min,
            repeats_max=repeats_max,
            noise=noise,
            shared_sd=1.0 if test == "paired" else 0.0,
            naive=effect == 0,
        )
        verdict = out.verdicts[h.name]
        if effect == 0:
            wrong += verdict is not Verdict.UNDECIDED
            naive_wrong += out.naive_wrong
        else:
            wrong += verdict is Verdict.CONTRADICTED
            correct += verdict is Verdict.SUPPORTED
        runs.append(sum(out.runs.values()))
        if h.name in out.decided_at:
            looks.append(out.decided_at[h.name])
    return {
        "effect": effect,
        "noise": noise,
        "test": test,
        "wrong": wrong / studies,
        "supported": correct / studies,
        "naive_wrong": naive_wrong / studies if effect == 0 else None,
        "runs": float(np.mean(runs)),
        "look": float(np.median(looks)) if looks else None,
    }


# -- the decision rules on fixed designs (issue 20) --------------------------------------

ACC = "acc@1x"  # an accuracy: a proportion over ITEMS prompts per run
ITEMS = 100
SECOND = "extrap_bpb@2x"  # a second, ungated score for two-measure claims


def _record(name: str, seed: int, scores: dict[str, float], number: int) -> TrialRecord:
    return TrialRecord(
        number=number, state="COMPLETE", candidate_id=name, candidate_name=name, preset=name,
        seed=seed, knobs={}, scores=scores, niah=None, attention_mass=None, reason=None,
    )  # fmt: skip


def _claim(name: str, a: str, b: str, measures: list[dict], combine: str | None = None):
    raw: dict = {"name": name, "statement": f"{a} vs {b}"}
    if len(measures) == 1:
        raw.update({"a": {"preset": a}, "b": {"preset": b}, **measures[0]})
    else:
        raw["combine"] = combine
        raw["measures"] = [
            {"label": f"m{i}", "a": {"preset": a}, "b": {"preset": b}, **m}
            for i, m in enumerate(measures)
        ]
    (h,) = parse_hypotheses([raw])
    return h


def _fixed(hypotheses, draw, names, n: int, seed: int, items=None):
    rng = np.random.default_rng(seed)
    records = [
        _record(name, s, draw(rng, name), i)
        for i, (name, s) in enumerate((name, s) for name in names for s in range(n))
    ]
    return evaluate(hypotheses, aggregate(records), lambda c: None, items=items)


def _normal_scores(effects: dict[str, tuple[float, float]]):
    """Two ungated scores per run: ``mean + N(0, 1)``, the means per candidate."""

    def draw(rng: np.random.Generator, name: str) -> dict[str, float]:
        m1, m2 = effects[name]
        return {SCORE: m1 + rng.normal(), SECOND: m2 + rng.normal()}

    return draw


def rules_rows(studies: int) -> list[tuple[str, str, float, float | None]]:
    """(row, what counts as wrong, wrong rate, a comparison rate or None)."""
    rows = []
    greater = {"direction": "greater", "margin": 0}

    # 1. A discrete accuracy, 2 seeds a side, equal true accuracy 0.99 over 100 items.
    h = _claim("acc", "A", "B", [{"quantity": ACC, **greater}])

    def binomial(rng: np.random.Generator, name: str) -> dict[str, float]:
        return {ACC: float(rng.binomial(ITEMS, 0.99)) / ITEMS}

    floor = sum(
        _fixed([h], binomial, "AB", 2, i, items=lambda q: ITEMS)[0].verdict is not Verdict.UNDECIDED
        for i in range(studies)
    )
    bare = 0  # the rule before issue 20: a zero-width interval decided by its sign
    for i in range(studies):
        (f,) = _fixed([h], binomial, "AB", 2, i)
        c = f.measures[0].comparison
        zero_width = c is not None and c.se == 0 and c.diff != 0
        bare += zero_width or f.verdict is not Verdict.UNDECIDED
    rows.append(("accuracy over 100 items, n = 2, equal truths 0.99 (floor; old zero-width rule)",
                 "any decision", floor / studies, bare / studies))  # fmt: skip

    # 2-5. Two measures, n = 3, Welch: one truly past its margin (3 sd), one at it.
    two = [{"quantity": SCORE, **greater}, {"quantity": SECOND, **greater}]
    for combine, truths, wrong_if, label in (
        ("any", (3.0, 0.0), Verdict.CONTRADICTED, "'or' claim true (one measure past, one at)"),
        ("any", (0.0, 0.0), None, "'or' claim, both measures at their margin"),
        ("all", (3.0, 0.0), Verdict.SUPPORTED, "'and' claim false (one past, one at)"),
        ("all", (0.0, 0.0), None, "'and' claim, both measures at their margin"),
    ):
        h = _claim(f"{combine}", "A", "B", two, combine)
        draw = _normal_scores({"A": truths, "B": (0.0, 0.0)})
        wrong = 0
        for i in range(studies):
            v = _fixed([h], draw, "AB", 3, i)[0].verdict
            wrong += v is not Verdict.UNDECIDED if wrong_if is None else v is wrong_if
        what = "any decision" if wrong_if is None else str(wrong_if.value)
        rows.append((f"combine {combine}: {label}, n = 3", what, wrong / studies, None))

    # 6. Ten null hypotheses, n = 3 each: any wrong verdict in the family.
    family = [
        _claim(f"h{j}", f"A{j}", f"B{j}", [{"quantity": SCORE, **greater}]) for j in range(10)
    ]
    names = [f"{side}{j}" for j in range(10) for side in "AB"]
    draw = _normal_scores({n: (0.0, 0.0) for n in names})
    holm = per = 0
    for i in range(studies):
        found = _fixed(family, draw, names, 3, i)
        per += any(f.verdict is not Verdict.UNDECIDED for f in found)
        holm += any(
            f.family_verdict is not Verdict.UNDECIDED for f in with_family(found, alpha=0.05)
        )
    rows.append(("10 null hypotheses, n = 3, Holm (uncorrected)", "any decision in the family",
                 holm / studies, per / studies))  # fmt: skip

    # 7. A relative margin at its boundary: mean(A) = 1.02 mean(B), claim A - B < 0.02 B.
    h = _claim("rel", "A", "B", [{"quantity": SCORE, "direction": "less",
                                   "margin": {"relative": 0.02, "of": "b"}}])  # fmt: skip

    def relative(rng: np.random.Generator, name: str) -> dict[str, float]:
        centre = 2.5 * (1.02 if name == "A" else 1.0)
        return {SCORE: centre + rng.normal(0.0, 0.05)}

    wrong = sum(
        _fixed([h], relative, "AB", 3, i)[0].verdict is not Verdict.UNDECIDED
        for i in range(studies)
    )
    rows.append(("relative margin at its boundary (A = 1.02 B), n = 3", "any decision",
                 wrong / studies, None))  # fmt: skip

    # 8. Adaptive seeds, K = 3 looks ({min: 2, max: 4}), no effect.
    h = hypothesis()
    wrong = sum(
        simulate([h], {"A": 0.0, "B": 0.0}, seed=i, repeats_min=2, repeats_max=4).verdicts[h.name]
        is not Verdict.UNDECIDED
        for i in range(studies)
    )
    rows.append(("adaptive seeds, K = 3 looks (min 2, max 4), no effect", "any decision",
                 wrong / studies, None))  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", type=int, default=400)
    p.add_argument("--min", type=int, default=2, dest="repeats_min")
    p.add_argument("--max", type=int, default=8, dest="repeats_max")
    p.add_argument("--rules-studies", type=int, default=4000, help="studies per rules row")
    p.add_argument("--only-rules", action="store_true", help="print only the rules table")
    args = p.parse_args(argv)
    gc.freeze()  # statsmodels' Holm runs gc.collect(): keep it to the objects made from here
    if args.only_rules:
        return _print_rules(args.rules_studies)
    k = args.repeats_max - args.repeats_min + 1
    print(
        f"{args.studies} studies per row; seeds {{min: {args.repeats_min}, max: "
        f"{args.repeats_max}}}: {k} looks at {0.05 / k:.4f} each (Bonferroni of 0.05)\n"
    )
    print(
        "| effect (sd) | noise | test | wrong decisions | supported | naive 95% every look "
        "| runs (mean, 2 candidates) | look decided (median) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    started = time.perf_counter()
    grid = [
        (0.0, "normal", "welch"),
        (0.0, "bounded", "welch"),
        (0.0, "skewed", "welch"),
        (0.0, "normal", "paired"),
        (2.0, "normal", "welch"),
        (4.0, "normal", "welch"),
        (10.0, "normal", "welch"),
        (2.0, "normal", "paired"),
        (2.0, "bounded", "welch"),
    ]
    for effect, noise, test in grid:
        r = row(effect, noise, test, args.studies, args.repeats_min, args.repeats_max)
        naive = "-" if r["naive_wrong"] is None else f"{r['naive_wrong']:.3f}"
        look = "-" if r["look"] is None else f"{r['look']:g}"
        print(
            f"| {effect:g} | {noise} | {test} | {r['wrong']:.3f} | {r['supported']:.3f} "
            f"| {naive} | {r['runs']:.1f} | {look} |"
        )
    print(f"\n{time.perf_counter() - started:.0f} s\n")
    return _print_rules(args.rules_studies) if args.rules_studies > 0 else 0


def _print_rules(studies: int) -> int:
    print(f"Decision rules, {studies} studies per row (stated error rate 0.05)\n")
    print("| row | wrong means | wrong | comparison |")
    print("| --- | --- | --- | --- |")
    started = time.perf_counter()
    for label, what, rate, other in rules_rows(studies):
        extra = "-" if other is None else f"{other:.3f}"
        print(f"| {label} | {what} | {rate:.4f} | {extra} |", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
