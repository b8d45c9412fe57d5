"""Kimi Delta Attention (``local_mixer: kda``) against transformers' Kimi Linear module, its
two forms against each other, its decoding state, the knobs and the preset, and its export
as remote code."""

from __future__ import annotations

import pytest
import torch
from greedy import assert_cached_greedy_matches

from space import BUILTIN_PRESETS, LayerKind, ModelShape, build_candidate
from space.errors import InvalidCandidate
from space.layers import LayerSpec, Mixer, Position, QKNorm, RecurrentShape
from workers.deltanet import recurrent_gated_delta_rule as recurrent_kda
from workers.kda import KimiDeltaAttention, chunk_kda
from workers.kv_cache import RecurrentCache

SHAPE = ModelShape(
    n_layers=4, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=48, vocab_size=64, init_std=0.08
)
RECURRENT = RecurrentShape(key_heads=3, value_heads=3, head_dim=8, conv_tokens=4)


def kda_spec(recurrent: RecurrentShape = RECURRENT) -> LayerSpec:
    return LayerSpec(
        0,
        LayerKind.LOCAL,
        Position.NOPE,
        None,
        None,
        QKNorm.NONE,
        None,
        mixer=Mixer.KDA,
        recurrent=recurrent,
    )


def stock_module():
    transformers = pytest.importorskip("transformers")
    from transformers.models.kimi_linear.modeling_kimi_linear import KimiLinearDeltaAttention

    config = transformers.KimiLinearConfig(
        hidden_size=SHAPE.d_model,
        num_hidden_layers=1,
        layer_types=["linear_attention"],
        linear_num_heads=RECURRENT.key_heads,
        linear_head_dim=RECURRENT.head_dim,
        linear_conv_kernel_dim=RECURRENT.conv_tokens,
        rms_norm_eps=SHAPE.norm_eps,
        hidden_act="silu",
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    theirs = KimiLinearDeltaAttention(config, layer_idx=0).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)
        theirs.o_norm.weight.add_(1.0)
    return theirs


def our_weights(theirs) -> dict[str, torch.Tensor]:
    """Kimi Linear's names -> ours: the forget gate's parameters flattened, A_log per head."""
    same = ("q_proj", "k_proj", "v_proj", "b_proj", "g_a_proj", "g_b_proj")
    weights = {f"{name}.weight": getattr(theirs, name).weight for name in same}
    gate = theirs.forget_gate
    return {
        **weights,
        "conv1d.weight": theirs.conv1d.weight,
        "f_a_proj.weight": gate.f_a_proj.weight,
        "f_b_proj.weight": gate.f_b_proj.weight,
        "A_log": gate.A_log.flatten(),
        "dt_bias": gate.dt_bias,
        "norm_weight": theirs.o_norm.weight,
        "out_proj.weight": theirs.o_proj.weight,
    }


@pytest.mark.parametrize("seq_len", [1, 13, 70])  # 70: two chunks of 64, the last one padded
def test_kda_matches_kimi_linear_delta_attention(seq_len):
    theirs = stock_module()
    ours = KimiDeltaAttention(SHAPE, kda_spec()).eval()
    ours.load_state_dict(our_weights(theirs), strict=True)
    x = torch.randn(2, seq_len, SHAPE.d_model, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = theirs(x)
        for recurrent in (False, True):
            got = ours(x, recurrent=recurrent)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"{recurrent=}")


def test_kda_chunked_and_recurrent_rules_agree_with_a_carried_state():
    gen = torch.Generator().manual_seed(1)
    B, H, T, Dk, Dv = 2, 3, 150, 8, 6
    q = torch.nn.functional.normalize(torch.randn(B, H, T, Dk, generator=gen), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, H, T, Dk, generator=gen), dim=-1)
    v = torch.randn(B, H, T, Dv, generator=gen)
    g = -torch.rand(B, H, T, Dk, generator=gen)  # a decay per key channel
    beta = torch.rand(B, H, T, generator=gen)
    start = torch.randn(B, H, Dk, Dv, generator=gen)
    want, want_state = recurrent_kda(q, k, v, g, beta, start)
    for chunk in (64, 16, 7):
        got, state = chunk_kda(q, k, v, g, beta, start, chunk=chunk)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state, want_state, atol=1e-5, rtol=1e-5)
    # the per-channel decay is used as such: one decay per head gives another state
    flat, _ = recurrent_kda(q, k, v, g.mean(-1, keepdim=True).expand_as(g), beta, start)
    assert (flat - want).abs().max() > 1e-2


def test_kda_cache_continues_the_sequence_with_constant_bytes():
    torch.manual_seed(0)
    ours = KimiDeltaAttention(SHAPE, kda_spec()).eval()
    x = torch.randn(2, 40, SHAPE.d_model, generator=torch.Generator().manual_seed(2))
    cache = RecurrentCache(2, RECURRENT, dtype=torch.float32, device="cpu")
    held = cache.nbytes
    assert held == 4 * RECURRENT.state_elements() * 2  # fp32, two sequences
    with torch.no_grad():
        want = ours(x)
        parts = [ours(x[:, :17], cache)]  # a prompt chunk, then one token at a time
        for t in range(17, 40):
            parts.append(ours(x[:, t : t + 1], cache))
            assert cache.nbytes == held
    torch.testing.assert_close(torch.cat(parts, dim=1), want, atol=1e-5, rtol=1e-5)


def test_kda_knobs_expand_and_value_heads_must_equal_key_heads():
    knobs = {"global_every": 4, "local_mixer": "kda", "global_position": "nope"}
    candidate = build_candidate(knobs, SHAPE, 64)
    assert [layer.mixer.value for layer in candidate.layers] == ["kda"] * 3 + ["softmax"]
    # the model's heads and head size by default, one value head per key head
    assert candidate.layers[0].recurrent == RecurrentShape(4, 4, 8, 4)
    assert candidate.name == "L4 3:1 kda4x8/nope qk:none"
    gdn = build_candidate({**knobs, "local_mixer": "gated_deltanet"}, SHAPE, 64)
    sized = build_candidate({**knobs, "deltanet_heads": 2, "deltanet_value_heads": 2}, SHAPE, 64)
    assert sized.layers[0].recurrent == RecurrentShape(2, 2, 8, 4)
    assert len({candidate.id, gdn.id, sized.id}) == 3
    with pytest.raises(InvalidCandidate, match="deltanet_value_heads=8: a kda layer has as many"):
        build_candidate({**knobs, "deltanet_value_heads": 8}, SHAPE, 64)
    with pytest.raises(ValueError, match="layer 0: a kda layer has as many value heads"):
        kda_spec(RecurrentShape(2, 4, 8, 4))


BASE = {
    "study": {"name": "kda"},
    "model": {"layers": 4, "d_model": 32, "heads": 4, "mlp_hidden": 64},
    "train": {"seq_len": 64, "batch_size": 2, "steps": 10},
}
MODEL_SHAPE = ModelShape(
    n_layers=6, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=64, vocab_size=260
)
HYBRID = {**BUILTIN_PRESETS["kimi_linear_like"], "global_every": 3, "deltanet_conv_tokens": 3}


def _hybrid_model(dtype=torch.float64):
    from workers.model import HybridTransformer

    candidate = build_candidate(HYBRID, MODEL_SHAPE, 32)
    torch.manual_seed(7)
    model = HybridTransformer(candidate.shape, candidate.layers)
    for p in model.parameters():
        if p.dim() == 1 and p.numel() > 8:  # norm gains: not all ones
            torch.nn.init.normal_(p, 1.0, 0.5)
    return candidate, model.to(dtype).eval()


def test_kda_hybrid_cached_greedy_decoding_gives_the_uncached_tokens():
    _, model = _hybrid_model()
    prompts = torch.randint(0, 256, (3, 100), generator=torch.Generator().manual_seed(1))
    assert_cached_greedy_matches(model, prompts, 30, atol=1e-9)


def test_kda_hybrid_decoding_state_is_constant_and_equals_serving_cost():
    from workers.serving_cost import kv_cache_bytes

    candidate, model = _hybrid_model(torch.float32)
    recurrent = [s for s in candidate.layers if s.recurrent is not None]
    state = sum(s.recurrent.state_elements() for s in recurrent) * 4
    attention = [s for s in candidate.layers if s.recurrent is None]
    for context in (5, 100, 300):
        cache = model.new_cache(1, context)
        with torch.no_grad():
            model.step(torch.randint(0, 256, (1, context)), cache)
        expected = kv_cache_bytes(candidate.shape, candidate.layers, context, dtype_bytes=4)
        assert cache.nbytes() == expected
        per_token = 2 * candidate.shape.n_kv_heads * candidate.shape.head_dim * 4
        assert expected == state + len(attention) * per_token * context


def test_kda_hybrid_trains_every_parameter():
    from workers.model import HybridTransformer

    candidate = build_candidate(HYBRID, MODEL_SHAPE, 32)
    torch.manual_seed(0)
    model = HybridTransformer(candidate.shape, candidate.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 256, (4, 65), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(15):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_kda_describer_and_kimi_linear_preset():
    from space.describe import describe_knobs

    candidate = build_candidate(dict(BUILTIN_PRESETS["kimi_linear_like"]), MODEL_SHAPE, 32)
    assert [s.mixer.value for s in candidate.layers[:4]] == ["kda"] * 3 + ["softmax"]
    assert candidate.layers[3].position is Position.NOPE
    text = describe_knobs(candidate.knobs)
    assert text.startswith("3 of every 4 layers: a Kimi Delta Attention recurrent layer (KDA")


@pytest.mark.parametrize(
    ("space", "path", "words"),
    [
        ({"local_window": 16}, "space.local_window", "take no window"),
        ({"local_rope_base": 5.0e4}, "space.local_rope_base", "take no RoPE"),
        # a fixed impossible candidate: refused at validation, the knob named in the message
        ({"deltanet_value_heads": 8}, "space", "deltanet_value_heads=8: a kda layer has as many"),
    ],
)
def test_kda_wrong_knobs_refused_with_key_path(space, path, words):
    from space import ConfigError, parse_config

    raw = {**BASE, "space": {"global_every": 4, "local_mixer": "kda", **space}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert any(p == path and words in m for p, m in info.value.problems), info.value.problems
