"""Byte-level encoding: text as its raw bytes, one token per byte (nothing to download).

The token ids (bytes, then the reserved control tokens) are defined in
:mod:`space.vocab`; this module turns text into token arrays and back.
"""

from __future__ import annotations

import numpy as np

from space.vocab import (  # noqa: F401 - re-exported: the workers' view of the vocabulary
    DOC,
    N_BYTE_TOKENS,
    NEEDLE_CLOSE,
    NEEDLE_OPEN,
    PAD,
    SPECIAL_NAMES,
    VOCAB_SIZE,
)

TOKEN_DTYPE = np.uint16


def encode(text: str | bytes) -> np.ndarray:
    """Text (UTF-8) or raw bytes -> token array (uint16), one token per byte."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, dtype=np.uint8).astype(TOKEN_DTYPE)


def decode(tokens: np.ndarray | list[int]) -> str:
    """Token array -> readable text. Bytes are decoded as UTF-8 (invalid sequences
    replaced); control tokens are shown by name, e.g. ``<OPEN>``."""
    out: list[str] = []
    run = bytearray()
    for t in np.asarray(tokens, dtype=np.int64).tolist():
        if 0 <= t < N_BYTE_TOKENS:
            run.append(t)
            continue
        if run:
            out.append(run.decode("utf-8", errors="replace"))
            run.clear()
        out.append(SPECIAL_NAMES.get(t, f"<T{t}>"))
    if run:
        out.append(run.decode("utf-8", errors="replace"))
    return "".join(out)
