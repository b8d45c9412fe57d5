"""The space: knob parsing, layer expansion, presets, candidate ids, bad sweep files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from space import (
    BUILTIN_PRESETS,
    ConfigError,
    InvalidCandidate,
    LayerKind,
    ModelShape,
    Position,
    QKNorm,
    build_candidate,
    global_layer_indices,
    load_config,
    parse_config,
)
from space.schema import parse_yaml

REPO = Path(__file__).resolve().parent.parent

SHAPE = ModelShape(n_layers=12, d_model=64, n_heads=4, n_kv_heads=4, mlp_hidden=128, vocab_size=264)

BASE = {
    "study": {"name": "t"},
    "model": {"layers": 4, "d_model": 64, "heads": 4, "mlp_hidden": 128},
    "train": {"seq_len": 64, "batch_size": 2, "steps": 10},
}


def _config(**sections):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


# -- layer layouts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "expected"),
    [(0, ()), (1, tuple(range(12))), (4, (3, 7, 11)), (6, (5, 11)), (12, (11,)), (5, (4, 9))],
)
def test_global_layer_indices_follow_hf_convention(k, expected):
    assert global_layer_indices(12, k) == expected


def _kinds(cand):
    return [layer.kind for layer in cand.layers]


def test_expand_every_preset_exact_layout():
    expected_globals = {
        "rope": set(range(12)),
        "qknorm": set(range(12)),
        "nope": set(range(12)),
        "rnope_swa": {3, 7, 11},
        "rnope": {3, 7, 11},
        "gemma3_like": {5, 11},
        "llama4_like": {3, 7, 11},
        "gptoss_like": {1, 3, 5, 7, 9, 11},
        "cohere2_like": {3, 7, 11},
    }
    assert set(expected_globals) == set(BUILTIN_PRESETS)
    for name, globals_ in expected_globals.items():
        cand = build_candidate(BUILTIN_PRESETS[name], SHAPE, train_seq_len=64)
        got = {layer.index for layer in cand.layers if layer.kind is LayerKind.GLOBAL}
        assert got == globals_, name
        assert [layer.index for layer in cand.layers] == list(range(12))


def test_expand_rnope_swa_attributes():
    cand = build_candidate(BUILTIN_PRESETS["rnope_swa"], SHAPE, train_seq_len=64)
    for layer in cand.layers:
        if layer.index in (3, 7, 11):
            assert (layer.position, layer.rope_base, layer.window_tokens) == (
                Position.NOPE,
                None,
                None,
            )
        else:
            assert (layer.position, layer.rope_base, layer.window_tokens) == (
                Position.ROPE,
                10000.0,
                64,
            )
        assert layer.qk_norm is QKNorm.NONE and layer.temperature is None


def test_expand_gemma3_two_bases_and_qknorm():
    cand = build_candidate(BUILTIN_PRESETS["gemma3_like"], SHAPE, train_seq_len=64)
    bases = {layer.index: layer.rope_base for layer in cand.layers}
    assert bases[5] == bases[11] == 1e6
    assert all(bases[i] == 1e4 for i in range(12) if i not in (5, 11))
    assert all(layer.qk_norm is QKNorm.PRE_ROPE for layer in cand.layers)
    assert cand.layers[5].window_tokens is None and cand.layers[0].window_tokens == 64


def test_expand_llama4_temperature_only_on_nope_globals():
    cand = build_candidate(BUILTIN_PRESETS["llama4_like"], SHAPE, train_seq_len=64)
    for layer in cand.layers:
        if layer.kind is LayerKind.GLOBAL:
            assert layer.temperature is not None
            assert layer.temperature.floor_tokens == 64  # defaults to the training length
        else:
            assert layer.temperature is None


def test_expand_edge_cases_k0_k1_klayers():
    none_global = build_candidate({"global_every": 0, "local_window": 8}, SHAPE, 64)
    assert set(_kinds(none_global)) == {LayerKind.LOCAL}
    assert all(layer.window_tokens == 8 for layer in none_global.layers)
    all_global = build_candidate({"global_every": 1, "local_window": 8}, SHAPE, 64)
    assert set(_kinds(all_global)) == {LayerKind.GLOBAL}
    assert all(layer.window_tokens is None for layer in all_global.layers)  # local_window unused
    last_only = build_candidate({"global_every": 12}, SHAPE, 64)
    assert [layer.index for layer in last_only.layers if layer.kind is LayerKind.GLOBAL] == [11]
    with pytest.raises(InvalidCandidate, match="global_every=13"):
        build_candidate({"global_every": 13}, SHAPE, 64)


@pytest.mark.parametrize(
    ("where", "normed"),
    [("all", set(range(12))), ("local", set(range(12)) - {3, 7, 11}), ("global", {3, 7, 11})],
)
def test_expand_qk_norm_placement(where, normed):
    knobs = {"global_every": 4, "qk_norm": "post_rope", "qk_norm_layers": where}
    cand = build_candidate(knobs, SHAPE, 64)
    assert {layer.index for layer in cand.layers if layer.qk_norm is QKNorm.POST_ROPE} == normed
    assert all(layer.qk_norm is QKNorm.NONE for layer in cand.layers if layer.index not in normed)


def test_candidate_kv_heads_and_impossible():
    cand = build_candidate({"kv_heads": 2}, SHAPE, 64)
    assert cand.shape.n_kv_heads == 2 and "kv2" in cand.name
    with pytest.raises(InvalidCandidate, match="kv_heads=3"):
        build_candidate({"kv_heads": 3}, SHAPE, 64)
    with pytest.raises(InvalidCandidate, match="needs global_position: nope"):
        build_candidate({"global_temperature": "log", "global_position": "rope"}, SHAPE, 64)


def test_candidate_id_stable_and_canonical():
    a = build_candidate(
        {"global_every": 4, "global_position": "nope", "local_window": 32}, SHAPE, 64
    )
    b = build_candidate(
        {"local_window": 32, "global_position": "nope", "global_every": 4}, SHAPE, 64
    )
    assert a.id == b.id and len(a.id) == 12
    # A knob that changes no layer does not change the candidate.
    c = build_candidate({"global_every": 1, "local_window": 16}, SHAPE, 64)
    d = build_candidate({"global_every": 1, "local_window": 32}, SHAPE, 64)
    assert c.id == d.id
    e = build_candidate(
        {"global_every": 4, "global_position": "nope", "local_window": 16}, SHAPE, 64
    )
    assert e.id != a.id
    assert a.name == "L12 3:1 rope1e4 swa32/nope qk:none"
    # Pinned: the hash must not drift between releases (dedup across versions relies on it).
    assert (
        build_candidate(BUILTIN_PRESETS["rope"], SHAPE, 64).id == build_candidate({}, SHAPE, 64).id
    )


# -- the sweep file ------------------------------------------------------------


def test_config_shipped_configs_validate():
    for name in ("demo.yaml", "paper.yaml"):
        config = load_config(REPO / "configs" / name)
        for preset in ("rope", "qknorm", "nope", "rnope_swa"):
            assert preset in config.presets
            config.preset_candidate(preset)


def test_config_yaml_reads_exponent_floats():
    assert parse_yaml("a: 1e4\nb: 1.0e6\nc: -2.5E-3\nd: '1e4'") == {
        "a": 1e4,
        "b": 1e6,
        "c": -2.5e-3,
        "d": "1e4",
    }


class _FakeTrial:
    """Picks the first choice / the low end; records what was asked."""

    def __init__(self):
        self.asked = []

    def suggest_categorical(self, name, choices):
        self.asked.append(name)
        return choices[-1] if name == "global_position" else choices[0]

    def suggest_int(self, name, low, high, step=1):
        self.asked.append(name)
        return low

    def suggest_float(self, name, low, high, step=None, log=False):
        self.asked.append(name)
        return low


def test_config_suggest_honours_conditions():
    raw = _config(
        space={
            "global_every": {"choice": [2, 4]},
            "global_position": {"choice": ["nope", "rope"]},
            "global_rope_base": {"log": [1e4, 1e6], "when": {"global_position": "rope"}},
            "local_window": 16,
        }
    )
    config = parse_config(raw)
    trial = _FakeTrial()
    knobs = config.suggest(trial)
    assert knobs == {
        "global_every": 2,
        "global_position": "rope",
        "global_rope_base": 1e4,
        "local_window": 16,
    }
    assert trial.asked.index("global_position") < trial.asked.index("global_rope_base")

    class NopeTrial(_FakeTrial):
        def suggest_categorical(self, name, choices):
            self.asked.append(name)
            return choices[0]

    trial = NopeTrial()
    knobs = config.suggest(trial)
    assert "global_rope_base" not in knobs and "global_rope_base" not in trial.asked


def test_config_presets_extend_and_override():
    raw = _config(
        presets=[
            "rope",
            {"name": "rnope_swa", "knobs": {"local_window": 16}},
            {"name": "mine", "extends": "rnope_swa", "knobs": {"global_position": "rope"}},
        ]
    )
    config = parse_config(raw)
    assert config.presets["rnope_swa"]["local_window"] == 16
    assert config.presets["mine"]["local_window"] == 16
    assert config.presets["mine"]["global_position"] == "rope"


BAD_FILES = [
    # (mutation, expected dotted path, words in the message)
    ({"stdy": {}}, "stdy", "unknown section"),
    (
        {"model": {"layers": 4, "d_model": 64, "heads": 4, "mlp_hidden": 8, "dropout": 0.1}},
        "model.dropout",
        "unknown key",
    ),
    ({"train": {"seq_len": "long", "batch_size": 2, "steps": 1}}, "train.seq_len", "integer"),
    (
        {"model": {"layers": 4, "d_model": 60, "heads": 8, "mlp_hidden": 8}},
        "model.heads",
        "divide d_model",
    ),
    ({"space": {"kv_heads": 3}}, "space.kv_heads", "divide model.heads"),
    ({"space": {"local_window": 0}}, "space.local_window", "window > 0"),
    (
        {"space": {"local_window": {"choice": [32, -4]}}},
        "space.local_window.choice[1]",
        "window > 0",
    ),
    ({"space": {"global_every": 9}}, "space.global_every", "<= layers"),
    (
        {"space": {"global_rope_base": {"log": [1e6, 1e4]}}},
        "space.global_rope_base.log",
        "empty range",
    ),
    ({"space": {"local_window": {"choice": []}}}, "space.local_window.choice", "non-empty"),
    (
        {"space": {"global_rope_base": {"log": [1e4, 1e6], "when": {"global_position": "rope"}}}},
        "space.global_rope_base.when.global_position",
        "not declared",
    ),
    ({"space": {"rope_theta": 10000}}, "space.rope_theta", "unknown knob"),
    ({"space": {"qk_norm": "before"}}, "space.qk_norm", "pre_rope"),
    (
        {
            "space": {
                "global_position": {"choice": ["nope"]},
                "global_rope_base": {"log": [1e4, 1e6], "when": {"global_position": "rope"}},
            }
        },
        "space.global_rope_base.when.global_position",
        "no value",
    ),
    (
        {"space": {"local_window": {"int": [16, 64], "stride": 16}}},
        "space.local_window.stride",
        "unknown key",
    ),
    ({"presets": ["rope", "ropey"]}, "presets[1]", "unknown preset"),
    ({"presets": [{"name": "x", "knobs": {"windw": 3}}]}, "presets[0].knobs.windw", "unknown knob"),
    (
        {"study": {"name": "t", "objectives": [{"metric": "accuracy", "direction": "maximize"}]}},
        "study.objectives[0].metric",
        "unknown score",
    ),
    ({"study": {"name": "t", "sampler": "cmaes"}}, "study.sampler", "tpe"),
    (
        {
            "study": {"name": "t", "sampler": "grid"},
            "space": {"local_rope_base": {"log": [1e3, 1e5]}},
        },
        "space.local_rope_base",
        "finite",
    ),
    ({"train": {"seq_len": 64, "batch_size": 2}}, "train.steps", "budget"),
    ({"score": {"lengths": [2, 4]}}, "score.lengths", "include 1"),
    ({"resources": {"gpus_per_trial": -1}}, "resources.gpus_per_trial", "greater than or equal"),
]


@pytest.mark.parametrize(("mutation", "path", "words"), BAD_FILES, ids=[b[1] for b in BAD_FILES])
def test_config_bad_file_names_the_path(mutation, path, words):
    raw = _config()
    raw.update(mutation)
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    paths = [p for p, _ in info.value.problems]
    assert path in paths, info.value.problems
    message = dict(info.value.problems)[path]
    assert words.lower() in message.lower(), message


def test_config_missing_required_section():
    raw = _config()
    del raw["model"]
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert ("model", "required section is missing") in info.value.problems


# -- the CLI -------------------------------------------------------------------


def _ropenope(*args):
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args], capture_output=True, text=True, cwd=REPO
    )


def test_cli_space_json_layer_tables():
    out = _ropenope("space", "configs/demo.yaml", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    layers = data["presets"]["rnope_swa"]["layers"]
    assert [(x["index"], x["kind"], x["position"], x["window"]) for x in layers] == [
        (0, "local", "rope", 32),
        (1, "local", "rope", 32),
        (2, "local", "rope", 32),
        (3, "global", "nope", None),
    ]
    assert {"index", "kind", "position", "rope_base", "window", "qk_norm"} <= set(layers[0])
    assert data["presets"]["qknorm"]["layers"][0]["qk_norm"] == "pre_rope"
    assert "global_every" in data["searched"]


def test_cli_space_bad_file_exits_nonzero_without_traceback(tmp_path):
    raw = _config(space={"local_window": -1})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    out = _ropenope("space", str(bad))
    assert out.returncode != 0
    assert "space.local_window" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
