"""A family's difficulty parameter moves a trained model's accuracy monotonically.

A tiny RoPE model (2 layers, d_model 64) is trained on passkey at T = 48 for 300 steps through the calibration pilot's own path (``workers.calibrate.train_and_score``:
train, reload the checkpoint, greedy accuracy at T on each level), then scored with 0, 1
and 5 prefix distractors (passkey's difficulty parameter, ``space.tasks.DIFFICULTY``):
needles with other keys that a model must tell apart from the asked one, which a model
trained on single needles never had to do.
"""

from __future__ import annotations

import pytest

from space.schema import parse_config
from space.tasks import DIFFICULTY
from workers.calibrate import train_and_score
from workers.corpus import prepare

LEVELS = (0, 1, 5)
TINY_PASSKEY = {
    "study": {
        "name": "difficulty",
        "trials": 1,
        "objectives": [{"metric": "acc_at_T", "direction": "maximize"}],
    },
    "space": {"global_every": {"choice": [1]}},
    "model": {"layers": 2, "d_model": 64, "heads": 2, "mlp_hidden": 128, "init_std": 0.08},
    "train": {
        "seq_len": 48,
        "batch_size": 16,
        "steps": 300,  # retrieval emerges abruptly near here: at 220 steps acc@T was 0.4
        "eval_every": 300,
        "warmup_steps": 20,
        "lm_fraction": 0.0,
        "threads": 1,
        "task_mix": {"passkey": 1.0},
        "task_params": {"passkey": {"value_len": 2, "query_gap_tokens": 2, "begin_tokens": 1}},
    },
    "data": {"max_text_bytes": 400_000},
    "score": {
        "task": "passkey",
        "lengths": [1],
        "calibrate": {"panel": ["rope"], "samples": 8},
    },
    "presets": ["rope"],
}


@pytest.mark.slow  # trains a tiny model (10 s here, one thread)
def test_prefix_distractors_lower_a_trained_models_accuracy_monotonically(tmp_path):
    assert DIFFICULTY["passkey"] == "prefix_distractors"
    config = parse_config(TINY_PASSKEY)
    got = train_and_score(
        config,
        config.preset_candidate("rope"),
        {"passkey": LEVELS},
        out_dir=tmp_path,
        corpus=prepare(config, tmp_path / "cache", progress=False),
        device="cpu",
    )
    acc = [got["passkey"][level] for level in LEVELS]
    print("accuracy by prefix_distractors", dict(zip(LEVELS, acc, strict=True)))
    assert acc[0] >= 0.8, acc  # the model learned the task without distractors ...
    assert all(a >= b for a, b in zip(acc, acc[1:], strict=False)), acc  # ... monotone ...
    assert acc[-1] <= acc[0] - 0.5, acc  # ... and lost most of it with five
