"""The scale ladder: the ``ladder:`` schema, promotion, decision accuracy on a recorded
study (against values computed by hand below), and a real two-rung sweep on the tiny
model: promotion, links to rung 0, and a driver stopped between rungs that resumes at
rung 1 without training rung 0 again."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from engines import REPO, tiny_config_file
from optuna.trial import TrialState
from scipy import stats

from search import driver
from search import ladder as ladder_mod
from search.errors import StudyError
from search.signature import target_trials
from search.status import format_summary, summarize
from space.errors import ConfigError
from space.hypothesis_files import parse_hypotheses
from space.ladder import apply_rung, rung_of
from space.names import STUDY_ATTR_LADDER_PREDICTIONS
from space.outcomes import Reason
from space.schema import load_config
from space.trial_attrs import (
    ATTR_BUDGET,
    ATTR_CANDIDATE_ID,
    ATTR_LADDER_ORIGIN,
    ATTR_LADDER_RUNG,
    ATTR_PRESET,
    ATTR_PROMOTED_FROM,
    ATTR_REASON,
    ATTR_RERUN_OF,
    ATTR_RESUMED_FROM_STEP,
)
from tracking.decision_accuracy import (
    Effect,
    kendall_tau,
    ladder_accuracy,
    order_agreement,
    predict_next,
)
from tracking.hypotheses import evaluate
from tracking.records import seed_records
from tracking.report import MD_NAME, SUMMARY_NAME, build_report

DATA = Path(__file__).parent / "data" / "ladder_study.json"
HYPOTHESES = [
    {
        "name": "rope_beats_qknorm_short",
        "statement": "RoPE's short-context loss is below QK-norm's.",
        "a": "rope",
        "b": "qknorm",
        "quantity": "short_bpb",
        "direction": "less",
    }
]
LADDER = {
    "rungs": [{"d_model": 32, "steps": 30}, {"d_model": 64, "steps": 30}],
    "promote": {"top_k": 1, "by": "short_bpb"},
    "seeds": [2, 2],
}


def _ladder_file(tmp_path: Path, name: str = "lad", **overrides) -> Path:
    sections = {
        "study": {"name": name, "trials": 3, "sampler": "random", "seed": 0},
        "space": {"global_every": 2, "global_position": {"choice": ["nope", "rope"]}},
        "presets": ["rope", "nope", "qknorm"],
        "hypotheses": HYPOTHESES,
        "ladder": LADDER,
        **overrides,
    }
    return tiny_config_file(tmp_path / f"{name}.yaml", **sections)


# -- the schema ------------------------------------------------------------------------


def test_ladder_rung_zero_is_the_sweep_and_rung_one_its_overrides(tmp_path):
    config = load_config(_ladder_file(tmp_path))
    assert (config.model.d_model, config.train.steps, config.study.repeats, config.rung) == (
        32,
        30,
        2,
        0,
    )
    upper = apply_rung(config, 1)
    assert (upper.model.d_model, upper.model.layers, upper.train.seq_len, upper.rung) == (
        64,
        2,
        32,
        1,
    )


@pytest.mark.parametrize(
    ("ladder", "path", "message"),
    [
        ({**LADDER, "promote": {"top_k": 1, "by": "long_nll"}}, "ladder.promote.by", "objective"),
        (
            {**LADDER, "promote": {"top_k": 0, "by": "short_bpb"}},
            "ladder.promote.top_k",
            "greater than or equal to 1",
        ),
        ({**LADDER, "seeds": [2]}, "ladder.seeds", "one number of seeds per rung"),
        ({**LADDER, "rungs": [{"d_model": 32}]}, "ladder.rungs", "at least 2"),
        (
            {**LADDER, "rungs": [{}, {"d_model": 64, "width": 3}]},
            "ladder.rungs[1].width",
            "unknown key",
        ),
        (
            {**LADDER, "rungs": [{}, {"knobs": {"local_window": 0}}]},
            "ladder.rungs[1].knobs.local_window",
            "window",
        ),
        (
            {**LADDER, "rungs": [{}, {"knobs": {"windows": 8}}]},
            "ladder.rungs[1].knobs.windows",
            "unknown knob",
        ),
        ({**LADDER, "rungs": [{"knobs": {"local_window": 8}}, {}]}, "ladder.rungs[0].knobs", ""),
        (
            {**LADDER, "rungs": [{}, {"d_model": 30}]},
            "ladder.rungs[1]",
            "at this rung, model.heads",
        ),
    ],
)
def test_ladder_schema_names_the_bad_key(tmp_path, ladder, path, message):
    with pytest.raises(ConfigError) as err:
        load_config(_ladder_file(tmp_path, ladder=ladder))
    assert any(p == path and message in m for p, m in err.value.problems), err.value.problems


def test_ladder_schema_refuses_adaptive_seeds(tmp_path):
    with pytest.raises(ConfigError, match=r"study\.repeats: a ladder sets seeds per rung"):
        load_config(
            _ladder_file(
                tmp_path,
                study={"name": "x", "trials": 3, "repeats": {"min": 2, "max": 3}},
            )
        )


# -- decision accuracy on a recorded study --------------------------------------------


def _recorded():
    doc = json.loads(DATA.read_text())
    trials = [
        SimpleNamespace(
            number=t["number"],
            state=TrialState[t["state"]],
            values=t["values"],
            user_attrs=t["user_attrs"],
        )
        for t in doc["trials"]
    ]
    records = [r for t in trials for r in seed_records(t, doc["objectives"])]
    return records, doc["objectives"], doc["directions"]


def test_decision_accuracy_on_a_recorded_ladder_equals_the_hand_computation():
    records, objectives, directions = _recorded()
    hypotheses = parse_hypotheses(HYPOTHESES)
    accuracy = ladder_accuracy(
        records,
        objectives,
        directions,
        lambda rung, agg: evaluate(hypotheses, agg, lambda c: None),
        ladder_rungs=2,
    )
    assert accuracy.rungs == (0, 1)
    bpb = next(p for p in accuracy.pairs if p.objective == "short_bpb")
    # Rung-0 means (per-seed values in the fixture): rope 2.1, qknorm 2.5, rnope_swa 3.0,
    # nope 3.6 (not promoted). Rung-1 means: rope 2.0, qknorm 1.8, rnope_swa 2.7.
    # Pairs of the 3 candidates at both rungs: (rope, qknorm) flips, (rope, rnope_swa) and
    # (qknorm, rnope_swa) keep their order: 2 of 3 agree; tau = (2 - 1) / 3.
    assert sorted(bpb.candidates) == ["qknorm", "rnope_swa", "rope"] and bpb.pairs == 3
    assert bpb.agreement == pytest.approx(2 / 3)
    assert bpb.tau == pytest.approx(1 / 3)
    # Bootstrap over seeds: at rung 0 the resampled means stay in [2.0, 2.2], [2.4, 2.6],
    # [2.9, 3.1] (never overlap: the order holds); at rung 1 rope's stays >= 1.9 and
    # qknorm's <= 1.9, so (rope, qknorm) is either flipped or, when both draw 1.9 twice
    # (1/4 * 1/4 = 1/16 = 6.25% of resamples, above the 2.5% tail), tied: agreement 2/3
    # or 2/3 + 1/2 * 1/3 = 5/6; tau-b 1/3 or, tied, 2 / sqrt(3 * 2).
    assert bpb.agreement_interval == pytest.approx((2 / 3, 5 / 6))
    assert bpb.tau_interval == pytest.approx((1 / 3, 2 / math.sqrt(6)))
    # KV cache: rope, qknorm tie at both rungs (a tie counts 1/2), rnope_swa is smaller at
    # both: (0.5 + 1 + 1) / 3; tau-b of two identical orders with one tie is 1.
    kv = next(p for p in accuracy.pairs if p.objective == "kv_cache_bytes")
    assert kv.agreement == pytest.approx(5 / 6) and kv.tau == pytest.approx(1.0)
    assert kv.agreement_interval == pytest.approx((5 / 6, 5 / 6))

    (trend,) = accuracy.hypotheses
    e0, e1 = trend.effects
    # Rung 0: rope - qknorm = 2.1 - 2.5 = -0.4; each side's sample variance 0.02 over 2
    # seeds, so se = sqrt(0.02/2 + 0.02/2) = sqrt(0.02); Welch df = 2.
    assert (e0.rung, e0.diff, e0.se) == (0, pytest.approx(-0.4), pytest.approx(math.sqrt(0.02)))
    assert e0.df == pytest.approx(2.0)
    assert (e1.rung, e1.diff) == (1, pytest.approx(0.2))
    # Predicted for rung 1 from rung 0 alone (constant): -0.4 +- t(0.975, 2) * sqrt(2 * 0.02)
    # = -0.4 +- 4.3027 * 0.2; the rung-1 effect 0.2 falls inside.
    (p,) = trend.predictions
    half = stats.t.ppf(0.975, 2) * 0.2
    assert p.method == "constant" and p.from_rungs == (0,)
    assert (p.low, p.high) == (pytest.approx(-0.4 - half), pytest.approx(-0.4 + half))
    assert p.observed == pytest.approx(0.2) and p.inside is True
    assert "OUTSIDE" not in "\n".join(accuracy.lines())
    assert accuracy.metrics()["ladder.r0_r1.short_bpb.agreement"] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_decision_accuracy_lands_on_the_study_mlflow_run(tmp_path, template_db):
    import shutil

    from mlflow import MlflowClient

    from search.optuna_view import study_view
    from tracking.hooks import MlflowSweepHooks
    from tracking.tracker import Tracker

    records, objectives, directions = _recorded()
    hypotheses = parse_hypotheses(HYPOTHESES)
    accuracy = ladder_accuracy(
        records, objectives, directions, lambda r, agg: evaluate(hypotheses, agg, lambda c: None)
    )
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copyfile(template_db, runs / "mlflow.db")
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    config = load_config(_ladder_file(tmp_path))
    hooks = MlflowSweepHooks(Tracker.for_study("lad", uri=uri, runs=runs))
    study = optuna.create_study(directions=["minimize"] * 3, study_name="lad")
    hooks.on_sweep_start(study_view(study), config)
    summary = SimpleNamespace(counts={"COMPLETE": 0}, wall_seconds=1.0, decision_accuracy=accuracy)
    hooks.on_sweep_end(study_view(study), config, summary)
    assert hooks.errors == []
    metrics = MlflowClient(tracking_uri=uri).get_run(hooks.tracker.parent_run_id).data.metrics
    assert metrics["ladder.r0_r1.short_bpb.agreement"] == pytest.approx(2 / 3)
    assert metrics["ladder.r0_r1.short_bpb.tau_high"] == pytest.approx(2 / math.sqrt(6))
    assert metrics["ladder.rope_beats_qknorm_short.r1.inside"] == 1.0
    assert metrics["ladder.rope_beats_qknorm_short.r0.effect"] == pytest.approx(-0.4)


def test_decision_accuracy_pieces():
    assert order_agreement({"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1}) == 0.0
    assert order_agreement({"a": 1}, {"a": 2}) is None
    assert kendall_tau({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "c": 3}) == pytest.approx(1.0)
    assert kendall_tau({"a": 1, "b": 1}, {"a": 1, "b": 2}) is None  # one order is all ties
    # A line through effects 0 at rung 0 and 1 at rung 1 (se 0.1 each) predicts 2 at rung 2,
    # with variance x' (X'WX)^-1 x + se^2 = 5 * 0.01 + 0.01 (x = [1, 2]).
    effects = [Effect(0, 0.0, 0.1, None, None, None, ""), Effect(1, 1.0, 0.1, None, None, None, "")]
    p = predict_next(effects, 2)
    assert p.method == "linear" and p.value == pytest.approx(2.0)
    assert p.high - p.value == pytest.approx(stats.norm.ppf(0.975) * math.sqrt(0.06))
    assert predict_next([Effect(0, 0.0, None, None, None, None, "")], 1) is None


# -- a real two-rung sweep ---------------------------------------------------------------


def _by_rung(study):
    trials = study.get_trials(deepcopy=False)
    return (
        [t for t in trials if rung_of(t.user_attrs) == 0],
        [t for t in trials if rung_of(t.user_attrs) == 1],
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ladder_sweep_promotes_links_and_resumes_between_rungs(
    tmp_path, runs_home, ray_local, monkeypatch
):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = _ladder_file(tmp_path)
    real_fit = ladder_mod.fit

    def killed(*args, **kwargs):  # the driver dies once rung 1 is queued, before it trains
        raise KeyboardInterrupt("driver killed between rungs")

    monkeypatch.setattr(ladder_mod, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        driver.submit(path, storage=url, progress=False)
    study = optuna.load_study(study_name="lad", storage=url)
    rung0, rung1 = _by_rung(study)
    assert len(rung0) == 3 and all(t.state == TrialState.COMPLETE for t in rung0)
    # Promoted: the best by short_bpb (top 1), plus rope and qknorm (the hypothesis).
    best = min(rung0, key=lambda t: t.values[1])
    expected = {best.number} | {t.number for t in rung0 if t.user_attrs[ATTR_PRESET] != "nope"}
    assert {t.user_attrs[ATTR_PROMOTED_FROM] for t in rung1} == expected
    assert all(t.state == TrialState.WAITING for t in rung1)
    rung0_before = {t.number: (t.values, t.datetime_complete) for t in rung0}

    monkeypatch.setattr(ladder_mod, "fit", real_fit)
    summary = driver.resume("lad", storage=url, progress=False)
    study = optuna.load_study(study_name="lad", storage=url)
    rung0, rung1 = _by_rung(study)
    # Rung 0 was not trained again: same trials, same values, nothing new.
    assert {t.number: (t.values, t.datetime_complete) for t in rung0} == rung0_before
    assert summary.trained == len(rung1) == len(expected)
    by_number = {t.number: t for t in rung0}
    for t in rung1:
        assert t.state == TrialState.COMPLETE, t.user_attrs.get(ATTR_REASON)
        below = by_number[t.user_attrs[ATTR_PROMOTED_FROM]]
        assert t.user_attrs[ATTR_LADDER_RUNG] == 1
        assert t.user_attrs[ATTR_LADDER_ORIGIN] == below.number
        assert t.user_attrs[ATTR_PRESET] == below.user_attrs[ATTR_PRESET]
        # Another model (d_model 64): another candidate id, budget, and twice the KV cache.
        assert t.user_attrs[ATTR_CANDIDATE_ID] != below.user_attrs[ATTR_CANDIDATE_ID]
        assert t.user_attrs[ATTR_BUDGET] != below.user_attrs[ATTR_BUDGET]
        assert t.values[2] == 2 * below.values[2]
    # The study counts its target in rung-0 candidates; the sweep's Pareto set is rung 0's.
    assert summary.counts["COMPLETE"] == 3 + len(expected)
    assert {row["trial"] for row in summary.pareto.rows} == set(by_number)
    accuracy = summary.decision_accuracy
    assert accuracy is not None and accuracy.rungs == (0, 1)
    assert {p.objective for p in accuracy.pairs} == {"long_acc", "short_bpb", "kv_cache_bytes"}
    assert all(p.pairs == len(expected) * (len(expected) - 1) // 2 for p in accuracy.pairs)
    (trend,) = accuracy.hypotheses
    assert [e.rung for e in trend.effects] == [0, 1]
    # The prediction checked now is the one the driver stated before rung 1 trained.
    stated = study.user_attrs[f"{STUDY_ATTR_LADDER_PREDICTIONS}1"]
    (p,) = trend.predictions
    assert stated[trend.hypothesis]["interval"] == pytest.approx([p.low, p.high])
    assert stated[trend.hypothesis]["observed"] is None and p.observed is not None

    # A resume of the finished ladder trains nothing; rung 0 cannot grow once promoted.
    again = driver.resume("lad", storage=url, progress=False)
    assert again.trained == 0
    with pytest.raises(StudyError, match="cannot grow"):
        driver.resume("lad", storage=url, trials=4, progress=False)
    assert target_trials(optuna.load_study(study_name="lad", storage=url)) == 3  # unchanged

    # The report compares candidates within rung 0 and has the ladder's section.
    paths = build_report(study, tmp_path / "report", load_config(path))
    data = json.loads(paths[SUMMARY_NAME].read_text())
    assert sorted(c["preset"] for c in data["candidates"]) == ["nope", "qknorm", "rope"]
    assert data["decision_accuracy"]["rungs"] == [0, 1]
    assert "Scale ladder: decision accuracy" in paths[MD_NAME].read_text()

    status = summarize(study)
    assert [r["rung"] for r in status["ladder"]["rungs"]] == [0, 1]
    assert status["ladder"]["decision_accuracy"]["pairs"]
    text = format_summary(status)
    assert "ladder:" in text and "rung 0 -> 1 short_bpb: agreement" in text


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ladder_driver_killed_inside_rung_one_resumes_there(tmp_path, runs_home, ray_local):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    # Rung 1 trains long enough (150 steps, a checkpoint every 15) to be killed inside it.
    ladder = {
        **LADDER,
        "rungs": [
            {"d_model": 32, "steps": 30},
            {"d_model": 64, "steps": 150, "eval_every": 15, "checkpoint_every": 15},
        ],
        "seeds": [2, 1],
    }
    path = _ladder_file(tmp_path, name="ladkill", ladder=ladder)
    env = {**os.environ, "ROPENOPE_HOME": str(runs_home)}
    cmd = [sys.executable, "-m", "search", "submit", str(path), "--storage", url]
    # The driver joins the test's Ray cluster: its trials die with it, as on a real crash.
    proc = subprocess.Popen(
        [*cmd, "--address", ray_local, "--quiet"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:

        def inside_rung_one() -> bool:
            try:
                study = optuna.load_study(study_name="ladkill", storage=url)
            except KeyError:
                return False
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            return any(
                rung_of(t.user_attrs) == 1 and len(t.intermediate_values) >= 2 for t in running
            )

        _wait_for(inside_rung_one, 400, "a rung-1 trial to pass its second evaluation")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    study = optuna.load_study(study_name="ladkill", storage=url)
    rung0, _ = _by_rung(study)
    rung0_before = {t.number: (t.values, t.datetime_complete) for t in rung0}
    assert all(t.state == TrialState.COMPLETE for t in rung0)

    summary = driver.resume("ladkill", storage=url, progress=False)
    assert summary.reconciled  # the rung-1 trial the dead driver left RUNNING
    study = optuna.load_study(study_name="ladkill", storage=url)
    rung0, rung1 = _by_rung(study)
    assert {t.number: (t.values, t.datetime_complete) for t in rung0} == rung0_before
    assert not any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))
    interrupted = [t for t in rung1 if t.user_attrs.get(ATTR_REASON) == Reason.INTERRUPTED]
    assert [t.number for t in interrupted] == summary.reconciled
    for t in interrupted:  # re-run at rung 1, with its links, from its checkpoint
        (rerun,) = [r for r in rung1 if r.user_attrs.get(ATTR_RERUN_OF) == t.number]
        assert rerun.state == TrialState.COMPLETE
        for key in (ATTR_PROMOTED_FROM, ATTR_LADDER_ORIGIN, ATTR_PRESET):
            assert rerun.user_attrs[key] == t.user_attrs[key]
        if len(t.intermediate_values) >= 2:  # it had trained: it continues, not from 0
            assert (rerun.user_attrs.get(ATTR_RESUMED_FROM_STEP) or 0) >= 30
    assert any(len(t.intermediate_values) >= 2 for t in interrupted)
    promoted = {t.user_attrs[ATTR_PROMOTED_FROM] for t in rung1}
    done = [t for t in rung1 if t.state == TrialState.COMPLETE]
    assert {t.user_attrs[ATTR_PROMOTED_FROM] for t in done} == promoted


def test_ladder_mup_hands_rung_zero_learning_rate_to_the_promoted_trials(tmp_path):
    # µP: the learning rate rung 0's pilots chose holds at the larger widths, so a promoted
    # trial carries it and its rung trains without pilots; the standard parametrization
    # searches again at every rung.
    from space.trial_attrs import ATTR_CANDIDATE_ID, ATTR_KNOBS, ATTR_LR

    search = {"values": [1e-3, 3e-3], "steps": 10}
    mup = load_config(
        _ladder_file(
            tmp_path,
            "mup",
            model={"parametrization": "mup", "base_d_model": 32},
            train={"lr_search": search},
        )
    )
    standard = load_config(_ladder_file(tmp_path, "sp", train={"lr_search": search}))
    assert apply_rung(mup, 1).train.lr_search is None
    assert apply_rung(standard, 1).train.lr_search is not None
    assert mup.train.lr_search is not None  # rung 0 searches

    for config, handed in ((mup, True), (standard, False)):
        study = optuna.create_study(directions=config.directions())
        objectives = config.objective_names()
        for i, (preset, lr) in enumerate((("rope", 3e-3), ("nope", 1e-3), ("qknorm", 1e-3))):
            candidate = config.preset_candidate(preset)
            values = [1.0 + i if name == "short_bpb" else 0.5 for name in objectives]
            study.add_trial(
                optuna.trial.create_trial(
                    values=values,
                    user_attrs={
                        ATTR_CANDIDATE_ID: candidate.id,
                        ATTR_KNOBS: candidate.knobs,
                        ATTR_PRESET: preset,
                        ATTR_LR: lr,
                    },
                )
            )
        queued = ladder_mod.queue_promotions(study, config, 1)
        assert {p.trial.user_attrs[ATTR_PRESET] for p in queued} >= {"rope"}  # best short_bpb
        waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
        assert len(waiting) == len(queued) >= 1
        for t in waiting:
            below = study.trials[t.user_attrs[ATTR_PROMOTED_FROM]].user_attrs[ATTR_LR]
            assert t.user_attrs.get(ATTR_LR) == (below if handed else None)
