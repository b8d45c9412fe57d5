"""Named candidates shipped with the package.

A preset is a set of knob values on top of the knob defaults (all-global RoPE,
full attention, no QK-norm); it does not inherit the sweep's ``space:`` values,
so ``rope`` means the same model in every sweep file of the same model size.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's four variants (Yang et al. 2025, arXiv 2501.18795).
    "rope": {"global_every": 1, "global_position": "rope"},
    "qknorm": {"global_every": 1, "global_position": "rope", "qk_norm": "pre_rope"},
    "nope": {"global_every": 1, "global_position": "nope"},
    "rnope_swa": {"global_every": 4, "global_position": "nope", "local_window": 64},
    # Ablations and production relatives.
    "rnope": {"global_every": 4, "global_position": "nope", "local_window": None},
    "gemma3_like": {
        "global_every": 6,
        "global_position": "rope",
        "local_rope_base": 10000.0,
        "global_rope_base": 1000000.0,
        "local_window": 64,
        "qk_norm": "pre_rope",
    },
    # Llama 4: local layers attend within chunks (attention_chunk_size), not a sliding window.
    "llama4_like": {
        "global_every": 4,
        "global_position": "nope",
        "local_window": 64,
        "local_attention": "chunked",
        "global_temperature": "log",
    },
    # gpt-oss: window-128 and full layers alternate, every layer with learned sink logits.
    "gptoss_like": {
        "global_every": 2,
        "global_position": "rope",
        "local_window": 128,
        "attention_sink": "learned",
    },
    # Cohere2 (Command R7B / A): 3 sliding-window RoPE layers (rope_theta 50k) : 1 full NoPE.
    "cohere2_like": {
        "global_every": 4,
        "global_position": "nope",
        "local_window": 64,
        "local_rope_base": 50000.0,
    },
    # Qwen3-Next: 3 Gated DeltaNet : 1 gated full-attention layer with partial RoPE (a quarter
    # of each head, NeoX style, base 1e7) and QK-norm before it.
    "qwen3_next_like": {
        "global_every": 4,
        "global_position": "rope",
        "global_rope_base": 10000000.0,
        "local_mixer": "gated_deltanet",
        "output_gate": "elementwise",
        "qk_norm": "pre_rope",
        "rope_fraction": 0.25,
    },
    # Gemma 4: 5 sliding-window RoPE layers : 1 global layer with proportional RoPE (a quarter
    # of the frequencies, base 1e6), QK-norm; the last layer is global when the layer count is
    # a multiple of 6.
    "gemma4_like": {
        "global_every": 6,
        "global_position": "rope",
        "local_rope_base": 10000.0,
        "global_rope_base": 1000000.0,
        "local_window": 64,
        "qk_norm": "pre_rope",
        "rope_fraction": 0.25,
        "rope_type": "proportional",
        "rope_fraction_layers": "global",
    },
    # Jamba: one NoPE attention layer in every 8, the others state-space layers (Jamba's are
    # Mamba-1, ours Mamba2, the mixer of Bamba / Granite 4.0-H); Jamba puts the attention in
    # the middle of each 8 (offset 4), here it is the 8th, so any multiple of 8 layers fits.
    "jamba_like": {
        "global_every": 8,
        "global_position": "nope",
        "local_mixer": "mamba2",
    },
    # OLMo Hybrid: 3 Gated DeltaNet : 1 full attention (layers 3, 7, ...), no RoPE in the
    # released checkpoints (transformers' OlmoHybridConfig). Its QK-norm over the whole
    # projection and its value heads twice the key heads' size are not knobs here.
    "olmo_hybrid_like": {
        "global_every": 4,
        "global_position": "nope",
        "local_mixer": "gated_deltanet",
    },
    # Kimi Linear: 3 Kimi Delta Attention (KDA) : 1 full-attention NoPE layer. Its global layers
    # are MLA (a compressed latent KV cache), which is not a knob here: ours are grouped-query.
    "kimi_linear_like": {
        "global_every": 4,
        "global_position": "nope",
        "local_mixer": "kda",
    },
    # MiMo-V2-Flash: the first layer and every 6th are full attention (layers 0 and 5 of 8),
    # the others a 128-token sliding window with learned sinks; RoPE base 1e4 local, 5e6 global.
    # Its partial rotary (a third of each head) is left out: a third of our heads is odd.
    "mimo_like": {
        "layout": "GLLLLGLL",
        "global_position": "rope",
        "local_rope_base": 10000.0,
        "global_rope_base": 5000000.0,
        "local_window": 128,
        "attention_sink": "learned",
        "attention_sink_layers": "local",
    },
}

BUILTIN_PRESETS: MappingProxyType = MappingProxyType(
    {name: MappingProxyType(knobs) for name, knobs in _PRESETS.items()}
)

DESCRIPTIONS: dict[str, str] = {
    "rope": "RoPE on every layer, full causal attention (Llama-style baseline).",
    "qknorm": "RoPE baseline plus RMSNorm on queries and keys before the rotation.",
    "nope": "No positional encoding at all, full causal attention.",
    "rnope_swa": "3 of 4 layers RoPE with a sliding window; every 4th layer NoPE with full attention (the paper's hybrid, Command A/R7B).",
    "rnope": "3:1 RoPE:NoPE interleaving without a window on the RoPE layers.",
    "gemma3_like": "5 windowed RoPE layers to 1 global RoPE layer with a larger base, QK-norm (Gemma 3).",
    "llama4_like": "3:1 chunked-attention RoPE : full NoPE with log temperature scaling of NoPE queries (Llama 4).",
    "gptoss_like": "Alternating sliding-window and full-attention RoPE layers, each with learned attention-sink logits (gpt-oss).",
    "cohere2_like": "3 sliding-window RoPE layers (base 50k) to 1 full-attention NoPE layer (Cohere2, Command R7B / A).",
    "qwen3_next_like": "3 Gated DeltaNet layers to 1 gated full-attention layer with partial RoPE and QK-norm (Qwen3-Next).",
    "gemma4_like": "5 sliding-window RoPE layers to 1 global layer with proportional RoPE on a quarter of its frequencies, QK-norm (Gemma 4).",
    "jamba_like": "1 full-attention NoPE layer in every 8, the other 7 Mamba2 state-space layers (Jamba's ratio; Bamba / Granite 4.0-H's mixer).",
    "olmo_hybrid_like": "3 Gated DeltaNet layers to 1 full-attention NoPE layer (OLMo Hybrid).",
    "kimi_linear_like": "3 Kimi Delta Attention layers (a delta rule with a decay per key channel) to 1 full-attention NoPE layer (Kimi Linear, with grouped-query attention in place of its MLA).",
    "mimo_like": "The first layer and every 6th full-attention RoPE (base 5e6), the others 128-token sliding-window RoPE with learned sinks (MiMo-V2-Flash; 8 layers).",
}
