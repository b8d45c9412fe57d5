"""The key/value cache of greedy decoding: what each layer keeps of the tokens it has seen.

A layer keeps exactly what its attention can still read, in a buffer of fixed capacity
allocated once for the longest sequence the decoding will reach (``max_tokens``):

- full attention: every token (capacity ``max_tokens``);
- a sliding window of ``W``: a ring buffer of the last ``W`` tokens (capacity
  ``min(W, max_tokens)``): the token at position ``p`` goes to slot ``p mod W``, over the
  one at ``p - W``, which no later query sees;
- chunks of ``W``: the current chunk only, in the same ``W`` slots (a new chunk overwrites
  the old one slot by slot; the mask hides what is left of it).

A recurrent layer (Gated DeltaNet, Mamba2) keeps a state of constant size instead
(:class:`RecurrentCache`): the last convolution inputs and its state matrices.

So the bytes a candidate holds for a context of ``N`` tokens are
``workers.serving_cost.kv_cache_bytes`` of its layers at ``N`` exactly (per sequence, at the
cache's element size): :meth:`KVCache.nbytes` measures them. Keys are stored after QK-norm,
RoPE and everything else a key goes through; the slot order does not matter, since the
mask is computed from each slot's absolute position (``LayerCache.pos``, -1 when empty).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from space.layers import LayerSpec, Mamba2Shape, RecurrentShape


def capacity_tokens(spec: LayerSpec, max_tokens: int) -> int:
    """Tokens a layer keeps while decoding up to ``max_tokens`` (see the module docstring)."""
    if spec.window_tokens is None:
        return max_tokens
    return min(spec.window_tokens, max_tokens)


class LayerCache:
    """One layer's keys and values: ``(B, H_kv, capacity, D)`` each, and the absolute
    position in each slot ``(capacity,)`` (the same for every row of the batch)."""

    def __init__(
        self,
        batch: int,
        kv_heads: int,
        head_dim: int,
        capacity: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        self.capacity = capacity
        self.k = torch.zeros(batch, kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.full((capacity,), -1, dtype=torch.long, device=device)

    def store(self, k: Tensor, v: Tensor, positions: Tensor) -> None:
        """Write new keys/values ``(B, H_kv, L, D)`` at absolute ``positions`` (L,); of more
        than ``capacity`` new tokens only the last ``capacity`` stay."""
        keep = min(positions.numel(), self.capacity)
        positions = positions[-keep:]
        slots = positions % self.capacity
        self.k[:, :, slots] = k[:, :, -keep:].to(self.k.dtype)
        self.v[:, :, slots] = v[:, :, -keep:].to(self.v.dtype)
        self.pos[slots] = positions

    def visible(self, k: Tensor, v: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Keys, values and key positions new queries at ``positions`` may read, and store
        the new ones. One new token (a decoding step) is stored first and read in place:
        the slot it takes held a token its window no longer covers. Several (a prefill
        chunk) are read next to the buffer, then stored, since the chunk's first queries
        still need what its last keys will overwrite."""
        if positions.numel() == 1:
            self.store(k, v, positions)
            return self.k, self.v, self.pos
        keys = torch.cat([self.k, k.to(self.k.dtype)], dim=2)
        values = torch.cat([self.v, v.to(self.v.dtype)], dim=2)
        key_pos = torch.cat([self.pos, positions])
        self.store(k, v, positions)
        return keys, values, key_pos

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


class RecurrentCache:
    """One recurrent layer's decoding state for ``batch`` sequences: the last
    ``conv_tokens - 1`` convolution inputs ``(B, channels, K - 1)`` and the recurrent state
    ``(B, *shape.state_shape)`` (Gated DeltaNet: ``(B, value_heads, Dk, Dv)``; Mamba2:
    ``(B, heads, head_dim, N)``), both of constant size."""

    def __init__(
        self,
        batch: int,
        shape: RecurrentShape | Mamba2Shape,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        self.conv = torch.zeros(
            batch, shape.conv_channels, shape.conv_tokens - 1, dtype=dtype, device=device
        )
        self.state = torch.zeros(batch, *shape.state_shape, dtype=dtype, device=device)

    @property
    def nbytes(self) -> int:
        return self.conv.nbytes + self.state.nbytes


class KVCache:
    """Every layer's cache and the number of tokens decoded so far (the next position)."""

    def __init__(self, layers: Sequence[LayerCache | RecurrentCache], max_tokens: int) -> None:
        self.layers = list(layers)
        self.max_tokens = max_tokens
        self.length = 0

    @classmethod
    def allocate(
        cls,
        specs: Sequence[LayerSpec],
        *,
        batch: int,
        kv_heads: int,
        head_dim: int,
        max_tokens: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> KVCache:
        if max_tokens < 1 or batch < 1:
            raise ValueError(f"need max_tokens >= 1 and batch >= 1, got {max_tokens}, {batch}")
        layers = [
            LayerCache(
                batch,
                kv_heads,
                head_dim,
                capacity_tokens(spec, max_tokens),
                dtype=dtype,
                device=device,
            )
            if spec.recurrent is None
            else RecurrentCache(batch, spec.recurrent, dtype=dtype, device=device)
            for spec in specs
        ]
        return cls(layers, max_tokens)

    def nbytes(self) -> int:
        """Bytes of keys and values held, every layer, every row of the batch."""
        return sum(layer.nbytes for layer in self.layers)


__all__ = ["KVCache", "LayerCache", "RecurrentCache", "capacity_tokens"]
