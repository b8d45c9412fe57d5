"""A decoder-only transformer whose every layer does what its ``LayerSpec`` says.

Llama-style: pre-norm RMSNorm, grouped-query attention, SwiGLU MLP, tied input/output
embeddings, final RMSNorm, no biases. Per layer, from ``space.layers.LayerSpec``:

- position: RoPE with the layer's own ``rope_base`` (Hugging Face ``rotate_half`` layout, so
  Llama weights load unchanged), or NoPE (no rotation at all);
- window: full causal attention, or a sliding window of ``window_tokens`` keys counting the
  query itself (Hugging Face ``sliding_window`` semantics, see ``workers.attention``);
- QK-norm: RMSNorm over ``head_dim`` on queries and keys (one learned weight each, shared by all
  heads), before or after the rotation; on a NoPE layer both placements are the same thing;
- temperature: Llama 4 scaling of NoPE queries by their absolute position.

Reads top to bottom: norms and RoPE helpers, attention, MLP, block, model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from space.layers import LayerSpec, ModelShape, Position, QKNorm, Temperature
from workers.attention import attend, dense_attention


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (the Hugging Face Llama formula, for parity)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


# ---------------------------------------------------------------- RoPE and temperature helpers


def rope_cos_sin(
    positions: Tensor, head_dim: int, rope_base: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Rotation tables for absolute positions (T,) -> cos, sin of shape (T, head_dim).

    Frequency k (of head_dim / 2) turns by ``rope_base ** (-2k / head_dim)`` radians per token.
    Both halves of the head repeat the same frequencies (``rotate_half`` layout).
    """
    inv_freq = 1.0 / rope_base ** (
        torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim
    )
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, head_dim / 2), fp32 angles
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, D) by the (T, D) tables: pair (d, d + D/2) turns as one complex number."""
    return x * cos + rotate_half(x) * sin


def temperature_scale(positions: Tensor, temperature: Temperature) -> Tensor:
    """Llama 4 query scale per absolute position (T,); exactly 1 while ``p + 1 < floor_tokens``.

    ``1 + scale * log(1 + floor((p + 1) / floor_tokens))``; NoPE attention logits grow sharper
    with length instead of spreading thin over more keys.
    """
    steps = torch.floor((positions.float() + 1.0) / temperature.floor_tokens)
    return 1.0 + temperature.scale * torch.log1p(steps)


# ---------------------------------------------------------------- attention


class Attention(nn.Module):
    def __init__(self, shape: ModelShape, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.n_heads, self.n_kv_heads = shape.n_heads, shape.n_kv_heads
        self.head_dim = shape.head_dim
        # names follow Hugging Face Llama so weights copy across one to one
        self.q_proj = nn.Linear(shape.d_model, shape.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(shape.d_model, shape.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(shape.d_model, shape.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(shape.n_heads * self.head_dim, shape.d_model, bias=False)
        if spec.qk_norm is not QKNorm.NONE:
            self.q_norm = RMSNorm(self.head_dim, shape.norm_eps)
            self.k_norm = RMSNorm(self.head_dim, shape.norm_eps)

    def forward(
        self, x: Tensor, positions: Tensor, backend: str | None, return_attn: bool
    ) -> tuple[Tensor, Tensor | None]:
        spec = self.spec
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)

        # Pre-rope norm (Qwen3, Gemma 3) rescales vectors before they turn; post-rope (Llama 4,
        # whose norm has no weight) after. Rotation keeps the norm, but a learned weight does
        # not commute with it: post-rope, scores then depend on absolute position, not only on
        # the distance. On a NoPE layer there is nothing to be before or after.
        normalize_first = spec.qk_norm is QKNorm.PRE_ROPE or (
            spec.qk_norm is QKNorm.POST_ROPE and spec.position is Position.NOPE
        )
        if normalize_first:
            q, k = self.q_norm(q), self.k_norm(k)
        if spec.position is Position.ROPE:
            cos, sin = rope_cos_sin(positions, D, spec.rope_base, q.dtype)  # (T, D)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            if spec.qk_norm is QKNorm.POST_ROPE:
                q, k = self.q_norm(q), self.k_norm(k)
        if spec.temperature is not None:
            q = q * temperature_scale(positions, spec.temperature).to(q.dtype)[:, None]

        if return_attn:
            y, probs = dense_attention(q, k, v, spec.window_tokens)  # probs (B, H, T, T)
        else:
            y, probs = attend(q, k, v, spec.window_tokens, backend), None  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H * D)
        return self.o_proj(y), probs


# ---------------------------------------------------------------- MLP, block, model


class SwiGLU(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(shape.d_model, shape.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(shape.d_model, shape.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(shape.mlp_hidden, shape.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, shape: ModelShape, spec: LayerSpec) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.attn = Attention(shape, spec)
        self.mlp_norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.mlp = SwiGLU(shape)

    def forward(
        self, x: Tensor, positions: Tensor, backend: str | None, return_attn: bool
    ) -> tuple[Tensor, Tensor | None]:
        a, probs = self.attn(self.attn_norm(x), positions, backend, return_attn)
        x = x + a
        x = x + self.mlp(self.mlp_norm(x))
        return x, probs


def check_layers(shape: ModelShape, layers: Sequence[LayerSpec]) -> None:
    """Reject a shape/layer list the model cannot build (ValueError, never assert)."""
    if len(layers) != shape.n_layers:
        raise ValueError(f"{len(layers)} layer specs for n_layers={shape.n_layers}")
    if shape.d_model % shape.n_heads or shape.n_heads % shape.n_kv_heads:
        raise ValueError(
            f"need n_heads | d_model and n_kv_heads | n_heads, got d_model={shape.d_model}, "
            f"n_heads={shape.n_heads}, n_kv_heads={shape.n_kv_heads}"
        )
    for i, spec in enumerate(layers):
        if spec.index != i:
            raise ValueError(f"layer {i} has index {spec.index}")
        if (spec.position is Position.ROPE) != (spec.rope_base is not None):
            raise ValueError(f"layer {i}: rope_base must be set exactly for RoPE layers")
        if spec.position is Position.ROPE and shape.head_dim % 2:
            raise ValueError(f"layer {i}: RoPE needs an even head_dim, got {shape.head_dim}")
        if spec.window_tokens is not None and spec.window_tokens < 1:
            raise ValueError(f"layer {i}: window_tokens must be >= 1, got {spec.window_tokens}")
        if spec.temperature is not None and spec.position is not Position.NOPE:
            raise ValueError(f"layer {i}: temperature applies to NoPE layers only")


class HybridTransformer(nn.Module):
    def __init__(self, shape: ModelShape, layers: Sequence[LayerSpec]) -> None:
        super().__init__()
        check_layers(shape, layers)
        self.shape = shape
        self.layers = tuple(layers)
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.blocks = nn.ModuleList(Block(shape, spec) for spec in self.layers)
        self.norm = RMSNorm(shape.d_model, shape.norm_eps)
        # the output head is the embedding matrix itself (tied), applied in forward
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=shape.init_std)

    def num_parameters(self) -> int:
        """Unique parameters; the tied embedding counts once."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: Tensor,
        *,
        return_attn: bool = False,
        start_pos: int = 0,
        attn_backend: str | None = None,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """idx (B, T) int64 -> logits (B, T, vocab); tokens sit at positions start_pos.. .

        ``return_attn=True`` runs every layer through the dense reference and also returns the
        per-layer attention probabilities, a list of (B, H, T, T). ``attn_backend`` forces one
        of ``workers.attention.BACKENDS``; None picks automatically per layer.
        """
        T = idx.shape[1]
        positions = torch.arange(start_pos, start_pos + T, device=idx.device)  # (T,)
        x = self.embed(idx)  # (B, T, C)
        attn: list[Tensor] = []
        for block in self.blocks:
            x, probs = block(x, positions, attn_backend, return_attn)
            if probs is not None:
                attn.append(probs)
        logits = F.linear(self.norm(x), self.embed.weight)  # (B, T, vocab)
        return (logits, attn) if return_attn else logits
