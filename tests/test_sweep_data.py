"""A sweep on a BPE-tokenized corpus with two task families: every score, one corpus build."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from engines import tiny_config_file
from optuna.trial import TrialState

from search import driver
from space.trial_attrs import ATTR_TRIAL_DIR
from workers.corpus import BUILD_LOG, CORPUS_DIR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FAMILIES = ("passkey", "multiquery")
OBJECTIVES = [
    {"metric": "long_acc", "direction": "maximize"},
    {"metric": "multiquery/long_answer_nll", "direction": "minimize"},
    {"metric": "short_bpb", "direction": "minimize"},
]


def _expected_scores() -> set[str]:
    per_family = ["acc_at_T", "long_acc", "long_answer_nll"]
    per_family += [f"{s}@{m}x" for s in ("acc", "answer_nll", "token_acc") for m in (1, 2)]
    names = {"short_bpb", "extrap_bpb@2x", "kv_cache_bytes", "params", "tokens_per_s"}
    names |= set(per_family)
    names |= {f"{task}/{name}" for task in FAMILIES for name in per_family}
    return names


def test_sweep_with_a_bpe_tokenizer_completes_every_score_and_builds_the_corpus_once(
    tmp_path, runs_home, ray_local
):
    path = tiny_config_file(
        tmp_path / "bpe.yaml",
        study={"name": "bpe", "trials": 2, "objectives": OBJECTIVES},
        # A byte-level BPE of 512 tokens trained on (the first MB of) the embedded corpus.
        data={"tokenizer": {"bpe": {"vocab_size": 512}}, "max_text_bytes": 1_000_000},
        train={"seq_len": 64, "task_mix": {"passkey": 1.0, "multiquery": 1.0}},
        score={"tasks": list(FAMILIES), "long_tasks": list(FAMILIES)},
        presets=[
            "rope",
            {
                "name": "hybrid",
                "knobs": {"global_every": 2, "global_position": "nope", "local_window": 16},
            },
        ],
    )
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = driver.submit(path, storage=url, progress=False)
    assert first.counts["COMPLETE"] == 2

    study = optuna.load_study(study_name="bpe", storage=url)
    log = runs_home / "cache" / CORPUS_DIR / BUILD_LOG
    (build,) = [json.loads(line) for line in log.read_text().splitlines()]
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        missing = _expected_scores() - set(trial.user_attrs)
        assert not missing, missing
        for name in _expected_scores():
            assert math.isfinite(trial.user_attrs[name]), name
        # long_acc averages both families (score.long_tasks).
        mean = (trial.user_attrs["passkey/long_acc"] + trial.user_attrs["multiquery/long_acc"]) / 2
        assert trial.user_attrs["long_acc"] == pytest.approx(mean)
        # The trial read the driver's corpus: the BPE vocabulary and the one cache entry.
        seed = json.loads(
            (Path(trial.user_attrs[ATTR_TRIAL_DIR]) / "seed_0" / "scores.json").read_text()
        )
        assert seed["corpus"]["key"] == build["key"] and seed["corpus"]["tokenizer"] == "bpe"
        assert seed["candidate"]["shape"]["vocab_size"] == 576  # 512 + 8 controls, padded
        assert set(seed["niah"]["tasks"]) == set(FAMILIES)
        assert (Path(trial.user_attrs[ATTR_TRIAL_DIR]) / "seed_0" / "niah_multiquery.png").is_file()

    # A second sweep (one more trial) reuses the cache: still one build.
    second = driver.submit(path, storage=url, trials=3, progress=False)
    assert second.counts["COMPLETE"] == 3
    assert len(log.read_text().splitlines()) == 1
