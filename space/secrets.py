"""Secrets never leave the process: the one redaction of URLs and of text holding them.

A storage or tracking URI may carry a password in its user info
(``postgresql://user:pw@host/db``) or in its query (``?password=pw``, ``sslpassword=``,
``token=``, ``access_key=`` ...). :func:`redact_url` masks both; :func:`redact_text` masks
every URL inside a longer text (a sweep file, an error message, a traceback, a log line).
Whatever is stored (Optuna attributes, MLflow params, tags and artifacts), printed or sent
to Ray as job metadata goes through one of them; the real URL comes from the environment or
the command line at run time.

The user info is parsed the way SQLAlchemy's ``make_url`` parses it (the user name runs to
the first ``:``, the password may hold ``/``, ``?``, ``#``, spaces and ``:``), and where a
password holds an ``@`` that SQLAlchemy or ``urllib`` would split at, the mask runs to the
*last* ``@`` of the URL: a redaction may hide too much, never too little. A URL ends at the
end of its line, or at its closing quote when it opens with one (a JSON or YAML string).
Error texts are redacted before they are cut to length (:func:`redact_tail`), so a cut
never separates a password from the ``scheme://`` that marks it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TextIO

MASK = "***"

# Query parameters whose value is a secret (lower case; "password" also covers
# "sslpassword", "db_password", ...).
_SECRET_PARAM = re.compile(r"(pass(word)?|pwd|secret|token|credential|api[_-]?key|access[_-]?key)")
# A scheme the way SQLAlchemy (``[\w+]+``) and RFC 3986 (``+.-``) spell it.
_SCHEME = re.compile(r"[A-Za-z][\w+.\-]*://")
# SQLAlchemy's user name: anything up to the first ":" that is not a "/".
_USER = re.compile(r"[^:/\r\n]*:")
# Schemes read with urllib, where "#" starts a fragment (SQLAlchemy keeps it in the query).
_FRAGMENT_SCHEMES = ("http://", "https://", "ray://", "ws://", "wss://")
_QUOTES = "'\""


def _region_end(line: str, scheme_start: int, body_start: int) -> int:
    """Where the URL that starts at ``scheme_start`` can end at the latest: its closing
    quote when it opens with one (a backslash-escaped or doubled quote does not close
    it), else the end of the line."""
    end = len(line.rstrip("\r\n"))
    if scheme_start == 0 or line[scheme_start - 1] not in _QUOTES:
        return end
    quote = line[scheme_start - 1]
    i = body_start
    while i < end:
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == quote:
            if quote == "'" and line[i + 1 : i + 2] == "'":  # YAML's '' inside '...'
                i += 2
                continue
            return i
        i += 1
    return end


def _mask_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        secret = sep and value and _SECRET_PARAM.search(key.lower())
        parts.append(f"{key}={MASK}" if secret else part)
    return "&".join(parts)


def _redact_line(line: str) -> str:
    pos = 0
    while (url := _SCHEME.search(line, pos)) is not None:
        end = _region_end(line, url.start(), url.end())
        host = url.end()
        user = _USER.match(line, url.end(), end)
        if user is not None:
            at = line.rfind("@", user.end(), end)
            if at != -1:
                line = line[: user.end()] + MASK + line[at:]
                end -= at - user.end() - len(MASK)
                host = user.end() + len(MASK) + 1
        later = _SCHEME.search(line, host, end)
        q = line.find("?", host, later.start() if later else end)
        if q != -1:
            stop = end
            if url.group().lower().startswith(_FRAGMENT_SCHEMES) and "#" in line[q:end]:
                stop = line.index("#", q, end)
            line = line[: q + 1] + _mask_query(line[q + 1 : stop]) + line[stop:]
        pos = host
    return line


def redact_text(text: str) -> str:
    """Every URL inside ``text`` with any password in its user info and any secret query
    value masked; text without one comes back unchanged."""
    if not isinstance(text, str) or "://" not in text:
        return text
    return "".join(_redact_line(line) for line in text.splitlines(keepends=True))


def redact_url(url: str) -> str:
    """``url`` with any password in its user info and any secret query value masked;
    other strings (a plain file path) come back unchanged."""
    return redact_text(url)


def redact_tail(text: str, chars: int) -> str:
    """The last ``chars`` characters of ``text`` once redacted (a traceback kept in a
    trial attribute or an MLflow tag): redacting first means a cut cannot split a URL
    from its password."""
    return redact_text(text)[-chars:]


def contains_secret(url: str) -> bool:
    """Whether :func:`redact_url` would change ``url``."""
    return redact_url(url) != url


def is_redacted(url: str | None) -> bool:
    """Whether ``url`` had its secret masked (a URL read back from a study or a run):
    it cannot be used to connect."""
    return bool(url) and (f":{MASK}@" in url or f"={MASK}" in url)


class RedactedStream:
    """A text stream (``sys.stdout``, ``sys.stderr``) that redacts each line before it
    reaches the stream it wraps: every line the CLI prints, its own and the engines'
    (Ray, MLflow and Optuna log through ``sys.stderr``), passes :func:`redact_text`.
    Text is held back until its line ends (or :meth:`flush`), so a URL written in two
    pieces is still redacted whole. Everything else (``fileno``, ``isatty``, ...) is the
    wrapped stream's."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        cut = max(self._pending.rfind("\n"), self._pending.rfind("\r"))
        if cut != -1:
            done, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
            self.inner.write(redact_text(done))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            self.inner.write(redact_text(self._pending))
            self._pending = ""
        self.inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
