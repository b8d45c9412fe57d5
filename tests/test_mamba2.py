"""Mamba2 (``local_mixer: mamba2``) against transformers' ``Mamba2Mixer``, its two forms
against each other, its decoding state, and its knobs."""

from __future__ import annotations

import pytest
import torch
from greedy import assert_cached_greedy_matches

from space import LayerKind, ModelShape, build_candidate
from space.layers import LayerSpec, Mamba2Shape, Mixer, Position, QKNorm, RecurrentShape
from workers.kv_cache import RecurrentCache
from workers.mamba2 import Mamba2, chunk_ssd, recurrent_ssd

SHAPE = ModelShape(
    n_layers=4, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=48, vocab_size=64, init_std=0.08
)
SIZES = Mamba2Shape(heads=4, head_dim=16, state_size=8, groups=2, conv_tokens=4)


def mamba2_spec(sizes: Mamba2Shape = SIZES) -> LayerSpec:
    return LayerSpec(
        0,
        LayerKind.LOCAL,
        Position.NOPE,
        None,
        None,
        QKNorm.NONE,
        None,
        mixer=Mixer.MAMBA2,
        recurrent=sizes,
    )


def stock_mixer(chunk_size: int):
    transformers = pytest.importorskip("transformers")
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    config = transformers.Mamba2Config(
        hidden_size=SHAPE.d_model,
        expand=SIZES.inner // SHAPE.d_model,
        num_heads=SIZES.heads,
        head_dim=SIZES.head_dim,
        state_size=SIZES.state_size,
        n_groups=SIZES.groups,
        conv_kernel=SIZES.conv_tokens,
        num_hidden_layers=1,
        layer_norm_epsilon=SHAPE.norm_eps,
        chunk_size=chunk_size,
    )
    torch.manual_seed(0)
    theirs = Mamba2Mixer(config, layer_idx=0).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)
        theirs.norm.weight.add_(1.0)
    return theirs


# 70 tokens: three of transformers' 32-token chunks, the last one padded
@pytest.mark.parametrize("seq_len", [1, 13, 70])
def test_mamba2_matches_transformers_mamba2_mixer(seq_len):
    theirs = stock_mixer(chunk_size=32)
    ours = Mamba2(SHAPE, mamba2_spec()).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # the same names and layouts
    x = torch.randn(2, seq_len, SHAPE.d_model, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = theirs(x)
        for recurrent in (False, True):
            got = ours(x, recurrent=recurrent)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"{recurrent=}")


def test_mamba2_chunked_and_recurrent_forms_agree_with_a_carried_state():
    gen = torch.Generator().manual_seed(1)
    B, H, T, P, N = 2, 3, 150, 6, 5
    x = torch.randn(B, H, T, P, generator=gen)
    dt = torch.nn.functional.softplus(torch.randn(B, H, T, generator=gen))
    A = -torch.rand(H, generator=gen) * 2
    Bm, Cm = torch.randn(B, H, T, N, generator=gen), torch.randn(B, H, T, N, generator=gen)
    start = torch.randn(B, H, P, N, generator=gen)
    want, want_state = recurrent_ssd(x, dt, A, Bm, Cm, start)
    for chunk in (256, 64, 7):
        got, state = chunk_ssd(x, dt, A, Bm, Cm, start, chunk=chunk)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state, want_state, atol=1e-5, rtol=1e-5)


def test_mamba2_cache_continues_the_sequence_with_constant_bytes():
    torch.manual_seed(0)
    ours = Mamba2(SHAPE, mamba2_spec()).eval()
    x = torch.randn(2, 40, SHAPE.d_model, generator=torch.Generator().manual_seed(2))
    cache = RecurrentCache(2, SIZES, dtype=torch.float32, device="cpu")
    held = cache.nbytes
    # fp32, two sequences: 3 convolution inputs of x, B, C and a 16 x 8 state per head
    assert held == 4 * 2 * ((64 + 2 * 2 * 8) * 3 + 4 * 16 * 8) == 4 * 2 * SIZES.state_elements()
    with torch.no_grad():
        want = ours(x)
        parts = [ours(x[:, :17], cache)]  # a prompt chunk, then one token at a time
        for t in range(17, 40):
            parts.append(ours(x[:, t : t + 1], cache))
            assert cache.nbytes == held
    torch.testing.assert_close(torch.cat(parts, dim=1), want, atol=1e-5, rtol=1e-5)


def test_mamba2_knob_defaults_are_the_stock_config():
    transformers = pytest.importorskip("transformers")
    from space.knobs import KNOB_DEFAULTS

    stock = transformers.Mamba2Config()
    assert KNOB_DEFAULTS["mamba2_state_size"] == stock.state_size
    assert KNOB_DEFAULTS["mamba2_conv_tokens"] == stock.conv_kernel
    assert KNOB_DEFAULTS["mamba2_expand"] == stock.expand
    assert KNOB_DEFAULTS["mamba2_head_dim"] == stock.head_dim


def test_mamba2_knobs_expand_to_recurrent_local_layers():
    knobs = {"global_every": 4, "local_mixer": "mamba2", "global_position": "nope"}
    candidate = build_candidate(knobs, SHAPE, 64)
    assert [layer.mixer.value for layer in candidate.layers] == ["mamba2"] * 3 + ["softmax"]
    # expand 2 x d_model 32 = 64 channels: one head of 64, state 128, one group, kernel 4
    assert candidate.layers[0].recurrent == Mamba2Shape(1, 64, 128, 1, 4)
    assert candidate.name == "L4 3:1 mamba1x64s128/nope qk:none"
    sized = build_candidate({**knobs, "mamba2_head_dim": 16, "mamba2_groups": 2}, SHAPE, 64)
    assert sized.layers[1].recurrent == Mamba2Shape(4, 16, 128, 2, 4)
    others = [
        build_candidate({**knobs, "local_mixer": "gated_deltanet"}, SHAPE, 64),
        build_candidate({**knobs, "mamba2_state_size": 16}, SHAPE, 64),
        build_candidate({**knobs, "mamba2_conv_tokens": 2}, SHAPE, 64),
        build_candidate({**knobs, "mamba2_expand": 4}, SHAPE, 64),
        sized,
    ]
    assert len({candidate.id, *(c.id for c in others)}) == 6
    # knobs of the mixer that is not used change nothing
    assert build_candidate({**knobs, "deltanet_conv_tokens": 2}, SHAPE, 64).id == candidate.id
    round_trip = LayerSpec.from_dict(candidate.layers[0].to_dict())
    assert round_trip == candidate.layers[0]


def test_mamba2_layer_spec_needs_its_own_sizes():
    with pytest.raises(ValueError, match="a mamba2 layer needs Mamba2Shape"):
        mamba2_spec(RecurrentShape(2, 4, 8))  # Gated DeltaNet sizes on a Mamba2 layer
    with pytest.raises(ValueError, match="groups 3 must divide heads 4"):
        Mamba2Shape(heads=4, head_dim=8, state_size=4, groups=3)


def test_mamba2_impossible_sizes_are_invalid_candidates_naming_the_knob():
    from space import InvalidCandidate

    knobs = {"global_every": 4, "local_mixer": "mamba2"}
    with pytest.raises(InvalidCandidate, match="mamba2_head_dim=48 does not divide"):
        build_candidate({**knobs, "mamba2_head_dim": 48}, SHAPE, 64)
    with pytest.raises(InvalidCandidate, match="mamba2_groups=8 does not divide the 4"):
        build_candidate({**knobs, "mamba2_head_dim": 16, "mamba2_groups": 8}, SHAPE, 64)
    with pytest.raises(InvalidCandidate, match="local_window=16: the local layers are mamba2"):
        build_candidate({**knobs, "local_window": 16}, SHAPE, 64)


BASE = {
    "study": {"name": "t"},
    "model": {"layers": 4, "d_model": 64, "heads": 4, "mlp_hidden": 128},
    "train": {"seq_len": 64, "batch_size": 2, "steps": 10},
}


@pytest.mark.parametrize(
    ("space", "path", "words"),
    [
        ({"local_window": 16}, "space.local_window", "take no window"),
        ({"local_rope_base": 5.0e4}, "space.local_rope_base", "take no RoPE"),
        (
            {"rope_fraction": 0.5, "rope_fraction_layers": "local"},
            "space.rope_fraction_layers",
            "take no rope_fraction",
        ),
        (
            {"output_gate": "headwise", "output_gate_layers": "local"},
            "space.output_gate_layers",
            "take no output_gate",
        ),
        ({"mamba2_state_size": 0}, "space.mamba2_state_size", ""),
        ({"mamba2_head_dim": 2.5}, "space.mamba2_head_dim", ""),
    ],
)
def test_mamba2_attention_knobs_on_recurrent_layers_refused_with_key_path(space, path, words):
    from space import ConfigError, parse_config

    raw = {**BASE, "space": {"global_every": 4, "local_mixer": "mamba2", **space}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert any(p == path and words in m for p, m in info.value.problems), info.value.problems


def test_mamba2_a_later_stage_cannot_change_its_sizes():
    from space import ConfigError, parse_config

    raw = {
        **BASE,
        "train": {
            "seq_len": 64,
            "batch_size": 2,
            "stages": [{"steps": 1}, {"steps": 1, "knobs": {"mamba2_state_size": 16}}],
        },
        "space": {"global_every": 4, "local_mixer": "mamba2"},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert "train.stages[1].knobs.mamba2_state_size" in dict(info.value.problems)


HYBRID = {
    "global_every": 3,
    "local_mixer": "mamba2",
    "global_position": "nope",
    "mamba2_head_dim": 16,
    "mamba2_state_size": 8,
    "mamba2_groups": 2,
    "mamba2_conv_tokens": 3,
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
    return candidate, model.to(dtype).eval()


def test_mamba2_hybrid_cached_greedy_decoding_gives_the_uncached_tokens():
    _, model = _hybrid_model()
    prompts = torch.randint(0, 256, (3, 100), generator=torch.Generator().manual_seed(1))
    budget = 30
    assert_cached_greedy_matches(model, prompts, budget, atol=1e-9)


def test_mamba2_hybrid_decoding_state_is_constant_and_equals_serving_cost():
    from workers.serving_cost import attention_flops_per_token, kv_cache_bytes

    candidate, model = _hybrid_model(torch.float32)
    recurrent = [s for s in candidate.layers if s.recurrent is not None]
    assert len(recurrent) == 4
    sizes = recurrent[0].recurrent  # 64 channels in 4 heads of 16, state 8, 2 groups, kernel 3
    state = 4 * ((64 + 2 * 2 * 8) * 2 + 64 * 8) * 4  # 4 layers, fp32
    per_token = 2 * candidate.shape.n_kv_heads * candidate.shape.head_dim * 4
    for context in (5, 100, 300):
        cache = model.new_cache(1, context)
        with torch.no_grad():
            model.step(torch.randint(0, 256, (1, context)), cache)
        expected = kv_cache_bytes(candidate.shape, candidate.layers, context, dtype_bytes=4)
        assert cache.nbytes() == expected == state + 2 * per_token * context
        # the recurrent layers' FLOPs do not grow with the context: x B^T and C h per token
        softmax = attention_flops_per_token(candidate.shape, candidate.layers[2:3], context)
        flops = attention_flops_per_token(candidate.shape, candidate.layers, context)
        assert flops == 2 * softmax + 4 * (2 * 2 * sizes.inner * sizes.state_size)


def test_mamba2_hybrid_attention_mass_lists_only_softmax_layers():
    import numpy as np

    from workers.attention_mass import attention_mass
    from workers.tasks import render

    candidate, model = _hybrid_model(torch.float32)
    filler = np.random.default_rng(0).integers(32, 127, 4096).astype(np.int32)
    example = render("passkey", 96, 0.5, 3, filler)
    mass = attention_mass(model, [example], candidate.layers)
    assert [row["index"] for row in mass["per_layer"]] == [2, 5]
    assert list(mass["per_kind"]) == ["global_nope"]


@pytest.mark.slow
def test_mamba2_hybrid_trains_every_parameter():
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


def test_mamba2_hybrid_exports_to_granite_moe_hybrid_without_remote_code(tmp_path):
    """A Mamba2 : NoPE hybrid is GraniteMoeHybrid without experts (Granite 4.0-H's layers):
    AutoModelForCausalLM loads it from the folder alone, logits within 1e-4 and the same
    greedy tokens through its own cache. (Every shipped preset: tests/test_hf_export.py.)"""
    transformers = pytest.importorskip("transformers")
    from workers.decoding import greedy_decode
    from workers.hf.export import export_candidate
    from workers.model import HybridTransformer

    candidate = build_candidate(HYBRID, MODEL_SHAPE, 32)
    torch.manual_seed(1)
    model = HybridTransformer(candidate.shape, candidate.layers)
    with torch.no_grad():  # norm gains and D away from 1, so a misplaced one shows
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(1.0, 0.3)
    model.eval()
    result = export_candidate(
        candidate,
        model.state_dict(),
        tmp_path / "model",
        max_position_embeddings=256,
        card="# card\n",
    )
    assert result.architecture == "GraniteMoeHybridForCausalLM" and not result.remote_code
    assert not any(f.endswith(".py") for f in result.files)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(result.out_dir)).eval()
    idx = torch.randint(0, 256, (2, 90), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=idx).logits, model(idx), atol=1e-4, rtol=0)
        prompt = idx[:1, :40]
        theirs = hf.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None)
        mine = greedy_decode(model, prompt, 12)
    assert theirs[0, 40:].tolist() == mine[0].tolist()


def test_mamba2_export_refuses_what_granite_lacks_naming_the_knob(tmp_path):
    pytest.importorskip("transformers")
    from workers.hf.export import export_candidate
    from workers.hf.reasons import NotExpressible
    from workers.model import HybridTransformer

    knobs = {"global_every": 4, "local_mixer": "mamba2", "global_window": 16}
    candidate = build_candidate(knobs, SHAPE, 64)
    weights = HybridTransformer(candidate.shape, candidate.layers).state_dict()
    kwargs = {"max_position_embeddings": 64, "card": "# card\n"}
    with pytest.raises(NotExpressible, match="global_window=16") as err:
        export_candidate(candidate, weights, tmp_path / "model", **kwargs)
    assert err.value.remote_code_possible  # transformers' Mamba2Mixer in our modeling file
    assert not (tmp_path / "model").exists()
    result = export_candidate(candidate, weights, tmp_path / "model", remote_code=True, **kwargs)
    assert result.remote_code and result.max_abs_diff <= 1e-4


def test_mamba2_describer():
    from space.describe import describe_knobs

    text = describe_knobs({"global_every": 4, "local_mixer": "mamba2", "global_position": "nope"})
    assert text.startswith(
        "3 of every 4 layers: a Mamba2 state-space layer (no positions, constant state: "
        "64-channel heads over 2 x d_model, state size 128, 1 B/C group, a 4-token convolution)"
        "; every 4th layer: no positional encoding (NoPE)"
    )
