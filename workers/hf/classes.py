"""Which stock Hugging Face ``transformers`` class reproduces a candidate exactly, and its config.

Our block is the Llama block (pre-norm RMSNorm, SwiGLU, GQA, ``rotate_half`` RoPE, tied
embeddings, no biases); seven stock classes add per-layer options on top of it, each checked
against our model in ``tests/test_hf_parity.py`` and ``tests/test_hf_export.py``:

- ``LlamaForCausalLM``: every layer RoPE with one base, full attention, no QK-norm.
- ``Qwen3ForCausalLM``: every layer RoPE with one base and QK-norm before the rotation (one
  RMSNorm weight for q and one for k, shared by the heads), each layer full or sliding with one
  window size (``layer_types``).
- ``SmolLM3ForCausalLM``: no QK-norm; each layer RoPE (one base) or NoPE (``no_rope_layers``,
  where 1 means RoPE), full or sliding with one window size (``layer_types``: always written,
  since SmolLM3's default pattern puts the window on the NoPE layers, DESIGN §7).
- ``Phi3ForCausalLM``: partial rotary (``rope_parameters["partial_rotary_factor"]``, the
  leading fraction of each head turns, as ours): every layer RoPE with one base and one
  fraction, no QK-norm, no RoPE scaling (Phi3 accepts only its own ``longrope``), and every
  layer full or every layer sliding with one window (Phi3 has one ``sliding_window`` for all
  layers). Its q/k/v and gate/up projections are fused (``qkv_proj``, ``gate_up_proj``): the
  same arithmetic, the weights concatenated (:func:`workers.hf.export.hf_state_dict`). Llama,
  Qwen3 and SmolLM3 rotate whole heads only (their ``apply_rotary_pos_emb`` does not split).
- ``Llama4ForCausalLM`` without experts (``moe_layers: []``, every layer the dense SwiGLU
  ``feed_forward``): chunked attention (``attention_chunk_size``, ``layer_types``
  ``chunked_attention``), each layer RoPE (one base) or NoPE (``no_rope_layers``, 1 = RoPE),
  no sliding windows, no QK-norm (``use_qk_norm: false``; Llama 4's own is a weightless L2 norm),
  no temperature. Llama 4 turns interleaved pairs ``(2i, 2i + 1)`` where we turn
  ``(i, i + D/2)``: the export reorders each head's q and k rows, which maps one onto the
  other exactly. Its NoPE query temperature would match ours without padding, but it counts
  positions over left padding (``cache_position``), so a candidate with ``global_temperature``
  is not exported to it.

- ``GraniteMoeHybridForCausalLM`` without experts (``num_local_experts: 0``, every layer the
  dense SwiGLU ``shared_mlp``, gate and up fused in ``input_linear``; multipliers 1, attention
  scaled by ``1 / sqrt(head_dim)``): Mamba2 layers (``local_mixer: mamba2``; ``mamba``, named
  as transformers' Mamba2Mixer, as ours) with full-attention layers, all NoPE
  (``position_embedding_type: null``, Granite 4.0-H) or all RoPE with one base, no window, no
  QK-norm. A Mamba2 hybrid it cannot reproduce is refused naming the knob, and exports with
  remote code (our modeling file has transformers' Mamba2Mixer).

- ``Qwen3NextForCausalLM`` without experts (``num_experts: 0``, every layer in
  ``mlp_only_layers``: the dense SwiGLU ``mlp``): Gated DeltaNet layers (``local_mixer:
  gated_deltanet``, ``linear_attn``: our ``workers.deltanet``, its q/k/v/z and b/a projections
  fused per key-head group in ``in_proj_qkvz`` / ``in_proj_ba``) and attention layers that all
  have RoPE with one base and one leading fraction (``partial_rotary_factor``; its linear and
  YaRN scalings turn that fraction as ours do, NTK is refused as everywhere), QK-norm before
  the rotation, an elementwise output gate (``output_gate: elementwise``; Qwen3-Next's
  ``q_proj`` holds each head's query rows then its gate rows) and full attention.
  Its RMSNorms (the layers', the final one, QK-norm) are zero-centred, ``x / rms(x) * (1 + w)``:
  the export writes our gain minus one, the same product (exact for gains in [0.5, 2], where
  ``w - 1`` and ``1 + (w - 1)`` are exact in fp32; one rounding of ``w - 1`` elsewhere); the
  Gated DeltaNet's gated norm is plain ``w``, as ours. A candidate with an output gate and no
  recurrent layer exports to it too. Nothing else does: OlmoHybrid's attention layers are
  post-norm with QK-norm over all heads at once (not our block), so such a candidate Qwen3-Next
  cannot express is refused, naming the knob, and exports with remote code (our modeling file
  has transformers' Qwen3NextGatedDeltaNet and either gate).

RoPE scaling is ``rope_parameters`` on Llama, Qwen3 and SmolLM3 (``linear``; ``yarn`` with
``original_max_position_embeddings``, ``beta_fast``, ``beta_slow``, ``attention_factor`` and
``truncate: true``, all written explicitly), the same for every RoPE layer.

The knobs of issue 17 that no stock class reproduces with our block, each checked:

- chunked local attention beside sliding windows, QK-norm, partial rotary or NoPE
  temperature (Llama4 has none of these with chunks);
- learned sinks (``attention_sink: learned``): only ``GptOss`` has them, inside a block whose
  MLP is a mixture of experts with a clamped SwiGLU, not ours;
- NTK scaling (``rope_scaling: ntk``, Hugging Face ``dynamic``): Hugging Face keeps the
  frequencies of the longest sequence the model has seen (a shorter one later is turned with
  them too) and its KV cache keeps keys turned at the length they were cached, so
  ``generate()`` past the original length differs; our model turns every key with the
  frequencies of the current length;
- a scaling on some RoPE layers only (``rope_scaling_layers: local | global`` with RoPE on both
  kinds): one ``rope_parameters`` serves every layer;
- partial rotary together with NoPE layers, QK-norm, mixed windows or a scaling (no class has
  ``partial_rotary_factor`` and those).

What none of them expresses (these, and QK-norm on some layers only, a learned QK-norm after
RoPE, QK-norm together with NoPE layers, NoPE query temperature, two RoPE bases, two window
sizes) is a :class:`NotExpressible` naming the knob and its value; such a candidate exports with
its own modeling file (``--remote-code``, ``workers/hf/remote``), which implements every field
of :class:`space.layers.LayerSpec`. Per-layer fields this module does not know (knobs newer than
it) are refused outright, remote code included, rather than exported as something else.

The layers given are the ones the weights run with: a candidate's last training stage
(``Candidate.final_layers``).

Pure: no torch, no transformers; the config is a plain dict for the class's ``from_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from space.layers import (
    LayerSpec,
    Mixer,
    ModelShape,
    Position,
    QKNorm,
    RopeScaling,
    RopeScalingKind,
    WindowKind,
)
from workers.hf.reasons import (
    NotExpressible,
    needs_qwen3_next,
    stock_reasons,
    unknown_layer_fields,
)

LLAMA = "LlamaForCausalLM"
QWEN3 = "Qwen3ForCausalLM"
SMOLLM3 = "SmolLM3ForCausalLM"
PHI3 = "Phi3ForCausalLM"
LLAMA4 = "Llama4ForCausalLM"
GRANITE_HYBRID = "GraniteMoeHybridForCausalLM"
QWEN3_NEXT = "Qwen3NextForCausalLM"
MODEL_TYPES = {
    LLAMA: "llama",
    QWEN3: "qwen3",
    SMOLLM3: "smollm3",
    PHI3: "phi3",
    LLAMA4: "llama4_text",
    GRANITE_HYBRID: "granitemoehybrid",
    QWEN3_NEXT: "qwen3_next",
}
# Hugging Face's rope_type for each of our scalings that a stock class reproduces exactly.
HF_ROPE_TYPES = {RopeScalingKind.LINEAR: "linear", RopeScalingKind.YARN: "yarn"}

SLIDING = "sliding_attention"
FULL = "full_attention"
CHUNKED = "chunked_attention"
# The base written for a model without any RoPE layer (SmolLM3 needs one; no layer uses it).
UNUSED_ROPE_BASE = 10_000.0


@dataclass(frozen=True)
class StockLayout:
    """A stock class and the ``config.json`` fields that make it our candidate."""

    architecture: str  # e.g. "SmolLM3ForCausalLM"
    config: dict[str, Any]  # for the class's config, with "model_type" and "architectures"

    @property
    def model_type(self) -> str:
        return MODEL_TYPES[self.architecture]


def rope_parameters(base: float, scaling: RopeScaling | None, fraction: float) -> dict[str, Any]:
    """Hugging Face ``rope_parameters`` for one base, scaling (linear or YaRN) and fraction.

    Every field the rope-init function reads is written, so no Hugging Face default decides
    anything (YaRN's ``truncate: true`` is ours; gpt-oss's checkpoints say false).
    """
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": float(base)}
    if scaling is not None:
        params["rope_type"] = HF_ROPE_TYPES[scaling.kind]
        params["factor"] = float(scaling.factor)
    if scaling is not None and scaling.kind is RopeScalingKind.YARN:
        params.update(
            original_max_position_embeddings=int(scaling.original_tokens),
            beta_fast=float(scaling.beta_fast),
            beta_slow=float(scaling.beta_slow),
            attention_factor=float(scaling.attention_factor),
            truncate=True,
        )
    if fraction != 1.0:
        params["partial_rotary_factor"] = float(fraction)
    return params


def _common_config(
    shape: ModelShape,
    layers: Sequence[LayerSpec],
    rope: dict[str, Any],
    scaling: RopeScaling | None,
    max_position_embeddings: int,
) -> dict[str, Any]:
    """The config keys every stock class shares (the size, RoPE, which layers slide)."""
    common: dict[str, Any] = {
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.d_model,
        "intermediate_size": shape.mlp_hidden,
        "num_hidden_layers": shape.n_layers,
        "num_attention_heads": shape.n_heads,
        "num_key_value_heads": shape.n_kv_heads,
        "hidden_act": "silu",
        "rms_norm_eps": shape.norm_eps,
        "initializer_range": shape.init_std,
        "rope_parameters": rope,
        "max_position_embeddings": int(max_position_embeddings),
        "tie_word_embeddings": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_cache": True,
        "dtype": "float32",  # the weights as trained (AdamW keeps fp32 masters)
        # Always explicit (DESIGN §7): which layers slide, in the stock classes' words.
        "layer_types": [SLIDING if s.window_tokens is not None else FULL for s in layers],
    }
    if scaling is not None and scaling.kind is RopeScalingKind.YARN:
        # Hugging Face reads YaRN's extended context as max_position_embeddings and warns on
        # every load when it is not factor x original (gpt-oss: 32 x 4096 = 131072).
        extended = scaling.factor * scaling.original_tokens
        if float(extended).is_integer():
            common["max_position_embeddings"] = int(extended)
    return common


def _granite_hybrid_config(
    common: dict[str, Any],
    shape: ModelShape,
    layers: Sequence[LayerSpec],
    r: Any,
    *,
    rope: bool,
) -> dict[str, Any]:
    """GraniteMoeHybrid's config of a Mamba2 hybrid: ``r`` is the Mamba2 sizes (one set for
    every Mamba2 layer: the knobs); no experts, the dense SwiGLU, Granite's scalings at 1."""
    return {
        **common,
        "layer_types": ["linear_attention" if s.recurrent else FULL for s in layers],
        "shared_intermediate_size": shape.mlp_hidden,  # the dense SwiGLU of every layer
        "num_local_experts": 0,  # no mixture of experts
        "position_embedding_type": "rope" if rope else None,  # None: NoPE
        # Granite's scalings, set to be our plain block
        "embedding_multiplier": 1.0,
        "residual_multiplier": 1.0,
        "logits_scaling": 1.0,
        "attention_multiplier": shape.head_dim**-0.5,
        "mamba_n_heads": r.heads,
        "mamba_d_head": r.head_dim,
        "mamba_d_state": r.state_size,
        "mamba_n_groups": r.groups,
        "mamba_d_conv": r.conv_tokens,
        "mamba_expand": r.inner // shape.d_model,
        "mamba_chunk_size": 256,
        "mamba_conv_bias": True,
        "mamba_proj_bias": False,
    }


def _qwen3_next_config(
    common: dict[str, Any],
    shape: ModelShape,
    layers: Sequence[LayerSpec],
    fraction: float,
) -> dict[str, Any]:
    """Qwen3-Next's config: Gated DeltaNet layers (one set of sizes, the knobs) and gated
    attention layers; no experts (``num_experts: 0``, every layer in ``mlp_only_layers``: the
    dense SwiGLU of ``intermediate_size``). The rotary fraction is always written: Qwen3-Next
    assumes 0.25 when ``rope_parameters`` has none."""
    deltanet = [s.recurrent for s in layers if s.mixer is Mixer.GATED_DELTANET]
    r = deltanet[0] if deltanet else None
    linear = (
        {
            "linear_conv_kernel_dim": r.conv_tokens,
            "linear_key_head_dim": r.head_dim,
            "linear_value_head_dim": r.head_dim,
            "linear_num_key_heads": r.key_heads,
            "linear_num_value_heads": r.value_heads,
        }
        if r is not None
        else {}
    )
    return {
        **common,
        **linear,
        "rope_parameters": {**common["rope_parameters"], "partial_rotary_factor": float(fraction)},
        "head_dim": shape.head_dim,
        "layer_types": ["linear_attention" if s.recurrent else FULL for s in layers],
        "num_experts": 0,  # no mixture of experts
        "mlp_only_layers": list(range(shape.n_layers)),
        "decoder_sparse_step": 1,
    }


def stock_layout(
    shape: ModelShape,
    layers: Sequence[LayerSpec],
    knobs: Mapping[str, Any] | None = None,
    *,
    max_position_embeddings: int,
    special_tokens: Mapping[str, int | None] | None = None,
) -> StockLayout:
    """The stock class that reproduces the candidate and its config; raises NotExpressible.

    ``special_tokens`` gives ``bos_token_id`` / ``eos_token_id`` / ``pad_token_id``.
    """
    knobs = dict(knobs or {})
    unknown = unknown_layer_fields(layers)
    if unknown:
        raise NotExpressible(unknown, remote_code_possible=False)
    reasons = stock_reasons(layers, knobs)
    mamba = [s.recurrent for s in layers if s.mixer is Mixer.MAMBA2]
    qwen3_next = needs_qwen3_next(layers)
    if reasons:  # the remote-code model has every attention field and every recurrent mixer
        raise NotExpressible(reasons)

    rope = [s for s in layers if s.position is Position.ROPE]
    base = rope[0].rope_base if rope else UNUSED_ROPE_BASE
    scaling = rope[0].rope_scaling if rope else None  # stock_reasons: the same on every one
    fraction = rope[0].rope_fraction if rope else 1.0
    windows = {s.window_tokens for s in layers if s.window_tokens is not None}
    window = windows.pop() if windows else None
    qk_norm = any(s.qk_norm is not QKNorm.NONE for s in layers)
    all_rope = len(rope) == len(layers)

    rope_params = rope_parameters(base, scaling, fraction)
    common = _common_config(shape, layers, rope_params, scaling, max_position_embeddings)
    common.update(special_tokens or {})
    chunk = {s.window_tokens for s in layers if s.window_kind is WindowKind.CHUNKED} - {None}
    if qwen3_next:  # stock_reasons made sure: gated, QK-normed, full RoPE attention, one base
        architecture = QWEN3_NEXT
        config = _qwen3_next_config(common, shape, layers, fraction)
    elif mamba:  # stock_reasons made sure: full attention, no QK-norm, one position
        architecture = GRANITE_HYBRID
        config = _granite_hybrid_config(common, shape, layers, mamba[0], rope=bool(rope))
    elif chunk:  # stock_reasons made sure: one chunk size, no sliding window, no QK-norm
        architecture = LLAMA4
        config = {
            **common,
            "head_dim": shape.head_dim,
            "intermediate_size_mlp": shape.mlp_hidden,  # the dense MLP of every layer
            "moe_layers": [],  # no mixture of experts
            "use_qk_norm": False,
            "attn_temperature_tuning": False,  # stock_reasons: no temperature
            "attention_chunk_size": chunk.pop(),
            "layer_types": [CHUNKED if s.window_tokens is not None else FULL for s in layers],
            # Llama 4's inverted flag, as SmolLM3's: 1 = this layer uses RoPE.
            "no_rope_layers": [int(s.position is Position.ROPE) for s in layers],
        }
    elif qk_norm:  # stock_reasons made sure: every layer RoPE, one base, normalised before RoPE
        architecture = QWEN3
        config = {
            **common,
            "head_dim": shape.head_dim,
            "use_sliding_window": window is not None,
            "sliding_window": window,
            "max_window_layers": shape.n_layers,  # unused: layer_types is explicit
        }
    elif fraction != 1.0:  # stock_reasons made sure: all RoPE, one base, one window, unscaled
        architecture = PHI3
        config = {
            **{k: v for k, v in common.items() if k not in ("layer_types", "attention_bias")},
            "sliding_window": window,  # Phi3: every layer, or None
            "original_max_position_embeddings": int(max_position_embeddings),
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
        }
    elif all_rope and window is None:
        architecture = LLAMA
        config = {**common, "head_dim": shape.head_dim, "mlp_bias": False}
    else:
        architecture = SMOLLM3
        config = {
            **common,
            "mlp_bias": False,
            "use_sliding_window": window is not None,
            "sliding_window": window,
            # SmolLM3's inverted flag: 1 = this layer uses RoPE.
            "no_rope_layers": [int(s.position is Position.ROPE) for s in layers],
        }
    config["model_type"] = MODEL_TYPES[architecture]
    config["architectures"] = [architecture]
    return StockLayout(architecture=architecture, config=config)


__all__ = [
    "GRANITE_HYBRID",
    "HF_ROPE_TYPES",
    "LLAMA",
    "LLAMA4",
    "PHI3",
    "QWEN3",
    "QWEN3_NEXT",
    "SMOLLM3",
    "StockLayout",
    "rope_parameters",
    "stock_layout",
]
