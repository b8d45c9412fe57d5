"""Explicit layer placement: ``layout: "GLLLGLLL"`` next to ``global_every``."""

from __future__ import annotations

import pytest

from space import (
    ConfigError,
    InvalidCandidate,
    LayerKind,
    ModelShape,
    build_candidate,
    parse_config,
)
from space.describe import describe_knobs
from space.layers import global_layer_indices

SHAPE = ModelShape(n_layers=8, d_model=64, n_heads=4, n_kv_heads=4, mlp_hidden=128, vocab_size=264)
HYBRID = {"global_position": "nope", "local_window": 16}


def _globals(candidate):
    return [layer.index for layer in candidate.layers if layer.kind is LayerKind.GLOBAL]


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("GLLLLLLL", [0]),  # MiMo-V2: the first layer global
        ("LLLLLLLG", [7]),  # Gemma 4: the last layer global
        ("GLLLGLLL", [0, 4]),
        ("LLLGLLLG", [3, 7]),  # what global_every: 4 gives
        ("LLLLLLLL", []),
        ("GGGGGGGG", list(range(8))),
    ],
)
def test_layout_places_exactly_the_g_layers(layout, expected):
    candidate = build_candidate({**HYBRID, "layout": layout}, SHAPE, 64)
    assert _globals(candidate) == expected
    assert list(global_layer_indices(8, 1, layout)) == expected


def test_layout_replaces_global_every_and_dedups_with_it():
    by_every = build_candidate({**HYBRID, "global_every": 4}, SHAPE, 64)
    by_layout = build_candidate({**HYBRID, "layout": "LLLGLLLG", "global_every": 2}, SHAPE, 64)
    first = build_candidate({**HYBRID, "layout": "GLLLGLLL"}, SHAPE, 64)
    last = build_candidate({**HYBRID, "layout": "LLLLLLLG"}, SHAPE, 64)
    # the same layers are the same model, whichever knob placed them
    assert by_layout.id == by_every.id
    assert by_layout.name == by_every.name == "L8 3:1 rope1e4 swa16/nope qk:none"
    # same ratio, other places: other ids, and names that tell them apart
    assert len({by_every.id, first.id, last.id}) == 3
    assert first.name == "L8 3:1@G0,4 rope1e4 swa16/nope qk:none"
    # the last layer alone is what global_every: 8 places: no place to name
    assert last.name == "L8 7:1 rope1e4 swa16/nope qk:none"
    assert last.id == build_candidate({**HYBRID, "global_every": 8}, SHAPE, 64).id
    mimo = build_candidate({**HYBRID, "layout": "GLLLLLLL"}, SHAPE, 64)
    assert mimo.name == "L8 7:1@G0 rope1e4 swa16/nope qk:none"


def test_layout_describer_names_the_global_layers():
    text = describe_knobs({**HYBRID, "layout": "GLLLLLLG"})
    assert text.startswith("Layers GLLLLLLG (G global, L local): the L layers: RoPE")
    assert "layers 0, 7 (from 0): no positional encoding (NoPE)" in text


@pytest.mark.parametrize(
    ("layout", "words"),
    [("GLLG", "places 4 layers; the model has 8"), ("GLLLGLLX", "G (global) or L (local)")],
)
def test_layout_impossible_at_expansion_is_invalid_candidate(layout, words):
    if "X" in layout:
        with pytest.raises(ConfigError, match="G \\(global\\) or L \\(local\\)"):
            build_candidate({"layout": layout}, SHAPE, 64)
        return
    with pytest.raises(InvalidCandidate, match=words):
        build_candidate({"layout": layout}, SHAPE, 64)


BASE = {
    "study": {"name": "t"},
    "model": {"layers": 4, "d_model": 64, "heads": 4, "mlp_hidden": 128},
    "train": {"seq_len": 64, "batch_size": 2, "steps": 10},
}


@pytest.mark.parametrize(
    ("space", "path", "words"),
    [
        ({"layout": "GLL"}, "space.layout", "places 3 layers; the model has 4"),
        ({"layout": {"choice": ["GLLL", "GLLLL"]}}, "space.layout.choice[1]", "places 5"),
        ({"layout": "glll"}, "space.layout", "one letter per layer"),
        ({"layout": ""}, "space.layout", "one letter per layer"),
        ({"layout": 4}, "space.layout", "expected a layout string"),
        ({"layout": {"int": [1, 4]}}, "space.layout.int", "not an integer knob"),
        ({"layout": "GLLL", "global_every": 2}, "space.global_every", "has no effect"),
    ],
)
def test_layout_bad_values_name_the_key_path(space, path, words):
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "space": space})
    assert any(p == path and words in m for p, m in info.value.problems), info.value.problems


def test_layout_searched_as_a_choice():
    config = parse_config({**BASE, "space": {"layout": {"choice": ["GLLL", "LLLG", None]}}})
    spec = config.space["layout"]
    assert spec.searched and spec.choices == ("GLLL", "LLLG", None)
