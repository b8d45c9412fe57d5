"""The 2025 hybrid presets (jamba_like, olmo_hybrid_like, mimo_like), the hypotheses of
configs/hypotheses/hybrids_2025.yaml and the sweep that tests them, configs/mixers.yaml.
Cached greedy decoding of every shipped preset equals uncached: tests/test_kv_cache.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from space import BUILTIN_PRESETS, ModelShape, build_candidate, load_config

REPO = Path(__file__).resolve().parent.parent
SHAPE = ModelShape(n_layers=8, d_model=32, n_heads=4, n_kv_heads=4, mlp_hidden=48, vocab_size=64)


def _layers(name: str):
    return build_candidate(dict(BUILTIN_PRESETS[name]), SHAPE, 64).layers


def test_hybrids_2025_presets_place_their_layers():
    jamba = _layers("jamba_like")
    assert [s.index for s in jamba if s.kind.value == "global"] == [7]
    assert {s.mixer.value for s in jamba[:7]} == {"mamba2"}
    assert (jamba[7].mixer.value, jamba[7].position.value) == ("softmax", "nope")

    olmo = _layers("olmo_hybrid_like")
    assert [s.mixer.value for s in olmo] == (["gated_deltanet"] * 3 + ["softmax"]) * 2
    assert {s.position.value for s in olmo} == {"nope"}

    mimo = _layers("mimo_like")  # the first layer global, then every 6th
    assert [s.index for s in mimo if s.kind.value == "global"] == [0, 5]
    assert [s.attention_sink.value for s in mimo] == [
        "none" if i in (0, 5) else "learned" for i in range(8)
    ]
    assert [s.window_tokens for s in mimo] == [None if i in (0, 5) else 128 for i in range(8)]
    assert {s.rope_base for s in mimo} == {10000.0, 5000000.0}


def _mixers_config():
    return load_config(REPO / "configs" / "mixers.yaml")


def test_hybrids_2025_hypotheses_load_with_the_mixers_sweep():
    config = _mixers_config()
    assert [h.name for h in config.hypotheses] == [
        "output_gate_lowers_sink_mass",
        "recall_rises_from_7to1_to_3to1",
        "smaller_window_keeps_long_recall",
    ]
    assert config.study.trials == len(config.presets)  # exactly the presets below
    named = {side.preset for h in config.hypotheses for m in h.measures for side in (m.a, m.b)}
    assert named == {
        "rnope_swa_gated",
        "rnope_swa",
        "olmo_hybrid_like",
        "olmo_hybrid_7to1",
        "swax_w8",
        "swax_w32",
    }
    assert named <= set(config.presets)  # the sweep runs every candidate they name


def test_hybrids_2025_each_where_selects_its_preset_alone():
    """A study that sampled its candidates falls back to ``where``: among the sweep's
    presets, each side's predicate picks exactly the preset it stands in for."""
    config = _mixers_config()
    layers = {name: config.preset_candidate(name).layers for name in config.presets}
    for h in config.hypotheses:
        for m in h.measures:
            for side in (m.a, m.b):
                fits = [name for name, stack in layers.items() if side.where.matches(stack)]
                assert fits == [side.preset], (h.name, side.preset, fits)


def test_hybrids_2025_seed_plan_gives_the_compared_candidates_three_seeds():
    pytest.importorskip("optuna")
    from search.seed_rounds import first_seeds

    config = _mixers_config()
    seeds = {
        name: first_seeds(config, config.preset_candidate(name), name) for name in config.presets
    }
    compared = {"rnope_swa", "rnope_swa_gated", "olmo_hybrid_like", "olmo_hybrid_7to1"}
    compared |= {"swax_w8", "swax_w32"}
    assert {name for name, s in seeds.items() if s == (0, 1, 2)} == compared
    assert {name for name, s in seeds.items() if s == (0,)} == set(config.presets) - compared


def test_hybrids_2025_layer_match_selects_by_mixer_and_gate():
    from space.predicates import Predicate

    gdn = Predicate.model_validate({"local": {"mixer": "gated_deltanet"}})
    assert gdn.matches(_layers("olmo_hybrid_like"))
    assert not gdn.matches(_layers("jamba_like"))
    gated = Predicate.model_validate({"global": {"output_gate": ["headwise", "elementwise"]}})
    assert gated.matches(_layers("qwen3_next_like"))
    assert not gated.matches(_layers("olmo_hybrid_like"))
    with pytest.raises(ValueError, match="mixer"):
        Predicate.model_validate({"local": {"mixer": "mamba"}})
