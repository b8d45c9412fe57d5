"""Serving cost of a candidate, computed from its layer layout: KV-cache bytes at a context
length and attention-score FLOPs per token (no model, no device: the same numbers on any
machine). ``workers.kv_cache.KVCache.nbytes`` measures the first on a real cache
(``tests/test_kv_cache.py`` holds the two equal).
"""

from __future__ import annotations

from collections.abc import Sequence

from space.layers import LayerSpec, Mixer, ModelShape, WindowKind

# The context ``kv_cache_bytes`` assumes when given none; trials pass the sweep's
# ``score.kv_context_tokens``.
DEFAULT_KV_CONTEXT_TOKENS = 131072


def kv_cache_bytes(
    shape: ModelShape,
    layers: Sequence[LayerSpec],
    context_tokens: int = DEFAULT_KV_CONTEXT_TOKENS,
    dtype_bytes: int = 2,
) -> int:
    """KV-cache bytes for one sequence of ``context_tokens``: per layer, K and V of
    ``n_kv_heads x head_dim`` for ``min(context_tokens, window_tokens)`` tokens (a
    full-attention layer keeps the whole context; a sliding layer its last W tokens; a chunked
    layer at most W, the chunk being filled). Sink logits are parameters, not cache. A
    recurrent layer holds its state, the same bytes at any length
    (``RecurrentShape.state_elements``)."""
    per_token = 2 * shape.n_kv_heads * shape.head_dim * dtype_bytes
    return sum(
        per_token * _kept_tokens(spec, context_tokens)
        if spec.recurrent is None
        else spec.recurrent.state_elements() * dtype_bytes
        for spec in layers
    )


def _kept_tokens(spec: LayerSpec, context_tokens: int) -> int:
    if spec.window_tokens is None:
        return context_tokens
    return min(context_tokens, spec.window_tokens)


def attention_flops_per_token(
    shape: ModelShape, layers: Sequence[LayerSpec], context_tokens: int
) -> float:
    """Attention-score FLOPs per token, averaged over a sequence of ``context_tokens``.

    Convention: a multiply-add counts as 2 FLOPs; only ``Q K^T`` and ``A V`` are
    counted (no projections, softmax, sink logits or MLP), forward pass, all ``n_heads``
    query heads (GQA shares K/V but not this work). Query ``i`` (0-based) of a layer
    attends to ``min(i + 1, window)`` keys with a sliding window and to ``i mod W + 1`` keys
    with chunks of W (on average about half a sliding window's), so per layer and token it
    costs ``2 * 2 * n_heads * head_dim * mean_i(keys_i)``. A Gated DeltaNet or KDA layer's state
    is read by the key, written by the delta and read by the query: three ``Dk x Dv``
    products per value head, ``2 * 3 * value_heads * head_dim ** 2`` whatever the length. A
    Mamba2 layer's state (``head_dim x N`` per head) is written by ``x B^T`` and read by ``C``:
    ``2 * 2 * heads * head_dim * N``.
    """
    if context_tokens < 1:
        raise ValueError(f"context_tokens must be >= 1, got {context_tokens}")
    per_key = 4 * shape.n_heads * shape.head_dim
    total = 0.0
    for spec in layers:
        if spec.mixer is Mixer.MAMBA2:
            total += 2 * 2 * spec.recurrent.inner * spec.recurrent.state_size
            continue
        if spec.recurrent is not None:
            r = spec.recurrent
            total += 2 * 3 * r.value_heads * r.head_dim * r.head_dim
            continue
        if spec.window_kind is WindowKind.CHUNKED and spec.window_tokens is not None:
            keys = _sum_chunk_keys(context_tokens, spec.window_tokens) / context_tokens
        else:
            keys = _sum_min_keys(context_tokens, spec.window_tokens) / context_tokens
        total += per_key * keys
    return total


def _sum_min_keys(n: int, window: int | None) -> int:
    """sum over i in [0, n) of min(i + 1, window)."""
    if window is None or window >= n:
        return n * (n + 1) // 2
    return window * (window + 1) // 2 + (n - window) * window


def _sum_chunk_keys(n: int, window: int) -> int:
    """sum over i in [0, n) of (i mod window) + 1: whole chunks, then the part-filled last."""
    whole, rest = divmod(n, window)
    return whole * window * (window + 1) // 2 + rest * (rest + 1) // 2


__all__ = ["DEFAULT_KV_CONTEXT_TOKENS", "attention_flops_per_token", "kv_cache_bytes"]
