"""Multi-objective asynchronous successive halving (MO-ASHA, Schmucker et al. 2021) as a
Ray Tune scheduler: :class:`MOASHAScheduler`.

Ray Tune's ASHA ranks the trials at a rung on one metric; Optuna has no pruner for
multi-objective studies. MO-ASHA keeps ASHA's rungs and asynchrony and changes only the
ranking: at each rung the trials recorded there are ordered by non-dominated sorting of
their objective vectors, and a trial goes on only if it is among the top ``1/eta``.

Rungs. With grace period ``g`` and reduction factor ``eta`` (both in the units of the time
axis, here evaluations), the rungs are at ``g, g*eta, g*eta^2, ...`` below ``max_t``. There
is no rung at ``max_t`` itself: a trial that reached its full budget is never stopped (its
scoring would be skipped and a full-budget trial recorded as PRUNED).

Decision (asynchronous, as in ASHA: made once, when a trial first reaches a rung, against
the trials recorded there so far; trials already promoted are never recalled). The trial's
objective vector joins the ``n - 1`` vectors recorded at the rung; the ``n`` vectors are
put in one order by :func:`rung_order`; the trial goes on iff its position is among the
first ``ceil(n / eta)`` (so the first trial at a rung always goes on), else it is stopped.

Order (:func:`rung_order`). Every objective is turned to "lower is better" (a maximised one
is negated). Fronts first: non-dominated sorting puts each vector in front 1 (dominated by
none), 2 (dominated only by front 1), ... ; a vector never comes after one of a later front.
Within a front, the tie-break is MO-ASHA's epsilon-net: objectives are scaled to [0, 1] by
their range over the whole rung (an objective with no range counts for nothing), the first
pick is the vector best on the first objective, and each next pick is the vector farthest
(Euclidean, in the scaled space) from the nearest one already picked in any front, so the
trials promoted out of a front that does not fit whole cover it evenly rather than crowd
one end. Remaining ties go to the trial that reached the rung first.

What a rung can see. An objective's value at a rung is the trial's report at that rung,
or, for objectives known before any training, what ``known_before_training`` computes from
the trial's config. In a sweep (:func:`sweep_scheduler`): ``kv_cache_bytes``,
``attn_flops_per_token`` and ``params`` from the candidate's layer layout, the same at
every rung (:data:`space.names.RUNG_LAYOUT_METRICS`); ``val_bpb``, ``train_loss`` and
``tokens_per_s`` from the evaluation that reached the rung; ``short_bpb`` through
``val_bpb``; retrieval scores not at all (they are measured after training). A report
that lacks an objective, or holds a non-finite one, is not judged at that rung: it goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from space.expand import Candidate
from space.names import ATTN_FLOPS_PER_TOKEN, KV_CACHE_BYTES, PARAMS
from space.trial_attrs import ATTR_REASON_DETAIL, ATTR_RUNG, ATTR_RUNG_EVALS, ATTR_RUNG_VALUES
from workers import serving_cost
from workers.trial import EVALS_KEY, SEED_INDEX_KEY

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from space.schema import SweepConfig

logger = logging.getLogger(__name__)

Mode = Literal["min", "max"]


@dataclass(frozen=True)
class RungObjective:
    """One objective the rungs rank on: a reported (or known) metric and its direction."""

    metric: str
    mode: Mode


# -- the order at one rung ----------------------------------------------------------


def nondominated_fronts(points: np.ndarray) -> list[list[int]]:
    """Indices of ``points`` (rows; every column lower-is-better) by front: the first
    front holds the rows no other row dominates, the next those dominated only by the
    first, and so on. Within a front, indices keep their row order. A row dominates another
    when it is no worse on every column and better on one; equal rows share a front."""
    n = len(points)
    dominated_by = [0] * n  # how many rows dominate row i
    dominates: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            i_le, j_le = points[i] <= points[j], points[j] <= points[i]
            if i_le.all() and not j_le.all():
                dominates[i].append(j)
                dominated_by[j] += 1
            elif j_le.all() and not i_le.all():
                dominates[j].append(i)
                dominated_by[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if dominated_by[i] == 0]
    while current:
        fronts.append(current)
        following: list[int] = []
        for i in current:
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def scaled(points: np.ndarray) -> np.ndarray:
    """Each column mapped to [0, 1] by its range over the rows; a column with no range
    becomes 0 (it cannot separate anything)."""
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (points - low) / span, 0.0)


def rung_order(points: np.ndarray) -> list[int]:
    """Every row index of ``points`` (rows; every column lower-is-better), best first:
    fronts of non-dominated sorting in order, each front in epsilon-net order (see the
    module docstring). Ties go to the lower index."""
    if len(points) == 0:
        return []
    unit = scaled(points)
    order: list[int] = []
    for front in nondominated_fronts(points):
        left = list(front)
        while left:
            if not order:
                # The first pick: the best on the first objective (lowest index on a tie).
                pick = min(left, key=lambda i: (points[i][0], i))
            else:
                chosen = unit[order]

                def gap(i: int, chosen: np.ndarray = chosen) -> float:
                    return float(np.sqrt(((chosen - unit[i]) ** 2).sum(axis=1)).min())

                pick = max(left, key=lambda i: (gap(i), -i))
            order.append(pick)
            left.remove(pick)
    return order


def promoted_count(n: int, reduction_factor: float) -> int:
    """How many of the ``n`` trials recorded at a rung are promoted: ``ceil(n / eta)``."""
    return math.ceil(n / reduction_factor)


def rung_milestones(grace_period: float, reduction_factor: float, max_t: float) -> list[float]:
    """The rungs' times, ascending: ``g * eta^k`` below ``max_t``."""
    out: list[float] = []
    t = float(grace_period)
    while t < max_t:
        out.append(t)
        t *= reduction_factor
    return out


# -- the scheduler ------------------------------------------------------------------


@dataclass(frozen=True)
class RungRecord:
    """A trial as judged at one rung: the rung's index (0 = the first), its time, the
    trial's objective values there, its position in the rung's order when judged, how
    many trials the rung then held, and whether it went on."""

    rung: int
    milestone: float
    values: Mapping[str, float]
    position: int
    recorded: int
    promoted: bool


@dataclass
class _Rung:
    milestone: float
    recorded: dict[str, np.ndarray] = field(default_factory=dict)  # trial id -> lower-is-better


class MOASHAScheduler(FIFOScheduler):
    """MO-ASHA on Ray Tune (see the module docstring).

    ``time_of(result)`` gives a result's place on the time axis (None: not a point where
    a decision can be made), by default ``result[time_attr]``. ``known_before_training``
    gives, per trial, the values of objectives known from its config alone; a report's own
    values take precedence. :meth:`judged` tells, per trial id, the rungs where it was
    judged (the last one holds the decision that stopped it, if any)."""

    def __init__(
        self,
        objectives: Sequence[RungObjective],
        *,
        max_t: float,
        grace_period: float = 1,
        reduction_factor: float = 3,
        time_attr: str = "training_iteration",
        time_of: Callable[[Mapping[str, Any]], float | None] | None = None,
        known_before_training: Callable[[Trial], Mapping[str, float]] | None = None,
    ) -> None:
        if not objectives:
            raise ValueError("MO-ASHA needs at least one objective")
        if len({o.metric for o in objectives}) != len(objectives):
            raise ValueError("each objective metric may appear once")
        if any(o.mode not in ("min", "max") for o in objectives):
            raise ValueError("each objective's mode is 'min' or 'max'")
        if grace_period <= 0 or reduction_factor <= 1 or max_t <= 0:
            raise ValueError("need grace_period > 0, reduction_factor > 1 and max_t > 0")
        super().__init__()
        self.objectives = tuple(objectives)
        self.reduction_factor = reduction_factor
        self.rungs = [_Rung(m) for m in rung_milestones(grace_period, reduction_factor, max_t)]
        self._time_attr = time_attr
        self._time_of = time_of
        self._known_before_training = known_before_training
        self._known: dict[str, dict[str, float]] = {}
        self._judged: dict[str, list[RungRecord]] = {}
        self._sign = np.array([1.0 if o.mode == "min" else -1.0 for o in self.objectives])
        self.num_stopped = 0

    # Tune hands schedulers the TuneConfig's metric and mode; MO-ASHA has its own list.
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if self._known_before_training is not None:
            self._known[trial.trial_id] = dict(self._known_before_training(trial))

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        return self.decide(trial.trial_id, result)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._known.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._known.pop(trial.trial_id, None)

    def decide(self, trial_id: str, result: Mapping[str, Any]) -> str:
        """CONTINUE or STOP for one result of ``trial_id`` (recording it at its rung)."""
        t = self._time_of(result) if self._time_of is not None else result.get(self._time_attr)
        if t is None:
            return TrialScheduler.CONTINUE
        reached = [i for i, rung in enumerate(self.rungs) if t >= rung.milestone]
        if not reached:
            return TrialScheduler.CONTINUE
        # The highest rung reached; lower rungs it skipped (a trial continuing from a
        # checkpoint past them) were passed before and are not judged again.
        index = reached[-1]
        rung = self.rungs[index]
        if trial_id in rung.recorded:
            return TrialScheduler.CONTINUE
        values = self._values(trial_id, result)
        if values is None:
            return TrialScheduler.CONTINUE
        vector = self._sign * np.array([values[o.metric] for o in self.objectives])
        ids = [*rung.recorded, trial_id]
        points = np.array([*rung.recorded.values(), vector])
        position = rung_order(points).index(len(ids) - 1)
        promoted = position < promoted_count(len(ids), self.reduction_factor)
        rung.recorded[trial_id] = vector
        record = RungRecord(index, rung.milestone, values, position, len(ids), promoted)
        self._judged.setdefault(trial_id, []).append(record)
        if promoted:
            return TrialScheduler.CONTINUE
        self.num_stopped += 1
        return TrialScheduler.STOP

    def judged(self, trial_id: str) -> list[RungRecord]:
        """The rungs where ``trial_id`` was judged, in order."""
        return list(self._judged.get(trial_id, ()))

    def _values(self, trial_id: str, result: Mapping[str, Any]) -> dict[str, float] | None:
        values: dict[str, float] = {}
        known = self._known.get(trial_id, {})
        for o in self.objectives:
            raw = result.get(o.metric, known.get(o.metric))
            if raw is None or not math.isfinite(float(raw)):
                # A missing objective cannot rank; a non-finite one (a diverging loss)
                # would poison the scaling. Either way the trial is not judged here: a
                # diverged run ends FAIL by itself.
                return None
            values[o.metric] = float(raw)
        return values

    def debug_string(self) -> str:
        rungs = " | ".join(f"t={r.milestone:g}: {len(r.recorded)}" for r in self.rungs)
        return f"Using MO-ASHA: num_stopped={self.num_stopped}; recorded per rung {rungs}"


# -- in a sweep ---------------------------------------------------------------------


def sweep_scheduler(config: SweepConfig) -> MOASHAScheduler:
    """MO-ASHA for ``study.early_stopping``. Its time axis is the trial's evaluations
    counted from the start of its first seed (:func:`evaluation_index`), so a trial that
    continues from a checkpoint is judged where it stands, not again at the rungs it had
    passed. Layout objectives come from the candidate in the trial's config."""
    es = config.study.early_stopping
    if es is None:
        raise ValueError("the sweep has no study.early_stopping")
    objectives = [
        RungObjective(o.metric, "min" if o.direction == "minimize" else "max")
        for o in es.rung_objectives(config.study.objectives)
    ]
    steps = config.train.eval_steps()
    return MOASHAScheduler(
        objectives,
        max_t=len(steps) * config.study.max_repeats,  # the most seeds a trial trains
        grace_period=es.grace_period,
        reduction_factor=es.reduction_factor,
        time_of=lambda result: evaluation_index(steps, result),
        known_before_training=lambda trial: layout_values(
            config, trial.config["candidate"], [o.metric for o in objectives]
        ),
    )


def evaluation_index(eval_steps: Sequence[int], result: Mapping[str, Any]) -> int | None:
    """Which evaluation of the trial ``result`` is (1 = its first seed's first), from
    the seed's index and the global step; None for a report that is no evaluation."""
    if EVALS_KEY not in result or "step" not in result:
        return None
    step = int(result["step"])
    done = sum(1 for s in eval_steps if s <= step)
    return int(result.get(SEED_INDEX_KEY, 0)) * len(eval_steps) + done


def layout_values(
    config: SweepConfig, candidate: Mapping[str, Any], metrics: Collection[str]
) -> dict[str, float]:
    """Those of ``metrics`` that the layer layout fixes (:data:`RUNG_LAYOUT_METRICS`),
    computed from a candidate exactly as its trial computes them after training: the KV
    cache and attention FLOPs of the layers it is scored with, its parameter count."""
    c = Candidate.from_dict(dict(candidate))
    s = config.score
    served = c.final_layers
    out: dict[str, float] = {}
    if KV_CACHE_BYTES in metrics:
        out[KV_CACHE_BYTES] = float(
            serving_cost.kv_cache_bytes(c.shape, served, s.kv_context_tokens, s.kv_dtype_bytes)
        )
    if ATTN_FLOPS_PER_TOKEN in metrics:
        out[ATTN_FLOPS_PER_TOKEN] = float(
            serving_cost.attention_flops_per_token(c.shape, served, s.kv_context_tokens)
        )
    if PARAMS in metrics:
        out[PARAMS] = float(parameter_count(c))
    return out


def parameter_count(candidate: Candidate) -> int:
    """The candidate's parameters, counted on a model built on PyTorch's meta device
    (shapes only: no memory, no initialisation). torch is imported here, and only when
    ``params`` is a rung objective, so the driver does not load it otherwise."""
    import torch

    from workers.model import HybridTransformer

    with torch.device("meta"):
        return HybridTransformer(candidate.shape, candidate.layers).num_parameters()


def stop_attrs(scheduler: MOASHAScheduler, trial_id: str) -> dict[str, Any]:
    """The user attributes of a trial MO-ASHA stopped: its rung, the rung's time in
    evaluations, its values there, and why; empty for a trial it did not stop."""
    judged = scheduler.judged(trial_id)
    if not judged or judged[-1].promoted:
        return {}
    last = judged[-1]
    kept = promoted_count(last.recorded, scheduler.reduction_factor)
    return {
        ATTR_RUNG: last.rung,
        ATTR_RUNG_EVALS: int(last.milestone),
        ATTR_RUNG_VALUES: dict(last.values),
        ATTR_REASON_DETAIL: (
            f"stopped by MO-ASHA at rung {last.rung} ({int(last.milestone)} evaluations): "
            f"place {last.position + 1} of {last.recorded} by non-dominated sorting of "
            f"{', '.join(o.metric for o in scheduler.objectives)}, top {kept} go on"
        ),
    }
