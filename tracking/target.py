"""Where a study's MLflow runs go: the tracking URI, the experiment, the artifact root.

The URI is the sweep file's ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite
file under the runs folder (:mod:`space.paths`); never MLflow's deprecated file store.
:class:`TrackingTarget` is plain strings: it crosses process boundaries (Ray trials).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from space.errors import ConfigError
from space.paths import runs_dir
from space.secrets import is_redacted, redact_url

if TYPE_CHECKING:
    from space.schema import SweepConfig

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
URI_ENV = "MLFLOW_TRACKING_URI"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def resolve_tracking_uri(uri: str | None = None, runs: Path | None = None) -> str:
    """The tracking URI: ``uri`` (the config's), else ``$MLFLOW_TRACKING_URI``, else a SQLite
    file ``<runs>/mlflow.db`` (never the deprecated file store). Relative SQLite paths are
    made absolute, so Ray trials that change directory still write to the same file."""
    uri = uri or os.environ.get(URI_ENV) or None
    if uri is None:
        return f"sqlite:///{(runs or runs_dir()) / DB_NAME}"
    path = sqlite_file(uri)
    if path is not None and not path.is_absolute():
        query = uri.split("?", 1)[1] if "?" in uri else ""
        uri = f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")
    return uri


def is_remote(uri: str) -> bool:
    """A tracking server (REST API) rather than a database the client writes itself."""
    return uri.split(":", 1)[0] in ("http", "https", "databricks")


def is_local_store(uri: str) -> bool:
    """A store on this machine's disk (a SQLite file, a file store folder): it can be busy,
    never silent like a server that accepts connections and does not answer."""
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    return scheme in ("file", "sqlite") or scheme.startswith("sqlite+")


def artifact_location(uri: str, experiment: str, runs: Path | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: the server decides for a tracking server;
    next to the database for SQLite (``<dir>/mlartifacts/<experiment>``); under the runs
    folder for another database."""
    if is_remote(uri) or uri.startswith("file:") or "://" not in uri:
        return None
    path = sqlite_file(uri)
    base = path.parent if path is not None else (runs or runs_dir())
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", experiment) or "experiment"
    return (base / ARTIFACTS_DIR / safe).resolve().as_uri()


@dataclass(frozen=True)
class TrackingTarget:
    """Where a study's runs go. Plain strings: it crosses process boundaries (Ray)."""

    uri: str
    experiment: str
    study: str
    artifact_location: str | None = None
    enabled: bool = True

    @property
    def local(self) -> bool:
        """Whether the store is on local disk (see :func:`is_local_store`)."""
        return is_local_store(self.uri)

    @property
    def shown_uri(self) -> str:
        """The URI as it may be printed or stored (no password)."""
        return redact_url(self.uri)

    def __repr__(self) -> str:  # never a password in a log line or a traceback
        return (
            f"TrackingTarget(uri={self.shown_uri!r}, experiment={self.experiment!r}, "
            f"study={self.study!r}, enabled={self.enabled})"
        )


def tracking_target(
    config: SweepConfig | None,
    study_name: str,
    runs: Path | None = None,
    uri: str | None = None,
) -> TrackingTarget:
    """The target a sweep file asks for (``tracking:`` section; ``None``: defaults), for
    study ``study_name`` (``--study`` may rename it); ``uri`` overrides the file's
    (``--tracking-uri``). The experiment defaults to the study name."""
    experiment = (config.tracking.experiment if config else None) or study_name
    configured = config.tracking.uri if config else None
    if is_redacted(configured):
        # read back from a study: its password was never stored; the environment has it
        if not (uri or os.environ.get(URI_ENV)):
            raise ConfigError.at(
                "tracking.uri",
                f"{configured} had its password removed (a study stores none): set "
                f"${URI_ENV} (or pass --tracking-uri) to the real one",
            )
        configured = None
    resolved = resolve_tracking_uri(uri or configured, runs)
    return TrackingTarget(
        uri=resolved,
        experiment=experiment,
        study=study_name,
        artifact_location=artifact_location(resolved, experiment, runs),
        enabled=config.tracking.enabled if config else True,
    )
