"""Data-parallel training of one candidate (issue 14), without Ray: two processes with
``torch.multiprocessing`` and a gloo group, each calling ``run_candidate`` with a
``workers.distributed.DataParallel``, against one process training alone.

The stated tolerance: every evaluation's training loss and validation bits per byte, and
every score, within a relative 1e-5 of the one-worker run (what differs is the order of
floating-point sums: measured ~1e-8 over 30 steps); accuracies exactly equal.

- DDP, a global batch of 7 rows (shares of 4 and 3, so the loss normalisation is tested
  with uneven shares): the one-worker loss curve and scores;
- FSDP2 with micro-batches of 2 rows (gradient accumulation): 2 workers train to step 10
  and stop; one worker resumes from their checkpoint and ends where one worker alone ends;
- one worker stops at step 10; 2 FSDP workers resume from its checkpoint, likewise.
"""

from __future__ import annotations

import gc
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from engines import TINY, free_port

from space.schema import SweepConfig, load_config_text
from workers.candidate import run_candidate
from workers.distributed import DataParallel, worker_rows

pytestmark = pytest.mark.timeout(600)
RTOL = 1e-5
PRESET = "swa"


def _config(**train: object) -> SweepConfig:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    raw["train"] = {**raw["train"], "steps": 30, **train}
    raw["presets"] = [
        {"name": PRESET, "extends": "rnope_swa", "knobs": {"local_window": 8, "global_every": 2}}
    ]
    return load_config_text(yaml.safe_dump(raw))


def _stop_at_10(metrics: dict[str, float]) -> bool:
    return metrics["step"] >= 10


def _rank(rank: int, world: int, port: int, out: str, kind: str, train: dict, stop: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        config = _config(**train)
        result = run_candidate(
            config,
            config.preset_candidate(PRESET),
            seed=0,
            out_dir=Path(out),
            on_eval=_stop_at_10 if stop else None,
            device="cpu",
            threads=1,
            workers=DataParallel(kind),
        )
        if rank == 0:
            Path(out, "result.json").write_text(json.dumps(result.to_dict(), default=str))
        # Tear down together and while the interpreter is whole: the worker that does not
        # score would otherwise leave the group long before the main one, and the sharded
        # model's tensors (which hold the group through their device mesh) would live on
        # into interpreter shutdown, where gloo's threads end in std::terminate (a SIGABRT
        # once in a CI run; pytorch/pytorch#179291 describes that finalisation crash).
        del result
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
        gc.collect()


def _two_workers(out: Path, kind: str, train: dict, stop: bool = False) -> dict:
    mp.spawn(_rank, args=(2, free_port(), str(out), kind, train, stop), nprocs=2)
    return json.loads((out / "result.json").read_text())


def _one_worker(out: Path, train: dict, stop: bool = False) -> dict:
    config = _config(**train)
    result = run_candidate(
        config,
        config.preset_candidate(PRESET),
        seed=0,
        out_dir=out,
        on_eval=_stop_at_10 if stop else None,
        device="cpu",
        threads=1,
    )
    return json.loads(json.dumps(result.to_dict(), default=str))


def _assert_same_run(got: dict, want: dict) -> None:
    assert got["status"] == want["status"] == "complete"
    assert [h["step"] for h in got["history"]] == [h["step"] for h in want["history"]]
    for mine, theirs in zip(got["history"], want["history"], strict=True):
        for key in ("train_loss", "val_bpb"):
            assert math.isclose(mine[key], theirs[key], rel_tol=RTOL), (key, mine, theirs)
    assert set(got["scores"]) == set(want["scores"])
    for key, value in want["scores"].items():
        if key.startswith(("acc", "long_acc", "token_acc")):
            assert got["scores"][key] == value, key
        elif key not in ("tokens_per_s", "train_seconds", "peak_memory_bytes"):
            assert math.isclose(got["scores"][key], value, rel_tol=RTOL), key


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> dict:
    """One worker, the whole run: the reference."""
    return _one_worker(tmp_path_factory.mktemp("alone"), {})


def test_worker_rows_share_every_row_once_in_order():
    for rows in (1, 7, 8, 33):
        for world in range(1, min(rows, 5) + 1):
            shares = [worker_rows(rows, r, world) for r in range(world)]
            assert [i for s in shares for i in range(rows)[s]] == list(range(rows))
            sizes = [s.stop - s.start for s in shares]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


@pytest.mark.slow  # trains in several processes
def test_distributed_ddp_two_workers_follow_the_one_worker_curve_and_scores(tmp_path):
    train = {"batch_size": 7}
    _assert_same_run(
        _two_workers(tmp_path / "two", "ddp", train), _one_worker(tmp_path / "one", train)
    )


@pytest.mark.slow  # trains in several processes
def test_distributed_fsdp_checkpoint_of_two_workers_resumes_on_one(tmp_path, alone):
    train = {"micro_batch_size": 2}
    folder = tmp_path / "run"
    stopped = _two_workers(folder, "fsdp", train, stop=True)
    assert stopped["status"] == "stopped" and stopped["history"][-1]["step"] == 10
    resumed = _one_worker(folder, train)
    assert resumed["resumed_from_step"] == 10
    _assert_same_run(resumed, alone)


@pytest.mark.slow  # trains in several processes
def test_distributed_checkpoint_of_one_worker_resumes_on_two_fsdp_workers(tmp_path, alone):
    folder = tmp_path / "run"
    stopped = _one_worker(folder, {}, stop=True)
    assert stopped["status"] == "stopped" and stopped["history"][-1]["step"] == 10
    resumed = _two_workers(folder, "fsdp", {})
    assert resumed["resumed_from_step"] == 10
    _assert_same_run(resumed, alone)


def test_distributed_single_process_is_the_identity():
    from workers.distributed import Workers

    one = Workers()
    model = torch.nn.Linear(2, 2)
    assert one.wrap(model, torch.device("cpu")) is model
    assert one.rows(5) == slice(0, 5) and one.agree(True) and one.all_max(3.0) == 3.0
    assert one.plain_model(model) is model
