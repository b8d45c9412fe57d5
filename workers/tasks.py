"""Synthetic long-context retrieval tasks (RULER-style), seeded and reproducible.

Every example is one token sequence of exactly ``length`` tokens::

    DOC  filler ... NEEDLE ... filler ... [gap: filler]  QUERY  ANSWER
    |<-- begin -->|                                       |end |

- a needle is ``[NEEDLE_OPEN, key, d1 .. dN, NEEDLE_CLOSE]``: one key byte (an
  upper-case ASCII letter) and a value of ``value_len`` ASCII digits;
- the query is ``[NEEDLE_OPEN, key]``: the start of the queried needle again, so
  the answer is the needle's continuation, its digits then ``NEEDLE_CLOSE``;
- reserved control tokens mark needles and the query (CALIBRATION.md: plain-text
  markers are not learnable by a tiny model within a CPU budget);
- the last ``query_gap_tokens`` of the body are always filler, so a needle never
  sits right before the query (CALIBRATION.md: such a needle was read as part of
  the query and missed even at the training length).

``depth`` is the queried needle's relative position within the filler region
where needles may go: 0 right after the Begin segment, 1 right before the gap.

Tasks:

- ``passkey``: one needle, queried.
- ``multikey`` (RULER niah_multikey): ``n_needles`` needles with distinct keys;
  the one at ``depth`` is queried, the others are distractors at random depths.
- ``multivalue`` (RULER niah_multivalue): ``n_values`` needles with the same key
  and different values, one at ``depth`` and the others at random depths; the
  answer is every value, in context order, each followed by ``NEEDLE_CLOSE``.

Segments (for the attention-mass analysis) cover the prompt exactly: ``begin``
= the first ``begin_tokens`` tokens, ``needle`` = the queried needle(s), ``end``
= the query block, ``context`` = everything else (filler and distractors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from space.tasks import (  # noqa: F401 - re-exported: the task rules live in space/
    SEGMENTS,
    TASK_DEFAULTS,
    TASKS,
    answer_len,
    min_length,
    needle_count,
    queried_count,
    task_params,
)
from workers.tokens import DOC, N_BYTE_TOKENS, NEEDLE_CLOSE, NEEDLE_OPEN, TOKEN_DTYPE

KEY_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8).astype(TOKEN_DTYPE)
DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8).astype(TOKEN_DTYPE)

Span = tuple[int, int]  # half-open [start, end) over the prompt


@dataclass(frozen=True, eq=False)
class Example:
    """One rendered example. ``tokens`` = prompt + answer (``len == length``)."""

    tokens: np.ndarray  # (length,) uint16
    prompt_len: int
    answer: np.ndarray  # (length - prompt_len,) uint16 == tokens[prompt_len:]
    segments: dict[str, list[Span]]  # SEGMENTS -> spans over [0, prompt_len)
    task: str = ""
    depth: float = 0.0

    @property
    def prompt(self) -> np.ndarray:
        return self.tokens[: self.prompt_len]


def example_seed(seed: int, *keys: int) -> int:
    """A seed for one example, derived from a base seed and integer coordinates
    (length, depth index, sample ...): independent streams, same on every machine."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def render(
    task: str,
    length: int,
    depth: float,
    seed: int,
    filler_tokens: np.ndarray,
    **task_params_: int,
) -> Example:
    """Render one example of ``task`` with exactly ``length`` tokens; same seed, same example.

    ``filler_tokens`` is a corpus token array (bytes and DOC only); a random window
    of it becomes the haystack. Raises ValueError when ``length`` is below
    :func:`min_length`, the filler is too short, or it holds task markers.
    """
    return render_with_rng(
        task, length, depth, np.random.default_rng(seed), filler_tokens, **task_params_
    )


def render_with_rng(
    task: str,
    length: int,
    depth: float,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    **task_params_: int,
) -> Example:
    """:func:`render` drawing from ``rng`` (used for training batches)."""
    p = task_params(task, **task_params_)
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    shortest = min_length(task, **task_params_)
    if length < shortest:
        raise ValueError(f"length {length} is too short for task {task!r}: need >= {shortest}")

    n_needles = needle_count(task, p)
    value_len = p["value_len"]
    needle_len = value_len + 3

    # Keys and values. Needle 0 is the queried one placed at `depth`.
    if task == "multikey":
        keys = rng.choice(KEY_ALPHABET, size=n_needles, replace=False)
    else:
        keys = np.repeat(rng.choice(KEY_ALPHABET), n_needles)
    values = rng.choice(DIGITS, size=(n_needles, value_len))
    queried = np.arange(n_needles) if task == "multivalue" else np.array([0])
    needles = [
        np.concatenate([[NEEDLE_OPEN, keys[i]], values[i], [NEEDLE_CLOSE]]).astype(TOKEN_DTYPE)
        for i in range(n_needles)
    ]
    query = np.array([NEEDLE_OPEN, keys[0]], dtype=TOKEN_DTYPE)

    n_answer = len(queried) * (value_len + 1)
    prompt_len = length - n_answer
    n_filler = prompt_len - 1 - len(query) - n_needles * needle_len

    # Filler offsets (number of filler tokens before a needle) where needles may go.
    lo = p["begin_tokens"] - 1
    hi = n_filler - p["query_gap_tokens"]
    offsets = np.empty(n_needles, dtype=np.int64)
    offsets[0] = lo + int(round(depth * (hi - lo)))
    offsets[1:] = rng.integers(lo, hi + 1, size=n_needles - 1)
    # Context order; needles at the same offset are adjacent, in random order.
    order = np.lexsort((rng.permutation(n_needles), offsets))

    filler = _filler_window(filler_tokens, n_filler, rng)

    parts: list[np.ndarray] = [np.array([DOC], dtype=TOKEN_DTYPE)]
    spans: dict[int, Span] = {}
    pos, prev = 1, 0
    for i in order:
        cut = int(offsets[i])
        parts.append(filler[prev:cut])
        pos += cut - prev
        parts.append(needles[i])
        spans[int(i)] = (pos, pos + needle_len)
        pos += needle_len
        prev = cut
    parts.append(filler[prev:])
    parts.append(query)
    prompt = np.concatenate(parts)
    is_queried = set(queried.tolist())
    answer = np.concatenate(
        [np.append(values[i], NEEDLE_CLOSE) for i in order if int(i) in is_queried]
    ).astype(TOKEN_DTYPE)
    tokens = np.concatenate([prompt, answer]).astype(TOKEN_DTYPE)
    if len(prompt) != prompt_len or len(tokens) != length:  # pragma: no cover - internal check
        raise RuntimeError(f"rendered {len(tokens)} tokens, expected {length}")

    needle_spans = sorted(spans[int(i)] for i in queried)
    segments = _segments(prompt_len, p["begin_tokens"], needle_spans, len(query))
    return Example(
        tokens=tokens,
        prompt_len=prompt_len,
        answer=answer,
        segments=segments,
        task=task,
        depth=float(depth),
    )


def _filler_window(filler_tokens: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(filler_tokens) < n:
        raise ValueError(f"filler has {len(filler_tokens)} tokens; this example needs {n}")
    start = int(rng.integers(0, len(filler_tokens) - n + 1))
    window = np.asarray(filler_tokens[start : start + n]).astype(TOKEN_DTYPE)
    bad = (window >= N_BYTE_TOKENS) & (window != DOC)
    if bad.any():
        raise ValueError(
            f"filler token {int(window[np.argmax(bad)])} is a reserved control token; "
            f"filler may hold only bytes and DOC={DOC}"
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
