"""Proportional RoPE (``rope_type: proportional``), against Hugging Face's ``proportional``
rope type (Gemma 4's global layers): the frequencies of a whole-head RoPE, the slowest ones
set to zero, instead of a RoPE over the leading dimensions (NeoX)."""

from __future__ import annotations

import pytest
import torch
from hf_twins import load_qwen3_next_weights, qwen3_next_attention_output, qwen3_next_config

from space import InvalidCandidate, LayerKind, ModelShape, OutputGate, RopeType, build_candidate
from space.describe import describe_knobs
from space.layers import LayerSpec, Position, QKNorm
from workers.model import Attention, ForwardContext, rope_inv_freq

transformers = pytest.importorskip("transformers")

SHAPE = ModelShape(
    n_layers=6, d_model=64, n_heads=4, n_kv_heads=2, mlp_hidden=48, vocab_size=64, init_std=0.08
)
D = SHAPE.head_dim


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.3, 1.0])
def test_proportional_inv_freq_matches_hf_rope_init_function(fraction):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = qwen3_next_config(SHAPE, rope_type="proportional", fraction=fraction)
    want, factor = ROPE_INIT_FUNCTIONS["proportional"](config, "cpu")
    spec = LayerSpec(
        0,
        LayerKind.GLOBAL,
        Position.ROPE,
        500.0,
        None,
        QKNorm.NONE,
        None,
        rope_fraction=fraction,
        rope_type=RopeType.PROPORTIONAL,
    )
    got, our_factor = rope_inv_freq(spec.rotary_dims(D), 500.0, table_dims=D)
    assert got.shape == (D // 2,) and our_factor == factor == 1.0
    torch.testing.assert_close(got, want)
    assert int((got > 0).sum()) == int(fraction * D // 2)  # the slowest pairs do not turn


@pytest.mark.parametrize("rope_type", ["proportional", "default"])
def test_proportional_attention_matches_qwen3_next_with_hf_rope_type(rope_type):
    """A whole gated attention layer with HF's rotary module of that rope type: ``default``
    with a partial factor is our NeoX partial rotary, ``proportional`` is ours."""
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextAttention

    fraction, seq_len = 0.25, 11
    config = qwen3_next_config(SHAPE, rope_type=rope_type, fraction=fraction)
    torch.manual_seed(0)
    theirs = Qwen3NextAttention(config, layer_idx=0).eval()
    ours_type = RopeType.PROPORTIONAL if rope_type == "proportional" else RopeType.NEOX
    spec = LayerSpec(
        0,
        LayerKind.GLOBAL,
        Position.ROPE,
        500.0,
        None,
        QKNorm.PRE_ROPE,
        None,
        rope_fraction=fraction,
        rope_type=ours_type,
        output_gate=OutputGate.ELEMENTWISE,
    )
    ours = Attention(SHAPE, spec).eval()
    load_qwen3_next_weights(ours, theirs, SHAPE)
    x = torch.randn(2, seq_len, SHAPE.d_model, generator=torch.Generator().manual_seed(5))
    start = 3
    positions = torch.arange(start, start + seq_len)
    want = qwen3_next_attention_output(theirs, config, x, positions)
    with torch.no_grad():
        got, _ = ours(x, ForwardContext.at(positions, backend="dense"))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_proportional_knobs_only_on_the_layers_they_name():
    gemma4 = {
        "global_every": 6,
        "global_position": "rope",
        "global_rope_base": 1.0e6,
        "local_window": 16,
        "rope_fraction": 0.25,
        "rope_type": "proportional",
        "rope_fraction_layers": "global",
    }
    candidate = build_candidate(gemma4, SHAPE, 64)
    assert [(x.index, x.rope_type.value, x.rope_fraction) for x in candidate.layers] == [
        (0, "neox", 1.0),
        (1, "neox", 1.0),
        (2, "neox", 1.0),
        (3, "neox", 1.0),
        (4, "neox", 1.0),
        (5, "proportional", 0.25),
    ]
    neox = build_candidate({**gemma4, "rope_type": "neox"}, SHAPE, 64)
    assert candidate.id != neox.id
    assert "prot0.25" in candidate.name and "prot" not in neox.name
    text = describe_knobs(candidate.knobs)
    assert "proportional: only the fastest 0.25 of its frequencies turn" in text
    assert text.count("proportional") == 1  # the local layers turn every dimension


def test_proportional_refusals():
    with pytest.raises(InvalidCandidate, match="proportional takes no rope_scaling"):
        build_candidate(
            {"rope_type": "proportional", "rope_scaling": "linear", "rope_scaling_factor": 2.0},
            SHAPE,
            64,
        )
    with pytest.raises(InvalidCandidate, match="it needs an even head_dim and >= 1 pair"):
        build_candidate({"rope_type": "proportional", "rope_fraction": 0.1}, SHAPE, 64)
    with pytest.raises(ValueError, match="rope_type applies to RoPE layers only"):
        LayerSpec(
            0,
            LayerKind.GLOBAL,
            Position.NOPE,
            None,
            None,
            QKNorm.NONE,
            None,
            rope_type=RopeType.PROPORTIONAL,
        )
