"""One sweep trial on Ray Tune: the only module in ``workers/`` that touches ray.

:func:`run_trial` is a Tune function trainable. It trains the candidate the driver
chose (one run per seed), reports every evaluation to Tune together with a
checkpoint, and ends with one last report holding the :class:`TrialOutcome`. The
driver reads that outcome to tell Optuna exactly what happened; a trial that Tune
stops early never sends one, which is how the driver knows it was pruned.

Tracking plugs in through :class:`workers.trial.TrialHooks`, called inside the trial
process. Ray itself is imported inside the functions that use it.

With ``resources.workers_per_trial: N > 1`` the trial trains data-parallel on N Ray Train
workers: :func:`run_trial` (the Tune function, "the launcher") runs a ``TorchTrainer``
per seed, the supported way to run Ray Train V2 inside Tune, whose workers
(:func:`_train_worker`) each call the runner with a ``workers.distributed.DataParallel``.
The main worker (rank 0) writes the seed folder exactly as a one-worker trial does, sends
every evaluation to the launcher and waits for its answer (the launcher reports it to
Tune with a snapshot of the checkpoint, calls the tracking hooks, and answers "stop" when
Tune stops the trial), then scores and sends its result. So a trial reports the same
results, checkpoints, user attributes and MLflow run whatever N is. A worker that dies
(its process, its node) fails the Train run at once (no Train-level retry) and the
launcher raises :class:`TrainWorkerDied`, so Tune restarts the whole trial from its newest
checkpoint and counts it as a worker restart, as for one worker; an exception in the
candidate's own code on any worker is that exception, a FAIL with its reason, as for one.

A full disk or an I/O error (ENOSPC, EDQUOT, EIO) while a trial trains or writes a
checkpoint is not the candidate's failure: the trial raises :class:`InfrastructureFailure`
and Tune restarts it from its newest checkpoint, as for a worker death.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from space.expand import Candidate
from space.outcomes import Reason, RunStatus, error_reason
from space.schema import SweepConfig
from space.secrets import redact_tail
from workers.lr_search import LrChoice, Pilot, choose_lr, describe, pilot_seed, with_lr
from workers.provenance import environment_tags
from workers.ray_seeds import SeedTaskDied, train_seeds_at_once
from workers.trial import (
    EVALS_KEY,
    LINKS_KEY,
    OUTCOME_KEY,
    SEED_INDEX_KEY,
    TrialHooks,
    TrialInfo,
    TrialOutcome,
    call_hook,
    combine,
    trial_device,
    trial_threads,
)
from workers.trial_folder import finished_seed, restore_into, seed_dir, snapshot

Runner = Callable[..., Any]  # run_candidate's signature

# Where a trial's Ray Train runs keep their own state (one run per seed, named after it, so
# a restarted trial's run has the same name and storage path, as Train V2 requires).
TRAIN_RUNS_DIR = ".ray_train"


class TrainWorkerDied(RuntimeError):
    """A Ray Train worker of the trial died (its process, or its node): the trial restarts
    from its newest checkpoint, as when a one-worker trial's process dies."""


class InfrastructureFailure(RuntimeError):
    """The trial's machine failed it (a full disk, an I/O error), not its candidate: the
    trial restarts from its newest checkpoint (``resources.max_retries``), then is FAIL
    ``infrastructure_failure``, which ``ropenope resume`` runs again."""


# OS errors that say the machine, not the candidate, failed: a full disk, a full quota, an
# I/O error.
_MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


def machine_error(err: BaseException) -> OSError | None:
    """The OS error in ``err``'s chain (itself, its cause, its context) that says a full
    disk or an I/O error, or None."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _MACHINE_ERRNOS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# How long Tune waits for the thread of a trial that ended before it reuses the process for
# the next trial (Tune's TUNE_FUNCTION_THREAD_TIMEOUT_S, read when it resets the trainable;
# 2 s in Ray). A trial the scheduler stopped trains on to its next report, an evaluation
# away; past this, Tune gives the next trial up and the driver re-queues it.
REUSE_WAIT_S = 300
THREAD_TIMEOUT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"


# -- the trainable -------------------------------------------------------------------


def run_trial(
    params: dict[str, Any],
    *,
    sweep: SweepConfig,
    hooks: TrialHooks | None = None,
    runner: Runner | None = None,
    corpus: Any = None,
    pilot: Runner | None = None,
) -> None:
    """The Tune function trainable. ``params`` is what the driver's searcher suggested:
    ``optuna_trial``, ``study``, ``candidate`` (``Candidate.to_dict()``: validated once in
    the driver, not re-expanded here), ``seeds``, ``trial_dir``, ``restore_from``.
    ``corpus`` is the driver's prepared corpus (a ``workers.corpus.CorpusHandle``);
    ``pilot`` trains one ``train.lr_search`` pilot (default ``workers.candidate.run_pilot``)."""
    from ray import tune

    # Read in this process when Tune resets it for the next trial; a value set is kept.
    os.environ.setdefault(THREAD_TIMEOUT_ENV, str(REUSE_WAIT_S))
    if runner is None:
        from workers.candidate import run_candidate as runner
    hooks = hooks or TrialHooks()
    out_dir = Path(params["trial_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in params["seeds"]]
    ctx = tune.get_context()
    info = TrialInfo(
        study=params["study"],
        number=int(params["optuna_trial"]),
        ray_trial_id=ctx.get_trial_id(),
        candidate=Candidate.from_dict(params["candidate"]),
        seeds=tuple(seeds),
        out_dir=out_dir,
        config=sweep,
        environment=environment_tags(trial_device(sweep)),
    )

    _restore(tune.get_checkpoint(), params.get("restore_from"), out_dir)
    reports = TuneReports(info, hooks, sweep.scheduler.metric)
    reports.start()
    results: list[Any] = []
    started = time.perf_counter()
    choice: LrChoice | None = None
    try:
        if params.get("lr") is not None:  # handed by the driver (µP: rung 0's choice)
            sweep = with_lr(sweep, float(params["lr"]))
        if sweep.train.lr_search is not None:  # the pilots first; the seeds at their choice
            choice = search_lr(sweep, info.candidate, out_dir, pilot, corpus)
            if choice.chosen is None:
                raise NoLearningRate(describe(choice))
            sweep = with_lr(sweep, choice.chosen)
        _train_seeds(sweep, info.candidate, seeds, out_dir, reports, runner, corpus, results)
        outcome = combine(results, seeds)
    except NoLearningRate as err:  # every pilot diverged: so would the run
        outcome = TrialOutcome(
            RunStatus.DIVERGED, Reason.DIVERGED, f"every train.lr_search pilot lost: {err}"
        )
    except (TrainWorkerDied, SeedTaskDied):
        raise  # Tune restarts the trial from its newest checkpoint (resources.max_retries)
    except Exception as err:  # a bug or bad data: FAIL with its reason, the sweep goes on
        failed = machine_error(err)
        if failed is not None:  # ... but not a full disk: Tune restarts it (max_retries)
            raise InfrastructureFailure(
                f"{errno.errorcode.get(failed.errno or 0, failed.errno)} while trial "
                f"#{info.number} trained: {failed}"
            ) from err
        outcome = TrialOutcome(
            RunStatus.ERROR,
            error_reason(f"{type(err).__name__}: {err}"),
            redact_tail(traceback.format_exc(limit=8), 4000),
        )
    outcome.trial_seconds = time.perf_counter() - started
    outcome.results = results
    if choice is not None:
        outcome.lr_search = choice.to_dict()
    reports.end(outcome)


def _restore(checkpoint: Any, restore_from: str | None, out_dir: Path) -> None:
    """Continue from a checkpoint: Tune's own (this trial restarted after a failure) first,
    else the one the driver found for the interrupted trial this re-runs."""
    if checkpoint is not None:
        with checkpoint.as_directory() as path:
            restore_into(Path(path), out_dir)
    elif restore_from:
        restore_into(Path(restore_from), out_dir)


def _train_seeds(
    sweep: SweepConfig,
    candidate: Candidate,
    seeds: list[int],
    out_dir: Path,
    reports: TuneReports,
    runner: Runner,
    corpus: Any,
    results: list[Any],
) -> None:
    """Train the trial's seeds into ``results`` (appended as each ends, so a failure keeps
    the ones before it), stopping at the first that does not complete. A seed already
    finished (on resume, or by ``resources.parallel_seeds``, which trains the seeds left
    at once first) is read back, not trained again."""
    at_once = train_seeds_at_once(sweep, candidate, seeds, out_dir, reports, runner, corpus)
    for index, seed in enumerate(seeds):
        folder = seed_dir(out_dir, seed)
        done = at_once.get(seed) or finished_seed(folder)
        if done is not None:
            results.append(done)
            if done.status != RunStatus.COMPLETE:
                return
            continue
        on_eval = functools.partial(reports.on_eval, seed=seed, index=index)
        if sweep.resources.workers_per_trial > 1:
            result = train_on_workers(sweep, candidate, seed, folder, on_eval, runner, corpus)
        else:
            result = runner(
                sweep,
                candidate,
                seed=seed,
                out_dir=folder,
                on_eval=on_eval,
                resume=True,
                device=trial_device(sweep),
                threads=trial_threads(sweep),
                **({} if corpus is None else {"corpus": corpus}),
            )
        results.append(result)
        if result.status != RunStatus.COMPLETE:
            return


class NoLearningRate(RuntimeError):
    """Every ``train.lr_search`` pilot diverged or ended non-finite: the trial is DIVERGED."""


def search_lr(
    sweep: SweepConfig,
    candidate: Candidate,
    trial_dir: Path,
    pilot: Runner | None = None,
    corpus: Any = None,
) -> LrChoice:
    """The trial's ``train.lr_search`` (``workers.lr_search``): the pilots still to run
    (``pilot``: ``workers.candidate.run_pilot`` unless a test gives another), in the trial
    process, with the trial's device and threads, on ``pilot_seed`` whatever seeds the
    trial trains."""
    seed = pilot_seed(sweep)
    if pilot is None:
        from workers.candidate import run_pilot as pilot

    def one(config: SweepConfig, lr: float, folder: Path) -> Pilot:
        return pilot(
            config,
            candidate,
            lr=lr,
            seed=seed,
            out_dir=folder,
            device=trial_device(sweep),
            threads=trial_threads(sweep),
            **({} if corpus is None else {"corpus": corpus}),
        )

    return choose_lr(sweep, trial_dir, seed, one)


class TuneReports:
    """What a trial tells Tune and the tracking hooks: every evaluation of every seed (with
    a snapshot of the trial folder as its checkpoint), then one last report holding the
    outcome. ``links`` collects what the hooks return (run ids) for the driver."""

    def __init__(self, info: TrialInfo, hooks: TrialHooks, metric: str) -> None:
        self.info, self.hooks, self.metric = info, hooks, metric
        self.links: dict[str, Any] = {}
        self.evals = 0
        self.last_value = math.nan

    def start(self) -> None:
        self.links.update(call_hook(self.links, self.hooks.on_start, self.info) or {})

    def on_eval(self, metrics: dict[str, float], *, seed: int, index: int) -> None:
        from ray import tune

        self.evals += 1
        self.last_value = float(metrics.get(self.metric, math.nan))
        links = self.links
        links.update(
            call_hook(links, self.hooks.on_eval, self.info, {**metrics, "seed": seed}) or {}
        )
        report = {
            **metrics,
            "seed": seed,
            SEED_INDEX_KEY: index,
            EVALS_KEY: self.evals,
            LINKS_KEY: json.dumps(links),
        }
        out_dir = self.info.out_dir
        staging = out_dir / f".snapshot-{self.evals}"
        try:
            if snapshot(out_dir, staging):
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(staging))
            else:
                tune.report(report)
        finally:  # Tune has copied the checkpoint into its trial folder by now
            shutil.rmtree(staging, ignore_errors=True)

    def end(self, outcome: TrialOutcome) -> None:
        """The tracking hooks' last word, then the outcome (no EVALS_KEY, so a scheduler
        ignores this report)."""
        from ray import tune

        links = self.links
        links.update(call_hook(links, self.hooks.on_end, self.info, outcome) or {})
        outcome.links = links
        tune.report(
            {
                self.metric: self.last_value,
                OUTCOME_KEY: outcome.to_json(),
                LINKS_KEY: json.dumps(links),
            }
        )


# -- several workers per trial ------------------------------------------------------------


class _Channel:
    """Between the main training worker and the launcher: two Ray queues (actors with no
    CPU). The worker sends ``("eval", metrics)`` and waits for the launcher's stop/continue
    answer, then ``("result", CandidateResult)``."""

    def __init__(self) -> None:
        from ray.util.queue import Queue

        self.events = Queue(actor_options={"num_cpus": 0})
        self.answers = Queue(actor_options={"num_cpus": 0})

    def ask(self, metrics: dict[str, float]) -> bool:
        """In the main worker: report an evaluation; True when the trial must stop."""
        self.events.put(("eval", dict(metrics)))
        return bool(self.answers.get())

    def close(self) -> None:
        for queue in (self.events, self.answers):
            with contextlib.suppress(Exception):  # already gone with its node: nothing to free
                queue.shutdown(force=True)


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: trains its share of every batch; the main one reports."""
    import ray.train
    import torch

    from workers.distributed import DataParallel

    sweep: SweepConfig = config["sweep"]
    folder = Path(config["folder"])
    channel: _Channel = config["channel"]
    if not folder.parent.is_dir():
        node = ray.train.get_context().get_node_rank()
        raise RuntimeError(
            f"the trial folder {folder.parent} is not on node {node}: several workers per "
            "trial need the runs folder (ROPENOPE_HOME) on storage every node sees"
        )
    workers = DataParallel(sweep.train.parallel)
    device = "cpu"
    if config["use_gpu"]:
        import ray.train.torch

        device = str(ray.train.torch.get_device())
    torch.set_num_threads(trial_threads(sweep))
    result = config["runner"](
        sweep,
        Candidate.from_dict(config["candidate"]),
        seed=config["seed"],
        out_dir=folder,
        on_eval=channel.ask if workers.is_main else None,
        resume=True,
        device=device,
        threads=trial_threads(sweep),
        workers=workers,
        **({} if config["corpus"] is None else {"corpus": config["corpus"]}),
    )
    if workers.is_main:
        channel.events.put(("result", result))


def _raise_worker_failure(err: BaseException) -> None:
    """Re-raise a failed Train run as what it means for the trial. A worker that died (Ray
    reports it with its own error types; the survivors then fail in their collectives, which
    is a consequence, not a cause) -> :class:`TrainWorkerDied`. Otherwise the candidate's
    code raised: that exception (of the lowest rank), a FAIL with its reason."""
    failures = dict(sorted((getattr(err, "worker_failures", None) or {}).items()))
    died = [r for r, e in failures.items() if type(e).__module__.startswith("ray")]
    if failures and not died:
        raise next(iter(failures.values())) from err
    what = "; ".join(f"rank {r}: {type(failures[r]).__name__}" for r in died)
    last = str(err).strip().splitlines()[-1][:300] if str(err).strip() else ""
    raise TrainWorkerDied(
        f"a training worker of this trial died unexpectedly ({what or type(err).__name__}); {last}"
    ) from err


# How long a stopped trial's Train run may take to end before its channel is closed anyway.
WIND_DOWN_S = 600.0


def _wind_down(fit: threading.Thread, channel: _Channel) -> None:
    """After the launcher stopped waiting: let a stopped Train run end (its main worker still
    sends its result through the channel), then free the channel's queues."""
    fit.join(timeout=WIND_DOWN_S)
    channel.close()


def train_on_workers(
    sweep: SweepConfig,
    candidate: Candidate,
    seed: int,
    folder: Path,
    on_eval: Callable[[dict[str, float]], Any],
    runner: Runner,
    corpus: Any = None,
) -> Any:
    """Train one seed on ``resources.workers_per_trial`` Ray Train workers (DDP or FSDP,
    gloo on CPU, NCCL on GPU); returns the main worker's ``CandidateResult``. Runs in the
    Tune function; ``on_eval`` is called here for every evaluation of the main worker."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Empty

    from workers.distributed import COLLECTIVE_TIMEOUT

    r = sweep.resources
    use_gpu = r.gpus_per_trial > 0 and trial_device(sweep) != "cpu"
    per_worker: dict[str, float] = {"CPU": r.cpus_per_trial}
    if use_gpu:
        per_worker["GPU"] = r.gpus_per_trial
    folder = Path(folder).resolve()
    channel = _Channel()
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "sweep": sweep,
            "candidate": candidate.to_dict(),
            "seed": seed,
            "folder": str(folder),
            "runner": runner,
            "corpus": corpus,
            "channel": channel,
            "use_gpu": use_gpu,
        },
        torch_config=TorchConfig(
            backend="nccl" if use_gpu else "gloo",
            timeout_s=int(COLLECTIVE_TIMEOUT.total_seconds()),
        ),
        scaling_config=ScalingConfig(
            num_workers=r.workers_per_trial,
            use_gpu=use_gpu,
            resources_per_worker=per_worker,
            placement_strategy=r.placement.upper(),
        ),
        run_config=RunConfig(
            name=f"seed_{seed}",
            storage_path=str(folder.parent / TRAIN_RUNS_DIR),
            # A worker's death ends the run at once; Tune restarts the trial (and counts it).
            failure_config=FailureConfig(max_failures=0, max_preemption_failures=0),
        ),
    )
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # handed to the launcher's thread, never dropped
            failure.append(err)

    thread = threading.Thread(target=fit, name=f"ray-train-seed-{seed}", daemon=True)
    thread.start()
    result = None
    done = False
    try:
        while True:
            alive = thread.is_alive()
            try:
                kind, payload = channel.events.get(timeout=0.5)
            except Empty:
                if alive:
                    continue
                break
            if kind == "eval":
                channel.answers.put(bool(on_eval(payload)))
            elif kind == "result":
                result = payload
        done = True
    finally:
        if done:
            channel.close()
        else:  # Tune stops the trial (or the launcher failed): stop the workers too
            with contextlib.suppress(Exception):
                channel.answers.put(True, timeout=5)
            # ... without waiting for them here: the launcher ends at once. The Train run
            # ends on its own at the answer, releasing its workers' resources; the channel
            # stays open until it has.
            threading.Thread(
                target=_wind_down, args=(thread, channel), name="ray-train-wind-down", daemon=True
            ).start()
    if failure:
        _raise_worker_failure(failure[0])
    if result is None:
        raise RuntimeError("the main training worker ended without a result")
    return result


__all__ = [
    "InfrastructureFailure",
    "NoLearningRate",
    "TrainWorkerDied",
    "run_trial",
    "search_lr",
    "train_on_workers",
]
