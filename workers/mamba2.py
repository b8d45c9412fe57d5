"""Mamba2: the selective state-space token mixer (state space duality), in plain torch.

Per head, a state ``h`` (``head_dim x N``) decays by a scalar and takes each token in::

    h <- exp(dt_t A) h + dt_t x_t B_t^T     # A = -exp(A_log) < 0, dt_t = softplus(. + dt_bias)
    y_t = h C_t + D x_t

with ``x`` a head's ``head_dim`` channels, ``B_t, C_t`` (``N`` each) shared by the heads of a
group and ``dt_t`` one step size per head. ``x``, ``B`` and ``C`` first go through a
depthwise causal convolution of ``conv_tokens`` (with bias) and SiLU; the output is gated by
``silu(z)``, RMS-normed per group of channels, and projected back.

Two forms of the same recurrence, as in transformers' ``modeling_mamba2``:
:func:`recurrent_ssd` (token by token: decoding, and the reference) and :func:`chunk_ssd`
(chunks of 256 tokens, each a masked ``C B^T`` product plus the state carried in: training).
The parameters are transformers' ``Mamba2Mixer``'s, names and layouts alike (the fused
``in_proj`` holds ``[z, x, B, C, dt]``), so ``tests/test_mamba2.py`` loads its state dict
as it is.

Decoding keeps a constant state per sequence (``workers.kv_cache.RecurrentCache``): the last
``conv_tokens - 1`` convolution inputs and ``h``; its bytes are
``Mamba2Shape.state_elements()`` times the element size, whatever the length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from space.layers import LayerSpec, Mamba2Shape, ModelShape
from workers.kv_cache import RecurrentCache

CHUNK_TOKENS = 256  # transformers' Mamba2Config.chunk_size
# Mamba2Config's initial step sizes: log-uniform in [min, max], floored
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 0.1, 1e-4


def recurrent_ssd(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """x (B, H, T, P), dt (B, H, T) after softplus, A (H,) negative, B and C (B, H, T, N)
    already expanded to heads, all fp32 -> outputs (B, H, T, P) without the D skip, and the
    final state (B, H, P, N)."""
    Bsz, H, T, P = x.shape
    N = B.shape[-1]
    if state is None:
        state = x.new_zeros(Bsz, H, P, N)
    out = torch.zeros_like(x)
    decay = (dt * A[:, None]).exp()  # (B, H, T)
    for t in range(T):
        write = (x[:, :, t] * dt[:, :, t, None])[..., None] * B[:, :, t, None, :]  # (B, H, P, N)
        state = state * decay[:, :, t, None, None] + write
        out[:, :, t] = (state * C[:, :, t, None, :]).sum(dim=-1)
    return out, state


def segment_sum(log_decay: Tensor) -> Tensor:
    """(..., C) -> (..., C, C): ``out[l, s] = log_decay[s+1] + ... + log_decay[l]`` for
    ``s <= l``, ``-inf`` above the diagonal. Summed per segment rather than as a difference of
    two cumulative sums, which loses precision once the sums grow (transformers'
    ``segment_sum``)."""
    C = log_decay.shape[-1]
    ones = torch.ones(C, C, dtype=torch.bool, device=log_decay.device)
    # terms[k, s] = log_decay[k] for k > s; summed over k <= l
    terms = log_decay[..., :, None].expand(*log_decay.shape, C).masked_fill(~ones.tril(-1), 0)
    return terms.cumsum(dim=-2).masked_fill(~ones.tril(), float("-inf"))


def chunk_ssd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    state: Tensor | None = None,
    chunk: int = CHUNK_TOKENS,
) -> tuple[Tensor, Tensor]:
    """The same recurrence as :func:`recurrent_ssd`, a chunk at a time: inside a chunk the
    outputs are ``(C B^T * decay mask) (dt x)`` like a causal linear attention, plus what the
    state carried into the chunk gives; the state is then carried past it."""
    Bsz, H, T, P = x.shape
    N = B.shape[-1]
    pad = (chunk - T % chunk) % chunk
    # padded tokens have dt = 0: no decay, no write; their outputs are cut off
    x, B, C = (F.pad(t, (0, 0, 0, pad)) for t in (x, B, C))
    dt = F.pad(dt, (0, pad))
    n = (T + pad) // chunk
    xdt = (x * dt[..., None]).reshape(Bsz, H, n, chunk, P)
    B, C = (t.reshape(Bsz, H, n, chunk, N) for t in (B, C))
    log_decay = (dt * A[:, None]).reshape(Bsz, H, n, chunk)
    cum = log_decay.cumsum(dim=-1)  # log decay from the chunk's start
    pair = segment_sum(log_decay).exp()  # (B, H, n, C, C): decay from token s to token l
    intra = ((C @ B.transpose(-1, -2)) * pair) @ xdt  # (B, H, n, C, P)
    to_end = (cum[..., -1:] - cum).exp()[..., None]  # decay from each token to the chunk's end
    if state is None:
        state = x.new_zeros(Bsz, H, P, N)
    out = torch.empty_like(intra)
    for i in range(n):
        carried = (C[:, :, i] @ state.transpose(-1, -2)) * cum[:, :, i, :, None].exp()
        out[:, :, i] = intra[:, :, i] + carried
        written = (xdt[:, :, i] * to_end[:, :, i]).transpose(-1, -2) @ B[:, :, i]  # (B,H,P,N)
        state = state * cum[:, :, i, -1, None, None].exp() + written
    return out.reshape(Bsz, H, -1, P)[:, :, :T], state


class GroupGatedRMSNorm(nn.Module):
    """``y * silu(z)``, RMS-normed over each of ``groups`` equal slices of the channels
    (transformers' ``Mamba2RMSNormGated``: the gate before the norm)."""

    def __init__(self, channels: int, groups: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.groups, self.eps = groups, eps

    def forward(self, y: Tensor, z: Tensor, out_dtype: torch.dtype) -> Tensor:
        *lead, channels = y.shape
        y = (y * F.silu(z.to(y.dtype))).view(*lead, self.groups, channels // self.groups)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.reshape(*lead, channels).to(out_dtype)


class Mamba2(nn.Module):
    def __init__(self, shape: ModelShape, spec: LayerSpec) -> None:
        super().__init__()
        r = spec.recurrent
        if not isinstance(r, Mamba2Shape):
            raise ValueError(f"layer {spec.index}: a Mamba2 layer needs Mamba2Shape sizes")
        self.spec = spec
        self.heads, self.head_dim, self.state_size, self.groups = (
            r.heads,
            r.head_dim,
            r.state_size,
            r.groups,
        )
        self.inner, self.conv_channels = r.inner, r.conv_channels
        # [z (the output gate), x, B, C, dt] from one projection, as transformers does
        self.in_proj = nn.Linear(shape.d_model, r.inner + r.conv_channels + r.heads, bias=False)
        self.conv1d = nn.Conv1d(
            r.conv_channels, r.conv_channels, r.conv_tokens, groups=r.conv_channels, bias=True
        )
        # A = -exp(A_log) = -1, -2, ..., -heads; D = 1; step sizes log-uniform (Mamba2Config)
        self.A_log = nn.Parameter(torch.arange(1, r.heads + 1, dtype=torch.float32).log())
        self.D = nn.Parameter(torch.ones(r.heads))
        dt = torch.exp(
            torch.rand(r.heads) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)
        ).clamp(min=DT_FLOOR)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.norm = GroupGatedRMSNorm(r.inner, r.groups, shape.norm_eps)
        self.out_proj = nn.Linear(r.inner, shape.d_model, bias=False)

    def forward(
        self, x: Tensor, cache: RecurrentCache | None = None, *, recurrent: bool = False
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C). With ``cache``, the T new tokens continue the state it
        holds, which then holds them too. ``recurrent`` forces the token-by-token form
        (a single new token always takes it)."""
        Bsz, T, _ = x.shape
        H, P, N, G = self.heads, self.head_dim, self.state_size, self.groups
        z, xbc, dt = self.in_proj(x).split([self.inner, self.conv_channels, H], dim=-1)
        xbc = xbc.transpose(1, 2)  # (B, channels, T)
        K = self.conv1d.kernel_size[0]
        past = (
            xbc.new_zeros(Bsz, xbc.shape[1], K - 1) if cache is None else cache.conv.to(xbc.dtype)
        )
        window = torch.cat([past, xbc], dim=-1)  # (B, channels, K - 1 + T): causal
        if cache is not None:
            cache.conv.copy_(window[:, :, -(K - 1) :] if K > 1 else window[:, :, :0])
        xbc = F.silu(self.conv1d(window)).transpose(1, 2)  # (B, T, channels)
        xs, Bm, Cm = xbc.split([self.inner, G * N, G * N], dim=-1)
        # the scan runs in fp32 at least (as transformers' torch path does)
        f32 = torch.promote_types(x.dtype, torch.float32)
        xs = xs.reshape(Bsz, T, H, P).transpose(1, 2).to(f32)  # (B, H, T, P)
        Bm, Cm = (
            t.reshape(Bsz, T, G, N).repeat_interleave(H // G, dim=2).transpose(1, 2).to(f32)
            for t in (Bm, Cm)
        )  # (B, H, T, N): each group's B and C serve its heads
        dt = F.softplus(dt.to(f32) + self.dt_bias.to(f32)).transpose(1, 2)  # (B, H, T)
        A = -self.A_log.to(f32).exp()
        state = None if cache is None else cache.state.to(f32)
        if recurrent or T == 1:
            y, state = recurrent_ssd(xs, dt, A, Bm, Cm, state)  # (B, H, T, P)
        else:  # a sequence shorter than a chunk is one chunk of its own length, not padded
            y, state = chunk_ssd(xs, dt, A, Bm, Cm, state, chunk=min(CHUNK_TOKENS, T))
        if cache is not None:
            cache.state.copy_(state)
        y = y + self.D.to(f32)[:, None, None] * xs
        y = y.transpose(1, 2).reshape(Bsz, T, self.inner)
        return self.out_proj(self.norm(y, z, x.dtype))


__all__ = ["GroupGatedRMSNorm", "Mamba2", "chunk_ssd", "recurrent_ssd", "segment_sum"]
