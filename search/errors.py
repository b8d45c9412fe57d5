"""Errors meant for the user: the CLI prints them on one line (exit status 2), never a
traceback."""

from __future__ import annotations


class CliError(Exception):
    """An error meant for the user: printed on stderr, exit code 2, no traceback."""


class StudyError(CliError):
    """A study cannot be used as asked; the message says why and what to do."""


class StudyMismatch(StudyError):
    """The stored study and the sweep file disagree (directions, objectives or space)."""


class StudyNotFound(StudyError):
    """No study of that name in that storage."""


class StudyLocked(StudyError):
    """Another driver is running this study on SQLite, which allows one driver."""


class StoreError(StudyError):
    """The study's database cannot be opened: unreachable, refusing, locked or corrupt."""


class RemoteError(CliError):
    """A submission or job query that cannot be done; the message says why."""
