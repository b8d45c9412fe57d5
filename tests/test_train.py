"""The training loop and the per-candidate pipeline (no Ray, no MLflow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from space.schema import load_config
from space.sections import StageSection, TrainSection
from workers.candidate import run_candidate
from workers.model import HybridTransformer
from workers.train import lr_at, train

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "data" / "tiny.yaml"


def test_lr_at_warmup_then_cosine_to_floor():
    (s,) = TrainSection(
        steps=110, batch_size=1, seq_len=8, lr=1.0, min_lr_ratio=0.1, warmup_steps=10
    ).stage_plans()
    assert lr_at(0, s) == pytest.approx(0.1)
    assert lr_at(9, s) == pytest.approx(1.0)
    assert lr_at(10, s) == pytest.approx(1.0)
    assert lr_at(60, s) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_at(110, s) == pytest.approx(0.1)


def _tiny_model(seed: int = 0) -> HybridTransformer:
    config = load_config(TINY)
    torch.manual_seed(seed)
    cand = config.preset_candidate("rnope_swa")
    return HybridTransformer(cand.shape, cand.layers)


def _batches(rng: np.random.Generator, stage: int = 0):
    x = torch.from_numpy(rng.integers(0, 256, size=(4, 16)))
    y = torch.roll(x, -1, dims=1)
    return x, y, torch.ones_like(x, dtype=torch.float32)


def _evaluate(model, stage: int = 0):
    return {"val_bpb": 1.0}


def _run(settings, model, path, *, stop_at=None, resume=True):
    losses = {}

    def on_step(step, loss, tps):
        losses[step] = loss

    def on_eval(metrics):
        return stop_at is not None and metrics["step"] >= stop_at

    out = train(
        model,
        settings,
        _batches,
        _evaluate,
        seed=settings.seed,
        device=torch.device("cpu"),
        on_eval=on_eval,
        on_step=on_step,
        checkpoint_path=path,
        resume=resume,
    )
    return out, losses


def test_train_resume_continues_with_same_losses(tmp_path):
    settings = TrainSection(
        steps=12, batch_size=4, seq_len=16, eval_every=3, warmup_steps=2, seed=3
    )
    full, full_losses = _run(settings, _tiny_model(), tmp_path / "a.pt", resume=False)
    assert full.status == "complete" and len(full_losses) == 12

    first, first_losses = _run(settings, _tiny_model(), tmp_path / "b.pt", stop_at=6)
    assert first.status == "stopped" and first.step == 6
    # A new process would build a freshly initialised model: use another init to prove
    # that everything comes from the checkpoint.
    second, second_losses = _run(settings, _tiny_model(seed=99), tmp_path / "b.pt")
    assert second.status == "complete" and second.resumed_from_step == 6
    assert sorted(second_losses) == list(range(7, 13))  # on_step counts steps done
    for step in range(1, 13):
        got = first_losses.get(step, second_losses.get(step))
        assert got == pytest.approx(full_losses[step], rel=1e-5, abs=1e-6), step
    assert [h["train_loss"] for h in second.history] == pytest.approx(
        [h["train_loss"] for h in full.history], rel=1e-5
    )


def test_train_divergence_is_an_outcome_with_last_good_metrics(tmp_path):
    settings = TrainSection(
        steps=50, batch_size=4, seq_len=16, lr=1e12, warmup_steps=0, eval_every=1, grad_clip=1e30
    )
    out, _ = _run(settings, _tiny_model(), None)
    assert out.status == "diverged"
    assert "non-finite" in out.reason
    assert out.step < 50
    assert out.last_metrics and math.isfinite(out.last_metrics["train_loss"])


def test_run_candidate_scores_and_artifacts(tmp_path):
    config = load_config(TINY)
    cand = config.preset_candidate("rope")
    result = run_candidate(config, cand, seed=0, out_dir=tmp_path, threads=1)
    assert result.status == "complete"
    s = result.scores
    keys = ("short_bpb", "long_acc", "acc_at_T", "acc@2x", "extrap_bpb@2x", "extrap_bpb@4x")
    for key in (*keys, "key_token_bpb"):
        assert math.isfinite(s[key]), key
    assert 0 <= s["long_acc"] <= 1 and 0 < s["short_bpb"] < 12
    assert s["params"] == sum(
        p.numel() for p in HybridTransformer(cand.shape, cand.layers).parameters()
    )
    assert s["tokens_per_s"] > 0 and s["peak_memory_bytes"] > 0
    # KV cache of 4 full layers: 2 (K,V) * kv_heads * head_dim * context * 2 bytes.
    assert s["kv_cache_bytes"] == 4 * 2 * 2 * 16 * 131072 * 2
    assert result.niah["lengths"] == [48, 96]
    assert set(result.attention_mass) == {"1x", "4x"}
    for name in ("candidate.yaml", "niah.png", "loss_curves.png", "scores.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["scores"]["short_bpb"] == pytest.approx(s["short_bpb"])


@pytest.mark.slow  # trains a model in a subprocess
def test_cli_train_json(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "search.cli",
            "train",
            str(TINY),
            "--preset",
            "rnope_swa",
            "--set",
            "local_window=8",
            "--out",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in (
        "short_bpb",
        "long_acc",
        "acc_at_T",
        "niah",
        "kv_cache_bytes",
        "params",
        "tokens_per_s",
        "status",
    ):
        assert key in data, key
    assert data["status"] == "complete"
    assert "swa8" in data["candidate"]
    assert (tmp_path / "niah.png").exists()


def test_cli_train_unknown_knob_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "search.cli", "train", str(TINY), "--set", "windw=8"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 2 and "windw" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------- training stages


def _staged_batches(rng: np.random.Generator, stage: int):
    seq_len = (16, 24)[stage]  # each stage its own rows
    x = torch.from_numpy(rng.integers(0, 256, size=(4, seq_len)))
    return x, torch.roll(x, -1, dims=1), torch.ones_like(x, dtype=torch.float32)


def test_train_stages_run_in_order_with_their_own_rows_and_schedules(tmp_path):
    settings = TrainSection(
        batch_size=4,
        seq_len=16,
        eval_every=4,
        stages=(
            StageSection(steps=5, seq_len=16, batch_size=4, lr=1e-2, warmup_steps=2),
            StageSection(steps=4, seq_len=24, batch_size=4, lr=1e-3, warmup_steps=2),
        ),
    )
    begun, between, seen = [], [], []

    def batches(rng, stage):
        seen.append(stage)
        return _staged_batches(rng, stage)

    out = train(
        _tiny_model(),
        settings,
        batches,
        _evaluate,
        seed=1,
        device=torch.device("cpu"),
        checkpoint_path=tmp_path / "c.pt",
        begin_stage=begun.append,
        between_stages=lambda stage, model: between.append(stage) or {"stage1/x": 1.0},
    )
    assert out.status == "complete" and out.step == 9 and out.stage == 1
    assert begun == [0, 1] and between == [0] and seen == [0] * 5 + [1] * 4
    assert out.stage_results == {0: {"stage1/x": 1.0}}
    # evaluations every 4 steps and at each stage's end; the stage and its tokens recorded
    assert [h["step"] for h in out.history] == [4, 5, 8, 9]
    assert [h["stage"] for h in out.history] == [1, 1, 2, 2]
    assert out.history[-1]["tokens"] == 5 * 4 * 16 + 4 * 4 * 24
    # each stage warms up and decays on its own: step 6 is the second step of stage 2
    assert out.history[2]["lr"] == pytest.approx(lr_at(2, settings.stage_plans()[1]))
    assert lr_at(0, settings.stage_plans()[1]) == pytest.approx(5e-4)
    state = torch.load(tmp_path / "c.pt", weights_only=False)
    assert state["step"] == 9 and state["extra"]["stage"] == 1
    assert state["extra"]["stage_results"] == {0: {"stage1/x": 1.0}}


class Crash(RuntimeError):
    """A kill between two checkpoints: the process's state is lost, the files stay."""


TWO_STAGE = {
    "study": {"name": "staged"},
    "model": {"layers": 2, "d_model": 32, "heads": 2, "mlp_hidden": 64, "init_std": 0.08},
    "space": {"global_every": 2, "local_window": 8},
    "train": {
        "seq_len": 32,
        "batch_size": 4,
        "warmup_steps": 2,
        "eval_every": 4,
        "checkpoint_every": 3,
        "eval_windows": 2,
        "lm_fraction": 0.5,
        "task_mix": {"passkey": 1.0},
        "stages": [
            {"steps": 7},
            {
                "steps": 6,
                "seq_len": 48,
                "lr": 1.0e-3,
                "knobs": {
                    "global_rope_base": 1.0e5,
                    "rope_scaling": "yarn",
                    "rope_scaling_factor": 2,
                },
            },
        ],
    },
    "score": {
        "task": "passkey",
        "lengths": [1, 2],
        "depths": [0.0, 1.0],
        "samples": 2,
        "extrap": [2],
        "val_windows": 2,
        "mass_lengths": [1],
        "mass_samples": 2,
        "after_each_stage": True,
    },
}


def _run_staged(config, out_dir, crash_at=None):
    def on_step(step, loss, tps):
        if step == crash_at:
            raise Crash(f"killed at step {step}")

    return run_candidate(
        config, config.candidate({}), seed=0, out_dir=out_dir, threads=1, on_step=on_step
    )


def test_stage_study_scored_and_gated_at_the_final_stage_length(monkeypatch):
    """Beyond T starts past the length the model was last trained at (48, not the first
    stage's 32), and acc@1x, which the competence gate reads, is taken at 48."""
    from types import SimpleNamespace

    from space.names import ACC_AT_T, LONG_ACC, SHORT_BPB, extrap_bpb
    from space.schema import parse_config
    from workers import candidate, key_tokens, scores

    config = parse_config(TWO_STAGE)
    assert config.train.seq_len == 32 and config.train.final_seq_len == 48

    def grid(model, val, *, task, lengths, depths, **_):  # every cell: length / 100
        cells = tuple(tuple(n / 100 for _ in depths) for n in lengths)
        return scores.NiahResult(
            lengths=tuple(lengths),
            depths=tuple(depths),
            acc=cells,
            task=task,
            answer_nll=cells,
            token_acc=cells,
        )

    bpb_lengths = []

    def bpb(model, val, length, **_):
        bpb_lengths.append(length)
        return float(length)

    def by_position(model, val, length, train_len, **_):
        return {2: float(length + train_len)}

    monkeypatch.setattr(scores, "niah_grid", grid)
    monkeypatch.setattr(scores, "bits_per_byte", bpb)
    monkeypatch.setattr(scores, "bits_per_byte_by_position", by_position)
    key_lengths = []

    def key(model, val, seq_len, **_):
        key_lengths.append(seq_len)
        return SimpleNamespace(bpb=float(seq_len) / 2)

    monkeypatch.setattr(key_tokens, "key_tokens", key)
    data = SimpleNamespace(val=None, tokenizer=SimpleNamespace(count_bytes=None))
    data.vocab = SimpleNamespace(doc=None)
    grids = candidate.retrieval_grids(None, config, data, torch.device("cpu"), items=1)
    assert grids["passkey"].lengths == (48, 96)
    got = candidate.retrieval_scores(config, grids)
    assert got[ACC_AT_T] == pytest.approx(0.48) and got[LONG_ACC] == pytest.approx(0.96)
    language = candidate.language_scores(None, config, data, torch.device("cpu"))
    assert bpb_lengths == [48, 96]
    assert language[SHORT_BPB] == 48.0 and language[extrap_bpb(2)] == 96.0
    assert language["bucket_bpb@2x"] == 96.0 + 48.0
    assert key_lengths == [48] and language["key_token_bpb"] == 24.0  # at the final T


def test_run_candidate_two_stages_resumes_exactly_after_a_kill_in_either_stage(tmp_path):
    from space.schema import parse_config

    config = parse_config(TWO_STAGE)
    cand = config.candidate({})
    assert cand.multi_stage and cand.final_layers[1].rope_scaling is not None

    whole = _run_staged(config, tmp_path / "whole")
    assert whole.status == "complete" and whole.resumed_from_step is None

    killed = tmp_path / "killed"
    with pytest.raises(Crash):  # stage 1, 1 step after the checkpoint at step 4
        _run_staged(config, killed, crash_at=5)
    with pytest.raises(Crash):  # stage 2, 2 steps after the checkpoint at step 9
        _run_staged(config, killed, crash_at=11)
    assert torch.load(killed / "checkpoint.pt", weights_only=False)["extra"]["stage"] == 1
    resumed = _run_staged(config, killed)
    assert resumed.status == "complete" and resumed.resumed_from_step == 9

    def final_weights(folder):
        return torch.load(folder / "checkpoint.pt", weights_only=False)["model"]

    want = final_weights(tmp_path / "whole")
    for name, tensor in final_weights(killed).items():
        assert torch.equal(tensor, want[name]), name
    timing = {"tokens_per_s", "train_seconds", "peak_memory_bytes"}

    def untimed(history):
        return [{k: v for k, v in h.items() if k not in timing} for h in history]

    assert untimed(resumed.history) == untimed(whole.history)
    assert {k: v for k, v in resumed.scores.items() if k not in timing} == {
        k: v for k, v in whole.scores.items() if k not in timing
    }
    # scores after each stage, the last one's equal to the final scores
    for key in ("short_bpb", "acc@2x", "extrap_bpb@2x"):
        assert math.isfinite(whole.scores[f"stage1/{key}"])
        assert whole.scores[f"stage2/{key}"] == whole.scores[key]
    assert (tmp_path / "whole" / "stage1" / "niah.png").exists()
    assert [h["stage"] for h in whole.history] == [1, 1, 2, 2, 2]
