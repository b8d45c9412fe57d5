"""The report's tables as data (header + rows of (text, detail) cells), rendered to
Markdown and HTML by :mod:`tracking.report.markdown` and :mod:`tracking.report.html`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from space.names import (
    KV_CACHE_BYTES,
    LONG_ACC,
    LONG_ANSWER_NLL,
    SHORT_BPB,
    TOKENS_PER_S,
    held_out_score,
)
from space.tasks import SEGMENTS
from space.units import human_bytes, is_bytes_score
from tracking.aggregate import CandidateSummary, StudyAggregate
from tracking.pareto import ParetoTable
from tracking.seed_plan import SeedPlan
from tracking.stability import RankStability
from tracking.stats import Spread
from tracking.ties import SignalToNoise

__all__ = [
    "Table",
    "candidate_table",
    "held_out_table",
    "mass_table",
    "pareto_rows",
    "seed_plan_table",
    "signal_noise_table",
    "stability_table",
]

Cell = tuple[str, str]  # (main text, detail: a "[min, max]" range or a small note)


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[Cell]]
    text_columns: int = 2  # the first columns hold names: left-aligned


def spread_cell(s: Spread | None, score: str) -> Cell:
    """``mean ± std`` with ``[min, max]`` as detail; bytes in binary units."""
    if s is None or s.n == 0:
        return "-", ""
    if is_bytes_score(score):
        main = human_bytes(s.mean)
        if s.n > 1 and s.std > 0:
            main += f" ± {human_bytes(s.std)}"
        return main, ""
    if score == TOKENS_PER_S:
        spec = ",.0f"
    elif score.startswith("acc") or score == LONG_ACC:
        spec = ".2f"
    else:
        spec = ".3f"
    if s.n == 1:
        return f"{s.mean:{spec}} (n=1)", ""
    return f"{s.mean:{spec}} ± {s.std:{spec}}", f"[{s.min:{spec}}, {s.max:{spec}}]"


def _score_columns(agg: StudyAggregate) -> list[tuple[str, str]]:
    """(score name, column label) in display order, only those some candidate has."""
    have = {name for c in agg.candidates for name in c.scores}
    cols = [(SHORT_BPB, "short_bpb ↓")]
    cols += [(f"acc@{m}x", f"acc@{m}x ↑") for m in agg.multiples("acc@")]
    cols += [(LONG_ACC, "long_acc ↑")]
    cols += [(f"extrap_bpb@{m}x", f"bpb@{m}x ↓") for m in agg.multiples("extrap_bpb@")]
    cols += [(KV_CACHE_BYTES, "KV cache ↓"), (TOKENS_PER_S, "tokens/s ↑")]
    return [(name, label) for name, label in cols if name in have]


def _seeds(c: CandidateSummary) -> str:
    return "seeds " + ", ".join(str(s) for s in c.seeds)


def lr_cell(c: CandidateSummary) -> Cell:
    """``train.lr_search``: the learning rate the pilots chose (each trial's, when they
    differ), its detail every pilot's final val_bpb (``diverged`` for one that lost)."""
    if not c.lr_searches:
        return "", ""
    chosen = list(dict.fromkeys(c.chosen_lrs))
    text = ", ".join("none" if lr is None else f"{lr:g}" for lr in chosen)
    details = []
    for search in c.lr_searches:
        pilots = []
        for p in search.get("pilots", []):
            val = p.get("val_bpb")
            pilots.append(
                f"{p['lr']:g}: {val:.4g}" if val is not None else f"{p['lr']:g}: {p['status']}"
            )
        details.append(f"pilot val_bpb ({search.get('steps')} steps) " + ", ".join(pilots))
    return text, "; ".join(details)


def candidate_table(agg: StudyAggregate) -> Table:
    cols = _score_columns(agg)
    searched = any(c.lr_searches for c in agg.candidates)
    header = ["#", "candidate", "n", *(["lr"] if searched else []), *[label for _, label in cols]]
    rows = []
    for i, c in enumerate(agg.candidates, start=1):
        row = [(str(i), ""), (c.name, c.candidate_name or ""), (str(c.n), _seeds(c))]
        if searched:
            row.append(lr_cell(c))
        row += [spread_cell(c.spread(name), name) for name, _ in cols]
        rows.append(row)
    return Table(header, rows)


def held_out_table(agg: StudyAggregate) -> Table:
    """Each candidate's headline scores on the trained families beside their means over
    the held-out families (``score.held_out``), only the columns some candidate has."""
    have = {name for c in agg.candidates for name in c.scores}
    cols = [(LONG_ACC, "long_acc ↑ (trained)"), (held_out_score(LONG_ACC), "long_acc ↑ (held out)")]
    cols += [
        (LONG_ANSWER_NLL, "answer NLL ↓ (trained)"),
        (held_out_score(LONG_ANSWER_NLL), "answer NLL ↓ (held out)"),
    ]
    cols += [
        (held_out_score(f"acc@{m}x"), f"acc@{m}x ↑ (held out)")
        for m in sorted({int(n[len("held_out_acc@") : -1]) for n in have if _held_acc(n)})
    ]
    cols = [(name, label) for name, label in cols if name in have]
    header = ["#", "candidate", "n", *[label for _, label in cols]]
    rows = []
    for i, c in enumerate(agg.candidates, start=1):
        row = [(str(i), ""), (c.name, c.candidate_name or ""), (str(c.n), _seeds(c))]
        row += [spread_cell(c.spread(name), name) for name, _ in cols]
        rows.append(row)
    return Table(header, rows)


def _held_acc(name: str) -> bool:
    return name.startswith("held_out_acc@") and name.endswith("x") and name[13:-1].isdigit()


def mass_table(agg: StudyAggregate) -> Table:
    header = ["candidate", "layer kind", "length", *[s.capitalize() for s in SEGMENTS]]
    rows = []
    for length in agg.mass_lengths():
        for c in agg.candidates:
            mass = c.attention_mass.get(length)
            if not mass:
                continue
            for kind, segs in mass["per_kind"].items():
                cells = [spread_cell(segs.get(s), "mass") for s in SEGMENTS]
                rows.append([(c.name, ""), (kind, ""), (length, ""), *cells])
    return Table(header, rows, text_columns=3)


def pareto_rows(p: ParetoTable) -> Table:
    """The front of candidate means; ★ marks rank 0; the rank within seed noise, and the
    rows each candidate is statistically indistinguishable from (≈)."""
    header = ["#", "rank", "rank within noise", "candidate", "n"]
    header += [f"{n} ({d[:3]})" for n, d in zip(p.objective_names, p.directions, strict=True)]
    rows = []
    for r in p.rows:
        rank = "-" if r["rank"] is None else str(r["rank"])
        star = "★ " if r["rank"] == 0 else ""
        noisy = r.get("rank_within_noise")
        alike = r.get("indistinguishable_from") or []
        cells: list[Cell] = [
            (str(r["trial"]), ""),
            (rank, ""),
            ("-" if noisy is None else str(noisy), ""),
            (f"{star}{r['candidate']}", "≈ " + ", ".join(f"#{j}" for j in alike) if alike else ""),
            (str(r.get("n", "")), ""),
        ]
        for name in p.objective_names:
            v = r.get(name)
            if v is None:
                cells.append(("-", ""))
            elif is_bytes_score(name):
                cells.append((human_bytes(float(v)), ""))
            else:
                cells.append((f"{float(v):.4g}", ""))
        rows.append(cells)
    return Table(header, rows, text_columns=4)


def stability_table(rows: Sequence[RankStability]) -> Table:
    header = [
        "objective", "direction", "Kendall's tau [95% bootstrap]", "candidates", "fewest seeds",
        "meaning",
    ]  # fmt: skip
    out = []
    for r in rows:
        tau = "-" if r.tau is None else f"{r.tau:+.2f}"
        if r.interval is not None:  # the bootstrap 95% interval
            tau += f" [{r.interval[0]:+.2f}, {r.interval[1]:+.2f}]"
        left = f"left out: {', '.join(r.left_out)}" if r.left_out else ""
        out.append(
            [
                (r.objective, ""),
                (r.direction, ""),
                (tau, ""),
                (str(r.candidates), left),
                (str(r.seeds), ""),
                (r.meaning, ""),
            ]
        )
    return Table(header, out)


def signal_noise_table(rows: Sequence[SignalToNoise]) -> Table:
    header = ["objective", "signal / noise", "signal", "noise", "candidates", "at a bound"]
    out = []
    for r in rows:
        out.append(
            [
                (r.objective, ""),
                (r.ratio_text(), ""),
                (_number(r.signal), ""),
                (_number(r.noise), ""),
                (str(r.candidates), ""),
                (str(r.at_bound), ""),
            ]
        )
    return Table(header, out, text_columns=1)


def _number(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.3g}"


def seed_plan_table(plan: SeedPlan) -> Table:
    header = ["hypothesis", "state", "verdict", "look", "seeds", "interval", "next runs"]
    rows = []
    for h in plan.hypotheses:
        interval = h.finding.interval if h.finding is not None else None
        iv = "-" if interval is None else f"[{interval[0]:.3g}, {interval[1]:.3g}]"
        runs = sum(len(r.seeds) for r in h.requests)
        rows.append(
            [
                (h.name, h.problem or ""),
                (h.state, ""),
                (h.verdict.value, ""),
                (f"{h.look}/{h.looks}", ""),
                (str(h.seeds_per_candidate), ""),
                (iv, ""),
                (str(runs), ", ".join(r.name for r in h.requests)),
            ]
        )
    return Table(header, rows, text_columns=3)
