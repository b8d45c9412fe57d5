"""One sweep trial on Ray Tune: the only module in ``workers/`` that touches ray.

:func:`run_trial` is a Tune function trainable. It trains the candidate the driver
chose (one run per seed), reports every evaluation to Tune together with a
checkpoint, and ends with one last report holding the :class:`TrialOutcome`. The
driver reads that outcome to tell Optuna exactly what happened; a trial that Tune
stops early never sends one, which is how the driver knows it was pruned.

Tracking plugs in through :class:`TrialHooks`, called inside the trial process. Ray
itself is imported inside :func:`run_trial` only, so importing this module (for
``TrialHooks``) does not import ray.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from space.expand import Candidate
from space.names import (
    ATTR_RESUMED_FROM_STEP,
    ATTR_SEEDS,
    ATTR_TRACKING_ERROR,
    ATTR_TRIAL_SECONDS,
    REASON_DIVERGED,
    REASON_ERROR,
    REASON_PRUNED,
)
from space.schema import SweepConfig

# Keys of the results this trainable reports to Tune (the driver reads them).
OUTCOME_KEY = "trial_outcome"  # JSON of TrialOutcome, only in the last report
EVALS_KEY = "evals"  # evaluations so far, across seeds: the scheduler's time axis
SEED_INDEX_KEY = "seed_index"
LINKS_KEY = "links"  # JSON {attr: value} from TrialHooks.on_start (e.g. mlflow_run_id)

CHECKPOINT_FILE = "checkpoint.pt"  # run_candidate's checkpoint inside a seed folder
SCORES_FILE = "scores.json"  # run_candidate's result inside a seed folder

Runner = Callable[..., Any]  # run_candidate's signature


@dataclass(frozen=True)
class TrialInfo:
    """What a hook knows about the trial it runs in."""

    study: str
    number: int  # the Optuna trial number
    ray_trial_id: str
    candidate: Candidate
    seeds: tuple[int, ...]
    out_dir: Path
    config: SweepConfig


class TrialHooks:
    """Callbacks inside the trial process; the default does nothing.

    Tracking subclasses this (it must pickle: Ray ships it to the worker). ``on_start``
    and ``on_end`` may return links to record on the Optuna trial, e.g.
    ``{"mlflow_run_id": ...}``.
    An exception in a hook never fails the trial: it is recorded on the Optuna trial
    as ``tracking_error``. A trial stopped early by the scheduler is killed, so
    ``on_end`` is not called for it; the driver's ``SweepHooks.on_trial_end`` is.
    """

    def on_start(self, info: TrialInfo) -> Mapping[str, Any] | None:
        return None

    def on_eval(self, info: TrialInfo, metrics: Mapping[str, float]) -> None:
        return None

    def on_end(self, info: TrialInfo, outcome: TrialOutcome) -> Mapping[str, Any] | None:
        return None


@dataclass
class TrialOutcome:
    """How a trial ended, as the driver tells Optuna.

    ``status``: complete | diverged | stopped | error. ``scores`` are the mean over seeds
    of each score every seed produced. ``results`` (the per-seed ``CandidateResult``)
    stay in the trial process for hooks; the JSON form carries per-seed scores only.
    """

    status: str
    reason: str | None = None
    detail: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    seeds: list[dict[str, Any]] = field(default_factory=list)
    trial_seconds: float = 0.0
    resumed_from_step: int | None = None
    links: dict[str, Any] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list, repr=False)

    def attrs(self) -> dict[str, Any]:
        """Scores and bookkeeping as Optuna user attributes."""
        out: dict[str, Any] = dict(self.scores)
        out[ATTR_TRIAL_SECONDS] = self.trial_seconds
        if self.seeds:
            out[ATTR_SEEDS] = self.seeds
        if self.resumed_from_step is not None:
            out[ATTR_RESUMED_FROM_STEP] = self.resumed_from_step
        out.update(self.links)
        return out

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("results")
        data["scores"] = {k: _finite_or_none(v) for k, v in self.scores.items()}  # strict JSON
        return json.dumps(data, default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> TrialOutcome:
        data = json.loads(text)
        data["scores"] = {k: (math.nan if v is None else v) for k, v in data["scores"].items()}
        return cls(**data)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _finite_or_none(value: float) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float as None (strict JSON, any database)."""
    if isinstance(value, float):
        return _finite_or_none(value)
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def trial_device(config: SweepConfig) -> str:
    """``auto`` means the GPU only when Ray gave this trial one: a trial without a GPU
    allocation must not take one Ray thinks is free."""
    wanted = config.resources.device
    if wanted != "auto":
        return wanted
    return "cuda" if config.resources.gpus_per_trial > 0 else "cpu"


def trial_threads(config: SweepConfig) -> int:
    """Torch threads = the CPUs Ray gave the trial; more oversubscribes the cores that
    the other trials were given (two trials become ~10x slower)."""
    if config.train.threads is not None:
        return config.train.threads
    return max(1, int(config.resources.cpus_per_trial))


def combine(results: list[Any], seeds: list[int]) -> TrialOutcome:
    """One outcome from the per-seed results: any divergence or stop decides it."""
    per_seed = [
        {
            "seed": seed,
            "status": r.status,
            "reason": r.reason,
            "scores": {k: _finite_or_none(v) for k, v in r.scores.items()},
            "niah": _strict(getattr(r, "niah", None) or None),
            "attention_mass": _strict(getattr(r, "attention_mass", None) or None),
        }
        for seed, r in zip(seeds, results, strict=False)
    ]
    resumed = next((r.resumed_from_step for r in results if r.resumed_from_step), None)
    for r in results:
        if r.status == "diverged":
            return TrialOutcome(
                "diverged", REASON_DIVERGED, r.reason, dict(r.scores), per_seed, 0.0, resumed
            )
        if r.status == "stopped":
            return TrialOutcome(
                "stopped", REASON_PRUNED, r.reason, dict(r.scores), per_seed, 0.0, resumed
            )
    keys = set.intersection(*(set(r.scores) for r in results)) if results else set()
    scores = {k: sum(float(r.scores[k]) for r in results) / len(results) for k in sorted(keys)}
    return TrialOutcome("complete", None, None, scores, per_seed, 0.0, resumed)


# -- checkpoints ---------------------------------------------------------------------


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # run_candidate replaces its checkpoint atomically: a link is a snapshot
    except OSError:
        shutil.copy2(src, dst)


def snapshot(out_dir: Path, dest: Path) -> bool:
    """Gather what resuming needs into ``dest``: each seed's checkpoint and the result of
    seeds already finished. Returns False when there is nothing to keep yet."""
    found = False
    for seed_dir in sorted(out_dir.glob("seed_*")):
        for name in (CHECKPOINT_FILE, SCORES_FILE):
            src = seed_dir / name
            if src.is_file():
                _link_or_copy(src, dest / seed_dir.name / name)
                found = True
    return found


def restore_into(source: Path, out_dir: Path) -> bool:
    """Copy a snapshot (a Tune checkpoint or an earlier trial folder) into ``out_dir``;
    files already there are newer and kept. Returns whether anything was restored."""
    restored = False
    for seed_dir in sorted(Path(source).glob("seed_*")):
        for name in (CHECKPOINT_FILE, SCORES_FILE):
            src, dst = seed_dir / name, out_dir / seed_dir.name / name
            if src.is_file() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                restored = True
    return restored


def finished_seed(seed_dir: Path) -> Any | None:
    """The result of a seed a restored snapshot says is complete, else None."""
    path = seed_dir / SCORES_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("status") != "complete":
        return None
    from workers.candidate import CandidateResult

    return CandidateResult(
        status="complete",
        reason=None,
        scores={k: (math.nan if v is None else float(v)) for k, v in data["scores"].items()},
        history=data.get("history", []),
        candidate=data.get("candidate", {}),
        seed=data.get("seed", 0),
        resumed_from_step=data.get("resumed_from_step"),
    )


# -- the trainable -------------------------------------------------------------------


def _call_hook(links: dict[str, Any], fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as err:  # tracking must not fail training (STYLE 10: recorded, not lost)
        links.setdefault(ATTR_TRACKING_ERROR, f"{type(err).__name__}: {err}")
        return None


def run_trial(
    params: dict[str, Any],
    *,
    sweep: SweepConfig,
    hooks: TrialHooks | None = None,
    runner: Runner | None = None,
    corpus: Any = None,
) -> None:
    """The Tune function trainable. ``params`` is what the driver's searcher suggested:
    ``optuna_trial``, ``study``, ``knobs``, ``seeds``, ``trial_dir``, ``restore_from``.
    ``corpus`` is the driver's prepared corpus (a ``workers.corpus.CorpusHandle``)."""
    from ray import tune

    if runner is None:
        from workers.candidate import run_candidate as runner
    hooks = hooks or TrialHooks()
    out_dir = Path(params["trial_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in params["seeds"]]
    metric = sweep.scheduler.metric
    ctx = tune.get_context()
    info = TrialInfo(
        study=params["study"],
        number=int(params["optuna_trial"]),
        ray_trial_id=ctx.get_trial_id(),
        candidate=sweep.candidate(params["knobs"]),
        seeds=tuple(seeds),
        out_dir=out_dir,
        config=sweep,
    )

    # Continue from a checkpoint: Tune's own (this trial restarted after a failure)
    # first, else the one the driver found for the interrupted trial this re-runs.
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as path:
            restore_into(Path(path), out_dir)
    elif params.get("restore_from"):
        restore_into(Path(params["restore_from"]), out_dir)

    links: dict[str, Any] = {}
    links.update(_call_hook(links, hooks.on_start, info) or {})
    evals = 0
    last_value = math.nan
    results: list[Any] = []
    started = time.perf_counter()
    try:
        for index, seed in enumerate(seeds):
            seed_dir = out_dir / f"seed_{seed}"
            done = finished_seed(seed_dir)
            if done is not None:
                results.append(done)
                continue

            def on_eval(metrics: dict[str, float], seed: int = seed, index: int = index) -> None:
                nonlocal evals, last_value
                evals += 1
                last_value = float(metrics.get(metric, math.nan))
                _call_hook(links, hooks.on_eval, info, {**metrics, "seed": seed})
                report = {
                    **metrics,
                    "seed": seed,
                    SEED_INDEX_KEY: index,
                    EVALS_KEY: evals,
                    LINKS_KEY: json.dumps(links),
                }
                staging = out_dir / f".snapshot-{evals}"
                try:
                    if snapshot(out_dir, staging):
                        tune.report(report, checkpoint=tune.Checkpoint.from_directory(staging))
                    else:
                        tune.report(report)
                finally:  # Tune has copied the checkpoint into its trial folder by now
                    shutil.rmtree(staging, ignore_errors=True)
                return None

            result = runner(
                sweep,
                info.candidate,
                seed=seed,
                out_dir=seed_dir,
                on_eval=on_eval,
                resume=True,
                device=trial_device(sweep),
                threads=trial_threads(sweep),
                **({} if corpus is None else {"corpus": corpus}),
            )
            results.append(result)
            if result.status != "complete":
                break
        outcome = combine(results, seeds)
    except Exception as err:  # a bug or bad data: FAIL with its reason, the sweep goes on
        outcome = TrialOutcome(
            "error",
            f"{REASON_ERROR}: {type(err).__name__}: {err}",
            traceback.format_exc(limit=8)[-4000:],
        )
    outcome.trial_seconds = time.perf_counter() - started
    outcome.results = results
    links.update(_call_hook(links, hooks.on_end, info, outcome) or {})
    outcome.links = links
    # The last report carries the outcome; no EVALS_KEY, so a scheduler ignores it.
    tune.report({metric: last_value, OUTCOME_KEY: outcome.to_json(), LINKS_KEY: json.dumps(links)})


__all__ = [
    "EVALS_KEY",
    "LINKS_KEY",
    "OUTCOME_KEY",
    "TrialHooks",
    "TrialInfo",
    "TrialOutcome",
    "combine",
    "run_trial",
    "trial_device",
    "trial_threads",
]
