"""workers: one candidate.

Build the PyTorch model from per-layer specs, train it, and score short- and
long-context ability on the study's prepared corpus (:func:`workers.corpus.prepare`,
once per sweep); export a trained one as a Hugging Face folder (``hf.export``; the
stock class that reproduces it is chosen in ``hf.layout``, transformers is imported only
when exporting). Train one candidate on several processes (``distributed``:
DDP or FSDP2 through ``torch.distributed``, each worker its share of the global batch) and
score it by greedy decoding with a KV cache (``kv_cache``, ``decoding``). Runs
under plain pytest: no Ray, no MLflow here (the Ray adapter, which also starts a
trial's Ray Train workers, is ``workers.ray_trainable``, imported only by the sweep
driver).

Names are imported on first use (PEP 562): ``import workers.trial`` or
``workers.layout`` (torch-free, used by tracking and the driver) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BACKENDS": "workers.attention",
    "attend": "workers.attention",
    "choose_backend": "workers.attention",
    "make_batch": "workers.batches",
    "CorpusHandle": "workers.corpus",
    "DataParallel": "workers.distributed",
    "ParallelKind": "workers.distributed",
    "Workers": "workers.distributed",
    "KVCache": "workers.kv_cache",
    "PreparedCorpus": "workers.corpus",
    "prepare": "workers.corpus",
    "answer_correct": "workers.scores",
    "answer_likelihood": "workers.scores",
    "Tokenizer": "workers.tokenizer",
    "load_tokenizer_file": "workers.tokenizer",
    "train_bpe": "workers.tokenizer",
    "CardFacts": "workers.hf.card",
    "render_card": "workers.hf.card",
    "ExportError": "workers.hf.export",
    "ExportMismatch": "workers.hf.export",
    "ExportResult": "workers.hf.export",
    "check_export": "workers.hf.export",
    "export_candidate": "workers.hf.export",
    "NotExpressible": "workers.hf.reasons",
    "StockLayout": "workers.hf.layout",
    "stock_layout": "workers.hf.layout",
    "byte_tokenizer": "workers.hf.tokenizer",
    "save_byte_tokenizer": "workers.hf.tokenizer",
    "run_candidate": "workers.candidate",
    "CandidateResult": "workers.results",
    "Corpus": "workers.data",
    "DataError": "workers.data_files",
    "load_corpus": "workers.data",
    "HybridTransformer": "workers.model",
    "plot_attention_mass": "workers.plots",
    "plot_loss_curves": "workers.plots",
    "plot_niah_heatmap": "workers.plots",
    "Decoder": "workers.decoding",
    "NiahResult": "workers.scores",
    "acc_at": "workers.scores",
    "attention_flops_per_token": "workers.serving_cost",
    "attention_mass": "workers.attention_mass",
    "bits_per_byte": "workers.scores",
    "kv_cache_bytes": "workers.serving_cost",
    "long_acc": "workers.scores",
    "greedy_decode": "workers.decoding",
    "niah_grid": "workers.scores",
    "SEGMENTS": "workers.tasks",
    "TASKS": "workers.tasks",
    "Example": "workers.examples",
    "render": "workers.tasks",
    "task_params": "workers.tasks",
    "VOCAB_SIZE": "workers.tokens",
    "TrainOutcome": "workers.train",
    "train": "workers.train",
    "TrialHooks": "workers.trial",
    "TrialInfo": "workers.trial",
    "TrialOutcome": "workers.trial",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
