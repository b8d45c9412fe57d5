"""Checkpoints: safe loads, atomic writes, a corrupt newest one falls back (issue 11)."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from workers import checkpoint
from workers.checkpoint import UnsafeCheckpoint, load_latest, previous_of, save


class _Payload:
    """What a hostile checkpoint holds: unpickling it would run a command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "step": step, "history": [{"a": 1.0}]}


def test_checkpoint_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": _Payload(str(marker)), "step": 1}, path)
    with pytest.raises(UnsafeCheckpoint, match="refusing to load .*checkpoint.pt"):
        load_latest(path)
    assert not marker.exists()


def test_checkpoint_crafted_pickle_fails_the_run_with_a_clear_error(tmp_path):
    # Through the whole pipeline: the run stops with the reason, the payload never runs.
    from engines import tiny_config_file

    from space import load_config
    from workers.candidate import run_candidate

    config = load_config(tiny_config_file(tmp_path / "c.yaml"))
    marker = tmp_path / "pwned"
    out = tmp_path / "seed_0"
    out.mkdir()
    torch.save({"model": _Payload(str(marker))}, out / "checkpoint.pt")
    with pytest.raises(UnsafeCheckpoint):
        run_candidate(
            config,
            config.preset_candidate("rope") if config.presets else config.candidate({}),
            seed=0,
            out_dir=out,
        )
    assert not marker.exists()


def test_checkpoint_save_keeps_the_previous_and_loads_the_newest(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save(path, _state(1))
    save(path, _state(2))
    state, used = load_latest(path)
    assert state["step"] == 2 and used == path
    assert previous_of(path).name == "checkpoint.prev.pt"
    assert torch.load(previous_of(path), weights_only=True)["step"] == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_checkpoint_corrupt_newest_falls_back_to_the_previous(tmp_path, caplog, damage):
    path = tmp_path / "checkpoint.pt"
    save(path, _state(1))
    save(path, _state(2))
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"x" * 500, "empty": b""}[damage]
    )
    with caplog.at_level(logging.WARNING, logger="ropenope.checkpoint"):
        state, used = load_latest(path)
    assert state["step"] == 1 and used == previous_of(path)
    assert str(path) in caplog.text


def test_checkpoint_both_corrupt_start_over_with_warnings(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"broken")
    previous_of(path).write_bytes(b"also broken")
    with caplog.at_level(logging.WARNING, logger="ropenope.checkpoint"):
        assert load_latest(path) is None
    assert str(path) in caplog.text and str(previous_of(path)) in caplog.text


def test_checkpoint_crash_mid_write_leaves_the_old_one_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save(path, _state(1))
    before = path.read_bytes()

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is killed while writing

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save(path, _state(2))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp left
