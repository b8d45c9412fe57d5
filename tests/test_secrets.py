"""One redaction for every URL shown or stored; a stored URL never carries its password
(issue 11). The end-to-end search of a real cluster sweep is in tests/test_cluster.py."""

from __future__ import annotations

import optuna
import pytest
from engines import tiny_config_file

from search.errors import StoreError
from search.signature import stored_config
from search.storage import resolve_storage_url
from search.study import open_study
from space import load_config
from space.errors import ConfigError
from space.names import STUDY_ATTR_CONFIG
from space.secrets import contains_secret, is_redacted, redact_text, redact_url
from tracking.keys import param_value
from tracking.target import tracking_target


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://opt:s3cret@db:5432/optuna",
            "postgresql+psycopg://opt:***@db:5432/optuna",
        ),
        ("postgresql://u:p@ss:w0rd@db/x", "postgresql://u:***@db/x"),
        (
            "postgresql://u@db/x?password=s3cret&sslmode=require",
            "postgresql://u@db/x?password=***&sslmode=require",
        ),
        ("postgresql://u@db/x?sslpassword=s3cret", "postgresql://u@db/x?sslpassword=***"),
        ("http://user:tok@mlflow:5000", "http://user:***@mlflow:5000"),
        (
            "https://mlflow.example.org/?token=abc#frag",
            "https://mlflow.example.org/?token=***#frag",
        ),
        ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db"),
        ("postgresql://u@db/x", "postgresql://u@db/x"),
        ("runs/optuna.db", "runs/optuna.db"),
    ],
)
def test_redact_url_masks_user_info_and_secret_query_values(url, shown):
    assert redact_url(url) == shown
    assert contains_secret(url) == (url != shown)
    assert redact_url(shown) == shown  # idempotent


def test_redact_text_masks_every_url_in_a_text():
    text = "storage: postgresql://a:pw1@h/d\n# see http://b:pw2@m:5000 and ?x=1\n"
    out = redact_text(text)
    assert "pw1" not in out and "pw2" not in out and "postgresql://a:***@h/d" in out


def test_params_and_stored_config_never_hold_a_password(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    secret_uri = "http://ropenope:s3cret@127.0.0.1:1"
    path = tiny_config_file(tmp_path / "s.yaml", tracking={"enabled": True, "uri": secret_uri})
    config = load_config(path)
    assert "s3cret" not in param_value(config.tracking.model_dump(mode="json"))
    opened = open_study(config, config_text=path.read_text(), storage_url=url)
    stored = opened.study.user_attrs[STUDY_ATTR_CONFIG]
    assert "s3cret" not in stored and "ropenope:***@" in stored
    again = stored_config(optuna.load_study(study_name="tiny", storage=url))
    assert is_redacted(again.tracking.uri)


def test_a_redacted_url_is_never_used_to_connect(tmp_path, monkeypatch):
    with pytest.raises(StoreError, match="password removed"):
        resolve_storage_url("postgresql+psycopg://u:***@db/optuna")
    config = load_config(
        tiny_config_file(tmp_path / "s.yaml", tracking={"uri": "http://u:***@mlflow:5000"})
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        tracking_target(config, "tiny")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://u:real@mlflow:5000")
    target = tracking_target(config, "tiny")
    assert target.uri == "http://u:real@mlflow:5000" and "real" not in repr(target)
