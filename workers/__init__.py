"""workers: one candidate.

Build the PyTorch model from per-layer specs, train it, and score short- and
long-context ability. Runs under plain pytest: no Ray, no MLflow here (the Ray
adapter is ``workers.ray_trainable``, imported only by the sweep driver).

The names below are imported on first use, so that the torch-free modules
(:mod:`workers.drawing`) can be imported without torch: the report in ``tracking/``
shares them and must not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "BACKENDS": "workers.attention",
    "attend": "workers.attention",
    "choose_backend": "workers.attention",
    "make_batch": "workers.batches",
    "CandidateResult": "workers.candidate",
    "run_candidate": "workers.candidate",
    "Corpus": "workers.data",
    "DataError": "workers.data",
    "load_corpus": "workers.data",
    "HybridTransformer": "workers.model",
    "plot_attention_mass": "workers.plots",
    "plot_loss_curves": "workers.plots",
    "plot_niah_heatmap": "workers.plots",
    "NiahResult": "workers.scores",
    "acc_at": "workers.scores",
    "attention_flops_per_token": "workers.scores",
    "attention_mass": "workers.scores",
    "bits_per_byte": "workers.scores",
    "kv_cache_bytes": "workers.scores",
    "long_acc": "workers.scores",
    "niah_grid": "workers.scores",
    "SEGMENTS": "workers.tasks",
    "TASKS": "workers.tasks",
    "Example": "workers.tasks",
    "render": "workers.tasks",
    "task_params": "workers.tasks",
    "VOCAB_SIZE": "workers.tokens",
    "TrainOutcome": "workers.train",
    "TrainSettings": "workers.train",
    "train": "workers.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
