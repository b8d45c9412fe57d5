"""Held-out task families (score.held_out): schema, scores, and whether rankings and decided
effects transfer, in the report, report --json and status."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from studies import attrs, complete, study

from space.errors import ConfigError
from space.hypotheses import Hypothesis
from space.hypothesis_files import parse_hypotheses
from space.names import is_accuracy_score, is_score_name, is_task_score, split_held_out
from space.schema import parse_config
from tracking.aggregate import aggregate
from tracking.held_out import held_out_quantity, held_out_transfer
from tracking.hypotheses import evaluate
from tracking.records import study_records

BASE = {
    "study": {"name": "t", "trials": 1},
    "space": {"global_every": {"choice": [1, 4]}},
    "model": {"layers": 4, "d_model": 64, "heads": 4, "mlp_hidden": 128},
    "train": {
        "seq_len": 128,
        "batch_size": 2,
        "steps": 10,
        "task_mix": {"passkey": 1.0, "mqar": 0.5},
    },
    "score": {"tasks": ["passkey", "mqar"], "held_out": ["fuzzyrecall", "selcopy"]},
}


def _with(section: str, **changes) -> dict:
    return {**BASE, section: {**BASE[section], **changes}}


def _problems(config: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    return dict(info.value.problems)


def test_held_out_families_are_scored_after_the_trained_ones():
    config = parse_config(BASE)
    assert config.score.families == ("passkey", "mqar", "fuzzyrecall", "selcopy")
    assert config.score.headline_tasks == ("passkey",)
    # Without score.tasks: the primary family, then the held-out ones.
    only = parse_config(_with("score", tasks=None, task="passkey", held_out=["aliaskey"]))
    assert only.score.families == ("passkey", "aliaskey")
    # A sweep file without held_out dumps as before (the study's budget key is unchanged).
    plain = parse_config(_with("score", held_out=[]))
    assert "held_out" not in plain.score.model_dump()


def test_held_out_family_in_a_task_mix_is_an_error_naming_the_key():
    problems = _problems(_with("score", held_out=["selcopy", "mqar"]))
    assert "score.held_out[0]" not in problems
    assert "also in train.task_mix" in problems["score.held_out[1]"]
    staged = _with(
        "train",
        steps=None,
        stages=[{"steps": 5}, {"steps": 5, "task_mix": {"passkey": 1.0, "selcopy": 0.2}}],
    )
    assert "also in train.stages[1].task_mix" in _problems(staged)["score.held_out[1]"]
    primary = _problems(_with("score", tasks=None, task="selcopy", held_out=["selcopy"]))
    assert "primary family" in primary["score.held_out[0]"]
    headline = _problems(_with("score", long_tasks=["passkey", "selcopy"]))
    assert "score.long_tasks" in headline["score.held_out[1]"]
    twice = _problems(_with("score", held_out=["selcopy", "selcopy"]))
    assert "listed twice" in twice["score.held_out[1]"]


def test_held_out_scores_are_objectives_only_with_held_out_families():
    assert is_score_name("held_out_long_acc") and is_score_name("held_out_acc@4x")
    assert is_accuracy_score("held_out_long_acc") and is_task_score("held_out_answer_nll@2x")
    assert not is_accuracy_score("held_out_long_answer_nll")
    assert not is_score_name("held_out_short_bpb") and split_held_out("held_out_params") is None
    assert not is_task_score("mqar/held_out_long_acc")
    objective = {"metric": "held_out_long_acc", "direction": "maximize"}
    ok = _with("study", objectives=[objective])
    assert parse_config(ok).study.objectives[0].metric == "held_out_long_acc"
    problems = _problems({**ok, "score": {**BASE["score"], "held_out": []}})
    assert "needs score.held_out" in problems["study.objectives[0].metric"]


def test_retrieval_scores_average_the_held_out_families_apart_from_the_headline():
    import torch  # noqa: F401 - workers import torch

    from workers import candidate, scores

    config = parse_config(_with("score", lengths=[1, 2, 4]))
    level = {"passkey": 0.9, "mqar": 0.7, "fuzzyrecall": 0.4, "selcopy": 0.2}
    grids = {}
    for task, acc in level.items():
        cells = tuple((acc / m,) for m in (1, 2, 4))
        grids[task] = scores.NiahResult(
            lengths=(128, 256, 512),
            depths=(0.5,),
            acc=cells,
            task=task,
            answer_nll=cells,
            token_acc=cells,
        )
    got = candidate.retrieval_scores(config, grids)
    beyond = {t: (a / 2 + a / 4) / 2 for t, a in level.items()}
    assert got["long_acc"] == pytest.approx(beyond["passkey"])  # the headline: trained only
    assert got["held_out_long_acc"] == pytest.approx(
        (beyond["fuzzyrecall"] + beyond["selcopy"]) / 2
    )
    assert got["held_out_acc@2x"] == pytest.approx((0.4 / 2 + 0.2 / 2) / 2)
    assert got["held_out_acc_at_T"] == pytest.approx(0.3)
    assert got["fuzzyrecall/long_acc"] == pytest.approx(beyond["fuzzyrecall"])
    assert all(is_score_name(k) for k in got)


# The trained families rank rnope_swa > nope > rope on long_acc; the held-out families keep
# rnope_swa above rope but put nope last.
_TRAINED = {"rope": 0.2, "nope": 0.5, "rnope_swa": 0.9}
_HELD = {"rope": 0.3, "nope": 0.1, "rnope_swa": 0.6}


def _trials() -> list:
    out = []
    for name in _TRAINED:
        for seed in range(3):
            wobble = 0.01 * (seed - 1)
            acc = _TRAINED[name] + wobble
            kv = 2.0e6 if name == "rnope_swa" else 8.0e6
            a = attrs(name, seed, acc={1: 1.0, 2: acc, 4: acc}, kv=kv)
            a["held_out_long_acc"] = _HELD[name] + wobble
            a["held_out_acc@2x"] = _HELD[name] + wobble
            out.append(complete(a))
    return out


def _hypotheses() -> list[Hypothesis]:
    def one(name, a, b, quantity):
        return {
            "name": name,
            "statement": f"{a} beats {b}",
            "a": {"preset": a},
            "b": b,
            "quantity": quantity,
            "direction": "greater",
            "gate": False,
        }

    return parse_hypotheses(
        [
            one("hybrid_over_rope", "rnope_swa", "rope", "long_acc"),
            one("nope_over_rope", "nope", "rope", "long_acc"),
            one("hybrid_over_nope_at_2x", "rnope_swa", "nope", "acc@2x"),
            {**one("kv_cache", "rope", "rnope_swa", "kv_cache_bytes"), "test": "exact"},
        ]
    )


def test_held_out_transfer_ranks_and_effect_signs():
    read = study_records(study(_trials()))
    agg = aggregate(read.records, read.objective_names, read.directions)
    hypotheses = _hypotheses()
    findings = evaluate(hypotheses, agg, lambda c: None)
    assert [f.verdict.value for f in findings] == ["supported"] * 4
    transfer = held_out_transfer(
        agg,
        families=("fuzzyrecall",),
        hypotheses=hypotheses,
        findings=findings,
        layers_of=lambda c: None,
    )
    (rank,) = transfer.ranks
    assert rank.trained == "long_acc" and rank.held_out == "held_out_long_acc"
    # One discordant pair of three (rope vs nope): tau = (2 - 1) / 3.
    assert rank.tau == pytest.approx(1 / 3)
    by_key = {e.key: e for e in transfer.effects}
    assert by_key["hybrid_over_rope"].same_sign is True
    assert by_key["hybrid_over_rope"].held_out_diff == pytest.approx(0.3)
    assert by_key["nope_over_rope"].same_sign is False
    assert by_key["nope_over_rope"].held_out_quantity == "held_out_long_acc"
    assert by_key["hybrid_over_nope_at_2x"].held_out_quantity == "held_out_acc@2x"
    assert by_key["hybrid_over_nope_at_2x"].same_sign is True
    assert by_key["kv_cache"].same_sign is None  # a cost has no held-out counterpart
    assert transfer.agreement == (2, 3)
    lines = transfer.lines()
    assert "Kendall's tau +0.33 over 3 candidates" in lines[0]
    assert "2 of 3 measured (1 without a held-out counterpart)" in lines[1]
    assert "OPPOSITE sign" in by_key["nope_over_rope"].describe()


def test_held_out_quantity_maps_retrieval_scores_only():
    from space.hypotheses import Quantity

    assert held_out_quantity(Quantity(score="mqar/long_acc")).score == "held_out_long_acc"
    assert held_out_quantity(Quantity(score="short_bpb")) is None
    diff = Quantity.model_validate({"diff": ("acc@4x", "acc@1x")})
    mapped = held_out_quantity(diff)
    assert [q.score for q in mapped.diff] == ["held_out_acc@4x", "held_out_acc@1x"]
    assert held_out_quantity(Quantity.model_validate({"mass": "needle", "at": "1x"})) is None


def test_held_out_in_report_json_and_status(tmp_path):
    from search.status import format_summary, summarize
    from tracking.report.build import render_report

    s = study(_trials())
    read = study_records(s)
    agg = aggregate(read.records, read.objective_names, read.directions)
    hypotheses = _hypotheses()
    findings = evaluate(hypotheses, agg, lambda c: None)
    transfer = held_out_transfer(agg, hypotheses=hypotheses, findings=findings)
    paths = render_report(agg, tmp_path, study_name="t", findings=findings, held_out=transfer)
    md = paths["report.md"].read_text()
    assert "Held-out families: does the ranking transfer?" in md
    assert "long_acc ↑ (held out)" in md and "OPPOSITE sign" in md
    data = json.loads(paths["summary.json"].read_text())
    assert data["held_out"]["effects_same_sign"] == 2
    assert data["held_out"]["effects_measured"] == 3
    assert data["held_out"]["ranks"][0]["kendall_tau"] == pytest.approx(1 / 3)
    # A study without held-out scores has no such section.
    plain = study_records(study([complete(attrs("rope", k)) for k in range(2)]))
    assert held_out_transfer(aggregate(plain.records, plain.objective_names)) is None
    status = summarize(s)
    assert status["held_out"]["ranks"][0]["kendall_tau"] == pytest.approx(1 / 3)
    text = format_summary(status)
    assert "held-out families:" in text and "rank transfer long_acc -> held_out_long_acc" in text
    held = [c["held_out"] for c in status["held_out"]["ranks"][0]["candidates"]]
    assert math.isfinite(float(np.mean(held)))


def test_paper_graded_config_is_the_ten_paper_candidates_on_the_calibrated_suite():
    from pathlib import Path

    from space.schema import load_config

    configs = Path(__file__).resolve().parent.parent / "configs"
    graded = load_config(configs / "paper_graded.yaml")
    paper = load_config(configs / "paper.yaml")
    demo = load_config(configs / "demo.yaml")
    names = list(graded.presets)
    assert names == list(paper.presets)[:10]
    for name in names:  # the same models as the paper sweep's
        assert graded.preset_candidate(name).id == paper.preset_candidate(name).id
    assert graded.study.repeats == 3 and graded.study.trials == 10
    for field in ("seq_len", "batch_size", "steps", "lr"):  # the demo budget
        assert getattr(graded.train, field) == getattr(demo.train, field)
    s = graded.score
    assert s.calibrate is not None and set(s.calibrate.panel) <= set(names)
    assert s.headline_tasks == ("passkey", "mqar", "aliaskey")
    assert s.held_out and not set(s.held_out) & set(graded.train.task_mix)
    assert graded.study.objectives[0].metric == "long_acc"
