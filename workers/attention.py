"""Causal attention kernels, full or sliding-window, and the one place that picks between them.

Every kernel takes queries ``(B, H, T, D)`` and keys/values ``(B, H_kv, T, D)`` (grouped-query
attention: ``H_kv`` divides ``H``; query head ``h`` reads key/value head ``h // (H // H_kv)``, the
Hugging Face ``repeat_kv`` convention) and returns ``(B, H, T, D)``. Scores are scaled by
``1/sqrt(D)``; any other query scaling (NoPE temperature) is applied to ``q`` by the caller.

Window semantics (``window_tokens = W``): the query at position ``i`` sees keys ``j`` with
``i - W < j <= i``, i.e. ``W`` keys counting itself. This is Hugging Face's ``sliding_window``
(``masking_utils.sliding_window_overlay``: ``kv_idx > q_idx - sliding_window``), so a model with
``sliding_window=W`` there and ``window_tokens=W`` here attend to the same keys.
``window_tokens=None`` (or ``W >= T``) is plain causal attention.

Backends:

- ``"dense"``: materialises the ``(T, T)`` scores and a boolean mask. Obviously correct, memory
  ``O(T^2)``; the reference every other path is tested against, and the only one that can return
  the attention probabilities.
- ``"blocked"``: full attention goes to PyTorch SDPA with ``is_causal=True`` (a fused kernel on
  CPU and GPU whose memory is linear in ``T``). Windowed attention cuts the queries into blocks of
  ``W``; block ``b`` can only see keys from blocks ``b - 1`` and ``b``, so it attends to those
  ``2W`` keys with a fixed band mask. Scores take ``O(T * W)`` memory, it is plain autograd, and
  it is the CPU training path for long sequences.
- ``"flex"``: ``torch.nn.attention.flex_attention`` with a block mask, compiled. The fast path on
  CUDA. On CPU it has no backward (PyTorch raises ``NotImplementedError``), so the automatic
  choice never picks it there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("dense", "blocked", "flex")


def choose_backend(device: torch.device, seq_len: int, window_tokens: int | None) -> str:
    """The automatic backend choice, the only one in the code base.

    Full attention (or a window covering the whole sequence) always uses SDPA's causal kernel
    (``"blocked"``). A real window uses FlexAttention on CUDA and the blocked path elsewhere,
    because FlexAttention has no backward on CPU.
    """
    if window_tokens is None or window_tokens >= seq_len:
        return "blocked"
    if device.type == "cuda":
        return "flex"
    return "blocked"


def attend(
    q: Tensor, k: Tensor, v: Tensor, window_tokens: int | None, backend: str | None = None
) -> Tensor:
    """Causal (optionally sliding-window) attention with the given or automatic backend."""
    if backend is None:
        backend = choose_backend(q.device, q.shape[-2], window_tokens)
    if backend == "dense":
        return dense_attention(q, k, v, window_tokens)[0]
    if backend == "blocked":
        return blocked_attention(q, k, v, window_tokens)
    if backend == "flex":
        return flex_window_attention(q, k, v, window_tokens)
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")


def repeat_kv(x: Tensor, n_heads: int) -> Tensor:
    """(B, H_kv, T, D) -> (B, H, T, D), each key/value head shared by H // H_kv query heads."""
    b, h_kv, t, d = x.shape
    if h_kv == n_heads:
        return x
    return x[:, :, None].expand(b, h_kv, n_heads // h_kv, t, d).reshape(b, n_heads, t, d)


def window_mask(
    seq_len: int, window_tokens: int | None, device: torch.device | None = None
) -> Tensor:
    """(T, T) bool, True where query i may attend to key j: j <= i and (window) i - W < j."""
    i = torch.arange(seq_len, device=device)[:, None]
    j = torch.arange(seq_len, device=device)[None, :]
    visible = j <= i
    if window_tokens is not None:
        visible = visible & (j > i - window_tokens)
    return visible


def dense_attention(
    q: Tensor, k: Tensor, v: Tensor, window_tokens: int | None
) -> tuple[Tensor, Tensor]:
    """Reference attention. Returns (output (B, H, T, D), probabilities (B, H, T, T))."""
    n_heads, seq_len, head_dim = q.shape[1], q.shape[2], q.shape[3]
    k, v = repeat_kv(k, n_heads), repeat_kv(v, n_heads)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)  # (B, H, T, T)
    mask = window_mask(seq_len, window_tokens, q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    # softmax in at least fp32, as Hugging Face's eager attention does; the diagonal is always
    # visible, so no row is all -inf
    probs = F.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
    probs = probs.to(q.dtype)
    return probs @ v, probs


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, window_tokens: int | None) -> Tensor:
    """Memory O(T * W) windowed attention, or SDPA's causal kernel for full attention."""
    batch, n_heads, seq_len, head_dim = q.shape
    k, v = repeat_kv(k, n_heads), repeat_kv(v, n_heads)
    w = window_tokens
    if w is None or w >= seq_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    # Block 0 (queries 0..W-1) sees every earlier key: that is plain causal attention.
    first = F.scaled_dot_product_attention(q[:, :, :w], k[:, :, :w], v[:, :, :w], is_causal=True)

    # Pad the tail to whole blocks. Padded keys sit after every real query, so causality hides
    # them from real queries; padded queries are dropped at the end.
    n_blocks = -(-seq_len // w)
    pad = n_blocks * w - seq_len

    def blocks(x: Tensor) -> Tensor:
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        return x.reshape(batch, n_heads, n_blocks, w, head_dim)

    qb, kb, vb = blocks(q), blocks(k), blocks(v)  # (B, H, nb, W, D)
    # Block b >= 1 reads the keys of blocks b-1 and b: key column c is position (b-1)W + c.
    k2 = torch.cat([kb[:, :, :-1], kb[:, :, 1:]], dim=3)  # (B, H, nb-1, 2W, D)
    v2 = torch.cat([vb[:, :, :-1], vb[:, :, 1:]], dim=3)
    # Query row r is position bW + r; it sees (b-1)W + c iff i - W < j <= i iff r < c <= r + W.
    r = torch.arange(w, device=q.device)[:, None]
    c = torch.arange(2 * w, device=q.device)[None, :]
    band = (c > r) & (c <= r + w)  # (W, 2W), the same for every block

    def flat(x: Tensor) -> Tensor:  # SDPA's fused kernels want 4-D inputs
        return x.reshape(batch, n_heads * (n_blocks - 1), x.shape[3], head_dim)

    rest = F.scaled_dot_product_attention(flat(qb[:, :, 1:]), flat(k2), flat(v2), attn_mask=band)
    rest = rest.view(batch, n_heads, (n_blocks - 1) * w, head_dim)
    return torch.cat([first, rest], dim=2)[:, :, :seq_len]


@functools.lru_cache(maxsize=64)
def _flex_block_mask(seq_len: int, window_tokens: int | None, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx

    def sliding(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx < window_tokens)

    mask_mod = causal if window_tokens is None else sliding
    return create_block_mask(mask_mod, None, None, seq_len, seq_len, device=device)


@functools.cache
def _compiled_flex() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    # Uncompiled, flex_attention falls back to a dense O(T^2) reference; compiled it skips
    # the blocks the mask hides. Default (automatic) dynamic shapes: evaluation at many lengths
    # recompiles once for a dynamic T instead of once per length until the recompile limit.
    return torch.compile(flex_attention)


def flex_window_attention(
    q: Tensor, k: Tensor, v: Tensor, window_tokens: int | None, *, compiled: bool = True
) -> Tensor:
    """FlexAttention with a (cached) causal or sliding-window block mask.

    ``compiled=False`` runs PyTorch's eager flex path (dense underneath, forward only on CPU):
    the same mask and GQA wiring, without the compile cost; for tests.
    """
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = _flex_block_mask(q.shape[-2], window_tokens, str(q.device))
    kernel = _compiled_flex() if compiled else flex_attention
    return kernel(q, k, v, block_mask=block_mask, enable_gqa=k.shape[1] != q.shape[1])
