"""The byte-level vocabulary: 256 byte values, then a few reserved control tokens.

Text is encoded as its raw bytes (no tokenizer, nothing to download). Control
tokens live above the byte range, so no text can ever produce them: the needle
and query markers of the retrieval tasks are unambiguous (CALIBRATION.md: a
tiny model cannot learn to find plain-text markers within the budget, but it
does learn reserved control tokens).
"""

from __future__ import annotations

import numpy as np

N_BYTE_TOKENS = 256

PAD = 256  # padding; never in a corpus or a task example
DOC = 257  # document separator: joins corpus documents and begins each task example
NEEDLE_OPEN = 258  # opens a needle; also opens the query (the answer is the needle's rest)
NEEDLE_CLOSE = 259  # closes a needle, and ends each value of an answer

# Tokens 260.. are reserved and unused, so that a new marker does not change the
# vocabulary size (and with it every model shape and checkpoint).
VOCAB_SIZE = 264

SPECIAL_NAMES: dict[int, str] = {
    PAD: "<PAD>",
    DOC: "<DOC>",
    NEEDLE_OPEN: "<OPEN>",
    NEEDLE_CLOSE: "<CLOSE>",
}

# Smallest token that a corpus may not contain (only bytes, PAD and DOC may appear in text).
FIRST_TASK_TOKEN = NEEDLE_OPEN

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
