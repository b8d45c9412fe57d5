"""Greedy decoding of a batch of prompts, with a KV cache or without (the reference).

:class:`Decoder` is what retrieval scoring (``workers.scores.answer_correct``) and
:func:`greedy_decode` run: with a ``HybridTransformer`` and ``kv_cache`` it prefills the
prompt once into a ``workers.kv_cache.KVCache``, in chunks of at most
:func:`prefill_chunk` tokens (so a chunk's attention scores grow linearly with the keys),
then costs one ``model.step`` per token; without it, or for any other module, every step
runs the whole sequence. Both give the same tokens (``tests/test_kv_cache.py``).

A model here is any ``torch.nn.Module`` whose ``model(idx)`` returns logits ``(B, T, V)``
or a tuple that starts with them (:func:`model_logits`).
"""

from __future__ import annotations

import torch

from workers.kv_cache import KVCache
from workers.model import HybridTransformer


def model_logits(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """The logits ``(B, T, V)`` of ``model(idx)``, whether it returns them alone or first
    in a tuple (as with ``return_attn``)."""
    out = model(idx)
    return out[0] if isinstance(out, tuple) else out


# A prompt is prefilled in chunks of at most this many tokens: a chunk's attention scores
# (batch x heads x chunk x keys, on paths that materialise them, as SDPA with a mask does on
# CPU) then grow linearly with the keys, never with their square.
PREFILL_CHUNK_TOKENS = 512
# ... and fewer when even that many would hold more scores than this (2^26 fp32: 256 MiB).
PREFILL_SCORE_ELEMENTS = 2**26


def prefill_chunk(batch: int, heads: int, total_tokens: int) -> int:
    """Prompt tokens per prefill chunk: ``PREFILL_CHUNK_TOKENS``, fewer (down to 32) where
    ``batch x heads x chunk x total_tokens`` scores would pass ``PREFILL_SCORE_ELEMENTS``."""
    fit = PREFILL_SCORE_ELEMENTS // max(1, batch * heads * total_tokens)
    return max(32, min(PREFILL_CHUNK_TOKENS, fit))


class Decoder:
    """Greedy decoding of a batch of equal-length prompts ``(B, P)`` for up to ``budget``
    tokens: :meth:`first` gives the logits after the prompt ``(B, vocab)``, :meth:`next`
    those after one more token per row.

    Cached (``kv_cache`` and a ``HybridTransformer``): the prompt is prefilled once into a
    ``workers.kv_cache.KVCache`` sized for ``P + budget`` tokens, in chunks, then each
    token is one ``model.step``. Uncached: the whole sequence is run every time (the
    reference). Either way an NTK scaling sizes its base for the whole ``P + budget``
    tokens, so the two paths compute the same thing.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        prompts: torch.Tensor,
        budget: int,
        kv_cache: bool = True,
        prefill_chunk_tokens: int | None = None,
    ) -> None:
        self.model = model
        self.seq = prompts
        self.total = prompts.shape[1] + budget
        self.hybrid = isinstance(model, HybridTransformer)
        self.cache: KVCache | None = None
        self.chunk = prefill_chunk_tokens
        if kv_cache and self.hybrid:
            batch = prompts.shape[0]
            self.cache = model.new_cache(batch, self.total, device=prompts.device)
            if self.chunk is None:
                self.chunk = prefill_chunk(batch, model.shape.n_heads, self.total)

    def first(self) -> torch.Tensor:
        if self.cache is None:
            return self._whole()
        logits = None
        for start in range(0, self.seq.shape[1], self.chunk):
            part = self.seq[:, start : start + self.chunk]
            logits = self.model.step(part, self.cache, rope_length=self.total)
        return logits

    def next(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits after appending ``tokens`` (B,), one per row."""
        if self.cache is None:
            self.seq = torch.cat([self.seq, tokens[:, None]], dim=1)
            return self._whole()
        return self.model.step(tokens[:, None], self.cache, rope_length=self.total)

    def _whole(self) -> torch.Tensor:
        if self.hybrid:
            return self.model(self.seq, rope_length=self.total)[:, -1]
        return model_logits(self.model, self.seq)[:, -1]


@torch.no_grad()
def greedy_decode(
    model: torch.nn.Module, prompts: torch.Tensor, n_tokens: int, *, kv_cache: bool = False
) -> torch.Tensor:
    """Append ``n_tokens`` greedy tokens to ``prompts`` (B, P) -> (B, n_tokens).

    Without a KV cache (the default) every step runs the model on the whole sequence, its
    own length being the one an NTK scaling sizes its base for, as in a Hugging Face forward
    of that sequence. ``kv_cache``: the cached path of :class:`Decoder` (NTK sized for
    ``P + n_tokens``)."""
    if kv_cache:
        decoder = Decoder(model, prompts, n_tokens, kv_cache=True)
        logits, out = decoder.first(), []
        for i in range(n_tokens):
            nxt = logits.argmax(dim=-1)
            out.append(nxt[:, None])
            if i + 1 < n_tokens:
                logits = decoder.next(nxt)
        return torch.cat(out, dim=1)
    seq = prompts
    out = []
    for _ in range(n_tokens):
        nxt = model_logits(model, seq)[:, -1].argmax(dim=-1, keepdim=True)
        out.append(nxt)
        seq = torch.cat([seq, nxt], dim=1)
    return torch.cat(out, dim=1)


__all__ = [
    "PREFILL_CHUNK_TOKENS",
    "PREFILL_SCORE_ELEMENTS",
    "Decoder",
    "greedy_decode",
    "model_logits",
    "prefill_chunk",
]
