"""The MLflow UI page a study opens on: the runs table of a model-training experiment, with
the trials sorted by Pareto rank and a summary of what the sweep found above them.

What MLflow 3.17's UI does (read in its JavaScript bundle, then checked with headless Chromium
in ``tests/test_mlflow_ui.py``):

- The GenAI vs model-training view is a toggle in the sidebar that defaults to GenAI; while the
  toggle exists the experiment's ``mlflow.experimentKind`` tag is ignored, so a link to
  ``#/experiments/<id>`` lands on the empty GenAI overview. ``?workflowType=machine_learning``
  selects model training and ``#/experiments/<id>/runs`` the runs table. We still tag the
  experiment as model training: MLflow honours it where the toggle is off.
- The runs table nests child runs under their parent, collapsed, unless the table is filtered
  or sorted by something other than the start time; a page cannot ask for a parent expanded.
- A saved view is an experiment tag ``mlflow.sharedViewState.<key>`` holding
  ``{"name", "createdAt", "updatedAt", "state"}`` where ``state`` is the JSON of the page's
  filter, sort and columns; ``?viewStateShareKey=<key>`` opens it, and the page's "Views" menu
  lists it. Ours filters on the trial runs and sorts them by ``pareto_rank``, so every trial
  shows, front first, with the objectives, the candidate and the searched knobs as columns.
- The experiment's ``mlflow.note.content`` is its description, shown above the table (its first
  line while folded); a run's is the run's description.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from space.names import (
    RUN_KIND_TRIAL,
    TAG_CANDIDATE_NAME,
    TAG_OBJECTIVES,
    TAG_OUTCOME,
    TAG_PARETO_RANK,
    TAG_RUN_KIND,
)

if TYPE_CHECKING:
    from tracking.pareto import ParetoTable

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
WORKFLOW_QUERY = "workflowType=machine_learning"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_KEY = "ropenope-trials"
VIEW_NAME = "ropenope: trials by Pareto rank"
NOTE_TAG = "mlflow.note.content"
# Last line of every note we write: a description without it is the user's, never replaced.
NOTE_MARK = "<!-- written by ropenope; replaced as trials finish -->"
_NOTE_CHARS = 7500  # MLflow keeps 8000 characters of a run tag
_NOTE_ROWS = 25


def experiment_tags() -> dict[str, str]:
    """Tags of a study's experiment at creation: it is a model-training experiment."""
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING}


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"


def view_state(objectives: Sequence[str], knobs: Sequence[str] = ()) -> dict[str, Any]:
    """The page state of our saved view: trial runs only (flat, so none hides under the
    study run), sorted by Pareto rank, objectives, candidate and knobs as columns."""
    from tracking.keys import metric_key

    return {
        "searchFilter": f"tags.{TAG_RUN_KIND} = '{RUN_KIND_TRIAL}'",
        "orderByKey": _column("tags", TAG_PARETO_RANK),
        "orderByAsc": True,
        "selectedColumns": [
            _column("tags", TAG_PARETO_RANK),
            *[_column("metrics", metric_key(name)) for name in objectives],
            _column("tags", TAG_CANDIDATE_NAME),
            *[_column("params", knob) for knob in knobs],
            _column("tags", TAG_OUTCOME),
        ],
    }


def view_tag(
    objectives: Sequence[str], knobs: Sequence[str] = (), now_ms: int | None = None
) -> tuple[str, str]:
    """The experiment tag (key, value) that stores our saved view."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    envelope = {
        "name": VIEW_NAME,
        "createdAt": now,
        "updatedAt": now,
        "state": json.dumps(view_state(objectives, knobs)),
    }
    return VIEW_TAG_PREFIX + VIEW_KEY, json.dumps(envelope)


def runs_url(base: str, experiment_id: str, view: bool = True) -> str:
    """The runs table of the experiment in the model-training view (and our saved view)."""
    query = WORKFLOW_QUERY + (f"&viewStateShareKey={VIEW_KEY}" if view else "")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def objectives_of(study_run_tags: Mapping[str, str]) -> list[str]:
    """Objective names from the study run's ``objectives`` tag (``name:direction,...``)."""
    text = study_run_tags.get(TAG_OBJECTIVES, "")
    return [part.split(":", 1)[0] for part in text.split(",") if part]


def ensure_view(
    client: Any, experiment_id: str, objectives: Sequence[str], knobs: Sequence[str] = ()
) -> bool:
    """Tag the experiment as model training and give it our saved view, unless it has them
    (a view the user changed and saved stays as they left it); True if anything was set."""
    experiment = client.get_experiment(experiment_id)
    tags = dict(experiment.tags)
    wanted = dict(experiment_tags())
    key, value = view_tag(objectives, knobs)
    wanted[key] = value
    missing = {k: v for k, v in wanted.items() if k not in tags}
    for k, v in missing.items():
        client.set_experiment_tag(experiment_id, k, v)
    return bool(missing)


def study_note(table: ParetoTable, study: str) -> str:
    """Markdown for the study run's (and experiment's) description: one line that says what
    the sweep found, then the ranked trials (the first rows, if there are many)."""
    front = table.front
    ranked = [row for row in table.rows if row.get("rank") is not None]

    def show(row: Mapping[str, Any]) -> str:
        values = ", ".join(f"{name} {_number(row.get(name))}" for name in table.objective_names)
        return f"trial {row.get('trial')} `{row.get('candidate') or '?'}` ({values})"

    if front:
        found = "; ".join(show(row) for row in front[:3])
        more = f" and {len(front) - 3} more" if len(front) > 3 else ""
        headline = f"**{study}**: {len(ranked)} COMPLETE trials ranked; Pareto front: {found}{more}"
    else:
        headline = f"**{study}**: no COMPLETE trial yet"
    lines = [headline, ""]
    if table.rows:
        shown = table.rows[:_NOTE_ROWS]
        body = _subtable(table, shown)
        lines += [body.rstrip("\n")]
        if len(table.rows) > len(shown):
            lines += ["", f"... and {len(table.rows) - len(shown)} more: see pareto/pareto.md"]
        lines += [
            "",
            "Bold: the Pareto front (rank 0). The runs table lists the trials by "
            "`pareto_rank`; the study run's artifacts hold the interactive front "
            "(pareto/pareto.html).",
        ]
    text = "\n".join(lines) + "\n"
    room = _NOTE_CHARS - len(NOTE_MARK) - 40
    if len(text) > room:
        text = text[:room].rsplit("\n", 1)[0] + "\n\n(cut: see pareto/pareto.md)\n"
    return f"{text}\n{NOTE_MARK}\n"


def _subtable(table: ParetoTable, rows: Sequence[Mapping[str, Any]]) -> str:
    from tracking.pareto import ParetoTable

    return ParetoTable(
        rows=tuple(dict(r) for r in rows),
        objective_names=table.objective_names,
        directions=table.directions,
        title=table.title,
    ).to_markdown()


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "?" if value is None else str(value)


def set_study_note(
    client: Any, experiment_id: str, run_id: str, note: str, *, on_experiment: bool = True
) -> None:
    """The note becomes the study run's description and, with ``on_experiment`` (an
    experiment of its own, not one several studies share), the experiment's, unless the user
    wrote their own there."""
    run = client.get_run(run_id)
    if run.data.tags.get(NOTE_TAG) != note:
        client.set_tag(run_id, NOTE_TAG, note)
    if not on_experiment:
        return
    experiment = client.get_experiment(experiment_id)
    current = experiment.tags.get(NOTE_TAG)
    if current != note and (current is None or NOTE_MARK in current):
        client.set_experiment_tag(experiment_id, NOTE_TAG, note)


def open_study_page(store: Any) -> str | None:
    """For ``ropenope ui``: the study's experiment id (None if it has none yet), given the
    model-training tag and our saved view if it lacks them (a study tracked before they
    existed); the objectives come from the study run's ``objectives`` tag."""
    experiment = store.client.get_experiment_by_name(store.target.experiment)
    if experiment is None:
        return None
    parent = store.find_parent()
    objectives = objectives_of(parent.data.tags) if parent is not None else []
    ensure_view(store.client, experiment.experiment_id, objectives)
    return experiment.experiment_id


def ui_hint(
    target: Any, experiment_id: str | None, host: str = "127.0.0.1", port: int = 5000
) -> str:
    """The line a finished sweep prints: how to open its runs table (the experiment's
    page when its id is not known)."""
    from tracking.target import is_remote

    if is_remote(target.uri):
        base = target.shown_uri.rstrip("/")
        url = runs_url(base, experiment_id) if experiment_id else base
        return f"MLflow UI: {url}  (experiment {target.experiment!r})"
    base = f"http://{host}:{port}"
    url = runs_url(base, experiment_id) if experiment_id else base
    return f"MLflow UI: ropenope ui {target.study}, then open {url}"


__all__ = [
    "EXPERIMENT_KIND_TAG",
    "MODEL_TRAINING",
    "NOTE_TAG",
    "VIEW_KEY",
    "ensure_view",
    "experiment_tags",
    "objectives_of",
    "open_study_page",
    "runs_url",
    "set_study_note",
    "study_note",
    "ui_hint",
    "view_state",
    "view_tag",
]
