"""Hugging Face twins of our attention layer, for the parity tests of gated and partial or
proportional RoPE attention (test_output_gate.py, test_proportional_rope.py).

Qwen3-Next's gated attention is the reference: its ``q_proj`` emits, per head, the query
and then its gate side by side (``2 * head_dim`` rows a head); ours keeps the query in
``q_proj`` and the gate in ``gate_proj``, so the same weights split into two matrices. Its
RMSNorm scales by ``1 + weight``; ours by ``weight``.
"""

from __future__ import annotations

from typing import Any

import torch

from space import ModelShape
from workers.model import Attention


def qwen3_next_config(
    shape: ModelShape, *, rope_type: str = "default", fraction: float, rope_base: float = 500.0
) -> Any:
    """A one-layer, full-attention, eager ``Qwen3NextConfig`` of ``shape``'s attention with
    HF's ``rope_type`` over ``fraction`` of each head (``partial_rotary_factor``)."""
    import transformers

    return transformers.Qwen3NextConfig(
        hidden_size=shape.d_model,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads,
        head_dim=shape.head_dim,
        num_hidden_layers=1,
        layer_types=["full_attention"],
        rms_norm_eps=shape.norm_eps,
        rope_parameters={
            "rope_type": rope_type,
            "rope_theta": rope_base,
            "partial_rotary_factor": fraction,
        },
        attention_bias=False,
        attn_implementation="eager",
    )


def load_qwen3_next_weights(ours: Attention, theirs: torch.nn.Module, shape: ModelShape) -> None:
    """Give ``ours`` (an elementwise-gated, QK-normed layer) the weights of Qwen3-Next's
    ``theirs``: the fused query and gate split in two, the norms' ``1 + weight``."""
    heads, dims = shape.n_heads, shape.head_dim
    fused = theirs.q_proj.weight.view(heads, 2 * dims, shape.d_model)  # per head: query, gate
    state = {
        "q_proj.weight": fused[:, :dims].reshape(heads * dims, -1),
        "gate_proj.weight": fused[:, dims:].reshape(heads * dims, -1),
        "k_proj.weight": theirs.k_proj.weight,
        "v_proj.weight": theirs.v_proj.weight,
        "o_proj.weight": theirs.o_proj.weight,
        "q_norm.weight": 1 + theirs.q_norm.weight,
        "k_norm.weight": 1 + theirs.k_norm.weight,
    }
    ours.load_state_dict(state, strict=True)


def qwen3_next_attention_output(
    theirs: torch.nn.Module, config: Any, x: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Qwen3-Next's output for ``x`` (B, T, d_model) at ``positions`` (T,), causal, with
    HF's own rotary module of ``config``."""
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextRotaryEmbedding

    seq_len = x.shape[1]
    mask = torch.full((seq_len, seq_len), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        cos_sin = Qwen3NextRotaryEmbedding(config)(x, positions[None].expand(x.shape[0], -1))
        out, _ = theirs(x, position_embeddings=cos_sin, attention_mask=mask)
    return out
