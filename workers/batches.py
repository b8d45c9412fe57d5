"""Training batches: plain language-model windows mixed with retrieval-task examples.

Loss weights per target position (``w``):

- plain LM rows: ``[DOC] + seq_len`` corpus tokens (every row opens with DOC), 1.0 everywhere;
- task rows: ``answer_weight`` on the targets that are answer tokens, and
  ``filler_weight`` everywhere else (filler, needles, query). The needle values
  and query keys are random, so there is nothing to learn there; a small filler
  weight keeps the language-model signal without letting it drown the answer
  (CALIBRATION.md used 0.1 and 1.0).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from workers.tasks import TASKS, render_with_rng
from workers.tokenizer import BYTE_TOKENIZER, Tokenizer


def make_batch(
    train_tokens: np.ndarray,
    rng: np.random.Generator,
    batch_size: int,
    seq_len: int,
    task_mix: Mapping[str, float],
    lm_fraction: float,
    filler_weight: float,
    answer_weight: float,
    depth_range: tuple[float, float] = (0.0, 1.0),
    task_params: Mapping[str, Mapping[str, int | str]] | None = None,
    tokenizer: Tokenizer | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch ``(x, y, w)``: (B, T) int64 inputs, int64 targets, float32 loss weights.

    ``round(lm_fraction * batch_size)`` rows are plain LM windows at random offsets
    of ``train_tokens``; the rest are task examples of ``seq_len + 1`` tokens (the
    task drawn by ``task_mix`` weights, depth uniform in ``depth_range``, filler
    from ``train_tokens``), shifted by one into inputs and targets. LM rows come
    first. Deterministic given the state of ``rng``. ``task_params`` maps a task
    name to its parameters (see :func:`workers.tasks.task_params`); ``tokenizer`` is the
    corpus's (bytes by default): it renders the tasks' text and knows the DOC token.
    """
    tokenizer = tokenizer or BYTE_TOKENIZER
    doc = tokenizer.vocab.doc
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
    if not 0.0 <= lm_fraction <= 1.0:
        raise ValueError(f"lm_fraction must be in [0, 1], got {lm_fraction}")
    lo, hi = depth_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"depth_range must satisfy 0 <= lo <= hi <= 1, got {depth_range}")
    if len(train_tokens) < seq_len + 1:
        raise ValueError(f"train_tokens has {len(train_tokens)} tokens; need >= {seq_len + 1}")
    n_lm = int(round(lm_fraction * batch_size))
    names, probs = _task_probs(task_mix) if n_lm < batch_size else ([], np.zeros(0))
    params = dict(task_params or {})
    unknown = sorted(set(params) - set(TASKS))
    if unknown:
        raise ValueError(f"task_params names unknown task {unknown[0]!r}")

    x = np.empty((batch_size, seq_len), dtype=np.int64)
    y = np.empty((batch_size, seq_len), dtype=np.int64)
    w = np.empty((batch_size, seq_len), dtype=np.float32)
    starts = rng.integers(0, len(train_tokens) - seq_len + 1, size=n_lm)
    for row, start in enumerate(starts):
        # Every row opens with DOC, as task rows and evaluation windows do.
        window = np.concatenate(
            [[doc], np.asarray(train_tokens[start : start + seq_len], dtype=np.int64)]
        )
        x[row], y[row], w[row] = window[:-1], window[1:], 1.0
    for row in range(n_lm, batch_size):
        task = names[int(rng.choice(len(names), p=probs))]
        depth = float(rng.uniform(lo, hi))
        ex = render_with_rng(
            task, seq_len + 1, depth, rng, train_tokens, tokenizer=tokenizer, **params.get(task, {})
        )
        tokens = ex.tokens.astype(np.int64)
        x[row], y[row] = tokens[:-1], tokens[1:]
        w[row] = filler_weight
        # Target index j predicts tokens[j + 1]; answers are tokens[prompt_len:].
        w[row, ex.prompt_len - 1 :] = answer_weight
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w)


def _task_probs(task_mix: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    unknown = sorted(set(task_mix) - set(TASKS))
    if unknown:
        raise ValueError(f"task_mix names unknown task {unknown[0]!r}; expected {list(TASKS)}")
    names = [t for t in TASKS if task_mix.get(t, 0.0) > 0.0]
    if any(v < 0 for v in task_mix.values()) or not names:
        raise ValueError(f"task_mix needs non-negative weights, at least one > 0; got {task_mix}")
    weights = np.array([task_mix[t] for t in names], dtype=np.float64)
    return names, weights / weights.sum()
