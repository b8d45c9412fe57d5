"""Scores of one trained candidate: loss, retrieval, serving cost, attention mass.

Every function takes the model as any ``torch.nn.Module`` whose ``model(idx)``
returns logits ``(B, T, V)`` (and, for :func:`attention_mass`,
``model(idx, return_attn=True)`` returns ``(logits, [(B, H, T, T) per layer])``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from space.layers import LayerSpec, ModelShape, WindowKind
from workers.tasks import SEGMENTS, Example, example_seed, render, segment_labels
from workers.tokens import DOC, NEEDLE_CLOSE

DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_SAMPLES = 20
DEFAULT_KV_CONTEXT_TOKENS = 131072


def _logits(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    out = model(idx)
    return out[0] if isinstance(out, tuple) else out


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
) -> float:
    """Mean next-token cross-entropy in bits over ``n_windows`` evenly spaced windows.

    Window ``k`` starts at ``round(k * (len(tokens) - seq_len) / (n_windows - 1))``.
    Each row is ``[DOC] + tokens[start : start + seq_len]`` (``seq_len`` inputs), like
    every training row: a model trained on sequences that open with the separator
    uses it as an attention sink, and a window without one would measure that
    artefact instead of language modelling. The first target (predicted from DOC
    alone) is not scored, so ``seq_len - 1`` targets per window count. With the
    byte vocabulary one token is one byte, so this is bits per byte.
    """
    n = len(tokens)
    if n < seq_len + 1:
        raise ValueError(f"{n} tokens cannot fill one window of {seq_len} + 1")
    if n_windows < 1 or batch_size < 1:
        raise ValueError(f"n_windows and batch_size must be >= 1, got {n_windows}, {batch_size}")
    starts = np.unique(np.round(np.linspace(0, n - seq_len, n_windows)).astype(np.int64))
    was_training = model.training
    model.eval()
    total_nats, total_targets = 0.0, 0
    try:
        for i in range(0, len(starts), batch_size):
            rows = [
                np.concatenate([[DOC], np.asarray(tokens[s : s + seq_len], dtype=np.int64)])
                for s in starts[i : i + batch_size]
            ]
            batch = torch.from_numpy(np.stack(rows)).to(device)
            logits = _logits(model, batch[:, :-1]).float()[:, 1:]  # skip the DOC-only guess
            targets = batch[:, 2:]
            nats = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
            )
            total_nats += float(nats.double().sum())
            total_targets += targets.numel()
    finally:
        model.train(was_training)
    return total_nats / total_targets / math.log(2)


# --------------------------------------------------------------------------- retrieval


@dataclass(frozen=True)
class NiahResult:
    """Exact-match accuracy per cell: ``acc[i][j]`` at ``lengths[i]``, ``depths[j]``."""

    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    acc: tuple[tuple[float, ...], ...]
    task: str = "passkey"
    samples: int = DEFAULT_SAMPLES

    def to_dict(self) -> dict:
        return {
            "lengths": list(self.lengths),
            "depths": list(self.depths),
            "acc": [list(row) for row in self.acc],
        }

    @classmethod
    def from_dict(
        cls, d: dict, *, task: str = "passkey", samples: int = DEFAULT_SAMPLES
    ) -> NiahResult:
        return cls(
            lengths=tuple(int(x) for x in d["lengths"]),
            depths=tuple(float(x) for x in d["depths"]),
            acc=tuple(tuple(float(a) for a in row) for row in d["acc"]),
            task=task,
            samples=samples,
        )


@torch.no_grad()
def answer_correct(
    model: torch.nn.Module, examples: Sequence[Example], device: str | torch.device = "cpu"
) -> np.ndarray:
    """(N,) bool: does greedy decoding from each prompt reproduce its value exactly?

    The value is the answer without its final closing marker: every digit (and, for
    several values, the marker between them) must match, as in RULER-style NIAH scoring,
    but whether the model then stops is not scored. Training still teaches the marker.

    Examples must share one prompt length and answer length. Decoding is batched,
    without a KV cache: each step runs the model on the prompt plus the tokens
    decoded so far, so the model never sees an answer token it has not produced
    itself (a model that peeks ahead cannot score). Stops after the answer length,
    or earlier once every row has gone wrong.
    """
    if not examples:
        return np.zeros(0, dtype=bool)
    if len({e.prompt_len for e in examples}) != 1 or len({len(e.answer) for e in examples}) != 1:
        raise ValueError("answer_correct needs examples of one prompt length and answer length")
    prompts = torch.from_numpy(np.stack([e.prompt.astype(np.int64) for e in examples])).to(device)
    answers = torch.from_numpy(np.stack([e.answer.astype(np.int64) for e in examples])).to(device)
    if answers.size(1) > 1 and bool((answers[:, -1] == NEEDLE_CLOSE).all()):
        answers = answers[:, :-1]  # the terminator after the last value is not scored
    correct = torch.ones(len(examples), dtype=torch.bool, device=device)
    seq = prompts
    for k in range(answers.size(1)):
        nxt = _logits(model, seq)[:, -1].argmax(dim=-1)  # (N,)
        correct &= nxt == answers[:, k]
        if not bool(correct.any()):
            break
        seq = torch.cat([seq, nxt[:, None]], dim=1)
    return correct.cpu().numpy()


@torch.no_grad()
def greedy_decode(model: torch.nn.Module, prompts: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Append ``n_tokens`` greedy tokens to ``prompts`` (B, P) -> (B, n_tokens). No KV cache."""
    seq = prompts
    out = []
    for _ in range(n_tokens):
        nxt = _logits(model, seq)[:, -1].argmax(dim=-1, keepdim=True)
        out.append(nxt)
        seq = torch.cat([seq, nxt], dim=1)
    return torch.cat(out, dim=1)


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
    task_params: dict[str, int] | None = None,
) -> NiahResult:
    """Greedy exact-match accuracy of ``task`` on every (length, depth) cell.

    Sample ``s`` at length ``L`` is rendered with ``example_seed(seed, L, s)`` at
    every depth: the same needle and haystack moved through the depths, so the
    depth axis compares like with like.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    was_training = model.training
    model.eval()
    acc: list[tuple[float, ...]] = []
    try:
        for length in lengths:
            row = []
            for depth in depths:
                examples = [
                    render(
                        task,
                        int(length),
                        float(depth),
                        example_seed(seed, int(length), s),
                        filler_tokens,
                        **(task_params or {}),
                    )
                    for s in range(samples)
                ]
                hits = np.concatenate(
                    [
                        answer_correct(model, examples[i : i + batch_size], device)
                        for i in range(0, samples, batch_size)
                    ]
                )
                row.append(float(hits.mean()))
            acc.append(tuple(row))
    finally:
        model.train(was_training)
    return NiahResult(
        lengths=tuple(int(x) for x in lengths),
        depths=tuple(float(d) for d in depths),
        acc=tuple(acc),
        task=task,
        samples=samples,
    )


def acc_at(result: NiahResult, length: int) -> float:
    """Mean accuracy over depths at ``length``."""
    if length not in result.lengths:
        raise ValueError(f"length {length} not in the grid {list(result.lengths)}")
    return float(np.mean(result.acc[result.lengths.index(length)]))


def long_acc(result: NiahResult, train_len: int) -> float:
    """Mean accuracy over every cell with length > ``train_len`` (the headline score)."""
    rows = [row for n, row in zip(result.lengths, result.acc, strict=True) if n > train_len]
    if not rows:
        raise ValueError(f"no grid length beyond train_len={train_len}: {list(result.lengths)}")
    return float(np.mean(rows))


# --------------------------------------------------------------------------- serving cost


def kv_cache_bytes(
    shape: ModelShape,
    layers: Sequence[LayerSpec],
    context_tokens: int = DEFAULT_KV_CONTEXT_TOKENS,
    dtype_bytes: int = 2,
) -> int:
    """KV-cache bytes for one sequence of ``context_tokens``: per layer, K and V of
    ``n_kv_heads x head_dim`` for ``min(context_tokens, window_tokens)`` tokens (a
    full-attention layer keeps the whole context; a sliding layer its last W tokens; a chunked
    layer at most W, the chunk being filled). Sink logits are parameters, not cache."""
    per_token = 2 * shape.n_kv_heads * shape.head_dim * dtype_bytes
    return sum(per_token * _kept_tokens(spec, context_tokens) for spec in layers)


def _kept_tokens(spec: LayerSpec, context_tokens: int) -> int:
    if spec.window_tokens is None:
        return context_tokens
    return min(context_tokens, spec.window_tokens)


def attention_flops_per_token(
    shape: ModelShape, layers: Sequence[LayerSpec], context_tokens: int
) -> float:
    """Attention-score FLOPs per token, averaged over a sequence of ``context_tokens``.

    Convention: a multiply-add counts as 2 FLOPs; only ``Q K^T`` and ``A V`` are
    counted (no projections, softmax, sink logits or MLP), forward pass, all ``n_heads``
    query heads (GQA shares K/V but not this work). Query ``i`` (0-based) of a layer
    attends to ``min(i + 1, window)`` keys with a sliding window and to ``i mod W + 1`` keys
    with chunks of W (on average about half a sliding window's), so per layer and token it
    costs ``2 * 2 * n_heads * head_dim * mean_i(keys_i)``.
    """
    if context_tokens < 1:
        raise ValueError(f"context_tokens must be >= 1, got {context_tokens}")
    per_key = 4 * shape.n_heads * shape.head_dim
    total = 0.0
    for spec in layers:
        if spec.window_kind is WindowKind.CHUNKED and spec.window_tokens is not None:
            keys = _sum_chunk_keys(context_tokens, spec.window_tokens) / context_tokens
        else:
            keys = _sum_min_keys(context_tokens, spec.window_tokens) / context_tokens
        total += per_key * keys
    return total


def _sum_min_keys(n: int, window: int | None) -> int:
    """sum over i in [0, n) of min(i + 1, window)."""
    if window is None or window >= n:
        return n * (n + 1) // 2
    return window * (window + 1) // 2 + (n - window) * window


def _sum_chunk_keys(n: int, window: int) -> int:
    """sum over i in [0, n) of (i mod window) + 1: whole chunks, then the part-filled last."""
    whole, rest = divmod(n, window)
    return whole * window * (window + 1) // 2 + rest * (rest + 1) // 2


# --------------------------------------------------------------------------- attention mass


def layer_kind(spec: LayerSpec) -> str:
    """``local_rope``, ``global_nope``, ``global_rope`` (or ``local_nope``)."""
    return f"{spec.kind.value}_{spec.position.value}"


@torch.no_grad()
def attention_mass(
    model: torch.nn.Module,
    examples: Sequence[Example],
    layers: Sequence[LayerSpec],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> dict:
    """Where the last prompt position looks: fraction of attention on each segment.

    The last prompt position is the one that predicts the first answer token. Its
    attention probabilities are summed over each segment (Begin / Needle / Context
    / End, see :mod:`workers.tasks`), then averaged over heads and examples. Result::

        {"segments": [...],
         "per_layer": [{"index": i, "kind": "local_rope", "begin": .., "needle": ..,
                        "context": .., "end": ..}, ...],
         "per_kind": {"local_rope": {"begin": .., ...}, ...}}   # mean over that kind's layers

    Each layer's fractions sum to 1 (up to float error).
    """
    if not examples:
        raise ValueError("attention_mass needs at least one example")
    sums = np.zeros((len(layers), len(SEGMENTS)), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        by_len: dict[int, list[Example]] = {}
        for e in examples:
            by_len.setdefault(e.prompt_len, []).append(e)
        for group in by_len.values():
            for i in range(0, len(group), batch_size):
                chunk = group[i : i + batch_size]
                sums += _segment_mass(model, chunk, len(layers), device)
    finally:
        model.train(was_training)
    mean = sums / len(examples)

    per_layer = []
    for spec, row in zip(layers, mean, strict=True):
        entry = {"index": spec.index, "kind": layer_kind(spec)}
        entry.update({s: float(v) for s, v in zip(SEGMENTS, row, strict=True)})
        per_layer.append(entry)
    per_kind: dict[str, dict[str, float]] = {}
    for kind in dict.fromkeys(layer_kind(s) for s in layers):
        rows = mean[[k for k, s in enumerate(layers) if layer_kind(s) == kind]]
        per_kind[kind] = {s: float(v) for s, v in zip(SEGMENTS, rows.mean(axis=0), strict=True)}
    return {"segments": list(SEGMENTS), "per_layer": per_layer, "per_kind": per_kind}


def _segment_mass(
    model: torch.nn.Module, examples: Sequence[Example], n_layers: int, device: str | torch.device
) -> np.ndarray:
    """(n_layers, n_segments): summed over these examples, averaged over heads."""
    prompts = np.stack([e.prompt.astype(np.int64) for e in examples])
    _, attn = model(torch.from_numpy(prompts).to(device), return_attn=True)
    if len(attn) != n_layers:
        raise ValueError(f"model returned attention for {len(attn)} layers, specs for {n_layers}")
    onehot = np.stack([np.eye(len(SEGMENTS))[segment_labels(e)] for e in examples])  # (B, T, S)
    out = np.zeros((n_layers, len(SEGMENTS)), dtype=np.float64)
    for k, a in enumerate(attn):
        last = a[:, :, -1, :].double().mean(dim=1).cpu().numpy()  # (B, T): heads averaged
        out[k] = np.einsum("bt,bts->s", last, onehot)
    return out
