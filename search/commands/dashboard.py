"""`ropenope dashboard`: optuna-dashboard on a study's storage, read-only and for this host.

optuna-dashboard's API writes (``DELETE /api/studies/<id>`` deletes a study, ``POST
/api/trials/<id>/tell`` forges a result) and it answers any ``Host``, so a page the
browser fetched from another site can reach it through a DNS name that resolves to
127.0.0.1 (DNS rebinding), the SSH tunnel included. :class:`ReadOnlyHosts` wraps the WSGI
app of ``optuna_dashboard.wsgi(storage)``: a request whose ``Host`` is not on the
allowlist is refused (403), and any method but GET and HEAD too (405). The deploy script
(deploy/optuna-dashboard.sh) serves the same wrapper.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

HELP = "serve optuna-dashboard on a study's storage, read-only, to this host only"
READ_METHODS = frozenset({"GET", "HEAD"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
HOSTS_ENV = "OPTUNA_DASHBOARD_ALLOWED_HOSTS"  # comma-separated NAME or NAME:PORT

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def default_hosts(port: int) -> tuple[str, ...]:
    """The ``Host`` values a browser on this machine sends: the loopback names with the
    served port."""
    return tuple(f"{name}:{port}" for name in LOOPBACK_NAMES)


def parse_hosts(text: str) -> tuple[str, ...]:
    """``"a.example:8080, b"`` -> ``("a.example:8080", "b")`` (lower case)."""
    return tuple(h.strip().lower() for h in text.split(",") if h.strip())


def _split_host(value: str) -> tuple[str, str | None]:
    """``"name:port"`` -> ``(name, port)``; ``"[::1]:80"`` keeps its brackets."""
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit() and (not name.startswith("[") or name.endswith("]")):
        return name, port
    return value, None


class ReadOnlyHosts:
    """WSGI middleware: only GET and HEAD, only from an allowed ``Host``.

    An allowlist entry ``name:port`` allows exactly that ``Host``; a bare ``name`` allows
    it on any port (the port a proxy or ``docker compose`` publishes). A request without a
    ``Host`` header is refused: every browser sends one."""

    def __init__(self, app: WsgiApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.exact: set[str] = set()
        self.any_port: set[str] = set()
        for entry in hosts:
            name, port = _split_host(entry.strip().lower())
            (self.exact if port else self.any_port).add(f"{name}:{port}" if port else name)
        if not self.exact and not self.any_port:
            raise ValueError("the dashboard's Host allowlist is empty")

    def allows(self, host: str | None) -> bool:
        if not host:
            return False
        host = host.strip().lower()
        name, port = _split_host(host)
        return f"{name}:{port or 80}" in self.exact or name in self.any_port

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not self.allows(environ.get("HTTP_HOST")):
            return _refuse(start_response, "403 Forbidden", "this Host is not served here\n")
        if environ.get("REQUEST_METHOD", "GET").upper() not in READ_METHODS:
            return _refuse(
                start_response,
                "405 Method Not Allowed",
                "the dashboard is read-only here\n",
                [("Allow", "GET, HEAD")],
            )
        return self.app(environ, start_response)


def _refuse(
    start_response: StartResponse,
    status: str,
    text: str,
    headers: list[tuple[str, str]] | None = None,
) -> Iterator[bytes]:
    body = text.encode()
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        + (headers or []),
    )
    return iter([body])


def dashboard_app(storage_url: str, hosts: Iterable[str]) -> ReadOnlyHosts:
    """optuna-dashboard's WSGI app on ``storage_url``, wrapped. The storage is opened
    without creating tables: a read-only database role can serve it."""
    import optuna
    import optuna_dashboard

    storage = optuna.storages.RDBStorage(storage_url, skip_table_creation=True)
    return ReadOnlyHosts(optuna_dashboard.wsgi(storage), hosts)


def serve(storage_url: str, host: str, port: int, hosts: Iterable[str]) -> None:
    """Serve until interrupted (wsgiref, as ``optuna_dashboard.run_server`` does)."""
    from wsgiref.simple_server import make_server

    app = dashboard_app(storage_url, hosts)
    with make_server(host, port, app) as server:
        server.serve_forever()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help=HELP,
        description=f"{HELP[0].upper()}{HELP[1:]}: GET and HEAD only, and only requests "
        "whose Host is 127.0.0.1, localhost or [::1] with the port (add names with "
        f"--allow-host or ${HOSTS_ENV}). "
        "Example: ropenope dashboard --storage runs/optuna.db --port 8080",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or SQLite file (default: $ROPENOPE_STORAGE, else runs/optuna.db)",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="also accept requests with this Host header (repeatable; a NAME without a port "
        "matches any port, for a proxy or a published container port)",
    )


def run(args: argparse.Namespace) -> int:
    from search.storage import resolve_storage_url
    from space.secrets import redact_url

    url = resolve_storage_url(args.storage)
    hosts = (
        *default_hosts(args.port),
        *parse_hosts(os.environ.get(HOSTS_ENV, "")),
        *(h.lower() for h in args.allow_host),
    )
    print(
        f"optuna-dashboard on {redact_url(url)}: http://127.0.0.1:{args.port}/dashboard "
        "(read-only; Ctrl-C to stop)",
        flush=True,
    )
    serve(url, args.host, args.port, hosts)  # Ctrl-C: the CLI's "interrupted" line
    return 0
