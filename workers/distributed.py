"""Data parallelism inside one trial: which rows a worker trains on, how its gradients meet
the other workers', and how its checkpoint stays the one-worker layout.

torch.distributed only, no Ray: the Ray adapter (``workers.ray_trainable``) starts the
workers and their process group through Ray Train; tests start them with
``torch.multiprocessing``. The training loop (``workers.train``) talks to a
:class:`Workers` and never asks how many there are:

- :class:`Workers` is one process (the default): nothing is shared, every call is the
  identity, and training is exactly what it was before data parallelism existed.
- :class:`DataParallel` is rank ``rank`` of ``world_size`` processes, DDP (a full replica
  per worker, gradients all-reduced) or FSDP2 (``fully_shard`` per block and the model:
  weights, gradients and optimizer state sharded).

How the global batch is shared, so that a loss curve does not depend on the number of
workers beyond floating-point noise: every worker draws the *whole* global batch from the
same checkpointed numpy generator (drawing is cheap next to a training step) and trains on
its contiguous share of the rows (:meth:`Workers.rows`; shares differ by at most one row).
Each worker's loss is its rows' weighted cross-entropy *sum* over the *global* weight sum,
times ``world_size`` (DDP and FSDP average gradients over the workers), so the averaged
gradient is the one-worker gradient exactly, even when the shares are uneven. A share
larger than ``micro_batch_size`` rows is cut into micro-batches whose gradients accumulate
locally and are exchanged once, with the last one.

Checkpoints: the main worker (rank 0) writes the one-worker layout: the unwrapped model's
``state_dict`` and the optimizer's, keyed by parameter index as ``torch.optim`` keys them
(FSDP's sharded state is gathered and re-keyed), so a checkpoint written by N workers
resumes on any number of workers, one included.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# How long a worker waits in a collective for the others: the main worker scores between
# stages while the others wait, and a long evaluation takes long. A dead worker is found by
# the launcher (Ray Train's health checks), not by this timeout.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=12)


def worker_rows(batch_rows: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``batch_rows`` rows: shares differ by at most one
    row, the first ``batch_rows mod world_size`` ranks taking one more."""
    base, extra = divmod(batch_rows, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class ParallelKind(StrEnum):
    DDP = "ddp"
    FSDP = "fsdp"


class Workers:
    """One training process: the identity for everything :class:`DataParallel` shares."""

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        """The worker that writes checkpoints, reports and scores."""
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train through (the model itself, a DDP wrapper, or the model
        sharded in place by FSDP); ``model`` stays the one to evaluate and score."""
        del device
        return model

    def rows(self, batch_rows: int) -> slice:
        """This worker's contiguous share of a global batch of ``batch_rows`` rows."""
        return slice(0, batch_rows)

    def gradient_sync(self, wrapped: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
        """Backward passes inside exchange gradients only when ``enabled`` (the last
        micro-batch of a step); the others accumulate locally."""
        del wrapped, enabled
        return contextlib.nullcontext()

    def all_sum(self, value: float) -> float:
        return value

    def all_max(self, value: float) -> float:
        return value

    def agree(self, flag: bool) -> bool:
        """The main worker's ``flag``, on every worker (stop, diverged: decided once)."""
        return flag

    def barrier(self) -> None:
        return None

    def state_dicts(
        self, model: nn.Module, opt: torch.optim.Optimizer
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Model and optimizer state in the one-worker layout, on the main worker (None on
        the others). Every worker must call it (FSDP gathers)."""
        return model.state_dict(), opt.state_dict()

    def load_state(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        model_state: dict[str, Any],
        opt_state: dict[str, Any],
    ) -> None:
        """Load one-worker-layout state (every worker passes the same)."""
        model.load_state_dict(model_state)
        opt.load_state_dict(opt_state)

    def plain_model(self, model: nn.Module) -> nn.Module | None:
        """The whole model as one ordinary module on the main worker, for scoring (None on
        the others). Every worker must call it (FSDP gathers)."""
        return model


class DataParallel(Workers):
    """Rank ``rank`` of ``world_size`` workers in an initialised default process group."""

    def __init__(self, kind: ParallelKind | str = ParallelKind.DDP) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("DataParallel needs an initialised torch.distributed group")
        self.kind = ParallelKind(kind)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self._device = torch.device("cpu")
        self._model_class: type[nn.Module] | None = None

    # -- wrapping ------------------------------------------------------------------------
    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        self._device = device
        self._model_class = type(model)  # before FSDP swaps in its subclass
        if self.kind is ParallelKind.DDP:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        mesh = init_device_mesh(device.type, (self.world_size,))
        for block in getattr(model, "blocks", ()):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)  # the embedding (tied to the output) and the final norm
        # Scores call these instead of forward: they gather the root's weights the same way.
        for method in ("features", "head"):
            if hasattr(model, method):
                register_fsdp_forward_method(model, method)
        return model

    def rows(self, batch_rows: int) -> slice:
        return worker_rows(batch_rows, self.rank, self.world_size)

    def gradient_sync(self, wrapped: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
        if enabled:
            return contextlib.nullcontext()
        if self.kind is ParallelKind.DDP:
            return wrapped.no_sync()
        return _fsdp_no_sync(wrapped)

    # -- collectives -----------------------------------------------------------------------
    def _reduce(self, value: float, op: dist.ReduceOp) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=op)
        return float(t.item())

    def _comm_device(self) -> torch.device:
        # NCCL moves CUDA tensors only; gloo CPU tensors.
        return self._device if dist.get_backend() == "nccl" else torch.device("cpu")

    def all_sum(self, value: float) -> float:
        return self._reduce(value, dist.ReduceOp.SUM)

    def all_max(self, value: float) -> float:
        return self._reduce(value, dist.ReduceOp.MAX)

    def agree(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.broadcast(t, src=0)
        return bool(t.item())

    def barrier(self) -> None:
        dist.barrier()

    # -- state -------------------------------------------------------------------------------
    def state_dicts(
        self, model: nn.Module, opt: torch.optim.Optimizer
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        if self.kind is ParallelKind.DDP:
            return (model.state_dict(), opt.state_dict()) if self.is_main else None
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(model, options=full)
        opt_state = get_optimizer_state_dict(model, opt, options=full)
        if not self.is_main:
            return None
        return model_state, _index_keyed(model, opt, opt_state)

    def load_state(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        model_state: dict[str, Any],
        opt_state: dict[str, Any],
    ) -> None:
        if self.kind is ParallelKind.DDP:
            super().load_state(model, opt, model_state, opt_state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        full = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, model_state, options=full)
        set_optimizer_state_dict(model, opt, _name_keyed(model, opt, opt_state), options=full)

    def plain_model(self, model: nn.Module) -> nn.Module | None:
        if self.kind is ParallelKind.DDP:
            return model if self.is_main else None
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        state = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if not self.is_main:
            return None
        # An unsharded twin: built on the meta device (no memory), then given the gathered
        # tensors. Only the model classes of this package are rebuilt this way.
        with torch.device("meta"):
            twin = (self._model_class or type(model))(model.shape, model.layers)
        twin.load_state_dict(state, assign=True)
        return twin.to(self._device).train(model.training)


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _ordered_names(model: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's order: index i of ``opt.state_dict()`` is the
    i-th parameter over its groups."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [name_of[id(p)] for group in opt.param_groups for p in group["params"]]


def _index_keyed(
    model: nn.Module, opt: torch.optim.Optimizer, named: dict[str, Any]
) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (torch.distributed.checkpoint's full
    form) -> keyed by index, as ``torch.optim.Optimizer.state_dict()`` writes it."""
    names = _ordered_names(model, opt)
    state = {i: named["state"][n] for i, n in enumerate(names) if n in named["state"]}
    groups, start = [], 0
    for group in opt.param_groups:
        count = len(group["params"])
        settings = {k: v for k, v in group.items() if k != "params"}
        groups.append({**settings, "params": list(range(start, start + count))})
        start += count
    return {"state": state, "param_groups": groups}


def _name_keyed(
    model: nn.Module, opt: torch.optim.Optimizer, indexed: dict[str, Any]
) -> dict[str, Any]:
    """The inverse of :func:`_index_keyed`."""
    names = _ordered_names(model, opt)
    state = {names[int(i)]: v for i, v in indexed["state"].items()}
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [names[i] for i in g["params"]]}
        for g in indexed["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


__all__ = ["COLLECTIVE_TIMEOUT", "DataParallel", "ParallelKind", "Workers", "worker_rows"]
