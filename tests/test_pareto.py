"""Non-dominated sorting, the Pareto table and its renderings."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import subprocess

import numpy as np
import optuna
import pytest

from tracking.pareto import ParetoRanks, normalize_direction, pareto_ranks, pareto_table
from tracking.pareto_plots import (
    plot_pareto,
    plot_pareto_png,
    write_pareto_files,
    write_pareto_html,
)

MIN, MAX = "minimize", "maximize"


def _brute_force_ranks(points, directions):
    """Rank by definition: 0 if nothing dominates a point, else 1 + the highest rank
    among the points that dominate it (the longest dominance chain ending there)."""
    sign = [1 if d == MIN else -1 for d in directions]

    def dominates(a, b):
        a = [s * v for s, v in zip(sign, a, strict=True)]
        b = [s * v for s, v in zip(sign, b, strict=True)]
        return all(x <= y for x, y in zip(a, b, strict=True)) and any(
            x < y for x, y in zip(a, b, strict=True)
        )

    memo: dict[int, int] = {}

    def rank(i):
        if i not in memo:
            above = [j for j in range(len(points)) if dominates(points[j], points[i])]
            memo[i] = 1 + max(rank(j) for j in above) if above else 0
        return memo[i]

    return [rank(i) for i in range(len(points))]


def test_pareto_ranks_two_objectives_gives_all_fronts():
    points = [(1, 5), (2, 3), (4, 1), (3, 4), (5, 5), (2, 4)]
    result = pareto_ranks(points, [MIN, MIN])
    # (2, 4) is dominated only by the front; (3, 4) also by (2, 4); (5, 5) by (3, 4).
    assert result.ranks == (0, 0, 0, 2, 3, 1)
    assert result.fronts == [[0, 1, 2], [5], [3], [4]]
    assert result.pareto_set == [0, 1, 2]
    assert result.excluded == {}


def test_pareto_ranks_tie_in_one_objective_is_decided_by_the_other():
    result = pareto_ranks([(1.0, 2.0), (1.0, 3.0), (0.5, 9.0)], [MIN, MIN])
    assert result.ranks == (0, 1, 0)


def test_pareto_ranks_duplicates_share_a_rank():
    points = [(1.0, 1.0), (1.0, 1.0), (2.0, 2.0), (2.0, 2.0)]
    result = pareto_ranks(points, [MIN, MIN])
    assert result.ranks == (0, 0, 1, 1)


def test_pareto_ranks_mixed_directions():
    # maximize accuracy, minimize bpb
    points = [(0.9, 2.5), (0.5, 2.0), (0.4, 2.6), (0.9, 2.4)]
    result = pareto_ranks(points, [MAX, MIN])
    assert result.ranks == (1, 0, 2, 0)
    # Flipping one direction changes the answer.
    assert pareto_ranks(points, [MIN, MIN]).ranks == (2, 0, 0, 1)


def test_pareto_ranks_one_objective_is_a_dense_ranking():
    values = [3.0, 1.0, 2.0, 1.0, 5.0]
    assert pareto_ranks([[v] for v in values], [MIN]).ranks == (2, 0, 1, 0, 3)
    assert pareto_ranks([[v] for v in values], [MAX]).ranks == (1, 3, 2, 3, 0)


def test_pareto_ranks_excludes_nan_and_missing_with_reasons():
    points = [(1.0, 1.0), (float("nan"), 0.0), (0.0, None), (0.5,), (2.0, 2.0), ("x", 1.0)]
    result = pareto_ranks(points, [MIN, MIN], names=["short_bpb", "kv_cache_bytes"])
    assert result.ranks == (0, None, None, None, 1, None)
    assert result.excluded == {
        1: "'short_bpb' is NaN",
        2: "missing value for 'kv_cache_bytes'",
        3: "missing value for 'kv_cache_bytes'",
        5: "missing value for 'short_bpb'",
    }
    # Excluded points dominate nothing: (0, 0)-like NaN rows must not push (1, 1) back.
    assert result.pareto_set == [0]


def test_pareto_ranks_infinity_compares_as_worst():
    result = pareto_ranks([(math.inf, 1.0), (1.0, 1.0)], [MIN, MIN])
    assert result.ranks == (1, 0)


def test_pareto_ranks_empty_and_bad_directions():
    assert pareto_ranks([], [MIN]) == ParetoRanks(ranks=())
    with pytest.raises(ValueError, match="unknown direction"):
        pareto_ranks([(1,)], ["down"])
    with pytest.raises(ValueError, match="at least one"):
        pareto_ranks([(1,)], [])
    assert normalize_direction(optuna.study.StudyDirection.MAXIMIZE) == MAX
    assert normalize_direction("min") == MIN


@pytest.mark.parametrize("seed", range(12))
def test_pareto_ranks_agree_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 40)), int(rng.integers(1, 4))
    # Small integer grid: many ties and duplicates.
    points = rng.integers(0, 5, size=(n, m)).astype(float).tolist()
    directions = [MIN if d else MAX for d in rng.integers(0, 2, size=m)]
    assert list(pareto_ranks(points, directions).ranks) == _brute_force_ranks(points, directions)


def test_pareto_front_agrees_with_optuna_best_trials():
    rng = np.random.default_rng(7)
    directions = [MAX, MIN, MIN]
    study = optuna.create_study(directions=directions)
    points = []
    for _ in range(30):
        values = [float(rng.integers(0, 4)), float(rng.integers(0, 4)), float(rng.random())]
        points.append(values)
        study.add_trial(optuna.trial.create_trial(values=values))
    ours = set(pareto_ranks(points, directions).pareto_set)
    assert ours == {t.number for t in study.best_trials}


def _rows():
    return [
        {"trial": 0, "candidate": "rope", "long_acc": 0.1, "short_bpb": 2.0, "candidate_id": "a"},
        {"trial": 1, "candidate": "nope", "long_acc": 0.3, "short_bpb": 2.9, "candidate_id": "b"},
        {"trial": 2, "candidate": "swa", "long_acc": 0.2, "short_bpb": 3.0, "candidate_id": "c"},
        {"trial": 3, "candidate": "q|k", "long_acc": float("nan"), "short_bpb": 1.0},
        {"trial": 4, "candidate": "dup", "long_acc": 0.1, "short_bpb": 2.0, "candidate_id": "a"},
    ]


def test_pareto_table_sorted_by_rank_with_required_keys():
    table = pareto_table(_rows(), ["long_acc", "short_bpb"], [MAX, MIN], title="demo")
    assert [(r["trial"], r["rank"]) for r in table] == [(0, 0), (1, 0), (4, 0), (2, 1), (3, None)]
    for row in table:
        assert {"trial", "rank", "candidate", "long_acc", "short_bpb", "pareto"} <= set(row)
    assert [r["trial"] for r in table.front] == [0, 1, 4]
    assert table.rows[-1]["excluded"] == "'long_acc' is NaN"
    assert table.rows[-1]["pareto"] is False


def test_pareto_table_renders_csv_markdown_json():
    table = pareto_table(_rows(), ["long_acc", "short_bpb"], [MAX, MIN])
    records = json.loads(table.to_json())
    assert records[0] == {
        "trial": 0,
        "rank": 0,
        "pareto": True,
        "candidate": "rope",
        "long_acc": 0.1,
        "short_bpb": 2.0,
        "candidate_id": "a",
        "excluded": None,
    }
    assert records[-1]["long_acc"] is None and records[-1]["rank"] is None

    parsed = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert [row["trial"] for row in parsed] == ["0", "1", "4", "2", "3"]
    assert parsed[3]["rank"] == "1" and parsed[4]["rank"] == ""

    md = table.to_markdown().splitlines()
    assert md[0] == "| trial | rank | candidate | long_acc (max) | short_bpb (min) | excluded |"
    assert md[2].startswith("| **0** | 0 | rope | 0.1 | 2 |")
    assert "q\\|k" in md[-1]  # a pipe in a name does not break the table


def test_pareto_png_and_html_are_written(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        {
            "trial": i,
            "candidate": f"c{i} </script>",
            "long_acc": float(rng.random()),
            "short_bpb": float(2 + rng.random()),
            "kv_cache_bytes": float(2 ** rng.integers(16, 28)),
        }
        for i in range(12)
    ]
    names = ["long_acc", "short_bpb", "kv_cache_bytes"]
    table = pareto_table(rows, names, [MAX, MIN, MIN])
    png = plot_pareto_png(table, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_pareto(table, tmp_path / "p2.html").read_text().startswith("<!DOCTYPE html>")
    single = pareto_table(rows, ["short_bpb"], [MIN])
    assert plot_pareto_png(single, tmp_path / "one.png").stat().st_size > 1000

    page = write_pareto_html(table, tmp_path / "p.html").read_text()
    # Self-contained: no external scripts, styles or fonts.
    assert not re.search(r"<script[^>]+src=|<link|https?://(?!www\.w3\.org/2000/svg)", page)
    data = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    payload = json.loads(data.group(1))
    assert payload["objectives"] == names
    assert sorted(r["trial"] for r in payload["rows"]) == list(range(12))
    assert payload["rows"][0]["rank"] == 0
    node = shutil.which("node")
    if node:  # the page's script at least parses
        script = page.split("<script>", 1)[1].split("</script>", 1)[0]
        (tmp_path / "page.js").write_text(script)
        subprocess.run([node, "--check", str(tmp_path / "page.js")], check=True)


def test_pareto_table_write_all_formats(tmp_path):
    table = pareto_table(_rows(), ["long_acc", "short_bpb"], [MAX, MIN])
    written = write_pareto_files(table, tmp_path)
    assert sorted(written) == [
        "pareto.csv",
        "pareto.html",
        "pareto.json",
        "pareto.md",
        "pareto.png",
    ]
    assert all(p.stat().st_size > 0 for p in written.values())


def test_human_bytes_binary_units_and_missing_values():
    from space.units import human_bytes

    assert human_bytes(512) == "512 B"
    assert human_bytes(2_500_000) == "2.38 MiB"
    assert human_bytes(3 * 2**30) == "3 GiB"
    assert human_bytes(float("nan")) == "-"


def test_pareto_png_byte_axis_ticks_at_round_binary_units():
    from matplotlib.figure import Figure

    from tracking.pareto_plots import _bytes_axis

    ax = Figure().add_subplot()
    ax.scatter([0, 1], [1.2e6, 4e6])
    _bytes_axis(ax.yaxis, ax.get_ylim(), ax.get_yscale())
    labels = [ax.yaxis.get_major_formatter()(t, 0) for t in ax.get_yticks()]
    assert labels and all(label.endswith(" MiB") for label in labels)
    assert all(
        float(label.split()[0]) * 2 == round(float(label.split()[0]) * 2) for label in labels
    )


# -- the front within seed noise -------------------------------------------------------


def test_pareto_within_noise_does_not_rank_on_noise():
    from tracking.pareto import pareto_ranks_within_noise

    # Two objectives, both minimised. a and b differ by less than their noise on the first
    # and tie on the second; c is worse beyond the noise on the first.
    points = [[1.00, 5.0], [1.02, 5.0], [1.50, 5.0]]
    sems = [[0.02, 0.0], [0.02, 0.0], [0.02, 0.0]]
    plain = pareto_ranks(points, [MIN, MIN])
    assert plain.ranks == (0, 1, 2)  # the plain sort orders a and b on noise
    noisy = pareto_ranks_within_noise(points, sems, [MIN, MIN], z=2.0)
    assert noisy.ranks == (0, 0, 1)
    assert noisy.indistinguishable == ((0, 1),) and noisy.alike(1) == [0]
    # Without noise the two sortings agree.
    exact = pareto_ranks_within_noise(points, [[0.0, 0.0]] * 3, [MIN, MIN])
    assert exact.ranks == plain.ranks and exact.indistinguishable == ()


def test_pareto_within_noise_excludes_like_the_plain_sort_and_respects_directions():
    from tracking.pareto import pareto_ranks_within_noise

    points = [[0.9, 2.0], [0.5, 2.0], [None, 1.0]]
    sems = [[0.01, 0.01], [0.01, 0.01], [0.01, 0.01]]
    noisy = pareto_ranks_within_noise(points, sems, [MAX, MIN], ["long_acc", "short_bpb"])
    assert noisy.ranks == (0, 1, None) and "long_acc" in noisy.excluded[2]


def test_report_pareto_marks_the_paper_sweeps_hybrids_indistinguishable():
    from studies import study
    from tie_studies import paper_sweep_trials

    from tracking.aggregate import aggregate
    from tracking.records import study_records
    from tracking.report.build import candidate_pareto

    read = study_records(study(paper_sweep_trials()))
    agg = aggregate(read.records, read.objective_names, read.directions)
    table = candidate_pareto(agg)
    rows = {r["candidate"]: r for r in table.rows}
    # On the means, one QK-norm placement alone is the front (short_bpb 2.21 vs 2.22).
    assert [r["candidate"] for r in table.front] == ["rnope_swa_qk_all"]
    # Within seed noise, W16 and the local QK-norm placement join it: their short_bpb
    # differs by less than the noise, and long_acc and the KV cache are equal.
    noisy_front = {name for name, r in rows.items() if r["rank_within_noise"] == 0}
    assert {"rnope_swa_qk_all", "rnope_swa16", "rnope_swa_qk_local"} <= noisy_front
    assert "rope" not in noisy_front and "nope" not in noisy_front
    qk_all = rows["rnope_swa_qk_all"]
    assert rows["rnope_swa16"]["trial"] in qk_all["indistinguishable_from"]
    assert rows["rope"]["trial"] not in qk_all["indistinguishable_from"]
