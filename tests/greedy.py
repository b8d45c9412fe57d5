"""One check shared by the decoding tests of every layer type: greedy decoding through the
model's cache gives, step by step, the logits and tokens of decoding without it."""

from __future__ import annotations

import torch

from workers.decoding import Decoder


def assert_cached_greedy_matches(
    model: torch.nn.Module, prompts: torch.Tensor, budget: int, *, atol: float, block: int = 32
) -> None:
    """``budget`` greedy steps after ``prompts``, cached (prefill in blocks of ``block``)
    against uncached: logits within ``atol`` (rtol 0) and the same token at every step."""
    with torch.no_grad():
        cached, reference = (
            Decoder(model, prompts, budget, True, block),
            Decoder(model, prompts, budget, False),
        )
        got, want = cached.first(), reference.first()
        for _ in range(budget):
            torch.testing.assert_close(got, want, rtol=0, atol=atol)
            tokens = want.argmax(-1)
            assert torch.equal(got.argmax(-1), tokens)
            got, want = cached.next(tokens), reference.next(tokens)
