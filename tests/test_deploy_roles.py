"""deploy/postgres.sh and deploy/roles.sql for real, without Docker (issue 21): one role
per database, the superuser for bootstrap only, the dashboard's role read-only.

The server runs with the binaries of the `pgserver` dev extra (as in tests/test_cluster.py),
started twice on the same data folder: the bootstrap is idempotent. The role passwords hold
quotes, spaces and ``$(...)``: they reach SQL through psql's ``\\getenv`` and ``:'name'``,
never spliced into a command or a statement.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from engines import free_port
from test_cluster import _user_exists, base_env, postgres_bin

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
LOCAL = "127.0.0.1"
ROLES = {"optuna": "t_optuna", "mlflow": "t_mlflow", "dashboard": "t_dash"}
PASSWORDS = {
    "optuna": "o p'w\"d$(touch pwned)",
    "mlflow": "m;DROP ROLE t_optuna;--",
    "dashboard": "d/\\x:@#?%+=",
}


class Postgres:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="rn-roles-", dir="/tmp"))
        self.base.chmod(0o755)  # PostgreSQL runs as another user when the tests run as root
        self.port = free_port()
        self.env = {
            **base_env(),
            "PGDATA": str(self.base / "pg"),
            "POSTGRES_USER": "t_super",
            "POSTGRES_PASSWORD": "super-secret",
            "POSTGRES_HOST": LOCAL,
            "POSTGRES_PORT": str(self.port),
            "PG_BIN": postgres_bin(),
            "OPTUNA_DB_USER": ROLES["optuna"],
            "MLFLOW_DB_USER": ROLES["mlflow"],
            "DASHBOARD_DB_USER": ROLES["dashboard"],
            "OPTUNA_DB_PASSWORD": PASSWORDS["optuna"],
            "MLFLOW_DB_PASSWORD": PASSWORDS["mlflow"],
            "DASHBOARD_DB_PASSWORD": PASSWORDS["dashboard"],
        }
        if os.geteuid() == 0:
            self.env["PG_RUN_AS"] = "postgres" if _user_exists("postgres") else "nobody"
        self.proc: subprocess.Popen | None = None

    def url(self, who: str, database: str, driver: str = "postgresql+psycopg") -> str:
        return (
            f"{driver}://{ROLES[who]}:{quote(PASSWORDS[who], safe='')}@{LOCAL}:{self.port}/"
            f"{database}"
        )

    def start(self) -> None:
        import psycopg

        log = (self.base / "postgres.log").open("ab")
        self.proc = subprocess.Popen(
            ["bash", str(DEPLOY / "postgres.sh")],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.base,
        )
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, self.log()
            try:
                with psycopg.connect(self.url("optuna", "optuna", "postgresql"), connect_timeout=3):
                    return
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return (self.base / "postgres.log").read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(pg.base, ignore_errors=True)


def _refused(url: str, statement: str) -> bool:
    """Whether PostgreSQL refuses ``statement`` (or the connection) for lack of a
    privilege: any other error (a wrong password, a typo) fails the test instead."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute(statement)
    except psycopg.Error as err:
        assert "permission denied" in str(err), err
        return True
    return False


@pytest.mark.slow
def test_deploy_roles_each_service_gets_its_own_database_and_the_dashboard_only_reads(postgres):
    import psycopg

    sweeps = postgres.url("optuna", "optuna")
    study = optuna.create_study(storage=sweeps, study_name="roles")  # creates Optuna's tables
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)

    # The dashboard reads every study (as optuna-dashboard does: no table creation)...
    dashboard = postgres.url("dashboard", "optuna")
    read = optuna.storages.RDBStorage(dashboard, skip_table_creation=True)
    assert [s.study_name for s in read.get_all_studies()] == ["roles"]
    assert len(read.get_all_trials(study._study_id)) == 2
    # ...and can change nothing: no write, no delete, no new table, no other database.
    plain = postgres.url("dashboard", "optuna", "postgresql")
    assert _refused(plain, "DELETE FROM studies")
    assert _refused(plain, "UPDATE trials SET state = 'COMPLETE'")
    assert _refused(plain, "INSERT INTO study_user_attributes (study_id, key, value_json) "
                           "VALUES (1, 'forged', '1')")  # fmt: skip
    assert _refused(plain, "CREATE TABLE forged (x int)")
    assert _refused(postgres.url("dashboard", "mlflow", "postgresql"), "SELECT 1")
    # The MLflow role owns its database and cannot reach the study; the sweeps' role the
    # other way round; neither is a superuser.
    mlflow = postgres.url("mlflow", "mlflow", "postgresql")
    with psycopg.connect(mlflow) as conn:
        conn.execute("CREATE TABLE runs_check (x int)")
        conn.execute("INSERT INTO runs_check VALUES (1)")
    assert _refused(postgres.url("mlflow", "optuna", "postgresql"), "SELECT 1")
    assert _refused(postgres.url("optuna", "mlflow", "postgresql"), "SELECT 1")
    with psycopg.connect(postgres.url("optuna", "optuna", "postgresql")) as conn:
        flags = conn.execute(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
            "WHERE rolname = ANY(%s) ORDER BY rolname",
            (list(ROLES.values()),),
        ).fetchall()
    assert flags == sorted((r, False, False, False) for r in ROLES.values())
    assert not list(postgres.base.rglob("pwned"))  # the password was never run as code

    # A restart runs the bootstrap again: nothing lost, the dashboard still reads the
    # tables the sweeps' role created, and a table created later too.
    postgres.stop()
    postgres.start()
    assert len(optuna.load_study(study_name="roles", storage=sweeps).trials) == 2
    optuna.create_study(storage=sweeps, study_name="after-restart")
    read = optuna.storages.RDBStorage(dashboard, skip_table_creation=True)
    names = {s.study_name for s in read.get_all_studies()}
    assert names == {"roles", "after-restart"}
    assert _refused(plain, "DELETE FROM trials")
