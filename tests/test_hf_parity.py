"""Parity with Hugging Face transformers: copy our weights into HF models, compare logits (fp32).

Which HF class checks what:

- ``LlamaForCausalLM``: the all-RoPE, full-attention baseline. Same block (pre-norm RMSNorm,
  SwiGLU, GQA, tied embeddings, ``rotate_half`` RoPE, no biases), so weights copy one to one.
- ``SmolLM3ForCausalLM``: RNoPE-SWA. It is a Llama block that says per layer whether to rotate
  (``no_rope_layers``, where 1 means "use RoPE") and whether to use a sliding window
  (``layer_types`` + ``sliding_window``), so 3 local RoPE window-W layers : 1 global NoPE full
  layer is expressible exactly. Its one limit: a single ``rope_theta`` for all RoPE layers, so
  here every local layer has the same base. Different bases per layer are checked against an
  independent reference in ``tests/test_model.py``.
  (``Cohere2`` would express the same layout natively - sliding layers RoPE, full layers NoPE -
  but its block is not ours: LayerNorm instead of RMSNorm, attention and MLP in parallel,
  interleaved-pair RoPE and a logit scale. Logits cannot match it, so it is not used.)
- ``Qwen3ForCausalLM``: QK-norm before RoPE (RMSNorm over head_dim, one weight for q and one for
  k, shared by heads), with some layers windowed via ``layer_types``. HF has no Llama-style class
  with a learned QK-norm after RoPE (Llama 4 normalises after its RoPE but with no weight, with
  interleaved-pair RoPE and MoE layers), so ``POST_ROPE`` is covered by the reference test only.
- ``Llama4TextAttention`` (one NoPE layer, on its own): the query temperature; (one RoPE
  layer) chunked attention with HF's ``chunked_causal_mask_function``.
- ``GptOssAttention``: learned attention sinks, on a sliding-window and a full layer, with
  YaRN-scaled RoPE from HF's own rotary module.
- ``GPTNeoXAttention``: partial rotary (``rotary_pct``).
- ``modeling_rope_utils.ROPE_INIT_FUNCTIONS`` (``linear``, ``dynamic``, ``yarn``): the scaled
  frequencies themselves, and ``LlamaForCausalLM`` with each scaling beyond its original length.

HF's sliding window keeps key j for query i when ``i - W < j <= i`` (``sliding_window_overlay``),
and we check the mask itself against HF's mask function too. All HF models run with
``attn_implementation="eager"``.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from space.layers import (  # noqa: E402
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
    yarn_default_attention_factor,
)
from workers.attention import window_mask  # noqa: E402
from workers.model import (  # noqa: E402
    Attention,
    ForwardContext,
    HybridTransformer,
    rope_inv_freq,
)

SHAPE = ModelShape(
    n_layers=4, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=48, vocab_size=64, init_std=0.08
)
ROPE_BASE = 500.0
WINDOW = 5
HF_COMMON = dict(
    vocab_size=SHAPE.vocab_size,
    hidden_size=SHAPE.d_model,
    intermediate_size=SHAPE.mlp_hidden,
    num_hidden_layers=SHAPE.n_layers,
    num_attention_heads=SHAPE.n_heads,
    num_key_value_heads=SHAPE.n_kv_heads,
    rms_norm_eps=SHAPE.norm_eps,
    rope_parameters={"rope_type": "default", "rope_theta": ROPE_BASE},
    max_position_embeddings=256,
    tie_word_embeddings=True,
    attention_bias=False,
    attn_implementation="eager",
)


def layer(index: int, *, rope: bool, window: int | None, qk_norm=QKNorm.NONE) -> LayerSpec:
    return LayerSpec(
        index=index,
        kind=LayerKind.LOCAL if window is not None else LayerKind.GLOBAL,
        position=Position.ROPE if rope else Position.NOPE,
        rope_base=ROPE_BASE if rope else None,
        window_tokens=window,
        qk_norm=qk_norm,
        temperature=None,
    )


def hf_state_dict(model: HybridTransformer) -> dict[str, torch.Tensor]:
    """Our parameter names -> Hugging Face Llama-family names (no reshaping needed)."""
    renames = {
        "embed.": "model.embed_tokens.",
        "norm.": "model.norm.",
        "attn_norm.": "input_layernorm.",
        "mlp_norm.": "post_attention_layernorm.",
        "attn.": "self_attn.",
    }
    out = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("blocks."):
            _, i, rest = name.split(".", 2)
            for ours, theirs in renames.items():
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours) :]
                    break
            out[f"model.layers.{i}.{rest}"] = tensor
        else:
            prefix = next(p for p in renames if name.startswith(p))
            out[renames[prefix] + name[len(prefix) :]] = tensor
    out["lm_head.weight"] = model.embed.weight.detach()
    return out


def ours_and_hf(layers, hf_class, config) -> tuple[HybridTransformer, torch.nn.Module]:
    torch.manual_seed(0)
    ours = HybridTransformer(SHAPE, layers).eval()
    with torch.no_grad():  # non-trivial norm weights, so a misplaced norm shows up
        for p in ours.parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn_like(p))
    hf = hf_class(config).eval()
    result = hf.load_state_dict(hf_state_dict(ours), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ours, hf


def compare_logits(ours, hf, seq_len: int, start_pos: int = 0) -> None:
    idx = torch.randint(
        0, SHAPE.vocab_size, (2, seq_len), generator=torch.Generator().manual_seed(1)
    )
    positions = torch.arange(start_pos, start_pos + seq_len)[None].expand(2, -1)
    with torch.no_grad():
        want = hf(input_ids=idx, position_ids=positions).logits
        for backend in ("dense", "blocked"):
            got = ours(idx, start_pos=start_pos, attn_backend=backend)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=backend)


@pytest.mark.parametrize("start_pos", [0, 7])
def test_hf_parity_llama_all_rope_full_attention(start_pos):
    layers = tuple(layer(i, rope=True, window=None) for i in range(SHAPE.n_layers))
    config = transformers.LlamaConfig(**HF_COMMON, head_dim=SHAPE.head_dim)
    ours, hf = ours_and_hf(layers, transformers.LlamaForCausalLM, config)
    compare_logits(ours, hf, seq_len=12, start_pos=start_pos)


@pytest.mark.parametrize("seq_len", [4, 13])
def test_hf_parity_smollm3_rnope_swa(seq_len):
    # layers 0, 1, 2: local RoPE, window W; layer 3: global NoPE, full attention
    layers = tuple(
        layer(i, rope=False, window=None) if i % 4 == 3 else layer(i, rope=True, window=WINDOW)
        for i in range(SHAPE.n_layers)
    )
    config = transformers.SmolLM3Config(
        **HF_COMMON,
        use_sliding_window=True,
        sliding_window=WINDOW,
        no_rope_layers=[int(spec.position is Position.ROPE) for spec in layers],
        layer_types=[
            "sliding_attention" if spec.window_tokens else "full_attention" for spec in layers
        ],
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    ours, hf = ours_and_hf(layers, transformers.SmolLM3ForCausalLM, config)
    # the HF model really is hybrid: windows and NoPE where we put them
    assert [a.self_attn.sliding_window for a in hf.model.layers] == [WINDOW] * 3 + [None]
    assert [bool(a.self_attn.use_rope) for a in hf.model.layers] == [True] * 3 + [False]
    compare_logits(ours, hf, seq_len=seq_len)


def test_hf_parity_qwen3_pre_rope_qk_norm_with_windows():
    layers = tuple(
        layer(i, rope=True, window=WINDOW if i % 2 == 0 else None, qk_norm=QKNorm.PRE_ROPE)
        for i in range(SHAPE.n_layers)
    )
    config = transformers.Qwen3Config(
        **HF_COMMON,
        head_dim=SHAPE.head_dim,
        use_sliding_window=True,
        sliding_window=WINDOW,
        layer_types=[
            "sliding_attention" if spec.window_tokens else "full_attention" for spec in layers
        ],
    )
    ours, hf = ours_and_hf(layers, transformers.Qwen3ForCausalLM, config)
    compare_logits(ours, hf, seq_len=13)


def test_hf_parity_llama4_nope_query_temperature():
    from transformers.models.llama4.modeling_llama4 import Llama4TextAttention

    config = transformers.Llama4TextConfig(
        hidden_size=SHAPE.d_model,
        num_attention_heads=SHAPE.n_heads,
        num_key_value_heads=SHAPE.n_kv_heads,
        head_dim=SHAPE.head_dim,
        num_hidden_layers=1,
        no_rope_layers=[0],
        attn_temperature_tuning=True,
        floor_scale=4,
        attn_scale=0.5,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    theirs = Llama4TextAttention(config, layer_idx=0).eval()
    spec = LayerSpec(
        0, LayerKind.GLOBAL, Position.NOPE, None, None, QKNorm.NONE, Temperature(4, 0.5)
    )
    ours = Attention(SHAPE, spec).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    seq_len = 20
    x = torch.randn(2, seq_len, SHAPE.d_model)
    causal = torch.full((seq_len, seq_len), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        want, _ = theirs(x, position_embeddings=None, attention_mask=causal)
        got, _ = ours(x, ForwardContext.at(torch.arange(seq_len)))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_window_mask_matches_hf_sliding_window_mask_function():
    from transformers.masking_utils import sliding_window_causal_mask_function

    q_idx = torch.arange(12)[:, None]
    kv_idx = torch.arange(12)[None, :]
    for window in (1, 3, 12):
        theirs = sliding_window_causal_mask_function(window)(0, 0, q_idx, kv_idx)
        assert torch.equal(window_mask(12, window), theirs)


# ---------------------------------------------------------------- the newer knobs, layer by layer
#
# Llama 4 (chunked attention), gpt-oss (sinks, YaRN) and GPT-NeoX (partial rotary) wrap their
# attention in blocks unlike ours (MoE, parallel residuals, LayerNorm), so these compare one
# attention layer: the same weights, the same input, HF's own rotary module and HF's own mask
# functions, against our Attention with every backend.

BACKENDS = ("dense", "blocked", None)


def additive_mask(mask_fn, seq_len: int, start_pos: int = 0) -> torch.Tensor:
    """HF mask function -> (1, 1, T, T) float mask (0 visible, -inf hidden) at absolute positions."""
    idx = torch.arange(start_pos, start_pos + seq_len)
    visible = mask_fn(0, 0, idx[:, None], idx[None, :])
    return torch.zeros(seq_len, seq_len).masked_fill(~visible, float("-inf"))[None, None]


def attn_spec(window, kind, *, rope_base=ROPE_BASE, **extra) -> LayerSpec:
    return LayerSpec(
        0,
        LayerKind.LOCAL if window else LayerKind.GLOBAL,
        Position.ROPE if rope_base else Position.NOPE,
        rope_base,
        window,
        QKNorm.NONE,
        None,
        window_kind=kind,
        **extra,
    )


def run_ours(ours: Attention, x: torch.Tensor, start_pos: int) -> dict:
    positions = torch.arange(start_pos, start_pos + x.shape[1])
    with torch.no_grad():
        return {b: ours(x, ForwardContext.at(positions, backend=b))[0] for b in BACKENDS}


@pytest.mark.parametrize("start_pos", [0, 3])
def test_hf_parity_llama4_chunked_rope_attention(start_pos):
    from transformers.masking_utils import chunked_causal_mask_function
    from transformers.models.llama4.modeling_llama4 import (
        Llama4TextAttention,
        Llama4TextRotaryEmbedding,
    )

    chunk, seq_len, dim = 5, 17, SHAPE.head_dim
    config = transformers.Llama4TextConfig(
        hidden_size=SHAPE.d_model,
        num_attention_heads=SHAPE.n_heads,
        num_key_value_heads=SHAPE.n_kv_heads,
        head_dim=dim,
        num_hidden_layers=1,
        no_rope_layers=[1],  # 1 = this layer uses RoPE (HF's inverted flag)
        attention_chunk_size=chunk,
        use_qk_norm=False,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_BASE},
        attn_implementation="eager",
    )
    assert config.layer_types == ["chunked_attention"]
    torch.manual_seed(0)
    theirs = Llama4TextAttention(config, layer_idx=0).eval()
    ours = Attention(SHAPE, attn_spec(chunk, WindowKind.CHUNKED)).eval()
    # Llama 4 turns interleaved pairs (2i, 2i+1); we turn (i, i + D/2) with the same frequency.
    # Reordering each head's q and k rows maps one onto the other (dot products are unchanged).
    halves = torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])
    state = dict(theirs.state_dict())
    for name, heads in (("q_proj.weight", SHAPE.n_heads), ("k_proj.weight", SHAPE.n_kv_heads)):
        w = state[name].view(heads, dim, -1)
        state[name] = w[:, halves].reshape(heads * dim, -1)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, seq_len, SHAPE.d_model, generator=torch.Generator().manual_seed(3))
    positions = torch.arange(start_pos, start_pos + seq_len)[None].expand(2, -1)
    mask_fn = chunked_causal_mask_function(chunk, torch.zeros(2, dtype=torch.long))
    with torch.no_grad():
        freqs_cis = Llama4TextRotaryEmbedding(config)(x, positions)
        want, _ = theirs(
            x,
            position_embeddings=freqs_cis,
            attention_mask=additive_mask(mask_fn, seq_len, start_pos),
        )
    for backend, got in run_ours(ours, x, start_pos).items():
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=str(backend))


@pytest.mark.parametrize("window", [5, None])
def test_hf_parity_gptoss_sinks_with_yarn(window):
    from transformers.masking_utils import causal_mask_function, sliding_window_causal_mask_function
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssAttention, GptOssRotaryEmbedding

    original, factor, seq_len = 8, 4.0, 21
    config = transformers.GptOssConfig(
        hidden_size=SHAPE.d_model,
        num_attention_heads=SHAPE.n_heads,
        num_key_value_heads=SHAPE.n_kv_heads,
        head_dim=SHAPE.head_dim,
        num_hidden_layers=2,
        sliding_window=5,
        attention_bias=False,
        max_position_embeddings=original * int(factor),
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": ROPE_BASE,
            "factor": factor,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": True,  # HF's default; gpt-oss's checkpoints say False
            "original_max_position_embeddings": original,
        },
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    theirs = GptOssAttention(config, layer_idx=0 if window else 1).eval()
    with torch.no_grad():  # HF leaves the sinks uninitialised (torch.empty)
        theirs.sinks.copy_(2 * torch.randn(SHAPE.n_heads))
    yarn = RopeScaling(
        RopeScalingKind.YARN,
        factor,
        original,
        attention_factor=yarn_default_attention_factor(factor),
    )
    spec = attn_spec(
        window, WindowKind.SLIDING, attention_sink=AttentionSink.LEARNED, rope_scaling=yarn
    )
    ours = Attention(SHAPE, spec).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # q/k/v/o_proj and sinks, one to one
    x = torch.randn(2, seq_len, SHAPE.d_model, generator=torch.Generator().manual_seed(3))
    mask_fn = sliding_window_causal_mask_function(window) if window else causal_mask_function
    with torch.no_grad():
        cos_sin = GptOssRotaryEmbedding(config)(x, torch.arange(seq_len)[None].expand(2, -1))
        want, _ = theirs(
            x, position_embeddings=cos_sin, attention_mask=additive_mask(mask_fn, seq_len)
        )
    for backend, got in run_ours(ours, x, 0).items():
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=str(backend))


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_hf_parity_gpt_neox_partial_rotary(fraction):
    from transformers.masking_utils import causal_mask_function
    from transformers.models.gpt_neox.modeling_gpt_neox import (
        GPTNeoXAttention,
        GPTNeoXRotaryEmbedding,
    )

    shape = ModelShape(1, 64, 4, 4, 48, 64)  # GPT-NeoX has no GQA; head_dim 16
    dim, seq_len = shape.head_dim, 19
    config = transformers.GPTNeoXConfig(
        hidden_size=shape.d_model,
        num_attention_heads=shape.n_heads,
        num_hidden_layers=1,
        rotary_pct=fraction,
        rotary_emb_base=ROPE_BASE,
        attention_bias=False,
        attn_implementation="eager",
    )
    assert config.rope_parameters["partial_rotary_factor"] == fraction
    torch.manual_seed(0)
    theirs = GPTNeoXAttention(config, layer_idx=0).eval()
    ours = Attention(shape, attn_spec(None, WindowKind.SLIDING, rope_fraction=fraction)).eval()
    assert theirs.rotary_ndims == attn_spec(
        None, WindowKind.SLIDING, rope_fraction=fraction
    ).rotary_dims(dim)
    # GPT-NeoX fuses q, k, v per head: rows [q_h, k_h, v_h] for each head h.
    fused = theirs.query_key_value.weight.view(shape.n_heads, 3, dim, shape.d_model)
    ours.load_state_dict(
        {
            "q_proj.weight": fused[:, 0].reshape(-1, shape.d_model),
            "k_proj.weight": fused[:, 1].reshape(-1, shape.d_model),
            "v_proj.weight": fused[:, 2].reshape(-1, shape.d_model),
            "o_proj.weight": theirs.dense.weight,
        }
    )
    x = torch.randn(2, seq_len, shape.d_model, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cos_sin = GPTNeoXRotaryEmbedding(config)(x, torch.arange(seq_len)[None].expand(2, -1))
        want, _ = theirs(
            x,
            attention_mask=additive_mask(causal_mask_function, seq_len),
            position_embeddings=cos_sin,
        )
    for backend, got in run_ours(ours, x, 0).items():
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=str(backend))


# ---------------------------------------------------------------- RoPE scaling

HF_ROPE_TYPE = {"linear": "linear", "ntk": "dynamic", "yarn": "yarn"}


def hf_rope_config(kind: str, factor: float, original: int, fraction: float = 1.0, **yarn):
    params = {"rope_type": HF_ROPE_TYPE[kind], "rope_theta": ROPE_BASE, "factor": factor}
    if fraction != 1.0:
        params["partial_rotary_factor"] = fraction
    if kind == "yarn":
        params.update(original_max_position_embeddings=original, **yarn)
    # HF's dynamic NTK reads the original length from max_position_embeddings
    return {**HF_COMMON, "rope_parameters": params, "max_position_embeddings": original}


@pytest.mark.parametrize("kind", ["linear", "ntk", "yarn"])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
@pytest.mark.parametrize("seq_len", [16, 200])
def test_rope_inv_freq_matches_hf_rope_init_functions(kind, fraction, seq_len):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    head_dim, original, factor = 32, 16, 8.0
    yarn = {"beta_fast": 16.0, "beta_slow": 2.0} if kind == "yarn" else {}
    config = transformers.LlamaConfig(
        **{**hf_rope_config(kind, factor, original, fraction, **yarn), "head_dim": head_dim}
    )
    want, want_factor = ROPE_INIT_FUNCTIONS[HF_ROPE_TYPE[kind]](config, "cpu", seq_len=seq_len)
    scaling = RopeScaling(
        RopeScalingKind(kind),
        factor,
        original,
        **yarn,
        attention_factor=yarn_default_attention_factor(factor) if kind == "yarn" else 1.0,
    )
    got, got_factor = rope_inv_freq(int(head_dim * fraction), ROPE_BASE, scaling, seq_len)
    torch.testing.assert_close(got, want, atol=0, rtol=1e-6)
    assert got_factor == pytest.approx(want_factor)


@pytest.mark.parametrize("kind", ["linear", "ntk", "yarn"])
def test_hf_parity_llama_with_rope_scaling_beyond_the_original_length(kind):
    # The whole model: the scaled tables (and YaRN's attention factor) in every layer, at 3x the
    # original length so NTK's length-dependent base is in play too.
    original, factor, seq_len = 8, 4.0, 24
    scaling = RopeScaling(
        RopeScalingKind(kind),
        factor,
        original,
        attention_factor=yarn_default_attention_factor(factor) if kind == "yarn" else 1.0,
    )
    layers = tuple(
        LayerSpec(
            i,
            LayerKind.GLOBAL,
            Position.ROPE,
            ROPE_BASE,
            None,
            QKNorm.NONE,
            None,
            rope_scaling=scaling,
        )
        for i in range(SHAPE.n_layers)
    )
    config = transformers.LlamaConfig(
        **hf_rope_config(kind, factor, original), head_dim=SHAPE.head_dim
    )
    ours, hf = ours_and_hf(layers, transformers.LlamaForCausalLM, config)
    compare_logits(ours, hf, seq_len=seq_len)
