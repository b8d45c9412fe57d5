"""Secrets never leave the process: the one redaction of URLs and of text holding them.

A storage or tracking URI may carry a password in its user info
(``postgresql://user:pw@host/db``) or in its query (``?password=pw``, ``sslpassword=``,
``token=``, ``access_key=`` ...). :func:`redact_url` masks both; :func:`redact_text` masks
every URL inside a longer text (a sweep file, an error message, a log line). Whatever is
stored (Optuna attributes, MLflow params and artifacts), printed or sent to Ray as job
metadata goes through one of them; the real URL comes from the environment or the command
line at run time.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

MASK = "***"

# Query parameters whose value is a secret (lower case; "password" also covers
# "sslpassword", "db_password", ...).
_SECRET_PARAM = re.compile(r"(pass(word)?|pwd|secret|token|credential|api[_-]?key|access[_-]?key)")
# scheme://[user[:password]@]rest, up to whitespace or a quote/bracket.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>[^\s'\"<>`]+)")


def _redact_userinfo(rest: str) -> str:
    head, sep, tail = rest.partition("/")
    if "@" not in head:
        return rest
    userinfo, host = head.rsplit("@", 1)
    if ":" not in userinfo:
        return rest
    user = userinfo.split(":", 1)[0]
    return f"{user}:{MASK}@{host}{sep}{tail}"


def _redact_query(rest: str) -> str:
    path, sep, query = rest.partition("?")
    if not sep:
        return rest
    fragment = ""
    if "#" in query:
        query, fragment = query.split("#", 1)
        fragment = "#" + fragment
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_SECRET_PARAM.search(k.lower()) for k, _ in pairs):
        return rest
    masked = [(k, MASK if _SECRET_PARAM.search(k.lower()) else v) for k, v in pairs]
    return f"{path}?{urlencode(masked, safe='*/:@')}{fragment}"


def redact_url(url: str) -> str:
    """``url`` with any password in its user info and any secret query value masked;
    other strings (a plain file path) come back unchanged."""
    if not isinstance(url, str):
        return url
    return _URL.sub(_redact_match, url)


def _redact_match(match: re.Match[str]) -> str:
    rest = _redact_query(_redact_userinfo(match.group("rest")))
    return match.group("scheme") + rest


def redact_text(text: str) -> str:
    """Every URL inside ``text`` redacted (:func:`redact_url`)."""
    return redact_url(text)


def contains_secret(url: str) -> bool:
    """Whether :func:`redact_url` would change ``url``."""
    return redact_url(url) != url


def is_redacted(url: str | None) -> bool:
    """Whether ``url`` had its secret masked (a URL read back from a study or a run):
    it cannot be used to connect."""
    return bool(url) and (f":{MASK}@" in url or f"={MASK}" in url)
