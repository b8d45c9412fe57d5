"""Every score on a known answer: fake models whose right score is known by construction."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from space.layers import (
    AttentionSink,
    LayerKind,
    LayerSpec,
    ModelShape,
    Position,
    QKNorm,
    WindowKind,
    layer_kind,
)
from workers.attention import window_mask
from workers.attention_mass import attention_mass
from workers.decoding import greedy_decode
from workers.scores import (
    NiahResult,
    acc_at,
    answer_correct,
    answer_likelihood,
    bits_per_byte,
    long_acc,
    niah_grid,
)
from workers.serving_cost import attention_flops_per_token, kv_cache_bytes
from workers.tasks import NEEDLE_TASKS, SEGMENTS, render
from workers.tokens import NEEDLE_CLOSE, NEEDLE_OPEN, VOCAB_SIZE, encode

# --------------------------------------------------------------------------- fakes


class UniformModel(torch.nn.Module):
    """Zero logits: every token equally likely."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*idx.shape, VOCAB_SIZE)


class NextByteModel(torch.nn.Module):
    """Knows a stream where each token is the previous one plus 1 (mod 256)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*idx.shape, VOCAB_SIZE)
        logits.scatter_(-1, ((idx + 1) % 256)[..., None], 60.0)
        return logits


def _oracle_answer(row: list[int], reach: int | None) -> list[int]:
    """The answer to the last query in ``row``, seeing only needles that start before ``reach``."""
    q = max(i for i, t in enumerate(row) if t == NEEDLE_OPEN)
    key = row[q + 1]
    answer = []
    for o in range(q):
        if row[o] == NEEDLE_OPEN and row[o + 1] == key and (reach is None or o < reach):
            close = row.index(NEEDLE_CLOSE, o)
            answer += row[o + 2 : close + 1]
    return answer


class OracleModel(torch.nn.Module):
    """Answers the query from the needles (causally: only the tokens so far)."""

    def __init__(self, reach: int | None = None):
        super().__init__()
        self.reach = reach

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*idx.shape, VOCAB_SIZE)
        for b, row in enumerate(idx.tolist()):
            if NEEDLE_OPEN not in row[:-1]:
                continue
            q = max(i for i, t in enumerate(row) if t == NEEDLE_OPEN)
            answer = _oracle_answer(row, self.reach)
            k = len(row) - 1 - (q + 1)  # answer tokens already decoded
            if 0 <= k < len(answer):
                logits[b, -1, answer[k]] = 10.0
        return logits


class PeekingModel(torch.nn.Module):
    """Non-causal cheat: at position j it 'predicts' the input token at j + 1."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*idx.shape, VOCAB_SIZE)
        logits[:, :-1].scatter_(-1, idx[:, 1:, None], 10.0)
        return logits


@pytest.fixture(scope="module")
def filler() -> np.ndarray:
    return encode("def f(x):\n    return x + 1  # Z 42\n" * 300)


# --------------------------------------------------------------------------- bits per byte


def test_bits_per_byte_uniform_model_is_log2_vocab(filler):
    bpb = bits_per_byte(UniformModel(), filler, 32, n_windows=5, batch_size=2)
    assert bpb == pytest.approx(math.log2(VOCAB_SIZE), rel=1e-6)


def test_bits_per_byte_knowing_model_is_near_zero():
    tokens = (np.arange(5000) % 256).astype(np.uint16)
    bpb = bits_per_byte(NextByteModel(), tokens, 64, n_windows=7, batch_size=3)
    assert 0.0 <= bpb < 1e-6


def test_bits_per_byte_scores_only_known_windows():
    # Known stream in the first half, noise in the second: windows are evenly spaced,
    # so exactly the windows that lie in the known half score ~0 and the others do not.
    rng = np.random.default_rng(0)
    known = (np.arange(1000) % 256).astype(np.uint16)
    tokens = np.concatenate([known, rng.integers(0, 256, 1000).astype(np.uint16)])
    # Windows of 100 + 1 at starts 0, 633, 1266, 1899: the first two are known.
    bpb = bits_per_byte(NextByteModel(), tokens, 100, n_windows=4, batch_size=4)
    per_window_noise = bits_per_byte(NextByteModel(), tokens[1266:], 100, n_windows=2)
    assert bpb == pytest.approx(per_window_noise / 2, rel=1e-6)


def test_bits_per_byte_rejects_too_few_tokens():
    with pytest.raises(ValueError, match="cannot fill"):
        bits_per_byte(UniformModel(), np.zeros(10, dtype=np.uint16), 10, n_windows=1)


# --------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("task", NEEDLE_TASKS)
def test_niah_grid_oracle_scores_one_and_uniform_scores_zero(task, filler):
    kw = dict(task=task, lengths=[64, 128], depths=(0.0, 0.5, 1.0), samples=3, seed=1)
    oracle = niah_grid(OracleModel(), filler, **kw, task_params={"value_len": 3})
    assert oracle.acc == ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    uniform = niah_grid(UniformModel(), filler, **kw, task_params={"value_len": 3})
    assert uniform.acc == ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))


def test_niah_grid_rows_are_lengths_and_columns_depths(filler):
    # The oracle sees only needles in the first 64 tokens: the long row fails at depth 1 only.
    result = niah_grid(
        OracleModel(reach=64),
        filler,
        lengths=[64, 256],
        depths=(0.0, 1.0),
        samples=4,
        seed=0,
        graded=False,
    )
    assert result.lengths == (64, 256) and result.depths == (0.0, 1.0)
    assert result.acc == ((1.0, 1.0), (1.0, 0.0))
    assert acc_at(result, 64) == 1.0 and acc_at(result, 256) == 0.5
    assert long_acc(result, train_len=64) == 0.5
    assert result.to_dict() == {
        "lengths": [64, 256],
        "depths": [0.0, 1.0],
        "acc": [[1.0, 1.0], [1.0, 0.0]],
    }
    assert NiahResult.from_dict(result.to_dict()).acc == result.acc
    with pytest.raises(ValueError, match="beyond"):
        long_acc(result, train_len=256)
    with pytest.raises(ValueError, match="not in the grid"):
        acc_at(result, 128)


def test_niah_grid_is_reproducible_and_counts_partial_cells(filler):
    class HalfOracle(OracleModel):
        """Right only when the key letter is even (about half of the needles)."""

        def forward(self, idx):
            logits = super().forward(idx)
            q = [max(i for i, t in enumerate(r) if t == NEEDLE_OPEN) for r in idx.tolist()]
            odd = torch.tensor([idx[b, q_ + 1].item() % 2 == 1 for b, q_ in enumerate(q)])
            logits[odd] = 0.0
            return logits

    a = niah_grid(
        HalfOracle(), filler, lengths=[96], depths=(0.5,), samples=24, seed=5, batch_size=7
    )
    b = niah_grid(HalfOracle(), filler, lengths=[96], depths=(0.5,), samples=24, seed=5)
    assert a.acc == b.acc
    assert 0.0 < a.acc[0][0] < 1.0
    assert a.acc[0][0] * 24 == pytest.approx(round(a.acc[0][0] * 24))


def test_answer_correct_uses_greedy_decoding_so_peeking_cannot_score(filler):
    examples = [render("passkey", 80, 0.5, s, filler) for s in range(4)]
    assert not answer_correct(PeekingModel(), examples).any()
    assert answer_correct(OracleModel(), examples).all()
    prompts = torch.from_numpy(np.stack([e.prompt.astype(np.int64) for e in examples]))
    decoded = greedy_decode(OracleModel(), prompts, len(examples[0].answer))
    np.testing.assert_array_equal(decoded.numpy(), np.stack([e.answer for e in examples]))


# --------------------------------------------------------------------------- serving cost


def _spec(i: int, kind: LayerKind, position: Position, window: int | None) -> LayerSpec:
    return LayerSpec(
        index=i,
        kind=kind,
        position=position,
        rope_base=10000.0 if position is Position.ROPE else None,
        window_tokens=window,
        qk_norm=QKNorm.NONE,
        temperature=None,
    )


def _shape(n_kv_heads: int = 4) -> ModelShape:
    return ModelShape(
        n_layers=4, d_model=128, n_heads=4, n_kv_heads=n_kv_heads, mlp_hidden=512, vocab_size=264
    )


FULL = [_spec(i, LayerKind.GLOBAL, Position.ROPE, None) for i in range(4)]
WINDOWED = [_spec(i, LayerKind.LOCAL, Position.ROPE, 64) for i in range(4)]
# RNoPE-SWA 3:1: layers 0, 1, 2 local RoPE window 64; layer 3 global NoPE.
MIXED = [_spec(i, LayerKind.LOCAL, Position.ROPE, 64) for i in range(3)] + [
    _spec(3, LayerKind.GLOBAL, Position.NOPE, None)
]


def test_kv_cache_bytes_hand_built_layouts():
    ctx = 131072
    per_token_layer = 2 * 4 * 32 * 2  # K and V, 4 kv heads, head_dim 32, 2 bytes
    assert kv_cache_bytes(_shape(), FULL, ctx) == 4 * per_token_layer * ctx == 268_435_456
    assert kv_cache_bytes(_shape(), WINDOWED, ctx) == 4 * per_token_layer * 64
    assert kv_cache_bytes(_shape(), MIXED, ctx) == per_token_layer * (3 * 64 + ctx)
    # GQA: one kv head keeps a quarter.
    assert kv_cache_bytes(_shape(n_kv_heads=1), FULL, ctx) == 268_435_456 // 4
    # A window longer than the context keeps only the context; fp32 doubles it.
    assert kv_cache_bytes(_shape(), WINDOWED, 10) == 4 * per_token_layer * 10
    assert kv_cache_bytes(_shape(), FULL, 1000, dtype_bytes=4) == 2 * kv_cache_bytes(
        _shape(), FULL, 1000
    )


def _brute_flops(shape: ModelShape, layers: list[LayerSpec], n: int) -> float:
    total = 0
    for spec in layers:
        w = spec.window_tokens or n
        for i in range(n):
            keys = min(i + 1, w)
            total += 2 * shape.n_heads * shape.head_dim * keys  # QK^T, 2 FLOPs per MAC
            total += 2 * shape.n_heads * shape.head_dim * keys  # AV
    return total / n


def test_attention_flops_per_token_hand_built_layouts():
    shape = _shape()
    # Full attention over 4 tokens: 1, 2, 3, 4 keys -> mean 2.5 per layer.
    assert attention_flops_per_token(shape, FULL[:1], 4) == 4 * 4 * 32 * 2.5
    # Window 2 over 4 tokens: 1, 2, 2, 2 keys -> mean 1.75.
    w2 = [_spec(0, LayerKind.LOCAL, Position.ROPE, 2)]
    assert attention_flops_per_token(shape, w2, 4) == 4 * 4 * 32 * 1.75
    for layers in (FULL, WINDOWED, MIXED):
        for n in (1, 63, 64, 65, 300):
            assert attention_flops_per_token(shape, layers, n) == pytest.approx(
                _brute_flops(shape, layers, n)
            )
    # GQA shares K/V but every query head still does the work.
    assert attention_flops_per_token(_shape(1), MIXED, 300) == attention_flops_per_token(
        shape, MIXED, 300
    )
    # Long context: the 3:1 hybrid costs about a quarter of full attention.
    ratio = attention_flops_per_token(shape, MIXED, 131072) / attention_flops_per_token(
        shape, FULL, 131072
    )
    assert 0.25 < ratio < 0.26


CHUNKED = [replace(spec, window_kind=WindowKind.CHUNKED) for spec in WINDOWED]


def test_kv_cache_bytes_chunked_and_sink_layers():
    ctx = 131072
    # a chunked layer holds at most its chunk (the one being filled): as much as a window
    assert kv_cache_bytes(_shape(), CHUNKED, ctx) == kv_cache_bytes(_shape(), WINDOWED, ctx)
    assert kv_cache_bytes(_shape(), CHUNKED, 10) == kv_cache_bytes(_shape(), WINDOWED, 10)
    # sink logits are parameters, not cache
    sinks = [replace(spec, attention_sink=AttentionSink.LEARNED) for spec in MIXED]
    assert kv_cache_bytes(_shape(), sinks, ctx) == kv_cache_bytes(_shape(), MIXED, ctx)


def test_attention_flops_per_token_chunked_counts_the_visible_keys_of_the_mask():
    shape = _shape()
    # chunks of 2 over 5 tokens: 1, 2, 1, 2, 1 keys -> mean 1.4
    c2 = [replace(_spec(0, LayerKind.LOCAL, Position.ROPE, 2), window_kind=WindowKind.CHUNKED)]
    assert attention_flops_per_token(shape, c2, 5) == pytest.approx(4 * 4 * 32 * 1.4)
    for n in (1, 63, 64, 65, 300):
        # the reference: keys each query sees in the mask the kernels use
        keys = float(window_mask(n, 64, window_kind=WindowKind.CHUNKED).sum())
        assert attention_flops_per_token(shape, CHUNKED, n) == pytest.approx(
            4 * (4 * 4 * 32) * keys / n
        )
    # long context: chunks cost about half a sliding window of the same size
    ratio = attention_flops_per_token(shape, CHUNKED, 131072) / attention_flops_per_token(
        shape, WINDOWED, 131072
    )
    assert 0.5 < ratio < 0.51


# --------------------------------------------------------------------------- attention mass


class HandMadeAttention(torch.nn.Module):
    """Returns hand-made attention maps for passkey prompts (needle = first OPEN ... CLOSE).

    layer 0: everything on token 0 (Begin);
    layer 1: uniform over the whole prompt;
    layer 2: head 0 spread evenly over the needle, head 1 on the last token (End);
    layer 3: 0.25 on token 1 (Begin), 0.75 on the token right after the needle (Context).
    """

    def forward(self, idx: torch.Tensor, return_attn: bool = False):
        B, T = idx.shape
        maps = [torch.zeros(B, 2, T, T) for _ in range(4)]
        for b, row in enumerate(idx.tolist()):
            start = row.index(NEEDLE_OPEN)
            stop = row.index(NEEDLE_CLOSE) + 1
            maps[0][b, :, -1, 0] = 1.0
            maps[1][b, :, -1, :] = 1.0 / T
            maps[2][b, 0, -1, start:stop] = 1.0 / (stop - start)
            maps[2][b, 1, -1, T - 1] = 1.0
            maps[3][b, :, -1, 1] = 0.25
            maps[3][b, :, -1, stop] = 0.75
        logits = torch.zeros(B, T, VOCAB_SIZE)
        return (logits, maps) if return_attn else logits


def test_attention_mass_from_hand_made_maps_is_exact(filler):
    examples = [render("passkey", 100, d, 3, filler) for d in (0.2, 0.8)] + [
        render("passkey", 140, 0.5, 4, filler)
    ]
    mass = attention_mass(HandMadeAttention(), examples, MIXED, batch_size=2)
    assert mass["segments"] == list(SEGMENTS)
    layer = {e["index"]: e for e in mass["per_layer"]}
    assert [layer[i]["kind"] for i in range(4)] == ["local_rope"] * 3 + ["global_nope"]
    assert layer[0]["begin"] == pytest.approx(1.0)
    # Uniform: each segment's share is its size over the prompt length, averaged over examples.
    expected_uniform = {
        s: np.mean([sum(b - a for a, b in e.segments[s]) / e.prompt_len for e in examples])
        for s in SEGMENTS
    }
    for s in SEGMENTS:
        assert layer[1][s] == pytest.approx(expected_uniform[s])
    assert (layer[2]["needle"], layer[2]["end"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert (layer[3]["begin"], layer[3]["context"]) == (pytest.approx(0.25), pytest.approx(0.75))
    for entry in mass["per_layer"]:
        assert sum(entry[s] for s in SEGMENTS) == pytest.approx(1.0)
    # Per kind: the mean of that kind's layers.
    local = mass["per_kind"]["local_rope"]
    for s in SEGMENTS:
        assert local[s] == pytest.approx(np.mean([layer[i][s] for i in range(3)]))
    assert mass["per_kind"]["global_nope"] == {s: layer[3][s] for s in SEGMENTS}


def test_layer_kind_names_follow_the_spec():
    assert [layer_kind(s) for s in MIXED] == ["local_rope"] * 3 + ["global_nope"]
    assert layer_kind(FULL[0]) == "global_rope"


class NoStopOracle(OracleModel):
    """The oracle's values, but a digit where the closing marker of the last value goes
    (what a tiny model that has not learned to stop does)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = super().forward(idx)
        for b, row in enumerate(idx.tolist()):
            q = max(i for i, t in enumerate(row) if t == NEEDLE_OPEN)
            if len(row) - 1 - (q + 1) == len(_oracle_answer(row, self.reach)) - 1:
                logits[b, -1] = 0.0
                logits[b, -1, ord("7")] = 10.0
        return logits


class OffByOneDigit(OracleModel):
    """The oracle, except that the value's last digit is always wrong."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = super().forward(idx)
        for b, row in enumerate(idx.tolist()):
            q = max(i for i, t in enumerate(row) if t == NEEDLE_OPEN)
            if len(row) - 1 - (q + 1) == 3:  # the 4th digit of the value
                digit = int(logits[b, -1].argmax())
                logits[b, -1] = 0.0
                logits[b, -1, ord("0") + (digit - ord("0") + 1) % 10] = 10.0
        return logits


@pytest.mark.parametrize("task", ["passkey", "multikey", "multivalue"])
def test_answer_correct_scores_the_value_not_the_final_stop_marker(filler, task):
    examples = [render(task, 120, 0.5, s, filler) for s in range(4)]
    assert answer_correct(NoStopOracle(), examples).all()
    assert not answer_correct(OffByOneDigit(), examples).any()


# --------------------------------------------------------------------------- any family, any
# tokenizer: scores compare decoded text


@pytest.fixture(scope="module")
def bpe():
    from workers.data import load_corpus
    from workers.tokenizer import train_bpe

    corpus = load_corpus(max_tokens=300_000)
    text = bytes(np.asarray(corpus.train[corpus.train < 256], dtype=np.uint8)).decode(
        "utf-8", "replace"
    )
    return train_bpe([text[i : i + 5000] for i in range(0, len(text), 5000)], 512)


def _tokenizer_and_filler(name: str, bpe, filler):
    from workers.tokenizer import BYTE_TOKENIZER

    if name == "bytes":
        return BYTE_TOKENIZER, filler
    text = bytes(filler.astype(np.uint8)).decode()
    return bpe, bpe.encode(text).astype(np.uint16)


class CopyModel(torch.nn.Module):
    """Knows the examples' answers: at every answer position it predicts the next answer
    token as ``emit(example)`` spells it (the example's own tokens by default)."""

    def __init__(self, examples, vocab_size: int, emit=None):
        super().__init__()
        self.examples = examples
        self.vocab_size = vocab_size
        self.emit = emit or (lambda e: e.answer.tolist())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*idx.shape, self.vocab_size)
        for b, row in enumerate(idx.tolist()):
            e = next(
                e
                for e in self.examples
                if len(row) >= e.prompt_len and row[: e.prompt_len] == e.prompt.tolist()
            )
            answer = self.emit(e)
            for j in range(e.prompt_len - 1, len(row)):
                k = j - (e.prompt_len - 1)
                if k < len(answer):
                    logits[b, j, answer[k]] = 30.0
        return logits


class NoiseModel(torch.nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.randn(*idx.shape, self.vocab_size, generator=self.gen) * 3.0


ALL_FAMILIES = [
    "passkey",
    "multikey",
    "multivalue",
    "multiquery",
    "vartrack",
    "commonwords",
    "mqar",
    "aliaskey",
    "selcopy",
    "fuzzyrecall",
]


@pytest.mark.parametrize("tokenizer_name", ["bytes", "bpe"])
@pytest.mark.parametrize("task", ALL_FAMILIES)
def test_answer_scores_copying_the_answer_is_one_and_noise_is_zero(
    task, tokenizer_name, bpe, filler
):
    tokenizer, tokens = _tokenizer_and_filler(tokenizer_name, bpe, filler)
    examples = [
        render(task, 300, d, s, tokens, tokenizer=tokenizer) for s, d in enumerate((0.1, 0.5, 0.9))
    ]
    V = tokenizer.vocab.size
    copy = CopyModel(examples, V)
    assert answer_correct(copy, examples, tokenizer=tokenizer).all()
    nll, acc = answer_likelihood(copy, examples, tokenizer=tokenizer)
    assert (nll < 1e-6).all() and (acc == 1.0).all()
    noise = NoiseModel(V)
    assert not answer_correct(noise, examples, tokenizer=tokenizer).any()
    nll, acc = answer_likelihood(noise, examples, tokenizer=tokenizer)
    assert (nll > 1.0).all() and (acc < 0.5).all()

    # One wrong character in the answer's text makes it wrong.
    def wrong_last_character(e):
        ids = e.answer.tolist()
        k = max(i for i, t in enumerate(ids[:-1]) if t < tokenizer.vocab.text_size)
        text = tokenizer.text_bytes([ids[k]]).decode()
        swapped = text[:-1] + ("x" if text[-1] != "x" else "y")
        return ids[:k] + tokenizer.encode(swapped).tolist() + ids[k + 1 :]

    wrong = CopyModel(examples, V, wrong_last_character)
    assert not answer_correct(wrong, examples, tokenizer=tokenizer).any()


def test_answer_correct_accepts_another_tokenization_of_the_same_text(bpe, filler):
    tokenizer, tokens = _tokenizer_and_filler("bpe", bpe, filler)
    examples = [
        render("multiquery", 300, 0.5, s, tokens, tokenizer=tokenizer, key_kind="word")
        for s in range(4)
    ]

    def byte_by_byte(e):  # the same text, one token per byte (never how BPE encodes it)
        ids = []
        for t in e.answer.tolist():
            if t >= tokenizer.vocab.text_size:
                ids.append(t)
            else:
                for b in tokenizer.text_bytes([t]):
                    ids.extend(tokenizer.encode(bytes([b]).decode()).tolist())
        return ids

    assert any(len(byte_by_byte(e)) > len(e.answer) for e in examples)
    model = CopyModel(examples, tokenizer.vocab.size, byte_by_byte)
    assert answer_correct(model, examples, tokenizer=tokenizer).all()


def test_answer_likelihood_is_nats_per_answer_byte():
    # A model that gives every answer token probability 1/2: each passkey value is 4
    # digits (4 bytes, 4 tokens), so 4 ln 2 nats over 4 bytes.
    examples = [render("passkey", 64, 0.5, s, encode("abc " * 100)) for s in range(3)]

    class Half(torch.nn.Module):
        def forward(self, idx):
            logits = torch.full((*idx.shape, VOCAB_SIZE), -1e9)
            for b, row in enumerate(idx.tolist()):
                e = next(e for e in examples if row[: e.prompt_len] == e.prompt.tolist())
                for j in range(e.prompt_len - 1, len(row)):
                    k = j - (e.prompt_len - 1)
                    if k < len(e.answer):
                        logits[b, j, e.answer[k]] = 0.0
                        logits[b, j, (e.answer[k] + 1) % 256] = 0.0  # the rival: p = 1/2
            return logits

    nll, acc = answer_likelihood(Half(), examples)
    assert nll == pytest.approx(np.full(3, math.log(2)))
    assert (acc == 1.0).all()  # a tie goes to the lower id: the right one here


class Dyadic(torch.nn.Module):
    """Knows ``tokens``: gives the token at input position j probability 2 ** -(its bytes,
    at least 1), the rest to PAD."""

    def __init__(self, tokens: np.ndarray, tokenizer) -> None:
        super().__init__()
        self.tokens, self.tokenizer = tokens, tokenizer

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        vocab = self.tokenizer.vocab
        logits = torch.full((*idx.shape, vocab.size), -1e9, dtype=torch.float64)
        for j in range(idx.shape[1]):
            target = int(self.tokens[j])
            bits = max(1, self.tokenizer.count_bytes(np.array([target])))
            logits[:, j, target] = 0.0
            logits[:, j, vocab.pad] = math.log(2**bits - 1)
        return logits


def test_bits_per_byte_counts_utf8_bytes_of_text_whatever_the_tokenizer(bpe):
    # Each target costs one bit per byte of its text under any tokenizer; the DOC
    # separator costs a bit but holds no byte of text.
    from workers.tokenizer import BYTE_TOKENIZER

    text = "def f(x):\n    return 'héllo wörld' + x  # ünïcode\n" * 40
    n_bytes = len(text.encode())
    for tokenizer in (BYTE_TOKENIZER, bpe):
        tokens = np.concatenate([tokenizer.encode(text), [tokenizer.vocab.doc]])
        bpb = bits_per_byte(
            Dyadic(tokens, tokenizer),
            np.concatenate([tokens, [tokenizer.vocab.doc]]),
            len(tokens),
            n_windows=1,
            count_bytes=tokenizer.count_bytes,
            doc=tokenizer.vocab.doc,
        )
        # Scored targets: tokens[1:] (the first is predicted from DOC alone), so every
        # byte but the first token's, and the final DOC.
        first = tokenizer.count_bytes(tokens[:1])
        assert bpb == pytest.approx((n_bytes - first + 1) / (n_bytes - first), rel=1e-6)


# --------------------------------------------------------------------------- loss by position


class KnowsTheFirstTokens(torch.nn.Module):
    """NextByteModel's knowledge up to position ``reach`` of a row, uniform after it."""

    def __init__(self, reach: int):
        super().__init__()
        self.reach = reach

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*idx.shape, VOCAB_SIZE)
        logits.scatter_(-1, ((idx + 1) % 256)[..., None], 60.0)
        logits[:, self.reach :] = 0.0
        return logits


def test_bits_per_byte_by_position_splits_the_window_at_multiples_of_T():
    from workers.scores import bits_per_byte_by_position

    stream = (np.arange(5000) % 256).astype(np.uint16)  # each token the previous one + 1
    T = 32
    # Input position j predicts text position j + 1; the model knows positions up to T.
    got = bits_per_byte_by_position(KnowsTheFirstTokens(T), stream, 4 * T, T, n_windows=4)
    assert sorted(got) == [1, 2, 4]
    assert got[1] < 1e-6  # every target up to T is known
    assert math.isclose(got[4], math.log2(VOCAB_SIZE), rel_tol=1e-6)  # none past 2T
    # Bucket 2 is (T, 2T]: none known either, and the mean over the window is in between.
    assert math.isclose(got[2], math.log2(VOCAB_SIZE), rel_tol=1e-6)
    whole = bits_per_byte(KnowsTheFirstTokens(T), stream, 4 * T, n_windows=4)
    assert got[1] < whole < got[4]
    with pytest.raises(ValueError, match="multiple"):
        bits_per_byte_by_position(UniformModel(), stream, 3 * T + 1, T)


def test_a_trial_reports_its_loss_by_position_past_T(tmp_path):
    from pathlib import Path

    from space.schema import load_config
    from workers.candidate import run_candidate

    config = load_config(Path(__file__).parent / "data" / "tiny.yaml")
    assert max(config.score.extrap) == 4
    result = run_candidate(config, config.preset_candidate("rope"), seed=0, out_dir=tmp_path)
    buckets = {k: v for k, v in result.scores.items() if k.startswith("bucket_bpb@")}
    assert sorted(buckets) == ["bucket_bpb@1x", "bucket_bpb@2x", "bucket_bpb@4x"]
    assert all(0 < v < 12 for v in buckets.values())


def test_items_seed_draws_each_run_seeds_own_items_unless_shared():
    """score.items per_seed (the default): each run seed scores its own evaluation items,
    so the spread over seeds covers the items too; shared: every run scores score.seed's."""
    from space.schema import parse_config
    from workers.candidate import items_seed

    raw = {
        "study": {"name": "items"},
        "model": {"layers": 2, "d_model": 32, "heads": 2, "mlp_hidden": 64},
        "train": {"seq_len": 64, "batch_size": 4, "steps": 1},
    }
    config = parse_config(raw)
    assert config.score.items == "per_seed" and config.score.mass_samples >= 32
    drawn = {items_seed(config, seed) for seed in range(8)}
    assert len(drawn) == 8 and config.score.seed not in drawn
    assert items_seed(config, 3) == items_seed(config, 3)  # reproducible
    shared = parse_config({**raw, "score": {"items": "shared"}})
    assert {items_seed(shared, seed) for seed in range(8)} == {shared.score.seed}
