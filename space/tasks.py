"""The long-context task families: names, parameters and the rules a sweep file is checked by.

Pure (no numpy, no torch): the schema checks ``train.task_params`` and that ``seq_len`` can
hold a task's example with these; :mod:`workers.tasks` renders the examples themselves.

Families (RULER's synthetic tasks, in a token format of reserved markers, see
:mod:`space.vocab`; keys, values and words are text, encoded by the study's tokenizer):

- needle retrieval: ``passkey`` (one needle), ``multikey`` (distinct keys, one queried),
  ``multivalue`` (one key, several values, all asked);
- ``multiquery``: several needles with distinct keys, several of them asked at once;
- ``vartrack`` (variable tracking, multi-hop): chains of assignments ``X = 12345``,
  ``Y = X``, ...; the answer names every variable bound to the queried value;
- ``commonwords`` (common-word extraction, aggregation): a long list of words; the answer
  is the most frequent ones. It has no needle, hence no depth.

Associative recall and copying (Zoology's MQAR, MAD's selective copying, NoLiMa's
non-literal needles), each with one documented difficulty parameter:

- ``mqar`` (multi-query associative recall): one dense block of ``n_pairs`` key-value
  pairs, keys drawn from a vocabulary of ``key_vocab`` two-letter codes; ``n_queries``
  keys asked at once. Difficulty: ``n_pairs`` (the associations to hold).
- ``aliaskey`` (non-literal retrieval): each upper-case key is also named by a lower-case
  alias in a binding statement; the question names the key by its alias only, so the
  question shares no text token with the needle that holds the value (two hops).
  Difficulty: ``n_needles`` (keys, each with its alias; the others are distractors).
- ``selcopy`` (selective copying): ``n_items`` short values scattered over the haystack,
  to be copied out in context order. No depth. Difficulty: ``n_items``.
- ``fuzzyrecall`` (fuzzy recall, after MAD's noisy and fuzzy in-context recall):
  ``n_pairs`` needles with distinct keys of ``key_len`` upper-case letters; the question
  names the queried key with ``noise_chars`` of its letters substituted, and the answer is
  the value of the stored key nearest to it (by construction the only key within
  ``noise_chars`` substitutions of the question). Difficulty: ``noise_chars`` (0 is exact
  recall; at most ``(key_len - 1) // 2``).

RULER's difficulty knob on the needle families: ``prefix_distractors`` adds needles whose
key shares all but the last character of the queried key (``key_kind: word``; with
single letters it adds needles with other letters). Its other knobs are the needle count
(``n_needles``, ``n_values``) and uuid-like values (``value_kind: uuid``).
"""

from __future__ import annotations

from dataclasses import dataclass

# The parts of a retrieval prompt whose share of attention the attention-mass score
# reports (the paper's Begin / Needle / Context / End).
SEGMENTS = ("begin", "needle", "context", "end")

NEEDLE_TASKS = ("passkey", "multikey", "multivalue")
# New families go at the end: training batches draw tasks in this order.
TASKS = (
    *NEEDLE_TASKS,
    "multiquery",
    "vartrack",
    "commonwords",
    "mqar",
    "aliaskey",
    "selcopy",
    "fuzzyrecall",
)
# Families whose examples do not depend on a depth: their grid has a single column.
DEPTHLESS_TASKS = ("commonwords", "selcopy")
# Families with prefix_distractors (the queried needle is their first needle).
PREFIX_TASKS = (*NEEDLE_TASKS, "multiquery")
# Each family's difficulty parameter: raising it makes the family harder.
DIFFICULTY = {
    "passkey": "prefix_distractors",
    "multikey": "n_needles",
    "multivalue": "n_values",
    "multiquery": "n_needles",
    "vartrack": "n_vars",
    "commonwords": "n_common",
    "mqar": "n_pairs",
    "aliaskey": "n_needles",
    "selcopy": "n_items",
    "fuzzyrecall": "noise_chars",
}

KEY_KINDS = ("letter", "word")  # an upper-case ASCII letter, or a word of WORDS
VALUE_KINDS = ("digits", "uuid")  # value_len digits, or value_len hex digits in groups of 4
# Single upper-case ASCII letters: at most this many distinct letter keys in one example.
N_KEYS = 26

# MQAR keys: two upper-case letters. Code i is (i mod 26, (i // 26 + i) mod 26), a
# bijection on 0..675 whose first letter cycles fastest, so the first key_vocab codes of
# any size spread over the alphabet instead of sharing one first letter.
N_CODES = 26 * 26


def key_code(i: int) -> str:
    """The ``i``-th key of the MQAR key vocabulary."""
    if not 0 <= i < N_CODES:
        raise ValueError(f"key code index must be in [0, {N_CODES}), got {i}")
    first, second = i % 26, (i // 26 + i) % 26
    return chr(65 + first) + chr(65 + second)


# Short, common English words: keys of ``key_kind: word`` and the lists of ``commonwords``.
_WORD_LIST = """
    able acid aged also area army away baby back ball band bank base bath bear beat bell
    belt best bird blow blue boat body bone book boot born boss both bowl bulk burn bush
    busy cake call calm camp card care case cash cast cell chip city club coal coat code
    cold cook cool cope copy core corn cost crew crop dark data date dawn deal dean dear
    debt deep deny desk dial diet disk dock door dose down draw drop drug dual duke dust
    duty each earn ease east easy edge else even ever face fact fail fair fall farm fast
    fate fear feed feel file fill film find fine fire firm fish five flat flow folk food
    foot form fort four free from fuel full fund gain game gate gear gene gift girl give
    glad goal gold golf good gray grew grow hair half hall hand hang hard harm hate head
    hear heat held herb help here hero hide high hill hint hire hold hole holy home hope
    host hour huge hung hunt hurt idea inch iron item jack join joke jump jury just keen
    keep kept kick kind king knee knew know lack lady laid lake land lane last late lead
"""
WORDS = tuple(_WORD_LIST.split())
MAX_WORD_CHARS = max(len(w) for w in WORDS)

_COMMON_DEFAULTS: dict[str, int | str] = {
    "value_len": 4,
    "begin_tokens": 4,
    "query_gap_tokens": 8,
    "key_kind": "letter",
    "value_kind": "digits",
}
TASK_DEFAULTS: dict[str, dict[str, int | str]] = {
    "passkey": dict(_COMMON_DEFAULTS),
    "multikey": {"n_needles": 4, **_COMMON_DEFAULTS},
    "multivalue": {"n_values": 4, **_COMMON_DEFAULTS},
    "multiquery": {"n_needles": 4, "n_queries": 2, **_COMMON_DEFAULTS},
    "vartrack": {
        "n_vars": 4,  # variables bound to the queried value (the chain's length)
        "n_chains": 2,  # the queried chain and distractor chains
        "value_len": 5,
        "begin_tokens": 4,
        "query_gap_tokens": 8,
        "key_kind": "letter",
    },
    "commonwords": {
        "n_common": 3,  # the words asked for
        # Each common word occurs count_ratio times as often as the most frequent other word.
        "count_ratio": 3,
        "begin_tokens": 4,
    },
    "mqar": {
        "n_pairs": 8,  # key-value pairs in the block
        "key_vocab": 64,  # keys are drawn from the first key_vocab codes (key_code)
        "n_queries": 2,  # keys asked at once
        "value_len": 2,  # digits per value
        "begin_tokens": 4,
        "query_gap_tokens": 8,
    },
    "aliaskey": {
        "n_needles": 4,  # keys, each with an alias; one asked through its alias
        "key_kind": "letter",
        "value_len": 4,
        "begin_tokens": 4,
        "query_gap_tokens": 8,
    },
    "selcopy": {
        "n_items": 4,  # values to copy out
        "value_len": 2,
        "begin_tokens": 4,
        "query_gap_tokens": 8,
    },
    "fuzzyrecall": {
        "n_pairs": 4,  # needles with distinct keys; one asked
        "key_len": 6,  # upper-case letters per key
        "noise_chars": 1,  # letters of the asked key the question substitutes
        "value_len": 4,
        "begin_tokens": 4,
        "query_gap_tokens": 8,
    },
}
for _task in PREFIX_TASKS:
    TASK_DEFAULTS[_task]["prefix_distractors"] = 0
_TEXT_PARAMS: dict[str, tuple[str, ...]] = {"key_kind": KEY_KINDS, "value_kind": VALUE_KINDS}
_MINIMUM = {
    "begin_tokens": 1,
    "query_gap_tokens": 0,
    "count_ratio": 2,
    "prefix_distractors": 0,
    "noise_chars": 0,
}  # others: >= 1
# Distinct lower-case letters a word key's last character can change to.
MAX_PREFIX_DISTRACTORS = 25


def task_params(task: str, **overrides: int | str) -> dict[str, int | str]:
    """Defaults of ``task`` overlaid with ``overrides``; unknown names or bad values raise
    ValueError."""
    if task not in TASK_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    defaults = TASK_DEFAULTS[task]
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r} for task {task!r}; expected one of {sorted(defaults)}"
        )
    params: dict[str, int | str] = dict(defaults)
    for name, value in overrides.items():
        if name in _TEXT_PARAMS:
            if value not in _TEXT_PARAMS[name]:
                raise ValueError(
                    f"task {task!r}: {name} must be one of {list(_TEXT_PARAMS[name])}, got {value!r}"
                )
            params[name] = str(value)
            continue
        if isinstance(value, bool) or not _is_int(value):
            raise ValueError(f"task {task!r}: {name} must be an integer, got {value!r}")
        params[name] = int(value)  # type: ignore[arg-type]
    for name, value in params.items():
        if name in _TEXT_PARAMS:
            continue
        lowest = _MINIMUM.get(name, 1)
        if int(value) < lowest:
            raise ValueError(f"task {task!r}: {name} must be >= {lowest}, got {value}")
    _check_counts(task, params)
    return params


def _check_counts(task: str, p: dict[str, int | str]) -> None:
    keys = distinct_keys(task, p)
    pool = N_KEYS if p.get("key_kind", "letter") == "letter" else len(WORDS)
    if keys > pool:
        what = f"{N_KEYS} letters" if pool == N_KEYS else f"{len(WORDS)} words"
        raise ValueError(
            f"task {task!r}: needs {keys} distinct keys, more than the {what} of "
            f"key_kind {p.get('key_kind')!r}"
        )
    if task == "multiquery" and int(p["n_queries"]) > int(p["n_needles"]):
        raise ValueError(
            f"task {task!r}: n_queries={p['n_queries']} exceeds n_needles={p['n_needles']}"
        )
    if task == "commonwords" and int(p["n_common"]) >= len(WORDS):
        raise ValueError(f"task {task!r}: n_common must be < {len(WORDS)} (the word pool)")
    if task == "mqar":
        if int(p["key_vocab"]) > N_CODES:
            raise ValueError(f"task {task!r}: key_vocab must be <= {N_CODES} (two-letter codes)")
        if int(p["n_pairs"]) > int(p["key_vocab"]):
            raise ValueError(
                f"task {task!r}: n_pairs={p['n_pairs']} exceeds key_vocab={p['key_vocab']}"
            )
        if int(p["n_queries"]) > int(p["n_pairs"]):
            raise ValueError(
                f"task {task!r}: n_queries={p['n_queries']} exceeds n_pairs={p['n_pairs']}"
            )
    if task == "fuzzyrecall" and 2 * int(p["noise_chars"]) >= int(p["key_len"]):
        # The other keys differ from the asked one in more than 2 x noise_chars letters,
        # so the stored key is the only one within noise_chars of the question.
        raise ValueError(
            f"task {task!r}: noise_chars={p['noise_chars']} must be < key_len / 2 "
            f"(key_len={p['key_len']}), so that the asked key stays the nearest"
        )
    if task == "aliaskey" and int(p["n_needles"]) > len(WORDS):
        raise ValueError(f"task {task!r}: n_needles must be <= {len(WORDS)} (the alias pool)")
    distractors = int(p.get("prefix_distractors", 0))
    if distractors > MAX_PREFIX_DISTRACTORS and p.get("key_kind") == "word":
        raise ValueError(
            f"task {task!r}: prefix_distractors must be <= {MAX_PREFIX_DISTRACTORS} "
            "(one per other last letter)"
        )


def _is_int(value: object) -> bool:
    # numpy integers count too, without importing numpy here
    return isinstance(value, int) or type(value).__name__.startswith(("int", "uint"))


def lowest_level(task: str) -> int:
    """The easiest value of ``task``'s difficulty parameter (0 or 1)."""
    return _MINIMUM.get(DIFFICULTY[task], 1)


def distinct_keys(task: str, params: dict[str, int | str]) -> int:
    """How many distinct keys (or variable names) an example of ``task`` uses."""
    extra = 0
    if task in PREFIX_TASKS and params.get("key_kind", "letter") == "letter":
        extra = int(params.get("prefix_distractors", 0))  # other letters
    if task in ("multikey", "multiquery"):
        return int(params["n_needles"]) + extra
    if task == "aliaskey":
        return int(params["n_needles"])
    if task in ("mqar", "selcopy", "fuzzyrecall"):  # keys of their own, not letters or words
        return 0
    if task == "vartrack":
        return int(params["n_vars"]) * int(params["n_chains"])
    if task == "commonwords":
        return 0
    return 1 + extra


def needle_count(task: str, params: dict[str, int | str]) -> int:
    """How many needles (statements, for vartrack) an example of ``task`` holds, prefix
    distractors included (mqar: one block; aliaskey: needles and bindings)."""
    extra = int(params.get("prefix_distractors", 0))
    if task in ("multikey", "multiquery"):
        return int(params["n_needles"]) + extra
    if task == "multivalue":
        return int(params["n_values"]) + extra
    if task == "mqar":
        return 1
    if task == "fuzzyrecall":
        return int(params["n_pairs"])
    if task == "aliaskey":
        return 2 * int(params["n_needles"])
    if task == "selcopy":
        return int(params["n_items"])
    if task == "vartrack":
        return int(params["n_vars"]) * int(params["n_chains"])
    if task == "commonwords":
        return 0
    return 1 + extra


def queried_count(task: str, params: dict[str, int | str]) -> int:
    """How many items the answer holds (values, names or words)."""
    if task == "multivalue":
        return int(params["n_values"])
    if task in ("multiquery", "mqar"):
        return int(params["n_queries"])
    if task == "selcopy":
        return int(params["n_items"])
    if task == "vartrack":
        return int(params["n_vars"])
    if task == "commonwords":
        return int(params["n_common"])
    return 1


# -- lengths -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenBounds:
    """The most tokens a tokenizer spends on each text piece of a task.

    The default is one token per character: exact for the byte tokenizer (keys, values
    and words are ASCII), an upper bound for byte-level BPE (a token is never shorter
    than one byte). :mod:`workers.tasks` measures a tokenizer's own bounds.
    """

    letter: int = 1  # one key letter
    word: int = MAX_WORD_CHARS  # one word key
    item: int = MAX_WORD_CHARS + 1  # one commonwords list item: a space, then a word
    value_extra: int = 0  # tokens beyond one per character of a value
    code: int = 2  # one mqar key (two letters)
    upper_word: int = MAX_WORD_CHARS  # one aliaskey word key (an upper-case word)
    near_word: int = MAX_WORD_CHARS  # a prefix distractor's key: a word, last letter changed

    def key(self, params: dict[str, int | str]) -> int:
        return self.letter if params.get("key_kind", "letter") == "letter" else self.word

    def distractor_key(self, params: dict[str, int | str]) -> int:
        return self.letter if params.get("key_kind", "letter") == "letter" else self.near_word

    def alias_key(self, params: dict[str, int | str]) -> int:
        """An aliaskey key: an upper-case letter or word."""
        return self.letter if params.get("key_kind", "letter") == "letter" else self.upper_word

    def value(self, params: dict[str, int | str]) -> int:
        return value_chars(params) + self.value_extra

    def fuzzy_key(self, params: dict[str, int | str]) -> int:
        """A fuzzyrecall key: ``key_len`` letters, counted like a value's characters."""
        return int(params["key_len"]) + self.value_extra


BYTE_BOUNDS = TokenBounds()


def value_chars(params: dict[str, int | str]) -> int:
    """The value text: ``value_len`` digits, or hex digits with a dash between groups of 4."""
    n = int(params["value_len"])
    return n if params.get("value_kind", "digits") == "digits" else n + (n - 1) // 4


def answer_len(task: str, bounds: TokenBounds = BYTE_BOUNDS, **overrides: int | str) -> int:
    """Answer tokens of ``task`` (the most, where pieces vary), with the closing marker
    that ends every answer."""
    p = task_params(task, **overrides)
    n = queried_count(task, p)
    if task == "multiquery":  # OPEN key value CLOSE, per asked key
        return n * (bounds.key(p) + bounds.value(p) + 2)
    if task in ("mqar", "selcopy"):  # values separated by SEP, then CLOSE
        return n * (bounds.value(p) + 1)
    if task == "vartrack":  # names separated by SEP, then CLOSE
        return n * (bounds.key(p) + 1)
    if task == "commonwords":  # " word" items separated by SEP, then CLOSE
        return n * (bounds.item + 1)
    return n * (bounds.value(p) + 1)  # each value, then CLOSE


def question_len(task: str, params: dict[str, int | str], bounds: TokenBounds = BYTE_BOUNDS) -> int:
    """The query block at the end of the prompt (the most tokens)."""
    if task == "multiquery":  # QUERY key, per asked key
        return queried_count(task, params) * (1 + bounds.key(params))
    if task == "vartrack":  # QUERY value SEP
        return bounds.value(params) + 2
    if task == "mqar":  # QUERY key, per asked key
        return queried_count(task, params) * (1 + bounds.code)
    if task == "aliaskey":  # QUERY alias
        return 1 + bounds.word
    if task == "fuzzyrecall":  # QUERY key', the asked key with letters substituted
        return 1 + bounds.fuzzy_key(params)
    if task in ("commonwords", "selcopy"):  # QUERY
        return 1
    return 1 + bounds.key(params)  # OPEN key


def body_len(task: str, params: dict[str, int | str], bounds: TokenBounds = BYTE_BOUNDS) -> int:
    """Tokens of the needles (statements, or the shortest word list), at the most."""
    if task == "commonwords":  # SEP, then each common word count_ratio times
        return 1 + int(params["n_common"]) * int(params["count_ratio"]) * bounds.item
    k, v = bounds.key(params), bounds.value(params)
    if task == "vartrack":  # OPEN name SEP rhs CLOSE; rhs a value or a name
        chains, n = int(params["n_chains"]), int(params["n_vars"])
        return chains * ((3 + k + v) + (n - 1) * (3 + 2 * k))
    if task == "mqar":  # OPEN k1 v1 k2 v2 ... CLOSE
        return 2 + int(params["n_pairs"]) * (bounds.code + v)
    if task == "aliaskey":  # OPEN KEY value CLOSE, and OPEN alias SEP KEY CLOSE, per key
        upper = bounds.alias_key(params)
        return int(params["n_needles"]) * ((2 + upper + v) + (3 + bounds.word + upper))
    if task == "selcopy":  # SEP value, per item
        return int(params["n_items"]) * (1 + v)
    if task == "fuzzyrecall":  # OPEN key value CLOSE, per needle
        return int(params["n_pairs"]) * (2 + bounds.fuzzy_key(params) + v)
    extra = int(params.get("prefix_distractors", 0))
    near = bounds.distractor_key(params)
    # OPEN key value CLOSE, per needle; a prefix distractor's key may be longer
    return (needle_count(task, params) - extra) * (k + v + 2) + extra * (near + v + 2)


def min_length(task: str, bounds: TokenBounds = BYTE_BOUNDS, **overrides: int | str) -> int:
    """The shortest example length (tokens) that ``task`` with these parameters always fits
    in (exact for the needle tasks under the byte tokenizer)."""
    p = task_params(task, **overrides)
    gap = int(p.get("query_gap_tokens", 0))
    return (
        1  # DOC
        + (int(p["begin_tokens"]) - 1)  # filler inside the Begin segment
        + body_len(task, p, bounds)
        + gap
        + question_len(task, p, bounds)
        + answer_len(task, bounds, **overrides)
    )
