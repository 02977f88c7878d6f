"""Restart history per agent: what the apply step remembers between ticks for backoff.

Persisted by the engine in the state directory and handed to the planner as an
argument, so backoff decisions stay pure and replayable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class RestartRecord:
    """Consecutive health restarts of one agent, and when the last one happened."""

    attempts: int
    last_at: datetime
    last_reason: str = ""
