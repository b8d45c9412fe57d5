"""An exported Hugging Face folder as an MLflow model, registered as a new version of a name.

Registering needs an MLflow model (an ``MLmodel`` file), not a plain artifact folder
(DESIGN §7). :func:`register_exported_model` builds one around the folder:

- ``MLmodel``: a ``python_function`` flavor whose ``loader_module`` is a small file the caller
  provides (copied to ``code/``; it imports torch and transformers only when the model is
  loaded, so this module never does), with the folder itself as ``data`` (``hf/``), plus a
  ``ropenope`` flavor block saying what it is (architecture, remote code, study, trial);
- ``requirements.txt`` / ``python_env.yaml`` with the versions installed here.

It is logged the MLflow 3 way: a logged model in the trial run's experiment, linked to the run
as one of its outputs, then a model version of ``name`` whose source is that logged model,
whose ``run_id`` is the trial's run and whose tags are the scores (MLflow names, ``acc@2x`` ->
``acc_at_2x``) and the study, trial and candidate. Works on a SQLite store and on a tracking
server alike (only ``MlflowClient`` calls).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import platform
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracking.keys import metric_key
from tracking.store import MlflowStore, TrackingError
from tracking.target import TrackingTarget

MODEL_ARTIFACT_DIR = "hf"  # the Hugging Face folder inside the MLflow model
CODE_DIR = "code"
FLAVOR = "ropenope"
LOGGED_MODEL_TAG = "logged_model_id"  # version tag: the logged model the version came from
# Version tag: the sha256 of the export's ropenope.json, which holds every file's sha256 (the
# loader checks the files against it). Kept in the tracking database, apart from the artifact
# store the files live in, so a replaced record is seen too.
EXPORT_RECORD_TAG = "export_record_sha256"
EXPORT_RECORD = "ropenope.json"
# What a loader needs installed; versions are the ones installed where the model was exported.
REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "mlflow")

_TAG_CHARS = 5000


class RegistryError(TrackingError):
    """The model could not be registered; the message says why."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    model_id: str  # the logged model's id (``models:/<model_id>``)
    run_id: str | None
    source: str


def _requirements() -> list[str]:
    out = []
    for package in REQUIREMENTS:
        try:
            out.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(package)
    return out


def _python_env() -> str:
    return (
        f"python: {platform.python_version()}\n"
        "build_dependencies:\n- pip\n"
        "dependencies:\n- -r requirements.txt\n"
    )


def version_tags(scores: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, str]:
    """Model-version tags: each finite score under its MLflow metric name, then ``facts``."""
    tags: dict[str, str] = {}
    for name, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if value != value:  # NaN: no score to show
            continue
        tags[metric_key(name)] = repr(float(value))
    for key, value in facts.items():
        if value is not None:
            tags[key] = str(value)[:_TAG_CHARS]
    return tags


def build_mlflow_model(
    folder: Path,
    destination: Path,
    *,
    loader_file: Path,
    model_id: str,
    artifact_location: str,
    run_id: str | None,
    flavor: Mapping[str, Any],
) -> Path:
    """Lay out the MLflow model for ``folder`` in ``destination`` and write its ``MLmodel``."""
    import mlflow.pyfunc
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    shutil.copytree(folder, destination / MODEL_ARTIFACT_DIR)
    (destination / CODE_DIR).mkdir()
    loader = Path(loader_file)
    shutil.copyfile(loader, destination / CODE_DIR / loader.name)
    (destination / "requirements.txt").write_text("\n".join(_requirements()) + "\n")
    (destination / "python_env.yaml").write_text(_python_env())
    model = Model(
        artifact_path=artifact_location, run_id=run_id, model_uuid=model_id, model_id=model_id
    )
    model.signature = ModelSignature(
        inputs=Schema([ColSpec("string")]),  # prompts
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", 32)]),
    )
    mlflow.pyfunc.add_to_model(
        model,
        loader_module=loader.stem,
        data=MODEL_ARTIFACT_DIR,
        code=CODE_DIR,
        python_env="python_env.yaml",
    )
    model.add_flavor(FLAVOR, **dict(flavor))
    model.save(str(destination / "MLmodel"))
    return destination


def register_exported_model(
    target: TrackingTarget,
    name: str,
    folder: str | Path,
    *,
    loader_file: str | Path,
    run_id: str | None,
    scores: Mapping[str, Any],
    facts: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> RegisteredVersion:
    """Log ``folder`` (an exported Hugging Face model) as an MLflow model linked to the run
    ``run_id`` and register it as a new version of ``name``.

    ``facts`` (study, trial, seed, candidate, architecture, ...) become tags of the logged
    model and, with the ``scores``, of the version; ``params`` (the knobs) become params of the
    logged model. A logged model left half-written by a failure is marked FAILED. Raises
    RegistryError.
    """
    from mlflow.exceptions import MlflowException

    store = MlflowStore(target)
    logged = None
    record = Path(folder) / EXPORT_RECORD
    if record.is_file():
        facts = {**facts, EXPORT_RECORD_TAG: hashlib.sha256(record.read_bytes()).hexdigest()}
    try:
        experiment_id, step = _run_experiment(store, run_id)
        client = store.client
        logged = client.create_logged_model(
            experiment_id,
            name=name,
            source_run_id=run_id,
            tags=facts_tags(facts),
            params={k: str(v) for k, v in (params or {}).items()},
            model_type="transformers",
        )
        with tempfile.TemporaryDirectory(prefix="ropenope-mlmodel-") as tmp:
            local = build_mlflow_model(
                Path(folder),
                Path(tmp) / "model",
                loader_file=Path(loader_file),
                model_id=logged.model_id,
                artifact_location=logged.artifact_location,
                run_id=run_id,
                flavor=facts_tags(facts),
            )
            client.log_model_artifacts(logged.model_id, str(local))
        client.finalize_logged_model(logged.model_id, "READY")
        version = _new_version(client, name, logged, run_id, scores, facts, description)
        if run_id is not None:  # the run page lists the model among its outputs
            from mlflow.entities import LoggedModelOutput

            client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
    except (MlflowException, OSError) as err:
        if logged is not None:
            with contextlib.suppress(MlflowException):
                store.client.finalize_logged_model(logged.model_id, "FAILED")
        raise RegistryError(f"registering {name!r} in {target.uri} failed: {err}") from err
    return RegisteredVersion(
        name=name,
        version=str(version.version),
        model_id=logged.model_id,
        run_id=run_id,
        source=version.source,
    )


def _run_experiment(store: MlflowStore, run_id: str | None) -> tuple[str, int]:
    """The experiment the logged model goes to (the run's) and the run's last step."""
    if run_id is None:
        return store.experiment_id(), 0
    run = store.get_run(run_id)
    if run is None:
        target = store.target
        raise RegistryError(
            f"run {run_id} is not in experiment {target.experiment!r} of {target.uri}; give the "
            "store the study was tracked in (--tracking-uri), or rebuild its runs with "
            f"`ropenope sync {target.study}`"
        )
    return run.info.experiment_id, int(run.data.metrics.get("steps", 0) or 0)


def _new_version(
    client: Any,
    name: str,
    logged: Any,
    run_id: str | None,
    scores: Mapping[str, Any],
    facts: Mapping[str, Any],
    description: str | None,
) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    tags = {**version_tags(scores, facts), LOGGED_MODEL_TAG: logged.model_id}
    # The source is the logged model's own location, not ``models:/<model_id>``: MLflow's SQL
    # registry store resolves that URI through the process-wide tracking URI rather than this
    # client's (a TODO in its code), which would tie us to global state. The stored location
    # is the same either way; the version keeps the model id as a tag.
    return client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=run_id,
        tags=tags,
        description=description,
        model_id=logged.model_id,
    )


def facts_tags(facts: Mapping[str, Any]) -> dict[str, str]:
    """Facts as MLflow tags: text, without the unknown ones."""
    return {k: str(v)[:_TAG_CHARS] for k, v in facts.items() if v is not None}


__all__ = [
    "RegisteredVersion",
    "RegistryError",
    "build_mlflow_model",
    "register_exported_model",
    "version_tags",
]
