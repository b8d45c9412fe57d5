"""Kimi Delta Attention (KDA): Kimi Linear's recurrent token mixer, in plain torch.

The Gated DeltaNet's delta rule (``workers.deltanet``) with a decay per key *channel*
instead of one per head: per head, a state ``S`` (``Dk x Dv``) is decayed row by row and
corrected by each token::

    S <- diag(exp(g_t)) S                        # forget: g_t <= 0, per head, token, channel
    S <- S + k_t (beta_t (v_t - S^T k_t))^T      # the delta rule: write what S got wrong
    o_t = S^T q_t / sqrt(Dk)

with ``q, k`` L2-normalised, ``beta = sigmoid(b_proj x)`` per head and
``g = -exp(A_log) softplus(f_b_proj(f_a_proj x) + dt_bias)`` (a low-rank forget gate; ``A_log``
per head, ``dt_bias`` per channel). Queries, keys and values (as many value heads as key
heads, of one size) first go through a depthwise causal convolution of ``conv_tokens`` and
SiLU; the output is RMS-normed per head, gated by ``sigmoid(g_b_proj(g_a_proj x))`` and
projected back.

Two forms of the same recurrence, as in transformers' ``modeling_kimi_linear``: token by
token (decoding, and the reference: ``workers.deltanet.recurrent_gated_delta_rule``, whose
decay may be per channel) and :func:`chunk_kda` (chunks of 64 solved as small triangular
systems: training). The parameter names are
transformers' ``KimiLinearDeltaAttention``'s, the forget gate's flattened
(``forget_gate.f_a_proj`` -> ``f_a_proj``; ``tests/test_kda.py`` loads one into the other and
compares outputs).

Decoding keeps a constant state per sequence (``workers.kv_cache.RecurrentCache``): the last
``conv_tokens - 1`` convolution inputs and ``S``; its bytes are
``RecurrentShape.state_elements()`` times the element size, whatever the length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from space.layers import LayerSpec, ModelShape
from workers.deltanet import CHUNK_TOKENS, causal_conv, recurrent_gated_delta_rule
from workers.kv_cache import RecurrentCache


def l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(||x||^2 + eps) over the last dim (Kimi Linear's formula)."""
    return x / torch.sqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def chunk_kda(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    state: Tensor | None = None,
    chunk: int = CHUNK_TOKENS,
) -> tuple[Tensor, Tensor]:
    """The recurrence of ``workers.deltanet.recurrent_gated_delta_rule`` with a decay per key
    channel (g: (B, H, T, Dk)), a chunk at a time: within a chunk the
    delta rule is a unit lower-triangular system whose entries carry each channel's decay
    between the two tokens (transformers' ``chunk_kimi_delta_attention`` reference, with the
    system solved by ``solve_triangular`` as in ``workers.deltanet``)."""
    B, H, T, Dk = k.shape
    Dv = v.shape[-1]
    pad = (chunk - T % chunk) % chunk
    q, k, v, g = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v, g))
    beta = F.pad(beta, (0, pad))
    n = (T + pad) // chunk
    v_beta, k_beta = v * beta[..., None], k * beta[..., None]
    q, k, g, k_beta, v_beta = (
        x.reshape(B, H, n, chunk, x.shape[-1]) for x in (q, k, g, k_beta, v_beta)
    )
    cum = g.cumsum(dim=-2)  # (B, H, n, C, Dk): log decay from the chunk's start, per channel
    upper = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).triu(1)
    # decay[..., i, j, d] = exp(cum_i - cum_j) for j <= i, 0 above the diagonal
    decay = (cum[..., :, None, :] - cum[..., None, :, :]).masked_fill(upper[..., None], -math.inf)
    decay = decay.exp()
    system = (k_beta[..., :, None, :] * k[..., None, :, :] * decay).sum(-1)  # (B, H, n, C, C)
    intra = (q[..., :, None, :] * k[..., None, :, :] * decay).sum(-1)
    new_values = torch.linalg.solve_triangular(system, v_beta, upper=False, unitriangular=True)
    k_cum = torch.linalg.solve_triangular(
        system, k_beta * cum.exp(), upper=False, unitriangular=True
    )
    if state is None:
        state = torch.zeros(B, H, Dk, Dv, dtype=v.dtype, device=v.device)
    out = torch.zeros_like(new_values)
    q = q * cum.exp()
    last = cum[..., -1:, :]  # (B, H, n, 1, Dk)
    k = k * (last - cum).exp()
    for i in range(n):
        v_new = new_values[:, :, i] - k_cum[:, :, i] @ state
        out[:, :, i] = q[:, :, i] @ state + intra[:, :, i] @ v_new
        state = state * last[:, :, i].transpose(-1, -2).exp() + k[:, :, i].transpose(-1, -2) @ v_new
    return out.reshape(B, H, -1, Dv)[:, :, :T], state


class KimiDeltaAttention(nn.Module):
    def __init__(self, shape: ModelShape, spec: LayerSpec) -> None:
        super().__init__()
        r = spec.recurrent
        if r is None or r.key_heads != r.value_heads:
            raise ValueError(
                f"layer {spec.index}: a KDA layer needs recurrent sizes with as many value "
                "heads as key heads"
            )
        self.spec = spec
        self.heads, self.head_dim = r.key_heads, r.head_dim
        width = r.key_heads * r.head_dim
        self.q_proj = nn.Linear(shape.d_model, width, bias=False)
        self.k_proj = nn.Linear(shape.d_model, width, bias=False)
        self.v_proj = nn.Linear(shape.d_model, width, bias=False)
        # depthwise causal convolution over [q, k, v] channels (Kimi Linear's order)
        self.conv1d = nn.Conv1d(
            r.conv_channels, r.conv_channels, r.conv_tokens, groups=r.conv_channels, bias=False
        )
        # the low-rank forget gate (rank head_dim), one decay rate per head
        self.f_a_proj = nn.Linear(shape.d_model, r.head_dim, bias=False)
        self.f_b_proj = nn.Linear(r.head_dim, width, bias=False)
        self.A_log = nn.Parameter(torch.empty(r.key_heads).uniform_(1, 16).log())
        # step sizes log-uniform in [1e-3, 1e-1] through softplus (flash-linear-attention's KDA)
        dt = torch.exp(torch.empty(width).uniform_(math.log(1e-3), math.log(1e-1))).clamp(1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.b_proj = nn.Linear(shape.d_model, r.key_heads, bias=False)  # write strength
        # the low-rank output gate and the per-head norm it multiplies
        self.g_a_proj = nn.Linear(shape.d_model, r.head_dim, bias=False)
        self.g_b_proj = nn.Linear(r.head_dim, width, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(r.head_dim))
        self.norm_eps = shape.norm_eps
        self.out_proj = nn.Linear(width, shape.d_model, bias=False)

    def forward(
        self, x: Tensor, cache: RecurrentCache | None = None, *, recurrent: bool = False
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C). With ``cache``, the T new tokens continue the state it
        holds, which then holds them too. ``recurrent`` forces the token-by-token form
        (a single new token always takes it)."""
        B, T, _ = x.shape
        H, D = self.heads, self.head_dim
        mixed = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], -1).transpose(1, 2)
        mixed = causal_conv(self.conv1d, mixed, cache)  # (B, T, channels)
        q, k, v = (t.reshape(B, T, H, D) for t in mixed.split([H * D] * 3, dim=-1))
        # the recurrence runs in fp32 at least (as transformers' torch rules do)
        f32 = torch.promote_types(x.dtype, torch.float32)
        beta = torch.sigmoid(self.b_proj(x))  # (B, T, H)
        gate = self.f_b_proj(self.f_a_proj(x)).to(f32) + self.dt_bias.to(f32)
        g = -self.A_log.to(f32).exp()[:, None] * F.softplus(gate.view(B, T, H, D))
        q, k, v, beta, g = (t.transpose(1, 2).to(f32) for t in (q, k, v, beta, g))  # heads first
        q, k = l2norm(q) / D**0.5, l2norm(k)
        state = None if cache is None else cache.state.to(f32)
        rule = recurrent_gated_delta_rule if recurrent or T == 1 else chunk_kda
        y, state = rule(q, k, v, g, beta, state)  # (B, H, T, D)
        if cache is not None:
            cache.state.copy_(state)
        y = y.transpose(1, 2)  # (B, T, H, D)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.norm_eps)
        out_gate = self.g_b_proj(self.g_a_proj(x)).to(f32).view(B, T, H, D)
        y = self.norm_weight.to(f32) * y * torch.sigmoid(out_gate)
        return self.out_proj(y.to(x.dtype).reshape(B, T, H * D))


__all__ = ["KimiDeltaAttention", "chunk_kda"]
