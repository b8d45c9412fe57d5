"""HybridTransformer: each layer gets the mask, RoPE table, QK-norm, temperature, sink, partial
rotary and RoPE scaling its spec says."""

from __future__ import annotations

import math

import pytest
import torch

from space.layers import (
    AttentionSink,
    LayerKind,
    LayerSpec,
    ModelShape,
    Position,
    QKNorm,
    RopeScaling,
    RopeScalingKind,
    Temperature,
    WindowKind,
)
from workers.attention import window_mask
from workers.model import (
    HybridTransformer,
    apply_rope,
    rope_cos_sin,
    rope_inv_freq,
    temperature_scale,
)

SHAPE = ModelShape(
    n_layers=5, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=48, vocab_size=40, init_std=0.08
)


def spec(
    index: int,
    *,
    rope_base: float | None = 10_000.0,
    window: int | None = None,
    qk_norm: QKNorm = QKNorm.NONE,
    temperature: Temperature | None = None,
    chunked: bool = False,
    sink: bool = False,
    rope_fraction: float = 1.0,
    scaling: RopeScaling | None = None,
) -> LayerSpec:
    """A hand-built layer: RoPE when rope_base is set, NoPE otherwise."""
    return LayerSpec(
        index=index,
        kind=LayerKind.LOCAL if window is not None else LayerKind.GLOBAL,
        position=Position.ROPE if rope_base is not None else Position.NOPE,
        rope_base=rope_base,
        window_tokens=window,
        qk_norm=qk_norm,
        temperature=temperature,
        window_kind=WindowKind.CHUNKED if chunked else WindowKind.SLIDING,
        attention_sink=AttentionSink.LEARNED if sink else AttentionSink.NONE,
        rope_fraction=rope_fraction,
        rope_scaling=scaling,
    )


# Every feature once, each layer different, so a layer wired to its neighbour's spec shows up.
MIXED = (
    spec(0, rope_base=10_000.0, window=4),
    spec(1, rope_base=100.0, window=7, qk_norm=QKNorm.PRE_ROPE),
    spec(2, rope_base=1_000_000.0, qk_norm=QKNorm.POST_ROPE),
    spec(3, rope_base=None, qk_norm=QKNorm.PRE_ROPE, temperature=Temperature(4, 0.5)),
    spec(4, rope_base=None, window=5, qk_norm=QKNorm.POST_ROPE),
)


# The newer knobs, each layer different again: chunks shorter than the sequences below (with
# a sink), partial rotary (half, a quarter of head_dim 8), linear RoPE scaling, sinks on a NoPE
# layer with temperature, and a chunked layer with everything at once.
LINEAR4 = RopeScaling(RopeScalingKind.LINEAR, factor=4.0, original_tokens=16)
MIXED_NEW = (
    spec(0, rope_base=10_000.0, window=4, chunked=True, sink=True),
    spec(1, rope_base=500.0, window=7, rope_fraction=0.5),
    spec(2, rope_base=10_000.0, qk_norm=QKNorm.POST_ROPE, rope_fraction=0.25, scaling=LINEAR4),
    spec(3, rope_base=None, sink=True, temperature=Temperature(4, 0.5)),
    spec(
        4,
        rope_base=100.0,
        window=5,
        chunked=True,
        sink=True,
        qk_norm=QKNorm.PRE_ROPE,
        rope_fraction=0.5,
        scaling=LINEAR4,
    ),
)


def build(layers=MIXED, shape=SHAPE, seed: int = 0) -> HybridTransformer:
    torch.manual_seed(seed)
    model = HybridTransformer(shape, layers)
    with torch.no_grad():  # QK-norm weights start at 1, sinks at 0; make them matter
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.copy_(1 + 0.5 * torch.randn_like(p))
            if name.endswith("sinks"):
                p.copy_(2 * torch.randn_like(p))
    return model


def tokens(batch: int, seq_len: int, vocab: int = SHAPE.vocab_size, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- an independent reference


def reference_probs(attn, layer: LayerSpec, x: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """Attention probabilities (B, H, T, T) recomputed from the spec in float64.

    Written differently from the model on purpose: RoPE as complex multiplication of the pairs
    (d, d + R/2) of the first R = rope_fraction * D dims, linear scaling as positions divided by
    the factor, temperature with math.log1p, the mask with explicit index comparisons, the sink
    as one more column of logits.
    """
    n_heads, n_kv, dim = SHAPE.n_heads, SHAPE.n_kv_heads, SHAPE.head_dim
    x = x.double()
    batch, seq_len, _ = x.shape
    q = (x @ attn.q_proj.weight.double().T).view(batch, seq_len, n_heads, dim)
    k = (x @ attn.k_proj.weight.double().T).view(batch, seq_len, n_kv, dim)

    def rms(t, weight):
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + SHAPE.norm_eps) * weight.double()

    def rotate(t):
        turns = int(dim * layer.rope_fraction)
        half = turns // 2
        freq = layer.rope_base ** (-torch.arange(half, dtype=torch.float64) * 2 / turns)
        where = torch.tensor(positions, dtype=torch.float64)
        if layer.rope_scaling is not None:  # only linear here: positions interpolated
            assert layer.rope_scaling.kind is RopeScalingKind.LINEAR
            where = where / layer.rope_scaling.factor
        angle = where[:, None] * freq  # (T, R/2)
        turned = (
            torch.complex(t[..., :half], t[..., half:turns])
            * torch.polar(torch.ones_like(angle), angle)[None, :, None, :]
        )
        return torch.cat([turned.real, turned.imag, t[..., turns:]], dim=-1)

    rope = layer.position is Position.ROPE
    if layer.qk_norm is QKNorm.PRE_ROPE or (layer.qk_norm is QKNorm.POST_ROPE and not rope):
        q, k = rms(q, attn.q_norm.weight), rms(k, attn.k_norm.weight)
    if rope:
        q, k = rotate(q), rotate(k)
        if layer.qk_norm is QKNorm.POST_ROPE:
            q, k = rms(q, attn.q_norm.weight), rms(k, attn.k_norm.weight)
    if layer.temperature is not None:
        t = layer.temperature
        scale = [1 + t.scale * math.log1p(math.floor((p + 1) / t.floor_tokens)) for p in positions]
        q = q * torch.tensor(scale, dtype=torch.float64)[None, :, None, None]

    kv_head = torch.arange(n_heads) // (n_heads // n_kv)
    scores = torch.einsum("bihd,bjhd->bhij", q, k[:, :, kv_head]) / math.sqrt(dim)
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    visible = j <= i
    if layer.window_tokens is not None and layer.window_kind is WindowKind.CHUNKED:
        start, w = positions[0], layer.window_tokens
        visible &= (i + start) // w == (j + start) // w
    elif layer.window_tokens is not None:
        visible &= i - j < layer.window_tokens
    scores = scores.masked_fill(~visible, -math.inf)
    if layer.attention_sink is AttentionSink.LEARNED:
        sink = attn.sinks.double()[None, :, None, None].expand(batch, -1, seq_len, 1)
        return torch.cat([scores, sink], dim=-1).softmax(-1)[..., :seq_len]
    return scores.softmax(-1)


def layer_inputs(model: HybridTransformer, idx: torch.Tensor, start_pos: int):
    """Run return_attn and capture what each layer's attention received."""
    seen: list[torch.Tensor] = []
    hooks = [
        b.attn.register_forward_hook(lambda m, args, out: seen.append(args[0]))
        for b in model.blocks
    ]
    with torch.no_grad():
        _, attn = model(idx, return_attn=True, start_pos=start_pos)
    for h in hooks:
        h.remove()
    return seen, attn


@pytest.mark.parametrize("start_pos", [0, 13])
def test_model_each_layer_attention_follows_its_spec(start_pos):
    model = build()
    idx = tokens(2, 24)
    inputs, attn = layer_inputs(model, idx, start_pos)
    positions = list(range(start_pos, start_pos + 24))
    assert len(attn) == SHAPE.n_layers
    for layer, block, x, probs in zip(MIXED, model.blocks, inputs, attn, strict=True):
        want = reference_probs(block.attn, layer, x, positions)
        torch.testing.assert_close(probs.double(), want, atol=1e-5, rtol=1e-4, msg=str(layer))


@pytest.mark.parametrize("start_pos", [0, 13])
def test_model_new_knobs_each_layer_attention_follows_its_spec(start_pos):
    model = build(MIXED_NEW)
    inputs, attn = layer_inputs(model, tokens(2, 24), start_pos)
    positions = list(range(start_pos, start_pos + 24))
    for layer, block, x, probs in zip(MIXED_NEW, model.blocks, inputs, attn, strict=True):
        want = reference_probs(block.attn, layer, x, positions)
        torch.testing.assert_close(probs.double(), want, atol=1e-5, rtol=1e-4, msg=str(layer))


def test_model_reference_check_detects_sliding_for_chunked_and_full_for_partial_rotary():
    model = build(MIXED_NEW)
    inputs, attn = layer_inputs(model, tokens(1, 24), 0)
    sliding = spec(0, rope_base=10_000.0, window=4, sink=True)
    want = reference_probs(model.blocks[0].attn, sliding, inputs[0], list(range(24)))
    assert (attn[0].double() - want).abs().max() > 1e-3
    full_rotary = spec(1, rope_base=500.0, window=7)
    want = reference_probs(model.blocks[1].attn, full_rotary, inputs[1], list(range(24)))
    assert (attn[1].double() - want).abs().max() > 1e-3


def test_model_reference_check_detects_wrong_rope_base():
    # The reference test above would fail if a layer used a neighbour's RoPE table.
    model = build()
    inputs, attn = layer_inputs(model, tokens(1, 24), 0)
    wrong = spec(1, rope_base=10_000.0, window=7, qk_norm=QKNorm.PRE_ROPE)
    want = reference_probs(model.blocks[1].attn, wrong, inputs[1], list(range(24)))
    assert (attn[1].double() - want).abs().max() > 1e-3


def test_model_attention_probabilities_vanish_outside_each_layers_window():
    # RNoPE-SWA: three RoPE layers with window 6, then a NoPE full-attention layer, twice.
    layers = tuple(
        spec(i, rope_base=None) if i % 4 == 3 else spec(i, rope_base=10_000.0, window=6)
        for i in range(8)
    )
    shape = ModelShape(8, 32, 4, 2, 48, 40, init_std=0.08)
    model = build(layers, shape)
    with torch.no_grad():
        _, attn = model(tokens(2, 20), return_attn=True)
    for layer, probs in zip(layers, attn, strict=True):
        assert probs.shape == (2, 4, 20, 20)
        visible = window_mask(20, 6 if layer.index % 4 != 3 else None)
        assert torch.all(probs[..., ~visible] == 0), layer.index
        assert torch.all(probs[..., visible] > 0), layer.index


# ---------------------------------------------------------------- backends and the forward pass


@pytest.mark.parametrize("seq_len", [5, 23, 40])
def test_model_backends_agree_forward_and_backward(seq_len):
    # windows 4, 7 and 5 against T; a window beyond T (layer 0 here) must equal full attention
    layers = (spec(0, window=64), *MIXED[1:])
    model = build(layers)
    idx = tokens(2, seq_len)
    results = {}
    for backend in ("dense", "blocked", None):
        model.zero_grad()
        logits = model(idx, attn_backend=backend, start_pos=3)
        logits.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results[backend] = (logits.detach(), grads)
    ref_logits, ref_grads = results["dense"]
    for backend in ("blocked", None):
        logits, grads = results[backend]
        torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("seq_len", [5, 23, 40])
def test_model_new_knobs_backends_agree_forward_and_backward(seq_len):
    model = build(MIXED_NEW)
    idx = tokens(2, seq_len)
    results = {}
    for backend in ("dense", "blocked", None):
        model.zero_grad()
        logits = model(idx, attn_backend=backend, start_pos=3)
        logits.square().mean().backward()
        results[backend] = (
            logits.detach(),
            {n: p.grad.clone() for n, p in model.named_parameters()},
        )
    ref_logits, ref_grads = results["dense"]
    assert ref_grads["blocks.0.attn.sinks"].abs().sum() > 0  # the sinks learn
    for backend in ("blocked", None):
        logits, grads = results[backend]
        torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_model_set_layers_switches_specs_and_keeps_weights():
    model = build(MIXED_NEW)
    yarn = RopeScaling(RopeScalingKind.YARN, 4.0, 16, attention_factor=1.2)
    later = (
        spec(0, rope_base=1e6, window=8, chunked=True, sink=True, scaling=yarn),
        *MIXED_NEW[1:],
    )
    fresh = build(later)  # same seed, same weights, built with the later specs
    idx = tokens(2, 20)
    model.set_layers(later)
    assert model.layers == later and model.blocks[0].attn.spec == later[0]
    with torch.no_grad():
        torch.testing.assert_close(model(idx), fresh(idx))
    gains_norm = (
        spec(0, rope_base=1e6, window=8, chunked=True, sink=True, qk_norm=QKNorm.PRE_ROPE),
    )
    with pytest.raises(ValueError, match="other parameters"):
        model.set_layers(gains_norm + MIXED_NEW[1:])
    loses_sink = (spec(0, rope_base=1e6, window=8, chunked=True),)
    with pytest.raises(ValueError, match="other parameters"):
        model.set_layers(loses_sink + MIXED_NEW[1:])


def test_model_return_attn_logits_equal_fast_path():
    model = build()
    idx = tokens(2, 30)
    with torch.no_grad():
        logits, _ = model(idx, return_attn=True)
        torch.testing.assert_close(model(idx), logits, atol=1e-5, rtol=1e-5)


def test_model_logits_shape():
    logits = build()(tokens(3, 11))
    assert logits.shape == (3, 11, SHAPE.vocab_size)
    assert logits.dtype == torch.float32


def test_model_is_causal():
    model = build()
    idx = tokens(1, 16)
    changed = idx.clone()
    changed[0, 9] = (changed[0, 9] + 1) % SHAPE.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_model_without_temperature_is_invariant_to_start_pos():
    # RoPE scores depend on relative position only, NoPE on none: shifting every position
    # (the same offset for q and k) changes nothing. Not so for POST_ROPE QK-norm: its learned
    # weight does not commute with the rotation, so it is left out here.
    layers = (
        spec(0, rope_base=10_000.0, window=4),
        spec(1, rope_base=100.0, window=7, qk_norm=QKNorm.PRE_ROPE),
        spec(2, rope_base=1_000_000.0),
        spec(3, rope_base=None, qk_norm=QKNorm.PRE_ROPE),
        spec(4, rope_base=None, window=5, qk_norm=QKNorm.POST_ROPE),
    )
    model = build(layers)
    idx = tokens(2, 20)
    with torch.no_grad():
        torch.testing.assert_close(model(idx, start_pos=100), model(idx), atol=1e-4, rtol=1e-4)


def test_model_temperature_acts_only_from_its_floor():
    plain = build(tuple(spec(i, rope_base=None) for i in range(5)))
    hot = build(tuple(spec(i, rope_base=None, temperature=Temperature(16, 0.5)) for i in range(5)))
    idx = tokens(1, 8)
    with torch.no_grad():  # positions 0..7: (p + 1) / 16 < 1, scale exactly 1
        torch.testing.assert_close(hot(idx), plain(idx), atol=0, rtol=0)
        assert not torch.allclose(hot(idx, start_pos=40), plain(idx, start_pos=40))


# ---------------------------------------------------------------- RoPE and temperature helpers


def test_rope_at_offset_equals_rotation_by_offset():
    x = torch.randn(2, 3, 10, 16)
    p = 37
    at_offset = apply_rope(x, *rope_cos_sin(torch.arange(p, p + 10), 16, 500.0, torch.float32))
    at_zero = apply_rope(x, *rope_cos_sin(torch.arange(10), 16, 500.0, torch.float32))
    by_p = rope_cos_sin(torch.tensor([p]), 16, 500.0, torch.float32)  # (1, D): same turn for all
    # angles are fp32 (as in Hugging Face), hence the tolerance
    torch.testing.assert_close(at_offset, apply_rope(at_zero, *by_p), atol=2e-5, rtol=1e-5)


def test_rope_position_zero_is_identity_and_preserves_norm():
    x = torch.randn(1, 2, 6, 8)
    cos, sin = rope_cos_sin(torch.arange(6), 8, 10_000.0, torch.float32)
    turned = apply_rope(x, cos, sin)
    torch.testing.assert_close(turned[:, :, 0], x[:, :, 0])
    torch.testing.assert_close(turned.norm(dim=-1), x.norm(dim=-1))


def test_temperature_scale_is_identity_below_floor_and_follows_formula():
    temp = Temperature(floor_tokens=8, scale=0.1)
    positions = torch.arange(0, 100)
    got = temperature_scale(positions, temp)
    assert torch.all(got[:7] == 1.0)  # p + 1 < 8
    assert got[7] > 1.0
    want = [1 + 0.1 * math.log(1 + math.floor((p + 1) / 8)) for p in range(100)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32))


def test_apply_rope_partial_turns_only_the_leading_dims():
    x = torch.randn(1, 2, 6, 8)
    cos, sin = rope_cos_sin(torch.arange(6), 4, 500.0, torch.float32)  # 4 of 8 dims
    turned = apply_rope(x, cos, sin)
    torch.testing.assert_close(turned[..., 4:], x[..., 4:])  # the rest is position-free
    full = apply_rope(x[..., :4], cos, sin)
    torch.testing.assert_close(turned[..., :4], full)


def test_rope_scaling_tables_follow_their_definitions():
    positions = torch.arange(40)
    plain = rope_inv_freq(8, 500.0)[0]
    linear = RopeScaling(RopeScalingKind.LINEAR, 4.0, 16)
    torch.testing.assert_close(rope_inv_freq(8, 500.0, linear)[0], plain / 4)
    ntk = RopeScaling(RopeScalingKind.NTK, 4.0, 16)
    # NTK is exactly RoPE up to the original length, and slower beyond it
    torch.testing.assert_close(rope_inv_freq(8, 500.0, ntk, seq_len=16)[0], plain)
    beyond = rope_inv_freq(8, 500.0, ntk, seq_len=40)[0]
    assert beyond[0] == plain[0] and torch.all(beyond[1:] < plain[1:])
    yarn = RopeScaling(RopeScalingKind.YARN, 4.0, 16, attention_factor=1.3)
    freq, factor = rope_inv_freq(8, 500.0, yarn)
    assert factor == 1.3 and torch.all(freq <= plain) and torch.all(freq >= plain / 4)
    cos, sin = rope_cos_sin(positions, 8, 500.0, torch.float32, yarn)
    torch.testing.assert_close(cos.square() + sin.square(), torch.full((40, 8), 1.3**2))


# ---------------------------------------------------------------- construction


def test_model_init_std_is_honoured():
    for std in (0.02, 0.08):
        shape = ModelShape(2, 64, 4, 4, 128, 300, init_std=std)
        model = HybridTransformer(shape, (spec(0), spec(1)))
        for name, p in model.named_parameters():
            if p.dim() == 2:
                assert p.std().item() == pytest.approx(std, rel=0.1), name
            else:  # norm weights
                assert torch.all(p == 1), name


def test_model_num_parameters_counts_tied_embedding_once():
    model = build()
    c, d, h, hkv, m = SHAPE.d_model, SHAPE.head_dim, SHAPE.n_heads, SHAPE.n_kv_heads, 48
    per_layer = c * h * d * 2 + c * hkv * d * 2 + 3 * c * m + 2 * c
    qk_norm_layers = sum(layer.qk_norm is not QKNorm.NONE for layer in MIXED)
    want = SHAPE.vocab_size * c + SHAPE.n_layers * per_layer + qk_norm_layers * 2 * d + c
    assert model.num_parameters() == want
    assert not any("bias" in name for name, _ in model.named_parameters())


def test_model_sinks_are_one_logit_per_query_head():
    model = build(MIXED_NEW)
    sinks = {n: p.shape for n, p in model.named_parameters() if n.endswith("sinks")}
    assert sinks == {f"blocks.{i}.attn.sinks": (SHAPE.n_heads,) for i in (0, 3, 4)}
    assert all(
        torch.all(p == 0)
        for n, p in HybridTransformer(SHAPE, MIXED_NEW).named_parameters()
        if n.endswith("sinks")
    )


def test_model_rejects_inconsistent_layers():
    with pytest.raises(ValueError, match="layer specs"):
        HybridTransformer(SHAPE, MIXED[:3])
    with pytest.raises(ValueError, match="index"):
        HybridTransformer(SHAPE, (MIXED[1], MIXED[0], *MIXED[2:]))
    with pytest.raises(ValueError, match="rope_base"):  # a spec is valid by construction
        LayerSpec(0, LayerKind.GLOBAL, Position.ROPE, None, None, QKNorm.NONE, None)
    with pytest.raises(ValueError, match="n_kv_heads"):
        HybridTransformer(ModelShape(5, 32, 4, 3, 48, 40), MIXED)
    odd = spec(0, rope_base=1e4, rope_fraction=0.375)  # 3 of 8 dims cannot turn in pairs
    with pytest.raises(ValueError, match="rope_fraction"):
        HybridTransformer(SHAPE, (odd, *MIXED[1:]))
