"""Gated DeltaNet: Qwen3-Next's recurrent (linear-attention) token mixer, in plain torch.

Per value head, a state ``S`` (``Dk x Dv``) is decayed and corrected by each token::

    S <- exp(g_t) S                              # forget: g_t <= 0, per head and token
    S <- S + k_t (beta_t (v_t - S^T k_t))^T      # the delta rule: write what S got wrong
    o_t = S^T q_t / sqrt(Dk)

with ``q, k`` L2-normalised, ``beta = sigmoid(b_proj x)`` and
``g = -exp(A_log) softplus(a_proj x + dt_bias)``. Queries, keys and values first go through a
depthwise causal convolution of ``conv_tokens`` and SiLU; the output is RMS-normed, gated by
``silu(z_proj x)`` and projected back. Grouped heads: each query/key head serves
``value_heads / key_heads`` consecutive value heads.

Two forms of the same recurrence, as in transformers' ``modeling_qwen3_next``:
:func:`recurrent_gated_delta_rule` (token by token: decoding, and the reference) and
:func:`chunk_gated_delta_rule` (chunks of 64 solved as small triangular systems: training).
The weights are Qwen3-Next's, split: its fused ``in_proj_qkvz`` / ``in_proj_ba`` hold our
``q/k/v/z_proj`` and ``b/a_proj`` per key-head group (``tests/test_deltanet.py`` maps one
onto the other and compares outputs).

Decoding keeps a constant state per sequence (``workers.kv_cache.RecurrentCache``): the last
``conv_tokens - 1`` convolution inputs and ``S``; its bytes are
``RecurrentShape.state_elements()`` times the element size, whatever the length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from space.layers import LayerSpec, ModelShape
from workers.kv_cache import RecurrentCache

CHUNK_TOKENS = 64  # transformers' default chunk size


def l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / ||x|| over the last dim (flash-linear-attention's formula)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def recurrent_gated_delta_rule(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """q, k (B, H, T, Dk), v (B, H, T, Dv), beta (B, H, T), g (B, H, T) (one decay per head:
    Gated DeltaNet) or (B, H, T, Dk) (one per key channel: KDA, ``workers.kda``), all fp32, q
    and k already normalised and q scaled -> outputs (B, H, T, Dv) and the final state
    (B, H, Dk, Dv)."""
    B, H, T, Dk = k.shape
    Dv = v.shape[-1]
    if state is None:
        state = torch.zeros(B, H, Dk, Dv, dtype=v.dtype, device=v.device)
    out = torch.zeros_like(v)
    decay = g.exp()[..., None] if g.dim() == 4 else g.exp()[..., None, None]  # rows of S
    for t in range(T):
        state = state * decay[:, :, t]
        k_t = k[:, :, t]  # (B, H, Dk)
        remembered = (state * k_t[..., None]).sum(dim=-2)  # S^T k: (B, H, Dv)
        delta = (v[:, :, t] - remembered) * beta[:, :, t, None]
        state = state + k_t[..., None] * delta[..., None, :]
        out[:, :, t] = (state * q[:, :, t, :, None]).sum(dim=-2)
    return out, state


def causal_conv(conv1d: nn.Conv1d, mixed: Tensor, cache: RecurrentCache | None) -> Tensor:
    """The depthwise causal convolution and SiLU of q, k, v channels ``mixed`` (B, channels, T)
    -> (B, T, channels): zeros before the start, or the last ``K - 1`` inputs ``cache`` holds,
    which then holds the last ``K - 1`` inputs including these."""
    K = conv1d.kernel_size[0]
    if cache is None:
        past = mixed.new_zeros(mixed.shape[0], mixed.shape[1], K - 1)
    else:
        past = cache.conv.to(mixed.dtype)
    window = torch.cat([past, mixed], dim=-1)  # (B, channels, K - 1 + T)
    if cache is not None:
        cache.conv.copy_(window[:, :, -(K - 1) :] if K > 1 else window[:, :, :0])
    return F.silu(conv1d(window)).transpose(1, 2)


def chunk_gated_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    state: Tensor | None = None,
    chunk: int = CHUNK_TOKENS,
) -> tuple[Tensor, Tensor]:
    """The same recurrence as :func:`recurrent_gated_delta_rule`, a chunk at a time: within a
    chunk the delta rule is a unit lower-triangular system (transformers'
    ``torch_chunk_gated_delta_rule``, line for line)."""
    B, H, T, Dk = k.shape
    Dv = v.shape[-1]
    pad = (chunk - T % chunk) % chunk
    q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    beta, g = (F.pad(x, (0, pad)) for x in (beta, g))
    n = (T + pad) // chunk
    v_beta, k_beta = v * beta[..., None], k * beta[..., None]
    q, k, k_beta, v_beta = (x.reshape(B, H, n, chunk, x.shape[-1]) for x in (q, k, k_beta, v_beta))
    g = g.reshape(B, H, n, chunk)
    upper = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).triu(1)
    cum = g.cumsum(dim=-1)  # (B, H, n, C): log decay from the chunk's start
    pair = (cum[..., :, None] - cum[..., None, :]).masked_fill(upper, float("-inf")).exp()
    system = (k_beta @ k.transpose(-1, -2)) * pair  # strictly lower part drives the solve
    intra = (q @ k.transpose(-1, -2)) * pair  # (B, H, n, C, C)
    new_values = torch.linalg.solve_triangular(system, v_beta, upper=False, unitriangular=True)
    k_cum = torch.linalg.solve_triangular(
        system, k_beta * cum.exp()[..., None], upper=False, unitriangular=True
    )
    if state is None:
        state = torch.zeros(B, H, Dk, Dv, dtype=v.dtype, device=v.device)
    out = torch.zeros_like(new_values)
    q = q * cum.exp()[..., None]
    k = k * (cum[..., -1:] - cum).exp()[..., None]
    chunk_decay = cum[..., -1].exp()[..., None, None]  # (B, H, n, 1, 1)
    for i in range(n):
        v_new = new_values[:, :, i] - k_cum[:, :, i] @ state
        out[:, :, i] = q[:, :, i] @ state + intra[:, :, i] @ v_new
        state = state * chunk_decay[:, :, i] + k[:, :, i].transpose(-1, -2) @ v_new
    return out.reshape(B, H, -1, Dv)[:, :, :T], state


class GatedDeltaNet(nn.Module):
    def __init__(self, shape: ModelShape, spec: LayerSpec) -> None:
        super().__init__()
        if spec.recurrent is None:
            raise ValueError(f"layer {spec.index}: a Gated DeltaNet needs recurrent sizes")
        self.spec = spec
        r = spec.recurrent
        self.key_heads, self.value_heads, self.head_dim = r.key_heads, r.value_heads, r.head_dim
        key_dim, value_dim = r.key_heads * r.head_dim, r.value_heads * r.head_dim
        self.q_proj = nn.Linear(shape.d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(shape.d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(shape.d_model, value_dim, bias=False)
        self.z_proj = nn.Linear(shape.d_model, value_dim, bias=False)  # the output gate
        self.b_proj = nn.Linear(shape.d_model, r.value_heads, bias=False)  # write strength
        self.a_proj = nn.Linear(shape.d_model, r.value_heads, bias=False)  # decay
        # depthwise causal convolution over [q, k, v] channels (Qwen3-Next's order)
        self.conv1d = nn.Conv1d(
            r.conv_channels, r.conv_channels, r.conv_tokens, groups=r.conv_channels, bias=False
        )
        self.dt_bias = nn.Parameter(torch.ones(r.value_heads))
        self.A_log = nn.Parameter(torch.empty(r.value_heads).uniform_(0.01, 16).log())
        self.norm_weight = nn.Parameter(torch.ones(r.head_dim))
        self.norm_eps = shape.norm_eps
        self.out_proj = nn.Linear(value_dim, shape.d_model, bias=False)

    def forward(
        self, x: Tensor, cache: RecurrentCache | None = None, *, recurrent: bool = False
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C). With ``cache``, the T new tokens continue the state it
        holds, which then holds them too. ``recurrent`` forces the token-by-token form
        (a single new token always takes it)."""
        B, T, _ = x.shape
        Hk, Hv, D = self.key_heads, self.value_heads, self.head_dim
        mixed = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], -1).transpose(1, 2)
        mixed = causal_conv(self.conv1d, mixed, cache)  # (B, T, channels)
        q, k, v = mixed.split([Hk * D, Hk * D, Hv * D], dim=-1)
        q, k = (t.reshape(B, T, Hk, D).repeat_interleave(Hv // Hk, dim=2) for t in (q, k))
        v = v.reshape(B, T, Hv, D)
        # the recurrence runs in fp32 at least (as transformers' torch rules do)
        f32 = torch.promote_types(x.dtype, torch.float32)
        beta = torch.sigmoid(self.b_proj(x))  # (B, T, Hv)
        g = -self.A_log.to(f32).exp() * F.softplus(self.a_proj(x).to(f32) + self.dt_bias)
        q, k, v, beta, g = (t.transpose(1, 2).to(f32) for t in (q, k, v, beta, g))  # heads first
        q, k = l2norm(q) / D**0.5, l2norm(k)
        state = None if cache is None else cache.state.to(f32)
        rule = recurrent_gated_delta_rule if recurrent or T == 1 else chunk_gated_delta_rule
        y, state = rule(q, k, v, g, beta, state)  # (B, Hv, T, D)
        if cache is not None:
            cache.state.copy_(state)
        y = y.transpose(1, 2)  # (B, T, Hv, D)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.norm_eps)
        y = (self.norm_weight * y.to(x.dtype)) * F.silu(self.z_proj(x).to(f32).view(B, T, Hv, D))
        return self.out_proj(y.to(x.dtype).reshape(B, T, Hv * D))


__all__ = [
    "GatedDeltaNet",
    "causal_conv",
    "chunk_gated_delta_rule",
    "recurrent_gated_delta_rule",
]
