"""score.calibrate: the difficulty ladder, the choice of a level inside the band, the
schema, the pilot on a panel, and a study that keeps its calibration when resumed."""

from __future__ import annotations

import optuna
import pytest

from search.calibration import calibrated, with_calibration
from space.errors import ConfigError
from space.names import STUDY_ATTR_CALIBRATION
from space.schema import parse_config
from space.tasks import min_length
from workers.calibrate import Calibration, ladder, pick_level, pilot

BASE = {
    "study": {"name": "cal", "trials": 2},
    "space": {"global_every": {"choice": [1, 4]}},
    "model": {"layers": 4, "d_model": 32, "heads": 2, "mlp_hidden": 64, "init_std": 0.08},
    "train": {"seq_len": 96, "batch_size": 4, "steps": 10, "eval_every": 10,
              "task_mix": {"passkey": 1.0}},
    "score": {"tasks": ["passkey", "mqar"], "lengths": [1, 2], "samples": 2,
              "calibrate": {"panel": ["rope", "rnope_swa"], "band": [0.2, 0.9]}},
    "presets": ["rope", {"name": "rnope_swa", "knobs": {"local_window": 16}}],
}  # fmt: skip


def _config(**score):
    raw = {**BASE, "score": {**BASE["score"], **score}}
    return parse_config(raw)


def test_ladder_doubles_the_difficulty_while_an_example_fits():
    assert ladder("passkey", {"key_kind": "word"}, 96) == (0, 1, 2, 4)
    pairs = ladder("mqar", {}, 96)
    assert pairs[0] == 2 and all(b == 2 * a for a, b in zip(pairs, pairs[1:], strict=False))
    assert min_length("mqar", n_pairs=pairs[-1]) <= 96 < min_length("mqar", n_pairs=2 * pairs[-1])


def test_pick_level_prefers_the_widest_spread_inside_the_band():
    accuracy = {
        "rope": {1: 1.0, 2: 0.85, 4: 0.5, 8: 0.1},
        "hybrid": {1: 1.0, 2: 0.9, 4: 0.8, 8: 0.3},
    }
    assert pick_level(accuracy, (0.2, 0.9)) == (4, True)  # 2 is inside too, but narrower
    # None inside: the level least far outside, then the easier one.
    saturated = {"rope": {1: 1.0, 2: 1.0}, "hybrid": {1: 1.0, 2: 0.95}}
    assert pick_level(saturated, (0.2, 0.9)) == (2, False)
    with pytest.raises(ValueError, match="no difficulty level"):
        pick_level({"rope": {1: 1.0}, "hybrid": {2: 1.0}}, (0.2, 0.9))


def test_pilot_picks_a_difficulty_inside_the_band_for_a_fixture_panel(tmp_path):
    config = _config()
    calls = []

    def scorer(preset, candidate, levels):  # accuracy falls with difficulty, faster for rope
        calls.append((preset, candidate.name))
        by_step = (0.9, 0.5, 0.1, 0.0) if preset == "rope" else (1.0, 0.85, 0.7, 0.55)
        return {
            task: {lv: by_step[min(i, 3)] for i, lv in enumerate(lv_list)}
            for task, lv_list in levels.items()
        }

    found = pilot(config, out_dir=tmp_path, scorer=scorer)
    assert [p for p, _ in calls] == ["rope", "rnope_swa"]
    assert set(found) == {"passkey", "mqar"}
    for task, c in found.items():
        assert (
            c.inside and c.parameter == {"passkey": "prefix_distractors", "mqar": "n_pairs"}[task]
        )
        assert all(0.2 <= c.accuracy[p][c.level] <= 0.9 for p in ("rope", "rnope_swa"))
    # The second rung of each ladder: rope 0.5, the hybrid 0.85.
    assert found["passkey"].level == 1 and found["mqar"].level == 4
    assert Calibration.from_dict(found["mqar"].to_dict()) == found["mqar"]


def test_a_resumed_study_scores_with_the_stored_difficulty(tmp_path):
    config = _config()
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    runs = []

    def run_pilot(cfg, out_dir, corpus):
        runs.append(out_dir)
        return {"mqar": Calibration("mqar", "n_pairs", 4, True, {"rope": {4: 0.5}})}

    first = calibrated(study, config, tmp_path, note=lambda _: None, run_pilot=run_pilot)
    assert first.score.task_params == {"mqar": {"n_pairs": 4}}
    assert first.score.params_for("mqar", first.train.task_params) == {"n_pairs": 4}
    assert study.user_attrs[STUDY_ATTR_CALIBRATION]["mqar"]["level"] == 4
    # A later driver (resume) reads the study's choice and never runs the pilot again.
    notes = []
    again = calibrated(study, config, tmp_path, note=notes.append, run_pilot=run_pilot)
    assert len(runs) == 1 and again.score.task_params == first.score.task_params
    assert "n_pairs=4" in notes[0]
    # Without score.calibrate, nothing changes.
    raw = {**BASE, "score": {k: v for k, v in BASE["score"].items() if k != "calibrate"}}
    plain = parse_config(raw)
    assert calibrated(study, plain, tmp_path, run_pilot=run_pilot) is plain


def test_calibration_keeps_other_scoring_parameters():
    config = _config(task_params={"mqar": {"n_queries": 1}})
    out = with_calibration(config, {"mqar": Calibration("mqar", "n_pairs", 8, False)})
    assert out.score.task_params == {"mqar": {"n_queries": 1, "n_pairs": 8}}


@pytest.mark.parametrize(
    "score, path, words",
    [
        ({"calibrate": {"panel": ["gemma9"]}}, "score.calibrate.panel", "unknown preset"),
        ({"calibrate": {"panel": ["rope"], "band": [0.9, 0.2]}}, "score.calibrate.band", "low"),
        (
            {"calibrate": {"panel": ["rope"], "levels": {"vartrack": [1]}}},
            "score.calibrate.levels.vartrack",
            "not scored",
        ),
        (
            {"calibrate": {"panel": ["rope"], "levels": {"mqar": [1000]}}},
            "score.calibrate.levels.mqar",
            "key_vocab",
        ),
        ({"task_params": {"mqar": {"n_pairs": 40}}}, "score.task_params.mqar", "needs at least"),
        ({"task_params": {"passkey": {"bogus": 1}}}, "score.task_params.passkey", "unknown"),
    ],
)
def test_schema_checks_calibrate_and_scoring_parameters_with_their_path(score, path, words):
    with pytest.raises(ConfigError) as info:
        _config(**score)
    problems = dict(info.value.problems)
    assert path in problems, info.value.problems
    assert words in problems[path]


@pytest.mark.slow
def test_pilot_trains_the_panel_and_scores_each_level_at_T(tmp_path):
    # The real pilot on a tiny model: it trains each panel preset (10 steps), reloads its
    # checkpoint and scores every rung of each ladder; the choice is one of those rungs.
    config = _config(
        tasks=["passkey"],
        calibrate={"panel": ["rope", "rnope_swa"], "steps": 10, "samples": 1},
    )
    found = pilot(config, out_dir=tmp_path)
    (c,) = found.values()
    assert c.task == "passkey" and c.parameter == "prefix_distractors"
    assert set(c.accuracy) == {"rope", "rnope_swa"}
    rungs = ladder("passkey", {}, 96)
    assert all(tuple(by_level) == rungs for by_level in c.accuracy.values())
    assert c.level in rungs
    assert all(0.0 <= a <= 1.0 for by_level in c.accuracy.values() for a in by_level.values())
    assert (tmp_path / "rope" / "checkpoint.pt").exists()
