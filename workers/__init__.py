"""workers: one candidate.

Build the PyTorch model from per-layer specs, train it, and score short- and
long-context ability. Runs under plain pytest: no Ray, no MLflow here (the Ray
adapter is ``workers.ray_trainable``, imported only by the sweep driver).
"""

from workers.attention import BACKENDS, attend, choose_backend
from workers.batches import make_batch
from workers.candidate import CandidateResult, run_candidate
from workers.data import Corpus, DataError, load_corpus
from workers.model import HybridTransformer
from workers.plots import plot_attention_mass, plot_loss_curves, plot_niah_heatmap
from workers.scores import (
    NiahResult,
    acc_at,
    attention_flops_per_token,
    attention_mass,
    bits_per_byte,
    kv_cache_bytes,
    long_acc,
    niah_grid,
)
from workers.tasks import SEGMENTS, TASKS, Example, render, task_params
from workers.tokens import VOCAB_SIZE
from workers.train import StageSettings, TrainOutcome, TrainSettings, train

__all__ = [
    "BACKENDS",
    "SEGMENTS",
    "TASKS",
    "VOCAB_SIZE",
    "CandidateResult",
    "Corpus",
    "DataError",
    "Example",
    "HybridTransformer",
    "NiahResult",
    "StageSettings",
    "TrainOutcome",
    "TrainSettings",
    "acc_at",
    "attend",
    "attention_flops_per_token",
    "attention_mass",
    "bits_per_byte",
    "choose_backend",
    "kv_cache_bytes",
    "load_corpus",
    "long_acc",
    "make_batch",
    "niah_grid",
    "plot_attention_mass",
    "plot_loss_curves",
    "plot_niah_heatmap",
    "render",
    "run_candidate",
    "task_params",
    "train",
]
