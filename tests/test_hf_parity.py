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
- ``Llama4TextAttention`` (one NoPE layer, on its own): the query temperature.

HF's sliding window keeps key j for query i when ``i - W < j <= i`` (``sliding_window_overlay``),
and we check the mask itself against HF's mask function too. All HF models run with
``attn_implementation="eager"``.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from space.layers import LayerKind, LayerSpec, ModelShape, Position, QKNorm, Temperature  # noqa: E402
from workers.attention import window_mask  # noqa: E402
from workers.model import Attention, HybridTransformer  # noqa: E402

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
        got, _ = ours(x, torch.arange(seq_len), backend=None, return_attn=False)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_window_mask_matches_hf_sliding_window_mask_function():
    from transformers.masking_utils import sliding_window_causal_mask_function

    q_idx = torch.arange(12)[:, None]
    kv_idx = torch.arange(12)[None, :]
    for window in (1, 3, 12):
        theirs = sliding_window_causal_mask_function(window)(0, 0, q_idx, kv_idx)
        assert torch.equal(window_mask(12, window), theirs)
