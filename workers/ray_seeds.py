"""The seeds of one trial at the same time (``resources.parallel_seeds: true``).

A trial then asks Tune for a placement group sized for its seeds
(``search.ray_runtime.trial_resources``): a launcher bundle with no CPU, and one bundle of
``cpus_per_trial`` / ``gpus_per_trial`` per seed trained at once. :func:`train_seeds_at_once`
runs in the trial's Tune function: it starts one Ray task per seed still to train (Tune
places them in the trial's placement group; more seeds than bundles wait for a free one),
each task trains its seed with the runner exactly as the sequential loop does (same folder,
same resume, same torch thread count, so the same numbers), and sends each evaluation
through a queue to the launcher, which reports it to Tune and the tracking hooks as the
sequential trial does. The trial stays the unit the driver and Optuna see: the launcher
hands the per-seed results back to ``workers.ray_trainable.run_trial``, which combines them.

Each seed task writes when it trained (:data:`INTERVAL_FILE` in its seed folder): the
evidence that the seeds overlapped, and what ``bench/`` reads.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from space.expand import Candidate
from space.schema import SweepConfig
from workers.trial import trial_device, trial_threads
from workers.trial_folder import finished_seed, seed_dir

# In a seed folder: {"seed", "started", "ended"} (Unix seconds) of its parallel training.
INTERVAL_FILE = "training_interval.json"

# How long the launcher waits for a seed task before it looks at the evaluation queue again.
_POLL_S = 0.2


def seeds_at_once(config: SweepConfig, have: dict[str, float] | None = None) -> int:
    """Seeds one trial trains at the same time: 1 without ``resources.parallel_seeds``,
    else ``study.repeats`` (the seeds of a first round), fewer when ``have`` (the cluster's
    CPUs and GPUs) cannot hold that many seeds of ``cpus_per_trial`` / ``gpus_per_trial``."""
    r = config.resources
    if not r.parallel_seeds:
        return 1
    n = config.study.repeats
    if have is not None:
        for key, need in (("CPU", r.cpus_per_trial), ("GPU", r.gpus_per_trial)):
            if need > 0:
                n = min(n, int(have.get(key, 0) / need + 1e-9))
    return max(1, n)


def _train_seed(
    sweep: SweepConfig,
    candidate: dict[str, Any],
    seed: int,
    folder: str,
    runner: Any,
    corpus: Any,
    events: Any,
) -> Any:
    """One seed in its own Ray task: the sequential loop's runner call, evaluations sent to
    the launcher (the sequential trial ignores on_eval's answer too)."""

    def on_eval(metrics: dict[str, float]) -> None:
        events.put(("eval", seed, dict(metrics)))

    started = time.time()
    result = runner(
        sweep,
        Candidate.from_dict(candidate),
        seed=seed,
        out_dir=Path(folder),
        on_eval=on_eval,
        resume=True,
        device=trial_device(sweep),
        threads=trial_threads(sweep),
        **({} if corpus is None else {"corpus": corpus}),
    )
    interval = {"seed": seed, "started": started, "ended": time.time()}
    (Path(folder) / INTERVAL_FILE).write_text(json.dumps(interval))
    return result


class SeedTaskDied(RuntimeError):
    """The process (or node) of one of the trial's seed tasks died: the trial restarts from
    its newest checkpoint, as when a one-process trial's process dies."""


def _raise_task_failure(err: BaseException) -> None:
    """A seed task that raised -> that exception (a FAIL with its reason, as sequentially);
    one whose process or node died -> :class:`SeedTaskDied`."""
    import ray.exceptions

    if isinstance(err, ray.exceptions.RayTaskError):
        cause = err.as_instanceof_cause()
        raise (getattr(cause, "cause", None) or cause) from err
    raise SeedTaskDied(
        f"a seed task of this trial died unexpectedly: {type(err).__name__}: {err}"
    ) from err


def train_seeds_at_once(
    sweep: SweepConfig,
    candidate: Candidate,
    seeds: list[int],
    out_dir: Path,
    reports: Any,
    runner: Any,
    corpus: Any = None,
) -> dict[int, Any]:
    """Train the seeds of ``seeds`` that have not finished, one Ray task each, at once;
    returns ``{seed: CandidateResult}`` for them. ``reports`` is the trial's
    ``TuneReports``. Empty (the caller trains sequentially) unless
    ``resources.parallel_seeds``, at least two seeds are left to train and the trial's
    placement group has a bundle for at least two of them."""
    if not sweep.resources.parallel_seeds or sweep.resources.workers_per_trial > 1:
        return {}
    todo = [
        (index, seed)
        for index, seed in enumerate(seeds)
        if finished_seed(seed_dir(out_dir, seed)) is None
    ]
    if len(todo) < 2:
        return {}
    import ray
    from ray.util import get_current_placement_group
    from ray.util.queue import Empty, Queue

    # The trial's placement group holds the launcher and a bundle per seed at once; with
    # fewer than two seed bundles (the cluster holds one seed) the seeds go one by one.
    group = get_current_placement_group()
    if group is None or group.bundle_count < 3:
        return {}

    r = sweep.resources
    task = ray.remote(num_cpus=r.cpus_per_trial, num_gpus=r.gpus_per_trial, max_retries=0)(
        _train_seed
    )
    events = Queue(actor_options={"num_cpus": 0})
    index_of = {seed: index for index, seed in todo}
    refs = {
        task.remote(
            sweep,
            candidate.to_dict(),
            seed,
            str(seed_dir(out_dir, seed)),
            runner,
            corpus,
            events,
        ): seed
        for _, seed in todo
    }

    def drain() -> None:
        while True:
            try:
                _, seed, metrics = events.get_nowait()
            except Empty:
                return
            reports.on_eval(metrics, seed=seed, index=index_of[seed])

    results: dict[int, Any] = {}
    pending = list(refs)
    try:
        while pending:
            drain()
            ready, pending = ray.wait(pending, num_returns=1, timeout=_POLL_S)
            for ref in ready:
                try:
                    results[refs[ref]] = ray.get(ref)
                except Exception as err:  # re-raised as what it means for the trial
                    _raise_task_failure(err)
        drain()  # a task's puts complete before it returns: nothing is left behind
    finally:
        for ref in pending:  # the trial failed or Tune stopped it: stop its other seeds
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        with contextlib.suppress(Exception):
            events.shutdown(force=True)
    return results


__all__ = ["INTERVAL_FILE", "SeedTaskDied", "seeds_at_once", "train_seeds_at_once"]
