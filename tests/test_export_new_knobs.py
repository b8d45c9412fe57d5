"""Export refuses, naming the knob, what it cannot reproduce: proportional RoPE is in no stock
class with our block (Gemma 4's is not ours), only in our remote-code model; the attention
output gate is in Qwen3-Next
(``workers.hf.classes``) and in our remote-code model, so a gated candidate Qwen3-Next cannot
express is refused naming what it lacks, and offered ``--remote-code`` (which
tests/test_hf_export.py exports and compares)."""

from __future__ import annotations

import pytest

from space import ModelShape, build_candidate
from workers.model import HybridTransformer

pytest.importorskip("transformers")

from workers.hf.export import export_candidate  # noqa: E402
from workers.hf.reasons import NotExpressible  # noqa: E402

SHAPE = ModelShape(n_layers=4, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=48, vocab_size=64)


@pytest.mark.parametrize(
    ("knobs", "named", "remote_possible"),
    [
        # Qwen3-Next turns and QK-normalises every attention layer
        ({"output_gate": "elementwise"}, ("global_position=nope", "qk_norm=none"), True),
        # ... and gates each output dimension of every one
        (
            {"output_gate": "headwise", "output_gate_layers": "global"},
            ("output_gate=headwise", "output_gate_layers=global"),
            True,
        ),
        (
            {"rope_type": "proportional", "rope_fraction": 0.5},
            ("rope_type=proportional", "Gemma 4"),
            True,
        ),
    ],
)
def test_export_refuses_new_knobs_naming_them(knobs, named, remote_possible, tmp_path):
    candidate = build_candidate({"global_every": 2, "global_position": "nope", **knobs}, SHAPE, 32)
    weights = HybridTransformer(candidate.shape, candidate.layers).state_dict()
    # a candidate remote code reproduces is exported with it (tests/test_hf_export.py)
    for remote_code in (False,) if remote_possible else (False, True):
        with pytest.raises(NotExpressible) as err:
            export_candidate(
                candidate,
                weights,
                tmp_path / "model",
                max_position_embeddings=64,
                card="# card\n",
                remote_code=remote_code,
            )
        for name in named:
            assert name in str(err.value), (name, str(err.value))
        assert err.value.remote_code_possible is remote_possible
        assert not (tmp_path / "model").exists()


def test_export_layout_placement_is_exported_as_explicit_layer_types(tmp_path):
    """A layout needs no new export field: layer_types are written per layer already."""
    import json

    candidate = build_candidate(
        {"layout": "GLLL", "global_position": "rope", "local_window": 8}, SHAPE, 32
    )
    weights = HybridTransformer(candidate.shape, candidate.layers).state_dict()
    result = export_candidate(
        candidate, weights, tmp_path / "model", max_position_embeddings=64, card="# card\n"
    )
    config = json.loads((result.out_dir / "config.json").read_text())
    assert config["layer_types"] == [
        "full_attention",
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
    ]
