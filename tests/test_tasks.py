"""Retrieval tasks (needle format, depth, segments) and training batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.batches import make_batch
from workers.tasks import (
    SEGMENTS,
    TASKS,
    answer_len,
    example_seed,
    min_length,
    render,
    segment_labels,
)
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
