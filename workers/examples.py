"""One rendered task example and how it is put together, whatever the task: the token
sequence with its prompt, answer and segment spans, the codec that turns text pieces into
tokens, and the assembly of haystack filler, needles and question (:mod:`workers.tasks`
draws the content of each family)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from space.tasks import SEGMENTS
from workers.tokenizer import Tokenizer

Span = tuple[int, int]  # half-open [start, end) over the prompt


@dataclass(frozen=True, eq=False)
class Example:
    """One rendered example. ``tokens`` = prompt + answer (``len == length``).

    The answer always ends with ``CLOSE``; the scored part (:attr:`scored`) is the answer
    without that final marker: whether the model then stops is not scored (RULER-style),
    though training still teaches the marker.
    """

    tokens: np.ndarray  # (length,) token ids
    prompt_len: int
    answer: np.ndarray  # (length - prompt_len,) == tokens[prompt_len:]
    segments: dict[str, list[Span]]  # SEGMENTS -> spans over [0, prompt_len)
    task: str = ""
    depth: float = 0.0

    @property
    def prompt(self) -> np.ndarray:
        return self.tokens[: self.prompt_len]

    @property
    def scored(self) -> np.ndarray:
        """The answer tokens that are scored: all but the final closing marker."""
        return self.answer[:-1] if len(self.answer) > 1 else self.answer


def example_seed(seed: int, *keys: int) -> int:
    """A seed for one example, derived from a base seed and integer coordinates
    (length, depth index, sample ...): independent streams, same on every machine."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


# --------------------------------------------------------------------------- text pieces


class Codec:
    """Text pieces -> token arrays through one tokenizer, remembered (the same keys,
    digits and words come back at every training step)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.vocab = tokenizer.vocab
        self.dtype = tokenizer.token_dtype
        self._encode = lru_cache(maxsize=1 << 16)(self._encode_uncached)

    def _encode_uncached(self, text: str) -> np.ndarray:
        ids = self.tokenizer.encode(text)
        if len(ids) == 0:
            raise ValueError(f"the tokenizer encodes {text!r} to no token")
        return ids.astype(self.dtype)

    def text(self, text: str) -> np.ndarray:
        return self._encode(text)

    def marks(self, *tokens: int) -> np.ndarray:
        return np.array(tokens, dtype=self.dtype)


@lru_cache(maxsize=8)
def codec_for(tokenizer: Tokenizer) -> Codec:
    """The (remembered) codec of ``tokenizer``."""
    return Codec(tokenizer)


# --------------------------------------------------------------------------- assembly


def assemble(
    task: str,
    length: int,
    depth: float,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    codec: Codec,
    p: dict,
    needles: list[np.ndarray],
    offsets: np.ndarray,
    order: np.ndarray,
    *,
    needle_ids: list[int],
    question: np.ndarray,
    answer: np.ndarray,
    n_filler: int,
) -> Example:
    """Needles at their filler offsets in context order, then the question and answer."""
    filler = filler_window(filler_tokens, n_filler, rng, codec.vocab)
    parts: list[np.ndarray] = [codec.marks(codec.vocab.doc)]
    spans: dict[int, Span] = {}
    pos, prev = 1, 0
    for i in order:
        cut = int(offsets[i])
        parts.append(filler[prev:cut])
        pos += cut - prev
        parts.append(needles[i])
        spans[int(i)] = (pos, pos + len(needles[i]))
        pos += len(needles[i])
        prev = cut
    parts.append(filler[prev:])
    parts.append(question)
    prompt = np.concatenate(parts)
    needle_spans = sorted(spans[i] for i in needle_ids)
    return finish(
        task,
        length,
        depth,
        prompt,
        answer,
        int(p["begin_tokens"]),
        needle_spans,
        len(question),
        codec,
    )


def finish(
    task: str,
    length: int,
    depth: float,
    prompt: np.ndarray,
    answer: np.ndarray,
    begin_tokens: int,
    needle_spans: list[Span],
    question_len: int,
    codec: Codec,
) -> Example:
    tokens = np.concatenate([prompt, answer]).astype(codec.dtype)
    if len(tokens) != length:  # pragma: no cover - internal check
        raise RuntimeError(f"rendered {len(tokens)} tokens, expected {length}")
    prompt_len = len(prompt)
    return Example(
        tokens=tokens,
        prompt_len=prompt_len,
        answer=tokens[prompt_len:],
        segments=_segments(prompt_len, begin_tokens, needle_spans, question_len),
        task=task,
        depth=float(depth),
    )


def filler_window(filler_tokens: np.ndarray, n: int, rng: np.random.Generator, vocab) -> np.ndarray:
    if len(filler_tokens) < n:
        raise ValueError(f"filler has {len(filler_tokens)} tokens; this example needs {n}")
    start = int(rng.integers(0, len(filler_tokens) - n + 1))
    window = np.asarray(filler_tokens[start : start + n])
    bad = (window >= vocab.text_size) & (window != vocab.doc)
    if bad.any():
        raise ValueError(
            f"filler token {int(window[np.argmax(bad)])} is a reserved control token; "
            f"filler may hold only text and DOC={vocab.doc}"
        )
    return window


def _segments(
    prompt_len: int, begin_tokens: int, needle_spans: list[Span], query_len: int
) -> dict[str, list[Span]]:
    begin = (0, begin_tokens)
    end = (prompt_len - query_len, prompt_len)
    taken = [begin, *needle_spans, end]
    context: list[Span] = []
    cursor = 0
    for start, stop in taken:
        if start > cursor:
            context.append((cursor, start))
        cursor = max(cursor, stop)
    return {"begin": [begin], "needle": list(needle_spans), "context": context, "end": [end]}


def segment_labels(example: Example) -> np.ndarray:
    """(prompt_len,) int array: the index in SEGMENTS of each prompt position."""
    labels = np.full(example.prompt_len, -1, dtype=np.int64)
    for k, name in enumerate(SEGMENTS):
        for start, stop in example.segments[name]:
            labels[start:stop] = k
    if (labels < 0).any():  # pragma: no cover - segments are built to cover the prompt
        raise RuntimeError("segments do not cover the prompt")
    return labels
