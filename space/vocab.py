"""The byte-level vocabulary's layout: 256 byte values, then a few reserved control tokens.

Pure constants (no numpy, no torch): the schema needs the vocabulary size to build a model
shape, and the workers need the token ids to render tasks. Control tokens live above the
byte range, so no text can ever produce them: the needle and query markers of the retrieval
tasks are unambiguous (CALIBRATION.md: a tiny model cannot learn to find plain-text markers
within the budget, but it does learn reserved control tokens).
"""

from __future__ import annotations

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
