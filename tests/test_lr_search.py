"""``train.lr_search``: the sweep file's checks, the pilots' choice, their record in the
trial folder (resume reruns no finished pilot), and a real sweep that records the chosen
learning rate on the trial, in MLflow and in the report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from engines import TINY, tiny_config_file

from space.errors import ConfigError
from space.schema import load_config, parse_config
from space.trial_attrs import ATTR_LR, ATTR_LR_SEARCH, ATTR_REUSED_FROM
from workers.lr_search import Pilot, choose_lr, pilot_dir, read_record, with_lr
from workers.trial_folder import LR_SEARCH_FILE, newest_write, restore_into, snapshot

# A learning rate that makes the tiny model's gradient non-finite at its first step.
DIVERGING_LR = 1e30
KNOBS = {
    "global_every": 1,
    "global_position": "rope",
    "local_rope_base": 1e4,
    "local_window": 8,
}


def tiny(**train: Any) -> dict[str, Any]:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    raw["train"] = {**raw["train"], **train}
    return raw


def problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    return dict(err.value.problems)


# -- the sweep file ------------------------------------------------------------------------


def test_lr_search_config_reads_steps_or_a_fraction_of_the_run() -> None:
    config = parse_config(tiny(lr_search={"values": [1e-3, 3e-3], "steps": 10}))
    assert config.train.lr_search.pilot_steps(config.train.total_steps) == 10
    config = parse_config(tiny(lr_search={"values": [1e-3], "fraction": 0.5}))
    assert config.train.lr_search.pilot_steps(config.train.total_steps) == 15  # of 30
    # an unset search leaves the dump (and so every older study's budget key) as it was
    assert "lr_search" not in parse_config(tiny()).train.model_dump()


@pytest.mark.parametrize(
    ("search", "path"),
    [
        ({"values": [], "steps": 10}, "train.lr_search.values"),
        ({"values": [1e-3, -1e-3], "steps": 10}, "train.lr_search.values"),
        ({"values": [1e-3, 1e-3], "steps": 10}, "train.lr_search.values"),
        ({"values": [1e-3], "steps": 30}, "train.lr_search.steps"),  # not shorter than the run
        ({"values": [1e-3], "steps": 5}, "train.lr_search.steps"),  # ends inside the warmup
        ({"values": [1e-3]}, "train.lr_search.steps"),  # neither steps nor fraction
        ({"values": [1e-3], "steps": 10, "fraction": 0.5}, "train.lr_search.steps"),
        ({"values": [1e-3], "fraction": 1.0}, "train.lr_search.fraction"),
        ({"values": [1e-3], "steps": 10, "tries": 2}, "train.lr_search.tries"),
    ],
)
def test_lr_search_config_names_the_bad_key(search: dict, path: str) -> None:
    assert path in problems(tiny(lr_search=search))


def test_lr_search_config_refuses_what_it_cannot_run_in_one_process() -> None:
    search = {"values": [1e-3, 3e-3], "steps": 10}
    raw = tiny(lr_search=search)
    raw["resources"] = {**raw["resources"], "parallel_seeds": True}
    assert "resources.parallel_seeds" in problems(raw)
    raw = tiny(lr_search=search)
    del raw["train"]["steps"]
    raw["train"]["stages"] = [{"steps": 20}, {"steps": 10, "seq_len": 64}]
    assert "train.lr_search" in problems(raw)


# -- choosing ----------------------------------------------------------------------------------


def fake_pilots(
    losses: dict[float, float | None], calls: list[float], fail_at: float | None = None
):
    """A pilot whose final val_bpb is ``losses[lr]`` (None: it diverges); raises at
    ``fail_at`` as a killed trial would stop there."""

    def pilot(config: Any, lr: float, folder: Path) -> Pilot:
        if lr == fail_at:
            raise KeyboardInterrupt("killed mid-pilot")
        calls.append(lr)
        assert config.train.lr == lr and config.train.lr_search is None
        assert config.train.steps == config.train.total_steps == 10
        loss = losses[lr]
        if loss is None:
            return Pilot(lr, "diverged", None, "non-finite loss at step 3")
        return Pilot(lr, "complete", loss)

    return pilot


def test_choose_lr_picks_the_lowest_finite_loss_and_records_every_pilot(tmp_path: Path) -> None:
    config = parse_config(tiny(lr_search={"values": [1e-3, 3e-3, 1e-2], "steps": 10}))
    calls: list[float] = []
    choice = choose_lr(config, tmp_path, 7, fake_pilots({1e-3: 2.5, 3e-3: 2.1, 1e-2: None}, calls))
    assert calls == [1e-3, 3e-3, 1e-2]
    assert choice.chosen == 3e-3
    record = json.loads((tmp_path / LR_SEARCH_FILE).read_text())
    assert record["chosen"] == 3e-3 and record["seed"] == 7 and record["steps"] == 10
    assert [p["status"] for p in record["pilots"]] == ["complete", "complete", "diverged"]
    assert with_lr(config, choice.chosen).train.lr == 3e-3


def test_choose_lr_chooses_nothing_when_every_pilot_loses(tmp_path: Path) -> None:
    config = parse_config(tiny(lr_search={"values": [1e-3, 3e-3], "steps": 10}))
    choice = choose_lr(config, tmp_path, 0, fake_pilots({1e-3: None, 3e-3: math.nan}, []))
    assert choice.chosen is None


def test_choose_lr_resumed_reruns_no_finished_pilot(tmp_path: Path) -> None:
    config = parse_config(tiny(lr_search={"values": [1e-3, 3e-3, 1e-2], "steps": 10}))
    losses = {1e-3: 2.5, 3e-3: 2.1, 1e-2: 2.3}
    calls: list[float] = []
    with pytest.raises(KeyboardInterrupt):  # killed during the second pilot
        choose_lr(config, tmp_path, 0, fake_pilots(losses, calls, fail_at=3e-3))
    assert calls == [1e-3] and read_record(tmp_path).done.keys() == {1e-3}
    # the trial re-runs elsewhere: it continues from a snapshot of the killed one's folder
    moved = tmp_path / "rerun"
    assert snapshot(tmp_path, tmp_path / "snap") and newest_write(tmp_path) > 0
    assert restore_into(tmp_path / "snap", moved)
    calls.clear()
    choice = choose_lr(config, moved, 0, fake_pilots(losses, calls))
    assert calls == [3e-3, 1e-2] and choice.chosen == 3e-3
    calls.clear()
    assert choose_lr(config, moved, 0, fake_pilots(losses, calls)).chosen == 3e-3
    assert calls == []  # after the pilots: none again
    # a record of another seed is another search's
    choose_lr(config, moved, 1, fake_pilots(losses, calls))
    assert calls == [1e-3, 3e-3, 1e-2]


def test_pilots_train_the_sweeps_first_seed_whatever_seeds_a_trial_trains() -> None:
    from workers.lr_search import pilot_seed

    assert pilot_seed(parse_config(tiny(seed=3, lr_search={"values": [1e-3], "steps": 10}))) == 3


# -- real pilots -----------------------------------------------------------------------------


@pytest.mark.slow
def test_lr_search_real_pilots_pick_a_finite_best_when_one_diverges(tmp_path: Path) -> None:
    from workers.candidate import run_pilot

    config = parse_config(tiny(lr_search={"values": [1e-3, 3e-3, DIVERGING_LR], "steps": 10}))
    candidate = config.candidate(KNOBS)
    calls: list[float] = []

    def pilot(c: Any, lr: float, folder: Path) -> Pilot:
        calls.append(lr)
        return run_pilot(c, candidate, lr=lr, seed=0, out_dir=folder, device="cpu", threads=1)

    choice = choose_lr(config, tmp_path, 0, pilot)
    by_lr = choice.done
    assert by_lr[DIVERGING_LR].status == "diverged" and by_lr[DIVERGING_LR].val_bpb is None
    assert all(by_lr[lr].finite for lr in (1e-3, 3e-3))
    best = min((1e-3, 3e-3), key=lambda lr: by_lr[lr].val_bpb)
    assert choice.chosen == best
    assert (pilot_dir(tmp_path, 1e-3) / "checkpoint.pt").is_file()
    assert read_record(tmp_path).chosen == best
    calls.clear()
    assert choose_lr(config, tmp_path, 0, pilot).chosen == best and calls == []


@pytest.mark.slow
def test_lr_search_sweep_records_the_choice_on_the_trial_in_mlflow_and_the_report(
    tmp_path, runs_home, ray_local
) -> None:
    import optuna
    from mlflow import MlflowClient

    from search import driver
    from tracking.keys import METRIC_LR_CHOSEN, PARAM_LR_CHOSEN, pilot_metric
    from tracking.report import build_report
    from tracking.target import resolve_tracking_uri
    from workers.train import lr_at

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "lrs", "trials": 2},
        train={**TINY["train"], "lr_search": {"values": [1e-3, 3e-3, DIVERGING_LR], "steps": 10}},
        presets=["rope", {"name": "rope_again", "extends": "rope"}],  # the second is reused
        tracking={"enabled": True},
    )
    summary = driver.submit(path, storage=url, address=ray_local, progress=False)
    assert summary.counts["COMPLETE"] == 2
    trials = optuna.load_study(study_name="lrs", storage=url).get_trials()
    trained = next(t for t in trials if t.user_attrs.get(ATTR_REUSED_FROM) is None)
    reused = next(t for t in trials if t.user_attrs.get(ATTR_REUSED_FROM) is not None)
    record = trained.user_attrs[ATTR_LR_SEARCH]
    pilots = {p["lr"]: p for p in record["pilots"]}
    assert pilots[DIVERGING_LR]["status"] == "diverged"
    best = min((1e-3, 3e-3), key=lambda lr: pilots[lr]["val_bpb"])
    assert trained.user_attrs[ATTR_LR] == record["chosen"] == best
    # dedup: the pilots are part of the trial, its choice comes with its scores
    assert reused.user_attrs[ATTR_LR] == best and reused.user_attrs[ATTR_LR_SEARCH] == record
    # the seeds trained at the chosen lr: the schedule's lr at the first evaluation is its
    seed_scores = json.loads(
        (Path(trained.user_attrs["trial_dir"]) / "seed_0" / "scores.json").read_text()
    )
    plan = with_lr(load_config(path), best).train.stage_plans()[0]
    first = seed_scores["history"][0]
    assert first["lr"] == pytest.approx(lr_at(int(first["step"]) - 1, plan))

    client = MlflowClient(tracking_uri=resolve_tracking_uri(None, runs_home))
    run = client.get_run(trained.user_attrs["mlflow_run_id"])
    assert float(run.data.params[PARAM_LR_CHOSEN]) == best
    assert run.data.metrics[METRIC_LR_CHOSEN] == best
    assert run.data.metrics[pilot_metric(1e-3)] == pytest.approx(pilots[1e-3]["val_bpb"])
    assert pilot_metric(DIVERGING_LR) not in run.data.metrics
    copy = client.get_run(reused.user_attrs["mlflow_run_id"])  # the reused trial's own run
    assert float(copy.data.params[PARAM_LR_CHOSEN]) == best
    assert copy.data.metrics[pilot_metric(3e-3)] == pytest.approx(pilots[3e-3]["val_bpb"])

    study = optuna.load_study(study_name="lrs", storage=url)
    paths = build_report(study, tmp_path / "report")
    table = paths["report.md"].read_text()
    assert "| lr |" in table and f"| {best:g} |" in table
    (entry,) = json.loads(paths["summary.json"].read_text())["candidates"]
    assert entry["lr_search"][0]["chosen"] == best


@pytest.mark.slow
def test_cli_train_runs_the_pilots_once_then_trains_at_their_choice(
    tmp_path, runs_home, capsys, monkeypatch
) -> None:
    import workers.candidate
    from search.cli import main

    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        train={**TINY["train"], "lr_search": {"values": [1e-3, DIVERGING_LR], "steps": 10}},
    )
    out = tmp_path / "one"
    argv = ["train", str(path), "--preset", "rope", "--out", str(out), "--threads", "1", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    record = read_record(out)
    assert result["lr"] == record.chosen == 1e-3
    assert record.done[DIVERGING_LR].status == "diverged"
    written = (out / LR_SEARCH_FILE).stat().st_mtime_ns
    calls: list[float] = []
    real = workers.candidate.run_pilot

    def counted(*args: Any, **kwargs: Any) -> Pilot:
        calls.append(kwargs["lr"])
        return real(*args, **kwargs)

    monkeypatch.setattr(workers.candidate, "run_pilot", counted)
    assert main(argv) == 0  # again: the pilots are read back, not trained
    assert json.loads(capsys.readouterr().out)["lr"] == 1e-3
    assert calls == [] and (out / LR_SEARCH_FILE).stat().st_mtime_ns == written
    assert main([*argv, "--fresh"]) == 0  # --fresh: the pilots again
    assert calls == [1e-3, DIVERGING_LR]


@pytest.mark.slow
def test_lr_search_sweep_trial_whose_every_pilot_diverges_is_diverged(
    tmp_path, runs_home, ray_local
) -> None:
    import optuna

    from search import driver
    from space.trial_attrs import ATTR_REASON, ATTR_REASON_DETAIL

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "lost", "trials": 1},
        train={**TINY["train"], "lr_search": {"values": [DIVERGING_LR], "steps": 10}},
        presets=["rope"],
    )
    summary = driver.submit(path, storage=url, address=ray_local, progress=False)
    assert summary.counts["FAIL"] == 1
    (trial,) = optuna.load_study(study_name="lost", storage=url).get_trials()
    assert trial.user_attrs[ATTR_REASON] == "diverged"
    assert "every train.lr_search pilot lost" in trial.user_attrs[ATTR_REASON_DETAIL]
    assert trial.user_attrs[ATTR_LR_SEARCH]["chosen"] is None
    assert ATTR_LR not in trial.user_attrs
    assert not list(Path(trial.user_attrs["trial_dir"]).glob("seed_*"))  # no seed trained


def test_retention_drops_the_pilots_checkpoints_and_keeps_their_record(tmp_path: Path) -> None:
    from optuna.trial import TrialState, create_trial

    from search.retention import plan_trial
    from space.trial_attrs import ATTR_TRIAL_DIR
    from workers.trial_folder import CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE

    config = parse_config(tiny(lr_search={"values": [1e-3, 3e-3], "steps": 10}))

    def pilot(c: Any, lr: float, folder: Path) -> Pilot:
        folder.mkdir(parents=True)
        for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
            (folder / name).write_bytes(b"c" * 100)
        return Pilot(lr, "complete", 2.0 + lr)

    choose_lr(config, tmp_path, 0, pilot)
    trial = create_trial(state=TrialState.COMPLETE, values=[1.0], user_attrs={})
    trial.set_user_attr(ATTR_TRIAL_DIR, str(tmp_path))
    assert not plan_trial(trial, [trial], "all").paths
    plan_trial(trial, [trial], "last").apply()
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == [LR_SEARCH_FILE]


@pytest.mark.slow
def test_lr_search_driver_killed_mid_pilots_resumes_from_the_finished_pilots(
    tmp_path, runs_home, ray_local
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import optuna
    from optuna.trial import TrialState

    from search import driver
    from space.trial_attrs import ATTR_RERUN_OF, ATTR_RESTORE_FROM, ATTR_TRIAL_DIR

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = {"values": [1e-3, 3e-3, 1e-2], "steps": 20}
    path = tiny_config_file(
        tmp_path / "sweep.yaml",
        study={"name": "pilotkill", "trials": 1},
        train={**TINY["train"], "lr_search": search},
        presets=["rope"],
    )
    env = {**os.environ, "ROPENOPE_HOME": str(runs_home)}
    cmd = [sys.executable, "-m", "search", "submit", str(path), "--storage", url]
    proc = subprocess.Popen(
        [*cmd, "--address", ray_local, "--quiet"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    killed_record = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and killed_record is None:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name="pilotkill", storage=url)
            except KeyError:
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                folder = t.user_attrs.get(ATTR_TRIAL_DIR)
                record = read_record(Path(folder)) if folder else None
                if record is not None and record.pilots:
                    os.kill(proc.pid, signal.SIGKILL)  # after the first pilot, mid-search
                    killed_record, killed_dir = record, Path(folder)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert killed_record is not None, "no pilot finished in time"
    assert len(killed_record.pilots) < 3 and not list(killed_dir.glob("seed_*"))

    driver.resume("pilotkill", storage=url, progress=False)
    trials = optuna.load_study(study_name="pilotkill", storage=url).get_trials()
    (rerun,) = [t for t in trials if t.user_attrs.get(ATTR_RERUN_OF) is not None]
    assert rerun.state == TrialState.COMPLETE
    # the re-run continued from the killed trial's pilots (its folder held nothing else)
    assert rerun.user_attrs[ATTR_RESTORE_FROM]
    record = rerun.user_attrs[ATTR_LR_SEARCH]
    assert [p["lr"] for p in record["pilots"]] == search["values"]
    first = killed_record.pilots[0]
    assert record["pilots"][0] == {
        "lr": first.lr,
        "status": first.status,
        "val_bpb": first.val_bpb,
        "reason": first.reason,
    }
    assert rerun.user_attrs[ATTR_LR] == record["chosen"] is not None
