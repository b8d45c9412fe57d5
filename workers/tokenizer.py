"""Tokenizers: bytes (the default), a byte-level BPE trained on the corpus, or a local file.

Every tokenizer turns text into ids below ``vocab.text_size`` and never produces a
control token (:mod:`space.vocab`): task markers and the document separator are added by
the caller, around text encoded piece by piece. Answers are compared as text: a
tokenizer also turns ids back into *units*, the UTF-8 bytes of the text (0..255) with
each control token as ``256 + its offset``, so an answer means the same under every
tokenizer and two tokenizations of the same string compare equal.

Hugging Face ``tokenizers`` traps (DESIGN.md §7) handled here: the BPE trainer gets the
whole byte alphabet (``initial_alphabet=ByteLevel.alphabet()``), or bytes it never saw in
training could not be encoded; and a tokenizer's own special tokens (``<|endoftext|>``
...) are encoded as the plain text they spell (``encode_special_tokens``), so no corpus
text can smuggle one in.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from space.vocab import (
    BYTES,
    N_BYTE_TOKENS,
    N_CONTROL_TOKENS,
    Vocabulary,
    subword_vocabulary,
    tokenizer_file_path,
    tokenizer_file_text_size,
)

UNIT_CONTROL_BASE = N_BYTE_TOKENS  # a control token's unit is 256 + its offset


class TokenizerError(ValueError):
    """A tokenizer file that cannot be read or used."""


class Tokenizer(ABC):
    """Text <-> ids of one vocabulary. Subclasses encode text pieces and decode text runs."""

    kind: str
    vocab: Vocabulary

    @abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """Text -> int64 ids of text tokens only (no control token, no special token)."""

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    @abstractmethod
    def text_bytes(self, ids: Sequence[int]) -> bytes:
        """The UTF-8 bytes a run of text ids decodes to."""

    @abstractmethod
    def count_bytes(self, ids: np.ndarray) -> int:
        """UTF-8 bytes of the text ``ids`` stand for; control tokens count 0."""

    def units(self, ids: Sequence[int] | np.ndarray) -> list[int]:
        """Ids -> units: text as its bytes, each control token as ``256 + offset``."""
        out: list[int] = []
        run: list[int] = []
        base = self.vocab.text_size
        for t in np.asarray(ids, dtype=np.int64).tolist():
            if t < base:
                run.append(t)
                continue
            if run:
                out.extend(self.text_bytes(run))
                run = []
            out.append(UNIT_CONTROL_BASE + min(t - base, N_CONTROL_TOKENS))
        if run:
            out.extend(self.text_bytes(run))
        return out

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Readable text: text runs as UTF-8 (invalid bytes replaced), controls by name."""
        parts: list[str] = []
        run: list[int] = []
        for t in np.asarray(ids, dtype=np.int64).tolist():
            name = self.vocab.control_name(t)
            if name is None and t < self.vocab.text_size:
                run.append(t)
                continue
            if run:
                parts.append(self.text_bytes(run).decode("utf-8", errors="replace"))
                run = []
            parts.append(name or f"<T{t}>")
        if run:
            parts.append(self.text_bytes(run).decode("utf-8", errors="replace"))
        return "".join(parts)

    @property
    def token_dtype(self) -> np.dtype:
        """The smallest unsigned type that holds every id of the model's vocabulary."""
        return np.dtype(np.uint16) if self.vocab.size <= 1 << 16 else np.dtype(np.uint32)


class ByteTokenizer(Tokenizer):
    """One token per UTF-8 byte: ids 0..255 (the vocabulary of space.vocab.BYTES)."""

    kind = "bytes"
    vocab = BYTES

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def text_bytes(self, ids: Sequence[int]) -> bytes:
        return bytes(ids)

    def count_bytes(self, ids: np.ndarray) -> int:
        return int((np.asarray(ids) < N_BYTE_TOKENS).sum())

    def units(self, ids: Sequence[int] | np.ndarray) -> list[int]:
        # Bytes are their own units and the controls sit at 256 + offset already.
        return np.asarray(ids, dtype=np.int64).tolist()


class IdsOnlyTokenizer(Tokenizer):
    """Pre-tokenized ids of an unknown tokenizer: no text can be encoded or decoded.
    Scores per byte become per token (each id counts as one)."""

    kind = "none"

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab

    def encode(self, text: str) -> np.ndarray:
        raise TokenizerError(
            "the corpus is pre-tokenized ids without a tokenizer: no task text can be "
            "encoded (give data.tokenizer: {file: tokenizer.json})"
        )

    def text_bytes(self, ids: Sequence[int]) -> bytes:
        return " ".join(f"<T{i}>" for i in ids).encode()

    def count_bytes(self, ids: np.ndarray) -> int:
        return int((np.asarray(ids) < self.vocab.text_size).sum())


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: each byte as a printable character, and back."""
    from tokenizers.pre_tokenizers import ByteLevel

    # ByteLevel.alphabet() holds the 256 characters; their byte is the GPT-2 mapping.
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    decoder = {c: b for b, c in chars.items()}
    if set(decoder) != set(ByteLevel.alphabet()):  # pragma: no cover - library contract
        raise RuntimeError("tokenizers' ByteLevel alphabet is not GPT-2's byte mapping")
    return decoder


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizers.Tokenizer`` (a trained BPE or a local tokenizer.json)."""

    def __init__(self, tokenizer: object, vocab: Vocabulary, kind: str) -> None:
        self._tok = tokenizer
        self.vocab = vocab
        self.kind = kind
        # Special tokens in text are plain text (no corpus can produce <|endoftext|>).
        self._tok.encode_special_tokens = True
        self._special = {i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
        size = self._tok.get_vocab_size(with_added_tokens=True)
        if size > vocab.text_size:
            raise TokenizerError(
                f"tokenizer has {size} ids, more than the {vocab.text_size} its vocabulary "
                "was declared with"
            )
        self._byte_table = self._byte_level_table()
        if self._byte_table is not None:
            lengths = np.zeros(vocab.size, dtype=np.int64)
            for i, b in enumerate(self._byte_table):
                lengths[i] = len(b)
            self._byte_lengths = lengths
        else:
            self._byte_lengths = None

    def _byte_level_table(self) -> list[bytes] | None:
        """Each id's exact bytes when the tokenizer is byte-level (GPT-2 style), else None."""
        decoder = json.loads(self._tok.to_str()).get("decoder") or {}
        kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", [])}
        if "ByteLevel" not in kinds:
            return None
        table = _byte_decoder()
        out: list[bytes] = []
        for i in range(self.vocab.text_size):
            piece = self._tok.id_to_token(i)
            if piece is None or i in self._special:
                out.append(b"")
                continue
            if any(c not in table for c in piece):
                return None  # not a byte-level vocabulary after all
            out.append(bytes(table[c] for c in piece))
        return out

    @property
    def is_byte_level(self) -> bool:
        """GPT-2-style byte-level: every id stands for exact bytes, so text never takes
        more tokens than it has bytes."""
        return self._byte_table is not None

    @property
    def backend(self) -> object:
        """The wrapped ``tokenizers.Tokenizer``."""
        return self._tok

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encoded = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encoded]

    def text_bytes(self, ids: Sequence[int]) -> bytes:
        if self._byte_table is not None:
            return b"".join(self._byte_table[i] for i in ids)
        return self._tok.decode(list(ids), skip_special_tokens=True).encode("utf-8")

    def count_bytes(self, ids: np.ndarray) -> int:
        ids = np.asarray(ids, dtype=np.int64)
        if self._byte_lengths is not None:
            return int(self._byte_lengths[ids].sum())
        text = ids[ids < self.vocab.text_size]
        return len(self.text_bytes(text.tolist()))

    def save(self, path: str | os.PathLike[str]) -> None:
        self._tok.save(str(path))


def train_bpe(
    texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2, length: int | None = None
) -> HFTokenizer:
    """A byte-level BPE with at most ``vocab_size`` ids, trained on ``texts``.

    The trainer starts from all 256 bytes (any text stays encodable) and has no special
    tokens: the control tokens are the model's, above ``vocab_size``.
    """
    from tokenizers import Tokenizer as HFBackend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = HFBackend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer, length=length)
    return HFTokenizer(backend, subword_vocabulary(vocab_size), kind="bpe")


def load_tokenizer_file(
    path: str | os.PathLike[str], *, kind: str = "file", text_size: int | None = None
) -> HFTokenizer:
    """A local ``tokenizer.json`` (or a folder holding one). ``text_size`` fixes where the
    control tokens start (a trained BPE's declared size; default: the file's own ids).
    Raises TokenizerError naming the file when it does not parse."""
    from tokenizers import Tokenizer as HFBackend

    file = tokenizer_file_path(path)
    if text_size is None:
        try:
            text_size = tokenizer_file_text_size(file)
        except ValueError as err:
            raise TokenizerError(f"tokenizer {file}: {err}") from None
    try:
        backend = HFBackend.from_file(str(file))
    except Exception as err:  # the Rust side raises a bare Exception for a bad file
        raise TokenizerError(f"tokenizer {file}: does not parse ({err})") from None
    return HFTokenizer(backend, subword_vocabulary(text_size), kind=kind)


BYTE_TOKENIZER = ByteTokenizer()
