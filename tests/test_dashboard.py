"""The read-only, Host-checking wrapper around optuna-dashboard (search.commands.dashboard), as a
WSGI app called directly: no server, no browser. The served dashboard is checked in
tests/test_pages.py (a foreign-Host DELETE and POST refused, a same-host page rendered)."""

from __future__ import annotations

import pytest

from search.commands.dashboard import ReadOnlyHosts, default_hosts, parse_hosts


def _inner(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"dashboard"]


def _call(app, method: str, host: str | None) -> str:
    seen: list[str] = []
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/api/studies/1"}
    if host is not None:
        environ["HTTP_HOST"] = host
    body = b"".join(app(environ, lambda status, headers: seen.append(status)))
    assert body
    return seen[0].split()[0]


@pytest.mark.parametrize(
    ("method", "host", "status"),
    [
        ("GET", "127.0.0.1:8080", "200"),
        ("HEAD", "localhost:8080", "200"),
        ("GET", "[::1]:8080", "200"),
        ("GET", "LOCALHOST:8080", "200"),
        ("DELETE", "127.0.0.1:8080", "405"),
        ("POST", "localhost:8080", "405"),
        ("PUT", "127.0.0.1:8080", "405"),
        ("PATCH", "127.0.0.1:8080", "405"),
        ("DELETE", "evil.example:8080", "403"),
        ("POST", "evil.example:8080", "403"),
        ("GET", "evil.example:8080", "403"),
        ("GET", "127.0.0.1:9999", "403"),  # another port: another service's origin
        ("GET", "127.0.0.1", "403"),  # no port is port 80
        ("GET", "127.0.0.1.nip.io:8080", "403"),
        ("GET", None, "403"),
        ("GET", "", "403"),
    ],
)
def test_dashboard_wrapper_serves_reads_from_this_host_only(method, host, status):
    app = ReadOnlyHosts(_inner, default_hosts(8080))
    assert _call(app, method, host) == status


def test_dashboard_wrapper_allowlist_takes_names_with_or_without_a_port():
    app = ReadOnlyHosts(_inner, (*default_hosts(8080), *parse_hosts("Dash.Example, b.example:9")))
    assert _call(app, "GET", "dash.example:443") == "200"  # a bare name: any port
    assert _call(app, "GET", "dash.example") == "200"
    assert _call(app, "GET", "b.example:9") == "200"
    assert _call(app, "GET", "b.example:10") == "403"
    assert _call(app, "DELETE", "dash.example:443") == "405"
    with pytest.raises(ValueError, match="empty"):
        ReadOnlyHosts(_inner, parse_hosts(" , "))
