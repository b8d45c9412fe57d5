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
"""

from __future__ import annotations

from dataclasses import dataclass

# The parts of a retrieval prompt whose share of attention the attention-mass score
# reports (the paper's Begin / Needle / Context / End).
SEGMENTS = ("begin", "needle", "context", "end")

NEEDLE_TASKS = ("passkey", "multikey", "multivalue")
TASKS = (*NEEDLE_TASKS, "multiquery", "vartrack", "commonwords")
# Families whose examples do not depend on a depth: their grid has a single column.
DEPTHLESS_TASKS = ("commonwords",)

KEY_KINDS = ("letter", "word")  # an upper-case ASCII letter, or a word of WORDS
VALUE_KINDS = ("digits", "uuid")  # value_len digits, or value_len hex digits in groups of 4
# Single upper-case ASCII letters: at most this many distinct letter keys in one example.
N_KEYS = 26

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
}
_TEXT_PARAMS: dict[str, tuple[str, ...]] = {"key_kind": KEY_KINDS, "value_kind": VALUE_KINDS}
_MINIMUM = {"begin_tokens": 1, "query_gap_tokens": 0, "count_ratio": 2}  # others: >= 1


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


def _is_int(value: object) -> bool:
    # numpy integers count too, without importing numpy here
    return isinstance(value, int) or type(value).__name__.startswith(("int", "uint"))


def distinct_keys(task: str, params: dict[str, int | str]) -> int:
    """How many distinct keys (or variable names) an example of ``task`` uses."""
    if task in ("multikey", "multiquery"):
        return int(params["n_needles"])
    if task == "vartrack":
        return int(params["n_vars"]) * int(params["n_chains"])
    if task == "commonwords":
        return 0
    return 1


def needle_count(task: str, params: dict[str, int | str]) -> int:
    """How many needles (statements, for vartrack) an example of ``task`` holds."""
    if task in ("multikey", "multiquery"):
        return int(params["n_needles"])
    if task == "multivalue":
        return int(params["n_values"])
    if task == "vartrack":
        return int(params["n_vars"]) * int(params["n_chains"])
    if task == "commonwords":
        return 0
    return 1


def queried_count(task: str, params: dict[str, int | str]) -> int:
    """How many items the answer holds (values, names or words)."""
    if task == "multivalue":
        return int(params["n_values"])
    if task == "multiquery":
        return int(params["n_queries"])
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

    def key(self, params: dict[str, int | str]) -> int:
        return self.letter if params.get("key_kind", "letter") == "letter" else self.word

    def value(self, params: dict[str, int | str]) -> int:
        return value_chars(params) + self.value_extra


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
    if task == "commonwords":  # QUERY
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
    return needle_count(task, params) * (k + v + 2)  # OPEN key value CLOSE


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
