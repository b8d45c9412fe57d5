"""Gated DeltaNet (``local_mixer: gated_deltanet``) against transformers' Qwen3-Next module,
its two forms against each other, and its decoding state."""

from __future__ import annotations

import pytest
import torch
from greedy import assert_cached_greedy_matches

from space import LayerKind, ModelShape, build_candidate
from space.layers import LayerSpec, Mixer, Position, QKNorm, RecurrentShape
from workers.deltanet import (
    GatedDeltaNet,
    RecurrentCache,
    chunk_gated_delta_rule,
    recurrent_gated_delta_rule,
)

SHAPE = ModelShape(
    n_layers=4, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=48, vocab_size=64, init_std=0.08
)
RECURRENT = RecurrentShape(key_heads=2, value_heads=4, head_dim=8, conv_tokens=4)


def gdn_spec(recurrent: RecurrentShape = RECURRENT) -> LayerSpec:
    return LayerSpec(
        0,
        LayerKind.LOCAL,
        Position.NOPE,
        None,
        None,
        QKNorm.NONE,
        None,
        mixer=Mixer.GATED_DELTANET,
        recurrent=recurrent,
    )


def stock_module():
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextGatedDeltaNet

    config = transformers.Qwen3NextConfig(
        hidden_size=SHAPE.d_model,
        num_attention_heads=SHAPE.n_heads,
        num_key_value_heads=SHAPE.n_kv_heads,
        num_hidden_layers=1,
        layer_types=["linear_attention"],
        linear_num_key_heads=RECURRENT.key_heads,
        linear_num_value_heads=RECURRENT.value_heads,
        linear_key_head_dim=RECURRENT.head_dim,
        linear_value_head_dim=RECURRENT.head_dim,
        linear_conv_kernel_dim=RECURRENT.conv_tokens,
        rms_norm_eps=SHAPE.norm_eps,
    )
    torch.manual_seed(0)
    theirs = Qwen3NextGatedDeltaNet(config, layer_idx=0).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)
        theirs.norm.weight.add_(1.0)
    return theirs


def our_weights(theirs) -> dict[str, torch.Tensor]:
    """Split Qwen3-Next's fused projections (grouped per key head) into ours."""
    Hk, Hv, D = RECURRENT.key_heads, RECURRENT.value_heads, RECURRENT.head_dim
    per = Hv // Hk
    qkvz = theirs.in_proj_qkvz.weight.view(Hk, 2 * D + 2 * per * D, -1)
    q, k, v, z = qkvz.split([D, D, per * D, per * D], dim=1)
    ba = theirs.in_proj_ba.weight.view(Hk, 2 * per, -1)
    b, a = ba.split([per, per], dim=1)
    return {
        "q_proj.weight": q.reshape(Hk * D, -1),
        "k_proj.weight": k.reshape(Hk * D, -1),
        "v_proj.weight": v.reshape(Hv * D, -1),
        "z_proj.weight": z.reshape(Hv * D, -1),
        "b_proj.weight": b.reshape(Hv, -1),
        "a_proj.weight": a.reshape(Hv, -1),
        "conv1d.weight": theirs.conv1d.weight,
        "dt_bias": theirs.dt_bias,
        "A_log": theirs.A_log,
        "norm_weight": theirs.norm.weight,
        "out_proj.weight": theirs.out_proj.weight,
    }


@pytest.mark.parametrize("seq_len", [1, 13, 70])  # 70: two chunks of 64, the last one padded
def test_deltanet_matches_qwen3_next_gated_deltanet(seq_len):
    theirs = stock_module()
    ours = GatedDeltaNet(SHAPE, gdn_spec()).eval()
    ours.load_state_dict(our_weights(theirs), strict=True)
    x = torch.randn(2, seq_len, SHAPE.d_model, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = theirs(x)
        for recurrent in (False, True):
            got = ours(x, recurrent=recurrent)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"{recurrent=}")


def test_deltanet_chunked_and_recurrent_rules_agree_with_a_carried_state():
    gen = torch.Generator().manual_seed(1)
    B, H, T, Dk, Dv = 2, 3, 150, 8, 6
    q = torch.nn.functional.normalize(torch.randn(B, H, T, Dk, generator=gen), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, H, T, Dk, generator=gen), dim=-1)
    v = torch.randn(B, H, T, Dv, generator=gen)
    g = -torch.rand(B, H, T, generator=gen)
    beta = torch.rand(B, H, T, generator=gen)
    start = torch.randn(B, H, Dk, Dv, generator=gen)
    want, want_state = recurrent_gated_delta_rule(q, k, v, g, beta, start)
    for chunk in (64, 16, 7):
        got, state = chunk_gated_delta_rule(q, k, v, g, beta, start, chunk=chunk)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state, want_state, atol=1e-5, rtol=1e-5)


def test_deltanet_cache_continues_the_sequence_with_constant_bytes():
    torch.manual_seed(0)
    ours = GatedDeltaNet(SHAPE, gdn_spec()).eval()
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


def test_deltanet_knobs_expand_to_recurrent_local_layers():
    knobs = {"global_every": 4, "local_mixer": "gated_deltanet", "output_gate": "elementwise"}
    candidate = build_candidate(knobs, SHAPE, 64)
    assert [layer.mixer.value for layer in candidate.layers] == [
        "gated_deltanet",
        "gated_deltanet",
        "gated_deltanet",
        "softmax",
    ]
    # Qwen3-Next's proportions by default: model heads and head size, twice the value heads
    assert candidate.layers[0].recurrent == RecurrentShape(4, 8, 8, 4)
    assert [layer.output_gate.value for layer in candidate.layers] == ["none"] * 3 + ["elementwise"]
    assert candidate.name == "L4 3:1 gdn4x8v8/rope1e4 gate:elementwise qk:none"
    softmax = build_candidate({**knobs, "local_mixer": "softmax"}, SHAPE, 64)
    sized = build_candidate({**knobs, "deltanet_head_dim": 4}, SHAPE, 64)
    assert len({candidate.id, softmax.id, sized.id}) == 3


HYBRID = {
    "global_every": 3,
    "local_mixer": "gated_deltanet",
    "output_gate": "elementwise",
    "qk_norm": "pre_rope",
    "rope_fraction": 0.25,
    "deltanet_conv_tokens": 3,
    "kv_heads": 2,
}
MODEL_SHAPE = ModelShape(
    n_layers=6, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=64, vocab_size=260
)


def _hybrid_model(dtype=torch.float64):
    from workers.model import HybridTransformer

    candidate = build_candidate(HYBRID, MODEL_SHAPE, 32)
    torch.manual_seed(7)
    model = HybridTransformer(candidate.shape, candidate.layers)
    for p in model.parameters():
        if p.dim() == 1 and p.numel() > 8:  # norm gains: not all ones
            torch.nn.init.normal_(p, 1.0, 0.5)
    return candidate, model.to(dtype).eval()


def test_deltanet_hybrid_cached_greedy_decoding_gives_the_uncached_tokens():
    _, model = _hybrid_model()
    prompts = torch.randint(0, 256, (3, 100), generator=torch.Generator().manual_seed(1))
    budget = 30
    assert_cached_greedy_matches(model, prompts, budget, atol=1e-9)


def test_deltanet_hybrid_decoding_state_is_constant_and_equals_serving_cost():
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
        # the recurrent layers' share does not grow with the context
        per_token = 2 * candidate.shape.n_kv_heads * candidate.shape.head_dim * 4
        assert expected == state + len(attention) * per_token * context


def test_deltanet_hybrid_attention_mass_lists_only_softmax_layers():
    import numpy as np

    from workers.attention_mass import attention_mass
    from workers.tasks import render

    candidate, model = _hybrid_model(torch.float32)
    filler = np.random.default_rng(0).integers(32, 127, 4096).astype(np.int32)
    example = render("passkey", 96, 0.5, 3, filler)
    mass = attention_mass(model, [example], candidate.layers)
    assert mass["per_layer"][0]["needle"] >= 0
    assert [row["index"] for row in mass["per_layer"]] == [2, 5]
    assert list(mass["per_kind"]) == ["global_rope"]


BASE = {
    "study": {"name": "t"},
    "model": {"layers": 4, "d_model": 64, "heads": 4, "mlp_hidden": 128},
    "train": {"seq_len": 64, "batch_size": 2, "steps": 10},
}


@pytest.mark.parametrize(
    ("space", "path", "words"),
    [
        ({"local_window": 16}, "space.local_window", "take no window"),
        ({"local_window": {"choice": [16, None]}}, "space.local_window", "take no window"),
        ({"local_rope_base": 5.0e4}, "space.local_rope_base", "take no RoPE"),
        ({"local_attention": "chunked"}, "space.local_attention", "take no window"),
        (
            {"qk_norm": "pre_rope", "qk_norm_layers": "local"},
            "space.qk_norm_layers",
            "take no qk_norm",
        ),
        (
            {"output_gate": "headwise", "output_gate_layers": "local"},
            "space.output_gate_layers",
            "take no output_gate",
        ),
        (
            {"rope_fraction": 0.5, "rope_fraction_layers": "local"},
            "space.rope_fraction_layers",
            "take no rope_fraction",
        ),
    ],
)
def test_deltanet_attention_knobs_on_recurrent_layers_refused_with_key_path(space, path, words):
    from space import ConfigError, parse_config

    raw = {**BASE, "space": {"global_every": 4, "local_mixer": "gated_deltanet", **space}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert any(p == path and words in m for p, m in info.value.problems), info.value.problems


def test_deltanet_sampled_window_on_recurrent_layers_is_an_invalid_candidate():
    from space import InvalidCandidate

    with pytest.raises(InvalidCandidate, match="local_window=16: the local layers are gated_"):
        build_candidate(
            {"global_every": 4, "local_mixer": "gated_deltanet", "local_window": 16}, SHAPE, 64
        )
    with pytest.raises(InvalidCandidate, match="deltanet_value_heads"):
        build_candidate(
            {"local_mixer": "gated_deltanet", "global_every": 4, "deltanet_value_heads": 3},
            SHAPE,
            64,
        )


def test_deltanet_export_refuses_what_qwen3_next_lacks_naming_the_knob(tmp_path):
    """Qwen3-Next is the stock class for Gated DeltaNet hybrids (tests/test_hf_export.py);
    plain NoPE attention beside the recurrent layers is not it, so it is refused naming the
    knob, then exported as remote code (transformers' Qwen3NextGatedDeltaNet in our modeling
    file), whose logits the export checks against ours."""
    pytest.importorskip("transformers")
    from workers.hf.export import export_candidate
    from workers.hf.reasons import NotExpressible
    from workers.model import HybridTransformer

    candidate = build_candidate({"global_every": 4, "local_mixer": "gated_deltanet"}, SHAPE, 64)
    weights = HybridTransformer(candidate.shape, candidate.layers).state_dict()
    kwargs = {"max_position_embeddings": 64, "card": "# card\n"}
    with pytest.raises(NotExpressible, match="output_gate=none") as err:
        export_candidate(candidate, weights, tmp_path / "model", **kwargs)
    assert err.value.remote_code_possible
    result = export_candidate(candidate, weights, tmp_path / "model", remote_code=True, **kwargs)
    assert result.remote_code and result.max_abs_diff <= 1e-4


def test_deltanet_layer_spec_refuses_attention_options():
    with pytest.raises(ValueError, match="takes no window_tokens"):
        LayerSpec(
            0,
            LayerKind.LOCAL,
            Position.NOPE,
            None,
            8,
            QKNorm.NONE,
            None,
            mixer=Mixer.GATED_DELTANET,
            recurrent=RECURRENT,
        )
    with pytest.raises(ValueError, match="recurrent sizes are set exactly"):
        LayerSpec(
            0, LayerKind.LOCAL, Position.NOPE, None, None, QKNorm.NONE, None, recurrent=RECURRENT
        )
    round_trip = LayerSpec.from_dict(gdn_spec().to_dict())
    assert round_trip == gdn_spec()


def test_deltanet_describer_and_qwen3_next_preset():
    from space import BUILTIN_PRESETS
    from space.describe import describe_knobs

    candidate = build_candidate(dict(BUILTIN_PRESETS["qwen3_next_like"]), MODEL_SHAPE, 32)
    assert [s.mixer.value for s in candidate.layers[:4]] == ["gated_deltanet"] * 3 + ["softmax"]
    glob = candidate.layers[3]
    assert (glob.output_gate.value, glob.qk_norm.value, glob.rope_fraction) == (
        "elementwise",
        "pre_rope",
        0.25,
    )
    text = describe_knobs(candidate.knobs)
    assert text.startswith("3 of every 4 layers: a Gated DeltaNet recurrent layer (Qwen3-Next")
    assert "on the attention layers" in text and "all layers" not in text


def test_deltanet_hybrid_trains_every_parameter():
    from workers.model import HybridTransformer

    candidate = build_candidate({**HYBRID, "kv_heads": None}, MODEL_SHAPE, 32)
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


def test_deltanet_mixers_config_validates_and_samples_no_window_on_recurrent_layers():
    from pathlib import Path

    import optuna

    from space import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "mixers.yaml")
    assert {s.mixer.value for s in config.preset_candidate("qwen3_next_like").layers} == {
        "softmax",
        "gated_deltanet",
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    mixers = set()
    for _ in range(12):
        trial = study.ask()
        knobs = config.suggest(trial)
        candidate = config.candidate(knobs)  # never an invalid candidate: the window is conditional
        mixers.update(s.mixer.value for s in candidate.layers if s.kind is LayerKind.LOCAL)
        study.tell(trial, 0.0)
    assert mixers == {"softmax", "gated_deltanet", "mamba2", "kda"}


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"local_mixer": "softmax"}, "would change mixer gated_deltanet -> softmax"),
        ({"output_gate": "none"}, "layer 3 would change output gate elementwise -> none"),
        ({"layout": "GGGG"}, "would change mixer gated_deltanet -> softmax"),
    ],
)
def test_deltanet_a_later_stage_cannot_change_mixers_or_gates(override, words):
    from space import ConfigError, parse_config

    raw = {
        **BASE,
        "train": {
            "seq_len": 64,
            "batch_size": 2,
            "stages": [{"steps": 1}, {"steps": 1, "knobs": override}],
        },
        "space": {"global_every": 4, "local_mixer": "gated_deltanet", "output_gate": "elementwise"},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    problems = dict(info.value.problems)
    key = f"train.stages[1].knobs.{next(iter(override))}"
    assert words in problems[key], problems
