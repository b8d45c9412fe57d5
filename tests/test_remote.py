"""`ropenope submit --address http://...` and the job commands, without a cluster.

The real submission through the Jobs API runs in tests/test_cluster.py; these check
what is decided before anything is sent: which options reach the job, which
environment it gets, which token, and the errors a user sees.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engines import free_port

from search import jobs
from search.cli import build_parser, main
from search.commands import remote

REPO = Path(__file__).resolve().parent.parent
TINY = "tests/data/tiny.yaml"


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_remote_only_http_addresses_go_to_the_jobs_api():
    assert jobs.is_jobs_address("http://head:8265")
    assert jobs.is_jobs_address("https://ray.example:443")
    for address in (None, "", "auto", "head:6379", "ray://head:10001"):
        assert not jobs.is_jobs_address(address)


def test_remote_forwards_sweep_options_but_not_submission_ones():
    args = parse(
        "submit", TINY, "--address", "http://h:8265", "--storage", "postgresql+psycopg://u:p@db/x",
        "--trials", "5", "--study", "s1", "--no-dedup", "--quiet", "--follow",
        "--working-dir", str(REPO),
    )  # fmt: skip
    out = remote.forwarded(args, args.submit_parser)
    assert out == ["--study", "s1", "--trials", "5", "--no-dedup", "--quiet"]


def test_remote_job_env_takes_storage_from_flag_then_shell():
    root = REPO
    env, notes = remote.job_env("postgresql+psycopg://u@db:5432/optuna", {}, root)
    assert env[remote.STORAGE_ENV] == "postgresql+psycopg://u@db:5432/optuna"
    assert remote.TRACKING_ENV not in env
    assert any("from --storage" in n for n in notes)

    shell = {
        remote.STORAGE_ENV: "postgresql+psycopg://a@b/c",
        remote.TRACKING_ENV: "http://ml:5000",
    }
    env, notes = remote.job_env(None, shell, root)
    assert env[remote.STORAGE_ENV] == shell[remote.STORAGE_ENV]
    assert env[remote.TRACKING_ENV] == "http://ml:5000"


def test_remote_job_env_never_sends_a_password(capsys):
    # A job's environment is shown by the Jobs API and the dashboard (issue 11).
    with pytest.raises(remote.RemoteError, match="holds a password") as err:
        remote.job_env("postgresql+psycopg://u:s3cret@db:5432/optuna", {}, REPO)
    assert "s3cret" not in str(err.value)
    shell = {
        remote.STORAGE_ENV: "postgresql+psycopg://u:s3cret@db/optuna",
        remote.TRACKING_ENV: "http://u:s3cret@ml:5000",
    }
    env, notes = remote.job_env(None, shell, REPO)
    assert remote.STORAGE_ENV not in env and remote.TRACKING_ENV not in env
    assert "s3cret" not in " ".join(notes) and any("not sent" in n for n in notes)


def test_remote_job_env_leaves_stores_to_the_cluster_and_sends_the_commit():
    env, notes = remote.job_env(None, {}, REPO)
    assert remote.STORAGE_ENV not in env and remote.TRACKING_ENV not in env
    assert any("the cluster's" in n for n in notes)
    assert len(env[remote.GIT_COMMIT_ENV]) == 40  # the uploaded folder has no .git
    assert remote.job_env(None, {}, None)[0] == {}  # nothing uploaded: no commit to send


def test_remote_job_env_warns_about_loopback_store_urls():
    _, notes = remote.job_env(None, {remote.TRACKING_ENV: "http://127.0.0.1:5000"}, REPO)
    assert any(n.startswith("warning: MLFLOW_TRACKING_URI points at 127.0.0.1") for n in notes)


def test_remote_auth_header_from_token_or_token_file(tmp_path):
    assert jobs.auth_headers({"RAY_AUTH_TOKEN": "abc"}) == {"Authorization": "Bearer abc"}
    path = tmp_path / "token"
    path.write_text("xyz\n")
    assert jobs.auth_headers({"RAY_AUTH_TOKEN_PATH": str(path)}) == {"Authorization": "Bearer xyz"}
    assert jobs.auth_headers({}) == {}


def test_remote_submit_refuses_a_sweep_file_outside_the_uploaded_folder(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text((REPO / TINY).read_text())
    code = main(
        ["submit", str(config), "--address", "http://127.0.0.1:1", "--working-dir", str(REPO)]
    )
    assert code == 2
    assert "outside the uploaded folder" in capsys.readouterr().err


def test_remote_submit_validates_the_sweep_file_before_contacting_the_cluster(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {name: x}\nmodel: {layers: 0}\n")
    code = main(
        ["submit", str(bad), "--address", "http://127.0.0.1:1", "--working-dir", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "model.layers" in err and "Jobs API" not in err


def test_remote_commands_say_when_the_cluster_is_unreachable(capsys):
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for argv in (["job-status", "--address", address], ["submit", TINY, "--address", address]):
        assert main(argv) == 2
        assert f"cannot reach the Ray Jobs API at {address}" in capsys.readouterr().err


def test_remote_job_commands_refuse_a_non_http_address(capsys):
    assert main(["logs", "raysubmit_x", "--address", "head:6379"]) == 2
    assert "expected the Jobs API address" in capsys.readouterr().err


def test_remote_help_shows_the_job_commands():
    help_text = build_parser().format_help()
    assert "logs" in help_text and "job-status" in help_text
    with pytest.raises(SystemExit):
        parse("logs")  # the job id is required


def test_remote_status_reads_the_first_json_object_after_other_lines():
    logs = 'warning: something\n  {not json\n{"study": "s", "counts": {"COMPLETE": 2}}\n{"x": 1}\n'
    assert remote.parse_json_object(logs) == {"study": "s", "counts": {"COMPLETE": 2}}
    assert remote.parse_json_object("Traceback ...\nKeyError: 'x'\n") is None


class _Job:
    def __init__(self, job_id: str, start: int, metadata: dict[str, str]):
        self.submission_id, self.start_time, self.metadata = job_id, start, metadata
        self.status, self.entrypoint = "SUCCEEDED", "ropenope submit x.yaml"


class _Jobs:
    def __init__(self, jobs: list[_Job]):
        self.jobs = jobs

    def list_jobs(self):
        return self.jobs

    def get_job_info(self, job_id: str):
        return next(j for j in self.jobs if j.submission_id == job_id)


def test_remote_status_picks_the_studys_latest_sweep_job_not_a_status_query():
    client = _Jobs(
        [
            _Job("raysubmit_old", 1, {remote.META_STUDY: "paper"}),
            _Job("raysubmit_new", 5, {remote.META_STUDY: "paper"}),
            _Job("raysubmit_query", 9, {remote.META_STUDY: "paper", remote.META_QUERY: "status"}),
            _Job("raysubmit_other", 7, {remote.META_STUDY: "demo"}),
        ]
    )
    assert remote.sweep_job(client, "paper")["job_id"] == "raysubmit_new"
    assert remote.sweep_job(client, "raysubmit_old")["metadata"] == {remote.META_STUDY: "paper"}
    assert remote.sweep_job(client, "nosuch") is None


def test_remote_status_of_a_job_id_goes_to_the_jobs_api(monkeypatch):
    seen = {}

    def fake(args):
        seen["args"] = args
        return 0

    monkeypatch.setattr(remote, "run_study_status", fake)
    assert main(["status", "raysubmit_abc"]) == 0
    assert seen["args"].study == "raysubmit_abc"
    assert main(["status", "paper", "--address", "http://h:8265"]) == 0
    assert seen["args"].address == "http://h:8265"
