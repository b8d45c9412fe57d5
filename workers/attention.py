"""Causal attention kernels: full, sliding-window or chunked, with optional attention sinks, and
the one place that picks between them.

Every kernel takes queries ``(B, H, T, D)`` and keys/values ``(B, H_kv, T, D)`` (grouped-query
attention: ``H_kv`` divides ``H``; query head ``h`` reads key/value head ``h // (H // H_kv)``, the
Hugging Face ``repeat_kv`` convention) and returns ``(B, H, T, D)``. Scores are scaled by
``1/sqrt(D)``; any other query scaling (NoPE temperature) is applied to ``q`` by the caller.

Window semantics (``window_tokens = W``), by ``window_kind``:

- sliding: the query at position ``i`` sees keys ``j`` with ``i - W < j <= i``, i.e. ``W`` keys
  counting itself. This is Hugging Face's ``sliding_window`` (``masking_utils.
  sliding_window_overlay``: ``kv_idx > q_idx - sliding_window``).
- chunked: positions are cut into chunks of ``W`` counted from absolute position 0, and the query
  at ``i`` sees keys ``j <= i`` of its own chunk, ``j // W == i // W`` (Hugging Face
  ``chunked_overlay``, Llama 4's ``attention_chunk_size``). Chunk boundaries are absolute, so
  ``start_pos`` (the position of the first token) matters here and nowhere else.

``window_tokens=None`` (or a window that covers every query's whole past) is plain causal
attention.

Attention sinks (``sinks``, one logit per query head, gpt-oss): a virtual key that every query
sees with that logit and whose value is zero, so it takes softmax mass and adds nothing:
``out_i = sum_j exp(s_ij) v_j / (exp(sink) + sum_j exp(s_ij))``.

Backends:

- ``"dense"``: materialises the ``(T, T)`` scores and a boolean mask. Obviously correct, memory
  ``O(T^2)``; the reference every other path is tested against, and the only one that can return
  the attention probabilities.
- ``"blocked"``: causal attention goes to PyTorch SDPA with ``is_causal=True`` (a fused kernel on
  CPU and GPU whose memory is linear in ``T``). A sliding window cuts the queries into blocks of
  ``W``; block ``b`` can only see keys from blocks ``b - 1`` and ``b``, so it attends to those
  ``2W`` keys with a fixed band mask: ``O(T * W)``. Chunks are independent: each is causal
  attention over ``W`` tokens, batched, again linear in ``T`` and half the keys of the band. A
  sink joins SDPA as one more key: queries and keys get one more dimension (1 for queries, 0 for
  keys), the sink key is 0 there but ``sink / scale`` in the new dimension, so its score is the
  sink logit exactly, and its value is 0. Plain autograd; the CPU training path.
- cached (:func:`cached_attention`, greedy decoding with a ``workers.kv_cache``): a few new
  queries against the keys a layer kept plus their own, masked by absolute positions; SDPA
  with a boolean mask (a sink joins as above), memory ``O(new x kept)``.
- ``"flex"``: ``torch.nn.attention.flex_attention`` with a block mask, compiled; a sink rescales
  the output by ``sigmoid(lse - sink)`` (the softmax mass the real keys keep). The fast path on
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

from space.layers import WindowKind

BACKENDS = ("dense", "blocked", "flex")


def is_full(
    seq_len: int,
    window_tokens: int | None,
    window_kind: WindowKind = WindowKind.SLIDING,
    start_pos: int = 0,
) -> bool:
    """Whether the window hides nothing from any of ``seq_len`` queries (plain causal)."""
    if window_tokens is None:
        return True
    if window_kind is WindowKind.CHUNKED:
        return start_pos % window_tokens + seq_len <= window_tokens  # one chunk holds them all
    return window_tokens >= seq_len


def choose_backend(
    device: torch.device,
    seq_len: int,
    window_tokens: int | None,
    *,
    window_kind: WindowKind = WindowKind.SLIDING,
    sinks: bool = False,
    start_pos: int = 0,
) -> str:
    """The automatic backend choice, the only one in the code base.

    Plain causal attention (or a window covering the whole sequence) uses SDPA's causal kernel
    (``"blocked"``). A real window, or a sink, uses FlexAttention on CUDA and the blocked path
    elsewhere, because FlexAttention has no backward on CPU.
    """
    full = is_full(seq_len, window_tokens, window_kind, start_pos)
    if device.type == "cuda" and (not full or sinks):
        return "flex"
    return "blocked"


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window_tokens: int | None,
    backend: str | None = None,
    *,
    window_kind: WindowKind = WindowKind.SLIDING,
    sinks: Tensor | None = None,
    start_pos: int = 0,
) -> Tensor:
    """Causal (optionally windowed, optionally with sinks) attention, given or automatic backend.

    ``sinks``: ``(H,)`` logits, one per query head, or None.
    """
    mask = {"window_kind": window_kind, "sinks": sinks, "start_pos": start_pos}
    if backend is None:
        backend = choose_backend(
            q.device,
            q.shape[-2],
            window_tokens,
            window_kind=window_kind,
            sinks=sinks is not None,
            start_pos=start_pos,
        )
    if backend == "dense":
        return dense_attention(q, k, v, window_tokens, **mask)[0]
    if backend == "blocked":
        return blocked_attention(q, k, v, window_tokens, **mask)
    if backend == "flex":
        return flex_window_attention(q, k, v, window_tokens, **mask)
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")


def repeat_kv(x: Tensor, n_heads: int) -> Tensor:
    """(B, H_kv, T, D) -> (B, H, T, D), each key/value head shared by H // H_kv query heads."""
    b, h_kv, t, d = x.shape
    if h_kv == n_heads:
        return x
    return x[:, :, None].expand(b, h_kv, n_heads // h_kv, t, d).reshape(b, n_heads, t, d)


def window_mask(
    seq_len: int,
    window_tokens: int | None,
    device: torch.device | None = None,
    *,
    window_kind: WindowKind = WindowKind.SLIDING,
    start_pos: int = 0,
) -> Tensor:
    """(T, T) bool, True where query i may attend to key j: j <= i, and within the window
    (sliding: i - W < j; chunked: the same chunk of absolute positions)."""
    i = torch.arange(seq_len, device=device)[:, None]
    j = torch.arange(seq_len, device=device)[None, :]
    visible = j <= i
    if window_tokens is not None:
        if window_kind is WindowKind.CHUNKED:
            visible = visible & (
                (i + start_pos) // window_tokens == (j + start_pos) // window_tokens
            )
        else:
            visible = visible & (j > i - window_tokens)
    return visible


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window_tokens: int | None,
    *,
    window_kind: WindowKind = WindowKind.SLIDING,
    sinks: Tensor | None = None,
    start_pos: int = 0,
) -> tuple[Tensor, Tensor]:
    """Reference attention. Returns (output (B, H, T, D), probabilities (B, H, T, T)).

    With sinks the probabilities of a row sum to less than 1: the rest went to the sink (as
    Hugging Face's gpt-oss returns them).
    """
    batch, n_heads, seq_len, head_dim = q.shape
    k, v = repeat_kv(k, n_heads), repeat_kv(v, n_heads)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)  # (B, H, T, T)
    mask = window_mask(
        seq_len, window_tokens, q.device, window_kind=window_kind, start_pos=start_pos
    )
    scores = scores.masked_fill(~mask, float("-inf"))
    if sinks is not None:  # one more column: the sink's logit, per head
        sink_col = sinks.to(scores.dtype).view(1, n_heads, 1, 1).expand(batch, n_heads, seq_len, 1)
        scores = torch.cat([scores, sink_col], dim=-1)  # (B, H, T, T + 1)
    # softmax in at least fp32, as Hugging Face's eager attention does; the diagonal is always
    # visible, so no row is all -inf
    probs = F.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
    probs = probs.to(q.dtype)
    if sinks is not None:
        probs = probs[..., :seq_len]  # the sink's share is dropped: its value is zero
    return probs @ v, probs


# ---------------------------------------------------------------- the blocked (SDPA) path


def _with_sink_key(q: Tensor, k: Tensor, v: Tensor, sinks: Tensor) -> tuple[Tensor, ...]:
    """Queries and keys with one more dimension and a sink key at key index 0.

    ``q``: (B, H', L, D); ``k, v``: (B, H', S, D); ``sinks``: (H',). Query dim D is 1, real keys' is 0, so real
    scores are unchanged; the sink key is 0 except ``sink / scale`` there, so with SDPA's
    ``scale = 1/sqrt(D)`` its score is the sink logit; its value is 0. Values carry the extra
    dimension as well (0 everywhere): callers keep the first D output dimensions.
    """
    batch, heads, length, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim)
    q1 = torch.cat([q, q.new_ones(batch, heads, length, 1)], dim=-1)
    k1 = torch.cat([k, k.new_zeros(batch, heads, k.shape[2], 1)], dim=-1)
    sink = (sinks.to(k.dtype) / scale).view(1, heads, 1, 1).expand(batch, heads, 1, 1)
    sink_key = torch.cat([k.new_zeros(batch, heads, 1, head_dim), sink], dim=-1)
    k1 = torch.cat([sink_key, k1], dim=2)  # (B, H', 1 + S, D + 1)
    # Values get the extra dimension too (zeros; the output's is dropped): with a value head
    # size unlike the queries', SDPA on CPU leaves its fused kernel for the T x T math path.
    v1 = F.pad(torch.cat([v.new_zeros(batch, heads, 1, head_dim), v], dim=2), (0, 1))
    return q1, k1, v1, scale


def _causal(q: Tensor, k: Tensor, v: Tensor, sinks: Tensor | None) -> Tensor:
    """SDPA causal attention over (B, H', L, D), optionally with per-head sinks (H',).

    With a sink at key 0, ``is_causal`` (top-left aligned) would show query i the sink and keys
    0..i-1; a zero query put in front shifts every real query down by one row, so query i sees
    the sink and keys 0..i, exactly. The extra row is dropped.
    """
    if sinks is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    q1, k1, v1, scale = _with_sink_key(q, k, v, sinks)
    q1 = torch.cat([q1.new_zeros(q1.shape[0], q1.shape[1], 1, q1.shape[3]), q1], dim=2)
    out = F.scaled_dot_product_attention(q1, k1, v1, is_causal=True, scale=scale)
    return out[:, :, 1:, : q.shape[-1]]


def _blocks(x: Tensor, width: int) -> tuple[Tensor, int]:
    """(B, H, L, D) -> (B, H, n, width, D), the tail padded with zeros to whole blocks."""
    batch, heads, length, head_dim = x.shape
    n_blocks = -(-length // width)
    pad = n_blocks * width - length
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(batch, heads, n_blocks, width, head_dim), n_blocks


def blocked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window_tokens: int | None,
    *,
    window_kind: WindowKind = WindowKind.SLIDING,
    sinks: Tensor | None = None,
    start_pos: int = 0,
) -> Tensor:
    """Memory O(T * W) windowed attention, or SDPA's causal kernel for full attention."""
    n_heads, seq_len = q.shape[1], q.shape[2]
    k, v = repeat_kv(k, n_heads), repeat_kv(v, n_heads)
    if is_full(seq_len, window_tokens, window_kind, start_pos):
        return _causal(q, k, v, sinks)
    if window_kind is WindowKind.CHUNKED:
        return _chunked(q, k, v, window_tokens, sinks, start_pos)
    return _sliding(q, k, v, window_tokens, sinks)


def _flat(x: Tensor) -> Tensor:
    """(B, H, n, W, D) -> (B, H * n, W, D): SDPA's fused kernels want 4-D inputs."""
    batch, heads, n_blocks, width, head_dim = x.shape
    return x.reshape(batch, heads * n_blocks, width, head_dim)


def _chunked(
    q: Tensor, k: Tensor, v: Tensor, w: int, sinks: Tensor | None, start_pos: int
) -> Tensor:
    """Each chunk is causal attention over its own ``w`` tokens; chunks never see each other."""
    batch, n_heads, seq_len, head_dim = q.shape
    # The first chunk may be cut: positions start_pos.. run to the next multiple of w.
    first = min(seq_len, w - start_pos % w)
    out_first = _causal(q[:, :, :first], k[:, :, :first], v[:, :, :first], sinks)
    if first == seq_len:
        return out_first
    # The rest starts on a chunk boundary. Padded keys sit after every real query of the last
    # chunk, so causality hides them; padded queries are dropped.
    qb, n_blocks = _blocks(q[:, :, first:], w)  # (B, H, n, W, D)
    kb, _ = _blocks(k[:, :, first:], w)
    vb, _ = _blocks(v[:, :, first:], w)
    block_sinks = None if sinks is None else sinks.repeat_interleave(n_blocks)  # head-major
    rest = _causal(_flat(qb), _flat(kb), _flat(vb), block_sinks)  # (B, H * n, W, D)
    rest = rest.reshape(batch, n_heads, n_blocks * w, head_dim)[:, :, : seq_len - first]
    return torch.cat([out_first, rest], dim=2)


def _sliding(q: Tensor, k: Tensor, v: Tensor, w: int, sinks: Tensor | None) -> Tensor:
    batch, n_heads, seq_len, head_dim = q.shape
    # Block 0 (queries 0..W-1) sees every earlier key: that is plain causal attention.
    first = _causal(q[:, :, :w], k[:, :, :w], v[:, :, :w], sinks)

    qb, n_blocks = _blocks(q, w)  # (B, H, nb, W, D)
    kb, _ = _blocks(k, w)
    vb, _ = _blocks(v, w)
    # Block b >= 1 reads the keys of blocks b-1 and b: key column c is position (b-1)W + c.
    k2 = torch.cat([kb[:, :, :-1], kb[:, :, 1:]], dim=3)  # (B, H, nb-1, 2W, D)
    v2 = torch.cat([vb[:, :, :-1], vb[:, :, 1:]], dim=3)
    # Query row r is position bW + r; it sees (b-1)W + c iff i - W < j <= i iff r < c <= r + W.
    r = torch.arange(w, device=q.device)[:, None]
    c = torch.arange(2 * w, device=q.device)[None, :]
    band = (c > r) & (c <= r + w)  # (W, 2W), the same for every block

    q_rest, k_rest, v_rest = _flat(qb[:, :, 1:]), _flat(k2), _flat(v2)
    if sinks is None:
        rest = F.scaled_dot_product_attention(q_rest, k_rest, v_rest, attn_mask=band)
    else:  # the sink is key 0 of every block, visible to every row
        block_sinks = sinks.repeat_interleave(n_blocks - 1)
        q1, k1, v1, scale = _with_sink_key(q_rest, k_rest, v_rest, block_sinks)
        band = torch.cat([band.new_ones(w, 1), band], dim=1)  # (W, 1 + 2W)
        rest = F.scaled_dot_product_attention(q1, k1, v1, attn_mask=band, scale=scale)
        rest = rest[..., :head_dim]
    rest = rest.reshape(batch, n_heads, (n_blocks - 1) * w, head_dim)
    return torch.cat([first, rest], dim=2)[:, :, :seq_len]


# ---------------------------------------------------------------- decoding with a KV cache


def position_mask(
    query_pos: Tensor,
    key_pos: Tensor,
    window_tokens: int | None,
    window_kind: WindowKind = WindowKind.SLIDING,
) -> Tensor:
    """(L, S) bool from absolute positions: key ``j`` is visible to query ``i`` when it holds
    a token (``key_pos >= 0``), ``j <= i`` and the window allows it, as in ``window_mask``."""
    i, j = query_pos[:, None], key_pos[None, :]
    visible = (j >= 0) & (j <= i)
    if window_tokens is not None:
        if window_kind is WindowKind.CHUNKED:
            visible = visible & (i // window_tokens == j // window_tokens)
        else:
            visible = visible & (i - j < window_tokens)
    return visible


def cached_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    query_pos: Tensor,
    key_pos: Tensor,
    window_tokens: int | None,
    *,
    window_kind: WindowKind = WindowKind.SLIDING,
    sinks: Tensor | None = None,
    return_probs: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """New queries ``(B, H, L, D)`` at ``query_pos`` (L,) against kept and new keys/values
    ``(B, H_kv, S, D)`` at ``key_pos`` (S,; -1 = an empty slot), in any slot order.

    Returns the output ``(B, H, L, D)`` and, with ``return_probs``, the probabilities
    ``(B, H, L, S)`` over the key slots (computed as ``dense_attention`` does: softmax in at
    least fp32, a sink's share dropped). Every query sees at least its own key.
    """
    n_heads, head_dim = q.shape[1], q.shape[-1]
    k, v = repeat_kv(k, n_heads), repeat_kv(v, n_heads)
    mask = position_mask(query_pos, key_pos, window_tokens, window_kind)  # (L, S)
    if return_probs:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)  # (B, H, L, S)
        scores = scores.masked_fill(~mask, float("-inf"))
        if sinks is not None:
            sink_col = sinks.to(scores.dtype).view(1, n_heads, 1, 1)
            scores = torch.cat([scores, sink_col.expand(*scores.shape[:3], 1)], dim=-1)
        probs = F.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
        probs = probs.to(q.dtype)[..., : k.shape[2]]  # the sink's share is dropped
        return probs @ v, probs
    if sinks is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
    q1, k1, v1, scale = _with_sink_key(q, k, v, sinks)  # the sink is key 0, seen by every row
    mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
    out = F.scaled_dot_product_attention(q1, k1, v1, attn_mask=mask, scale=scale)
    return out[..., :head_dim], None


# ---------------------------------------------------------------- FlexAttention


@functools.lru_cache(maxsize=64)
def _flex_block_mask(
    seq_len: int, window_tokens: int | None, window_kind: WindowKind, offset: int, device: str
):
    from torch.nn.attention.flex_attention import create_block_mask

    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx

    def sliding(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx < window_tokens)

    def chunked(b, h, q_idx, kv_idx):
        same = (q_idx + offset) // window_tokens == (kv_idx + offset) // window_tokens
        return (kv_idx <= q_idx) & same

    if window_tokens is None:
        mask_mod = causal
    else:
        mask_mod = chunked if window_kind is WindowKind.CHUNKED else sliding
    return create_block_mask(mask_mod, None, None, seq_len, seq_len, device=device)


@functools.cache
def _compiled_flex() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    # Uncompiled, flex_attention falls back to a dense O(T^2) reference; compiled it skips
    # the blocks the mask hides. Default (automatic) dynamic shapes: evaluation at many lengths
    # recompiles once for a dynamic T instead of once per length until the recompile limit.
    return torch.compile(flex_attention)


def flex_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window_tokens: int | None,
    *,
    compiled: bool = True,
    window_kind: WindowKind = WindowKind.SLIDING,
    sinks: Tensor | None = None,
    start_pos: int = 0,
) -> Tensor:
    """FlexAttention with a (cached) causal, sliding-window or chunked block mask.

    ``compiled=False`` runs PyTorch's eager flex path (dense underneath, forward only on CPU):
    the same mask and GQA wiring, without the compile cost; for tests.
    """
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    offset = start_pos % window_tokens if window_tokens else 0
    block_mask = _flex_block_mask(q.shape[-2], window_tokens, window_kind, offset, str(q.device))
    kernel = _compiled_flex() if compiled else flex_attention
    gqa = k.shape[1] != q.shape[1]
    if sinks is None:
        return kernel(q, k, v, block_mask=block_mask, enable_gqa=gqa)
    out, aux = kernel(
        q, k, v, block_mask=block_mask, enable_gqa=gqa, return_aux=AuxRequest(lse=True)
    )
    lse = aux.lse  # (B, H, T), natural log
    # The real keys keep exp(lse) / (exp(lse) + exp(sink)) of the mass: sigmoid(lse - sink).
    kept = torch.sigmoid(lse.float() - sinks.float().view(1, -1, 1))  # (B, H, T)
    return (out.float() * kept[..., None]).to(q.dtype)
