"""The attention output gate (``output_gate``), against Qwen3-Next's gated attention
(how its weights map onto ours: ``hf_twins``)."""

from __future__ import annotations

import pytest
import torch
from hf_twins import load_qwen3_next_weights, qwen3_next_attention_output, qwen3_next_config

from space import LayerKind, ModelShape, OutputGate, build_candidate
from space.layers import LayerSpec, Position, QKNorm
from workers.model import Attention, ForwardContext, HybridTransformer

SHAPE = ModelShape(
    n_layers=4, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=48, vocab_size=64, init_std=0.08
)


def gated_spec(gate: OutputGate, fraction: float = 1.0) -> LayerSpec:
    return LayerSpec(
        0,
        LayerKind.GLOBAL,
        Position.ROPE,
        500.0,
        None,
        QKNorm.PRE_ROPE,
        None,
        rope_fraction=fraction,
        output_gate=gate,
    )


@pytest.mark.parametrize("fraction", [1.0, 0.25])
def test_output_gate_elementwise_matches_qwen3_next_attention(fraction):
    pytest.importorskip("transformers")
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextAttention

    seq_len = 13
    config = qwen3_next_config(SHAPE, fraction=fraction)
    torch.manual_seed(0)
    theirs = Qwen3NextAttention(config, layer_idx=0).eval()
    with torch.no_grad():
        for norm in (theirs.q_norm, theirs.k_norm):
            norm.weight.normal_(0, 0.3)  # not the zero it starts at: the 1 + w offset counts
    ours = Attention(SHAPE, gated_spec(OutputGate.ELEMENTWISE, fraction)).eval()
    load_qwen3_next_weights(ours, theirs, SHAPE)
    x = torch.randn(2, seq_len, SHAPE.d_model, generator=torch.Generator().manual_seed(3))
    positions = torch.arange(seq_len)
    want = qwen3_next_attention_output(theirs, config, x, positions)
    with torch.no_grad():
        for backend in ("dense", "blocked"):
            got, _ = ours(x, ForwardContext.at(positions, backend=backend))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=backend)


def test_output_gate_headwise_scales_each_head_by_one_sigmoid():
    ours = Attention(SHAPE, gated_spec(OutputGate.HEADWISE)).eval()
    plain = Attention(SHAPE, gated_spec(OutputGate.NONE)).eval()
    plain.load_state_dict(
        {k: v for k, v in ours.state_dict().items() if k != "gate_proj.weight"}, strict=True
    )
    assert ours.gate_proj.weight.shape == (SHAPE.n_heads, SHAPE.d_model)
    x = torch.randn(1, 7, SHAPE.d_model, generator=torch.Generator().manual_seed(1))
    ctx = ForwardContext.at(torch.arange(7), backend="dense")
    with torch.no_grad():
        # o_proj is linear: the gated output is o_proj of each head's output times its gate
        heads = []
        plain.o_proj.register_forward_hook(lambda m, args, out: heads.append(args[0]))
        plain(x, ctx)
        gate = torch.sigmoid(ours.gate_proj(x))  # (1, 7, H)
        y = heads[0].view(1, 7, SHAPE.n_heads, SHAPE.head_dim) * gate[..., None]
        want = plain.o_proj(y.reshape(1, 7, -1))
        torch.testing.assert_close(ours(x, ctx)[0], want)


def test_output_gate_knobs_place_the_gate_and_its_weights():
    candidate = build_candidate(
        {
            "global_every": 4,
            "global_position": "nope",
            "output_gate": "elementwise",
            "output_gate_layers": "global",
        },
        SHAPE,
        64,
    )
    assert [layer.output_gate.value for layer in candidate.layers] == [
        "none",
        "none",
        "none",
        "elementwise",
    ]
    assert "gate:elementwise" in candidate.name
    plain = build_candidate({"global_every": 4, "global_position": "nope"}, SHAPE, 64)
    assert candidate.id != plain.id
    model = HybridTransformer(candidate.shape, candidate.layers)
    gated = [i for i, block in enumerate(model.blocks) if hasattr(block.attn, "gate_proj")]
    assert gated == [3]
    extra = SHAPE.d_model * SHAPE.n_heads * SHAPE.head_dim
    assert (
        model.num_parameters()
        == HybridTransformer(plain.shape, plain.layers).num_parameters() + extra
    )
