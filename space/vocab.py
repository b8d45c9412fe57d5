"""The model's vocabulary: the tokenizer's text tokens, then a few reserved control tokens.

Pure (no numpy, no torch): the schema needs the vocabulary size to build a model shape
without loading a tokenizer, and the workers need the control token ids to render tasks.

Control tokens live above every id the tokenizer can produce, so no text can ever
produce them: the markers of the retrieval tasks are unambiguous (CALIBRATION.md: a tiny
model cannot learn to find plain-text markers within the budget, but it does learn
reserved control tokens), and a document separator in the corpus text stays text.

- bytes (the default): 256 byte values, then the controls at 256.. : 264 in all. These
  ids are fixed forever; every byte-level checkpoint and candidate id depends on them.
- any other tokenizer with ``text_size`` ids (0 .. text_size - 1): the controls at
  ``text_size ..``, and the whole padded up to a multiple of 64 (an embedding table of
  that size is friendlier to matrix kernels; the padding rows are never targets).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

N_BYTE_TOKENS = 256

# Offsets of the control tokens above the text tokens. The order is part of the format:
# a byte-level model's ids are 256 + offset.
PAD_OFFSET = 0  # padding; never in a corpus or a task example
DOC_OFFSET = 1  # document separator: joins corpus documents and begins each task example
OPEN_OFFSET = 2  # opens a needle (a key and its value); also the query of the needle tasks
CLOSE_OFFSET = 3  # closes a needle, and ends each value of an answer
QUERY_OFFSET = 4  # introduces each item of a question (multi-query, variable tracking, ...)
SEP_OFFSET = 5  # separates the items of a list (names in an answer, name = value)
# Offsets 6 and 7 are reserved and unused, so that a new marker does not change the
# vocabulary size (and with it every model shape and checkpoint).
N_CONTROL_TOKENS = 8

CONTROL_NAMES: dict[int, str] = {
    PAD_OFFSET: "<PAD>",
    DOC_OFFSET: "<DOC>",
    OPEN_OFFSET: "<OPEN>",
    CLOSE_OFFSET: "<CLOSE>",
    QUERY_OFFSET: "<QUERY>",
    SEP_OFFSET: "<SEP>",
}

# A multiple of this for the model vocabulary of non-byte tokenizers.
VOCAB_MULTIPLE = 64


@dataclass(frozen=True)
class Vocabulary:
    """Where the text tokens end and the control tokens are, and the model's table size."""

    text_size: int  # ids 0 .. text_size - 1 are the tokenizer's (text) tokens
    size: int  # the model's embedding rows: text, controls, padding

    def __post_init__(self) -> None:
        if self.text_size < 1 or self.size < self.text_size + N_CONTROL_TOKENS:
            raise ValueError(
                f"vocabulary of {self.size} cannot hold {self.text_size} text tokens "
                f"and {N_CONTROL_TOKENS} control tokens"
            )

    def control(self, offset: int) -> int:
        return self.text_size + offset

    @property
    def pad(self) -> int:
        return self.text_size + PAD_OFFSET

    @property
    def doc(self) -> int:
        return self.text_size + DOC_OFFSET

    @property
    def open(self) -> int:
        return self.text_size + OPEN_OFFSET

    @property
    def close(self) -> int:
        return self.text_size + CLOSE_OFFSET

    @property
    def query(self) -> int:
        return self.text_size + QUERY_OFFSET

    @property
    def sep(self) -> int:
        return self.text_size + SEP_OFFSET

    def control_name(self, token: int) -> str | None:
        """``<DOC>`` etc. for a control token, None for a text token."""
        offset = token - self.text_size
        if 0 <= offset < N_CONTROL_TOKENS:
            return CONTROL_NAMES.get(offset, f"<CONTROL{offset}>")
        return None


def padded_size(text_size: int) -> int:
    """The model vocabulary of a non-byte tokenizer: text + controls, to a multiple of 64."""
    need = text_size + N_CONTROL_TOKENS
    return -(-need // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


BYTES = Vocabulary(text_size=N_BYTE_TOKENS, size=N_BYTE_TOKENS + N_CONTROL_TOKENS)


def subword_vocabulary(text_size: int) -> Vocabulary:
    """The vocabulary of a tokenizer with ``text_size`` ids (BPE, a tokenizer.json, ...)."""
    return Vocabulary(text_size=text_size, size=padded_size(text_size))


TOKENIZER_FILE = "tokenizer.json"


def tokenizer_file_path(path: str | os.PathLike[str]) -> Path:
    """A ``tokenizer.json``, or the one inside a tokenizer folder."""
    p = Path(os.fspath(path)).expanduser()
    return p / TOKENIZER_FILE if p.is_dir() else p


def tokenizer_file_text_size(path: str | os.PathLike[str]) -> int:
    """How many ids a Hugging Face ``tokenizer.json`` produces: one more than its largest
    id (model vocabulary and added tokens). Reads the JSON only; raises ValueError naming
    the file and what is wrong with it."""
    p = tokenizer_file_path(path)
    try:
        stat = p.stat()
    except OSError:
        where = f"{path} holds no {TOKENIZER_FILE}" if Path(path).is_dir() else f"no such file: {p}"
        raise ValueError(where) from None
    return _text_size(str(p.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _text_size(path: str, size: int, mtime_ns: int) -> int:
    del size, mtime_ns  # the cache key: a changed file is read again
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a tokenizer.json ({err})") from None
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):
        ids = [int(i) for i in vocab.values() if isinstance(i, int)]
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], ids are positions
        ids = [len(vocab) - 1] if vocab else []
    else:
        raise ValueError(f"{path}: not a tokenizer.json (no model.vocab)")
    for added in data.get("added_tokens") or []:
        if isinstance(added, dict) and isinstance(added.get("id"), int):
            ids.append(added["id"])
    if not ids:
        raise ValueError(f"{path}: the tokenizer's vocabulary is empty")
    return max(ids) + 1


# The byte vocabulary's ids, as constants (the byte path and its tests use them directly).
PAD = BYTES.pad
DOC = BYTES.doc
NEEDLE_OPEN = BYTES.open
NEEDLE_CLOSE = BYTES.close
QUERY = BYTES.query
SEP = BYTES.sep
VOCAB_SIZE = BYTES.size

SPECIAL_NAMES: dict[int, str] = {BYTES.control(k): v for k, v in CONTROL_NAMES.items()}
