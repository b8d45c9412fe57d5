"""Retrieval tasks (needle format, depth, segments) and training batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from space.vocab import CLOSE_OFFSET, OPEN_OFFSET, QUERY_OFFSET, SEP_OFFSET
from workers.batches import make_batch
from workers.data import load_corpus
from workers.examples import example_seed, segment_labels
from workers.tasks import (
    SEGMENTS,
    TASKS,
    answer_len,
    min_length,
    render,
    task_params,
)
from workers.tokenizer import BYTE_TOKENIZER, Tokenizer, train_bpe
from workers.tokens import DOC, NEEDLE_CLOSE, NEEDLE_OPEN, encode

DIGITS = set(b"0123456789")
LETTERS = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@pytest.fixture(scope="module")
def filler() -> np.ndarray:
    # Python-like text with digits and capitals, so keys and values also occur as filler.
    text = "x = Foo(12, 'Key 4821')\nfor K in range(9):\n    print(K, 7)\n" * 200
    tokens = encode(text)
    tokens[::500] = DOC
    return tokens


def _needles(tokens: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(start, needle tokens) of every complete OPEN ... CLOSE needle in the prompt."""
    opens = np.flatnonzero(tokens == NEEDLE_OPEN)
    out = []
    for o in opens:
        closes = np.flatnonzero(tokens[o:] == NEEDLE_CLOSE)
        if len(closes):
            out.append((int(o), tokens[o : o + closes[0] + 1]))
    return out


@pytest.mark.parametrize("task", TASKS)
def test_render_is_exact_length_and_reproducible(task, filler):
    a = render(task, 200, 0.5, seed=7, filler_tokens=filler)
    b = render(task, 200, 0.5, seed=7, filler_tokens=filler)
    c = render(task, 200, 0.5, seed=8, filler_tokens=filler)
    assert len(a.tokens) == 200 and a.tokens.dtype == np.uint16
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    np.testing.assert_array_equal(a.tokens[a.prompt_len :], a.answer)
    assert len(a.answer) == answer_len(task)
    assert a.tokens[0] == DOC


def test_render_passkey_needle_query_and_answer_format(filler):
    ex = render("passkey", 128, 0.3, seed=1, filler_tokens=filler, value_len=5)
    prompt = ex.prompt
    # Exactly two OPEN markers: the needle and the query; one CLOSE in the prompt.
    assert (prompt == NEEDLE_OPEN).sum() == 2 and (prompt == NEEDLE_CLOSE).sum() == 1
    ((start, needle),) = _needles(prompt)
    assert len(needle) == 1 + 1 + 5 + 1
    key, value = needle[1], needle[2:-1]
    assert key in LETTERS and set(value.tolist()) <= DIGITS
    np.testing.assert_array_equal(prompt[-2:], [NEEDLE_OPEN, key])
    np.testing.assert_array_equal(ex.answer, np.append(value, NEEDLE_CLOSE))
    assert ex.segments["needle"] == [(start, start + len(needle))]
    assert ex.segments["end"] == [(ex.prompt_len - 2, ex.prompt_len)]


def test_render_multikey_queries_one_of_distinct_keys(filler):
    ex = render("multikey", 256, 0.75, seed=3, filler_tokens=filler, n_needles=5)
    needles = _needles(ex.prompt)
    assert len(needles) == 5
    keys = [int(n[1]) for _, n in needles]
    assert len(set(keys)) == 5
    query_key = int(ex.prompt[-1])
    ((start, hit),) = [(s, n) for s, n in needles if n[1] == query_key]
    np.testing.assert_array_equal(ex.answer, hit[2:])  # digits then CLOSE
    assert ex.segments["needle"] == [(start, start + len(hit))]


def test_render_multivalue_answers_every_value_in_context_order(filler):
    ex = render("multivalue", 300, 0.0, seed=4, filler_tokens=filler, n_values=3)
    needles = _needles(ex.prompt)
    assert len(needles) == 3
    assert len({int(n[1]) for _, n in needles}) == 1 and int(ex.prompt[-1]) == needles[0][1][1]
    expected = np.concatenate([n[2:] for _, n in sorted(needles, key=lambda t: t[0])])
    np.testing.assert_array_equal(ex.answer, expected)
    assert len(ex.answer) == 3 * (4 + 1)
    assert ex.segments["needle"] == [(s, s + len(n)) for s, n in needles]


def test_render_depth_moves_the_needle_from_begin_to_the_query_gap(filler):
    params = {"begin_tokens": 4, "query_gap_tokens": 8}
    starts = []
    for depth in (0.0, 0.25, 0.5, 0.75, 1.0):
        ex = render("passkey", 160, depth, seed=11, filler_tokens=filler, **params)
        starts.append(ex.segments["needle"][0][0])
        last = ex
    assert starts == sorted(starts) and len(set(starts)) == 5
    assert starts[0] == 4  # right after the Begin segment
    needle_end = last.segments["needle"][0][1]
    query_start = last.segments["end"][0][0]
    assert query_start - needle_end == 8  # depth 1.0 still leaves the gap before the query


@pytest.mark.parametrize("task", TASKS)
def test_render_segments_partition_the_prompt(task, filler):
    ex = render(task, 180, 0.6, seed=2, filler_tokens=filler)
    labels = segment_labels(ex)
    assert labels.shape == (ex.prompt_len,)
    covered = np.zeros(ex.prompt_len, dtype=int)
    for name in SEGMENTS:
        for a, b in ex.segments[name]:
            covered[a:b] += 1
    assert (covered == 1).all()
    assert ex.segments["begin"] == [(0, 4)]
    # Needle markers never fall in Begin or End.
    assert (labels[ex.prompt == NEEDLE_CLOSE] != SEGMENTS.index("end")).all()


@pytest.mark.parametrize("task", TASKS)
def test_render_min_length_is_the_exact_boundary(task, filler):
    shortest = min_length(task)
    assert len(render(task, shortest, 1.0, 0, filler).tokens) == shortest
    with pytest.raises(ValueError, match="too short"):
        render(task, shortest - 1, 1.0, 0, filler)


def test_render_rejects_bad_arguments(filler):
    with pytest.raises(ValueError, match="unknown task"):
        render("haystack", 128, 0.5, 0, filler)
    with pytest.raises(ValueError, match="unknown parameter"):
        render("passkey", 128, 0.5, 0, filler, n_needles=3)
    with pytest.raises(ValueError, match="must be an integer"):
        render("passkey", 128, 0.5, 0, filler, value_len=2.5)
    with pytest.raises(ValueError, match="must be >= 1"):
        render("multikey", 128, 0.5, 0, filler, n_needles=0)
    with pytest.raises(ValueError, match="depth"):
        render("passkey", 128, 1.5, 0, filler)
    with pytest.raises(ValueError, match="filler has"):
        render("passkey", 128, 0.5, 0, filler[:50])
    bad = filler.copy()
    bad[:] = NEEDLE_OPEN
    with pytest.raises(ValueError, match="reserved control token"):
        render("passkey", 128, 0.5, 0, bad)


def test_example_seed_is_deterministic_and_distinct():
    assert example_seed(0, 128, 3) == example_seed(0, 128, 3)
    seeds = {example_seed(0, n, s) for n in (128, 256) for s in range(20)}
    assert len(seeds) == 40


# --------------------------------------------------------------------------- batches


def _batch(filler, seed=0, **kw):
    args = dict(
        batch_size=8,
        seq_len=96,
        task_mix={"passkey": 1.0, "multikey": 1.0},
        lm_fraction=0.25,
        filler_weight=0.1,
        answer_weight=1.0,
    )
    args.update(kw)
    return make_batch(filler, np.random.default_rng(seed), **args)


def test_make_batch_shapes_dtypes_and_determinism(filler):
    x, y, w = _batch(filler)
    assert x.shape == y.shape == w.shape == (8, 96)
    assert x.dtype == torch.int64 and y.dtype == torch.int64 and w.dtype == torch.float32
    x2, y2, w2 = _batch(filler)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(w, w2)
    x3, _, _ = _batch(filler, seed=1)
    assert not torch.equal(x, x3)
    # Targets are the inputs shifted by one.
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_make_batch_lm_rows_are_corpus_windows_with_unit_weight(filler):
    x, y, w = _batch(filler, lm_fraction=0.25)
    for row in range(2):  # round(0.25 * 8) LM rows come first
        assert (w[row] == 1.0).all()
        assert (x[row] != NEEDLE_OPEN).all()
        assert x[row, 0] == DOC  # every row opens with the separator, like task rows
        # The rest is a corpus window, and the targets continue it by one token.
        windows = np.lib.stride_tricks.sliding_window_view(filler, 96)
        match = (windows[:, :-1] == x[row, 1:].numpy()).all(axis=1)
        assert match.any()
        np.testing.assert_array_equal(y[row].numpy(), windows[np.argmax(match)])


def test_make_batch_task_rows_weight_answer_and_filler(filler):
    x, y, w = _batch(
        filler, lm_fraction=0.0, filler_weight=0.1, answer_weight=5.0, task_mix={"passkey": 1.0}
    )
    n_answer = answer_len("passkey")
    for row in range(8):
        weights = w[row].numpy()
        assert np.allclose(weights[:-n_answer], 0.1)
        assert np.allclose(weights[-n_answer:], 5.0)
        targets = y[row].numpy()
        assert targets[-1] == NEEDLE_CLOSE and set(targets[-n_answer:-1].tolist()) <= DIGITS
        # The input's last answer-predicting position is the query key after NEEDLE_OPEN.
        assert x[row, -n_answer - 1] == NEEDLE_OPEN


def test_make_batch_depth_range_limits_needle_position(filler):
    x, _, _ = _batch(filler, lm_fraction=0.0, task_mix={"passkey": 1.0}, depth_range=(0.0, 0.0))
    for row in range(8):
        assert x[row, 4] == NEEDLE_OPEN  # depth 0: right after the 4-token Begin segment


def test_make_batch_rejects_bad_mix(filler):
    with pytest.raises(ValueError, match="unknown task"):
        _batch(filler, task_mix={"sudoku": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        _batch(filler, task_mix={"passkey": 0.0})
    # All-LM batches need no task at all.
    _, _, w = _batch(filler, lm_fraction=1.0, task_mix={})
    assert (w == 1.0).all()


# --------------------------------------------------------------------------- every family,
# every tokenizer: a reference solver reads the answer off the prompt


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    """A byte-level BPE of 512 tokens trained on the embedded corpus."""
    corpus = load_corpus(max_tokens=400_000)
    docs = [d.decode("utf-8", "replace") for d in _split_docs(corpus.train)]
    return train_bpe(docs, 512)


def _split_docs(tokens: np.ndarray) -> list[bytes]:
    stream = np.asarray(tokens)
    cuts = [*np.flatnonzero(stream == DOC).tolist(), len(stream)]
    return [
        stream[a + 1 : b].astype(np.uint8).tobytes()
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    ]


def _pieces(tokenizer: Tokenizer, ids: np.ndarray) -> list[str | int]:
    """Ids -> text runs (str) and control tokens (their offset, int), in order."""
    out: list[str | int] = []
    run: list[int] = []
    for t in ids.tolist():
        if t < tokenizer.vocab.text_size:
            run.append(t)
            continue
        if run:
            out.append(tokenizer.text_bytes(run).decode("utf-8"))
            run = []
        out.append(t - tokenizer.vocab.text_size)
    if run:
        out.append(tokenizer.text_bytes(run).decode("utf-8"))
    return out


OPEN, CLOSE, QUERY, SEP = OPEN_OFFSET, CLOSE_OFFSET, QUERY_OFFSET, SEP_OFFSET


def _bracketed(pieces: list, start: int, stop: int) -> list[list[str]]:
    """Texts between each OPEN and the next CLOSE (split at SEP), in context order."""
    out, i = [], 0
    while i < len(pieces):
        if pieces[i] == start:
            j = pieces.index(stop, i)
            inner = pieces[i + 1 : j]
            out.append([p for p in inner if isinstance(p, str)])
            i = j
        i += 1
    return out


def _mismatches(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def solve(task: str, prompt_pieces: list, params: dict) -> list:
    """The answer's pieces (text and control offsets, final CLOSE dropped), computed from
    the prompt alone."""
    if task in ("passkey", "multikey", "multivalue"):
        key = prompt_pieces[-1]  # ... OPEN key
        body = prompt_pieces[:-2]
        values = [n[0][len(key) :] for n in _bracketed(body, OPEN, CLOSE) if n[0].startswith(key)]
        if task != "multivalue":
            assert len(values) == 1  # exactly one needle per key
        out: list = []
        for v in values:
            out += [v, CLOSE]
        return out[:-1]
    if task == "multiquery":
        q = len(prompt_pieces) - 1
        asked = []
        while prompt_pieces[q - 1] == QUERY:  # ... QUERY k1 QUERY k2
            asked.insert(0, prompt_pieces[q])
            q -= 2
        needles = _bracketed(prompt_pieces[: q + 1], OPEN, CLOSE)
        out = []
        for key in asked:
            (text,) = [n[0] for n in needles if n[0].startswith(key) and n[0][len(key) :].isalnum()]
            out += [OPEN, text, CLOSE]
        return out[:-1]
    if task == "vartrack":
        value = prompt_pieces[-2]  # ... QUERY value SEP
        statements = [(n[0], n[1]) for n in _bracketed(prompt_pieces[:-3], OPEN, CLOSE)]
        bound, names = {value}, []
        changed = True
        while changed:  # follow every chain, whatever the order
            changed = False
            for name, rhs in statements:
                if rhs in bound and name not in bound:
                    bound.add(name)
                    names.append(name)
                    changed = True
        order = [name for name, _ in statements if name in names]  # first appearance
        out = []
        for name in order:
            out += [name, SEP]
        return out[:-1]
    if task == "mqar":
        q = len(prompt_pieces) - 1
        asked = []
        while prompt_pieces[q - 1] == QUERY:  # ... QUERY k1 QUERY k2
            asked.insert(0, prompt_pieces[q])
            q -= 2
        (block,) = [n[0] for n in _bracketed(prompt_pieces[: q + 1], OPEN, CLOSE)]
        step = 2 + params["value_len"]  # a two-letter key, then its digits
        pairs = dict(
            (block[i : i + 2], block[i + 2 : i + step]) for i in range(0, len(block), step)
        )
        assert len(pairs) == params["n_pairs"]
        out = []
        for key in asked:
            out += [pairs[key], SEP]
        return out[:-1]
    if task == "aliaskey":
        assert prompt_pieces[-2] == QUERY
        alias = prompt_pieces[-1]
        statements = _bracketed(prompt_pieces[:-2], OPEN, CLOSE)
        (key,) = [s[1] for s in statements if len(s) == 2 and s[0] == alias]
        (value,) = [s[0][len(key) :] for s in statements if len(s) == 1 and s[0].startswith(key)]
        assert value.isdigit() and len(value) == params["value_len"]
        return [value]
    if task == "selcopy":
        assert prompt_pieces[-1] == QUERY
        items = [
            prompt_pieces[i + 1][: params["value_len"]]
            for i, piece in enumerate(prompt_pieces[:-1])
            if piece == SEP
        ]
        out = []
        for item in items:
            out += [item, SEP]
        return out[:-1]
    if task == "fuzzyrecall":
        assert prompt_pieces[-2] == QUERY
        asked, n = prompt_pieces[-1], params["key_len"]
        assert len(asked) == n and asked.isupper()
        stored = [s[0] for s in _bracketed(prompt_pieces[:-2], OPEN, CLOSE)]
        assert len(stored) == params["n_pairs"]
        distance = {s[:n]: _mismatches(s[:n], asked) for s in stored}
        (nearest,) = [k for k, d in distance.items() if d <= params["noise_chars"]]
        assert distance[nearest] == params["noise_chars"]  # exactly that many substituted
        (value,) = [s[n:] for s in stored if s[:n] == nearest]
        return [value]
    if task == "commonwords":
        text = prompt_pieces[prompt_pieces.index(SEP) + 1]  # SEP word word ... QUERY
        words = text.split(" ")[1:]
        counts = {w: words.count(w) for w in words}
        top = sorted(counts, key=lambda w: -counts[w])[: params["n_common"]]
        assert min(counts[w] for w in top) > max(
            [counts[w] for w in counts if w not in top], default=0
        )  # the common words are unambiguous
        out = []
        for w in [w for w in dict.fromkeys(words) if w in top]:
            out += [" " + w, SEP]
        return out[:-1]
    raise AssertionError(task)


VARIANTS = [
    ("passkey", {}),
    ("passkey", {"key_kind": "word", "value_kind": "uuid", "value_len": 8}),
    ("multikey", {}),
    ("multikey", {"key_kind": "word"}),
    ("multivalue", {"n_values": 3}),
    ("multiquery", {}),
    ("multiquery", {"n_needles": 5, "n_queries": 3, "key_kind": "word", "value_kind": "uuid"}),
    ("vartrack", {}),
    ("vartrack", {"n_vars": 3, "n_chains": 3, "key_kind": "word"}),
    ("commonwords", {}),
    ("commonwords", {"n_common": 2, "count_ratio": 2}),
    ("passkey", {"key_kind": "word", "prefix_distractors": 6}),
    ("multikey", {"prefix_distractors": 3}),
    ("multivalue", {"n_values": 2, "key_kind": "word", "prefix_distractors": 2}),
    ("multiquery", {"key_kind": "word", "value_kind": "uuid", "prefix_distractors": 4}),
    ("mqar", {}),
    ("mqar", {"n_pairs": 24, "key_vocab": 200, "n_queries": 4, "value_len": 3}),
    ("aliaskey", {}),
    ("aliaskey", {"n_needles": 6, "key_kind": "word"}),
    ("selcopy", {}),
    ("selcopy", {"n_items": 9, "value_len": 3}),
    ("fuzzyrecall", {}),
    ("fuzzyrecall", {"noise_chars": 0}),
    ("fuzzyrecall", {"n_pairs": 8, "key_len": 9, "noise_chars": 4, "value_len": 3}),
]


@pytest.mark.parametrize("tokenizer_name", ["bytes", "bpe"])
@pytest.mark.parametrize("task, params", VARIANTS)
def test_render_answer_is_what_a_reference_solver_reads_off_the_prompt(
    task, params, tokenizer_name, bpe, filler
):
    tokenizer = BYTE_TOKENIZER if tokenizer_name == "bytes" else bpe
    corpus = filler if tokenizer_name == "bytes" else _retokenize(filler, bpe)
    full = task_params(task, **params)
    for i, (length, depth) in enumerate([(400, 0.0), (400, 0.5), (700, 1.0), (1500, 0.3)]):
        ex = render(
            task, length, depth, seed=100 + i, filler_tokens=corpus, tokenizer=tokenizer, **params
        )
        assert len(ex.tokens) == length and ex.tokens[0] == tokenizer.vocab.doc
        assert ex.answer[-1] == tokenizer.vocab.close
        expected = solve(task, _pieces(tokenizer, ex.prompt), full)
        assert _pieces(tokenizer, ex.scored) == expected
        # Segments still cover the prompt, the needle segment holds what was asked for.
        assert (segment_labels(ex) >= 0).all()
        if task != "commonwords":
            assert ex.segments["needle"] and all(a < b for a, b in ex.segments["needle"])


def _retokenize(byte_tokens: np.ndarray, tokenizer: Tokenizer) -> np.ndarray:
    parts = []
    for doc in _split_docs(np.concatenate([[DOC], byte_tokens])):
        parts += [[tokenizer.vocab.doc], tokenizer.encode(doc.decode("utf-8", "replace"))]
    return np.concatenate(parts).astype(np.uint16)


def test_render_vartrack_chain_follows_depth_and_binds_every_name(filler):
    shallow = render("vartrack", 600, 0.0, 5, filler, n_vars=4, n_chains=2)
    deep = render("vartrack", 600, 1.0, 5, filler, n_vars=4, n_chains=2)
    # The queried chain's first statement moves from the Begin segment towards the query.
    assert shallow.segments["needle"][0][0] == 4
    assert deep.segments["needle"][0][0] > 400
    assert len(shallow.segments["needle"]) == 4  # every statement of the queried chain


def test_render_commonwords_frequencies_scale_with_length(filler):
    for length in (200, 2000, 8000):
        ex = render("commonwords", length, 0.0, 3, filler)
        pieces = _pieces(BYTE_TOKENIZER, ex.prompt)
        words = pieces[pieces.index(SEP) + 1].split(" ")[1:]
        counts = sorted({w: words.count(w) for w in words}.values(), reverse=True)
        assert counts[2] >= 3 * counts[3]  # count_ratio between the common and the others
        assert len(ex.tokens) == length


def test_render_new_families_min_length_is_the_boundary_under_bytes(filler):
    for task in ("multiquery", "vartrack", "commonwords"):
        shortest = min_length(task)
        assert len(render(task, shortest, 1.0, 0, filler).tokens) == shortest
        with pytest.raises(ValueError, match="too short"):
            render(task, shortest - 1, 1.0, 0, filler)


def test_render_under_bpe_has_markers_no_text_can_make(bpe):
    text = "<OPEN> <|endoftext|> \x00 " * 50 + "".join(chr(c) for c in range(32, 400))
    ids = bpe.encode(text)
    assert (ids < 512).all()  # every id is a text id; the controls sit above
    assert bpe.text_bytes(ids.tolist()).decode() == text  # byte-level: nothing lost
    assert bpe.vocab.open == 512 + 2 and bpe.vocab.size == 576


# --------------------------------------------------------------------------- associative
# recall, copying and RULER's difficulty knobs


@pytest.mark.parametrize("tokenizer_name", ["bytes", "bpe"])
@pytest.mark.parametrize("key_kind", ["letter", "word"])
def test_render_aliaskey_question_shares_no_token_with_the_needle(
    tokenizer_name, key_kind, bpe, filler
):
    tokenizer = BYTE_TOKENIZER if tokenizer_name == "bytes" else bpe
    corpus = filler if tokenizer_name == "bytes" else _retokenize(filler, bpe)
    for seed in range(20):
        ex = render("aliaskey", 400, 0.5, seed, corpus, tokenizer=tokenizer, key_kind=key_kind)
        (q0, q1) = ex.segments["end"][0]
        question = set(ex.prompt[q0:q1].tolist())
        # The needle segment holds the queried needle (its value) and the binding of its alias.
        spans = [ex.prompt[a:b] for a, b in ex.segments["needle"]]
        (needle,) = [s for s in spans if tokenizer.vocab.sep not in s]
        (binding,) = [s for s in spans if tokenizer.vocab.sep in s]
        assert question.isdisjoint(needle.tolist())
        # The needle holds the answer; the question is reached only through the binding.
        answer_text = set(ex.scored.tolist())
        assert answer_text <= set(needle.tolist())
        assert set(ex.prompt[q0 + 1 : q1].tolist()) <= set(binding.tolist())
    # Literal retrieval, for contrast: the question repeats the needle's key.
    ex = render("multikey", 400, 0.5, 0, corpus, tokenizer=tokenizer)
    (q0, q1) = ex.segments["end"][0]
    (a, b) = ex.segments["needle"][0]
    assert not set(ex.prompt[q0:q1].tolist()).isdisjoint(ex.prompt[a:b].tolist())


@pytest.mark.parametrize("tokenizer_name", ["bytes", "bpe"])
@pytest.mark.parametrize("task", ["mqar", "aliaskey", "selcopy", "fuzzyrecall"])
def test_render_new_families_are_reproducible_in_both_vocabularies(
    task, tokenizer_name, bpe, filler
):
    tokenizer = BYTE_TOKENIZER if tokenizer_name == "bytes" else bpe
    corpus = filler if tokenizer_name == "bytes" else _retokenize(filler, bpe)
    a = render(task, 300, 0.4, 9, corpus, tokenizer=tokenizer)
    b = render(task, 300, 0.4, 9, corpus, tokenizer=tokenizer)
    c = render(task, 300, 0.4, 10, corpus, tokenizer=tokenizer)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.segments == b.segments and a.prompt_len == b.prompt_len
    assert not np.array_equal(a.tokens, c.tokens)
    assert len(a.tokens) == 300 and (a.tokens < tokenizer.vocab.size).all()


def test_render_prefix_distractors_zero_renders_what_it_rendered_before(filler):
    # prefix_distractors: 0 draws nothing more: the calibrated examples stay the same.
    for task in ("passkey", "multikey", "multivalue", "multiquery"):
        plain = render(task, 300, 0.3, 4, filler)
        zero = render(task, 300, 0.3, 4, filler, prefix_distractors=0)
        np.testing.assert_array_equal(plain.tokens, zero.tokens)


def test_render_prefix_distractor_keys_share_the_queried_keys_prefix(filler):
    ex = render("passkey", 400, 0.5, 3, filler, key_kind="word", prefix_distractors=5)
    pieces = _pieces(BYTE_TOKENIZER, ex.prompt)
    key = pieces[-1]
    needles = [n[0] for n in _bracketed(pieces[:-2], OPEN, CLOSE)]
    assert len(needles) == 6
    keys = [n[:4] for n in needles]  # every word key has 4 letters
    assert keys.count(key) == 1 and len(set(keys)) == 6
    assert all(k[:3] == key[:3] for k in keys)


# Deterministic readers with a bounded memory, the stand-ins for a model whose state is
# limited: a fixed number of slots addressed by a hash of the text (like a fixed-state
# mixer's associative memory), and a reader that matches keys by their prefix only.
def _slot(text: str, slots: int) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(text)) % slots


def _memory_reader(task: str, pieces: list, params: dict, slots: int) -> list:
    """The answer a reader gives when it stores each association in one of ``slots`` slots
    (a later association in the same slot overwrites the earlier one)."""
    if task == "mqar":
        q = len(pieces) - 1
        asked = []
        while pieces[q - 1] == QUERY:
            asked.insert(0, pieces[q])
            q -= 2
        (block,) = [n[0] for n in _bracketed(pieces[: q + 1], OPEN, CLOSE)]
        step = 2 + params["value_len"]
        memory: dict[int, tuple[str, str]] = {}
        for i in range(0, len(block), step):
            memory[_slot(block[i : i + 2], slots)] = (block[i : i + 2], block[i + 2 : i + step])
        out = []
        for key in asked:
            stored = memory.get(_slot(key, slots))
            out += [stored[1] if stored and stored[0] == key else "?", SEP]
        return out[:-1]
    if task == "aliaskey":
        alias = pieces[-1]
        memory = {}
        for s in _bracketed(pieces[:-2], OPEN, CLOSE):
            name = s[0] if len(s) == 2 else s[0].rstrip("0123456789")
            memory[_slot(name, slots)] = (name, s[1] if len(s) == 2 else s[0][len(name) :])
        stored = memory.get(_slot(alias, slots))
        if not stored or stored[0] != alias:
            return ["?"]
        key = stored[1]
        stored = memory.get(_slot(key, slots))
        return [stored[1] if stored and stored[0] == key else "?"]
    if task == "selcopy":
        items = [pieces[i + 1][: params["value_len"]] for i, p in enumerate(pieces) if p == SEP]
        kept = {_slot(v + str(k), slots): k for k, v in enumerate(items)}  # position-tagged
        out = []
        for k, item in enumerate(items):
            out += [item if kept.get(_slot(item + str(k), slots)) == k else "?", SEP]
        return out[:-1]
    raise AssertionError(task)


def _prefix_reader(pieces: list) -> list:
    """Matches the queried key on all but its last character; answers the first match."""
    key = pieces[-1]
    for n in _bracketed(pieces[:-2], OPEN, CLOSE):
        if n[0][: len(key) - 1] == key[:-1]:
            return [n[0][len(key) :]]
    return ["?"]


def _accuracy(task: str, reader, n_examples: int = 60, length: int = 600, **params) -> float:
    full = task_params(task, **params)
    hits = 0
    for s in range(n_examples):
        ex = render(task, length, 0.5, example_seed(0, length, s), _FILLER, **params)
        pieces = _pieces(BYTE_TOKENIZER, ex.prompt)
        hits += reader(task, pieces, full) == _pieces(BYTE_TOKENIZER, ex.scored)
    return hits / n_examples


_FILLER = encode("x = Foo(12, 'Key 4821')\nfor K in range(9):\n    print(K, 7)\n" * 200)


@pytest.mark.parametrize(
    "task, parameter, levels, fixed",
    [
        ("mqar", "n_pairs", (2, 8, 16, 32), {"key_vocab": 200, "n_queries": 2}),
        ("aliaskey", "n_needles", (1, 3, 6, 12), {}),
        ("selcopy", "n_items", (1, 4, 8, 16), {}),
    ],
)
def test_difficulty_parameter_lowers_a_bounded_memory_readers_accuracy(
    task, parameter, levels, fixed
):
    from space.tasks import DIFFICULTY

    assert DIFFICULTY[task] == parameter

    def reader(task, pieces, params):
        return _memory_reader(task, pieces, params, slots=16)

    acc = [_accuracy(task, reader, **fixed, **{parameter: level}) for level in levels]
    assert all(a >= b for a, b in zip(acc, acc[1:], strict=False)), acc
    assert acc[0] >= 0.9 and acc[-1] <= 0.5, acc
    # An unbounded reader solves every level: the difficulty is in the memory, not a bug.
    for level in levels:
        exact = _accuracy(task, lambda t, p, f: solve(t, p, f), **fixed, **{parameter: level})
        assert exact == 1.0


def test_prefix_distractors_lower_a_prefix_matchers_accuracy():
    acc = [
        _accuracy(
            "passkey",
            lambda t, p, f: _prefix_reader(p),
            key_kind="word",
            prefix_distractors=d,
        )
        for d in (0, 1, 3, 7)
    ]
    assert all(a > b for a, b in zip(acc, acc[1:], strict=False)), acc
    assert acc[0] == 1.0 and acc[-1] <= 0.3, acc


def test_sweep_file_selects_the_new_families_and_checks_their_parameters():
    from space.errors import ConfigError
    from space.schema import parse_config

    base = {
        "study": {"name": "t", "trials": 1},
        "space": {"global_every": {"choice": [1, 4]}},
        "model": {"layers": 4, "d_model": 64, "heads": 4, "mlp_hidden": 128},
        "train": {
            "seq_len": 128,
            "batch_size": 2,
            "steps": 10,
            "task_mix": {"mqar": 1.0},
            "task_params": {"mqar": {"n_pairs": 12}, "passkey": {"prefix_distractors": 2}},
        },
        "score": {"tasks": ["mqar", "aliaskey", "selcopy", "passkey"]},
    }
    config = parse_config(base)
    assert config.score.families == ("mqar", "aliaskey", "selcopy", "passkey")
    bad = {**base, "train": {**base["train"], "task_params": {"mqar": {"n_pairs": 80}}}}
    with pytest.raises(ConfigError) as info:
        parse_config(bad)
    problems = dict(info.value.problems)
    assert "exceeds key_vocab" in problems["train.task_params.mqar"]
    bad = {**base, "train": {**base["train"], "task_params": {"aliaskey": {"value_kind": "uuid"}}}}
    with pytest.raises(ConfigError) as info:
        parse_config(bad)
    assert "unknown parameter" in dict(info.value.problems)["train.task_params.aliaskey"]
    bad = {**base, "score": {"tasks": ["mqar", "fuzzy"]}}
    with pytest.raises(ConfigError) as info:
        parse_config(bad)
    assert any(path.startswith("score.tasks") for path, _ in info.value.problems)


# --------------------------------------------------------------------------- fuzzy recall


def _fuzzy_reader(pieces: list, params: dict, tolerance: int) -> list:
    """Answers the value of the first stored key within ``tolerance`` substituted letters of
    the question's key (0: exact match only)."""
    asked, n = pieces[-1], params["key_len"]
    for s in _bracketed(pieces[:-2], OPEN, CLOSE):
        if _mismatches(s[0][:n], asked) <= tolerance:
            return [s[0][n:]]
    return ["?"]


def test_fuzzyrecall_noise_chars_defeats_readers_that_tolerate_less_noise():
    from space.tasks import DIFFICULTY

    assert DIFFICULTY["fuzzyrecall"] == "noise_chars"
    levels = (0, 1, 2, 3)
    for tolerance in (0, 1, 2):
        acc = [
            _accuracy(
                "fuzzyrecall",
                lambda t, p, f, tol=tolerance: _fuzzy_reader(p, f, tol),
                key_len=8,
                n_pairs=6,
                noise_chars=level,
            )
            for level in levels
        ]
        # Exact below the reader's tolerance, lost beyond it: the noise is what is hard.
        assert acc == [1.0 if level <= tolerance else 0.0 for level in levels], (tolerance, acc)
    for level in levels:  # the nearest stored key always answers right
        assert (
            _accuracy(
                "fuzzyrecall",
                lambda t, p, f: solve(t, p, f),
                key_len=8,
                n_pairs=6,
                noise_chars=level,
            )
            == 1.0
        )


@pytest.mark.parametrize("tokenizer_name", ["bytes", "bpe"])
def test_render_fuzzyrecall_question_is_the_asked_key_with_noise_chars_substituted(
    tokenizer_name, bpe, filler
):
    tokenizer = BYTE_TOKENIZER if tokenizer_name == "bytes" else bpe
    corpus = filler if tokenizer_name == "bytes" else _retokenize(filler, bpe)
    for noise in (0, 1, 2):
        for seed in range(10):
            ex = render(
                "fuzzyrecall", 300, 0.5, seed, corpus, tokenizer=tokenizer, noise_chars=noise
            )
            pieces = _pieces(tokenizer, ex.prompt)
            (a, b) = ex.segments["needle"][0]  # the asked needle: OPEN key value CLOSE
            needle = _pieces(tokenizer, ex.prompt[a:b])
            assert needle[0] == OPEN and needle[-1] == CLOSE
            key = needle[1][:6]
            assert _mismatches(key, pieces[-1]) == noise
            assert needle[1][6:] == _pieces(tokenizer, ex.scored)[0]


def test_fuzzyrecall_noise_chars_must_leave_the_asked_key_nearest():
    from space.errors import ConfigError
    from space.schema import parse_config

    assert task_params("fuzzyrecall", key_len=7, noise_chars=3)["noise_chars"] == 3
    from workers.calibrate import ladder

    # score.calibrate's ladder starts at exact recall and stops where the key is no longer
    # the nearest.
    assert ladder("fuzzyrecall", {}, 256) == (0, 1, 2)
    assert ladder("fuzzyrecall", {"key_len": 12}, 256) == (0, 1, 2, 4)
    with pytest.raises(ValueError, match="noise_chars=3 must be < key_len / 2"):
        task_params("fuzzyrecall", key_len=6, noise_chars=3)
    base = {
        "study": {"name": "t", "trials": 1},
        "space": {"global_every": {"choice": [1, 4]}},
        "model": {"layers": 4, "d_model": 64, "heads": 4, "mlp_hidden": 128},
        "train": {
            "seq_len": 128,
            "batch_size": 2,
            "steps": 10,
            "task_mix": {"fuzzyrecall": 1.0},
            "task_params": {"fuzzyrecall": {"noise_chars": 2}},
        },
        "score": {"tasks": ["fuzzyrecall"]},
    }
    assert parse_config(base).score.families == ("fuzzyrecall",)
    bad = {**base, "train": {**base["train"], "task_params": {"fuzzyrecall": {"noise_chars": 5}}}}
    with pytest.raises(ConfigError) as info:
        parse_config(bad)
    assert "key_len" in dict(info.value.problems)["train.task_params.fuzzyrecall"]
