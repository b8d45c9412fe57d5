"""The attention-mass profile of the paper: where the position that answers a retrieval
prompt looks, as the fraction of its attention on the Begin / Needle / Context / End
segments (``workers.tasks.SEGMENTS``), per layer and per layer kind.

A ``HybridTransformer`` is measured from one KV-cache step (``workers.decoding``): memory
linear in the prompt's length. Any other module returns its full ``(B, H, T, T)`` maps
from ``model(idx, return_attn=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from space.layers import LayerSpec, Mixer, layer_kind
from space.tasks import SEGMENTS
from workers.decoding import prefill_chunk
from workers.examples import Example, segment_labels
from workers.kv_cache import LayerCache
from workers.model import HybridTransformer


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

    Each layer's fractions sum to 1 (up to float error). Recurrent layers have no attention
    to measure: only the softmax layers are listed.
    """
    layers = [spec for spec in layers if spec.mixer is Mixer.SOFTMAX]
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
    """(n_layers, n_segments): summed over these examples, averaged over heads.

    A ``HybridTransformer`` prefills all but the last prompt token into a KV cache and
    steps the last one, whose probabilities over the kept keys are all the mass needs:
    memory linear in the length (a windowed layer's keys beyond its window have none).
    Any other module returns the full (T, T) maps (``return_attn=True``)."""
    prompts = torch.from_numpy(np.stack([e.prompt.astype(np.int64) for e in examples]))
    prompts = prompts.to(device)
    onehot = np.stack([np.eye(len(SEGMENTS))[segment_labels(e)] for e in examples])  # (B, T, S)
    if isinstance(model, HybridTransformer):
        batch, length = prompts.shape
        cache = model.new_cache(batch, length)
        chunk = prefill_chunk(batch, model.shape.n_heads, length)
        for start in range(0, length - 1, chunk):
            model.step(
                prompts[:, start : min(start + chunk, length - 1)], cache, rope_length=length
            )
        _, attn = model.step(prompts[:, -1:], cache, rope_length=length, return_attn=True)
        attention_caches = [c for c in cache.layers if isinstance(c, LayerCache)]
        rows = [
            (a[:, :, -1, :].double().mean(dim=1), layer.pos)  # (B, slots), slot positions
            for a, layer in zip(attn, attention_caches, strict=True)
        ]
    else:
        _, attn = model(prompts, return_attn=True)
        positions = torch.arange(prompts.shape[1], device=prompts.device)
        rows = [(a[:, :, -1, :].double().mean(dim=1), positions) for a in attn]  # (B, T)
    if len(rows) != n_layers:
        raise ValueError(f"model returned attention for {len(rows)} layers, specs for {n_layers}")
    out = np.zeros((n_layers, len(SEGMENTS)), dtype=np.float64)
    for k, (weights, pos) in enumerate(rows):
        held = (pos >= 0).cpu().numpy()
        last = weights.cpu().numpy()[:, held]  # (B, kept keys)
        out[k] = np.einsum("bt,bts->s", last, onehot[:, pos.cpu().numpy()[held]])
    return out


__all__ = ["attention_mass"]
