"""One sweep trial on Ray Tune: the only module in ``workers/`` that touches ray.

:func:`run_trial` is a Tune function trainable. It trains the candidate the driver
chose (one run per seed), reports every evaluation to Tune together with a
checkpoint, and ends with one last report holding the :class:`TrialOutcome`. The
driver reads that outcome to tell Optuna exactly what happened; a trial that Tune
stops early never sends one, which is how the driver knows it was pruned.

Tracking plugs in through :class:`workers.trial.TrialHooks`, called inside the trial
process. Ray itself is imported inside :func:`run_trial` only.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from space.expand import Candidate
from space.outcomes import RunStatus, error_reason
from space.schema import SweepConfig
from workers.layout import finished_seed, restore_into, seed_dir, snapshot
from workers.provenance import environment_tags
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

Runner = Callable[..., Any]  # run_candidate's signature


# -- the trainable -------------------------------------------------------------------


def run_trial(
    params: dict[str, Any],
    *,
    sweep: SweepConfig,
    hooks: TrialHooks | None = None,
    runner: Runner | None = None,
    corpus: Any = None,
) -> None:
    """The Tune function trainable. ``params`` is what the driver's searcher suggested:
    ``optuna_trial``, ``study``, ``candidate`` (``Candidate.to_dict()``: validated once in
    the driver, not re-expanded here), ``seeds``, ``trial_dir``, ``restore_from``.
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
        candidate=Candidate.from_dict(params["candidate"]),
        seeds=tuple(seeds),
        out_dir=out_dir,
        config=sweep,
        environment=environment_tags(trial_device(sweep)),
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
    links.update(call_hook(links, hooks.on_start, info) or {})
    evals = 0
    last_value = math.nan
    results: list[Any] = []
    started = time.perf_counter()
    try:
        for index, seed in enumerate(seeds):
            folder = seed_dir(out_dir, seed)
            done = finished_seed(folder)
            if done is not None:
                results.append(done)
                continue

            def on_eval(metrics: dict[str, float], seed: int = seed, index: int = index) -> None:
                nonlocal evals, last_value
                evals += 1
                last_value = float(metrics.get(metric, math.nan))
                links.update(call_hook(links, hooks.on_eval, info, {**metrics, "seed": seed}) or {})
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
                out_dir=folder,
                on_eval=on_eval,
                resume=True,
                device=trial_device(sweep),
                threads=trial_threads(sweep),
                **({} if corpus is None else {"corpus": corpus}),
            )
            results.append(result)
            if result.status != RunStatus.COMPLETE:
                break
        outcome = combine(results, seeds)
    except Exception as err:  # a bug or bad data: FAIL with its reason, the sweep goes on
        outcome = TrialOutcome(
            RunStatus.ERROR,
            error_reason(f"{type(err).__name__}: {err}"),
            traceback.format_exc(limit=8)[-4000:],
        )
    outcome.trial_seconds = time.perf_counter() - started
    outcome.results = results
    links.update(call_hook(links, hooks.on_end, info, outcome) or {})
    outcome.links = links
    # The last report carries the outcome; no EVALS_KEY, so a scheduler ignores it.
    tune.report({metric: last_value, OUTCOME_KEY: outcome.to_json(), LINKS_KEY: json.dumps(links)})


__all__ = ["run_trial"]
