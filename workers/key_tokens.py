"""The loss on the tokens that need long context (``key_token_bpb``), after LongPPL.

LongPPL (Fang et al., 2024) finds that perplexity over all tokens hardly tracks
long-context ability, because few tokens need the long context; the loss on those *key
tokens* does. It identifies them by the long-short difference (LSD): how much a token's
loss drops when the model sees the full context instead of a truncated one. Here the
model identifies its own key tokens (no reference model is needed, none is downloaded):

- windows of the validation text as :func:`workers.scores.bits_per_byte` reads them
  (``[doc]`` + ``seq_len`` text tokens, evenly spaced, the first target not scored);
- long loss: each target given the whole window before it;
- short loss: each target given only its last ``short_len / 2`` to ``short_len - 1`` text
  tokens (``short_len``: an eighth of ``seq_len``, even, by default): the window is cut into blocks of
  ``short_len / 2`` targets, and each block is predicted from a row that opens with
  ``doc`` and holds the block before it and itself;
- eligible targets: those past the first ``short_len`` positions, whose two contexts
  differ (for the others the difference is zero by construction);
- key tokens: the ``fraction`` of eligible targets with the largest LSD (short nats -
  long nats), ties in window and position order;
- ``key_token_bpb``: the long loss on the key tokens, bits per UTF-8 byte (per token
  without ``count_bytes``).

A model that draws nothing from far context has LSD about 0 everywhere: its key tokens
are then arbitrary and the score is close to its plain bits per byte; one that uses far
context well has key tokens it predicts much better with it, and a low score.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from workers.scores import position_nats
from workers.tokens import DOC

__all__ = ["KEY_TOKEN_FRACTION", "KeyTokens", "default_short_len", "key_tokens"]

# Share of the eligible targets taken as key tokens (score.key_token_fraction).
KEY_TOKEN_FRACTION = 0.1


@dataclass(frozen=True)
class KeyTokens:
    """The key tokens of a model on a text and the loss on them."""

    bpb: float  # long-context loss on the key tokens, bits per byte
    mask: np.ndarray  # (windows, seq_len - 1) bool: target j of window w is a key token
    lsd: np.ndarray  # (windows, seq_len - 1) short - long nats; NaN where not eligible
    starts: np.ndarray  # (windows,) each window's first text token


def default_short_len(seq_len: int) -> int:
    """The short context: an eighth of the window, rounded down to an even count, at least 2."""
    return max(2, seq_len // 8 // 2 * 2)


def _rows(tokens: np.ndarray, starts: np.ndarray, length: int, doc: int) -> np.ndarray:
    return np.stack(
        [
            np.concatenate([[doc], np.asarray(tokens[s : s + length], dtype=np.int64)])
            for s in starts
        ]
    )


@torch.no_grad()
def key_tokens(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    *,
    short_len: int | None = None,
    fraction: float = KEY_TOKEN_FRACTION,
    n_windows: int = 32,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    count_bytes: Callable[[np.ndarray], int] | None = None,
    doc: int = DOC,
) -> KeyTokens:
    """The key tokens of ``model`` on ``tokens`` in windows of ``seq_len`` (module
    docstring) and its bits per byte on them."""
    short_len = default_short_len(seq_len) if short_len is None else short_len
    half = short_len // 2
    if half < 1 or short_len % 2 or seq_len < 2 * short_len:
        raise ValueError(
            f"short_len {short_len} must be even, >= 2 and at most half of seq_len {seq_len}"
        )
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(tokens)
    if n < seq_len + 1:
        raise ValueError(f"{n} tokens cannot fill one window of {seq_len} + 1")
    starts = np.unique(np.round(np.linspace(0, n - seq_len, n_windows)).astype(np.int64))
    rows = _rows(tokens, starts, seq_len, doc)  # (W, seq_len + 1)
    was_training = model.training
    model.eval()
    try:
        long = np.concatenate(
            [
                position_nats(model, batch[:, :-1], batch[:, 2:])
                for batch in (
                    torch.from_numpy(rows[i : i + batch_size]).to(device)
                    for i in range(0, len(rows), batch_size)
                )
            ]
        )  # (W, seq_len - 1): target j is text position j + 2 (1-based)
        short = np.full_like(long, np.nan)
        # Block k holds text positions (k * half, (k + 1) * half]; from k = 2 on its row
        # [doc] + positions ((k - 1) * half, (k + 1) * half] gives each of its targets
        # half to 2 * half - 1 tokens of context.
        # A last block shorter than half (seq_len not a multiple of it) gets rows of its
        # own length: rows of one length go in one batch.
        by_length: dict[int, list[tuple[np.ndarray, int, int]]] = {}
        for w in range(len(rows)):
            k = 2
            while k * half < seq_len:
                end = min((k + 1) * half, seq_len)
                text = rows[w, 1 + (k - 1) * half : 1 + end]
                by_length.setdefault(len(text), []).append(
                    (np.concatenate([[doc], text]), w, k * half)
                )
                k += 1
        for chunks in by_length.values():
            for i in range(0, len(chunks), batch_size):
                part = chunks[i : i + batch_size]
                batch = torch.from_numpy(np.stack([c for c, _, _ in part])).to(device)
                nats = position_nats(model, batch[:, :-1], batch[:, 2:])
                for row, (chunk, w, before) in zip(nats, part, strict=True):
                    # The block: text positions before + 1 .. before + m, the row's last m
                    # targets; text position p is the window's target p - 2.
                    m = len(chunk) - 1 - half
                    short[w, before - 1 : before - 1 + m] = row[-m:]
    finally:
        model.train(was_training)
    lsd = short - long
    eligible = np.flatnonzero(~np.isnan(lsd.ravel()))
    take = max(1, int(round(fraction * len(eligible))))
    order = np.argsort(-lsd.ravel()[eligible], kind="stable")[:take]
    mask = np.zeros(lsd.size, dtype=bool)
    mask[eligible[order]] = True
    mask = mask.reshape(lsd.shape)
    targets = rows[:, 2:]
    if count_bytes is None:
        counted = int(mask.sum())
    else:
        counted = sum(count_bytes(t[m]) for t, m in zip(targets, mask, strict=True))
    bpb = float(long[mask].sum()) / counted / math.log(2) if counted else math.nan
    return KeyTokens(bpb=bpb, mask=mask, lsd=lsd, starts=starts)
