"""Errors raised at the config boundary."""

from __future__ import annotations


class ConfigError(ValueError):
    """A sweep file is wrong. Holds every problem found, each with its dotted path."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{path}: {message}" if path else message for path, message in problems]
        super().__init__(where + ("\n  " if len(lines) > 1 else "") + "\n  ".join(lines))

    @classmethod
    def at(cls, path: str, message: str) -> ConfigError:
        return cls([(path, message)])


class InvalidCandidate(ValueError):
    """One concrete candidate cannot be built (the trial fails, not the sweep)."""
