"""Store errors are one line for the user, never a traceback, and read-only commands never
create tables in a file they were pointed at (issue 11)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from engines import free_port, tiny_config_file

from search.cli import main
from search.liveness import SqliteLock


def _one_line_error(capsys, argv: list[str]) -> str:
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", ["status", "pareto", "report", "resume", "sync"])
def test_read_commands_on_a_missing_database_create_nothing(command, tmp_path, capsys):
    db = tmp_path / "nothing.db"
    err = _one_line_error(capsys, [command, "demo", "--storage", str(db)])
    assert "no study database" in err and not db.exists()


@pytest.mark.parametrize("command", ["status", "pareto", "report"])
def test_read_commands_never_add_tables_to_a_foreign_sqlite_file(command, tmp_path, capsys):
    db = tmp_path / "notes.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    err = _one_line_error(capsys, [command, "demo", "--storage", f"sqlite:///{db}"])
    assert "holds no Optuna study" in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_corrupt_database_file_is_one_line(tmp_path, capsys):
    db = tmp_path / "optuna.db"
    db.write_bytes(b"this is not a database" * 100)
    err = _one_line_error(capsys, ["status", "demo", "--storage", str(db)])
    assert "not a usable SQLite database" in err and str(db) in err


def test_unknown_study_lists_the_studies_there(tmp_path, capsys):
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="alpha", storage=url)
    err = _one_line_error(capsys, ["status", "beta", "--storage", url])
    assert "no study 'beta'" in err and "alpha" in err


def test_unreachable_postgres_is_one_line_without_the_password(capsys):
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://ropenope:hunter2@127.0.0.1:{port}/optuna"
    err = _one_line_error(capsys, ["status", "demo", "--storage", url])
    assert "cannot open the study database" in err and "hunter2" not in err
    assert f"127.0.0.1:{port}" in err


def test_refusing_postgres_is_one_line(postgres_server, capsys):
    # A database that does not exist on a live server: the server refuses the connection.
    head, _, query = postgres_server.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/no_such_database?{query}"
    err = _one_line_error(capsys, ["status", "demo", "--storage", url])
    assert "no_such_database" in err


def test_locked_sqlite_study_names_the_holder(tmp_path, capsys, runs_home):
    db = tmp_path / "optuna.db"
    path = tiny_config_file(tmp_path / "sweep.yaml")
    with SqliteLock(Path(db), "tiny"):
        err = _one_line_error(capsys, ["submit", str(path), "--storage", f"sqlite:///{db}"])
    assert "another driver" in err and "pid" in err
