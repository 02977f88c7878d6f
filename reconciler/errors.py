"""User errors, kept apart from bugs: a user error has a location and a fix, exits 1 and
never shows a traceback; anything else is an internal error and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class SpecError:
    """One problem in the fleet repository, printed as `file:line:col: message`."""

    path: str
    line: int
    col: int
    message: str
    tenant: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class UserError(Exception):
    """A mistake in how `fleet` was called (a missing folder, a bad flag value)."""
