"""The space: knob parsing, layer expansion, presets, candidate ids, bad sweep files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from space import (
    BUILTIN_PRESETS,
    AttentionSink,
    Candidate,
    ConfigError,
    InvalidCandidate,
    LayerKind,
    ModelShape,
    Position,
    QKNorm,
    RopeScalingKind,
    WindowKind,
    build_candidate,
    global_layer_indices,
    load_config,
    parse_config,
)
from space.describe import describe_knobs
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
        "qwen3_next_like": {3, 7, 11},
        "gemma4_like": {5, 11},
        "jamba_like": {7},
        "olmo_hybrid_like": {3, 7, 11},
        "kimi_linear_like": {3, 7, 11},
    }
    # mimo_like's explicit layout places 8 layers: refused at 12, naming the knob
    assert set(expected_globals) | {"mimo_like"} == set(BUILTIN_PRESETS)
    for name, globals_ in expected_globals.items():
        cand = build_candidate(BUILTIN_PRESETS[name], SHAPE, train_seq_len=64)
        got = {layer.index for layer in cand.layers if layer.kind is LayerKind.GLOBAL}
        assert got == globals_, name
        assert [layer.index for layer in cand.layers] == list(range(12))
    with pytest.raises(InvalidCandidate, match="layout: layout 'GLLLLGLL' places 8 layers"):
        build_candidate(BUILTIN_PRESETS["mimo_like"], SHAPE, train_seq_len=64)


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


def test_config_every_shipped_sweep_file_validates_with_its_presets():
    names = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    assert {"demo.yaml", "paper.yaml", "seed_bank.yaml", "seed_bank_700.yaml"} <= set(names)
    for name in names:
        config = load_config(REPO / "configs" / name)
        for preset in config.presets:
            config.preset_candidate(preset)


def test_config_the_two_seed_banks_differ_only_in_steps():
    # bench/calibration.py's graded effect (rope at 1000 vs 700 steps) is an effect of the
    # step count alone only if nothing else about the runs differs.
    bank = load_config(REPO / "configs" / "seed_bank.yaml")
    short = load_config(REPO / "configs" / "seed_bank_700.yaml")
    assert (bank.train.steps, short.train.steps) == (1000, 700)
    assert short.train.model_copy(update={"steps": 1000}) == bank.train
    assert (short.model, short.score, short.space) == (bank.model, bank.score, bank.space)
    assert list(short.presets) == ["rope"]
    assert short.preset_candidate("rope").id == bank.preset_candidate("rope").id


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
    # data, tokenizers, task families
    ({"data": {"tokenizer": "sentencepiece"}}, "data.tokenizer", "expected bytes"),
    ({"data": {"tokenizer": {"bpe": {"vocab_size": 100}}}}, "data.tokenizer.bpe.vocab_size", "257"),
    ({"data": {"tokenizer": {"bpe": {"vocab": 512}}}}, "data.tokenizer.bpe.vocab", "unknown key"),
    (
        {"data": {"tokenizer": {"bpe": {"vocab_size": 512}, "file": "t.json"}}},
        "data.tokenizer",
        "not both",
    ),
    ({"data": {"tokenizer": {"file": "/nonexistent/t.json"}}}, "data.tokenizer.file", "no such"),
    ({"data": {"source": "corpus.txt", "vocab_size": 50000}}, "data.vocab_size", "pre-tokenized"),
    ({"data": {"source": "ids.bin", "vocab_size": 50000}}, "score.tasks", "score.tasks: []"),
    (
        {"data": {"source": "ids.bin", "vocab_size": 50000}, "score": {"tasks": []}},
        "train.lm_fraction",
        "lm_fraction: 1",
    ),
    (
        {"data": {"source": "ids.bin", "tokenizer": {"bpe": {"vocab_size": 512}}}},
        "data.tokenizer.bpe",
        "already tokens",
    ),
    (
        {
            "model": {"layers": 4, "d_model": 64, "heads": 4, "mlp_hidden": 128, "vocab_size": 300},
            "data": {"tokenizer": {"bpe": {"vocab_size": 512}}},
        },
        "model.vocab_size",
        "below",
    ),
    (
        {"train": {"seq_len": 64, "batch_size": 2, "steps": 10, "task_mix": {"sudoku": 1}}},
        "train.task_mix.sudoku",
        "passkey",
    ),
    (
        {
            "train": {
                "seq_len": 64,
                "batch_size": 2,
                "steps": 10,
                "task_params": {"vartrack": {"key_kind": "emoji"}},
            }
        },
        "train.task_params.vartrack",
        "letter",
    ),
    (
        {"train": {"seq_len": 64, "batch_size": 2, "steps": 10, "task_mix": {"vartrack": 1.0}}},
        "train.seq_len",
        "'vartrack' needs at least",
    ),
    ({"score": {"tasks": ["passkey", "passkey"]}}, "score.tasks", "once"),
    ({"score": {"task": "multikey", "tasks": ["passkey"]}}, "score.task", "not among"),
    (
        {"score": {"tasks": ["passkey"], "long_tasks": ["vartrack"]}},
        "score.long_tasks",
        "not scored",
    ),
    (
        {
            "study": {
                "name": "t",
                "objectives": [{"metric": "vartrack/long_acc", "direction": "maximize"}],
            }
        },
        "study.objectives[0].metric",
        "needs 'vartrack' in score.tasks",
    ),
    (
        {
            "study": {
                "name": "t",
                "objectives": [{"metric": "answer_nll@16x", "direction": "minimize"}],
            }
        },
        "study.objectives[0].metric",
        "needs 16 in score.lengths",
    ),
    (
        {
            "study": {
                "name": "t",
                "objectives": [{"metric": "sudoku/long_acc", "direction": "maximize"}],
            }
        },
        "study.objectives[0].metric",
        "unknown score",
    ),
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


# -- data, tokenizers and task families ------------------------------------------


def test_config_task_names_match_the_task_rules():
    from typing import get_args

    from space.sections import TaskName
    from space.tasks import TASKS

    assert get_args(TaskName) == TASKS


def test_config_files_without_the_new_keys_dump_as_before():
    # The study's budget key and MLflow params come from these dumps: a sweep file that
    # does not use the data/score additions must dump exactly as it did before them.
    config = load_config(REPO / "configs" / "demo.yaml")
    assert config.data.model_dump(mode="json") == {
        "source": None,
        "val_fraction": 0.1,
        "dtype": None,
    }
    assert set(config.score.model_dump(mode="json")) == {
        "task", "lengths", "depths", "samples", "extrap", "val_windows", "kv_context_tokens",
        "kv_dtype_bytes", "attention_mass", "mass_lengths", "mass_samples", "seed", "items",
    }  # fmt: skip
    # score.items always dumps, on purpose: per-seed items are another scoring, another key.
    assert config.base_shape().vocab_size == 264
    assert config.preset_candidate("rnope_swa").id == "d7c6bb7238bd"  # unchanged since v1
    bpe = parse_config(_config(data={"tokenizer": {"bpe": {"vocab_size": 512}}}))
    assert bpe.data.model_dump(mode="json")["tokenizer"] == {
        "bpe": {"vocab_size": 512, "min_frequency": 2},
        "file": None,
    }


def test_config_vocabulary_follows_the_tokenizer():
    from space.vocab import BYTES

    assert parse_config(_config()).vocabulary() == BYTES
    assert parse_config(_config(data={"tokenizer": "bytes"})).vocabulary() == BYTES
    bpe = parse_config(_config(data={"tokenizer": {"bpe": {"vocab_size": 512}}}))
    assert (bpe.vocabulary().text_size, bpe.vocabulary().size) == (512, 576)
    assert (bpe.vocabulary().doc, bpe.vocabulary().open) == (513, 514)
    assert bpe.base_shape().vocab_size == 576
    ids = parse_config(
        _config(
            data={"source": "ids.bin", "dtype": "uint32", "vocab_size": 50000},
            train={"seq_len": 64, "batch_size": 2, "steps": 10, "lm_fraction": 1.0},
            score={"tasks": []},
            study={"name": "t", "objectives": [{"metric": "short_bpb", "direction": "minimize"}]},
        )
    )
    assert ids.base_shape().vocab_size == 50048 and ids.score.families == ()
    # A different vocabulary is a different model: another candidate id.
    knobs = {"global_every": 1}
    assert bpe.candidate(knobs).id != parse_config(_config()).candidate(knobs).id


def test_config_score_families_primary_and_headline():
    s = parse_config(_config()).score
    assert (s.families, s.primary_task, s.headline_tasks) == (
        ("multikey",),
        "multikey",
        ("multikey",),
    )
    train = {"seq_len": 128, "batch_size": 2, "steps": 10}
    s = parse_config(_config(train=train, score={"tasks": ["vartrack", "passkey"]})).score
    assert (s.families, s.primary_task, s.headline_tasks) == (
        ("vartrack", "passkey"),
        "vartrack",
        ("vartrack",),
    )
    s = parse_config(
        _config(
            train={"seq_len": 128, "batch_size": 2, "steps": 10},
            score={
                "task": "passkey",
                "tasks": ["vartrack", "passkey"],
                "long_tasks": ["passkey", "vartrack"],
            },
        )
    ).score
    assert (s.families, s.primary_task, s.headline_tasks) == (
        ("passkey", "vartrack"),
        "passkey",
        ("passkey", "vartrack"),
    )


def test_score_names_of_task_families():
    from space.names import is_accuracy_score, is_score_name, split_task_score

    for name in ("answer_nll@4x", "token_acc@2x", "long_answer_nll", "vartrack/long_acc",
                 "commonwords/acc@8x", "multiquery/answer_nll@2x", "passkey/acc_at_T"):  # fmt: skip
        assert is_score_name(name), name
    for name in ("vartrack/short_bpb", "sudoku/long_acc", "answer_nll@x", "vartrack/"):
        assert not is_score_name(name), name
    assert split_task_score("vartrack/acc@4x") == ("vartrack", "acc@4x")
    assert is_accuracy_score("vartrack/long_acc") and is_accuracy_score("token_acc@2x")
    assert not is_accuracy_score("long_answer_nll") and not is_accuracy_score("short_bpb")


# -- the knobs of issue 17: chunks, sinks, partial rotary, RoPE scaling ---------

# Ids of candidates that existed before these knobs (12-layer SHAPE, T = 64), recorded with the
# code before them: dedup across versions relies on them never drifting.
PINNED_IDS = {
    "rope": "fa8fe2a119de",
    "qknorm": "85e8c9acc614",
    "nope": "e6bf8b7cf2a3",
    "rnope_swa": "2577019ccca2",
    "rnope": "5fa1c31a413b",
    "gemma3_like": "3a6b8c367d06",
}
# What llama4_like and gptoss_like were before they got chunks and sinks.
OLD_IDS = {"llama4_like": "859d2f66fa46", "gptoss_like": "3405a3b18862"}


def test_candidate_ids_of_existing_presets_unchanged_by_new_knobs():
    for name, want in PINNED_IDS.items():
        assert build_candidate(BUILTIN_PRESETS[name], SHAPE, 64).id == want, name
    for name, old in OLD_IDS.items():  # these two presets changed on purpose (issue 17)
        assert build_candidate(BUILTIN_PRESETS[name], SHAPE, 64).id != old, name
    # every new knob at its default is the same candidate as no knob at all
    defaults = {
        "local_attention": "sliding",
        "attention_sink": "none",
        "attention_sink_layers": "all",
        "rope_fraction": 1.0,
        "rope_scaling": "none",
        "rope_scaling_layers": "all",
    }
    assert build_candidate(defaults, SHAPE, 64).id == PINNED_IDS["rope"]


def test_expand_chunked_attention_only_on_windowed_local_layers():
    cand = build_candidate(BUILTIN_PRESETS["llama4_like"], SHAPE, 64)
    for layer in cand.layers:
        if layer.kind is LayerKind.LOCAL:
            assert (layer.window_kind, layer.window_tokens) == (WindowKind.CHUNKED, 64)
        else:
            assert (layer.window_kind, layer.window_tokens) == (WindowKind.SLIDING, None)
    assert "chunk64" in cand.name and "swa" not in cand.name
    # chunks of "no window" are full attention: the same candidate as sliding with no window
    a = build_candidate({"global_every": 4, "local_attention": "chunked"}, SHAPE, 64)
    b = build_candidate({"global_every": 4}, SHAPE, 64)
    assert a.id == b.id and a.layers == b.layers


@pytest.mark.parametrize(
    ("where", "with_sink"),
    [
        ("all", set(range(12))),
        ("local", set(range(12)) - {1, 3, 5, 7, 9, 11}),
        ("global", {1, 3, 5, 7, 9, 11}),
    ],
)
def test_expand_attention_sink_placement(where, with_sink):
    knobs = {**BUILTIN_PRESETS["gptoss_like"], "attention_sink_layers": where}
    cand = build_candidate(knobs, SHAPE, 64)
    got = {x.index for x in cand.layers if x.attention_sink is AttentionSink.LEARNED}
    assert got == with_sink


def test_expand_rope_fraction_and_scaling_only_on_rope_layers():
    knobs = {
        "global_every": 4,
        "global_position": "nope",
        "rope_fraction": 0.5,
        "rope_scaling": "yarn",
        "rope_scaling_factor": 8,
    }
    cand = build_candidate(knobs, SHAPE, 64)
    for layer in cand.layers:
        if layer.position is Position.ROPE:
            assert layer.rope_fraction == 0.5 and layer.rotary_dims(SHAPE.head_dim) == 8
            scaling = layer.rope_scaling
            assert (scaling.kind, scaling.factor, scaling.original_tokens) == (
                RopeScalingKind.YARN,
                8.0,
                64,  # the training length by default
            )
            assert scaling.attention_factor == pytest.approx(0.1 * math.log(8) + 1)
        else:
            assert layer.rope_fraction == 1.0 and layer.rope_scaling is None
    assert cand.scaled_at_eval()["layers"] == [i for i in range(12) if i % 4 != 3]
    assert "rope1e4 rot0.5 yarn8" in cand.name
    glob = build_candidate(
        {**knobs, "global_position": "rope", "rope_scaling_layers": "global"}, SHAPE, 64
    )
    assert {x.index for x in glob.layers if x.rope_scaling} == {3, 7, 11}
    # linear scaling ignores YaRN's parameters: they do not make a different candidate
    lin = build_candidate({"rope_scaling": "linear", "rope_scaling_factor": 2}, SHAPE, 64)
    lin2 = build_candidate(
        {"rope_scaling": "linear", "rope_scaling_factor": 2, "rope_scaling_beta_fast": 8}, SHAPE, 64
    )
    assert lin.id == lin2.id != build_candidate({}, SHAPE, 64).id


def test_expand_impossible_new_knob_combinations():
    with pytest.raises(InvalidCandidate, match="needs rope_scaling_factor"):
        build_candidate({"rope_scaling": "ntk"}, SHAPE, 64)
    with pytest.raises(InvalidCandidate, match="beta_fast"):
        build_candidate(
            {"rope_scaling": "yarn", "rope_scaling_factor": 4, "rope_scaling_beta_fast": 0.5},
            SHAPE,
            64,
        )
    with pytest.raises(InvalidCandidate, match="even number"):  # 16 x 0.2 = 3 dims
        build_candidate({"rope_fraction": 0.2}, SHAPE, 64)
    # a fraction that would be odd is fine where no layer rotates
    build_candidate({"rope_fraction": 0.2, "global_position": "nope"}, SHAPE, 64)


def test_candidate_round_trips_through_its_dict():
    config = parse_config(_with_train(TWO_STAGES, presets=["llama4_like", "gptoss_like", "rope"]))
    for name in config.presets:
        cand = config.preset_candidate(name)
        assert Candidate.from_dict(cand.to_dict()) == cand, name
        assert Candidate.from_dict(json.loads(json.dumps(cand.to_dict()))).id == cand.id


NEW_BAD_FILES = [
    ({"space": {"rope_fraction": 0}}, "space.rope_fraction", "(0, 1]"),
    (
        {"space": {"rope_fraction": {"choice": [0.5, 1.5]}}},
        "space.rope_fraction.choice[1]",
        "(0, 1]",
    ),
    ({"space": {"rope_fraction": 0.2}}, "space.rope_fraction", "even number"),
    ({"space": {"rope_scaling": "yarn"}}, "space.rope_scaling_factor", "required"),
    (
        {"space": {"rope_scaling": "yarn", "rope_scaling_factor": 0.5}},
        "space.rope_scaling_factor",
        ">= 1",
    ),
    ({"space": {"local_attention": "blocky"}}, "space.local_attention", "chunked"),
    ({"space": {"attention_sink_layers": "some"}}, "space.attention_sink_layers", "global"),
]


@pytest.mark.parametrize(
    ("mutation", "path", "words"), NEW_BAD_FILES, ids=[b[1] for b in NEW_BAD_FILES]
)
def test_config_bad_new_knob_names_the_path(mutation, path, words):
    raw = _config()
    raw.update(mutation)
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert path in dict(info.value.problems), info.value.problems
    assert words in dict(info.value.problems)[path]


# -- training stages -------------------------------------------------------------

TWO_STAGES = {
    "seq_len": 64,
    "batch_size": 2,
    "eval_every": 100,
    "stages": [
        {"steps": 250},
        {
            "steps": 120,
            "seq_len": 256,
            "lr": 1e-3,
            "knobs": {"global_rope_base": 1e6, "rope_scaling": "yarn", "rope_scaling_factor": 4},
        },
    ],
}


def _train(**fields):
    return {"seq_len": 64, "batch_size": 2, **fields}


def _with_train(train, **sections):
    """A sweep file whose train section is exactly ``train`` (not merged over BASE's)."""
    raw = _config(**sections)
    raw["train"] = train
    return raw


def test_stages_one_stage_is_todays_meaning():
    plain = parse_config(_with_train(_train(steps=10), presets=["rope", "llama4_like"]))
    staged = parse_config(
        _with_train(_train(stages=[{"steps": 10}]), presets=["rope", "llama4_like"])
    )
    for name in ("rope", "llama4_like"):
        a, b = plain.preset_candidate(name), staged.preset_candidate(name)
        assert a.id == b.id and a.name == b.name and a.final_layers == b.final_layers
    assert staged.train.total_steps == 10 and staged.train.eval_steps() == (10,)
    (plan,) = plain.train.stage_plans()
    assert (plan.steps, plan.seq_len, plan.lr, plan.task_mix) == (10, 64, 3e-3, {"multikey": 1.0})


def test_stages_later_defaults_stay_out_of_section_dumps():
    # The dedup budget hashes these dumps and MLflow logs them as params: a sweep file that
    # uses no stages must dump exactly the fields it did before stages existed.
    config = load_config(REPO / "configs" / "demo.yaml")
    assert "stages" not in config.train.model_dump(mode="json")
    assert "after_each_stage" not in config.score.model_dump(mode="json")
    staged = parse_config(_with_train(TWO_STAGES, score={"after_each_stage": True}))
    assert len(staged.train.model_dump(mode="json")["stages"]) == 2
    assert staged.score.model_dump()["after_each_stage"] is True


def test_stages_seq_len_at_a_step_is_the_length_of_the_stage_holding_it():
    # What an exported model card says it was trained at: a checkpoint from the extension
    # stage was trained at that stage's length, not at train.seq_len.
    from space.stages import seq_len_at

    plans = parse_config(_with_train(TWO_STAGES)).train.stage_plans()
    assert [seq_len_at(plans, s) for s in (1, 250, 251, 370, 400)] == [64, 64, 256, 256, 256]
    (plain,) = parse_config(_with_train(_train(steps=10))).train.stage_plans()
    assert seq_len_at((plain,), 10) == 64


def test_stages_plan_ids_names_and_final_layers():
    config = parse_config(_with_train(TWO_STAGES, presets=["rope", "rnope_swa"]))
    assert config.train.total_steps == 370
    assert config.train.eval_steps() == (100, 200, 250, 300, 370)
    first, second = config.train.stage_plans()
    assert (second.steps, second.seq_len, second.batch_size, second.lr) == (120, 256, 2, 1e-3)
    assert second.warmup_steps == config.train.warmup_steps  # inherited
    rope = config.preset_candidate("rope")
    assert rope.multi_stage and rope.layers[0].rope_base == 1e4
    assert all(
        x.rope_base == 1e6 and x.rope_scaling.kind is RopeScalingKind.YARN
        for x in rope.final_layers
    )
    assert rope.final_layers[0].rope_scaling.original_tokens == 64  # train.seq_len, not 256
    assert rope.name == "L4 global rope1e4 qk:none > T256 global rope1e6 yarn4"
    assert rope.scaled_at_eval()["scaling"]["kind"] == "yarn"
    # the plan is part of the candidate only with several stages
    single = parse_config(_config(presets=["rope"])).preset_candidate("rope")
    assert (
        rope.id != single.id and "stages" in rope.canonical() and "stages" not in single.canonical()
    )
    other = {**TWO_STAGES, "stages": [{"steps": 250}, {**TWO_STAGES["stages"][1], "steps": 60}]}
    assert parse_config(_with_train(other, presets=["rope"])).preset_candidate("rope").id != rope.id
    # the NoPE global layer of rnope_swa has nothing to scale
    swa = config.preset_candidate("rnope_swa")
    assert swa.final_layers[3].rope_scaling is None and swa.final_layers[0].rope_scaling is not None


def test_stages_overrides_accumulate():
    train = _train(
        stages=[
            {"steps": 5},
            {"steps": 5, "knobs": {"global_rope_base": 1e6}},
            {"steps": 5, "knobs": {"rope_scaling": "linear", "rope_scaling_factor": 2}},
        ]
    )
    cand = parse_config(_with_train(train)).candidate({})
    third = cand.stages[2].layers[0]
    assert third.rope_base == 1e6 and third.rope_scaling.kind is RopeScalingKind.LINEAR


STAGE_BAD_FILES = [
    (_train(steps=10, stages=[{"steps": 10}]), "train.steps", "each stage"),
    (
        _train(stages=[{"steps": 10, "knobs": {"global_rope_base": 1e6}}]),
        "train.stages[0].knobs",
        "first stage",
    ),
    (
        _train(stages=[{"steps": 1}, {"steps": 1, "knobs": {"kv_heads": 2}}]),
        "train.stages[1].knobs.kv_heads",
        "parameter shapes",
    ),
    (
        _train(stages=[{"steps": 1}, {"steps": 1, "knobs": {"qk_norm": "pre_rope"}}]),
        "train.stages[1].knobs.qk_norm",
        "QK-norm weights",
    ),
    (
        _train(stages=[{"steps": 1}, {"steps": 1, "knobs": {"attention_sink": "learned"}}]),
        "train.stages[1].knobs.attention_sink",
        "sink logits",
    ),
    (
        _train(stages=[{"steps": 1}, {"steps": 1, "knobs": {"windw": 3}}]),
        "train.stages[1].knobs.windw",
        "unknown knob",
    ),
    (
        _train(stages=[{"steps": 1}, {"steps": 1, "knobs": {"local_window": {"choice": [8, 16]}}}]),
        "train.stages[1].knobs.local_window",
        "search them in space",
    ),
    (
        _train(stages=[{"steps": 1}, {"steps": 1, "knobs": {"local_window": -3}}]),
        "train.stages[1].knobs.local_window",
        "window > 0",
    ),
    (
        _train(stages=[{"steps": 1}, {"steps": 1, "seq_len": 8}]),
        "train.stages[1].seq_len",
        "needs at least",
    ),
    (
        _train(stages=[{"steps": 1}, {"steps": 1, "stride": 2}]),
        "train.stages[1].stride",
        "unknown key",
    ),
]


@pytest.mark.parametrize(
    ("train", "path", "words"), STAGE_BAD_FILES, ids=[b[1] for b in STAGE_BAD_FILES]
)
def test_config_bad_stages_name_the_path(train, path, words):
    with pytest.raises(ConfigError) as info:
        parse_config(_with_train(train))
    problems = dict(info.value.problems)
    assert path in problems, info.value.problems
    assert words in problems[path], problems[path]


def test_stages_layout_check_covers_the_searched_space_and_presets():
    # qk_norm is searched; a later stage moving QK-norm to the global layers would drop the
    # local layers' weights for the pre_rope candidates: rejected before any trial runs.
    train = _train(stages=[{"steps": 1}, {"steps": 1, "knobs": {"qk_norm_layers": "global"}}])
    space = {"global_every": 2, "qk_norm": {"choice": ["none", "pre_rope"]}}
    with pytest.raises(ConfigError) as info:
        parse_config(_with_train(train, space=space))
    assert "train.stages[1].knobs.qk_norm_layers" in dict(info.value.problems)
    # the same override is harmless when no candidate has QK-norm
    parse_config(_with_train(train, space={"global_every": 2}))
    # a preset is checked too: sinks on local layers only, then a stage moving the boundary
    train = _train(stages=[{"steps": 1}, {"steps": 1, "knobs": {"global_every": 1}}])
    preset = {
        "name": "sunk",
        "knobs": {"global_every": 2, "attention_sink": "learned", "attention_sink_layers": "local"},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(_with_train(train, presets=[preset]))
    assert "train.stages[1].knobs.global_every" in dict(info.value.problems)
    parse_config(_with_train(train, presets=["rope"]))  # no sinks, nothing to move


def test_describe_knobs_says_what_the_new_knobs_and_stages_do():
    config = parse_config(_with_train(TWO_STAGES))
    text = describe_knobs(BUILTIN_PRESETS["llama4_like"], config.train.stage_plans())
    assert "within 64-token chunks" in text
    assert "then stage 2: 120 steps at T=256 with global_rope_base=1e+06" in text
    assert "in force when the candidate is scored" in text
    assert "attention-sink" in describe_knobs(BUILTIN_PRESETS["gptoss_like"])
    assert "first 0.5 of each head" in describe_knobs({"rope_fraction": 0.5})


def test_cli_space_json_shows_new_knobs_and_stages(tmp_path):
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(_with_train(TWO_STAGES, presets=["llama4_like", "gptoss_like"])))
    out = _ropenope("space", str(path), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    llama = data["presets"]["llama4_like"]
    assert [x["window_kind"] for x in llama["layers"]] == ["chunked"] * 3 + ["sliding"]
    assert [s["seq_len"] for s in llama["stages"]] == [64, 256]
    assert llama["rope_scaling_at_eval"]["layers"] == [0, 1, 2]
    assert {x["attention_sink"] for x in data["presets"]["gptoss_like"]["layers"]} == {"learned"}
    text = _ropenope("space", str(path)).stdout
    assert "chunk 64" in text and "stage 2" in text and "scored with RoPE scaling yarn x4" in text


def test_config_knobs_and_extension_configs_validate():
    knobs = load_config(REPO / "configs" / "knobs.yaml")
    names = {name: knobs.preset_candidate(name).name for name in knobs.presets}
    assert names["llama4_like"] == "L4 3:1 rope1e4 chunk32/nope temp qk:none"
    assert names["gptoss_like"] == "L4 1:1 rope1e4 swa32 sink/rope1e4 sink qk:none"
    # the demo's rope and rnope_swa: the same candidates, the same budget as configs/demo.yaml
    demo = load_config(REPO / "configs" / "demo.yaml")
    for name in ("rope", "rnope_swa"):
        assert knobs.preset_candidate(name).id == demo.preset_candidate(name).id
    assert knobs.train.model_dump() == demo.train.model_dump()
    extension = load_config(REPO / "configs" / "extension.yaml")
    rope = extension.preset_candidate("rope")
    assert rope.multi_stage and rope.final_layers[0].rope_base == 1e6
    assert extension.train.total_steps == 1000 and extension.score.after_each_stage


# -- the knob table and valid-by-construction layer specs ----------------------


def test_knob_table_one_row_per_knob_with_valid_default():
    import space.layers as layers
    from space.knobs import KNOB_DEFAULTS, KNOB_NAMES, KNOBS, KnobKind, check_value

    names = [knob.name for knob in KNOBS]
    assert len(names) == len(set(names)) == len(KNOB_NAMES) == len(KNOB_DEFAULTS)
    for knob in KNOBS:
        assert check_value(knob.name, knob.default, knob.name) == knob.default
        assert (knob.kind is KnobKind.ENUM) == bool(knob.values)
        if knob.nullable:
            assert check_value(knob.name, None, knob.name) is None
    # every StrEnum of space.layers that a sweep file can set is some knob's values, all of it
    knob_enums = {knob.enum for knob in KNOBS if knob.enum is not None}
    strenums = {
        value
        for value in vars(layers).values()
        if isinstance(value, type)
        and issubclass(value, layers.StrEnum)
        and value is not layers.StrEnum
    }
    # a layer's kind follows global_every; the parametrization is model.parametrization, the
    # same for every candidate of a sweep
    assert strenums - knob_enums == {layers.LayerKind, layers.Parametrization}
    for knob in KNOBS:
        if knob.enum is not None:
            assert {m.value for m in knob.enum} <= set(knob.values)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("global_position", "absolute", "expected one of ['nope', 'rope']"),
        ("global_temperature", 3, "expected one of ['none', 'log']"),
        ("rope_scaling", "ntk2", "expected one of ['none', 'linear', 'ntk', 'yarn']"),
        ("qk_norm", None, "expected one of ['none', 'pre_rope', 'post_rope']"),
        ("global_every", -1, "expected a positive integer"),
        ("kv_heads", 0, "expected a positive integer"),
        ("rope_fraction", 1.5, "expected a fraction in (0, 1]"),
        ("rope_scaling_factor", 0.5, "expected a scaling factor >= 1"),
        ("local_rope_base", None, "expected a number, got None"),
        ("local_window", 0, "expected a window > 0 tokens"),
    ],
)
def test_knob_table_values_checked_as_before(name, value, words):
    from space.knobs import check_value

    with pytest.raises(ConfigError) as err:
        check_value(name, value, f"space.{name}")
    assert words in str(err.value) and f"space.{name}" in str(err.value)


def test_knob_table_nulls_read_as_their_meaning():
    from space.knobs import check_value

    assert check_value("global_every", None, "p") == 0
    assert check_value("global_every", 0, "p") == 0
    assert check_value("global_temperature", None, "p") == "none"
    assert check_value("local_window", None, "p") is None
    assert check_value("rope_scaling_original_tokens", None, "p") is None


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"position": Position.ROPE, "rope_base": None}, "rope_base must be set"),
        ({"position": Position.NOPE, "rope_base": 1e4}, "rope_base must be set"),
        ({"window_tokens": 0}, "window_tokens must be >= 1"),
        ({"rope_fraction": 0.0}, "rope_fraction must be in"),
        ({"index": -1}, "index"),
    ],
)
def test_layer_spec_rejects_broken_invariants_when_built(fields, words):
    from space.layers import LayerSpec

    base = dict(
        index=0,
        kind=LayerKind.GLOBAL,
        position=Position.ROPE,
        rope_base=1e4,
        window_tokens=None,
        qk_norm=QKNorm.NONE,
        temperature=None,
    )
    LayerSpec(**base)  # the base is valid
    with pytest.raises(ValueError, match=words):
        LayerSpec(**{**base, **fields})


def test_layer_spec_rope_only_options_refused_on_nope_layers():
    from space.layers import LayerSpec, RopeScaling, Temperature

    nope = dict(
        index=3,
        kind=LayerKind.GLOBAL,
        position=Position.NOPE,
        rope_base=None,
        window_tokens=None,
        qk_norm=QKNorm.NONE,
    )
    LayerSpec(**nope, temperature=Temperature(8, 0.1))
    with pytest.raises(ValueError, match="layer 3: rope_scaling applies to RoPE layers only"):
        LayerSpec(**nope, temperature=None, rope_scaling=RopeScaling(RopeScalingKind.LINEAR, 2, 8))
    rope = {**nope, "position": Position.ROPE, "rope_base": 1e4}
    with pytest.raises(ValueError, match="temperature applies to NoPE layers only"):
        LayerSpec(**rope, temperature=Temperature(8, 0.1))
    with pytest.raises(ValueError, match="must exceed rope_scaling_beta_slow"):
        RopeScaling(RopeScalingKind.YARN, 2.0, 8, beta_fast=1.0, beta_slow=1.0)


def test_layer_spec_head_dim_problem_names_the_rotated_dims():
    from space.layers import LayerSpec, RopeScaling

    spec = LayerSpec(0, LayerKind.LOCAL, Position.ROPE, 1e4, None, QKNorm.NONE, None)
    assert spec.head_dim_problem(16) is None
    assert "= 3 of head_dim 3" in spec.head_dim_problem(3)
    ntk = LayerSpec(
        0,
        LayerKind.LOCAL,
        Position.ROPE,
        1e4,
        None,
        QKNorm.NONE,
        None,
        rope_fraction=0.25,
        rope_scaling=RopeScaling(RopeScalingKind.NTK, 2.0, 8),
    )
    assert ntk.head_dim_problem(8) == "rope_scaling: ntk needs >= 4 rotated dimensions, got 2"
    assert ntk.head_dim_problem(16) is None
    nope = LayerSpec(3, LayerKind.GLOBAL, Position.NOPE, None, None, QKNorm.NONE, None)
    assert nope.head_dim_problem(3) is None


def test_stages_a_stage_entry_and_its_plan_have_the_same_fields():
    from dataclasses import fields

    from space.sections import StageSection
    from space.stages import StagePlan

    assert list(StageSection.model_fields) == [f.name for f in fields(StagePlan)]
