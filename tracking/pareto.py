"""The Pareto front: non-dominated sorting, the table, and its plots.

:func:`pareto_ranks` is a pure function over a list of objective vectors: it returns
every point's rank (0 = the Pareto set, 1 = the front once rank 0 is removed, ...) and
excludes points with a missing or NaN value, saying why. :func:`pareto_table` turns
trial rows into a :class:`ParetoTable` sorted by rank, which renders as CSV, Markdown,
JSON, a PNG (pairwise scatter with the front highlighted) and a self-contained
interactive HTML page (inline SVG + JavaScript, no network): the plots and files are
written by :mod:`tracking.pareto_plots`. :func:`pareto_of_study` ranks a study's
COMPLETE trials.

:func:`pareto_ranks_within_noise` ranks candidate means with their seed spread: one
candidate dominates another only when it is better beyond the noise in one objective and
not worse beyond it in any (epsilon-dominance with a margin per pair and objective, the
tie rule of :mod:`tracking.ties`), so the front does not rank candidates on noise, and
says which candidates are statistically indistinguishable.

Nothing here imports mlflow or optuna: the study and the MLflow runs are read and
written elsewhere in ``tracking``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from space.ladder import rung_of
from space.trial_attrs import ATTR_MLFLOW_RUN_ID, TrialAttrs
from tracking.study_view import StudyView

MINIMIZE = "minimize"
MAXIMIZE = "maximize"

_DIRECTION_ALIASES = {
    "minimize": MINIMIZE,
    "min": MINIMIZE,
    "maximize": MAXIMIZE,
    "max": MAXIMIZE,
}


def normalize_direction(direction: Any) -> str:
    """``"minimize"``/``"maximize"`` from a string (``min``/``max`` too) or an enum like
    Optuna's ``StudyDirection`` (matched by its name)."""
    key = getattr(direction, "name", direction)
    if isinstance(key, str) and key.lower() in _DIRECTION_ALIASES:
        return _DIRECTION_ALIASES[key.lower()]
    raise ValueError(f"unknown direction {direction!r}; expected 'minimize' or 'maximize'")


@dataclass(frozen=True)
class ParetoRanks:
    """Per-point ranks (``None`` where excluded) and the reason for each exclusion."""

    ranks: tuple[int | None, ...]
    excluded: Mapping[int, str] = field(default_factory=dict)

    @property
    def fronts(self) -> list[list[int]]:
        """Point indices grouped by rank, front 0 first."""
        n_fronts = max((r for r in self.ranks if r is not None), default=-1) + 1
        fronts: list[list[int]] = [[] for _ in range(n_fronts)]
        for i, r in enumerate(self.ranks):
            if r is not None:
                fronts[r].append(i)
        return fronts

    @property
    def pareto_set(self) -> list[int]:
        fronts = self.fronts
        return fronts[0] if fronts else []


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def pareto_ranks(
    points: Sequence[Sequence[Any]],
    directions: Sequence[Any],
    names: Sequence[str] | None = None,
) -> ParetoRanks:
    """Non-dominated sorting of ``points`` (one objective vector each) under ``directions``.

    Point a dominates b when a is at least as good in every objective and strictly
    better in one. Rank 0 holds the points no other point dominates; rank k those
    dominated only by points of ranks < k. Equal points (duplicates) never dominate each
    other and share a rank. A point with a missing (``None``, absent, non-numeric) or NaN
    value is excluded (rank ``None``) with a reason naming the objective; infinities
    compare as the worst or best possible value. ``names`` only label the reasons.

    Cost: O(n^2 m) time and O(n^2) memory for n points and m objectives.
    """
    dirs = [normalize_direction(d) for d in directions]
    m = len(dirs)
    if m == 0:
        raise ValueError("at least one objective direction is needed")
    labels = list(names) if names is not None else [f"objective {j}" for j in range(m)]
    if len(labels) != m:
        raise ValueError(f"{len(labels)} names for {m} directions")

    excluded: dict[int, str] = {}
    valid_rows: list[list[float]] = []
    valid_index: list[int] = []
    for i, point in enumerate(points):
        row: list[float] = []
        reason = None
        for j in range(m):
            raw = point[j] if j < len(point) else None
            value = _as_number(raw)
            if value is None:
                reason = f"missing value for {labels[j]!r}"
                break
            if math.isnan(value):
                reason = f"{labels[j]!r} is NaN"
                break
            row.append(value)
        if reason is not None:
            excluded[i] = reason
            continue
        valid_rows.append(row)
        valid_index.append(i)

    ranks: list[int | None] = [None] * len(points)
    if valid_rows:
        # Minimize everything: flip the sign of maximized objectives.
        sign = np.array([1.0 if d == MINIMIZE else -1.0 for d in dirs])
        x = np.asarray(valid_rows, dtype=float) * sign  # (n, m)
        no_worse = (x[:, None, :] <= x[None, :, :]).all(axis=-1)  # (n, n): i <= j everywhere
        better = (x[:, None, :] < x[None, :, :]).any(axis=-1)  # (n, n): i < j somewhere
        dominates = no_worse & better  # dominates[i, j]: i dominates j
        dominated_by = dominates.sum(axis=0)  # (n,) how many points dominate j
        local_rank = np.full(len(valid_rows), -1)
        front = np.flatnonzero(dominated_by == 0)
        r = 0
        while front.size:
            local_rank[front] = r
            dominated_by = dominated_by - dominates[front].sum(axis=0)
            front = np.flatnonzero((dominated_by == 0) & (local_rank < 0))
            r += 1
        for k, i in enumerate(valid_index):
            ranks[i] = int(local_rank[k])
    return ParetoRanks(ranks=tuple(ranks), excluded=excluded)


@dataclass(frozen=True)
class NoisyParetoRanks(ParetoRanks):
    """:class:`ParetoRanks` under noise, and the pairs of points (indices, lower first)
    that no objective tells apart: within the margin on every objective."""

    indistinguishable: tuple[tuple[int, int], ...] = ()

    def alike(self, i: int) -> list[int]:
        """The points indistinguishable from point ``i``."""
        return [b if a == i else a for a, b in self.indistinguishable if i in (a, b)]


def pareto_ranks_within_noise(
    points: Sequence[Sequence[Any]],
    sems: Sequence[Sequence[float]],
    directions: Sequence[Any],
    names: Sequence[str] | None = None,
    *,
    z: float = 2.0,
) -> NoisyParetoRanks:
    """Non-dominated sorting of mean vectors ``points`` whose standard errors are ``sems``
    (same shape; 0 for a value without noise, e.g. one computed from the layout).

    For points a and b and objective j the margin is ``z * sqrt(sem_aj^2 + sem_bj^2)``
    (``z`` standard errors of the difference). a dominates b when a is worse than b by
    more than the margin in no objective and better by more than the margin in at least
    one. With every sem 0 this is :func:`pareto_ranks`. The relation never holds both
    ways; should it ever cycle, the points left in the cycle share the next rank.
    Points with a missing or NaN value (or NaN sem, read as 0) are excluded as in
    :func:`pareto_ranks`.
    """
    plain = pareto_ranks(points, directions, names)
    dirs = [normalize_direction(d) for d in directions]
    valid = [i for i, r in enumerate(plain.ranks) if r is not None]
    ranks: list[int | None] = [None] * len(points)
    if not valid:
        return NoisyParetoRanks(ranks=tuple(ranks), excluded=plain.excluded)
    sign = np.array([1.0 if d == MINIMIZE else -1.0 for d in dirs])
    x = np.array([[float(points[i][j]) for j in range(len(dirs))] for i in valid]) * sign
    se = np.nan_to_num(
        np.array([[float(sems[i][j]) for j in range(len(dirs))] for i in valid]), nan=0.0
    )
    margin = z * np.sqrt(se[:, None, :] ** 2 + se[None, :, :] ** 2)  # (n, n, m)
    diff = x[:, None, :] - x[None, :, :]  # (n, n, m): a - b, lower is better
    better = (diff < -margin).any(axis=-1)
    no_worse = (diff <= margin).all(axis=-1)
    dominates = better & no_worse  # dominates[a, b]
    same = (np.abs(diff) <= margin).all(axis=-1)  # indistinguishable on every objective
    dominated_by = dominates.sum(axis=0)
    local = np.full(len(valid), -1)
    r = 0
    while (local < 0).any():
        front = np.flatnonzero((dominated_by == 0) & (local < 0))
        if not front.size:  # a cycle: what is left shares this rank
            front = np.flatnonzero(local < 0)
        local[front] = r
        dominated_by = dominated_by - dominates[front].sum(axis=0)
        r += 1
    for k, i in enumerate(valid):
        ranks[i] = int(local[k])
    return NoisyParetoRanks(
        ranks=tuple(ranks),
        excluded=plain.excluded,
        indistinguishable=tuple(
            (valid[a], valid[b])
            for a in range(len(valid))
            for b in range(a + 1, len(valid))
            if same[a, b]
        ),
    )


# -- the table -----------------------------------------------------------------

TRIAL = "trial"
RANK = "rank"
PARETO = "pareto"
CANDIDATE = "candidate"
EXCLUDED = "excluded"


@dataclass(frozen=True)
class ParetoTable:
    """Trial rows sorted by Pareto rank (excluded rows last, with ``rank`` None).

    Every row has ``trial``, ``rank``, ``pareto``, ``candidate``, one key per objective,
    the extra keys of the input rows, and ``excluded`` (the reason, or None).
    """

    rows: tuple[dict[str, Any], ...]
    objective_names: tuple[str, ...]
    directions: tuple[str, ...]
    title: str = "Pareto front"

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def front(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row[RANK] == 0]

    @property
    def columns(self) -> list[str]:
        head = [TRIAL, RANK, PARETO, CANDIDATE, *self.objective_names]
        extra: list[str] = []
        for row in self.rows:
            for key in row:
                if key not in head and key not in extra and key != EXCLUDED:
                    extra.append(key)
        return [*head, *extra, EXCLUDED]

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready rows: NaN and infinities become None."""
        return [{k: _json_value(row.get(k)) for k in self.columns} for row in self.rows]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_records(), indent=indent, allow_nan=False, default=str)

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in self.columns})
        return buf.getvalue()

    def to_markdown(self) -> str:
        cols = [TRIAL, RANK, CANDIDATE, *self.objective_names]
        if any(row.get(EXCLUDED) for row in self.rows):
            cols.append(EXCLUDED)
        arrows = {
            name: direction_arrow(d)
            for name, d in zip(self.objective_names, self.directions, strict=True)
        }
        header = [f"{c} {arrows[c]}" if c in arrows else c for c in cols]
        lines = [
            "| " + " | ".join(header) + " |",
            "| " + " | ".join("---" for _ in cols) + " |",
        ]
        for row in self.rows:
            cells = [format_cell(row.get(c)).replace("|", "\\|") for c in cols]
            if row[RANK] == 0:
                cells[0] = f"**{cells[0]}**"
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def direction_arrow(direction: str) -> str:
    return "(max)" if direction == MAXIMIZE else "(min)"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_value(value.item())
    return value


def format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def pareto_table(
    rows: Iterable[Mapping[str, Any]],
    objective_names: Sequence[str],
    directions: Sequence[Any],
    title: str = "Pareto front",
) -> ParetoTable:
    """Rank ``rows`` (each with ``trial``, ``candidate`` and one key per objective).

    The result is sorted by rank, then trial; rows with a missing or NaN objective come
    last with ``rank`` None and the reason in ``excluded``.
    """
    names = tuple(objective_names)
    dirs = tuple(normalize_direction(d) for d in directions)
    if len(names) != len(dirs):
        raise ValueError(f"{len(names)} objective names for {len(dirs)} directions")
    items = [dict(row) for row in rows]
    ranked = pareto_ranks([[row.get(n) for n in names] for row in items], dirs, names)
    out: list[dict[str, Any]] = []
    for i, row in enumerate(items):
        rank = ranked.ranks[i]
        record = {
            TRIAL: row.get(TRIAL),
            RANK: rank,
            PARETO: rank == 0,
            CANDIDATE: row.get(CANDIDATE),
            **{n: row.get(n) for n in names},
        }
        for key, value in row.items():
            if key not in record:
                record[key] = value
        record[EXCLUDED] = ranked.excluded.get(i)
        out.append(record)

    def order(record: dict[str, Any]) -> tuple:
        trial = record[TRIAL]
        return (
            record[RANK] is None,
            record[RANK] if record[RANK] is not None else 0,
            trial if isinstance(trial, int | float) else math.inf,
            str(trial),
        )

    out.sort(key=order)
    return ParetoTable(rows=tuple(out), objective_names=names, directions=dirs, title=title)


def pareto_of_study(study: StudyView, rung: int = 0) -> ParetoTable:
    """The COMPLETE trials of ``study`` ranked by Pareto front, with candidate names, ids
    and their MLflow run ids. ``rung``: the scale-ladder rung whose trials are ranked
    (objectives compare within a rung; every trial of a study without a ladder is at 0)."""
    rows = []
    for trial in study.complete():
        if rung_of(trial.user_attrs) != rung:
            continue
        values = list(trial.values or [])
        attrs = TrialAttrs.of(trial.user_attrs)
        row: dict[str, Any] = {TRIAL: trial.number, CANDIDATE: attrs.candidate_name or ""}
        for i, name in enumerate(study.objectives):
            row[name] = values[i] if i < len(values) else None
        row["candidate_id"] = attrs.candidate_id or ""
        if attrs.mlflow_run_id:
            row[ATTR_MLFLOW_RUN_ID] = attrs.mlflow_run_id
        rows.append(row)
    title = f"Pareto front of {study.name}" + (f", rung {rung}" if rung else "")
    return pareto_table(rows, study.objectives, study.directions, title=title)
