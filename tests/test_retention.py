"""Disk retention (issue 21 #5): what a trial keeps once it ends (``resources.keep``), and
``ropenope gc`` for what a study no longer needs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from engines import tiny_config_file
from optuna.trial import TrialState, create_trial

from search import driver
from search.cli import main as cli_main
from search.retention import disk_bytes, plan_study, plan_trial
from space.errors import ConfigError
from space.schema import parse_config, parse_yaml
from space.trial_attrs import ATTR_RAY_TRIAL_DIR, ATTR_REASON, ATTR_RERUN_OF, ATTR_TRIAL_DIR
from workers.layout import CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, SCORES_FILE

REPO = Path(__file__).resolve().parent.parent


def _trial_on_disk(root: Path, number: int, seeds=(0, 1), finished=True) -> dict[str, str]:
    """A trial folder as training leaves it (two checkpoints per seed, a half-written
    temporary) and its Ray folder with one Tune snapshot; its user attributes."""
    trial_dir, ray_dir = root / "trials" / f"{number:05d}", root / "ray" / f"trial_{number}"
    for seed in seeds:
        folder = trial_dir / f"seed_{seed}"
        folder.mkdir(parents=True)
        (folder / CHECKPOINT_FILE).write_bytes(b"n" * 1000)
        (folder / PREVIOUS_CHECKPOINT_FILE).write_bytes(b"p" * 1000)
        if finished:
            (folder / SCORES_FILE).write_text('{"status": "complete"}')
        snap = ray_dir / "checkpoint_000003" / f"seed_{seed}"
        snap.mkdir(parents=True)
        (snap / CHECKPOINT_FILE).write_bytes(b"n" * 1000)
    (trial_dir / f"seed_{seeds[0]}" / ".checkpoint.pt.x1.tmp").write_bytes(b"t" * 10)
    return {ATTR_TRIAL_DIR: str(trial_dir), ATTR_RAY_TRIAL_DIR: str(ray_dir)}


def _trial(number: int, state: TrialState, attrs: dict) -> optuna.trial.FrozenTrial:
    values = [float(number)] if state == TrialState.COMPLETE else None
    trial = create_trial(state=state, values=values, user_attrs=attrs)
    trial.number = number
    return trial


def _left(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_retention_keep_last_leaves_one_checkpoint_per_finished_seed(tmp_path):
    attrs = _trial_on_disk(tmp_path, 0)
    trial = _trial(0, TrialState.COMPLETE, attrs)
    before = disk_bytes([tmp_path])
    removal = plan_trial(trial, [trial], "last")
    assert removal.bytes == 1000 * 2 + 1000 * 2 + 10  # prev x2, Tune snapshot x2, temporary
    assert removal.apply() == before - disk_bytes([tmp_path])
    assert _left(tmp_path) == [
        f"trials/00000/seed_{s}/{name}" for s in (0, 1) for name in (CHECKPOINT_FILE, SCORES_FILE)
    ]


def test_retention_keep_all_and_trials_awaiting_a_rerun_keep_everything(tmp_path):
    kept = _trial(0, TrialState.COMPLETE, _trial_on_disk(tmp_path, 0))
    interrupted = _trial(
        1,
        TrialState.FAIL,
        {**_trial_on_disk(tmp_path, 1, finished=False), ATTR_REASON: "interrupted"},
    )
    assert not plan_trial(kept, [kept], "all").paths
    assert not plan_trial(interrupted, [interrupted], "last").paths  # its re-run needs it
    rerun = _trial(2, TrialState.RUNNING, {ATTR_RERUN_OF: 1})
    assert not plan_trial(interrupted, [interrupted, rerun], "last").paths
    done = _trial(2, TrialState.COMPLETE, {ATTR_RERUN_OF: 1})
    removal = plan_trial(interrupted, [interrupted, done], "last")
    removal.apply()  # superseded by a finished re-run: nothing of it is needed
    assert not [p for p in _left(tmp_path) if p.startswith(("trials/00001", "ray/trial_1/"))]


def test_gc_keep_best_keeps_only_the_front_and_drops_snapshots_even_for_all(tmp_path):
    trials = [_trial(n, TrialState.COMPLETE, _trial_on_disk(tmp_path, n)) for n in (0, 1)]
    removal = plan_study(trials, "best", front={1})
    removal.apply()
    assert _left(tmp_path) == [
        f"trials/{d}/seed_{s}/{name}"
        for d, names in (("00000", (SCORES_FILE,)), ("00001", (CHECKPOINT_FILE, SCORES_FILE)))
        for s in (0, 1)
        for name in names
    ]
    other = tmp_path / "other"
    trial = _trial(0, TrialState.COMPLETE, _trial_on_disk(other, 0))
    plan_study([trial], "all", front=set()).apply()
    assert not list((other / "ray").rglob("*.pt"))  # gc: Tune's copies go whatever keep says
    assert len(list((other / "trials").rglob("*.pt"))) == 4  # both checkpoints of both seeds


def test_resources_keep_is_validated_with_its_key_path():
    text = (REPO / "tests" / "data" / "tiny.yaml").read_text()
    raw = parse_yaml(text)
    raw.setdefault("resources", {})["keep"] = "newest"
    with pytest.raises(ConfigError, match=r"resources\.keep"):
        parse_config(raw, source="tiny.yaml")
    raw["resources"]["keep"] = "best"
    assert parse_config(raw, source="tiny.yaml").resources.keep == "best"
    raw["resources"].pop("keep")
    assert parse_config(raw, source="tiny.yaml").resources.keep == "last"


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.pt"))


@pytest.mark.slow
def test_retention_sweep_keeps_one_checkpoint_per_seed_and_gc_frees_the_rest(
    tmp_path, runs_home, ray_local, capsys
):
    """A real sweep (2 seeds per trial): the default leaves exactly one checkpoint per
    finished seed and no Tune snapshot; with ``keep: all`` everything stays until
    ``ropenope gc`` (whose --dry-run bytes are what it then frees) removes the rest."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    sections = {
        "presets": ["rope"],
        "train": {"steps": 20, "eval_every": 10, "checkpoint_every": 10},
        "resources": {"max_concurrent": 1},
    }
    last = tiny_config_file(
        tmp_path / "last.yaml", study={"name": "keeplast", "trials": 1, "repeats": 2}, **sections
    )
    summary = driver.submit(last, storage=url, address=ray_local, progress=False)
    assert summary.counts["COMPLETE"] == 1
    study_dir = runs_home / "keeplast"
    kept = _checkpoints(study_dir)
    assert [p.relative_to(study_dir).as_posix() for p in kept] == [
        f"trials/00000/seed_{s}/{CHECKPOINT_FILE}" for s in (0, 1)
    ]

    every = tiny_config_file(
        tmp_path / "all.yaml",
        study={"name": "keepall", "trials": 1, "repeats": 2},
        **{**sections, "resources": {"max_concurrent": 1, "keep": "all"}},
    )
    driver.submit(every, storage=url, address=ray_local, progress=False)
    all_dir = runs_home / "keepall"
    before = disk_bytes([all_dir])
    assert len(_checkpoints(all_dir / "trials")) == 4  # newest and previous, per seed
    assert _checkpoints(all_dir / "ray")  # Tune's snapshot
    capsys.readouterr()
    assert cli_main(["gc", "keepall", "--storage", url, "--keep", "last", "--dry-run"]) == 0
    planned = int(capsys.readouterr().out.rsplit("(", 1)[1].split()[0])
    assert disk_bytes([all_dir]) == before  # a dry run removes nothing
    assert cli_main(["gc", "keepall", "--storage", url, "--keep", "last"]) == 0
    assert before - disk_bytes([all_dir]) == planned > 0
    assert [p.relative_to(all_dir).as_posix() for p in _checkpoints(all_dir)] == [
        f"trials/00000/seed_{s}/{CHECKPOINT_FILE}" for s in (0, 1)
    ]
