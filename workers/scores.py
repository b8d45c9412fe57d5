"""Scores of one trained candidate: language-modelling loss (bits per byte) and retrieval
(the needle grid: greedy exact match, answer likelihood).

Every function takes the model as any ``torch.nn.Module`` whose ``model(idx)`` returns
logits ``(B, T, V)``; a ``HybridTransformer`` is scored in memory linear in the length.
Greedy decoding itself (with a KV cache or without) is ``workers.decoding``; the
attention-mass profile is ``workers.attention_mass``; the serving cost computed from the
layer layout (KV-cache bytes, attention FLOPs) is ``workers.serving_cost``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from workers.decoding import Decoder, model_logits
from workers.examples import Example, example_seed
from workers.model import HybridTransformer
from workers.tasks import DEPTHLESS_TASKS, render
from workers.tokenizer import BYTE_TOKENIZER, Tokenizer
from workers.tokens import DOC

DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_SAMPLES = 20


# --------------------------------------------------------------------------- language modelling


@torch.no_grad()
def bits_per_byte(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    *,
    n_windows: int = 32,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    count_bytes: Callable[[np.ndarray], int] | None = None,
    doc: int = DOC,
) -> float:
    """Bits per UTF-8 byte of text over ``n_windows`` evenly spaced windows: the total
    next-token cross-entropy of the scored targets, in bits, over their bytes.

    Window ``k`` starts at ``round(k * (len(tokens) - seq_len) / (n_windows - 1))``.
    Each row is ``[doc] + tokens[start : start + seq_len]`` (``seq_len`` inputs), like
    every training row: a model trained on sequences that open with the separator
    uses it as an attention sink, and a window without one would measure that
    artefact instead of language modelling. The first target (predicted from the
    separator alone) is not scored, so ``seq_len - 1`` targets per window count.

    ``count_bytes(ids)`` gives the UTF-8 bytes of the text that target ids stand for
    (control tokens such as DOC: none, though predicting them costs bits too), so the
    number means the same whatever the tokenizer (``Tokenizer.count_bytes``). Without
    it, every target counts as one byte: bits per token.
    """
    n = len(tokens)
    if n < seq_len + 1:
        raise ValueError(f"{n} tokens cannot fill one window of {seq_len} + 1")
    if n_windows < 1 or batch_size < 1:
        raise ValueError(f"n_windows and batch_size must be >= 1, got {n_windows}, {batch_size}")
    starts = np.unique(np.round(np.linspace(0, n - seq_len, n_windows)).astype(np.int64))
    was_training = model.training
    model.eval()
    total_nats, total_bytes = 0.0, 0
    try:
        for i in range(0, len(starts), batch_size):
            rows = [
                np.concatenate([[doc], np.asarray(tokens[s : s + seq_len], dtype=np.int64)])
                for s in starts[i : i + batch_size]
            ]
            batch = torch.from_numpy(np.stack(rows)).to(device)
            targets = batch[:, 2:]
            total_nats += _target_nats(model, batch[:, :-1], targets)
            if count_bytes is None:
                total_bytes += targets.numel()
            else:
                total_bytes += sum(count_bytes(row) for row in targets.cpu().numpy())
    finally:
        model.train(was_training)
    if total_bytes == 0:
        raise ValueError("the scored windows hold no text bytes")
    return total_nats / total_bytes / math.log(2)


@torch.no_grad()
def bits_per_byte_by_position(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    train_len: int,
    *,
    n_windows: int = 8,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    count_bytes: Callable[[np.ndarray], int] | None = None,
    doc: int = DOC,
) -> dict[int, float]:
    """Bits per byte by position bucket in windows of ``seq_len`` tokens: ``{1: ..., 2: ...,
    4: ...}``, bucket ``m`` holding the targets at text positions ``(m/2 * train_len,
    m * train_len]`` (bucket 1: positions 2 .. ``train_len``), up to ``seq_len``.

    Windows and targets as :func:`bits_per_byte` (the same starts, rows opening with
    ``doc``, the first target not scored). Unlike the mean over a whole long window
    (``extrap_bpb@Nx``), whose first ``train_len`` positions are those a model was trained
    on, a bucket beyond 1 holds only the positions past the training length.
    """
    n = len(tokens)
    if seq_len % train_len or seq_len < 2 * train_len:
        raise ValueError(f"seq_len {seq_len} must be a multiple >= 2 of train_len {train_len}")
    if n < seq_len + 1:
        raise ValueError(f"{n} tokens cannot fill one window of {seq_len} + 1")
    starts = np.unique(np.round(np.linspace(0, n - seq_len, n_windows)).astype(np.int64))
    # Target j of a row is the text token at position j + 2 (1-based; position 1 unscored).
    positions = np.arange(2, seq_len + 1)
    buckets: dict[int, np.ndarray] = {1: positions <= train_len}
    m = 2
    while m * train_len <= seq_len:
        buckets[m] = (positions > m // 2 * train_len) & (positions <= m * train_len)
        m *= 2
    nats = dict.fromkeys(buckets, 0.0)
    counted = dict.fromkeys(buckets, 0)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(starts), batch_size):
            rows = [
                np.concatenate([[doc], np.asarray(tokens[s : s + seq_len], dtype=np.int64)])
                for s in starts[i : i + batch_size]
            ]
            batch = torch.from_numpy(np.stack(rows)).to(device)
            targets = batch[:, 2:]
            per_position = position_nats(model, batch[:, :-1], targets)  # (B, seq_len - 1)
            ids = targets.cpu().numpy()
            for k, mask in buckets.items():
                nats[k] += float(per_position[:, mask].sum())
                if count_bytes is None:
                    counted[k] += int(mask.sum()) * len(rows)
                else:
                    counted[k] += sum(count_bytes(row[mask]) for row in ids)
    finally:
        model.train(was_training)
    return {k: nats[k] / counted[k] / math.log(2) for k in buckets if counted[k] > 0}


def position_nats(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> np.ndarray:
    """(B, T - 1) next-token cross-entropy (nats, float64) of ``targets`` given ``inputs``."""
    if not isinstance(model, HybridTransformer):
        logits = model_logits(model, inputs).float()[:, 1:]
        nats = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return nats.double().cpu().numpy()
    hidden = model.features(inputs)[:, 1:]  # (B, T - 1, C)
    parts = []
    for start in range(0, hidden.shape[1], LOGIT_SLICE_TOKENS):
        part = slice(start, start + LOGIT_SLICE_TOKENS)
        logits = model.head(hidden[:, part]).float()
        parts.append(F.cross_entropy(logits.transpose(1, 2), targets[:, part], reduction="none"))
    return torch.cat(parts, dim=1).double().cpu().numpy()


# Positions whose logits one slice holds when a HybridTransformer is scored (its hidden
# states are kept, the (T, vocab) logits never at once).
LOGIT_SLICE_TOKENS = 1024


def _target_nats(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Total next-token cross-entropy (nats) of ``targets`` (B, T - 1) given ``inputs``
    (B, T), the first prediction (from the separator alone) not scored."""
    if not isinstance(model, HybridTransformer):
        logits = model_logits(model, inputs).float()[:, 1:]
        nats = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
        )
        return float(nats.double().sum())
    hidden = model.features(inputs)[:, 1:]  # (B, T - 1, C)
    total = 0.0
    for start in range(0, hidden.shape[1], LOGIT_SLICE_TOKENS):
        part = slice(start, start + LOGIT_SLICE_TOKENS)
        logits = model.head(hidden[:, part]).float()
        nats = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets[:, part].reshape(-1), reduction="none"
        )
        total += float(nats.double().sum())
    return total


# --------------------------------------------------------------------------- retrieval


@dataclass(frozen=True)
class NiahResult:
    """Scores per cell of one task family: ``acc[i][j]`` at ``lengths[i]``, ``depths[j]``.

    ``acc`` is greedy exact match; ``answer_nll`` (nats per answer byte) and ``token_acc``
    are graded scores under teacher forcing (None when not computed). A depthless family
    (commonwords) has a single column.
    """

    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    acc: tuple[tuple[float, ...], ...]
    task: str = "passkey"
    samples: int = DEFAULT_SAMPLES
    answer_nll: tuple[tuple[float, ...], ...] | None = None
    token_acc: tuple[tuple[float, ...], ...] | None = None

    def to_dict(self) -> dict:
        out = {
            "lengths": list(self.lengths),
            "depths": list(self.depths),
            "acc": [list(row) for row in self.acc],
        }
        if self.answer_nll is not None:
            out["answer_nll"] = [list(row) for row in self.answer_nll]
        if self.token_acc is not None:
            out["token_acc"] = [list(row) for row in self.token_acc]
        return out

    @classmethod
    def from_dict(
        cls, d: dict, *, task: str = "passkey", samples: int = DEFAULT_SAMPLES
    ) -> NiahResult:
        def grid(key: str) -> tuple[tuple[float, ...], ...] | None:
            if d.get(key) is None:
                return None
            return tuple(tuple(float(a) for a in row) for row in d[key])

        return cls(
            lengths=tuple(int(x) for x in d["lengths"]),
            depths=tuple(float(x) for x in d["depths"]),
            acc=grid("acc") or (),
            task=task,
            samples=samples,
            answer_nll=grid("answer_nll"),
            token_acc=grid("token_acc"),
        )


def _by_prompt_len(examples: Sequence[Example]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(e.prompt_len, []).append(i)
    return groups


@torch.no_grad()
def answer_correct(
    model: torch.nn.Module,
    examples: Sequence[Example],
    device: str | torch.device = "cpu",
    tokenizer: Tokenizer | None = None,
    *,
    kv_cache: bool = True,
    prefill_chunk_tokens: int | None = None,
) -> np.ndarray:
    """(N,) bool: does greedy decoding from each prompt reproduce its answer exactly?

    Compared as text, RULER-style: the generated tokens are decoded (text as UTF-8 bytes,
    control tokens as themselves) and must begin with the decoded scored answer (the
    answer without its final closing marker: whether the model then stops is not
    scored; training still teaches the marker). Another tokenization of the same string
    scores the same, so a score means the same under bytes and under BPE.

    Decoding is batched per prompt length and greedy: the model never sees an answer token
    it has not produced itself (a model that peeks ahead cannot score). A row is decided
    once its text covers the answer or departs from it; decoding stops when every row
    is decided, or after as many tokens as the answer has bytes.

    With ``kv_cache`` (a ``HybridTransformer``), the prompt is prefilled once, in chunks of
    ``prefill_chunk_tokens`` (default: ``workers.decoding.prefill_chunk``), then each answer
    token is one step against the cache (``workers.decoding.Decoder``); without it, or for
    any other module, every step runs the model on the prompt plus the tokens decoded so
    far: the reference, which gives the same tokens.
    """
    tokenizer = tokenizer or BYTE_TOKENIZER
    correct = np.zeros(len(examples), dtype=bool)
    for rows in _by_prompt_len(examples).values():
        expected = [tokenizer.units(examples[r].scored) for r in rows]
        prompts = np.stack([examples[r].prompt.astype(np.int64) for r in rows])
        budget = max(len(e) for e in expected)
        decoder = Decoder(
            model, torch.from_numpy(prompts).to(device), budget, kv_cache, prefill_chunk_tokens
        )
        generated: list[list[int]] = [[] for _ in rows]
        open_rows = set(range(len(rows)))
        logits = decoder.first()
        for produced in range(1, budget + 1):
            nxt = logits.argmax(dim=-1)  # (N,)
            tokens = nxt.tolist()
            for k in list(open_rows):
                generated[k].append(tokens[k])
                units, want = tokenizer.units(generated[k]), expected[k]
                if len(units) >= len(want):
                    correct[rows[k]] = units[: len(want)] == want
                    open_rows.discard(k)
                elif units != want[: len(units)]:
                    open_rows.discard(k)
            if not open_rows or produced == budget:
                break
            logits = decoder.next(nxt)
    return correct


@torch.no_grad()
def answer_likelihood(
    model: torch.nn.Module,
    examples: Sequence[Example],
    device: str | torch.device = "cpu",
    tokenizer: Tokenizer | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Graded scores under teacher forcing: ``(answer_nll, token_acc)``, each (N,).

    ``answer_nll``: the negative log-likelihood of the scored answer tokens given the
    prompt (and the answer's earlier tokens), summed, over the answer's bytes (each
    control token in it counts as one): nats per answer byte, comparable across
    tokenizers. ``token_acc``: the fraction of scored answer tokens that are the model's
    top prediction. Both move smoothly while exact match is stuck at 1.0 or 0.0.
    """
    tokenizer = tokenizer or BYTE_TOKENIZER
    nll = np.zeros(len(examples), dtype=np.float64)
    acc = np.zeros(len(examples), dtype=np.float64)
    by_len: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_len.setdefault(len(e.tokens), []).append(i)
    for rows in by_len.values():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = np.stack([examples[r].tokens.astype(np.int64) for r in chunk])
            idx = torch.from_numpy(batch).to(device)
            hybrid = isinstance(model, HybridTransformer)
            # a HybridTransformer: the logits of the answer positions only, never (T, vocab)
            out = model.features(idx[:, :-1]) if hybrid else model_logits(model, idx[:, :-1])
            for k, r in enumerate(chunk):
                e = examples[r]
                n = len(e.scored)
                positions = torch.arange(e.prompt_len - 1, e.prompt_len - 1 + n, device=device)
                targets = idx[k, positions + 1]
                logits = model.head(out[k, positions]) if hybrid else out[k, positions]
                row = torch.log_softmax(logits.float(), dim=-1)  # (n, V)
                token_nll = -row.gather(-1, targets[:, None]).squeeze(-1)
                nll[r] = float(token_nll.double().sum()) / max(1, len(tokenizer.units(e.scored)))
                acc[r] = float((row.argmax(dim=-1) == targets).double().mean())
    return nll, acc


def grid_depths(task: str, depths: Sequence[float]) -> tuple[float, ...]:
    """The depth columns of ``task``'s grid: one for a depthless family."""
    return (0.0,) if task in DEPTHLESS_TASKS else tuple(float(d) for d in depths)


def niah_grid(
    model: torch.nn.Module,
    filler_tokens: np.ndarray,
    *,
    task: str = "passkey",
    lengths: Sequence[int],
    depths: Sequence[float] = DEFAULT_DEPTHS,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    task_params: dict[str, int | str] | None = None,
    tokenizer: Tokenizer | None = None,
    graded: bool = True,
) -> NiahResult:
    """Greedy exact-match accuracy of ``task`` on every (length, depth) cell, and with
    ``graded`` the teacher-forced answer NLL and token accuracy.

    Sample ``s`` at length ``L`` is rendered with ``example_seed(seed, L, s)`` at
    every depth: the same needle and haystack moved through the depths, so the
    depth axis compares like with like. A depthless family has one column holding
    ``samples * len(depths)`` examples (the same work per length).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    columns = grid_depths(task, depths)
    per_cell = samples if len(columns) == len(depths) else samples * len(depths)
    was_training = model.training
    model.eval()
    acc: list[tuple[float, ...]] = []
    nll: list[tuple[float, ...]] = []
    tok: list[tuple[float, ...]] = []
    try:
        for length in lengths:
            row, nll_row, tok_row = [], [], []
            for depth in columns:
                examples = [
                    render(
                        task,
                        int(length),
                        float(depth),
                        example_seed(seed, int(length), s),
                        filler_tokens,
                        tokenizer=tokenizer,
                        **(task_params or {}),
                    )
                    for s in range(per_cell)
                ]
                hits = np.concatenate(
                    [
                        answer_correct(model, examples[i : i + batch_size], device, tokenizer)
                        for i in range(0, per_cell, batch_size)
                    ]
                )
                row.append(float(hits.mean()))
                if graded:
                    cell_nll, cell_acc = answer_likelihood(
                        model, examples, device, tokenizer, batch_size
                    )
                    nll_row.append(float(cell_nll.mean()))
                    tok_row.append(float(cell_acc.mean()))
            acc.append(tuple(row))
            nll.append(tuple(nll_row))
            tok.append(tuple(tok_row))
    finally:
        model.train(was_training)
    return NiahResult(
        lengths=tuple(int(x) for x in lengths),
        depths=columns,
        acc=tuple(acc),
        task=task,
        samples=per_cell,
        answer_nll=tuple(nll) if graded else None,
        token_acc=tuple(tok) if graded else None,
    )


def _row_mean(result: NiahResult, grid: tuple | None, length: int, what: str) -> float:
    if grid is None:
        raise ValueError(f"the grid holds no {what} (scored without graded=True)")
    if length not in result.lengths:
        raise ValueError(f"length {length} not in the grid {list(result.lengths)}")
    return float(np.mean(grid[result.lengths.index(length)]))


def _beyond_mean(result: NiahResult, grid: tuple | None, train_len: int, what: str) -> float:
    if grid is None:
        raise ValueError(f"the grid holds no {what} (scored without graded=True)")
    rows = [row for n, row in zip(result.lengths, grid, strict=True) if n > train_len]
    if not rows:
        raise ValueError(f"no grid length beyond train_len={train_len}: {list(result.lengths)}")
    return float(np.mean(rows))


def acc_at(result: NiahResult, length: int) -> float:
    """Mean accuracy over depths at ``length``."""
    return _row_mean(result, result.acc, length, "accuracy")


def long_acc(result: NiahResult, train_len: int) -> float:
    """Mean accuracy over every cell with length > ``train_len`` (the headline score)."""
    return _beyond_mean(result, result.acc, train_len, "accuracy")


def answer_nll_at(result: NiahResult, length: int) -> float:
    """Mean answer NLL (nats per answer byte) over depths at ``length``."""
    return _row_mean(result, result.answer_nll, length, "answer NLL")


def token_acc_at(result: NiahResult, length: int) -> float:
    """Mean teacher-forced token accuracy over depths at ``length``."""
    return _row_mean(result, result.token_acc, length, "token accuracy")


def long_answer_nll(result: NiahResult, train_len: int) -> float:
    """Mean answer NLL over every cell with length > ``train_len``."""
    return _beyond_mean(result, result.answer_nll, train_len, "answer NLL")
