"""Synthetic long-context tasks (RULER's families), seeded and reproducible, in any vocabulary.

Every example is one token sequence of exactly ``length`` tokens::

    DOC  filler ... NEEDLE ... filler ... [gap: filler]  QUESTION  ANSWER
    |<-- begin -->|                                      |  end   |

Keys, values and words are text, encoded by the study's tokenizer piece by piece;
reserved control tokens (:mod:`space.vocab`) mark the structure around them, so no
filler text can be mistaken for a marker (CALIBRATION.md: plain-text markers are not
learnable by a tiny model within a CPU budget). Formats (``k`` a key, ``v`` a value):

- ``passkey`` / ``multikey`` / ``multivalue``: needles ``OPEN k v CLOSE``; the question
  is ``OPEN k`` (the start of the queried needle again), the answer each queried value
  followed by ``CLOSE``, in context order. ``multikey`` hides needles with distinct keys
  and asks for one; ``multivalue`` hides several values under one key and asks for all.
- ``multiquery``: needles with distinct keys as ``multikey``; the question asks several
  keys at once, ``QUERY k1 QUERY k2``, and the answer restates each asked needle in the
  order asked, ``OPEN k1 v1 CLOSE OPEN k2 v2 CLOSE``.
- ``vartrack``: statements ``OPEN name SEP rhs CLOSE`` forming chains ``X1 = 12345``,
  ``X2 = X1``, ... (in context order); the question ``QUERY 12345 SEP`` asks which names
  hold the value, the answer lists them in chain order, ``X1 SEP X2 SEP ... CLOSE``.
- ``passkey`` / ``multikey`` / ``multivalue`` / ``multiquery`` with ``prefix_distractors``:
  extra needles ``OPEN k' v' CLOSE`` whose key ``k'`` is the queried key with its last
  character changed (another letter, for single-letter keys); never asked.
- ``mqar``, ``aliaskey``, ``selcopy``: :mod:`workers.recall_tasks`.
- ``commonwords``: after the Begin segment, ``SEP`` and a list of words (each `` word``, a
  space then the word); a few common words occur ``count_ratio`` times as often as the
  most frequent other word. The question is ``QUERY``; the answer lists the common words in
  order of first appearance, ``word1 SEP word2 ... CLOSE``. No needle, hence no depth.

The last ``query_gap_tokens`` of the body are always filler, so a needle never sits
right before the question (CALIBRATION.md: such a needle was read as part of the query
and missed even at the training length). ``depth`` is the first queried needle's
relative position within the filler region where needles may go: 0 right after the
Begin segment, 1 right before the gap.

Segments (for the attention-mass analysis) cover the prompt exactly: ``begin`` = the
first ``begin_tokens`` tokens, ``needle`` = the queried needles (statements, common
words), ``end`` = the question, ``context`` = everything else.

Under the byte tokenizer, the needle tasks render exactly the examples of the byte-only
version of this module (same random draws, same tokens): calibrated results stay valid.
"""

from __future__ import annotations

import numpy as np

from space.tasks import (  # noqa: F401 - re-exported: the task rules live in space/
    DEPTHLESS_TASKS,
    DIFFICULTY,
    NEEDLE_TASKS,
    SEGMENTS,
    TASK_DEFAULTS,
    TASKS,
    WORDS,
    TokenBounds,
    answer_len,
    key_code,
    min_length,
    needle_count,
    queried_count,
    task_params,
)
from workers.examples import Codec, Example, Span, assemble, codec_for, filler_window, finish
from workers.recall_tasks import RECALL_TASKS, render_recall
from workers.tokenizer import BYTE_TOKENIZER, Tokenizer
from workers.tokens import TOKEN_DTYPE

KEY_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8).astype(TOKEN_DTYPE)
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_UPPER = _LOWER.upper()
DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8).astype(TOKEN_DTYPE)
HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).astype(TOKEN_DTYPE)

# --------------------------------------------------------------------------- text pieces


def token_bounds(tokenizer: Tokenizer) -> TokenBounds:
    """The most tokens ``tokenizer`` spends on a key letter, a word key, a list item and a
    value (values are measured per character: a byte-level tokenizer never spends more
    than one token on an ASCII character; others may add a word-start token), an mqar
    key code, an upper-case word key and a prefix distractor's key."""
    codec = codec_for(tokenizer)
    letter = max(len(codec.text(chr(int(c)))) for c in KEY_ALPHABET)
    word = max(len(codec.text(w)) for w in WORDS)
    item = max(len(codec.text(" " + w)) for w in WORDS)
    byte_level = tokenizer.kind == "bytes" or getattr(tokenizer, "is_byte_level", False)
    return TokenBounds(
        letter=letter,
        word=word,
        item=item,
        value_extra=0 if byte_level else 1,
        code=max(len(codec.text(key_code(i))) for i in range(26 * 26)),
        upper_word=max(len(codec.text(w.upper())) for w in WORDS),
        near_word=max(len(codec.text(w[:-1] + c)) for w in WORDS for c in _LOWER + _UPPER),
    )


def _keys(rng: np.random.Generator, n: int, distinct: bool, kind: str) -> list[str]:
    """``n`` key texts: distinct (multikey) or one key repeated (passkey, multivalue)."""
    if kind == "letter":
        if distinct:
            codes = rng.choice(KEY_ALPHABET, size=n, replace=False)
        else:
            codes = np.repeat(rng.choice(KEY_ALPHABET), n)
        return [chr(int(c)) for c in codes]
    if distinct:
        picks = rng.choice(len(WORDS), size=n, replace=False)
    else:
        picks = np.repeat(rng.choice(len(WORDS)), n)
    return [WORDS[int(i)] for i in picks]


def _near_keys(rng: np.random.Generator, keys: list[str], n: int, kind: str) -> list[str]:
    """``n`` distinct keys sharing all but the last character of ``keys[0]`` and equal to
    none of ``keys`` (RULER-style distractors); other letters for single-letter keys."""
    if kind == "letter":
        free = [c for c in _UPPER if c not in keys]
        return [free[int(i)] for i in rng.choice(len(free), size=n, replace=False)]
    stem, last = keys[0][:-1], keys[0][-1]
    lower = [stem + c for c in _LOWER if c != last and stem + c not in keys]
    # Upper-case last letters only when a collision leaves too few lower-case ones.
    pool = lower if len(lower) >= n else lower + [stem + c for c in _UPPER]
    return [pool[int(i)] for i in rng.choice(len(pool), size=n, replace=False)]


def _values(rng: np.random.Generator, n: int, value_len: int, kind: str) -> list[str]:
    alphabet = DIGITS if kind == "digits" else HEX_DIGITS
    chars = rng.choice(alphabet, size=(n, value_len))
    out = []
    for row in chars:
        text = "".join(chr(int(c)) for c in row)
        if kind == "uuid":  # groups of 4 hex digits joined by dashes, like a UUID
            text = "-".join(text[i : i + 4] for i in range(0, len(text), 4))
        out.append(text)
    return out


# --------------------------------------------------------------------------- rendering


def render(
    task: str,
    length: int,
    depth: float,
    seed: int,
    filler_tokens: np.ndarray,
    *,
    tokenizer: Tokenizer | None = None,
    **task_params_: int | str,
) -> Example:
    """Render one example of ``task`` with exactly ``length`` tokens; same seed, same example.

    ``filler_tokens`` is a corpus token array of ``tokenizer`` (text and DOC only; the
    byte tokenizer by default); a random window of it becomes the haystack. Raises
    ValueError when ``length`` is too short for the task, the filler is too short, or it
    holds task markers.
    """
    return render_with_rng(
        task,
        length,
        depth,
        np.random.default_rng(seed),
        filler_tokens,
        tokenizer=tokenizer,
        **task_params_,
    )


def render_with_rng(
    task: str,
    length: int,
    depth: float,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    *,
    tokenizer: Tokenizer | None = None,
    **task_params_: int | str,
) -> Example:
    """:func:`render` drawing from ``rng`` (used for training batches)."""
    p = task_params(task, **task_params_)
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    codec = codec_for(tokenizer or BYTE_TOKENIZER)
    if task in NEEDLE_TASKS or task == "multiquery":
        return _render_needles(task, length, depth, rng, filler_tokens, codec, p)
    if task in RECALL_TASKS:
        return render_recall(task, length, depth, rng, filler_tokens, codec, p)
    if task == "vartrack":
        return _render_vartrack(length, depth, rng, filler_tokens, codec, p)
    return _render_commonwords(length, rng, filler_tokens, codec, p)


def _too_short(task: str, length: int, p: dict) -> ValueError:
    return ValueError(
        f"length {length} is too short for task {task!r}: need >= {min_length(task, **p)} "
        "(byte tokens; fewer may do for a subword tokenizer)"
    )


def _render_needles(
    task: str,
    length: int,
    depth: float,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    codec: Codec,
    p: dict,
) -> Example:
    vocab = codec.vocab
    n_needles = needle_count(task, p)
    n_near = int(p["prefix_distractors"])
    n_real = n_needles - n_near  # the needles of the task; prefix distractors come last
    # Keys and values. Needle 0 is the queried one placed at `depth`.
    keys = _keys(rng, n_real, distinct=task in ("multikey", "multiquery"), kind=p["key_kind"])
    values = _values(rng, n_real, int(p["value_len"]), p["value_kind"])
    if n_near:
        keys += _near_keys(rng, keys, n_near, p["key_kind"])
        values += _values(rng, n_near, int(p["value_len"]), p["value_kind"])
    key_ids = [codec.text(k) for k in keys]
    value_ids = [codec.text(v) for v in values]
    needles = [
        np.concatenate(
            [codec.marks(vocab.open), key_ids[i], value_ids[i], codec.marks(vocab.close)]
        )
        for i in range(n_needles)
    ]
    queried = list(range(n_real)) if task == "multivalue" else [0]
    asked: list[int] = []
    if task == "multiquery":
        others = rng.choice(np.arange(1, n_real), size=int(p["n_queries"]) - 1, replace=False)
        queried = [0, *(int(i) for i in others)]
        asked = [queried[int(i)] for i in rng.permutation(len(queried))]
        question = np.concatenate(
            [np.concatenate([codec.marks(vocab.query), key_ids[i]]) for i in asked]
        )
    else:
        question = np.concatenate([codec.marks(vocab.open), key_ids[0]])

    def answer_for(order: np.ndarray) -> np.ndarray:
        if task == "multiquery":  # each asked needle again, in the order asked
            return np.concatenate([needles[i] for i in asked])
        in_context = [int(i) for i in order if int(i) in queried]
        return np.concatenate([np.append(value_ids[i], vocab.close) for i in in_context])

    if task == "multiquery":
        n_answer = sum(len(needles[i]) for i in asked)
    else:
        n_answer = sum(len(value_ids[i]) + 1 for i in queried)
    prompt_len = length - n_answer
    n_filler = prompt_len - 1 - len(question) - sum(len(n) for n in needles)
    lo = int(p["begin_tokens"]) - 1
    hi = n_filler - int(p["query_gap_tokens"])
    if hi < lo:
        raise _too_short(task, length, p)

    # Filler offsets (number of filler tokens before a needle) where needles may go.
    offsets = np.empty(n_needles, dtype=np.int64)
    offsets[0] = lo + int(round(depth * (hi - lo)))
    offsets[1:] = rng.integers(lo, hi + 1, size=n_needles - 1)
    # Context order; needles at the same offset are adjacent, in random order.
    order = np.lexsort((rng.permutation(n_needles), offsets))
    return assemble(
        task,
        length,
        depth,
        rng,
        filler_tokens,
        codec,
        p,
        needles,
        offsets,
        order,
        needle_ids=queried,
        question=question,
        answer=answer_for(order),
        n_filler=n_filler,
    )


def _render_vartrack(
    length: int,
    depth: float,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    codec: Codec,
    p: dict,
) -> Example:
    vocab = codec.vocab
    n_vars, n_chains = int(p["n_vars"]), int(p["n_chains"])
    names = _keys(rng, n_vars * n_chains, distinct=True, kind=p["key_kind"])
    values: list[str] = []
    while len(values) < n_chains:  # one distinct value per chain
        (v,) = _values(rng, 1, int(p["value_len"]), "digits")
        if v not in values:
            values.append(v)
    name_ids = [codec.text(n) for n in names]
    # Statement (c, h): chain c, hop h; the name of (c, h) is names[c * n_vars + h].
    statements, chain_of, hop_of = [], [], []
    for c in range(n_chains):
        for h in range(n_vars):
            rhs = codec.text(values[c]) if h == 0 else name_ids[c * n_vars + h - 1]
            statements.append(
                np.concatenate(
                    [
                        codec.marks(vocab.open),
                        name_ids[c * n_vars + h],
                        codec.marks(vocab.sep),
                        rhs,
                        codec.marks(vocab.close),
                    ]
                )
            )
            chain_of.append(c)
            hop_of.append(h)
    question = np.concatenate(
        [codec.marks(vocab.query), codec.text(values[0]), codec.marks(vocab.sep)]
    )
    answer_parts = []
    for h in range(n_vars):
        answer_parts.append(name_ids[h])
        answer_parts.append(codec.marks(vocab.sep if h < n_vars - 1 else vocab.close))
    answer = np.concatenate(answer_parts)

    prompt_len = length - len(answer)
    n_filler = prompt_len - 1 - len(question) - sum(len(s) for s in statements)
    lo = int(p["begin_tokens"]) - 1
    hi = n_filler - int(p["query_gap_tokens"])
    if hi < lo:
        raise _too_short("vartrack", length, p)
    # Chain 0 (queried) starts at `depth` and continues after it; the others anywhere.
    offsets = np.empty(len(statements), dtype=np.int64)
    start = lo + int(round(depth * (hi - lo)))
    offsets[:n_vars] = np.concatenate([[start], np.sort(rng.integers(start, hi + 1, n_vars - 1))])
    for c in range(1, n_chains):
        offsets[c * n_vars : (c + 1) * n_vars] = np.sort(rng.integers(lo, hi + 1, n_vars))
    # Context order: by offset; at one offset, chains in random order, hops in order.
    chain_rank = rng.permutation(n_chains)[np.array(chain_of)]
    order = np.lexsort((np.array(hop_of), chain_rank, offsets))
    return assemble(
        "vartrack",
        length,
        depth,
        rng,
        filler_tokens,
        codec,
        p,
        statements,
        offsets,
        order,
        needle_ids=list(range(n_vars)),
        question=question,
        answer=answer,
        n_filler=n_filler,
    )


def _render_commonwords(
    length: int,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    codec: Codec,
    p: dict,
) -> Example:
    vocab = codec.vocab
    n_common, ratio = int(p["n_common"]), int(p["count_ratio"])
    picks = rng.permutation(len(WORDS))
    common = [int(i) for i in picks[:n_common]]
    uncommon = [int(i) for i in picks[n_common:]]
    items = {i: codec.text(" " + WORDS[i]) for i in picks.tolist()}
    question = codec.marks(vocab.query)
    # The answer's length does not depend on the list's order.
    n_answer = sum(len(items[i]) for i in common) + n_common
    prompt_len = length - n_answer
    begin = int(p["begin_tokens"])
    budget = prompt_len - begin - 1 - len(question)  # tokens for the list after its SEP
    common_cost = sum(len(items[i]) for i in common)
    if budget < ratio * common_cost:
        raise _too_short("commonwords", length, p)
    # Each other word occurs at most `most` times, each common word ratio * most times;
    # `most` grows with the length once every other word is in the list.
    mean_item = float(np.mean([len(items[i]) for i in uncommon]))
    most = 1
    while ratio * (most + 1) * common_cost <= budget and (
        budget - ratio * most * common_cost
    ) / mean_item > most * len(uncommon):
        most += 1
    words = [i for i in common for _ in range(ratio * most)]
    left = budget - ratio * most * common_cost
    for _ in range(most):
        for i in uncommon:
            if len(items[i]) <= left:
                words.append(i)
                left -= len(items[i])
    words = [words[int(k)] for k in rng.permutation(len(words))]
    # Tokens the list could not use lengthen the Begin segment's filler.
    filler = filler_window(filler_tokens, begin - 1 + left, rng, vocab)

    parts = [codec.marks(vocab.doc), filler, codec.marks(vocab.sep)]
    needle_spans: list[Span] = []
    pos = begin + left + 1
    first_seen: list[int] = []
    for i in words:
        parts.append(items[i])
        if i in common:
            needle_spans.append((pos, pos + len(items[i])))
            if i not in first_seen:
                first_seen.append(i)
        pos += len(items[i])
    parts.append(question)
    prompt = np.concatenate(parts)
    answer_parts = []
    for k, i in enumerate(first_seen):
        answer_parts.append(items[i])
        answer_parts.append(codec.marks(vocab.sep if k < n_common - 1 else vocab.close))
    answer = np.concatenate(answer_parts)
    return finish(
        "commonwords", length, 0.0, prompt, answer, begin, needle_spans, len(question), codec
    )
