"""Associative-recall and copying families, seeded and reproducible, in any vocabulary.

The rules (parameters, difficulty, lengths) are in :mod:`space.tasks`; the example format
and its assembly in :mod:`workers.examples`, as for RULER's families in
:mod:`workers.tasks`. Formats (``k`` a key, ``v`` a value of ``value_len`` digits):

- ``mqar`` (Zoology's multi-query associative recall): one dense block
  ``OPEN k1 v1 k2 v2 ... kN vN CLOSE`` of ``n_pairs`` pairs with distinct two-letter keys
  drawn from the first ``key_vocab`` codes (:func:`space.tasks.key_code`), placed at
  ``depth``; the question asks ``n_queries`` of them, ``QUERY ka QUERY kb``, and the answer
  is their values in the order asked, ``va SEP vb CLOSE``. A larger ``n_pairs`` asks the
  model to hold more associations (Zoology: the gap between attention and fixed-state
  mixers grows with it).
- ``aliaskey`` (non-literal retrieval, after NoLiMa): needles ``OPEN K v CLOSE`` with
  upper-case keys and bindings ``OPEN a SEP K CLOSE`` naming each key by a lower-case
  alias word; the question is ``QUERY a`` and the answer ``v CLOSE``. The question's text
  (a lower-case word) shares no token with the needle's (upper-case key, digits): the
  model must go from the alias to the key, then from the key to the value. The queried
  needle sits at ``depth``; its binding and the other needles and bindings anywhere.
- ``selcopy`` (MAD's selective copying): ``n_items`` items ``SEP v`` scattered over the
  haystack; the question is ``QUERY`` and the answer every value in context order,
  ``v1 SEP v2 ... CLOSE``. No depth.
- ``fuzzyrecall`` (after MAD's noisy and fuzzy in-context recall): needles
  ``OPEN K v CLOSE`` with distinct keys of ``key_len`` upper-case letters; the question is
  ``QUERY K'``, where ``K'`` is the asked key with ``noise_chars`` letters (at distinct
  positions) each replaced by another letter, and the answer ``v CLOSE``. Every other key
  differs from the asked one in more than ``2 x noise_chars`` letters, so by the triangle
  inequality the asked key is the only stored key within ``noise_chars`` substitutions of
  ``K'``: the answer is well defined, and an exact-match reader fails as soon as
  ``noise_chars >= 1``. The asked needle sits at ``depth``, the others anywhere.

Needle segments (the attention-mass analysis): the mqar block, the queried needle and its
binding, every selcopy item, the asked fuzzyrecall needle.
"""

from __future__ import annotations

import numpy as np

from space.tasks import WORDS, key_code, min_length
from workers.examples import Codec, Example, assemble

RECALL_TASKS = ("mqar", "aliaskey", "selcopy", "fuzzyrecall")

_DIGITS = "0123456789"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def render_recall(
    task: str,
    length: int,
    depth: float,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    codec: Codec,
    p: dict,
) -> Example:
    """One example of ``task`` (one of :data:`RECALL_TASKS`), ``p`` its checked parameters."""
    if task == "mqar":
        return _render_mqar(length, depth, rng, filler_tokens, codec, p)
    if task == "aliaskey":
        return _render_aliaskey(length, depth, rng, filler_tokens, codec, p)
    if task == "selcopy":
        return _render_selcopy(length, depth, rng, filler_tokens, codec, p)
    if task == "fuzzyrecall":
        return _render_fuzzyrecall(length, depth, rng, filler_tokens, codec, p)
    raise ValueError(f"not a recall task: {task!r}")


def _digit_values(rng: np.random.Generator, n: int, value_len: int) -> list[str]:
    picks = rng.integers(0, 10, size=(n, value_len))
    return ["".join(_DIGITS[int(d)] for d in row) for row in picks]


def _joined(codec: Codec, parts: list[np.ndarray], sep: int, end: int) -> np.ndarray:
    """``parts`` separated by the ``sep`` marker, closed by ``end``."""
    out: list[np.ndarray] = []
    for i, part in enumerate(parts):
        out += [part, codec.marks(sep if i < len(parts) - 1 else end)]
    return np.concatenate(out)


def _filler_range(task: str, length: int, p: dict, n_filler: int) -> tuple[int, int]:
    """The filler offsets where a needle may start: after Begin, before the query gap."""
    lo = int(p["begin_tokens"]) - 1
    hi = n_filler - int(p["query_gap_tokens"])
    if hi < lo:
        raise ValueError(
            f"length {length} is too short for task {task!r}: need >= {min_length(task, **p)} "
            "(byte tokens; fewer may do for a subword tokenizer)"
        )
    return lo, hi


def _render_mqar(
    length: int,
    depth: float,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    codec: Codec,
    p: dict,
) -> Example:
    vocab = codec.vocab
    n, n_asked = int(p["n_pairs"]), int(p["n_queries"])
    keys = [key_code(int(i)) for i in rng.choice(int(p["key_vocab"]), size=n, replace=False)]
    values = _digit_values(rng, n, int(p["value_len"]))
    key_ids = [codec.text(k) for k in keys]
    value_ids = [codec.text(v) for v in values]
    pairs = [piece for i in range(n) for piece in (key_ids[i], value_ids[i])]
    block = np.concatenate([codec.marks(vocab.open), *pairs, codec.marks(vocab.close)])
    asked = [int(i) for i in rng.choice(n, size=n_asked, replace=False)]
    question = np.concatenate([np.append(codec.marks(vocab.query), key_ids[i]) for i in asked])
    answer = _joined(codec, [value_ids[i] for i in asked], vocab.sep, vocab.close)
    n_filler = length - len(answer) - 1 - len(question) - len(block)
    lo, hi = _filler_range("mqar", length, p, n_filler)
    offsets = np.array([lo + int(round(depth * (hi - lo)))], dtype=np.int64)
    return assemble(
        "mqar",
        length,
        depth,
        rng,
        filler_tokens,
        codec,
        p,
        [block],
        offsets,
        np.zeros(1, dtype=np.int64),
        needle_ids=[0],
        question=question,
        answer=answer,
        n_filler=n_filler,
    )


def _render_aliaskey(
    length: int,
    depth: float,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    codec: Codec,
    p: dict,
) -> Example:
    vocab = codec.vocab
    n = int(p["n_needles"])
    if p["key_kind"] == "letter":
        keys = [_UPPER[int(i)] for i in rng.choice(len(_UPPER), size=n, replace=False)]
        aliases = [WORDS[int(i)] for i in rng.choice(len(WORDS), size=n, replace=False)]
    else:  # 2n distinct words: no alias is its own key in another case
        picks = rng.choice(len(WORDS), size=2 * n, replace=False)
        keys = [WORDS[int(i)].upper() for i in picks[:n]]
        aliases = [WORDS[int(i)] for i in picks[n:]]
    values = _digit_values(rng, n, int(p["value_len"]))
    key_ids = [codec.text(k) for k in keys]
    value_ids = [codec.text(v) for v in values]
    alias_ids = [codec.text(a) for a in aliases]
    needles = [
        np.concatenate(
            [codec.marks(vocab.open), key_ids[i], value_ids[i], codec.marks(vocab.close)]
        )
        for i in range(n)
    ]
    bindings = [  # statement n + i binds alias i to key i
        np.concatenate(
            [
                codec.marks(vocab.open),
                alias_ids[i],
                codec.marks(vocab.sep),
                key_ids[i],
                codec.marks(vocab.close),
            ]
        )
        for i in range(n)
    ]
    statements = needles + bindings
    question = np.append(codec.marks(vocab.query), alias_ids[0])
    answer = np.append(value_ids[0], vocab.close)
    n_filler = length - len(answer) - 1 - len(question) - sum(len(s) for s in statements)
    lo, hi = _filler_range("aliaskey", length, p, n_filler)
    offsets = np.empty(2 * n, dtype=np.int64)
    offsets[0] = lo + int(round(depth * (hi - lo)))
    offsets[1:] = rng.integers(lo, hi + 1, size=2 * n - 1)
    order = np.lexsort((rng.permutation(2 * n), offsets))
    return assemble(
        "aliaskey",
        length,
        depth,
        rng,
        filler_tokens,
        codec,
        p,
        statements,
        offsets,
        order,
        needle_ids=[0, n],
        question=question,
        answer=answer,
        n_filler=n_filler,
    )


def _render_selcopy(
    length: int,
    depth: float,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    codec: Codec,
    p: dict,
) -> Example:
    vocab = codec.vocab
    n = int(p["n_items"])
    value_ids = [codec.text(v) for v in _digit_values(rng, n, int(p["value_len"]))]
    items = [np.append(codec.marks(vocab.sep), v) for v in value_ids]
    question = codec.marks(vocab.query)
    n_answer = sum(len(v) + 1 for v in value_ids)
    n_filler = length - n_answer - 1 - len(question) - sum(len(s) for s in items)
    lo, hi = _filler_range("selcopy", length, p, n_filler)
    offsets = rng.integers(lo, hi + 1, size=n)
    order = np.lexsort((np.arange(n), offsets))  # items at one offset: in index order
    answer = _joined(codec, [value_ids[int(i)] for i in order], vocab.sep, vocab.close)
    return assemble(
        "selcopy",
        length,
        depth,
        rng,
        filler_tokens,
        codec,
        p,
        items,
        offsets,
        order,
        needle_ids=list(range(n)),
        question=question,
        answer=answer,
        n_filler=n_filler,
    )


def _letters(rng: np.random.Generator, n: int) -> str:
    return "".join(_UPPER[int(i)] for i in rng.integers(0, len(_UPPER), size=n))


def _mismatches(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def fuzzy_keys(rng: np.random.Generator, n: int, key_len: int, noise: int) -> tuple[list[str], str]:
    """``n`` distinct keys of ``key_len`` letters, each after the first differing from the
    first in more than ``2 * noise`` letters, and the first with ``noise`` of its letters
    (at distinct positions) replaced by other letters: the question's key."""
    keys = [_letters(rng, key_len)]
    while len(keys) < n:  # random keys of 26 letters are this far apart almost always
        key = _letters(rng, key_len)
        if key not in keys and _mismatches(key, keys[0]) > 2 * noise:
            keys.append(key)
    noisy = list(keys[0])
    for i in rng.choice(key_len, size=noise, replace=False):
        shift = int(rng.integers(1, len(_UPPER)))  # never 0: the letter always changes
        noisy[int(i)] = _UPPER[(_UPPER.index(noisy[int(i)]) + shift) % len(_UPPER)]
    return keys, "".join(noisy)


def _render_fuzzyrecall(
    length: int,
    depth: float,
    rng: np.random.Generator,
    filler_tokens: np.ndarray,
    codec: Codec,
    p: dict,
) -> Example:
    vocab = codec.vocab
    n = int(p["n_pairs"])
    keys, asked = fuzzy_keys(rng, n, int(p["key_len"]), int(p["noise_chars"]))
    value_ids = [codec.text(v) for v in _digit_values(rng, n, int(p["value_len"]))]
    needles = [
        np.concatenate(
            [codec.marks(vocab.open), codec.text(keys[i]), value_ids[i], codec.marks(vocab.close)]
        )
        for i in range(n)
    ]
    question = np.append(codec.marks(vocab.query), codec.text(asked))
    answer = np.append(value_ids[0], vocab.close)
    n_filler = length - len(answer) - 1 - len(question) - sum(len(s) for s in needles)
    lo, hi = _filler_range("fuzzyrecall", length, p, n_filler)
    offsets = np.empty(n, dtype=np.int64)
    offsets[0] = lo + int(round(depth * (hi - lo)))
    offsets[1:] = rng.integers(lo, hi + 1, size=n - 1)
    order = np.lexsort((rng.permutation(n), offsets))
    return assemble(
        "fuzzyrecall",
        length,
        depth,
        rng,
        filler_tokens,
        codec,
        p,
        needles,
        offsets,
        order,
        needle_ids=[0],
        question=question,
        answer=answer,
        n_filler=n_filler,
    )
